//! `sluiced plugin new`: writes a buildable plugin project (Rust or C, any kind) from the
//! templates in `plugin-api/templates/`. The project is self-contained — a Rust project
//! vendors the SDK of this very build, a C project gets the ABI header and the JSON helper
//! — so it builds outside the repository, offline apart from crates.io, and speaks the ABI
//! of the daemon that wrote it. The templates are also what the guide
//! (`plugin-api/README.md`) walks through and what the tests build and load.

use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};

/// The language of a new plugin.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Lang {
    /// A Rust crate (`cargo build --release`).
    Rust,
    /// A C file and a Makefile (`make`).
    C,
}

/// The kind of a new plugin.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Kind {
    /// Produces records (polled by the host).
    Source,
    /// Maps record batches to record batches.
    Transform,
    /// Takes record batches.
    Sink,
    /// Takes flushed objects (partitioned, buffered and compressed by the host).
    ObjectSink,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Transform => "transform",
            Kind::Sink => "sink",
            Kind::ObjectSink => "object-sink",
        }
    }
}

const RUST_CARGO: &str = include_str!("../../plugin-api/templates/rust/Cargo.toml");
const RUST_SOURCE: &str = include_str!("../../plugin-api/templates/rust/source.rs");
const RUST_TRANSFORM: &str = include_str!("../../plugin-api/templates/rust/transform.rs");
const RUST_SINK: &str = include_str!("../../plugin-api/templates/rust/sink.rs");
const RUST_OBJECT_SINK: &str = include_str!("../../plugin-api/templates/rust/object-sink.rs");
const C_MAKEFILE: &str = include_str!("../../plugin-api/templates/c/Makefile");
const C_SOURCE: &str = include_str!("../../plugin-api/templates/c/source.c");
const C_TRANSFORM: &str = include_str!("../../plugin-api/templates/c/transform.c");
const C_SINK: &str = include_str!("../../plugin-api/templates/c/sink.c");
const C_OBJECT_SINK: &str = include_str!("../../plugin-api/templates/c/object-sink.c");
const HEADER: &str = include_str!("../../plugin-api/include/sluice_plugin.h");
const JSON_HELPER: &str = include_str!("../../plugin-api/include/sluice_json.h");

/// The SDK's sources, vendored into Rust projects.
const SDK: &[(&str, &str)] = &[
    ("lib.rs", include_str!("../../plugin-api/src/lib.rs")),
    (
        "context.rs",
        include_str!("../../plugin-api/src/context.rs"),
    ),
    ("error.rs", include_str!("../../plugin-api/src/error.rs")),
    (
        "failpoint.rs",
        include_str!("../../plugin-api/src/failpoint.rs"),
    ),
    ("ffi.rs", include_str!("../../plugin-api/src/ffi.rs")),
    ("fs.rs", include_str!("../../plugin-api/src/fs.rs")),
    (
        "library.rs",
        include_str!("../../plugin-api/src/library.rs"),
    ),
    ("record.rs", include_str!("../../plugin-api/src/record.rs")),
    ("tramp.rs", include_str!("../../plugin-api/src/tramp.rs")),
];

/// The vendored SDK's manifest: the SDK's own dependencies, without the workspace.
fn sdk_manifest() -> String {
    format!(
        "[package]\nname = \"sluice-plugin-api\"\nversion = \"{}\"\nedition = \"2021\"\ndescription = \"The sluice plugin ABI and Rust SDK, vendored by `sluiced plugin new`\"\npublish = false\n\n[dependencies]\nserde = {{ version = \"1\", features = [\"derive\"] }}\nserde_json = \"1\"\nserde_path_to_error = \"0.1\"\nlibc = \"0.2\"\n\n[features]\nfailpoints = []\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// A plugin name: what `plugin = "..."` says in pipeline files, the crate or library name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!("`{name}` is not a plugin name: use 1-64 of a-z, 0-9 and `-`, starting with a letter and not ending with `-`");
    }
    Ok(())
}

fn fill(template: &str, name: &str, kind: Kind) -> String {
    let ident = name.replace('-', "_");
    template
        .replace("@NAME@", name)
        .replace("@LIB@", &ident)
        .replace("@METRIC@", &ident)
        .replace("@KIND@", kind.as_str())
}

