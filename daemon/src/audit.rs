//! The step-separation report (`kiln audit steps RUN`): for security reviewers, what each step
//! of a run ran as, where and with what, and three checks over the whole run with their
//! evidence:
//!
//! - **writable paths**: no two steps had the same host path (or one inside the other) bound
//!   writable into their sandboxes;
//! - **slots**: no two steps ran on the same worker slot (worker, host uid) at the same time;
//! - **uids**: no two steps that overlapped in time ran as the same host uid, on any worker
//!   (workers sharing a machine must be given disjoint `--host-ids`; the controller cannot
//!   tell which workers share one, so it assumes any might).
//!
//! Built only from what the controller recorded (step records and which worker held each
//! lease). Wire format `kiln.dev/step-separation/v1` (the `--json` form), documented in
//! docs/audit.md.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_core::{ExitRecord, InputSource, Sha256Digest, StepRecord};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::state::RunDetail;

/// The report's format identifier.
pub const SEPARATION_FORMAT: &str = "kiln.dev/step-separation/v1";

/// What a security reviewer reads about one run.
#[derive(Clone, Debug, Serialize)]
pub struct SeparationReport {
    pub format: &'static str,
    pub run: String,
    pub pipeline: String,
    pub state: String,
    /// True when every check passed.
    pub separated: bool,
    pub checks: Vec<Check>,
    pub steps: Vec<StepEvidence>,
}

/// One check over the run's steps.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// `writable-paths`, `slots` or `uids`.
    pub name: &'static str,
    pub question: &'static str,
    pub passed: bool,
    /// What was compared; on failure, each offending pair.
    pub evidence: Vec<String>,
}

/// What one step ran as, where and with what.
#[derive(Clone, Debug, Serialize)]
pub struct StepEvidence {
    pub name: String,
    pub state: String,
    /// The worker that held the step's lease (`local` for `kiln run`).
    pub worker: String,
    pub attempts: u32,
    /// Absent for a step that never ran (skipped, cancelled, or lost before a record).
    pub sandbox: Option<SandboxEvidence>,
}

/// The sandbox side of [`StepEvidence`].
#[derive(Clone, Debug, Serialize)]
pub struct SandboxEvidence {
    /// sha256 over the settings that make the profile (namespaces, network, seccomp program,
    /// limits, rlimits, mount targets and modes; not host paths, which differ per step, nor the
    /// step's own input mounts under /in), so that steps run under one profile show one digest.
    pub profile_sha256: Sha256Digest,
    pub namespaces: Vec<String>,
    pub network: String,
    pub host_uid: u32,
    pub step_uid: u32,
    pub seccomp: String,
    pub seccomp_sha256: String,
    pub limits: kiln_core::LimitsRecord,
    pub rlimits: String,
    pub mounts: Vec<String>,
    /// `/in/NAME` → digest of what was mounted there (a file, a tree, or an upstream output).
    pub inputs: BTreeMap<String, String>,
    pub rootfs: String,
    /// Output path → sha256.
    pub outputs: BTreeMap<String, Sha256Digest>,
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished: OffsetDateTime,
    pub exit: ExitRecord,
    pub usage: kiln_core::UsageRecord,
    pub events: Vec<kiln_core::LimitEventRecord>,
}

/// Builds the report for one run.
pub fn separation_report(run: &RunDetail) -> SeparationReport {
    let steps: Vec<StepEvidence> = run
        .steps
        .iter()
        .map(|s| StepEvidence {
            name: s.name.clone(),
            state: s.state.clone(),
            worker: s.worker_id.clone().unwrap_or_else(|| "local".into()),
            attempts: s.attempts,
            sandbox: s.record.as_ref().map(sandbox_evidence),
        })
        .collect();
    let checks = vec![writable_paths(&steps), slots(&steps), uids(&steps)];
    SeparationReport {
        format: SEPARATION_FORMAT,
        run: run.id.clone(),
        pipeline: run.pipeline_name.clone(),
        state: run.state.clone(),
        separated: checks.iter().all(|c| c.passed),
        checks,
        steps,
    }
}

