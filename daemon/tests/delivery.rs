//! Firehose-style delivery: partitioned, buffered, compressed objects in a lake that
//! DuckDB reads in place; error documents; one test per flush reason; crash recovery.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

fn lake_pipeline(buffer: &str, extra_partitioning: &str) -> String {
    format!(
        "[streams.events]\nshards = 4\n\n[pipelines.events-to-lake]\nsource = {{ plugin = \"stream\", stream = \"events\" }}\n\n[pipelines.events-to-lake.partitioning]\nquery = '{{type: .type, source: .source}}'\n{extra_partitioning}\n\n[pipelines.events-to-lake.buffer]\n{buffer}\n\n[pipelines.events-to-lake.sink]\nplugin = \"object-store\"\nurl = \"lake\"\nprefix = \"type=!{{partitionKeyFromQuery:type}}/source=!{{partitionKeyFromQuery:source}}/\"\nerror_prefix = \"kdferror/!{{firehose:error-output-type}}/\"\ncompression = \"gzip\"\n"
    )
}

/// Lines of every `.gz` object under `dir` (skipping `kdferror`), with how often each appears.
fn gz_lines(dir: &Path) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for p in files_under(dir) {
        let in_errors = p
            .strip_prefix(dir)
            .unwrap()
            .components()
            .any(|c| c.as_os_str() == "kdferror");
        if in_errors || p.extension().is_none_or(|x| x != "gz") {
            continue;
        }
        use std::io::Read;
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&p).unwrap())
            .read_to_string(&mut s)
            .unwrap();
        for l in s.lines() {
            *out.entry(l.to_string()).or_default() += 1;
        }
    }
    out
}

/// Every data record in the lake of a test's folder.
fn lake_lines(root: &Path) -> HashMap<String, usize> {
    gz_lines(&root.join("lake"))
}

/// The lake pipeline alone (64 MiB / 1 s buffers), running.
fn lake_daemon() -> (Setup, Daemon) {
    let s = Setup::new(
        "",
        &[(
            "lake",
            &lake_pipeline("size = \"64MiB\"\ninterval = \"1s\"", ""),
        )],
    );
    let mut d = s.start();
    d.wait_ready();
    (s, d)
}

#[test]
fn lake_end_to_end_with_boto3_kpl_and_duckdb() {
    let (s, d) = lake_daemon();
    python(
        &[
            interop("lake_boto3.py").into_os_string(),
            format!("http://{}", s.api).into(),
            s.path("lake").into_os_string(),
        ],
        &d,
    );
    wait_until(Duration::from_secs(10), "an interval flush counted", || {
        d.metric("sluice_buffer_flushes_total", &["reason=\"interval\""]) > 0.0
    });
    assert_eq!(
        d.metric(
            "sluice_records_failed_total",
            &["error_type=\"partitioning-failed\""]
        ),
        2.0
    );
}

fn generator_into_events(count: u32) -> String {
    format!("[pipelines.produce]\nsource = {{ plugin = \"generator\", count = {count}, batch_size = 100 }}\nsink = {{ plugin = \"stream\", stream = \"events\" }}\n")
}

fn flush_count(d: &Daemon, reason: &str) -> f64 {
    d.metric(
        "sluice_buffer_flushes_total",
        &[
            "pipeline=\"events-to-lake\"",
            &format!("reason=\"{reason}\""),
        ],
    )
}

#[test]
fn flushes_on_size() {
    let s = Setup::new(
        "",
        &[
            (
                "lake",
                &lake_pipeline("size = \"8KiB\"\ninterval = \"1h\"", ""),
            ),
            ("gen", &generator_into_events(2000)),
        ],
    );
    let mut d = s.start();
    d.wait_ready();
    wait_until(Duration::from_secs(30), "size flushes", || {
        flush_count(&d, "size") >= 9.0
    });
    assert_eq!(flush_count(&d, "interval"), 0.0);
}

#[test]
fn flushes_on_interval() {
    let s = Setup::new(
        "",
        &[
            (
                "lake",
                &lake_pipeline("size = \"64MiB\"\ninterval = \"1s\"", ""),
            ),
            ("gen", &generator_into_events(50)),
        ],
    );
    let mut d = s.start();
    d.wait_ready();
    wait_until(
        Duration::from_secs(30),
        "interval flushes deliver all 50",
        || lake_lines(s.dir.path()).len() == 50,
    );
    // The counter moves once the sink has stored the object, just after it is visible.
    wait_until(Duration::from_secs(10), "an interval flush counted", || {
        flush_count(&d, "interval") >= 1.0
    });
    assert_eq!(flush_count(&d, "size"), 0.0);
}

