//! The README's run command on the bundled config, SIGTERM behaviour, health endpoints and
//! the Prometheus exposition (checked with the real `promtool`).
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::time::Duration;

/// The bundled config tree, copied to a temp folder (`etc/sluice/...`, so its `../../var`
/// stays inside it) with its listeners moved to free ports: (folder, config, metrics).
fn bundled_copy() -> (tempfile::TempDir, std::path::PathBuf, std::net::SocketAddr) {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc/sluice");
    std::fs::create_dir_all(etc.join("pipelines")).unwrap();
    for f in files_under(&root().join("etc/sluice")) {
        let rel = f.strip_prefix(root().join("etc/sluice")).unwrap();
        std::fs::copy(&f, etc.join(rel)).unwrap();
    }
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let cfg = etc.join("sluiced.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    // The bundled config listens on the documented default ports.
    assert!(text.contains("\"127.0.0.1:9464\"") && text.contains("\"127.0.0.1:4567\""));
    let text = text
        .replace("127.0.0.1:9464", &metrics.to_string())
        .replace("127.0.0.1:4567", &api);
    std::fs::write(&cfg, text).unwrap();
    (tmp, cfg, metrics)
}

#[test]
fn bundled_config_streams_cloudevents_through_jq_and_sigterm_exits_0() {
    let (tmp, cfg, metrics) = bundled_copy();
    let args: Vec<std::ffi::OsString> = vec!["run".into(), "--config".into(), cfg.into()];
    let mut d = Daemon::start_with(&args, metrics, root());
    wait_until(
        Duration::from_secs(30),
        "three CloudEvents on stdout",
        || d.stdout_lines().len() >= 3,
    );
    for line in d.stdout_lines().iter().take(3) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        // The bundled jq filter keeps these fields of a CloudEvents 1.0 event.
        for k in ["id", "type", "source", "subject", "time", "data"] {
            assert!(v.get(k).is_some(), "missing {k} in {line}");
        }
        assert!(
            v.get("specversion").is_none(),
            "jq projection applied: {line}"
        );
    }
    d.signal(libc::SIGTERM);
    // Within the bundled shutdown_timeout (30 s); how fast is measured in BENCHMARKS.md.
    let st = d
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no exit within shutdown_timeout:\n{}", d.stderr()));
    assert!(st.success(), "exit status {st}");
    assert!(
        d.stderr().contains("all pipelines drained"),
        "{}",
        d.stderr()
    );
    // State went into the copy, not the repository.
    assert!(tmp.path().join("var/streams").is_dir());
}

#[test]
fn sigint_drains_too() {
    // A stream with records nobody delivered yet, and a pipeline that delivers them into
    // buffers (interval far away): only the drain on SIGINT can write them out.
    let s = Setup::new("", &[("p", "[streams.s]\nshards = 2\n\n[pipelines.p]\nsource = { plugin = \"stream\", stream = \"s\" }\n\n[pipelines.p.buffer]\ninterval = \"1h\"\n\n[pipelines.p.sink]\nplugin = \"object-store\"\nurl = \"lake\"\n")]);
    let mut d = s.start();
    d.wait_ready();
    for i in 0..100 {
        let (code, _) = kinesis(
            s.api,
            "PutRecord",
            &format!(r#"{{"StreamName":"s","Data":"cmVj","PartitionKey":"k{i}"}}"#),
        );
        assert_eq!(code, 200);
    }
    wait_until(Duration::from_secs(10), "100 records buffered", || {
        d.metric("sluice_pipeline_records_in_total", &["pipeline=\"p\""]) == 100.0
    });
    assert!(files_under(&s.path("lake")).is_empty());
    d.signal(libc::SIGINT);
    assert!(d.wait_exit(Duration::from_secs(30)).unwrap().success());
    // The drain delivered every record the pipeline had read.
    let delivered: usize = files_under(&s.path("lake"))
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum();
    assert_eq!(delivered, 100);
}

#[test]
fn health_readiness_and_status() {
    let s = Setup::new("", &[("s", "[streams.s]\nshards = 2\n"), ("p", "[pipelines.p]\nsource = { plugin = \"generator\", rate = 50 }\nsink = { plugin = \"file\", path = \"out.jsonl\" }\n")]);
    let mut d = s.start();
    d.wait_ready();
    assert_eq!(d.get("/healthz").unwrap(), (200, "ok\n".to_string()));
    assert_eq!(d.get("/readyz").unwrap().0, 200);
    wait_until(Duration::from_secs(10), "records delivered", || {
        let st = d.get("/admin/status").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(&st).unwrap();
        v["pipelines"][0]["records_out"].as_u64().unwrap_or(0) > 0
    });
    let v: serde_json::Value = serde_json::from_str(&d.get("/admin/status").unwrap().1).unwrap();
    assert_eq!(v["pipelines"][0]["name"], "p");
    assert_eq!(v["pipelines"][0]["state"], "running");
    let (code, out, _) = s.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("p ") && l.contains("running")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("s ") && l.contains("shardId-000000000001")),
        "{out}"
    );
}

