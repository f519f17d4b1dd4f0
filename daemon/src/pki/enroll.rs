//! Enrollment state: one-time join tokens and which certificate identity registered which
//! worker (tables of `migrations/sqlite/0003_pki.sql` and its PostgreSQL twin).
//!
//! A join token reads `kiln1-<CA fingerprint>-<secret>`: the worker pins the CA by the first
//! part and proves the token with the second. Only the secret's sha256 is stored.

use std::time::Duration;

use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::state::{State, millis};

/// The prefix of a join token.
pub const TOKEN_PREFIX: &str = "kiln1";

/// Why an enrollment operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("state database: {what}")]
    Query {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot draw random bytes for a join token")]
    Random,
    #[error("the join token is malformed; expected kiln1-<fingerprint>-<secret>")]
    Malformed,
    #[error("the join token is not known to this daemon")]
    Unknown,
    #[error("the join token was already used; create a new one")]
    Used,
    #[error("the join token expired; create a new one")]
    Expired,
}

fn query_err(what: &'static str) -> impl FnOnce(sqlx::Error) -> EnrollError {
    move |source| EnrollError::Query { what, source }
}

/// A join token as made: print it once, it is not stored.
#[derive(Clone)]
pub struct NewJoinToken {
    pub token: String,
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for NewJoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewJoinToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The secret part of a token string (`kiln1-<fingerprint>-<secret>`), or the whole string
/// when it is a bare secret.
fn secret_of(token: &str) -> Result<&str, EnrollError> {
    let secret = match token.strip_prefix(TOKEN_PREFIX) {
        Some(rest) => rest
            .strip_prefix('-')
            .and_then(|rest| rest.split_once('-'))
            .map(|(_, secret)| secret)
            .ok_or(EnrollError::Malformed)?,
        None => token,
    };
    if secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(secret)
    } else {
        Err(EnrollError::Malformed)
    }
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.to_ascii_lowercase().as_bytes()))
}

/// Join tokens and worker identities in the controller's database.
#[derive(Clone, Debug)]
pub struct Enrollment {
    state: State,
}

impl Enrollment {
    pub fn new(state: State) -> Self {
        Self { state }
    }

    /// A new one-time token valid for `ttl` from `now`, naming the CA by `ca_fingerprint`.
    pub async fn create_token(
        &self,
        ca_fingerprint: &str,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<NewJoinToken, EnrollError> {
        let mut secret = [0u8; 32];
        rustls::crypto::aws_lc_rs::default_provider()
            .secure_random
            .fill(&mut secret)
            .map_err(|_| EnrollError::Random)?;
        let secret = hex::encode(secret);
        let expires_at = now + ttl;
        sqlx::query("INSERT INTO join_tokens (sha256, created_at, expires_at) VALUES ($1, $2, $3)")
            .bind(hash(&secret))
            .bind(millis(now))
            .bind(millis(expires_at))
            .execute(self.state.pool())
            .await
            .map_err(query_err("insert join token"))?;
        Ok(NewJoinToken {
            token: format!("{TOKEN_PREFIX}-{ca_fingerprint}-{secret}"),
            expires_at,
        })
    }

    /// Consumes `token` for `identity`: one statement that succeeds only for a known, unused,
    /// unexpired token, so two workers racing with one token cannot both join.
    pub async fn consume_token(
        &self,
        token: &str,
        identity: &str,
        now: OffsetDateTime,
    ) -> Result<(), EnrollError> {
        let digest = hash(secret_of(token)?);
        let now = millis(now);
        let done = sqlx::query(
            "UPDATE join_tokens SET used_at = $1, identity = $2 \
             WHERE sha256 = $3 AND used_at IS NULL AND expires_at > $4",
        )
        .bind(now)
        .bind(identity)
        .bind(&digest)
        .bind(now)
        .execute(self.state.pool())
        .await
        .map_err(query_err("consume join token"))?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        let row: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT used_at FROM join_tokens WHERE sha256 = $1")
                .bind(&digest)
                .fetch_optional(self.state.pool())
                .await
                .map_err(query_err("read join token"))?;
        Err(match row {
            None => EnrollError::Unknown,
            Some((Some(_),)) => EnrollError::Used,
            Some((None,)) => EnrollError::Expired,
        })
    }

    /// Records that the certificate identity `identity` registered `worker_id`.
    pub async fn bind_worker(&self, worker_id: &str, identity: &str) -> Result<(), EnrollError> {
        sqlx::query("INSERT INTO worker_identities (worker_id, identity) VALUES ($1, $2)")
            .bind(worker_id)
            .bind(identity)
            .execute(self.state.pool())
            .await
            .map_err(query_err("bind worker identity"))?;
        Ok(())
    }

    /// Whether `worker_id` was registered by `identity`.
    pub async fn owns(&self, identity: &str, worker_id: &str) -> Result<bool, EnrollError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM worker_identities WHERE worker_id = $1 AND identity = $2",
        )
        .bind(worker_id)
        .bind(identity)
        .fetch_one(self.state.pool())
        .await
        .map_err(query_err("read worker identity"))?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Backend;
    use crate::state::testing::TestDatabase;

    async fn enrollment(backend: Backend) -> (tempfile::TempDir, TestDatabase, Enrollment) {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDatabase::new(backend, &dir.path().join("state.db")).await;
        let state = State::connect(db.database()).await.unwrap();
        (dir, db, Enrollment::new(state))
    }

    crate::backend_tests! {
        #[tokio::test] a_join_token_works_once;
        #[tokio::test] an_expired_join_token_is_refused;
        #[tokio::test] unknown_and_malformed_tokens_are_refused;
    }

    async fn a_join_token_works_once(backend: Backend) {
        let (_dir, _db, e) = enrollment(backend).await;
        let now = OffsetDateTime::now_utc();
        let t = e
            .create_token(&"ab".repeat(32), Duration::from_secs(60), now)
            .await
            .unwrap();
        e.consume_token(&t.token, "w1", now).await.unwrap();
        let again = e.consume_token(&t.token, "w2", now).await.unwrap_err();
        assert!(matches!(again, EnrollError::Used), "{again}");
    }

    async fn an_expired_join_token_is_refused(backend: Backend) {
        let (_dir, _db, e) = enrollment(backend).await;
        let now = OffsetDateTime::now_utc();
        let t = e
            .create_token(&"ab".repeat(32), Duration::from_secs(60), now)
            .await
            .unwrap();
        let later = now + Duration::from_secs(61);
        let err = e.consume_token(&t.token, "w1", later).await.unwrap_err();
        assert!(matches!(err, EnrollError::Expired), "{err}");
    }

    async fn unknown_and_malformed_tokens_are_refused(backend: Backend) {
        let (_dir, _db, e) = enrollment(backend).await;
        let now = OffsetDateTime::now_utc();
        let unknown = format!("kiln1-{}-{}", "ab".repeat(32), "cd".repeat(32));
        assert!(matches!(
            e.consume_token(&unknown, "w", now).await,
            Err(EnrollError::Unknown)
        ));
        assert!(matches!(
            e.consume_token("kiln1-nonsense", "w", now).await,
            Err(EnrollError::Malformed)
        ));
    }
}
