#!/usr/bin/env bash
# The demo: build kiln, make a gcc toolchain rootfs from Debian packages, add a C program's
# source to the mirror, run the example pipeline in the sandbox, verify the artifact's signed
# provenance, show the run's step-separation report, and run the binary it produced. Run as
# root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --release --locked --bin kiln
kiln=$PWD/target/release/kiln

demo=${KILN_DEMO_DIR:-$PWD/target/demo}
export KILN_DATA_DIR=$demo/data
rootfs=$demo/gcc-toolchain-rootfs
mkdir -p "$demo"

if [ ! -e "$rootfs/etc/kiln-rootfs-packages" ]; then
  bash scripts/make-toolchain-rootfs.sh --force "$rootfs"
fi

echo "== importing the toolchain rootfs and the program's source into the mirror"
"$kiln" mirror import-rootfs "$rootfs" --name gcc-toolchain@12
"$kiln" mirror add pipelines/examples/hello-src/hello.c --name hello-src@1.0
"$kiln" mirror list

echo "== running pipelines/examples/hello.yaml"
status=0
"$kiln" run pipelines/examples/hello.yaml --out "$demo/out" 2>"$demo/run.log" || status=$?
cat "$demo/run.log" >&2
[ "$status" = 0 ] || exit "$status"
run=$(sed -n 's/^run \([0-9a-f-]*\) of hello .*/\1/p' "$demo/run.log" | head -1)

echo "== the step-separation report (docs/examples/step-separation-hello.txt is one)"
"$kiln" audit steps "$run"

echo "== verifying the artifact's provenance"
"$kiln" keys public > "$demo/kiln.pub"
"$kiln" verify "$demo/out/hello" --provenance "$demo/out/hello.intoto.jsonl" --key "$demo/kiln.pub"

echo "== running the artifact"
"$demo/out/hello"

echo "== the package-manager view: pip installs a wheel from the mirror in a network-denied step"
KILN_BIN=$kiln KILN_DEMO_DIR=$demo/pip bash scripts/demo-pip.sh