fn sandbox_evidence(record: &StepRecord) -> SandboxEvidence {
    let sandbox = &record.sandbox;
    let inputs = record
        .inputs
        .iter()
        .map(|i| (format!("/in/{}", i.mount_name), input_digest(&i.source)))
        .collect();
    SandboxEvidence {
        profile_sha256: profile_digest(record),
        namespaces: sandbox.namespaces.clone(),
        network: sandbox.network.clone(),
        host_uid: sandbox.host_uid,
        step_uid: sandbox.step_uid,
        seccomp: sandbox.seccomp.clone(),
        seccomp_sha256: sandbox.seccomp_sha256.clone(),
        limits: sandbox.limits,
        rlimits: sandbox.rlimits.clone(),
        mounts: sandbox.mounts.clone(),
        inputs,
        rootfs: format!(
            "{} sha256:{}",
            record.rootfs.reference, record.rootfs.sha256
        ),
        outputs: record
            .outputs
            .iter()
            .map(|o| (o.path.clone(), o.sha256))
            .collect(),
        started: record.started_on,
        finished: record.finished_on,
        exit: record.exit.clone(),
        usage: record.usage,
        events: record.events.clone(),
    }
}

fn input_digest(source: &InputSource) -> String {
    match source {
        InputSource::Mirror(m) => format!("{} sha256:{}", m.reference, m.sha256),
        InputSource::Git(g) => format!("git {}@{} sha256:{}", g.mirror, g.commit, g.sha256),
        InputSource::Step { step, outputs } => {
            let listed: Vec<String> = outputs
                .iter()
                .map(|o| format!("{} sha256:{}", o.path, o.sha256))
                .collect();
            format!("outputs of step {step}: {}", listed.join(", "))
        }
    }
}

/// A mount line without its host source: `TARGET <- SRC (MODES)` becomes `TARGET (MODES)`.
fn mount_shape(line: &str) -> String {
    match (line.split_once(" <- "), line.rfind(" (")) {
        (Some((target, _)), Some(modes)) => format!("{target}{}", &line[modes..]),
        _ => line.to_string(),
    }
}

fn profile_digest(record: &StepRecord) -> Sha256Digest {
    let s = &record.sandbox;
    // A step's inputs (`/in/NAME`) are its data, not its profile.
    let shape: Vec<String> = s
        .mounts
        .iter()
        .filter(|m| !m.starts_with("/in/"))
        .map(|m| mount_shape(m))
        .collect();
    let profile = serde_json::json!({
        "namespaces": s.namespaces,
        "network": s.network,
        "step_uid": s.step_uid,
        "seccomp_sha256": s.seccomp_sha256,
        "limits": s.limits,
        "rlimits": s.rlimits,
        "scratch_bytes": s.scratch_bytes,
        "mounts": shape,
    });
    Sha256Digest::of(profile.to_string().as_bytes())
}

/// Host paths bound writable into a step: the `SRC` of `TARGET <- SRC (bind, rw,…)` lines.
fn writable_sources(mounts: &[String]) -> Vec<&str> {
    mounts
        .iter()
        .filter(|m| m.contains("(bind, rw"))
        .filter_map(|m| m.split_once(" <- "))
        .filter_map(|(_, rest)| rest.rsplit_once(" (").map(|(src, _)| src))
        .collect()
}

/// Steps that have a record, with their sandbox evidence.
fn ran(steps: &[StepEvidence]) -> impl Iterator<Item = (&StepEvidence, &SandboxEvidence)> {
    steps
        .iter()
        .filter_map(|s| s.sandbox.as_ref().map(|sandbox| (s, sandbox)))
}

