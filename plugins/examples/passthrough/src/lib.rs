//! Example third-party plugin library, loaded as a `.so` in tests and benchmarks.
//!
//! - `passthrough` (transform): outputs every input unchanged, the way any real transform
//!   copies through the host's builder — the baseline for measuring ABI overhead.
//! - `chaos` (transform): passes records through but panics (or fails) on records that
//!   contain a marker string, to show that a faulty plugin only fails its own pipeline.
//!
//! Build the `.so` with `cargo build -p sluice-example-passthrough --features dylib`.

use sluice_plugin_api::{
    declare_library, Batch, Context, Error, Metric, Output, Plugin, Transform,
};

/// `passthrough` takes no options.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassthroughConfig {}

/// Passes every record through unchanged, counting batches in a plugin metric
/// (`sluice_plugin_passthrough_batches_total`) to show the host metrics API.
#[derive(Default)]
pub struct Passthrough {
    batches: Option<Metric>,
}

impl Passthrough {
    /// An instance without metrics (for direct calls in benchmarks).
    pub fn new() -> Self {
        Passthrough { batches: None }
    }
}

impl Plugin for Passthrough {
    type Config = PassthroughConfig;
    fn create(_: PassthroughConfig, ctx: &Context) -> Result<Self, Error> {
        let batches = ctx.counter("passthrough_batches", "batches passed through")?;
        Ok(Passthrough {
            batches: Some(batches),
        })
    }
}

impl Transform for Passthrough {
    fn transform(&mut self, input: &Batch<'_>, out: &mut Output<'_>) -> Result<(), Error> {
        for i in 0..input.len() {
            out.keep(i);
        }
        if let Some(m) = &self.batches {
            m.record(1.0);
        }
        Ok(())
    }
}

/// `chaos` options.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosConfig {
    /// Panic when a record contains this string.
    #[serde(default)]
    pub panic_on: Option<String>,
    /// Return a fatal error when a record contains this string.
    #[serde(default)]
    pub fail_on: Option<String>,
}

/// Passes records through, panicking or failing on marked ones.
pub struct Chaos {
    panic_on: Option<Vec<u8>>,
    fail_on: Option<Vec<u8>>,
}

impl Plugin for Chaos {
    type Config = ChaosConfig;
    fn create(cfg: ChaosConfig, _: &Context) -> Result<Self, Error> {
        if cfg.panic_on.as_deref() == Some("") {
            return Err(Error::config_field("panic_on", "must not be empty"));
        }
        Ok(Chaos {
            panic_on: cfg.panic_on.map(String::into_bytes),
            fail_on: cfg.fail_on.map(String::into_bytes),
        })
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

impl Transform for Chaos {
    fn transform(&mut self, input: &Batch<'_>, out: &mut Output<'_>) -> Result<(), Error> {
        for (i, r) in input.iter().enumerate() {
            if let Some(p) = &self.panic_on {
                if contains(r.data, p) {
                    panic!("chaos: record {} contains the panic marker", r.sequence);
                }
            }
            if let Some(f) = &self.fail_on {
                if contains(r.data, f) {
                    return Err(Error::fatal(format_args!(
                        "chaos: record {} contains the fail marker",
                        r.sequence
                    )));
                }
            }
            out.keep(i);
        }
        Ok(())
    }
}

declare_library!(
    name: "example-passthrough",
    plugins: [
        transform("passthrough", Passthrough, "outputs every record unchanged"),
        transform("chaos", Chaos, "passes records through; panics or fails on marked records"),
    ]
);
