//! The `http` source end to end (issue #15): curl and the CloudEvents Python SDK post in
//! structured, binary and batch mode; a Firehose HTTP-endpoint delivery request (gzip,
//! access key) is answered in Firehose's format; every 200 means the records are in the
//! stream already; bad requests get clear 4xx answers and lose nothing; a pipeline that
//! falls behind answers 503 with Retry-After.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

/// One POST (HTTP/1.1, `Connection: close`): status, head and body.
fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head.to_string(), body.to_string())
}

/// Every record's data in stream `name`, read through the Kinesis API (GetRecords).
fn stream_data(api: SocketAddr, name: &str) -> Vec<String> {
    use base64::Engine as _;
    let (_, shards) = kinesis(api, "ListShards", &format!(r#"{{"StreamName":"{name}"}}"#));
    let shards: serde_json::Value = serde_json::from_str(&shards).unwrap();
    let mut out = Vec::new();
    for sh in shards["Shards"].as_array().unwrap() {
        let id = sh["ShardId"].as_str().unwrap();
        let (_, it) = kinesis(
            api,
            "GetShardIterator",
            &format!(
                r#"{{"StreamName":"{name}","ShardId":"{id}","ShardIteratorType":"TRIM_HORIZON"}}"#
            ),
        );
        let it: serde_json::Value = serde_json::from_str(&it).unwrap();
        let (_, recs) = kinesis(
            api,
            "GetRecords",
            &format!(
                r#"{{"ShardIterator":"{}"}}"#,
                it["ShardIterator"].as_str().unwrap()
            ),
        );
        let recs: serde_json::Value = serde_json::from_str(&recs).unwrap();
        for r in recs["Records"].as_array().unwrap() {
            let d = base64::engine::general_purpose::STANDARD
                .decode(r["Data"].as_str().unwrap())
                .unwrap();
            out.push(String::from_utf8_lossy(&d).into_owned());
        }
    }
    out
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl (scripts/install-test-deps installs it)");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn producers_post_cloudevents_and_firehose_requests_into_a_stream() {
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = format!(
        "[streams.ingest]\nshards = 2\n\n[pipelines.web]\nsource = {{ plugin = \"http\", listen = \"{web}\", path = \"/events\", stream = \"ingest\", access_key = \"k3y\", partition_key = \"source\" }}\n\n[pipelines.web.partitioning]\nquery = '{{type: .type}}'\n\n[pipelines.web.buffer]\ninterval = \"1s\"\n\n[pipelines.web.sink]\nplugin = \"object-store\"\nurl = \"lake\"\nprefix = \"type=!{{partitionKeyFromQuery:type}}/\"\n"
    );
    let s = Setup::new("", &[("web", &cfg)]);
    let mut d = s.start();
    d.wait_ready();
    let url = format!("http://{web}/events");
    let ev = |id: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"curl","type":"curl.test","data":{{"k":"v"}}}}"#
        )
    };

    // curl, structured mode: in the stream when the 200 arrives.
    let out = curl(&[
        "-H",
        "Content-Type: application/cloudevents+json",
        "-H",
        "X-Api-Key: k3y",
        "--data-binary",
        &ev("curl-1"),
        &url,
    ]);
    assert!(out.ends_with("\n200"), "{out}");
    assert!(
        stream_data(s.api, "ingest")
            .iter()
            .any(|r| r.contains("\"curl-1\"")),
        "in the stream before the answer"
    );
    // Binary mode and batch mode.
    let out = curl(&[
        "-H",
        "ce-specversion: 1.0",
        "-H",
        "ce-id: curl-2",
        "-H",
        "ce-source: curl",
        "-H",
        "ce-type: curl.test",
        "-H",
        "Content-Type: application/json",
        "-H",
        "Authorization: Bearer k3y",
        "--data-binary",
        "{\"n\": 2}",
        &url,
    ]);
    assert!(out.ends_with("\n200"), "{out}");
    let batch = format!("[{}, {}]", ev("curl-3"), ev("curl-4"));
    let out = curl(&[
        "-H",
        "Content-Type: application/cloudevents-batch+json",
        "-H",
        "X-Api-Key: k3y",
        "--data-binary",
        &batch,
        &url,
    ]);
    assert!(
        out.ends_with("\n200") && out.contains("\"accepted\":2"),
        "{out}"
    );
    let datas = stream_data(s.api, "ingest");
    for id in ["curl-2", "curl-3", "curl-4"] {
        assert!(
            datas.iter().any(|r| r.contains(&format!("\"{id}\""))),
            "{id} in {datas:?}"
        );
    }

    // The CloudEvents SDK, all three modes.
    let printed = python(
        &[
            interop("http_source_cloudevents.py").to_str().unwrap(),
            &url,
            "k3y",
            "sdk",
        ],
        &d,
    );
    assert!(printed.trim_end().ends_with("ok"), "{printed}");

    // Firehose's HTTP-endpoint delivery request: gzip, access key, answered in its format.
    let events: Vec<String> = (0..3).map(|i| ev(&format!("fh-{i}"))).collect();
    let fh_body = {
        use base64::Engine as _;
        let recs: Vec<String> = events
            .iter()
            .map(|e| {
                format!(
                    r#"{{"data":"{}"}}"#,
                    base64::engine::general_purpose::STANDARD.encode(e)
                )
            })
            .collect();
        let json = format!(
            r#"{{"requestId":"req-1","timestamp":1700000000000,"records":[{}]}}"#,
            recs.join(",")
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(json.as_bytes()).unwrap();
        gz.finish().unwrap()
    };
    let fh_headers = |key: &'static str| {
        vec![
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
            ("X-Amz-Firehose-Protocol-Version", "1.0"),
            ("X-Amz-Firehose-Request-Id", "req-1"),
            ("X-Amz-Firehose-Access-Key", key),
        ]
    };
    let (code, _, body) = post(web, "/events", &fh_headers("wrong"), &fh_body);
    assert_eq!(code, 401, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["requestId"], "req-1");
    assert!(
        v["timestamp"].as_i64().unwrap() > 0
            && v["errorMessage"].as_str().unwrap().contains("access key"),
        "{body}"
    );
    let (code, _, body) = post(web, "/events", &fh_headers("k3y"), &fh_body);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["requestId"], "req-1", "{body}");
    // Firehose sends a request again (same id) when it missed the 200: stored once.
    let (code, _, body) = post(web, "/events", &fh_headers("k3y"), &fh_body);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        stream_data(s.api, "ingest")
            .iter()
            .filter(|r| r.contains("\"fh-0\""))
            .count(),
        1
    );
    assert_eq!(
        d.metric("sluice_http_source_repeats_total", &["pipeline=\"web\""]),
        1.0
    );
    assert!(
        v["timestamp"].as_i64().unwrap() > 1_700_000_000_000 && v.get("errorMessage").is_none(),
        "{body}"
    );

    // Refusals: no key, wrong path, wrong method, wrong type, broken events — none written.
    let before = stream_data(s.api, "ingest").len();
    let ce = [("Content-Type", "application/cloudevents+json")];
    assert_eq!(post(web, "/events", &ce, ev("nokey").as_bytes()).0, 401);
    assert_eq!(post(web, "/other", &[("X-Api-Key", "k3y")], b"{}").0, 404);
    assert_eq!(http(web, "GET", "/events").unwrap().0, 405);
    let keyed = |ct: &'static str| vec![("X-Api-Key", "k3y"), ("Content-Type", ct)];
    let (code, _, body) = post(web, "/events", &keyed("application/xml"), b"<a/>");
    assert_eq!(code, 415, "{body}");
    let (code, _, body) = post(
        web,
        "/events",
        &keyed("application/cloudevents+json"),
        br#"{"specversion":"1.0","id":"x","source":"s"}"#,
    );
    assert_eq!(code, 400);
    assert!(body.contains("`type`"), "{body}");
    let bad_batch = format!("[{}, {{\"id\": 1}}]", ev("half"));
    assert_eq!(
        post(
            web,
            "/events",
            &keyed("application/cloudevents-batch+json"),
            bad_batch.as_bytes()
        )
        .0,
        400
    );
    assert_eq!(
        stream_data(s.api, "ingest").len(),
        before,
        "nothing of a refused request is written"
    );

    // Everything accepted reaches the lake, partitioned by type.
    let mut want: Vec<String> = (1..=4).map(|i| format!("curl-{i}")).collect();
    want.extend((0..9).map(|i| format!("sdk-{i}")));
    want.extend((0..3).map(|i| format!("fh-{i}")));
    wait_until(
        Duration::from_secs(30),
        "every accepted event in the lake",
        || {
            let lines = object_lines(&s.path("lake"));
            want.iter().all(|id| {
                lines
                    .iter()
                    .filter(|l| l.contains(&format!("\"id\":\"{id}\"")))
                    .count()
                    == 1
            })
        },
    );
    let lines = object_lines(&s.path("lake"));
    assert_eq!(lines.len(), want.len(), "{lines:?}");
    assert!(lines
        .iter()
        .all(|l| !l.contains("\"id\":\"half\"") && !l.contains("nokey")));
    assert!(s.path("lake/type=sdk.test").is_dir() && s.path("lake/type=curl.test").is_dir());
    // The SDK's binary bytes are kept as data_base64; its multi-line text stays one line.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"data_base64\":\"AAFiaW5hcnk=\"")),
        "{lines:?}"
    );
    assert_eq!(
        d.metric("sluice_http_source_records_total", &["pipeline=\"web\""]),
        want.len() as f64
    );
    assert!(d.metric("sluice_http_source_requests_total", &["code=\"401\""]) >= 2.0);
    assert_promtool_accepts(&d.metrics_text());
    d.stop_cleanly();
}

