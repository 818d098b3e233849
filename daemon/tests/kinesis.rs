//! The Kinesis API with real clients (boto3 and the AWS CLI from the repo's Python venv,
//! see `scripts/install-test-deps`), AWS-shaped validation errors over raw HTTP, and
//! durability across SIGKILL.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

const EVENTS: &str = "[streams.events]\nshards = 4\n";

fn try_call(addr: SocketAddr, target: &str, body: &str) -> Option<(u16, bool, String)> {
    aws_call(addr, target, body)
}

fn call(addr: SocketAddr, target: &str, body: &str) -> (u16, bool, String) {
    try_call(addr, target, body).expect("the API answers")
}

fn error_of(body: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (
        v["__type"].as_str().unwrap_or("").into(),
        v["message"].as_str().unwrap_or("").into(),
    )
}

#[test]
fn boto3_round_trip() {
    let s = Setup::new("", &[("streams", EVENTS)]);
    let mut d = s.start();
    d.wait_ready();
    python(
        &[
            interop("kinesis_boto3.py").into_os_string(),
            format!("http://{}", s.api).into(),
        ],
        &d,
    );
}

fn aws(s: &Setup, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--output", "json", "kinesis"];
    all.extend_from_slice(args);
    let text = aws_cli(&format!("http://{}", s.api), &all);
    if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

#[test]
fn aws_cli_round_trip() {
    let s = Setup::new("", &[("streams", EVENTS)]);
    let mut d = s.start();
    d.wait_ready();
    let shards = aws(&s, &["list-shards", "--stream-name", "events"]);
    let shards = shards["Shards"].as_array().unwrap().clone();
    assert_eq!(shards.len(), 4);
    let mut expected: Vec<Vec<(String, String)>> = vec![Vec::new(); 4];
    for i in 0..40 {
        let key = format!("pk{i}");
        let data = format!("hello-{i}");
        // AWS CLI v1 base64-encodes blob arguments itself.
        let r = aws(
            &s,
            &[
                "put-record",
                "--stream-name",
                "events",
                "--partition-key",
                &key,
                "--data",
                &data,
            ],
        );
        let shard = r["ShardId"].as_str().unwrap().to_string();
        let h = sluiced::stream::hash_key(key.as_bytes());
        let idx = (0..4u32).find(|&j| {
            let (lo, hi) = sluiced::stream::shard_range(j, 4);
            (lo..=hi).contains(&h)
        });
        assert_eq!(
            shard,
            sluiced::stream::shard_id(idx.unwrap()),
            "{key} routed by MD5"
        );
        expected[idx.unwrap() as usize]
            .push((r["SequenceNumber"].as_str().unwrap().to_string(), data));
    }
    let batch = serde_json::json!([
        { "Data": "YmF0Y2gtMA==", "PartitionKey": "b0", "ExplicitHashKey": "0" },
        { "Data": "YmF0Y2gtMQ==", "PartitionKey": "b1", "ExplicitHashKey": "340282366920938463463374607431768211455" },
    ]);
    let file = s.path("records.json");
    std::fs::write(&file, batch.to_string()).unwrap();
    // `fileb://`-free: records given as JSON; CLI v1 base64-encodes Data again, so decode twice below.
    let r = aws(
        &s,
        &[
            "put-records",
            "--stream-name",
            "events",
            "--records",
            &format!("file://{}", file.display()),
        ],
    );
    assert_eq!(r["FailedRecordCount"], 0);
    assert_eq!(r["Records"][0]["ShardId"], "shardId-000000000000");
    assert_eq!(r["Records"][1]["ShardId"], "shardId-000000000003");
    for (j, shard) in shards.iter().enumerate() {
        let it = aws(
            &s,
            &[
                "get-shard-iterator",
                "--stream-name",
                "events",
                "--shard-id",
                shard["ShardId"].as_str().unwrap(),
                "--shard-iterator-type",
                "TRIM_HORIZON",
            ],
        );
        let out = aws(
            &s,
            &[
                "get-records",
                "--shard-iterator",
                it["ShardIterator"].as_str().unwrap(),
            ],
        );
        let got: Vec<(String, String)> = out["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                use base64::Engine as _;
                let d = base64::engine::general_purpose::STANDARD
                    .decode(r["Data"].as_str().unwrap())
                    .unwrap();
                (
                    r["SequenceNumber"].as_str().unwrap().to_string(),
                    String::from_utf8(d).unwrap(),
                )
            })
            .filter(|(_, d)| d.starts_with("hello-"))
            .collect();
        assert_eq!(got, expected[j], "shard {j}: every record once, in order");
    }
}

