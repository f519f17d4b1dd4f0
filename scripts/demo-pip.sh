#!/usr/bin/env bash
# The package-manager view, end to end with pip (docs/package-index.md): build a python3 + pip
# rootfs from Debian packages, build the example wheel offline, add both to the mirror, build a
# PEP 503 index entry from the wheel, and run pipelines/examples/pip-offline.yaml, whose
# network-denied step pip-installs the wheel from that index and imports it. Run as root on
# Debian 12, from any directory. Uses a throwaway data dir under target/demo-pip (or
# $KILN_DEMO_DIR) and never touches the network.
set -euo pipefail
cd "$(dirname "$0")/.."

kiln=${KILN_BIN:-}
if [ -z "$kiln" ]; then
  cargo build --locked --bin kiln
  kiln=$PWD/target/debug/kiln
fi

demo=${KILN_DEMO_DIR:-$PWD/target/demo-pip}
rootfs=$PWD/target/test-rootfs-python
# A fresh mirror each time; only what this script made is removed.
rm -rf -- "$demo/data" "$demo/wheels" "$demo/out"
mkdir -p "$demo"
export KILN_DATA_DIR=$demo/data

if [ ! -e "$rootfs/etc/kiln-rootfs-packages" ]; then
  bash scripts/make-toolchain-rootfs.sh --force --packages "python3 python3-pip" "$rootfs"
fi

echo "== the python3 + pip rootfs and the example wheel, into the mirror"
"$kiln" mirror import-rootfs "$rootfs" --name python3-pip@1
wheel=$(python3 pipelines/examples/pip-offline/build_wheel.py "$demo/wheels")
"$kiln" mirror add "$wheel" --name kiln-hello@1.0.0

echo "== the index: a tree entry built from the wheel entry"
"$kiln" mirror index pypi --name pypi-index@1 kiln-hello@1.0.0
"$kiln" mirror why pypi-index@1

echo "== running pipelines/examples/pip-offline.yaml"
"$kiln" run pipelines/examples/pip-offline.yaml --out "$demo/out"
echo "== what the step's python printed after installing the package"
cat "$demo/out/greeting.txt"
