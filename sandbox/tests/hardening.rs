//! Hardening tests: seccomp, capabilities, /proc, /sys and rlimits, each run through
//! `kiln_sandbox::run` with the busybox rootfs. The inside half is busybox, plus a static C
//! probe (`tests/probe/probe.c`, built here with the host's `gcc -static`) for the syscalls
//! busybox cannot make; it prints `NAME: ok` or `NAME: ERRNO` per probe.
//!
//! The probe's arguments are chosen so that without the filter the kernel would mostly answer
//! something else (ok, EFAULT, EBADF, ENOENT, EINVAL): these tests fail when the filter is not
//! installed. Where the kernel alone already refuses (no capabilities), the comment says so.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::Fixture;
use kiln_sandbox::Outcome;

/// Builds the probe once per source change, into cargo's per-target temp dir (nextest runs each
/// test in its own process, so a per-process temp dir would leave one copy behind per test);
/// returns its path on the host. Built beside, then renamed into place, so concurrent tests
/// never see half a binary.
fn probe_binary() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let source_text = include_str!("probe/probe.c");
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(source_text, &mut hasher);
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let binary = root.join(format!(
            "hardening-probe-{:016x}",
            std::hash::Hasher::finish(&hasher)
        ));
        if binary.exists() {
            return binary;
        }
        let build = tempfile::tempdir_in(root).unwrap();
        let source = build.path().join("probe.c");
        fs::write(&source, source_text).unwrap();
        let built = build.path().join("probe");
        let out = Command::new("gcc")
            .args(["-static", "-O1", "-pthread", "-o"])
            .arg(&built)
            .arg(&source)
            .output()
            .expect("the hardening tests need gcc and a static libc (build-essential)");
        assert!(
            out.status.success(),
            "gcc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::rename(&built, &binary).unwrap();
        binary
    })
}

/// A fixture whose input `src` holds the probe, visible as `/in/src/probe`.
fn fixture() -> Fixture {
    let f = Fixture::new();
    let probe = f.input.join("probe");
    fs::copy(probe_binary(), &probe).unwrap();
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o755)).unwrap();
    f
}

/// Runs the probe with `names` and returns its report.
fn run_probe(f: &Fixture, names: &[&str]) -> (Outcome, String) {
    let mut spec = f.spec("");
    spec.argv = std::iter::once("/in/src/probe")
        .chain(names.iter().copied())
        .map(String::from)
        .collect();
    let (report, log) = f.run(&spec).unwrap();
    (report.outcome, log)
}

/// Asserts that each probe gave the expected answer.
fn assert_probes(expected: &[(&str, &str)]) {
    let f = fixture();
    let names: Vec<&str> = expected.iter().map(|(name, _)| *name).collect();
    let (outcome, log) = run_probe(&f, &names);
    assert_eq!(outcome, Outcome::Exited(0), "log:\n{log}");
    let want: String = expected
        .iter()
        .map(|(name, answer)| format!("{name}: {answer}\n"))
        .collect();
    assert_eq!(log, want);
}

#[test]
fn mount_api_is_refused_with_eperm() {
    // Without the filter: mount and umount2 say ENOENT (the target is missing), open_tree
    // succeeds (an O_PATH descriptor); fsopen and pivot_root are refused by the kernel too.
    assert_probes(&[
        ("mount", "EPERM"),
        ("umount", "EPERM"),
        ("open_tree", "EPERM"),
        ("fsopen", "EPERM"),
        ("pivot_root", "EPERM"),
    ]);
}

#[test]
fn new_namespaces_are_refused_with_eperm_but_plain_clone_works() {
    // Without the filter a new user namespace (alone or with a network namespace) is allowed
    // to anyone, and setns(-1) says EBADF. A bare CLONE_NEWNET is refused by the kernel too.
    assert_probes(&[
        ("unshare_user", "EPERM"),
        ("setns", "EPERM"),
        ("clone_newuser_newnet", "EPERM"),
        ("clone_newnet", "EPERM"),
        ("clone_plain", "ok"),
    ]);
}

