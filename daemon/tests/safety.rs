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

/// PutRecord of `data` into stream `s` (key `k`); returns its sequence number.
fn put_into_s(s: &Setup, data: &[u8]) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.encode(data);
    let (code, body) = kinesis(
        s.api,
        "PutRecord",
        &format!(r#"{{"StreamName":"s","Data":"{b}","PartitionKey":"k"}}"#),
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["SequenceNumber"].as_str().unwrap().to_string()
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
        put_into_s(s, text.as_bytes());
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
    let seg = segment_file(&shard);
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
    // Status counts the records, not the span of numbers (which skipped): 7 + 5.
    let st: serde_json::Value = serde_json::from_str(&d.get("/admin/status").unwrap().1).unwrap();
    assert_eq!(st["streams"][0]["shards"][0]["records"], 12, "{st}");
}

/// 9. A sink that keeps failing is visible: `sluice_sink_up` 0, failed attempts counted
///    under `result="error"`, `/readyz` not ready naming the sink, `sluiced status` says
///    `failing`.
#[test]
fn a_failing_sink_is_visible() {
    // An S3 endpoint where nothing listens: every upload fails (retryable).
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let cfg = format!(
        "[pipelines.lake]\nsource = {{ plugin = \"generator\", rate = 200 }}\n\n[pipelines.lake.buffer]\ninterval = \"1s\"\n\n[pipelines.lake.sink]\nplugin = \"object-store\"\nurl = \"s3://lake/data\"\nendpoint = \"{endpoint}\"\naccess_key_id = \"x\"\nsecret_access_key = \"x\"\ntimeout_secs = 1\n"
    );
    let s = Setup::new("", &[("lake", &cfg)]);
    let mut d = s.start();
    d.wait_ready();
    assert_eq!(d.metric("sluice_sink_up", &["pipeline=\"lake\""]), 1.0);
    wait_until(Duration::from_secs(30), "the failing sink shows", || {
        d.metric("sluice_sink_up", &["pipeline=\"lake\""]) == 0.0
            && d.metric(
                "sluice_sink_objects_total",
                &["pipeline=\"lake\"", "result=\"error\""],
            ) >= 1.0
    });
    let (code, body) = d.get("/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("lake: sink failing"), "{body}");
    let (code, out, err) = s.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("lake "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("failing"), "{out}");
}

/// 9. A damaged checkpoint is an ERROR with a counter, and the pipeline resumes from the
///    oldest record (replaying, never skipping), even with `start = "latest"`.
#[test]
fn a_damaged_checkpoint_resumes_from_the_oldest_record() {
    let cfg = "[streams.s]\nshards = 1\n\n[pipelines.copy]\nsource = { plugin = \"stream\", stream = \"s\", start = \"latest\" }\nsink = { plugin = \"file\", path = \"out/copy.jsonl\" }\n";
    let s = Setup::new("", &[("p", cfg)]);
    let put = |s: &Setup, text: &str| {
        put_into_s(s, text.as_bytes());
    };
    let mut d = s.start();
    d.wait_ready();
    for i in 0..5 {
        put(&s, &format!("old-{i}"));
    }
    let cp = s.path("var/checkpoints/copy/s.json");
    wait_until(
        Duration::from_secs(20),
        "5 delivered and checkpointed",
        || {
            lines(&s.path("out/copy.jsonl")).len() == 5
                && std::fs::read_to_string(&cp).is_ok_and(|t| t.contains(":5"))
        },
    );
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
    std::fs::write(&cp, b"\x00\x13garbage{").unwrap();
    let mut d = s.start();
    d.wait_ready();
    put(&s, "new-0");
    wait_until(
        Duration::from_secs(20),
        "old records replayed and the new one delivered",
        || {
            let l = lines(&s.path("out/copy.jsonl"));
            l.iter().filter(|l| l.starts_with("old-")).count() == 10
                && l.iter().any(|l| l == "new-0")
        },
    );
    assert_eq!(
        d.metric("sluice_checkpoint_damaged_total", &["pipeline=\"copy\""]),
        1.0
    );
    assert!(d.stderr().contains("checkpoint damaged"), "{}", d.stderr());
}

/// 9. A reload changing what a running stream cannot change live is refused, names the
///    key, and keeps the old configuration running — never reported as success.
#[test]
fn a_reload_that_cannot_apply_is_refused() {
    let cfg = |fsync: &str| {
        format!("[streams.s]\nshards = 1\nfsync = \"{fsync}\"\n\n[pipelines.gen]\nsource = {{ plugin = \"generator\", rate = 50 }}\nsink = {{ plugin = \"file\", path = \"out/gen.jsonl\" }}\n")
    };
    let s = Setup::new("watch = false", &[("p", &cfg("batch"))]);
    let mut d = s.start();
    d.wait_ready();
    for (key, new) in [
        ("fsync", cfg("none")),
        (
            "max_record_size",
            cfg("batch").replace("shards = 1\n", "shards = 1\nmax_record_size = \"2KiB\"\n"),
        ),
        (
            "max_bytes",
            cfg("batch").replace("shards = 1\n", "shards = 1\nmax_bytes = \"1GiB\"\n"),
        ),
    ] {
        s.write_pipeline("p", &new);
        let (code, body) = d.post("/admin/reload").unwrap();
        assert_eq!(code, 422, "{key}: {body}");
        assert!(
            body.contains(&format!("`{key}`")) && body.contains("needs a restart"),
            "{body}"
        );
        assert_eq!(d.metric("sluice_config_last_reload_successful", &[]), 0.0);
    }
    // The same file as running reloads fine.
    s.write_pipeline("p", &cfg("batch"));
    let (code, body) = d.post("/admin/reload").unwrap();
    assert_eq!(code, 200, "{body}");
}

/// 8. Stopping never waits for thousands of uploads: with 1,000 open partitions SIGTERM
///    flushes what it can in a few seconds and leaves the rest in the stream, which the
///    next start delivers — every record exactly once.
#[test]
fn sigterm_with_thousands_of_open_partitions_is_fast_and_loses_nothing() {
    let cfg = "[streams.s]\nshards = 2\n\n[pipelines.lake]\nsource = { plugin = \"stream\", stream = \"s\" }\n\n[pipelines.lake.partitioning]\nquery = '{id: .id}'\n\n[pipelines.lake.buffer]\ninterval = \"1h\"\n\n[pipelines.lake.sink]\nplugin = \"object-store\"\nurl = \"lake\"\nprefix = \"id=!{partitionKeyFromQuery:id}/\"\n";
    let s = Setup::new("", &[("p", cfg)]);
    // A short shutdown_timeout makes a short flush budget (a quarter of it): flushing
    // 1,000 objects takes longer than 100 ms, so the stop leaves some in the stream.
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace("shutdown_timeout = \"10s\"", "shutdown_timeout = \"400ms\""),
    )
    .unwrap();
    let mut d = s.start();
    d.wait_ready();
    const N: usize = 1000;
    for chunk in 0..N / 500 {
        let recs: Vec<String> = (chunk * 500..(chunk + 1) * 500)
            .map(|i| {
                format!(
                    r#"{{"Data":"{}","PartitionKey":"k{i}"}}"#,
                    b64(&format!(r#"{{"id":"{i}"}}"#))
                )
            })
            .collect();
        let (code, body) = kinesis(
            s.api,
            "PutRecords",
            &format!(r#"{{"StreamName":"s","Records":[{}]}}"#, recs.join(",")),
        );
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"FailedRecordCount\":0"), "{body}");
    }
    wait_until(Duration::from_secs(30), "1000 partitions open", || {
        d.metric("sluice_buffer_partitions_active", &["pipeline=\"lake\""]) >= N as f64
    });
    d.signal(libc::SIGTERM);
    let st = d.wait_exit(Duration::from_secs(60)).expect("stopped");
    assert!(st.success(), "{}", d.stderr());
    assert!(
        d.stderr().contains("stopping without flushing the rest"),
        "{}",
        d.stderr()
    );
    assert!(
        !d.stderr().contains("did not drain in time"),
        "{}",
        d.stderr()
    );
    // The rest arrives after restarts (each stop flushes some), nothing twice.
    let mut d = s.start();
    d.wait_ready();
    let count = |s: &Setup| {
        let mut seen = std::collections::HashMap::<String, usize>::new();
        for l in object_lines(&s.path("lake")) {
            *seen.entry(l).or_default() += 1;
        }
        seen
    };
    let mut seen = count(&s);
    for _ in 0..60 {
        if seen.len() == N {
            break;
        }
        d.signal(libc::SIGTERM);
        let _ = d.wait_exit(Duration::from_secs(60));
        d = s.start();
        d.wait_ready();
        seen = count(&s);
    }
    assert_eq!(seen.len(), N, "every record delivered");
    assert!(seen.values().all(|&n| n == 1), "no duplicates");
}

/// 4. Recovery cannot be fooled by record contents: a record whose data holds well-formed
///    frames (claiming sequence 10^15), followed by a torn tail, never comes back as
///    records, and the numbering goes on from where it really was.
#[test]
fn recovery_is_not_fooled_by_frames_inside_record_data() {
    let s = Setup::new("", &[("p", "[streams.s]\nshards = 1\n")]);
    let put = put_into_s;
    let mut d = s.start();
    d.wait_ready();
    for i in 0..3 {
        put(&s, format!("real-{i}").as_bytes());
    }
    let mut evil = Vec::new();
    for salt in [0u64, 1, 42, u64::MAX] {
        sluice_shardlog::frame::encode(&mut evil, salt, 1_000_000_000_000_000, 0, b"k", b"forged");
    }
    sluice_shardlog::frame::encode_v1(&mut evil, 1_000_000_000_000_000, 0, b"k", b"forged");
    put(&s, &evil);
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(10)).unwrap();
    // Tear the last record inside its header: recovery rescans through its data.
    let shard = s.path("var/streams/s/shardId-000000000000");
    let seg = segment_file(&shard);
    let bytes = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &bytes[..bytes.len() - evil.len() - 10]).unwrap();
    let mut d = s.start();
    d.wait_ready();
    let (_, out) = kinesis(
        s.api,
        "GetShardIterator",
        r#"{"StreamName":"s","ShardId":"shardId-000000000000","ShardIteratorType":"TRIM_HORIZON"}"#,
    );
    let it = serde_json::from_str::<serde_json::Value>(&out).unwrap()["ShardIterator"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, out) = kinesis(
        s.api,
        "GetRecords",
        &format!(r#"{{"ShardIterator":"{it}"}}"#),
    );
    let recs = serde_json::from_str::<serde_json::Value>(&out).unwrap()["Records"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(recs.len(), 3, "{out}");
    assert!(!out.contains(&b64("forged")), "{out}");
    let next = put(&s, b"after");
    let (_, seq) = sluiced::stream::parse_sequence(&next).unwrap();
    assert!(seq < 1_000_000_000_000_000, "sequence {seq}");
    assert!(
        seq >= 4,
        "numbers issued before the crash are not reused: {seq}"
    );
}

/// 12. A stream deleted and made again under the same name is another stream: a pipeline
///     reading the name delivers the new stream's records (its checkpoint and intent log
///     remember positions of the old one, which the new one numbers above), and the old
///     stream's objects are never overwritten.
#[test]
fn a_stream_made_again_under_its_old_name_is_read_from_its_start() {
    let cfg = "[pipelines.lake]\nsource = { plugin = \"stream\", stream = \"again\" }\n\n[pipelines.lake.buffer]\ninterval = \"1s\"\n\n[pipelines.lake.sink]\nplugin = \"object-store\"\nurl = \"lake\"\n";
    let s = Setup::new("", &[]);
    let mut d = s.start();
    d.wait_ready();
    let call = |op: &str, body: &str| kinesis_ok(s.api, op, body);
    let put = |text: &str| {
        call(
            "PutRecord",
            &format!(
                r#"{{"StreamName":"again","Data":"{}","PartitionKey":"k"}}"#,
                b64(text)
            ),
        );
    };
    let count = |prefix: &str| {
        object_lines(&s.path("lake"))
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    };
    call("CreateStream", r#"{"StreamName":"again","ShardCount":1}"#);
    s.write_pipeline("p", cfg);
    assert_eq!(d.post("/admin/reload").map(|r| r.0), Some(200));
    for i in 0..5 {
        put(&format!("old-{i}"));
    }
    let cp = s.path("var/checkpoints/lake/again.json");
    wait_until(
        Duration::from_secs(30),
        "the old records delivered and checkpointed",
        || count("old-") == 5 && std::fs::read_to_string(&cp).is_ok_and(|t| t.contains("shardId")),
    );
    call("DeleteStream", r#"{"StreamName":"again"}"#);
    call("CreateStream", r#"{"StreamName":"again","ShardCount":1}"#);
    for i in 0..3 {
        put(&format!("new-{i}"));
    }
    wait_until(
        Duration::from_secs(30),
        "the new stream's records delivered",
        || count("new-") == 3,
    );
    // After a restart (the checkpoint now names the new stream's positions) too.
    d.stop_cleanly();
    let mut d = s.start();
    d.wait_ready();
    put("new-3");
    wait_until(
        Duration::from_secs(30),
        "a record put after the restart delivered",
        || count("new-") == 4,
    );
    d.stop_cleanly();
    let all = object_lines(&s.path("lake"));
    assert_eq!(count("old-"), 5, "old objects intact: {all:?}");
    assert_eq!(count("new-"), 4, "each new record once: {all:?}");
}

/// 13. A stream source that ends on an error (not a clean stop) still writes the positions
///     it delivered: its checkpoint is saved when the instance is dropped. Here the interval
///     is an hour, so nothing was written before; deleting the stream fails the source.
#[test]
fn a_source_ended_by_an_error_keeps_its_delivered_positions() {
    let s = Setup::new("", &[]);
    let mut d = s.start();
    d.wait_ready();
    let call = |op: &str, body: &str| {
        kinesis_ok(s.api, op, body);
    };
    call("CreateStream", r#"{"StreamName":"d","ShardCount":1}"#);
    s.write_pipeline(
        "p",
        "[pipelines.copy]\nsource = { plugin = \"stream\", stream = \"d\", checkpoint_interval = \"1h\" }\nsink = { plugin = \"file\", path = \"out/copy.jsonl\" }\n",
    );
    assert_eq!(d.post("/admin/reload").map(|r| r.0), Some(200));
    for i in 0..3 {
        call(
            "PutRecord",
            &format!(
                r#"{{"StreamName":"d","Data":"{}","PartitionKey":"k"}}"#,
                b64(&format!("r{i}"))
            ),
        );
    }
    let cp = s.path("var/checkpoints/copy/d.json");
    wait_until(Duration::from_secs(20), "3 records delivered", || {
        lines(&s.path("out/copy.jsonl")).len() == 3
    });
    assert!(!cp.exists(), "not written yet: the interval is an hour");
    call("DeleteStream", r#"{"StreamName":"d"}"#);
    wait_until(
        Duration::from_secs(20),
        "the failed source's positions in its checkpoint",
        || std::fs::read_to_string(&cp).is_ok_and(|t| t.contains("\"shardId-000000000000\":3")),
    );
    d.stop_cleanly();
}
