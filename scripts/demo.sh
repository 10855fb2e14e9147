#!/usr/bin/env bash
# The live demo: starts a private MariaDB (scripts/mariadb-instance.sh), creates a sample tenant
# database `acme_shop` with a writer that keeps inserting, updating and deleting rows, and runs
#   tidemark inspect stream
# which follows the binlog and prints every committed change as a typed JSON line.
# Stops after DEMO_SECONDS (default 30) or Ctrl-C. Run from anywhere: scripts/demo.sh
set -euo pipefail
TIDEMARK_SCRIPT=demo.sh
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$TIDEMARK_REPO"

seconds=${DEMO_SECONDS:-30}
log "building tidemark"
cargo build --quiet --bin tidemark
url=$(scripts/mariadb-instance.sh main)
port=${url##*:}
sql() { mariadb --protocol=TCP -h127.0.0.1 -P"$port" -uroot --default-character-set=utf8mb4 "$@"; }

sql -e "CREATE DATABASE IF NOT EXISTS acme_shop CHARACTER SET utf8mb4;
  CREATE TABLE IF NOT EXISTS acme_shop.customers (
    id BIGINT UNSIGNED PRIMARY KEY, name VARCHAR(64), country CHAR(2), joined DATETIME(6));
  CREATE TABLE IF NOT EXISTS acme_shop.orders (
    id BIGINT PRIMARY KEY AUTO_INCREMENT, customer_id BIGINT UNSIGNED, amount DECIMAL(12,2),
    state ENUM('new','paid','shipped'), tags SET('gift','express'), flags BIT(8), note TEXT,
    updated_at TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3));"

writer() {
  local i=0
  while true; do
    i=$((i + 1))
    sql acme_shop -e "BEGIN;
      INSERT INTO customers VALUES ($i, 'customer $i 🚀', 'IN', NOW(6)) ON DUPLICATE KEY UPDATE name = VALUES(name);
      INSERT INTO orders (customer_id, amount, state, tags, flags, note)
        VALUES ($i, ROUND(RAND() * 1000, 2), 'new', 'gift', b'00000101', REPEAT('n', 1 + $i % 20));
      UPDATE orders SET state = 'paid', tags = 'gift,express' WHERE id % 3 = $i % 3 AND state = 'new' LIMIT 1;
      DELETE FROM orders WHERE id % 7 = 0 AND state = 'paid' LIMIT 1;
      COMMIT;" || log "writer: transaction $i failed (see above)"
    sleep 0.5
  done
}

log "writer started: a transaction every 0.5 s into acme_shop (customers, orders)"
writer &
writer_pid=$!
trap 'kill $writer_pid 2>/dev/null || true' EXIT

log "following the binlog for ${seconds}s; each line is one committed row change"
TIDEMARK_INSPECT_URL=$url timeout --foreground -s INT "$seconds" target/debug/tidemark inspect stream || true
