//! Postgres sources in end-to-end tests: validated source configs, replication slots (made,
//! peeked at, dropped), and the Postgres type matrix.

use std::time::Duration;

use bytes::Bytes;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use tidemark::config::{Config, SourceConfig};

use super::warehouse::Warehouse;

/// A validated Postgres source `id` reading the database at `url`, including `shop.*`, with slot
/// `{names}_slot` and publication `{names}_pub` (unique names: test processes share the server).
pub fn validated_pg_source(id: &str, url: &str, names: &str) -> SourceConfig {
    let text = format!(
        r#"[group]
name = "{id}"
[warehouse]
kind = "postgres"
url = "postgres://unused@127.0.0.1:1/warehouse"
[[sources]]
id = "{id}"
kind = "postgres"
url = "${{SOURCE_URL}}"
tenant = "t"
region = "r"
function = "f"
include = ["shop.*"]
snapshot = "never"
slot = "{names}_slot"
publication = "{names}_pub"
"#
    );
    let env = |name: &str| (name == "SOURCE_URL").then(|| url.to_string());
    let config = Config::from_str_with_env(&text, std::path::Path::new("test.toml"), &env)
        .unwrap_or_else(|e| panic!("{e}"));
    config
        .sources
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no source in {text}"))
}

/// Drops a replication slot when dropped itself, even by a panic: a forgotten slot holds WAL
/// forever. Declare it before whatever still uses the slot (a running tidemark), so it drops last.
pub struct SlotGuard {
    /// A URL of the slot's database.
    pub url: String,
    /// The slot.
    pub slot: String,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let (url, slot) = (self.url.clone(), self.slot.clone());
        // A fresh runtime on its own thread: this may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Ok(client) = super::warehouse::try_pg_client(&url).await else {
                    return;
                };
                // The walsender of a killed tidemark may take a moment to notice.
                for _ in 0..50 {
                    let dropped = client
                        .execute(
                            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                             WHERE slot_name = $1 AND NOT active",
                            &[&slot],
                        )
                        .await;
                    let left = client
                        .query_opt(
                            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                            &[&slot],
                        )
                        .await;
                    if dropped.is_err() || matches!(left, Ok(None)) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        })
        .join();
    }
}

/// The Postgres type matrix: one column of every type the source reads (enums, domains,
/// arrays and unsupported types included), plus REPLICA IDENTITY FULL tables with and without
/// a key. Tables are created in the current schema.
pub const TYPE_MATRIX_SCHEMA: &str = "
    CREATE EXTENSION citext;
    CREATE EXTENSION hstore;
    CREATE EXTENSION ltree;
    CREATE TYPE mood AS ENUM ('happy', 'sad', 'it''s complicated');
    CREATE DOMAIN price AS numeric(10,2) CHECK (VALUE >= 0);
    CREATE DOMAIN short_label AS varchar(8);
    CREATE TABLE every_type (
        id int PRIMARY KEY,
        c_bool bool,
        c_int2 int2,
        c_int4 int4,
        c_int8 int8,
        c_numeric numeric,
        c_numeric_10_2 numeric(10,2),
        c_float4 float4,
        c_float8 float8,
        c_text text,
        c_varchar varchar(10),
        c_char char(5),
        c_bytea bytea,
        c_date date,
        c_time time,
        c_time3 time(3),
        c_timetz timetz,
        c_timestamp timestamp,
        c_timestamp0 timestamp(0),
        c_timestamptz timestamptz,
        c_timestamptz3 timestamptz(3),
        c_interval interval,
        c_uuid uuid,
        c_json json,
        c_jsonb jsonb,
        c_int_array int[],
        c_text_array text[],
        c_numeric_array numeric(6,2)[],
        c_date_array date[],
        c_timestamptz_array timestamptz[],
        c_mood_array mood[],
        c_price_array price[],
        c_mood mood,
        c_price price,
        c_label short_label,
        c_inet inet,
        c_cidr cidr,
        c_macaddr macaddr,
        c_macaddr8 macaddr8,
        c_money money,
        c_bit bit(4),
        c_varbit varbit(16),
        c_varbit_any varbit,
        c_oid oid,
        c_point point,
        c_tsvector tsvector,
        c_int2vector int2vector,
        c_int4range int4range,
        c_int8range int8range,
        c_numrange numrange,
        c_tsrange tsrange,
        c_tstzrange tstzrange,
        c_daterange daterange,
        c_int4multirange int4multirange,
        c_datemultirange datemultirange,
        c_lseg lseg,
        c_path path,
        c_box box,
        c_polygon polygon,
        c_line line,
        c_circle circle,
        c_xml xml,
        c_tsquery tsquery,
        c_citext citext,
        c_hstore hstore,
        c_ltree ltree,
        c_range_array int4range[],
        c_point_array point[],
        c_citext_array citext[],
        c_box_array box[],
        c_varchar_any varchar,
        c_date_far date,
        c_timestamp_far timestamp,
        c_timestamptz_far timestamptz
    );
    CREATE TABLE full_identity (
        k int,
        part text,
        n int,
        big text,
        PRIMARY KEY (part, k)
    );
    ALTER TABLE full_identity REPLICA IDENTITY FULL;
    CREATE TABLE full_no_key (a int, b text);
    ALTER TABLE full_no_key REPLICA IDENTITY FULL;
