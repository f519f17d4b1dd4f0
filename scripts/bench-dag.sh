#!/usr/bin/env bash
# Compares kiln's distributed mode with ninja running the same no-op commands in bubblewrap, on
# this machine, in the same invocation (issue 4):
#   (a) N independent no-op steps, (b) an N-long chain (step i needs step i-1),
# each through `kiln daemon` + 2 `kiln worker`s (`kiln submit --wait`) and through
# `ninja -j J` with every edge `bwrap --unshare-all --die-with-parent --ro-bind ROOTFS /
# /bin/sh -c /bin/true` (kiln runs each step as `/bin/sh -c /bin/true` in the same busybox
# rootfs, read-only). Interleaved, REPS times; prints medians, total/N and kiln/(ninja+bwrap).
# Then the dispatch latency with QUEUE steps queued (see docs/benchmarks.md for the definition).
#
# Parallelism: 2 workers x SLOTS slots = J = ninja's -j (default SLOTS=2, J=4 on a 2-core
# machine: a no-op step is mostly kernel work and waits, so 2 per core keeps both cores busy
# for both tools, and the two get the same width).
#
# Needs root, ninja (ninja-build), bwrap, busybox-static, python3. Cleans up every process,
# mount, cgroup and temporary directory it made, also on failure or Ctrl-C.
#
# usage: [REPS=3] [N=1000] [SLOTS=2] [QUEUE=10000] [KILN=path/to/kiln] bash scripts/bench-dag.sh
# (KILN skips the release build and uses that binary; DAEMON_LOG sets the daemon's KILN_LOG filter,
# e.g. info,sqlx=debug to see every statement; WORKER_LOG the workers', by default
# info,kiln_worker=debug, whose per-lease timings make the "where the time goes" tables.)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

REPS=${REPS:-3}
N=${N:-1000}
SLOTS=${SLOTS:-2}
QUEUE=${QUEUE:-10000}
J=$((2 * SLOTS))
for tool in ninja bwrap busybox python3; do
  command -v "$tool" >/dev/null || { echo "bench-dag: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "bench-dag: run as root (the workers need it)" >&2; exit 1; }

if [[ -n "${KILN:-}" ]]; then
  kiln=$KILN # a kiln binary built earlier (e.g. while others edit the tree)
else
  cargo build --release --locked --bin kiln -p kiln-cli
  target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  kiln="$target/release/kiln"
fi
bwrap=$(command -v bwrap)
py() { python3 "$repo/scripts/bench_dag.py" "$@"; }
now() { date +%s.%N; }

scratch=$(mktemp -d /tmp/kiln-bench-dag.XXXXXX)
pgids=()      # daemon and workers: each leads its own process group
child=""      # the command being timed, run in the background so a signal is handled at once
fg() { "$@" & child=$!; local rc=0; wait "$child" || rc=$?; child=""; return "$rc"; }

# The kiln cgroup parents next to this script's own cgroups (kiln/<owner pid>-<start> holds a
# step; see sandbox/src/cgroup/mod.rs): v1, `<own>/kiln` per hierarchy; v2, `<parent of own>/kiln`.
kiln_cgroup_parents() {
  local ctrls path
  while IFS=: read -r _ ctrls path; do
    if [[ -z "$ctrls" ]]; then
      echo "/sys/fs/cgroup$(dirname "$path")/kiln"
    else
      echo "/sys/fs/cgroup/${ctrls#name=}${path%/}/kiln"
    fi
  done </proc/self/cgroup
}
declare -A cgroups_before=()
for parent in $(kiln_cgroup_parents); do
  cgroups_before[$parent]=1
  for d in "$parent"/*-*; do [[ -d "$d" ]] && cgroups_before[$d]=1; done
done

wait_gone() { # PID... : waits up to 20 s for them to exit
  local p alive
  for _ in $(seq 200); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  return 1
}

cleanup() {
  local rc=$? p d
  set +e
  [[ -n "$child" ]] && kill -TERM "$child" 2>/dev/null
  # Workers first, while the daemon still takes their reports (SIGTERM drains: running steps
  # finish, launchers remove their cgroups), then the daemon; SIGKILL for whatever is left.
  for p in "${pgids[@]:1}"; do kill -TERM "$p" 2>/dev/null; done
  wait_gone "${pgids[@]:1}"
  ((${#pgids[@]})) && kill -TERM "${pgids[0]}" 2>/dev/null && wait_gone "${pgids[0]}"
  for p in "${pgids[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
  # Mounts a killed worker may have left (steps' /out tmpfs), deepest first.
  awk -v d="$scratch" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
    sort -r | while read -r m; do umount -l "$m"; done
  # Step cgroups a killed helper left: made during this run, owner gone (rmdir refuses a busy
  # or non-empty one). The parents too, if this run made them and they are empty.
  for parent in $(kiln_cgroup_parents); do
    for d in "$parent"/*-*; do
      [[ -d "$d" && -z "${cgroups_before[$d]:-}" ]] || continue
      p=${d##*/}
      kill -0 "${p%%-*}" 2>/dev/null || rmdir "$d" 2>/dev/null
    done
    [[ -z "${cgroups_before[$parent]:-}" ]] && rmdir "$parent" 2>/dev/null
  done
  [[ -n "${KEEP_SCRATCH:-}" ]] || rm -rf "$scratch"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "bench-dag: N=$N REPS=$REPS SLOTS=$SLOTS per worker (J=$J) QUEUE=$QUEUE; $(nproc) cpus"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# A busybox rootfs: every applet, a passwd file. kiln imports it into its mirror; bwrap binds it.
