//! Exactly-once for third-party sources (issue #11, ABI 1.1): a replayable source from a
//! dynamic library — the example `replay` source, which declares `SL_DEF_REPLAYABLE`, puts
//! a position on every record and keeps its own checkpoint file — delivers to a lake while
//! the daemon is SIGKILLed at random points. At the end every record is in the lake exactly
//! once: the same guarantee the bundled stream source has, through the same intent log.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::collections::HashMap;
use std::time::Duration;

const PER_PARTITION: u64 = 700;
const PARTITIONS: u64 = 3;

fn config(plugins: &std::path::Path) -> (String, String) {
    (
        format!("plugin_dirs = [\"{}\"]", plugins.display()),
        format!(
            "[pipelines.lake]\nsource = {{ plugin = \"replay\", per_partition = {PER_PARTITION}, partitions = {PARTITIONS}, rate = 600, state = \"replay-state.json\" }}\n\n[pipelines.lake.partitioning]\nquery = '{{t: .t}}'\n\n[pipelines.lake.buffer]\nsize = \"4KiB\"\ninterval = \"1s\"\n\n[pipelines.lake.sink]\nplugin = \"object-store\"\nurl = \"lake\"\nprefix = \"t=!{{partitionKeyFromQuery:t}}/\"\n"
        ),
    )
}

/// (partition, offset) → how many times it is in the lake.
fn lake_positions(dir: &std::path::Path) -> HashMap<(u64, u64), usize> {
    let mut out = HashMap::new();
    for l in object_lines(dir) {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
        *out.entry((v["p"].as_u64().unwrap(), v["o"].as_u64().unwrap()))
            .or_default() += 1;
    }
    out
}

#[test]
fn a_third_party_replayable_source_is_exactly_once_through_sigkills() {
    let plugins = plugin_dir(&["libsluice_example_passthrough.so"]);
    let (extra, pipeline) = config(plugins.path());
    let s = Setup::new(&extra, &[("lake", &pipeline)]);
    // The library declares the capability, and `sluiced plugins` says so.
    let (code, out, err) = s.cli(&["plugins"]);
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.contains("replay"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("1.1"), "{line}");

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut x = seed | 1;
    let mut below = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for kill in 0..8 {
        let mut d = s.start();
        d.wait_ready();
        // Random points: mid-buffer, mid-flush, between a store and its checkpoint...
        let target = (30 + below(300)) as f64;
        wait_until(Duration::from_secs(30), "records read", || {
            d.metric("sluice_pipeline_records_in_total", &["pipeline=\"lake\""]) >= target
                || lake_positions(&s.path("lake")).len() as u64 == PER_PARTITION * PARTITIONS
        });
        if below(2) == 0 {
            // Sometimes right after an object was stored.
            let before = d.metric(
                "sluice_sink_objects_total",
                &["pipeline=\"lake\"", "result=\"success\""],
            );
            wait_until(Duration::from_secs(30), "an object stored", || {
                d.metric(
                    "sluice_sink_objects_total",
                    &["pipeline=\"lake\"", "result=\"success\""],
                ) > before
                    || lake_positions(&s.path("lake")).len() as u64 == PER_PARTITION * PARTITIONS
            });
        }
        d.signal(libc::SIGKILL);
        d.wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("seed {seed}: kill {kill}: no exit"));
    }
    let mut d = s.start();
    d.wait_ready();
    wait_until(Duration::from_secs(60), "every record in the lake", || {
        lake_positions(&s.path("lake")).len() as u64 == PER_PARTITION * PARTITIONS
    });
    let lake = lake_positions(&s.path("lake"));
    let dups: Vec<_> = lake.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "seed {seed}: duplicates: {dups:?}");
    for p in 0..PARTITIONS {
        for o in 0..PER_PARTITION {
            assert_eq!(lake.get(&(p, o)), Some(&1), "seed {seed}: ({p}, {o})");
        }
    }
    assert_eq!(
        d.metric(
            "sluice_delivery_duplicate_records_total",
            &["pipeline=\"lake\""]
        ),
        0.0
    );
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(30)).unwrap().success());
}
