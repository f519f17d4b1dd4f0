//! The long-lived launcher (`Launcher`), as the worker uses it: steps run concurrently through
//! one launcher, each in a network namespace of its own with only `lo` up, with nothing of the
//! launcher or of another step among its descriptors, and with nothing left behind; a dead
//! launcher is reported as such.

mod common;

use std::fs;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Fixture, HOST_ID, OwnCgroup, helper};
use kiln_sandbox::{
    HelperImage, ImageError, Launcher, Outcome, RunReport, SandboxError, SandboxSpec,
    step_cgroup_parents,
};

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

/// The parent pid of process `pid`, if it exists.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// State letter and start time (clock ticks since boot) of process `pid`, if it exists.
fn stat_of(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; it ends at the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18)?.parse().ok()?))
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
    // Its own kiln parents: what it checks for is its own leftovers, not other tests'.
    let _own = OwnCgroup::enter();
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

/// Regression: a launcher killed (with its worker) while its standby's cloner waited in the
/// next step's cgroup, frozen because the standby was killed between the freeze and the thaw
/// of its own clean-up, left the cloner frozen with SIGKILL pending; later launchers' sweeps could not empty or remove the
/// cgroup, and waited for it before every step. The next launcher must thaw it, see the cloner
/// die and remove the cgroup, and run steps.
#[test]
fn a_launcher_killed_while_its_cloner_is_frozen_leaves_nothing_once_the_next_one_sweeps() {
    let f = Fixture::new();
    let _own = OwnCgroup::enter();
    let launcher = Launcher::start(&helper()).unwrap();
    run_ok(&f, &launcher, "true");
    // After the hand-over the next standby makes its cgroup and forks its cloner into it.
    let parents = step_cgroup_parents().unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    let (name, cloner) = loop {
        let found = parents.iter().find_map(|parent| {
            fs::read_dir(parent).ok()?.flatten().find_map(|entry| {
                // The standby's cgroup, named after it, holds its child, the cloner (the last
                // step's cgroup may still be there, holding its exiting processes).
                let name = entry.file_name();
                let owner = name.to_str()?.split_once('-')?.0.parse::<u32>().ok()?;
                let procs = fs::read_to_string(entry.path().join("cgroup.procs")).ok()?;
                let pid = procs.lines().next()?.parse::<u32>().ok()?;
                (parent_of(pid) == Some(owner)).then_some((name, pid))
            })
        });
        // The cloner moves into one hierarchy after the other: wait until it is in all.
        if let Some((name, pid)) = found {
            let member = |p: &PathBuf| {
                let procs = fs::read_to_string(p.join(&name).join("cgroup.procs"));
                procs.is_ok_and(|procs| procs.lines().any(|l| l == pid.to_string()))
            };
            if parents.iter().all(member) {
                break (name, pid);
            }
        }
        assert!(Instant::now() < until, "no standby cloner appeared");
        std::thread::sleep(Duration::from_millis(5));
    };
    let dirs: Vec<PathBuf> = parents.iter().map(|p| p.join(&name)).collect();
    let cloner_started = stat_of(cloner).map(|(_, started)| started);
    // Alive: the same process (not a reused pid), not yet a zombie waiting for init.
    let cloner_alive = || {
        stat_of(cloner)
            .is_some_and(|(state, started)| state != 'Z' && Some(started) == cloner_started)
    };
    let freezer = dirs
        .iter()
        .map(|d| d.join("freezer.state"))
        .find(|p| p.exists());
    if let Some(state) = &freezer {
        fs::write(state, "FROZEN").unwrap();
        let until = Instant::now() + Duration::from_secs(2);
        while fs::read_to_string(state).unwrap().trim() != "FROZEN" {
            assert!(Instant::now() < until, "the cloner's cgroup never froze");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // The standby first: told of the launcher's death by its hung-up socket, it would thaw
    // and clean up itself, which is not the case under test (a standby killed between the
    // freeze and the thaw of its own clean-up).
    let standby = name.to_str().and_then(|n| n.split_once('-')).unwrap().0;
    for pid in [standby.parse::<i32>().unwrap(), launcher.pid() as i32] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    if freezer.is_some() {
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            cloner_alive(),
            "the frozen cloner cannot die of its death signal: {:?} (started {cloner_started:?}), {:?}",
            stat_of(cloner),
            freezer.as_ref().map(fs::read_to_string)
        );
    }

    // The next launcher sweeps when it starts (the old standby may not have died yet, then)
    // and when quiet between steps.
    let next = Launcher::start(&helper()).unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    while (cloner_alive() || dirs.iter().any(|d| d.exists())) && Instant::now() < until {
        run_ok(&f, &next, "true");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!cloner_alive(), "the cloner outlived its launcher's sweep");
    for dir in &dirs {
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }
    run_ok(&f, &next, "true");
}

#[test]
fn dropping_the_launcher_ends_it() {
    let launcher = Launcher::start(&helper()).unwrap();
    let pid = launcher.pid();
    assert!(alive(pid));
    drop(launcher);
    assert!(!alive(pid), "the launcher outlived its handle");
}

#[test]
fn a_launcher_started_from_a_sealed_image_runs_steps_from_memory() {
    let f = Fixture::new();
    let bytes = fs::read(helper().program).unwrap();
    let image = HelperImage::seal("kiln-sandbox-helper", &bytes).unwrap();
    let launcher = Launcher::start(&image.command(Vec::new())).unwrap();
    let exe = fs::read_link(format!("/proc/{}/exe", launcher.pid())).unwrap();
    assert!(
        exe.to_string_lossy()
            .starts_with("/memfd:kiln-sandbox-helper"),
        "the launcher runs {}",
        exe.display()
    );
    assert_eq!(
        run_ok(&f, &launcher, "echo from the image"),
        "from the image\n"
    );
}

#[test]
fn a_helper_image_cannot_be_changed_or_made_from_nothing() {
    let bytes = fs::read(helper().program).unwrap();
    let image = HelperImage::seal("kiln-sandbox-helper", &bytes).unwrap();
    // Through the path the launcher is started from: the write seal refuses it.
    let opened = fs::OpenOptions::new()
        .write(true)
        .open(&image.command(Vec::new()).program);
    let err = opened
        .and_then(|mut file| file.write_all(b"\x7fELF"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    assert!(matches!(
        HelperImage::seal("empty", &[]),
        Err(ImageError::Empty)
    ));
}

/// The step cgroup directories (one per hierarchy) that process `pid` is in, from its
/// `/proc/<pid>/cgroup` (the host's view ends in `kiln/<name>`).
fn step_cgroup_dirs_of(pid: u32) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return Vec::new();
    };
    let Some(name) = text
        .lines()
        .find_map(|l| l.rsplit_once("/kiln/"))
        .map(|(_, n)| n)
    else {
        return Vec::new();
    };
    let parents = step_cgroup_parents().unwrap();
    parents.iter().map(|p| p.join(name)).collect()
}

/// Runs `spec` (as host uid `uid`) through `launcher`, and calls `watch` with the pid of the
/// first process of the step seen on the host, while the step runs.
fn run_and_watch<T: Send>(
    f: &Fixture,
    launcher: &Launcher,
    spec: &SandboxSpec,
    uid: u32,
    watch: impl FnOnce(u32) -> T + Send,
) -> (RunReport, String, T) {
    std::thread::scope(|s| {
        let step = s.spawn(|| run(f, launcher, spec, "watched.log"));
        let until = Instant::now() + Duration::from_secs(5);
        let pid = loop {
            if let Some(&pid) = processes_of(uid).first() {
                break pid;
            }
            assert!(Instant::now() < until, "the step never started");
            std::thread::sleep(Duration::from_millis(2));
        };
        let seen = watch(pid);
        let (report, log) = step.join().unwrap();
        (report, log, seen)
    })
}

/// Waits up to 2 s for each of `dirs` to be removed (the helper removes the step's cgroup
/// right after its report).
fn assert_removed_soon(dirs: &[PathBuf]) {
    assert!(!dirs.is_empty(), "the step's cgroup was never seen");
    let until = Instant::now() + Duration::from_secs(2);
    while dirs.iter().any(|d| d.exists()) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }
}

