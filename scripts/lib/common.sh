# shellcheck shell=bash
# Shared helpers for tidemark's dev-service scripts. Sourced, never executed.
#
# Conventions every script follows:
#   - stdout carries only the script's result (a URL, an env file); all
#     progress and errors go to stderr;
#   - state lives under $TIDEMARK_DEV_DIR (default <repo>/.dev), one directory
#     per instance: <state>/<kind>/<name>/, guarded by <state>/<kind>/<name>.lock;
#   - every wait is a bounded poll that ends by printing the server log tail.

set -euo pipefail

TIDEMARK_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TIDEMARK_STATE="${TIDEMARK_DEV_DIR:-$TIDEMARK_REPO/.dev}"
mkdir -p "$TIDEMARK_STATE"
TIDEMARK_STATE="$(cd "$TIDEMARK_STATE" && pwd)"
# Seconds to wait for a server to accept connections before giving up.
TIDEMARK_START_TIMEOUT="${TIDEMARK_START_TIMEOUT:-120}"
# Seconds to wait for another process holding an instance lock.
TIDEMARK_LOCK_TIMEOUT="${TIDEMARK_LOCK_TIMEOUT:-600}"

log() { printf '%s: %s\n' "${TIDEMARK_SCRIPT:-tidemark}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Prints the last lines of a log file to stderr (used on every failure path).
log_tail() {
  local file="$1"
  if [[ -f "$file" ]]; then
    log "last lines of $file:"
    tail -n "${2:-40}" "$file" | sed 's/^/    /' >&2
  else
    log "(no log at $file)"
  fi
}

# Checks that NAME is a safe instance name (it becomes a directory name).
check_instance_name() {
  [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]] \
    || die "invalid instance name '$1' (use letters, digits, '_', '-', '.'; max 64)"
}

# Takes an exclusive flock on FILE using file descriptor 9, waiting at most
# TIDEMARK_LOCK_TIMEOUT seconds. Daemons started afterwards must get `9>&-`
# so they do not inherit (and keep holding) the lock.
take_lock() {
  local file="$1"
  exec 9>"$file"
  flock -w "$TIDEMARK_LOCK_TIMEOUT" 9 \
    || die "timed out after ${TIDEMARK_LOCK_TIMEOUT}s waiting for lock $file (another start still running?)"
}

