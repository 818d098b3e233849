//! The bundled `stdout` record sink: writes each record followed by a newline to the
//! daemon's standard output, one batch per locked write so lines of concurrent pipelines
//! never interleave.

use sluice_plugin_api::{
    declare_library, Batch, Completion, Context, Error, Plugin, Sink, Submitted,
};
use std::io::Write;

/// `stdout` options.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// Text written before each record (e.g. the pipeline's name).
    #[serde(default)]
    pub prefix: String,
}

/// The `stdout` sink.
pub struct Stdout {
    prefix: Vec<u8>,
    buf: Vec<u8>,
}

impl Plugin for Stdout {
    type Config = StdoutConfig;
    fn create(cfg: StdoutConfig, _: &Context) -> Result<Self, Error> {
        Ok(Stdout {
            prefix: cfg.prefix.into_bytes(),
            buf: Vec::new(),
        })
    }
}

impl Sink for Stdout {
    fn submit(&mut self, batch: &Batch<'_>, done: Completion) -> Result<Submitted, Error> {
        self.buf.clear();
        for r in batch.iter() {
            self.buf.extend_from_slice(&self.prefix);
            self.buf.extend_from_slice(r.data);
            self.buf.push(b'\n');
        }
        let mut out = std::io::stdout().lock();
        match out.write_all(&self.buf).and_then(|_| out.flush()) {
            Ok(()) => done.success(),
            // A closed stdout (EPIPE) will not come back: fail the pipeline instead of retrying.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                done.fail(&Error::fatal(format_args!("stdout: {e}")))
            }
            Err(e) => done.fail(&Error::retryable(format_args!("stdout: {e}"))),
        }
        Ok(Submitted::Accepted)
    }
}

declare_library!(
    name: "stdout",
    plugins: [sink("stdout", Stdout, "writes one record per line to standard output")]
);