/// Pid 1 is cloned in the step's cgroup by the standby's cloner, which is reaped before the
/// step starts; the supervising helper never enters the cgroup. So while the step runs, every
/// process in its cgroup is in the step's pid namespace: nothing of kiln's shares it.
#[test]
fn only_the_steps_processes_are_in_its_cgroup_while_it_runs() {
    const UID: u32 = HOST_ID + 40;
    let f = Fixture::new();
    let launcher = Launcher::start(&helper()).unwrap();
    let mut spec = f.spec("sleep 0.6 & sleep 0.6; wait");
    spec.ids.host_uid = UID;
    spec.ids.host_gid = UID;
    let (report, log, dirs) = run_and_watch(&f, &launcher, &spec, UID, |step| {
        // Let the shell start its sleeps.
        std::thread::sleep(Duration::from_millis(200));
        let dirs = step_cgroup_dirs_of(step);
        let step_ns = fs::read_link(format!("/proc/{step}/ns/pid")).unwrap();
        for dir in &dirs {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap();
            let pids: Vec<&str> = procs.lines().collect();
            assert!(pids.len() >= 4, "pid 1, sh, two sleeps: {pids:?}");
            for pid in pids {
                let ns = fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
                assert_eq!(
                    ns.as_ref(),
                    Some(&step_ns),
                    "process {pid} in {} is not the step's",
                    dir.display()
                );
            }
        }
        dirs
    });
    assert_eq!(report.outcome, Outcome::Exited(0), "log:\n{log}");
    assert_removed_soon(&dirs);
}

