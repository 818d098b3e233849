//! Configuration: the daemon file and the pipeline files, parsed into plain data, then
//! validated (plugins looked up, plugin configs and jq programs checked by the plugins
//! themselves) into a [`ConfigSet`] the supervisor can apply. Every error names
//! file:line:column and the key.
//!
//! Serde structs here are the external contract (DESIGN.md "Configuration"); they reject
//! unknown keys. Relative paths resolve against the daemon config file's folder.

mod format;
mod locate;

use crate::spec::{
    direct_put_stream, BatchConfig, Compiled, ComponentSpec, Compression, DeliverySpec, Fsync,
    PipelineSpec, StreamSpec, WriteLimit, MAX_BATCH_RECORDS, MAX_SHARDS,
};
pub use crate::spec::{ByteSize, HumanDuration};
pub use locate::{key, line_col, ConfigError, Seg, SourceFile};

use crate::plugins::{Kind, Registry};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Several config errors, shown one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// The daemon file (`sluiced.toml`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Shard logs, checkpoints, spool files.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Every `*.toml` here is loaded (and watched).
    #[serde(default = "default_pipelines_dir")]
    pub pipelines_dir: PathBuf,
    /// Extra dynamic plugin folders (`*.so`).
    #[serde(default)]
    pub plugin_dirs: Vec<PathBuf>,
    /// Reload when files in `pipelines_dir` change (SIGHUP and `POST /admin/reload` always work).
    #[serde(default = "yes")]
    pub watch: bool,
    /// How long SIGTERM may take to drain pipelines.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: HumanDuration,
    /// Kinesis/Firehose API.
    #[serde(default)]
    pub api: ApiConfig,
    /// Operator listener: metrics, health, admin.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Global limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Where the Firehose API's delivery streams deliver.
    #[serde(default)]
    pub firehose: FirehoseConfig,
    /// The NATS JetStream cluster for streams with `storage = "jetstream"`.
    #[serde(default)]
    pub jetstream: Option<JetStreamConfig>,
}

/// `[jetstream]`: the NATS JetStream cluster that streams with `storage = "jetstream"`
/// keep their shards on (read when the daemon starts; a change needs a restart).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JetStreamConfig {
    /// Server URLs, `nats://host:port` (any servers of the cluster).
    pub servers: Vec<String>,
    /// Copies of each shard on the cluster (1 to 5).
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Prefix of the JetStream stream names and subjects sluice makes.
    #[serde(default = "default_js_prefix")]
    pub prefix: String,
    /// How long one call waits for the cluster.
    #[serde(default = "default_js_timeout")]
    pub timeout: HumanDuration,
    /// This node's name in shard leases (default: host name and a random suffix).
    #[serde(default)]
    pub node: Option<String>,
    /// How long a shard lease lasts unrenewed (renewed every third of it).
    #[serde(default = "default_lease_duration")]
    pub lease_duration: HumanDuration,
    /// Where CreateStream puts new streams: this node's disk (`"log"`, the default) or
    /// the cluster (`"jetstream"`: every node with the setting serves them).
    #[serde(default)]
    pub api_streams: ApiStreams,
    /// User name for servers with `authorization` (with `password`).
    #[serde(default)]
    pub user: Option<String>,
    /// The user's password.
    #[serde(default)]
    pub password: Option<String>,
    /// A bearer token for servers with `authorization { token }`.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding this node's NKey user seed (`SU…`), for servers whose users are
    /// NKeys (`authorization { users: [{ nkey: U… }] }`).
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    /// A NATS credentials file (`.creds`: user JWT and seed, as `nsc` writes), for
    /// operator-mode servers (accounts and users as JWTs).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Require TLS to the servers (implied by `ca_file` and `cert_file`).
    #[serde(default)]
    pub tls: bool,
    /// Trust roots (PEM) for the servers' certificates (default: the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This node's client certificate (PEM; with `key_file`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// `[jetstream] api_streams`: where streams made through the API keep their records.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ApiStreams {
    /// Shard logs on this node's disk, served by this node only.
    #[default]
    Log,
    /// The JetStream cluster: made, changed and deleted for every node.
    JetStream,
}

fn default_lease_duration() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_replicas() -> u32 {
    3
}
fn default_js_prefix() -> String {
    "SLUICE".into()
}
fn default_js_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

