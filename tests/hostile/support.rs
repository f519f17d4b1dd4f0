//! The outside half of the attack suite: builds the probe (tests/hostile/probe.c), puts it in a
//! fresh kiln installation's mirror, runs attacks as pipeline steps through `kiln run` and reads
//! back what the probe saw.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::common::{Env, kiln_bin, text};

const PROBE_SOURCE: &str = include_str!("probe.c");

/// A directory holding `probe` (0755) and `probe-suid` (a setuid-root copy, 04755), built
/// once per probe source: tests run in separate processes (nextest), so the build is shared
/// through the target dir's test scratch space, keyed by the source's digest, and published by
/// an atomic rename.
pub fn probe_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let digest = kiln_core::Sha256Digest::of(PROBE_SOURCE.as_bytes()).to_string();
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = root.join(format!("hostile-probe-{}", &digest[..16]));
        if dir.join("probe-suid").exists() {
            return dir;
        }
        fs::create_dir_all(root).unwrap();
        let build = tempfile::tempdir_in(root).unwrap();
        let src = build.path().join("probe.c");
        fs::write(&src, PROBE_SOURCE).unwrap();
        let tree = build.path().join("tree");
        fs::create_dir(&tree).unwrap();
        let probe = tree.join("probe");
        let out = Command::new("gcc")
            .args(["-static", "-O1", "-Wall", "-o"])
            .arg(&probe)
            .arg(&src)
            .output()
            .expect("gcc is installed");
        assert!(
            out.status.success(),
            "cannot build the probe:\n{}",
            text(&out)
        );
        fs::set_permissions(&probe, fs::Permissions::from_mode(0o755)).unwrap();
        let suid = tree.join("probe-suid");
        fs::copy(&probe, &suid).unwrap();
        // The tests run as root, so this is a real setuid-root binary on the host.
        fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
        fs::set_permissions(&tree, fs::Permissions::from_mode(0o755)).unwrap();
        // Another test process may have won the race: then its tree is the same.
        let _ = fs::rename(&tree, &dir);
        assert!(dir.join("probe-suid").exists(), "probe tree missing");
        dir
    })
}

/// One kiln installation with busybox as `busybox@1` and the probe tree as `probe@1`.
pub struct Hostile {
    pub env: Env,
}

/// What one attack step reported.
pub struct Verdict {
    /// The probe's first line, e.g. `DENIED tcp: ECONNREFUSED connect 127.0.0.1 port 4000`.
    pub line: String,
    /// Everything the step wrote to /out/verdict (the probe's output, then `status N`).
    pub all: String,
    /// The probe's exit status.
    pub status: i32,
    /// The `kiln run` output.
    pub run: String,
}

impl Verdict {
    /// The attack was stopped, and the probe's verdict starts with `DENIED {expected}`.
    #[track_caller]
    pub fn assert_denied(&self, expected: &str) {
        assert!(
            self.line.starts_with(&format!("DENIED {expected}")) && self.status == 0,
            "expected `DENIED {expected}…`, the probe reported:\n{}\nkiln run:\n{}",
            self.all,
            self.run
        );
    }

    /// The attack was stopped, and its verdict's reason (the text after `ATTACK: `) starts with
    /// one of `reasons`: for paths whose masking technique is the sandbox's choice (a missing
    /// file, a read-only mount, a device bound over it, or plain permissions).
    #[track_caller]
    pub fn assert_denied_with_one_of(&self, attack: &str, reasons: &[&str]) {
        let prefix = format!("DENIED {attack}: ");
        let ok = self.status == 0
            && self
                .line
                .strip_prefix(&prefix)
                .is_some_and(|rest| reasons.iter().any(|r| rest.starts_with(r)));
        assert!(
            ok,
            "expected `{prefix}` and one of {reasons:?}, the probe reported:\n{}\nkiln run:\n{}",
            self.all, self.run
        );
    }

    /// The verdict mentions `part` (a sub-attempt's errno, a count).
    #[track_caller]
    pub fn assert_mentions(&self, part: &str) {
        assert!(
            self.line.contains(part),
            "expected the verdict to mention `{part}`:\n{}",
            self.all
        );
    }