/// A budget below what the open partitions' first chunks take cannot be relieved by
/// spilling: the largest buffers flush early (reason `memory`) instead of spilling on every
/// batch, and every record is still delivered.
#[test]
fn a_budget_below_the_partition_floor_flushes_early() {
    let s = Setup::new(
        "",
        &[
            (
                "lake",
                &lake_pipeline("size = \"64MiB\"\ninterval = \"1h\"", ""),
            ),
            ("gen", &generator_into_events(2000)),
        ],
    );
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        format!("{text}\n[limits]\nbuffer_memory = \"4KiB\"\n"),
    )
    .unwrap();
    let mut d = s.start();
    d.wait_ready();
    // (Not `wait_until`: when this times out, the state says why.) How many memory flushes
    // it takes depends on how the batches arrive: spilling to disk relieves most of the
    // pressure (a run showed 36 spills and 4 memory flushes for the 2000 records), the
    // first chunks of open partitions are what only a flush frees.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while flush_count(&d, "memory") < 1.0 {
        if std::time::Instant::now() > deadline {
            let m = d.metrics_text();
            let lines: Vec<&str> = m
                .lines()
                .filter(|l| {
                    l.starts_with("sluice_buffer_")
                        || l.starts_with("sluice_pipeline_records_in_total")
                        || l.starts_with("sluice_pipeline_up")
                        || l.starts_with("sluice_shard_incoming_records_total")
                })
                .collect();
            panic!(
                "no memory flush in 60 s:\n{}\n{}",
                lines.join("\n"),
                d.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every record read before the SIGTERM: the drain flushes what the buffers hold, and
    // what a replayable source had not read yet would stay in the stream, by design.
    wait_until(Duration::from_secs(60), "all 2000 records read", || {
        d.metric(
            "sluice_pipeline_records_in_total",
            &["pipeline=\"events-to-lake\""],
        ) >= 2000.0
    });
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(30)).unwrap().success());
    assert_eq!(lake_lines(s.dir.path()).values().sum::<usize>(), 2000);
}

/// Memory pressure spills buffers to disk instead of cutting objects: the budget holds
/// (sampled all along), no object is flushed for memory, and each partition still makes
/// one object per interval with every record in it.
#[test]
fn memory_pressure_spills_to_disk_instead_of_cutting_objects() {
    let s = Setup::new(
        "[limits]\nbuffer_memory = \"64KiB\"",
        &[
            (
                "lake",
                &lake_pipeline("size = \"64MiB\"\ninterval = \"3s\"", ""),
            ),
            ("gen", &generator_into_events(2000)),
        ],
    );
    // [limits] must not swallow the tables that follow it in the daemon file.
    let text = std::fs::read_to_string(&s.config).unwrap();
    let text = text.replace("[limits]\nbuffer_memory = \"64KiB\"\n", "");
    std::fs::write(
        &s.config,
        format!("{text}\n[limits]\nbuffer_memory = \"64KiB\"\n"),
    )
    .unwrap();
    let mut d = s.start();
    d.wait_ready();
    let mut most = 0.0f64;
    wait_until(Duration::from_secs(30), "every record in the lake", || {
        most = most.max(d.metric("sluice_buffer_memory_bytes", &[]));
        lake_lines(s.dir.path()).values().sum::<usize>() == 2000
    });
    assert_eq!(d.metric("sluice_buffer_memory_limit_bytes", &[]), 65536.0);
    assert!(
        d.metric(
            "sluice_buffer_spills_total",
            &["pipeline=\"events-to-lake\""]
        ) >= 5.0
    );
    assert_eq!(flush_count(&d, "memory"), 0.0);
    // (The budget is above the 2 KiB-per-partition floor, so spilling can relieve it.) A
    // record can land while the budget is full (it is spilled right after): at most one
    // chunk per open partition over the limit.
    let partitions = d
        .metric(
            "sluice_buffer_partitions_active",
            &["pipeline=\"events-to-lake\""],
        )
        .max(12.0);
    assert!(
        most <= 65536.0 + partitions * 8192.0,
        "memory gauge reached {most}"
    );
    // Objects were cut by interval only: one per partition (and drain, none here). The
    // counter moves just after an object becomes visible, so wait for it to catch up.
    let objects = files_under(&s.path("lake")).len() as f64;
    wait_until(Duration::from_secs(10), "each object counted", || {
        flush_count(&d, "interval") >= objects
    });
    assert_eq!(objects, flush_count(&d, "interval"));
    assert_eq!(flush_count(&d, "memory"), 0.0);
}

