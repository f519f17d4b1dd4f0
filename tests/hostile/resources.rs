//! Resource attacks: a step cannot exhaust the worker's processes, memory, disk or descriptors,
//! cannot run past its timeout, and leaves no process behind.

use crate::common::text;
use crate::support::{Hostile, host_processes_with, unique_marker, verdict_of};

/// The worker's default limits (`kiln_sandbox::Limits::default()`), which `kiln run` uses.
const PIDS_LIMIT: u64 = 1024;
const SCRATCH_MIB: u64 = 1024;

#[test]
fn fork_bomb_is_contained_and_reported() {
    let h = Hostile::new();
    // The bomb stops at 5000 processes on its own, so a missing limit fails the test instead
    // of the machine. `alive` runs beside it: the worker stays responsive.
    let yaml = "version: 1
name: hostile
rootfs: busybox@1
inputs:
  probe: { mirror: probe@1 }
steps:
  - name: bomb
    inputs: [probe]
    timeout: 120s
    run: set -o pipefail; /in/probe/probe fork-bomb 5000 | tee /out/verdict
    outputs: [verdict]
  - name: alive
    run: echo alive > /out/alive
    outputs: [alive]
artifacts:
  - { name: verdict, from: bomb, path: verdict }
  - { name: alive, from: alive, path: alive }
";
    let out = h.run_pipeline(yaml, 2, &[]);
    let run = text(&out);
    assert!(run.contains("[ ok ] alive"), "{run}");
    // Whether the step fails for hitting its limit or not, its verdict is in the artifact or
    // in the log tail kiln prints.
    let line = h.artifact("verdict").unwrap_or_else(|| {
        run.lines()
            .find(|l| l.contains("fork-bomb: "))
            .map(|l| l.trim_start_matches([' ', '|']).to_owned())
            .unwrap_or_default()
    });
    let v = verdict_of(&format!("{line}\nstatus 0\n"), run.clone());
    v.assert_denied("fork-bomb: EAGAIN fork after");
    let forked = v.number_after("fork after");
    assert!(forked < PIDS_LIMIT, "{forked} processes forked: {}", v.line);
    assert!(
        run.contains(&format!("pids limit {PIDS_LIMIT} reached")),
        "the report must name the pids limit:\n{run}"
    );
}

#[test]
fn memory_bomb_is_killed_and_reported() {
    let h = Hostile::new();
    // Stops at 4 GiB on its own (the default limit is 2 GiB).
    let yaml = "version: 1
name: hostile
rootfs: busybox@1
inputs:
  probe: { mirror: probe@1 }
steps:
  - name: bomb
    inputs: [probe]
    timeout: 120s
    run: /in/probe/probe memory-bomb 4096
";
    let run = killed_at_the_memory_limit(&h, yaml, "bomb", "2GiB");
    assert!(!run.contains("ALLOWED"), "{run}");
}

/// A step's log is an in-memory file charged to the step's memory cgroup: a step that writes
/// more log than its memory limit is killed for it, and neither the host's memory beyond the
/// limit nor its disk ever holds the rest.
#[test]
fn a_log_larger_than_the_memory_limit_is_killed_and_reported() {
    let h = Hostile::new();
    let yaml = "version: 1
name: hostile
rootfs: busybox@1
steps:
  - name: chatty
    timeout: 120s
    resources: { memory: 32MiB }
    run: head -c 268435456 /dev/zero
";
    killed_at_the_memory_limit(&h, yaml, "chatty", "32MiB");
}

/// Runs `yaml`, which must fail with `step` killed at its memory `limit`; returns the output.
fn killed_at_the_memory_limit(h: &Hostile, yaml: &str, step: &str, limit: &str) -> String {
    let out = h.run_pipeline(yaml, 1, &[]);
    let run = text(&out);
    assert!(!out.status.success(), "{run}");
    assert!(
        run.contains(&format!("[FAIL] {step}"))
            && run.contains(&format!("killed: memory limit {limit} exceeded")),
        "{run}"
    );
    run
}

#[test]
fn filling_tmp_stops_at_the_scratch_cap() {
    let v = Hostile::new().attack("fill /tmp 4096");
    v.assert_denied("fill: ENOSPC after");
    let mib = v.number_after("ENOSPC after");
    assert!(mib <= SCRATCH_MIB, "{}", v.line);
}

#[test]
fn filling_work_stops_at_the_scratch_cap() {
    let v = Hostile::new().attack("fill /work 4096");
    v.assert_denied("fill: ENOSPC after");
    let mib = v.number_after("ENOSPC after");
    assert!(mib <= SCRATCH_MIB, "{}", v.line);
}

#[test]
fn descriptor_exhaustion_stops_at_the_rlimit() {
    let v = Hostile::new().attack("fds 100000");
    v.assert_denied("fds: EMFILE after");
    v.assert_mentions("(RLIMIT_NOFILE 4096/4096, raising it: EPERM)");
}

#[test]
fn core_dumps_are_off_for_good() {
    let v = Hostile::new().attack("core-limit");
    v.assert_denied("core-limit: EPERM raising RLIMIT_CORE 0/0");
}

#[test]
fn cpu_spin_that_ignores_sigterm_times_out_and_leaves_nothing() {
    let h = Hostile::new();
    let marker = unique_marker("spin");
    let yaml = format!(
        "version: 1
name: hostile
rootfs: busybox@1
inputs:
  probe: {{ mirror: probe@1 }}
steps:
  - name: spin
    inputs: [probe]
    timeout: 2s
    run: /in/probe/probe spin {marker}
"
    );
    let out = h.run_pipeline(&yaml, 1, &[]);
    let run = text(&out);
    assert!(!out.status.success(), "{run}");
    assert!(
        run.contains("[FAIL] spin") && run.contains("timed out after 2s"),
        "{run}"
    );
    assert!(run.contains("SPINNING"), "the spinners ran:\n{run}");
    let left = host_processes_with(&marker);
    assert!(left.is_empty(), "spinners survived the step: {left:?}");
}

#[test]
fn daemonized_survivor_is_gone_when_the_step_ends() {
    let h = Hostile::new();
    let marker = unique_marker("survivor");
    let v = h.attack(&format!("survivor {marker}"));
    assert!(
        v.line.starts_with("SPAWNED survivor pid") && v.line.contains(&marker) && v.status == 0,
        "the survivor must have run inside the step:\n{}",
        v.all
    );
    let left = host_processes_with(&marker);
    assert!(
        left.is_empty(),
        "a process of the step survived it: {left:?}"
    );
}
