//! The Redshift Data API test server itself, through the real `aws-sdk-redshiftdata` client:
//! asynchronous statements and typed results, batches as one transaction, the SQL Redshift
//! would reject, the COPY emulation over the S3 server, listing and cancelling.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::types::{Field, StatementStatusString, StatusString};
use flate2::Compression;
use flate2::write::GzEncoder;
use support::redshift::{Outcome, RedshiftTestServer, ServerSettings, start_for_tests};
use support::warehouse::{Warehouse, fresh_warehouse};

/// A Data API client of `server`, as the sink builds one (static test credentials).
fn data_api(server: &RedshiftTestServer) -> aws_sdk_redshiftdata::Client {
    let config = aws_sdk_redshiftdata::Config::builder()
        .behavior_version(aws_sdk_redshiftdata::config::BehaviorVersion::latest())
        .region(aws_sdk_redshiftdata::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_redshiftdata::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .endpoint_url(&server.endpoint)
        .build();
    aws_sdk_redshiftdata::Client::from_conf(config)
}

/// A client of the dev S3 server.
fn s3_client() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(support::S3_REGION))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            support::S3_ACCESS_KEY_ID,
            support::S3_SECRET_ACCESS_KEY,
            None,
            None,
            "tests",
        ))
        .endpoint_url(support::s3_url())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The server, a client of it and a fresh database to run in.
struct Setup {
    server: RedshiftTestServer,
    api: aws_sdk_redshiftdata::Client,
    wh: Warehouse,
}

async fn setup(hint: &str) -> Setup {
    let server = start_for_tests().await;
    Setup {
        api: data_api(&server),
        wh: fresh_warehouse(hint).await,
        server,
    }
}

impl Setup {
    /// Submits `sql` with ExecuteStatement and returns its id.
    async fn submit(&self, sql: &str) -> String {
        self.api
            .execute_statement()
            .workgroup_name("test")
            .database(&self.wh.db)
            .sql(sql)
            .send()
            .await
            .unwrap_or_else(|e| panic!("ExecuteStatement {sql}: {e:?}"))
            .id
            .expect("statement id")
    }

    /// Runs `sql` with ExecuteStatement and waits for its end.
    async fn run(&self, sql: &str) -> DescribeStatementOutput {
        let id = self.submit(sql).await;
        self.wait(&id).await
    }

    /// Runs `sql`, asserting it finishes.
    async fn run_ok(&self, sql: &str) -> DescribeStatementOutput {
        let done = self.run(sql).await;
        assert_eq!(
            done.status(),
            Some(&StatusString::Finished),
            "{sql}: {:?}",
            done.error()
        );
        done
    }

    /// Runs `sql`, asserting it fails, and returns its error.
    async fn run_failing(&self, sql: &str) -> String {
        let done = self.run(sql).await;
        assert_eq!(done.status(), Some(&StatusString::Failed), "{sql}");
        done.error().unwrap_or_default().to_string()
    }

