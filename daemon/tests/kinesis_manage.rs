//! Issue #10, first slice: the Kinesis stream-management operations (tags, retention,
//! monitoring, encryption settings, mode, limits, resource policies, consumers) through
//! boto3 and the AWS CLI, their persistence across restarts, and AWS's protocol-level
//! answers (CORS preflight, non-POST, content types, empty and malformed bodies, unknown
//! operations), byte for byte.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::io::{Read, Write};

/// One raw HTTP/1.1 exchange: (status, headers lowercased, body).
fn raw(addr: std::net::SocketAddr, req: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}

fn post(
    addr: std::net::SocketAddr,
    content_type: Option<&str>,
    target: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let mut req = "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_string();
    if let Some(ct) = content_type {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if let Some(t) = target {
        req.push_str(&format!("X-Amz-Target: {t}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    raw(addr, &req)
}

const JSON: Option<&str> = Some("application/x-amz-json-1.1");
const ACCESS_DENIED: &str = "<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be authorized</Message>\n</AccessDeniedException>\n";

#[test]
fn management_operations_through_boto3_and_settings_survive_a_restart() {
    let s = Setup::new("", &[]);
    let mut d = s.start();
    d.wait_ready();
    run_interop(&d, s.api, "kinesis_manage_boto3.py", &[]);
    // The AWS CLI, on a few of them.
    let ep = format!("http://{}", s.api);
    aws_cli(
        &ep,
        &[
            "kinesis",
            "add-tags-to-stream",
            "--stream-name",
            "m",
            "--tags",
            "cli=yes",
        ],
    );
    let tags: serde_json::Value = serde_json::from_str(&aws_cli(
        &ep,
        &[
            "--output",
            "json",
            "kinesis",
            "list-tags-for-stream",
            "--stream-name",
            "m",
        ],
    ))
    .unwrap();
    assert!(tags["Tags"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!({"Key": "cli", "Value": "yes"})));
    let limits: serde_json::Value = serde_json::from_str(&aws_cli(
        &ep,
        &["--output", "json", "kinesis", "describe-limits"],
    ))
    .unwrap();
    assert!(limits["ShardLimit"].as_u64().unwrap() > 0, "{limits}");
    // Settings are in stream.json: a restart keeps them.
    d.stop_cleanly();
    let mut d = s.start();
    d.wait_ready();
    let (code, body) = kinesis(s.api, "ListTagsForStream", r#"{"StreamName":"m"}"#);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(r#""Key":"cli""#) && body.contains(r#""Key":"env""#),
        "{body}"
    );
    let (_, body) = kinesis(s.api, "DescribeStreamSummary", r#"{"StreamName":"m"}"#);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let d2 = &v["StreamDescriptionSummary"];
    assert_eq!(d2["ConsumerCount"], 1, "{v}");
    assert_eq!(d2["StreamModeDetails"]["StreamMode"], "ON_DEMAND", "{v}");
    assert_eq!(d2["RetentionPeriodHours"], 24, "{v}");
    d.stop_cleanly();
}

#[test]
fn protocol_level_answers_are_aws_answers() {
    let s = Setup::new("", &[]);
    let mut d = s.start();
    d.wait_ready();
    let a = s.api;
    // Anything but POST, whatever the path.
    for req in [
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "PUT /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        "OPTIONS / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let (code, head, body) = raw(a, req);
        assert_eq!((code, body.as_str()), (403, ACCESS_DENIED), "{req}");
        assert!(head.contains("x-amzn-requestid"), "{head}");
        assert!(!head.contains("content-type"), "{head}");
    }
    // A CORS preflight, for any target.
    let (code, head, body) = raw(
        a,
        "OPTIONS / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: http://app\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type,x-amz-target\r\n\r\n",
    );
    assert_eq!((code, body.as_str()), (200, ""));
    for h in [
        "access-control-allow-origin: *",
        "access-control-max-age: 172800",
        "access-control-allow-methods: post",
        "access-control-allow-headers: content-type,x-amz-target",
    ] {
        assert!(head.contains(h), "{h} in {head}");
    }
    // A POST with Origin gets the CORS headers a browser needs.
    let (code, head, _) = raw(
        a,
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: http://app\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert_eq!(code, 200);
    assert!(
        head.contains("access-control-allow-origin: *")
            && head.contains("access-control-expose-headers: x-amzn-requestid"),
        "{head}"
    );
    let lst = Some("Kinesis_20131202.ListStreams");
    // Empty bodies: by the target alone.
    let (code, _, body) = post(a, JSON, lst, "");
    assert_eq!(
        (code, body.as_str()),
        (400, r#"{"__type":"SerializationException"}"#)
    );
    assert_eq!(
        post(a, JSON, Some("Kinesis_20131202.ListStream"), "").2,
        r#"{"__type":"UnknownOperationException"}"#
    );
    // Content types.
    let (code, _, body) = post(a, None, lst, "{}");
    assert_eq!(
        (code, body.as_str()),
        (404, "<UnknownOperationException/>\n")
    );
    let (code, _, body) = post(a, Some("application/x-amz-json-1.0"), lst, "{}");
    assert_eq!(
        (code, body.as_str()),
        (404, "<UnknownOperationException/>\n")
    );
    let (code, _, body) = post(a, None, None, "{}");
    assert_eq!((code, body.as_str()), (403, ACCESS_DENIED));
    let (code, _, body) = post(a, Some("application/json"), lst, "{}");
    assert_eq!(
        (code, body.as_str()),
        (
            404,
            r#"{"Output":{"__type":"com.amazon.coral.service#UnknownOperationException"},"Version":"1.0"}"#
        )
    );
    let (code, _, body) = post(a, Some(" application/x-amz-json-1.1 ;charset=x"), lst, "{}");
    assert_eq!(code, 200, "{body}");
    // Bodies that are not a JSON object, and unknown operations: the type alone.
    for bad in ["hello", "true", "[]", "{"] {
        assert_eq!(
            post(a, JSON, lst, bad).2,
            r#"{"__type":"SerializationException"}"#,
            "{bad}"
        );
    }
    assert_eq!(
        post(a, JSON, Some("Kinesis_20131202.Nope"), "{}").2,
        r#"{"__type":"UnknownOperationException"}"#
    );
    assert_eq!(
        post(a, JSON, Some("Whatever.ListStreams"), "{}").2,
        r#"{"__type":"UnknownOperationException"}"#
    );
    // A member of the wrong type: AWS's Java words, capital `Message`.
    for (body, msg) in [
        (r#"{"StreamName":true}"#, "class java.lang.Boolean can not be converted to an String"),
        (r#"{"StreamName":23}"#, "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String"),
        (r#"{"StreamName":[]}"#, "Start of list found where not expected"),
        (r#"{"StreamName":{}}"#, "Start of structure or map found where not expected."),
    ] {
        let (code, _, got) = post(a, JSON, Some("Kinesis_20131202.DescribeStream"), body);
        assert_eq!(code, 400);
        let v: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v, serde_json::json!({"__type": "SerializationException", "Message": msg}), "{body}");
    }
    let (_, _, got) = post(
        a,
        JSON,
        Some("Kinesis_20131202.ListStreams"),
        r#"{"Limit":"23"}"#,
    );
    assert!(
        got.contains("class java.lang.String can not be converted to an Integer"),
        "{got}"
    );
    let (_, _, got) = post(
        a,
        JSON,
        Some("Kinesis_20131202.PutRecord"),
        r#"{"StreamName":"s","PartitionKey":"k","Data":"23456"}"#,
    );
    assert!(got.contains("'23456' can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: 5"), "{got}");
    d.stop_cleanly();
}

/// The CBOR form of the API, as the AWS Java SDK, the KPL and the KCL speak it: requests
/// and answers (errors too) in CBOR, blobs as byte strings, timestamps in milliseconds.
#[test]
fn cbor_requests_are_answered_in_cbor() {
    let s = Setup::new("", &[]);
    let mut d = s.start();
    d.wait_ready();
    run_interop(&d, s.api, "kinesis_cbor.py", &[]);
    d.stop_cleanly();
}

/// GetShardIterator checks in AWS's order and words: the shard id is resolved first (the
/// number after the first `-`), then the stream, then the iterator type's arguments.
#[test]
fn get_shard_iterator_answers_in_aws_order() {
    let s = Setup::new("", &[("p", "[streams.two]\nshards = 2\n")]);
    let mut d = s.start();
    d.wait_ready();
    let gsi = |body: &str| {
        let (code, out) = kinesis(s.api, "GetShardIterator", body);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (
            code,
            v["__type"].as_str().unwrap_or("").to_string(),
            v["message"].as_str().unwrap_or("").to_string(),
        )
    };
    // Any spelling with the number after the first dash.
    for id in ["shard-1", "shardId-1", "1", "x-000001"] {
        let (code, _, msg) = gsi(&format!(
            r#"{{"StreamName":"two","ShardId":"{id}","ShardIteratorType":"LATEST"}}"#
        ));
        assert_eq!(code, 200, "{id}: {msg}");
    }
    let acct = "000000000000";
    assert_eq!(
        gsi(r#"{"StreamName":"nope","ShardId":"ABC","ShardIteratorType":"LATEST"}"#),
        (
            400,
            "ResourceNotFoundException".into(),
            format!("Could not find shard ABC in stream nope under account {acct}.")
        )
    );
    assert_eq!(
        gsi(r#"{"StreamName":"nope","ShardId":"shardId-5","ShardIteratorType":"LATEST"}"#),
        (
            400,
            "ResourceNotFoundException".into(),
            format!(
                "Shard shardId-000000000005 in stream nope under account {acct} does not exist"
            )
        )
    );
    assert_eq!(
        gsi(r#"{"StreamName":"two","ShardId":"shardId-7","ShardIteratorType":"LATEST"}"#).2,
        format!("Shard shardId-000000000007 in stream two under account {acct} does not exist")
    );
    let either = "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no StartingSequenceNumber. Request specified";
    assert_eq!(
        gsi(r#"{"StreamName":"two","ShardId":"0","ShardIteratorType":"LATEST","StartingSequenceNumber":"1"}"#).2,
        format!("{either} LATEST and also a StartingSequenceNumber.")
    );
    assert_eq!(
        gsi(r#"{"StreamName":"two","ShardId":"0","ShardIteratorType":"AT_SEQUENCE_NUMBER"}"#).2,
        format!("{either} AT_SEQUENCE_NUMBER and no StartingSequenceNumber.")
    );
    assert_eq!(
        gsi(r#"{"StreamName":"two","ShardId":"0","ShardIteratorType":"AT_TIMESTAMP"}"#).2,
        "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP. Current request has no timestamp parameter."
    );
    // A sequence number of another shard.
    let (_, out) = kinesis(
        s.api,
        "PutRecord",
        r#"{"StreamName":"two","Data":"eA==","PartitionKey":"k","ExplicitHashKey":"0"}"#,
    );
    let seq = serde_json::from_str::<serde_json::Value>(&out).unwrap()["SequenceNumber"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        gsi(&format!(r#"{{"StreamName":"two","ShardId":"1","ShardIteratorType":"AT_SEQUENCE_NUMBER","StartingSequenceNumber":"{seq}"}}"#)).2,
        "Invalid StartingSequenceNumber. It encodes shardId-000000000000, while it was used in a call to a shard with shardId-000000000001"
    );
    let (code, ty, msg) = gsi(
        r#"{"StreamName":"two","ShardId":"0","ShardIteratorType":"AT_SEQUENCE_NUMBER","StartingSequenceNumber":"x1"}"#,
    );
    assert_eq!((code, ty.as_str()), (400, "ValidationException"), "{msg}");
    assert!(msg.contains("at 'startingSequenceNumber' failed to satisfy constraint: Member must satisfy regular expression pattern: 0|([1-9]\\d{0,128})"), "{msg}");
    d.stop_cleanly();
}

/// PutRecords validation as AWS words it: `records` and its entries before the stream name,
/// at most 10 violations listed (the count says 10), the entry list printed as Java prints
/// it, and the plain 5 MB message.
#[test]
fn put_records_validation_lists_like_aws() {
    let s = Setup::new("", &[("p", "[streams.s]\nshards = 1\n")]);
    let mut d = s.start();
    d.wait_ready();
    let entry = r#"{"Data":"","PartitionKey":""}"#;
    let body = format!(
        r#"{{"StreamName":"","Records":[{}]}}"#,
        vec![entry; 501].join(",")
    );
    let (code, out) = kinesis(s.api, "PutRecords", &body);
    assert_eq!(code, 400, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let msg = v["message"].as_str().unwrap();
    assert!(msg.starts_with("10 validation errors detected: Value '[com.amazonaws.kinesis.v20131202.PutRecordsRequestEntry@c965e310, com.amazonaws.kinesis.v20131202.PutRecordsRequestEntry@c965e310,"), "{msg}");
    assert!(msg.contains("at 'records' failed to satisfy constraint: Member must have length less than or equal to 500; Value '' at 'records.1.member.partitionKey' failed to satisfy constraint: Member must have length greater than or equal to 1"), "{msg}");
    assert!(
        msg.contains("'records.9.member.partitionKey'") && !msg.contains("records.10.member"),
        "{msg}"
    );
    assert!(
        !msg.contains("streamName"),
        "the stream name comes after the cap: {msg}"
    );
    // With fewer entries the stream name's items follow the records'.
    let (_, out) = kinesis(
        s.api,
        "PutRecords",
        &format!(r#"{{"StreamName":"","Records":[{entry}]}}"#),
    );
    let msg = serde_json::from_str::<serde_json::Value>(&out).unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    let (rec, name) = (
        msg.find("records.1.member.partitionKey").unwrap(),
        msg.find("'streamName'").unwrap(),
    );
    assert!(rec < name, "{msg}");
    // 5 MB of data and keys: AWS's words only.
    let big = "A".repeat(1_000_000);
    let recs: Vec<String> = (0..7)
        .map(|i| format!(r#"{{"Data":"{big}","PartitionKey":"k{i}"}}"#))
        .collect();
    let (code, out) = kinesis(
        s.api,
        "PutRecords",
        &format!(r#"{{"StreamName":"s","Records":[{}]}}"#, recs.join(",")),
    );
    assert_eq!(code, 400, "{out}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!({"__type": "InvalidArgumentException", "message": "Records size exceeds 5 MB limit"})
    );
    d.stop_cleanly();
}

#[test]
fn account_settings_record_size_and_warm_throughput_through_boto3() {
    let s = Setup::new("", &[]);
    let mut d = s.start();
    d.wait_ready();
    run_interop(&d, s.api, "kinesis_account_boto3.py", &[]);
    // The commitment and the record size survive a restart.
    d.stop_cleanly();
    let mut d = s.start();
    d.wait_ready();
    let (_, body) = kinesis(s.api, "DescribeAccountSettings", "{}");
    assert!(
        body.contains("ENABLED_UNTIL_EARLIEST_ALLOWED_END"),
        "{body}"
    );
    let (_, body) = kinesis(s.api, "DescribeStreamSummary", r#"{"StreamName":"prov"}"#);
    assert!(body.contains("\"MaxRecordSizeInKiB\":2048"), "{body}");
}

/// The account's shard limit as DescribeLimits reports it: AWS's 500 for the API's
/// streams, plus what config streams declare (the operator's, never using up the API's
/// allowance); CreateStream past it is LimitExceededException.
#[test]
fn config_streams_never_use_up_the_api_shard_allowance() {
    let s = Setup::new(
        "",
        &[("cfg", "[streams.big]\nshards = 10\nfsync = \"none\"\n")],
    );
    let mut d = s.start();
    d.wait_ready();
    let limits = || -> serde_json::Value {
        serde_json::from_str(&kinesis_ok(s.api, "DescribeLimits", "{}")).unwrap()
    };
    let l = limits();
    assert_eq!(
        (l["ShardLimit"].as_u64(), l["OpenShardCount"].as_u64()),
        (Some(510), Some(10))
    );
    kinesis_ok(
        s.api,
        "CreateStream",
        r#"{"StreamName":"all","ShardCount":500}"#,
    );
    let l = limits();
    assert_eq!(l["OpenShardCount"].as_u64(), Some(510));
    let (code, body) = kinesis(
        s.api,
        "CreateStream",
        r#"{"StreamName":"one","ShardCount":1}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("LimitExceededException") && body.contains("Limit: 510"),
        "{body}"
    );
    d.stop_cleanly();
}
