#!/usr/bin/env bash
# A throwaway PostgreSQL server for kiln's tests: a cluster under target/pg, listening on
# 127.0.0.1 only (port $KILN_PG_PORT, default 54329), with a `kiln` role that may create
# databases (trust authentication, loopback only). Each test makes its own database
# `kiln_t_<uuid>` and drops it.
#
# Prints `export KILN_TEST_DATABASE_URL=…` on stdout (progress goes to stderr), so callers do
#   eval "$(bash scripts/postgres.sh)"
# Idempotent: a second call reuses the running server. A call that started the server also
# prints `export KILN_PG_STARTED=1` (scripts/test.sh then stops it when the tests end).
# Nothing is written outside target/ (unless the postgres user cannot reach it: then a temp
# dir, which the script names).
# `bash scripts/postgres.sh stop` stops the server; `rm -rf target/pg` forgets it.
# Run as root on Debian 12 (installs `postgresql` with apt-get when initdb is absent).
set -euo pipefail
cd "$(dirname "$0")/.."

port=${KILN_PG_PORT:-54329}
root=$PWD/target/pg
data=$root/data
log=$root/server.log
url="postgres://kiln@127.0.0.1:$port/postgres"

say() { echo "postgres.sh: $*" >&2; }

# The server refuses to run as root: run its tools as the `postgres` user (or as ourselves
# when we are not root).
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    command -v initdb >/dev/null && { dirname "$(command -v initdb)"; return 0; }
    return 1
}

if ! bin=$(bindir); then
    say "installing postgresql with apt-get"
    [ "$(id -u)" = 0 ] || { say "initdb is missing; run as root to install postgresql"; exit 1; }
    # Only the binaries: no system cluster on port 5432 (Debian makes one unless told not to).
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
    bin=$(bindir)
fi

mkdir -p "$root"
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$root"
    # The server runs as `postgres`, which must reach target/pg: a checkout under a private
    # home directory is out of its reach, so the cluster goes to a temp dir named after it.
    if ! runuser -u postgres -- test -w "$root"; then
        root=${TMPDIR:-/tmp}/kiln-pg-$(echo "$PWD" | sha256sum | cut -c1-12)
        say "the postgres user cannot reach $PWD/target/pg; using $root"
        mkdir -p "$root"
        chown postgres: "$root"
        data=$root/data
        log=$root/server.log
    fi
fi

if [ "${1:-}" = stop ]; then
    if [ -e "$data/postmaster.pid" ]; then
        as_pg "$bin/pg_ctl" -D "$data" -m fast -w stop >&2
    fi
    exit 0
fi

# A kiln test server of another checkout on this port (CI's clone beside a developer's tree):
# tests only make and drop their own databases, so share it.
if ! as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1 \
    && "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" \
    && "$bin/psql" "$url" -XAtq -c "SELECT 1" >/dev/null 2>&1; then
    say "reusing the kiln test server already on 127.0.0.1:$port"
    echo "export KILN_TEST_DATABASE_URL=$url"
    exit 0
fi

if [ ! -e "$data/PG_VERSION" ]; then
    say "creating a cluster in $data"
    rm -rf "$data"
    # Locale C: text sorts by bytes, as in SQLite.
    as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust --locale=C --encoding=UTF8 \
        --no-sync >/dev/null
    cat >>"$data/postgresql.conf" <<EOF
# kiln test server (scripts/postgres.sh)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$root'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    # Loopback TCP only, trust: a throwaway server for tests on this machine.
    cat >"$data/pg_hba.conf" <<EOF
local all all trust
host all all 127.0.0.1/32 trust
EOF
fi

if as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    say "reusing the server on 127.0.0.1:$port"
else
    say "starting the server on 127.0.0.1:$port (log: $log)"
    if ! as_pg "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null; then
        tail -n 20 "$log" >&2 || true
        say "cannot start PostgreSQL; is port $port taken? (set KILN_PG_PORT)"
        exit 1
    fi
    # Tells the caller this call started it, so that it may stop it when done.
    echo "export KILN_PG_STARTED=1"
fi

# The `kiln` role, made once.
psql() { as_pg "$bin/psql" -h "$root" -p "$port" -U postgres -d postgres -XAtq "$@"; }
if [ "$(psql -c "SELECT 1 FROM pg_roles WHERE rolname = 'kiln'")" != 1 ]; then
    psql -c "CREATE ROLE kiln LOGIN CREATEDB"
fi

echo "export KILN_TEST_DATABASE_URL=$url"
