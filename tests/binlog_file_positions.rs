//! Resume points read from a real MySQL 8 binlog: each commit hands out the offset just after
//! its XID and the executed GTID set including it, so a replica resuming there neither skips
//! nor repeats a transaction.

mod support;

use tidemark::event::{GtidState, ResumePoint, SourceMessage};

/// The resume point of every commit in fixture `name`, in order.
fn commits(name: &str) -> Vec<ResumePoint> {
    support::mysql8_fixture_messages(name)
        .into_iter()
        .filter_map(|message| match message {
            SourceMessage::Commit(point) => Some(point),
            _ => None,
        })
        .collect()
}

#[test]
fn mysql_commits_carry_offsets_and_the_growing_gtid_set() {
    let uuid = "93e95066-a2f4-11ec-9b69-9657f0ae95e2";
    let points = commits("mysql-enum-string-set.000001");
    let offsets: Vec<u64> = points
        .iter()
        .map(|p| match p {
            ResumePoint::Binlog { file, pos, .. } => {
                assert_eq!(file, "mysql-enum-string-set.000001");
                *pos
            }
            other => panic!("not a binlog point: {other:?}"),
        })
        .collect();
    // The three row transactions end at the XID events mysqlbinlog lists (1560, 2659, 3331),
    // after the two DDL transactions.
    assert!(offsets.ends_with(&[1560, 2659, 3331]), "{offsets:?}");
    let gtids: Vec<String> = points
        .iter()
        .map(|p| match p {
            ResumePoint::Binlog {
                gtid: Some(GtidState::Mysql(set)),
                ..
            } => set.clone(),
            other => panic!("no MySQL GTID set: {other:?}"),
        })
        .collect();
    assert_eq!(gtids.last().unwrap(), &format!("{uuid}:1-5"));
    for (i, set) in gtids.iter().enumerate() {
        assert_eq!(set, &format!("{uuid}:1-{}", i + 1).replace(":1-1", ":1"));
    }
}

#[test]
fn mariadb_commits_carry_the_gtid_position() {
    let points = commits("mariadb-bin.000001");
    let gtids: Vec<Option<GtidState>> = points
        .into_iter()
        .map(|p| match p {
            ResumePoint::Binlog { gtid, .. } => gtid,
            ResumePoint::Lsn { .. } => None,
        })
        .collect();
    assert_eq!(
        gtids,
        vec![
            Some(GtidState::Mariadb("0-1-1".into())),
            Some(GtidState::Mariadb("0-1-2".into()))
        ]
    );
}
