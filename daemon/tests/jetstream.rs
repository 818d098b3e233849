//! Streams kept on a NATS JetStream cluster (`storage = "jetstream"`, issue #12): a real
//! three-server cluster on loopback ports (nats-server from Debian), the real daemon in
//! front of it.
#![allow(clippy::unwrap_used)]

mod common;
use common::testing::NatsCluster;
use common::*;
use std::time::Duration;

fn daemon_config(cluster: &NatsCluster) -> String {
    let servers: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[jetstream]\nservers = [{}]\nreplicas = 3\nprefix = \"T\"\ntimeout = \"5s\"\n",
        servers.join(", ")
    )
}

const STREAM: &str = "[streams.events]\nshards = 2\nstorage = \"jetstream\"\n\n[pipelines.to-lake]\nsource = { plugin = \"stream\", stream = \"events\" }\n\n[pipelines.to-lake.buffer]\nsize = \"1MiB\"\ninterval = \"1s\"\n\n[pipelines.to-lake.sink]\nplugin = \"object-store\"\nurl = \"lake\"\nprefix = \"all/\"\ncompression = \"none\"\n";

/// Every record of the first `shards` shards the node serves now, sorted, read through
/// GetRecords from the trim horizon (another node's latest appends may take a moment to
/// show: see [`read_until`]).
fn read_shards(api: std::net::SocketAddr, shards: u32) -> Vec<String> {
    let mut out: Vec<String> = read_located(api, shards).into_iter().map(|r| r.2).collect();
    out.sort();
    out
}

/// Every record of the first `shards` shards with its shard id and sequence number.
fn read_located(api: std::net::SocketAddr, shards: u32) -> Vec<(String, String, String)> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for shard in (0..shards).map(|i| format!("shardId-{i:012}")) {
        let it = kinesis_ok(
            api,
            "GetShardIterator",
            &format!(
                r#"{{"StreamName":"events","ShardId":"{shard}","ShardIteratorType":"TRIM_HORIZON"}}"#
            ),
        );
        let mut it = serde_json::from_str::<serde_json::Value>(&it).unwrap()["ShardIterator"]
            .as_str()
            .unwrap()
            .to_string();
        loop {
            let got = kinesis_ok(api, "GetRecords", &format!(r#"{{"ShardIterator":"{it}"}}"#));
            let v: serde_json::Value = serde_json::from_str(&got).unwrap();
            let recs = v["Records"].as_array().unwrap();
            for r in recs {
                let d = base64::engine::general_purpose::STANDARD
                    .decode(r["Data"].as_str().unwrap())
                    .unwrap();
                out.push((
                    shard.clone(),
                    r["SequenceNumber"].as_str().unwrap().to_string(),
                    String::from_utf8(d).unwrap(),
                ));
            }
            // The end of what is there, or of a closed shard (no next iterator).
            match v["NextShardIterator"].as_str() {
                Some(next) if !recs.is_empty() => it = next.to_string(),
                _ => break,
            }
        }
    }
    out
}

/// What [`read_shards`] returns for both shards once it holds `n` records (waiting at most 30 s), as a
/// Kinesis consumer polls until records show up.
fn read_until(api: std::net::SocketAddr, n: usize) -> Vec<String> {
    read_shards_until(api, 2, n)
}

/// [`read_until`] over the first `shards` shards.
fn read_shards_until(api: std::net::SocketAddr, shards: u32, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    wait_until(
        Duration::from_secs(30),
        &format!("{n} records readable"),
        || {
            got = read_shards(api, shards);
            got.len() >= n
        },
    );
    got
}

/// The PutRecords body of records `{"id":"<id>"}`, each keyed by its id.
fn ids_body(ids: &[String]) -> String {
    use base64::Engine as _;
    let recs: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                r#"{{"Data":"{}","PartitionKey":"{id}"}}"#,
                base64::engine::general_purpose::STANDARD.encode(format!("{{\"id\":\"{id}\"}}"))
            )
        })
        .collect();
    format!(
        r#"{{"StreamName":"events","Records":[{}]}}"#,
        recs.join(",")
    )
}

/// A 200 PutRecords answer for `ids`: the ids stored, and those that failed alone (only
/// retryable errors are allowed), to be sent again.
fn sort_results(ids: &[String], out: &str) -> (Vec<String>, Vec<String>) {
    let v: serde_json::Value = serde_json::from_str(out).unwrap();
    let results = v["Records"].as_array().unwrap();
    let (mut stored, mut again) = (Vec::new(), Vec::new());
    for (id, r) in ids.iter().zip(results) {
        match r["ErrorCode"].as_str() {
            None => stored.push(id.clone()),
            Some(code) => {
                assert!(
                    code == "InternalFailure" || code == "ProvisionedThroughputExceededException",
                    "only retryable errors: {r}"
                );
                again.push(id.clone());
            }
        }
    }
    (stored, again)
}

