//! Every executed step leaves a complete record in the state database, and concurrent steps run
//! under different host identities.

mod common;

use common::{Env, text};
use kiln_core::{ExitRecord, StepRecord};

fn records(env: &Env, stdout: &str) -> Vec<StepRecord> {
    let run_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("run ").and_then(|r| r.split(':').next()))
        .expect("kiln run prints the run id");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let state = kiln_daemon::state::State::open(&env.data_dir().join("state.sqlite"))
            .await
            .unwrap();
        let records = state.step_records(run_id).await.unwrap();
        state.close().await;
        records
    })
}

#[test]
fn concurrent_steps_get_distinct_host_uids_and_full_records() {
    let env = Env::new();
    env.import_busybox();
    let pipeline = env.write(
        "p.yaml",
        "version: 1\nname: p\nrootfs: busybox@1\nsteps:\n  - name: a\n    run: id -u > /out/uid; sleep 1\n    outputs: [uid]\n    env: { GREETING: hi }\n  - name: b\n    run: id -u > /out/uid; sleep 1\n    outputs: [uid]\n",
    );
    let out = env.kiln(&[
        "run",
        pipeline.to_str().unwrap(),
        "-j",
        "2",
        "--out",
        env.path("out").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let records = records(&env, &String::from_utf8_lossy(&out.stdout));
    assert_eq!(records.len(), 2);
    let (a, b) = (&records[0], &records[1]);
    assert_ne!(
        a.sandbox.host_uid, b.sandbox.host_uid,
        "concurrent steps shared a host uid"
    );
    let overlap = a.started_on < b.finished_on && b.started_on < a.finished_on;
    assert!(
        overlap,
        "the two steps did not run at the same time: {a:?} {b:?}"
    );
    for r in &records {
        assert_eq!(r.exit, ExitRecord::Exited { code: 0 });
        assert_eq!(r.sandbox.step_uid, 1000);
        assert!(r.sandbox.host_uid >= 1_000_000);
        for ns in ["user", "mount", "pid", "network", "ipc", "uts"] {
            assert!(
                r.sandbox.namespaces.iter().any(|n| n == ns),
                "{ns} missing from {:?}",
                r.sandbox.namespaces
            );
        }
        assert!(
            r.sandbox.mounts.iter().any(|m| m.starts_with("/out")),
            "{:?}",
            r.sandbox.mounts
        );
        assert_eq!(r.rootfs.reference.to_string(), "busybox@1");
        assert_eq!(r.outputs.len(), 1);
        assert_eq!(r.outputs[0].path, "uid");
        assert!(r.sandbox.limits.memory_bytes > 0 && r.sandbox.limits.pids > 0);
    }
    assert_eq!(a.env.get("GREETING").map(String::as_str), Some("hi"));
    assert!(a.finished_on >= a.started_on);
}
