//! The step log's tables (migration 0008): `log_entries`, the one-row `log_head` that numbers
//! them, and `log_checkpoints`.
//!
//! [`append`] runs inside the caller's transaction, after the state change it logs. On
//! SQLite it is one statement, `INSERT … VALUES ((SELECT COALESCE(MAX(idx) + 1, 0) …), …)`:
//! every logging transaction holds the database's write lock (`BEGIN IMMEDIATE`), so appends
//! are serialised. On PostgreSQL it bumps the one-row `log_head` first (`UPDATE … RETURNING`),
//! whose row lock, held until commit, serialises the appends of daemons sharing the database;
//! the entry goes in at the old size. Either way two entries never get one index (`idx` is
//! also the primary key), and a rolled-back change rolls back its entry.

use std::sync::Arc;

use kiln_attest::tlog::{MerkleTree, leaf_hash};
use sqlx::{AnyConnection, Executor as _, Row};
use time::OffsetDateTime;

use super::{Backend, State, StateError, query_err, rfc3339};
use crate::steplog::{KIND_STEP_RECORD, LogEntry};

/// One stored entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    pub index: u64,
    pub kind: String,
    pub run_id: String,
    pub step: Option<String>,
    /// The exact bytes hashed.
    pub entry: String,
    /// Hex SHA-256(0x00 || entry), as stored (a cache; never trusted by the audit).
    pub leaf_hash: String,
}

/// One stored signed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    /// The C2SP signed note, verbatim.
    pub note: String,
    pub signed_at: String,
}

/// The log's tree as far as this process has read it: every complete node in memory
/// ([`MerkleTree`], about 64 bytes an entry), extended by reading only the entries appended
/// since. Shared by the clones of one [`State`].
#[derive(Clone, Debug, Default)]
pub(super) struct TreeCache(Arc<tokio::sync::Mutex<MerkleTree>>);

/// Why the stored log cannot be read as a tree.
#[derive(Debug)]
pub enum TreeError {
    State(StateError),
    /// Entry `index` is missing below the size asked for.
    Gap {
        index: u64,
    },
}

impl From<StateError> for TreeError {
    fn from(e: StateError) -> Self {
        Self::State(e)
    }
}

