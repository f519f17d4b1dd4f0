//! End-to-end sandbox tests: each builds a busybox rootfs, runs a script inside through the real
//! helper binary (the inside half: busybox applets probing what they can see and do) and checks
//! the result from the outside. Every run also asserts that the host's mount table is unchanged.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Fixture, HOST_ID, SCRATCH, processes_with_cmdline};
use kiln_sandbox::{Outcome, SandboxError, SetupError};
use nix::errno::Errno;

#[test]
fn exit_code_propagates() {
    let f = Fixture::new();
    let (report, _) = f.run(&f.spec("exit 7")).unwrap();
    assert_eq!(report.outcome, Outcome::Exited(7));
}

#[test]
fn death_by_signal_propagates() {
    let f = Fixture::new();
    let (report, _) = f.run(&f.spec("kill -SEGV $$")).unwrap();
    assert_eq!(report.outcome, Outcome::Signaled(libc::SIGSEGV));
}

#[test]
fn stdout_and_stderr_go_to_the_log() {
    let f = Fixture::new();
    let log = f.run_ok("echo to-stdout; echo to-stderr >&2");
    assert_eq!(log, "to-stdout\nto-stderr\n");
}

#[test]
fn environment_is_exactly_the_spec() {
    let f = Fixture::new();
    let mut spec = f.spec("");
    spec.argv = vec!["/bin/env".into()];
    spec.env = BTreeMap::from([("A".into(), "1 2".into()), ("PATH".into(), "/bin".into())]);
    // The test process's own environment (CARGO_*, HOME, …) must not leak in.
    let (report, log) = f.run(&spec).unwrap();
    assert_eq!(report.outcome, Outcome::Exited(0));
    let mut lines: Vec<_> = log.lines().collect();
    lines.sort();
    assert_eq!(lines, ["A=1 2", "PATH=/bin"]);
}

#[test]
fn step_runs_as_uid_1000_without_groups_capabilities_or_ignored_signals() {
    let f = Fixture::new();
    let log = f.run_ok("id -u; id -g; id -G; grep -E '^(Cap|SigIgn|SigBlk|NoNewPrivs)' /proc/self/status; hostname");
    let expected = "1000\n1000\n1000\n\
        SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n\
        CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
        CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nkiln-test\n";
    assert_eq!(log, expected);
}

#[test]
fn step_cannot_connect_to_host_loopback() {
    let f = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "if nc -w 2 127.0.0.1 {port} </dev/null 2>/dev/null; then echo connected; else echo refused; fi"
    );
    let log = f.run_ok(&script);
    assert_eq!(log, "refused\n");
    listener.set_nonblocking(true).unwrap();
    let err = listener
        .accept()
        .expect_err("nothing from the sandbox reached the listener");
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    // The same connect from the host works, so the listener was reachable all along.
    TcpStream::connect(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(false).unwrap();
    listener.accept().unwrap();
}

#[test]
fn only_loopback_exists_and_it_is_up() {
    let f = Fixture::new();
    let log = f.run_ok(
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ip -o link show | cut -d' ' -f2,3",
    );
    assert_eq!(log, "lo\nlo: <LOOPBACK,UP,LOWER_UP>\n");
}

#[test]
fn rootfs_is_read_only_even_with_remount() {
    let f = Fixture::new();
    let log = f.run_ok(
        "touch /new 2>/dev/null || echo no-new; touch /bin/new 2>/dev/null || echo no-bin; \
         rm /bin/sh 2>/dev/null || echo no-rm; \
         mount -o remount,rw / 2>/dev/null || echo no-remount; touch /new 2>/dev/null || echo still-no",
    );
    assert_eq!(log, "no-new\nno-bin\nno-rm\nno-remount\nstill-no\n");
    assert!(!f.rootfs.join("new").exists() && !f.rootfs.join("bin/new").exists());
    assert!(f.rootfs.join("bin/sh").exists());
}

#[test]
fn inputs_are_readable_but_not_writable() {
    let f = Fixture::new();
    let log = f.run_ok(
        "cat /in/src/hello.txt; echo x 2>/dev/null >> /in/src/hello.txt || echo no-append; \
         touch /in/src/new 2>/dev/null || echo no-create; touch /in/new 2>/dev/null || echo no-in",
    );
    assert_eq!(log, "hello from the host\nno-append\nno-create\nno-in\n");
    assert_eq!(
        fs::read_to_string(f.input.join("hello.txt")).unwrap(),
        "hello from the host\n"
    );
    assert!(!f.input.join("new").exists());
}

