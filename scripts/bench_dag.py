#!/usr/bin/env python3
"""Helpers of scripts/bench-dag.sh (standard library only).

  gen SHAPE N DIR ROOTFS BWRAP [--runs R]
      writes DIR/pipeline-K.yaml (R pipelines, default 1) and DIR/build.ninja: N no-op steps,
      SHAPE `flat` (independent) or `chain` (step i needs step i-1). Every kiln step runs
      `/bin/true` (kiln runs it as `/bin/sh -c /bin/true`); every ninja edge runs
      `bwrap --unshare-all --die-with-parent --ro-bind ROOTFS / /bin/sh -c /bin/true`.
  run-times LOG T0
      the last run of a daemon log: seconds from unix time T0 to its acceptance, its first
      lease, its last accepted report and its end ("run finished").
  phases [--by-tenth] LOG...
      per-lease phases from worker logs (debug events of worker/src/remote.rs): claim round
      trip (a lease that came in a report's answer, `claimed ... claim_us=0 via=report`, had
      none: it is counted in its own row, `via report`), ready -> sandbox start, fetch,
      run_step (split at the worker's "step started" into
      stage, i.e. work dir, inputs, /out tmpfs, and sandbox+after, i.e. the sandboxed process,
      collecting outputs, storing the log, removing the work dir; split further by the worker's
      "sandbox phases" event of worker/src/lib.rs: the launcher's round trip, of which the
      helper's setup to the step's exec and the command to pid 1's exit, collect, the /out
      unmount, storing the log, cleaning up), upload, report; p50/p90/p99.
      --by-tenth adds the claim p50/p99 per tenth of the claims in time order.
  claims LOG
      the controller's part of the dispatch latency, from a daemon log: `claim_us` of each
      "step leased" event (a claim of its own or one a report's answer carried), p50/p90/p99,
      and p50/p99 per tenth of the claims in time order.
  median X...
      the median of the numbers.
"""

import re
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# `2026-11-22T01:23:58.123456Z DEBUG kiln_worker::remote: claimed slot=0 lease=… claim_us=812`
LINE = re.compile(r"^(\S+Z)\s+(\w+)\s+(\S+?):\s+(.*)$")
FIELD = re.compile(r"(\w+)=(\S+)")


def gen(shape, n, out, rootfs, bwrap, runs=1):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for k in range(runs):
        lines = ["version: 1", f"name: bench-{shape}-{k}", "rootfs: busybox@1", "steps:"]
        for i in range(n):
            if shape == "chain" and i > 0:
                lines.append(f"  - {{ name: s{i:05d}, needs: [s{i - 1:05d}], run: /bin/true }}")
            else:
                lines.append(f"  - {{ name: s{i:05d}, run: /bin/true }}")
        (out / f"pipeline-{k}.yaml").write_text("\n".join(lines) + "\n")
    rules = [
        "rule step",
        f"  command = {bwrap} --unshare-all --die-with-parent --ro-bind {rootfs} / /bin/sh -c /bin/true",
        "",
    ]
    # Outputs are never written, so every edge runs on every invocation (like a fresh kiln run).
    for i in range(n):
        dep = f" s{i - 1:05d}" if shape == "chain" and i > 0 else ""
        rules.append(f"build s{i:05d}: step{dep}")
    (out / "build.ninja").write_text("\n".join(rules) + "\n")


def parse(path):
    """Yields (unix seconds, message, fields) for each log line."""
    for raw in Path(path).read_text(errors="replace").splitlines():
        m = LINE.match(ANSI.sub("", raw))
        if not m:
            continue
        ts = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        rest = m.group(4)
        fields = dict(FIELD.findall(rest))
        # The message comes first, then the fields (some of which hold spaces: `exit=Exited { .. }`).
        first = FIELD.search(rest)
        message = (rest[:first.start()] if first else rest).strip()
        yield ts.timestamp(), message, fields


def run_times(log, t0):
    """The last run accepted in a daemon log: when it was accepted, its first lease, its last
    accepted report and when it finished, in seconds since T0."""
    lines = list(parse(log))
    accepted = [f.get("run") for _, msg, f in lines if msg == "run accepted"]
    if not accepted:
        sys.exit(f"no 'run accepted' in {log}")
    run = accepted[-1]
    mine = [(ts - float(t0), msg) for ts, msg, f in lines if f.get("run") == run]

    def first(m):
        return next((ts for ts, msg in mine if msg == m), float("nan"))

    reported = [ts for ts, msg in mine if msg == "step reported"]
    print(f"{first('run accepted'):.3f} {first('step leased'):.3f} "
          f"{(max(reported) if reported else float('nan')):.3f} {first('run finished'):.3f}")


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    i = min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))
    return xs[i]