";

/// Rows of edge-case values; every column is also NULL in one row.
pub const TYPE_MATRIX_ROWS: &str = r#"
    INSERT INTO every_type VALUES (
        1, true, 1, 2, 3, 12345.678, 12.50, 1.5, 2.25, 'plain', 'varchar', 'ab', '\x00ff10',
        '2024-02-29', '13:45:06.000123', '13:45:06.123', '13:45:06+05:30', '2024-02-29 23:59:58.000007',
        '2024-02-29 23:59:58', '2024-06-01 12:00:00.5+00', '2024-06-01 12:00:00.123+02',
        '1 year 2 mons 3 days 04:05:06.000007', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
        '{"b": 1,  "a": [1, 2], "b": 2}', '{"b": 1, "a": [1, 2]}',
        '{1,2,3}', '{a,b}', '{1.50,2.25}', '{2024-01-01,2024-12-31}',
        '{"2024-01-01 00:00:00+00","2024-06-01 12:00:00+05:30"}', '{happy,sad}', '{1.00,2.50}',
        'happy', 9.99, 'label', '192.168.1.5/24', '10.0.0.0/8', '08:00:2b:01:02:03',
        '08:00:2b:01:02:03:04:05', '1234.56', B'0101', B'1', B'10101', 42, '(1,2)', 'a fat cat', '1 2',
        '[1,10)', '[-9223372036854775808,0)', '[1.5,2.25]', '[2024-01-01 00:00:00,2024-02-01 00:00:00)',
        '[2024-01-01 00:00:00+00,infinity)', '[2024-01-01,2024-02-01)', '{[1,3),[5,7)}',
        '{[2024-01-01,2024-01-05)}', '[(0,0),(1,1)]', '((0,0),(1,1),(2,0))', '(1,1),(0,0)',
        '((0,0),(1,1),(1,0))', '{1,-1,0}', '<(0,0),1.5>', '<a x="1">b &amp; c</a>', 'fat & (rat | cat)',
        'MiXeD Case', 'a=>1, b=>NULL', 'top.science.astronomy', '{"[1,2)",empty}', '{"(1,2)","(3,4)"}',
        '{A,b}', '{(1,1),(0,0);(2,2),(1,1)}', 'unbounded', '0044-03-15 BC', '21016-11-04 13:51:30.123456',
        '0044-03-15 12:00:00+00 BC'
    );
    INSERT INTO every_type VALUES (
        2, false, -32768, -2147483648, -9223372036854775808, 'NaN', 'NaN', 'NaN', 'Infinity',
        E'tab\there\nnew line \\ backslash "quote" \u00e9\u4e2d\U0001F680', '', '  x  ',
        E'\\x005c0a09ff', '0001-01-01', '00:00:00', '24:00:00', '00:00:00-15:59', '0001-01-01 00:00:00',
        '9999-12-31 23:59:59', '1970-01-01 00:00:00+00', '9999-12-31 23:59:59.999+00',
        '-1 years -2 mons +3 days -04:05:06.000007', '00000000-0000-0000-0000-000000000000',
        '[]', '{}', '{NULL,-1,NULL}', '{"","NULL",NULL,"a,b","q\"x","back\\slash"," lead"}',
        '{-9999.99,NULL}', '{infinity,-infinity}', '{NULL}', '{"it''s complicated",NULL}', '{}',
        'it''s complicated', 0, '', '::1', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff',
        'ff:ff:ff:ff:ff:ff:ff:ff', '-92233720368547758.08', B'0000', B'', B'0', 4294967295,
        '(-1.5,1e+300)', '', '0',
        'empty', 'empty', '(,)', '(,2024-01-01 00:00:00]', 'empty', '(-infinity,infinity)', '{}', '{}',
        '[(-1.5,2),(3,1e+300)]', '[(0,0),(1,1)]', '(0,0),(0,0)', '((0,0))', '{0,1,-2.5}', '<(1,1),0>',
        '', '!x', '', '', '', '{}', '{NULL}', '{"",NULL}', '{}', E'tab	here', '4713-01-01 BC',
        '294276-12-31 23:59:59.999999', '294247-01-10 04:00:54+00'
    );
    INSERT INTO every_type (id) VALUES (3);
    INSERT INTO every_type VALUES (
        4, true, 32767, 2147483647, 9223372036854775807, '-Infinity', 99999999.99, '-Infinity',
        '-0', repeat('long ', 1000), 'x', '12345', '\x', 'infinity', '23:59:59.999999', '00:00:00.001',
        '23:59:59.999999+14', 'infinity', '-infinity', '-infinity', 'infinity',
        interval '-178956970 years -8 mons -2147483648 days' + interval '-2562047788 hours -54.775808 seconds',
        'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '"just a string"', 'null',
        '[0:1]={7,8}', '{{a,b},{c,NULL}}', '{{1.00},{2.00}}', '{}', '{}', '{}', '{0.01}',
        'sad', 0.01, 'abcdefgh', '0.0.0.0/0', '0.0.0.0/0', '00:00:00:00:00:00', '00:00:00:00:00:00:00:00',
        '92233720368547758.07', B'1111', B'1111111111111111', repeat('01', 100)::varbit, 0,
        '(0,0)', 'z:1A', '1',
        '[0,1)', '[0,1)', '[0,0]', 'empty', 'empty', 'empty', '{[1,2)}', '{}', '[(0,0),(0,0)]',
        '((1,1))', '(0,0),(0,0)', '((1,1))', '{1,0,0}', '<(0,0),0>', '<?xml version="1.0"?><r/>',
        'a:* & b', 'ß', '"k"=>"v w"', 'a', '{}', '{}', '{}', '{}', '', '5874897-12-31',
        '0001-01-01 00:00:00 BC', '9999-12-31 23:59:59.999999-01'
    );
    INSERT INTO every_type (id, c_numeric, c_float4, c_float8, c_timestamptz, c_interval, c_time)
    VALUES (5, 'Infinity', '1e-45', '1.7976931348623157e+308', '1969-12-31 23:59:59.999999+00',
            '-00:00:00.000001', '12:00:00.5');
