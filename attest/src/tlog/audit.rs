//! The whole-log audit behind `kiln audit verify`: rehash every entry as stored, and check the
//! latest signed checkpoint, and every older one kept, against the recomputed tree.
//!
//! The database is not trusted: the stored entries are hashed afresh (stored leaf hashes are
//! never used), and only checkpoints whose signature verifies under the log key count. An
//! older checkpoint is checked by comparing its root with the root of the same-size prefix of
//! the recomputed log. Having every entry, that is a stronger check than a consistency proof:
//! if both checkpoints match prefixes of one log, each extends the other.
//!
//! What each tampering shows as:
//! - an entry deleted: [`AuditFinding::SizeMismatch`] (and [`AuditFinding::BeyondLog`] or
//!   [`AuditFinding::RootMismatch`] for older checkpoints past the deletion);
//! - an entry modified, entries reordered, an entry inserted: [`AuditFinding::RootMismatch`]
//!   (plus a size mismatch for an insertion);
//! - a forged or altered checkpoint: [`AuditFinding::CheckpointRejected`] with
//!   [`CheckpointError::SignatureInvalid`] or [`CheckpointError::NotSignedByKey`].
//!
//! [`AuditReport::verified_size`] narrows down where history changed: the entries below it
//! match a signed checkpoint.

use std::collections::BTreeMap;
use std::fmt;

use super::checkpoint::{Checkpoint, CheckpointError, LogVerifier};
use super::merkle::{CompactRange, Hash, leaf_hash};

/// Which checkpoint a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointRef {
    /// The latest checkpoint, which must cover the whole log.
    Latest,
    /// The older checkpoint at this position in the list given to [`audit_log`].
    Older(usize),
}

impl fmt::Display for CheckpointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("the latest checkpoint"),
            Self::Older(i) => write!(f, "older checkpoint #{i}"),
        }
    }
}

/// One thing the audit found wrong.
#[derive(Debug, thiserror::Error)]
pub enum AuditFinding {
    #[error("{which} is rejected")]
    CheckpointRejected {
        which: CheckpointRef,
        #[source]
        error: CheckpointError,
    },
    #[error(
        "the latest checkpoint covers {checkpoint_size} entries but the log holds {log_size}: {}",
        if checkpoint_size > log_size { "entries were deleted" } else { "entries were added without a signed checkpoint" }
    )]
    SizeMismatch { checkpoint_size: u64, log_size: u64 },
    #[error(
        "{which} says the first {size} entries have root {checkpoint_root}, but the stored entries hash to {computed_root}: an entry was modified, reordered, inserted or deleted"
    )]
    RootMismatch {
        which: CheckpointRef,
        size: u64,
        checkpoint_root: Hash,
        computed_root: Hash,
    },
    #[error(
        "{which} covers {size} entries but the log holds only {log_size}: entries were deleted"
    )]
    BeyondLog {
        which: CheckpointRef,
        size: u64,
        log_size: u64,
    },
    #[error(
        "{which} covers {size} entries, more than the latest checkpoint ({latest_size}): the latest checkpoint was rolled back"
    )]
    NewerThanLatest {
        which: CheckpointRef,
        size: u64,
        latest_size: u64,
    },
}

/// The result of [`audit_log`].
#[derive(Debug)]
pub struct AuditReport {
    /// The number of entries read.
    pub log_size: u64,
    /// The root recomputed over all of them.
    pub root: Hash,
    /// The latest checkpoint, if its signature verified and it parsed.
    pub latest: Option<Checkpoint>,
    /// The largest size at which a signed checkpoint matched the recomputed log (0 if none).
    pub verified_size: u64,
    /// Everything wrong; empty when the log is intact.
    pub findings: Vec<AuditFinding>,
}

impl AuditReport {
    /// Whether the log is intact: the latest checkpoint verified and covers exactly the stored
    /// entries, and every checkpoint matches them.
    pub fn is_ok(&self) -> bool {
        self.findings.is_empty() && self.latest.is_some()
    }
}

/// Audits a whole log: `entries` are the stored entry bytes in log order, `latest` the latest
/// signed checkpoint note and `older` any earlier signed checkpoint notes, all checked under
/// `log` (origin and key). Reads each entry once; keeps O(log n) hashes plus one root per
/// distinct checkpoint size.
pub fn audit_log<E, N>(
    entries: impl IntoIterator<Item = E>,
    latest: &[u8],
    older: impl IntoIterator<Item = N>,
    log: &LogVerifier,
) -> AuditReport
where
    E: AsRef<[u8]>,
    N: AsRef<[u8]>,
{
    let mut findings = Vec::new();
    let mut opened: Vec<(CheckpointRef, Checkpoint)> = Vec::new();
    let notes = std::iter::once((CheckpointRef::Latest, latest.to_vec())).chain(
        older
            .into_iter()
            .enumerate()
            .map(|(i, n)| (CheckpointRef::Older(i), n.as_ref().to_vec())),
    );
    for (which, note) in notes {
        match log.open(&note) {
            Ok(checkpoint) => opened.push((which, checkpoint)),
            Err(error) => findings.push(AuditFinding::CheckpointRejected { which, error }),
        }
    }

    // One pass over the entries, noting the root at every size a checkpoint names.
    let mut wanted: Vec<u64> = opened.iter().map(|(_, c)| c.size).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut wanted = wanted.into_iter().peekable();
    let mut roots = BTreeMap::new();
    let mut range = CompactRange::new();
    note_roots(&range, &mut wanted, &mut roots);
    for entry in entries {
        range.push(leaf_hash(entry.as_ref()));
        note_roots(&range, &mut wanted, &mut roots);
    }
    let log_size = range.size();
    let root = range.root();

    let latest = opened
        .iter()
        .find(|(which, _)| *which == CheckpointRef::Latest)
        .map(|(_, c)| c.clone());
    let mut verified_size = 0;
    for (which, checkpoint) in &opened {
        let which = *which;
        let size = checkpoint.size;
        if which == CheckpointRef::Latest && size != log_size {
            findings.push(AuditFinding::SizeMismatch {
                checkpoint_size: size,
                log_size,
            });
        }
        if let Some(latest) = &latest
            && which != CheckpointRef::Latest
            && size > latest.size
        {
            findings.push(AuditFinding::NewerThanLatest {
                which,
                size,
                latest_size: latest.size,
            });
        }
        match roots.get(&size) {
            None if which == CheckpointRef::Latest => {} // already a size mismatch
            None => findings.push(AuditFinding::BeyondLog {
                which,
                size,
                log_size,
            }),
            Some(computed) if *computed != checkpoint.root => {
                findings.push(AuditFinding::RootMismatch {
                    which,
                    size,
                    checkpoint_root: checkpoint.root,
                    computed_root: *computed,
                });
            }
            Some(_) => verified_size = verified_size.max(size),
        }
    }
    AuditReport {
        log_size,
        root,
        latest,
        verified_size,
        findings,
    }
}

/// Records the root of `range` if its size is the next one wanted.
fn note_roots(
    range: &CompactRange,
    wanted: &mut std::iter::Peekable<std::vec::IntoIter<u64>>,
    roots: &mut BTreeMap<u64, Hash>,
) {
    while wanted.peek() == Some(&range.size()) {
        roots.insert(range.size(), range.root());
        wanted.next();
    }
}