impl JetStreamConfig {
    /// The client's options.
    pub fn options(&self) -> crate::stream::jetstream::JetStreamOptions {
        crate::stream::jetstream::JetStreamOptions {
            servers: self.servers.clone(),
            replicas: self.replicas as usize,
            prefix: self.prefix.clone(),
            timeout: self.timeout.0,
            node: self.node.clone(),
            lease_duration: self.lease_duration.0,
            auth: match (&self.user, &self.password, &self.token) {
                (Some(u), Some(p), _) => {
                    crate::stream::jetstream::JetStreamAuth::UserPassword(u.clone(), p.clone())
                }
                (_, _, Some(t)) => crate::stream::jetstream::JetStreamAuth::Token(t.clone()),
                _ => match (&self.nkey_seed_file, &self.credentials_file) {
                    (Some(f), _) => {
                        crate::stream::jetstream::JetStreamAuth::NKeySeedFile(f.clone())
                    }
                    (_, Some(f)) => {
                        crate::stream::jetstream::JetStreamAuth::CredentialsFile(f.clone())
                    }
                    _ => crate::stream::jetstream::JetStreamAuth::None,
                },
            },
            tls: (self.tls || self.ca_file.is_some() || self.cert_file.is_some()).then(|| {
                crate::stream::jetstream::JetStreamTls {
                    ca_file: self.ca_file.clone(),
                    client: self.cert_file.clone().zip(self.key_file.clone()),
                }
            }),
        }
    }

    /// The first thing wrong with the table, as (key, message).
    fn check(&self) -> Option<(&'static str, String)> {
        if self.servers.is_empty() {
            return Some((
                "servers",
                "servers must name at least one server (nats://host:port)".into(),
            ));
        }
        for s in &self.servers {
            let rest = s.strip_prefix("nats://").unwrap_or(s);
            let ok = !rest.is_empty()
                && rest
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Some((
                    "servers",
                    format!("`{s}` is not a server address like nats://127.0.0.1:4222"),
                ));
            }
        }
        if !(1..=5).contains(&self.replicas) {
            return Some((
                "replicas",
                "replicas must be between 1 and 5 (JetStream's limits)".into(),
            ));
        }
        if self.prefix.is_empty()
            || self.prefix.len() > 32
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Some((
                "prefix",
                "prefix must be 1 to 32 letters, digits or `-`".into(),
            ));
        }
        if self.timeout.0 < Duration::from_millis(100) || self.timeout.0 > Duration::from_secs(300)
        {
            return Some(("timeout", "timeout must be between 100ms and 5m".into()));
        }
        let lease = self.lease_duration.0;
        if lease < Duration::from_secs(1) || lease > Duration::from_secs(300) {
            return Some((
                "lease_duration",
                "lease_duration must be between 1s and 5m".into(),
            ));
        }
        match (&self.user, &self.password) {
            (Some(_), None) => return Some(("user", "user needs a password".into())),
            (None, Some(_)) => return Some(("password", "password needs a user".into())),
            _ => {}
        }
        let ways = [
            self.user.is_some(),
            self.token.is_some(),
            self.nkey_seed_file.is_some(),
            self.credentials_file.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            let key = if self.credentials_file.is_some() {
                "credentials_file"
            } else if self.nkey_seed_file.is_some() {
                "nkey_seed_file"
            } else {
                "token"
            };
            return Some((
                key,
                "choose one way to authenticate: user and password, token, nkey_seed_file or credentials_file"
                    .into(),
            ));
        }
        if self.token.as_deref() == Some("") {
            return Some(("token", "token must not be empty".into()));
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => return Some(("cert_file", "cert_file needs key_file".into())),
            (None, Some(_)) => return Some(("key_file", "key_file needs cert_file".into())),
            _ => {}
        }
        if let Some(n) = &self.node {
            if n.is_empty()
                || n.len() > 64
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Some((
                    "node",
                    "node must be 1 to 64 letters, digits, `-` or `_`".into(),
                ));
            }
        }
        None
    }
}

pub use crate::spec::{delivery_streams_dir, FirehoseConfig};

