#!/usr/bin/env bash
# Starts (idempotently) a private MariaDB for tests and prints its URL.
#
#   scripts/mariadb-instance.sh NAME [extra mariadbd options...]
#       start instance NAME if it is not running; print mysql://root@127.0.0.1:PORT
#   scripts/mariadb-instance.sh --stop NAME      stop it (data is kept)
#   scripts/mariadb-instance.sh --remove NAME    stop it and delete its data
#   scripts/mariadb-instance.sh --status NAME    print "running URL" or "stopped"
#
# The instance lives in ${TIDEMARK_DEV_DIR:-<repo>/.dev}/mariadb/NAME/ (data,
# socket, pid, mariadbd.log). Defaults suit a CDC source: binlog in ROW format
# with FULL row image and FULL metadata, CRC32 checksums, GTID domain 0, fast
# (non-durable) flushing, TLS with the test CA's server certificate (plain connections
# still accepted). Extra options come last, so they override defaults,
# e.g. --binlog-format=STATEMENT for a deliberately misconfigured server.
# Calling again with different extra options restarts the instance with them.
# Concurrent callers are serialised by a flock on <state>/mariadb/NAME.lock.
set -euo pipefail
TIDEMARK_SCRIPT=mariadb-instance
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() { die "usage: $0 NAME [mariadbd options...] | --stop NAME | --remove NAME | --status NAME"; }

action=start
case "${1:-}" in
  --stop) action=stop; shift ;;
  --remove) action=remove; shift ;;
  --status) action=status; shift ;;
  -h | --help | "") usage ;;
