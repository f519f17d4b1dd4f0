//! The step log: an append-only RFC 6962 / RFC 9162 Merkle tree log whose checkpoints are
//! C2SP signed notes (docs/step-log.md).
//!
//! - [`merkle`]: leaf and node hashing, [`CompactRange`] (append in O(log n), root at any
//!   time) and [`MerkleTree`] (everything in memory; roots and proofs for any past size).
//! - [`proof`]: checking inclusion and consistency proofs (RFC 9162 §2.1.3.2, §2.1.4.2).
//! - [`note`]: C2SP signed notes with Ed25519 keys: [`NoteSigner`] (the daemon's log key),
//!   [`NoteVerifier`] (the `<name>+<id>+<key>` string anyone can check checkpoints with).
//! - [`checkpoint`]: C2SP tlog checkpoints: [`Checkpoint`] text, signing, and
//!   [`LogVerifier`], which opens a signed checkpoint of one log.
//! - [`offline_proof`]: [`TlogProof`], the C2SP tlog-proof text of an inclusion proof with its
//!   signed checkpoint (what `kiln audit prove` prints), checkable offline.
//! - [`audit`]: [`audit_log`], the whole-log check behind `kiln audit verify`.
//!
//! Invariant: pure. No database, no files, no clock, no network; what an entry contains is the
//! caller's business (the daemon's). No cryptography of its own either: SHA-256 comes from the
//! `sha2` crate, Ed25519 from the `sigstore` crate.

pub mod audit;
pub mod checkpoint;
pub mod merkle;
pub mod note;
pub mod offline_proof;
pub mod proof;

pub use audit::{AuditFinding, AuditReport, CheckpointRef, audit_log};
pub use checkpoint::{Checkpoint, CheckpointError, LogVerifier};
pub use merkle::{CompactRange, Hash, MerkleTree, empty_root, leaf_hash, node_hash, root_of};
pub use note::{NoteKeyId, NoteSigner, NoteVerifier, OpenedNote, open_note, sign_note};
pub use offline_proof::{TLOG_PROOF_HEADER, TlogProof, TlogProofError};
pub use proof::{
    ProofError, consistency_proof_len, inclusion_proof_len, root_from_inclusion_proof,
    verify_consistency, verify_inclusion,
};
