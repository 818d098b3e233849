//! Validated runtime specs: what the configuration means once it is checked — streams,
//! pipelines, their components and delivery settings, with the prefix templates and
//! partitioners compiled. `config` parses and validates files into these; everything
//! below it (supervisor, stream, pipeline, delivery, plugins) reads only these, never the
//! config module. A leaf: it imports nothing of the daemon but `names`.

mod partition;
mod template;
mod units;

pub use partition::{fast_path, PartitionError, Partitioner};
pub use template::{
    civil, hive_escape, Part, RenderError, Template, TemplateError, TimePart, MAX_PREFIX,
};
pub use units::{ByteSize, HumanDuration, UnitError};

/// `[firehose]`: how an S3 bucket ARN of CreateDeliveryStream becomes an object store.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FirehoseConfig {
    /// `arn:aws:s3:::NAME` not listed in `buckets` is the directory `<buckets_dir>/NAME`
    /// (default `<data_dir>/buckets`).
    #[serde(default)]
    pub buckets_dir: Option<PathBuf>,
    /// `[firehose.buckets.NAME]`: the `object-store` sink options (`url`, `endpoint`,
    /// `region`, credentials, ...) a bucket name stands for.
    #[serde(default)]
    pub buckets: std::collections::BTreeMap<String, toml::Table>,
}

/// The folder of the delivery streams created through the Firehose API (one generated
/// pipeline file each, loaded like the files of `pipelines_dir`).
pub fn delivery_streams_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("delivery-streams")
}

use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A compiled form that travels next to the source text it was compiled from. Specs are
/// compared and hashed by their source text (that is what decides a reload's diff), so
/// `Compiled` compares equal and hashes to nothing; the compiled value is shared, never
/// rebuilt, between the config set and the running pipeline.
pub struct Compiled<T>(pub Arc<T>);

impl<T> std::fmt::Debug for Compiled<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<compiled>")
    }
}

impl<T> Compiled<T> {
    /// Wraps a compiled value.
    pub fn new(v: T) -> Self {
        Compiled(Arc::new(v))
    }
}

impl<T> Clone for Compiled<T> {
    fn clone(&self) -> Self {
        Compiled(self.0.clone())
    }
}

impl<T> PartialEq for Compiled<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Compiled<T> {}

impl<T> std::hash::Hash for Compiled<T> {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl<T> std::ops::Deref for Compiled<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Plugin kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
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

/// The longest `checkpoint_interval` a replayable source delivering into an object sink
/// may have: well under the 30 s the intent log keeps a delivered object's entry
/// (`delivery::intent::RETIRE_AFTER`) — a checkpoint written later than an entry's
/// retirement would replay its records under other object boundaries, twice in the lake.
pub const MAX_CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

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
    pub fn parse(s: &str) -> Result<Fsync, UnitError> {
        match s {
            "batch" => Ok(Fsync::Batch),
            "none" => Ok(Fsync::None),
            other => match other.strip_prefix("interval:") {
                Some(d) => humantime::parse_duration(d)
                    .map(Fsync::Interval)
                    .map_err(|e| UnitError::FsyncInterval(d.to_string(), e.to_string())),
                None => Err(UnitError::Fsync(other.to_string())),
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
    /// Where the shards' records live.
    pub storage: StorageKind,
}

/// `storage` of a stream: where its shards' records live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StorageKind {
    /// The local shard log under `data_dir` (the default).
    #[default]
    Log,
    /// The NATS JetStream cluster of the daemon's `[jetstream]` table (one replicated
    /// JetStream stream per shard).
    JetStream,
}

/// Object compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
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
    /// The level used when `compression_level` is not given: gzip 1 and zstd 3, the
    /// fastest settings that still compress CloudEvents well (BENCHMARKS.md).
    pub fn default_level(self) -> u32 {
        match self {
            Compression::Gzip => 1,
            Compression::Zstd => 3,
            Compression::None | Compression::Snappy => 0,
        }
    }

    /// The levels `compression_level` may take (none for uncompressed and snappy). zstd
    /// stops at 19: the levels above need windows too large for the memory budget.
    pub fn levels(self) -> Option<std::ops::RangeInclusive<u32>> {
        match self {
            Compression::Gzip => Some(0..=9),
            Compression::Zstd => Some(1..=19),
            Compression::None | Compression::Snappy => None,
        }
    }

    /// This compression at its default level.
    pub fn codec(self) -> Codec {
        Codec {
            compression: self,
            level: self.default_level(),
        }
    }

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

/// A compression and its level: how an object is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Codec {
    /// The format.
    pub compression: Compression,
    /// Its level (meaningful for gzip and zstd).
    pub level: u32,
}

/// Firehose-style delivery settings of a pipeline with an object sink.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
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
    /// `compression_level`, when given (else the compression's default). Left out of the
    /// persisted identity when absent, so configurations without it keep theirs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<u32>,
    /// Appended after each record.
    pub delimiter: String,
    /// Record format conversion (`format = "parquet"`); `None` writes the records as they
    /// are. Left out of the persisted identity when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<ParquetSpec>,
    /// How long retryable sink failures are retried before the object goes to the error
    /// output (`delivery-failed`); `None` retries forever.
    pub retry_duration: Option<Duration>,
    /// `query`, compiled.
    #[serde(skip)]
    pub partitioner: Option<Compiled<Partitioner>>,
    /// `prefix`, compiled.
    #[serde(skip)]
    pub prefix_template: Compiled<Template>,
    /// `error_prefix`, compiled.
    #[serde(skip)]
    pub error_template: Compiled<Template>,
}

impl DeliverySpec {
    /// How the pipeline's objects are encoded (inside the Parquet file, for Parquet).
    pub fn codec(&self) -> Codec {
        Codec {
            compression: self.compression,
            level: self
                .compression_level
                .unwrap_or(self.compression.default_level()),
        }
    }