fn yes() -> bool {
    true
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/sluice")
}
fn default_pipelines_dir() -> PathBuf {
    PathBuf::from("pipelines")
}
fn default_shutdown_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address of the Kinesis/Firehose API.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// Account id used in ARNs and messages.
    #[serde(default = "default_account")]
    pub account_id: String,
    /// When present, SigV4 signatures are verified against these.
    #[serde(default)]
    pub credentials: Vec<Credential>,
    /// How long a shard iterator stays valid (Kinesis: 5 minutes).
    #[serde(default = "default_iterator_ttl")]
    pub iterator_ttl: HumanDuration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_api_listen(),
            account_id: default_account(),
            credentials: Vec::new(),
            iterator_ttl: default_iterator_ttl(),
        }
    }
}

fn default_iterator_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4567))
}
fn default_account() -> String {
    "000000000000".to_string()
}

/// `[[api.credentials]]`.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The access key id.
    pub access_key_id: String,
    /// The secret.
    pub secret_access_key: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listen address for `/metrics`, `/healthz`, `/readyz`, `/admin/*`.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
        }
    }
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// All pipelines' buffers together.
    #[serde(default = "default_buffer_memory")]
    pub buffer_memory: ByteSize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            buffer_memory: default_buffer_memory(),
        }
    }
}

fn default_buffer_memory() -> ByteSize {
    ByteSize(512 << 20)
}

/// A pipeline file: any number of pipelines (streams come with the stream layer).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    #[serde(default)]
    streams: BTreeMap<String, StreamToml>,
    #[serde(default)]
    pipelines: BTreeMap<String, PipelineToml>,
}

/// `[streams.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamToml {
    shards: u32,
    #[serde(default = "default_retention")]
    retention: HumanDuration,
    #[serde(default = "default_max_record")]
    max_record_size: ByteSize,
    #[serde(default)]
    max_bytes: Option<ByteSize>,
    #[serde(default = "default_fsync")]
    fsync: String,
    #[serde(default)]
    write_limit: Option<WriteLimitToml>,
    #[serde(default)]
    storage: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteLimitToml {
    #[serde(default)]
    bytes_per_shard: Option<String>,
    #[serde(default)]
    records_per_shard: Option<u64>,
}

fn default_retention() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}
fn default_max_record() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_fsync() -> String {
    "batch".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineToml {
    source: PluginToml,
    #[serde(default)]
    deaggregate: Option<String>,
    #[serde(default)]
    transforms: Vec<PluginToml>,
    #[serde(default)]
    partitioning: Option<PartitioningToml>,
    #[serde(default)]
    buffer: Option<BufferToml>,
    sink: PluginToml,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitioningToml {
    query: String,
    #[serde(default = "default_max_partitions")]
    max_active_partitions: u32,
}

fn default_max_partitions() -> u32 {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BufferToml {
    #[serde(default = "default_buffer_size")]
    size: ByteSize,
    #[serde(default = "default_buffer_interval")]
    interval: HumanDuration,
}

fn default_buffer_size() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_buffer_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// Host-owned keys of an object sink's table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectSinkHostToml {
    #[serde(default)]
    prefix: String,
    #[serde(default = "default_error_prefix")]
    error_prefix: String,
    #[serde(default = "default_compression")]
    compression: Compression,
    #[serde(default)]
    compression_level: Option<u32>,
    #[serde(default = "default_delimiter")]
    delimiter: String,
    #[serde(default)]
    retry_duration: Option<HumanDuration>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    schema: Option<toml::Value>,
}

fn default_error_prefix() -> String {
    "kdferror/!{firehose:error-output-type}/".to_string()
}
fn default_compression() -> Compression {
    Compression::None
}
fn default_delimiter() -> String {
    "\n".to_string()
}

/// `{ plugin = "name", ...options }`: the options are the plugin's own.
#[derive(Debug, Clone, Deserialize)]
struct PluginToml {
    plugin: String,
    #[serde(flatten)]
    options: toml::Table,
}

/// Everything the daemon runs: the daemon settings and every pipeline, validated.
#[derive(Debug, Clone)]
pub struct ConfigSet {
    /// The daemon file's path.
    pub path: PathBuf,
    /// The folder relative paths resolve against.
    pub base_dir: PathBuf,
    /// Daemon settings, with paths resolved.
    pub daemon: DaemonConfig,
    /// Streams from config, by name.
    pub streams: BTreeMap<String, StreamSpec>,
    /// Pipelines by name.
    pub pipelines: BTreeMap<String, PipelineSpec>,
}

/// Reads and parses the daemon file, resolving its relative paths.
pub fn load_daemon(path: &Path) -> Result<(DaemonConfig, PathBuf), ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("cannot read: {e}"),
    })?;
    let src = SourceFile::new(path, text);
    let mut cfg: DaemonConfig = toml::from_str(&src.text).map_err(|e| src.toml_error(&e))?;
    if let Some((k, msg)) = cfg.jetstream.as_ref().and_then(JetStreamConfig::check) {
        return Err(ConfigErrors(vec![
            src.error_at_path(&[key("jetstream"), key(k)], msg)
        ]));
    }
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    cfg.data_dir = resolve(&cfg.data_dir);
    cfg.pipelines_dir = resolve(&cfg.pipelines_dir);
    cfg.plugin_dirs = cfg.plugin_dirs.iter().map(|p| resolve(p)).collect();
    if let Some(js) = &mut cfg.jetstream {
        for p in [&mut js.ca_file, &mut js.cert_file, &mut js.key_file]
            .into_iter()
            .flatten()
        {
            *p = resolve(p);
        }
    }
    cfg.firehose.buckets_dir = Some(match &cfg.firehose.buckets_dir {
        Some(d) => resolve(d),
        None => cfg.data_dir.join("buckets"),
    });
    Ok((cfg, base))
}

