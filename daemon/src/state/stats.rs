//! Read-only queries for health checks and metrics ([`crate::metrics`], `GET /readyz`).
//!
//! Plain SQL with `$N` placeholders, portable to PostgreSQL as written; nothing here writes
//! or takes a lock beyond a read.

use sqlx::Row;
use time::OffsetDateTime;

use super::{State, StateError, millis, query_err};

/// Counts of the schedule at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Pending steps of running, leased runs whose needs have all succeeded: what the next
    /// claims would hand out.
    pub ready: i64,
    /// Steps leased to a worker and not yet reported.
    pub leased: i64,
    /// Registered workers.
    pub workers: i64,
}

impl State {
    /// Whether the database answers a query.
    pub async fn ping(&self) -> Result<(), StateError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(query_err("ping"))?;
        Ok(())
    }

    /// The schedule's counts, in one statement.
    pub async fn queue_stats(&self) -> Result<QueueStats, StateError> {
        let row = sqlx::query(
            "SELECT
                 (SELECT count(*) FROM steps s JOIN runs r ON r.id = s.run_id
                  WHERE s.state = 'pending' AND r.state = 'running' AND r.dispatch = 'lease'
                    AND NOT EXISTS (
                        SELECT 1 FROM step_needs n
                        JOIN steps d ON d.run_id = n.run_id AND d.name = n.need
                        WHERE n.run_id = s.run_id AND n.step = s.name AND d.state <> 'succeeded')),
                 (SELECT count(*) FROM steps WHERE state = 'running' AND lease_id IS NOT NULL),
                 (SELECT count(*) FROM workers)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(query_err("count the queue"))?;
        Ok(QueueStats {
            ready: row.get(0),
            leased: row.get(1),
            workers: row.get(2),
        })
    }

    /// The workers holding a lease that has not expired at `now`.
    pub async fn lease_holders(&self, now: OffsetDateTime) -> Result<Vec<String>, StateError> {
        sqlx::query_scalar(
            "SELECT DISTINCT worker_id FROM steps
             WHERE state = 'running' AND lease_id IS NOT NULL AND worker_id IS NOT NULL
               AND lease_deadline_ms >= $1
             ORDER BY worker_id",
        )
        .bind(millis(now))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("list lease holders"))
    }
}
