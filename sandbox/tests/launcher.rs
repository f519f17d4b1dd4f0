//! The long-lived launcher (`Launcher`), as the worker uses it: steps run concurrently through
//! one launcher, each in a network namespace of its own with only `lo` up, with nothing of the
//! launcher or of another step among its descriptors, and with nothing left behind; a dead
//! launcher is reported as such.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Fixture, HOST_ID, helper};
use kiln_sandbox::{Launcher, Outcome, RunReport, SandboxError, SandboxSpec, step_cgroup_parents};

fn run(
    f: &Fixture,
    launcher: &Launcher,
    spec: &SandboxSpec,
    log_name: &str,
) -> (RunReport, String) {
    let log_path = f.dir.path().join(log_name);
    let log = fs::File::create(&log_path).unwrap();
    let report = launcher.run_report(spec, log).unwrap();
    (report, fs::read_to_string(&log_path).unwrap())
}

fn run_ok(f: &Fixture, launcher: &Launcher, script: &str) -> String {
    let (report, log) = run(f, launcher, &f.spec(script), "step.log");
    assert_eq!(report.outcome, Outcome::Exited(0), "log:\n{log}");
    log
}

/// Whether a process with this pid exists (a zombie counts until it is reaped).
fn alive(pid: u32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok()
}

/// Host pids of the processes whose real uid is `uid`.
fn processes_of(uid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let real_uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next())
            .and_then(|id| id.parse::<u32>().ok());
        if real_uid == Some(uid) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn premade_network_namespace_has_only_loopback_up_and_the_step_cannot_change_it() {
    let f = Fixture::new();
    let launcher = Launcher::start(&helper()).unwrap();
    // The launcher fills its pool when quiet: make sure the step gets a pre-made namespace.
    std::thread::sleep(Duration::from_millis(50));
    let log = run_ok(
        &f,
        &launcher,
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ip -o link show | cut -d' ' -f2,3; \
         ip link set lo down 2>/dev/null || echo no-down; ip link add d0 type dummy 2>/dev/null \
         || echo no-add",
    );
    assert_eq!(log, "lo\nlo: <LOOPBACK,UP,LOWER_UP>\nno-down\nno-add\n");
}