    /// Runs `sqls` with BatchExecuteStatement and waits for its end.
    async fn batch(&self, sqls: &[&str]) -> DescribeStatementOutput {
        let id = self
            .api
            .batch_execute_statement()
            .cluster_identifier("test-cluster")
            .db_user("tidemark")
            .database(&self.wh.db)
            .set_sqls(Some(sqls.iter().map(|s| s.to_string()).collect()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("BatchExecuteStatement {sqls:?}: {e:?}"))
            .id
            .expect("statement id");
        self.wait(&id).await
    }

    /// Polls DescribeStatement until `id` ends.
    async fn wait(&self, id: &str) -> DescribeStatementOutput {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let description = self.describe(id).await;
            if matches!(
                description.status(),
                Some(StatusString::Finished | StatusString::Failed | StatusString::Aborted)
            ) {
                return description;
            }
            assert!(
                Instant::now() < deadline,
                "{id} did not end: {description:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn describe(&self, id: &str) -> DescribeStatementOutput {
        self.api
            .describe_statement()
            .id(id)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DescribeStatement {id}: {e:?}"))
    }

    /// The records of statement `id`.
    async fn records(&self, id: &str) -> Vec<Vec<Field>> {
        self.api
            .get_statement_result()
            .id(id)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetStatementResult {id}: {e:?}"))
            .records
    }

    /// The outcome the server's log holds for `sql` (its last run).
    fn outcome(&self, sql: &str) -> Outcome {
        self.server
            .statements()
            .into_iter()
            .rev()
            .find(|(s, _)| s == sql)
            .map(|(_, outcome)| outcome)
            .unwrap_or_else(|| panic!("{sql} is not in the server's log"))
    }
}

fn text(s: &str) -> Field {
    Field::StringValue(s.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_run_asynchronously_and_return_typed_fields() {
    let t = setup("rs_typed").await;
    t.run_ok(r#"CREATE SCHEMA IF NOT EXISTS "s""#).await;
    t.run_ok(
        r#"CREATE TABLE "s"."t" ("id" bigint NOT NULL, "small" smallint, "v" character varying(40),
           "f" double precision, "b" boolean, "n" numeric(10,2), "ts" timestamp with time zone,
           "j" super, "bin" varbyte(8), PRIMARY KEY ("id"))"#,
    )
    .await;
    let inserted = t
        .run_ok(
            r#"INSERT INTO "s"."t" VALUES
               (1, 2, 'it''s a \\ backslash, SYSDATE', 1.5, true, 12.34, '2024-05-06 07:08:09+00',
                json_parse('{"a":[1,2]}'), 'abc'::varbyte(8)),
               (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"#,
        )
        .await;
    assert_eq!(inserted.result_rows(), 2);
    assert_eq!(inserted.has_result_set(), Some(false));

    let select = t
        .run_ok(
            r#"SELECT "id", "small", "v", "f", "b", "n", "ts", "j", "bin",
                      SYSDATE AS "now", GETDATE() AS "stmt", TO_CHAR(SYSDATE, 'YYYY-MM-DD HH24:MI:SS.US')
               FROM "s"."t" ORDER BY "id""#,
        )
        .await;
    assert_eq!(select.has_result_set(), Some(true));
    assert_eq!(select.result_rows(), 2);
    let result = t
        .api
        .get_statement_result()
        .id(&select.id)
        .send()
        .await
        .expect("GetStatementResult");
    assert_eq!(result.total_num_rows(), 2);
    let types: Vec<&str> = result
        .column_metadata()
        .iter()
        .map(|c| c.type_name().unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        [
            "int8",
            "int2",
            "varchar",
            "float8",
            "bool",
            "numeric",
            "timestamptz",
            "super",
            "varbyte",
            "timestamp",
            "timestamp",
            "text"
        ]
    );
    assert_eq!(result.column_metadata()[0].name(), Some("id"));
    let first = &result.records()[0];
    assert_eq!(
        first[..9],
        [
            Field::LongValue(1),
            Field::LongValue(2),
            // Backslash escapes work in literals, and SYSDATE stays text inside one.
            text("it's a \\ backslash, SYSDATE"),
            Field::DoubleValue(1.5),
            Field::BooleanValue(true),
            text("12.34"),
            text("2024-05-06 07:08:09+00"),
            text(r#"{"a": [1, 2]}"#),
            text("616263"),
        ]
    );
    // SYSDATE: timestamp without zone with microseconds; GETDATE(): whole seconds.
    let Field::StringValue(sysdate) = &first[9] else {
        panic!("SYSDATE: {:?}", first[9])
    };
    assert!(sysdate.len() > 19 && !sysdate.contains('+'), "{sysdate}");
    let Field::StringValue(getdate) = &first[10] else {
        panic!("GETDATE(): {:?}", first[10])
    };
    assert_eq!(getdate.len(), 19, "{getdate}");
    let Field::StringValue(formatted) = &first[11] else {
        panic!("TO_CHAR: {:?}", first[11])
    };
    assert_eq!(formatted.len(), 26, "{formatted}");
    assert_eq!(
        &first[11],
        &result.records()[1][11],
        "SYSDATE is the transaction's start"
    );
    assert!(
        result.records()[1][1..9]
            .iter()
            .all(|f| *f == Field::IsNull(true))
    );

    // The varbyte domain took the size away; the table holds what the statements wrote.
    assert_eq!(
        t.wh.column_types("s", "t").await[8],
        ("bin".to_string(), "varbyte".to_string())
    );
    assert_eq!(
        t.wh.value(r#"SELECT v FROM s.t WHERE id = 1"#)
            .await
            .as_deref(),
        Some("it's a \\ backslash, SYSDATE")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_polled_through_their_statuses() {
    let server = RedshiftTestServer::start(ServerSettings {
        postgres_url: support::pg_url(),
        s3_endpoint: support::s3_url(),
        s3_region: support::S3_REGION.to_string(),
        s3_access_key_id: support::S3_ACCESS_KEY_ID.to_string(),
        s3_secret_access_key: support::S3_SECRET_ACCESS_KEY.to_string(),
        statement_delay: Duration::from_millis(500),
    })
    .await;
    let t = Setup {
        api: data_api(&server),
        wh: fresh_warehouse("rs_polled").await,
        server,
    };
    let id = t.submit("SELECT 1").await;
    let early = t.describe(&id).await;
    assert!(
        matches!(
            early.status(),
            Some(StatusString::Submitted | StatusString::Picked)
        ),
        "{early:?}"
    );
    assert_eq!(early.query_string(), Some("SELECT 1"));
    let done = t.wait(&id).await;
    assert_eq!(done.status(), Some(&StatusString::Finished));
    assert!(done.duration() > 0);
    assert!(done.updated_at() >= done.created_at());
    assert_eq!(t.records(&id).await, [[Field::LongValue(1)]]);

    // Unknown ids are not found; a statement without rows has no result.
    let missing = t.api.describe_statement().id("no-such-id").send().await;
    let missing = missing.expect_err("unknown id").into_service_error();
    assert!(missing.is_resource_not_found_exception(), "{missing:?}");
    let ddl = t.run_ok("CREATE TABLE x (id bigint)").await;
    let no_result = t.api.get_statement_result().id(&ddl.id).send().await;
    let no_result = no_result.expect_err("no result set").into_service_error();
    assert!(no_result.is_validation_exception(), "{no_result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_transaction() {
    let t = setup("rs_batch").await;
    let failed = t
        .batch(&[
            r#"CREATE TABLE "b" ("id" bigint)"#,
            r#"INSERT INTO "b" VALUES (1)"#,
            r#"INSERT INTO "b" VALUES ('x')"#,
            r#"INSERT INTO "b" VALUES (3)"#,
        ])
        .await;
    assert_eq!(failed.status(), Some(&StatusString::Failed));
    assert!(
        failed
            .error()
            .is_some_and(|e| e.starts_with("ERROR: invalid input syntax")),
        "{failed:?}"
    );
    let statuses: Vec<_> = failed
        .sub_statements()
        .iter()
        .map(|s| (s.id.clone(), s.status().cloned()))
        .collect();
    assert_eq!(
        statuses,
        [
            (
                format!("{}:1", failed.id),
                Some(StatementStatusString::Finished)
            ),
            (
                format!("{}:2", failed.id),
                Some(StatementStatusString::Finished)
            ),
            (
                format!("{}:3", failed.id),
                Some(StatementStatusString::Failed)
            ),
            (
                format!("{}:4", failed.id),
                Some(StatementStatusString::Aborted)
            ),
        ]
    );
    assert!(!t.wh.table_exists("public", "b").await, "rolled back");
    assert_eq!(t.outcome(r#"INSERT INTO "b" VALUES (3)"#), Outcome::Aborted);

    // A batch that succeeds commits; its statements' results are read by sub-statement id;
    // a temp table lives as long as its batch.
    let done = t
        .batch(&[
            r#"CREATE TEMP TABLE "stage" ("id" bigint)"#,
            r#"INSERT INTO "stage" VALUES (1), (2)"#,
            r#"CREATE TABLE "c" ("id" bigint)"#,
            r#"INSERT INTO "c" SELECT "id" FROM "stage""#,
            r#"SELECT count(*) FROM "c""#,
        ])
        .await;
    assert_eq!(done.status(), Some(&StatusString::Finished), "{done:?}");
    assert_eq!(done.sub_statements()[3].result_rows(), 2);
    let sub = t.describe(&format!("{}:5", done.id)).await;
    assert_eq!(sub.has_result_set(), Some(true));
    assert_eq!(
        t.records(&format!("{}:5", done.id)).await,
        [[Field::LongValue(2)]]
    );
    assert_eq!(
        t.wh.value("SELECT count(*) FROM c").await.as_deref(),
        Some("2")
    );
    let gone = t.run_failing(r#"SELECT * FROM "stage""#).await;
    assert!(gone.contains("does not exist"), "{gone}");

    // More than 40 statements is not a batch.
    let too_many = vec!["SELECT 1".to_string(); 41];
    let refused = t
        .api
        .batch_execute_statement()
        .workgroup_name("test")
        .database(&t.wh.db)
        .set_sqls(Some(too_many))
        .send()
        .await
        .expect_err("41 statements")
        .into_service_error();
    assert!(refused.is_validation_exception(), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_redshift_would_reject_fails_before_reaching_postgres() {
    let t = setup("rs_rejects").await;
    t.run_ok(
        r#"CREATE TABLE "t" ("id" bigint NOT NULL, "j" super, "v" character varying(10), PRIMARY KEY ("id"))"#,
    )
    .await;
    t.run_ok(r#"CREATE TABLE "u" ("id" bigint, "v" character varying(10))"#)
        .await;
    let long_name = "x".repeat(128);
    // Each with a word of the reason it gives.
    let rejected_alone = [
        (
            r#"INSERT INTO "t" ("id") VALUES (1) ON CONFLICT ("id") DO NOTHING"#.to_string(),
            "ON CONFLICT",
        ),
        (r#"SELECT "j" -> 'a' FROM "t""#.to_string(), "operator ->"),
        (
            r#"SELECT "v" FROM "t" WHERE "j" @> '{}'"#.to_string(),
            "operator @>",
        ),
        (
            r#"MERGE INTO "t" USING "u" ON "t"."id" = "u"."id"
               WHEN MATCHED THEN DELETE
               WHEN MATCHED THEN UPDATE SET "v" = "u"."v""#
                .to_string(),
            "one WHEN MATCHED",
        ),
        (
            r#"MERGE INTO "t" USING "u" ON "t"."id" = "u"."id"
               WHEN MATCHED AND "u"."v" IS NULL THEN DELETE"#
                .to_string(),
            "no AND condition",
        ),
        (
            r#"MERGE INTO "t" USING "u" ON "t"."id" = "u"."id"
               WHEN MATCHED THEN UPDATE SET "v" = "u"."v"
               WHEN NOT MATCHED BY SOURCE THEN DELETE"#
                .to_string(),
            "NOT MATCHED BY SOURCE",
        ),
        (
            r#"MERGE INTO "t" AS "target" USING "u" ON "target"."id" = "u"."id"
               WHEN MATCHED THEN UPDATE SET "v" = "u"."v"
               WHEN NOT MATCHED THEN INSERT ("id", "v") VALUES ("u"."id", "u"."v")"#
                .to_string(),
            "no alias for its target",
        ),
        (
            r#"MERGE INTO "t" USING "u" ON "t"."id" = "u"."id"
               WHEN MATCHED THEN UPDATE SET "v" = "u"."v""#
                .to_string(),
            "followed by one WHEN NOT MATCHED",
        ),
        (
            r#"DELETE FROM "t" AS "x" WHERE "x"."id" = 1"#.to_string(),
            "no alias",
        ),
        (
            format!(r#"CREATE TABLE "{long_name}" ("id" bigint)"#),
            "128 bytes long",
        ),
        ("SELEC 1".to_string(), "Expected"),
        (r#"COPY "t" FROM STDIN"#.to_string(), "FROM STDIN"),
        ("SELECT 1; SELECT 2".to_string(), "one SQL statement"),
    ];
    for (sql, reason) in &rejected_alone {
        let error = t.run_failing(sql).await;
        assert!(
            error.starts_with("ERROR: Redshift would reject this: ") && error.contains(reason),
            "{sql}: {error}"
        );
        assert_eq!(t.outcome(sql), Outcome::Rejected(error));
    }
    for (sql, reason) in [
        (r#"TRUNCATE "t""#, "TRUNCATE commits"),
        (
            r#"ALTER TABLE "t" ALTER COLUMN "v" TYPE character varying(20)"#,
            "inside a transaction block",
        ),
    ] {
        let done = t.batch(&[r#"INSERT INTO "u" VALUES (1, 'a')"#, sql]).await;
        assert_eq!(done.status(), Some(&StatusString::Failed), "{sql}");
        let error = done.error().unwrap_or_default();
        assert!(
            error.starts_with("ERROR: Redshift would reject this: ") && error.contains(reason),
            "{sql}: {error}"
        );
        assert!(matches!(t.outcome(sql), Outcome::Rejected(_)));
    }
    assert_eq!(
        t.wh.value("SELECT count(*) FROM u").await.as_deref(),
        Some("0")
    );

    // What Redshift runs passes: the same statements on their own, Redshift's MERGE and
    // DELETE forms, an identifier of 127 bytes, operators inside string literals.
    let longest = "y".repeat(127);
    for sql in [
        r#"TRUNCATE "t""#.to_string(),
        r#"ALTER TABLE "t" ALTER COLUMN "v" TYPE character varying(20)"#.to_string(),
        r#"INSERT INTO "u" VALUES (1, 'a'), (2, 'b')"#.to_string(),
        r#"MERGE INTO "t" USING "u" AS "stage" ON "t"."id" = "stage"."id"
           WHEN MATCHED THEN UPDATE SET "v" = "stage"."v"
           WHEN NOT MATCHED THEN INSERT ("id", "v") VALUES ("stage"."id", "stage"."v")"#
            .to_string(),
        r#"DELETE FROM "u" USING "u" AS "later" WHERE "later"."id" = "u"."id" AND "later"."v" > "u"."v""#
            .to_string(),
        r#"DELETE FROM "t" USING "u" AS "stage" WHERE "t"."id" = "stage"."id" AND "stage"."v" = 'x'"#
            .to_string(),
        format!(r#"CREATE TABLE "{longest}" ("id" bigint)"#),
        r#"SELECT '->' || '@>' AS "ops""#.to_string(),
    ] {
        t.run_ok(&sql).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialization_failures_become_redshift_error_1023() {
    let t = setup("rs_1023").await;
    t.wh.client
        .batch_execute(
            "CREATE FUNCTION conflict() RETURNS int LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END $$",
        )
        .await
        .expect("function");
    let error = t.run_failing("SELECT conflict()").await;
    assert!(
        error.starts_with("ERROR: 1023 DETAIL: Serializable isolation violation on table"),
        "{error}"
    );
}

/// A new bucket on the S3 server, unique to this test process and `hint`.
async fn fresh_bucket(s3: &aws_sdk_s3::Client, hint: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    let bucket = format!("rs-{hint}-{}-{nanos}", std::process::id());
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateBucket {bucket}: {e:?}"));
    bucket
}

async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutObject {key}: {e:?}"));
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

/// Uploads `parts` (gzip-compressed) and a manifest naming them; returns the manifest's URL.
async fn stage(s3: &aws_sdk_s3::Client, bucket: &str, name: &str, parts: &[&[u8]]) -> String {
    let mut entries = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let key = format!("{name}/part{}.csv.gz", i + 1);
        put(s3, bucket, &key, gzip(part)).await;
        entries.push(serde_json::json!({"url": format!("s3://{bucket}/{key}"), "mandatory": true}));
    }
    let manifest = serde_json::json!({ "entries": entries }).to_string();
    let key = format!("{name}/manifest");
    put(s3, bucket, &key, manifest.into_bytes()).await;
    format!("s3://{bucket}/{key}")
}

/// The COPY the sink sends.
fn copy_sql(table: &str, columns: &[&str], manifest: &str) -> String {
    let columns: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
    let column_list = match columns.as_slice() {
        [] => String::new(),
        columns => format!(" ({})", columns.join(", ")),
    };
    format!(
        "COPY \"{table}\"{column_list} FROM '{manifest}' IAM_ROLE 'arn:aws:iam::123456789012:role/load' \
         MANIFEST GZIP FORMAT AS CSV NULL AS '\\0' TIMEFORMAT 'auto' DATEFORMAT 'auto' \
         REGION 'us-east-1' COMPUPDATE OFF STATUPDATE OFF"
    )
}

const STAGE_COLUMNS: [&str; 7] = ["id", "v", "bin", "j", "ts", "n", "b"];
const CREATE_STAGE: &str = r#"CREATE TEMP TABLE "tidemark_stage_0" ("id" bigint, "v" character varying(100),
    "bin" varbyte(16), "j" super, "ts" timestamp with time zone, "n" numeric(10,2), "b" boolean)"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_loads_a_manifest_of_gzip_csv_parts() {
    let t = setup("rs_copy").await;
    let s3 = s3_client();
    let bucket = fresh_bucket(&s3, "copy").await;
    let part1: &[u8] = b"1,\"plain\",616263,\"{\"\"k\"\": [1, \"\"x\"\"]}\",2024-01-02 03:04:05.123456+00,1.50,t\n\
        2,\"with, comma and \"\"quotes\"\"\nand a newline\",\"\",\"[]\",2024-01-02 03:04:05+00,-7,f\n";
    let part2: &[u8] =
        b"3,\0,\0,\0,\0,\0,\0\n4,\"\",00ff,\"\"\"text\"\"\",1999-12-31 23:59:59.5+00,0.01,t";
    let manifest = stage(&s3, &bucket, "batch1", &[part1, part2]).await;
    t.run_ok(
        r#"CREATE TABLE "target" ("id" bigint, "v" character varying(100), "bin" varbyte(16),
           "j" super, "ts" timestamp with time zone, "n" numeric(10,2), "b" boolean)"#,
    )
    .await;
    let copy = copy_sql("tidemark_stage_0", &STAGE_COLUMNS, &manifest);
    let done = t
        .batch(&[
            CREATE_STAGE,
            &copy,
            r#"INSERT INTO "target" SELECT * FROM "tidemark_stage_0""#,
        ])
        .await;
    assert_eq!(done.status(), Some(&StatusString::Finished), "{done:?}");
    assert_eq!(done.sub_statements()[1].result_rows(), 4);
    assert_eq!(t.outcome(&copy), Outcome::Finished { rows: 4 });
    let rows =
        t.wh.rows(
            "SELECT id, v, encode(bin, 'hex'), j::text, (ts AT TIME ZONE 'UTC')::text, n, b \
             FROM target ORDER BY id",
        )
        .await;
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        rows,
        [
            vec![
                s("1"),
                s("plain"),
                s("616263"),
                s(r#"{"k": [1, "x"]}"#),
                s("2024-01-02 03:04:05.123456"),
                s("1.50"),
                s("t")
            ],
            vec![
                s("2"),
                s("with, comma and \"quotes\"\nand a newline"),
                s(""),
                s("[]"),
                s("2024-01-02 03:04:05"),
                s("-7.00"),
                s("f")
            ],
            vec![s("3"), None, None, None, None, None, None],
            vec![
                s("4"),
                s(""),
                s("00ff"),
                s(r#""text""#),
                s("1999-12-31 23:59:59.5"),
                s("0.01"),
                s("t")
            ],
        ]
    );

    // Straight into a table, in autocommit, without a column list.
    let direct = t.run_ok(&copy_sql("target", &[], &manifest)).await;
    assert_eq!(direct.result_rows(), 4);
    assert_eq!(
        t.wh.value("SELECT count(*) FROM target").await.as_deref(),
        Some("8")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_copy_names_the_file_and_line() {
    let t = setup("rs_copy_fail").await;
    let s3 = s3_client();
    let bucket = fresh_bucket(&s3, "copyfail").await;
    let good: &[u8] = b"1,\"a\",\0,\0,\0,\0,\0\n";

    // A corrupt gzip part.
    let manifest = stage(&s3, &bucket, "corrupt", &[good, good]).await;
    let corrupt_url = format!("s3://{bucket}/corrupt/part2.csv.gz");
    put(
        &s3,
        &bucket,
        "corrupt/part2.csv.gz",
        b"this is not gzip".to_vec(),
    )
    .await;
    let copy = copy_sql("tidemark_stage_0", &STAGE_COLUMNS, &manifest);
    let failed = t.batch(&[CREATE_STAGE, &copy]).await;
    assert_eq!(failed.status(), Some(&StatusString::Failed));
    let error = failed.error().unwrap_or_default();
    assert!(
        error.starts_with("ERROR: Load into table 'tidemark_stage_0' failed. ")
            && error.contains(&corrupt_url),
        "{error}"
    );
    assert!(matches!(t.outcome(&copy), Outcome::Failed(e) if e == error));

    // A value Postgres refuses, after a record spanning two lines: named by file line.
    let manifest = stage(
        &s3,
        &bucket,
        "badvalue",
        &[
            good,
            b"2,\"two\nlines\",\0,\0,\0,\0,\0\nthree,\"x\",\0,\0,\0,\0,\0\n",
        ],
    )
    .await;
    let failed = t
        .batch(&[
            CREATE_STAGE,
            &copy_sql("tidemark_stage_0", &STAGE_COLUMNS, &manifest),
        ])
        .await;
    let error = failed.error().unwrap_or_default();
    assert!(
        error.contains(&format!("s3://{bucket}/badvalue/part2.csv.gz line 3: "))
            && error.contains("invalid input syntax for type bigint"),
        "{error}"
    );

    // A record with a field missing, an unterminated quote, a missing mandatory file.
    let cases: [(&str, &[u8], &str); 2] = [
        ("short", b"1,\"a\",\0\n", "line 1: Delimiter not found"),
        (
            "quote",
            b"1,\"a,\0,\0,\0,\0,\0\n",
            "line 1: unterminated quoted field",
        ),
    ];
    for (name, part, expected) in cases {
        let manifest = stage(&s3, &bucket, name, &[part]).await;
        let failed = t
            .batch(&[
                CREATE_STAGE,
                &copy_sql("tidemark_stage_0", &STAGE_COLUMNS, &manifest),
            ])
            .await;
        let error = failed.error().unwrap_or_default();
        assert!(
            error.contains(&format!("s3://{bucket}/{name}/part1.csv.gz {expected}")),
            "{name}: {error}"
        );
    }
    let missing_url = format!("s3://{bucket}/missing/part1.csv.gz");
    let manifest = serde_json::json!({"entries": [{"url": missing_url, "mandatory": true}]});
    put(
        &s3,
        &bucket,
        "missing/manifest",
        manifest.to_string().into_bytes(),
    )
    .await;
    let failed = t
        .batch(&[
            CREATE_STAGE,
            &copy_sql(
                "tidemark_stage_0",
                &STAGE_COLUMNS,
                &format!("s3://{bucket}/missing/manifest"),
            ),
        ])
        .await;
    let error = failed.error().unwrap_or_default();
    assert!(
        error.contains(&missing_url) && error.contains("mandatory"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_listed_and_cancelled() {
    let t = setup("rs_cancel").await;
    let prefix = format!("rs-cancel-{}", std::process::id());
    let sleep = "SELECT pg_sleep(60)";
    let id = t
        .api
        .execute_statement()
        .workgroup_name("test")
        .database(&t.wh.db)
        .statement_name(format!("{prefix}-sleep"))
        .sql(sleep)
        .send()
        .await
        .expect("ExecuteStatement")
        .id
        .expect("statement id");
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.describe(&id).await.status() != Some(&StatusString::Started) {
        assert!(Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let running = t
        .api
        .list_statements()
        .statement_name(&prefix)
        .status(StatusString::Started)
        .send()
        .await
        .expect("ListStatements");
    let listed: Vec<_> = running
        .statements()
        .iter()
        .map(|s| (s.id(), s.query_string(), s.is_batch_statement()))
        .collect();
    assert_eq!(listed, [(id.as_str(), Some(sleep), Some(false))]);

    let cancelled = t
        .api
        .cancel_statement()
        .id(&id)
        .send()
        .await
        .expect("CancelStatement");
    assert_eq!(cancelled.status(), Some(true));
    assert_eq!(t.describe(&id).await.status(), Some(&StatusString::Aborted));
    assert_eq!(t.outcome(sleep), Outcome::Aborted);
    let again = t.api.cancel_statement().id(&id).send().await;
    assert!(
        again
            .expect_err("already aborted")
            .into_service_error()
            .is_validation_exception()
    );
    // The query stopped on Postgres too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let running_sql = "SELECT count(*) FROM pg_stat_activity \
                       WHERE query = 'SELECT pg_sleep(60)' AND pid <> pg_backend_pid()";
    while t.wh.value(running_sql).await.as_deref() != Some("0") {
        assert!(Instant::now() < deadline, "pg_sleep still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every statement with the prefix, newest first; a batch lists its statements.
    t.api
        .batch_execute_statement()
        .workgroup_name("test")
        .database(&t.wh.db)
        .statement_name(format!("{prefix}-batch"))
        .sqls("SELECT 1")
        .sqls("SELECT 2")
        .send()
        .await
        .expect("BatchExecuteStatement");
    let all = t
        .api
        .list_statements()
        .statement_name(&prefix)
        .send()
        .await
        .expect("ListStatements");
    let listed: Vec<_> = all
        .statements()
        .iter()
        .map(|s| {
            (
                s.statement_name(),
                s.is_batch_statement(),
                s.query_strings().to_vec(),
            )
        })
        .collect();
    let batch_name = format!("{prefix}-batch");
    let sleep_name = format!("{prefix}-sleep");
    assert_eq!(
        listed,
        [
            (
                Some(batch_name.as_str()),
                Some(true),
                vec!["SELECT 1".to_string(), "SELECT 2".to_string()]
            ),
            (Some(sleep_name.as_str()), Some(false), vec![]),
        ]
    );
    let aborted = t
        .api
        .list_statements()
        .status(StatusString::Aborted)
        .send()
        .await
        .expect("ListStatements");
    assert_eq!(aborted.statements().len(), 1);
}
