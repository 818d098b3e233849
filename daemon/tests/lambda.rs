//! The `lambda` transform (issue #15): a Python transformation function written for
//! Firehose runs unchanged, kept running as a command and behind HTTP. Ok records land in
//! the lake under `!{partitionKeyFromLambda:kind}`, Dropped ones nowhere, ProcessingFailed
//! ones in `processing-failed/` with their original bytes; a function that hangs is timed
//! out and retried, and one that dies on every call sends its records to the error output
//! after the retries — no record is lost.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

const COUNT: u64 = 200;

fn pipeline(name: &str, how: &str) -> String {
    format!(
        "[pipelines.{name}]\nsource = {{ plugin = \"generator\", count = {COUNT}, batch_size = 50, template = '{{\"n\":${{seq}}}}' }}\n\n[[pipelines.{name}.transforms]]\nplugin = \"lambda\"\n{how}\ntimeout_secs = 2\nretries = 3\n\n[pipelines.{name}.buffer]\ninterval = \"1s\"\n\n[pipelines.{name}.sink]\nplugin = \"object-store\"\nurl = \"lake-{name}\"\nprefix = \"kind=!{{partitionKeyFromLambda:kind}}/\"\n"
    )
}

fn fixture() -> String {
    root()
        .join("daemon/tests/fixtures/lambda_fn.py")
        .display()
        .to_string()
}

/// kind folder → n of each record in it.
fn by_kind(dir: &std::path::Path) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for p in files_under(dir) {
        let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        let Some(kind) = rel.split('/').find_map(|c| c.strip_prefix("kind=")) else {
            continue;
        };
        if rel.split('/').any(|c| c.starts_with('.')) {
            continue;
        }
        for l in std::fs::read_to_string(&p).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["fn"], true, "the function's output, not the input: {l}");
            out.entry(kind.to_string())
                .or_default()
                .push(v["n"].as_u64().unwrap());
        }
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    out
}

/// The error documents under `processing-failed/`: (n of the original record, message).
fn failed(dir: &std::path::Path) -> Vec<(u64, String)> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for p in files_under(&dir.join("kdferror/processing-failed")) {
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        for l in std::fs::read_to_string(&p).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v["rawData"].as_str().unwrap())
                .unwrap();
            let rec: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            out.push((
                rec["n"].as_u64().unwrap(),
                v["errorMessage"].as_str().unwrap().to_string(),
            ));
        }
    }
    out.sort();
    out
}

fn expect_contract(dir: &std::path::Path) {
    let kinds = by_kind(dir);
    let even: Vec<u64> = (0..COUNT).filter(|n| n % 2 == 0).collect();
    let odd: Vec<u64> = (0..COUNT)
        .filter(|n| n % 2 == 1 && n % 10 != 3 && n % 10 != 7)
        .collect();
    assert_eq!(kinds.get("even"), Some(&even), "{kinds:?}");
    assert_eq!(kinds.get("odd"), Some(&odd), "{kinds:?}");
    let f = failed(dir);
    let want: Vec<u64> = (0..COUNT).filter(|n| n % 10 == 3).collect();
    assert_eq!(f.iter().map(|x| x.0).collect::<Vec<_>>(), want, "{f:?}");
    assert!(
        f.iter().all(|x| x.1.starts_with("Lambda.ProcessingFailed")),
        "{f:?}"
    );
}

