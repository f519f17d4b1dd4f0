//! in-toto Attestation Framework v1: the Statement and the ResourceDescriptor
//! (<https://github.com/in-toto/attestation/tree/main/spec/v1>).
//!
//! These are wire types: field names follow the spec exactly, absent optional fields are left
//! out when serialising, and unknown fields are ignored when reading (the spec lets producers
//! add fields).

use std::collections::BTreeMap;

use kiln_core::Sha256Digest;
use serde::{Deserialize, Serialize};

/// The `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// The DSSE `payloadType` of an in-toto Statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// An in-toto Statement v1 about `subject`, carrying a predicate of type `P`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Statement<P> {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<ResourceDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: P,
}

/// A set of digests of one resource, by algorithm. kiln writes and checks `sha256` only; other
/// algorithms another producer lists are kept as text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Digest>,
    #[serde(flatten)]
    pub other: BTreeMap<String, String>,
}

impl DigestSet {
    /// A digest set holding only `sha256`.
    pub fn sha256(digest: Sha256Digest) -> Self {
        Self {
            sha256: Some(digest),
            other: BTreeMap::new(),
        }
    }
}

/// An in-toto ResourceDescriptor v1: names one artifact or resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "is_empty_digest")]
    pub digest: DigestSet,
    /// Base64 in JSON; kiln never inlines content and keeps what it reads as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, serde_json::Value>,
}

fn is_empty_digest(d: &DigestSet) -> bool {
    d.sha256.is_none() && d.other.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_serialises_with_spec_field_names_and_skips_absent_fields() {
        let st = Statement {
            statement_type: STATEMENT_TYPE.into(),
            subject: vec![ResourceDescriptor {
                name: Some("hello".into()),
                digest: DigestSet::sha256(Sha256Digest::of(b"hello")),
                ..Default::default()
            }],
            predicate_type: "https://example.com/p".into(),
            predicate: serde_json::json!({}),
        };
        assert_eq!(
            serde_json::to_string(&st).unwrap(),
            r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"hello","digest":{"sha256":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}}],"predicateType":"https://example.com/p","predicate":{}}"#
        );
    }

    #[test]
    fn digest_set_keeps_other_algorithms_and_rejects_bad_sha256() {
        let d: DigestSet = serde_json::from_str(r#"{"sha512":"ab","gitCommit":"cd"}"#).unwrap();
        assert_eq!(d.sha256, None);
        assert_eq!(d.other.len(), 2);
        assert!(serde_json::from_str::<DigestSet>(r#"{"sha256":"ABC"}"#).is_err());
    }
}