#[test]
fn a_pipeline_that_falls_behind_answers_503_and_bodies_are_bounded() {
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Buffered for an hour: nothing is delivered while the daemon runs, so the backlog
    // only grows.
    let cfg = format!(
        "[pipelines.plain]\nsource = {{ plugin = \"http\", listen = \"{web}\", max_backlog = 3, max_body = \"4KiB\", max_in_flight = \"8KiB\" }}\n\n[pipelines.plain.buffer]\ninterval = \"1h\"\n\n[pipelines.plain.sink]\nplugin = \"object-store\"\nurl = \"lake\"\n"
    );
    let s = Setup::new("", &[("plain", &cfg)]);
    let mut d = s.start();
    d.wait_ready();
    let nd = [("Content-Type", "application/x-ndjson")];
    let (code, _, body) = post(web, "/", &nd, b"{\"a\":1}\n{\"a\":2}\n\n{\"a\":3}\n");
    assert_eq!((code, body.as_str()), (200, r#"{"accepted":3}"#));
    let (code, _, body) = post(web, "/", &nd, &vec![b'x'; 5000]);
    assert_eq!(code, 413, "{body}");
    let (code, head, body) = post(web, "/", &[("Content-Type", "text/plain")], b"four\n");
    assert_eq!(code, 503, "{body}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert!(body.contains("behind"), "{body}");
    // The accepted records wait in the stream: after a restart with a short interval they
    // are delivered, each once.
    d.stop_cleanly();
    s.write_pipeline(
        "plain",
        &cfg.replace("interval = \"1h\"", "interval = \"1s\""),
    );
    let mut d = s.start();
    d.wait_ready();
    wait_until(
        Duration::from_secs(30),
        "the accepted records delivered",
        || object_lines(&s.path("lake")).len() >= 3,
    );
    // A reload that changes the source moves the listener to the new run of the pipeline.
    s.write_pipeline(
        "plain",
        &cfg.replace("interval = \"1h\"", "interval = \"1s\"")
            .replace("max_backlog = 3", "max_backlog = 50"),
    );
    assert_eq!(d.post("/admin/reload").map(|r| r.0), Some(200));
    wait_until(
        Duration::from_secs(30),
        "the reloaded source answers",
        || TcpStream::connect(web).is_ok() && post(web, "/", &nd, b"{\"a\":4}\n").0 == 200,
    );
    wait_until(
        Duration::from_secs(30),
        "the record after the reload delivered",
        || object_lines(&s.path("lake")).len() >= 4,
    );
    d.stop_cleanly();
    let lines = object_lines(&s.path("lake"));
    assert_eq!(lines.len(), 4, "{lines:?}");
    for want in [r#"{"a":1}"#, r#"{"a":2}"#, r#"{"a":3}"#, r#"{"a":4}"#] {
        assert_eq!(lines.iter().filter(|l| *l == want).count(), 1, "{lines:?}");
    }
}