#[test]
fn a_firehose_function_runs_as_a_command_and_over_http() {
    let s = Setup::new("", &[]);
    // The same function behind HTTP, on a free port it reports.
    let http_dir = s.path("http");
    std::fs::create_dir_all(&http_dir).unwrap();
    let port_file = http_dir.join("port");
    let mut server = std::process::Command::new("python3")
        .args([fixture().as_str(), "serve"])
        .arg(&port_file)
        .current_dir(&http_dir)
        .spawn()
        .expect("python3 runs");
    wait_until(
        Duration::from_secs(20),
        "the HTTP function listening",
        || port_file.exists(),
    );
    let port = std::fs::read_to_string(&port_file).unwrap();
    s.write_pipeline(
        "cmd",
        &pipeline(
            "cmd",
            &format!("command = [\"python3\", \"{}\"]", fixture()),
        ),
    );
    s.write_pipeline(
        "web",
        &pipeline("web", &format!("url = \"http://127.0.0.1:{port}/\"")),
    );
    let mut d = s.start();
    d.wait_ready();
    let total = |name: &str| {
        let dir = s.path(&format!("lake-{name}"));
        by_kind(&dir).values().map(Vec::len).sum::<usize>() + failed(&dir).len()
    };
    // Ok records (160) and failed ones (20) all arrive; the dropped 20 never do.
    wait_until(Duration::from_secs(60), "both lakes complete", || {
        total("cmd") >= 180 && total("web") >= 180
    });
    let m = d.metrics_text();
    for p in ["cmd", "web"] {
        let failures = metric_sum(
            &m,
            "sluice_plugin_lambda_invocation_failures_total",
            &[&format!("pipeline=\"{p}\"")],
        );
        assert!(
            failures >= 1.0,
            "the hang counted as a failed invocation ({p}):\n{m}"
        );
    }
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(20)).unwrap().success());
    let _ = server.kill();
    let _ = server.wait();
    expect_contract(&s.path("lake-cmd"));
    expect_contract(&s.path("lake-web"));
    // Record 42 hung the function once in each mode: timed out, retried, delivered.
    assert!(s.path("hung-once").exists() && http_dir.join("hung-once").exists());
    assert!(
        d.stderr()
            .contains("invocation failed: no answer within 2 s"),
        "{}",
        d.stderr()
    );
}

#[test]
fn a_function_that_always_dies_sends_its_records_to_the_error_output() {
    let s = Setup::new(
        "",
        &[(
            "dead",
            "[pipelines.dead]\nsource = { plugin = \"generator\", count = 20, batch_size = 20, template = '{\"n\":${seq}}' }\n\n[[pipelines.dead.transforms]]\nplugin = \"lambda\"\ncommand = [\"python3\", \"-c\", \"import sys; sys.exit(1)\"]\nretries = 2\n\n[pipelines.dead.buffer]\ninterval = \"1s\"\n\n[pipelines.dead.sink]\nplugin = \"object-store\"\nurl = \"lake\"\nprefix = \"p/\"\n",
        )],
    );
    let mut d = s.start();
    d.wait_ready();
    wait_until(Duration::from_secs(60), "20 error documents", || {
        failed(&s.path("lake")).len() >= 20
    });
    let f = failed(&s.path("lake"));
    assert_eq!(
        f.iter().map(|x| x.0).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    assert!(
        f.iter().all(|x| x.1.contains("the command exited")),
        "{f:?}"
    );
    assert!(
        d.stderr().contains("invocation failed after 2 retries"),
        "{}",
        d.stderr()
    );
}

/// A function that prints a line of its own before each answer: every answer read is the
/// wrong line, the command is restarted each time (never wedged on a full pipe), and after
/// the retries the records are in the error output.
#[test]
fn a_function_that_talks_on_stdout_is_restarted_and_reported() {
    let script = "import sys\nfor line in sys.stdin:\n    print('debug: got an event', flush=True)\n    print('{\"records\": []}', flush=True)\n";
    let s = Setup::new("", &[]);
    std::fs::write(s.path("talker.py"), script).unwrap();
    s.write_pipeline(
        "talk",
        "[pipelines.talk]\nsource = { plugin = \"generator\", count = 30, batch_size = 10, template = '{\"n\":${seq}}' }\n\n[[pipelines.talk.transforms]]\nplugin = \"lambda\"\ncommand = [\"python3\", \"talker.py\"]\nretries = 1\ntimeout_secs = 5\n\n[pipelines.talk.buffer]\ninterval = \"1s\"\n\n[pipelines.talk.sink]\nplugin = \"object-store\"\nurl = \"lake\"\nprefix = \"p/\"\n",
    );
    let mut d = s.start();
    d.wait_ready();
    wait_until(Duration::from_secs(60), "30 error documents", || {
        failed(&s.path("lake")).len() >= 30
    });
    let f = failed(&s.path("lake"));
    assert!(
        f.iter()
            .all(|x| x.1.starts_with("Lambda.JsonProcessingException")),
        "{f:?}"
    );
}