rootfs="$scratch/rootfs"
mkdir -p "$rootfs"/{bin,etc,usr/bin}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [[ "$applet" == busybox || -e "$rootfs/bin/$applet" ]] || ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0::/root:/bin/sh\nbuilder:x:1000:1000::/work:/bin/sh\n' >"$rootfs/etc/passwd"

data="$scratch/daemon"
export NO_COLOR=1
"$kiln" --data-dir "$data" mirror import-rootfs "$rootfs" --name busybox@1 >/dev/null
token=$("$kiln" --data-dir "$data" admin token create --team bench --ttl 4h | sed -n 's/^token: //p')

# `setsid` so that each process leads its own group (the cleanup kills the group).
KILN_LOG=${DAEMON_LOG:-info} setsid "$kiln" --data-dir "$data" daemon --listen 127.0.0.1:0 \
  >"$scratch/daemon.out" 2>"$scratch/daemon.log" </dev/null &
pgids+=($!)
for _ in $(seq 300); do
  url=$(sed -n 's/^listening on //p' "$scratch/daemon.out")
  [[ -n "$url" ]] && break
  sleep 0.1
done
[[ -n "$url" ]] || { cat "$scratch/daemon.log" >&2; echo "bench-dag: the daemon did not start" >&2; exit 1; }
for w in 1 2; do
  KILN_LOG=${WORKER_LOG:-info,kiln_worker=debug} setsid "$kiln" --data-dir "$scratch/worker-$w" worker \
    --controller "$url" --name "bench-$w" --slots "$SLOTS" --host-ids "$((1400000 + 1000 * w)):$((SLOTS + 2))" \
    >"$scratch/worker-$w.out" 2>"$scratch/worker-$w.log" </dev/null &
  pgids+=($!)
done
export KILN_CONTROLLER="$url" KILN_TOKEN="$token"
unset KILN_DATA_DIR

for shape in flat chain; do
  py gen "$shape" "$N" "$scratch/$shape" "$rootfs" "$bwrap"
done
py gen flat "$((4 * J))" "$scratch/warm" "$rootfs" "$bwrap"
# Warm-up: both workers fetch and extract the rootfs and start their sandbox launchers.
fg "$kiln" submit "$scratch/warm/pipeline-0.yaml" --wait >/dev/null 2>&1
fg ninja -C "$scratch/warm" -j "$J" >/dev/null
if ! grep -q "reported" "$scratch/worker-1.log" || ! grep -q "reported" "$scratch/worker-2.log"; then
  echo "bench-dag: warning: one worker ran no warm-up step" >&2
fi