fn writable_paths(steps: &[StepEvidence]) -> Check {
    let binds: Vec<(&str, &str)> = ran(steps)
        .flat_map(|(s, sb)| {
            writable_sources(&sb.mounts)
                .into_iter()
                .map(move |src| (s.name.as_str(), src))
        })
        .collect();
    let mut evidence = Vec::new();
    for (i, (a, pa)) in binds.iter().enumerate() {
        for (b, pb) in &binds[i + 1..] {
            if Path::new(pa).starts_with(pb) || Path::new(pb).starts_with(pa) {
                evidence.push(format!("steps {a} and {b} both had {pa} / {pb} writable"));
            }
        }
    }
    let passed = evidence.is_empty();
    if passed {
        evidence.push(format!(
            "{} writable bind(s) from the host, all distinct and none inside another; every \
             other writable path (/tmp, /work) is a tmpfs private to its sandbox",
            binds.len()
        ));
    }
    Check {
        name: "writable-paths",
        question: "did any two steps share a writable host path?",
        passed,
        evidence,
    }
}

fn overlap(a: &SandboxEvidence, b: &SandboxEvidence) -> bool {
    a.started < b.finished && b.started < a.finished
}

/// Pairs of steps that overlapped in time and for which `same` holds.
fn overlapping_pairs(
    steps: &[StepEvidence],
    same: impl Fn(&StepEvidence, &SandboxEvidence, &StepEvidence, &SandboxEvidence) -> bool,
    describe: impl Fn(&StepEvidence, &SandboxEvidence, &StepEvidence, &SandboxEvidence) -> String,
) -> Vec<String> {
    let ran: Vec<_> = ran(steps).collect();
    let mut pairs = Vec::new();
    for (i, (a, sa)) in ran.iter().enumerate() {
        for (b, sb) in &ran[i + 1..] {
            if overlap(sa, sb) && same(a, sa, b, sb) {
                pairs.push(describe(a, sa, b, sb));
            }
        }
    }
    pairs
}

fn when(s: &SandboxEvidence) -> String {
    let t = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    format!("{} .. {}", t(s.started), t(s.finished))
}

fn slots(steps: &[StepEvidence]) -> Check {
    let mut evidence = overlapping_pairs(
        steps,
        |a, sa, b, sb| a.worker == b.worker && sa.host_uid == sb.host_uid,
        |a, sa, b, sb| {
            format!(
                "steps {} ({}) and {} ({}) both used slot uid {} of worker {}",
                a.name,
                when(sa),
                b.name,
                when(sb),
                sa.host_uid,
                a.worker
            )
        },
    );
    let passed = evidence.is_empty();
    if passed {
        let slots: std::collections::BTreeSet<(&str, u32)> = ran(steps)
            .map(|(s, sb)| (s.worker.as_str(), sb.host_uid))
            .collect();
        evidence.push(format!(
            "{} step(s) ran on {} slot(s); no slot held two steps at once",
            ran(steps).count(),
            slots.len()
        ));
    }
    Check {
        name: "slots",
        question: "did any two steps use one worker slot at the same time?",
        passed,
        evidence,
    }
}

fn uids(steps: &[StepEvidence]) -> Check {
    let mut evidence = overlapping_pairs(
        steps,
        |_, sa, _, sb| sa.host_uid == sb.host_uid,
        |a, sa, b, sb| {
            format!(
                "steps {} (worker {}, {}) and {} (worker {}, {}) both ran as host uid {}",
                a.name,
                a.worker,
                when(sa),
                b.name,
                b.worker,
                when(sb),
                sa.host_uid
            )
        },
    );
    let passed = evidence.is_empty();
    if passed {
        evidence.push("steps that overlapped in time ran as distinct host uids".to_string());
    }
    Check {
        name: "uids",
        question: "did any two steps that overlapped in time run as the same host uid?",
        passed,
        evidence,
    }
}