#[test]
fn partition_cap_sends_records_to_the_error_output() {
    let s = Setup::new(
        "",
        &[
            (
                "lake",
                &lake_pipeline(
                    "size = \"64MiB\"\ninterval = \"1s\"",
                    "max_active_partitions = 2",
                ),
            ),
            ("gen", &generator_into_events(300)),
        ],
    );
    let mut d = s.start();
    d.wait_ready();
    // The cap itself: never more than 2 partitions open at once, sampled all along.
    let mut most_active = 0.0f64;
    wait_until(
        Duration::from_secs(30),
        "every record delivered or failed",
        || {
            most_active = most_active
                .max(d.metric("sluice_buffer_partitions_active", &["pipeline=\"lake\""]));
            let failed = d.metric(
                "sluice_records_failed_total",
                &["error_type=\"activePartitionExceeded\""],
            );
            failed > 0.0 && lake_lines(s.dir.path()).len() as f64 + failed >= 300.0
        },
    );
    assert!(
        most_active <= 2.0,
        "{most_active} partitions active at once"
    );
    let dirs = std::fs::read_dir(s.path("lake/kdferror/activePartitionExceeded"))
        .unwrap()
        .count();
    assert!(dirs >= 1);
}

#[test]
fn retry_duration_moves_undeliverable_objects_to_the_error_prefix() {
    let lake = "[streams.events]\nshards = 2\n\n[pipelines.events-to-lake]\nsource = { plugin = \"stream\", stream = \"events\" }\n\n[pipelines.events-to-lake.buffer]\ninterval = \"1s\"\n\n[pipelines.events-to-lake.sink]\nplugin = \"object-store\"\nurl = \"lake\"\nprefix = \"data/\"\ncompression = \"gzip\"\nretry_duration = \"1s\"\n";
    let s = Setup::new("", &[("lake", lake), ("gen", &generator_into_events(500))]);
    // A file where the data prefix's folder should be: every data object fails (retryably)
    // while the error prefix still works.
    std::fs::create_dir_all(s.path("lake")).unwrap();
    std::fs::write(s.path("lake/data"), "not a folder").unwrap();
    let mut d = s.start();
    d.wait_ready();
    let failed = |d: &Daemon| {
        d.metric(
            "sluice_records_failed_total",
            &[
                "pipeline=\"events-to-lake\"",
                "error_type=\"delivery-failed\"",
            ],
        )
    };
    // The failure is counted when the object is redirected, the flush once it is stored.
    wait_until(
        Duration::from_secs(30),
        "every record given up on and stored",
        || failed(&d) >= 500.0 && flush_count(&d, "interval") >= 1.0,
    );
    assert!(
        d.metric(
            "sluice_sink_retries_total",
            &["pipeline=\"events-to-lake\""]
        ) >= 1.0,
        "retried before giving up"
    );
    // The objects kept their (gzip) bodies and names, under the error prefix.
    let lines = gz_lines(&s.path("lake/kdferror/delivery-failed"));
    assert_eq!(lines.len(), 500, "every record is in the error output once");
    assert!(lines.values().all(|&n| n == 1));
    assert_eq!(failed(&d), 500.0);
}

/// Kills the daemon while a generator fills the stream and the lake pipeline delivers:
/// by SIGKILL from outside once some objects are stored and records are buffered
/// (`failpoint` None), or by a failpoint that SIGKILLs the process at an exact place on
/// its third object. After a restart the lake must hold every acknowledged record exactly
/// once: the intent log makes the replay rewrite the same objects.
fn crash_and_recover(failpoint: Option<&str>) {
    crash_and_recover_with(
        "size = \"16KiB\"\ninterval = \"30s\"",
        &generator_into_events(3000),
        failpoint,
    )
}

fn crash_and_recover_with(buffer: &str, generator: &str, failpoint: Option<&str>) {
    let s = Setup::new(
        "",
        &[("lake", &lake_pipeline(buffer, "")), ("gen", generator)],
    );
    let before: usize = crash(&s, failpoint, || lake_lines(s.dir.path()).values().sum());
    let (in_stream, to_read, skipped, dup_counted) = restart_and_drain(&s);
    let lines = lake_lines(s.dir.path());
    let total: usize = lines.values().sum();
    eprintln!(
        "{failpoint:?}: before the crash {before} lines in the lake; stream holds {in_stream}, {to_read} past the checkpoint; after restart: {} distinct, {} duplicates ({dup_counted} counted), {skipped} replayed records skipped as stored",
        lines.len(),
        total - lines.len()
    );
    assert_eq!(
        lines.len() as u64,
        in_stream,
        "every acknowledged record is in the lake"
    );
    assert_eq!(total, lines.len(), "no record is in the lake twice");
    assert_eq!(dup_counted, 0.0);
    // An interrupted write's temp file never shows as an object, and the rewrite of the
    // same object removes it.
    assert!(lines.keys().all(|l| l.starts_with('{')));
    no_temp_files(&s);
}

fn no_temp_files(s: &Setup) {
    for p in files_under(&s.path("lake")) {
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(!name.contains(".tmp"), "leftover {p:?}");
    }
}

