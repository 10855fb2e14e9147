#!/usr/bin/env bash
# The live demo, one command: MariaDB -> tidemark -> Postgres, with rows arriving on screen.
#
#   scripts/demo.sh
#
# 1. builds tidemark (debug; DEMO_PROFILE=release for an optimised build);
# 2. starts the private dev servers (scripts/mariadb-instance.sh main,
#    scripts/postgres-instance.sh main), installing them if missing;
# 3. creates, afresh, the sample tenant database `acme_shop` (customers, products, orders,
#    order_items: unsigned and signed integers, DECIMAL, DOUBLE, CHAR/VARCHAR/TEXT with emoji,
#    ENUM, SET, BIT, DATE, TIME, YEAR, DATETIME(6), TIMESTAMP(3), JSON, VARBINARY) and the
#    warehouse database `demo_warehouse`;
# 4. runs `tidemark run --config config/demo.toml` in the background (log: .dev/demo/tidemark.log),
#    waits until it has recorded its start position in tidemark.progress, then starts a
#    writer (scripts/demo-writer.sh) that keeps inserting, updating and deleting rows;
# 5. every second shows, per table, the rows in the source and in the warehouse schema
#    `acme_local_shop` and whether their contents are equal, plus the replication lag from
#    tidemark.progress; on a terminal the screen is redrawn, otherwise one line per second;
# 6. after DEMO_SECONDS (default 60) or Ctrl-C: stops the writer, waits for the warehouse to
#    catch up (at most DEMO_DRAIN_SECONDS, default 30), stops tidemark with SIGTERM (it commits
#    what it holds and exits 0) and prints the final comparison.
#
# Exits 0 when every table's contents are equal in source and warehouse and tidemark exited 0.
# Settings: DEMO_SECONDS, DEMO_DRAIN_SECONDS, DEMO_PROFILE (debug|release), DEMO_WRITE_INTERVAL
# (seconds between writer transactions, default 0.2), DEMO_WAREHOUSE_DB (default demo_warehouse),
# TIDEMARK_DEMO_WAREHOUSE (postgres, the default, or redshift).
#
# TIDEMARK_DEMO_WAREHOUSE=redshift takes the Redshift path instead: tidemark stages gzip CSV
# files in the private S3 server (scripts/s3-instance.sh main, bucket demo-staging) and loads
# them through the Redshift Data API test server (the redshift-test-server example, which runs
# the SQL on the same Postgres database after refusing what Redshift would refuse), with
# config/demo-redshift.toml. The screen and the final comparison are the same.
set -euo pipefail
TIDEMARK_SCRIPT=demo
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$TIDEMARK_REPO"

seconds="${DEMO_SECONDS:-60}"
drain_seconds="${DEMO_DRAIN_SECONDS:-30}"
profile="${DEMO_PROFILE:-debug}"
write_interval="${DEMO_WRITE_INTERVAL:-0.2}"
wh_db="${DEMO_WAREHOUSE_DB:-demo_warehouse}"
warehouse_kind="${TIDEMARK_DEMO_WAREHOUSE:-postgres}"
case "$warehouse_kind" in
  postgres) config=config/demo.toml ;;
  redshift) config=config/demo-redshift.toml ;;
  *) die "TIDEMARK_DEMO_WAREHOUSE must be postgres or redshift" ;;
esac
[[ "$seconds" =~ ^[0-9]+$ ]] || die "DEMO_SECONDS must be a whole number of seconds"
[[ "$drain_seconds" =~ ^[0-9]+$ ]] || die "DEMO_DRAIN_SECONDS must be a whole number of seconds"
[[ "$wh_db" =~ ^[a-z_][a-z0-9_]*$ ]] || die "DEMO_WAREHOUSE_DB must be a plain lowercase name"

