//! Probes from the outside that once lost acknowledged data or ran away (issue #9): each
//! test is named after what it guards and drives the real daemon over real sockets.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::time::Duration;

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn error_type(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["__type"].as_str().unwrap_or("").to_string()
}

/// 1. Stream names `.` and `..` (by name or inside an ARN) are refused with AWS's
///    validation error and can never name a folder: the data directory survives.
#[test]
fn dot_names_cannot_touch_the_data_directory() {
    let s = Setup::new("", &[("streams", "[streams.events]\nshards = 1\n")]);
    let mut d = s.start();
    d.wait_ready();
    let marker = s.path("var/keep-me");
    std::fs::write(&marker, b"x").unwrap();
    for name in [".", ".."] {
        for op in ["CreateStream", "DeleteStream", "DescribeStream"] {
            let (code, body) = kinesis(
                s.api,
                op,
                &format!(r#"{{"StreamName":"{name}","ShardCount":1}}"#),
            );
            assert_eq!(code, 400, "{op} {name}: {body}");
            assert_eq!(
                error_type(&body),
                "ValidationException",
                "{op} {name}: {body}"
            );
            assert!(
                body.contains("at 'streamName' failed to satisfy constraint"),
                "{body}"
            );
        }
        let arn = format!("arn:aws:kinesis:us-east-1:000000000000:stream/{name}");
        for op in ["DeleteStream", "DescribeStream"] {
            let (code, body) = kinesis(s.api, op, &format!(r#"{{"StreamARN":"{arn}"}}"#));
            assert_eq!(code, 400, "{op} {arn}: {body}");
        }
    }
    // The stream that exists is untouched, and so is everything else under data_dir.
    let (code, _) = kinesis(
        s.api,
        "PutRecord",
        &format!(
            r#"{{"StreamName":"events","Data":"{}","PartitionKey":"k"}}"#,
            b64("still here")
        ),
    );
    assert_eq!(code, 200);
    assert!(marker.exists());
    assert!(s.path("var/streams/events/stream.json").exists());
    assert_eq!(d.get("/healthz").unwrap().0, 200);
}

/// 10 (in part). The internal Direct PUT streams are invisible to the Kinesis API.
#[test]
fn internal_streams_are_invisible_to_the_kinesis_api() {
    let lake = "[pipelines.fh]\nsource = { plugin = \"direct-put\" }\n\n[pipelines.fh.sink]\nplugin = \"object-store\"\nurl = \"lake\"\n";
    let s = Setup::new("", &[("fh", lake)]);
    let mut d = s.start();
    d.wait_ready();
    let (code, body) = kinesis(s.api, "ListStreams", "{}");
    assert_eq!(code, 200);
    assert!(!body.contains("__firehose"), "{body}");
    for (op, body) in [
        ("DescribeStream", r#"{"StreamName":"__firehose-fh"}"#.to_string()),
        ("DescribeStreamSummary", r#"{"StreamName":"__firehose-fh"}"#.to_string()),
        ("ListShards", r#"{"StreamName":"__firehose-fh"}"#.to_string()),
        (
            "PutRecord",
            format!(r#"{{"StreamName":"__firehose-fh","Data":"{}","PartitionKey":"k"}}"#, b64("x")),
        ),
        (
            "GetShardIterator",
            r#"{"StreamName":"__firehose-fh","ShardId":"shardId-000000000000","ShardIteratorType":"TRIM_HORIZON"}"#.to_string(),
        ),
    ] {
        let (code, out) = kinesis(s.api, op, &body);
        assert_eq!(code, 400, "{op}: {out}");
        assert_eq!(error_type(&out), "ResourceNotFoundException", "{op}: {out}");
    }
}

/// 2. Reading the configuration (a `cat`, `sluiced check`, a backup) never reloads, and a
///    file event that leaves every file's content as it was is not a reload either.
#[test]
fn reading_config_files_never_reloads() {
    let p = "[pipelines.a]\nsource = { plugin = \"generator\", rate = 5 }\nsink = { plugin = \"file\", path = \"out/a.jsonl\" }\n";
    let s = Setup::new("", &[("a", p)]);
    let mut d = s.start();
    d.wait_ready();
    let reloads = |d: &Daemon| metric_sum(&d.metrics_text(), "sluice_config_reloads_total", &[]);
    let base = reloads(&d);
    // Reads: the files themselves, and a full check of the tree.
    for f in [s.config.clone(), s.path("pipelines/a.toml")] {
        std::fs::read(&f).unwrap();
    }
    let (code, _, err) = s.cli(&["check"]);
    assert_eq!(code, 0, "{err}");
    // Metadata only, then the same bytes written again: events, no change of content.
    let a = s.path("pipelines/a.toml");
    let f = std::fs::File::options().append(true).open(&a).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    std::fs::write(&a, p).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the unchanged save is seen",
        || d.metric("sluice_config_unchanged_events_total", &[]) >= 1.0,
    );
    assert_eq!(reloads(&d), base, "{}", d.stderr());
    // A real edit reloads exactly once, and the reload's own reads start nothing more.
    std::fs::write(&a, p.replace("rate = 5", "rate = 6")).unwrap();
    wait_until(Duration::from_secs(10), "the edit reloads", || {
        reloads(&d) >= base + 1.0
    });
    let unchanged = d.metric("sluice_config_unchanged_events_total", &[]);
    // Another same-content save after the reload is seen as unchanged: by then any
    // reload the reload itself triggered would have been counted.
    std::fs::write(&a, p.replace("rate = 5", "rate = 6")).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the second unchanged save is seen",
        || d.metric("sluice_config_unchanged_events_total", &[]) > unchanged,
    );
    assert_eq!(reloads(&d), base + 1.0, "{}", d.stderr());
}

/// 3. After a crash lost the tail of a shard, sequence numbers already issued (and
///    delivered, and checkpointed past) are never issued again: new records are delivered.
#[test]
fn sequence_numbers_are_not_reused_after_a_lost_tail() {
    let cfg = "[streams.s]\nshards = 1\nfsync = \"batch\"\n\n[pipelines.copy]\nsource = { plugin = \"stream\", stream = \"s\", start = \"trim_horizon\" }\nsink = { plugin = \"file\", path = \"out/copy.jsonl\" }\n";
    let s = Setup::new("", &[("p", cfg)]);
    let put = |s: &Setup, text: &str| {
        let (code, body) = kinesis(
            s.api,
            "PutRecord",
            &format!(
                r#"{{"StreamName":"s","Data":"{}","PartitionKey":"k"}}"#,
                b64(text)
            ),
        );
        assert_eq!(code, 200, "{body}");
    };
    let mut d = s.start();
    d.wait_ready();
    for i in 0..10 {
        put(&s, &format!("old-{i:02}"));
    }
    let cp = s.path("var/checkpoints/copy/s.json");
    wait_until(
        Duration::from_secs(20),
        "10 delivered and checkpointed",
        || {
            lines(&s.path("out/copy.jsonl")).len() == 10
                && std::fs::read_to_string(&cp).is_ok_and(|t| t.contains(":10"))
        },
    );
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(10)).unwrap();
    // The disk lost the last three records whole (as after a power loss).
    let shard = s.path("var/streams/s/shardId-000000000000");
    let seg = std::fs::read_dir(&shard)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let frame = (len - sluice_shardlog::frame::SEGMENT_HEADER as u64) / 10;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3 * frame)
        .unwrap();
    let mut d = s.start();
    d.wait_ready();
    for i in 0..5 {
        put(&s, &format!("new-{i:02}"));
    }
    wait_until(
        Duration::from_secs(20),
        "every new record delivered",
        || {
            lines(&s.path("out/copy.jsonl"))
                .iter()
                .filter(|l| l.contains("new-"))
                .count()
                == 5
        },
    );
    assert!(
        d.stderr()
            .contains("sequence numbers resume past every number"),
        "{}",
        d.stderr()
    );
}
