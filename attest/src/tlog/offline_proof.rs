//! Offline inclusion proofs in the C2SP tlog-proof text format (<https://c2sp.org/tlog-proof>):
//! an entry's index, its RFC 6962 audit path and the signed checkpoint it leads to, in one
//! file that anyone with the log's origin and verifier key can check without asking the log.
//! `kiln audit prove ENTRY` prints one.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! [extra <base64 of opaque, unauthenticated data>]
//! index <leaf index, ASCII decimal, no leading zeros>
//! <base64 audit path hash, leaf side first>...
//! <empty line>
//! <the signed checkpoint note, verbatim>
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::checkpoint::{Checkpoint, CheckpointError, LogVerifier};
use super::merkle::{Hash, leaf_hash};
use super::proof::{ProofError, verify_inclusion};

/// The first line of every tlog-proof.
pub const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Why a tlog-proof is malformed or does not prove inclusion.
#[derive(Debug, thiserror::Error)]
pub enum TlogProofError {
    #[error("not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("first line is not {TLOG_PROOF_HEADER:?}")]
    Header,
    #[error("the extra line is not \"extra \" followed by standard base64")]
    Extra,
    #[error("no \"index N\" line with a decimal index without leading zeros")]
    Index,
    #[error("audit path line {line} is not the standard base64 of a 32-byte hash")]
    PathHash { line: usize },
    #[error("no empty line and checkpoint after the audit path")]
    NoCheckpoint,
    #[error("the proof's checkpoint is rejected")]
    Checkpoint(#[source] CheckpointError),
    #[error("entry {index} is not proven to be in the checkpointed tree of size {size}")]
    NotIncluded {
        index: u64,
        size: u64,
        #[source]
        err: ProofError,
    },
}

/// An offline inclusion proof: entry `index` is in the tree that `checkpoint` signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlogProof {
    /// Opaque application data; not authenticated. kiln writes none.
    pub extra: Option<Vec<u8>>,
    /// The entry's 0-based index in the log.
    pub index: u64,
    /// `PATH(index, D[size])`, leaf side first.
    pub path: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
}

impl TlogProof {
    /// The proof's text form.
    pub fn to_text(&self) -> String {
        let mut text = format!("{TLOG_PROOF_HEADER}\n");
        if let Some(extra) = &self.extra {
            text.push_str(&format!("extra {}\n", STANDARD.encode(extra)));
        }
        text.push_str(&format!("index {}\n", self.index));
        for hash in &self.path {
            text.push_str(&hash.to_base64());
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&self.checkpoint);
        text
    }

    /// Parses the text form. The checkpoint is kept as text; [`Self::verify`] checks it.
    pub fn parse(text: &[u8]) -> Result<Self, TlogProofError> {
        let text = std::str::from_utf8(text).map_err(|e| TlogProofError::NotUtf8 {
            offset: e.valid_up_to(),
        })?;
        let mut rest = text;
        let mut next_line = || -> Option<&str> {
            let (line, after) = rest.split_once('\n')?;
            rest = after;
            Some(line)
        };
        if next_line() != Some(TLOG_PROOF_HEADER) {
            return Err(TlogProofError::Header);
        }
        let mut line = next_line().ok_or(TlogProofError::Index)?;
        let mut extra = None;
        if let Some(b64) = line.strip_prefix("extra ") {
            extra = Some(STANDARD.decode(b64).map_err(|_| TlogProofError::Extra)?);
            line = next_line().ok_or(TlogProofError::Index)?;
        }
        let index = line
            .strip_prefix("index ")
            .and_then(parse_decimal)
            .ok_or(TlogProofError::Index)?;
        let mut path = Vec::new();
        let mut line_no = if extra.is_some() { 4 } else { 3 };
        loop {
            let line = next_line().ok_or(TlogProofError::NoCheckpoint)?;
            if line.is_empty() {
                break;
            }
            let bytes = STANDARD
                .decode(line)
                .map_err(|_| TlogProofError::PathHash { line: line_no })?;
            let bytes: [u8; 32] = bytes
                .try_into()
                .map_err(|_| TlogProofError::PathHash { line: line_no })?;
            path.push(Hash(bytes));
            line_no += 1;
        }
        if rest.is_empty() {
            return Err(TlogProofError::NoCheckpoint);
        }
        Ok(Self {
            extra,
            index,
            path,
            checkpoint: rest.to_owned(),
        })
    }

