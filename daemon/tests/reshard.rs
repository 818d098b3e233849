//! Resharding (issue #10): SplitShard, MergeShards and UpdateShardCount through boto3 and
//! the AWS CLI; a config stream resharded by editing its file, with its pipeline reading
//! parents before children; and a randomized run — splits, merges and shard-count changes
//! interleaved with puts, a reading pipeline and restarts (clean and SIGKILL) at random
//! points — after which every record is delivered exactly once, in order per partition key,
//! and every put went to the shard AWS's hash-key routing names.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use md5::{Digest, Md5};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

fn call(d: &Daemon, addr: std::net::SocketAddr, op: &str, body: Value) -> Value {
    let (code, text) = kinesis(addr, op, &body.to_string());
    assert_eq!(code, 200, "{op} {body}: {text}\n{}", d.stderr());
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn wait_active(addr: std::net::SocketAddr, stream: &str) {
    wait_until(Duration::from_secs(10), "the stream ACTIVE again", || {
        let (_, t) = kinesis(
            addr,
            "DescribeStreamSummary",
            &json!({ "StreamName": stream }).to_string(),
        );
        t.contains("\"ACTIVE\"")
    });
}

/// Every shard ListShards shows (all pages).
fn list_shards(addr: std::net::SocketAddr, stream: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut body = json!({ "StreamName": stream, "MaxResults": 50 });
    loop {
        let (code, t) = kinesis(addr, "ListShards", &body.to_string());
        assert_eq!(code, 200, "{t}");
        let v: Value = serde_json::from_str(&t).unwrap();
        out.extend(v["Shards"].as_array().unwrap().iter().cloned());
        match v["NextToken"].as_str() {
            Some(tok) => body = json!({ "NextToken": tok }),
            None => return out,
        }
    }
}

/// Open shards as (id, start, end), by starting hash key.
fn open_ranges(shards: &[Value]) -> Vec<(String, u128, u128)> {
    let mut v: Vec<(String, u128, u128)> = shards
        .iter()
        .filter(|s| s["SequenceNumberRange"]["EndingSequenceNumber"].is_null())
        .map(|s| {
            let r = &s["HashKeyRange"];
            (
                s["ShardId"].as_str().unwrap().to_string(),
                r["StartingHashKey"].as_str().unwrap().parse().unwrap(),
                r["EndingHashKey"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    v.sort_by_key(|r| r.1);
    v
}

fn md5_key(k: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(k.as_bytes()).into())
}

#[test]
fn resharding_through_boto3_and_the_aws_cli_survives_a_restart() {
    let s = Setup::new("", &[]);
    let mut d = s.start();
    d.wait_ready();
    run_interop(&d, s.api, "kinesis_reshard_boto3.py", &[]);
    // The AWS CLI: split the newest open shard, then the lineage as it lists it.
    let ep = format!("http://{}", s.api);
    let before = list_shards(s.api, "r");
    let (id, start, end) = open_ranges(&before)[0].clone();
    let key = (start + (end - start) / 2).to_string();
    aws_cli(
        &ep,
        &[
            "kinesis",
            "split-shard",
            "--stream-name",
            "r",
            "--shard-to-split",
            &id,
            "--new-starting-hash-key",
            &key,
        ],
    );
    wait_active(s.api, "r");
    let listed: Value = serde_json::from_str(&aws_cli(
        &ep,
        &[
            "--output",
            "json",
            "kinesis",
            "list-shards",
            "--stream-name",
            "r",
        ],
    ))
    .unwrap();
    let shards = listed["Shards"].as_array().unwrap().clone();
    assert_eq!(shards.len(), before.len() + 2, "{listed}");
    assert_eq!(shards[shards.len() - 1]["ParentShardId"], json!(id));
    // Lineage, closing numbers and routing survive a restart.
    d.stop_cleanly();
    let mut d = s.start();
    d.wait_ready();
    assert_eq!(list_shards(s.api, "r"), shards);
    let r = call(
        &d,
        s.api,
        "PutRecord",
        json!({ "StreamName": "r", "Data": "eA==", "PartitionKey": "x", "ExplicitHashKey": key }),
    );
    assert_eq!(
        r["ShardId"],
        shards[shards.len() - 1]["ShardId"],
        "the upper child owns the split key"
    );
}

#[test]
fn a_config_stream_reshards_when_its_file_changes_and_its_pipeline_reads_parents_first() {
    let deliver = "[pipelines.deliver]\nsource = { plugin = \"stream\", stream = \"events\", batch_size = 7 }\n\n[pipelines.deliver.sink]\nplugin = \"file\"\npath = \"out/events.jsonl\"\nbatch = { max_records = 7 }\n";
    let s = Setup::new(
        "",
        &[
            ("streams", "[streams.events]\nshards = 2\n"),
            ("deliver", deliver),
        ],
    );
    let mut d = s.start();
    d.wait_ready();
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut put = |d: &Daemon, n: usize| {
        let recs: Vec<Value> = (0..n)
            .map(|i| {
                let k = format!("k{}", i % 6);
                let c = counts.entry(k.clone()).or_default();
                *c += 1;
                json!({ "Data": b64(&format!("{{\"k\":\"{k}\",\"n\":{}}}", *c - 1)), "PartitionKey": k })
            })
            .collect();
        let r = call(
            d,
            s.api,
            "PutRecords",
            json!({ "StreamName": "events", "Records": recs }),
        );
        assert_eq!(r["FailedRecordCount"], 0);
    };
    put(&d, 120);
    // The API may not reshard a stream from the configuration.
    let (code, body) = kinesis(
        s.api,
        "UpdateShardCount",
        &json!({ "StreamName": "events", "TargetShardCount": 3, "ScalingType": "UNIFORM_SCALING" })
            .to_string(),
    );
    assert_eq!(code, 400);
    assert!(
        body.contains("ResourceInUseException")
            && body.contains("change its shard count by changing `shards` in its file"),
        "{body}"
    );
    // Editing the file does.
    s.write_pipeline("streams", "[streams.events]\nshards = 3\n");
    let (code, text) = d.post("/admin/reload").unwrap();
    assert_eq!(code, 200, "{text}");
    let shards = list_shards(s.api, "events");
    let open = open_ranges(&shards);
    assert_eq!(open.len(), 3, "{shards:?}");
    assert_eq!(open[1].1, u128::MAX / 3, "uniform ranges: {open:?}");
    put(&d, 120);
    s.write_pipeline("streams", "[streams.events]\nshards = 1\n");
    let (code, text) = d.post("/admin/reload").unwrap();
    assert_eq!(code, 200, "{text}");
    assert_eq!(open_ranges(&list_shards(s.api, "events")).len(), 1);
    assert_eq!(
        d.metric("sluice_stream_reshards_total", &["stream=\"events\""]),
        2.0,
        "one resharding per changed `shards`"
    );
    put(&d, 120);
    let out = s.path("out/events.jsonl");
    wait_until(Duration::from_secs(30), "every record delivered", || {
        lines(&out).len() >= 360
    });
    check_order(&lines(&out), &counts, true);
    // The status shows closed shards too.
    let (_, status) = d.get("/admin/status").unwrap();
    assert!(status.contains("\"open\":false"), "{status}");
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Every record of `counts` is in `lines` (each once when `exactly_once`), and the first
/// time each appears follows put order per key.
fn check_order(lines: &[String], counts: &HashMap<String, u64>, exactly_once: bool) {
    let mut seen: HashMap<(String, u64), usize> = HashMap::new();
    let mut next: HashMap<String, u64> = HashMap::new();
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        let k = v["k"].as_str().unwrap().to_string();
        let n = v["n"].as_u64().unwrap();
        let times = seen.entry((k.clone(), n)).or_default();
        *times += 1;
        if *times == 1 {
            let want = next.entry(k.clone()).or_default();
            assert_eq!(
                n, *want,
                "key {k}: record {n} came first where {want} was due"
            );
            *want += 1;
        }
    }
    for (k, &c) in counts {
        assert_eq!(
            next.get(k).copied().unwrap_or(0),
            c,
            "key {k}: records missing"
        );
    }
    if exactly_once {
        let dup: Vec<_> = seen.iter().filter(|(_, &t)| t > 1).collect();
        assert!(dup.is_empty(), "delivered twice: {dup:?}");
    }
}

/// A small deterministic generator (the seed is printed, so a failure can be replayed).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn key(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
}

#[test]
fn random_resharding_with_puts_restarts_and_a_reading_pipeline() {
    let seed = std::env::var("SLUICE_RESHARD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("SLUICE_RESHARD_SEED={seed}");
    let mut rng = Rng(seed);
    // Two readers of the same stream: a file (delivery order, to check order per key) and
    // a lake (object sink: exactly once through SIGKILLs).
    let readers = "[pipelines.ordered]\nsource = { plugin = \"stream\", stream = \"r\", batch_size = 9 }\n\n[pipelines.ordered.sink]\nplugin = \"file\"\npath = \"out/ordered.jsonl\"\nbatch = { max_records = 9 }\n\n[pipelines.lake]\nsource = { plugin = \"stream\", stream = \"r\", batch_size = 13 }\n\n[pipelines.lake.partitioning]\nquery = '{k}'\n\n[pipelines.lake.buffer]\nsize = \"2KiB\"\ninterval = \"1s\"\n\n[pipelines.lake.sink]\nplugin = \"object-store\"\nurl = \"lake\"\nprefix = \"k=!{partitionKeyFromQuery:k}/\"\n";
    let s = Setup::new("", &[]);
    let mut d = s.start();
    d.wait_ready();
    call(
        &d,
        s.api,
        "CreateStream",
        json!({ "StreamName": "r", "ShardCount": 2 }),
    );
    s.write_pipeline("readers", readers);
    let (code, text) = d.post("/admin/reload").unwrap();
    assert_eq!(code, 200, "{text}");
    d.wait_ready();
    let mut counts: HashMap<String, u64> = HashMap::new();
    let explicit: Vec<u128> = (0..4).map(|_| rng.key()).collect();
    let mut shards = list_shards(s.api, "r");
    let mut kills = 0;
    for step in 0..36 {
        let open = open_ranges(&shards);
        let what = rng.below(10);
        match what {
            0..=3 => {
                let n = 1 + rng.below(40) as usize;
                let mut recs = Vec::new();
                let mut hashes = Vec::new();
                for _ in 0..n {
                    let j = rng.below(16);
                    let k = format!("key{j}");
                    let c = counts.entry(k.clone()).or_default();
                    let data = format!("{{\"k\":\"{k}\",\"n\":{c}}}");
                    *c += 1;
                    // Some keys name their hash key, as producers spreading load do
                    // (always the same one per key: order holds per hash key).
                    if j >= 12 {
                        let h = explicit[j as usize - 12];
                        hashes.push(h);
                        recs.push(json!({ "Data": b64(&data), "PartitionKey": k, "ExplicitHashKey": h.to_string() }));
                    } else {
                        hashes.push(md5_key(&k));
                        recs.push(json!({ "Data": b64(&data), "PartitionKey": k }));
                    }
                }
                let r = call(
                    &d,
                    s.api,
                    "PutRecords",
                    json!({ "StreamName": "r", "Records": recs }),
                );
                assert_eq!(r["FailedRecordCount"], 0, "seed {seed}");
                for (h, got) in hashes.iter().zip(r["Records"].as_array().unwrap()) {
                    let want = open.iter().find(|(_, a, b)| a <= h && h <= b).unwrap();
                    assert_eq!(
                        got["ShardId"],
                        json!(want.0),
                        "seed {seed} step {step}: hash {h}"
                    );
                }
            }
            4 | 5 => {
                let (id, a, b) = open[rng.below(open.len() as u64) as usize].clone();
                if b - a > 4 {
                    let key = a + 2 + rng.key() % (b - a - 3);
                    call(
                        &d,
                        s.api,
                        "SplitShard",
                        json!({ "StreamName": "r", "ShardToSplit": id, "NewStartingHashKey": key.to_string() }),
                    );
                    wait_active(s.api, "r");
                }
            }
            6 => {
                if open.len() > 1 {
                    let i = rng.below(open.len() as u64 - 1) as usize;
                    call(
                        &d,
                        s.api,
                        "MergeShards",
                        json!({ "StreamName": "r", "ShardToMerge": open[i].0, "AdjacentShardToMerge": open[i + 1].0 }),
                    );
                    wait_active(s.api, "r");
                }
            }
            7 => {
                let n = open.len() as u64;
                let target = (n.div_ceil(2) + rng.below(n + n / 2 + 1)).clamp(1, 12);
                call(
                    &d,
                    s.api,
                    "UpdateShardCount",
                    json!({ "StreamName": "r", "TargetShardCount": target, "ScalingType": "UNIFORM_SCALING" }),
                );
                wait_active(s.api, "r");
            }
            _ => {
                // A restart at a random point: clean, or a SIGKILL.
                let sig = if rng.below(2) == 0 {
                    libc::SIGKILL
                } else {
                    libc::SIGTERM
                };
                kills += usize::from(sig == libc::SIGKILL);
                d.signal(sig);
                d.wait_exit(Duration::from_secs(30)).unwrap();
                d = s.start();
                d.wait_ready();
                assert_eq!(
                    list_shards(s.api, "r"),
                    shards,
                    "seed {seed}: the lineage survives a restart"
                );
            }
        }
        shards = list_shards(s.api, "r");
    }
    let total: u64 = counts.values().sum();
    eprintln!(
        "seed {seed}: {total} records, {} shards at the end, {kills} SIGKILLs",
        shards.len()
    );
    let out = s.path("out/ordered.jsonl");
    wait_until(
        Duration::from_secs(60),
        "the ordered reader caught up",
        || {
            let l = lines(&out);
            let distinct: std::collections::HashSet<&String> = l.iter().collect();
            distinct.len() as u64 >= total
        },
    );
    // After SIGKILLs a record sink may see a batch again; order holds regardless.
    check_order(&lines(&out), &counts, kills == 0);
    let lake = s.path("lake");
    wait_until(Duration::from_secs(60), "the lake caught up", || {
        object_lines(&lake).len() as u64 >= total
    });
    // The lake is exactly once; order within each object follows the stream.
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    let all = object_lines(&lake);
    for l in &all {
        let v: Value = serde_json::from_str(l).unwrap();
        *by_key
            .entry(v["k"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        all.len() as u64,
        total,
        "seed {seed}: exactly once in the lake"
    );
    for (k, c) in &counts {
        assert_eq!(
            by_key.get(k).copied().unwrap_or(0) as u64,
            *c,
            "seed {seed}: key {k}"
        );
    }
}

#[test]
fn subscribe_to_shard_pushes_every_record_through_boto3_across_a_split() {
    let s = Setup::new("", &[]);
    let mut d = s.start();
    d.wait_ready();
    run_interop(&d, s.api, "kinesis_subscribe_boto3.py", &[]);
}

/// (headers, payload) of each AWS event-stream frame in `bytes`, both CRCs checked.
fn frames(mut bytes: &[u8]) -> Vec<(BTreeMap<String, String>, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 16 {
        let total = u32::from_be_bytes(bytes[0..4].try_into().unwrap()) as usize;
        let hlen = u32::from_be_bytes(bytes[4..8].try_into().unwrap()) as usize;
        if bytes.len() < total {
            break; // cut by the client's timeout
        }
        assert_eq!(
            u32::from_be_bytes(bytes[8..12].try_into().unwrap()),
            crc32fast::hash(&bytes[..8])
        );
        assert_eq!(
            u32::from_be_bytes(bytes[total - 4..total].try_into().unwrap()),
            crc32fast::hash(&bytes[..total - 4])
        );
        let mut h = &bytes[12..12 + hlen];
        let mut headers = BTreeMap::new();
        while !h.is_empty() {
            let n = h[0] as usize;
            let name = String::from_utf8(h[1..1 + n].to_vec()).unwrap();
            assert_eq!(h[1 + n], 7, "string headers");
            let l = u16::from_be_bytes([h[2 + n], h[3 + n]]) as usize;
            headers.insert(
                name,
                String::from_utf8(h[4 + n..4 + n + l].to_vec()).unwrap(),
            );
            h = &h[4 + n + l..];
        }
        out.push((headers, bytes[12 + hlen..total - 4].to_vec()));
        bytes = &bytes[total..];
    }
    out
}

#[test]
fn subscribe_to_shard_over_cleartext_http2() {
    let s = Setup::new("", &[]);
    let mut d = s.start();
    d.wait_ready();
    call(
        &d,
        s.api,
        "CreateStream",
        json!({ "StreamName": "h2", "ShardCount": 1 }),
    );
    let arn = call(
        &d,
        s.api,
        "DescribeStreamSummary",
        json!({ "StreamName": "h2" }),
    )["StreamDescriptionSummary"]["StreamARN"]
        .as_str()
        .unwrap()
        .to_string();
    let consumer = call(
        &d,
        s.api,
        "RegisterStreamConsumer",
        json!({ "StreamARN": arn, "ConsumerName": "java" }),
    )["Consumer"]["ConsumerARN"]
        .as_str()
        .unwrap()
        .to_string();
    let recs: Vec<Value> = (0..3)
        .map(|i| json!({ "Data": b64(&format!("h2-{i}")), "PartitionKey": "k" }))
        .collect();
    call(
        &d,
        s.api,
        "PutRecords",
        json!({ "StreamName": "h2", "Records": recs }),
    );
    let out = s.path("events.bin");
    let body = json!({ "ConsumerARN": consumer, "ShardId": "shardId-000000000000", "StartingPosition": { "Type": "TRIM_HORIZON" } });
    // The stream lasts five minutes; curl stops reading after two seconds.
    let o = std::process::Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "--max-time", "2", "-o"])
        .arg(&out)
        .args(["-w", "%{http_version} %{http_code}"])
        .args(["-H", "X-Amz-Target: Kinesis_20131202.SubscribeToShard"])
        .args(["-H", "Content-Type: application/x-amz-json-1.1"])
        .args(["--data", &body.to_string()])
        .arg(format!("http://{}/", s.api))
        .output()
        .expect("curl runs (scripts/install-test-deps installs it)");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "2 200", "{o:?}");
    let f = frames(&std::fs::read(&out).unwrap());
    assert_eq!(f[0].0[":event-type"], "initial-response", "{f:?}");
    let ev: Value = serde_json::from_slice(&f[1].1).unwrap();
    assert_eq!(f[1].0[":event-type"], "SubscribeToShardEvent");
    let data: Vec<String> = ev["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            use base64::Engine as _;
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(r["Data"].as_str().unwrap())
                    .unwrap(),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(data, ["h2-0", "h2-1", "h2-2"], "{ev}");
    assert!(ev["ContinuationSequenceNumber"].is_string(), "{ev}");
}
