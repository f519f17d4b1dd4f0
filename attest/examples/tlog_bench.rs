//! Step log benchmark: appends per second, and a whole-log audit of 10,000 entries against a
//! signed checkpoint, anchored to `openssl dgst -sha256` over the same bytes in the same run.
//!
//! ```text
//! cargo run --release -p kiln-attest --example tlog_bench
//! REPS=9 ENTRIES=10000 cargo run --release -p kiln-attest --example tlog_bench
//! ```
//!
//! Prints medians over REPS runs. Needs `openssl` on PATH for the anchor. Not a test: nothing
//! here asserts a time.

use std::hint::black_box;
use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_attest::tlog::{
    Checkpoint, LogVerifier, MerkleTree, NoteSigner, audit_log, verify_consistency,
    verify_inclusion,
};
use sha2::{Digest as _, Sha256};

const ORIGIN: &str = "kiln.example/steps";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A step-record-like JSON object padded to about 1 KiB.
fn entry(i: usize) -> Vec<u8> {
    let mut s = format!(
        r#"{{"kind":"step","run":"0191c3a0-7d2e-7000-8000-{:012x}","step":"build-{i}","exit":0,"outputs":[{{"path":"out/app","sha256":"{:064x}"}}],"pad":""#,
        i / 20,
        i as u128 * 0x9e37_79b9_7f4a_7c15
    );
    while s.len() < 1022 {
        s.push('x');
    }
    s.push_str("\"}");
    s.into_bytes()
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn checkpoint_of(tree: &MerkleTree) -> Checkpoint {
    Checkpoint {
        origin: ORIGIN.into(),
        size: tree.size(),
        root: tree.root(),
        extensions: vec![],
    }
}

fn main() {
    let reps = env_usize("REPS", 7).max(1);
    let n = env_usize("ENTRIES", 10_000).max(1);
    let entries: Vec<Vec<u8>> = (0..n).map(entry).collect();
    let bytes: usize = entries.iter().map(Vec::len).sum();
    let signer = NoteSigner::generate(ORIGIN).expect("generate the log key");
    let log = LogVerifier::new(ORIGIN, signer.verifier());
    println!(
        "tlog_bench: {n} entries, {:.1} KiB each, {:.2} MiB in all; median of {reps} runs",
        bytes as f64 / n as f64 / 1024.0,
        bytes as f64 / (1 << 20) as f64
    );

    // 1. Appending: leaf hash + tree update.
    let mut append = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        let mut tree = MerkleTree::new();
        for e in &entries {
            tree.push_entry(e);
        }
        black_box(tree.root());
        append.push(start.elapsed());
    }
    let append = median(append);

    // 2. Appending and signing a fresh checkpoint after every entry (the daemon's worst case).
    let mut append_sign = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        let mut tree = MerkleTree::new();
        for e in &entries {
            tree.push_entry(e);
            black_box(checkpoint_of(&tree).sign(&signer).expect("sign"));
        }
        append_sign.push(start.elapsed());
    }
    let append_sign = median(append_sign);

    // 3. The audit: signed latest checkpoint plus an older one every 100 entries (one per run,
    //    say), all entries rehashed.
    let mut tree = MerkleTree::new();
    let mut older = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        tree.push_entry(e);
        if (i + 1) % 100 == 0 && i + 1 != n {
            older.push(checkpoint_of(&tree).sign(&signer).expect("sign"));
        }
    }
    let latest = checkpoint_of(&tree).sign(&signer).expect("sign");

    // 4. What `kiln audit prove` and a daemon restart cost: rebuilding the tree from stored
    //    leaf hashes, and one inclusion proof plus one consistency proof, made and checked.
    let leaves: Vec<_> = (0..tree.size())
        .map(|i| tree.leaf_hash(i).expect("leaf"))
        .collect();
    let mut rebuild = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        black_box(MerkleTree::from_leaf_hashes(leaves.iter().copied()).root());
        rebuild.push(start.elapsed());
    }
    let rebuild = median(rebuild);
    let (size, root) = (tree.size(), tree.root());
    let mut proofs = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        for i in (0..size).step_by(97) {
            let p = tree.inclusion_proof(i, size).expect("inclusion proof");
            verify_inclusion(&leaves[i as usize], i, size, &p, &root).expect("verifies");
            let old = i + 1;
            let p = tree
                .consistency_proof(old, size)
                .expect("consistency proof");
            let old_root = tree.root_at(old).expect("old root");
            verify_consistency(old, size, &old_root, &root, &p).expect("verifies");
        }
        proofs.push(start.elapsed());
    }
    let proof_pairs = size.div_ceil(97);
    let proofs = median(proofs);

    // 5. The audit and its anchors over the same bytes, back to back in every rep so that
    //    load from other processes hits all three alike: openssl (a process, as a user would
    //    run it) and the sha2 crate in process. Ratios are medians of the per-rep ratios.
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    for e in &entries {
        file.write_all(e).expect("write");
    }
    file.flush().expect("flush");
    let (mut audit, mut openssl, mut sha2_floor) = (Vec::new(), Vec::new(), Vec::new());
    let (mut vs_openssl, mut vs_sha2) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let start = Instant::now();
        let report = audit_log(&entries, latest.as_bytes(), &older, &log);
        let a = start.elapsed();
        assert!(
            report.is_ok(),
            "untouched log failed its audit: {:?}",
            report.findings
        );

        let start = Instant::now();
        let out = Command::new("openssl")
            .args(["dgst", "-sha256"])
            .arg(file.path())
            .output()
            .expect("openssl must be on PATH for the anchor");
        let o = start.elapsed();
        assert!(out.status.success());

        let start = Instant::now();
        let mut hasher = Sha256::new();
        for e in &entries {
            hasher.update(e);
        }
        black_box(hasher.finalize());
        let f = start.elapsed();

        vs_openssl.push(a.as_secs_f64() / o.as_secs_f64());
        vs_sha2.push(a.as_secs_f64() / f.as_secs_f64());
        audit.push(a);
        openssl.push(o);
        sha2_floor.push(f);
    }
    let (audit, openssl, sha2_floor) = (median(audit), median(openssl), median(sha2_floor));
    let median_f = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let (vs_openssl, vs_sha2) = (median_f(vs_openssl), median_f(vs_sha2));

    let per_s = |d: Duration| n as f64 / d.as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "append (leaf hash + tree)        {:>9.2} ms  {:>12.0} entries/s",
        ms(append),
        per_s(append)
    );
    println!(
        "append + sign checkpoint each    {:>9.2} ms  {:>12.0} entries/s",
        ms(append_sign),
        per_s(append_sign)
    );
    println!(
        "audit ({n} entries, {} checkpoints) {:>7.2} ms",
        older.len() + 1,
        ms(audit)
    );
    println!("rebuild tree from leaf hashes    {:>9.2} ms", ms(rebuild));
    println!(
        "inclusion + consistency proof, made and verified {:>7.1} us per pair",
        proofs.as_secs_f64() * 1e6 / proof_pairs as f64
    );
    println!(
        "anchor: openssl dgst -sha256      {:>9.2} ms  (process included)",
        ms(openssl)
    );
    println!(
        "anchor: sha2 in process           {:>9.2} ms",
        ms(sha2_floor)
    );
    println!("ratio audit / openssl dgst        {:>9.2}x", vs_openssl);
    println!("ratio audit / sha2 floor          {:>9.2}x", vs_sha2);
}