/// The ids of the stream's records (`{"id":…}` lines).
fn ids_in(stream: &[String]) -> std::collections::BTreeSet<String> {
    stream
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The records of the first `shards` shards once every acknowledged id is among them
/// (waiting at most 30 s: a node shows another node's latest appends after a moment, and
/// a count alone can be reached early — retried records are in the stream twice). Fails
/// naming acknowledged ids still missing.
fn read_acked(
    api: std::net::SocketAddr,
    shards: u32,
    acked: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stream = read_shards(api, shards);
        let have = ids_in(&stream);
        if acked.is_subset(&have) {
            return stream;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "acknowledged but missing: {:?}",
            acked.difference(&have).take(5).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A stream on the cluster: records put through the Kinesis API are delivered to the
/// lake exactly once, nothing of them is on the node's disk, and a second node with an
/// empty data directory reads every one of them back after the first one was killed.
#[test]
fn a_jetstream_stream_keeps_its_records_in_the_cluster() {
    let cluster = NatsCluster::start(3);
    let s = Setup::new(&daemon_config(&cluster), &[("events", STREAM)]);
    let mut d = s.start();
    d.wait_ready();
    put_numbered(s.api, 0, 150);
    put_numbered(s.api, 150, 150);
    wait_until(Duration::from_secs(60), "300 records in the lake", || {
        object_lines(&s.path("lake")).len() >= 300
    });
    let mut lines = object_lines(&s.path("lake"));
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), 300, "each record once");
    // The stream's folder holds its settings, no shard log.
    let local: Vec<_> = files_under(&s.path("var/streams/events"))
        .into_iter()
        .filter(|p| !p.ends_with("stream.json"))
        .collect();
    assert!(local.is_empty(), "records on the node's disk: {local:?}");
    let before = read_until(s.api, 300);
    assert_eq!(before.len(), 300);
    let text = d.metrics_text();
    assert_promtool_accepts(&text);
    assert!(
        metric_sum(
            &text,
            "sluice_jetstream_publish_seconds_count",
            &["stream=\"events\""]
        ) >= 2.0,
        "publish latency is measured per append"
    );
    assert_eq!(metric_sum(&text, "sluice_jetstream_connected", &[]), 1.0);
    d.signal(9);
    d.wait_exit(Duration::from_secs(10)).unwrap();

    // Another node: a fresh data directory, the same cluster.
    let s2 = Setup::new(&daemon_config(&cluster), &[("events", STREAM)]);
    let mut d2 = s2.start();
    d2.wait_ready();
    assert_eq!(
        read_until(s2.api, 300),
        before,
        "every record, from the cluster"
    );
    put_numbered(s2.api, 300, 10);
    assert_eq!(
        read_until(s2.api, 310).len(),
        310,
        "numbering goes on past the first node's"
    );
    d2.stop_cleanly();
}

/// Two nodes in front of one cluster at once: producers write through both (every call
/// acknowledged: a node that meets the other's appends numbers again), and each node
/// reads every record of both, once.
#[test]
fn two_nodes_serve_one_stream_at_once() {
    let cluster = NatsCluster::start(3);
    let a = Setup::new(&daemon_config(&cluster), &[("events", &stream_only(2))]);
    let b = Setup::new(&daemon_config(&cluster), &[("events", &stream_only(2))]);
    let mut da = a.start();
    da.wait_ready();
    let mut db = b.start();
    db.wait_ready();
    for round in 0..10 {
        put_numbered(a.api, round * 40, 20);
        put_numbered(b.api, round * 40 + 20, 20);
    }
    let from_a = read_until(a.api, 400);
    assert_eq!(from_a.len(), 400);
    let mut distinct = from_a.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 400, "each record once");
    assert_eq!(read_until(b.api, 400), from_a);
    assert!(
        da.metric("sluice_jetstream_errors_total", &["op=\"conflict\""])
            + db.metric("sluice_jetstream_errors_total", &["op=\"conflict\""])
            >= 1.0,
        "the nodes met each other's appends"
    );
    da.stop_cleanly();
    db.stop_cleanly();
}

/// Shard leases: two nodes run the same pipeline over a 4-shard stream on the cluster and
/// share the shards (2 each); one is killed and the other takes its shards within twice
/// the lease duration; every record put through either node reaches one of the two lakes.
#[test]
fn two_nodes_share_a_pipelines_shards_by_lease_and_take_over() {
    let cluster = NatsCluster::start(3);
    // One lake for both nodes, as a shared S3 bucket would be.
    let lake = tempfile::tempdir().unwrap();
    let stream4 = STREAM.replace("shards = 2", "shards = 4").replace(
        "url = \"lake\"",
        &format!("url = \"{}\"", lake.path().display()),
    );
    // Twice the lease is the bound for a takeover; 4 s leaves room for a busy machine.
    let config = daemon_config(&cluster) + "lease_duration = \"4s\"\n";
    let a = Setup::new(&config, &[("events", &stream4)]);
    let b = Setup::new(&config, &[("events", &stream4)]);
    let mut da = a.start();
    da.wait_ready();
    let mut db = b.start();
    db.wait_ready();
    let owned = |d: &Daemon| d.metric("sluice_lease_owned", &["pipeline=\"to-lake\""]);
    wait_until(Duration::from_secs(30), "two shards each", || {
        owned(&da) == 2.0 && owned(&db) == 2.0
    });
    let delivered = || object_lines(lake.path());
    put_numbered(a.api, 0, 200);
    put_numbered(b.api, 200, 200);
    wait_until(Duration::from_secs(60), "400 records delivered", || {
        delivered().len() >= 400
    });
    // (The counter moves once the sink has stored the object, just after it is visible.)
    wait_until(
        Duration::from_secs(10),
        "each node delivered its shards' records",
        || {
            da.metric("sluice_sink_objects_total", &["pipeline=\"to-lake\""]) > 0.0
                && db.metric("sluice_sink_objects_total", &["pipeline=\"to-lake\""]) > 0.0
        },
    );
    // Killed with records delivered but not yet checkpointed, and more on the way.
    put_numbered(a.api, 400, 100);
    da.signal(9);
    da.wait_exit(Duration::from_secs(10)).unwrap();
    let killed = std::time::Instant::now();
    wait_until(
        Duration::from_secs(30),
        "the survivor holds every shard",
        || owned(&db) == 4.0,
    );
    let moved = killed.elapsed();
    assert!(
        moved < Duration::from_secs(8),
        "leases moved in {moved:?}, more than twice the lease duration"
    );
    assert!(db.metric("sluice_lease_takeovers_total", &["pipeline=\"to-lake\""]) >= 2.0);
    // `sluiced status` shows which of this node's pipelines hold each shard's lease.
    let (code, out, err) = b.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    let leased = out
        .lines()
        .filter(|l| l.contains("shardId-") && l.trim_end().ends_with("to-lake"))
        .count();
    assert_eq!(leased, 4, "{out}");
    put_numbered(b.api, 500, 100);
    wait_until(Duration::from_secs(60), "600 records delivered", || {
        delivered().len() >= 600
    });
    let mut all = delivered();
    all.sort();
    let expected: Vec<String> = {
        let mut e: Vec<String> = (0..600).map(|i| format!("{{\"n\":{i}}}")).collect();
        e.sort();
        e
    };
    assert_eq!(
        all, expected,
        "every record delivered once across the takeover"
    );
    eprintln!("leases moved in {moved:?}; 600 records delivered once each");
    db.stop_cleanly();
}