#[test]
fn a_busy_metrics_port_fails_startup_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let s = Setup::new("", &[]);
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        &s.metrics.to_string(),
        &taken.local_addr().unwrap().to_string(),
    );
    std::fs::write(&s.config, text).unwrap();
    let (code, _, err) = s.cli(&["run"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot listen on") && err.contains("[metrics].listen"),
        "{err}"
    );
}

#[test]
fn metrics_pass_promtool() {
    let plugins = plugin_dir(&["libsluice_example_passthrough.so"]);
    let s = Setup::new(
        &format!("plugin_dirs = [\"{}\"]", plugins.path().display()),
        &[
            ("ok", "[pipelines.ok]\nsource = { plugin = \"generator\", rate = 500 }\n\n[[pipelines.ok.transforms]]\nplugin = \"jq\"\nfilter = 'if .subject == \"orders\" then error(\"no orders\") else . end'\n\n[[pipelines.ok.transforms]]\nplugin = \"passthrough\"\n\n[pipelines.ok.sink]\nplugin = \"file\"\npath = \"ok.jsonl\"\n"),
            ("lake", "[streams.events]\nshards = 2\n\n[pipelines.feed]\nsource = { plugin = \"generator\", rate = 500 }\nsink = { plugin = \"stream\", stream = \"events\" }\n\n[pipelines.lake]\nsource = { plugin = \"stream\", stream = \"events\" }\n\n[pipelines.lake.partitioning]\nquery = '{type}'\n\n[pipelines.lake.buffer]\ninterval = \"1s\"\n\n[pipelines.lake.sink]\nplugin = \"object-store\"\nurl = \"lake\"\nprefix = \"t=!{partitionKeyFromQuery:type}/\"\ncompression = \"gzip\"\n"),
            ("chaotic", "[pipelines.chaotic]\nsource = { plugin = \"generator\", rate = 500, template = '{\"n\":${seq}}' }\n\n[[pipelines.chaotic.transforms]]\nplugin = \"chaos\"\npanic_on = '\"n\":5}'\n\n[pipelines.chaotic.sink]\nplugin = \"stdout\"\n"),
        ],
    );
    let d = s.start();
    wait_until(
        Duration::from_secs(20),
        "failures and panics recorded",
        || {
            d.metric(
                "sluice_records_failed_total",
                &["pipeline=\"ok\"", "error_type=\"processing-failed\""],
            ) > 0.0
                && d.metric("sluice_plugin_panics_total", &[]) > 0.0
                && d.metric("sluice_buffer_flushes_total", &["pipeline=\"lake\""]) > 0.0
                && kinesis(s.api, "ListStreams", "{}").0 == 200
        },
    );
    let text = d.metrics_text();
    for name in [
        "sluice_plugin_info",
        "sluice_pipeline_up",
        "sluice_pipeline_records_in_total",
        "sluice_sink_records_total",
        "sluice_records_failed_total",
        "sluice_plugin_calls_total",
        "sluice_plugin_call_duration_seconds_bucket",
        "sluice_plugin_panics_total",
        "sluice_pipeline_restarts_total",
        "sluice_config_last_reload_successful",
        "sluice_config_reloads_total",
        "sluice_shard_incoming_records_total",
        "sluice_shard_log_bytes",
        "sluice_shard_iterator_age_seconds",
        "sluice_shard_outgoing_records_total",
        "sluice_buffer_flushes_total",
        "sluice_buffer_partitions_active",
        "sluice_buffer_memory_limit_bytes",
        "sluice_sink_objects_total",
        "sluice_delivery_latency_seconds_bucket",
        "sluice_api_requests_total",
        "sluice_api_request_duration_seconds_bucket",
        "sluice_sink_up",
        "sluice_buffer_spills_total",
        // exported at 0 before anything was throttled
        "sluice_shard_write_throttled_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        // registered by the Rust example plugin through the host metrics API
        "sluice_plugin_passthrough_batches_total{plugin=\"passthrough\",pipeline=\"ok\"}",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from /metrics:\n{text}"
        );
    }
    assert_promtool_accepts(&text);
}

