#!/usr/bin/env bash
# Installs what building and testing kiln needs on Debian 12, as root. Idempotent and quiet
# when everything is already there.
set -euo pipefail

packages=(build-essential pkg-config bubblewrap busybox-static openssl python3-pip nodejs ninja-build)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "kiln needs a Rust toolchain >= 1.94 (cargo) on PATH" >&2
  exit 1
fi
