//! Validated runtime specs: what the configuration means once it is checked — streams,
//! pipelines, their components and delivery settings, with the prefix templates and
//! partitioners compiled. `config` parses and validates files into these; everything
//! below it (supervisor, stream, pipeline, delivery, plugins) reads only these, never the
//! config module. A leaf: it imports nothing of the daemon but `names`.

mod partition;
mod template;
mod units;

pub use partition::{fast_path, Partitioner};
pub use template::{civil, hive_escape, Template, MAX_PREFIX};
pub use units::{ByteSize, HumanDuration};

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Plugin kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Produces records.
    Source,
    /// Maps batches to batches.
    Transform,
    /// Delivers records or objects.
    Sink,
}

/// Kinesis-style per-shard write throttling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WriteLimit {
    /// Bytes of data per second per shard.
    pub bytes_per_sec: Option<u64>,
    /// Records per second per shard.
    pub records_per_sec: Option<u64>,
}

/// Most shards per stream.
pub const MAX_SHARDS: u32 = 1024;

/// When a stream's appends are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fsync {
    /// Group commit before acknowledging.
    Batch,
    /// Never explicitly.
    None,
    /// On a timer.
    Interval(Duration),
}

impl Fsync {
    /// Parses `batch`, `none` or `interval:<duration>`.
    pub fn parse(s: &str) -> Result<Fsync, String> {
        match s {
            "batch" => Ok(Fsync::Batch),
            "none" => Ok(Fsync::None),
            other => match other.strip_prefix("interval:") {
                Some(d) => humantime::parse_duration(d)
                    .map(Fsync::Interval)
                    .map_err(|e| format!("invalid fsync interval `{d}`: {e}")),
                None => Err(format!(
                    "invalid fsync `{other}`: use \"batch\", \"none\" or \"interval:<duration>\""
                )),
            },
        }
    }
}

/// A validated stream from config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamSpec {
    /// Unique name.
    pub name: String,
    /// The file it was defined in.
    pub file: PathBuf,
    /// Number of shards.
    pub shards: u32,
    /// Records older than this are dropped (whole segments).
    pub retention: Duration,
    /// Largest record data accepted.
    pub max_record_size: u64,
    /// Optional cap on bytes per shard log.
    pub max_bytes: Option<u64>,
    /// Durability.
    pub fsync: Fsync,
    /// Optional throttling.
    pub write_limit: Option<WriteLimit>,
}

/// Object compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain bytes.
    None,
    /// gzip (flate2 with the zlib-rs backend).
    Gzip,
    /// zstd.
    Zstd,
    /// Snappy, framed format.
    Snappy,
}

impl Compression {
    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
            Compression::Snappy => ".snappy",
        }
    }
}

/// Firehose-style delivery settings of a pipeline with an object sink.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliverySpec {
    /// `partitioning.query` (jq), if dynamic partitioning is on.
    pub query: Option<String>,
    /// Most open partitions; more go to the error output (`activePartitionExceeded`).
    pub max_active_partitions: u32,
    /// Flush a partition at this many uncompressed bytes.
    pub size: u64,
    /// ... or this long after its first record.
    pub interval: Duration,
    /// Object key prefix template.
    pub prefix: String,
    /// Error output prefix template.
    pub error_prefix: String,
    /// Object compression.
    pub compression: Compression,
    /// Appended after each record.
    pub delimiter: String,
    /// How long retryable sink failures are retried before the object goes to the error
    /// output (`delivery-failed`); `None` retries forever.
    pub retry_duration: Option<Duration>,
}

/// Batching of a record sink (`sink.batch`), owned by the host.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most records per batch handed to the sink.
    #[serde(default = "default_max_records")]
    pub max_records: u32,
    /// Most bytes per batch.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: default_max_records(),
            max_bytes: default_max_bytes(),
        }
    }
}

fn default_max_records() -> u32 {
    500
}
fn default_max_bytes() -> ByteSize {
    ByteSize(5 << 20)
}

/// Largest batch size a pipeline may ask for (bounded memory per in-flight batch).
pub const MAX_BATCH_RECORDS: u32 = 10_000;

/// One validated plugin use inside a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ComponentSpec {
    /// `source`, `transforms[0]`, `sink`.
    pub id: String,
    /// Plugin name.
    pub plugin: String,
    /// Plugin kind.
    pub kind: Kind,
    /// The plugin's own options, as JSON.
    pub config_json: String,
}

/// One validated pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PipelineSpec {
    /// Unique name.
    pub name: String,
    /// The file it was defined in.
    pub file: PathBuf,
    /// The source.
    pub source: ComponentSpec,
    /// Transforms, in order.
    pub transforms: Vec<ComponentSpec>,
    /// The sink.
    pub sink: ComponentSpec,
    /// Host-side batching for record sinks.
    pub batch: BatchConfig,
    /// Split KPL aggregated records before the transforms.
    pub deaggregate: bool,
    /// Partitioning, buffering and naming, for object sinks.
    pub delivery: Option<DeliverySpec>,
}

/// The internal stream behind a `direct-put` pipeline.
pub fn direct_put_stream(pipeline: &str) -> String {
    format!("__firehose-{pipeline}")
}
