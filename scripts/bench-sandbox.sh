#!/usr/bin/env bash
# Compares kiln's sandbox with bubblewrap on the same machine, in the same run: builds the
# benchmark in release mode, prepares a busybox rootfs (or uses --rootfs DIR, which must contain
# the empty dirs in/ out/ proc/ dev/ tmp/ work/) and runs `true`, interleaved, through kiln's
# launcher (as a worker runs steps; the headline ratio), kiln's one-shot helper, and bwrap.
# Needs root. Other flags (-n N, --warmup N, --bwrap PATH) are passed to the benchmark.
#
# usage: [HELPER=kiln] scripts/bench-sandbox.sh [--rootfs DIR] [-n 200] [--warmup 20]
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

# The helper is `kiln-sandbox-helper`, the binary `kiln` embeds and every worker step runs
# (cli/build.rs); HELPER=kiln measures `kiln sandbox-helper` instead, the fallback.
cargo build --release --locked -p kiln-sandbox --bin kiln-sandbox-helper --example sandbox_bench
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

helper=(--helper "$target/release/kiln-sandbox-helper")
if [[ "${HELPER:-}" == kiln ]]; then
  cargo build --release --locked --bin kiln -p kiln-cli
  helper=(--helper "$target/release/kiln" --helper-arg sandbox-helper)
fi
"$target/release/examples/sandbox_bench" --rootfs "$rootfs" "${helper[@]}" ${pass[@]+"${pass[@]}"}