/// Kills the running daemon of `s` by SIGKILL once some objects are stored and records are
/// buffered (`failpoint` None), or by a failpoint that SIGKILLs it at an exact place (on
/// the third object unless the failpoint says which). Returns `lake()` right after.
fn crash<T>(s: &Setup, failpoint: Option<&str>, lake: impl FnOnce() -> T) -> T {
    match failpoint {
        None => {
            let mut d = s.start();
            d.wait_ready();
            wait_until(
                Duration::from_secs(30),
                "some objects written, some records still buffered",
                || {
                    flush_count(&d, "size") >= 3.0
                        && d.metric("sluice_buffer_records", &["pipeline=\"events-to-lake\""]) > 0.0
                },
            );
            d.child.kill().unwrap();
            d.child.wait().unwrap();
        }
        Some(fp) => {
            let fp = if fp.contains(':') {
                fp.to_string()
            } else {
                format!("{fp}:3")
            };
            let mut d = s.start_env(&[("SLUICE_FAILPOINTS", &fp)]);
            let st = d
                .wait_exit(Duration::from_secs(30))
                .expect("the failpoint fired (the daemon must be built with `--features sluiced/failpoints`, as scripts/test does)");
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(st.signal(), Some(libc::SIGKILL), "{}", d.stderr());
        }
    }
    lake()
}

