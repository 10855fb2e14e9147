#!/usr/bin/env bash
# Starts (idempotently) a private PostgreSQL 15 for tests and prints its URL.
#
#   scripts/postgres-instance.sh NAME [-c name=value ...]
#       start instance NAME if it is not running; print
#       postgres://postgres@127.0.0.1:PORT/postgres
#   scripts/postgres-instance.sh --stop NAME      stop it (data is kept)
#   scripts/postgres-instance.sh --remove NAME    stop it and delete its data
#   scripts/postgres-instance.sh --status NAME    print "running URL" or "stopped"
#
# The instance lives in ${TIDEMARK_DEV_DIR:-<repo>/.dev}/postgres/NAME/; the
# server's own files (data/, postgres.log, socket) are in its pg/ subdirectory,
# owned by the `postgres` OS user because PostgreSQL refuses to run as root.
# Defaults suit a logical-replication source and a fast test warehouse:
# wal_level=logical, 64 slots and WAL senders, 300 connections, fsync off,
# trust auth on 127.0.0.1 (replication connections included), TLS with the test CA's server
# certificate (plain connections still accepted). Extra options
# come last and override defaults; a bare name=value is taken as -c name=value.
# Calling again with different extra options restarts the instance with them.
# Concurrent callers are serialised by a flock on <state>/postgres/NAME.lock.
set -euo pipefail
TIDEMARK_SCRIPT=postgres-instance
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() { die "usage: $0 NAME [-c name=value ...] | --stop NAME | --remove NAME | --status NAME"; }

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

extra=()
prev=""
for a in "$@"; do
  if [[ "$prev" != -c && "$a" =~ ^[A-Za-z_][A-Za-z0-9_.]*= ]]; then extra+=(-c "$a"); else extra+=("$a"); fi
  prev="$a"
done

base="$TIDEMARK_STATE/postgres"
dir="$base/$name"
mkdir -p "$dir"
# set_pgdir DIR: where the server's own files live (resolved, because the
# postgres user may be unable to traverse a symlink's parents).
set_pgdir() {
  pgdir="$1"
  datadir="$pgdir/data"
  pglog="$pgdir/postgres.log"
}
set_pgdir "$dir/pg"
[[ ! -L "$dir/pg" ]] || set_pgdir "$(readlink -f "$dir/pg")"

url_for() { printf 'postgres://postgres@127.0.0.1:%s/postgres\n' "$1"; }

running_pid() {
  local pid
  pid="$(head -n 1 "$datadir/postmaster.pid" 2>/dev/null || true)"
  pid_alive_with "$pid" "$datadir" && printf '%s\n' "$pid"
}

stop_instance() {
  local pid
  if pid="$(running_pid)"; then
    log "stopping PostgreSQL '$name' (pid $pid)"
    # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients.
    stop_pid "$pid" 120 "postgres '$name'" INT
  fi
}

handle_status_or_stop

# --- binaries (installed from Debian's postgresql-15 when missing) -----------
find_bindir() {
  local d
  for d in /usr/lib/postgresql/15/bin "$(pg_config --bindir 2>/dev/null || true)"; do
    [[ -n "$d" && -x "$d/postgres" && -x "$d/initdb" && -x "$d/psql" && -x "$d/pg_isready" ]] \
      && { bindir="$d"; return 0; }
  done
  return 1
}
if ! find_bindir; then
  log "PostgreSQL 15 binaries (postgres, initdb, psql, pg_isready in /usr/lib/postgresql/15/bin) not found; installing package postgresql-15"
  if ! (apt_install postgresql-15 postgresql-client-15); then
    log "postgresql-15 could not be installed; trying Debian's default package postgresql"
    apt_install postgresql postgresql-client
  fi
  find_bindir || die "PostgreSQL binaries still missing after installing postgresql-15"
fi

# PostgreSQL refuses to run as root: run it as the postgres OS user.
as_pg=()
if [[ $EUID -eq 0 ]]; then
  id -u postgres >/dev/null 2>&1 \
    || die "OS user 'postgres' does not exist (the postgresql package creates it); reinstall postgresql-15"
  as_pg=(runuser -u postgres --)
  # The postgres user must reach its files; when the state dir is not
  # traversable by it (e.g. under /root), keep them under /tmp instead.
  if ! runuser -u postgres -- test -x "$dir"; then
    alt="/tmp/tidemark-pg-$(printf '%s' "$dir" | cksum | cut -d' ' -f1)"
    mkdir -p "$alt"
    chown postgres: "$alt"
    chmod 700 "$alt"
    if [[ ! -L "$dir/pg" ]]; then
      log "user postgres cannot enter $dir; keeping the server files in $alt"
      rm -rf "$dir/pg"
      ln -s "$alt" "$dir/pg"
    fi
    set_pgdir "$alt"
  fi
fi
run_pg() { (cd "$pgdir" && "${as_pg[@]}" "$@"); }
mkdir -p "$pgdir"
if [[ $EUID -eq 0 ]]; then
  chown postgres: "$pgdir" && chmod 700 "$pgdir"
