//! The plugin author kit end to end (issue #15): for every kind and both languages,
//! `sluiced plugin new` writes a project outside the repository, the project builds the
//! way its README says (`cargo build` / `make`), the library is dropped into a running
//! daemon's `plugin_dirs`, a reload loads it, and a pipeline using it works. The code built
//! here is the code the guide (`plugin-api/README.md`) walks through.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const KINDS: [&str; 4] = ["source", "transform", "sink", "object-sink"];

/// Generates and builds plugin `name`; returns its library.
fn generate_and_build(work: &Path, lang: &str, kind: &str) -> PathBuf {
    let name = format!("my-{lang}-{kind}");
    let dir = work.join(&name);
    let out = Command::new(bin())
        .args([
            "plugin", "new", &name, "--lang", lang, "--kind", kind, "--dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "plugin new: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let lib = format!("lib{}.so", name.replace('-', "_"));
    if lang == "rust" {
        assert!(said.contains("cargo build --release"), "{said}");
        // Built in debug (faster here); one target folder shared by the four projects and
        // kept between runs, so their dependencies are built once.
        let target = root().join("target/plugin-new");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .current_dir(&dir)
            .args(["build", "--quiet"])
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .unwrap();
        assert!(st.success(), "cargo build of the generated {kind} failed");
        target.join("debug").join(lib)
    } else {
        assert!(said.contains("make"), "{said}");
        let out = Command::new("make")
            .current_dir(&dir)
            .output()
            .expect("make (scripts/install-test-deps installs it)");
        assert!(
            out.status.success(),
            "make of the generated {kind} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join(lib)
    }
}

/// The pipeline that shows plugin `name` of `kind` at work.
fn pipeline(name: &str, lang: &str, kind: &str) -> String {
    let p = name.replace('-', "_");
    match kind {
        "source" => format!("[pipelines.{p}]\nsource = {{ plugin = \"{name}\", count = 5, message = \"hi \\\"there\\\"\" }}\nsink = {{ plugin = \"file\", path = \"out/{p}.jsonl\" }}\n"),
        "transform" => {
            let opt = if lang == "rust" { "value = \"v\"" } else { "prefix = \"> \"" };
            format!("[pipelines.{p}]\nsource = {{ plugin = \"generator\", count = 5 }}\nsink = {{ plugin = \"file\", path = \"out/{p}.jsonl\" }}\n\n[[pipelines.{p}.transforms]]\nplugin = \"{name}\"\n{opt}\n")
        }
        "sink" => format!("[pipelines.{p}]\nsource = {{ plugin = \"generator\", count = 5 }}\nsink = {{ plugin = \"{name}\", path = \"out/{p}.jsonl\" }}\n"),
        _ => format!("[pipelines.{p}]\nsource = {{ plugin = \"generator\", count = 5 }}\n\n[pipelines.{p}.partitioning]\nquery = '{{type: .type}}'\n\n[pipelines.{p}.buffer]\ninterval = \"1s\"\n\n[pipelines.{p}.sink]\nplugin = \"{name}\"\ndir = \"out/{p}\"\nprefix = \"type=!{{partitionKeyFromQuery:type}}/\"\n"),
    }
}

#[test]
fn generated_plugins_of_every_kind_build_load_and_work() {
    let work = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(&[]);
    let s = Setup::with_plugin_dir(plugins.path());
    let mut d = s.start();
    d.wait_ready();
    std::fs::create_dir_all(s.path("out")).unwrap();
    for lang in ["rust", "c"] {
        for kind in KINDS {
            let lib = generate_and_build(work.path(), lang, kind);
            install_library(plugins.path(), &lib);
            let name = format!("my-{lang}-{kind}");
            s.write_pipeline(&name, &pipeline(&name, lang, kind));
        }
    }
    let (code, body) = d.post("/admin/reload").unwrap();
    assert_eq!(code, 200, "{body}\n{}", d.stderr());
    let (_, listed, _) = s.cli(&["plugins"]);
    for lang in ["rust", "c"] {
        for kind in KINDS {
            assert!(listed.contains(&format!("my-{lang}-{kind}")), "{listed}");
        }
    }
    let out = |p: &str| lines(&s.path(&format!("out/{p}.jsonl")));
    wait_until(
        Duration::from_secs(60),
        "every generated plugin at work",
        || {
            ["rust", "c"].iter().all(|l| {
                out(&format!("my_{l}_source")).len() == 5
                    && out(&format!("my_{l}_transform")).len() == 5
                    && out(&format!("my_{l}_sink")).len() == 5
                    && object_lines(&s.path(&format!("out/my_{l}_object_sink"))).len() == 5
            })
        },
    );
    for l in ["rust", "c"] {
        for (i, line) in out(&format!("my_{l}_source")).iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(
                (v["n"].as_u64(), v["message"].as_str()),
                (Some(i as u64), Some("hi \"there\"")),
                "{line}"
            );
        }
        for line in out(&format!("my_{l}_sink")) {
            assert!(line.contains("\"specversion\":\"1.0\""), "{line}");
        }
        let objects = files_under(&s.path(&format!("out/my_{l}_object_sink")));
        assert!(
            objects
                .iter()
                .all(|p| p.to_string_lossy().contains("/type=")),
            "{objects:?}"
        );
    }
    for line in out("my_rust_transform") {
        assert!(line.contains("\"tag\":\"v\""), "{line}");
    }
    for line in out("my_c_transform") {
        assert!(line.starts_with("> {"), "{line}");
    }
    d.stop_cleanly();
}

#[test]
fn plugin_new_refuses_bad_names_and_existing_folders() {
    let work = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .current_dir(work.path())
            .output()
            .unwrap()
    };
    let out = run(&["plugin", "new", "Bad_Name", "--lang", "c", "--kind", "sink"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a plugin name"));
    std::fs::create_dir(work.path().join("taken")).unwrap();
    std::fs::write(work.path().join("taken/x"), "mine").unwrap();
    let out = run(&[
        "plugin", "new", "taken", "--lang", "rust", "--kind", "source",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    assert_eq!(
        std::fs::read_to_string(work.path().join("taken/x")).unwrap(),
        "mine"
    );
}
