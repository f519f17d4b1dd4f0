#!/usr/bin/env bash
# Compares kiln's sandbox with bubblewrap on the same machine, in the same run: builds the
# benchmark in release mode, prepares a busybox rootfs (or uses --rootfs DIR, which must contain
# the empty dirs in/ out/ proc/ dev/ tmp/ work/) and runs `true`, interleaved, through kiln's
# launcher (as a worker runs steps; the headline ratio), kiln's one-shot helper, and bwrap.
# Needs root. Other flags (-n N, --warmup N, --bwrap PATH) are passed to the benchmark.
#
# usage: scripts/bench-sandbox.sh [--rootfs DIR] [-n 200] [--warmup 20]
set -euo pipefail
cd "$(dirname "$0")/.."

rootfs=""
pass=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rootfs) rootfs="$2"; shift 2 ;;
    *) pass+=("$1"); shift ;;
  esac
done

# The helper is the real `kiln` binary (`kiln sandbox-helper`), as every step uses it.
cargo build --release --locked --bin kiln -p kiln-cli
cargo build --release --locked -p kiln-sandbox --example sandbox_bench
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if [[ -z "$rootfs" ]]; then
  rootfs="$scratch/rootfs"
  mkdir -m 0755 "$rootfs" "$rootfs"/{bin,in,out,proc,dev,tmp,work}
  cp /bin/busybox "$rootfs/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [[ "$applet" == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
  done
fi

"$target/release/examples/sandbox_bench" --rootfs "$rootfs" \
  --helper "$target/release/kiln" --helper-arg sandbox-helper ${pass[@]+"${pass[@]}"}
