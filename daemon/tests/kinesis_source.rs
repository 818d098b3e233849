//! The `kinesis` source (issue #12): pipelines reading another sluiced's stream through its
//! Kinesis API, as they would read AWS Kinesis — alone with a checkpoint file, or two
//! nodes sharing the shards by lease in a JetStream cluster.
#![allow(clippy::unwrap_used)]

mod common;
use common::testing::NatsCluster;
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The stream read from (on the producer node).
const EVENTS: &str = "[streams.events]\nshards = 4\n";

fn consumer(endpoint: SocketAddr, lake: &Path) -> String {
    consumer_with(endpoint, lake, "1MiB")
}

/// The consumer pipeline, its buffers cut at `size`.
fn consumer_with(endpoint: SocketAddr, lake: &Path, size: &str) -> String {
    format!(
        "[pipelines.from-a]\nsource = {{ plugin = \"kinesis\", endpoint = \"http://{endpoint}\", stream = \"events\", poll_interval = \"200ms\" }}\n\n[pipelines.from-a.buffer]\nsize = \"{size}\"\ninterval = \"1s\"\n\n[pipelines.from-a.sink]\nplugin = \"object-store\"\nurl = \"{}\"\nprefix = \"all/\"\ncompression = \"none\"\n",
        lake.display()
    )
}

fn expected(n: usize) -> Vec<String> {
    let mut e: Vec<String> = (0..n).map(|i| format!("{{\"n\":{i}}}")).collect();
    e.sort();
    e
}

/// One consumer node without a cluster: every record of the four shards reaches its lake,
/// and after a clean stop and a restart it goes on from its checkpoint file — nothing
/// twice, nothing skipped.
#[test]
fn a_pipeline_reads_another_sluiceds_stream_through_the_kinesis_api() {
    let a = Setup::new("", &[("events", EVENTS)]);
    let mut da = a.start();
    da.wait_ready();
    let lake = tempfile::tempdir().unwrap();
    let b = Setup::new("", &[("from-a", &consumer(a.api, lake.path()))]);
    let mut db = b.start();
    db.wait_ready();
    put_numbered(a.api, 0, 300);
    wait_until(Duration::from_secs(60), "300 records delivered", || {
        object_lines(lake.path()).len() >= 300
    });
    db.stop_cleanly();
    assert!(
        b.path("var/checkpoints/from-a/kinesis-events.json")
            .exists(),
        "the checkpoint file"
    );
    put_numbered(a.api, 300, 100);
    let mut db = b.start();
    db.wait_ready();
    wait_until(Duration::from_secs(60), "400 records delivered", || {
        object_lines(lake.path()).len() >= 400
    });
    let mut all = object_lines(lake.path());
    all.sort();
    assert_eq!(all, expected(400), "every record once");
    db.stop_cleanly();
    da.stop_cleanly();
}

/// The consumer is SIGKILLed at exact places of a delivery — before an object's upload,
/// and after it but before its records are acknowledged — while records trickle in, so
/// the objects before the crash are cut by time; the restarted consumer reads the backlog
/// at once and would group it otherwise. The replay from the checkpoint numbers the
/// records as the first read did, so the intent log skips those already stored and
/// rebuilds the rest under the same names: every record once.
#[test]
fn sigkill_mid_delivery_of_a_kinesis_stream_loses_nothing_and_duplicates_nothing() {
    let a = Setup::new("", &[("events", EVENTS)]);
    let mut da = a.start();
    da.wait_ready();
    let mut n = 0;
    for fp in ["delivery-before-upload:3", "delivery-after-upload:3"] {
        let lake = tempfile::tempdir().unwrap();
        let b = Setup::new("", &[("from-a", &consumer(a.api, lake.path()))]);
        let from = n;
        let mut db = b.start_env(&[("SLUICE_FAILPOINTS", fp)]);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let st = loop {
            if let Some(st) = db.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the failpoint fired (built with `--features sluiced/failpoints`)"
            );
            put_numbered(a.api, n, 20);
            n += 20;
            std::thread::sleep(Duration::from_millis(100));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGKILL), "{}", db.stderr());
        let before = object_lines(lake.path()).len();
        put_numbered(a.api, n, 20);
        n += 20;
        let mut db = b.start();
        db.wait_ready();
        let want: Vec<String> = {
            let mut e: Vec<String> = (0..n).map(|i| format!("{{\"n\":{i}}}")).collect();
            e.sort();
            e
        };
        wait_until(Duration::from_secs(60), "every record delivered", || {
            let mut all = object_lines(lake.path());
            all.sort();
            all.dedup();
            all.len() >= n
        });
        db.stop_cleanly();
        let mut all = object_lines(lake.path());
        all.sort();
        eprintln!(
            "{fp}: records {from}..{n}; {before} lines before the crash, {} after",
            all.len()
        );
        assert_eq!(all, want, "{fp}: every record exactly once");
    }
    da.stop_cleanly();
}

/// Two consumer nodes share the stream's shards by lease (in a JetStream cluster's lease
/// table); one is killed and the other takes its shards within twice the lease duration,
/// and every record reaches the lake exactly once: the survivor replays the killed node's
/// records after its last checkpoint numbered as the killed node had them, and the
/// delivery records it left in the cluster say which objects hold which of them.
#[test]
fn two_consumers_share_a_kinesis_stream_by_lease_and_take_over() {
    let cluster = NatsCluster::start(1);
    let a = Setup::new("", &[("events", EVENTS)]);
    let mut da = a.start();
    da.wait_ready();
    let lake = tempfile::tempdir().unwrap();
    let servers: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let config = format!(
        "[jetstream]\nservers = [{}]\nreplicas = 1\nprefix = \"K\"\nlease_duration = \"3s\"\n",
        servers.join(", ")
    );
    let pipeline = consumer(a.api, lake.path());
    let b = Setup::new(&config, &[("from-a", &pipeline)]);
    let c = Setup::new(&config, &[("from-a", &pipeline)]);
    let mut db = b.start();
    db.wait_ready();
    let mut dc = c.start();
    dc.wait_ready();
    let owned = |d: &Daemon| d.metric("sluice_lease_owned", &["pipeline=\"from-a\""]);
    wait_until(Duration::from_secs(30), "two shards each", || {
        owned(&db) == 2.0 && owned(&dc) == 2.0
    });
    let distinct = || {
        let mut all = object_lines(lake.path());
        all.sort();
        all.dedup();
        all
    };
    put_numbered(a.api, 0, 200);
    wait_until(Duration::from_secs(60), "200 records delivered", || {
        distinct().len() >= 200
    });
    put_numbered(a.api, 200, 100);
    db.signal(9);
    db.wait_exit(Duration::from_secs(10)).unwrap();
    let killed = std::time::Instant::now();
    wait_until(
        Duration::from_secs(30),
        "the survivor holds every shard",
        || owned(&dc) == 4.0,
    );
    let moved = killed.elapsed();
    assert!(
        moved < Duration::from_secs(6),
        "leases moved in {moved:?}, more than twice the lease duration"
    );
    put_numbered(a.api, 300, 100);
    wait_until(Duration::from_secs(60), "400 records delivered", || {
        distinct().len() >= 400
    });
    assert_eq!(distinct(), expected(400), "nothing lost");
    eprintln!("leases moved in {moved:?}");
    let mut all = object_lines(lake.path());
    all.sort();
    assert_eq!(all, expected(400), "every record exactly once");
    dc.stop_cleanly();
    da.stop_cleanly();
}