/// Loads the whole config — daemon file and every pipeline file — and validates it
/// against `registry`. Nothing is started.
pub fn load(path: &Path, registry: &Registry) -> Result<ConfigSet, ConfigErrors> {
    let (daemon, base_dir) = load_daemon(path)?;
    load_with(path, daemon, base_dir, registry)
}

/// Like [`load`], with the daemon file already parsed.
pub fn load_with(
    path: &Path,
    daemon: DaemonConfig,
    base_dir: PathBuf,
    registry: &Registry,
) -> Result<ConfigSet, ConfigErrors> {
    let mut errors = Vec::new();
    let mut pipelines: BTreeMap<String, PipelineSpec> = BTreeMap::new();
    let mut streams: BTreeMap<String, StreamSpec> = BTreeMap::new();
    let mut files = pipeline_files(&daemon.pipelines_dir).map_err(|e| ConfigError {
        file: daemon.pipelines_dir.clone(),
        line: 0,
        column: 0,
        message: format!("cannot list pipelines_dir: {e}"),
    })?;
    // Delivery streams created through the Firehose API: generated pipeline files in
    // `data_dir`, loaded (and validated) exactly like the operator's own.
    let api_dir = delivery_streams_dir(&daemon.data_dir);
    files.extend(pipeline_files(&api_dir).map_err(|e| ConfigError {
        file: api_dir.clone(),
        line: 0,
        column: 0,
        message: format!("cannot list the delivery streams created through the API: {e}"),
    })?);
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(
                    SourceFile::new(&file, String::new())
                        .error_at(None, format!("cannot read: {e}")),
                );
                continue;
            }
        };
        let src = SourceFile::new(&file, text);
        let parsed: PipelineFile = match toml::from_str(&src.text) {
            Ok(p) => p,
            Err(e) => {
                errors.push(src.toml_error(&e));
                continue;
            }
        };
        for (name, st) in parsed.streams {
            let at = [key("streams"), key(name.clone())];
            if let Err(e) = crate::names::check(&name) {
                errors.push(src.error_at_path(&at, e.to_string()));
                continue;
            }
            if let Some(other) = streams.get(&name) {
                let other: &StreamSpec = other;
                errors.push(src.error_at_path(
                    &at,
                    format!(
                        "stream `{name}` is already defined in {}",
                        other.file.display()
                    ),
                ));
                continue;
            }
            if crate::spec::is_internal(&name) {
                errors.push(src.error_at_path(
                    &at,
                    format!("stream names starting with `__` are reserved (`{name}`)"),
                ));
                continue;
            }
            match build_stream(&src, &name, st, daemon.jetstream.is_some()) {
                Ok(spec) => {
                    streams.insert(name, spec);
                }
                Err(e) => errors.push(e),
            }
        }
        for (name, p) in parsed.pipelines {
            let at = [key("pipelines"), key(name.clone())];
            if let Err(e) = crate::names::check(&name) {
                errors.push(src.error_at_path(&at, e.to_string()));
                continue;
            }
            if let Some(other) = pipelines.get(&name) {
                errors.push(src.error_at_path(
                    &at,
                    format!(
                        "pipeline `{name}` is already defined in {}",
                        other.file.display()
                    ),
                ));
                continue;
            }
            match build_pipeline(&src, &name, p, registry, &base_dir) {
                Ok(spec) => {
                    pipelines.insert(name, spec);
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
    }
    // Firehose Direct PUT: each `direct-put` pipeline reads its own internal stream, where
    // PutRecord(Batch) makes records durable before answering.
    for p in pipelines.values() {
        // An `http` source without `stream` writes to an internal stream of its own.
        let http_internal = p.source.plugin == "http"
            && serde_json::from_str::<serde_json::Value>(&p.source.config_json)
                .is_ok_and(|v| v.get("stream").is_none());
        if p.source.plugin == "direct-put" || http_internal {
            let name = if http_internal {
                crate::spec::http_stream(&p.name)
            } else {
                direct_put_stream(&p.name)
            };
            streams.insert(
                name.clone(),
                StreamSpec {
                    name,
                    file: p.file.clone(),
                    shards: 1,
                    retention: Duration::from_secs(24 * 3600),
                    max_record_size: 1000 * 1024,
                    max_bytes: None,
                    fsync: Fsync::Batch,
                    write_limit: None,
                    storage: crate::spec::StorageKind::Log,
                },
            );
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(ConfigSet {
        path: path.to_path_buf(),
        base_dir,
        daemon,
        streams,
        pipelines,
    })
}

fn build_stream(
    src: &SourceFile,
    name: &str,
    st: StreamToml,
    jetstream: bool,
) -> Result<StreamSpec, ConfigError> {
    let at = |k: &str| [key("streams"), key(name), key(k)];
    let storage = match st.storage.as_deref() {
        None | Some("log") => crate::spec::StorageKind::Log,
        Some("jetstream") if jetstream => crate::spec::StorageKind::JetStream,
        Some("jetstream") => {
            return Err(src.error_at_path(
                &at("storage"),
                "storage = \"jetstream\" needs a [jetstream] table (servers, replicas) in the daemon's config file",
            ))
        }
        Some(other) => {
            return Err(src.error_at_path(
                &at("storage"),
                format!("unknown storage `{other}`: \"log\" (the default) or \"jetstream\""),
            ))
        }
    };
    if st.shards == 0 || st.shards > MAX_SHARDS {
        return Err(src.error_at_path(
            &at("shards"),
            format!("shards must be between 1 and {MAX_SHARDS}"),
        ));
    }
    if st.retention.0 < Duration::from_secs(60) {
        return Err(src.error_at_path(&at("retention"), "retention must be at least 1m"));
    }
    if st.max_record_size.0 == 0 || st.max_record_size.0 > 64 << 20 {
        return Err(src.error_at_path(
            &at("max_record_size"),
            "max_record_size must be between 1B and 64MiB",
        ));
    }
    let fsync =
        Fsync::parse(&st.fsync).map_err(|m| src.error_at_path(&at("fsync"), m.to_string()))?;
    let write_limit = match st.write_limit {
        None => None,
        Some(w) => {
            let bytes_per_sec = match w.bytes_per_shard {
                None => None,
                Some(b) => {
                    let per = b.strip_suffix("/s").ok_or_else(|| {
                        src.error_at_path(
                            &[
                                key("streams"),
                                key(name),
                                key("write_limit"),
                                key("bytes_per_shard"),
                            ],
                            "write_limit.bytes_per_shard must be a rate like \"1MiB/s\"",
                        )
                    })?;
                    Some(
                        ByteSize::parse(per)
                            .map_err(|m| {
                                src.error_at_path(
                                    &[
                                        key("streams"),
                                        key(name),
                                        key("write_limit"),
                                        key("bytes_per_shard"),
                                    ],
                                    m.to_string(),
                                )
                            })?
                            .0,
                    )
                }
            };
            Some(WriteLimit {
                bytes_per_sec,
                records_per_sec: w.records_per_shard,
            })
        }
    };
    Ok(StreamSpec {
        write_limit,
        name: name.to_string(),
        file: src.path.clone(),
        shards: st.shards,
        retention: st.retention.0,
        max_record_size: st.max_record_size.0,
        max_bytes: st.max_bytes.map(|b| b.0),
        fsync,
        storage,
    })
}

/// The `*.toml` files of `dir`, sorted; editor temp and hidden files are skipped.
pub fn pipeline_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || !name.ends_with(".toml") || !path.is_file() {
            continue;
        }
        files.push(path);
    }
    files.sort();
    Ok(files)
}

/// A digest of everything a reload reads — the daemon file and every pipeline file, names
/// and contents — so that a file event which changed nothing (a `touch`, a save of the same
/// text) is recognised and skipped. Unreadable files hash their error, so they count as
/// changed when they become readable.
pub fn fingerprint(daemon_file: &Path, pipelines_dir: &Path) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut add = |path: &Path| {
        let path_bytes = path.as_os_str().as_encoded_bytes();
        h.update((path_bytes.len() as u64).to_le_bytes());
        h.update(path_bytes);
        match std::fs::read(path) {
            Ok(b) => {
                h.update([1]);
                h.update((b.len() as u64).to_le_bytes());
                h.update(&b);
            }
            Err(e) => {
                h.update([0]);
                h.update(e.to_string().as_bytes());
            }
        }
    };
    add(daemon_file);
    match pipeline_files(pipelines_dir) {
        Ok(files) => files.iter().for_each(|f| add(f)),
        Err(e) => h.update(e.to_string().as_bytes()),
    }
    h.finalize().into()
}