esac
[[ $# -ge 1 ]] || usage
name="$1"
shift
check_instance_name "$name"
[[ "$action" == start || $# -eq 0 ]] || usage

base="$TIDEMARK_STATE/mariadb"
dir="$base/$name"
mkdir -p "$dir"
datadir="$dir/data"
errlog="$dir/mariadbd.log"
pidfile="$dir/mariadbd.pid"
sock="$(socket_path "$dir" mariadbd.sock)"

url_for() { printf 'mysql://root@127.0.0.1:%s\n' "$1"; }

running_pid() {
  local pid
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  pid_alive_with "$pid" "$datadir" && printf '%s\n' "$pid"
}

stop_instance() {
  local pid
  if pid="$(running_pid)"; then
    log "stopping MariaDB '$name' (pid $pid)"
    stop_pid "$pid" 120 "mariadbd '$name'"
  fi
  rm -f "$pidfile"
}

handle_status_or_stop

# --- binaries (installed from Debian's mariadb-server when missing) ----------
find_all() {
  mariadbd="$(find_binary mariadbd /usr/sbin/mariadbd mysqld /usr/sbin/mysqld)" || return 1
  install_db="$(find_binary mariadb-install-db /usr/bin/mariadb-install-db mysql_install_db)" || return 1
  client="$(find_binary mariadb /usr/bin/mariadb mysql)" || return 1
  admin="$(find_binary mariadb-admin /usr/bin/mariadb-admin mysqladmin)" || return 1
}
if ! find_all; then
  log "MariaDB binaries (mariadbd, mariadb-install-db, mariadb, mariadb-admin) not found; installing package mariadb-server"
  apt_install mariadb-server mariadb-client
  find_all || die "MariaDB binaries still missing after installing mariadb-server"
fi

tls="$(ensure_test_ca)"
# The server's TLS setup is part of what a running instance must match: an instance started
# before TLS was added restarts once with it.
want_args="$(quote_args "$@")"$'\n# tls'

sql_tcp() {
  "$client" --no-defaults --protocol=TCP -h 127.0.0.1 -P "$1" -u root \
    --connect-timeout=2 -N -B -e "$2"
}

# Waits until the server on PORT (pid PID) accepts root logins over TCP.
# Returns 0 when ready, 2 when the server exited because the port was taken,
# and dies (with the log tail) on any other failure or on timeout.
wait_ready() {
  local port="$1" pid="$2" log_offset="$3" deadline users_done=0
  deadline=$((SECONDS + TIDEMARK_START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      if log_since "$errlog" "$log_offset" | grep -qiE 'address already in use|errno: 98|error: 98'; then
        return 2
      fi
      log "mariadbd '$name' exited during startup; its log says:"
      log_since "$errlog" "$log_offset" | tail -n 40 | sed 's/^/    /' >&2
      exit 1
    fi
    if ((users_done == 0)) && "$admin" --no-defaults -S "$sock" -u root --connect-timeout=2 ping >/dev/null 2>&1; then
      # Root over TCP: the tests connect to 127.0.0.1, which never matches
      # root@localhost (socket only, and skip-name-resolve is on).
      "$client" --no-defaults -S "$sock" -u root -e "
        CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
        CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;" \
        || { log_tail "$errlog"; die "could not create root@127.0.0.1 on MariaDB '$name'"; }
      users_done=1
    fi
    if ((users_done == 1)) && sql_tcp "$port" 'SELECT 1' >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  log "MariaDB '$name' did not accept connections on 127.0.0.1:$port within ${TIDEMARK_START_TIMEOUT}s"
  log_tail "$errlog"
  exit 1
}

# --- already running? ---------------------------------------------------------
if pid="$(running_pid)"; then
  if [[ "$(cat "$dir/args" 2>/dev/null || true)" == "$want_args" && -f "$dir/port" ]]; then
    port="$(cat "$dir/port")"
    wait_ready "$port" "$pid" "$(file_size "$errlog")" || die "MariaDB '$name' lost its port $port"
    url_for "$port"
    exit 0
  fi
  log "MariaDB '$name' runs with other options; restarting it with: ${*:-(defaults)}"
  stop_instance
fi

# --- initialise the data directory once --------------------------------------
if [[ ! -f "$dir/initialized" ]]; then
  log "initialising MariaDB data directory $datadir"
  rm -rf "$datadir"
  mkdir -p "$datadir" "$dir/tmp"
  # The bootstrap server's temporary tables go to the instance's own tmpdir:
  # in the shared /tmp, concurrent installs (tests run in parallel, other
  # checkouts on the machine) collided on the same temp-table name.
  if ! TMPDIR="$dir/tmp" "$install_db" --no-defaults --datadir="$datadir" --user=root \
    --tmpdir="$dir/tmp" \
    --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
    >"$dir/install-db.log" 2>&1; then
    log_tail "$dir/install-db.log"
    die "mariadb-install-db failed for '$name' (full log: $dir/install-db.log)"
  fi
  touch "$dir/initialized"
fi

# --- start --------------------------------------------------------------------
defaults=(
  --datadir="$datadir"
  --socket="$sock"
  --pid-file="$pidfile"
  --log-error="$errlog"
  --tmpdir="$dir/tmp"
  --bind-address=127.0.0.1
  --user=root
  --skip-name-resolve
  --log-bin=binlog
  --binlog-format=ROW
  --binlog-row-image=FULL
  --binlog-row-metadata=FULL
  --binlog-checksum=CRC32
  --server-id=1
  --log-slave-updates
  --gtid-domain-id=0
  --max-allowed-packet=1G
  --innodb-flush-log-at-trx-commit=2
  --sync-binlog=0
  --innodb-buffer-pool-size=128M
  --character-set-server=utf8mb4
  --collation-server=utf8mb4_general_ci
  --max-connections=2000
  # TLS with the test CA's certificate (scripts/lib/common.sh ensure_test_ca); plain
  # connections stay allowed (require_secure_transport is off).
  --ssl-ca="$tls/ca.pem"
  --ssl-cert="$tls/server.pem"
  --ssl-key="$tls/server.key"
)
mkdir -p "$dir/tmp"
rm -f "$pidfile"
preferred="$(cat "$dir/port" 2>/dev/null || true)"
for attempt in 1 2 3 4 5; do
  port="$(pick_port "$preferred")"
  echo "$port" >"$dir/port"
  offset="$(file_size "$errlog")"
  log "starting MariaDB '$name' on 127.0.0.1:$port (log: $errlog)"
  (cd "$dir" && exec setsid "$mariadbd" --no-defaults "${defaults[@]}" --port="$port" "$@" \
    </dev/null >>"$dir/mariadbd.out" 2>&1 9>&-) &
  pid=$!
  rc=0
  wait_ready "$port" "$pid" "$offset" || rc=$?
  if ((rc == 0)); then
    printf '%s\n' "$want_args" >"$dir/args"
    url_for "$port"
    exit 0
  fi
  log "port $port was taken (attempt $attempt); picking another"
  preferred=""
done
log_tail "$errlog"
die "could not start MariaDB '$name': no usable port after 5 attempts"