/// Appends `entry` in the caller's transaction; returns its index.
pub(super) async fn append(
    tx: &mut AnyConnection,
    entry: &LogEntry<'_>,
) -> Result<u64, StateError> {
    let bytes = entry.to_bytes();
    let leaf = leaf_hash(bytes.as_bytes()).to_string();
    let index: i64 = if is_sqlite(tx) {
        sqlx::query_scalar(
            "INSERT INTO log_entries (idx, kind, run_id, step, entry, leaf_hash)
             VALUES ((SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries), $1, $2, $3, $4, $5)
             RETURNING idx",
        )
        .bind(entry.kind())
        .bind(entry.run())
        .bind(entry.step())
        .bind(&bytes)
        .bind(&leaf)
        .fetch_one(&mut *tx)
        .await
        .map_err(query_err("insert step log entry"))?
    } else {
        let size: i64 =
            sqlx::query_scalar("UPDATE log_head SET size = size + 1 WHERE id = 1 RETURNING size")
                .fetch_one(&mut *tx)
                .await
                .map_err(query_err("advance step log head"))?;
        sqlx::query(
            "INSERT INTO log_entries (idx, kind, run_id, step, entry, leaf_hash) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(size - 1)
        .bind(entry.kind())
        .bind(entry.run())
        .bind(entry.step())
        .bind(&bytes)
        .bind(&leaf)
        .execute(&mut *tx)
        .await
        .map_err(query_err("insert step log entry"))?;
        size - 1
    };
    Ok(index.max(0) as u64)
}

fn is_sqlite(conn: &AnyConnection) -> bool {
    conn.backend_name().eq_ignore_ascii_case("sqlite")
}

fn entry_from_row(r: &sqlx::any::AnyRow) -> StoredEntry {
    StoredEntry {
        index: r.get::<i64, _>(0).max(0) as u64,
        kind: r.get(1),
        run_id: r.get(2),
        step: r.get(3),
        entry: r.get(4),
        leaf_hash: r.get(5),
    }
}

fn checkpoint_from_row(r: &sqlx::any::AnyRow) -> StoredCheckpoint {
    StoredCheckpoint {
        size: r.get::<i64, _>(0).max(0) as u64,
        note: r.get(1),
        signed_at: r.get(2),
    }
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl State {
    /// Appends one entry in a transaction of its own; returns its index. The daemon appends
    /// in the transaction of the change it logs instead; this is for tests and benchmarks.
    /// On SQLite that is one statement, atomic on its own.
    pub async fn append_log_entry(&self, entry: &LogEntry<'_>) -> Result<u64, StateError> {
        if self.backend == Backend::Sqlite {
            let mut conn = self
                .pool
                .acquire()
                .await
                .map_err(query_err("acquire connection"))?;
            return append(&mut conn, entry).await;
        }
        let mut tx = self.begin_write().await?;
        let index = append(&mut tx, entry).await?;
        tx.commit()
            .await
            .map_err(query_err("commit step log entry"))?;
        Ok(index)
    }

    /// The number of entries the log holds: on PostgreSQL as its head says, on SQLite one
    /// past the largest index.
    pub async fn log_size(&self) -> Result<u64, StateError> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries",
            Backend::Postgres => "SELECT size FROM log_head WHERE id = 1",
        };
        let size: i64 = sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("read step log size"))?;
        Ok(size.max(0) as u64)
    }

    /// The stored entries with an index below `size`, in index order.
    pub async fn log_entries_below(&self, size: u64) -> Result<Vec<StoredEntry>, StateError> {
        self.log_entries_between(0, size).await
    }

    /// The stored entries with `from <= index < to`, in index order.
    pub async fn log_entries_between(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<StoredEntry>, StateError> {
        let rows = sqlx::query(
            "SELECT idx, kind, run_id, step, entry, leaf_hash FROM log_entries
             WHERE idx >= $1 AND idx < $2 ORDER BY idx",
        )
        .bind(as_i64(from))
        .bind(as_i64(to))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("read step log entries"))?;
        Ok(rows.iter().map(entry_from_row).collect())
    }

    /// Entry `index`.
    pub async fn log_entry(&self, index: u64) -> Result<Option<StoredEntry>, StateError> {
        let row = sqlx::query(
            "SELECT idx, kind, run_id, step, entry, leaf_hash FROM log_entries WHERE idx = $1",
        )
        .bind(as_i64(index))
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("read step log entry"))?;
        Ok(row.as_ref().map(entry_from_row))
    }

    /// The step-record entries of a run, in index order.
    pub async fn run_step_entries(&self, run_id: &str) -> Result<Vec<StoredEntry>, StateError> {
        let rows = sqlx::query(
            "SELECT idx, kind, run_id, step, entry, leaf_hash FROM log_entries
             WHERE run_id = $1 AND kind = $2 ORDER BY idx",
        )
        .bind(run_id)
        .bind(KIND_STEP_RECORD)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("read a run's step log entries"))?;
        Ok(rows.iter().map(entry_from_row).collect())
    }

    /// Every stored step record: ((run, step), record_json).
    pub async fn all_record_jsons(&self) -> Result<Vec<((String, String), String)>, StateError> {
        let rows = sqlx::query("SELECT run_id, step, record_json FROM step_records")
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("read step records"))?;
        Ok(rows
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect())
    }

    /// The log's tree covering at least the first `size` entries, rehashed from the stored
    /// entry bytes as they are read (each entry once per process). Holds the cache's lock.
    pub async fn log_tree(
        &self,
        size: u64,
    ) -> Result<tokio::sync::MutexGuard<'_, MerkleTree>, TreeError> {
        let mut tree = self.log_tree.0.lock().await;
        if tree.size() < size {
            let from = tree.size();
            for (i, e) in self
                .log_entries_between(from, size)
                .await?
                .into_iter()
                .enumerate()
            {
                if e.index != from + i as u64 {
                    return Err(TreeError::Gap {
                        index: from + i as u64,
                    });
                }
                tree.push_entry(e.entry.as_bytes());
            }
            if tree.size() < size {
                return Err(TreeError::Gap { index: tree.size() });
            }
        }
        Ok(tree)
    }

    /// Keeps a signed checkpoint; one of the same size already kept wins.
    ///
    /// On SQLite, which commits with `synchronous = NORMAL` (no fsync per transaction, see
    /// `database::connect_sqlite`), this one commit runs with `synchronous = FULL`: it syncs
    /// the write-ahead log, and with it every entry the checkpoint covers, before the
    /// checkpoint can be handed out. A power loss may lose appends no checkpoint covers yet,
    /// never an entry a signed checkpoint covers.
    pub async fn add_checkpoint(
        &self,
        size: u64,
        note: &str,
        at: OffsetDateTime,
    ) -> Result<(), StateError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(query_err("acquire connection"))?;
        let sqlite = self.backend == Backend::Sqlite;
        if sqlite {
            conn.execute("PRAGMA synchronous = FULL")
                .await
                .map_err(query_err("sync step log"))?;
        }
        let inserted = sqlx::query(
            "INSERT INTO log_checkpoints (size, note, signed_at) VALUES ($1, $2, $3)
             ON CONFLICT (size) DO NOTHING",
        )
        .bind(as_i64(size))
        .bind(note)
        .bind(rfc3339(at))
        .execute(&mut *conn)
        .await
        .map_err(query_err("insert step log checkpoint"));
        if sqlite {
            conn.execute("PRAGMA synchronous = NORMAL")
                .await
                .map_err(query_err("sync step log"))?;
        }
        inserted?;
        Ok(())
    }

    /// Every kept checkpoint, smallest first.
    pub async fn log_checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StateError> {
        let rows = sqlx::query("SELECT size, note, signed_at FROM log_checkpoints ORDER BY size")
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("read step log checkpoints"))?;
        Ok(rows.iter().map(checkpoint_from_row).collect())
    }

    /// The largest kept checkpoint.
    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StateError> {
        let row = sqlx::query(
            "SELECT size, note, signed_at FROM log_checkpoints ORDER BY size DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("read latest step log checkpoint"))?;
        Ok(row.as_ref().map(checkpoint_from_row))
    }

    /// The kept checkpoint of `size`.
    pub async fn checkpoint_at(&self, size: u64) -> Result<Option<StoredCheckpoint>, StateError> {
        let row = sqlx::query("SELECT size, note, signed_at FROM log_checkpoints WHERE size = $1")
            .bind(as_i64(size))
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("read step log checkpoint"))?;
        Ok(row.as_ref().map(checkpoint_from_row))
    }
}
