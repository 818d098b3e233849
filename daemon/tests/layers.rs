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
    // Validated runtime specs (what config produces, what everything below reads).
    ("spec", 1),
    // Shard logs and Kinesis semantics.
    ("stream", 2),
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
        // The crate roots and the binaries' own modules (`top.rs` belongs to main.rs)
        // are not layers.
        if ["lib", "main", "bin", "top"].contains(&module.as_str()) {
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