fn build_pipeline(
    src: &SourceFile,
    name: &str,
    p: PipelineToml,
    registry: &Registry,
    base_dir: &Path,
) -> Result<PipelineSpec, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let at = |rest: &[Seg]| {
        let mut v = vec![key("pipelines"), key(name)];
        v.extend_from_slice(rest);
        v
    };
    let source_plugin = p.source.plugin.clone();
    let checkpoint_interval = p.source.options.get("checkpoint_interval").cloned();
    let source = build_component(
        src,
        name,
        "source",
        Kind::Source,
        p.source,
        &at(&[key("source")]),
        registry,
        base_dir,
    );
    let transforms: Vec<_> = p
        .transforms
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            build_component(
                src,
                name,
                &format!("transforms[{i}]"),
                Kind::Transform,
                t,
                &at(&[key("transforms"), Seg::Index(i)]),
                registry,
                base_dir,
            )
        })
        .collect();
    let mut sink_toml = p.sink;
    let object_sink = registry
        .lookup(Kind::Sink, &sink_toml.plugin)
        .map(|e| e.object_sink)
        .unwrap_or(false);
    let deaggregate = match p.deaggregate.as_deref() {
        None => source_plugin == "stream",
        Some("kpl") => true,
        Some("none") => false,
        Some(other) => {
            errors.push(src.error_at_path(
                &at(&[key("deaggregate")]),
                format!("deaggregate must be \"kpl\" or \"none\", not `{other}`"),
            ));
            false
        }
    };
    // Into an object sink, a replay after a crash rebuilds objects from the intent log,
    // which keeps an object's entry 30 s after its acks: a bundled source writing its
    // checkpoint later than that would replay records without their objects' boundaries
    // and deliver them twice. (The `kinesis` source bounds its interval itself.)
    if object_sink && matches!(source_plugin.as_str(), "stream" | "http") {
        let too_long = checkpoint_interval
            .and_then(|v| v.try_into::<crate::spec::HumanDuration>().ok())
            .is_some_and(|d| d.0 > crate::spec::MAX_CHECKPOINT_INTERVAL);
        if too_long {
            errors.push(src.error_at_path(
                &at(&[key("source"), key("checkpoint_interval")]),
                "checkpoint_interval must be at most 10s when the sink writes objects (the intent log keeps a delivered object's entry 30 s; a replay needs it until the checkpoint has moved past)".to_string(),
            ));
        }
    }
    let delivery = if object_sink {
        build_delivery(src, &at, &mut sink_toml, p.partitioning, p.buffer)
            .map_err(|e| errors.push(e))
            .ok()
    } else {
        for (k, present) in [
            ("partitioning", p.partitioning.is_some()),
            ("buffer", p.buffer.is_some()),
        ] {
            if present {
                errors.push(src.error_at_path(
                    &at(&[key(k)]),
                    format!("`{k}` applies to object sinks (like object-store); sink `{}` takes record batches (use sink.batch)", sink_toml.plugin),
                ));
            }
        }
        None
    };
    let batch = match sink_toml.options.remove("batch") {
        None => Ok(BatchConfig::default()),
        Some(v) => v
            .try_into::<BatchConfig>()
            .map_err(|e| {
                src.error_at_path(
                    &at(&[key("sink"), key("batch")]),
                    format!("batch: {}", e.message().trim_end()),
                )
            })
            .and_then(|b| {
                if b.max_records == 0 || b.max_records > MAX_BATCH_RECORDS {
                    Err(src.error_at_path(
                        &at(&[key("sink"), key("batch"), key("max_records")]),
                        format!("batch.max_records must be between 1 and {MAX_BATCH_RECORDS}"),
                    ))
                } else {
                    Ok(b)
                }
            }),
    };
    let sink = build_component(
        src,
        name,
        "sink",
        Kind::Sink,
        sink_toml,
        &at(&[key("sink")]),
        registry,
        base_dir,
    );
    let source = source.map_err(|e| errors.push(e)).ok();
    let transforms: Vec<_> = transforms
        .into_iter()
        .filter_map(|t| t.map_err(|e| errors.push(e)).ok())
        .collect();
    let sink = sink.map_err(|e| errors.push(e)).ok();
    let batch = batch.map_err(|e| errors.push(e)).ok();
    match (source, sink, batch) {
        (Some(source), Some(sink), Some(batch)) if errors.is_empty() => Ok(PipelineSpec {
            name: name.to_string(),
            file: src.path.clone(),
            source,
            transforms,
            sink,
            batch,
            deaggregate,
            delivery: delivery.flatten(),
        }),
        _ => Err(errors),
    }
}