def phases(logs, by_tenth=False):
    claim = {}  # lease -> (claim start, claim_us)
    started = {}  # (run, step) -> ts of "step started"
    leased = {}  # lease -> (run, step)
    claims = []  # (ts, ms), to show the latency as the queue drains
    got = {}  # lease -> ts the lease arrived
    fetched = {}  # lease -> fetch_us
    ran = {}  # lease -> run_us
    rows = {k: [] for k in ("claim", "  via report", "ready_to_sandbox", "fetch", "run_step", "  stage",
                            "  sandbox+after", "    launcher", "      helper setup", "      helper command",
                            "      launcher rest", "    collect", "    unmount /out", "    store log",
                            "    clean up", "upload", "report")}
    for log in logs:
        for ts, msg, f in parse(log):
            if msg == "claimed":
                us = int(f["claim_us"])
                claim[f["lease"]] = (ts - us / 1e6, us)
                got[f["lease"]] = ts
                if f.get("via") == "report":
                    rows["  via report"].append(us / 1000)
                else:
                    rows["claim"].append(us / 1000)
                    claims.append((ts, us / 1000))
            elif msg == "leased":
                leased[f["lease"]] = (f.get("run"), f.get("step"))
            elif msg == "step started":
                started[(f.get("run"), f.get("step"))] = ts
            elif msg == "sandbox phases":  # worker/src/lib.rs: the sandbox+after part
                us = {k: int(f[k]) / 1000 for k in ("sandbox_us", "setup_us", "command_us", "collect_us",
                                                     "unmount_us", "store_log_us", "cleanup_us")}
                rows["    launcher"].append(us["sandbox_us"])
                rows["      helper setup"].append(us["setup_us"])
                rows["      helper command"].append(us["command_us"])
                rows["      launcher rest"].append(us["sandbox_us"] - us["setup_us"] - us["command_us"])
                rows["    collect"].append(us["collect_us"])
                rows["    unmount /out"].append(us["unmount_us"])
                rows["    store log"].append(us["store_log_us"])
                rows["    clean up"].append(us["cleanup_us"])
            elif msg == "lease phases":
                fetched[f["lease"]] = int(f["fetch_us"]) / 1e6
                ran[f["lease"]] = int(f["run_us"]) / 1e6
                rows["fetch"].append(int(f["fetch_us"]) / 1000)
                rows["run_step"].append(int(f["run_us"]) / 1000)
                rows["upload"].append(int(f["upload_us"]) / 1000)
                rows["report"].append(int(f["report_us"]) / 1000)
    for lease, (t0, _) in claim.items():
        key = leased.get(lease)
        if key in started:
            rows["ready_to_sandbox"].append((started[key] - t0) * 1000)
            if lease in fetched:
                stage = started[key] - got[lease] - fetched[lease]
                rows["  stage"].append(stage * 1000)
                rows["  sandbox+after"].append((ran[lease] - stage) * 1000)
    print(f"  {'phase (ms)':<18} {'n':>6} {'p50':>8} {'p90':>8} {'p99':>8} {'mean':>8}")
    for name, xs in rows.items():
        if xs:
            print(f"  {name:<18} {len(xs):>6} {pct(xs, 50):>8.2f} {pct(xs, 90):>8.2f} "
                  f"{pct(xs, 99):>8.2f} {statistics.fmean(xs):>8.2f}")
    if by_tenth and claims:
        claims.sort()
        tenth = max(1, len(claims) // 10)
        parts = [[ms for _, ms in claims[i:i + tenth]] for i in range(0, len(claims), tenth)]
        print("  claim p50/p99 (ms) by tenth of the claims, queue fullest first:")
        print("   " + "  ".join(f"{pct(p, 50):.1f}/{pct(p, 99):.1f}" for p in parts))


def claims(log):
    """p50/p90/p99 of the daemon's `claim_us` per lease, overall and per tenth in time order."""
    us = [int(f["claim_us"]) / 1000 for _, msg, f in parse(log) if msg == "step leased" and "claim_us" in f]
    if not us:
        sys.exit(f"no 'step leased ... claim_us=' in {log}")
    print(f"  controller claim (ms): n {len(us)}, p50 {pct(us, 50):.2f}, p90 {pct(us, 90):.2f}, "
          f"p99 {pct(us, 99):.2f}, mean {statistics.fmean(us):.2f}")
    tenth = max(1, len(us) // 10)
    parts = [us[i:i + tenth] for i in range(0, len(us), tenth)]
    print("  p50/p99 (ms) by tenth, queue fullest first:")
    print("   " + "  ".join(f"{pct(p, 50):.2f}/{pct(p, 99):.2f}" for p in parts))


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "gen":
        runs = 1
        if "--runs" in args:
            i = args.index("--runs")
            runs = int(args[i + 1])
            del args[i:i + 2]
        shape, n, out, rootfs, bwrap = args
        gen(shape, int(n), out, rootfs, bwrap, runs)
    elif cmd == "run-times":
        run_times(*args)
    elif cmd == "phases":
        by_tenth = "--by-tenth" in args
        phases([a for a in args if a != "--by-tenth"], by_tenth)
    elif cmd == "claims":
        claims(*args)
    elif cmd == "median":
        print(f"{statistics.median(float(x) for x in args):.3f}")
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
