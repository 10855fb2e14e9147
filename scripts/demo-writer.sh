#!/usr/bin/env bash
# The demo's application: keeps inserting, updating and deleting rows in the sample tenant
# database `acme_shop` (created by scripts/demo.sh) until a stop file appears.
#
#   scripts/demo-writer.sh PORT DIR [INTERVAL]
#
# PORT is the MariaDB port on 127.0.0.1 (user root, no password). Stops after the transaction in
# progress once DIR/writer.stop exists; after each transaction DIR/writer.count holds
# "COMMITTED FAILED". One transaction every INTERVAL seconds (default 0.2), each touching all four
# tables: a new order with two items, its total, a stock update, orders moving new -> paid ->
# shipped, a customer's balance; every third a new customer; every fourth the oldest shipped
# order is deleted with its items; every tenth a price change. Before the first, it seeds the
# product catalogue. Failed transactions are reported on stderr and counted.
set -euo pipefail
TIDEMARK_SCRIPT=demo-writer
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

[[ $# -ge 2 ]] || die "usage: $0 PORT DIR [INTERVAL]"
port="$1"
dir="$2"
interval="${3:-0.2}"
stop_file="$dir/writer.stop"
count_file="$dir/writer.count"

sql() {
  mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P"$port" -uroot \
    --default-character-set=utf8mb4 acme_shop
}

# The product catalogue: 20 products (INSERT IGNORE: a restarted writer keeps them).
seed_products() {
  local p values=""
  for ((p = 1; p <= 20; p++)); do
    values+="${values:+,}($p, 'SKU-$(printf '%08d' "$p")', 'Café mug №$p ☕', $((3 + p)).$((p * 7 % 100)),
      $((p * 137 % 1000)).5e-3, 1000, UNHEX(SHA2('thumb $p', 0)))"
  done
  printf 'INSERT IGNORE INTO products (id, sku, title, price, weight_kg, in_stock, thumbnail) VALUES %s;\n' "$values"
}

# The SQL of transaction I.
transaction() {
  local i="$1" c tiers=(basic silver gold) countries=(IN SG US DE BR JP) tags=("" gift express "gift,express" fragile)
  local p1=$((RANDOM % 20 + 1)) p2=$((RANDOM % 20 + 1)) q1=$((RANDOM % 5 + 1)) q2=$((RANDOM % 3 + 1))
  c=$(((i + 2) / 3))
  printf 'BEGIN;\n'
  if ((i % 3 == 1)); then
    printf "INSERT INTO customers (id, name, email, country, tier, balance, birth_year, joined_at, prefs)
      VALUES (%d, 'Customer %d — 客户 🚀', 'c%d@example.com', '%s', '%s', 0, %d, NOW(6),
        JSON_OBJECT('newsletter', %s, 'lang', 'en', 'score', %d.5));\n" \
      "$c" "$c" "$c" "${countries[RANDOM % 6]}" "${tiers[RANDOM % 3]}" $((1950 + RANDOM % 55)) \
      "$([[ $((RANDOM % 2)) == 1 ]] && echo TRUE || echo FALSE)" $((RANDOM % 100))
  fi
  printf "INSERT INTO orders (customer_id, tags, flags, placed_on, delivery_window, note)
    VALUES (%d, '%s', %d, CURDATE(), '%s', 'order %d: leave at the door ✓\\\\t\"quoted\"');
    SET @o = LAST_INSERT_ID();
    INSERT INTO order_items (order_id, line_no, product_id, qty, unit_price)
      SELECT @o, 1, id, %d, price FROM products WHERE id = %d
      UNION ALL SELECT @o, 2, id, %d, price FROM products WHERE id = %d;
    UPDATE orders SET total = (SELECT COALESCE(SUM(qty * unit_price), 0) FROM order_items WHERE order_id = @o) WHERE id = @o;
    UPDATE products SET in_stock = GREATEST(CAST(in_stock AS SIGNED) - %d, 0) WHERE id = %d;
    UPDATE orders SET state = 'paid' WHERE state = 'new' AND id < @o ORDER BY id LIMIT 1;
    UPDATE orders SET state = 'shipped', flags = flags | b'10000000' WHERE state = 'paid' AND id + 3 < @o ORDER BY id LIMIT 1;
    UPDATE customers SET balance = balance + (SELECT total FROM orders WHERE id = @o) WHERE id = %d;\n" \
    "$c" "${tags[RANDOM % 5]}" $((RANDOM % 128)) \
    "$(printf '%02d:%02d:00' $((8 + RANDOM % 12)) $((RANDOM % 4 * 15)))" "$i" \
    "$q1" "$p1" "$q2" "$p2" "$q1" "$p1" "$c"
  if ((i % 4 == 0)); then
    printf "SET @d = NULL;
      SELECT id INTO @d FROM orders WHERE state = 'shipped' ORDER BY id LIMIT 1;
      DELETE FROM order_items WHERE order_id = @d;
      DELETE FROM orders WHERE id = @d;\n"
  fi
  if ((i % 10 == 0)); then
    printf 'UPDATE products SET price = price + 0.25 WHERE id = %d;\n' $((RANDOM % 20 + 1))
  fi
  printf 'COMMIT;\n'
}

seed_products | sql || die "could not seed the product catalogue (see above)"
i=0
committed=0
failed=0
while [[ ! -e "$stop_file" ]]; do
  i=$((i + 1))
  if transaction "$i" | sql; then
    committed=$((committed + 1))
  else
    failed=$((failed + 1))
    log "transaction $i failed (see above)"
  fi
  printf '%d %d\n' "$committed" "$failed" >"$count_file.tmp"
  mv -f "$count_file.tmp" "$count_file"
  sleep "$interval"
done
log "stopped after $committed transactions ($failed failed)"