source_id=acme-local-shop
schema=acme_local_shop
tables=(customers products orders order_items)
# Per table: the key (ordering) and the columns whose text must be identical on both sides.
# Both servers print these types the same way (integers, DECIMAL/numeric, ENUM/SET labels, DATE,
# UTF-8 text); BIT(8) is compared as its 8-digit bit string.
declare -A key=([customers]=id [products]=id [orders]=id [order_items]="order_id, line_no")
declare -A src_cols=(
  [customers]="id, name, email, country, tier, balance, birth_year"
  [products]="id, sku, title, price, in_stock"
  [orders]="id, customer_id, state, tags, LPAD(BIN(flags), 8, '0'), total, placed_on"
  [order_items]="order_id, line_no, product_id, qty, unit_price"
)
declare -A wh_cols=(
  [customers]="id, name, email, country, tier, balance, birth_year"
  [products]="id, sku, title, price, in_stock"
  [orders]="id, customer_id, state, tags, flags::text, total, placed_on"
  [order_items]="order_id, line_no, product_id, qty, unit_price"
)

demo_dir="$TIDEMARK_STATE/demo"
mkdir -p "$demo_dir"
tidemark_log="$demo_dir/tidemark.log"
writer_log="$demo_dir/writer.log"
rm -f "$demo_dir/writer.stop" "$demo_dir/writer.count"

# --- build ----------------------------------------------------------------------------------
case "$profile" in
  debug) build=(cargo build --quiet --bin tidemark) bin=target/debug/tidemark ;;
  release) build=(cargo build --quiet --release --bin tidemark) bin=target/release/tidemark ;;
  *) die "DEMO_PROFILE must be debug or release" ;;
esac
log "building tidemark ($profile): ${build[*]}"
"${build[@]}" || die "the build failed (see above)"
if [[ "$warehouse_kind" == redshift ]]; then
  log "building the Redshift Data API test server (cargo build --example redshift-test-server)"
  cargo build --quiet --example redshift-test-server || die "the build failed (see above)"
fi
"$bin" run --help >/dev/null 2>&1 || die "$bin has no 'run' command (this checkout predates it)"

# --- servers ----------------------------------------------------------------------------------
mysql_url="$(scripts/mariadb-instance.sh main)"
pg_url="$(scripts/postgres-instance.sh main)"
mysql_port="${mysql_url##*:}"
wh_url="${pg_url%/*}/$wh_db"
psql_bin="$(find_binary /usr/lib/postgresql/15/bin/psql psql)" || die "psql not found"

src() {
  mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P"$mysql_port" -uroot \
    --default-character-set=utf8mb4 "$@"
}
pg() { "$psql_bin" -X -q -v ON_ERROR_STOP=1 "$@"; }
# Tab-separated rows, no headers, from the warehouse.
wh() { pg -d "$wh_url" -A -t -F $'\t' "$@"; }

log "creating the sample tenant database acme_shop on MariaDB (port $mysql_port), afresh"
src -e "
  DROP DATABASE IF EXISTS acme_shop;
  CREATE DATABASE acme_shop CHARACTER SET utf8mb4;
  USE acme_shop;
  CREATE TABLE customers (
    id BIGINT UNSIGNED PRIMARY KEY,
    name VARCHAR(64) NOT NULL,
    email VARCHAR(128),
    country CHAR(2),
    tier ENUM('basic','silver','gold') NOT NULL DEFAULT 'basic',
    balance DECIMAL(12,2) NOT NULL DEFAULT 0,
    birth_year YEAR,
    joined_at DATETIME(6) NOT NULL,
    prefs JSON);
  CREATE TABLE products (
    id INT PRIMARY KEY,
    sku CHAR(12) NOT NULL,
    title VARCHAR(120) NOT NULL,
    price DECIMAL(10,2) NOT NULL,
    weight_kg DOUBLE,
    in_stock SMALLINT UNSIGNED NOT NULL,
    thumbnail VARBINARY(32),
    updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3));
  CREATE TABLE orders (
    id BIGINT PRIMARY KEY AUTO_INCREMENT,
    customer_id BIGINT UNSIGNED NOT NULL,
    state ENUM('new','paid','shipped','cancelled') NOT NULL DEFAULT 'new',
    tags SET('gift','express','fragile') NOT NULL DEFAULT '',
    flags BIT(8) NOT NULL DEFAULT b'0',
    total DECIMAL(12,2) NOT NULL DEFAULT 0,
    placed_on DATE NOT NULL,
    delivery_window TIME,
    note TEXT,
    updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3));
  CREATE TABLE order_items (
    order_id BIGINT NOT NULL,
    line_no TINYINT UNSIGNED NOT NULL,
    product_id INT NOT NULL,
    qty SMALLINT NOT NULL,
    unit_price DECIMAL(10,2) NOT NULL,
    PRIMARY KEY (order_id, line_no));" || die "could not create acme_shop"