#[test]
fn out_is_writable_and_reaches_the_host_owned_by_the_mapped_uid() {
    let f = Fixture::new();
    f.run_ok("echo result > /out/result.txt && mkdir /out/sub && touch /out/sub/file");
    let path = f.out.join("result.txt");
    assert_eq!(fs::read_to_string(&path).unwrap(), "result\n");
    let meta = fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (HOST_ID, HOST_ID));
    assert!(f.out.join("sub/file").exists());
}

#[test]
fn without_an_out_dir_out_is_scratch_that_never_reaches_the_host() {
    let f = Fixture::new();
    let mut spec = f.spec(&format!(
        "echo result > /out/result.txt && echo written; \
         dd if=/dev/zero of=/out/big bs=1024 count={} 2>/dev/null || echo big-refused",
        SCRATCH / 1024 * 2
    ));
    spec.out_dir = None;
    let (report, log) = f.run(&spec).unwrap();
    assert_eq!(report.outcome, Outcome::Exited(0), "{log}");
    assert_eq!(log, "written\nbig-refused\n");
    assert_eq!(
        fs::read_dir(&f.out).unwrap().count(),
        0,
        "the host's out dir is untouched"
    );
}

#[test]
fn work_and_tmp_are_writable_and_capped() {
    let f = Fixture::new();
    let kib = SCRATCH / 1024;
    let script = format!(
        "pwd; for d in /work /tmp; do \
           dd if=/dev/zero of=$d/small bs=1024 count={small} 2>/dev/null && echo $d-small-ok; \
           dd if=/dev/zero of=$d/big bs=1024 count={big} 2>/dev/null || echo $d-big-refused; \
         done",
        small = kib / 4,
        big = kib * 2
    );
    let log = f.run_ok(&script);
    assert_eq!(
        log,
        "/work\n/work-small-ok\n/work-big-refused\n/tmp-small-ok\n/tmp-big-refused\n"
    );
    assert!(
        !f.rootfs.join("work/small").exists(),
        "scratch must not land in the rootfs"
    );
}

