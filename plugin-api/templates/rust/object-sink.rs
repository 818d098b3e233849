//! `@NAME@`: a sluice object-sink plugin, made by `sluiced plugin new`. It stores every
//! flushed object (partitioned, buffered and compressed by the host, as Firehose does)
//! as the file `dir/<key>`, written to a temporary name, synced and renamed, so a reader
//! never sees half an object. Make it your own.
//!
//! Build with `cargo build --release`, copy `target/release/lib@LIB@.so` into one of the
//! daemon's `plugin_dirs` and reload (`systemctl reload sluiced`). Use it in a pipeline
//! file as `sink = { plugin = "@NAME@", dir = "lake" }` (with `prefix`, `partitioning`,
//! `buffer` and `compression` as for `object-store`). The guide is sluice's
//! `plugin-api/README.md`.

use sluice_plugin_api::{
    declare_library, Completion, Context, Error, Object, ObjectSink, Plugin, Submitted,
};
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

/// The plugin's table from the pipeline file (everything but `plugin` and the host's
/// delivery keys such as `prefix` and `compression`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where objects go; relative paths are taken against the daemon config's folder.
    pub dir: PathBuf,
}

/// One instance per pipeline run; never called concurrently.
pub struct DirWriter {
    dir: PathBuf,
}

impl Plugin for DirWriter {
    type Config = Config;
    fn create(cfg: Config, ctx: &Context) -> Result<Self, Error> {
        if cfg.dir.as_os_str().is_empty() {
            return Err(Error::config_field("dir", "must name a folder"));
        }
        Ok(DirWriter {
            dir: ctx.resolve_path(&cfg.dir),
        })
    }
}

/// `key` as a path below `dir`, or `None` if it would leave it.
fn below(dir: &Path, key: &str) -> Option<PathBuf> {
    let rel = Path::new(key);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| dir.join(rel))
}

fn store(path: &Path, object: &Object<'_>) -> std::io::Result<()> {
    let folder = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = folder.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        match object.body_path {
            // A large object is spooled to a file by the host: copy it from there.
            Some(spool) => {
                std::io::copy(&mut std::fs::File::open(spool)?, &mut f)?;
            }
            None => f.write_all(object.body)?,
        }
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(folder)?.sync_all()
}

impl ObjectSink for DirWriter {
    /// One object in flight at a time. Complete `done` exactly once; a retryable failure
    /// is retried by the host with backoff (and after `retry_duration`, the object's
    /// records go to the error output). The object is borrowed for this call only.
    fn submit_object(&mut self, object: &Object<'_>, done: Completion) -> Result<Submitted, Error> {
        let Some(path) = below(&self.dir, object.key) else {
            done.fail(&Error::fatal(format_args!("object key {} leaves {}", object.key, self.dir.display())));
            return Ok(Submitted::Accepted);
        };
        match store(&path, object) {
            Ok(()) => done.success(),
            Err(e) => done.fail(&Error::retryable(format_args!("writing {}: {e}", path.display()))),
        }
        Ok(Submitted::Accepted)
    }
}

declare_library!(
    name: "@NAME@",
    plugins: [object_sink("@NAME@", DirWriter, "stores each flushed object as a file below dir")]
);