/// `storage = "jetstream"` without a `[jetstream]` table, and a bad `[jetstream]` table,
/// are refused with file, line and column.
#[test]
fn jetstream_settings_are_checked_with_file_line_and_column() {
    let s = Setup::new("", &[("events", STREAM)]);
    let (code, _, err) = s.cli(&["check"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("events.toml:3:"), "{err}");
    assert!(err.contains("needs a [jetstream] table"), "{err}");
    for (table, want) in [
        ("[jetstream]\nservers = []\n", "at least one server"),
        (
            "[jetstream]\nservers = [\"nats://h\"]\n",
            "is not a server address",
        ),
        (
            "[jetstream]\nservers = [\"nats://h:4222\"]\nreplicas = 7\n",
            "between 1 and 5",
        ),
        (
            "[jetstream]\nservers = [\"nats://h:4222\"]\nprefix = \"a.b\"\n",
            "letters, digits",
        ),
        (
            "[jetstream]\nservers = [\"nats://h:4222\"]\nuser = \"u\"\n",
            "user needs a password",
        ),
        (
            "[jetstream]\nservers = [\"nats://h:4222\"]\nuser = \"u\"\npassword = \"p\"\ntoken = \"t\"\n",
            "choose one way to authenticate",
        ),
        (
            "[jetstream]\nservers = [\"nats://h:4222\"]\ntoken = \"t\"\nnkey_seed_file = \"u.nk\"\n",
            "choose one way to authenticate",
        ),
        (
            "[jetstream]\nservers = [\"nats://h:4222\"]\nuser = \"u\"\npassword = \"p\"\ncredentials_file = \"a.creds\"\n",
            "choose one way to authenticate",
        ),
        (
            "[jetstream]\nservers = [\"nats://h:4222\"]\ncert_file = \"c.pem\"\n",
            "cert_file needs key_file",
        ),
        (
            "[jetstream]\nservers = [\"nats://h:4222\"]\nsecure = true\n",
            "unknown field",
        ),
        (
            "[jetstream]\nservers = [\"nats://h:4222\"]\napi_streams = \"cluster\"\n",
            "expected `log` or `jetstream`",
        ),
    ] {
        let s = Setup::new(table, &[]);
        let (code, _, err) = s.cli(&["check"]);
        assert_eq!(code, 1, "{table}: {err}");
        assert!(err.contains(want), "{table}: `{want}` not in {err}");
        assert!(err.contains("sluiced.toml:"), "{table}: {err}");
    }
}

/// `/readyz` fails while the cluster is unreachable, and PutRecords answers with a
/// retryable error (500, InternalFailure) instead of losing the records.
#[test]
fn an_unreachable_cluster_fails_readiness_and_puts_retryably() {
    let mut cluster = NatsCluster::start(1);
    let config = daemon_config(&cluster).replace("replicas = 3", "replicas = 1");
    let s = Setup::new(&config, &[("events", STREAM)]);
    let mut d = s.start();
    d.wait_ready();
    put_numbered(s.api, 0, 5);
    cluster.stop(0);
    wait_until(Duration::from_secs(30), "/readyz failing", || {
        d.get("/readyz")
            .is_some_and(|(code, body)| code == 503 && body.contains("JetStream"))
    });
    let (code, out) = kinesis(
        s.api,
        "PutRecord",
        r#"{"StreamName":"events","Data":"eA==","PartitionKey":"k"}"#,
    );
    assert_eq!(code, 500, "{out}");
    assert!(out.contains("InternalFailure"), "{out}");
    wait_until(Duration::from_secs(10), "the connection gauge at 0", || {
        d.metric("sluice_jetstream_connected", &[]) == 0.0
    });
    assert!(d.metric("sluice_jetstream_errors_total", &["op=\"publish\""]) >= 1.0);
    d.stop_cleanly();
}

/// The fault test for the storage: producers keep writing while one of the three
/// nats-server processes is killed (SIGKILL) and later started again. Every call is
/// either acknowledged or answered with a retryable error (500 InternalFailure; retried
/// as the SDKs do), every acknowledged record is in the stream, and the pipeline delivers
/// exactly what the stream holds, each record once.
#[test]
fn a_server_killed_and_restarted_loses_no_acknowledged_record() {
    let mut cluster = NatsCluster::start(3);
    let s = Setup::new(&daemon_config(&cluster), &[("events", STREAM)]);
    let mut d = s.start();
    d.wait_ready();
    let mut acked = std::collections::BTreeSet::new();
    let mut retried = 0;
    let mut partial = 0;
    let mut killed = None;
    for batch in 0..60usize {
        if batch == 20 {
            // The leader of shard 0's Raft group: its writes must move to another server.
            let leader = cluster.leader_of("Tevents_shardId-000000000000").unwrap();
            cluster.stop(leader);
            killed = Some(leader);
            wait_until(
                Duration::from_secs(30),
                "another leader for shard 0",
                || {
                    cluster
                        .leader_of("Tevents_shardId-000000000000")
                        .is_some_and(|l| l != leader)
                },
            );
        }
        if batch == 40 {
            cluster.restart(killed.unwrap());
        }
        // Retried as the SDKs do: the whole call after a 500, only the records that
        // failed after a 200 with FailedRecordCount.
        let mut pending: Vec<String> = (0..25).map(|i| format!("{batch}-{i}")).collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !pending.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "batch {batch} never acknowledged"
            );
            let (code, out) = kinesis(s.api, "PutRecords", &ids_body(&pending));
            if code != 200 {
                assert!(
                    code == 500 && out.contains("InternalFailure"),
                    "only retryable errors: {code} {out}"
                );
                retried += 1;
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let (stored, again) = sort_results(&pending, &out);
            acked.extend(stored);
            partial += again.len();
            pending = again;
        }
    }
    let stream: Vec<String> = read_acked(s.api, 2, &acked);
    wait_until(Duration::from_secs(60), "the lake holds the stream", || {
        object_lines(&s.path("lake")).len() >= stream.len()
    });
    let mut lake = object_lines(&s.path("lake"));
    lake.sort();
    assert_eq!(
        lake, stream,
        "the lake holds what the stream holds, each once"
    );
    eprintln!(
        "{} records acknowledged, {retried} calls failed whole, {partial} records failed alone, {} records in the stream; killed n{killed:?}",
        acked.len(),
        stream.len()
    );
    d.stop_cleanly();
}

/// What one producer thread saw: the records acknowledged, those whose call broke off
/// (their fate unknown: not retried, so a retry never doubles them), and the errors.
#[derive(Default)]
struct Produced {
    acked: Vec<String>,
    unknown: usize,
    retried_calls: usize,
    failed_records: usize,
}