"#;

/// A Postgres LSN printed as `X/Y`, as a number.
pub fn parse_lsn(text: &str) -> u64 {
    let (high, low) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {text}"));
    let part = |p: &str| u64::from_str_radix(p, 16).unwrap_or_else(|e| panic!("LSN {text}: {e}"));
    (part(high) << 32) | part(low)
}

/// `len` letters and digits no compressor can shrink by much, so Postgres stores them TOASTed.
pub fn incompressible_text(len: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = super::ids::Rng::new(seed);
    (0..len)
        .map(|_| char::from(ALPHABET[rng.below(ALPHABET.len() as u64) as usize]))
        .collect()
}

/// Drops replication slot `name` if it exists (a slot holds WAL until dropped).
pub async fn drop_slot(admin: &Client, name: &str) {
    admin
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1",
            &[&name],
        )
        .await
        .unwrap_or_else(|e| panic!("dropping slot {name}: {e}"));
}

/// A slot (and replication origin) name for this test process, `prefix` followed by its id,
/// free on the dev server: what earlier runs left under `prefix` is dropped first, since their
/// slots pin WAL and keep their databases from being dropped.
pub async fn fresh_slot_name(admin: &Client, prefix: &str) -> String {
    for name in leftovers_of_dead_processes(admin, prefix).await {
        drop_slot_and_origin(admin, &name).await;
    }
    let name = format!("{prefix}{}", std::process::id());
    drop_slot_and_origin(admin, &name).await;
    name
}

