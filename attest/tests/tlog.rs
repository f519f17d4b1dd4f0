//! The step log library against the standards: published RFC 6962 and signed-note test
//! vectors, a naive RFC 6962 implementation for every tree shape up to 64 leaves, `openssl` as
//! an independent Ed25519 verifier, and the four tamperings `kiln audit verify` must catch.
//!
//! Needs `openssl` (3.x) on PATH for the interop tests; they fail, not skip, without it.

use std::path::Path;
use std::process::Command;

use kiln_attest::tlog::{
    AuditFinding, Checkpoint, CheckpointError, CheckpointRef, Hash, LogVerifier, MerkleTree,
    NoteSigner, NoteVerifier, ProofError, TlogProof, TlogProofError, audit_log, empty_root,
    leaf_hash, node_hash, open_note, sign_note, verify_consistency, verify_inclusion,
};

fn h(hex_str: &str) -> Hash {
    Hash(hex::decode(hex_str).unwrap().try_into().unwrap())
}

// ---------------------------------------------------------------------------------------------
// RFC 6962 test vectors.
//
// From transparency-dev/merkle, proof/verify_test.go (commit 02194e9afb6c1d95b5381350007963aa
// 70fff472), the vectors Certificate Transparency implementations share: the leaves, the root of
// every tree size 1..8, and inclusion and consistency proofs. (Their inclusion vectors number
// leaves from 1; the indices below are 0-based.)
// ---------------------------------------------------------------------------------------------

const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf index, tree size, proof)
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (old size, new size, proof)
const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn reference_tree() -> MerkleTree {
    let mut tree = MerkleTree::new();
    for leaf in LEAVES {
        tree.push_entry(&hex::decode(leaf).unwrap());
    }
    tree
}

#[test]
fn roots_match_the_rfc6962_reference_vectors_at_every_size() {
    assert_eq!(empty_root(), h(ROOTS[0]));
    let tree = reference_tree();
    for (size, root) in ROOTS.iter().enumerate() {
        assert_eq!(tree.root_at(size as u64).unwrap(), h(root), "size {size}");
    }
}

#[test]
fn inclusion_proofs_match_the_reference_vectors_and_verify() {
    let tree = reference_tree();
    for (index, size, proof) in INCLUSION {
        let want: Vec<Hash> = proof.iter().map(|p| h(p)).collect();
        assert_eq!(tree.inclusion_proof(index, size).unwrap(), want);
        let leaf = tree.leaf_hash(index).unwrap();
        verify_inclusion(&leaf, index, size, &want, &h(ROOTS[size as usize])).unwrap();
        for bad in corrupt_inclusion(&leaf, index, size, &want, &h(ROOTS[size as usize])) {
            assert!(
                verify_inclusion(&bad.leaf, bad.index, bad.size, &bad.proof, &bad.root).is_err(),
                "{} verified for leaf {index} of {size}",
                bad.what
            );
        }
    }
}