    /// The number right after `word` in the verdict line.
    #[track_caller]
    pub fn number_after(&self, word: &str) -> u64 {
        let at = self
            .line
            .find(word)
            .unwrap_or_else(|| panic!("no `{word}` in {:?}", self.line));
        let rest = &self.line[at + word.len()..];
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("no number after `{word}` in {:?}", self.line))
    }
}

impl Hostile {
    pub fn new() -> Self {
        let env = Env::new();
        env.import_busybox();
        env.kiln_ok(&[
            "mirror",
            "add",
            probe_dir().to_str().unwrap(),
            "--tree",
            "--name",
            "probe@1",
        ]);
        Self { env }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.env.data_dir()
    }

    /// `kiln run` of `yaml` (written to a file) with `-j jobs` and extra host environment.
    pub fn run_pipeline(&self, yaml: &str, jobs: usize, host_env: &[(&str, &str)]) -> Output {
        let pipeline = self.env.write("hostile.yaml", yaml);
        let mut cmd = Command::new(kiln_bin());
        cmd.arg("run")
            .arg(&pipeline)
            .arg("--out")
            .arg(self.out_dir())
            .arg("-j")
            .arg(jobs.to_string())
            .env("KILN_DATA_DIR", self.data_dir())
            .env_remove("KILN_LOG")
            .current_dir(self.env.dir.path());
        for (k, v) in host_env {
            cmd.env(k, v);
        }
        // Start each run with an empty --out, so an artifact read afterwards is this run's.
        let _ = fs::remove_dir_all(self.out_dir());
        cmd.output().expect("spawn kiln")
    }

    pub fn out_dir(&self) -> PathBuf {
        self.env.path("out")
    }

    /// The published artifact `name` of the last run.
    pub fn artifact(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.out_dir().join(name)).ok()
    }

    /// Runs `probe ARGS` as the single step `attack` and returns its verdict, which the step
    /// publishes as an artifact. The step itself must succeed: it always exits 0 and records
    /// the probe's exit status in the verdict instead.
    #[track_caller]
    pub fn attack(&self, args: &str) -> Verdict {
        self.attack_with(args, "", &[])
    }

    /// [`Self::attack`] with extra step YAML (e.g. `env:`) and extra host environment for
    /// `kiln run`.
    #[track_caller]
    pub fn attack_with(&self, args: &str, step_extra: &str, host_env: &[(&str, &str)]) -> Verdict {
        let yaml = format!(
            "version: 1
name: hostile
rootfs: busybox@1
inputs:
  probe: {{ mirror: probe@1 }}
steps:
  - name: attack
    inputs: [probe]
    timeout: 120s
{step_extra}    run: |
      /in/probe/probe {args} > /out/verdict 2>&1; echo \"status $?\" >> /out/verdict
    outputs: [verdict]
artifacts:
  - {{ name: verdict, from: attack, path: verdict }}
"
        );
        let out = self.run_pipeline(&yaml, 1, host_env);
        let run = text(&out);
        assert!(
            out.status.success() && run.contains("[ ok ] attack"),
            "the attack step itself must run to completion:\n{run}"
        );
        let all = self
            .artifact("verdict")
            .unwrap_or_else(|| panic!("no verdict artifact:\n{run}"));
        verdict_of(&all, run)
    }
}

/// Parses what an attack step wrote to /out/verdict.
pub fn verdict_of(all: &str, run: String) -> Verdict {
    let line = all.lines().next().unwrap_or_default().to_owned();
    let status = all
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("status "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(-1);
    Verdict {
        line,
        all: all.to_owned(),
        status,
        run,
    }
}

/// A marker no other test or process uses.
pub fn unique_marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("kiln-{what}-{}-{nanos:x}", std::process::id())
}

/// Host processes whose command line contains `marker`, as `pid: cmdline`.
pub fn host_processes_with(marker: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            found.insert(format!("{name}: {cmdline}"));
        }
    }
    found
}