/// The memory limit holds for a step whose pid 1 was born in its cgroup before the limits were
/// written: the bomb is OOM-killed and reported, and the cgroup is removed after the report.
#[test]
fn memory_bomb_is_oom_killed_and_reported_through_the_launcher() {
    const UID: u32 = HOST_ID + 41;
    let f = Fixture::new();
    let launcher = Launcher::start(&helper()).unwrap();
    let script = "x=$(head -c $((300 << 20)) /dev/zero | tr '\\0' a); echo survived ${#x}";
    let mut spec = f.spec(script);
    spec.ids.host_uid = UID;
    spec.ids.host_gid = UID;
    spec.limits.memory_bytes = 64 << 20;
    let (report, log, dirs) = run_and_watch(&f, &launcher, &spec, UID, step_cgroup_dirs_of);
    assert_eq!(
        report.events,
        [kiln_sandbox::LimitEvent::MemoryLimit {
            limit_bytes: 64 << 20
        }],
        "{report:?}\nlog:\n{log}"
    );
    assert!(!log.contains("survived"), "{log}");
    assert!(report.usage.peak_memory_bytes <= 64 << 20, "{report:?}");
    assert_removed_soon(&dirs);
    assert_eq!(processes_of(UID), Vec::<u32>::new(), "the step survived");
}

/// The pids limit holds for a step whose pid 1 was born in its cgroup: a fork bomb hits
/// `pids.max`, which is reported, and never exceeds it.
#[test]
fn fork_bomb_hits_pids_max_through_the_launcher() {
    const UID: u32 = HOST_ID + 42;
    let f = Fixture::new();
    let launcher = Launcher::start(&helper()).unwrap();
    // The shell forks once, for the bomb's subshell, then `exec`s: it never forks once the bomb
    // is going (busybox ash exits 2 when it cannot fork, e.g. for a pipeline's second half).
    let script = "bomb() { bomb | bomb & }; (bomb 2>/dev/null) & exec sleep 100";
    let mut spec = f.spec(script);
    spec.ids.host_uid = UID;
    spec.ids.host_gid = UID;
    spec.limits.pids = 32;
    spec.timeout = Duration::from_secs(2);
    let (report, log, dirs) = run_and_watch(&f, &launcher, &spec, UID, step_cgroup_dirs_of);
    assert_eq!(report.outcome, Outcome::TimedOut, "log:\n{log}");
    assert_eq!(
        report.events,
        [
            kiln_sandbox::LimitEvent::PidsLimit { limit: 32 },
            kiln_sandbox::LimitEvent::Timeout
        ],
        "{report:?}"
    );
    assert!(report.usage.peak_pids <= 32, "{:?}", report.usage);
    assert_removed_soon(&dirs);
    assert_eq!(processes_of(UID), Vec::<u32>::new(), "the bomb survived");
}
