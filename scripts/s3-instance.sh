#!/usr/bin/env bash
# Starts (idempotently) a private S3-compatible server (moto) and prints its URL.
#
#   scripts/s3-instance.sh NAME         start instance NAME; print http://127.0.0.1:PORT
#   scripts/s3-instance.sh --stop NAME  stop it (moto keeps everything in memory)
#   scripts/s3-instance.sh --remove NAME  stop it and delete its directory (port, log)
#   scripts/s3-instance.sh --status NAME
#
# moto[server] (PyPI) is installed into a virtualenv at <state>/venv the first
# time; $TIDEMARK_MOTO_VERSION picks the version. Use path-style addressing
# (http://127.0.0.1:PORT/bucket/key) and any credentials, e.g. testing/testing.
set -euo pipefail
TIDEMARK_SCRIPT=s3-instance
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

MOTO_VERSION="${TIDEMARK_MOTO_VERSION:-5.2.5}"

usage() { die "usage: $0 NAME | --stop NAME | --remove NAME | --status NAME"; }

action=start
case "${1:-}" in
  --stop) action=stop; shift ;;
  --remove) action=remove; shift ;;
  --status) action=status; shift ;;
  -h | --help | "") usage ;;
esac
[[ $# -eq 1 ]] || usage
name="$1"
check_instance_name "$name"

base="$TIDEMARK_STATE/s3"
dir="$base/$name"
mkdir -p "$dir"
venv="$TIDEMARK_STATE/venv"
motolog="$dir/moto.log"

url_for() { printf 'http://127.0.0.1:%s\n' "$1"; }

running_pid() {
  local pid
  pid="$(cat "$dir/pid" 2>/dev/null || true)"
  pid_alive_with "$pid" "$venv/bin/moto_server" && printf '%s\n' "$pid"
}

stop_instance() {
  local pid
  if pid="$(running_pid)"; then
    log "stopping S3 server '$name' (pid $pid)"
    stop_pid "$pid" 30 "moto_server '$name'"
  fi
  rm -f "$dir/pid"
}

handle_status_or_stop

# --- moto in a virtualenv under the state dir ---------------------------------
install_moto() {
  local marker="$venv/.tidemark-moto-$MOTO_VERSION" python
  [[ -f "$marker" && -x "$venv/bin/moto_server" ]] && return 0
  (
    exec 9>"$TIDEMARK_STATE/venv.lock"
    flock -w "$TIDEMARK_LOCK_TIMEOUT" 9 || die "timed out waiting for $TIDEMARK_STATE/venv.lock"
    [[ -f "$marker" && -x "$venv/bin/moto_server" ]] && exit 0
    if ! python="$(find_binary /usr/bin/python3 python3)"; then
      log "python3 not found; installing Debian packages python3 and python3-venv"
      apt_install python3 python3-venv
      python="$(find_binary /usr/bin/python3 python3)" || die "python3 still missing after apt-get install"
    fi
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" >&2; then
      log "'$python -m venv' failed (Debian ships venv separately); installing python3-venv"
      apt_install python3-venv
      rm -rf "$venv"
      "$python" -m venv "$venv" >&2 || die "cannot create a virtualenv with $python"
    fi
    log "installing moto[server]==$MOTO_VERSION from PyPI into $venv (first run only)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2 \
      || die "pip install 'moto[server]==$MOTO_VERSION' failed (see above)"
    touch "$marker"
  ) 9>&-
}
install_moto

# Waits until moto on PORT (pid PID) answers HTTP. Returns 2 when the server
# exited because the port was taken; dies on other failures or on timeout.
wait_ready() {
  local port="$1" pid="$2" log_offset="$3" deadline
  deadline=$((SECONDS + TIDEMARK_START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      if log_since "$motolog" "$log_offset" | grep -qi 'address already in use'; then
        return 2
      fi
      log "moto_server '$name' exited during startup; its log says:"
      log_since "$motolog" "$log_offset" | tail -n 40 | sed 's/^/    /' >&2
      exit 1
    fi
    if "$venv/bin/python" -c 'import sys, urllib.request
urllib.request.urlopen("http://127.0.0.1:%s/moto-api/" % sys.argv[1], timeout=2).read()' "$port" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  log "S3 server '$name' did not answer on 127.0.0.1:$port within ${TIDEMARK_START_TIMEOUT}s"
  log_tail "$motolog"
  exit 1
}

if pid="$(running_pid)" && [[ -f "$dir/port" ]]; then
  port="$(cat "$dir/port")"
  wait_ready "$port" "$pid" "$(file_size "$motolog")" || die "S3 server '$name' lost its port $port"
  url_for "$port"
  exit 0
fi

preferred="$(cat "$dir/port" 2>/dev/null || true)"
for attempt in 1 2 3 4 5; do
  port="$(pick_port "$preferred")"
  echo "$port" >"$dir/port"
  offset="$(file_size "$motolog")"
  log "starting S3 server (moto) '$name' on 127.0.0.1:$port (log: $motolog)"
  (cd "$dir" && exec setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" \
    </dev/null >>"$motolog" 2>&1 9>&-) &
  pid=$!
  echo "$pid" >"$dir/pid"
  rc=0
  wait_ready "$port" "$pid" "$offset" || rc=$?
  if ((rc == 0)); then
    url_for "$port"
    exit 0
  fi
  log "port $port was taken (attempt $attempt); picking another"
  preferred=""
done
log_tail "$motolog"
die "could not start S3 server '$name': no usable port after 5 attempts"