/// After [`crash`]: stops the producer, restarts the daemon, waits until the lake pipeline
/// read everything past its checkpoint, and stops it cleanly (SIGTERM drains every
/// buffer). Returns (records in the stream, records past the checkpoint, replayed records
/// skipped as stored, records counted as possible duplicates).
fn restart_and_drain(s: &Setup) -> (u64, u64, f64, f64) {
    std::fs::remove_file(s.path("pipelines/gen.toml")).unwrap();
    // What the stream holds (every record the generator got acknowledged) ...
    let in_stream: u64 = shard_records(&s.path("var/streams/events")).values().sum();
    // ... and where the pipeline's checkpoint says delivery stopped.
    let cp: HashMap<String, u64> =
        std::fs::read_to_string(s.path("var/checkpoints/events-to-lake/events.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
    let to_read = in_stream - cp.values().sum::<u64>();
    let mut d = s.start();
    d.wait_ready();
    wait_until(
        Duration::from_secs(30),
        "the restarted pipeline read past its checkpoint to the end",
        || {
            let v: serde_json::Value =
                serde_json::from_str(&d.get("/admin/status").unwrap().1).unwrap();
            let p = v["pipelines"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "events-to-lake")
                .cloned()
                .unwrap();
            p["records_in"].as_u64().unwrap() >= to_read
        },
    );
    let pl = ["pipeline=\"events-to-lake\""];
    let skipped = d.metric("sluice_delivery_replay_skipped_records_total", &pl);
    let dup_counted = d.metric("sluice_delivery_duplicate_records_total", &pl);
    d.stop_cleanly();
    (in_stream, to_read, skipped, dup_counted)
}

/// The lake of a Parquet pipeline: the `id` of every row, by partition folder and with
/// the type of its object's `v` column; and the `id` of every record refused as
/// `format-conversion-failed` (from its error document's raw data).
fn parquet_lake(root: &Path) -> (Vec<(String, String, String)>, Vec<String>) {
    use arrow_array::Array as _;
    let lake = root.join("lake");
    let mut rows = Vec::new();
    for p in files_under(&lake) {
        let rel = p.strip_prefix(&lake).unwrap().to_string_lossy().to_string();
        if rel.starts_with("kdferror") || !rel.ends_with(".parquet") {
            continue;
        }
        let partition = rel.split("/20").next().unwrap().to_string();
        let body = bytes::Bytes::from(std::fs::read(&p).unwrap());
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(body).unwrap();
        let v_type = reader
            .schema()
            .field_with_name("v")
            .map(|f| f.data_type().to_string())
            .unwrap_or_else(|_| "absent".into());
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            let ids = batch.column_by_name("id").unwrap();
            let ids = ids
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .unwrap();
            for i in 0..ids.len() {
                rows.push((partition.clone(), v_type.clone(), ids.value(i).to_string()));
            }
        }
    }
    let refused = lake.join("kdferror/format-conversion-failed");
    let refused = if refused.exists() {
        use base64::Engine as _;
        error_docs(&refused)
            .iter()
            .map(|d| {
                assert_eq!(d["errorCode"], "DataFormatConversion.MalformedData", "{d}");
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(d["rawData"].as_str().unwrap())
                    .unwrap();
                let rec: serde_json::Value = serde_json::from_slice(&raw).unwrap();
                rec["id"].as_str().unwrap().to_string()
            })
            .collect()
    } else {
        Vec::new()
    };
    (rows, refused)
}

/// The crash tests with Parquet objects and `schema = "infer"` over records whose field
/// `v` is an integer, a fraction, text or null at random: each partition's inferred schema
/// carries from object to object and across the crash, so after the restart every
/// acknowledged record is in exactly one place — a row of a Parquet object or a
/// `format-conversion-failed` error document — and no partition has `v` as text in one
/// object and as a number in another.
///
/// Four shards: the replay meets a partition's records interleaved otherwise than the
/// first run did, and which of two conflicting records is refused must not depend on
/// that (the flush decides in shard-and-sequence order).
fn parquet_crash_and_recover(failpoint: Option<&str>) {
    let lake = lake_pipeline("size = \"16KiB\"\ninterval = \"30s\"", "").replace(
        "compression = \"gzip\"",
        "compression = \"snappy\"\nformat = \"parquet\"\nschema = \"infer\"",
    );
    let generator = "[pipelines.produce]\nsource = { plugin = \"generator\", count = 3000, batch_size = 100, subjects = [\"1\", \"7\", \"2.5\", \"\\\"text\\\"\", \"null\"], template = '{\"type\":\"${type}\",\"source\":\"${source}\",\"id\":\"${eventId}\",\"seq\":${seq},\"v\":${subject}}' }\nsink = { plugin = \"stream\", stream = \"events\" }\n";
    let s = Setup::new("", &[("lake", &lake), ("gen", generator)]);
    let (before, _) = crash(&s, failpoint, || parquet_lake(s.dir.path()));
    let (in_stream, to_read, skipped, dup_counted) = restart_and_drain(&s);
    let (rows, refused) = parquet_lake(s.dir.path());
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for id in rows
        .iter()
        .map(|r| r.2.as_str())
        .chain(refused.iter().map(|r| r.as_str()))
    {
        *seen.entry(id).or_default() += 1;
    }
    eprintln!(
        "{failpoint:?}: before the crash {} rows; stream holds {in_stream}, {to_read} past the checkpoint; after restart: {} rows, {} refused, {} distinct, {dup_counted} counted as duplicates, {skipped} replayed records skipped as stored",
        before.len(),
        rows.len(),
        refused.len(),
        seen.len()
    );
    assert_eq!(
        seen.len() as u64,
        in_stream,
        "every acknowledged record is in the lake"
    );
    assert!(
        seen.values().all(|&n| n == 1),
        "no record is in the lake twice"
    );
    assert_eq!(dup_counted, 0.0);
    assert!(!refused.is_empty() && !rows.is_empty());
    let mut v_types: HashMap<&str, std::collections::BTreeSet<&str>> = HashMap::new();
    for (partition, v_type, _) in &rows {
        v_types.entry(partition).or_default().insert(v_type);
    }
    for (partition, types) in &v_types {
        let text = types.contains("Utf8");
        let number = types.contains("Int64") || types.contains("Float64");
        assert!(
            !(text && number),
            "{partition}: `v` is {types:?} in different objects"
        );
    }
    no_temp_files(&s);
}

#[test]
fn parquet_sigkill_mid_buffer_keeps_every_record_once_and_each_partitions_schema() {
    parquet_crash_and_recover(None);
}

#[test]
fn parquet_sigkill_before_upload_keeps_every_record_once_and_each_partitions_schema() {
    parquet_crash_and_recover(Some("delivery-before-upload"));
}

#[test]
fn parquet_sigkill_mid_upload_keeps_every_record_once_and_each_partitions_schema() {
    parquet_crash_and_recover(Some("object-store-mid-upload"));
}

#[test]
fn parquet_sigkill_after_upload_keeps_every_record_once_and_each_partitions_schema() {
    parquet_crash_and_recover(Some("delivery-after-upload"));
}

#[test]
fn sigkill_mid_buffer_loses_nothing_and_duplicates_nothing() {
    crash_and_recover(None);
}

#[test]
fn sigkill_before_upload_loses_nothing_and_duplicates_nothing() {
    crash_and_recover(Some("delivery-before-upload"));
}

#[test]
fn sigkill_mid_upload_loses_nothing_and_duplicates_nothing() {
    crash_and_recover(Some("object-store-mid-upload"));
}

#[test]
fn sigkill_after_upload_before_checkpoint_loses_nothing_and_duplicates_nothing() {
    crash_and_recover(Some("delivery-after-upload"));
}

/// Objects cut by time before the crash hold other records than the replay would group
/// (it reads everything at once): only the intent log keeps those records from being
/// written twice.
#[test]
fn sigkill_after_interval_flushes_duplicates_nothing() {
    crash_and_recover_with(
        "size = \"1MiB\"\ninterval = \"1s\"",
        "[pipelines.produce]\nsource = { plugin = \"generator\", count = 3000, rate = 1000, batch_size = 50 }\nsink = { plugin = \"stream\", stream = \"events\" }\n",
        Some("delivery-after-upload:12"),
    );
}

/// Hostile partition values (path separators, `..`, empty, control characters, very long)
/// put through the Kinesis API: every file lands inside the lake, directly under one
/// `type=` folder of the prefix, and the values that cannot make a key go to the error
/// output.
#[test]
fn hostile_partition_values_never_leave_the_prefix() {
    let (s, d) = lake_daemon();
    let long = "x".repeat(600);
    let hostile = [
        "../../../../etc",
        "..",
        ".",
        "/",
        "a/../../b",
        "\\..\\x",
        "",
        "tab\there",
        "nul\u{0}byte",
        "new\nline",
        "%2E%2E",
        "=",
        long.as_str(),
    ];
    let recs: Vec<String> = hostile
        .iter()
        .map(|t| {
            use base64::Engine as _;
            let doc = serde_json::json!({"type": t, "source": t}).to_string();
            format!(
                r#"{{"Data":"{}","PartitionKey":"k"}}"#,
                base64::engine::general_purpose::STANDARD.encode(doc)
            )
        })
        .collect();
    let body = format!(
        r#"{{"StreamName":"events","Records":[{}]}}"#,
        recs.join(",")
    );
    assert_eq!(kinesis(s.api, "PutRecords", &body).0, 200);
    let pl = ["pipeline=\"events-to-lake\""];
    wait_until(
        Duration::from_secs(30),
        "every record delivered or failed",
        || {
            d.metric("sluice_sink_records_total", &pl)
                + d.metric("sluice_records_failed_total", &pl)
                >= hostile.len() as f64
        },
    );
    // Every file under the test folder is where it should be: var/ (state) or lake/.
    let root = s.dir.path().canonicalize().unwrap();
    let mut data_objects = 0;
    for p in files_under(&root) {
        let rel = p.strip_prefix(&root).unwrap().to_str().unwrap().to_string();
        let top = rel.split('/').next().unwrap();
        assert!(
            ["var", "lake", "pipelines", "sluiced.toml"].contains(&top),
            "a file outside the lake: {rel}"
        );
        if top == "lake" && !rel.starts_with("lake/kdferror/") {
            // lake/type=…/source=…/yyyy/MM/dd/HH/<name>.gz
            let segs: Vec<&str> = rel.split('/').collect();
            assert_eq!(segs.len(), 8, "{rel}");
            assert!(
                segs[1].starts_with("type=") && segs[2].starts_with("source="),
                "{rel}"
            );
            assert!(segs.iter().all(|s| *s != ".." && *s != "."), "{rel}");
            assert!(!rel.chars().any(|c| c.is_control()), "{rel:?}");
            data_objects += 1;
        }
    }
    assert!(data_objects >= 10, "{data_objects} data objects");
    // The empty and the over-long values cannot make a key: error output.
    assert_eq!(
        d.metric(
            "sluice_records_failed_total",
            &[
                "pipeline=\"events-to-lake\"",
                "error_type=\"partitioning-failed\""
            ]
        ),
        2.0
    );
    let lines = lake_lines(s.dir.path());
    assert_eq!(lines.len(), hostile.len() - 2);
}

/// zstd objects as DuckDB reads them, snappy (framed) objects as the snap crate reads them.
#[test]
fn zstd_and_snappy_objects_read_back() {
    let pipeline = |name: &str, c: &str| {
        format!("[pipelines.{name}]\nsource = {{ plugin = \"stream\", stream = \"events\" }}\n\n[pipelines.{name}.partitioning]\nquery = '{{type}}'\n\n[pipelines.{name}.buffer]\ninterval = \"1s\"\n\n[pipelines.{name}.sink]\nplugin = \"object-store\"\nurl = \"{name}\"\nprefix = \"type=!{{partitionKeyFromQuery:type}}/\"\ncompression = \"{c}\"\n")
    };
    let s = Setup::new(
        "",
        &[
            ("stream", "[streams.events]\nshards = 2\n"),
            ("zstd", &pipeline("lake-zstd", "zstd")),
            ("snappy", &pipeline("lake-snappy", "snappy")),
            ("gen", &generator_into_events(1000)),
        ],
    );
    let mut d = s.start();
    d.wait_ready();
    wait_until(Duration::from_secs(30), "both lakes written", || {
        ["lake-zstd", "lake-snappy"].iter().all(|p| {
            d.metric("sluice_sink_records_total", &[&format!("pipeline=\"{p}\"")]) >= 1000.0
        })
    });
    let text = python(
        &[
            "-c".into(),
            "import duckdb,sys; print(duckdb.sql(\"select count(*), count(distinct id), count(distinct type) from read_json_auto('\" + sys.argv[1] + \"/**/*.zst', compression='zstd', hive_partitioning=true)\").fetchall()[0])".into(),
            s.path("lake-zstd").into_os_string(),
        ],
        &d,
    );
    assert!(text.starts_with("(1000, 1000, "), "{text}");
    let mut lines = 0;
    for p in files_under(&s.path("lake-snappy")) {
        assert!(p.to_str().unwrap().ends_with(".snappy"), "{p:?}");
        use std::io::Read;
        let mut text = String::new();
        snap::read::FrameDecoder::new(std::fs::File::open(&p).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        lines += text.lines().count();
    }
    assert_eq!(lines, 1000);
}

fn one_partition_pipeline(url_and_options: &str, compression: &str) -> String {
    format!("[streams.events]\nshards = 2\n\n[pipelines.events-to-lake]\nsource = {{ plugin = \"stream\", stream = \"events\" }}\n\n[pipelines.events-to-lake.buffer]\nsize = \"64MiB\"\ninterval = \"1h\"\n\n[pipelines.events-to-lake.sink]\nplugin = \"object-store\"\n{url_and_options}\nprefix = \"data/\"\ncompression = \"{compression}\"\n")
}

/// Waits until the lake pipeline buffers `n` records, checks that they are spooled (the
/// memory gauge stays far below their size), then drains with SIGTERM.
fn buffer_spooled_then_drain(s: &Setup, n: u64) {
    let mut d = s.start();
    d.wait_ready();
    let pl = ["pipeline=\"events-to-lake\""];
    wait_until(Duration::from_secs(60), "every record buffered", || {
        d.metric("sluice_buffer_records", &pl) >= n as f64
    });
    let bytes = d.metric("sluice_buffer_bytes", &pl);
    let memory = d.metric("sluice_buffer_memory_bytes", &[]);
    assert!(bytes > 12e6, "{bytes}");
    assert!(
        memory < 2e6,
        "{bytes} bytes buffered, {memory} of them in memory"
    );
    let spooled: Vec<_> = std::fs::read_dir(s.path("var/spool/events-to-lake"))
        .unwrap()
        .collect();
    assert_eq!(spooled.len(), 1, "one spool file for the one partition");
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(60)).unwrap().success());
    let left = std::fs::read_dir(s.path("var/spool/events-to-lake"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "spool files are removed once stored");
}

/// A partition past the spill threshold streams through gzip into a spool file, which
/// becomes the object: the records never sit in RAM together.
#[test]
fn large_objects_are_spooled_to_disk() {
    let s = Setup::new(
        "",
        &[
            ("lake", &one_partition_pipeline("url = \"lake\"", "gzip")),
            ("gen", &generator_into_events(40_000)),
        ],
    );
    buffer_spooled_then_drain(&s, 40_000);
    let lines = gz_lines(&s.path("lake/data"));
    assert_eq!(lines.len(), 40_000);
    assert!(lines.values().all(|&n| n == 1));
}

/// Records in every object under s3://lake/data/, downloaded with the AWS CLI.
fn s3_records(m: &Moto, scratch: &Path) -> HashMap<String, usize> {
    let _ = std::fs::remove_dir_all(scratch);
    m.aws(&[
        "s3",
        "cp",
        "--recursive",
        "--quiet",
        "s3://lake/data/",
        scratch.to_str().unwrap(),
    ]);
    gz_lines(scratch)
}

/// A spooled object larger than the multipart threshold goes to S3 in parts read from
/// the spool file.
#[test]
fn large_spooled_objects_go_to_s3_as_multipart_uploads() {
    let m = Moto::start();
    m.aws(&["s3", "mb", "s3://lake"]);
    let sink = format!(
        "url = \"s3://lake/big\"\nendpoint = \"{}\"\naccess_key_id = \"x\"\nsecret_access_key = \"x\"",
        m.endpoint
    );
    let s = Setup::new(
        "",
        &[
            ("lake", &one_partition_pipeline(&sink, "none")),
            ("gen", &generator_into_events(60_000)),
        ],
    );
    buffer_spooled_then_drain(&s, 60_000);
    let listing: serde_json::Value = serde_json::from_str(&m.aws(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "lake",
        "--prefix",
        "big/data/",
    ]))
    .unwrap();
    let objects = listing["Contents"].as_array().unwrap();
    assert_eq!(objects.len(), 1, "{listing}");
    let etag = objects[0]["ETag"].as_str().unwrap();
    assert!(objects[0]["Size"].as_u64().unwrap() > 16 << 20);
    assert!(
        etag.contains('-'),
        "a multipart ETag ends in -<parts>: {etag}"
    );
    let key = objects[0]["Key"].as_str().unwrap();
    let local = s.path("big.jsonl");
    m.aws(&[
        "s3",
        "cp",
        "--quiet",
        &format!("s3://lake/{key}"),
        local.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&local).unwrap();
    let distinct: std::collections::HashSet<&str> = text.lines().collect();
    assert_eq!((text.lines().count(), distinct.len()), (60_000, 60_000));
}

#[test]
fn lake_on_s3_survives_an_outage() {
    let m = Moto::start();
    m.aws(&["s3", "mb", "s3://lake"]);
    let s3_pipeline = format!(
        "[streams.events]\nshards = 2\n\n[pipelines.to-s3]\nsource = {{ plugin = \"stream\", stream = \"events\" }}\n\n[pipelines.to-s3.partitioning]\nquery = '{{type, source}}'\n\n[pipelines.to-s3.buffer]\ninterval = \"1s\"\n\n[pipelines.to-s3.sink]\nplugin = \"object-store\"\nurl = \"s3://lake/data\"\nendpoint = \"{}\"\naccess_key_id = \"x\"\nsecret_access_key = \"x\"\ntimeout_secs = 1\nprefix = \"type=!{{partitionKeyFromQuery:type}}/source=!{{partitionKeyFromQuery:source}}/\"\ncompression = \"gzip\"\n",
        m.endpoint
    );
    let local = "[pipelines.local]\nsource = { plugin = \"generator\", rate = 200 }\nsink = { plugin = \"file\", path = \"out/local.jsonl\" }\n";
    let s = Setup::new(
        "",
        &[
            ("s3", &s3_pipeline),
            ("local", local),
            ("gen", &generator_into_events(300)),
        ],
    );
    let mut d = s.start();
    d.wait_ready();
    let scratch = s.path("download");
    wait_until(Duration::from_secs(30), "300 records in S3", || {
        s3_records(&m, &scratch).len() >= 300
    });
    let listing = m.aws(&["s3", "ls", "--recursive", "s3://lake/data/"]);
    assert!(
        listing.contains("data/type=com.example.order.created/source=https%3A%2F%2Fgithub.com%2FJoseLuisSR%2Fawsmeter/"),
        "{listing}"
    );

    // Outage: the S3 server stops answering; new records keep arriving.
    m.signal(libc::SIGSTOP);
    std::fs::remove_file(s.path("pipelines/gen.toml")).unwrap();
    let more: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"type":"late","source":"outage","n":{i}}}"#))
        .collect();
    for chunk in more.chunks(100) {
        let recs: Vec<String> = chunk
            .iter()
            .map(|r| {
                use base64::Engine as _;
                format!(
                    r#"{{"Data":"{}","PartitionKey":"k{}"}}"#,
                    base64::engine::general_purpose::STANDARD.encode(r),
                    r.len()
                )
            })
            .collect();
        let body = format!(
            r#"{{"StreamName":"events","Records":[{}]}}"#,
            recs.join(",")
        );
        let (code, out) = kinesis(s.api, "PutRecords", &body);
        assert_eq!(code, 200, "ingest continues during the sink outage: {out}");
    }
    wait_until(Duration::from_secs(30), "retries counted", || {
        d.metric("sluice_sink_retries_total", &["pipeline=\"to-s3\""]) >= 2.0
    });
    // The other pipeline keeps delivering meanwhile.
    let before = lines(&s.path("out/local.jsonl")).len();
    wait_until(
        Duration::from_secs(10),
        "the local pipeline keeps delivering",
        || lines(&s.path("out/local.jsonl")).len() > before + 50,
    );
    m.signal(libc::SIGCONT);
    wait_until(
        Duration::from_secs(60),
        "every record in S3 after the outage",
        || s3_records(&m, &scratch).len() >= 500,
    );
    let got = s3_records(&m, &scratch);
    for r in &more {
        assert!(got.contains_key(r), "{r} lost");
    }
    let _ = &mut d;
}

#[test]
fn firehose_direct_put_with_boto3() {
    let pipeline = "[pipelines.direct]\nsource = { plugin = \"direct-put\" }\n\n[pipelines.direct.partitioning]\nquery = '{type, source}'\n\n[pipelines.direct.buffer]\ninterval = \"1s\"\n\n[pipelines.direct.sink]\nplugin = \"object-store\"\nurl = \"lake\"\nprefix = \"type=!{partitionKeyFromQuery:type}/source=!{partitionKeyFromQuery:source}/\"\ncompression = \"gzip\"\n";
    let s = Setup::new("", &[("direct", pipeline)]);
    let mut d = s.start();
    d.wait_ready();
    python(
        &[
            interop("firehose_boto3.py").into_os_string(),
            format!("http://{}", s.api).into(),
        ],
        &d,
    );
    wait_until(Duration::from_secs(20), "250 records in the lake", || {
        lake_lines(s.dir.path()).len() == 250
    });
    assert!(s.path("lake/type=t/source=fh").is_dir());
    // The internal stream is not a Kinesis stream users see.
    let (_, body) = kinesis(s.api, "ListStreams", "{}");
    assert!(!body.contains("__firehose"), "{body}");
}
