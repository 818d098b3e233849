//! The HTTP front door under hostile clients (issue #9, item 10): slow and idle
//! connections are closed, oversized bodies are refused before they are read, every
//! refusal is an AWS-shaped JSON error with a request id, and a barrage of malformed
//! requests through both APIs gets 4xx answers only while memory stays flat.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const SETUP: &str = "[streams.events]\nshards = 2\n\n[pipelines.fh]\nsource = { plugin = \"direct-put\" }\n\n[pipelines.fh.sink]\nplugin = \"object-store\"\nurl = \"lake\"\n";

/// Sends raw bytes and reads until the server closes (or 30 s pass): (status, head, body).
fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

fn assert_aws_error(code: u16, head: &str, body: &str, want: u16) {
    assert_eq!(code, want, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase().contains("x-amzn-requestid:"),
        "request id on every refusal: {head}"
    );
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    // AWS's Java front end capitalises `Message` on SerializationException only.
    assert!(
        v["__type"].is_string() && (v["message"].is_string() || v["Message"].is_string()),
        "{body}"
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn refusals_outside_operations_are_aws_shaped() {
    let s = Setup::new("", &[("p", SETUP)]);
    let mut d = s.start();
    d.wait_ready();
    let a = s.api;
    // A huge declared body with 2 bytes sent: refused at once, connection closed.
    let (code, head, body) = raw(
        a,
        format!("POST / HTTP/1.1\r\nHost: {a}\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Length: 100000000000\r\n\r\n{{}}").as_bytes(),
    );
    assert_aws_error(code, &head, &body, 413);
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    // No declared length, a chunked body past the limit: cut off at the limit, 413.
    let big = 9usize << 20;
    let mut req = format!("POST / HTTP/1.1\r\nHost: {a}\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nTransfer-Encoding: chunked\r\n\r\n{big:x}\r\n").into_bytes();
    req.extend(std::iter::repeat_n(b' ', big));
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    let (code, head, body) = raw(a, &req);
    assert_aws_error(code, &head, &body, 413);
    // A broken chunked body: 400, not 413.
    let (code, head, body) = raw(
        a,
        format!("POST / HTTP/1.1\r\nHost: {a}\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n").as_bytes(),
    );
    assert!(code == 400, "{code} {head} {body}");
    // Other methods and paths: AWS's own documents (`kinesis_manage.rs` pins them).
    let (code, _, body) = raw(
        a,
        format!("GET / HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(
        code == 403 && body.contains("<AccessDeniedException>"),
        "{code} {body}"
    );
    let (code, _, body) = raw(
        a,
        format!("POST /nope HTTP/1.1\r\nHost: {a}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}").as_bytes(),
    );
    assert!(
        code == 403 && body.contains("<AccessDeniedException>"),
        "{code} {body}"
    );
    // (A body that stops arriving: `api::tests::a_body_that_stops_arriving_is_not_waited_for`.)
    assert_eq!(d.get("/healthz").unwrap().0, 200);
}

#[test]
fn slow_and_idle_connections_are_closed() {
    let s = Setup::new("", &[("p", SETUP)]);
    let mut d = s.start();
    d.wait_ready();
    let a = s.api;
    // 50 slow senders: a request line and half a header, then nothing.
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut c = TcpStream::connect(a).unwrap();
            c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Tar")
                .unwrap();
            c
        })
        .collect();
    // One idle keep-alive connection after a good request.
    let mut idle = TcpStream::connect(a).unwrap();
    idle.write_all(format!("POST / HTTP/1.1\r\nHost: {a}\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Length: 2\r\n\r\n{{}}").as_bytes()).unwrap();
    wait_until(Duration::from_secs(10), "51 connections open", || {
        d.metric("sluice_http_connections", &["listener=\"api\""]) >= 51.0
    });
    // Every one of them is closed by the server within the header timeout (20 s).
    wait_until(
        Duration::from_secs(60),
        "slow and idle connections closed",
        || d.metric("sluice_http_connections", &["listener=\"api\""]) == 0.0,
    );
    for c in slow.iter_mut().chain(std::iter::once(&mut idle)) {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        // The server closed: reading ends (after the idle one's response) instead of
        // running into the read timeout.
        c.read_to_end(&mut buf).unwrap();
    }
}

/// At least 150 malformed, oversized or out-of-range requests through both APIs: every
/// answer is an AWS-shaped 4xx, never a 5xx, and the daemon's memory stays flat.
#[test]
fn a_barrage_of_bad_requests_gets_only_aws_shaped_4xx() {
    let s = Setup::new("", &[("p", SETUP)]);
    let mut d = s.start();
    d.wait_ready();
    let a = s.api;
    let long = "x".repeat(300);
    let bodies: Vec<String> = vec![
        String::new(),
        "{".into(),
        "[]".into(),
        "null".into(),
        "\"s\"".into(),
        "{}".into(),
        r#"{"StreamName":5,"DeliveryStreamName":5}"#.into(),
        r#"{"StreamName":true,"DeliveryStreamName":[]}"#.into(),
        format!(r#"{{"StreamName":"{long}","DeliveryStreamName":"{long}"}}"#),
        r#"{"StreamName":"..","DeliveryStreamName":".."}"#.into(),
        r#"{"StreamName":"events","Limit":-1,"ShardCount":-5}"#.into(),
        r#"{"StreamName":"events","Limit":0}"#.into(),
        r#"{"StreamName":"events","Limit":10001,"ShardCount":100000}"#.into(),
        r#"{"StreamName":"events","Limit":1e300}"#.into(),
        r#"{"StreamName":"events","Data":"eA==","PartitionKey":"k","SequenceNumberForOrdering":"zz"}"#.into(),
        r#"{"StreamName":"events","ShardId":"shardId-000000000000","ShardIteratorType":"AT_TIMESTAMP","Timestamp":1e300}"#.into(),
        r#"{"StreamName":"events","ShardId":"shardId-000000000000","ShardIteratorType":"AT_TIMESTAMP","Timestamp":-1e300}"#.into(),
        r#"{"StreamName":"events","ShardId":"shardId-000000000000","ShardIteratorType":"AT_TIMESTAMP","Timestamp":4102444800}"#.into(),
        r#"{"StreamName":"events","ShardId":"shardId-999999999999","ShardIteratorType":"LATEST"}"#.into(),
        r#"{"StreamName":"events","Records":[],"DeliveryStreamName":"fh"}"#.into(),
        r#"{"StreamName":"events","Data":"!!notbase64","PartitionKey":"k","DeliveryStreamName":"fh","Record":{"Data":"!!"}}"#.into(),
        r#"{"ShardIterator":"AAAA","Limit":0}"#.into(),
        r#"{"StreamARN":"arn:aws:kinesis:us-east-1:000000000000:stream/..","DeliveryStreamName":"nope"}"#.into(),
    ];
    let mut targets: Vec<String> = sluiced::api::KINESIS_OPERATIONS
        .iter()
        .map(|op| format!("Kinesis_20131202.{op}"))
        .collect();
    targets.extend(
        sluiced::api::FIREHOSE_OPERATIONS
            .iter()
            .map(|op| format!("Firehose_20150804.{op}")),
    );
    targets.push("Kinesis_20131202.NoSuchOperation".into());
    let pid = d.child.id();
    let mut sent = 0;
    let mut rss_after_first = 0;
    for round in 0..3 {
        for t in &targets {
            for b in &bodies {
                let (code, rid, out) = aws_call(a, t, b).expect("the API answers");
                sent += 1;
                if code == 200 {
                    continue; // some bodies are valid for some operations ("{}" for lists)
                }
                assert!((400..500).contains(&code), "{t} {b:.60}: {code} {out}");
                assert!(rid, "{t}: request id");
                let v: serde_json::Value = serde_json::from_str(&out)
                    .unwrap_or_else(|e| panic!("{t} {b:.60}: {e}: {out}"));
                assert!(v["__type"].is_string(), "{t}: {out}");
            }
        }
        if round == 0 {
            rss_after_first = rss_kib(pid);
        }
    }
    assert!(sent >= 150 * 3, "{sent}");
    let rss_end = rss_kib(pid);
    assert!(
        rss_end < rss_after_first + 16 * 1024,
        "RSS grew from {rss_after_first} KiB to {rss_end} KiB"
    );
    assert_eq!(d.get("/healthz").unwrap().0, 200);
}