#[test]
fn clone3_returns_enosys_and_libc_falls_back_for_threads_and_spawn() {
    // glibc tries clone3 first for pthread_create and posix_spawn, then clone on ENOSYS.
    assert_probes(&[
        ("clone3", "ENOSYS"),
        ("threads", "ok"),
        ("posix_spawn", "ok"),
    ]);
}

#[test]
fn ptrace_and_cross_process_memory_access_are_refused() {
    // Without the filter PTRACE_TRACEME and reading one's own memory succeed; attaching to
    // pid 1 (unmapped host root) is refused by the kernel too.
    assert_probes(&[
        ("ptrace_traceme", "EPERM"),
        ("ptrace_attach_1", "EPERM"),
        ("process_vm_readv", "EPERM"),
    ]);
}

#[test]
fn kernel_extension_calls_are_refused() {
    // Without the filter bpf and perf_event_open say EFAULT (bad attribute pointer); module
    // loading and kexec are refused by the kernel too (no CAP_SYS_MODULE/CAP_SYS_BOOT).
    assert_probes(&[
        ("bpf", "EPERM"),
        ("perf_event_open", "EPERM"),
        ("init_module", "EPERM"),
        ("finit_module", "EPERM"),
        ("kexec_load", "EPERM"),
    ]);
}

#[test]
fn kernel_keyrings_are_refused() {
    // Without the filter both succeed: keyrings need no privilege.
    assert_probes(&[("keyctl", "EPERM"), ("add_key", "EPERM")]);
}

#[test]
fn host_clock_reboot_and_kernel_log_are_refused() {
    // Without the filter clock_settime(CLOCK_MONOTONIC) says EINVAL and settimeofday(NULL,
    // NULL) succeeds; reboot and syslog are refused by the kernel too.
    assert_probes(&[
        ("clock_settime", "EPERM"),
        ("settimeofday", "EPERM"),
        ("reboot", "EPERM"),
        ("syslog", "EPERM"),
    ]);
}

#[test]
fn userfaultfd_file_handles_and_io_uring_are_refused() {
    // Without the filter: a user-mode-only userfaultfd is allowed to anyone,
    // open_by_handle_at(-1) says EBADF, name_to_handle_at succeeds, io_uring_setup(NULL)
    // says EFAULT.
    assert_probes(&[
        ("userfaultfd", "EPERM"),
        ("open_by_handle_at", "EPERM"),
        ("name_to_handle_at", "EPERM"),
        ("io_uring_setup", "EPERM"),
    ]);
}

#[test]
fn personality_may_only_select_linux_or_linux32() {
    assert_probes(&[
        ("personality_no_aslr", "EPERM"),
        ("personality_linux32", "ok"),
        ("personality_query", "ok"),
    ]);
}

#[test]
fn syscalls_newer_than_the_policy_return_enosys() {
    // 467 is open_tree_attr (Linux 6.15), a mount-API call the policy has not reviewed.
    assert_probes(&[("newer_than_policy", "ENOSYS")]);
}

#[test]
fn netlink_stays_allowed_in_the_empty_network_namespace() {
    // Deliberate: the namespace holds only lo and the step has no CAP_NET_ADMIN in it.
    assert_probes(&[("netlink", "ok")]);
}

