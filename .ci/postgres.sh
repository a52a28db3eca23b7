#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests of the shared tier.
#
#   .ci/postgres.sh start [--no-install]   start one; print `export NAME=value` lines on stdout:
#                                          ZEXUS_BCACHE_TEST_PG_URL (postgresql+psycopg://...),
#                                          ZEXUS_BCACHE_TEST_PG_DIR (what `stop` needs)
#   .ci/postgres.sh stop DIR [fast|immediate]   stop it and delete DIR
#
# The cluster lives in a new temporary directory: TCP on 127.0.0.1 only (port
# $ZEXUS_BCACHE_PG_PORT, default 54329, or a free one if that is taken), its unix socket in the
# same directory, password authentication over TCP, a role with CREATEDB (the tests create and
# drop their own databases) owning one database. When `initdb` is missing and we are root, the
# distribution's `postgresql` package is installed first (Debian/Ubuntu apt-get; not with
# --no-install). The server runs as the `postgres` user when we are root (PostgreSQL refuses to
# run as root), else as ourselves. When no server can be had, `start` says why on stderr and
# exits 1; everything else it says goes to stderr too.
set -euo pipefail

say() { echo "postgres.sh: $*" >&2; }

find_bin() {
    local found
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$found" ] && [ -x "$found/initdb" ]; then
        echo "$found"
        return 0
    fi
    return 1
}

install_server() {
    if [ "$(id -u)" != 0 ]; then
        say "initdb not found and not root: cannot install the postgresql package"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        say "initdb not found and no apt-get to install PostgreSQL with"
        return 1
    fi
    say "installing the distribution's postgresql package (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! { timeout 300 apt-get update -qq && timeout 600 apt-get install -y -qq --no-install-recommends postgresql; } >&2; then
        say "apt-get could not install postgresql (no network?)"
        return 1
    fi
}

free_port() {
    python3 - "$1" <<'EOF'
import socket, sys
wanted = int(sys.argv[1])
for port in (wanted, 0):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        chosen = s.getsockname()[1]
        s.close()
    print(chosen)
    break
EOF
}

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    local install=1 bin dir port password user=zexus db=zexus_test
    [ "${1:-}" = "--no-install" ] && install=0
    if ! bin=$(find_bin); then
        if [ "$install" = 1 ] && install_server && bin=$(find_bin); then
            :
        else
            say "no PostgreSQL server binaries (initdb, pg_ctl)"
            return 1
        fi
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        say "running as root but there is no postgres user to run the server as"
        return 1
    fi
    dir=$(mktemp -d "${TMPDIR:-/tmp}/zexus-pg.XXXXXX")
    chmod 0700 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    port=$(free_port "${ZEXUS_BCACHE_PG_PORT:-54329}")
    password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    if ! as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 &&
        ! as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C >"$dir/initdb.log" 2>&1; then
        say "initdb failed: $(tail -n 3 "$dir/initdb.log" | tr '\n' ' ')"
        rm -rf "$dir"
        return 1
    fi
    # A throwaway cluster for tests: no durability needed across an OS crash.
    if ! as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null 2>&1; then
        say "the server did not start: $(tail -n 3 "$dir/server.log" 2>/dev/null | tr '\n' ' ')"
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$dir"
        return 1
    fi
    local tries=0
    until "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2; do
        tries=$((tries + 1))
        if [ "$tries" -ge 30 ]; then
            say "the server is not ready after 30 tries"
            stop "$dir" immediate
            return 1
        fi
        sleep 0.5
    done
    if ! as_owner "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres >/dev/null 2>&1 <<EOF
CREATE ROLE $user LOGIN CREATEDB PASSWORD '$password';
GRANT pg_signal_backend TO $user;
CREATE DATABASE $db OWNER $user;
EOF
    then
        say "could not create the role and database"
        stop "$dir" immediate
        return 1
    fi
    echo "$bin" >"$dir/bin"
    say "PostgreSQL ($("$bin/postgres" --version)) on 127.0.0.1:$port, data in $dir"
    echo "export ZEXUS_BCACHE_TEST_PG_URL='postgresql+psycopg://$user:$password@127.0.0.1:$port/$db'"
    echo "export ZEXUS_BCACHE_TEST_PG_DIR='$dir'"
}

stop() {
    local dir="${1:?usage: postgres.sh stop DIR [fast|immediate]}" mode="${2:-fast}" bin
    [ -d "$dir" ] || return 0
    [ -f "$dir/data/postmaster.pid" ] || [ -d "$dir/data" ] || { rm -rf "$dir"; return 0; }
    bin=$(cat "$dir/bin" 2>/dev/null || find_bin || true)
    if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m "$mode" -w -t 30 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) say "usage: $0 start [--no-install] | stop DIR [fast|immediate]"; exit 2 ;;
esac