fn readme(name: &str, lang: Lang, kind: Kind) -> String {
    let lib = format!("lib{}.so", name.replace('-', "_"));
    let (build, built) = match lang {
        Lang::Rust => ("cargo build --release", format!("target/release/{lib}")),
        Lang::C => ("make", lib.clone()),
    };
    let usage = match kind {
        Kind::Source => format!("source = {{ plugin = \"{name}\", count = 100 }}"),
        Kind::Transform => format!(
            "[[pipelines.NAME.transforms]]\nplugin = \"{name}\"\n{}",
            match lang {
                Lang::Rust => "value = \"hello\"",
                Lang::C => "prefix = \"> \"",
            }
        ),
        Kind::Sink => format!("sink = {{ plugin = \"{name}\", path = \"out.jsonl\" }}"),
        Kind::ObjectSink => format!("sink = {{ plugin = \"{name}\", dir = \"lake\" }}"),
    };
    format!(
        "# {name}\n\nA sluice {kind} plugin, made by `sluiced plugin new`.\n\n```sh\n{build}\ninstall -m 0644 {built} /usr/lib/sluice/plugins/   # a folder of `plugin_dirs`\nsystemctl reload sluiced                               # loads new libraries\nsluiced plugins                                        # lists it\n```\n\nIn a pipeline file:\n\n```toml\n{usage}\n```\n\nThe plugin guide (lifecycle, threading, batches and backpressure, completions, errors,\nconfig, metrics and logging, ABI stability) is `plugin-api/README.md` in sluice's\nsources.\n",
        kind = kind.as_str()
    )
}

/// Writes the project for `name` into `dir` (default `./NAME`); returns the folder and
/// the command that builds it.
pub fn new_project(
    name: &str,
    lang: Lang,
    kind: Kind,
    dir: Option<&Path>,
) -> anyhow::Result<(PathBuf, &'static str)> {
    check_name(name)?;
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} exists and is not empty; nothing written", dir.display());
    }
    let mut files: Vec<(PathBuf, String)> =
        vec![(PathBuf::from("README.md"), readme(name, lang, kind))];
    let build = match lang {
        Lang::Rust => {
            let code = match kind {
                Kind::Source => RUST_SOURCE,
                Kind::Transform => RUST_TRANSFORM,
                Kind::Sink => RUST_SINK,
                Kind::ObjectSink => RUST_OBJECT_SINK,
            };
            files.push(("Cargo.toml".into(), fill(RUST_CARGO, name, kind)));
            files.push(("src/lib.rs".into(), fill(code, name, kind)));
            files.push((".gitignore".into(), "/target\n".into()));
            files.push(("sluice-plugin-api/Cargo.toml".into(), sdk_manifest()));
            for (file, text) in SDK {
                files.push((
                    Path::new("sluice-plugin-api/src").join(file),
                    (*text).to_string(),
                ));
            }
            "cargo build --release"
        }
        Lang::C => {
            let code = match kind {
                Kind::Source => C_SOURCE,
                Kind::Transform => C_TRANSFORM,
                Kind::Sink => C_SINK,
                Kind::ObjectSink => C_OBJECT_SINK,
            };
            files.push((format!("{name}.c").into(), fill(code, name, kind)));
            files.push(("Makefile".into(), fill(C_MAKEFILE, name, kind)));
            files.push(("sluice_plugin.h".into(), HEADER.to_string()));
            files.push(("sluice_json.h".into(), JSON_HELPER.to_string()));
            files.push((".gitignore".into(), "*.so\n".into()));
            "make"
        }
    };
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok((dir, build))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "my-plugin", "x9"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "9x", "My", "a_b", "a-", "../x", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_leave_no_placeholder() {
        for t in [
            RUST_CARGO,
            RUST_SOURCE,
            RUST_TRANSFORM,
            RUST_SINK,
            RUST_OBJECT_SINK,
            C_MAKEFILE,
            C_SOURCE,
            C_TRANSFORM,
            C_SINK,
            C_OBJECT_SINK,
        ] {
            let out = fill(t, "my-plugin", Kind::Source);
            for p in ["@NAME@", "@LIB@", "@METRIC@", "@KIND@"] {
                assert!(!out.contains(p), "{p} left in {out}");
            }
        }
    }

    #[test]
    fn a_non_empty_folder_is_never_written_into() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("keep"), "x").unwrap();
        let e = new_project("p", Lang::C, Kind::Sink, Some(tmp.path())).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
