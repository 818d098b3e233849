//! The durability promise under repeated crashes (issue #9, acceptance): producers write
//! through the Kinesis API while a pipeline delivers to a lake; the daemon is SIGKILLed
//! 20 times at random points, and between some kills the tail of a shard's segment gets a
//! torn write (garbage or half a frame after the last record). At the end every
//! acknowledged record is in the lake exactly once.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CFG: &str = "[streams.events]\nshards = 2\nfsync = \"batch\"\n\n[pipelines.lake]\nsource = { plugin = \"stream\", stream = \"events\" }\n\n[pipelines.lake.partitioning]\nquery = '{p: .p}'\n\n[pipelines.lake.buffer]\nsize = \"16KiB\"\ninterval = \"1s\"\n\n[pipelines.lake.sink]\nplugin = \"object-store\"\nurl = \"lake\"\nprefix = \"p=!{partitionKeyFromQuery:p}/\"\n";

/// A small deterministic generator (the seed is printed on failure).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every record id in the lake's objects, with how often it appears.
fn lake_ids(dir: &std::path::Path) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for l in object_lines(dir) {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
        *out.entry(v["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    out
}

/// Appends a torn write to the newest segment of one shard: garbage, or a half frame.
fn tear_tail(shard: &std::path::Path, rng: &mut Rng) {
    let Some(seg) = std::fs::read_dir(shard)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
    else {
        return;
    };
    let mut tail: Vec<u8> = Vec::new();
    if rng.below(2) == 0 {
        tail.extend((0..1 + rng.below(200)).map(|_| rng.next() as u8));
    } else {
        let mut f = Vec::new();
        sluice_shardlog::frame::encode(
            &mut f,
            rng.next(),
            1u64 << 40,
            0,
            b"k",
            b"{\"id\":\"torn\"}",
        );
        tail.extend_from_slice(&f[..1 + rng.below(f.len() as u64 - 1) as usize]);
    }
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&tail)
        .unwrap();
}

#[test]
fn twenty_sigkills_lose_nothing_and_duplicate_nothing() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    let s = Setup::new("", &[("lake", CFG)]);
    let api = s.api;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let producer = {
        let (acked, stop, sent) = (acked.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || {
            use base64::Engine as _;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // New ids for every attempt: a retry of an unknown outcome would be a
                // duplicate made by the producer, not by sluice.
                let ids: Vec<String> = (0..20).map(|i| format!("r{n}-{i}")).collect();
                n += 1;
                let recs: Vec<String> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        let data = base64::engine::general_purpose::STANDARD
                            .encode(format!(r#"{{"id":"{id}","p":"{}"}}"#, i % 3));
                        format!(r#"{{"Data":"{data}","PartitionKey":"{id}"}}"#)
                    })
                    .collect();
                let body = format!(
                    r#"{{"StreamName":"events","Records":[{}]}}"#,
                    recs.join(",")
                );
                match aws_call(api, "Kinesis_20131202.PutRecords", &body) {
                    Some((200, _, out)) => {
                        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                        let mut a = acked.lock().unwrap();
                        for (i, r) in v["Records"].as_array().unwrap().iter().enumerate() {
                            if r.get("ErrorCode").is_none() {
                                a.push(ids[i].clone());
                            }
                        }
                        sent.fetch_add(20, Ordering::Relaxed);
                    }
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    };
    for kill in 0..20 {
        let mut d = s.start();
        d.wait_ready();
        // A random point: after a random number of further acknowledged records, so
        // kills land mid-buffer, mid-flush, mid-checkpoint, ...
        let target = sent.load(Ordering::Relaxed) + 20 * (1 + rng.below(60));
        wait_until(Duration::from_secs(30), "records acknowledged", || {
            sent.load(Ordering::Relaxed) >= target
        });
        d.signal(libc::SIGKILL);
        d.wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("seed {seed}: kill {kill}: no exit"));
        if rng.below(2) == 0 {
            let shard = format!("var/streams/events/shardId-00000000000{}", rng.below(2));
            tear_tail(&s.path(&shard), &mut rng);
        }
    }
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 200,
        "seed {seed}: only {} acknowledged",
        acked.len()
    );
    // A last run delivers the rest; it drains on SIGTERM.
    let mut d = s.start();
    d.wait_ready();
    wait_until(
        Duration::from_secs(60),
        "every acknowledged record in the lake",
        || {
            let ids = lake_ids(&s.path("lake"));
            acked.iter().all(|id| ids.contains_key(id))
        },
    );
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(30)).unwrap().success());
    let ids = lake_ids(&s.path("lake"));
    let lost: Vec<&String> = acked.iter().filter(|id| !ids.contains_key(*id)).collect();
    let dups: Vec<(&String, &usize)> = ids.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "seed {seed}: {} acknowledged, {} in the lake",
        acked.len(),
        ids.len()
    );
    assert!(
        ids.keys().all(|k| k != "torn"),
        "seed {seed}: a torn write came back"
    );
    assert!(
        lost.is_empty() && dups.is_empty(),
        "seed {seed}: {} acknowledged, {} lost (e.g. {:?}), {} duplicated (e.g. {:?})\n{}",
        acked.len(),
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>(),
        dups.len(),
        dups.iter().take(5).collect::<Vec<_>>(),
        d.stderr()
    );
}
