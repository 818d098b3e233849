//! The Firehose control plane (issue #10): a delivery stream created through boto3 with
//! the seed's settings delivers to the lake exactly as the same pipeline declared in a file
//! does; API-made delivery streams survive a restart, UpdateDestination and
//! DeleteDeliveryStream apply live (delete drains), and every operation answers AWS's
//! shapes and errors (`interop/firehose_control_boto3.py`).
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::time::Duration;

const FILE_LAKE: &str = "[pipelines.file-lake]\nsource = { plugin = \"stream\", stream = \"events\" }\n\n[pipelines.file-lake.partitioning]\nquery = '{type: .type, source: .source}'\n\n[pipelines.file-lake.buffer]\nsize = \"64MiB\"\ninterval = \"60s\"\n\n[pipelines.file-lake.sink]\nplugin = \"object-store\"\nurl = \"file-lake-out\"\nprefix = \"type=!{partitionKeyFromQuery:type}/source=!{partitionKeyFromQuery:source}/\"\nerror_prefix = \"kdferror/!{firehose:error-output-type}/\"\ncompression = \"gzip\"\n";

/// Partition folders (`type=…/source=…`, the time folders left out) → the records in them.
fn lake(dir: &std::path::Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in files_under(dir) {
        let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        if rel.split('/').any(|c| c.starts_with('.')) {
            continue;
        }
        let partition: Vec<&str> = rel.split('/').filter(|c| c.contains('=')).collect();
        let mut text = String::new();
        let raw = std::fs::read(&p).unwrap();
        if rel.ends_with(".gz") {
            flate2::read::MultiGzDecoder::new(&raw[..])
                .read_to_string(&mut text)
                .unwrap();
        } else {
            text = String::from_utf8(raw).unwrap();
        }
        out.entry(partition.join("/"))
            .or_default()
            .extend(text.lines().map(str::to_string));
    }
    out
}

#[test]
fn a_delivery_stream_made_through_boto3_delivers_like_a_file_pipeline_and_survives_restarts() {
    let s = Setup::new("", &[]);
    let mut d = s.start();
    d.wait_ready();
    let (code, body) = kinesis(
        s.api,
        "CreateStream",
        r#"{"StreamName":"events","ShardCount":2}"#,
    );
    assert_eq!(code, 200, "{body}");
    s.write_pipeline("file-lake", FILE_LAKE);
    let (code, text) = d.post("/admin/reload").unwrap();
    assert_eq!(code, 200, "{text}");
    d.wait_ready();
    let ep = format!("http://{}", s.api);
    run_interop(&d, s.api, "firehose_control_boto3.py", &["create"]);
    // The generated pipeline file is there for the operator to read.
    let generated = std::fs::read_to_string(s.path("var/delivery-streams/api-lake.toml")).unwrap();
    assert!(
        generated.contains("[pipelines.api-lake.partitioning]"),
        "{generated}"
    );
    // Once every record was read into the buffers, a stop drains them into objects.
    let read = |d: &Daemon, stream: &str, consumer: &str| {
        metric_sum(
            &d.metrics_text(),
            "sluice_shard_outgoing_records_total",
            &[
                &format!("stream=\"{stream}\""),
                &format!("consumer=\"{consumer}\""),
            ],
        )
    };
    wait_until(Duration::from_secs(30), "every record read", || {
        read(&d, "events", "api-lake") >= 300.0
            && read(&d, "events", "file-lake") >= 300.0
            && read(&d, "__firehose-direct-api", "direct-api") >= 40.0
    });
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(30)).unwrap().success(),
        "{}",
        d.stderr()
    );
    let api = lake(&s.path("var/buckets/lake"));
    let file = lake(&s.path("file-lake-out"));
    assert_eq!(
        api.values().map(BTreeSet::len).sum::<usize>(),
        300,
        "{api:?}"
    );
    assert_eq!(api, file, "the same partitions with the same records");
    assert!(
        api.contains_key(
            "type=order.created/source=https%3A%2F%2Fgithub.com%2FJoseLuisSR%2Fawsmeter"
        ),
        "{:?}",
        api.keys()
    );
    let direct = lake(&s.path("var/buckets/direct"));
    assert_eq!(
        direct.values().map(BTreeSet::len).sum::<usize>(),
        40,
        "{direct:?}"
    );

    // After a restart: still there (AWS CLI), then DeleteDeliveryStream.
    let mut d = s.start();
    d.wait_ready();
    let desc: serde_json::Value = serde_json::from_str(&aws_cli(
        &ep,
        &[
            "--output",
            "json",
            "firehose",
            "describe-delivery-stream",
            "--delivery-stream-name",
            "api-lake",
        ],
    ))
    .unwrap();
    assert_eq!(
        desc["DeliveryStreamDescription"]["VersionId"], "2",
        "{desc}"
    );
    run_interop(&d, s.api, "firehose_control_boto3.py", &["after-restart"]);
    // Made again under the same name: a new pipeline that holds only the new record (the
    // deleted one's Direct PUT records and checkpoint went with it).
    wait_until(Duration::from_secs(30), "the new record read", || {
        read(&d, "__firehose-direct-api", "direct-api") >= 1.0
    });
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(30)).unwrap().success());
    let again = lake(&s.path("var/buckets/direct2"));
    let records: Vec<&String> = again.values().flatten().collect();
    assert_eq!(records, [&"{\"n\": \"new\"}".to_string()], "{again:?}");
}

/// `start = "latest"` is resolved once: the positions it gave are the checkpoint from the
/// start, so a restart before the first delivery does not resolve "latest" again (and skip
/// what arrived in between).
#[test]
fn latest_positions_are_checkpointed_at_start() {
    let s = Setup::new("", &[]);
    let mut d = s.start();
    d.wait_ready();
    let (code, body) = kinesis(
        s.api,
        "CreateStream",
        r#"{"StreamName":"late","ShardCount":2}"#,
    );
    assert_eq!(code, 200, "{body}");
    let (code, _) = kinesis(
        s.api,
        "PutRecord",
        r#"{"StreamName":"late","Data":"eyJuIjoib2xkIn0=","PartitionKey":"a"}"#,
    );
    assert_eq!(code, 200);
    s.write_pipeline(
        "tail",
        "[pipelines.tail]\nsource = { plugin = \"stream\", stream = \"late\", start = \"latest\" }\n\n[pipelines.tail.sink]\nplugin = \"file\"\npath = \"out/tail.jsonl\"\n",
    );
    let (code, text) = d.post("/admin/reload").unwrap();
    assert_eq!(code, 200, "{text}");
    d.wait_ready();
    let cp = s.path("var/checkpoints/tail/late.json");
    wait_until(
        Duration::from_secs(10),
        "the checkpoint written at start",
        || cp.exists(),
    );
    let positions: BTreeMap<String, u64> =
        serde_json::from_str(&std::fs::read_to_string(&cp).unwrap()).unwrap();
    assert_eq!(
        positions.values().sum::<u64>(),
        1,
        "past the old record: {positions:?}"
    );
    d.stop_cleanly();
    let mut d = s.start();
    d.wait_ready();
    let (code, _) = kinesis(
        s.api,
        "PutRecord",
        r#"{"StreamName":"late","Data":"eyJuIjoibmV3In0=","PartitionKey":"b"}"#,
    );
    assert_eq!(code, 200);
    let out = s.path("out/tail.jsonl");
    wait_until(Duration::from_secs(20), "the new record delivered", || {
        lines(&out).iter().any(|l| l.contains("new"))
    });
    assert!(
        lines(&out).iter().all(|l| !l.contains("old")),
        "{:?}",
        lines(&out)
    );
}
