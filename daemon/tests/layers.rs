//! The daemon's import graph (issue #11): every module of `daemon/src` may import only
//! modules of a lower layer, so the graph has no cycles and flows config → supervisor →
//! pipeline → stream, with plugins and telemetry beside. A forbidden `use crate::…` (or a
//! `crate::…` path anywhere in the code) fails this test with the file and line.
#![allow(clippy::unwrap_used)]

mod common;
use std::collections::BTreeMap;
use std::path::Path;

/// The layers, lowest first. A module may import its own layer's code only inside itself.
const LAYERS: &[(&str, u32)] = &[
    // Leaves: no daemon imports at all.
    ("names", 0),
    ("record", 0),
    ("http", 0),
    ("sdnotify", 0),
    ("watch", 0),
    // Real servers for tests (unit tests only).
    ("testing", 0),
    // Validated runtime specs (what config produces, what everything below reads).
    ("spec", 1),
    // Shard logs and Kinesis semantics.
    ("stream", 2),
    // SigV4 signing (the CLI's client, the `kinesis` source).
    ("sigv4", 2),
    // The plugin host (the bundled `stream` plugins read streams).
    ("plugins", 3),
    // Firehose delivery for object sinks.
    ("delivery", 4),
    // One pipeline's stages; the data API.
    ("pipeline", 5),
    ("api", 5),
    // Running pipelines by name.
    ("supervisor", 6),
    // Parsing and validating files into specs.
    ("config", 7),
    // Observers and the CLI's client.
    ("telemetry", 8),
    ("client", 8),
    // The daemon's main loop: wires everything.
    ("daemon", 9),
];

fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .to_string();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn imports_only_go_down_the_layers() {
    let src = common::root().join("daemon/src");
    let rank: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let mut violations = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for file in common::files_under(&src) {
        let rel = file.strip_prefix(&src).unwrap();
        if file.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let module = module_of(rel);
        // The crate roots and the binary's own modules (`top.rs`, `scaffold.rs` belong to main.rs)
        // are not layers.
        if ["lib", "main", "bin", "top", "scaffold"].contains(&module.as_str()) {
            continue;
        }
        let Some(&mine) = rank.get(module.as_str()) else {
            violations.push(format!(
                "{}: module `{module}` has no layer in tests/layers.rs",
                rel.display()
            ));
            continue;
        };
        seen.insert(module.clone());
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let dep: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if dep.is_empty() || dep == module {
                    continue;
                }
                match rank.get(dep.as_str()) {
                    Some(&theirs) if theirs < mine => {}
                    Some(&theirs) => violations.push(format!(
                        "{}:{}: `{module}` (layer {mine}) imports `{dep}` (layer {theirs}): {}",
                        rel.display(),
                        n + 1,
                        line.trim()
                    )),
                    None => violations.push(format!(
                        "{}:{}: `{module}` imports `{dep}`, which has no layer",
                        rel.display(),
                        n + 1
                    )),
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "forbidden imports:\n{}",
        violations.join("\n")
    );
    // Every layer named here exists (the list does not rot).
    for (m, _) in LAYERS {
        assert!(seen.contains(*m), "layer `{m}` has no module in daemon/src");
    }
}

/// Library code reports errors as typed values (thiserror enums), never `Result<_, String>`,
/// and carries no runtime services in statics: only the documented process-wide state the
/// C ABI needs (the instance handle table and plugin metric families, whose callbacks carry
/// nothing else) and the delivery chunk pools (an allocation cache). Binary-only modules
/// (`main.rs`, `top.rs`, `bin/`) are edges and may use plain messages.
#[test]
fn library_code_has_typed_errors_and_no_hidden_services() {
    let root = common::root();
    let allowed_statics = [
        "daemon/src/plugins/host.rs: HANDLES",
        "daemon/src/plugins/host.rs: FAMILIES",
        "daemon/src/plugins/host.rs: CHILDREN",
        "daemon/src/plugins/host.rs: CHILD_INDEX",
        "daemon/src/plugins/host.rs: HOST_API",
        "daemon/src/delivery/chunks.rs: POOL",
        "daemon/src/delivery/chunks.rs: POOL_FIRST",
        // The fuzz target's runtime (api::fuzzing), not the daemon's.
        "daemon/src/api/mod.rs: ENV",
        // Failpoints armed from the environment (test builds only).
        "plugin-api/src/failpoint.rs: POINTS",
    ];
    let mut bad = Vec::new();
    let mut dirs = vec![
        root.join("daemon/src"),
        root.join("plugin-api/src"),
        root.join("query/src"),
    ];
    for e in std::fs::read_dir(root.join("plugins")).unwrap() {
        let p = e.unwrap().path().join("src");
        if p.is_dir() {
            dirs.push(p);
        }
    }
    for dir in dirs {
        for f in common::files_under(&dir) {
            let rel = f
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if !rel.ends_with(".rs")
                || rel.ends_with("daemon/src/main.rs")
                || rel.ends_with("daemon/src/top.rs")
                || rel.contains("daemon/src/bin/")
            {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            // Code before the unit tests only.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for (n, line) in code.lines().enumerate() {
                let l = line.trim_start();
                if l.starts_with("//") {
                    continue;
                }
                let squashed: String = l.split_whitespace().collect();
                if squashed.contains(",String>") && squashed.contains("Result<") {
                    bad.push(format!("{rel}:{}: stringly error: {l}", n + 1));
                }
                if let Some(rest) = l
                    .strip_prefix("static ")
                    .or_else(|| l.strip_prefix("pub static "))
                    .or_else(|| l.strip_prefix("pub(crate) static "))
                {
                    let name = rest
                        .trim_start_matches("mut ")
                        .split(':')
                        .next()
                        .unwrap_or("");
                    let entry = format!("{rel}: {}", name.trim());
                    // The SDK's and plugins' static descriptors are immutable data.
                    let descriptor = rest.contains("Library") || rest.contains("PluginDef");
                    if !descriptor && !allowed_statics.contains(&entry.as_str()) {
                        bad.push(format!("{rel}:{}: process-wide state: {l}", n + 1));
                    }
                } else if l.contains("lazy_static!") || l.contains("thread_local!") {
                    bad.push(format!("{rel}:{}: hidden global: {l}", n + 1));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// API handlers read typed request shapes (`api/shapes.rs`), never JSON paths: the only
/// code that looks into a request's JSON is the shapes' reader.
#[test]
fn api_handlers_read_typed_shapes() {
    let root = common::root();
    let mut bad = Vec::new();
    for f in ["kinesis.rs", "manage.rs", "firehose.rs"] {
        let path = root.join("daemon/src/api").join(f);
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for needle in ["req.get(", "req[\"", ".as_object()", "opt_str(", "opt_int("] {
                if line.contains(needle) {
                    bad.push(format!("api/{f}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "handlers reading JSON paths:\n{}",
        bad.join("\n")
    );
}

/// The query engine (DataFusion) is the `sluice-query` program's: the daemon's package
/// neither depends on it nor names it, so the daemon never links it.
#[test]
fn the_daemon_never_links_the_query_engine() {
    let root = common::root();
    let manifest = std::fs::read_to_string(root.join("daemon/Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("sluice-query") && !manifest.contains("datafusion"),
        "daemon/Cargo.toml depends on the query engine"
    );
    let src = root.join("daemon/src");
    let mut users = Vec::new();
    for f in common::files_under(&src) {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        if rel.ends_with(".rs") && (text.contains("sluice_query") || text.contains("datafusion")) {
            users.push(rel);
        }
    }
    assert!(
        users.is_empty(),
        "the query engine named in the daemon: {users:?}"
    );
}
