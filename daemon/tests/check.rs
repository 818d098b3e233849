//! `sluiced check`: exit 0 on the bundled config; exit 1 with file:line:column and a clear
//! message for each kind of config error.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

/// `file:line:column` of the first occurrence of `needle` in `text`.
fn at(file: &std::path::Path, text: &str, needle: &str) -> String {
    let off = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in fixture"));
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    format!("{}:{line}:{col}:", file.display())
}

/// Runs `check` on a single pipeline file and returns (exit code, stderr, file path).
fn check_one(body: &str) -> (i32, String, std::path::PathBuf) {
    let s = Setup::new("", &[("p", body)]);
    let (code, _out, err) = s.cli(&["check"]);
    let file = s.path("pipelines").join("p.toml");
    std::mem::forget(s.dir); // keep the path valid for the message comparison
    (code, err, file)
}

fn assert_error(body: &str, needle: &str, message: &[&str]) {
    let (code, err, file) = check_one(body);
    assert_eq!(code, 1, "check should fail:\n{err}");
    let loc = at(&file, body, needle);
    assert!(err.contains(&loc), "expected location {loc} in:\n{err}");
    for m in message {
        assert!(err.contains(m), "expected {m:?} in:\n{err}");
    }
}

/// The bundled config and the single-machine cluster walkthrough's node configs (README)
/// are valid.
#[test]
fn bundled_config_is_valid() {
    for config in [
        "etc/sluice/sluiced.toml",
        "etc/cluster/node-a/sluiced.toml",
        "etc/cluster/node-b/sluiced.toml",
    ] {
        let out = std::process::Command::new(bin())
            .args(["check", "--config", config])
            .current_dir(root())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{config}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn unknown_key() {
    let body =
        "[pipelines.p]\nsource = { plugin = \"generator\" }\nsinkk = { plugin = \"stdout\" }\n";
    assert_error(body, "sinkk", &["unknown field `sinkk`"]);
}

#[test]
fn unknown_key_in_daemon_file() {
    let s = Setup::new("buffer_memroy = \"1GiB\"", &[]);
    let (code, _, err) = s.cli(&["check"]);
    assert_eq!(code, 1);
    let text = std::fs::read_to_string(&s.config).unwrap();
    assert!(
        err.contains(&at(&s.config, &text, "buffer_memroy")),
        "{err}"
    );
    assert!(err.contains("unknown field `buffer_memroy`"), "{err}");
}

#[test]
fn wrong_type() {
    let body = "[pipelines.p]\nsource = { plugin = \"generator\" }\ntransforms = \"jq\"\nsink = { plugin = \"stdout\" }\n";
    assert_error(
        body,
        "\"jq\"",
        &["invalid type: string \"jq\", expected a sequence"],
    );
}

#[test]
fn wrong_type_in_plugin_options() {
    let body = "[pipelines.p]\nsource = { plugin = \"generator\", rate = \"fast\" }\nsink = { plugin = \"stdout\" }\n";
    assert_error(
        body,
        "rate",
        &["source (plugin `generator`): rate: invalid type: string \"fast\""],
    );
}

#[test]
fn unknown_plugin_lists_available_ones() {
    let body =
        "[pipelines.p]\nsource = { plugin = \"generatr\" }\nsink = { plugin = \"stdout\" }\n";
    assert_error(
        body,
        "plugin = \"generatr\"",
        &["unknown source plugin `generatr` (available: direct-put, generator, http, kinesis, stream)"],
    );
    let body = "[pipelines.p]\nsource = { plugin = \"generator\" }\nsink = { plugin = \"jq\" }\n";
    assert_error(
        body,
        "plugin = \"jq\"",
        &[
            "unknown sink plugin `jq` (available: file, http, object-store, stdout, stream)",
            "`jq` is a transform plugin",
        ],
    );
}

#[test]
fn invalid_jq_program_carries_jaqs_message() {
    let body = "[pipelines.p]\nsource = { plugin = \"generator\" }\n\n[[pipelines.p.transforms]]\nplugin = \"jq\"\nfilter = '{type, '\n\n[pipelines.p.sink]\nplugin = \"stdout\"\n";
    assert_error(
        body,
        "filter",
        &["transforms[0] (plugin `jq`): filter: invalid jq program: expected"],
    );
    let body = "[pipelines.p]\nsource = { plugin = \"generator\" }\n\n[[pipelines.p.transforms]]\nplugin = \"jq\"\nfilter = 'nosuchfn(1)'\n\n[pipelines.p.sink]\nplugin = \"stdout\"\n";
    assert_error(body, "filter", &["undefined filter `nosuchfn`"]);
}

#[test]
fn invalid_plugin_config() {
    let body = "[pipelines.p]\nsource = { plugin = \"generator\" }\nsink = { plugin = \"stdout\", prefixx = \"> \" }\n";
    assert_error(
        body,
        "prefixx",
        &["sink (plugin `stdout`): prefixx: unknown field `prefixx`, expected `prefix`"],
    );
    let body = "[pipelines.p]\nsource = { plugin = \"generator\", rate = -1 }\nsink = { plugin = \"stdout\" }\n";
    assert_error(body, "rate", &["rate: must be a positive number"]);
    let body = "[pipelines.p]\nsource = { plugin = \"generator\", template = \"${nope}\" }\nsink = { plugin = \"stdout\" }\n";
    assert_error(body, "template", &["unknown placeholder `${nope}`"]);
}

#[test]
fn missing_required_key_points_at_its_table() {
    let body = "[pipelines.p]\nsource = { plugin = \"generator\" }\n";
    assert_error(body, "[pipelines.p]", &["missing field `sink`"]);
}

#[test]
fn duplicate_pipeline_names_across_files() {
    let body =
        "[pipelines.p]\nsource = { plugin = \"generator\" }\nsink = { plugin = \"stdout\" }\n";
    let s = Setup::new("", &[("a", body), ("b", body)]);
    let (code, _, err) = s.cli(&["check"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("b.toml:1:12: pipeline `p` is already defined in"),
        "{err}"
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let s = Setup::new(
        "",
        &[
            ("a", "[pipelines.a]\nsource = { plugin = \"nope\" }\nsink = { plugin = \"stdout\" }\n"),
            ("b", "[pipelines.b]\nsource = { plugin = \"generator\" }\nsink = { plugin = \"nope\" }\n"),
        ],
    );
    let (code, _, err) = s.cli(&["check"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("a.toml:2:12:") && err.contains("b.toml:3:10:"),
        "{err}"
    );
}

#[test]
fn run_refuses_an_invalid_config_with_the_same_message() {
    let body =
        "[pipelines.p]\nsource = { plugin = \"generator\" }\nsinkk = { plugin = \"stdout\" }\n";
    let s = Setup::new("", &[("p", body)]);
    let (code, _, err) = s.cli(&["run"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("p.toml:3:1:") && err.contains("unknown field `sinkk`"),
        "{err}"
    );
}

#[test]
fn stream_settings_are_validated() {
    assert_error(
        "[streams.e]\nshards = 0\n",
        "shards",
        &["shards must be between 1 and 1024"],
    );
    assert_error(
        "[streams.e]\nshards = 1\nfsync = \"sometimes\"\n",
        "fsync",
        &["invalid fsync `sometimes`"],
    );
    assert_error(
        "[streams.e]\nshards = 1\nretention = \"forever\"\n",
        "\"forever\"",
        &["invalid duration `forever`"],
    );
    assert_error(
        "[streams.e]\nshards = 1\nwrite_limit = { bytes_per_shard = \"1MiB\" }\n",
        "bytes_per_shard",
        &["must be a rate like \"1MiB/s\""],
    );
}

#[test]
fn compression_levels_are_checked_per_format() {
    let sink = |extra: &str| {
        format!("[pipelines.p]\nsource = {{ plugin = \"generator\" }}\n\n[pipelines.p.sink]\nplugin = \"object-store\"\nurl = \"lake\"\n{extra}\n")
    };
    assert_error(
        &sink("compression = \"gzip\"\ncompression_level = 12"),
        "compression_level",
        &["compression_level: gzip takes 0-9, not 12"],
    );
    assert_error(
        &sink("compression = \"snappy\"\ncompression_level = 3"),
        "compression_level",
        &["`snappy` has no levels"],
    );
    assert_error(
        &sink("compression_level = 3"),
        "compression_level",
        &["`none` has no levels"],
    );
    let (code, err, _) = check_one(&sink("compression = \"zstd\"\ncompression_level = 19"));
    assert_eq!(code, 0, "{err}");
}

/// The object-store sink's writer count is bounded, and a bad one names its line.
#[test]
fn object_store_concurrency_is_bounded() {
    let sink = |extra: &str| {
        format!("[pipelines.p]\nsource = {{ plugin = \"generator\" }}\n\n[pipelines.p.sink]\nplugin = \"object-store\"\nurl = \"lake\"\n{extra}\n")
    };
    for bad in ["concurrency = 0", "concurrency = 65"] {
        assert_error(
            &sink(bad),
            "concurrency",
            &["concurrency must be between 1 and 64"],
        );
    }
    for good in ["concurrency = 1", "concurrency = 64"] {
        let (code, err, _) = check_one(&sink(good));
        assert_eq!(code, 0, "{good}: {err}");
    }
}

/// Into an object sink the `stream` source's checkpoint interval is bounded the same way
/// (a checkpoint written later than the intent log keeps an object's entry would deliver
/// its records twice after a crash); into a record sink it is not.
#[test]
fn stream_source_checkpoint_interval_is_bounded_into_object_sinks() {
    let body = |option: &str, sink: &str| {
        format!(
            "[pipelines.p]\nsource = {{ plugin = \"stream\", stream = \"s\", {option} }}\n\n[pipelines.p.sink]\n{sink}\n"
        )
    };
    let objects = "plugin = \"object-store\"\nurl = \"lake\"";
    assert_error(
        &body("checkpoint_interval = \"11s\"", objects),
        "checkpoint_interval",
        &["checkpoint_interval must be at most 10s when the sink writes objects"],
    );
    for (option, sink) in [
        ("checkpoint_interval = \"10s\"", objects),
        ("checkpoint_interval = \"1h\"", "plugin = \"stdout\""),
    ] {
        let (code, err, _) = check_one(&body(option, sink));
        assert_eq!(code, 0, "{option} {sink}: {err}");
    }
}

/// The `kinesis` source's options: a checkpoint interval past what its exactly-once
/// replay allows is refused at its key.
#[test]
fn kinesis_source_options_are_checked() {
    for (option, needle, message) in [
        (
            "checkpoint_interval = \"1m\"",
            "checkpoint_interval",
            "must be at most 10s",
        ),
        (
            "poll_interval = \"10ms\"",
            "poll_interval",
            "at least 200ms",
        ),
        ("batch_size = 0", "batch_size", "between 1 and 10000"),
    ] {
        let body = format!(
            "[pipelines.k]\nsource = {{ plugin = \"kinesis\", stream = \"s\", endpoint = \"http://127.0.0.1:9\", {option} }}\nsink = {{ plugin = \"stdout\" }}\n"
        );
        assert_error(&body, needle, &[message]);
    }
}