/// The report as text for people: checks first, then each step.
pub fn render_text(report: &SeparationReport) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "Step separation report: run {} of pipeline {} ({}), {} step(s)",
        report.run,
        report.pipeline,
        report.state,
        report.steps.len()
    ));
    line(format!(
        "Verdict: {}",
        if report.separated {
            "SEPARATED - every check passed"
        } else {
            "NOT SEPARATED - see the failed checks"
        }
    ));
    line(String::new());
    line("Checks".into());
    for check in &report.checks {
        let mark = if check.passed { "PASS" } else { "FAIL" };
        line(format!("  {mark}  {}  ({})", check.question, check.name));
        for e in &check.evidence {
            line(format!("        {e}"));
        }
    }
    for step in &report.steps {
        line(String::new());
        render_step(step, &mut line);
    }
    out
}

fn render_step(step: &StepEvidence, line: &mut impl FnMut(String)) {
    let attempts = match step.attempts {
        0 | 1 => String::new(),
        n => format!(" after {n} attempts"),
    };
    line(format!(
        "Step {}: {} on worker {}{attempts}",
        step.name, step.state, step.worker
    ));
    let Some(sb) = &step.sandbox else {
        line("  did not run: no step record".into());
        return;
    };
    let secs = (sb.finished - sb.started).as_seconds_f64();
    let field = |name: &str, value: String| format!("  {name:<11}{value}");
    line(field("time", format!("{} ({secs:.2} s)", when(sb))));
    line(field("exit", exit_text(&sb.exit)));
    line(field(
        "identity",
        format!("host uid {} -> step uid {}", sb.host_uid, sb.step_uid),
    ));
    line(field("profile", format!("sha256:{}", sb.profile_sha256)));
    line(field("namespaces", sb.namespaces.join(", ")));
    line(field("network", sb.network.clone()));
    line(field(
        "seccomp",
        format!("{} (program sha256:{})", sb.seccomp, sb.seccomp_sha256),
    ));
    let l = &sb.limits;
    line(field(
        "limits",
        format!(
            "memory {}, pids {}, cpus {}.{:03}, open files {}; {}",
            bytes(l.memory_bytes),
            l.pids,
            l.millicpus / 1000,
            l.millicpus % 1000,
            l.open_files,
            sb.rlimits
        ),
    ));
    for (i, m) in sb.mounts.iter().enumerate() {
        line(field(if i == 0 { "mounts" } else { "" }, m.clone()));
    }
    line(field("rootfs", sb.rootfs.clone()));
    for (i, (path, digest)) in sb.inputs.iter().enumerate() {
        line(field(
            if i == 0 { "inputs" } else { "" },
            format!("{path}  {digest}"),
        ));
    }
    for (i, (path, digest)) in sb.outputs.iter().enumerate() {
        line(field(
            if i == 0 { "outputs" } else { "" },
            format!("/out/{path}  sha256:{digest}"),
        ));
    }
    let u = &sb.usage;
    line(field(
        "peaks",
        format!(
            "memory {}, cpu time {} ms, pids {}",
            bytes(u.peak_memory_bytes),
            u.cpu_time_ms,
            u.peak_pids
        ),
    ));
    let events = if sb.events.is_empty() {
        "none (limits hit are listed here; seccomp denials are not counted, see docs/security.md)"
            .to_string()
    } else {
        serde_json::to_string(&sb.events).unwrap_or_default()
    };
    line(field("events", events));
}

