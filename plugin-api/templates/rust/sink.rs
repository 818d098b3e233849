//! `@NAME@`: a sluice record-sink plugin, made by `sluiced plugin new`. It appends every
//! record, one per line, to the file `path` and syncs it before completing the batch.
//! Make it your own.
//!
//! Build with `cargo build --release`, copy `target/release/lib@LIB@.so` into one of the
//! daemon's `plugin_dirs` and reload (`systemctl reload sluiced`). Use it in a pipeline
//! file as `sink = { plugin = "@NAME@", path = "out.jsonl" }`. The guide is sluice's
//! `plugin-api/README.md`.

use sluice_plugin_api::{
    declare_library, Batch, Completion, Context, Error, Plugin, Sink, Submitted,
};
use std::io::Write as _;

/// The plugin's table from the pipeline file (everything but `plugin`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file to append to; relative paths are taken against the daemon config's folder.
    pub path: std::path::PathBuf,
}

/// One instance per pipeline run; never called concurrently.
pub struct Appender {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
}

impl Plugin for Appender {
    type Config = Config;
    fn create(cfg: Config, ctx: &Context) -> Result<Self, Error> {
        if cfg.path.as_os_str().is_empty() {
            return Err(Error::config_field("path", "must name a file"));
        }
        Ok(Appender {
            path: ctx.resolve_path(&cfg.path),
            file: None,
        })
    }

    /// Opens the file: `create` also runs for `sluiced check`, which must touch nothing.
    fn start(&mut self) -> Result<(), Error> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::fatal(format_args!("cannot open {}: {e}", self.path.display())))?;
        self.file = Some(file);
        Ok(())
    }
}

impl Sink for Appender {
    /// One batch in flight at a time. Complete `done` exactly once — here, or later from
    /// another thread — with success, a partial failure (the indexes to resubmit) or a
    /// failure; a retryable one is retried by the host with backoff. The batch's records
    /// are borrowed for this call only.
    fn submit(&mut self, batch: &Batch<'_>, done: Completion) -> Result<Submitted, Error> {
        let Some(file) = self.file.as_mut() else {
            return Err(Error::fatal("not started"));
        };
        let mut buf = Vec::new();
        for r in batch.iter() {
            buf.extend_from_slice(r.data);
            buf.push(b'\n');
        }
        match file.write_all(&buf).and_then(|()| file.sync_data()) {
            Ok(()) => done.success(),
            Err(e) => done.fail(&Error::retryable(format_args!(
                "writing {}: {e}",
                self.path.display()
            ))),
        }
        Ok(Submitted::Accepted)
    }
}

declare_library!(
    name: "@NAME@",
    plugins: [sink("@NAME@", Appender, "appends records, one per line, to a file")]
);
