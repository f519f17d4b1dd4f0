//! Information attacks: a step sees neither the host's environment nor kiln's own files (data
//! dir, signing key, state database, store), nor the host's secrets, nor another step that
//! runs beside it.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::text;
use crate::support::{Hostile, unique_marker, verdict_of};

#[test]
fn step_sees_only_its_declared_environment() {
    let h = Hostile::new();
    let secret = unique_marker("env-secret");
    let v = h.attack_with(
        "env",
        "    env:\n      DECLARED: yes-declared\n",
        &[
            ("KILN_HOSTILE_SECRET", &secret),
            ("AWS_SECRET_ACCESS_KEY", &secret),
        ],
    );
    let names: BTreeSet<&str> = v
        .all
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["DECLARED", "HOME", "PATH", "SOURCE_DATE_EPOCH"]),
        "{}",
        v.all
    );
    assert!(v.all.contains("ENV DECLARED=yes-declared"), "{}", v.all);
    assert!(!v.all.contains(&secret), "{}", v.all);
}

#[test]
fn step_cannot_read_the_environment_of_the_sandbox_pid_1() {
    let h = Hostile::new();
    let secret = unique_marker("env-secret");
    let v = h.attack_with(
        "read /proc/1/environ",
        "",
        &[("KILN_HOSTILE_SECRET", &secret)],
    );
    // hidepid=2: pid 1 is invisible to the step (without hidepid: EACCES).
    v.assert_denied("read: ENOENT (ENOENT /proc/1/environ)");
    assert!(!v.all.contains(&secret), "{}", v.all);
}

#[test]
fn step_cannot_reach_the_data_dir_signing_key_state_or_store() {
    let h = Hostile::new();
    let data = h.data_dir();
    let d = data.display();
    // Every path kiln knows, directly and through pid 1's and its own root.
    let paths = [
        format!("{d}/keys/kiln.key"),
        format!("{d}/keys"),
        format!("{d}/state.sqlite"),
        format!("{d}/state.sqlite-wal"),
        format!("{d}/store/blobs"),
        format!("{d}/store"),
        format!("{d}/work"),
        format!("{d}"),
    ];
    let v = h.attack(&format!("read {}", paths.join(" ")));
    let expected: Vec<String> = paths.iter().map(|p| format!("ENOENT {p}")).collect();
    v.assert_denied(&format!("read: ENOENT ({})", expected.join(", ")));

    let key = format!("{d}/keys/kiln.key");
    let v = h.attack(&format!("read /proc/1/root{key} /proc/self/root{key}"));
    v.assert_denied(&format!(
        "read: ENOENT (ENOENT /proc/1/root{key}, ENOENT /proc/self/root{key})"
    ));

    let v = h.attack(&format!(
        "write {d}/store/blobs/evil {key} {d}/state.sqlite"
    ));
    v.assert_denied(&format!(
        "write: ENOENT (ENOENT {d}/store/blobs/evil, ENOENT {key}, ENOENT {d}/state.sqlite)"
    ));
    // The attacks were aimed at things that exist.
    for p in ["keys/kiln.key", "state.sqlite", "store/blobs", "work"] {
        assert!(
            Path::new(&data).join(p).exists(),
            "{p} does not exist on the host"
        );
    }
}

#[test]
fn step_cannot_read_the_hosts_shadow_file() {
    assert!(Path::new("/etc/shadow").exists());
    let v = Hostile::new().attack("read /etc/shadow /proc/1/root/etc/shadow /etc/gshadow");
    v.assert_denied(
        "read: ENOENT (ENOENT /etc/shadow, ENOENT /proc/1/root/etc/shadow, ENOENT /etc/gshadow)",
    );
}

/// Two steps at once (`-j 2`): `keeper` holds a secret in its /out, /work and /tmp, in its
/// environment and command line, and listens on an abstract socket named after it, for 4
/// seconds; `seeker` starts half a second in and looks for it everywhere.
#[test]
fn step_cannot_reach_a_concurrent_steps_files_processes_or_sockets() {
    let h = Hostile::new();
    let secret = unique_marker("other-step");
    let reversed: String = secret.chars().rev().collect();
    let d = h.data_dir();
    let d = d.display();
    let yaml = format!(
        "version: 1
name: hostile
rootfs: busybox@1
inputs:
  probe: {{ mirror: probe@1 }}
steps:
  - name: keeper
    inputs: [probe]
    env:
      KEEPER_SECRET: {secret}
    run: |
      echo {secret} > /out/secret; echo {secret} > /work/secret; echo {secret} > /tmp/secret
      /in/probe/probe listen-abstract {secret} 4 > /out/listened
    outputs: [secret, listened]
  - name: seeker
    inputs: [probe]
    run: |
      sleep 0.5
      /in/probe/probe search {reversed} {d}/work {d}/store {d} > /out/verdict 2>&1; echo \"status $?\" >> /out/verdict
    outputs: [verdict]
artifacts:
  - {{ name: secret, from: keeper, path: secret }}
  - {{ name: listened, from: keeper, path: listened }}
  - {{ name: verdict, from: seeker, path: verdict }}
"
    );
    let out = h.run_pipeline(&yaml, 2, &[]);
    let run = text(&out);
    assert!(out.status.success(), "{run}");
    // The secret was there to find while the seeker ran.
    assert_eq!(h.artifact("secret").unwrap().trim(), secret);
    let search = verdict_of(&h.artifact("verdict").unwrap(), run.clone());
    search.assert_denied("search: marker not found in");
    search.assert_mentions(&format!(
        ", ECONNREFUSED connect to the abstract socket, ENOENT {d}/work, ENOENT {d}/store, ENOENT {d}"
    ));
    let listened = h.artifact("listened").unwrap();
    assert_eq!(
        listened.trim(),
        format!("LISTENED @{secret}: 0 connections")
    );
}

#[test]
fn concurrent_steps_run_as_different_host_uids() {
    let h = Hostile::new();
    let step = |name: &str| {
        format!(
            "  - name: {name}
    inputs: [probe]
    run: /in/probe/probe uid-map > /out/map; sleep 1
    outputs: [map]
"
        )
    };
    let yaml = format!(
        "version: 1
name: hostile
rootfs: busybox@1
inputs:
  probe: {{ mirror: probe@1 }}
steps:
{}{}artifacts:
  - {{ name: one, from: one, path: map }}
  - {{ name: two, from: two, path: map }}
",
        step("one"),
        step("two")
    );
    let out = h.run_pipeline(&yaml, 2, &[]);
    let run = text(&out);
    assert!(out.status.success(), "{run}");
    let host_uid = |name: &str| -> u32 {
        let map = h.artifact(name).unwrap();
        let fields: Vec<&str> = map.split_whitespace().collect();
        assert_eq!(fields.first(), Some(&"UIDMAP"), "{map}");
        assert_eq!(fields[1], "1000", "{map}");
        fields[2].parse().unwrap()
    };
    let (one, two) = (host_uid("one"), host_uid("two"));
    assert_ne!(one, two, "two concurrent steps share host uid {one}");
    assert!(one != 0 && two != 0);
}
