//! Active/standby: two `tidemark run` processes with the same config and `[group] lease`; one
//! runs the source, the other waits. Killing the active one with SIGKILL under a writer hands
//! the source to the standby within about one lease, and the target ends equal to the source.

mod support;

use std::time::Duration;

use support::pipeline::{MysqlSetup, Rng, fresh_warehouse, seed, start_writer, workload_tables};
use support::poll::wait_until;
use support::process::Tidemark;

const TABLES: [&str; 2] = ["orders", "items"];
const LEASE_S: u64 = 3;

/// Log lines saying the process took the source's lease.
fn took_lease(tm: &Tidemark) -> bool {
    tm.stderr().contains("lease taken")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_active_process_hands_the_source_to_the_standby() {
    let mut rng = Rng::new(seed(
        "kill_9_of_the_active_process_hands_the_source_to_the_standby",
    ));
    let wh = fresh_warehouse("fleet_standby").await;
    let mut s = MysqlSetup::prepare(wh, "fleet_standby", "ha", &workload_tables(&TABLES), |g| {
        g.group_extra = format!("lease = \"{LEASE_S}s\"\n");
        g.max_delay = "100ms".into();
    })
    .await;
    s.run().await;
    assert!(
        took_lease(&s.tm),
        "the first process did not take the lease:\n{}",
        s.tm.stderr()
    );

    // The standby: the same config file, a process of its own.
    let config = std::fs::read_to_string(&s.tm.config_path).unwrap();
    let mut standby = Tidemark::prepare(|_| config);
    standby.spawn();
    let waiting = wait_until(Duration::from_secs(20), async || {
        standby.stderr().contains("standby")
    })
    .await;
    assert!(
        waiting,
        "the second process does not say it waits:\n{}",
        standby.stderr()
    );

    let writer = start_writer(
        s.source_url(),
        &TABLES,
        rng.next_u64(),
        200,
        Duration::from_millis(3),
    );
    writer.wait_commits(50).await;
    // Both run for a few lease periods: the standby must not take the source meanwhile.
    tokio::time::sleep(Duration::from_secs(2 * LEASE_S)).await;
    standby.assert_running("while the active process runs");
    assert!(
        !took_lease(&standby),
        "the standby took the lease while the active process held it:\n{}",
        standby.stderr()
    );

    s.tm.kill9();
    let killed = std::time::Instant::now();
    let took_over = wait_until(Duration::from_secs(6 * LEASE_S), async || {
        took_lease(&standby)
    })
    .await;
    assert!(
        took_over,
        "the standby did not take over within {} s:\n{}",
        6 * LEASE_S,
        standby.stderr()
    );
    eprintln!("standby took over {:?} after the kill", killed.elapsed());

    writer.wait_commits(50).await;
    let stats = writer.stop().await;
    assert!(stats.commits > 100, "writer too slow: {stats:?}");
    // From here the standby is the process whose exit the comparison watches.
    std::mem::swap(&mut s.tm, &mut standby);
    s.converge(&TABLES).await;
    s.tm.assert_running("after convergence");

    // The killed process comes back: the lease is the other's now, so it waits.
    standby.spawn();
    let waits = wait_until(Duration::from_secs(20), async || {
        standby.stderr().contains("standby")
    })
    .await;
    assert!(
        waits,
        "the restarted process does not wait:\n{}",
        standby.stderr()
    );
    assert!(!took_lease(&standby), "{}", standby.stderr());
    s.exec(&["INSERT INTO orders (id, v, s) VALUES (999999, 1, 'after')"])
        .await;
    s.converge(&TABLES).await;
}
