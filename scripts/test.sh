#!/usr/bin/env bash
# The project's test command: starts the dev services (scripts/dev-services.sh),
# exports their URLs, then runs, in order and all of them even after a failure:
#   cargo fmt --check
#   cargo clippy --all-targets -- -D warnings
#   cargo nextest run --no-fail-fast     (extra arguments to test.sh go here)
#   cargo test --doc
# and exits non-zero if any step failed. Its last line is a plain
# "tests: N passed, N failed" total over nextest and the doctests.
#
# At the end, and whatever happens (a failed step, Ctrl-C, an error of this script),
# every instance under the state dir is stopped and its data deleted
# (scripts/dev-services.sh clean: the moto virtualenv and test-output/ stay). That fails
# the run, naming the process, if a server is still alive afterwards.
#   TIDEMARK_KEEP_SERVICES=1   keep the services running and their data instead, so the
#                              next run starts warm (stop them with dev-services.sh clean)
set -euo pipefail
TIDEMARK_SCRIPT=test.sh
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$TIDEMARK_REPO"

step() { printf '\n==> %s\n' "$*" >&2; }

# Leaves no test server behind: stops every instance and deletes its data, unless the
# caller asked to keep them. Fails if a server process survives.
cleanup_services() {
  if [[ "${TIDEMARK_KEEP_SERVICES:-}" == 1 ]]; then
    log "TIDEMARK_KEEP_SERVICES=1: the services keep running (scripts/dev-services.sh clean stops them)"
    return 0
  fi
  step "stopping every instance and deleting its data (TIDEMARK_KEEP_SERVICES=1 keeps them)"
  scripts/dev-services.sh clean
}
# An early exit (error, Ctrl-C, kill) still cleans up; the normal end does it before the
# summary so that the totals stay the last line.
on_early_exit() {
  local rc=$?
  trap - EXIT
  cleanup_services || rc=1
  exit "$rc"
}
trap on_early_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "starting dev services"
started=$SECONDS
scripts/dev-services.sh start >/dev/null
# shellcheck source=/dev/null
source "$TIDEMARK_STATE/env"
log "services ready in $((SECONDS - started))s (MariaDB $TIDEMARK_TEST_MYSQL_URL, Postgres $TIDEMARK_TEST_PG_URL, S3 $TIDEMARK_TEST_S3_URL)"

# Tools: rustfmt and clippy come with rustup; cargo-nextest is built once.
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    command -v rustup >/dev/null || die "cargo $component is missing and rustup is not installed"
    log "cargo ${component/rustfmt/fmt} is missing; installing it with: rustup component add $component"
    rustup component add "$component" >&2
  fi
done
if ! cargo nextest --version >/dev/null 2>&1; then
  log "cargo-nextest is missing; installing it with: cargo install --locked cargo-nextest (takes a few minutes)"
  cargo install --locked cargo-nextest >&2 || die "cargo install --locked cargo-nextest failed"
fi

outdir="$TIDEMARK_STATE/test-output"
mkdir -p "$outdir"
failed=()
run_step() {
  local name="$1"
  shift
  step "$*"
  if ! "$@"; then
    failed+=("$name")
  fi
}

run_step fmt cargo fmt --check
run_step clippy cargo clippy --all-targets -- -D warnings
step "cargo nextest run --no-fail-fast $*"
if ! cargo nextest run --no-fail-fast "$@" 2>&1 | tee "$outdir/nextest.log"; then
  failed+=(nextest)
fi
step "cargo test --doc"
if ! cargo test --doc 2>&1 | tee "$outdir/doctest.log"; then
  failed+=(doctest)
fi

# Totals: nextest's "N tests run: A passed, B failed, ..." plus every doctest
# "test result: ok. A passed; B failed; ..." line.
passed=0
failures=0
summary="$(sed 's/\x1b\[[0-9;]*m//g' "$outdir/nextest.log" | grep -E '^ *Summary .* tests? run:' | tail -n 1 || true)"
if [[ "$summary" =~ ([0-9]+)\ passed ]]; then passed=$((passed + BASH_REMATCH[1])); fi
if [[ "$summary" =~ ([0-9]+)\ failed ]]; then failures=$((failures + BASH_REMATCH[1])); fi
if [[ "$summary" =~ ([0-9]+)\ timed\ out ]]; then failures=$((failures + BASH_REMATCH[1])); fi
while read -r line; do
  if [[ "$line" =~ ([0-9]+)\ passed\;\ ([0-9]+)\ failed ]]; then
    passed=$((passed + BASH_REMATCH[1]))
    failures=$((failures + BASH_REMATCH[2]))
  fi
done < <(grep -E '^test result:' "$outdir/doctest.log" || true)

trap - EXIT
if ! cleanup_services; then
  failed+=(cleanup)
fi

echo
if ((${#failed[@]})); then
  echo "FAILED steps: ${failed[*]}"
else
  echo "all steps passed (fmt, clippy, nextest, doctests)"
fi
echo "tests: $passed passed, $failures failed"
((${#failed[@]} == 0))
