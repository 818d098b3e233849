//! `sluiced query`: SQL over the lake the pipelines wrote (same answers as DuckDB on the
//! same files, folders pruned before objects are opened, `LIMIT` stopping early, local and
//! S3 lakes) and S3 Select's dialect on one object (JSON lines, JSON document, CSV, gzip).
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LAKE: &str = "[streams.events]\nshards = 4\n\n[pipelines.events-to-lake]\nsource = { plugin = \"stream\", stream = \"events\" }\n\n[pipelines.events-to-lake.partitioning]\nquery = '{type: .type, source: .source}'\n\n[pipelines.events-to-lake.buffer]\nsize = \"64MiB\"\ninterval = \"1s\"\n\n[pipelines.events-to-lake.sink]\nplugin = \"object-store\"\nurl = \"lake\"\nprefix = \"type=!{partitionKeyFromQuery:type}/source=!{partitionKeyFromQuery:source}/\"\nerror_prefix = \"kdferror/!{firehose:error-output-type}/\"\ncompression = \"gzip\"\n";

/// What `sluiced query` printed on stderr: (listed, after pruning, read) of one table.
fn objects_read(stderr: &str, table: &str) -> (usize, usize, usize) {
    let part = stderr
        .split("; ")
        .find(|p| p.starts_with(&format!("{table}: ")))
        .unwrap_or_else(|| panic!("no report for {table} in {stderr}"));
    let n: Vec<usize> = part
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (n[0], n[1], n[2])
}

/// `sluiced query` runs the `sluice-query` program next to it (built by `cargo test
/// --workspace`, as `scripts/test` does).
fn needs_the_query_program() {
    let p = bin().with_file_name("sluice-query");
    assert!(
        p.is_file(),
        "{} missing: cargo build -p sluice-query",
        p.display()
    );
}

/// `SELECT count(*)` of `events-to-lake` through `sluiced query` (`None` while it fails).
fn rows_in_lake(s: &Setup) -> Option<u64> {
    needs_the_query_program();
    let sql = "SELECT count(*) AS n FROM \"events-to-lake\"";
    let (code, out, _) = s.cli(&["query", "-q", "--format", "csv", sql]);
    (code == 0)
        .then(|| out.lines().nth(1)?.parse().ok())
        .flatten()
}

/// Runs `sluiced query ARGS` for `s`; it must succeed. Returns (stdout, stderr).
fn query(s: &Setup, args: &[&str]) -> (String, String) {
    needs_the_query_program();
    let mut all = vec!["query"];
    all.extend_from_slice(args);
    let (code, out, err) = s.cli(&all);
    assert_eq!(code, 0, "sluiced query {args:?} failed: {err}");
    (out, err)
}

fn json_rows(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Data objects (not error output) under `dir`.
fn data_objects(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            !rel.starts_with("kdferror") && p.extension().is_some_and(|x| x == "gz")
        })
        .collect()
}