#[test]
fn steps_running_at_once_have_network_namespaces_of_their_own() {
    // More steps than the pool holds: some get a pre-made namespace, some a fresh one.
    let f = Fixture::new();
    let launcher = Launcher::start(&helper()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let logs: Vec<String> = std::thread::scope(|s| {
        let steps: Vec<_> = (0..4u32)
            .map(|i| {
                let (f, launcher) = (&f, &launcher);
                s.spawn(move || {
                    let mut spec = f.spec("readlink /proc/self/ns/net; sleep 0.5");
                    spec.ids.host_uid = HOST_ID + 20 + i;
                    spec.ids.host_gid = HOST_ID + 20 + i;
                    let (report, log) = run(f, launcher, &spec, &format!("net{i}.log"));
                    assert_eq!(report.outcome, Outcome::Exited(0), "log:\n{log}");
                    log
                })
            })
            .collect();
        steps.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut distinct = logs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), logs.len(), "{logs:?}");
    assert!(logs.iter().all(|l| l.starts_with("net:[")), "{logs:?}");
}

#[test]
fn step_holds_only_its_standard_descriptors() {
    let f = Fixture::new();
    let launcher = Launcher::start(&helper()).unwrap();
    // `ls` itself holds one more, the directory it lists.
    let log = run_ok(
        &f,
        &launcher,
        "ls /proc/self/fd | tr '\\n' ' '; echo; readlink /proc/self/fd/0",
    );
    assert_eq!(log, "0 1 2 3 \n/dev/null\n");
}

#[test]
fn cgroup_namespace_is_rooted_at_the_step_cgroup() {
    let f = Fixture::new();
    let launcher = Launcher::start(&helper()).unwrap();
    let log = run_ok(&f, &launcher, "cat /proc/self/cgroup");
    for line in log.lines() {
        assert!(line.ends_with(":/"), "{line:?} shows a host cgroup path");
    }
}

#[test]
fn concurrent_steps_run_at_once_and_leave_nothing_behind() {
    let f = Fixture::new();
    let launcher = Launcher::start(&helper()).unwrap();
    let reports: Vec<(RunReport, String)> = std::thread::scope(|s| {
        let steps: Vec<_> = (0..4u32)
            .map(|i| {
                let (f, launcher) = (&f, &launcher);
                s.spawn(move || {
                    let mut spec = f.spec(&format!("sleep 0.3; echo step {i}; hostname"));
                    spec.ids.host_uid = HOST_ID + 10 + i;
                    spec.ids.host_gid = HOST_ID + 10 + i;
                    run(f, launcher, &spec, &format!("step{i}.log"))
                })
            })
            .collect();
        steps.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (i, (report, log)) in reports.iter().enumerate() {
        assert_eq!(report.outcome, Outcome::Exited(0), "log:\n{log}");
        assert_eq!(*log, format!("step {i}\nkiln-test\n"));
    }
    for parent in step_cgroup_parents().unwrap() {
        let Ok(entries) = fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let owner = name.split_once('-').map(|(pid, _)| pid.to_owned());
            let alive = owner.is_some_and(|pid| alive(pid.parse().unwrap_or(u32::MAX)));
            assert!(alive, "stale step cgroup {}", entry.path().display());
        }
    }
}

/// This test process, moved into a cgroup of its own below its own in every v1 hierarchy: a
/// killed launcher leaves its processes' step cgroups behind (the next launcher sweeps them),
/// and they must not show under the kiln parents that tests running at the same time check
/// for stale cgroups. Dropping it moves the process back and removes what is left.
struct OwnCgroup {
    dirs: Vec<PathBuf>,
}

impl OwnCgroup {
    fn enter() -> Self {
        let parents = step_cgroup_parents().unwrap();
        let mut dirs = Vec::new();
        if parents.len() > 1 {
            // v1: each kiln parent is `<own>/kiln`.
            for own in parents.iter().filter_map(|p| p.parent()) {
                let dir = own.join(format!("launcher-test-{}", std::process::id()));
                fs::create_dir(&dir).unwrap();
                fs::write(dir.join("cgroup.procs"), std::process::id().to_string()).unwrap();
                dirs.push(dir);
            }
        }
        Self { dirs }
    }
}

impl Drop for OwnCgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let own = dir.parent().unwrap();
            fs::write(own.join("cgroup.procs"), std::process::id().to_string()).unwrap();
            let kiln = dir.join("kiln");
            let entries = fs::read_dir(&kiln).into_iter().flatten().flatten();
            for entry in entries.filter(|e| e.path().is_dir()) {
                let until = Instant::now() + Duration::from_secs(5);
                while fs::remove_dir(entry.path()).is_err() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            let _ = fs::remove_dir(&kiln);
            fs::remove_dir(dir).unwrap();
        }
    }
}

#[test]
fn a_killed_launcher_is_reported_as_gone_and_takes_its_steps_with_it() {
    const UID: u32 = HOST_ID + 30;
    let f = Fixture::new();
    let _own = OwnCgroup::enter();
    let launcher = Launcher::start(&helper()).unwrap();
    let pid = launcher.pid();
    let mut spec = f.spec("sleep 1000");
    spec.ids.host_uid = UID;
    spec.ids.host_gid = UID;
    std::thread::scope(|s| {
        let step = s.spawn(|| {
            let log = fs::File::create(f.dir.path().join("long.log")).unwrap();
            launcher.run_report(&spec, log)
        });
        // Wait until the step runs, then kill the launcher.
        let until = Instant::now() + Duration::from_secs(5);
        while processes_of(UID).is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!processes_of(UID).is_empty(), "the step never started");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let result = step.join().unwrap();
        assert!(
            matches!(result, Err(SandboxError::LauncherGone)),
            "{result:?}"
        );
        let until = Instant::now() + Duration::from_secs(5);
        while !processes_of(UID).is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            processes_of(UID),
            Vec::<u32>::new(),
            "the step outlived the launcher"
        );
    });
    let log = fs::File::create(f.dir.path().join("after.log")).unwrap();
    let err = launcher.run_report(&f.spec("true"), log).unwrap_err();
    assert!(matches!(err, SandboxError::LauncherGone), "{err:?}");
}

#[test]
fn dropping_the_launcher_ends_it() {
    let launcher = Launcher::start(&helper()).unwrap();
    let pid = launcher.pid();
    assert!(alive(pid));
    drop(launcher);
    assert!(!alive(pid), "the launcher outlived its handle");
}
