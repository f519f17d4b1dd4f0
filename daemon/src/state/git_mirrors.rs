//! Git mirrors (`kiln mirror git add`): which name is bound to which origin, and which signers
//! a mirror's commits must be signed by. The repositories themselves live at
//! `DATA/git/NAME.git`.

use sqlx::Row;
use time::OffsetDateTime;

use super::{State, StateError, query_err, rfc3339};

/// One git mirror as catalogued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitMirror {
    pub name: String,
    /// The absolute path it is fetched from.
    pub origin: String,
    /// RFC 3339, when the name was first bound.
    pub added_at: String,
    /// git's allowed-signers text; `None` when commits need no signature.
    pub allowed_signers: Option<String>,
}

/// What recording a git mirror did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GitMirrorBinding {
    /// The name was new.
    Added(GitMirror),
    /// The name was already bound to this origin; its allowed signers are now the ones given,
    /// or the ones it had when none were given.
    Updated(GitMirror),
    /// The name is bound to another origin; nothing was changed.
    OtherOrigin(GitMirror),
}

impl State {
    /// Binds `name` to `origin`, or replaces its allowed signers (when some are given) if it is
    /// already bound to the same origin. A name is never re-bound to another origin.
    pub async fn bind_git_mirror(
        &self,
        name: &str,
        origin: &str,
        allowed_signers: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<GitMirrorBinding, StateError> {
        let inserted = sqlx::query(
            "INSERT INTO git_mirrors (name, origin, added_at, allowed_signers)
             VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(origin)
        .bind(rfc3339(now))
        .bind(allowed_signers)
        .execute(&self.pool)
        .await
        .map_err(query_err("add git mirror"))?
        .rows_affected();
        let existing = self
            .git_mirror(name)
            .await?
            .expect("a git mirror row exists after the insert");
        if inserted == 1 {
            return Ok(GitMirrorBinding::Added(existing));
        }
        if existing.origin != origin {
            return Ok(GitMirrorBinding::OtherOrigin(existing));
        }
        // Leaving the signers out keeps the ones there: a plain re-fetch never drops the policy.
        sqlx::query(
            "UPDATE git_mirrors SET allowed_signers = COALESCE($1, allowed_signers)
             WHERE name = $2 AND origin = $3",
        )
        .bind(allowed_signers)
        .bind(name)
        .bind(origin)
        .execute(&self.pool)
        .await
        .map_err(query_err("update git mirror"))?;
        let allowed_signers = allowed_signers
            .map(str::to_owned)
            .or(existing.allowed_signers.clone());
        Ok(GitMirrorBinding::Updated(GitMirror {
            allowed_signers,
            ..existing
        }))
    }

    /// The git mirror called `name`, if there is one.
    pub async fn git_mirror(&self, name: &str) -> Result<Option<GitMirror>, StateError> {
        let row = sqlx::query(
            "SELECT name, origin, added_at, allowed_signers FROM git_mirrors WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("look up git mirror"))?;
        Ok(row.map(|r| mirror_from_row(&r)))
    }

    /// Every git mirror, by name.
    pub async fn git_mirrors(&self) -> Result<Vec<GitMirror>, StateError> {
        let rows = sqlx::query(
            "SELECT name, origin, added_at, allowed_signers FROM git_mirrors ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("list git mirrors"))?;
        Ok(rows.iter().map(mirror_from_row).collect())
    }
}

fn mirror_from_row(r: &sqlx::any::AnyRow) -> GitMirror {
    GitMirror {
        name: r.get("name"),
        origin: r.get("origin"),
        added_at: r.get("added_at"),
        allowed_signers: r.get("allowed_signers"),
    }
}