#[test]
fn lake_queries_answer_as_duckdb_and_prune_folders() {
    let s = Setup::new("", &[("lake", LAKE)]);
    let mut d = s.start();
    d.wait_ready();
    // boto3 puts CloudEvents of several types and sources (escaped folder names among
    // them), a KPL aggregate and malformed records, and waits until DuckDB sees them all.
    python(
        &[
            interop("lake_boto3.py").into_os_string(),
            format!("http://{}", s.api).into(),
            s.path("lake").into_os_string(),
        ],
        &d,
    );
    let sql =
        "SELECT type, source, count(*) AS n FROM \"events-to-lake\" GROUP BY ALL ORDER BY type, source";
    let (out, err) = query(&s, &["--format", "json", sql]);
    let ours: Vec<(String, String, u64)> = json_rows(&out)
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap().to_string(),
                r["source"].as_str().unwrap().to_string(),
                r["n"].as_u64().unwrap(),
            )
        })
        .collect();
    let duck = duckdb(
        &d,
        "select type, source, count(*) from read_json_auto('{DIR}/type=*/source=*/*/*/*/*/*.gz', hive_partitioning=true) group by all order by all",
        &s.path("lake"),
    );
    let duck: Vec<(String, String, u64)> = serde_json::from_value(duck).unwrap();
    assert_eq!(ours, duck);
    assert!(ours.len() >= 7, "{ours:?}");
    assert!(
        ours.iter()
            .any(|(_, s, _)| s == "https://github.com/JoseLuisSR/awsmeter"),
        "escaped folder values are read back: {ours:?}"
    );
    let all_objects = data_objects(&s.path("lake")).len();
    let (listed, scanned, read) = objects_read(&err, "events-to-lake");
    assert_eq!(
        (listed, scanned, read),
        (all_objects, all_objects, all_objects),
        "{err}"
    );

    // A filter on partition columns opens only that partition's objects.
    let kpl_objects = data_objects(&s.path("lake/type=order.kpl")).len();
    assert!(kpl_objects >= 1);
    let (out, err) = query(
        &s,
        &[
            "--format",
            "csv",
            "SELECT id FROM \"events-to-lake\" WHERE type = 'order.kpl' AND source = '/kpl' ORDER BY id",
        ],
    );
    assert_eq!(out, "id\nevt-1000\nevt-1001\nevt-1002\n");
    assert_eq!(
        objects_read(&err, "events-to-lake"),
        (all_objects, kpl_objects, kpl_objects)
    );

    // Time folders are columns too, and prune like partition keys.
    let (out, err) = query(
        &s,
        &[
            "--format",
            "csv",
            "SELECT count(*) AS n FROM \"events-to-lake\" WHERE year < 2000",
        ],
    );
    assert_eq!(out, "n\n0\n");
    assert_eq!(objects_read(&err, "events-to-lake").1, 0);
    let (out, _) = query(
        &s,
        &[
            "--format",
            "json",
            "SELECT min(year) AS y, min(month) AS m, count(*) AS n FROM \"events-to-lake\" WHERE day BETWEEN 1 AND 31 AND hour < 24",
        ],
    );
    let row = &json_rows(&out)[0];
    assert!(row["y"].as_i64().unwrap() >= 2026 && (1..=12).contains(&row["m"].as_i64().unwrap()));
    assert_eq!(row["n"].as_u64().unwrap(), duck_total(&ours));

    // LIMIT stops reading early.
    let (out, err) = query(
        &s,
        &[
            "--format",
            "json",
            "SELECT id, data.n FROM \"events-to-lake\" LIMIT 1",
        ],
    );
    assert_eq!(json_rows(&out).len(), 1);
    let (_, _, read) = objects_read(&err, "events-to-lake");
    assert!(
        read < all_objects,
        "LIMIT 1 read {read} of {all_objects} objects: {err}"
    );
    d.stop_cleanly();
}

fn duck_total(rows: &[(String, String, u64)]) -> u64 {
    rows.iter().map(|r| r.2).sum()
}