declare -A total
lines() { wc -l <"$1"; }
# CPU seconds (user + system, all threads) a process has used so far.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }
# CPU seconds the whole machine has spent busy (user, nice, system, irq, softirq; /proc/stat):
# kiln's sandboxes and steps are reaped by the kernel, so no process's counters hold them.
# Then the context switches since boot (/proc/stat `ctxt`).
machine_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '/^cpu / { cpu = ($2 + $3 + $4 + $7 + $8) / hz } /^ctxt / { print cpu, $2 }' /proc/stat
}
cpu_now() { # "daemon workers" CPU seconds
  echo "$(cpu_secs "${pgids[0]}") $(echo "$(cpu_secs "${pgids[1]}") + $(cpu_secs "${pgids[2]}")" | bc)"
}
run_kiln() { # SHAPE REP
  local shape=$1 rep=$2 t0 t1 off1 off2
  off1=$(lines "$scratch/worker-1.log") off2=$(lines "$scratch/worker-2.log")
  read -r d0 w0 < <(cpu_now)
  read -r m0 x0 < <(machine_cpu)
  t0=$(now)
  fg "$kiln" submit "$scratch/$shape/pipeline-0.yaml" --wait --json >"$scratch/$shape.json" 2>"$scratch/$shape.err" ||
    { tail -5 "$scratch/$shape.err" >&2; echo "bench-dag: kiln run failed" >&2; exit 1; }
  t1=$(now)
  read -r m1 x1 < <(machine_cpu)
  read -r d1 w1 < <(cpu_now)
  total[mcpu-kiln-$shape]+=" $(echo "($m1 - $m0) * 1000 / $N" | bc -l)"
  total[ctxt-kiln-$shape]+=" $(echo "($x1 - $x0) / $N" | bc -l)"
  total[dcpu-$shape]+=" $(echo "($d1 - $d0) * 1000 / $N" | bc -l)"
  total[wcpu-$shape]+=" $(echo "($w1 - $w0) * 1000 / $N" | bc -l)"
  grep -q '"state": *"succeeded"' "$scratch/$shape.json" || { echo "bench-dag: run did not succeed" >&2; exit 1; }
  # accepted, first lease, last report, finished: seconds since submit started (daemon log).
  read -r acc lease last fin < <(py run-times "$scratch/daemon.log" "$t0")
  total[kiln-$shape]+=" $fin"
  total[cli-$shape]+=" $(echo "$t1 - $t0" | bc)"
  total[acc-$shape]+=" $acc"
  total[lease-$shape]+=" $lease"
  total[pub-$shape]+=" $(echo "$fin - $last" | bc)"
  tail -n "+$((off1 + 1))" "$scratch/worker-1.log" >>"$scratch/phases-$shape-1.log"
  tail -n "+$((off2 + 1))" "$scratch/worker-2.log" >>"$scratch/phases-$shape-2.log"
  printf '  rep %d %-5s kiln         %7.2f s (to "run finished"; kiln submit --wait returned at %.2f s)\n' \
    "$rep" "$shape" "$fin" "$(echo "$t1 - $t0" | bc)"
}
run_ninja() { # SHAPE REP
  local shape=$1 rep=$2 t0 t1
  rm -f "$scratch/$shape/.ninja_log"
  read -r m0 x0 < <(machine_cpu)
  t0=$(now)
  fg ninja -C "$scratch/$shape" -j "$J" >"$scratch/ninja.out" || { tail -5 "$scratch/ninja.out" >&2; exit 1; }
  t1=$(now)
  read -r m1 x1 < <(machine_cpu)
  total[mcpu-ninja-$shape]+=" $(echo "($m1 - $m0) * 1000 / $N" | bc -l)"
  total[ctxt-ninja-$shape]+=" $(echo "($x1 - $x0) / $N" | bc -l)"
  total[ninja-$shape]+=" $(echo "$t1 - $t0" | bc)"
  # This rep's kiln run ran just before: the pair saw the same load.
  total[pair-$shape]+=" $(echo "${total[kiln-$shape]##* } / ($t1 - $t0)" | bc -l)"
  printf '  rep %d %-5s ninja+bwrap  %7.2f s\n' "$rep" "$shape" "$(echo "$t1 - $t0" | bc)"
}

echo
echo "== $N no-op steps, $REPS reps, interleaved (load $(cut -d' ' -f1-3 /proc/loadavg))"
for rep in $(seq "$REPS"); do
  for shape in flat chain; do
    run_kiln "$shape" "$rep"
    run_ninja "$shape" "$rep"
  done
done

echo
echo "== medians of $REPS (load $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-6s %9s %10s %15s %16s %11s %13s\n' shape "kiln (s)" "ninja (s)" "kiln/step (ms)" "ninja/step (ms)" "kiln/ninja" "paired ratio"
for shape in flat chain; do
  # shellcheck disable=SC2086
  k=$(py median ${total[kiln-$shape]})
  # shellcheck disable=SC2086
  n=$(py median ${total[ninja-$shape]})
  # shellcheck disable=SC2086
  printf '%-6s %9.2f %10.2f %15.2f %16.2f %11.2f %13.2f\n' "$shape" "$k" "$n" \
    "$(echo "$k * 1000 / $N" | bc -l)" "$(echo "$n * 1000 / $N" | bc -l)" "$(echo "$k / $n" | bc -l)" \
    "$(py median ${total[pair-$shape]})"
done
echo "(kiln/ninja: ratio of the medians; paired ratio: median of each rep's kiln/ninja, the two run"
echo " back to back. Goal of issue 4: at most 1.5.)"
echo
echo "kiln, where the time goes (medians of $REPS, seconds since kiln submit started):"
for shape in flat chain; do
  # shellcheck disable=SC2086
  printf '  %-5s accepted %.3f, first lease %.3f, last report -> run finished %.3f, submit --wait returned %.2f\n' \
    "$shape" "$(py median ${total[acc-$shape]})" "$(py median ${total[lease-$shape]})" \
    "$(py median ${total[pub-$shape]})" "$(py median ${total[cli-$shape]})"
done
for shape in flat chain; do
  # shellcheck disable=SC2086
  printf '  %-5s CPU per step: daemon %.2f ms, the two workers %.2f ms (their own threads; not the\n' \
    "$shape" "$(py median ${total[dcpu-$shape]})" "$(py median ${total[wcpu-$shape]})"
  echo "        sandbox launchers or the steps' processes)"
done
for shape in flat chain; do
  # shellcheck disable=SC2086
  k=$(py median ${total[mcpu-kiln-$shape]})
  # shellcheck disable=SC2086
  n=$(py median ${total[mcpu-ninja-$shape]})
  printf '  %-5s CPU per step, whole machine (/proc/stat): kiln %.2f ms, ninja+bwrap %.2f ms, ratio %.2f\n' \
    "$shape" "$k" "$n" "$(echo "$k / $n" | bc -l)"
  # shellcheck disable=SC2086
  printf '        context switches per step, whole machine: kiln %.0f, ninja+bwrap %.0f\n' \
    "$(py median ${total[ctxt-kiln-$shape]})" "$(py median ${total[ctxt-ninja-$shape]})"
done
for shape in flat chain; do
  echo "kiln $shape, per lease (worker clocks; run_step = stage + sandbox + collect + store log;"
  echo "  claim = a claim of its own, a long poll: it includes the wait for the run's submission):"
  py phases "$scratch/phases-$shape-1.log" "$scratch/phases-$shape-2.log"
done

# Dispatch latency with QUEUE steps queued: QUEUE independent no-op steps submitted at once
# (as QUEUE/N runs of N steps: see docs/benchmarks.md), all slots busy until the queue drains.
if ((QUEUE > 0)); then
  echo
  runs=$(((QUEUE + N - 1) / N))
  echo "== dispatch latency: $runs runs x $N independent steps queued at once (load $(cut -d' ' -f1-3 /proc/loadavg))"
  py gen flat "$N" "$scratch/queue" "$rootfs" "$bwrap" --runs "$runs"
  off1=$(lines "$scratch/worker-1.log") off2=$(lines "$scratch/worker-2.log") offd=$(lines "$scratch/daemon.log")
  before=$(grep -c "run finished" "$scratch/daemon.log" || true)
  t0=$(now)
  ids=()
  for k in $(seq 0 $((runs - 1))); do
    ids+=("$("$kiln" submit "$scratch/queue/pipeline-$k.yaml" 2>>"$scratch/queue.err")")
  done
  t1=$(now)
  printf '  %d runs (%d steps) submitted and accepted in %.2f s\n' "$runs" "$((runs * N))" "$(echo "$t1 - $t0" | bc)"
  finished=0
  until ((finished >= runs)); do
    sleep 2
    finished=$(($(grep -c "run finished" "$scratch/daemon.log" || true) - before))
  done
  read -r _ _ _ fin < <(py run-times "$scratch/daemon.log" "$t0")
  printf '  drained in %.2f s (%.2f ms per step)\n' "$fin" "$(echo "$fin * 1000 / ($runs * $N)" | bc -l)"
  tail -n "+$((off1 + 1))" "$scratch/worker-1.log" >"$scratch/queue-1.log"
  tail -n "+$((off2 + 1))" "$scratch/worker-2.log" >"$scratch/queue-2.log"
  tail -n "+$((offd + 1))" "$scratch/daemon.log" >"$scratch/queue-daemon.log"
  echo "  dispatch latency, the controller's part: from a claim's arrival (on its own, or in the"
  echo "  report of the worker's previous step) to the lease it hands out; most leases come in"
  echo "  a report's answer, so the worker sees no claim round trip of its own for them:"
  py claims "$scratch/queue-daemon.log"
  echo "  worker phases (claim = a claim of its own, including its wait; ready_to_sandbox = from asking for"
  echo "  the step, or from the arrival of a lease a report carried, to the sandbox starting it):"
  py phases --by-tenth "$scratch/queue-1.log" "$scratch/queue-2.log"
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