/// Logs: timestamps on plain stderr, none but a `<N>` priority under journald
/// (`JOURNAL_STREAM` set, as systemd does), one JSON object per line with `--log-format json`.
#[test]
fn log_formats_for_terminals_journald_and_json() {
    let s = Setup::new("", &[]);
    let stderr_of = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> =
            vec!["run".into(), "--config".into(), s.config.clone().into()];
        args.extend(extra.iter().map(Into::into));
        let mut d = Daemon::start_env(&args, s.metrics, root(), env);
        d.wait_ready();
        d.signal(libc::SIGTERM);
        assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
        let lines: Vec<String> = d.stderr().lines().map(String::from).collect();
        assert!(lines.len() >= 3, "{lines:?}");
        lines
    };
    let plain = stderr_of(&[], &[]);
    assert!(
        plain
            .iter()
            .all(|l| l.starts_with("20") && l.contains(" INFO ")),
        "{plain:?}"
    );
    let journal = stderr_of(&[("JOURNAL_STREAM", "8:12345")], &[]);
    assert!(
        journal
            .iter()
            .all(|l| l.starts_with("<6>") && !l.contains(":00Z") && !l.starts_with("<6>20")),
        "{journal:?}"
    );
    let json = stderr_of(&[], &["--log-format", "json"]);
    for l in &json {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(
            v["timestamp"].is_string() && v["level"] == "INFO" && v["message"].is_string(),
            "{l}"
        );
    }
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