log "creating the warehouse database $wh_db on Postgres (${pg_url%/*}), afresh"
pg -d "$pg_url" -c "DROP DATABASE IF EXISTS $wh_db WITH (FORCE)" -c "CREATE DATABASE $wh_db" \
  || die "could not create the warehouse database $wh_db"

# --- tidemark and the writer ------------------------------------------------------------------
tidemark_pid=""
writer_pid=""
server_pid=""
cleanup() {
  if [[ -n "$writer_pid" ]]; then
    touch "$demo_dir/writer.stop"
    kill "$writer_pid" 2>/dev/null || true
  fi
  if [[ -n "$tidemark_pid" ]] && kill -0 "$tidemark_pid" 2>/dev/null; then
    log "stopping tidemark (pid $tidemark_pid)"
    stop_pid "$tidemark_pid" 30 tidemark
  fi
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    stop_pid "$server_pid" 10 redshift-test-server
  fi
}
trap cleanup EXIT
interrupted=0
trap 'interrupted=1' INT TERM

if [[ "$warehouse_kind" == redshift ]]; then
  s3_url="$(scripts/s3-instance.sh main)"
  log "creating the staging bucket demo-staging on the S3 server ($s3_url)"
  "$TIDEMARK_STATE/venv/bin/python" - "$s3_url" <<'PY' || die "could not create the bucket"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
try:
    s3.create_bucket(Bucket="demo-staging")
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
PY
  server_log="$demo_dir/redshift-test-server.log"
  log "starting the Redshift Data API test server (log: $server_log)"
  setsid target/debug/examples/redshift-test-server --postgres-url "$pg_url" \
    --s3-endpoint "$s3_url" >"$server_log" 2>&1 </dev/null &
  server_pid=$!
  deadline=$((SECONDS + 30))
  until grep -q '^endpoint=' "$server_log" 2>/dev/null; do
    kill -0 "$server_pid" 2>/dev/null || { log_tail "$server_log"; die "the test server exited"; }
    ((SECONDS < deadline)) || die "the test server did not start within 30 s"
    sleep 0.1
  done
  export TIDEMARK_DATA_API_ENDPOINT="$(sed -n 's/^endpoint=//p' "$server_log" | head -1)"
  export TIDEMARK_S3_ENDPOINT="$s3_url" TIDEMARK_REDSHIFT_DATABASE="$wh_db"
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
fi

log "starting: $bin run --config $config (log: $tidemark_log)"
# setsid: its own process group, so Ctrl-C reaches only this script, which then stops the writer,
# lets tidemark catch up and stops it with SIGTERM.
TIDEMARK_MYSQL_URL="$mysql_url" TIDEMARK_WAREHOUSE_URL="$wh_url" \
  setsid "$bin" run --config "$config" </dev/null >"$tidemark_log" 2>&1 &
tidemark_pid=$!

log "waiting for tidemark to record its start position in tidemark.progress"
deadline=$((SECONDS + 60))
until [[ "$(wh -c "SELECT 1 FROM pg_tables WHERE schemaname = 'tidemark' AND tablename = 'progress'" 2>/dev/null)" == 1 ]] \
  && [[ "$(wh -c "SELECT 1 FROM tidemark.progress WHERE source_id = '$source_id'" 2>/dev/null)" == 1 ]]; do
  if ! kill -0 "$tidemark_pid" 2>/dev/null; then
    wait "$tidemark_pid" && rc=0 || rc=$?
    tidemark_pid=""
    log_tail "$tidemark_log"
    die "tidemark exited with status $rc before recording its start position"
  fi
  ((SECONDS < deadline)) || { log_tail "$tidemark_log"; die "no checkpoint row after 60 s"; }
  sleep 0.2
