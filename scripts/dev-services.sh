#!/usr/bin/env bash
# The services integration tests need, on loopback, under the state dir
# ${TIDEMARK_DEV_DIR:-<repo>/.dev}:
#
#   scripts/dev-services.sh start   start MariaDB "main", PostgreSQL "main" and the
#                                   S3 server "main" (idempotent), write <state>/env
#                                   and print it on stdout
#   scripts/dev-services.sh stop    stop every instance under the state dir (all names);
#                                   fails naming any server process still alive after
#   scripts/dev-services.sh status  show each instance and whether it runs
#   scripts/dev-services.sh env     print <state>/env (export lines to source)
#   scripts/dev-services.sh clean   stop every instance and delete its data (as
#                                   <kind>-instance.sh --remove); the moto virtualenv and
#                                   test-output/ stay. Fails like stop on a survivor.
set -euo pipefail
TIDEMARK_SCRIPT=dev-services
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

scripts="$TIDEMARK_REPO/scripts"
envfile="$TIDEMARK_STATE/env"
kinds=(mariadb postgres s3)

# Lists the instance names of KIND that exist under the state dir.
instances() {
  local d
  for d in "$TIDEMARK_STATE/$1"/*/; do
    [[ -d "$d" ]] && basename "$d"
  done
  return 0
}

start() {
  local tmp kind rc=0 failed=() newenv
  local -A pids=()
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  # The three start in parallel; each script serialises itself with its own lock.
  for kind in "${kinds[@]}"; do
    "$scripts/$kind-instance.sh" main >"$tmp/$kind.url" &
    pids[$kind]=$!
  done
  for kind in "${kinds[@]}"; do
    wait "${pids[$kind]}" || { rc=$?; failed+=("$kind"); }
  done
  ((rc == 0)) || die "could not start: ${failed[*]} (see messages above)"
  newenv="$(mktemp "$envfile.XXXXXX")"
  {
    echo "# Written by scripts/dev-services.sh start; source it to run tests by hand."
    echo "export TIDEMARK_DEV_DIR=$(printf '%q' "$TIDEMARK_STATE")"
    echo "export TIDEMARK_TEST_MYSQL_URL=$(cat "$tmp/mariadb.url")"
    echo "export TIDEMARK_TEST_PG_URL=$(cat "$tmp/postgres.url")"
    echo "export TIDEMARK_TEST_S3_URL=$(cat "$tmp/s3.url")"
    echo "export TIDEMARK_TEST_CA_FILE=$(printf '%q' "$(ensure_test_ca)/ca.pem")"
    echo "export TIDEMARK_TEST_S3_REGION=us-east-1"
    echo "export TIDEMARK_TEST_S3_ACCESS_KEY_ID=testing"
    echo "export TIDEMARK_TEST_S3_SECRET_ACCESS_KEY=testing"
  } >"$newenv"
  mv -f "$newenv" "$envfile"
  cat "$envfile"
}

# Runs `<kind>-instance.sh ACTION NAME` (--stop or --remove) for every instance under the
# state dir, all in parallel (a MariaDB shutdown takes a few seconds), then fails naming any
# server process that is still alive.
for_every_instance() {
  local action="$1" kind name pid rc=0 workers=() roots=()
  # Read before --remove deletes the links to them.
  mapfile -t roots < <(instance_roots)
  rm -f "$envfile"
  for kind in "${kinds[@]}"; do
    while read -r name; do
      [[ -n "$name" ]] || continue
      "$scripts/$kind-instance.sh" "$action" "$name" &
      workers+=($!)
    done < <(instances "$kind")
  done
  for pid in "${workers[@]}"; do
    wait "$pid" || rc=1
  done
  ((rc == 0)) || die "some instances did not stop (see messages above)"
  check_none_running "${roots[@]}"
}

# The directories an instance's server names on its command line: the state dir, and the
# /tmp/tidemark-pg-* directories PostgreSQL instances keep their files in when the postgres
# user cannot enter the state dir.
instance_roots() {
  local link
  printf '%s\n' "$TIDEMARK_STATE"
  for link in "$TIDEMARK_STATE"/postgres/*/pg; do
    [[ -L "$link" ]] && readlink -f "$link"
  done
  return 0
}

# Dies naming every live process whose command line mentions one of ROOTS: a server that
# outlived its stop (or was started by hand) would keep its port and its files' space.
check_none_running() {
  local proc cmd root survivors=()
  for proc in /proc/[0-9]*; do
    [[ "${proc#/proc/}" != "$$" ]] || continue
    cmd="$(tr '\0' ' ' 2>/dev/null <"$proc/cmdline")" || continue
    for root in "$@"; do
      if [[ "$cmd" == *"$root/"* ]]; then
        survivors+=("pid ${proc#/proc/}: ${cmd:0:300}")
        break
      fi
    done
  done
  ((${#survivors[@]} == 0)) && return 0
  log "error: these processes of instances under $TIDEMARK_STATE are still running:"
  printf '    %s\n' "${survivors[@]}" >&2
  die "stop them (kill PID) and run: scripts/dev-services.sh clean"
}

status() {
  local kind name any=0
  for kind in "${kinds[@]}"; do
    while read -r name; do
      [[ -n "$name" ]] || continue
      any=1
      printf '%-9s %-20s %s\n' "$kind" "$name" "$("$scripts/$kind-instance.sh" --status "$name")"
    done < <(instances "$kind")
  done
  ((any)) || echo "no instances under $TIDEMARK_STATE"
  if [[ -f "$envfile" ]]; then echo "env file: $envfile"; fi
}

case "${1:-}" in
  start) start ;;
  stop) for_every_instance --stop ;;
  status) status ;;
  env)
    [[ -f "$envfile" ]] || die "$envfile does not exist: run scripts/dev-services.sh start"
    cat "$envfile"
    ;;
  clean)
    for_every_instance --remove
    # What --remove leaves: lock files of instances that were never started.
    for kind in "${kinds[@]}"; do rm -rf "${TIDEMARK_STATE:?}/$kind"; done
    log "removed all instance data under $TIDEMARK_STATE (kept: venv/, test-output/)"
    ;;
  *) die "usage: $0 start|stop|status|env|clean" ;;
esac