/// The observability kit in `etc/monitoring/`: the alerting rules pass `promtool check
/// rules` and their unit tests (`promtool test rules`), and the rules and the Grafana
/// dashboard name only metrics the daemon exports.
#[test]
fn monitoring_kit_is_valid_and_names_real_metrics() {
    let dir = root().join("etc/monitoring");
    let promtool = which("promtool")
        .expect("promtool not found: run scripts/install-test-deps (Debian package `prometheus`)");
    for args in [
        vec!["check", "rules", "sluice.rules.yml"],
        vec!["test", "rules", "sluice.rules.test.yml"],
    ] {
        let out = std::process::Command::new(&promtool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every metric the daemon describes (telemetry.rs), and the process_* block.
    let telemetry = std::fs::read_to_string(root().join("daemon/src/telemetry.rs")).unwrap();
    let known: std::collections::BTreeSet<String> = names(&telemetry).into_iter().collect();
    let dashboard = std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut exprs = String::new();
    for p in v["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push_str(t["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    exprs.push_str(&std::fs::read_to_string(dir.join("sluice.rules.yml")).unwrap());
    let used = names(&exprs);
    assert!(used.len() > 20, "{used:?}");
    for n in used {
        let base = n
            .strip_suffix("_bucket")
            .or_else(|| n.strip_suffix("_sum"))
            .or_else(|| n.strip_suffix("_count"))
            .unwrap_or(&n)
            .to_string();
        assert!(
            known.contains(&base) || known.contains(&n),
            "{n} is named in etc/monitoring but the daemon does not export it"
        );
    }
}

/// `sluice_…` and `process_…` metric names in a text.
fn names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in ["sluice_", "process_"] {
        for (i, _) in text.match_indices(prefix) {
            if i > 0 && text.as_bytes()[i - 1].is_ascii_alphanumeric() {
                continue;
            }
            let n: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if n.len() > prefix.len() && !n.ends_with('_') {
                out.push(n);
            }
        }
    }
    out
}

/// Dashboards and alerts see zeros, not gaps: before any record exists, the per-pipeline,
/// per-plugin and per-operation series (histograms included) are already exported at 0.
#[test]
fn series_exist_at_zero_before_the_first_event() {
    let s = Setup::new(
        "",
        &[(
            "idle",
            "[streams.quiet]\nshards = 1\n\n[pipelines.idle]\nsource = { plugin = \"stream\", stream = \"quiet\" }\n\n[pipelines.idle.sink]\nplugin = \"object-store\"\nurl = \"lake\"\n",
        )],
    );
    let d = s.start();
    wait_until(Duration::from_secs(20), "pipeline idle running", || {
        d.metric("sluice_pipeline_up", &["pipeline=\"idle\""]) == 1.0
    });
    let wanted = [
        (
            "sluice_delivery_latency_seconds_count",
            &["pipeline=\"idle\""][..],
        ),
        (
            "sluice_buffer_flushes_total",
            &["pipeline=\"idle\"", "reason=\"size\""],
        ),
        ("sluice_sink_objects_total", &["pipeline=\"idle\""]),
        ("sluice_shard_write_throttled_total", &["stream=\"quiet\""]),
        (
            "sluice_plugin_call_duration_seconds_count",
            &["plugin=\"object-store\"", "call=\"submit_object\""],
        ),
        (
            "sluice_plugin_call_duration_seconds_count",
            &["plugin=\"stream\"", "call=\"poll_batch\""],
        ),
        (
            "sluice_api_request_duration_seconds_count",
            &["operation=\"PutRecords\""],
        ),
        (
            "sluice_api_request_duration_seconds_count",
            &["operation=\"Firehose.PutRecordBatch\""],
        ),
        (
            "sluice_api_requests_total",
            &["operation=\"GetRecords\"", "code=\"200\""],
        ),
    ];
    let find = |text: &str, series: &str, labels: &[&str]| -> Option<String> {
        text.lines()
            .find(|l| {
                l.starts_with(&format!("{series}{{")) && labels.iter().all(|want| l.contains(want))
            })
            .map(str::to_string)
    };
    // The delivery stage registers its series on its own thread just after the pipeline
    // reports up: wait for them (no record is ever put, so every value stays 0).
    wait_until(Duration::from_secs(20), "every series exported", || {
        let text = d.metrics_text();
        wanted
            .iter()
            .all(|(series, labels)| find(&text, series, labels).is_some())
    });
    let text = d.metrics_text();
    for (series, labels) in wanted {
        let line = find(&text, series, labels)
            .unwrap_or_else(|| panic!("{series}{labels:?} missing:\n{text}"));
        if !series.starts_with("sluice_plugin_call") {
            assert!(line.ends_with(" 0"), "{line}");
        }
    }
}

/// `/admin/status` tells, per shard, how many records each reading pipeline has yet to
/// deliver: records held in a buffer (not yet in an object) count as lag.
#[test]
fn status_reports_lag_of_each_reading_pipeline() {
    let s = Setup::new(
        "",
        &[(
            "held",
            "[streams.s]\nshards = 1\n\n[pipelines.held]\nsource = { plugin = \"stream\", stream = \"s\" }\n\n[pipelines.held.buffer]\ninterval = \"900s\"\n\n[pipelines.held.sink]\nplugin = \"object-store\"\nurl = \"lake\"\n",
        )],
    );
    let mut d = s.start();
    d.wait_ready();
    let records: Vec<String> = (0..20)
        .map(|i| format!("{{\"Data\":\"e30=\",\"PartitionKey\":\"k{i}\"}}"))
        .collect();
    let body = format!(
        "{{\"StreamName\":\"s\",\"Records\":[{}]}}",
        records.join(",")
    );
    assert_eq!(kinesis(s.api, "PutRecords", &body).0, 200);
    let lag = || {
        let v: serde_json::Value =
            serde_json::from_str(&d.get("/admin/status").unwrap().1).unwrap();
        v["streams"][0]["shards"][0]["consumers"].clone()
    };
    wait_until(
        Duration::from_secs(20),
        "the buffer holds 20 records",
        || d.metric("sluice_buffer_records", &["pipeline=\"held\""]) == 20.0,
    );
    assert_eq!(
        lag(),
        serde_json::json!([{"pipeline": "held", "lag_records": 20}])
    );
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(30)).unwrap().success());
}
