//! `@NAME@`: a sluice source plugin, made by `sluiced plugin new`. It emits `count` JSON
//! records `{"n": N, "message": "..."}` and then ends; make it your own.
//!
//! Build with `cargo build --release`, copy `target/release/lib@LIB@.so` into one of the
//! daemon's `plugin_dirs` and reload (`systemctl reload sluiced`). Use it in a pipeline
//! file as `source = { plugin = "@NAME@", count = 100 }`. The guide is sluice's
//! `plugin-api/README.md`.

use sluice_plugin_api::{
    declare_library, Context, Error, Metric, NewRecord, Output, Plugin, Poll, Source,
};

/// The plugin's table from the pipeline file (everything but `plugin`). Unknown keys are
/// refused, and the daemon points at them with file:line:column.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How many records to emit before the source ends.
    #[serde(default = "default_count")]
    pub count: u64,
    /// Text carried by every record.
    #[serde(default)]
    pub message: String,
}

fn default_count() -> u64 {
    10
}

/// One instance per pipeline run; never called concurrently.
pub struct Counter {
    cfg: Config,
    next: u64,
    emitted: Metric,
}

impl Plugin for Counter {
    type Config = Config;

    /// Also runs for `sluiced check`: validate here, but start nothing.
    fn create(cfg: Config, ctx: &Context) -> Result<Self, Error> {
        if cfg.count > 1_000_000_000 {
            return Err(Error::config_field("count", "must be at most 1000000000"));
        }
        // Exported as `sluice_plugin_@METRIC@_records_total{pipeline,plugin}`.
        let emitted = ctx.counter("@METRIC@_records_total", "Records emitted")?;
        Ok(Counter {
            cfg,
            next: 0,
            emitted,
        })
    }
}

impl Source for Counter {
    /// Called only when the pipeline has room; must not block. Push at most the credit.
    fn poll_batch(&mut self, out: &mut Output<'_>) -> Result<Poll, Error> {
        while self.next < self.cfg.count {
            let data = serde_json::json!({ "n": self.next, "message": self.cfg.message }).to_string();
            let key = self.next.to_string();
            let rec = NewRecord {
                data: data.as_bytes(),
                partition_key: key.as_bytes(),
                timestamp_ms: None,
                position: None,
                attrs: &[],
            };
            // false: the credit of this poll is used up and the record was NOT taken —
            // emit it again on the next poll.
            if !out.emit(&rec) {
                return Ok(Poll::Ready);
            }
            self.next += 1;
            self.emitted.record(1.0);
        }
        Ok(Poll::Eof)
    }

    /// The batch of this poll was delivered (or abandoned): a source that can replay
    /// would advance its checkpoint here.
    fn ack(&mut self, _token: u64, _delivered: bool) {}
}

declare_library!(
    name: "@NAME@",
    plugins: [source("@NAME@", Counter, "emits count JSON records, then ends")]
);