/// `2 GiB`, `6.3 MiB`, `512 bytes`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn exit_text(exit: &ExitRecord) -> String {
    match exit {
        ExitRecord::Exited { code } => format!("exited with status {code}"),
        ExitRecord::Signaled { signal } => format!("killed by signal {signal}"),
        ExitRecord::TimedOut { after_secs } => format!("timed out after {after_secs}s"),
        ExitRecord::Killed { reason } | ExitRecord::Failed { reason } => reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StepDetail;
    use crate::state::testing::sample_record;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
    }

    fn record(step: &str, host_uid: u32, out_dir: &str, from: i64, to: i64) -> StepRecord {
        let mut record = sample_record("run-1", step);
        record.started_on = at(from);
        record.finished_on = at(to);
        let sandbox = &mut record.sandbox;
        sandbox.namespaces = vec!["user".into(), "mount".into()];
        sandbox.host_uid = host_uid;
        sandbox.mounts = vec![
            "/ <- /store/trees/x (bind, ro,nosuid,nodev)".into(),
            format!("/out <- {out_dir} (bind, rw,nosuid,nodev)"),
            "/tmp tmpfs size=1048576 (rw,nosuid,nodev)".into(),
        ];
        sandbox.rlimits = "RLIMIT_CORE=0, RLIMIT_NOFILE=1024".into();
        record
    }

    fn run(steps: Vec<(&str, StepRecord)>) -> RunDetail {
        RunDetail {
            id: "run-1".into(),
            pipeline_name: "p".into(),
            state: "succeeded".into(),
            started_at: String::new(),
            finished_at: None,
            steps: steps
                .into_iter()
                .map(|(worker, record)| StepDetail {
                    name: record.step.clone(),
                    state: "succeeded".into(),
                    attempts: 1,
                    worker_id: Some(worker.into()),
                    reason: None,
                    record: Some(record),
                })
                .collect(),
            artifacts: Vec::new(),
        }
    }

    fn check<'a>(report: &'a SeparationReport, name: &str) -> &'a Check {
        report.checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn concurrent_steps_on_distinct_slots_and_paths_are_separated() {
        let report = separation_report(&run(vec![
            (
                "w1",
                record("a", 1_000_000, "/w/run-1/a@1000000/out", 0, 10),
            ),
            (
                "w1",
                record("b", 1_000_001, "/w/run-1/b@1000001/out", 5, 15),
            ),
            // The same slot again, after a finished: sequential reuse is fine.
            (
                "w1",
                record("c", 1_000_000, "/w/run-1/c@1000000/out", 11, 20),
            ),
        ]));
        assert!(report.separated, "{}", render_text(&report));
        // One profile for all three: host paths do not enter the digest.
        let profiles: std::collections::BTreeSet<_> = report
            .steps
            .iter()
            .map(|s| s.sandbox.as_ref().unwrap().profile_sha256)
            .collect();
        assert_eq!(profiles.len(), 1);
    }

    #[test]
    fn two_steps_sharing_a_writable_path_fail_the_writable_paths_check() {
        let report = separation_report(&run(vec![
            ("w1", record("a", 1_000_000, "/w/shared/out", 0, 10)),
            ("w2", record("b", 2_000_000, "/w/shared/out/sub", 20, 30)),
        ]));
        assert!(!report.separated);
        let paths = check(&report, "writable-paths");
        assert!(!paths.passed);
        assert_eq!(
            paths.evidence,
            ["steps a and b both had /w/shared/out / /w/shared/out/sub writable"]
        );
        assert!(check(&report, "slots").passed && check(&report, "uids").passed);
        assert!(
            render_text(&report).contains("FAIL  did any two steps share a writable host path?")
        );
    }

    #[test]
    fn overlapping_steps_on_one_slot_fail_the_slot_and_uid_checks() {
        let report = separation_report(&run(vec![
            ("w1", record("a", 1_000_000, "/w/a/out", 0, 10)),
            ("w1", record("b", 1_000_000, "/w/b/out", 9, 12)),
        ]));
        assert!(!check(&report, "slots").passed);
        assert!(!check(&report, "uids").passed);
        assert!(check(&report, "writable-paths").passed);
    }

    #[test]
    fn one_uid_on_two_workers_at_once_fails_only_the_uid_check() {
        let report = separation_report(&run(vec![
            ("w1", record("a", 1_000_000, "/w1/a/out", 0, 10)),
            ("w2", record("b", 1_000_000, "/w2/b/out", 5, 12)),
        ]));
        assert!(check(&report, "slots").passed);
        let uids = check(&report, "uids");
        assert!(!uids.passed);
        assert!(
            uids.evidence[0].contains("both ran as host uid 1000000"),
            "{:?}",
            uids.evidence
        );
    }
}
