//! Where each finished run's signed run attestation (`run.intoto.jsonl`) is kept: its blob
//! digest, on the run's row. The attestation itself is a blob in the store.

use std::str::FromStr as _;

use kiln_core::Sha256Digest;

use super::{State, StateError, corrupt, query_err};

impl State {
    /// Records the blob digest of `run_id`'s run attestation, replacing any earlier one.
    pub async fn set_run_attestation(
        &self,
        run_id: &str,
        sha256: &Sha256Digest,
    ) -> Result<(), StateError> {
        sqlx::query("UPDATE runs SET attestation_sha256 = $1 WHERE id = $2")
            .bind(sha256.to_string())
            .bind(run_id)
            .execute(self.pool())
            .await
            .map_err(query_err("record run attestation"))?;
        Ok(())
    }

    /// The blob digest of `run_id`'s run attestation; `None` for an unknown run or one that
    /// has none yet (still running).
    pub async fn run_attestation(&self, run_id: &str) -> Result<Option<Sha256Digest>, StateError> {
        let found: Option<Option<String>> =
            sqlx::query_scalar("SELECT attestation_sha256 FROM runs WHERE id = $1")
                .bind(run_id)
                .fetch_optional(self.pool())
                .await
                .map_err(query_err("look up run attestation"))?;
        found
            .flatten()
            .map(|s| {
                Sha256Digest::from_str(&s).map_err(|e| corrupt("run attestation")(e.to_string()))
            })
            .transpose()
    }
}