/// The lake on S3 (moto's server), written by the pipeline and queried in place; one of
/// its objects read with `--object s3://...`.
#[test]
fn s3_lakes_are_queried_in_place() {
    let m = Moto::start();
    m.aws(&["s3", "mb", "s3://lake"]);
    let sink = format!(
        "url = \"s3://lake/events\"\nendpoint = \"{}\"\naccess_key_id = \"x\"\nsecret_access_key = \"x\"\n",
        m.endpoint
    );
    let pipeline = LAKE.replace("url = \"lake\"\n", &sink);
    let gen = "[pipelines.produce]\nsource = { plugin = \"generator\", count = 2000, batch_size = 100 }\nsink = { plugin = \"stream\", stream = \"events\" }\n";
    let s = Setup::new("", &[("lake", &pipeline), ("gen", gen)]);
    let mut d = s.start();
    d.wait_ready();
    wait_until(
        Duration::from_secs(60),
        "2000 records in the S3 lake",
        || rows_in_lake(&s) == Some(2000),
    );
    let (out, err) = query(
        &s,
        &[
            "--format",
            "json",
            "SELECT type, count(*) AS n FROM \"events-to-lake\" GROUP BY type ORDER BY type",
        ],
    );
    let rows = json_rows(&out);
    assert!(rows.len() > 1, "{out}");
    assert_eq!(
        rows.iter().map(|r| r["n"].as_u64().unwrap()).sum::<u64>(),
        2000
    );
    let one_type = rows[0]["type"].as_str().unwrap().to_string();
    let (_, err2) = query(
        &s,
        &[
            "--format",
            "csv",
            &format!("SELECT count(*) FROM \"events-to-lake\" WHERE type = '{one_type}'"),
        ],
    );
    let (listed, _, _) = objects_read(&err, "events-to-lake");
    let (listed2, scanned2, _) = objects_read(&err2, "events-to-lake");
    assert_eq!(listed2, listed);
    assert!(scanned2 < listed, "{err2}");

    let listing: serde_json::Value = serde_json::from_str(&m.aws(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "lake",
        "--prefix",
        "events/type=",
    ]))
    .unwrap();
    let key = listing["Contents"][0]["Key"].as_str().unwrap().to_string();
    let out = std::process::Command::new(bin())
        .args(["query", "--format", "json", "--endpoint", &m.endpoint])
        .args(["--object", &format!("s3://lake/{key}")])
        .arg("SELECT count(*) FROM s3object s")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = json_rows(&String::from_utf8_lossy(&out.stdout))[0]["_1"]
        .as_u64()
        .unwrap();
    assert!(n >= 1);
    d.stop_cleanly();
}

/// Writes `text` gzip-compressed to `path`.
fn gzip(path: &Path, text: &str) {
    let f = std::fs::File::create(path).unwrap();
    let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap();
}