#[test]
fn x32_syscall_kills_the_step() {
    let f = fixture();
    let (outcome, log) = run_probe(&f, &["x32"]);
    assert_eq!(outcome, Outcome::Signaled(libc::SIGSYS), "log:\n{log}");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn i386_syscall_kills_the_step() {
    let f = fixture();
    let (outcome, log) = run_probe(&f, &["i386"]);
    assert_eq!(outcome, Outcome::Signaled(libc::SIGSYS), "log:\n{log}");
}

#[test]
fn chroot_escape_fails_and_root_stays_the_rootfs() {
    // Refused twice over: no CAP_SYS_CHROOT, and the filter.
    let f = fixture();
    let log = f.run_ok("/in/src/probe chroot_escape; cd ../../../..; ls / | tr '\\n' ' '; echo");
    assert_eq!(log, "chroot_escape: EPERM\nbin dev in out proc tmp work \n");
}

#[test]
fn ordinary_build_work_still_runs() {
    let f = fixture();
    let log = f.run_ok(
        "set -e; cd /work; \
         printf 'b\\na\\nc\\n' > list; sort list | head -n 2 | tr '\\n' ' '; echo; \
         (cd /tmp && echo sub > s && cat s); \
         x=$(echo captured); echo $x; \
         sh -c 'echo nested | cat'; \
         echo one & echo two & wait; \
         /in/src/probe threads posix_spawn clone_plain",
    );
    let mut lines: Vec<&str> = log.lines().collect();
    lines[4..6].sort(); // the two background jobs race
    assert_eq!(
        lines,
        [
            "a b ",
            "sub",
            "captured",
            "nested",
            "one",
            "two",
            "threads: ok",
            "posix_spawn: ok",
            "clone_plain: ok"
        ]
    );
}

#[test]
fn open_files_limit_is_the_spec_and_core_dumps_are_off() {
    let f = fixture();
    let mut spec =
        f.spec("ulimit -n; ulimit -Hn; ulimit -c; ulimit -Hc; ulimit -n 200 || echo no-raise");
    spec.limits.open_files = 123;
    let (report, log) = f.run(&spec).unwrap();
    assert_eq!(report.outcome, Outcome::Exited(0), "log:\n{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(&lines[..4], ["123", "123", "0", "0"]);
    assert_eq!(lines.last(), Some(&"no-raise"), "log:\n{log}");
}

#[test]
fn capability_sets_are_empty_and_the_filter_is_installed() {
    let f = fixture();
    let log = f.run_ok("grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status");
    let expected = "CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
        CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\n\
        NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n";
    assert_eq!(log, expected);
}

#[test]
fn proc_sys_and_sysrq_trigger_are_read_only() {
    // The step is not root, but a read-only mount answers before permissions do (EROFS).
    let f = fixture();
    let log = f.run_ok(
        "for p in /proc/sys/kernel/hostname /proc/sys/vm/drop_caches /proc/sysrq-trigger; do \
           if [ -e $p ]; then (echo 1 > $p) 2>&1 | grep -q 'Read-only file system' && echo ro || echo WRITABLE $p; \
           else echo ro; fi; \
         done; hostname",
    );
    assert_eq!(log, "ro\nro\nro\nkiln-test\n");
}

#[test]
fn proc_host_wide_files_are_masked() {
    // /proc/kcore and /proc/sysrq-trigger do not exist on every kernel (not on the CI VM);
    // where a path exists it must be /dev/null (char 1,3) or an empty directory.
    let f = fixture();
    let log = f.run_ok(
        "for p in /proc/kcore /proc/keys /proc/timer_list /proc/latency_stats /proc/sched_debug; do \
           [ -e $p ] || continue; \
           [ \"$(stat -c %t:%T $p)\" = 1:3 ] && echo masked || echo EXPOSED $p; done; \
         for d in /proc/acpi /proc/scsi /proc/asound; do \
           [ -e $d ] || continue; \
           [ -z \"$(ls -A $d)\" ] && echo empty || echo EXPOSED $d; done; \
         grep -c ' /proc/keys \\| /proc/timer_list ' /proc/self/mountinfo",
    );
    assert!(!log.contains("EXPOSED"), "log:\n{log}");
    // This machine has /proc/keys and /proc/timer_list; both must be covered by a mount.
    assert!(log.ends_with("\n2\n"), "log:\n{log}");
    assert!(log.matches("masked").count() >= 2, "log:\n{log}");
}

#[test]
fn proc_hides_other_users_processes() {
    let f = fixture();
    let log = f.run_ok(
        "grep -o 'hidepid=[a-z0-9]*' /proc/self/mountinfo | head -n 1; \
         [ -e /proc/1 ] && echo pid1-visible || echo pid1-hidden",
    );
    assert_eq!(log, "hidepid=invisible\npid1-hidden\n");
}

#[test]
fn sys_is_not_mounted_even_when_the_rootfs_has_the_directory() {
    let f = fixture();
    fs::create_dir(f.rootfs.join("sys")).unwrap();
    let log = f.run_ok("ls -A /sys | wc -l; awk '$5 ~ \"^/sys\"' /proc/self/mountinfo | wc -l");
    assert_eq!(log, "0\n0\n");
}
