//! Benchmark (not a test): runs `/bin/true` N times through a `kiln_sandbox::Launcher` (as the
//! worker does), through the one-shot `kiln_sandbox::run_report` (a helper process per step),
//! and through `bwrap --unshare-all --die-with-parent --ro-bind ROOTFS / /bin/true`, interleaved
//! in the same process, and prints each median and the ratio kiln/bwrap. A second bwrap anchor
//! (`bwrap+`) adds the mounts and privilege drop a kiln sandbox has. Needs root.
//! Use `scripts/bench-sandbox.sh`, which builds it in release mode and prepares a rootfs.
//!
//! usage: sandbox_bench --rootfs DIR --helper PATH [--helper-arg ARG]... [-n 200] [--warmup 20] [--bwrap bwrap]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiln_sandbox::{HelperCommand, IdMap, Launcher, Outcome, RunReport, SandboxSpec};

struct Args {
    rootfs: PathBuf,
    helper: PathBuf,
    helper_args: Vec<String>,
    runs: usize,
    warmup: usize,
    bwrap: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        rootfs: PathBuf::new(),
        helper: PathBuf::new(),
        helper_args: Vec::new(),
        runs: 200,
        warmup: 20,
        bwrap: "bwrap".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rootfs" => args.rootfs = value.into(),
            "--helper" => args.helper = value.into(),
            "--helper-arg" => args.helper_args.push(value),
            "-n" | "--runs" => args.runs = value.parse().context("-n")?,
            "--warmup" => args.warmup = value.parse().context("--warmup")?,
            "--bwrap" => args.bwrap = value.into(),
            other => bail!("unknown flag {other}"),
        }
    }
    if args.rootfs.as_os_str().is_empty() || args.helper.as_os_str().is_empty() {
        bail!(
            "usage: sandbox_bench --rootfs DIR --helper PATH [--helper-arg ARG]... [-n 200] [--warmup 20] [--bwrap bwrap]"
        );
    }
    args.rootfs = args.rootfs.canonicalize().context("--rootfs")?;
    Ok(args)
}

fn spec(rootfs: PathBuf, out_dir: PathBuf) -> SandboxSpec {
    SandboxSpec {
        rootfs,
        inputs: Vec::new(),
        out_dir: Some(out_dir),
        scratch_bytes: 64 << 20,
        argv: vec!["/bin/true".into()],
        env: BTreeMap::from([("PATH".into(), "/bin".into())]),
        ids: IdMap {
            host_uid: 100_000,
            host_gid: 100_000,
            step_uid: 1000,
            step_gid: 1000,
        },
        timeout: Duration::from_secs(30),
        hostname: "kiln".into(),
        limits: kiln_sandbox::Limits::default(),
    }
}