/// Puts batches of 25 records (`{"id":"<node>-<batch>-<i>"}`) through `api` until `stop`,
/// retried as the SDKs retry: the whole call after a 500, only the failed records after a
/// 200 with `FailedRecordCount`. Any other answer fails the test: producers may see only
/// retryable errors.
fn produce(
    api: std::net::SocketAddr,
    node: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Produced {
    let mut p = Produced::default();
    let mut batch = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let mut pending: Vec<String> = (0..25).map(|i| format!("{node}-{batch}-{i}")).collect();
        batch += 1;
        while !pending.is_empty() && !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let body = ids_body(&pending);
            let Some((code, _, out)) = aws_call(api, "Kinesis_20131202.PutRecords", &body) else {
                // The node is down (or went down mid-call): another attempt might store
                // these twice, so they are left out of the count.
                p.unknown += pending.len();
                pending.clear();
                std::thread::sleep(Duration::from_millis(200));
                break;
            };
            if code != 200 {
                assert!(
                    code == 500 && out.contains("InternalFailure"),
                    "only retryable errors: {code} {out}"
                );
                p.retried_calls += 1;
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let (stored, again) = sort_results(&pending, &out);
            p.acked.extend(stored);
            p.failed_records += again.len();
            pending = again;
        }
        // A steady producer, not a flood: the machine has two cores for everything.
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

/// Issue #12's fault test: three nats-server nodes, three sluiced nodes sharing one
/// pipeline's six shards by lease, a producer on every front end. One sluiced node is
/// SIGKILLed, later one nats-server; both come back. Every acknowledged record is in the
/// lake exactly once (the lake holds exactly what the stream holds), the leases moved
/// within twice the lease duration, and the producers saw only retryable errors.
#[test]
fn three_nodes_lose_a_node_and_a_server_and_deliver_every_record_once() {
    let mut cluster = NatsCluster::start(3);
    let lake = tempfile::tempdir().unwrap();
    let stream = STREAM.replace("shards = 2", "shards = 6").replace(
        "url = \"lake\"",
        &format!("url = \"{}\"", lake.path().display()),
    );
    let config = daemon_config(&cluster) + "lease_duration = \"4s\"\n";
    let nodes: Vec<Setup> = (0..3)
        .map(|_| Setup::new(&config, &[("events", &stream)]))
        .collect();
    let mut daemons: Vec<Daemon> = nodes.iter().map(Setup::start).collect();
    for d in &mut daemons {
        d.wait_ready();
    }
    let owned = |d: &Daemon| d.metric("sluice_lease_owned", &["pipeline=\"to-lake\""]);
    wait_until(Duration::from_secs(60), "two shards each", || {
        daemons.iter().all(|d| owned(d) == 2.0)
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let (api, stop) = (s.api, stop.clone());
            std::thread::spawn(move || produce(api, n, stop))
        })
        .collect();
    let lines = || object_lines(lake.path()).len();
    let progress = |what: &str, more: usize| {
        let from = lines();
        wait_until(Duration::from_secs(90), what, || lines() >= from + more);
    };
    progress("records delivered", 300);

    daemons[0].signal(9);
    daemons[0].wait_exit(Duration::from_secs(10)).unwrap();
    let killed = std::time::Instant::now();
    wait_until(
        Duration::from_secs(30),
        "the two others hold every shard",
        || owned(&daemons[1]) + owned(&daemons[2]) == 6.0,
    );
    let moved = killed.elapsed();
    assert!(
        moved < Duration::from_secs(8),
        "leases moved in {moved:?}, more than twice the lease duration"
    );
    progress("records delivered by the two others", 300);

    cluster.stop(1);
    progress("records delivered with a server down", 300);
    cluster.restart(1);
    daemons[0] = nodes[0].start();
    daemons[0].wait_ready();
    // The returning node gets its share back from the busy ones.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !daemons.iter().all(|d| owned(d) == 2.0) {
        if std::time::Instant::now() > deadline {
            for d in &daemons {
                let e = d.stderr();
                let tail: Vec<&str> = e.lines().rev().take(40).collect();
                eprintln!(
                    "---- owned {}\n{}",
                    owned(d),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            panic!("not two shards each again");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    progress("records delivered by three nodes again", 300);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let produced: Vec<Produced> = producers.into_iter().map(|h| h.join().unwrap()).collect();
    let acked: std::collections::BTreeSet<String> = produced
        .iter()
        .flat_map(|p| p.acked.iter().cloned())
        .collect();
    let stream = read_acked(nodes[1].api, 6, &acked);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while lines() < stream.len() {
        if std::time::Instant::now() > deadline {
            let lake: std::collections::BTreeSet<String> =
                object_lines(lake.path()).into_iter().collect();
            let missing: Vec<&String> = stream.iter().filter(|l| !lake.contains(*l)).collect();
            for (shard, seq, data) in read_located(nodes[1].api, 6) {
                if missing.contains(&&data) {
                    eprintln!("missing: {data} at {shard} {seq}");
                }
            }
            for d in &daemons {
                let e = d.stderr();
                let notable: Vec<&str> = e
                    .lines()
                    .filter(|l| !l.contains(" INFO ") || l.contains("lease") || l.contains("shard"))
                    .collect();
                eprintln!("----\n{}", notable.join("\n"));
            }
            panic!(
                "the lake lacks {} of the stream's {} records, e.g. {:?}",
                missing.len(),
                stream.len(),
                missing.iter().take(5).collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut lake_lines = object_lines(lake.path());
    lake_lines.sort();
    if lake_lines != stream {
        let mut seen = std::collections::BTreeSet::new();
        let twice: Vec<&String> = lake_lines
            .iter()
            .filter(|l| !seen.insert(*l))
            .take(5)
            .collect();
        panic!(
            "the lake ({} lines) is not the stream ({} records); twice: {twice:?}",
            lake_lines.len(),
            stream.len()
        );
    }
    eprintln!(
        "leases moved in {moved:?}; {} records acknowledged, {} in the stream and the lake once each; {} of unknown fate (calls cut by the kill); {} calls retried whole, {} records retried alone",
        acked.len(),
        stream.len(),
        produced.iter().map(|p| p.unknown).sum::<usize>(),
        produced.iter().map(|p| p.retried_calls).sum::<usize>(),
        produced.iter().map(|p| p.failed_records).sum::<usize>(),
    );
    for d in &mut daemons {
        d.stop_cleanly();
    }
}

/// Makes a CA and a server certificate for 127.0.0.1 with the `openssl` program in `dir`;
/// returns (ca.pem, server.pem, server.key).
fn test_certificates(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (scripts/install-test-deps installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=sluice test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// `[jetstream]` with TLS (the servers' CA in `ca_file`) and a user and password: records
/// go through as without them; a wrong password, or no TLS, is a clear error at start.
#[test]
fn a_cluster_behind_tls_and_a_password_keeps_the_streams() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(certs.path());
    let cluster = NatsCluster::start_with(
        1,
        &format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\nauthorization {{\n  user: sluice\n  password: \"s3cret\"\n}}\n",
            cert.display(),
            key.display()
        ),
    );
    let servers: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let base = format!(
        "[jetstream]\nservers = [{}]\nreplicas = 1\nprefix = \"A\"\ntimeout = \"5s\"\n",
        servers.join(", ")
    );
    let good = format!(
        "{base}user = \"sluice\"\npassword = \"s3cret\"\nca_file = \"{}\"\n",
        ca.display()
    );
    let refused = "cannot connect to the JetStream cluster";
    serves_with_and_refuses(
        &good,
        &[
            (
                "a wrong password",
                format!(
                    "{base}user = \"sluice\"\npassword = \"nope\"\nca_file = \"{}\"\n",
                    ca.display()
                ),
                refused.into(),
            ),
            (
                "no TLS",
                format!("{base}user = \"sluice\"\npassword = \"s3cret\"\n"),
                refused.into(),
            ),
        ],
    );
}

/// A node started with `good` stores and reads 50 records; each of `bad` (what, config,
/// part of the error) keeps sluiced from starting, with that error.
fn serves_with_and_refuses(good: &str, bad: &[(&str, String, String)]) {
    let s = Setup::new(good, &[("events", STREAM)]);
    let mut d = s.start();
    d.wait_ready();
    put_numbered(s.api, 0, 50);
    assert_eq!(read_until(s.api, 50).len(), 50);
    d.stop_cleanly();
    for (what, config, want) in bad {
        let s = Setup::new(config, &[("events", STREAM)]);
        let mut d = s.start();
        let st = d.wait_exit(Duration::from_secs(60));
        assert!(
            st.is_some_and(|st| !st.success()),
            "{what}: sluiced must not start"
        );
        let err = d.stderr();
        assert!(err.contains(want.as_str()), "{what}: `{want}` not in {err}");
    }
}

/// `[jetstream] nkey_seed_file`: servers whose users are NKeys take the node that signs
/// their nonce with the user's seed; a seed of another user is refused by the servers, and
/// a file that holds no seed is named in the error, before any connection.
#[test]
fn a_cluster_with_nkey_users_takes_the_node_holding_the_seed() {
    let user = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let cluster = NatsCluster::start_with(
        1,
        &format!(
            "authorization {{\n  users: [ {{ nkey: {} }} ]\n}}\n",
            user.public_key()
        ),
    );
    let keys = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = keys.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let good = write("node.nk", &format!("{}\n", user.seed().unwrap()));
    let other = write("other.nk", &stranger.seed().unwrap());
    let garbage = write("garbage.nk", "SUNOTASEED\n");
    let public = write("public.nk", &user.public_key());
    let servers: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let base = format!(
        "[jetstream]\nservers = [{}]\nreplicas = 1\nprefix = \"N\"\ntimeout = \"5s\"\n",
        servers.join(", ")
    );
    let seed_line = |p: &std::path::Path| format!("{base}nkey_seed_file = \"{}\"\n", p.display());
    let missing = keys.path().join("missing.nk");
    serves_with_and_refuses(
        &seed_line(&good),
        &[
            (
                "another user's seed",
                seed_line(&other),
                "cannot connect to the JetStream cluster".into(),
            ),
            (
                "a broken seed",
                seed_line(&garbage),
                format!(
                    "nkey_seed_file {}: not a valid NKey seed",
                    garbage.display()
                ),
            ),
            (
                "a public key",
                seed_line(&public),
                format!("nkey_seed_file {}: not an NKey user seed", public.display()),
            ),
            (
                "no file",
                seed_line(&missing),
                format!("nkey_seed_file {}", missing.display()),
            ),
        ],
    );
}

/// A NATS JWT (v2) for `subject`, signed by `issuer`: what `nsc` makes, for the
/// operator-mode test below.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "jti": format!("{name}{now}"), "iat": now, "iss": issuer.public_key(),
        "name": name, "sub": subject, "nats": nats,
    });
    let signed = format!(
        "{}.{}",
        b64.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#),
        b64.encode(claims.to_string())
    );
    let sig = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64.encode(sig))
}

/// `[jetstream] credentials_file`: an operator-mode server (operator, account with
/// JetStream and user as JWTs, like `nsc` makes) takes the node holding the user's
/// `.creds`; a user of an account the server does not know is refused; a file that is
/// not a credentials file is named in the error.
#[test]
fn an_operator_mode_cluster_takes_the_node_holding_its_credentials() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let system = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
    });
    let mut with_js = unlimited.clone();
    for k in ["mem_storage", "disk_storage", "streams", "consumer"] {
        with_js[k] = serde_json::json!(-1);
    }
    let op_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "op",
        serde_json::json!({"type": "operator", "version": 2, "system_account": system.public_key()}),
    );
    let acc_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        "acc",
        serde_json::json!({"limits": with_js, "type": "account", "version": 2}),
    );
    let sys_jwt = nats_jwt(
        &operator,
        &system.public_key(),
        "sys",
        serde_json::json!({"limits": unlimited, "type": "account", "version": 2}),
    );
    let user_claims = serde_json::json!({
        "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
        "type": "user", "version": 2,
    });
    let creds = |acc: &nkeys::KeyPair, user: &nkeys::KeyPair| {
        let jwt = nats_jwt(acc, &user.public_key(), "node", user_claims.clone());
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        )
    };
    let cluster = NatsCluster::start_with(
        1,
        &format!(
            "operator: {op_jwt}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {acc_jwt}\n  {}: {sys_jwt}\n}}\n",
            system.public_key(),
            account.public_key(),
            system.public_key()
        ),
    );
    let keys = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = keys.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let good = write("node.creds", &creds(&account, &user));
    let unknown = write(
        "unknown.creds",
        &creds(&nkeys::KeyPair::new_account(), &user),
    );
    let seed_only = write("seed.creds", &user.seed().unwrap());
    let servers: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let base = format!(
        "[jetstream]\nservers = [{}]\nreplicas = 1\nprefix = \"C\"\ntimeout = \"5s\"\n",
        servers.join(", ")
    );
    let creds_line =
        |p: &std::path::Path| format!("{base}credentials_file = \"{}\"\n", p.display());
    serves_with_and_refuses(
        &creds_line(&good),
        &[
            (
                "a user of an unknown account",
                creds_line(&unknown),
                "cannot connect to the JetStream cluster".into(),
            ),
            (
                "a bare seed",
                creds_line(&seed_only),
                format!("credentials_file {}: ", seed_only.display()),
            ),
        ],
    );
}

