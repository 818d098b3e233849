//! `sluice-plugin-api`: the stable C ABI of sluice plugins and a safe Rust SDK over it.
//!
//! The normative ABI is `include/sluice_plugin.h`; [`ffi`] is its `#[repr(C)]` mirror. Rust
//! plugin authors implement [`Source`], [`Transform`], [`Sink`] or [`ObjectSink`] on a type
//! with a typed, `serde`-deserialised config and list it in [`declare_library!`]. The macro
//! emits a static [`Library`] descriptor (which the daemon registers for bundled plugins)
//! and, with the plugin crate's `dylib` feature, the exported `sl_plugin_library_v1` symbol
//! for a `.so` — the same descriptor, vtables and trampolines either way.
//!
//! Every call into plugin code runs inside `catch_unwind`: a panic becomes
//! [`ffi::SL_ERR_PANIC`] and poisons the instance, so later calls fail without touching it.
//!
//! ```ignore
//! use sluice_plugin_api::*;
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! pub struct Config {}
//! pub struct Upper;
//! impl Plugin for Upper {
//!     type Config = Config;
//!     fn create(_: Config, _: &Context) -> Result<Self, Error> { Ok(Upper) }
//! }
//! impl Transform for Upper {
//!     fn transform(&mut self, input: &Batch<'_>, out: &mut Output<'_>) -> Result<(), Error> {
//!         for (i, r) in input.iter().enumerate() {
//!             out.push(i, &NewRecord { data: &r.data.to_ascii_uppercase(), ..r.to_new() });
//!         }
//!         Ok(())
//!     }
//! }
//! declare_library!(name: "upper", plugins: [transform("upper", Upper, "upper-cases records")]);
//! ```

pub mod ffi;

mod context;
mod error;
mod failpoint;
pub mod fs;
mod library;
mod record;
#[doc(hidden)]
pub mod tramp;

pub use context::{Completion, Context, Level, Metric, MetricFamily, MetricKind, Notifier};
pub use error::{read_error, Error, ErrorKind};
pub use failpoint::failpoint;
pub use library::{Library, PluginDef};
pub use record::{Batch, NewRecord, Object, Output, Position, Record};
pub use serde;

use std::time::Duration;

/// Version of this SDK, reported in a library's build info.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What every plugin has: a typed config and a lifecycle.
///
/// `create` must not start threads or do I/O beyond validating: `sluiced check` calls it
/// to validate a config and destroys the instance without starting it.
pub trait Plugin: Send + Sized + 'static {
    /// The plugin's own table from the pipeline file (everything but `plugin`), as JSON.
    /// Use `#[serde(deny_unknown_fields)]` so typos are refused.
    type Config: serde::de::DeserializeOwned;
    /// Validates the config and builds the instance.
    fn create(config: Self::Config, ctx: &Context) -> Result<Self, Error>;
    /// Starts background work (threads, connections). May block.
    fn start(&mut self) -> Result<(), Error> {
        Ok(())
    }
    /// Stops background work, within `deadline`. May block.
    fn stop(&mut self, _deadline: Duration) -> Result<(), Error> {
        Ok(())
    }
}

/// Result of [`Source::poll_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Records were pushed (possibly none).
    Ready,
    /// Nothing now: call [`Notifier::notify`] when there is, or set a poll delay.
    Pending,
    /// No more records, ever.
    Eof,
}

/// A source of records. Polled by the host only when downstream has room.
pub trait Source: Plugin {
    /// Pushes at most `out.credit_records()` records. Must not block.
    fn poll_batch(&mut self, out: &mut Output<'_>) -> Result<Poll, Error>;
    /// The batch polled with `token` was delivered (`delivered`) or abandoned.
    fn ack(&mut self, _token: u64, _delivered: bool) {}
}

/// Maps a batch to a batch: records may be dropped, split, rejected or given keys.
pub trait Transform: Plugin {
    /// Pushes outputs to `out`, naming the input index each derives from.
    fn transform(&mut self, input: &Batch<'_>, out: &mut Output<'_>) -> Result<(), Error>;
}

/// Outcome of a submit call.
pub enum Submitted {
    /// Accepted; `done` will be (or was) completed.
    Accepted,
    /// No room now: the completion is handed back; call [`Notifier::notify`] when there is.
    Full(Completion),
}

/// A sink that takes record batches (stdout, file, stream, brokers).
pub trait Sink: Plugin {
    /// Takes a batch. The records are borrowed for the call only: copy what outlives it.
    fn submit(&mut self, batch: &Batch<'_>, done: Completion) -> Result<Submitted, Error>;
}

/// A sink that takes flushed, encoded objects (object stores, HTTP endpoints).
pub trait ObjectSink: Plugin {
    /// Takes an object. Its body is borrowed for the call only: copy what outlives it.
    fn submit_object(&mut self, object: &Object<'_>, done: Completion) -> Result<Submitted, Error>;
}