# Runs apt-get install for PACKAGES (as root, or via sudo), serialised by a
# machine-wide lock so parallel scripts do not fight over dpkg.
apt_install() {
  local -a sudo=()
  if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null \
      || die "need root to run: apt-get install -y $*  (run it yourself, then retry)"
    sudo=(sudo -n)
  fi
  command -v apt-get >/dev/null || die "apt-get not found; install these packages by hand: $*"
  log "installing Debian packages: $* (apt-get install -y, non-interactive)"
  (
    exec 8>/tmp/tidemark-apt.lock
    flock -w 900 8 || die "timed out waiting for /tmp/tidemark-apt.lock"
    export DEBIAN_FRONTEND=noninteractive
    local -a opts=(-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    if ! "${sudo[@]}" apt-get install -y --no-install-recommends "${opts[@]}" "$@" >&2; then
      log "apt-get install failed; refreshing package lists (apt-get update) and retrying"
      "${sudo[@]}" apt-get update -o DPkg::Lock::Timeout=600 >&2
      "${sudo[@]}" apt-get install -y --no-install-recommends "${opts[@]}" "$@" >&2
    fi
  ) 8>&- 9>&- || die "could not install Debian packages: $*"
}

# Prints the path of the first executable among CANDIDATES (absolute paths or
# names looked up in PATH), or returns 1.
find_binary() {
  local c
  for c in "$@"; do
    if [[ "$c" == /* ]]; then
      [[ -x "$c" ]] && { printf '%s\n' "$c"; return 0; }
    elif command -v "$c" >/dev/null 2>&1; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}

# True if something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Ports recorded by any instance under the state dir (running or not), so a
# stopped instance keeps its port and others do not take it.
recorded_ports() {
  cat "$TIDEMARK_STATE"/*/*/port 2>/dev/null || true
}

# Prints a free loopback port, preferring PREFERRED (an instance's previous
# port) so its URL stays stable across restarts. Ports come from 15000-32767,
# below Linux's default ephemeral range, so outgoing connections don't take them.
pick_port() {
  local preferred="${1:-}" p i taken
  if [[ -n "$preferred" ]] && ! port_in_use "$preferred"; then
    printf '%s\n' "$preferred"
    return 0
  fi
  taken=" $(recorded_ports | tr '\n' ' ') "
  for ((i = 0; i < 200; i++)); do
    p=$((15000 + (RANDOM * 32768 + RANDOM) % 17768))
    [[ "$taken" == *" $p "* ]] && continue
    port_in_use "$p" && continue
    printf '%s\n' "$p"
    return 0
  done
  die "no free loopback port found in 15000-32767"
}

# True if PID is alive and its command line mentions MARKER (guards against a
# stale pid file whose number was reused by another process).
pid_alive_with() {
  local pid="$1" marker="$2"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker"
}

# Sends SIGNAL (default TERM) to PID and waits up to TIMEOUT seconds for it to
# exit, then SIGKILLs it. Returns once the process is gone.
stop_pid() {
  local pid="$1" timeout="${2:-60}" what="${3:-process}" signal="${4:-TERM}" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -"$signal" "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "$what (pid $pid) did not stop within ${timeout}s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  die "$what (pid $pid) survived SIGKILL"
}

# Serialises an argument list one per line (shell-quoted) so option changes
# between calls can be detected by a plain string comparison.
quote_args() {
  local a
  for a in "$@"; do printf '%q\n' "$a"; done
}

# Prints a unix socket path for FILE inside DIR, or a short path under /tmp
# when DIR is too deep for the 107-byte sun_path limit.
socket_path() {
  local dir="$1" file="$2" path
  path="$dir/$file"
  if ((${#path} > 100)); then
    path="/tmp/tidemark-$(printf '%s' "$path" | cksum | cut -d' ' -f1)-$file"
  fi
  printf '%s\n' "$path"
}

# Prints the bytes appended to FILE after byte offset OFFSET.
log_since() {
  local file="$1" offset="$2"
  if [[ -f "$file" ]]; then tail -c +"$((offset + 1))" "$file"; fi
}

# Prints the size of FILE in bytes (0 when missing).
file_size() {
  [[ -f "$1" ]] && stat -c %s "$1" || echo 0
}

# Deletes the instance's directory and the out-of-tree files it links to (PostgreSQL's
# /tmp/tidemark-pg-* when the postgres user cannot enter the state dir), then its lock file.
# Only links into /tmp/tidemark-* are followed, so a stray link can never delete anything else.
# The lock file goes last, while still held: a start racing a remove of the same name is a
# caller's mistake either way, and leaving one lock per removed name would pile up.
# shellcheck disable=SC2154  # dir, base, name are the calling script's
remove_instance_files() {
  local link target
  for link in "$dir"/*; do
    [[ -L "$link" ]] || continue
    target="$(readlink -f "$link")"
    [[ "$target" == /tmp/tidemark-* ]] && rm -rf "$target"
  done
  rm -rf "$dir"
  rm -f "$base/$name.lock"
}

# The part every *-instance.sh runs before starting: `status` prints the URL or "stopped";
# otherwise take the instance lock; `stop` stops it and `remove` stops it and deletes its
# files. Needs the caller's $action, $dir, $base, $name and its running_pid, url_for and
# stop_instance functions. Returns only for start.
# shellcheck disable=SC2154  # action, dir, base, name are the calling script's
handle_status_or_stop() {
  if [[ "$action" == status ]]; then
    if running_pid >/dev/null && [[ -f "$dir/port" ]]; then
      echo "running $(url_for "$(cat "$dir/port")")"
    else
      echo stopped
    fi
    exit 0
  fi
  take_lock "$base/$name.lock"
  case "$action" in
    stop)
      stop_instance
      exit 0
      ;;
    remove)
      stop_instance
      remove_instance_files
      exit 0
      ;;
  esac
}


# Makes (once, cached under <state>/tls/) the test CA and a server certificate it signs for
# localhost and 127.0.0.1, and prints the directory holding ca.pem, server.pem and
# server.key. Every MariaDB and PostgreSQL instance serves that certificate, so tests can
# connect with sslmode=verify-full / ssl-mode=VERIFY_IDENTITY and TIDEMARK_TEST_CA_FILE.
# The keys are P-256 (instant to make); the files stay across `dev-services.sh clean`, so a
# CA a test trusted stays valid. Serialised by <state>/tls.lock (fd 8: callers hold fd 9).
ensure_test_ca() {
  local tls="$TIDEMARK_STATE/tls" tmp
  if [[ -s "$tls/ca.pem" && -s "$tls/server.pem" && -s "$tls/server.key" ]]; then
    printf '%s\n' "$tls"
    return 0
  fi
  command -v openssl >/dev/null || apt_install openssl
  (
    exec 8>"$TIDEMARK_STATE/tls.lock"
    flock -w "$TIDEMARK_LOCK_TIMEOUT" 8 || die "timed out waiting for $TIDEMARK_STATE/tls.lock"
    [[ ! -s "$tls/server.key" ]] || exit 0
    log "making the test CA and server certificate in $tls"
    tmp="$(mktemp -d "$TIDEMARK_STATE/tls.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    {
      openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$tmp/ca.key" -out "$tmp/ca.pem" -days 3650 -subj "/CN=tidemark test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$tmp/server.key" -out "$tmp/server.csr" -subj "/CN=localhost"
      printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$tmp/server.ext"
      openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
        -CAcreateserial -days 3650 -extfile "$tmp/server.ext" -out "$tmp/server.pem"
    } >"$tmp/openssl.log" 2>&1 || { log_tail "$tmp/openssl.log"; die "openssl could not make the test CA"; }
    chmod 644 "$tmp/ca.pem" "$tmp/server.pem"
    chmod 600 "$tmp/ca.key" "$tmp/server.key"
    chmod 755 "$tmp"
    rm -rf "$tls"
    mv "$tmp" "$tls"
    trap - EXIT
  ) 9>&- || exit 1
  printf '%s\n' "$tls"
}