/// Drops what a test made around slot `name`: the slot, a replication origin of that name, and
/// `databases`. Call it whether or not the test's scenario panicked.
pub async fn release_slot(admin: &Client, name: &str, databases: Vec<Warehouse>) {
    drop_slot_and_origin(admin, name).await;
    drop_databases(admin, databases).await;
}

/// Drops the slot and the replication origin called `name`, if they exist.
async fn drop_slot_and_origin(admin: &Client, name: &str) {
    drop_slot(admin, name).await;
    admin
        .execute(
            "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin \
             WHERE roname = $1",
            &[&name],
        )
        .await
        .unwrap_or_else(|e| panic!("dropping origin {name}: {e}"));
}

/// Closes and drops each of `databases` (FORCE: a walsender may still hold one).
async fn drop_databases(admin: &Client, databases: Vec<Warehouse>) {
    for db in databases {
        let name = db.db.clone();
        drop(db);
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await
            .unwrap_or_else(|e| panic!("DROP DATABASE {name}: {e}"));
    }
}

/// The slots and replication origins named `prefix` followed by the id of a process that no
/// longer runs: what test runs that died left behind.
async fn leftovers_of_dead_processes(admin: &Client, prefix: &str) -> Vec<String> {
    admin
        .query(
            "SELECT slot_name::text FROM pg_replication_slots WHERE starts_with(slot_name::text, $1) \
             UNION SELECT roname FROM pg_replication_origin WHERE starts_with(roname, $1)",
            &[&prefix],
        )
        .await
        .unwrap_or_else(|e| panic!("listing leftover slots: {e}"))
        .into_iter()
        .map(|row| row.get::<_, String>(0))
        .filter(|name| named_for_dead_process(name, prefix))
        .collect()
}

/// Every message in logical slot `slot`, without consuming them, as (LSN as text, message
/// bytes); `options` are the pgoutput options (name, value) after `proto_version` 1.
pub async fn peek_slot(
    client: &Client,
    slot: &str,
    options: &[(&str, &str)],
) -> Vec<(String, Bytes)> {
    let mut sql = String::from(
        "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
         'proto_version', '1'",
    );
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&slot];
    for (name, value) in options {
        sql.push_str(&format!(", ${}, ${}", params.len() + 1, params.len() + 2));
        params.push(name);
        params.push(value);
    }
    sql.push(')');
    client
        .query(&sql, &params)
        .await
        .unwrap_or_else(|e| panic!("peeking at slot {slot}: {e}"))
        .into_iter()
        .map(|row| (row.get(0), Bytes::from(row.get::<_, Vec<u8>>(1))))
        .collect()
}

