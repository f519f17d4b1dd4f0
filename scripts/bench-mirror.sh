#!/usr/bin/env bash
# The mirror's three figures (issue 5), each against an anchor or a twin measured in the same run:
#   (1) adding a 1 GiB file: `kiln mirror add FILE` against `openssl dgst -sha256 FILE` (the
#       SHA-NI ceiling on one core), interleaved REPS times, page cache warm for both; prints the
#       medians, the throughputs and kiln/openssl (throughput ratio; goal >= 0.90);
#   (2) importing a tree of FILES small files: `kiln mirror add DIR --tree`: wall time, user+sys
#       CPU time and CPU/wall (goal: clearly above 1, i.e. both cores busy);
#   (3) a step's start time with a 1 MiB input against a 1 GiB input: `kiln run` of a one-step
#       no-op pipeline (busybox rootfs, `run: "true"`), interleaved REPS times each. Start time:
#       the wall time of `kiln run` (everything but the no-op step itself is start-up: controller,
#       staging, sandbox), and the worker's own staging time (`stage_us` of its `inputs staged`
#       event). Goal: 1 GiB / 1 MiB ~ 1.0 within noise, because inputs are mounted, not copied.
#
# The 1 GiB random file is made once and cached under target/bench-mirror/. Everything else lives
# in a temporary directory removed at the end, also on failure or Ctrl-C.
#
# Needs root (kiln run sandboxes the step), openssl, busybox-static, python3.
#
# usage: [REPS=5] [FILES=10000] [KILN=path/to/kiln] bash scripts/bench-mirror.sh
# (KILN skips the release build and uses that binary.)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