/// How a kiln run is started.
enum Kiln<'a> {
    Launcher(&'a Launcher),
    OneShot(&'a HelperCommand),
}

/// One kiln run: (total, helper-reported setup, helper-reported command time).
fn kiln_once(kiln: &Kiln<'_>, spec: &SandboxSpec) -> anyhow::Result<[Duration; 3]> {
    let log = File::options().write(true).open("/dev/null")?;
    let start = Instant::now();
    let report: RunReport = match kiln {
        Kiln::Launcher(launcher) => launcher.run_report(spec, log)?,
        Kiln::OneShot(helper) => kiln_sandbox::run_report(helper, spec, log)?,
    };
    let total = start.elapsed();
    if report.outcome != Outcome::Exited(0) {
        bail!("kiln: /bin/true ended with {:?}", report.outcome);
    }
    Ok([total, report.timing.setup, report.timing.command])
}

/// bwrap flags giving roughly what a kiln sandbox has (for a second, informative anchor).
fn bwrap_like_kiln(out: &std::path::Path) -> Vec<String> {
    let out = out.display().to_string();
    let flags = "--proc /proc --dev /dev --tmpfs /tmp --tmpfs /work --chdir /work --hostname kiln \
                 --uid 1000 --gid 1000 --cap-drop ALL --new-session --clearenv --setenv PATH /bin";
    let mut args: Vec<String> = flags.split_whitespace().map(String::from).collect();
    args.extend(["--bind".into(), out, "/out".into()]);
    args
}

fn bwrap_once(args: &Args, extra: &[String]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let status = Command::new(&args.bwrap)
        .args(["--unshare-all", "--die-with-parent", "--ro-bind"])
        .arg(&args.rootfs)
        .arg("/")
        .args(extra)
        .arg("/bin/true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("bwrap")?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("bwrap: /bin/true ended with {status}");
    }
    Ok(elapsed)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let out = tempfile::tempdir().context("out dir")?;
    std::os::unix::fs::chown(out.path(), Some(100_000), Some(100_000))
        .context("chown out dir (run as root)")?;
    let spec = spec(args.rootfs.clone(), out.path().to_owned());
    let helper = HelperCommand {
        program: args.helper.clone(),
        args: args.helper_args.clone(),
    };
    let like_kiln = bwrap_like_kiln(out.path());
    let launcher = Launcher::start(&helper)?;
    let kilns = [Kiln::Launcher(&launcher), Kiln::OneShot(&helper)];
    for _ in 0..args.warmup {
        for kiln in &kilns {
            kiln_once(kiln, &spec)?;
        }
        bwrap_once(&args, &[])?;
        bwrap_once(&args, &like_kiln)?;
    }
    let mut kiln: [Vec<[Duration; 3]>; 2] = [Vec::new(), Vec::new()];
    let (mut bwrap, mut bwrap_full) = (Vec::new(), Vec::new());
    // Machine-wide busy CPU while each variant ran: kiln's sandbox processes are reaped by
    // the kernel, so no rusage holds them. Summed over many short runs, the clock ticks add
    // up to the CPU each variant used (plus whatever else ran then).
    let mut cpu = [Duration::ZERO; 4];
    for _ in 0..args.runs {
        for ((samples, how), cpu) in kiln.iter_mut().zip(&kilns).zip(&mut cpu) {
            let before = machine_cpu()?;
            samples.push(kiln_once(how, &spec)?);
            *cpu += machine_cpu()?.saturating_sub(before);
        }
        let before = machine_cpu()?;
        bwrap.push(bwrap_once(&args, &[])?);
        cpu[2] += machine_cpu()?.saturating_sub(before);
        let before = machine_cpu()?;
        bwrap_full.push(bwrap_once(&args, &like_kiln)?);
        cpu[3] += machine_cpu()?.saturating_sub(before);
    }
    let cpu_per_run = cpu.map(|c| c / args.runs as u32);
    let (b, full) = (median(bwrap), median(bwrap_full));
    println!(
        "helper {} {}",
        args.helper.display(),
        args.helper_args.join(" ")
    );
    println!(
        "rootfs {}  runs {} (after {} warm-up), interleaved",
        args.rootfs.display(),
        args.runs,
        args.warmup
    );
    let names = [
        "kiln (launcher, as the worker runs steps)",
        "kiln (one-shot helper per step)",
    ];
    let mut ratios = Vec::new();
    for (samples, name) in kiln.iter().zip(names) {
        let k = print_kiln(name, samples);
        ratios.push((
            name,
            k.as_secs_f64() / b.as_secs_f64(),
            k.as_secs_f64() / full.as_secs_f64(),
        ));
    }
    println!(
        "bwrap  median {:7.3} ms   (--unshare-all --die-with-parent --ro-bind ROOTFS /)",
        ms(b)
    );
    println!(
        "bwrap+ median {:7.3} ms   (same plus /proc /dev /tmp /work /out, uid, caps, hostname)",
        ms(full)
    );
    for (name, ratio, ratio_full) in ratios {
        println!("ratio kiln/bwrap {ratio:.2}   kiln/bwrap+ {ratio_full:.2}   {name}");
    }
    let [launcher_cpu, one_shot_cpu, bwrap_cpu, bwrap_full_cpu] = cpu_per_run;
    println!(
        "CPU per run, whole machine: kiln (launcher) {:.2} ms, kiln (one-shot) {:.2} ms, \
         bwrap {:.2} ms, bwrap+ {:.2} ms; kiln (launcher)/bwrap {:.2}",
        ms(launcher_cpu),
        ms(one_shot_cpu),
        ms(bwrap_cpu),
        ms(bwrap_full_cpu),
        launcher_cpu.as_secs_f64() / bwrap_cpu.as_secs_f64()
    );
    Ok(())
}

/// Busy CPU time of the whole machine since boot (user, nice, system, irq, softirq), from
/// `/proc/stat`, in clock ticks of 10 ms.
fn machine_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum();
    Ok(Duration::from_millis(busy * 10))
}

/// Prints one kiln variant's medians; returns its median total.
fn print_kiln(name: &str, samples: &[[Duration; 3]]) -> Duration {
    let column = |i: usize| samples.iter().map(|s| s[i]).collect::<Vec<_>>();
    let overhead = samples
        .iter()
        .map(|[t, s, c]| t.saturating_sub(*s + *c))
        .collect();
    let total = median(column(0));
    println!("{name}");
    println!("  median total                     {:7.3} ms", ms(total));
    println!(
        "  helper setup (start -> execve)   {:7.3} ms",
        ms(median(column(1)))
    );
    println!(
        "  command (execve -> exit)         {:7.3} ms",
        ms(median(column(2)))
    );
    println!(
        "  rest (start helper, IPC, reap)   {:7.3} ms",
        ms(median(overhead))
    );
    total
}