fi

tls="$(ensure_test_ca)"
# The server's TLS setup is part of what a running instance must match: an instance started
# before TLS was added restarts once with it.
want_args="$(quote_args "${extra[@]}")"$'\n# tls'

# Waits until the server on PORT (started as PID) accepts a query over TCP.
# Returns 0 when ready, 2 when the server exited because the port was taken,
# and dies (with the log tail) on any other failure or on timeout.
wait_ready() {
  local port="$1" pid="$2" log_offset="$3" deadline
  deadline=$((SECONDS + TIDEMARK_START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      if log_since "$pglog" "$log_offset" | grep -qi 'address already in use'; then
        return 2
      fi
      log "postgres '$name' exited during startup; its log says:"
      log_since "$pglog" "$log_offset" | tail -n 40 | sed 's/^/    /' >&2
      exit 1
    fi
    if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 2 \
      && "$bindir/psql" -X -w -q -At -h 127.0.0.1 -p "$port" -U postgres -d postgres \
        -c 'SELECT 1' >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  log "PostgreSQL '$name' did not accept connections on 127.0.0.1:$port within ${TIDEMARK_START_TIMEOUT}s"
  log_tail "$pglog"
  exit 1
}

# --- already running? ---------------------------------------------------------
if pid="$(running_pid)"; then
  if [[ "$(cat "$dir/args" 2>/dev/null || true)" == "$want_args" && -f "$dir/port" ]]; then
    port="$(cat "$dir/port")"
    wait_ready "$port" "$pid" "$(file_size "$pglog")" || die "PostgreSQL '$name' lost its port $port"
    url_for "$port"
    exit 0
  fi
  log "PostgreSQL '$name' runs with other options; restarting it with: ${extra[*]:-(defaults)}"
  stop_instance
fi

# --- initialise the data directory once --------------------------------------
if [[ ! -f "$dir/initialized" ]]; then
  log "initialising PostgreSQL data directory $datadir"
  rm -rf "$datadir"
  if ! run_pg "$bindir/initdb" -D "$datadir" -U postgres --auth=trust -E UTF8 --locale=C \
    --no-sync --no-instructions >"$dir/initdb.log" 2>&1; then
    log_tail "$dir/initdb.log"
    die "initdb failed for '$name' (full log: $dir/initdb.log)"
  fi
  cat >"$datadir/pg_hba.conf" <<'HBA'
# tidemark test instance: trust everything on loopback, replication included.
local   all          all                trust
host    all          all  127.0.0.1/32  trust
host    all          all  ::1/128       trust
local   replication  all                trust
host    replication  all  127.0.0.1/32  trust
host    replication  all  ::1/128       trust
HBA
  [[ $EUID -ne 0 ]] || chown postgres: "$datadir/pg_hba.conf"
  touch "$dir/initialized"
fi

# --- start --------------------------------------------------------------------
# PostgreSQL reads its key only if the server's user owns it and nobody else may read it, and
# that user may be unable to enter the state dir: it gets its own copies beside its data.
install -m 644 "$tls/server.pem" "$pgdir/tls-server.pem"
install -m 600 "$tls/server.key" "$pgdir/tls-server.key"
[[ $EUID -ne 0 ]] || chown postgres: "$pgdir/tls-server.pem" "$pgdir/tls-server.key"
sockdir="$pgdir"
# Unix socket paths are limited to 107 bytes; tests use TCP anyway.
((${#sockdir} < 85)) || sockdir=""
defaults=(
  -c listen_addresses=127.0.0.1
  -c "unix_socket_directories=$sockdir"
  -c wal_level=logical
  -c max_replication_slots=64
  -c max_wal_senders=64
  -c max_connections=300
  -c fsync=off
  -c synchronous_commit=off
  -c full_page_writes=off
  -c timezone=UTC
  # TLS with the test CA's certificate (scripts/lib/common.sh ensure_test_ca); the host lines
  # of pg_hba.conf match plain and TLS connections alike.
  -c ssl=on
  -c "ssl_cert_file=$pgdir/tls-server.pem"
  -c "ssl_key_file=$pgdir/tls-server.key"
)
preferred="$(cat "$dir/port" 2>/dev/null || true)"
touch "$pglog"
[[ $EUID -ne 0 ]] || chown postgres: "$pglog"
for attempt in 1 2 3 4 5; do
  port="$(pick_port "$preferred")"
  echo "$port" >"$dir/port"
  offset="$(file_size "$pglog")"
  log "starting PostgreSQL '$name' on 127.0.0.1:$port (log: $pglog)"
  (cd "$pgdir" && exec setsid "${as_pg[@]}" "$bindir/postgres" -D "$datadir" -p "$port" \
    "${defaults[@]}" "${extra[@]}" </dev/null >>"$pglog" 2>&1 9>&-) &
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
log_tail "$pglog"
die "could not start PostgreSQL '$name': no usable port after 5 attempts"
