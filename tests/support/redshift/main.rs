//! The Redshift Data API test server as a process, for the demo (`scripts/demo.sh` with
//! `TIDEMARK_DEMO_WAREHOUSE=redshift`); tests run it in-process (`tests/support/redshift`).
//!
//! Prints `endpoint=http://127.0.0.1:PORT` once listening and serves until SIGTERM or Ctrl-C.
//! The options default to the dev services' variables (`source .dev/env`).

// The server's modules, shared with the tests; the tests use more of their API than this
// binary does.
#[allow(dead_code)]
mod checks;
#[allow(dead_code)]
mod copy;
#[allow(dead_code)]
mod protocol;
#[allow(dead_code)]
mod run;
#[allow(dead_code)]
mod server;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use server::{RedshiftTestServer, ServerSettings};

/// Command-line options of the test server.
#[derive(Parser)]
#[command(about = "Redshift Data API test server on a local Postgres and S3 server")]
struct Args {
    /// Postgres URL; the Data API's Database parameter replaces its database.
    #[arg(long, env = "TIDEMARK_TEST_PG_URL")]
    postgres_url: String,
    /// Endpoint of the S3 server holding the COPY manifests and files.
    #[arg(long, env = "TIDEMARK_TEST_S3_URL")]
    s3_endpoint: String,
    /// Region to sign S3 requests for.
    #[arg(long, env = "TIDEMARK_TEST_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// S3 access key id.
    #[arg(
        long,
        env = "TIDEMARK_TEST_S3_ACCESS_KEY_ID",
        default_value = "testing"
    )]
    s3_access_key_id: String,
    /// S3 secret access key.
    #[arg(
        long,
        env = "TIDEMARK_TEST_S3_SECRET_ACCESS_KEY",
        default_value = "testing"
    )]
    s3_secret_access_key: String,
    /// Port to listen on (127.0.0.1); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Milliseconds to wait before each statement starts.
    #[arg(long, default_value_t = 0)]
    statement_delay_ms: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let settings = ServerSettings {
        postgres_url: args.postgres_url,
        s3_endpoint: args.s3_endpoint,
        s3_region: args.s3_region,
        s3_access_key_id: args.s3_access_key_id,
        s3_secret_access_key: args.s3_secret_access_key,
        statement_delay: Duration::from_millis(args.statement_delay_ms),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let server = RedshiftTestServer::start_on(addr, settings).await?;
    // The demo script reads this line to learn the port.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "endpoint={}", server.endpoint)?;
    stdout.flush()?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.stop().await;
    Ok(())
}