/// A stream of `n` shards on the cluster, without pipelines.
fn stream_only(n: u32) -> String {
    format!("[streams.events]\nshards = {n}\nstorage = \"jetstream\"\n")
}

/// How many shards are open (no ending sequence number) in [`shard_list`].
fn open_shards(api: std::net::SocketAddr) -> usize {
    shard_list(api)
        .iter()
        .filter(|s| s.ends_with("null"))
        .count()
}

/// Every record of every shard ListShards shows, sorted.
fn all_records(api: std::net::SocketAddr) -> Vec<String> {
    read_shards(api, shard_list(api).len() as u32)
}

/// The shards ListShards shows through `api`: id, parents, hash-key range and (closed
/// ones) ending sequence number — what every node must agree on.
fn shard_list(api: std::net::SocketAddr) -> Vec<String> {
    let out = kinesis_ok(api, "ListShards", r#"{"StreamName":"events"}"#);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["Shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {} {} {}-{} {}",
                s["ShardId"],
                s["ParentShardId"],
                s["AdjacentParentShardId"],
                s["HashKeyRange"]["StartingHashKey"],
                s["HashKeyRange"]["EndingHashKey"],
                s["SequenceNumberRange"]["EndingSequenceNumber"]
            )
        })
        .collect()
}

/// Resharding on a cluster (issue #12): node A's `shards` goes from 2 to 3 (a reload)
/// while a producer writes through node B; B takes the new topology at once (its appends
/// to sealed parents are routed again, to the children), both nodes list the same shards
/// with the same ends, every acknowledged record reads back the same from either node,
/// and the pipeline the nodes share by lease delivers each record to the lake once. B's
/// file then says 3 too (nothing to do), later 2: B reshards through the
/// topology A wrote and A follows. A third node started afterwards with an empty data
/// directory and a file that says 4 serves the topology the others made.
#[test]
fn a_resharding_on_one_node_is_every_nodes() {
    let cluster = NatsCluster::start(3);
    // A pipeline on every node shares the shards by lease and delivers to one lake.
    let lake = tempfile::tempdir().unwrap();
    let stream = |n: u32| {
        STREAM
            .replace("shards = 2", &format!("shards = {n}"))
            .replace(
                "url = \"lake\"",
                &format!("url = \"{}\"", lake.path().display()),
            )
    };
    let nodes: Vec<Setup> = (0..3)
        .map(|i| {
            Setup::new(
                &daemon_config(&cluster),
                &[("events", &stream(if i == 2 { 4 } else { 2 }))],
            )
        })
        .collect();
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut da = a.start();
    da.wait_ready();
    let mut db = b.start();
    db.wait_ready();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (api, stop) = (b.api, stop.clone());
        std::thread::spawn(move || produce(api, 1, stop))
    };
    let reshard = |s: &Setup, d: &Daemon, n: u32| {
        s.write_pipeline("events", &stream(n));
        let (code, body) = d.post("/admin/reload").unwrap();
        assert_eq!(code, 200, "{body}");
    };
    wait_until(Duration::from_secs(30), "records through B", || {
        all_records(a.api).len() >= 100
    });
    reshard(a, &da, 3);
    // `open` shards open in the list of the node that resharded, the same list on the
    // other node soon, and more records on top.
    let settled = |on: &Setup, other: &Setup, open: usize| {
        let list = shard_list(on.api);
        assert_eq!(open_shards(on.api), open, "{list:?}");
        wait_until(Duration::from_secs(10), "the other node lists them", || {
            shard_list(other.api) == list
        });
        let more = all_records(on.api).len() + 100;
        wait_until(Duration::from_secs(30), "records after it", || {
            all_records(on.api).len() >= more
        });
        list
    };
    let three = settled(a, b, 3);
    assert!(
        three
            .iter()
            .any(|s| s.starts_with("\"shardId-000000000000\"") && !s.ends_with("null")),
        "shard 0 closed with an end: {three:?}"
    );
    reshard(b, &db, 3);
    assert_eq!(shard_list(b.api), three, "the same count: nothing to do");
    reshard(b, &db, 2);
    let two = settled(b, a, 2);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let produced = producer.join().unwrap();
    let acked: std::collections::BTreeSet<String> = produced.acked.iter().cloned().collect();
    let shards = two.len() as u32;
    let from_a = read_acked(a.api, shards, &acked);
    let from_b = read_acked(b.api, shards, &acked);
    assert_eq!(from_a, from_b, "both nodes read the same records");
    // Parents read to their ends before their children, by whichever node held them:
    // every record of the stream in the lake, once.
    wait_until(Duration::from_secs(60), "the lake holds the stream", || {
        object_lines(lake.path()).len() >= from_a.len()
    });
    let mut in_lake = object_lines(lake.path());
    in_lake.sort();
    assert_eq!(
        in_lake, from_a,
        "the lake holds every record of the stream once"
    );
    // A node joining later serves the topology the others made, not its file's 4.
    let mut dc = nodes[2].start();
    dc.wait_ready();
    assert_eq!(shard_list(nodes[2].api), two);
    assert_eq!(read_acked(nodes[2].api, shards, &acked), from_a);
    eprintln!(
        "{} records acknowledged through B ({} calls retried); {} in the stream",
        acked.len(),
        produced.retried_calls,
        from_a.len()
    );
    for d in [&mut da, &mut db, &mut dc] {
        d.stop_cleanly();
    }
}