/// Watches the host's process table for a command line containing `needle` until stopped.
fn watch_for(
    needle: String,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    let (seen, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (seen2, stop2) = (seen.clone(), stop.clone());
    let watcher = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            if !processes_with_cmdline(&needle).is_empty() {
                seen2.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (seen, stop, watcher)
}

/// A `sleep` argument no other process on the host uses.
fn unique_sleep() -> String {
    format!("{}", 900_000 + std::process::id() % 90_000)
}

#[test]
fn timeout_kills_the_command_and_its_daemonized_children() {
    let f = Fixture::new();
    let secs = unique_sleep();
    let needle = format!("sleep\0{secs}\0");
    let mut spec = f.spec(&format!("setsid sleep {secs} & sleep 1000"));
    spec.timeout = Duration::from_millis(1500);
    let (seen, stop, watcher) = watch_for(needle.clone());
    let (report, _) = f.run(&spec).unwrap();
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!(report.outcome, Outcome::TimedOut);
    assert!(
        seen.load(Ordering::Relaxed),
        "the daemonized child never showed up: the test proves nothing"
    );
    assert_eq!(
        processes_with_cmdline(&needle),
        Vec::<u32>::new(),
        "the daemonized child survived"
    );
}

#[test]
fn daemonized_children_die_when_the_command_exits() {
    let f = Fixture::new();
    let secs = unique_sleep();
    let needle = format!("sleep\0{}\0", secs.parse::<u32>().unwrap() + 1);
    let (seen, stop, watcher) = watch_for(needle.clone());
    let script = format!(
        "setsid sleep {} & sleep 1; exit 0",
        secs.parse::<u32>().unwrap() + 1
    );
    let (report, _) = f.run(&f.spec(&script)).unwrap();
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!(report.outcome, Outcome::Exited(0));
    assert!(
        seen.load(Ordering::Relaxed),
        "the daemonized child never showed up: the test proves nothing"
    );
    assert_eq!(
        processes_with_cmdline(&needle),
        Vec::<u32>::new(),
        "the daemonized child survived"
    );
}

#[test]
fn host_files_and_processes_are_not_reachable() {
    let f = Fixture::new();
    let secret = f.dir.path().join("secret.txt");
    fs::write(&secret, "host secret\n").unwrap();
    let secret = secret.display();
    let script = format!(
        "cat {secret} 2>/dev/null || echo no-path; cat /proc/1/root{secret} 2>/dev/null || echo no-proc-root; \
         ls /proc/1/root/ 2>/dev/null || echo no-pid1-root; ls /proc/self/root/ | tr '\\n' ' '; echo; \
         [ -e /proc/1 ] && echo pid1-visible || echo pid1-hidden; ls /proc | grep -c '^[0-9]'"
    );
    let log = f.run_ok(&script);
    // pid 1 is the sandbox's reaper (still uid 0 of the host, so closed to the step, and
    // invisible in a hidepid=2 /proc); the step's own root is the rootfs; /proc lists only the
    // shell and the pipeline's processes: `ls` and, if it has started by the time `ls` reads
    // /proc, `grep` (so 2 or 3, never a host process).
    let (fixed, count) = log.rsplit_once("pid1-hidden\n").expect(&log);
    assert_eq!(
        fixed,
        "no-path\nno-proc-root\nno-pid1-root\nbin dev in out proc tmp work \n"
    );
    assert!(
        matches!(count, "2\n" | "3\n"),
        "processes visible in /proc: {count}"
    );
}

#[test]
fn missing_rootfs_dir_is_a_typed_error_naming_it() {
    let f = Fixture::new();
    fs::remove_dir(f.rootfs.join("work")).unwrap();
    let err = f.run(&f.spec("true")).unwrap_err();
    let expected = SetupError::Inspect {
        path: f.rootfs.join("work"),
        source: Errno::ENOENT,
    };
    assert!(
        matches!(&err, SandboxError::Setup(e) if *e == expected),
        "{err:?}"
    );
}

#[test]
fn symlinked_rootfs_dir_is_refused() {
    let f = Fixture::new();
    fs::remove_dir(f.rootfs.join("out")).unwrap();
    std::os::unix::fs::symlink("/etc", f.rootfs.join("out")).unwrap();
    let err = f.run(&f.spec("true")).unwrap_err();
    let expected = SetupError::NotADirectory {
        path: f.rootfs.join("out"),
    };
    assert!(
        matches!(&err, SandboxError::Setup(e) if *e == expected),
        "{err:?}"
    );
}

#[test]
fn missing_input_is_a_bind_error_naming_both_paths() {
    let f = Fixture::new();
    let mut spec = f.spec("true");
    spec.inputs[0].source = f.dir.path().join("nowhere");
    let err = f.run(&spec).unwrap_err();
    let expected = SetupError::Bind {
        src: f.dir.path().join("nowhere"),
        dst: f.rootfs.join("in/src"),
        source: Errno::ENOENT,
    };
    assert!(
        matches!(&err, SandboxError::Setup(e) if *e == expected),
        "{err:?}"
    );
}

#[test]
fn missing_program_is_an_exec_error() {
    let f = Fixture::new();
    let mut spec = f.spec("");
    spec.argv = vec!["/bin/no-such-tool".into()];
    let err = f.run(&spec).unwrap_err();
    let expected = SetupError::Exec {
        program: "/bin/no-such-tool".into(),
        source: Errno::ENOENT,
    };
    assert!(
        matches!(&err, SandboxError::Setup(e) if *e == expected),
        "{err:?}"
    );
}

#[test]
fn invalid_spec_is_refused_before_the_helper_starts() {
    let f = Fixture::new();
    let mut spec = f.spec("true");
    spec.ids.host_uid = 0;
    let err = f.run(&spec).unwrap_err();
    assert!(matches!(err, SandboxError::InvalidSpec(_)), "{err:?}");
}

#[test]
fn helper_that_is_not_a_helper_is_reported() {
    let f = Fixture::new();
    let helper = kiln_sandbox::HelperCommand {
        program: "/bin/true".into(),
        args: Vec::new(),
    };
    let log = fs::File::create(f.dir.path().join("log")).unwrap();
    let err = kiln_sandbox::run(&helper, &f.spec("true"), log).unwrap_err();
    assert!(matches!(err, SandboxError::HelperDied { .. }), "{err:?}");
}
