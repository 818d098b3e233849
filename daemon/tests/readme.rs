//! The README's shell blocks run (issue #14): the run command, the five-minute tour, the
//! client examples and the lake query are taken from README.md as written and executed,
//! in order, in one bash script against a copy of the bundled config tree (free ports,
//! its own `var/`), so the README cannot rot again. The only rewrites are what a test
//! must change: the test build instead of `cargo build`/`cargo run`, a function instead of
//! an alias (bash scripts do not expand aliases), the venv's clients on PATH, free ports
//! instead of the documented ones, and `EDITOR=true`.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

/// The ```sh blocks of README.md, in order, with the heading they stand under.
fn sh_blocks(readme: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut block: Option<String> = None;
    for line in readme.lines() {
        match &mut block {
            Some(b) if line.starts_with("```") => {
                out.push((heading.clone(), std::mem::take(b)));
                block = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None if line.starts_with("```sh") => block = Some(String::new()),
            None if line.starts_with('#') => {
                heading = line.trim_start_matches('#').trim().to_string()
            }
            None => {}
        }
    }
    out
}

#[test]
fn the_readme_run_command_tour_and_lake_query_work_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let blocks = sh_blocks(&readme);
    let pick = |heading: &str, contains: &str| -> String {
        blocks
            .iter()
            .find(|(h, b)| h == heading && b.contains(contains))
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("README has no sh block under `{heading}` with `{contains}`"))
    };
    let run = pick("The two commands", "cargo run --release -p sluiced -- run");
    assert_eq!(
        run.trim(),
        "cargo run --release -p sluiced -- run --config etc/sluice/sluiced.toml"
    );
    let tour = pick("A five-minute tour", "sluiced run");
    let clients = pick("A five-minute tour", "aws --endpoint-url");
    let lake = pick("A five-minute tour", "duckdb");

    // A copy of the bundled tree, on free ports.
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc/sluice");
    std::fs::create_dir_all(etc.join("pipelines")).unwrap();
    for f in files_under(&root().join("etc/sluice")) {
        let rel = f.strip_prefix(root().join("etc/sluice")).unwrap();
        std::fs::copy(&f, etc.join(rel)).unwrap();
    }
    let (metrics, api) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let ports = |t: &str| {
        t.replace("127.0.0.1:9464", &metrics)
            .replace("127.0.0.1:4567", &api)
    };
    let cfg = etc.join("sluiced.toml");
    std::fs::write(&cfg, ports(&std::fs::read_to_string(&cfg).unwrap())).unwrap();

    let sluiced = bin();
    let adapt = |b: &str| {
        ports(b)
            .replace("cargo run --release -p sluiced --", "\"$SLUICED\"")
            .replace("cargo build --release -p sluiced", "true")
            // The test build is `sluiced` on PATH (see `bash`): `sluiced run … &` is then the
            // daemon itself, which `kill %1` stops.
            .replace("alias sluiced=$PWD/target/release/sluiced", ":")
    };
    // The run command: the daemon starts on the bundled config and prints events.
    let script = format!(
        "set -e\n{} > run.out 2> run.err &\nfor i in $(seq 150); do grep -q '\"type\"' run.out 2>/dev/null && break; sleep 0.2; done\nkill %1; wait || true\ngrep -q '\"type\"' run.out\n",
        adapt(&run).trim()
    );
    bash(tmp.path(), &script, &sluiced);
    // The tour, the clients and the lake query, in one shell (the tour's `&` job is the
    // one the lake block stops with `kill %1`).
    let script = format!(
        "set -e\nexport EDITOR=true\n{}\n{}\n{}\n",
        adapt(&tour),
        adapt(&clients),
        adapt(&lake)
    );
    let out = bash(tmp.path(), &script, &sluiced);
    for expect in [
        "ready",                   // readyz
        "sluice_pipeline_up",      // metrics
        "shardId-000000000003",    // list-shards (4 shards) and status
        "SequenceNumber",          // put-record
        "count_star()",            // DuckDB's answer
        "after partition pruning", // sluiced query's report
        "\"type\":\"com.example.", // S3 Select on one object
    ] {
        assert!(
            out.contains(expect),
            "README tour output lacks {expect:?}:\n{out}"
        );
    }
}

/// Runs `script` with bash in `dir` (the venv's clients first on PATH); fails the test
/// with both outputs unless it exits 0; returns stdout and stderr.
fn bash(dir: &std::path::Path, script: &str, sluiced: &std::path::Path) -> String {
    let venv = root().join("target/pyenv/bin");
    assert!(
        venv.join("aws").exists(),
        "run scripts/install-test-deps (the test venv)"
    );
    let own = dir.join("bin");
    std::fs::create_dir_all(&own).unwrap();
    let _ = std::os::unix::fs::symlink(sluiced, own.join("sluiced"));
    let path = format!(
        "{}:{}:{}",
        own.display(),
        venv.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("SLUICED", sluiced)
        .env("PATH", path)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("SLUICE_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "script failed ({}):\n{script}\n---\n{text}",
        out.status
    );
    text
}