    /// How a data buffer's bytes are held until the flush: compressed on the way in for
    /// record objects; plain lines for Parquet, which is built from them at the flush.
    pub fn buffer_codec(&self) -> Codec {
        match self.format {
            Some(_) => Compression::None.codec(),
            None => self.codec(),
        }
    }
}

/// `format = "parquet"`: Firehose's record format conversion. Records are JSON objects;
/// each flushed object is one Parquet file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ParquetSpec {
    /// The columns.
    pub schema: SchemaSpec,
}

/// The columns of Parquet objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaSpec {
    /// Inferred from each partition's records: the first record's fields, widened as
    /// later ones add fields (or integers meet fractions); a record that conflicts with
    /// what the partition's earlier objects hold is refused.
    Infer,
    /// Declared in the pipeline file.
    Declared(Vec<Column>),
}

/// A declared column (or struct field, or list item).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Column {
    /// The JSON member it reads (unused for a list's item).
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
    /// Whether it may be missing or null.
    pub nullable: bool,
}

/// A column's type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// UTF-8 text (a JSON string).
    String,
    /// A JSON boolean.
    Boolean,
    /// A JSON integer within 32 bits.
    Int32,
    /// A JSON integer within 64 bits.
    Int64,
    /// A JSON number, as a 32-bit float.
    Float32,
    /// A JSON number, as a 64-bit float.
    Float64,
    /// Milliseconds since the epoch, UTC (an RFC 3339 string or a number of ms).
    Timestamp,
    /// A calendar date (`YYYY-MM-DD` or a number of days).
    Date,
    /// A JSON object with these fields.
    Struct(Vec<Column>),
    /// A JSON array of this item.
    List(Box<Column>),
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ComponentSpec {
    /// `source`, `transforms[0]`, `sink`.
    pub id: String,
    /// Plugin name.
    pub plugin: String,
    /// Plugin kind.
    pub kind: Kind,
    /// The plugin's own options, as JSON.
    pub config_json: String,
    /// A replayable source (ABI 1.1): the pipeline keeps an intent log for exactly-once
    /// objects. Not part of the persisted delivery identity (it follows from the plugin).
    #[serde(skip)]
    pub replayable: bool,
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

impl PipelineSpec {
    /// A stable identity of everything that decides which record lands in which object
    /// and how it is named (source, transforms, de-aggregation, delivery): canonical JSON
    /// of those settings, hashed (MD5, hex). Persisted in intent logs, so it must not
    /// depend on `Debug` output or anything else that may change between builds.
    pub fn delivery_identity(&self) -> String {
        use md5::Digest as _;
        let decisive = serde_json::json!({
            "source": &self.source,
            "transforms": &self.transforms,
            "deaggregate": self.deaggregate,
            "delivery": &self.delivery,
        });
        let digest = md5::Md5::digest(decisive.to_string().as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Names starting with `__` are the daemon's own (the Direct PUT streams): reserved in
/// config and in CreateStream, invisible to the Kinesis API.
pub fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

/// The internal stream an `http` source writes to when it names no `stream`.
pub fn http_stream(pipeline: &str) -> String {
    format!("__http-{pipeline}")
}

/// The internal stream behind a `direct-put` pipeline.
pub fn direct_put_stream(pipeline: &str) -> String {
    format!("__firehose-{pipeline}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(id: &str, plugin: &str, kind: Kind, json: &str) -> ComponentSpec {
        ComponentSpec {
            id: id.into(),
            plugin: plugin.into(),
            kind,
            config_json: json.into(),
            replayable: plugin == "stream",
        }
    }

    /// The identity persisted in intent logs is pinned: a change of its format (or of a
    /// spec type's serialization) would make recovery after an upgrade stop matching.
    #[test]
    fn the_delivery_identity_is_stable() {
        let (prefix, error_prefix) = ("t=!{partitionKeyFromQuery:type}/", "err/");
        let spec = PipelineSpec {
            name: "lake".into(),
            file: PathBuf::from("/etc/sluice/pipelines/lake.toml"),
            source: component("source", "stream", Kind::Source, r#"{"stream":"events"}"#),
            transforms: vec![component(
                "transforms[0]",
                "jq",
                Kind::Transform,
                r#"{"filter":"."}"#,
            )],
            sink: component("sink", "object-store", Kind::Sink, r#"{"url":"lake"}"#),
            batch: BatchConfig::default(),
            deaggregate: true,
            delivery: Some(DeliverySpec {
                query: Some("{type}".into()),
                max_active_partitions: 500,
                size: 64 << 20,
                interval: Duration::from_secs(60),
                prefix: prefix.into(),
                error_prefix: error_prefix.into(),
                compression: Compression::Gzip,
                compression_level: None,
                delimiter: "\n".into(),
                format: None,
                retry_duration: None,
                partitioner: Some(Compiled::new(Partitioner::new("{type}").unwrap())),
                prefix_template: Compiled::new(Template::parse(prefix, false).unwrap()),
                error_template: Compiled::new(Template::parse(error_prefix, true).unwrap()),
            }),
        };
        assert_eq!(spec.delivery_identity(), "48d33760d38fd3ffc0678af53c239d99");
        // Where the file lives and the sink's host batching do not decide objects.
        let mut moved = spec.clone();
        moved.file = PathBuf::from("/elsewhere.toml");
        moved.batch.max_records = 1;
        assert_eq!(moved.delivery_identity(), spec.delivery_identity());
        let mut other = spec.clone();
        if let Some(d) = &mut other.delivery {
            d.size = 1;
        }
        assert_ne!(other.delivery_identity(), spec.delivery_identity());
    }
}
