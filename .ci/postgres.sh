# shellcheck shell=bash
# A throwaway PostgreSQL server for the tests that run against both stores (tests/conftest.py,
# the `history_url` fixture). Sourced by .ci/run; locally: `. .ci/postgres.sh` in a shell that
# then runs pytest (`pg_stop` or exiting that shell's trap stops it).
#
# Debian's `postgresql` package (.ci/run installs it with `need`; sourced on its own, this
# installs it when missing); `initdb` in a temporary directory
# as an unprivileged user (the server refuses to run as root, and CI runs as root); no TCP
# listener: a Unix socket in that directory and a free port number (it names the socket file,
# so parallel servers on one machine do not collide). Exports FPMON_TEST_POSTGRES, the URL of a
# database the tests create their own databases from, and FPMON_REQUIRE_POSTGRES=1 so that those
# tests fail rather than skip.

pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    pg_sudo=""
    if [ "$(id -u)" -ne 0 ]; then pg_sudo="sudo"; fi
    $pg_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $pg_sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi

pg_stop() {
    if [ -n "${pg_dir:-}" ] && [ -d "$pg_dir/data" ]; then
        pg_as "$pg_bin/pg_ctl" --pgdata="$pg_dir/data" --mode=immediate stop >/dev/null 2>&1 || true
    fi
    if [ -n "${pg_dir:-}" ]; then rm -rf "$pg_dir"; fi
}

pg_dir="$(mktemp -d)"
chmod 755 "$pg_dir"
pg_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

# As root: the server runs as `nobody`, which owns the data directory; otherwise as ourselves.
pg_as() { "$@"; }
if [ "$(id -u)" -eq 0 ]; then
    chown nobody "$pg_dir"
    pg_as() { runuser -u nobody -- "$@"; }
fi

pg_as "$pg_bin/initdb" --pgdata="$pg_dir/data" --username=fpmon --auth=trust \
    --encoding=UTF8 --locale=C.UTF-8 >"$pg_dir/initdb.log"
pg_as "$pg_bin/pg_ctl" --pgdata="$pg_dir/data" --log="$pg_dir/server.log" --wait \
    --options="-c listen_addresses='' -k $pg_dir -p $pg_port -c fsync=off" start >/dev/null
pg_as "$pg_bin/createdb" --host="$pg_dir" --port="$pg_port" --username=fpmon fpmon

export FPMON_TEST_POSTGRES="postgresql://fpmon@/fpmon?host=$pg_dir&port=$pg_port"
export FPMON_REQUIRE_POSTGRES=1
echo "postgresql $("$pg_bin/postgres" --version | awk '{print $3}') at $FPMON_TEST_POSTGRES"