/// A node killed in the middle of a resharding — its parents sealed, the new topology not
/// written — leaves a plan pending in the cluster: the other node completes it once it is
/// stale (10 s), and the producer writing through that node saw only retryable errors and
/// lost nothing.
#[test]
fn a_resharding_left_unfinished_by_a_dead_node_is_completed_by_another() {
    let cluster = NatsCluster::start(1);
    let config = daemon_config(&cluster).replace("replicas = 3", "replicas = 1");
    let a = Setup::new(&config, &[("events", &stream_only(2))]);
    let b = Setup::new(&config, &[("events", &stream_only(2))]);
    let mut da = a.start_env(&[("SLUICE_FAILPOINTS", "reshard-sealed")]);
    da.wait_ready();
    let mut db = b.start();
    db.wait_ready();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (api, stop) = (b.api, stop.clone());
        std::thread::spawn(move || produce(api, 1, stop))
    };
    wait_until(Duration::from_secs(30), "records through B", || {
        read_shards(b.api, 2).len() >= 100
    });
    a.write_pipeline("events", &stream_only(4));
    let _ = da.post("/admin/reload");
    let st = da
        .wait_exit(Duration::from_secs(30))
        .expect("the failpoint fired (built with `--features sluiced/failpoints`)");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{}", da.stderr());
    let killed = std::time::Instant::now();
    wait_until(
        Duration::from_secs(30),
        "B completed the resharding",
        || open_shards(b.api) == 4,
    );
    eprintln!("completed {:?} after the kill", killed.elapsed());
    let n = all_records(b.api).len() + 100;
    wait_until(
        Duration::from_secs(30),
        "records into the new shards",
        || all_records(b.api).len() >= n,
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let produced = producer.join().unwrap();
    let acked: std::collections::BTreeSet<String> = produced.acked.iter().cloned().collect();
    let shards = shard_list(b.api).len() as u32;
    read_acked(b.api, shards, &acked);
    assert!(
        db.stderr()
            .contains("completing a resharding another node left unfinished"),
        "{}",
        db.stderr()
    );
    db.stop_cleanly();
}

