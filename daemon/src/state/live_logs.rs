//! Step logs while steps run: chunks a worker appends under its lease (table `live_logs`),
//! read back by `GET /v1/runs/{run}/steps/{step}/log?offset=N` until the step's record (with
//! its content-addressed log) is accepted.

use sqlx::Row;
use time::OffsetDateTime;

use super::{State, StateError, millis, query_err};

/// What became of a chunk a worker sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveAppend {
    /// Stored (or already held: a retried chunk); the live log is now `len` bytes long.
    Stored { len: u64 },
    /// The chunk starts past the end of what is held (`len`): a chunk went missing.
    Gap { len: u64 },
    /// The live log would grow past the cap; nothing was stored.
    TooLarge { cap: u64 },
    /// The lease is not this worker's, or not current.
    NotCurrent,
}

/// The running step's log from an offset on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveLog {
    pub bytes: Vec<u8>,
    /// Offset of the first byte of `bytes`.
    pub from: u64,
}

/// Where a step's log is to be read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepLogSource {
    /// The step has not started.
    NotStarted,
    /// The step runs: what its worker sent so far.
    Live(LiveLog),
    /// The step is final: its record's log blob (`None` if it never ran, e.g. skipped).
    Final(Option<kiln_core::Sha256Digest>),
}

impl State {
    /// Appends `data`, which starts at byte `offset` of the log of the step leased under
    /// `lease_id`, if that lease is `worker_id`'s and current at `now`. Overlap with what is
    /// already held (a retried chunk) is dropped, so appends are idempotent.
    pub async fn append_live_log(
        &self,
        lease_id: &str,
        worker_id: &str,
        offset: u64,
        data: &[u8],
        now: OffsetDateTime,
        cap: u64,
    ) -> Result<LiveAppend, StateError> {
        let mut tx = self.pool.begin().await.map_err(query_err("begin"))?;
        let current: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM steps WHERE lease_id = $1 AND worker_id = $2 AND state = 'running'
             AND lease_deadline_ms >= $3",
        )
        .bind(lease_id)
        .bind(worker_id)
        .bind(millis(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(query_err("look up lease"))?;
        if current != 1 {
            return Ok(LiveAppend::NotCurrent);
        }
        let len: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(start + length(data)), 0) FROM live_logs WHERE lease_id = $1",
        )
        .bind(lease_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(query_err("measure live log"))?;
        let len = len as u64;
        let end = offset + data.len() as u64;
        if offset > len {
            return Ok(LiveAppend::Gap { len });
        }
        if end <= len {
            return Ok(LiveAppend::Stored { len });
        }
        if end > cap {
            return Ok(LiveAppend::TooLarge { cap });
        }
        let fresh = &data[(len - offset) as usize..];
        sqlx::query("INSERT INTO live_logs (lease_id, start, data) VALUES ($1, $2, $3)")
            .bind(lease_id)
            .bind(len as i64)
            .bind(fresh)
            .execute(&mut *tx)
            .await
            .map_err(query_err("append live log"))?;
        tx.commit().await.map_err(query_err("commit live log"))?;
        Ok(LiveAppend::Stored { len: end })
    }

    /// Where `run`'s step `step` has its log, from byte `from` on; `None` for no such step.
    pub async fn step_log_source(
        &self,
        run: &str,
        step: &str,
        from: u64,
    ) -> Result<Option<StepLogSource>, StateError> {
        let row = sqlx::query("SELECT state, lease_id FROM steps WHERE run_id = $1 AND name = $2")
            .bind(run)
            .bind(step)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("look up step"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let state: String = row.get(0);
        let lease: Option<String> = row.get(1);
        match (state.as_str(), lease) {
            ("pending", _) => Ok(Some(StepLogSource::NotStarted)),
            ("running", Some(lease)) => Ok(Some(StepLogSource::Live(
                self.live_log(&lease, from).await?,
            ))),
            ("running", None) => Ok(Some(StepLogSource::NotStarted)),
            _ => Ok(Some(StepLogSource::Final(self.step_log(run, step).await?))),
        }
    }

    async fn live_log(&self, lease_id: &str, from: u64) -> Result<LiveLog, StateError> {
        let rows = sqlx::query(
            "SELECT start, data FROM live_logs WHERE lease_id = $1 AND start + length(data) > $2
             ORDER BY start",
        )
        .bind(lease_id)
        .bind(from as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("read live log"))?;
        let mut bytes = Vec::new();
        for row in rows {
            let start: i64 = row.get(0);
            let data: Vec<u8> = row.get(1);
            let skip = from.saturating_sub(start as u64) as usize;
            bytes.extend_from_slice(&data[skip.min(data.len())..]);
        }
        Ok(LiveLog { bytes, from })
    }

    /// Drops live logs of leases that no longer run (their step's record holds the log, or the
    /// lease expired and the step starts over under a new one).
    pub async fn sweep_live_logs(&self) -> Result<u64, StateError> {
        let done = sqlx::query(
            "DELETE FROM live_logs WHERE lease_id NOT IN
             (SELECT lease_id FROM steps WHERE lease_id IS NOT NULL AND state = 'running')",
        )
        .execute(&self.pool)
        .await
        .map_err(query_err("sweep live logs"))?;
        Ok(done.rows_affected())
    }
}