    /// Checks that `entry` is the entry at [`Self::index`] of the log that `log` trusts:
    /// the checkpoint must verify under the log key, and the audit path must lead from the
    /// entry's leaf hash to the checkpoint's root. Returns the checkpoint.
    pub fn verify(&self, entry: &[u8], log: &LogVerifier) -> Result<Checkpoint, TlogProofError> {
        let checkpoint = log
            .open(self.checkpoint.as_bytes())
            .map_err(TlogProofError::Checkpoint)?;
        verify_inclusion(
            &leaf_hash(entry),
            self.index,
            checkpoint.size,
            &self.path,
            &checkpoint.root,
        )
        .map_err(|err| TlogProofError::NotIncluded {
            index: self.index,
            size: checkpoint.size,
            err,
        })?;
        Ok(checkpoint)
    }
}

fn parse_decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical { text.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in C2SP tlog-proof.md (C2SP/C2SP commit 0065ea5b716154a2dd48508e3f905012a1
    /// 6ce5e9). Its signatures are elided with "[...]", so it can be parsed, not verified.
    const SPEC_EXAMPLE: &str = "c2sp.org/tlog-proof@v1
extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ
index 73894
gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=
B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=
EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=
RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=
AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=

example.com/fancylog
109482
sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=

— example.com/fancylog hI2DJw[...]1roloI=
— witness1.example mJirIklj[...]qY9v2B/5bg==
— witness2.example TnKKVHLX[...]xwYwrSjgow==
— witness3.example S4X82uH5[...]3oEcROGLFQ==
";

    #[test]
    fn the_spec_example_parses_and_re_encodes_byte_for_byte() {
        let proof = TlogProof::parse(SPEC_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(proof.index, 73894);
        assert_eq!(proof.path.len(), 5);
        assert_eq!(
            proof.path[0].to_base64(),
            "gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ="
        );
        assert!(proof.extra.is_some());
        assert!(
            proof
                .checkpoint
                .starts_with("example.com/fancylog\n109482\n")
        );
        assert_eq!(proof.to_text(), SPEC_EXAMPLE);
    }

    #[test]
    fn malformed_proofs_are_refused_with_what_was_wrong() {
        let ok = "c2sp.org/tlog-proof@v1\nindex 0\n\no\n1\nAAAA\n";
        TlogProof::parse(ok.as_bytes()).unwrap();
        type Expect = fn(&TlogProofError) -> bool;
        let cases: [(&str, Expect); 7] = [
            ("c2sp.org/tlog-proof@v2\nindex 0\n\nx\n", |e| {
                matches!(e, TlogProofError::Header)
            }),
            ("c2sp.org/tlog-proof@v1\nindex 01\n\nx\n", |e| {
                matches!(e, TlogProofError::Index)
            }),
            ("c2sp.org/tlog-proof@v1\nextra !!\nindex 0\n\nx\n", |e| {
                matches!(e, TlogProofError::Extra)
            }),
            ("c2sp.org/tlog-proof@v1\nindex 0\nAAAA\n\nx\n", |e| {
                matches!(e, TlogProofError::PathHash { line: 3 })
            }),
            ("c2sp.org/tlog-proof@v1\nindex 0\n", |e| {
                matches!(e, TlogProofError::NoCheckpoint)
            }),
            ("c2sp.org/tlog-proof@v1\nindex 0\n\n", |e| {
                matches!(e, TlogProofError::NoCheckpoint)
            }),
            ("c2sp.org/tlog-proof@v1\n", |e| {
                matches!(e, TlogProofError::Index)
            }),
        ];
        for (text, expected) in cases {
            let err = TlogProof::parse(text.as_bytes()).unwrap_err();
            assert!(expected(&err), "{text:?}: {err:?}");
        }
    }
}