/// A node's `shards` changed while it was down reshards at its start (the count last
/// applied is kept in its `stream.json`); started again unchanged, it leaves the cluster's
/// topology as it is.
#[test]
fn a_shard_count_changed_while_down_reshards_at_start() {
    let cluster = NatsCluster::start(1);
    let config = daemon_config(&cluster).replace("replicas = 3", "replicas = 1");
    let s = Setup::new(&config, &[("events", &stream_only(2))]);
    let mut d = s.start();
    d.wait_ready();
    assert_eq!(open_shards(s.api), 2);
    d.stop_cleanly();
    s.write_pipeline("events", &stream_only(3));
    let mut d = s.start();
    d.wait_ready();
    assert_eq!(open_shards(s.api), 3, "{:?}", shard_list(s.api));
    d.stop_cleanly();
    let mut d = s.start();
    d.wait_ready();
    assert_eq!(open_shards(s.api), 3);
    d.stop_cleanly();
}

/// The streams a node lists (ListStreams).
fn listed(api: std::net::SocketAddr) -> Vec<String> {
    let out = kinesis_ok(api, "ListStreams", "{}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["StreamNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

/// Waits until the Kinesis API at `api` answers (at most 30 s).
fn wait_api(api: std::net::SocketAddr) {
    wait_until(Duration::from_secs(30), "the API answers", || {
        aws_call(api, "Kinesis_20131202.ListStreams", "{}").is_some_and(|r| r.0 == 200)
    });
}

/// A sequence number as a sortable key (decimal strings: longer is larger).
fn seq_key(s: &str) -> (usize, String) {
    (s.len(), s.to_string())
}

/// Streams made through the API on the cluster (`api_streams = "jetstream"`, issue #12):
/// CreateStream on node A is served by node B within seconds (PutRecords through either,
/// the same records read through either); tags, retention and a resharding made through
/// one node are the other's; a restarted node serves the stream again with nothing of it on
/// its disk; DeleteStream through B removes it from A; a stream made again under the name
/// numbers above every record of the deleted one and holds none of them; a second
/// CreateStream of a name any node made is refused. A pipeline on both nodes, configured
/// before the stream exists, shares its shards by lease and delivers every record of both
/// streams to one lake exactly once. Driven with the AWS CLI.
#[test]
fn a_stream_made_through_the_api_is_every_nodes() {
    let cluster = NatsCluster::start(3);
    let config = format!("{}api_streams = \"jetstream\"\n", daemon_config(&cluster));
    let lake = tempfile::tempdir().unwrap();
    let pipeline = STREAM
        .split_once("[pipelines.")
        .map(|(_, p)| format!("[pipelines.{p}"))
        .unwrap()
        .replace(
            "url = \"lake\"",
            &format!("url = \"{}\"", lake.path().display()),
        );
    let a = Setup::new(&config, &[("to-lake", &pipeline)]);
    let b = Setup::new(&config, &[("to-lake", &pipeline)]);
    let delivered = || {
        let mut l = object_lines(lake.path());
        l.sort();
        l
    };
    let numbered = |r: std::ops::Range<usize>| {
        let mut e: Vec<String> = r.map(|i| format!("{{\"n\":{i}}}")).collect();
        e.sort();
        e
    };
    let (da, db) = (a.start(), b.start());
    // (Not ready: their pipeline waits for its stream.)
    wait_api(a.api);
    wait_api(b.api);
    let (ea, eb) = (format!("http://{}", a.api), format!("http://{}", b.api));
    aws_cli(
        &ea,
        &[
            "kinesis",
            "create-stream",
            "--stream-name",
            "events",
            "--shard-count",
            "2",
            "--tags",
            "owner=ops",
        ],
    );
    wait_until(
        Duration::from_secs(10),
        "B serves the stream A made",
        || listed(b.api) == ["events"],
    );
    // With the tags it was made with, from the start.
    assert!(aws_cli(
        &eb,
        &["kinesis", "list-tags-for-stream", "--stream-name", "events"],
    )
    .contains("ops"));
    // A node whose file declares a stream of the name on the cluster refuses to start.
    let c = Setup::new(&config, &[("events", &stream_only(2))]);
    let mut dc = c.start();
    assert!(dc
        .wait_exit(Duration::from_secs(30))
        .is_some_and(|s| !s.success()));
    assert!(
        dc.stderr()
            .contains("was made through the API on the JetStream cluster"),
        "{}",
        dc.stderr()
    );
    put_numbered(b.api, 0, 50);
    put_numbered(a.api, 50, 50);
    let from_a = read_until(a.api, 100);
    assert_eq!(from_a.len(), 100);
    assert_eq!(read_until(b.api, 100), from_a);

    // Settings made through one node are the other's.
    aws_cli(
        &ea,
        &[
            "kinesis",
            "add-tags-to-stream",
            "--stream-name",
            "events",
            "--tags",
            "team=data",
        ],
    );
    wait_until(Duration::from_secs(10), "B has A's tag", || {
        aws_cli(
            &eb,
            &["kinesis", "list-tags-for-stream", "--stream-name", "events"],
        )
        .contains("data")
    });
    aws_cli(
        &eb,
        &[
            "kinesis",
            "increase-stream-retention-period",
            "--stream-name",
            "events",
            "--retention-period-hours",
            "48",
        ],
    );
    wait_until(Duration::from_secs(10), "A has B's retention", || {
        aws_cli(
            &ea,
            &[
                "kinesis",
                "describe-stream-summary",
                "--stream-name",
                "events",
            ],
        )
        .contains("\"RetentionPeriodHours\": 48")
    });
    aws_cli(
        &eb,
        &[
            "kinesis",
            "update-shard-count",
            "--stream-name",
            "events",
            "--target-shard-count",
            "3",
            "--scaling-type",
            "UNIFORM_SCALING",
        ],
    );
    wait_until(Duration::from_secs(10), "A takes B's resharding", || {
        open_shards(a.api) == 3
    });
    assert_eq!(shard_list(a.api), shard_list(b.api));
    put_numbered(a.api, 100, 30);
    // (A read at a shard's tip looks at the cluster at most every 200 ms: the newest
    // appends may take that long to show, as on Kinesis.)
    wait_until(Duration::from_secs(10), "130 records readable", || {
        all_records(a.api).len() == 130
    });
    let all = all_records(a.api);
    wait_until(Duration::from_secs(60), "130 records delivered", || {
        delivered().len() >= 130
    });
    assert_eq!(delivered(), numbered(0..130), "each record once");

    // A restarted node serves it again from the cluster; nothing of it is on its disk.
    let mut da = da;
    da.stop_cleanly();
    let mut da = a.start();
    da.wait_ready();
    assert_eq!(listed(a.api), ["events"]);
    assert_eq!(all_records(a.api), all);
    assert!(!a.path("var/streams/events").exists());
    let shards = shard_list(a.api).len() as u32;
    // Per shard id: readers remember positions as (shard id, sequence number).
    let mut old_max = std::collections::BTreeMap::new();
    for (shard, seq, _) in read_located(a.api, shards) {
        let m = old_max.entry(shard).or_insert_with(|| seq_key(&seq));
        *m = (*m).clone().max(seq_key(&seq));
    }

    // Deleted through B: gone from A too.
    aws_cli(
        &eb,
        &["kinesis", "delete-stream", "--stream-name", "events"],
    );
    assert!(listed(b.api).is_empty());
    wait_until(
        Duration::from_secs(10),
        "A forgets the deleted stream",
        || listed(a.api).is_empty(),
    );
    let (code, out) = kinesis(
        a.api,
        "PutRecord",
        r#"{"StreamName":"events","PartitionKey":"k","Data":"eA=="}"#,
    );
    assert!(
        code == 400 && out.contains("ResourceNotFoundException"),
        "{code} {out}"
    );

    // Made again: numbered above the deleted one, none of its records.
    aws_cli(
        &ea,
        &[
            "kinesis",
            "create-stream",
            "--stream-name",
            "events",
            "--shard-count",
            "2",
        ],
    );
    let (code, out) = kinesis(
        b.api,
        "CreateStream",
        r#"{"StreamName":"events","ShardCount":1}"#,
    );
    assert!(
        code == 400 && out.contains("ResourceInUseException"),
        "{code} {out}"
    );
    wait_until(Duration::from_secs(10), "B serves the new stream", || {
        listed(b.api) == ["events"]
    });
    put_numbered(b.api, 1000, 20);
    let mut again = Vec::new();
    wait_until(
        Duration::from_secs(10),
        "A reads the 20 new records",
        || {
            again = read_located(a.api, 2);
            again.len() >= 20
        },
    );
    assert_eq!(again.len(), 20, "{again:?}");
    for (shard, seq, data) in &again {
        let above = &old_max[shard];
        assert!(
            seq_key(seq) > *above,
            "{shard} {seq} not above {above:?} ({data})"
        );
        assert!(
            data.contains("\"n\":10"),
            "only the new stream's records: {data}"
        );
    }
    // The pipelines' leases and intents outlive the deleted stream; the new one's records
    // number above their checkpoints, so every one is delivered.
    wait_until(
        Duration::from_secs(60),
        "the new stream's records delivered",
        || delivered().len() >= 150,
    );
    let mut want = numbered(0..130);
    want.extend(numbered(1000..1020));
    want.sort();
    assert_eq!(delivered(), want, "each record of both streams once");
    da.stop_cleanly();
    let mut db = db;
    db.stop_cleanly();
}

/// A node killed between a DeleteStream's tombstone and its JetStream deletes (a
/// failpoint) leaves the deleted stream's JetStream streams on the cluster: another node
/// removes them within seconds — nothing is left for an operator to find with the nats
/// CLI — and answers for the stream as deleted.
#[test]
fn what_a_deletion_cut_short_left_on_the_cluster_is_removed_by_another_node() {
    let cluster = NatsCluster::start(1);
    let config = format!(
        "{}api_streams = \"jetstream\"\n",
        daemon_config(&cluster).replace("replicas = 3", "replicas = 1")
    );
    let a = Setup::new(&config, &[]);
    let b = Setup::new(&config, &[]);
    let mut da = a.start_env(&[("SLUICE_FAILPOINTS", "api-stream-tombstoned")]);
    da.wait_ready();
    let mut db = b.start();
    db.wait_ready();
    kinesis_ok(
        a.api,
        "CreateStream",
        r#"{"StreamName":"gone","ShardCount":2}"#,
    );
    let left = || {
        cluster
            .stream_names()
            .expect("the server's monitoring answers")
            .into_iter()
            .filter(|n| n.starts_with("Tgone_"))
            .count()
    };
    wait_until(
        Duration::from_secs(10),
        "B serves the stream A made",
        || listed(b.api) == ["gone"],
    );
    assert_eq!(left(), 2, "one JetStream stream per shard");
    // The call is cut by the kill.
    let _ = aws_call(
        a.api,
        "Kinesis_20131202.DeleteStream",
        r#"{"StreamName":"gone"}"#,
    );
    let st = da
        .wait_exit(Duration::from_secs(30))
        .expect("the failpoint fired (built with `--features sluiced/failpoints`)");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{}", da.stderr());
    wait_until(Duration::from_secs(30), "B forgot the stream", || {
        listed(b.api).is_empty()
    });
    wait_until(
        Duration::from_secs(30),
        "B removed what the deletion left",
        || left() == 0,
    );
    assert!(
        db.stderr()
            .contains("deleted a JetStream stream left by a deleted stream"),
        "{}",
        db.stderr()
    );
    let (code, body) = kinesis(
        b.api,
        "PutRecord",
        r#"{"StreamName":"gone","Data":"eA==","PartitionKey":"k"}"#,
    );
    assert_eq!(code, 400);
    assert!(body.contains("ResourceNotFoundException"), "{body}");
    db.stop_cleanly();
}