REPS=${REPS:-5}
FILES=${FILES:-10000}
for tool in openssl busybox python3; do
  command -v "$tool" >/dev/null || { echo "bench-mirror: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "bench-mirror: run as root (kiln run sandboxes its step)" >&2; exit 1; }

if [[ -n "${KILN:-}" ]]; then
  kiln=$KILN
else
  cargo build --release --locked --bin kiln -p kiln-cli
  target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  kiln="$target/release/kiln"
fi
cache="$repo/target/bench-mirror"
big="$cache/big-1GiB.bin"
size=$((1 << 30))

scratch=$(mktemp -d /tmp/kiln-bench-mirror.XXXXXX)
child=""
fg() { "$@" & child=$!; local rc=0; wait "$child" || rc=$?; child=""; return "$rc"; }
cleanup() {
  local rc=$?
  set +e
  [[ -n "$child" ]] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null
  # Mounts a killed step may have left (its /out tmpfs), deepest first.
  awk -v d="$scratch" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
    sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$scratch"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export NO_COLOR=1
unset KILN_DATA_DIR KILN_DATABASE_URL KILN_LOG

# `timed OUT CMD...`: runs CMD (stdout to OUT.out, stderr to OUT.err), writes
# "wall user+sys" (seconds; CPU of CMD and its children) to OUT.time.
timed() {
  local out=$1
  shift
  python3 - "$out" "$@" <<'EOF'
import os, resource, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.monotonic()
with open(out + ".out", "w") as o, open(out + ".err", "w") as e:
    rc = subprocess.call(cmd, stdout=o, stderr=e)
wall = time.monotonic() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(out + ".time", "w") as f:
    f.write(f"{wall:.4f} {ru.ru_utime + ru.ru_stime:.4f}\n")
sys.exit(rc)
EOF
}
median() { python3 -c 'import statistics,sys; print(f"{statistics.median(map(float, sys.argv[1:])):.4f}")' "$@"; }
calc() { python3 -c "print(f'{$1:.${2:-3}f}')"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
fail() { echo "bench-mirror: $1" >&2; [[ -f "${2:-}" ]] && tail -5 "$2" >&2; exit 1; }

echo "bench-mirror: REPS=$REPS FILES=$FILES; $(nproc) cpus; kiln=$kiln"
echo "load average at start: $(load)"

if [[ ! -f "$big" || $(stat -c %s "$big") != "$size" ]]; then
  mkdir -p "$cache"
  echo "making $big (once)"
  head -c "$size" /dev/urandom >"$big.part" && mv "$big.part" "$big"
fi
cat "$big" >/dev/null # warm page cache for both tools

# (1) 1 GiB add against openssl.
echo
echo "== adding a 1 GiB file, $REPS reps interleaved (load $(load))"
openssl_t=() kiln_t=() pair=()
for rep in $(seq "$REPS"); do
  fg timed "$scratch/openssl" openssl dgst -sha256 "$big" || fail "openssl failed" "$scratch/openssl.err"
  read -r o _ <"$scratch/openssl.time"
  fg timed "$scratch/add" "$kiln" --data-dir "$scratch/add-data" mirror add "$big" --name "big@$rep" ||
    fail "kiln mirror add failed" "$scratch/add.err"
  read -r k kcpu <"$scratch/add.time"
  rm -rf "$scratch/add-data"
  openssl_t+=("$o") kiln_t+=("$k") pair+=("$(calc "$o / $k")")
  printf '  rep %d  openssl %.3f s  kiln mirror add %.3f s (cpu %.2f s)\n' "$rep" "$o" "$k" "$kcpu"
done
om=$(median "${openssl_t[@]}") km=$(median "${kiln_t[@]}")
printf 'medians: openssl %.3f s (%.0f MB/s), kiln %.3f s (%.0f MB/s); kiln/openssl throughput %.2f (paired median %.2f; goal >= 0.90)\n' \
  "$om" "$(calc "$size / $om / 1e6")" "$km" "$(calc "$size / $km / 1e6")" "$(calc "$om / $km" 2)" "$(median "${pair[@]}")"

# (2) a tree of FILES small files (100 per directory, 1-8 KiB of random bytes each).
echo
echo "== importing a tree of $FILES small files (load $(load))"
python3 - "$scratch/tree" "$FILES" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(5)
for i in range(n):
    d = os.path.join(root, f"d{i // 100:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.txt"), "wb") as f:
        f.write(rng.randbytes(rng.randint(1024, 8192)))
EOF
du -sh "$scratch/tree" | sed 's/^/  tree size: /'
tree_wall=() tree_cpu=()
for rep in $(seq "$REPS"); do
  sync
  # A fresh data dir per rep, all removed at the end: ext4 slows down allocating inodes right
  # after 10,000 were deleted (it skips inodes freed in the last 30 s), which would tax the
  # next rep for the previous one's cleanup.
  fg timed "$scratch/tree-add" "$kiln" --data-dir "$scratch/tree-data-$rep" mirror add "$scratch/tree" --tree --name "tree@$rep" ||
    fail "kiln mirror add --tree failed" "$scratch/tree-add.err"
  read -r w c <"$scratch/tree-add.time"
  tree_wall+=("$w") tree_cpu+=("$c")
  printf '  rep %d  wall %.3f s  user+sys %.3f s  cpu/wall %.2f\n' "$rep" "$w" "$c" "$(calc "$c / $w" 2)"
done
tw=$(median "${tree_wall[@]}") tc=$(median "${tree_cpu[@]}")
printf 'medians: wall %.3f s, user+sys %.3f s, cpu/wall %.2f (goal: clearly > 1)\n' "$tw" "$tc" "$(calc "$tc / $tw" 2)"

# (3) step start time, 1 MiB against 1 GiB input.
echo
echo "== step start time: one no-op step with a 1 MiB or a 1 GiB file input, $REPS reps interleaved (load $(load))"
rootfs="$scratch/rootfs"
mkdir -p "$rootfs"/{bin,etc,usr/bin}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh true cat test; do ln -s busybox "$rootfs/bin/$applet"; done
printf 'root:x:0:0::/root:/bin/sh\nbuilder:x:1000:1000::/work:/bin/sh\n' >"$rootfs/etc/passwd"
data="$scratch/run-data"
head -c $((1 << 20)) /dev/urandom >"$scratch/small-1MiB.bin"
"$kiln" --data-dir "$data" mirror import-rootfs "$rootfs" --name busybox@1 >/dev/null
"$kiln" --data-dir "$data" mirror add "$scratch/small-1MiB.bin" --name input@small >/dev/null
"$kiln" --data-dir "$data" mirror add "$big" --name input@big >/dev/null
for which in small big; do
  printf 'version: 1\nname: start-%s\nrootfs: busybox@1\ninputs:\n  data: { mirror: input@%s }\nsteps:\n  - name: s\n    inputs: [data]\n    run: "true"\n' \
    "$which" "$which" >"$scratch/start-$which.yaml"
done
run_start() { # WHICH
  KILN_LOG=info fg timed "$scratch/run" "$kiln" --data-dir "$data" run "$scratch/start-$1.yaml" --out "$scratch/run-out" ||
    fail "kiln run failed" "$scratch/run.err"
  read -r w _ <"$scratch/run.time"
  # The worker's staging time, if this kiln reports it.
  s=$(sed -n 's/.*inputs staged.*stage_us=\([0-9]*\).*/\1/p; s/.*stage_us=\([0-9]*\).*inputs staged.*/\1/p' "$scratch/run.err" | tail -1)
  echo "$w ${s:-nan}" >"$scratch/run.result"
  cp "$scratch/run.result" "$scratch/run.result.$1"
}
# Warm-up: the rootfs is extracted and each input's view made, which changes its blob's ctime;
# after 2 s (the store's "racy" window) a second pass hashes each blob whole once and records its
# fingerprint. The reps then measure the steady state: a step using an input already verified.
run_start small
run_start big
sleep 2.1
run_start small
run_start big
echo "  first use of each input, hashed whole (warm-up): 1 MiB staging $(cut -d' ' -f2 "$scratch/run.result.small") us, 1 GiB staging $(cut -d' ' -f2 "$scratch/run.result.big") us"
small_w=() big_w=() small_s=() big_s=()
for rep in $(seq "$REPS"); do
  run_start small
  read -r sw ss <"$scratch/run.result"
  run_start big
  read -r bw bs <"$scratch/run.result"
  small_w+=("$sw") big_w+=("$bw") small_s+=("$ss") big_s+=("$bs")
  printf '  rep %d  1 MiB: kiln run %.3f s, staging %s us   1 GiB: kiln run %.3f s, staging %s us\n' "$rep" "$sw" "$ss" "$bw" "$bs"
done
smw=$(median "${small_w[@]}") bmw=$(median "${big_w[@]}")
printf 'medians: kiln run 1 MiB %.3f s, 1 GiB %.3f s; 1 GiB / 1 MiB %.2f (goal ~ 1.0)\n' "$smw" "$bmw" "$(calc "$bmw / $smw" 2)"
if [[ "${small_s[0]}" != nan ]]; then
  sms=$(median "${small_s[@]}") bms=$(median "${big_s[@]}")
  printf '         staging 1 MiB %.0f us, 1 GiB %.0f us\n' "$sms" "$bms"
fi
echo "load average at end: $(load)"
