//! The `http` sink end to end (issue #15): batches reach a real HTTP server (a Python
//! Firehose HTTP-endpoint destination, `tests/fixtures/firehose_endpoint.py`) in Firehose's
//! request format — gzip, access key, common attributes, the same request id on every
//! attempt — failed attempts are retried, and an endpoint that never accepts (500s, or 200s
//! naming another request id) sends the records to the error output in Firehose's error
//! format after `retry_duration_secs`. No record is lost.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The test endpoint, killed when dropped.
struct Endpoint(Child);
impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn endpoint(port: u16, mode: &str, log: &std::path::Path) -> Endpoint {
    endpoint_tls(port, mode, log, None)
}

/// The endpoint over https when `tls` names a folder (its certificate goes there).
fn endpoint_tls(
    port: u16,
    mode: &str,
    log: &std::path::Path,
    tls: Option<&std::path::Path>,
) -> Endpoint {
    let mut child = Command::new(venv_bin("python"))
        .arg(root().join("daemon/tests/fixtures/firehose_endpoint.py"))
        .args([&port.to_string(), mode, log.to_str().unwrap()])
        .args(tls.map(|t| t.as_os_str().to_owned()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "listening", "the test endpoint did not start");
    Endpoint(child)
}

/// The Firehose error documents written below `dir` (temporary files left out).
fn log_entries(log: &std::path::Path) -> Vec<serde_json::Value> {
    lines(log)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn batches_reach_the_endpoint_in_firehose_format_and_failures_reach_the_error_output() {
    let s = Setup::new("", &[]);
    let (ok_port, bad_port) = (free_port(), free_port());
    let (ok_log, bad_log) = (s.path("ok.jsonl"), s.path("bad.jsonl"));
    let _ok = endpoint(ok_port, "flaky", &ok_log);
    let _bad = endpoint(bad_port, "broken", &bad_log);
    let cfg = format!(
        "[pipelines.deliver]\nsource = {{ plugin = \"generator\", count = 25, seed = 7 }}\n\n[pipelines.deliver.sink]\nplugin = \"http\"\nurl = \"http://127.0.0.1:{ok_port}/ingest?x=1\"\naccess_key = \"s3cret\"\ncontent_encoding = \"gzip\"\ncommon_attributes = {{ env = \"test\" }}\nerror_output = \"failed\"\nbatch = {{ max_records = 10 }}\n\n[pipelines.doomed]\nsource = {{ plugin = \"generator\", count = 12, seed = 8 }}\n\n[pipelines.doomed.sink]\nplugin = \"http\"\nurl = \"http://127.0.0.1:{bad_port}/\"\nretry_duration_secs = 2\nerror_output = \"failed\"\nbatch = {{ max_records = 5 }}\n"
    );
    s.write_pipeline("p", &cfg);
    let mut d = s.start();
    d.wait_ready();

    // Every record accepted once by the flaky endpoint, after two refused attempts each.
    wait_until(Duration::from_secs(60), "25 records accepted", || {
        log_entries(&ok_log)
            .iter()
            .filter(|e| e["status"] == 200)
            .map(|e| e["records"].as_array().unwrap().len())
            .sum::<usize>()
            == 25
    });
    let entries = log_entries(&ok_log);
    let accepted: Vec<&serde_json::Value> = entries.iter().filter(|e| e["status"] == 200).collect();
    let mut ids: Vec<String> = accepted
        .iter()
        .flat_map(|e| e["records"].as_array().unwrap())
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r.as_str().unwrap()).unwrap();
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 25, "each generated event once");
    for e in &entries {
        assert_eq!(e["requestId"], e["bodyRequestId"], "{e}");
        assert_eq!(e["accessKey"], "s3cret");
        assert_eq!(e["protocol"], "1.0");
        assert_eq!(e["encoding"], "gzip");
        assert_eq!(e["contentType"], "application/json");
        assert_eq!(
            e["sourceArn"],
            "arn:aws:firehose:us-east-1:000000000000:deliverystream/deliver"
        );
        assert_eq!(e["common"], r#"{"commonAttributes":{"env":"test"}}"#);
    }
    for a in &accepted {
        // The same request id on each attempt: attempts 1 and 2 were refused.
        assert_eq!(a["attempt"], 3, "{a}");
        let tries = entries
            .iter()
            .filter(|e| e["requestId"] == a["requestId"])
            .count();
        assert_eq!(tries, 3);
    }

    // The broken endpoint never accepts: after 2 s of retries every record of `doomed`
    // is in the error output, in Firehose's error format.
    let failed_dir = s.path("failed/http-endpoint-failed");
    let docs = || error_docs(&failed_dir);
    wait_until(
        Duration::from_secs(60),
        "12 records in the error output",
        || docs().len() == 12,
    );
    use base64::Engine as _;
    for doc in docs() {
        let code = doc["errorCode"].as_str().unwrap();
        assert!(
            code == "HttpEndpoint.DestinationException"
                || code == "HttpEndpoint.InvalidResponseFromDestination",
            "{doc}"
        );
        assert!(doc["attemptsMade"].as_u64().unwrap() >= 2, "{doc}");
        assert_eq!(doc["pipeline"], "doomed");
        assert!(
            doc["attemptEndingTimestamp"].as_i64().unwrap()
                >= doc["arrivalTimestamp"].as_i64().unwrap()
        );
        let raw = base64::engine::general_purpose::STANDARD
            .decode(doc["rawData"].as_str().unwrap())
            .unwrap();
        let ev: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(ev["specversion"], "1.0");
    }
    let bad = log_entries(&bad_log);
    assert!(bad.iter().any(|e| e["status"] == 500) && bad.iter().any(|e| e["status"] == 200));
    assert_eq!(
        d.metric(
            "sluice_plugin_http_records_failed_total",
            &["pipeline=\"doomed\""]
        ),
        12.0
    );
    assert!(
        d.metric(
            "sluice_plugin_http_request_failures_total",
            &["pipeline=\"deliver\""]
        ) >= 2.0
    );
    assert_promtool_accepts(&d.metrics_text());
    d.stop_cleanly();
}

/// https: a certificate trusted through `ca_file` delivers; without it the certificate is
/// refused, the attempts fail, and the records reach the error output naming why.
#[test]
fn https_endpoints_are_verified() {
    let s = Setup::new("", &[]);
    let port = free_port();
    let log = s.path("tls.jsonl");
    let _ep = endpoint_tls(port, "flaky", &log, Some(&s.path("tls")));
    let cfg = format!(
        "[pipelines.trusted]\nsource = {{ plugin = \"generator\", count = 4, seed = 1 }}\n\n[pipelines.trusted.sink]\nplugin = \"http\"\nurl = \"https://127.0.0.1:{port}/\"\nca_file = \"tls/cert.pem\"\nerror_output = \"failed\"\n\n[pipelines.untrusted]\nsource = {{ plugin = \"generator\", count = 3, seed = 2 }}\n\n[pipelines.untrusted.sink]\nplugin = \"http\"\nurl = \"https://127.0.0.1:{port}/\"\nretry_duration_secs = 1\nerror_output = \"failed\"\n"
    );
    s.write_pipeline("p", &cfg);
    let mut d = s.start();
    d.wait_ready();
    wait_until(
        Duration::from_secs(60),
        "4 records accepted over https",
        || {
            log_entries(&log)
                .iter()
                .filter(|e| e["status"] == 200)
                .map(|e| e["records"].as_array().unwrap().len())
                .sum::<usize>()
                == 4
        },
    );
    let failed = s.path("failed/http-endpoint-failed");
    let docs = || error_docs(&failed);
    wait_until(
        Duration::from_secs(60),
        "the untrusted pipeline's records in the error output",
        || docs().len() == 3,
    );
    for doc in docs() {
        assert_eq!(doc["pipeline"], "untrusted");
        assert_eq!(doc["errorCode"], "HttpEndpoint.ConnectionFailed", "{doc}");
        assert!(
            doc["errorMessage"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("certificate"),
            "{doc}"
        );
    }
    d.stop_cleanly();
}

/// A redirect is a failed attempt, never followed (following one would send the access
/// key and the records wherever it points): the records reach the error output.
#[test]
fn redirects_are_failed_attempts() {
    let s = Setup::new("", &[]);
    let port = free_port();
    let log = s.path("redirect.jsonl");
    let _ep = endpoint(port, "redirect", &log);
    s.write_pipeline(
        "p",
        &format!("[pipelines.moved]\nsource = {{ plugin = \"generator\", count = 3, seed = 3 }}\n\n[pipelines.moved.sink]\nplugin = \"http\"\nurl = \"http://127.0.0.1:{port}/in\"\naccess_key = \"s3cret\"\nretry_duration_secs = 1\nerror_output = \"failed\"\n"),
    );
    let mut d = s.start();
    d.wait_ready();
    let failed = s.path("failed/http-endpoint-failed");
    wait_until(
        Duration::from_secs(60),
        "3 records in the error output",
        || error_docs(&failed).len() == 3,
    );
    for doc in error_docs(&failed) {
        assert_eq!(
            doc["errorCode"], "HttpEndpoint.DestinationException",
            "{doc}"
        );
        assert!(
            doc["errorMessage"].as_str().unwrap().contains("302"),
            "{doc}"
        );
    }
    let entries = log_entries(&log);
    assert!(!entries.is_empty());
    assert!(
        entries
            .iter()
            .all(|e| e["method"] == "POST" && e["path"] == "/in"),
        "a redirect was followed: {entries:?}"
    );
    d.stop_cleanly();
}

#[test]
fn bad_http_sink_options_are_refused_at_check() {
    for (opt, needle) in [
        (
            "url = \"ftp://example.com/\"\nerror_output = \"f\"",
            "http:// or https://",
        ),
        (
            "url = \"https://example.com/\"\nerror_output = \"f\"\nca_file = \"missing.pem\"",
            "cannot read",
        ),
        (
            "url = \"http://example.com/\"\nerror_output = \"f\"\nca_file = \"ca.pem\"",
            "is for https://",
        ),
        ("url = \"http://127.0.0.1:1/\"", "error_output"),
        (
            "url = \"http://127.0.0.1:1/\"\nerror_output = \"f\"\nretry_duration_secs = 9000",
            "between 0 and 7200",
        ),
        (
            "url = \"http://127.0.0.1:1/\"\nerror_output = \"f\"\ncontent_encoding = \"br\"",
            "content_encoding",
        ),
    ] {
        let s = Setup::new("", &[]);
        s.write_pipeline(
            "p",
            &format!("[pipelines.p]\nsource = {{ plugin = \"generator\" }}\n\n[pipelines.p.sink]\nplugin = \"http\"\n{opt}\n"),
        );
        let (code, _, err) = s.cli(&["check"]);
        assert_eq!(code, 1, "{opt}: {err}");
        assert!(
            err.contains(needle) && err.contains("p.toml:"),
            "{opt}: {err}"
        );
    }
}