/// Runs S3 Select mode on `object`; it must succeed. Returns stdout.
fn select(object: &Path, args: &[&str], sql: &str) -> String {
    needs_the_query_program();
    let out = std::process::Command::new(bin())
        .arg("query")
        .arg("--object")
        .arg(object)
        .args(args)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn s3_select_on_one_object_answers_as_s3_select() {
    let dir = tempfile::tempdir().unwrap();
    // JSON LINES, gzip: the seed's example.
    let mut lines = String::new();
    for i in 0..50 {
        let src = if i % 2 == 0 {
            "/shop/eu-west"
        } else {
            "/shop/us-east"
        };
        lines.push_str(&format!(
            "{{\"specversion\":\"1.0\",\"type\":\"order.created\",\"source\":\"{src}\",\"id\":\"evt-{i}\",\"data\":{{\"n\":{i},\"total\":\"{i}.50\"}}}}\n"
        ));
    }
    let jl = dir.path().join("events-1-2026-11-30-00-00-00-x.gz");
    gzip(&jl, &lines);
    let out = select(
        &jl,
        &["--format", "json"],
        "SELECT s.type, s.id FROM s3object s WHERE s.source = '/shop/eu-west' LIMIT 10",
    );
    let want: Vec<String> = (0..20)
        .step_by(2)
        .map(|i| format!("{{\"type\":\"order.created\",\"id\":\"evt-{i}\"}}"))
        .collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
    // A path's last name names its column; other expressions are _N, as S3 Select does.
    let out = select(
        &jl,
        &["--format", "json"],
        "SELECT s.data.n, CAST(s.data.total AS DOUBLE) * 2, count(*) OVER () FROM S3Object s WHERE s.id = 'evt-3'",
    );
    assert_eq!(out, "{\"n\":3,\"_2\":7.0,\"_3\":1}\n");
    // SELECT * gives the record's fields in their order.
    let out = select(&jl, &["--format", "json"], "SELECT * FROM s3object LIMIT 1");
    assert_eq!(out, lines.lines().next().unwrap().to_string() + "\n");

    // JSON DOCUMENT: an array's elements are the records.
    let doc = dir.path().join("doc.json");
    std::fs::write(
        &doc,
        "[\n {\"a\": 1, \"b\": \"x\"},\n {\"a\": 2, \"b\": \"y\"}\n]\n",
    )
    .unwrap();
    let out = select(
        &doc,
        &["--input", "json-document", "--format", "csv"],
        "SELECT s.b FROM s3object s WHERE s.a > 1",
    );
    assert_eq!(out, "b\ny\n");

    // CSV with a header line: values are text until CAST.
    let csv = "id,region,amount\n1,eu,10\n2,us,25\n3,eu,7\n";
    let c = dir.path().join("sales.csv");
    std::fs::write(&c, csv).unwrap();
    let out = select(
        &c,
        &["--format", "csv"],
        "SELECT s.region, SUM(CAST(s.amount AS INT)) FROM s3object s GROUP BY s.region ORDER BY s.region",
    );
    assert_eq!(out, "region,_2\neu,17\nus,25\n");
    // ... gzip-compressed, header IGNOREd: columns by position.
    let cgz = dir.path().join("sales.csv.gz");
    gzip(&cgz, csv);
    let out = select(
        &cgz,
        &["--csv-header", "ignore", "--format", "csv"],
        "SELECT s._1, s._3 FROM s3object s WHERE CAST(s._3 AS INT) > 8",
    );
    assert_eq!(out, "_1,_3\n1,10\n2,25\n");
    // ... no header at all, another delimiter.
    let semi = dir.path().join("plain.txt");
    std::fs::write(&semi, "a;1\nb;2\n").unwrap();
    let out = select(
        &semi,
        &[
            "--input",
            "csv",
            "--csv-header",
            "none",
            "--field-delimiter",
            ";",
            "--format",
            "csv",
        ],
        "SELECT s._1 FROM s3object s WHERE s._2 = '2'",
    );
    assert_eq!(out, "_1\nb\n");
    // A compression the name does not say.
    let hidden = dir.path().join("events.data");
    std::fs::copy(&jl, &hidden).unwrap();
    let out = select(
        &hidden,
        &["--compression", "gzip", "--format", "csv"],
        "SELECT count(*) AS n FROM s3object",
    );
    assert_eq!(out, "n\n50\n");
}

/// Bad SQL, a missing object, a damaged object and a lake not written yet each give a
/// clear answer and an exit code, never a panic.
#[test]
fn bad_queries_and_damaged_objects_get_clear_errors() {
    let s = Setup::new("", &[("lake", LAKE)]);
    // No lake yet: the table exists, with only its folder columns, and is empty.
    let (out, err) = query(
        &s,
        &[
            "--format",
            "csv",
            "SELECT count(*) AS n FROM \"events-to-lake\" WHERE type = 'x'",
        ],
    );
    assert_eq!(out, "n\n0\n", "{err}");
    let fails = |args: &[&str], want: &str| {
        let mut all = vec!["query"];
        all.extend_from_slice(args);
        let (code, _, err) = s.cli(&all);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: `{want}` not in: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    fails(&["SELEC 1"], "error: SQL error");
    fails(&["SELECT * FROM nope"], "nope' not found");
    let missing = s.path("missing.json");
    fails(
        &[
            "--object",
            missing.to_str().unwrap(),
            "SELECT * FROM s3object",
        ],
        "missing.json",
    );
    // A damaged object in the lake: the error names it.
    let dir = s.path("lake/type=a/source=b/2026/11/30/10");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("events-to-lake-1-2026-11-30-10-00-00-x.gz"),
        b"\x1f\x8bnot gzip at all",
    )
    .unwrap();
    fails(
        &["SELECT * FROM \"events-to-lake\""],
        "events-to-lake-1-2026-11-30-10-00-00-x.gz",
    );
    // An invalid configuration is reported like `sluiced check` does.
    s.write_pipeline(
        "bad",
        "[pipelines.bad]\nsource = { plugin = \"nope\" }\nsink = { plugin = \"stdout\" }\n",
    );
    fails(&["SELECT 1"], "bad.toml:2:");
}

fn parquet_lake(schema: &str, compression: &str) -> String {
    format!("[streams.events]\nshards = 2\n\n[pipelines.events-to-lake]\nsource = {{ plugin = \"stream\", stream = \"events\" }}\n\n[pipelines.events-to-lake.partitioning]\nquery = '{{type: .type}}'\n\n[pipelines.events-to-lake.buffer]\nsize = \"64MiB\"\ninterval = \"1s\"\n\n[pipelines.events-to-lake.sink]\nplugin = \"object-store\"\nurl = \"lake\"\nprefix = \"type=!{{partitionKeyFromQuery:type}}/\"\ncompression = \"{compression}\"\nformat = \"parquet\"\nschema = {schema}\n")
}

const DECLARED: &str = "[\n  { name = \"id\", type = \"string\", nullable = false },\n  { name = \"type\", type = \"string\" },\n  { name = \"time\", type = \"timestamp\" },\n  { name = \"data\", type = \"struct\", fields = [ { name = \"n\", type = \"int64\" }, { name = \"price\", type = \"double\" } ] },\n  { name = \"tags\", type = \"list\", item = { type = \"string\" } },\n]";

/// Puts `lines` into stream `events` with `sluiced put`.
fn put_lines(s: &Setup, lines: &str) {
    let out = output_with_stdin(
        std::process::Command::new(bin())
            .args(["put", "events", "--config"])
            .arg(&s.config),
        lines.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// DuckDB's answer (JSON rows) to `sql`, in which `{DIR}` stands for `dir`.
fn duckdb(d: &Daemon, sql: &str, dir: &Path) -> serde_json::Value {
    let out = python(
        &[
            "-c".into(),
            "import duckdb,json,sys; print(json.dumps(duckdb.sql(sys.argv[1].replace('{DIR}', sys.argv[2])).fetchall()))".into(),
            std::ffi::OsString::from(sql),
            dir.as_os_str().to_owned(),
        ],
        d,
    );
    serde_json::from_str(&out).unwrap()
}

fn events(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        let t = if i % 2 == 0 {
            "order.created"
        } else {
            "order.paid"
        };
        s.push_str(&format!(
            "{{\"id\":\"evt-{i}\",\"type\":\"{t}\",\"time\":\"2026-11-30T10:00:{:02}Z\",\"data\":{{\"n\":{i},\"price\":{i}.25}},\"tags\":[\"a\",\"b{i}\"],\"extra\":\"dropped\"}}\n",
            i % 60
        ));
    }
    s
}

/// Records become Parquet objects with the declared types, read by DuckDB and by `sluiced
/// query`; a record that does not fit is a `format-conversion-failed` error document
/// holding its original bytes.
#[test]
fn parquet_objects_have_the_declared_types_and_misfits_go_to_the_error_output() {
    let s = Setup::new("", &[("lake", &parquet_lake(DECLARED, "snappy"))]);
    let mut d = s.start();
    d.wait_ready();
    let misfit = "{\"id\":\"bad-1\",\"type\":\"order.created\",\"data\":{\"n\":\"not a number\"}}";
    put_lines(
        &s,
        &(events(200) + misfit + "\n" + "{\"type\":\"order.paid\"}\n"),
    );
    wait_until(
        Duration::from_secs(60),
        "200 rows in Parquet objects",
        || rows_in_lake(&s) == Some(200),
    );
    let objects: Vec<PathBuf> = files_under(&s.path("lake"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    assert!(objects.len() >= 2, "{objects:?}");
    assert!(objects
        .iter()
        .all(|p| p.to_string_lossy().contains("/type=order.")));
    // DuckDB reads them with the declared types.
    let rows = duckdb(
        &d,
        "select typeof(id), typeof(time), typeof(data), typeof(tags), count(*), sum(data.n), min(time)::varchar from read_parquet('{DIR}/**/*.parquet') group by all",
        &s.path("lake"),
    );
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    let r = &rows[0];
    assert_eq!(r[0], "VARCHAR");
    assert_eq!(r[1], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(r[2], "STRUCT(n BIGINT, price DOUBLE)");
    assert_eq!(r[3], "VARCHAR[]");
    assert_eq!(r[4], 200);
    assert_eq!(r[5], (0..200).sum::<i64>());
    // sluiced query, with the folder column, the struct fields and the timestamp type.
    let (out, _) = query(
        &s,
        &[
            "--format",
            "json",
            "SELECT type, count(*) AS n, sum(data.price) AS p, max(tags[2]) AS t, arrow_typeof(max(time)) AS tt FROM \"events-to-lake\" GROUP BY type ORDER BY type",
        ],
    );
    let rows = json_rows(&out);
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(rows[0]["type"], "order.created");
    assert_eq!(rows[0]["n"], 100);
    assert_eq!(rows[0]["tt"], "Timestamp(ms, \"+00:00\")");
    // The misfits, with their original bytes and the field named.
    wait_until(
        Duration::from_secs(30),
        "two format-conversion-failed documents",
        || error_docs(&s.path("lake/kdferror/format-conversion-failed")).len() == 2,
    );
    let docs = error_docs(&s.path("lake/kdferror/format-conversion-failed"));
    use base64::Engine as _;
    let raw: Vec<String> = docs
        .iter()
        .map(|d| {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(d["rawData"].as_str().unwrap())
                    .unwrap(),
            )
            .unwrap()
        })
        .collect();
    assert!(raw.contains(&misfit.to_string()), "{raw:?}");
    let messages: Vec<&str> = docs
        .iter()
        .map(|d| d["errorMessage"].as_str().unwrap())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("field `data.n` must be an integer")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("field `id` is required")),
        "{messages:?}"
    );
    assert!(docs
        .iter()
        .all(|d| d["errorCode"] == "DataFormatConversion.MalformedData"));
    assert_eq!(
        d.metric(
            "sluice_records_failed_total",
            &["error_type=\"format-conversion-failed\""]
        ),
        2.0
    );
    d.stop_cleanly();
}

/// `schema = "infer"`: a partition's columns come from its records, widened as they add
/// fields; a record whose field changes type is refused.
#[test]
fn inferred_parquet_schemas_widen_and_refuse_conflicts() {
    let s = Setup::new("", &[("lake", &parquet_lake("\"infer\"", "zstd"))]);
    let mut d = s.start();
    d.wait_ready();
    let lines = "{\"type\":\"t\",\"a\":1}\n{\"type\":\"t\",\"a\":2.5,\"b\":\"x\"}\n{\"type\":\"t\",\"a\":\"text\"}\n{\"type\":\"t\",\"c\":{\"d\":true}}\n";
    put_lines(&s, lines);
    wait_until(Duration::from_secs(60), "3 rows and 1 refusal", || {
        rows_in_lake(&s) == Some(3)
            && error_docs(&s.path("lake/kdferror/format-conversion-failed")).len() == 1
    });
    let duck = duckdb(
        &d,
        "select typeof(a), typeof(b), typeof(c), sum(a) from read_parquet('{DIR}/**/*.parquet') group by all",
        &s.path("lake"),
    );
    assert_eq!(
        duck,
        serde_json::json!([["DOUBLE", "VARCHAR", "STRUCT(d BOOLEAN)", 3.5]])
    );
    let doc = &error_docs(&s.path("lake/kdferror/format-conversion-failed"))[0];
    assert!(
        doc["errorMessage"]
            .as_str()
            .unwrap()
            .contains("field `a` holds number"),
        "{doc}"
    );
    d.stop_cleanly();
}

/// Inference is per partition: a column that holds integers in one partition refuses text
/// in the partition's later objects, and holds text in another partition; `sluiced query`
/// reads both partitions' objects together as text (every value converts to it).
#[test]
fn objects_whose_inferred_types_differ_are_queried_together() {
    let s = Setup::new("", &[("lake", &parquet_lake("\"infer\"", "snappy"))]);
    let mut d = s.start();
    d.wait_ready();
    let objects = || {
        files_under(&s.path("lake"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .count()
    };
    put_lines(&s, "{\"type\":\"t\",\"a\":1}\n");
    wait_until(Duration::from_secs(30), "the first object", || {
        objects() == 1
    });
    put_lines(
        &s,
        "{\"type\":\"t\",\"a\":\"x\"}\n{\"type\":\"u\",\"a\":\"y\"}\n",
    );
    let refused = || error_docs(&s.path("lake/kdferror/format-conversion-failed"));
    wait_until(
        Duration::from_secs(30),
        "the second object and a refusal",
        || objects() == 2 && s.path("lake/kdferror").exists() && refused().len() == 1,
    );
    let doc = &refused()[0];
    assert!(
        doc["errorMessage"]
            .as_str()
            .unwrap()
            .contains("field `a` holds integer in this partition's earlier records, not string"),
        "{doc}"
    );
    let (out, _) = query(
        &s,
        &[
            "--format",
            "csv",
            "SELECT type, a FROM \"events-to-lake\" ORDER BY a",
        ],
    );
    assert_eq!(out, "type,a\nt,1\nu,y\n");
    d.stop_cleanly();
}

#[test]
fn parquet_settings_are_checked_with_file_line_and_column() {
    let cases = [
        ("format = \"parquet\"\n", "needs schema = \"infer\" or a list of columns"),
        ("format = \"avro\"\n", "unknown format `avro`"),
        ("schema = \"infer\"\n", "schema applies to format = \"parquet\" only"),
        ("format = \"parquet\"\nschema = \"guess\"\n", "schema must be \"infer\" or a list"),
        ("format = \"parquet\"\nschema = \"infer\"\ndelimiter = \",\"\n", "delimiter does not apply"),
        ("format = \"parquet\"\nschema = [ { name = \"a\", type = \"uuid\" } ]\n", "schema[0].type: unknown type `uuid`"),
        ("format = \"parquet\"\nschema = [ { name = \"a\", type = \"string\" }, { name = \"a\", type = \"int64\" } ]\n", "schema[1].name: column `a` is declared twice"),
        ("format = \"parquet\"\nschema = [ { name = \"s\", type = \"struct\" } ]\n", "a struct needs `fields"),
        ("format = \"parquet\"\nschema = [ { name = \"l\", type = \"list\", item = { name = \"x\", type = \"string\" } } ]\n", "a list's item has no name"),
        ("format = \"parquet\"\nschema = [ { name = \"a\", type = \"string\", nulable = true } ]\n", "schema[0].nulable: unknown key"),
    ];
    for (extra, want) in cases {
        let pipeline = format!("[pipelines.p]\nsource = {{ plugin = \"generator\" }}\n\n[pipelines.p.sink]\nplugin = \"object-store\"\nurl = \"lake\"\n{extra}");
        let s = Setup::new("", &[("p", &pipeline)]);
        let (code, _, err) = s.cli(&["check"]);
        assert_eq!(code, 1, "{extra}: {err}");
        assert!(err.contains(want), "{extra}: `{want}` not in {err}");
        assert!(
            err.contains("p.toml:"),
            "{extra}: no file:line:column in {err}"
        );
    }
}

/// Firehose's API: a delivery stream with `DataFormatConversionConfiguration` (ParquetSerDe)
/// writes Parquet objects (schema inferred; the Glue table is not read) and sends what is
/// not JSON to `format-conversion-failed`.
#[test]
fn a_firehose_delivery_stream_with_parquet_conversion_writes_parquet() {
    let s = Setup::new("[firehose]\nbuckets_dir = \"buckets\"\n", &[]);
    let mut d = s.start();
    d.wait_ready();
    run_interop(&d, s.api, "firehose_parquet_boto3.py", &[]);
    // Once every record was read into the buffers, a stop drains them into objects.
    wait_until(Duration::from_secs(30), "every record read", || {
        metric_sum(
            &d.metrics_text(),
            "sluice_shard_outgoing_records_total",
            &[
                "stream=\"__firehose-to-parquet\"",
                "consumer=\"to-parquet\"",
            ],
        ) >= 51.0
    });
    d.stop_cleanly();
    let lake = s.path("buckets/parquet-lake");
    let parquet: Vec<PathBuf> = files_under(&lake.join("events"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    assert!(!parquet.is_empty(), "{:?}", files_under(&lake));
    let duck = duckdb(
        &d,
        "select count(*), sum(n), typeof(ok) from read_parquet('{DIR}/events/**/*.parquet') group by all",
        &lake,
    );
    assert_eq!(duck, serde_json::json!([[50, 1225, "BOOLEAN"]]));
    let docs = error_docs(&s.path("buckets/parquet-lake/format-conversion-failed"));
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0]["rawData"], "bm90IGpzb24=");
}