#[test]
fn validation_errors_are_aws_shaped_and_never_500() {
    let s = Setup::new("", &[("streams", EVENTS)]);
    let mut d = s.start();
    d.wait_ready();
    let a = s.api;
    let t = |op: &str| format!("Kinesis_20131202.{op}");
    let cases: Vec<(String, String, &str, &str)> = vec![
        (t("PutRecord"), r#"{"StreamName":"events","Data":"eA==","PartitionKey":""}"#.into(), "ValidationException",
            "1 validation error detected: Value '' at 'partitionKey' failed to satisfy constraint: Member must have length greater than or equal to 1"),
        (t("PutRecord"), format!(r#"{{"StreamName":"events","Data":"eA==","PartitionKey":"{}"}}"#, "k".repeat(257)), "ValidationException",
            "at 'partitionKey' failed to satisfy constraint: Member must have length less than or equal to 256"),
        (t("PutRecord"), format!(r#"{{"StreamName":"events","Data":"{}","PartitionKey":"k"}}"#, {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(vec![b'x'; (1 << 20) + 1])
        }), "ValidationException", "Value 'java.nio.HeapByteBuffer[pos=0 lim=1048577 cap=1048577]' at 'data' failed to satisfy constraint: Member must have length less than or equal to 1048576"),
        (t("PutRecords"), format!(r#"{{"StreamName":"events","Records":[{}]}}"#, vec![r#"{"Data":"eA==","PartitionKey":"k"}"#; 501].join(",")),
            "ValidationException", "at 'records' failed to satisfy constraint: Member must have length less than or equal to 500"),
        (t("PutRecords"), r#"{"StreamName":"events","Records":[{"Data":"eA==","PartitionKey":""},{"Data":"eA=="}]}"#.into(),
            "ValidationException", "2 validation errors detected: Value '' at 'records.1.member.partitionKey'"),
        (t("PutRecord"), r#"{"StreamName":"nope","Data":"eA==","PartitionKey":"k"}"#.into(), "ResourceNotFoundException",
            "Stream nope under account 000000000000 not found."),
        (t("PutRecord"), r#"{"StreamName":"events","Data":"eA==","PartitionKey":"k","ExplicitHashKey":"340282366920938463463374607431768211456"}"#.into(),
            "InvalidArgumentException", "ExplicitHashKey must be in the range: [0, 2^128-1]"),
        (t("GetRecords"), r#"{"ShardIterator":"AAAAAAAAAAHka4e0dsUi+9sm4ks/X5Pv93MGvo6Unc"}"#.into(), "InvalidArgumentException", "Invalid ShardIterator."),
        (t("GetRecords"), r#"{"ShardIterator":"%%%"}"#.into(), "InvalidArgumentException", "Invalid ShardIterator."),
        (t("GetShardIterator"), r#"{"StreamName":"events","ShardId":"shardId-000000000000","ShardIteratorType":"SIDEWAYS"}"#.into(),
            "ValidationException", "at 'shardIteratorType' failed to satisfy constraint: Member must satisfy enum value set"),
        (t("PutRecord"), "{not json".into(), "SerializationException", ""),
        (t("PutRecord"), "[1,2]".into(), "SerializationException", ""),
        (t("PutRecord"), r#"{"StreamName":5}"#.into(), "SerializationException", ""),
        (t("Frobnicate"), "{}".into(), "UnknownOperationException", ""),
        ("Kinesis_20131202".into(), "{}".into(), "UnknownOperationException", ""),
        ("".into(), "{}".into(), "UnknownOperationException", ""),
    ];
    for (target, body, kind, msg) in cases {
        let (code, rid, out) = call(a, &target, &body);
        assert_eq!(code, 400, "{target} {body:.80}: {out}");
        assert!(rid, "x-amzn-RequestId on every response");
        let (k, m) = error_of(&out);
        assert_eq!(k, kind, "{target} {body:.80}: {out}");
        assert!(m.contains(msg), "{target}: expected {msg:?} in {m:?}");
    }
    // A request that is fine gets a request id too.
    let (code, rid, _) = call(a, &t("ListStreams"), "{}");
    assert!(code == 200 && rid);
    assert!(
        d.metric(
            "sluice_api_requests_total",
            &["operation=\"PutRecord\"", "code=\"400\""]
        ) >= 1.0
    );
    assert_eq!(d.get("/healthz").unwrap().0, 200);
}

#[test]
fn acknowledged_records_survive_sigkill() {
    acknowledged_records_survive_sigkill_with(2, 10);
}

/// With many shards per call, their syncs are one filesystem sync (`syncfs`): the same
/// guarantee, and the counter shows that path was taken.
#[test]
fn acknowledged_records_survive_sigkill_with_one_sync_for_many_shards() {
    acknowledged_records_survive_sigkill_with(16, 64);
}

/// Writers put `per_call` records per call into a stream of `shards` shards until the
/// daemon is SIGKILLed; after a restart every acknowledged record reads back.
fn acknowledged_records_survive_sigkill_with(shards: u32, per_call: usize) {
    let s = Setup::new(
        "",
        &[(
            "streams",
            &format!("[streams.durable]\nshards = {shards}\nfsync = \"batch\"\n"),
        )],
    );
    let mut d = s.start();
    d.wait_ready();
    let api = s.api;
    // Writers put records until the daemon dies; every acknowledged one is remembered.
    let writer = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0..100_000 {
            let body = format!(
                r#"{{"StreamName":"durable","Records":[{}]}}"#,
                (0..per_call)
                    .map(|j| format!(r#"{{"Data":"{}","PartitionKey":"k{j}"}}"#, {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD.encode(format!("r{i}-{j}"))
                    }))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            match try_call(api, "Kinesis_20131202.PutRecords", &body) {
                Some((200, _, out)) => {
                    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                    for (j, r) in v["Records"].as_array().unwrap().iter().enumerate() {
                        acked.push((
                            r["SequenceNumber"].as_str().unwrap().to_string(),
                            format!("r{i}-{j}"),
                        ));
                    }
                }
                _ => break,
            }
        }
        acked
    });
    wait_until(Duration::from_secs(20), "some records stored", || {
        d.metric(
            "sluice_shard_incoming_records_total",
            &["stream=\"durable\""],
        ) > 500.0
    });
    let together = d.metric("sluice_stream_syncfs_total", &["stream=\"durable\""]);
    if shards >= 8 {
        assert!(
            together >= 1.0,
            "calls touching {shards} shards sync them with one syncfs"
        );
    } else {
        assert_eq!(together, 0.0, "{shards} shards sync each on its own");
    }
    d.child.kill().unwrap(); // SIGKILL
    d.child.wait().unwrap();
    let acked = writer.join().unwrap();
    assert!(acked.len() >= 500);
    let mut d = s.start();
    d.wait_ready();
    let mut stored = std::collections::HashMap::new();
    for shard in (0..shards).map(|i| format!("shardId-{i:012}")) {
        let (_, _, out) = call(
            api,
            "Kinesis_20131202.GetShardIterator",
            &format!(
                r#"{{"StreamName":"durable","ShardId":"{shard}","ShardIteratorType":"TRIM_HORIZON"}}"#
            ),
        );
        let mut it = serde_json::from_str::<serde_json::Value>(&out).unwrap()["ShardIterator"]
            .as_str()
            .unwrap()
            .to_string();
        loop {
            let (code, _, out) = call(
                api,
                "Kinesis_20131202.GetRecords",
                &format!(r#"{{"ShardIterator":"{it}"}}"#),
            );
            assert_eq!(code, 200, "{out}");
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            let recs = v["Records"].as_array().unwrap();
            for r in recs {
                use base64::Engine as _;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(r["Data"].as_str().unwrap())
                    .unwrap();
                stored.insert(
                    r["SequenceNumber"].as_str().unwrap().to_string(),
                    String::from_utf8(data).unwrap(),
                );
            }
            it = v["NextShardIterator"].as_str().unwrap().to_string();
            if recs.is_empty() {
                break;
            }
        }
    }
    for (seq, data) in &acked {
        assert_eq!(
            stored.get(seq),
            Some(data),
            "acknowledged record {seq} lost after SIGKILL"
        );
    }
    // Sequence numbers keep increasing after the restart.
    let (_, _, out) = call(
        api,
        "Kinesis_20131202.PutRecord",
        r#"{"StreamName":"durable","Data":"eA==","PartitionKey":"k0"}"#,
    );
    let seq = serde_json::from_str::<serde_json::Value>(&out).unwrap()["SequenceNumber"]
        .as_str()
        .unwrap()
        .to_string();
    let (shard, n) = sluiced::stream::parse_sequence(&seq).unwrap();
    let before: Vec<u64> = acked
        .iter()
        .filter_map(|(s, _)| sluiced::stream::parse_sequence(s))
        .filter(|(sh, _)| *sh == shard)
        .map(|(_, n)| n)
        .collect();
    assert!(
        !before.is_empty() && before.iter().all(|&b| b < n),
        "sequence numbers increase across restarts"
    );
}

#[test]
fn sigv4_is_verified_when_credentials_are_configured() {
    let s = Setup::new(
        "[[api.credentials]]\naccess_key_id = \"AKIDSLUICE\"\nsecret_access_key = \"s3cr3t\"\n",
        &[("streams", EVENTS)],
    );
    // The daemon file's [api] table comes after this array of tables: move it to the end.
    let text = std::fs::read_to_string(&s.config).unwrap();
    let (head, creds) = text.split_once("[[api.credentials]]").unwrap();
    let (creds, tail) = creds.split_once("\n\n").unwrap();
    std::fs::write(
        &s.config,
        format!("{head}{tail}\n[[api.credentials]]{creds}\n"),
    )
    .unwrap();
    let mut d = s.start();
    d.wait_ready();
    python(
        &[
            interop("kinesis_sigv4.py").into_os_string(),
            format!("http://{}", s.api).into(),
        ],
        &d,
    );
    // The AWS CLI signs the same way: the right secret works, a wrong one is refused.
    let cli = |secret: &str| {
        std::process::Command::new(venv_bin("aws"))
            .args([
                "--endpoint-url",
                &format!("http://{}", s.api),
                "kinesis",
                "list-streams",
            ])
            .env("AWS_ACCESS_KEY_ID", "AKIDSLUICE")
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_MAX_ATTEMPTS", "1")
            .output()
            .unwrap()
    };
    let ok = cli("s3cr3t");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("events"));
    let bad = cli("wrong");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("InvalidSignatureException"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // No signature at all.
    let (code, _, body) = call(s.api, "Kinesis_20131202.ListStreams", "{}");
    assert_eq!(code, 400);
    assert_eq!(error_of(&body).0, "MissingAuthenticationTokenException");
}

#[test]
fn write_limits_throttle_per_record() {
    let s = Setup::new(
        "",
        &[(
            "streams",
            "[streams.slow]\nshards = 1\nwrite_limit = { records_per_shard = 5 }\n",
        )],
    );
    let mut d = s.start();
    d.wait_ready();
    let recs = vec![r#"{"Data":"eA==","PartitionKey":"k"}"#; 20].join(",");
    let (code, _, out) = call(
        s.api,
        "Kinesis_20131202.PutRecords",
        &format!(r#"{{"StreamName":"slow","Records":[{recs}]}}"#),
    );
    assert_eq!(code, 200, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let failed = v["FailedRecordCount"].as_u64().unwrap();
    assert!((14..=15).contains(&failed), "{out}");
    let rec = v["Records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r.get("ErrorCode").is_some())
        .unwrap();
    assert_eq!(rec["ErrorCode"], "ProvisionedThroughputExceededException");
    assert!(rec["ErrorMessage"]
        .as_str()
        .unwrap()
        .starts_with("Rate exceeded for shard shardId-000000000000 in stream slow"));
    let (code, _, out) = call(
        s.api,
        "Kinesis_20131202.PutRecord",
        r#"{"StreamName":"slow","Data":"eA==","PartitionKey":"k"}"#,
    );
    assert_eq!(
        (code, error_of(&out).0.as_str()),
        (400, "ProvisionedThroughputExceededException")
    );
    assert!(d.metric("sluice_shard_write_throttled_total", &["stream=\"slow\""]) >= 15.0);
}

#[test]
fn put_and_tail_commands() {
    let s = Setup::new("", &[("streams", EVENTS)]);
    let mut d = s.start();
    d.wait_ready();
    let mut put = Command::new(bin())
        .args(["put", "events", "--config"])
        .arg(&s.config)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = put.stdin.take().unwrap();
        for i in 0..1200 {
            writeln!(stdin, "{{\"line\":{i}}}").unwrap();
        }
    }
    let out = put.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("put 1200 records into events"));
    let out = Command::new(bin())
        .args([
            "tail",
            "events",
            "--from-start",
            "--limit",
            "1200",
            "--config",
        ])
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..1200).map(|i| format!("{{\"line\":{i}}}")).collect();
    want.sort();
    assert_eq!(got, want);
    let (code, _, err) = {
        let o = Command::new(bin())
            .args(["put", "nope", "--config"])
            .arg(&s.config)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            o.status.code(),
            (),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(0), "empty input puts nothing: {err}");
}

#[test]
fn expired_iterators_are_refused_as_aws_does() {
    let s = Setup::new(
        "",
        &[(
            "streams",
            "[streams.events]\nshards = 1\nfsync = \"interval:200ms\"\n",
        )],
    );
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("[api]\n", "[api]\niterator_ttl = \"1s\"\n");
    std::fs::write(&s.config, text).unwrap();
    let mut d = s.start();
    d.wait_ready();
    let (_, _, out) = call(
        s.api,
        "Kinesis_20131202.GetShardIterator",
        r#"{"StreamName":"events","ShardId":"shardId-000000000000","ShardIteratorType":"LATEST"}"#,
    );
    let it = serde_json::from_str::<serde_json::Value>(&out).unwrap()["ShardIterator"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _, _) = call(
        s.api,
        "Kinesis_20131202.GetRecords",
        &format!(r#"{{"ShardIterator":"{it}"}}"#),
    );
    assert_eq!(code, 200);
    wait_until(Duration::from_secs(10), "the iterator expires", || {
        let (code, _, out) = call(
            s.api,
            "Kinesis_20131202.GetRecords",
            &format!(r#"{{"ShardIterator":"{it}"}}"#),
        );
        code == 400
            && error_of(&out).0 == "ExpiredIteratorException"
            && error_of(&out)
                .1
                .starts_with("Iterator expired. The iterator was created at time")
    });
}

#[test]
fn api_streams_persist_across_restarts() {
    let s = Setup::new("", &[]);
    let mut d = s.start();
    d.wait_ready();
    let (code, _, out) = call(
        s.api,
        "Kinesis_20131202.CreateStream",
        r#"{"StreamName":"made","ShardCount":3}"#,
    );
    assert_eq!(code, 200, "{out}");
    let (code, _, _) = call(
        s.api,
        "Kinesis_20131202.PutRecord",
        r#"{"StreamName":"made","Data":"aGk=","PartitionKey":"k"}"#,
    );
    assert_eq!(code, 200);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
    let mut d = s.start();
    d.wait_ready();
    let (_, _, out) = call(
        s.api,
        "Kinesis_20131202.DescribeStreamSummary",
        r#"{"StreamName":"made"}"#,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["StreamDescriptionSummary"]["OpenShardCount"], 3, "{out}");
    let (code, _, _) = call(
        s.api,
        "Kinesis_20131202.DeleteStream",
        r#"{"StreamName":"made"}"#,
    );
    assert_eq!(code, 200);
    assert!(!s.path("var/streams/made").exists());
}

#[test]
fn recovery_on_start_is_logged_and_counted() {
    let s = Setup::new("", &[("streams", "[streams.events]\nshards = 1\n")]);
    let mut d = s.start();
    d.wait_ready();
    for i in 0..10 {
        let (code, _, _) = call(
            s.api,
            "Kinesis_20131202.PutRecord",
            &format!(r#"{{"StreamName":"events","Data":"cmVjb3JkLTAw","PartitionKey":"k{i}"}}"#),
        );
        assert_eq!(code, 200);
    }
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
    let seg = segment_file(&s.path("var/streams/events/shardId-000000000000"));
    let mut bytes = std::fs::read(&seg).unwrap();
    let head = sluice_shardlog::frame::SEGMENT_HEADER;
    let frame = (bytes.len() - head) / 10;
    bytes[head + 3 * frame + frame - 2] ^= 0x01; // damage record 3's data
    bytes.truncate(bytes.len() - 4); // and tear the tail
    std::fs::write(&seg, &bytes).unwrap();
    let mut d = s.start();
    d.wait_ready();
    assert_eq!(
        d.metric(
            "sluice_shard_recovered_truncations_total",
            &["stream=\"events\""]
        ),
        1.0
    );
    assert_eq!(
        d.metric("sluice_shard_corrupt_bytes_total", &["stream=\"events\""]),
        frame as f64
    );
    let log = d.stderr();
    assert!(
        log.contains("torn tail truncated to the last good record"),
        "{log}"
    );
    assert!(
        log.contains("corrupt records in the middle of a segment; skipped")
            && log.contains(&format!("offset={}", head + 3 * frame)),
        "{log}"
    );
    // 10 written, one damaged, one torn: 8 readable.
    let (_, _, out) = call(
        s.api,
        "Kinesis_20131202.GetShardIterator",
        r#"{"StreamName":"events","ShardId":"shardId-000000000000","ShardIteratorType":"TRIM_HORIZON"}"#,
    );
    let it = serde_json::from_str::<serde_json::Value>(&out).unwrap()["ShardIterator"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, _, out) = call(
        s.api,
        "Kinesis_20131202.GetRecords",
        &format!(r#"{{"ShardIterator":"{it}"}}"#),
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["Records"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
}
