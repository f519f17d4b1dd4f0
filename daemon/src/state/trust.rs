//! Checks that keep running after the build: revoked mirror entries (`kiln mirror revoke`),
//! OSV advisories matched against entries (`kiln mirror advisories import`), and the index of
//! published artifacts that `kiln audit affected` walks.

use std::str::FromStr as _;

use kiln_core::{MirrorRef, Sha256Digest};
use sqlx::Row;
use time::OffsetDateTime;

use super::{State, StateError, corrupt, query_err, rfc3339};

/// Why an entry may no longer be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub reference: MirrorRef,
    pub reason: String,
    /// RFC 3339.
    pub revoked_at: String,
}

/// An OSV advisory that names a mirror entry's name and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advisory {
    pub id: String,
    pub reference: MirrorRef,
    pub summary: String,
    /// The advisory's own `modified` time.
    pub modified: String,
}

/// A published artifact, for walking what depends on what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedArtifact {
    pub run_id: String,
    pub name: String,
    pub sha256: Sha256Digest,
    pub provenance_sha256: Sha256Digest,
}

impl State {
    /// Revokes `reference`; revoking it again keeps the first revocation. Evidence stays.
    pub async fn revoke(
        &self,
        reference: &MirrorRef,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<Revocation, StateError> {
        sqlx::query(
            "INSERT INTO mirror_revocations (name, version, reason, revoked_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (name, version) DO NOTHING",
        )
        .bind(reference.name())
        .bind(reference.version())
        .bind(reason)
        .bind(rfc3339(now))
        .execute(&self.pool)
        .await
        .map_err(query_err("revoke mirror entry"))?;
        Ok(self
            .revocation(reference)
            .await?
            .expect("a revocation was just stored"))
    }

    /// The revocation of `reference`, if it was revoked.
    pub async fn revocation(
        &self,
        reference: &MirrorRef,
    ) -> Result<Option<Revocation>, StateError> {
        let row = sqlx::query(
            "SELECT reason, revoked_at FROM mirror_revocations WHERE name = $1 AND version = $2",
        )
        .bind(reference.name())
        .bind(reference.version())
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("look up revocation"))?;
        Ok(row.map(|r| Revocation {
            reference: reference.clone(),
            reason: r.get(0),
            revoked_at: r.get(1),
        }))
    }

    /// Stores `advisory` (replacing an older import of the same id and entry).
    pub async fn add_advisory(
        &self,
        advisory: &Advisory,
        now: OffsetDateTime,
    ) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await.map_err(query_err("begin"))?;
        sqlx::query("DELETE FROM mirror_advisories WHERE id = $1 AND name = $2 AND version = $3")
            .bind(&advisory.id)
            .bind(advisory.reference.name())
            .bind(advisory.reference.version())
            .execute(&mut *tx)
            .await
            .map_err(query_err("replace advisory"))?;
        sqlx::query(
            "INSERT INTO mirror_advisories (id, name, version, summary, modified, imported_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&advisory.id)
        .bind(advisory.reference.name())
        .bind(advisory.reference.version())
        .bind(&advisory.summary)
        .bind(&advisory.modified)
        .bind(rfc3339(now))
        .execute(&mut *tx)
        .await
        .map_err(query_err("store advisory"))?;
        tx.commit().await.map_err(query_err("commit advisory"))
    }

    /// The advisories naming `reference`, by id.
    pub async fn advisories(&self, reference: &MirrorRef) -> Result<Vec<Advisory>, StateError> {
        let rows = sqlx::query(
            "SELECT id, summary, modified FROM mirror_advisories
             WHERE name = $1 AND version = $2 ORDER BY id",
        )
        .bind(reference.name())
        .bind(reference.version())
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("list advisories"))?;
        Ok(rows
            .iter()
            .map(|r| Advisory {
                id: r.get(0),
                reference: reference.clone(),
                summary: r.get(1),
                modified: r.get(2),
            })
            .collect())
    }

    /// Every published artifact, oldest run first.
    pub async fn published_artifacts(&self) -> Result<Vec<PublishedArtifact>, StateError> {
        let rows = sqlx::query(
            "SELECT a.run_id, a.name, a.sha256, a.provenance_sha256 FROM artifacts a
             JOIN runs r ON r.id = a.run_id ORDER BY r.started_at, a.run_id, a.name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("list artifacts"))?;
        rows.iter().map(artifact_from_row).collect()
    }

    /// The newest published artifact with these bytes, if kiln published any.
    pub async fn newest_published_artifact(
        &self,
        sha256: &Sha256Digest,
    ) -> Result<Option<PublishedArtifact>, StateError> {
        let row = sqlx::query(
            "SELECT a.run_id, a.name, a.sha256, a.provenance_sha256 FROM artifacts a
             JOIN runs r ON r.id = a.run_id WHERE a.sha256 = $1
             ORDER BY r.started_at DESC, a.run_id DESC, a.name DESC LIMIT 1",
        )
        .bind(sha256.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("look up artifact"))?;
        row.as_ref().map(artifact_from_row).transpose()
    }
}

fn artifact_from_row(r: &sqlx::any::AnyRow) -> Result<PublishedArtifact, StateError> {
    let bad = corrupt("artifact");
    let digest =
        |i: usize| Sha256Digest::from_str(&r.get::<String, _>(i)).map_err(|e| bad(e.to_string()));
    Ok(PublishedArtifact {
        run_id: r.get(0),
        name: r.get(1),
        sha256: digest(2)?,
        provenance_sha256: digest(3)?,
    })
}
