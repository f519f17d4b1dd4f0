#!/usr/bin/env bash
# make-toolchain-rootfs.sh: build the toolchain root filesystem kiln's demo steps run in.
#
# Usage: make-toolchain-rootfs.sh [--force] [--packages "PKG..."] OUTDIR
#
# --packages replaces the C toolchain (gcc binutils libc6-dev make) with the given Debian
# packages, keeping the base utilities; e.g. --packages "python3 python3-pip" builds the rootfs
# of pipelines/examples/pip-offline.yaml. The C checks below then only run if gcc is among them,
# and python3 is checked if it is. Without --packages the output is the demo's toolchain rootfs.
#
# The rootfs is assembled, without network access, from the files of Debian packages installed
# on this machine: the packages in ROOT_PACKAGES below plus everything they transitively Depend
# or Pre-Depend on. apt-get is only used (and only reaches the network) when one of the root
# packages is not installed yet. The result contains:
#   - each package's files as dpkg lists them, with symlinks, directories and modes kept, but
#     without documentation (except each package's /usr/share/doc/PKG/copyright, where kiln's
#     SBOMs find licenses), man pages, info pages and translations;
#   - the host's /usr-merge symlinks (/bin -> usr/bin, ...), so paths resolve as on the host;
#   - the alternatives whose chosen target was copied (/usr/bin/cc -> gcc, awk -> mawk, ...);
#   - /etc/passwd and /etc/group with root (0), builder (1000, home /work) and nobody (65534);
#   - /etc/kiln-rootfs-packages: the sorted "package version architecture" list, recording what
#     went in. (kiln records the rootfs as a whole by digest when it imports it.)
# It has no /proc, /dev, /work, /in or /out: the kiln sandbox provides those as mounts.
#
# Run as root. Refuses a non-empty OUTDIR unless --force is given, in which case OUTDIR is
# removed and rebuilt.
set -euo pipefail

# The toolchain the demo needs. Depends/Pre-Depends of these are added automatically.
ROOT_PACKAGES=(
    gcc binutils libc6-dev make
    coreutils bash dash grep sed mawk findutils diffutils tar gzip
)
# The first ROOT_TOOLCHAIN entries of ROOT_PACKAGES are what --packages replaces.
ROOT_TOOLCHAIN=4

# Paths left out of the rootfs to keep it small; nothing in a build step reads them (the
# copyright files under /usr/share/doc/ are kept, see below).
EXCLUDED_PREFIXES=(
    /usr/share/doc/ /usr/share/doc-base/ /usr/share/man/ /usr/share/info/
    /usr/share/locale/ /usr/share/lintian/
)

die() {
    echo "make-toolchain-rootfs: $*" >&2
    exit 1
}

log() {
    echo "make-toolchain-rootfs: $*" >&2
}

usage() {
    echo "usage: $0 [--force] [--packages \"PKG...\"] OUTDIR" >&2
    exit 2
}

# --- Arguments --------------------------------------------------------------------------------

force=0
outdir=""
packages_arg=0
for arg in "$@"; do
    if ((packages_arg)); then
        read -ra chosen_toolchain <<<"$arg"
        ((${#chosen_toolchain[@]} > 0)) || die "--packages needs at least one package"
        ROOT_PACKAGES=("${chosen_toolchain[@]}" "${ROOT_PACKAGES[@]:ROOT_TOOLCHAIN}")
        packages_arg=0
        continue
    fi
    case "$arg" in
        --force) force=1 ;;
        --packages) packages_arg=1 ;;
        -h | --help) usage ;;
        -*) die "unknown option $arg" ;;
        *)
            [[ -z "$outdir" ]] || usage
            outdir="$arg"
            ;;
    esac
done
((packages_arg == 0)) || usage
[[ -n "$outdir" ]] || usage
[[ "$(id -u)" -eq 0 ]] || die "must run as root (it installs packages and uses chroot)"

start_seconds=$SECONDS
outdir="$(realpath -m -- "$outdir")"
[[ "$outdir" != "/" ]] || die "refusing to use / as OUTDIR"

# --- 1. A fresh, empty OUTDIR -----------------------------------------------------------------

if [[ -e "$outdir" ]]; then
    [[ -d "$outdir" ]] || die "$outdir exists and is not a directory"
    if [[ -n "$(ls -A -- "$outdir")" ]]; then
        [[ "$force" -eq 1 ]] || die "$outdir is not empty; pass --force to replace it"
        log "removing the existing $outdir (--force)"
        rm -rf --one-file-system -- "$outdir"
    fi
fi
mkdir -p -- "$outdir"

# --- 2. Install the root packages if any is missing -------------------------------------------

is_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" == "ii"* ]]
}

missing=()
for pkg in "${ROOT_PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Try the existing package lists first; refresh them once if that fails.
    if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}"
    fi
fi

