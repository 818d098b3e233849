//! `@NAME@`: a sluice transform plugin, made by `sluiced plugin new`. It sets the member
//! `field` of every JSON object record to `value`; records that are not JSON objects go to
//! the pipeline's error output (`processing-failed`). Make it your own.
//!
//! Build with `cargo build --release`, copy `target/release/lib@LIB@.so` into one of the
//! daemon's `plugin_dirs` and reload (`systemctl reload sluiced`). Use it in a pipeline
//! file as `[[pipelines.NAME.transforms]]` with `plugin = "@NAME@"` and `value = "..."`.
//! The guide is sluice's `plugin-api/README.md`.

use sluice_plugin_api::{
    declare_library, Batch, Context, Error, Metric, NewRecord, Output, Plugin, Transform,
};

/// The plugin's table from the pipeline file (everything but `plugin`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The member to set.
    #[serde(default = "default_field")]
    pub field: String,
    /// Its value (required).
    pub value: String,
}

fn default_field() -> String {
    "tag".into()
}

/// One instance per pipeline run; never called concurrently.
pub struct Tagger {
    cfg: Config,
    tagged: Metric,
}

impl Plugin for Tagger {
    type Config = Config;
    fn create(cfg: Config, ctx: &Context) -> Result<Self, Error> {
        if cfg.field.is_empty() {
            return Err(Error::config_field("field", "must not be empty"));
        }
        let tagged = ctx.counter("@METRIC@_tagged_total", "Records tagged")?;
        Ok(Tagger { cfg, tagged })
    }
}

impl Transform for Tagger {
    /// CPU-bound work on a host worker thread. Every input ends as pushed (0..n outputs),
    /// kept, or rejected; an `Err` fails the whole batch (the host then isolates the
    /// record that fails by splitting the batch).
    fn transform(&mut self, input: &Batch<'_>, out: &mut Output<'_>) -> Result<(), Error> {
        for (i, r) in input.iter().enumerate() {
            match serde_json::from_slice::<serde_json::Value>(r.data) {
                Ok(serde_json::Value::Object(mut m)) => {
                    m.insert(self.cfg.field.clone(), self.cfg.value.clone().into());
                    let data = serde_json::to_vec(&m).map_err(Error::fatal)?;
                    // The host copies the record before push returns. Transforms have no
                    // credit limit, so push only fails if the host is broken.
                    let rec = NewRecord {
                        data: &data,
                        ..r.to_new()
                    };
                    if !out.push(i, &rec) {
                        return Err(Error::fatal("the host refused an output record"));
                    }
                    self.tagged.record(1.0);
                }
                _ => out.reject(i, "not a JSON object"),
            }
        }
        Ok(())
    }
}

declare_library!(
    name: "@NAME@",
    plugins: [transform("@NAME@", Tagger, "sets a member of every JSON object record")]
);
