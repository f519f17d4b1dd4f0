//! Teams and their API tokens: which team a bearer token names, which team owns a run.
//!
//! Like join tokens ([`crate::pki::Enrollment`]), only the sha256 of a token's secret is
//! stored, so a token is shown once, when made. Deliberately absent: revocation and listing
//! (an operator can delete rows); a token is checked on every request, not cached.

use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use super::{State, StateError, millis, query_err};

/// The prefix of every team token, so that a leaked one is recognisable.
pub const TEAM_TOKEN_PREFIX: &str = "kiln-team";

/// A freshly made team token: the only time its secret is known.
#[derive(Clone)]
pub struct NewTeamToken {
    pub token: String,
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for NewTeamToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewTeamToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why a bearer token names no team.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenRefusal {
    #[error("unknown API token")]
    Unknown,
    #[error("expired API token; ask an operator for a new one (`kiln admin token create`)")]
    Expired,
}

/// Whether a team name is acceptable: 1–64 of `[A-Za-z0-9._-]`.
pub fn valid_team_name(team: &str) -> bool {
    !team.is_empty()
        && team.len() <= 64
        && team
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// 32 bytes from the system CSPRNG for a new token's secret; `None` if it failed.
pub fn random_secret() -> Option<[u8; 32]> {
    let mut secret = [0u8; 32];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut secret)
        .ok()?;
    Some(secret)
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

impl State {
    /// A new token for `team`, valid for `ttl` from `now`. `secret` is 32 random bytes.
    pub async fn create_team_token(
        &self,
        team: &str,
        secret: &[u8; 32],
        ttl: std::time::Duration,
        now: OffsetDateTime,
    ) -> Result<NewTeamToken, StateError> {
        let token = format!("{TEAM_TOKEN_PREFIX}-{}", hex::encode(secret));
        let expires_at = now + ttl;
        sqlx::query(
            "INSERT INTO api_tokens (sha256, team, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash(&token))
        .bind(team)
        .bind(millis(now))
        .bind(millis(expires_at))
        .execute(self.pool())
        .await
        .map_err(query_err("insert api token"))?;
        Ok(NewTeamToken { token, expires_at })
    }

    /// The team `token` names at `now`.
    pub async fn team_of_token(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Result<String, TokenRefusal>, StateError> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT team, expires_at FROM api_tokens WHERE sha256 = $1")
                .bind(hash(token))
                .fetch_optional(self.pool())
                .await
                .map_err(query_err("look up api token"))?;
        Ok(match row {
            None => Err(TokenRefusal::Unknown),
            Some((_, expires_at)) if expires_at <= millis(now) => Err(TokenRefusal::Expired),
            Some((team, _)) => Ok(team),
        })
    }

    /// Records `team` as the submitter of `run_id`, unless a team is recorded already.
    pub async fn set_run_team(&self, run_id: &str, team: &str) -> Result<(), StateError> {
        sqlx::query("UPDATE runs SET team = $1 WHERE id = $2 AND team IS NULL")
            .bind(team)
            .bind(run_id)
            .execute(self.pool())
            .await
            .map_err(query_err("record run team"))?;
        Ok(())
    }

    /// The team that submitted `run_id` (`None` for an unknown run or one no team owns).
    pub async fn run_team(&self, run_id: &str) -> Result<Option<String>, StateError> {
        let row: Option<(Option<String>,)> = sqlx::query_as("SELECT team FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(self.pool())
            .await
            .map_err(query_err("read run team"))?;
        Ok(row.and_then(|(t,)| t))
    }
}

/// The reason recorded on the steps of a cancelled run.
pub const CANCELLED_REASON: &str = "cancelled";

/// What [`State::cancel_run`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The run was running and is now cancelled (or was cancelled before).
    Cancelled,
    /// The run had already finished; nothing changed.
    AlreadyFinished,
    /// No such run.
    Unknown,
}

impl State {
    /// Cancels a running run in one transaction: its pending and leased steps become cancelled
    /// (a leased step's lease is revoked, so its holder's heartbeat and report are refused) and
    /// the run ends. A run whose steps are all final is finishing (being published) and is
    /// [`CancelOutcome::AlreadyFinished`].
    pub async fn cancel_run(
        &self,
        run_id: &str,
        now: OffsetDateTime,
    ) -> Result<CancelOutcome, StateError> {
        let mut tx = self.begin_write().await?;
        let row: Option<(String, Option<String>)> = sqlx::query_as(self.locking(
            "SELECT state, cancelled_at FROM runs WHERE id = $1",
            "FOR UPDATE",
        ))
        .bind(run_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_err("look up run"))?;
        let outcome = match row {
            None => CancelOutcome::Unknown,
            Some((_, Some(_))) => CancelOutcome::Cancelled,
            Some((state, None)) if state != "running" => CancelOutcome::AlreadyFinished,
            Some(_) => {
                let cancelled = sqlx::query(
                    "UPDATE steps SET state = 'skipped', reason = $1, lease_id = NULL,
                                      lease_deadline_ms = NULL
                     WHERE run_id = $2 AND state IN ('pending', 'running')",
                )
                .bind(CANCELLED_REASON)
                .bind(run_id)
                .execute(&mut *tx)
                .await
                .map_err(query_err("cancel steps"))?;
                if cancelled.rows_affected() == 0 {
                    // Every step is final: the run is being published, so it has finished.
                    return Ok(CancelOutcome::AlreadyFinished);
                }
                let at = super::rfc3339(now);
                sqlx::query(
                    "UPDATE runs SET state = 'failed', finished_at = $1, cancelled_at = $2
                     WHERE id = $3",
                )
                .bind(&at)
                .bind(&at)
                .bind(run_id)
                .execute(&mut *tx)
                .await
                .map_err(query_err("cancel run"))?;
                super::step_log::append(
                    &mut tx,
                    &crate::steplog::LogEntry::RunFinished {
                        run: run_id,
                        state: "cancelled",
                        finished_at: now,
                        artifacts: Vec::new(),
                    },
                )
                .await?;
                CancelOutcome::Cancelled
            }
        };
        tx.commit().await.map_err(query_err("commit cancel"))?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Backend;
    use crate::state::testing::TestDatabase;

    async fn state(backend: Backend) -> (tempfile::TempDir, TestDatabase, State) {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDatabase::new(backend, &dir.path().join("state.db")).await;
        let state = State::connect(db.database()).await.unwrap();
        (dir, db, state)
    }

    crate::backend_tests! {
        #[tokio::test] a_team_token_names_its_team_until_it_expires;
        #[tokio::test] only_the_hash_of_a_team_token_is_stored;
    }

    async fn a_team_token_names_its_team_until_it_expires(backend: Backend) {
        let (_dir, _db, state) = state(backend).await;
        let now = OffsetDateTime::now_utc();
        let made = state
            .create_team_token("blue", &[7; 32], std::time::Duration::from_secs(60), now)
            .await
            .unwrap();
        assert!(made.token.starts_with("kiln-team-"));
        assert_eq!(
            state.team_of_token(&made.token, now).await.unwrap(),
            Ok("blue".into())
        );
        let later = now + std::time::Duration::from_secs(61);
        assert_eq!(
            state.team_of_token(&made.token, later).await.unwrap(),
            Err(TokenRefusal::Expired)
        );
        assert_eq!(
            state.team_of_token("kiln-team-00", now).await.unwrap(),
            Err(TokenRefusal::Unknown)
        );
    }

    async fn only_the_hash_of_a_team_token_is_stored(backend: Backend) {
        let (_dir, _db, state) = state(backend).await;
        let made = state
            .create_team_token(
                "blue",
                &[9; 32],
                std::time::Duration::from_secs(60),
                OffsetDateTime::now_utc(),
            )
            .await
            .unwrap();
        let (stored,): (String,) = sqlx::query_as("SELECT sha256 FROM api_tokens")
            .fetch_one(state.pool())
            .await
            .unwrap();
        assert_ne!(stored, made.token);
        assert!(!stored.contains(&hex::encode([9u8; 32])));
        assert_eq!(stored, hash(&made.token));
    }

    #[test]
    fn team_names_are_checked() {
        assert!(valid_team_name("blue-team_1.x"));
        assert!(!valid_team_name(""));
        assert!(!valid_team_name("a b"));
        assert!(!valid_team_name(&"a".repeat(65)));
    }
}