# --- 3. Resolve the transitive Depends/Pre-Depends among installed packages -------------------

# One dpkg-query call describes every installed package:
#   name US status US provides US pre-depends US depends
# US (the ASCII unit separator) is not whitespace to `read`, so empty fields are kept.
declare -A installed=()   # package -> 1
declare -A provider=()    # virtual package -> the installed package providing it
declare -A deps_of=()     # package -> "pre-depends, depends"
while IFS=$'\x1f' read -r name status provides predepends depends; do
    [[ "$status" == "ii"* ]] || continue
    installed[$name]=1
    deps_of[$name]="$predepends, $depends"
    IFS=',' read -ra provided <<<"$provides"
    for p in "${provided[@]}"; do
        p="${p#"${p%%[![:space:]]*}"}" # trim leading blanks
        p="${p%% *}"                   # drop "(= version)"
        [[ -n "$p" && -z "${provider[$p]:-}" ]] && provider[$p]=$name
    done
done < <(dpkg-query -W -f=$'${Package}\x1f${db:Status-Abbrev}\x1f${Provides}\x1f${Pre-Depends}\x1f${Depends}\n')

# Maps one dependency alternative ("libc6 (>= 2.34)", "python3:any") to the installed package
# satisfying it, or nothing.
installed_for() {
    local dep="${1#"${1%%[![:space:]]*}"}"
    dep="${dep%% *}"
    dep="${dep%%:*}"
    if [[ -n "${installed[$dep]:-}" ]]; then
        echo "$dep"
    elif [[ -n "${provider[$dep]:-}" ]]; then
        echo "${provider[$dep]}"
    fi
}

