#!/usr/bin/env bash
# kiln's own supply chain, checked offline: RustSec advisories (the snapshot in
# ../shared/advisory-db), banned crates, licenses and sources, by cargo-deny with deny.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

snapshot=${KILN_ADVISORY_DB:-../shared/advisory-db}
[ -d "$snapshot/crates" ] || { echo "no RustSec snapshot at $snapshot (set KILN_ADVISORY_DB)" >&2; exit 1; }
command -v cargo-deny >/dev/null || cargo install --locked cargo-deny@0.20.2

# cargo-deny reads its database as a git checkout named after the database URL's hash, and takes
# the snapshot's date from HEAD: make one from the snapshot (data only) each time.
db=target/advisory-dbs/advisory-db-3157b0e258782691
rm -rf "$db"
mkdir -p "$db"
cp -r "$snapshot"/. "$db"/
date=$(sed -n 's/.*(\([0-9-]*\)).*/\1/p' "$snapshot/SNAPSHOT")
git -C "$db" init -q
git -C "$db" add -A
GIT_AUTHOR_DATE="${date}T00:00:00Z" GIT_COMMITTER_DATE="${date}T00:00:00Z" \
  git -C "$db" -c user.name=kiln -c user.email=kiln@localhost commit -q -m "RustSec snapshot"

cargo deny --offline --locked check
