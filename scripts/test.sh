#!/usr/bin/env bash
# Runs every check kiln has: formatting, lints, its own supply chain against the RustSec
# snapshot, and the whole test suite (unit, integration, sandbox, end-to-end, interop).
# Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
# The independent DSSE verifier the interop tests call.
python3 -m pip install --quiet --disable-pip-version-check -r attest/tests/interop/requirements.txt
# The independent Sigstore bundle verifier (sigstore-js), pinned by its lock file.
npm ci --silent --prefix attest/tests/interop
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

echo "== supply chain"
bash scripts/audit.sh

echo "== the toolchain rootfs the end-to-end tests build C programs in"
export KILN_TEST_ROOTFS=$PWD/target/test-rootfs
[ -e "$KILN_TEST_ROOTFS/etc/kiln-rootfs-packages" ] || bash scripts/make-toolchain-rootfs.sh --force "$KILN_TEST_ROOTFS"
# ... and the python3 + pip one the package-index tests install wheels in.
export KILN_TEST_PYTHON_ROOTFS=$PWD/target/test-rootfs-python
[ -e "$KILN_TEST_PYTHON_ROOTFS/etc/kiln-rootfs-packages" ] ||
  bash scripts/make-toolchain-rootfs.sh --force --packages "python3 python3-pip" "$KILN_TEST_PYTHON_ROOTFS"

echo "== the PostgreSQL server the state tests run on too (under target/pg)"
eval "$(bash scripts/postgres.sh)"
# Leave the machine as found: stop the server if this run started it.
if [ "${KILN_PG_STARTED:-}" = 1 ]; then
  trap 'bash scripts/postgres.sh stop' EXIT
fi

echo "== tests"
cargo test --locked --workspace --doc
cargo nextest run --locked --workspace --no-fail-fast