declare -A chosen=()
queue=("${ROOT_PACKAGES[@]}")
while ((${#queue[@]} > 0)); do
    pkg="${queue[0]}"
    queue=("${queue[@]:1}")
    [[ -z "${chosen[$pkg]:-}" ]] || continue
    [[ -n "${installed[$pkg]:-}" ]] || die "$pkg is needed but not installed"
    chosen[$pkg]=1
    IFS=',' read -ra groups <<<"${deps_of[$pkg]}"
    for group in "${groups[@]}"; do
        [[ "$group" =~ [^[:space:]] ]] || continue
        # "a | b": take the first alternative that is installed.
        IFS='|' read -ra alternatives <<<"$group"
        found=""
        for alt in "${alternatives[@]}"; do
            found="$(installed_for "$alt")"
            [[ -z "$found" ]] || break
        done
        if [[ -n "$found" ]]; then
            queue+=("$found")
        else
            log "warning: $pkg needs '${group# }', which no installed package satisfies"
        fi
    done
done
mapfile -t packages < <(printf '%s\n' "${!chosen[@]}" | LC_ALL=C sort)
log "${#packages[@]} packages: ${packages[*]}"

# --- 4. Copy the packages' files --------------------------------------------------------------

# Recreate the host's /usr-merge symlinks first, so files dpkg lists under /bin land in usr/bin.
merged_links=()
for top in /bin /sbin /lib /lib32 /lib64 /libx32; do
    if [[ -L "$top" ]]; then
        target="$(readlink -- "$top")"
        mkdir -p -- "$outdir/${target#/}"
        ln -s -- "$target" "$outdir$top"
        merged_links+=("$top")
    fi
done

# dpkg -L prints paths, plus "diverted by ..." notes that do not start with "/". Keep the paths
# that exist (a diverted or path-excluded file may not), minus the exclusions and the
# /usr-merge links made above.
file_list="$(mktemp)"
trap 'rm -f -- "$file_list"' EXIT
dpkg -L "${packages[@]}" | LC_ALL=C sort -u | while IFS= read -r path; do
    [[ "$path" == /* && "$path" != "/." ]] || continue
    # Each package's copyright file stays: kiln's SBOMs take licenses from it.
    if [[ "$path" == /usr/share/doc/*/copyright && ( -f "$path" || -L "$path" ) ]]; then
        printf '%s\n' "${path#/}"
        continue
    fi
    for prefix in "${EXCLUDED_PREFIXES[@]}"; do
        [[ "$path/" != "$prefix"* ]] || continue 2
    done
    for link in "${merged_links[@]}"; do
        [[ "$path" != "$link" ]] || continue 2
    done
    [[ -e "$path" || -L "$path" ]] || continue
    printf '%s\n' "${path#/}"
done >"$file_list"
log "copying $(wc -l <"$file_list") paths"

# tar keeps symlinks, modes and ownership; --no-recursion copies directories as listed, not their
# whole content; --keep-directory-symlink writes bin/... through the bin -> usr/bin link.
tar -C / --no-recursion --verbatim-files-from -T "$file_list" -cf - |
    tar -C "$outdir" --keep-directory-symlink --same-permissions --same-owner -xf -

# --- 5. What alternatives, passwd and the dynamic linker would otherwise provide -------------

# update-alternatives links (/usr/bin/cc -> /etc/alternatives/cc -> /usr/bin/gcc) belong to no
# package. Point each master link whose chosen target was copied straight at that target.
while read -r name _mode _value; do
    link="$(update-alternatives --query "$name" | sed -n 's/^Link: //p')"
    value="$(update-alternatives --query "$name" | sed -n 's/^Value: //p')"
    [[ -n "$link" && -n "$value" ]] || continue
    [[ -e "$outdir$value" || -L "$outdir$value" ]] || continue
    [[ -d "$(dirname -- "$outdir$link")" ]] || continue
    ln -sfn -- "$value" "$outdir$link"
done < <(update-alternatives --get-selections)

# Guarantees the demo relies on, whatever the host's alternatives say.
if [[ -n "${chosen[gcc]:-}" ]]; then
    [[ -L "$outdir/usr/bin/cc" || -e "$outdir/usr/bin/cc" ]] || ln -s gcc "$outdir/usr/bin/cc"
fi
[[ -L "$outdir/usr/bin/awk" || -e "$outdir/usr/bin/awk" ]] || ln -s mawk "$outdir/usr/bin/awk"
ln -sfn dash "$outdir/bin/sh"

mkdir -p -- "$outdir/etc"
cat >"$outdir/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
builder:x:1000:1000:kiln builder:/work:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$outdir/etc/group" <<'EOF'
root:x:0:
builder:x:1000:
nogroup:x:65534:
EOF
chmod 0644 "$outdir/etc/passwd" "$outdir/etc/group"

# Record what went in.
dpkg-query -W -f='${Package} ${Version} ${Architecture}\n' "${packages[@]}" |
    LC_ALL=C sort >"$outdir/etc/kiln-rootfs-packages"

# --- 6. Verify: the dynamic linker, /bin/sh and cc work inside the rootfs ---------------------

chroot_bin="$(command -v chroot)" || die "chroot is not installed"
in_rootfs() {
    env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/ LC_ALL=C "$chroot_bin" "$outdir" /bin/sh -c "$1"
}

in_rootfs 'test -e /lib64/ld-linux-x86-64.so.2' || die "/lib64/ld-linux-x86-64.so.2 is missing"
mkdir -p -- "$outdir/tmp" && chmod 1777 "$outdir/tmp"
if [[ -n "${chosen[gcc]:-}" ]]; then
cat >"$outdir/tmp/h.c" <<'EOF'
#include <stdio.h>
int main(void) { puts("hello from the kiln toolchain rootfs"); return 0; }
EOF
greeting="$(in_rootfs 'cc -O2 -o /tmp/h /tmp/h.c && /tmp/h')" || die "compiling hello world inside the rootfs failed"
[[ "$greeting" == "hello from the kiln toolchain rootfs" ]] || die "hello world printed '$greeting'"
# shellcheck disable=SC2016 # $1 is awk's, expanded inside the rootfs
tools="$(in_rootfs 'echo x | awk "{ print \$1 }" | sed s/x/y/ | grep y && make --version | head -n1')" ||
    die "awk, sed, grep or make do not run inside the rootfs"
log "tools: ${tools//$'\n'/, }"
else
    # Not a C toolchain (--packages): check the base utilities, and python3 and pip if chosen.
    # shellcheck disable=SC2016 # $1 is awk's, expanded inside the rootfs
    greeting="$(in_rootfs 'echo x | awk "{ print \$1 }" | sed s/x/y/ | grep y')" ||
        die "awk, sed or grep do not run inside the rootfs"
    if [[ -n "${chosen[python3]:-}" ]]; then
        greeting="$(in_rootfs 'python3 -B -c "import sys; print(\"python\", sys.version.split()[0])"')" ||
            die "python3 does not run inside the rootfs"
    fi
    if [[ -n "${chosen[python3-pip]:-}" ]]; then
        pip_version="$(in_rootfs 'python3 -B -m pip --version')" || die "pip does not run inside the rootfs"
        greeting="$greeting, ${pip_version%% from *}"
    fi
fi
# The sandbox mounts over these, and kiln's store refuses a rootfs where they are not empty
# directories. The checks above run without /dev, so anything opening /dev/null created a file.
for mount_point in in out proc dev tmp work; do
    if [[ -d "$outdir/$mount_point" ]]; then
        find "$outdir/$mount_point" -mindepth 1 -delete
    fi
done

# --- 7. Report --------------------------------------------------------------------------------

log "verified: $greeting"
log "done in $((SECONDS - start_seconds))s: $outdir holds $(find "$outdir" | wc -l) entries," \
    "$(du -sh --apparent-size -- "$outdir" | cut -f1) ($(du -sh -- "$outdir" | cut -f1) on disk)," \
    "${#packages[@]} packages listed in /etc/kiln-rootfs-packages"