done
log "tidemark starts at: $(wh -c "SELECT position FROM tidemark.progress WHERE source_id = '$source_id'")"

log "starting the writer: a transaction every ${write_interval}s (log: $writer_log)"
setsid scripts/demo-writer.sh "$mysql_port" "$demo_dir" "$write_interval" </dev/null >"$writer_log" 2>&1 &
writer_pid=$!

# --- the screen -------------------------------------------------------------------------------
# Fills src_rows/src_sum and wh_rows/wh_sum (per table: row count, md5 of the compared columns)
# and the checkpoint fields.
declare -A src_rows src_sum wh_rows wh_sum
checkpoint="" lag="" committed_at="" batch_lag=""
sample() {
  local q="" t name rows sum existing
  for t in "${tables[@]}"; do
    q+="${q:+ UNION ALL }SELECT '$t', COUNT(*), COALESCE(MD5(GROUP_CONCAT(CONCAT_WS('|', ${src_cols[$t]}) ORDER BY ${key[$t]} SEPARATOR '\n')), '-') FROM acme_shop.$t"
  done
  while IFS=$'\t' read -r name rows sum; do
    src_rows[$name]="$rows"
    src_sum[$name]="$sum"
  done < <(src -N -B -e "SET SESSION group_concat_max_len = 1073741824; $q" 2>/dev/null || true)

  # Target tables appear with their first change; query only those that exist.
  existing="$(wh -c "SELECT tablename FROM pg_tables WHERE schemaname = '$schema'" 2>/dev/null || true)"
  q=""
  for t in "${tables[@]}"; do
    wh_rows[$t]=0
    wh_sum[$t]=-
    grep -qx "$t" <<<"$existing" || continue
    q+="${q:+ UNION ALL }SELECT '$t', count(*), coalesce(md5(string_agg(concat_ws('|', ${wh_cols[$t]}), chr(10) ORDER BY ${key[$t]})), '-') FROM $schema.$t"
  done
  if [[ -n "$q" ]]; then
    while IFS=$'\t' read -r name rows sum; do
      wh_rows[$name]="$rows"
      wh_sum[$name]="$sum"
    done < <(wh -c "$q" 2>/dev/null || true)
  fi
  IFS=$'\t' read -r checkpoint lag committed_at batch_lag < <(wh -c "
    SELECT position,
      coalesce(to_char(extract(epoch FROM now() - source_commit_ts), 'FM9999990.0') || ' s', '-'),
      coalesce(to_char(committed_at, 'HH24:MI:SS.MS'), '-'),
      coalesce(to_char(extract(epoch FROM committed_at - source_commit_ts), 'FM9999990.0') || ' s', '-')
    FROM tidemark.progress WHERE source_id = '$source_id'" 2>/dev/null || echo) || true
}

# True when every table's count and contents are equal on both sides.
all_equal() {
  local t
  for t in "${tables[@]}"; do
    [[ "${src_rows[$t]:-x}" == "${wh_rows[$t]:-y}" && "${src_sum[$t]:-x}" == "${wh_sum[$t]:-y}" ]] || return 1
  done
}

writer_counts() { cat "$demo_dir/writer.count" 2>/dev/null || echo "0 0"; }

tty=0
[[ -t 1 ]] && tty=1

show() {
  local elapsed="$1" phase="$2" t mark committed failed
  read -r committed failed < <(writer_counts)
  if ((tty)); then
    printf '\033[H\033[J'
    printf 'tidemark demo  %s  %ss of %ss   (Ctrl-C to stop early)\n\n' "$phase" "$elapsed" "$seconds"
    printf '  MariaDB 127.0.0.1:%s acme_shop  ->  Postgres %s, schema %s\n\n' "$mysql_port" "$wh_db" "$schema"
    printf '  %-12s %10s %10s   %s\n' table source warehouse contents
    for t in "${tables[@]}"; do
      mark=behind
      [[ "${src_sum[$t]:-x}" == "${wh_sum[$t]:-y}" && "${src_rows[$t]:-x}" == "${wh_rows[$t]:-y}" ]] && mark=equal
      printf '  %-12s %10s %10s   %s\n' "$t" "${src_rows[$t]:-?}" "${wh_rows[$t]:-?}" "$mark"
    done
    printf '\n  checkpoint   %s\n' "${checkpoint:--}"
    printf '  lag          now - source commit: %s;  last batch committed %s, %s after its source commit\n' \
      "${lag:--}" "${committed_at:--}" "${batch_lag:--}"
    printf '               (MariaDB commit timestamps have 1 s resolution)\n'
    printf '  writer       %s transactions committed, %s failed\n' "$committed" "$failed"
    printf '  logs         %s, %s\n' "$tidemark_log" "$writer_log"
  else
    local counts=""
    for t in "${tables[@]}"; do counts+=" $t ${src_rows[$t]:-?}/${wh_rows[$t]:-?}"; done
    printf '%4ss %-7s source/warehouse:%s | lag %s | checkpoint %s | writer %s txns\n' \
      "$elapsed" "$phase" "$counts" "${lag:--}" "${checkpoint:--}" "$committed"
  fi
}

((tty)) || log "no terminal: printing one line per second (source/warehouse rows per table)"
start=$SECONDS
while ((SECONDS - start < seconds && interrupted == 0)); do
  if ! kill -0 "$tidemark_pid" 2>/dev/null; then
    log "tidemark exited early"
    break
  fi
  sample
  show $((SECONDS - start)) running
  sleep 1
done

# --- stop: writer, drain, tidemark ------------------------------------------------------------
log "stopping the writer"
touch "$demo_dir/writer.stop"
wait "$writer_pid" || true
writer_pid=""
read -r committed failed < <(writer_counts)

drain_start=$SECONDS
while kill -0 "$tidemark_pid" 2>/dev/null; do
  sample
  if all_equal; then
    log "the warehouse caught up $((SECONDS - drain_start))s after the writer stopped"
    break
  fi
  if ((SECONDS - drain_start >= drain_seconds)); then
    log "the warehouse did not catch up within ${drain_seconds}s"
    break
  fi
  show $((SECONDS - start)) draining
  sleep 0.5
done
log "stopping tidemark with SIGTERM (it commits what it holds, then exits)"

tidemark_rc=0
if kill -0 "$tidemark_pid" 2>/dev/null; then
  kill -TERM "$tidemark_pid"
  deadline=$((SECONDS + 30))
  while kill -0 "$tidemark_pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  if kill -0 "$tidemark_pid" 2>/dev/null; then
    log "tidemark did not exit within 30 s of SIGTERM; killing it"
    kill -KILL "$tidemark_pid" 2>/dev/null || true
  fi
fi
wait "$tidemark_pid" || tidemark_rc=$?
tidemark_pid=""

# --- final comparison -------------------------------------------------------------------------
sample
echo
echo "final comparison (writer: $committed transactions committed, $failed failed; tidemark exit status $tidemark_rc):"
printf '  %-12s %10s %10s   %s\n' table source warehouse contents
ok=1
for t in "${tables[@]}"; do
  mark=equal
  if [[ "${src_rows[$t]:-x}" != "${wh_rows[$t]:-y}" || "${src_sum[$t]:-x}" != "${wh_sum[$t]:-y}" ]]; then
    mark=DIFFERENT
    ok=0
  fi
  printf '  %-12s %10s %10s   %s\n' "$t" "${src_rows[$t]:-?}" "${wh_rows[$t]:-?}" "$mark"
done
echo "  checkpoint: ${checkpoint:--}; last batch committed ${committed_at:--}, ${batch_lag:--} after its source commit"
echo "  (contents: md5 of each table's rows in key order, over the columns listed in scripts/demo.sh)"
echo "  inspect: psql $wh_url -c 'SELECT * FROM $schema.orders ORDER BY id DESC LIMIT 5'"
if ((tidemark_rc != 0)); then
  log "tidemark exited with status $tidemark_rc"
  log_tail "$tidemark_log"
  ok=0
fi
if ((ok)); then
  log "source and warehouse are equal"
else
  log "source and warehouse differ"
  exit 1
fi