#[test]
fn consistency_proofs_match_the_reference_vectors_and_verify() {
    let tree = reference_tree();
    for (old, new, proof) in CONSISTENCY {
        let want: Vec<Hash> = proof.iter().map(|p| h(p)).collect();
        assert_eq!(tree.consistency_proof(old, new).unwrap(), want);
        let (r1, r2) = (h(ROOTS[old as usize]), h(ROOTS[new as usize]));
        verify_consistency(old, new, &r1, &r2, &want).unwrap();
        if old == new {
            continue;
        }
        for bad in corrupt_consistency(old, new, &r1, &r2, &want) {
            assert!(
                verify_consistency(bad.old, bad.new, &bad.r1, &bad.r2, &bad.proof).is_err(),
                "{} verified for {old} -> {new}",
                bad.what
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Every tree shape up to 64 leaves against RFC 6962 §2.1 written out naively.
// ---------------------------------------------------------------------------------------------

fn k_of(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// `MTH(D[n])`, RFC 6962 §2.1.
fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => empty_root(),
        1 => d[0],
        n => {
            let k = k_of(n);
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

/// `PATH(m, D[n])`, RFC 6962 §2.1.1.
fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n == 1 {
        return vec![];
    }
    let k = k_of(n);
    let (mut p, other) = if m < k {
        (path(m, &d[..k]), mth(&d[k..]))
    } else {
        (path(m - k, &d[k..]), mth(&d[..k]))
    };
    p.push(other);
    p
}

/// `SUBPROOF(m, D[n], b)`, RFC 6962 §2.1.2.
fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = k_of(n);
    let (mut p, other) = if m <= k {
        (subproof(m, &d[..k], b), mth(&d[k..]))
    } else {
        (subproof(m - k, &d[k..], false), mth(&d[..k]))
    };
    p.push(other);
    p
}

const MAX: u64 = 64;

fn synthetic_leaves(n: u64) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(format!("step {i}").as_bytes()))
        .collect()
}

#[test]
fn every_inclusion_proof_up_to_64_leaves_equals_rfc6962_path_and_verifies() {
    let leaves = synthetic_leaves(MAX);
    let tree = MerkleTree::from_leaf_hashes(leaves.iter().copied());
    for size in 1..=MAX {
        let d = &leaves[..size as usize];
        let root = mth(d);
        assert_eq!(tree.root_at(size).unwrap(), root);
        for index in 0..size {
            let proof = tree.inclusion_proof(index, size).unwrap();
            assert_eq!(proof, path(index as usize, d), "PATH({index}, D[{size}])");
            let leaf = leaves[index as usize];
            verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
            for bad in corrupt_inclusion(&leaf, index, size, &proof, &root) {
                assert!(
                    verify_inclusion(&bad.leaf, bad.index, bad.size, &bad.proof, &bad.root)
                        .is_err(),
                    "{} verified for leaf {index} of {size}",
                    bad.what
                );
            }
        }
    }
}

#[test]
fn every_consistency_proof_up_to_64_leaves_equals_rfc6962_proof_and_verifies() {
    let leaves = synthetic_leaves(MAX);
    let tree = MerkleTree::from_leaf_hashes(leaves.iter().copied());
    for new in 1..=MAX {
        let r2 = mth(&leaves[..new as usize]);
        for old in 1..=new {
            let r1 = mth(&leaves[..old as usize]);
            let proof = tree.consistency_proof(old, new).unwrap();
            let want = if old == new {
                vec![]
            } else {
                subproof(old as usize, &leaves[..new as usize], true)
            };
            assert_eq!(proof, want, "PROOF({old}, D[{new}])");
            verify_consistency(old, new, &r1, &r2, &proof).unwrap();
            if old == new {
                continue;
            }
            for bad in corrupt_consistency(old, new, &r1, &r2, &proof) {
                assert!(
                    verify_consistency(bad.old, bad.new, &bad.r1, &bad.r2, &bad.proof).is_err(),
                    "{} verified for {old} -> {new}",
                    bad.what
                );
            }
        }
    }
}

struct BadInclusion {
    what: String,
    leaf: Hash,
    index: u64,
    size: u64,
    proof: Vec<Hash>,
    root: Hash,
}

/// Every way to get an inclusion proof slightly wrong (after transparency-dev/merkle's
/// corruptInclusionProof): wrong index, size, leaf or root; a hash added, dropped or flipped.
fn corrupt_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Vec<BadInclusion> {
    let other = leaf_hash(b"some other leaf");
    let mut bad = Vec::new();
    let mut push = |what: String, leaf: Hash, index: u64, size: u64, proof: Vec<Hash>, root| {
        bad.push(BadInclusion {
            what,
            leaf,
            index,
            size,
            proof,
            root,
        })
    };
    let p = proof.to_vec();
    if index > 0 {
        push("index - 1".into(), *leaf, index - 1, size, p.clone(), *root);
    }
    push("index + 1".into(), *leaf, index + 1, size, p.clone(), *root);
    push("index ^ 2".into(), *leaf, index ^ 2, size, p.clone(), *root);
    push("size * 2".into(), *leaf, index, size * 2, p.clone(), *root);
    push("size / 2".into(), *leaf, index, size / 2, p.clone(), *root);
    push("wrong leaf".into(), other, index, size, p.clone(), *root);
    push(
        "empty root".into(),
        *leaf,
        index,
        size,
        p.clone(),
        empty_root(),
    );
    push("wrong root".into(), *leaf, index, size, p.clone(), other);
    let mut longer = p.clone();
    longer.push(*root);
    push("trailing root".into(), *leaf, index, size, longer, *root);
    let mut longer = vec![*root];
    longer.extend_from_slice(&p);
    push("preceding root".into(), *leaf, index, size, longer, *root);
    for i in 0..p.len() {
        let mut flipped = p.clone();
        flipped[i].0[0] ^= 8;
        push(
            format!("proof[{i}] bit flipped"),
            *leaf,
            index,
            size,
            flipped,
            *root,
        );
    }
    if !p.is_empty() {
        push(
            "last hash removed".into(),
            *leaf,
            index,
            size,
            p[..p.len() - 1].to_vec(),
            *root,
        );
    }
    bad
}

struct BadConsistency {
    what: String,
    old: u64,
    new: u64,
    r1: Hash,
    r2: Hash,
    proof: Vec<Hash>,
}

/// After transparency-dev/merkle's corruptConsistencyProof.
fn corrupt_consistency(
    old: u64,
    new: u64,
    r1: &Hash,
    r2: &Hash,
    proof: &[Hash],
) -> Vec<BadConsistency> {
    let other = leaf_hash(b"some other root");
    let p = proof.to_vec();
    let mut bad = Vec::new();
    let mut push = |what: &str, old, new, r1, r2, proof| {
        bad.push(BadConsistency {
            what: what.into(),
            old,
            new,
            r1,
            r2,
            proof,
        })
    };
    push("old - 1", old - 1, new, *r1, *r2, p.clone());
    push("old + 1", old + 1, new, *r1, *r2, p.clone());
    push("old ^ 2", old ^ 2, new, *r1, *r2, p.clone());
    push("new * 2", old, new * 2, *r1, *r2, p.clone());
    push("new / 2", old, new / 2, *r1, *r2, p.clone());
    push("wrong old root", old, new, other, *r2, p.clone());
    push("wrong new root", old, new, *r1, other, p.clone());
    push("swapped roots", old, new, *r2, *r1, p.clone());
    push("empty proof", old, new, *r1, *r2, vec![]);
    for (what, extra) in [("root1", *r1), ("root2", *r2), ("proof[0]", p[0])] {
        let mut longer = p.clone();
        longer.push(extra);
        push(&format!("trailing {what}"), old, new, *r1, *r2, longer);
        let mut longer = vec![extra];
        longer.extend_from_slice(&p);
        push(&format!("preceding {what}"), old, new, *r1, *r2, longer);
    }
    push("truncated", old, new, *r1, *r2, p[..p.len() - 1].to_vec());
    for i in 0..p.len() {
        let mut flipped = p.clone();
        flipped[i].0[0] ^= 16;
        push(
            &format!("proof[{i}] bit flipped"),
            old,
            new,
            *r1,
            *r2,
            flipped,
        );
    }
    bad
}

#[test]
fn proof_errors_say_what_was_wrong() {
    let tree = reference_tree();
    let proof = tree.inclusion_proof(5, 8).unwrap();
    let leaf = tree.leaf_hash(5).unwrap();
    assert_eq!(
        verify_inclusion(&leaf, 5, 8, &proof[..2], &h(ROOTS[8])),
        Err(ProofError::WrongLength { got: 2, want: 3 })
    );
    assert_eq!(
        verify_inclusion(&leaf, 5, 8, &proof, &h(ROOTS[7])),
        Err(ProofError::RootMismatch {
            computed: h(ROOTS[8]),
            expected: h(ROOTS[7])
        })
    );
    let proof = tree.consistency_proof(6, 8).unwrap();
    assert!(matches!(
        verify_consistency(6, 8, &h(ROOTS[5]), &h(ROOTS[8]), &proof),
        Err(ProofError::OldRootMismatch { .. })
    ));
    assert_eq!(
        verify_consistency(8, 6, &h(ROOTS[8]), &h(ROOTS[6]), &proof),
        Err(ProofError::SizeDecreased { old: 8, new: 6 })
    );
}

// ---------------------------------------------------------------------------------------------
// Signed-note vectors.
//
// From golang.org/x/mod/sumdb/note (note.go package documentation and note_test.go): the
// PeterNeumann signer and verifier keys and the note they sign, and the EnochRoot key that
// countersigns it. Ed25519 (RFC 8032) is deterministic, so signing must reproduce the
// published bytes exactly.
// ---------------------------------------------------------------------------------------------

const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const PETER_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                          then you don't know what your problem is.\n";
const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

#[test]
fn signing_reproduces_the_go_sumdb_note_vector_byte_for_byte() {
    let signer = NoteSigner::from_signer_key(PETER_SKEY).unwrap();
    assert_eq!(signer.name(), "PeterNeumann");
    assert_eq!(signer.key_id().to_string(), "c74f20a3");
    assert_eq!(signer.verifier().to_string(), PETER_VKEY);
    let note = sign_note(PETER_TEXT, &signer).unwrap();
    assert_eq!(note, format!("{PETER_TEXT}\n{PETER_SIG}"));
}

#[test]
fn the_go_sumdb_note_vector_opens_and_any_change_to_it_is_rejected() {
    let peter: NoteVerifier = PETER_VKEY.parse().unwrap();
    let enoch: NoteVerifier = ENOCH_VKEY.parse().unwrap();
    let note = format!("{PETER_TEXT}\n{PETER_SIG}");
    let opened = open_note(note.as_bytes(), &peter).unwrap();
    assert_eq!(opened.text, PETER_TEXT);
    assert_eq!(opened.ignored_signatures, 0);

    // Doubly signed: each key verifies its own line and ignores the other.
    let both = format!("{PETER_TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    assert_eq!(
        open_note(both.as_bytes(), &peter)
            .unwrap()
            .ignored_signatures,
        1
    );
    assert_eq!(
        open_note(both.as_bytes(), &enoch)
            .unwrap()
            .ignored_signatures,
        1
    );

    // Signed only by a key we do not trust.
    assert!(matches!(
        open_note(note.as_bytes(), &enoch),
        Err(CheckpointError::NotSignedByKey { ignored: 1, .. })
    ));
    // Altered text.
    let altered = note.replace("cryptography", "cryptographY");
    assert!(matches!(
        open_note(altered.as_bytes(), &peter),
        Err(CheckpointError::SignatureInvalid { line: 4, .. })
    ));
    // Framing errors.
    for (bad, what) in [
        (note.trim_end_matches('\n').to_owned(), "unterminated"),
        (note.replace("\n\n", "\n"), "no blank line"),
        (note.replace("— ", "-- "), "ascii dash"),
        (
            note.replace("— PeterNeumann ", "— PeterNeumann  "),
            "double space",
        ),
        (note.replace("x08go", "x08g!"), "bad base64"),
        (format!("{PETER_TEXT}\n— PeterNeumann AAAA\n"), "short"),
        (note.replace("your problem,", "your\tproblem,"), "tab"),
    ] {
        assert!(
            open_note(bad.as_bytes(), &peter).is_err(),
            "{what}: {bad:?}"
        );
    }
    assert!(matches!(
        open_note(b"caf\xc3\n\n", &peter),
        Err(CheckpointError::NotUtf8 { offset: 3 })
    ));
}

#[test]
fn a_note_with_more_than_100_signatures_is_refused() {
    let peter: NoteVerifier = PETER_VKEY.parse().unwrap();
    let mut note = format!("{PETER_TEXT}\n");
    for _ in 0..100 {
        note.push_str(ENOCH_SIG);
    }
    note.push_str(PETER_SIG);
    assert!(matches!(
        open_note(note.as_bytes(), &peter),
        Err(CheckpointError::TooManySignatures { max: 100 })
    ));
}

#[test]
fn every_mangling_of_the_go_verifier_key_is_refused() {
    // As golang.org/x/mod/sumdb/note TestNewVerifier: every proper substring, and every byte
    // incremented, must fail to parse.
    PETER_VKEY.parse::<NoteVerifier>().unwrap();
    let b = PETER_VKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if i == 0 && j == b.len() {
                continue;
            }
            let s = String::from_utf8_lossy(&b[i..j]);
            assert!(s.parse::<NoteVerifier>().is_err(), "{s:?} parsed");
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] += 1;
        let s = String::from_utf8_lossy(&m);
        assert!(s.parse::<NoteVerifier>().is_err(), "{s:?} parsed");
    }
    assert!(matches!(
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            .parse::<NoteVerifier>(),
        Err(CheckpointError::KeyIdMismatch { .. })
    ));
    // Type 0x02 (ECDSA) is a spec'd type kiln does not accept.
    let ecdsa_like = format!(
        "x+00000000+{}",
        base64_encode(&[&[0x02u8][..], &[0u8; 32]].concat())
    );
    assert!(matches!(
        ecdsa_like.parse::<NoteVerifier>(),
        Err(CheckpointError::UnsupportedKeyType { alg: 0x02 })
    ));
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// A real sum.golang.org checkpoint, from google/trillian-examples, formats/log/note_test.go
// (TestSumDBNoteParsing); the verifier key is the Go checksum database's published key. Its
// origin ("go.sum database tree") differs from its key name ("sum.golang.org").
const SUMDB_VKEY: &str = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";
const SUMDB_CHECKPOINT: &str = "go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n\n— sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n";

#[test]
fn a_real_sum_golang_org_checkpoint_verifies() {
    let log = LogVerifier::new("go.sum database tree", SUMDB_VKEY.parse().unwrap());
    let cp = log.open(SUMDB_CHECKPOINT.as_bytes()).unwrap();
    assert_eq!(cp.size, 6476701);
    assert_eq!(
        cp.root.to_base64(),
        "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk="
    );
    assert!(cp.extensions.is_empty());
    // Re-encoding gives back the signed text exactly.
    assert!(SUMDB_CHECKPOINT.starts_with(&cp.to_text().unwrap()));

    let other_log = LogVerifier::new("Go rocks", SUMDB_VKEY.parse().unwrap());
    assert!(matches!(
        other_log.open(SUMDB_CHECKPOINT.as_bytes()),
        Err(CheckpointError::OriginMismatch { .. })
    ));
    let bigger = SUMDB_CHECKPOINT.replace("6476701", "6476702");
    assert!(matches!(
        log.open(bigger.as_bytes()),
        Err(CheckpointError::SignatureInvalid { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Interop with openssl, an Ed25519 implementation kiln did not write.
// ---------------------------------------------------------------------------------------------

fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed for this test")
}

#[test]
fn openssl_verifies_checkpoint_signatures_and_kiln_loads_openssl_keys() {
    let dir = tempfile::tempdir().unwrap();
    // A key generated by openssl (PKCS#8 v1, no public key inside) signs checkpoints.
    let out = openssl(
        &["genpkey", "-algorithm", "ed25519", "-out", "log.key"],
        dir.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let pem = std::fs::read(dir.path().join("log.key")).unwrap();
    let signer = NoteSigner::from_pkcs8_pem("kiln.example/steps", &pem).unwrap();

    // Its public key, as openssl derives it, is the one in the verifier key string.
    let out = openssl(
        &[
            "pkey",
            "-in",
            "log.key",
            "-pubout",
            "-outform",
            "DER",
            "-out",
            "log.pub.der",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let der = std::fs::read(dir.path().join("log.pub.der")).unwrap();
    assert_eq!(der, signer.verifier().spki_der());

    let tree = reference_tree();
    let cp = Checkpoint {
        origin: "kiln.example/steps".into(),
        size: tree.size(),
        root: tree.root(),
        extensions: vec![],
    };
    let note = cp.sign(&signer).unwrap();
    let (text, sig_line) = note
        .rsplit_once("\n\n")
        .map(|(t, s)| (format!("{t}\n"), s))
        .unwrap();
    assert_eq!(text, cp.to_text().unwrap());
    let blob = {
        use base64::Engine as _;
        let b64 = sig_line
            .strip_prefix("— kiln.example/steps ")
            .unwrap()
            .trim_end();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    };
    assert_eq!(&blob[..4], &signer.key_id().0.to_be_bytes());
    std::fs::write(dir.path().join("sig"), &blob[4..]).unwrap();

    let verify = |text: &str| {
        std::fs::write(dir.path().join("text"), text).unwrap();
        openssl(
            &[
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                "log.pub.der",
                "-keyform",
                "DER",
                "-rawin",
                "-in",
                "text",
                "-sigfile",
                "sig",
            ],
            dir.path(),
        )
    };
    let out = verify(&text);
    assert!(
        out.status.success(),
        "openssl rejected kiln's signature: {out:?}"
    );
    let out = verify(&text.replace(&format!("\n{}\n", cp.size), "\n9\n"));
    assert!(
        !out.status.success(),
        "openssl accepted an altered checkpoint"
    );

    // And kiln's own verifier agrees.
    let log = LogVerifier::new("kiln.example/steps", signer.verifier());
    assert_eq!(log.open(note.as_bytes()).unwrap(), cp);
}

// ---------------------------------------------------------------------------------------------
// The whole-log audit: the four tamperings `kiln audit verify` must detect.
// ---------------------------------------------------------------------------------------------

const ORIGIN: &str = "kiln.example/steps";

struct Log {
    entries: Vec<Vec<u8>>,
    /// Signed checkpoints after every 25 entries; the last is the latest.
    checkpoints: Vec<String>,
    log: LogVerifier,
}

fn entry(i: usize) -> Vec<u8> {
    format!(
        r#"{{"kind":"step","run":"r{}","step":"s{i}","exit":0}}"#,
        i / 10
    )
    .into_bytes()
}

fn build_log(n: usize) -> Log {
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    let mut tree = MerkleTree::new();
    let mut entries = Vec::new();
    let mut checkpoints = Vec::new();
    for i in 0..n {
        entries.push(entry(i));
        tree.push_entry(&entries[i]);
        if (i + 1) % 25 == 0 || i + 1 == n {
            let cp = Checkpoint {
                origin: ORIGIN.into(),
                size: tree.size(),
                root: tree.root(),
                extensions: vec![],
            };
            checkpoints.push(cp.sign(&signer).unwrap());
        }
    }
    let log = LogVerifier::new(ORIGIN, signer.verifier());
    Log {
        entries,
        checkpoints,
        log,
    }
}

impl Log {
    fn audit(&self, entries: &[Vec<u8>]) -> kiln_attest::tlog::AuditReport {
        let (latest, older) = self.checkpoints.split_last().unwrap();
        audit_log(entries, latest.as_bytes(), older, &self.log)
    }
}

#[test]
fn audit_passes_on_an_untouched_log() {
    let log = build_log(110);
    let report = log.audit(&log.entries);
    assert!(report.is_ok(), "{:?}", report.findings);
    assert_eq!(report.log_size, 110);
    assert_eq!(report.verified_size, 110);
    assert_eq!(report.latest.unwrap().size, 110);
}

#[test]
fn audit_detects_a_deleted_step_record() {
    let log = build_log(110);
    let mut entries = log.entries.clone();
    entries.remove(60);
    let report = log.audit(&entries);
    assert!(!report.is_ok());
    assert!(
        report.findings.iter().any(|f| matches!(
            f,
            AuditFinding::SizeMismatch {
                checkpoint_size: 110,
                log_size: 109
            }
        )),
        "{:?}",
        report.findings
    );
    // Checkpoints 25 and 50 still match; 75 and 100 do not.
    assert_eq!(report.verified_size, 50);
    let mismatched: Vec<u64> = report
        .findings
        .iter()
        .filter_map(|f| match f {
            AuditFinding::RootMismatch { size, .. } => Some(*size),
            _ => None,
        })
        .collect();
    assert_eq!(mismatched, [75, 100]);

    // Deleting the last entries shows as checkpoints beyond the log.
    let report = log.audit(&log.entries[..90]);
    assert!(report.findings.iter().any(|f| matches!(
        f,
        AuditFinding::BeyondLog {
            which: CheckpointRef::Older(3),
            size: 100,
            log_size: 90
        }
    )));
}

#[test]
fn audit_detects_a_modified_step_record() {
    let log = build_log(110);
    let mut entries = log.entries.clone();
    entries[80] = entries[80].replace_bytes(b"\"exit\":0", b"\"exit\":1");
    let report = log.audit(&entries);
    assert!(!report.is_ok());
    assert!(
        report.findings.iter().any(|f| matches!(
            f,
            AuditFinding::RootMismatch {
                which: CheckpointRef::Latest,
                size: 110,
                ..
            }
        )),
        "{:?}",
        report.findings
    );
    assert_eq!(report.verified_size, 75);
    assert!(
        !report
            .findings
            .iter()
            .any(|f| matches!(f, AuditFinding::SizeMismatch { .. }))
    );
}

#[test]
fn audit_detects_a_reordered_log() {
    let log = build_log(110);
    let mut entries = log.entries.clone();
    entries.swap(30, 31);
    let report = log.audit(&entries);
    assert!(!report.is_ok());
    assert!(report.findings.iter().any(|f| matches!(
        f,
        AuditFinding::RootMismatch {
            which: CheckpointRef::Latest,
            ..
        }
    )));
    assert_eq!(report.verified_size, 25);
}

#[test]
fn audit_detects_a_forged_checkpoint() {
    let log = build_log(110);
    let (_, older) = log.checkpoints.split_last().unwrap();

    // An attacker rewrites history and signs a checkpoint for it with their own key under the
    // log's name: it carries no signature by the log key.
    let mut entries = log.entries.clone();
    entries[5] = b"rewritten".to_vec();
    let tree = MerkleTree::from_leaf_hashes(entries.iter().map(|e| leaf_hash(e)));
    let forged_cp = Checkpoint {
        origin: ORIGIN.into(),
        size: tree.size(),
        root: tree.root(),
        extensions: vec![],
    };
    let attacker = NoteSigner::generate(ORIGIN).unwrap();
    let forged = forged_cp.sign(&attacker).unwrap();
    let report = audit_log(&entries, forged.as_bytes(), older, &log.log);
    assert!(!report.is_ok());
    assert!(report.latest.is_none());
    assert!(
        matches!(
            &report.findings[0],
            AuditFinding::CheckpointRejected {
                which: CheckpointRef::Latest,
                error: CheckpointError::NotSignedByKey { .. }
            }
        ),
        "{:?}",
        report.findings
    );

    // Or keeps the log key's signature line and edits the checkpoint text under it.
    let genuine = log.checkpoints.last().unwrap();
    let (_, sig) = genuine.rsplit_once("\n\n").unwrap();
    let edited = format!("{}\n{sig}", forged_cp.to_text().unwrap());
    let report = audit_log(&entries, edited.as_bytes(), older, &log.log);
    assert!(matches!(
        &report.findings[0],
        AuditFinding::CheckpointRejected {
            which: CheckpointRef::Latest,
            error: CheckpointError::SignatureInvalid { .. }
        }
    ));
    // The older checkpoints still expose the rewritten entry.
    assert!(report.findings.iter().any(|f| matches!(
        f,
        AuditFinding::RootMismatch {
            which: CheckpointRef::Older(0),
            size: 25,
            ..
        }
    )));
}

#[test]
fn audit_detects_a_rolled_back_latest_checkpoint() {
    let log = build_log(110);
    // The database's "latest" checkpoint is replaced by an older genuine one, and the entries
    // after it are deleted: every signature is genuine, but an older checkpoint is newer.
    let report = audit_log(
        &log.entries[..50],
        log.checkpoints[1].as_bytes(),
        &log.checkpoints,
        &log.log,
    );
    assert!(!report.is_ok());
    assert!(report.findings.iter().any(|f| matches!(
        f,
        AuditFinding::NewerThanLatest {
            size: 110,
            latest_size: 50,
            ..
        }
    )));
}

#[test]
fn audit_of_entries_added_without_a_checkpoint_is_a_size_mismatch_with_an_intact_prefix() {
    let log = build_log(110);
    let mut entries = log.entries.clone();
    entries.push(b"appended behind the daemon's back".to_vec());
    let report = log.audit(&entries);
    assert_eq!(report.verified_size, 110);
    assert!(matches!(
        report.findings.as_slice(),
        [AuditFinding::SizeMismatch {
            checkpoint_size: 110,
            log_size: 111
        }]
    ));
    // Display names the problem.
    let msg = report.findings[0].to_string();
    assert!(msg.contains("added without a signed checkpoint"), "{msg}");
}

trait ReplaceBytes {
    fn replace_bytes(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceBytes for Vec<u8> {
    fn replace_bytes(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let s = String::from_utf8(self.clone()).unwrap();
        let (from, to) = (
            std::str::from_utf8(from).unwrap(),
            std::str::from_utf8(to).unwrap(),
        );
        assert!(s.contains(from));
        s.replace(from, to).into_bytes()
    }
}

// The worked example in docs/step-log.md. Produced independently with Python's `cryptography`
// package (Ed25519 over OpenSSL) from the seed SHA-256("kiln docs/step-log.md example key"):
// kiln must sign the same checkpoint to the same bytes, and the doc must not drift.
const DOC_SKEY: &str =
    "PRIVATE+KEY+kiln.example/steps+65e8866c+Aea9MujSzIqAaO/icXd02XSEQKw7KriEf1OpOEXTplKk";
const DOC_VKEY: &str = "kiln.example/steps+65e8866c+AUT/OiezQewni1kyZaHrleO/xNfDuEZgbuMkdYmpjDcJ";
const DOC_CHECKPOINT: &str = "kiln.example/steps\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n— kiln.example/steps ZeiGbMOLQc+RLibCO1XDxITaKeI+fxnvwp5hYYYHb3F4S3ymEmvO189QAeaM84h321iumGzgwcYh1k1jm33BoS6qWQI=\n";

#[test]
fn the_step_log_doc_example_is_exactly_what_kiln_signs() {
    let signer = NoteSigner::from_signer_key(DOC_SKEY).unwrap();
    assert_eq!(signer.verifier().to_string(), DOC_VKEY);
    let tree = reference_tree();
    let cp = Checkpoint {
        origin: "kiln.example/steps".into(),
        size: tree.size(),
        root: tree.root(),
        extensions: vec![],
    };
    assert_eq!(cp.sign(&signer).unwrap(), DOC_CHECKPOINT);
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/step-log.md"))
            .unwrap();
    let doc_proof = TlogProof {
        extra: None,
        index: 5,
        path: tree.inclusion_proof(5, 8).unwrap(),
        checkpoint: DOC_CHECKPOINT.into(),
    };
    let log = LogVerifier::new("kiln.example/steps", DOC_VKEY.parse().unwrap());
    doc_proof
        .verify(&hex::decode(LEAVES[5]).unwrap(), &log)
        .unwrap();
    let doc_proof = doc_proof.to_text();
    for needle in [DOC_VKEY, DOC_CHECKPOINT.trim_end(), doc_proof.trim_end()] {
        assert!(doc.contains(needle), "docs/step-log.md lacks {needle:?}");
    }
}

#[test]
fn the_types_the_daemon_shares_across_tasks_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<NoteSigner>();
    send_sync::<NoteVerifier>();
    send_sync::<LogVerifier>();
    send_sync::<MerkleTree>();
    send_sync::<CheckpointError>();
}

#[test]
fn an_offline_tlog_proof_verifies_its_entry_and_nothing_else() {
    let log = build_log(110);
    let tree = MerkleTree::from_leaf_hashes(log.entries.iter().map(|e| leaf_hash(e)));
    let latest = log.checkpoints.last().unwrap().clone();
    let proof = TlogProof {
        extra: None,
        index: 42,
        path: tree.inclusion_proof(42, 110).unwrap(),
        checkpoint: latest.clone(),
    };
    let text = proof.to_text();
    assert!(
        text.starts_with("c2sp.org/tlog-proof@v1\nindex 42\n"),
        "{text}"
    );
    assert!(text.ends_with(&format!("\n\n{latest}")));
    let parsed = TlogProof::parse(text.as_bytes()).unwrap();
    assert_eq!(parsed, proof);
    assert_eq!(parsed.verify(&log.entries[42], &log.log).unwrap().size, 110);

    // Another entry, a modified entry, another index: not included.
    for (entry, index) in [
        (&log.entries[41], 42),
        (&b"forged".to_vec(), 42),
        (&log.entries[42], 43),
    ] {
        let p = TlogProof {
            index,
            ..parsed.clone()
        };
        assert!(
            matches!(
                p.verify(entry, &log.log),
                Err(TlogProofError::NotIncluded { .. })
            ),
            "index {index}"
        );
    }
    // A checkpoint signed by another key.
    let other = NoteSigner::generate(ORIGIN).unwrap();
    let cp = log.log.open(latest.as_bytes()).unwrap();
    let forged = TlogProof {
        checkpoint: cp.sign(&other).unwrap(),
        ..parsed
    };
    assert!(matches!(
        forged.verify(&log.entries[42], &log.log),
        Err(TlogProofError::Checkpoint(
            CheckpointError::NotSignedByKey { .. }
        ))
    ));
}
