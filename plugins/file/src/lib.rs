//! The bundled `file` record sink: appends each record and a newline to a file, syncing
//! the data before a batch is reported delivered (so a checkpoint never runs ahead of it).

use sluice_plugin_api::{
    declare_library, Batch, Completion, Context, Error, Plugin, Sink, Submitted,
};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

/// `file` options.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file to append to (relative paths resolve against the daemon config's folder).
    pub path: PathBuf,
    /// fdatasync after each batch (default true).
    #[serde(default = "yes")]
    pub sync: bool,
}

fn yes() -> bool {
    true
}

/// The `file` sink.
pub struct FileSink {
    cfg: FileConfig,
    file: Option<File>,
    buf: Vec<u8>,
}

impl Plugin for FileSink {
    type Config = FileConfig;
    fn create(mut cfg: FileConfig, ctx: &Context) -> Result<Self, Error> {
        if cfg.path.as_os_str().is_empty() {
            return Err(Error::config_field("path", "must not be empty"));
        }
        cfg.path = ctx.resolve_path(&cfg.path);
        Ok(FileSink {
            cfg,
            file: None,
            buf: Vec::new(),
        })
    }

    fn start(&mut self) -> Result<(), Error> {
        if let Some(dir) = self.cfg.path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::fatal(format_args!("cannot create {}: {e}", dir.display()))
                })?;
            }
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.cfg.path)
            .map_err(|e| {
                Error::fatal(format_args!("cannot open {}: {e}", self.cfg.path.display()))
            })?;
        self.file = Some(f);
        Ok(())
    }
}

impl Sink for FileSink {
    fn submit(&mut self, batch: &Batch<'_>, done: Completion) -> Result<Submitted, Error> {
        let Some(f) = self.file.as_mut() else {
            return Err(Error::fatal("file sink not started"));
        };
        self.buf.clear();
        for r in batch.iter() {
            self.buf.extend_from_slice(r.data);
            self.buf.push(b'\n');
        }
        let res =
            f.write_all(&self.buf)
                .and_then(|_| if self.cfg.sync { f.sync_data() } else { Ok(()) });
        match res {
            Ok(()) => done.success(),
            Err(e) => done.fail(&Error::retryable(format_args!(
                "{}: {e}",
                self.cfg.path.display()
            ))),
        }
        Ok(Submitted::Accepted)
    }
}

declare_library!(
    name: "file",
    plugins: [sink("file", FileSink, "appends one record per line to a file")]
);