/// True when `name` is `prefix` followed by the id of a process that no longer runs: what a
/// test run that died left behind.
fn named_for_dead_process(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Sets up the type matrix as a replication source in `client`'s database: the matrix tables
/// (then `extra_ddl`), publication `publication` of them and of `extra_tables`, slot `slot`,
/// then the matrix rows and a `full_identity` row holding a TOASTed text made from `big_seed`,
/// which it returns. Commits are synchronous: a slot only hands out flushed WAL.
pub async fn type_matrix_source(
    client: &Client,
    slot: &str,
    publication: &str,
    (extra_ddl, extra_tables): (&str, &[&str]),
    big_seed: u64,
) -> String {
    client
        .batch_execute("SET synchronous_commit = on")
        .await
        .expect("synchronous_commit");
    client
        .batch_execute(TYPE_MATRIX_SCHEMA)
        .await
        .expect("schema");
    if !extra_ddl.is_empty() {
        client.batch_execute(extra_ddl).await.expect("extra tables");
    }
    let mut tables = vec!["every_type", "full_identity", "full_no_key"];
    tables.extend_from_slice(extra_tables);
    client
        .batch_execute(&format!(
            "CREATE PUBLICATION {publication} FOR TABLE {}",
            tables.join(", ")
        ))
        .await
        .expect("publication");
    create_pgoutput_slot(client, slot).await;
    client.batch_execute(TYPE_MATRIX_ROWS).await.expect("rows");
    let big = incompressible_text(10_000, big_seed);
    client
        .execute("INSERT INTO full_identity VALUES (1, 'p', 1, $1)", &[&big])
        .await
        .expect("full_identity insert");
    big
}

/// Creates logical replication slot `slot` (pgoutput) in `client`'s database: its changes
/// start here.
pub async fn create_pgoutput_slot(client: &Client, slot: &str) {
    client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .expect("create slot");
}

/// The keys [`toasted_docs_changes`] uses: 1 to this.
pub const TOASTED_DOCS_KEYS: i64 = 60;

/// Transactions of random changes to `shop.docs` (`id int PRIMARY KEY, a text, b text, n int`,
/// `a` and `b` TOASTed), as `BEGIN; ...; COMMIT;` texts after one insert of keys 1..=30:
/// updates that leave the TOASTed columns unchanged, key changes (also right after other
/// changes of the row, and with `n` changed too when `key_changes_touch_n`), swaps through a
/// temporary key, deletes and inserts, over keys 1..=60, written back to back so that batches
/// hold many.
pub fn toasted_docs_changes(rng: &mut super::ids::Rng, key_changes_touch_n: bool) -> Vec<String> {
    use super::ids::Rng;
    const KEYS: i64 = TOASTED_DOCS_KEYS;
    let mut live: Vec<i64> = (1..=30).collect();
    let big = |tag: String| format!("repeat('{tag}', 9000) || '{tag}'");
    let mut statements = vec![format!(
        "INSERT INTO shop.docs SELECT g, {}, {}, g FROM generate_series(1, 30) g",
        big("a".into()),
        big("b".into())
    )];
    for _ in 0..150 {
        let mut txn = Vec::new();
        for _ in 0..rng.between(1, 8) {
            let free: Vec<i64> = (1..=KEYS).filter(|k| !live.contains(k)).collect();
            let pick = |rng: &mut Rng, keys: &[i64]| keys[rng.below(keys.len() as u64) as usize];
            if live.len() < 2 || free.is_empty() {
                break;
            }
            let k = pick(rng, &live);
            let to = pick(rng, &free);
            let statement = match rng.below(8) {
                0 | 1 => format!("UPDATE shop.docs SET n = n + 1 WHERE id = {k}"),
                2 => format!(
                    "UPDATE shop.docs SET a = {} WHERE id = {k}",
                    big(format!("x{}", rng.below(1000)))
                ),
                3 | 4 => {
                    live.retain(|&l| l != k);
                    live.push(to);
                    if key_changes_touch_n && rng.chance(50) {
                        format!("UPDATE shop.docs SET id = {to}, n = n * 2 WHERE id = {k}")
                    } else {
                        format!("UPDATE shop.docs SET id = {to} WHERE id = {k}")
                    }
                }
                5 => {
                    let other = pick(rng, &live);
                    if other == k {
                        continue;
                    }
                    format!(
                        "UPDATE shop.docs SET id = -1 WHERE id = {k};
                         UPDATE shop.docs SET id = {k} WHERE id = {other};
                         UPDATE shop.docs SET id = {other} WHERE id = -1"
                    )
                }
                6 => {
                    live.retain(|&l| l != k);
                    format!("DELETE FROM shop.docs WHERE id = {k}")
                }
                _ => {
                    live.push(to);
                    format!(
                        "INSERT INTO shop.docs VALUES ({to}, {}, {}, 0)",
                        big(format!("i{}", rng.below(1000))),
                        big(format!("j{}", rng.below(1000)))
                    )
                }
            };
            txn.push(statement);
        }
        statements.push(format!("BEGIN; {}; COMMIT;", txn.join("; ")));
    }
    statements
}