/// Takes the host-owned keys out of an object sink's table and checks the delivery settings.
fn build_delivery(
    src: &SourceFile,
    at: &dyn Fn(&[Seg]) -> Vec<Seg>,
    sink: &mut PluginToml,
    partitioning: Option<PartitioningToml>,
    buffer: Option<BufferToml>,
) -> Result<Option<DeliverySpec>, ConfigError> {
    let mut host = toml::Table::new();
    for k in [
        "prefix",
        "error_prefix",
        "compression",
        "compression_level",
        "delimiter",
        "retry_duration",
        "format",
        "schema",
    ] {
        if let Some(v) = sink.options.remove(k) {
            host.insert(k.to_string(), v);
        }
    }
    let host_delimiter_set = host.contains_key("delimiter");
    let h: ObjectSinkHostToml =
        toml::Value::Table(host)
            .try_into()
            .map_err(|e: toml::de::Error| {
                src.error_at_path(
                    &at(&[key("sink")]),
                    format!("sink: {}", e.message().trim_end()),
                )
            })?;
    if let Some(level) = h.compression_level {
        let c = h.compression;
        let name = serde_json::to_value(c)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        match c.levels() {
            None => {
                return Err(src.error_at_path(
                    &at(&[key("sink"), key("compression_level")]),
                    format!(
                        "compression_level: `{name}` has no levels (gzip takes 0-9, zstd 1-19)"
                    ),
                ))
            }
            Some(r) if !r.contains(&level) => {
                return Err(src.error_at_path(
                    &at(&[key("sink"), key("compression_level")]),
                    format!(
                        "compression_level: {name} takes {}-{}, not {level}",
                        r.start(),
                        r.end()
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    let format = format::parse(
        src,
        at,
        h.format.as_deref(),
        h.schema.as_ref(),
        host_delimiter_set,
    )?;
    let prefix = crate::spec::Template::parse(&h.prefix, false).map_err(|m| {
        src.error_at_path(&at(&[key("sink"), key("prefix")]), format!("prefix: {m}"))
    })?;
    let error_template = crate::spec::Template::parse(&h.error_prefix, true).map_err(|m| {
        src.error_at_path(
            &at(&[key("sink"), key("error_prefix")]),
            format!("error_prefix: {m}"),
        )
    })?;
    for t in [&h.prefix, &h.error_prefix] {
        if t.split('/').any(|s| s == ".." || s == ".") || t.starts_with('/') {
            return Err(src.error_at_path(
                &at(&[key("sink"), key("prefix")]),
                "prefixes must be relative and must not contain `.` or `..` segments",
            ));
        }
    }
    let query = partitioning.as_ref().map(|p| p.query.clone());
    let mut partitioner = None;
    match &query {
        Some(q) => {
            let part = crate::spec::Partitioner::new(q).map_err(|m| {
                src.error_at_path(
                    &at(&[key("partitioning"), key("query")]),
                    format!("partitioning.query: {m}"),
                )
            })?;
            if let Some(keys) = part.keys() {
                if let Some(missing) = prefix.query_keys().find(|k| !keys.contains(k)) {
                    return Err(src.error_at_path(
                        &at(&[key("sink"), key("prefix")]),
                        format!("prefix uses partitionKeyFromQuery:{missing}, which partitioning.query does not produce (it produces: {})", keys.join(", ")),
                    ));
                }
            }
            partitioner = Some(Compiled::new(part));
        }
        None => {
            if let Some(k) = prefix.query_keys().next() {
                return Err(src.error_at_path(
                    &at(&[key("sink"), key("prefix")]),
                    format!("prefix uses partitionKeyFromQuery:{k} but the pipeline has no partitioning.query"),
                ));
            }
        }
    }
    let max_active_partitions = partitioning
        .as_ref()
        .map(|p| p.max_active_partitions)
        .unwrap_or(10_000);
    if max_active_partitions == 0 || max_active_partitions > 1_000_000 {
        return Err(src.error_at_path(
            &at(&[key("partitioning"), key("max_active_partitions")]),
            "max_active_partitions must be between 1 and 1000000",
        ));
    }
    let b = buffer.unwrap_or(BufferToml {
        size: default_buffer_size(),
        interval: default_buffer_interval(),
    });
    if b.size.0 == 0 || b.size.0 > 4 << 30 {
        return Err(src.error_at_path(
            &at(&[key("buffer"), key("size")]),
            "buffer.size must be between 1B and 4GiB",
        ));
    }
    if b.interval.0.is_zero() {
        return Err(src.error_at_path(
            &at(&[key("buffer"), key("interval")]),
            "buffer.interval must be positive",
        ));
    }
    Ok(Some(DeliverySpec {
        query,
        max_active_partitions,
        size: b.size.0,
        interval: b.interval.0,
        prefix: h.prefix,
        error_prefix: h.error_prefix,
        compression: h.compression,
        compression_level: h.compression_level,
        delimiter: h.delimiter,
        format,
        retry_duration: h.retry_duration.map(|d| d.0),
        partitioner,
        prefix_template: Compiled::new(prefix),
        error_template: Compiled::new(error_template),
    }))
}

#[allow(clippy::too_many_arguments)]
fn build_component(
    src: &SourceFile,
    pipeline: &str,
    id: &str,
    kind: Kind,
    t: PluginToml,
    path: &[Seg],
    registry: &Registry,
    base_dir: &Path,
) -> Result<ComponentSpec, ConfigError> {
    let mut plugin_path = path.to_vec();
    plugin_path.push(key("plugin"));
    let entry = registry
        .lookup(kind, &t.plugin)
        .map_err(|msg| src.error_at_path(&plugin_path, format!("{id}: {msg}")))?;
    let json = serde_json::to_string(&t.options).map_err(|e| {
        src.error_at_path(path, format!("{id}: options cannot be passed as JSON: {e}"))
    })?;
    // The plugin validates its own options (and e.g. compiles its jq program) in create.
    crate::plugins::validate_config(&entry, pipeline, id, base_dir, &json).map_err(|e| {
        let mut p = path.to_vec();
        let mut field = e.field.clone();
        // serde's "unknown field `x`" names the key in the message, not in the path.
        if let Some(rest) = e.message.strip_prefix("unknown field `") {
            if let Some(end) = rest.find('`') {
                let unknown = &rest[..end];
                if field.is_empty() {
                    field = unknown.to_string();
                } else if !field.ends_with(unknown) {
                    field = format!("{field}.{unknown}");
                }
            }
        }
        p.extend(
            field
                .split('.')
                .filter(|s| !s.is_empty())
                .map(|s| match s.parse::<usize>() {
                    Ok(i) => Seg::Index(i),
                    Err(_) => key(s),
                }),
        );
        let what = if e.field.is_empty() {
            String::new()
        } else {
            format!("{}: ", e.field)
        };
        src.error_at_path(
            &p,
            format!("{id} (plugin `{}`): {what}{}", t.plugin, e.message),
        )
    })?;
    Ok(ComponentSpec {
        id: id.to_string(),
        plugin: t.plugin,
        kind,
        config_json: json,
        replayable: entry.replayable,
    })
}
