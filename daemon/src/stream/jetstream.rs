//! Stream storage on a NATS JetStream cluster (issue #12): the second implementation of
//! [`ShardStorage`], for streams that outgrow one machine's disk and uptime.
//!
//! Each shard is one JetStream stream of its own (`<prefix><stream>_<shard id>`, one
//! subject), replicated by JetStream's Raft to `replicas` servers. One JetStream stream per
//! shard rather than one per Kinesis stream (a subject per shard) because JetStream's
//! sequence numbers are per stream: per shard they are exactly the shard log's dense,
//! shard-local numbers (shard sequence = JetStream sequence − 1), retention and `max_bytes`
//! apply per shard as they do locally, and each shard's Raft group can be led by another
//! server, spreading the write load the way Kinesis spreads shards.
//!
//! A record is one message: `1 | arrival ms (i64 LE) | key length (u32 LE) | key | data`.
//! Appends are pipelined — every message of a batch is sent before any acknowledgement is
//! awaited ([`ShardStorage::commit`] awaits them), so a PutRecords touching many shards
//! waits for one round of quorum writes, not one per shard — and every message carries
//! `Nats-Expected-Last-Sequence`, so a batch is numbered contiguously or refused: a writer
//! elsewhere in the cluster that appended in between makes the batch fail (retryable)
//! instead of interleaving. Reads ask the stream leader (`STREAM.MSG.GET`), so a record
//! is readable as soon as its append was acknowledged.
//!
//! The calls of [`ShardStorage`] are blocking; the client is async: a small runtime of the
//! cluster's own runs the client, and every call waits for its work at most `timeout`.

use super::storage::{Appended, Entry, ShardStorage, StorageError, StoredRecord};
use async_nats::jetstream;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the cluster is and how shards are kept there (the daemon's `[jetstream]` table).
#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    /// Server URLs (`nats://host:port`), any of the cluster's.
    pub servers: Vec<String>,
    /// Copies of every shard (JetStream allows 1 to 5).
    pub replicas: usize,
    /// Prefix of every JetStream stream name and subject sluice makes.
    pub prefix: String,
    /// How long one call waits for the cluster before failing (retryable).
    pub timeout: Duration,
    /// This node's name in shard leases (unique among the nodes; default: host name and
    /// a random suffix, new at every start).
    pub node: Option<String>,
    /// How long a shard lease lasts unrenewed (renewed every third of it).
    pub lease_duration: Duration,
    /// How this node proves who it is to the servers.
    pub auth: JetStreamAuth,
    /// TLS to the servers: required, with these trust roots and client certificate.
    pub tls: Option<JetStreamTls>,
}

/// How a node authenticates to the NATS servers (at most one way).
#[derive(Debug, Clone, Default)]
pub enum JetStreamAuth {
    /// None (servers without `authorization`).
    #[default]
    None,
    /// `user` and `password`.
    UserPassword(String, String),
    /// A bearer token.
    Token(String),
    /// A file holding an NKey user seed: the node signs the server's nonce with it.
    NKeySeedFile(std::path::PathBuf),
    /// A NATS credentials file: a user JWT and its seed (operator-mode servers).
    CredentialsFile(std::path::PathBuf),
}

/// Largest credentials file read (a user JWT with many permissions is a few KiB).
const MAX_CREDS_FILE: u64 = 64 * 1024;

/// Reads at most `max` bytes of text from `path` (more is an error naming `what`).
fn read_small(path: &std::path::Path, max: u64, what: &str) -> Result<String, StorageError> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_string(&mut text))
        .map_err(|e| err(what, e))?;
    if text.len() as u64 > max {
        return Err(err(what, format_args!("larger than {max} bytes")));
    }
    Ok(text)
}

/// The client options of the credentials file `path`, checked before connecting.
fn read_credentials(path: &std::path::Path) -> Result<async_nats::ConnectOptions, StorageError> {
    let what = format!("[jetstream] credentials_file {}", path.display());
    let text = read_small(path, MAX_CREDS_FILE, &what)?;
    async_nats::ConnectOptions::with_credentials(&text).map_err(|e| {
        err(
            &what,
            format_args!("{e} (expected a user JWT and seed, as `nsc generate creds` writes)"),
        )
    })
}

/// Largest NKey seed file read (a seed is 58 characters; `nk` files may add a newline).
const MAX_SEED_FILE: u64 = 4096;

/// The NKey user seed in `path`, checked: what is wrong with it names the file (the
/// client would only log a bad seed and then fail as unauthorized).
fn read_seed(path: &std::path::Path) -> Result<String, StorageError> {
    let what = format!("[jetstream] nkey_seed_file {}", path.display());
    let text = read_small(path, MAX_SEED_FILE, &what)?;
    let seed = text.trim();
    if !seed.starts_with("SU") {
        return Err(err(
            &what,
            "not an NKey user seed (one line starting with SU, as `nk -gen user` writes)",
        ));
    }
    nkeys::KeyPair::from_seed(seed)
        .map_err(|e| err(&what, format_args!("not a valid NKey seed: {e}")))?;
    Ok(seed.to_string())
}

/// TLS to the NATS servers.
#[derive(Debug, Clone, Default)]
pub struct JetStreamTls {
    /// Trust roots (PEM) for the servers' certificates (default: the system's).
    pub ca_file: Option<std::path::PathBuf>,
    /// This node's certificate and key (PEM), for servers that verify clients.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        JetStreamOptions {
            servers: vec!["nats://127.0.0.1:4222".into()],
            replicas: 3,
            prefix: "SLUICE".into(),
            timeout: Duration::from_secs(10),
            node: None,
            lease_duration: Duration::from_secs(10),
            auth: JetStreamAuth::None,
            tls: None,
        }
    }
}

/// Bytes a record's message adds to its key and data.
const FRAME: usize = 1 + 8 + 4;
/// The frame's version byte.
const V1: u8 = 1;
/// Messages fetched at once by a read.
const READ_WINDOW: usize = 64;

fn err(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Cluster(format!("{what}: {e}"))
}

/// Counts a failed call to the cluster (`op`: publish, read, info, purge).
fn failed(op: &'static str) {
    metrics::counter!("sluice_jetstream_errors_total", "op" => op).increment(1);
}

/// The subject a sealed shard's JetStream stream listens on instead of its own: appends
/// to the shard's subject find no stream (refused at once), while reads, retention and
/// deletion work on the stream as before — unlike JetStream's own `sealed`, which would
/// also stop retention from removing the shard's old records.
fn sealed_subject(subject: &str) -> String {
    format!("{subject}.sealed")
}

/// A JetStream stream name or subject token for `name`: letters, digits and `-` kept,
/// every other byte `_XX` (hex) — reversible, and never `.`, `*`, `>` or a space.
pub(super) fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// One connection to the cluster, shared by every shard of this daemon.
pub struct Cluster {
    rt: Option<tokio::runtime::Runtime>,
    js: jetstream::Context,
    opts: JetStreamOptions,
    max_payload: usize,
    /// Random per connection: with `batches`, makes every append's message ids unique
    /// across nodes and restarts.
    nonce: u64,
    batches: std::sync::atomic::AtomicU64,
    /// This node's name in shard leases.
    node: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // May be dropped inside another runtime: never block there.
            rt.shutdown_background();
        }
    }
}

impl Cluster {
    /// Connects to the cluster (waiting at most `timeout` for a first server to answer).
    pub fn connect(opts: JetStreamOptions) -> Result<Arc<Cluster>, StorageError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-jetstream")
            .enable_all()
            .build()
            .map_err(|e| err("cannot start the JetStream client's runtime", e))?;
        let servers = opts.servers.clone();
        let timeout = opts.timeout;
        let (auth, tls) = (opts.auth.clone(), opts.tls.clone());
        // Files are read and checked here, before any connection: their errors name them.
        let mut o = match auth {
            JetStreamAuth::None => async_nats::ConnectOptions::new(),
            JetStreamAuth::UserPassword(u, p) => {
                async_nats::ConnectOptions::with_user_and_password(u, p)
            }
            JetStreamAuth::Token(t) => async_nats::ConnectOptions::with_token(t),
            JetStreamAuth::NKeySeedFile(f) => async_nats::ConnectOptions::with_nkey(read_seed(&f)?),
            JetStreamAuth::CredentialsFile(f) => read_credentials(&f)?,
        };
        #[cfg(feature = "tls")]
        if tls.is_some() {
            sluice_plugin_http::install_crypto_provider();
        }
        let client = run_on(&rt, timeout, async move {
            if let Some(t) = tls {
                o = o.require_tls(true);
                if let Some(ca) = t.ca_file {
                    o = o.add_root_certificates(ca);
                }
                if let Some((cert, key)) = t.client {
                    o = o.add_client_certificate(cert, key);
                }
            }
            o.name("sluiced")
                .connection_timeout(timeout)
                .request_timeout(Some(timeout))
                .connect(servers.as_slice())
                .await
                .map_err(std::io::Error::other)
        })?
        .map_err(|e| err("cannot connect to the JetStream cluster", e))?;
        let max_payload = client.server_info().max_payload;
        // `sluice_jetstream_connected`, kept current by a task of the client's runtime.
        let watched = client.clone();
        rt.spawn(async move {
            let up = metrics::gauge!("sluice_jetstream_connected");
            loop {
                let c = watched.connection_state() == async_nats::connection::State::Connected;
                up.set(if c { 1.0 } else { 0.0 });
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        // The context spawns its acknowledgement task: inside the client's runtime.
        let js = {
            let _in = rt.enter();
            jetstream::ContextBuilder::new()
                .timeout(timeout)
                .build(client)
        };
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| err("no randomness for message ids", e))?;
        let nonce = u64::from_le_bytes(seed);
        let node = opts.node.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default();
            format!("{}-{:08x}", token(&host), nonce as u32)
        });
        Ok(Arc::new(Cluster {
            rt: Some(rt),
            js,
            opts,
            max_payload,
            nonce,
            batches: std::sync::atomic::AtomicU64::new(0),
            node,
        }))
    }

    /// Whether the client is connected to a server of the cluster now (`/readyz`,
    /// `sluice_jetstream_connected`).
    pub fn connected(&self) -> bool {
        self.js.client().connection_state() == async_nats::connection::State::Connected
    }

    /// This node's name in shard leases.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// How long a shard lease lasts unrenewed.
    pub fn lease_duration(&self) -> Duration {
        self.opts.lease_duration
    }

    pub(super) fn context(&self) -> jetstream::Context {
        self.js.clone()
    }

    pub(super) fn prefix(&self) -> &str {
        &self.opts.prefix
    }

    pub(super) fn replicas(&self) -> usize {
        self.opts.replicas
    }

    /// Runs `f` on the client's runtime and waits for it, at most the call timeout.
    pub(super) fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, StorageError> {
        match &self.rt {
            Some(rt) => run_on(rt, self.opts.timeout, f),
            None => Err(StorageError::Cluster(
                "the JetStream client was stopped".into(),
            )),
        }
    }

    /// Refuses a stream whose largest record (`max_record` bytes of data) the servers'
    /// `max_payload` could not carry.
    pub fn check_record_size(&self, max_record: usize) -> Result<(), StorageError> {
        if max_record + FRAME > self.max_payload {
            return Err(StorageError::Cluster(format!(
                "the JetStream servers' max_payload ({} bytes) is below the stream's largest record ({} bytes with its key and framing); raise max_payload in the servers' configuration",
                self.max_payload,
                max_record + FRAME
            )));
        }
        Ok(())
    }

    /// The JetStream stream holding `shard` of `stream` (of its `generation`-th making
    /// through the API; 0: a stream of the nodes' config files).
    fn stream_name(&self, stream: &str, generation: u64, shard: &str) -> String {
        match generation {
            0 => format!("{}{}_{}", self.opts.prefix, token(stream), token(shard)),
            g => format!("{}{}_{g}_{}", self.opts.prefix, token(stream), token(shard)),
        }
    }

    /// The subject of `shard` of `stream` (as [`Cluster::stream_name`]).
    fn subject(&self, stream: &str, generation: u64, shard: &str) -> String {
        let p = token(&self.opts.prefix);
        match generation {
            0 => format!("{p}.{}.{}", token(stream), token(shard)),
            g => format!("{p}.{}.{g}.{}", token(stream), token(shard)),
        }
    }

    /// Opens the storage of `shard` of `stream`, creating its JetStream stream (with
    /// `replicas` copies) when it does not exist yet, or bringing its settings up to date.
    /// `max_bytes` caps the shard (the servers drop the oldest records past it). A
    /// `closed` shard (a resharding's parent) is opened sealed ([`ShardStorage::seal`]).
    /// A `generation` above 0 is a stream made through the API: a stream made again under
    /// a deleted one's name gets JetStream streams and subjects of its own, so that a node
    /// still serving the deleted one cannot write into the new one.
    /// Without `create`, a JetStream stream that does not exist is an error (a stream made
    /// through the API: only the node making it, or resharding it, makes its storage —
    /// another would bring a deleted one's back).
    #[allow(clippy::too_many_arguments)]
    pub fn open_shard(
        self: &Arc<Self>,
        stream: &str,
        generation: u64,
        create: bool,
        shard: &str,
        max_record: usize,
        max_bytes: Option<u64>,
        closed: bool,
    ) -> Result<JetStreamShard, StorageError> {
        self.check_record_size(max_record)?;
        let name = self.stream_name(stream, generation, shard);
        let subject = self.subject(stream, generation, shard);
        let config = jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![if closed {
                sealed_subject(&subject)
            } else {
                subject.clone()
            }],
            storage: jetstream::stream::StorageType::File,
            num_replicas: self.opts.replicas,
            max_bytes: max_bytes.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            max_messages: -1,
            max_messages_per_subject: -1,
            max_message_size: -1,
            discard: jetstream::stream::DiscardPolicy::Old,
            retention: jetstream::stream::RetentionPolicy::Limits,
            description: Some(format!("sluice stream `{stream}`, {shard}")),
            // Message ids only chain a batch together (each is used once): the servers
            // need not remember them long.
            duplicate_window: Duration::from_secs(1),
            ..Default::default()
        };
        let handle = self
            .ensure_stream(config, create)
            .map_err(|e| err(&format!("cannot open JetStream stream {name}"), e))?;
        let shard = JetStreamShard {
            cluster: Arc::clone(self),
            stream: handle,
            subject,
            state: Mutex::new(State::default()),
            pending: Mutex::new(HashMap::new()),
            retired: AtomicBool::new(false),
            publish_seconds: metrics::histogram!(
                "sluice_jetstream_publish_seconds",
                "stream" => stream.to_string(),
                "shard" => shard.to_string()
            ),
        };
        shard.refresh()?;
        Ok(shard)
    }

    /// The JetStream stream of `config`: opened as it is when its settings are already
    /// these (the usual case, and the only one where another node may have created it a
    /// moment ago — an update then could wait for its Raft group), else created or
    /// updated; a few tries within the call's timeout.
    pub(super) fn ensure_stream(
        &self,
        config: jetstream::stream::Config,
        create: bool,
    ) -> Result<jetstream::stream::Stream, StorageError> {
        let js = self.js.clone();
        self.run(async move {
            let name = config.name.clone();
            let mut last = String::new();
            for attempt in 0..5u32 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                let done = match js.get_stream(&name).await {
                    Ok(mut st) => {
                        // A shard's stream sealed by a resharding stays sealed: a node that
                        // opens it as open (its topology not updated yet) must not unseal
                        // it, whatever else it changes.
                        let mut config = config.clone();
                        let (same, sealed) = match st.info().await {
                            Ok(i) => {
                                let sealed = matches!(
                                    (&i.config.subjects[..], &config.subjects[..]),
                                    ([have], [want]) if *have == sealed_subject(want)
                                );
                                let same = i.config.max_bytes == config.max_bytes
                                    && i.config.num_replicas == config.num_replicas
                                    && (i.config.subjects == config.subjects || sealed);
                                (same, sealed.then(|| i.config.subjects.clone()))
                            }
                            Err(_) => (false, None),
                        };
                        if same {
                            return Ok(st);
                        }
                        if let Some(subjects) = sealed {
                            config.subjects = subjects;
                        }
                        js.update_stream(config)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                    Err(e)
                        if !create
                            && matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
                    {
                        return Err(format!("{name} does not exist (its stream was deleted)"));
                    }
                    Err(_) => js
                        .create_stream(config.clone())
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                };
                match done {
                    Ok(()) => return js.get_stream(&name).await.map_err(|e| e.to_string()),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })?
        .map_err(StorageError::Cluster)
    }

    /// Deletes the JetStream stream of `shard` of `stream` (the stream was deleted, or
    /// the shard expired).
    pub fn delete_shard(
        &self,
        stream: &str,
        generation: u64,
        shard: &str,
    ) -> Result<(), StorageError> {
        self.delete_stream(&self.stream_name(stream, generation, shard))
            .map(|_| ())
    }

    /// Deletes JetStream stream `name`; whether it was there (gone already is no error).
    fn delete_stream(&self, name: &str) -> Result<bool, StorageError> {
        let (js, n) = (self.js.clone(), name.to_string());
        match self.run(async move { js.delete_stream(&n).await })? {
            Ok(_) => Ok(true),
            Err(e) => match e.kind() {
                jetstream::context::DeleteStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(false)
                }
                _ => Err(err("cannot delete a shard's JetStream stream", e)),
            },
        }
    }
}

impl Cluster {
    /// Deletes whatever JetStream streams are left of streams made through the API and
    /// deleted since: `dead` holds (stream name, highest dead generation) — every
    /// generation up to it is gone (a tombstone's own; below a live one, the earlier
    /// ones). A node that died between a deletion's tombstone and its JetStream deletes,
    /// or whose deletes failed, left them. Returns the entries of `dead` now fully
    /// removed (one whose deletes failed is left for a later call).
    pub fn sweep_deleted(
        &self,
        dead: &[(String, u64)],
    ) -> Result<Vec<(String, u64)>, StorageError> {
        use futures_util::TryStreamExt as _;
        let js = self.js.clone();
        let names: Vec<String> = self
            .run(async move { js.stream_names().try_collect::<Vec<String>>().await })?
            .map_err(|e| err("cannot list the cluster's JetStream streams", e))?;
        let mut done = Vec::new();
        for (stream, upto) in dead {
            let mut failed = false;
            for name in &names {
                if !of_dead_generation(name, &self.opts.prefix, stream, *upto) {
                    continue;
                }
                match self.delete_stream(name) {
                    Ok(true) => {
                        tracing::info!(jetstream_stream = %name, "deleted a JetStream stream left by a deleted stream")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(jetstream_stream = %name, error = %e, "cannot delete a JetStream stream left by a deleted stream");
                        failed = true;
                    }
                }
            }
            if !failed {
                done.push((stream.clone(), *upto));
            }
        }
        Ok(done)
    }
}

/// Whether JetStream stream `name` holds a shard of API stream `stream` (under `prefix`)
/// of a generation from 1 to `upto`: `<prefix><token>_<generation>_shardId-<digits>`.
/// For valid stream names a generation's `_<digits>_` cannot be an escape of the name's
/// own bytes (`_5F`, `_2E`), and a shard's token has no `_`.
fn of_dead_generation(name: &str, prefix: &str, stream: &str, upto: u64) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some((generation, shard)) = name
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix(token(stream).as_str()))
        .and_then(|r| r.strip_prefix('_'))
        .and_then(|r| r.split_once('_'))
    else {
        return false;
    };
    digits(generation)
        && generation.parse::<u64>().is_ok_and(|g| g >= 1 && g <= upto)
        && shard.strip_prefix("shardId-").is_some_and(digits)
}

fn run_on<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    timeout: Duration,
    f: impl Future<Output = T> + Send + 'static,
) -> Result<T, StorageError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(tokio::time::timeout(timeout, f).await);
    });
    match rx.recv() {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(StorageError::Cluster(format!(
            "the JetStream cluster did not answer within {timeout:?}"
        ))),
        Err(_) => Err(StorageError::Cluster("the JetStream client stopped".into())),
    }
}

/// What a shard knows of its JetStream stream (refreshed from the server on open, after a
/// failed append and on [`ShardStorage::sync`]).
#[derive(Debug, Default)]
struct State {
    /// JetStream's first sequence held (0 or `last + 1` when empty).
    first: u64,
    /// JetStream's last sequence given (0: none yet), counting this node's appends sent
    /// and not yet acknowledged.
    last: u64,
    /// The last sequence known stored (from the server, or acknowledged): reads stop
    /// here — a message sent and not yet stored is not there to read, and reading past it
    /// would skip it.
    stored: u64,
    records: u64,
    bytes: u64,
    first_arrival: Option<i64>,
    last_arrival: Option<i64>,
    /// An append failed: what the server holds is unknown until the next refresh.
    stale: bool,
    next_commit: u64,
    /// When the state was last read from the server.
    refreshed: Option<std::time::Instant>,
    /// A sealed shard's end (JetStream's sequence of its last record): what comes after
    /// it is the seal's marker ([`ShardStorage::seal`]), not records.
    end: Option<u64>,
}

/// The body of a seal's marker (on the sealed subject; never a record: readers skip it).
const MARKER: &[u8] = b"sluice-seal";

/// How often a read at the end of what this node knows asks the server whether other
/// nodes appended more.
const TIP_REFRESH: Duration = Duration::from_millis(200);

type Acks = Vec<jetstream::context::PublishAckFuture>;

/// How a batch's acknowledgements came back.
enum Outcome {
    /// Every message stored, numbered as sent.
    Stored,
    /// Every message refused for its expected sequence: nothing stored.
    Conflict,
    /// No stream listens on the shard's subject any more: nothing stored.
    Sealed,
    /// The first so many stored, the rest refused (by another writer's appends, or —
    /// `true` — by a seal).
    Partial(usize, bool),
    /// Anything else (a prefix may be stored).
    Failed(String),
}

/// One shard's records in its JetStream stream.
pub struct JetStreamShard {
    cluster: Arc<Cluster>,
    stream: jetstream::stream::Stream,
    subject: String,
    state: Mutex<State>,
    /// Appends sent and not yet committed: their acknowledgements, by commit token, with
    /// the JetStream sequence the first one must have.
    pending: Mutex<HashMap<u64, (u64, Acks, std::time::Instant)>>,
    retired: AtomicBool,
    publish_seconds: metrics::Histogram,
}

fn frame(e: &Entry<'_>, arrival: i64) -> bytes::Bytes {
    let mut b = Vec::with_capacity(FRAME + e.key.len() + e.data.len());
    b.push(V1);
    b.extend_from_slice(&arrival.to_le_bytes());
    b.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
    b.extend_from_slice(e.key);
    b.extend_from_slice(e.data);
    b.into()
}

/// A message back into a record; `None` when it is not one sluice wrote.
fn unframe(seq: u64, b: &[u8]) -> Option<StoredRecord> {
    let (&v, rest) = b.split_first()?;
    if v != V1 || rest.len() < 12 {
        return None;
    }
    let arrival_ms = i64::from_le_bytes(rest[..8].try_into().ok()?);
    let klen = u32::from_le_bytes(rest[8..12].try_into().ok()?) as usize;
    let rest = &rest[12..];
    if klen > rest.len() {
        return None;
    }
    Some(StoredRecord {
        seq: seq.checked_sub(1)?,
        arrival_ms,
        key: rest[..klen].to_vec(),
        data: rest[klen..].to_vec(),
    })
}

impl JetStreamShard {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the stream's state (and its first and last records' arrival times) from the
    /// server.
    fn refresh(&self) -> Result<(), StorageError> {
        let s = self.stream.clone();
        let info = self
            .cluster
            .run(async move { s.get_info().await })
            .inspect_err(|_| failed("info"))?
            .map_err(|e| {
                failed("info");
                err("cannot read a shard's JetStream state", e)
            })?;
        let mut st = info.state;
        // A sealed stream ends before its seal's marker (looked up once).
        let mut end = self.lock().end;
        if end.is_none() && info.config.subjects == [sealed_subject(&self.subject)] {
            end = self.first_marker()?.map(|m| m.saturating_sub(1));
        }
        if let Some(e) = end {
            if st.last_sequence > e {
                let markers = st.last_sequence - e;
                st.messages = if st.first_sequence > e {
                    0
                } else {
                    st.messages.saturating_sub(markers)
                };
                st.first_sequence = st.first_sequence.min(e + 1);
                st.last_sequence = e;
            }
        }
        // Arrival times are read again only where the ends moved.
        let (known_first, known_last, fa, la) = {
            let s = self.lock();
            (s.first, s.last, s.first_arrival, s.last_arrival)
        };
        let (first_arrival, last_arrival) = if st.messages == 0 {
            (None, None)
        } else {
            (
                match fa {
                    Some(a) if known_first == st.first_sequence => Some(a),
                    _ => self.get(st.first_sequence)?.map(|r| r.arrival_ms),
                },
                match la {
                    Some(a) if known_last == st.last_sequence => Some(a),
                    _ => self.get(st.last_sequence)?.map(|r| r.arrival_ms),
                },
            )
        };
        let mut s = self.lock();
        s.end = end;
        s.first = st.first_sequence;
        s.last = st.last_sequence;
        s.stored = st.last_sequence;
        s.records = st.messages;
        s.bytes = st.bytes;
        s.first_arrival = first_arrival;
        s.last_arrival = last_arrival.or(s.last_arrival);
        s.stale = false;
        s.refreshed = Some(std::time::Instant::now());
        Ok(())
    }

    /// The sequence of the first message on the sealed subject (the seal's marker), if
    /// there is one.
    fn first_marker(&self) -> Result<Option<u64>, StorageError> {
        let (s, sealed) = (self.stream.clone(), sealed_subject(&self.subject));
        match self
            .cluster
            .run(async move { s.get_first_raw_message_by_subject(sealed, 1).await })?
        {
            Ok(m) => Ok(Some(m.sequence)),
            Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                Ok(None)
            }
            Err(e) => {
                failed("seal");
                Err(err("cannot read a shard's seal", e))
            }
        }
    }

    /// Writes the seal's marker on the sealed subject — until the stream's leader takes
    /// it (it may not have applied the update yet), within the cluster's timeout.
    fn publish_marker(&self) -> Result<(), StorageError> {
        let deadline = std::time::Instant::now() + self.cluster.opts.timeout;
        loop {
            let (js, sealed) = (self.cluster.js.clone(), sealed_subject(&self.subject));
            let sent = self.cluster.run(async move {
                match js.publish(sealed, bytes::Bytes::from_static(MARKER)).await {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })?;
            match sent {
                Ok(()) => return Ok(()),
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    failed("seal");
                    return Err(StorageError::Cluster(format!(
                        "cannot write a shard's seal: {e}"
                    )));
                }
            }
        }
    }

    /// Whether the shard's stream listens on its sealed subject (asked of the server).
    fn is_sealed(&self) -> Result<bool, StorageError> {
        let s = self.stream.clone();
        let info = self
            .cluster
            .run(async move { s.get_info().await })?
            .map_err(|e| {
                failed("info");
                err("cannot read a shard's JetStream state", e)
            })?;
        Ok(info.config.subjects == [sealed_subject(&self.subject)])
    }

    /// The record at JetStream sequence `seq`, if the stream holds it.
    fn get(&self, seq: u64) -> Result<Option<StoredRecord>, StorageError> {
        let s = self.stream.clone();
        match self
            .cluster
            .run(async move { s.get_raw_message(seq).await })?
        {
            Ok(m) => Ok(unframe(m.sequence, &m.payload)),
            Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                Ok(None)
            }
            Err(e) => {
                failed("read");
                Err(err("cannot read from a shard's JetStream stream", e))
            }
        }
    }
}

impl ShardStorage for JetStreamShard {
    fn append_unsynced(&self, entries: &[Entry<'_>]) -> Result<Appended, StorageError> {
        if self.retired.load(Ordering::Acquire) {
            return Err(StorageError::Retired);
        }
        if self.lock().stale {
            self.refresh()?;
        }
        let mut s = self.lock();
        let base = s.last;
        let mut arrival = s.last_arrival.unwrap_or(i64::MIN);
        let mut arrivals = Vec::with_capacity(entries.len());
        let mut messages = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            arrival = arrival.max(e.arrival_ms);
            arrivals.push(arrival);
            messages.push((base + i as u64, frame(e, arrival)));
        }
        let js = self.cluster.js.clone();
        let subject = self.subject.clone();
        let batch = format!(
            "{:016x}-{}",
            self.cluster.nonce,
            self.cluster.batches.fetch_add(1, Ordering::Relaxed)
        );
        // Sent in order on one connection. The first expects the sequence this node
        // knows last, each later one the id of the one before it (ids unique to this
        // batch): once one is refused — another node appended first — every later one is
        // too, so the batch is numbered base+1.. contiguously or not stored from the first
        // refusal on. (Expecting sequences alone could let a later message through where
        // the other node's appends happened to fill the gap.)
        let sent = self.cluster.run(async move {
            let mut acks = Vec::with_capacity(messages.len());
            for (i, (expect, payload)) in messages.into_iter().enumerate() {
                let m = jetstream::message::PublishMessage::build()
                    .payload(payload)
                    .message_id(format!("{batch}-{i}"));
                let m = match i {
                    0 => m.expected_last_sequence(expect),
                    _ => m.expected_last_message_id(format!("{batch}-{}", i - 1)),
                };
                acks.push(js.send_publish(subject.clone(), m).await?);
            }
            Ok::<_, jetstream::context::PublishError>(acks)
        });
        let acks = match sent {
            Ok(Ok(acks)) => acks,
            Ok(Err(e)) => {
                s.stale = true;
                failed("publish");
                return Err(err("cannot append to a shard's JetStream stream", e));
            }
            Err(e) => {
                s.stale = true;
                failed("publish");
                return Err(e);
            }
        };
        let n = entries.len() as u64;
        s.last += n;
        if s.first == 0 {
            s.first = 1;
        }
        s.records += n;
        s.bytes += entries
            .iter()
            .map(|e| (FRAME + e.key.len() + e.data.len()) as u64)
            .sum::<u64>();
        if !arrivals.is_empty() {
            s.first_arrival = s.first_arrival.or(arrivals.first().copied());
            s.last_arrival = arrivals.last().copied();
        }
        let commit = s.next_commit;
        s.next_commit += 1;
        drop(s);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(commit, (base + 1, acks, std::time::Instant::now()));
        Ok(Appended {
            first: base,
            arrivals,
            commit,
        })
    }

    fn commit(&self, commit: u64) -> Result<(), StorageError> {
        let Some((first, acks, sent)) = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&commit)
        else {
            return Ok(());
        };
        let count = acks.len() as u64;
        // Every acknowledgement is awaited, even after a failure: whether *all* were
        // refused for their expected sequence (nothing stored: a conflict, appended again
        // by the caller), or a prefix was stored and the rest refused (chained, a refusal
        // refuses every later message), depends on all of them.
        let done = self.cluster.run(async move {
            let mut stored = 0usize;
            let mut sealed = 0usize;
            let mut first_err = None;
            let n = acks.len();
            for (i, ack) in acks.into_iter().enumerate() {
                match ack.await {
                    Ok(a) if a.sequence == first + i as u64 && stored == i => stored += 1,
                    Ok(a) => {
                        stored += 1;
                        first_err.get_or_insert(format!(
                            "stored as {}, not {} (another writer appended in between)",
                            a.sequence,
                            first + i as u64
                        ));
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            jetstream::context::PublishErrorKind::WrongLastSequence
                                | jetstream::context::PublishErrorKind::WrongLastMessageId
                        ) =>
                    {
                        // Refused for its place: the rest of the batch is not stored.
                    }
                    // No stream listens on the shard's subject: sealed by a resharding.
                    Err(e) if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound => {
                        sealed += 1;
                    }
                    Err(e) => {
                        first_err.get_or_insert(e.to_string());
                    }
                }
            }
            match first_err {
                None if stored == n => Outcome::Stored,
                None if stored == 0 && sealed > 0 => Outcome::Sealed,
                None if stored == 0 => Outcome::Conflict,
                None => Outcome::Partial(stored, sealed > 0),
                Some(e) => Outcome::Failed(e),
            }
        });
        match done {
            Ok(Outcome::Stored) => {
                self.publish_seconds.record(sent.elapsed().as_secs_f64());
                // Stored through this batch's last message — and so everything before it:
                // its first message expected the sequence before it.
                let mut s = self.lock();
                s.stored = s.stored.max((first + count).saturating_sub(1));
                Ok(())
            }
            Ok(Outcome::Conflict) => {
                self.lock().stale = true;
                metrics::counter!("sluice_jetstream_errors_total", "op" => "conflict").increment(1);
                Err(StorageError::Conflict)
            }
            Ok(Outcome::Sealed) => {
                self.lock().stale = true;
                // "No stream for the subject" is also what a stream electing a leader can
                // answer: closed only if the stream really moved to its sealed subject.
                if self.is_sealed()? {
                    Err(StorageError::Closed)
                } else {
                    failed("publish");
                    Err(StorageError::Cluster(
                        "no JetStream stream answered for the shard (a leader election?)".into(),
                    ))
                }
            }
            Ok(Outcome::Partial(k, sealed)) => {
                let mut s = self.lock();
                s.stored = s.stored.max(first + k as u64 - 1);
                s.stale = true;
                drop(s);
                if !sealed {
                    metrics::counter!("sluice_jetstream_errors_total", "op" => "conflict")
                        .increment(1);
                }
                Err(StorageError::Partial { stored: k, sealed })
            }
            Ok(Outcome::Failed(e)) => {
                self.lock().stale = true;
                failed("publish");
                Err(StorageError::Cluster(format!(
                    "a shard's JetStream stream did not store an append: {e}"
                )))
            }
            Err(e) => {
                self.lock().stale = true;
                failed("publish");
                Err(e)
            }
        }
    }

    fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        // Reaching the end of what this node knows: other nodes may have appended since
        // (at most one look every TIP_REFRESH).
        let tip = {
            let s = self.lock();
            from.saturating_add(max_records as u64) > s.stored
                && s.refreshed.is_none_or(|t| t.elapsed() >= TIP_REFRESH)
        };
        if tip {
            self.refresh()?;
        }
        let (first, last) = {
            let s = self.lock();
            (s.first.max(1), s.stored)
        };
        let mut next = from.saturating_add(1).max(first);
        let mut out: Vec<StoredRecord> = Vec::new();
        let mut bytes = 0usize;
        'windows: while out.len() < max_records && next <= last {
            let window = READ_WINDOW
                .min(max_records - out.len())
                .min((last - next + 1) as usize) as u64;
            let s = self.stream.clone();
            let got = self.cluster.run(async move {
                futures_util::future::join_all((next..next + window).map(|q| {
                    let s = s.clone();
                    async move { s.get_raw_message(q).await }
                }))
                .await
            })?;
            for (q, m) in (next..).zip(got) {
                let m = match m {
                    Ok(m) => m,
                    // Only retention removes messages, from the front: a message missing
                    // above the first one held is not readable *yet* (a server answering
                    // during a leader change), never a gap to read past — skipping it
                    // would lose it.
                    Err(e)
                        if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound =>
                    {
                        if !out.is_empty() {
                            return Ok(out);
                        }
                        self.refresh()?;
                        let first = self.lock().first;
                        if first > q {
                            next = first;
                            continue 'windows;
                        }
                        failed("read");
                        return Err(StorageError::Cluster(format!(
                            "message {q} of JetStream stream {} is not readable yet",
                            self.stream.cached_info().config.name
                        )));
                    }
                    Err(e) => {
                        failed("read");
                        return Err(err("cannot read from a shard's JetStream stream", e));
                    }
                };
                if m.subject.as_str() != self.subject {
                    // The seal's marker (after every record).
                    continue;
                }
                let Some(r) = unframe(m.sequence, &m.payload) else {
                    return Err(StorageError::Cluster(format!(
                        "message {} of JetStream stream {} is not a sluice record",
                        m.sequence,
                        self.stream.cached_info().config.name
                    )));
                };
                if !out.is_empty() && bytes + r.data.len() > max_bytes {
                    return Ok(out);
                }
                bytes += r.data.len();
                out.push(r);
                if out.len() >= max_records {
                    return Ok(out);
                }
            }
            next += window;
        }
        Ok(out)
    }

    fn seek_timestamp(&self, ts_ms: i64) -> Result<u64, StorageError> {
        let (first, last) = {
            let s = self.lock();
            (s.first.max(1), s.last)
        };
        // Arrival times never go back within a shard: the first at or after `ts_ms` by
        // bisection over JetStream sequences [lo, hi).
        let (mut lo, mut hi) = (first, last + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid)? {
                Some(r) if r.arrival_ms >= ts_ms => hi = mid,
                Some(_) => lo = mid + 1,
                // Removed by retention meanwhile: older than anything held.
                None => lo = mid + 1,
            }
        }
        Ok(lo - 1)
    }

    fn first_seq(&self) -> u64 {
        self.lock().first.max(1) - 1
    }

    fn next_seq(&self) -> u64 {
        self.lock().last
    }

    fn last_seq(&self) -> Option<u64> {
        let last = self.lock().last;
        last.checked_sub(1)
    }

    fn records(&self) -> u64 {
        self.lock().records
    }

    fn total_bytes(&self) -> u64 {
        self.lock().bytes
    }

    fn arrival_range(&self) -> Option<(i64, i64)> {
        let s = self.lock();
        match (s.records, s.first_arrival, s.last_arrival) {
            (0, _, _) => None,
            (_, Some(a), Some(b)) => Some((a, b)),
            _ => None,
        }
    }

    fn sync(&self) -> Result<(), StorageError> {
        // Acknowledged appends are on a quorum already; this catches up with what other
        // nodes appended and retention removed.
        self.refresh()
    }

    fn enforce_retention(
        &self,
        cutoff_ms: i64,
        max_bytes: Option<u64>,
    ) -> Result<usize, StorageError> {
        // `max_bytes` is the JetStream stream's own limit (set when the shard opens): the
        // servers drop the oldest records past it as they append.
        let _ = max_bytes;
        // Nothing old enough (the usual case, every few seconds): no bisection.
        if self.lock().first_arrival.is_none_or(|a| a >= cutoff_ms) {
            return Ok(0);
        }
        let keep_from = self.seek_timestamp(cutoff_ms)? + 1;
        if keep_from <= self.lock().first.max(1) {
            return Ok(0);
        }
        let s = self.stream.clone();
        let removed = self
            .cluster
            .run(async move { s.purge().sequence(keep_from).await })?
            .map_err(|e| {
                failed("purge");
                err("cannot apply retention to a shard's JetStream stream", e)
            })?
            .purged;
        self.refresh()?;
        Ok(removed as usize)
    }

    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    fn unretire(&self) {
        self.retired.store(false, Ordering::Release);
    }

    fn seal(&self) -> Result<u64, StorageError> {
        let mut config = self.stream.cached_info().config.clone();
        let sealed = sealed_subject(&self.subject);
        if config.subjects != [sealed.clone()] {
            config.subjects = vec![sealed];
            let js = self.cluster.js.clone();
            self.cluster
                .run(async move { js.update_stream(config).await })?
                .map_err(|e| {
                    failed("seal");
                    err("cannot seal a shard's JetStream stream", e)
                })?;
        }
        // The end, exactly: the stream's leader takes messages in one ordered queue and
        // takes the sealed subject only once the update is applied, so every append it
        // took on the shard's subject comes before the first message on the sealed one —
        // a marker, written by the first node to seal; every node finds the same one.
        let end = match self.first_marker()? {
            Some(m) => m,
            None => {
                self.publish_marker()?;
                self.first_marker()?.ok_or_else(|| {
                    StorageError::Cluster(format!(
                        "the seal of JetStream stream {} is not readable after it was written",
                        self.stream.cached_info().config.name
                    ))
                })?
            }
        };
        // JetStream numbers from 1: the marker's sequence less one is the number of
        // messages before it, the shard's end.
        let end = end.saturating_sub(1);
        self.lock().end = Some(end);
        self.refresh()?;
        Ok(end)
    }

    fn close(&self) -> Result<(), StorageError> {
        let tokens: Vec<u64> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        for t in tokens {
            self.commit(t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The sweep of deleted API streams matches their generations' shard streams only:
    /// not a live generation, not a config stream (no generation), not another stream
    /// whose name extends this one's.
    #[test]
    fn only_dead_generations_are_swept() {
        let dead = |name: &str| of_dead_generation(name, "SLUICE", "a_b", 2);
        assert!(dead("SLUICEa_5Fb_1_shardId-000000000000"));
        assert!(dead("SLUICEa_5Fb_2_shardId-000000000003"));
        for live in [
            "SLUICEa_5Fb_3_shardId-000000000000",
            "SLUICEa_5Fb_0_shardId-000000000000",
            "SLUICEa_5Fb_shardId-000000000000",
            "SLUICEa_5Fb_5F1_shardId-000000000000",
            "SLUICEa_5Fbc_1_shardId-000000000000",
            "SLUICEa_5Fb_1_shardId-",
            "SLUICEa_5Fb_1_other",
            "SLUICEa_5Fb_x_shardId-000000000000",
            "OTHERa_5Fb_1_shardId-000000000000",
        ] {
            assert!(!dead(live), "{live}");
        }
    }

    #[test]
    fn names_are_tokens_jetstream_accepts_and_never_collide() {
        assert_eq!(token("events"), "events");
        assert_eq!(token("a.b_c d"), "a_2Eb_5Fc_20d");
        assert_ne!(token("a_2E"), token("a."));
        let e = Entry {
            key: b"k",
            data: b"data",
            arrival_ms: 7,
        };
        let r = unframe(5, &frame(&e, 9)).unwrap();
        assert_eq!(
            (r.seq, r.arrival_ms, &r.key[..], &r.data[..]),
            (4, 9, &b"k"[..], &b"data"[..])
        );
        assert!(unframe(1, b"").is_none());
        assert!(unframe(1, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255]).is_none());
    }

    /// The storage conformance suite against a real three-server JetStream cluster on
    /// loopback (nats-server from Debian, installed by `scripts/install-test-deps`).
    #[test]
    fn a_jetstream_shard_conforms_on_a_three_server_cluster() {
        let cluster = crate::testing::NatsCluster::start(3);
        let c = Cluster::connect(JetStreamOptions {
            servers: cluster.urls(),
            replicas: 3,
            prefix: "T".into(),
            timeout: Duration::from_secs(10),
            ..JetStreamOptions::default()
        })
        .unwrap();
        let shard = cluster.wait_for(|| {
            c.open_shard(
                "events.x",
                0,
                true,
                "shardId-000000000000",
                1 << 20,
                None,
                false,
            )
        });
        super::super::storage::conformance(&shard, 0);
        // Reopened, it knows what the cluster holds.
        shard.unretire();
        let again = c
            .open_shard(
                "events.x",
                0,
                true,
                "shardId-000000000000",
                1 << 20,
                None,
                false,
            )
            .unwrap();
        assert_eq!((again.next_seq(), again.records()), (6, 6));
        assert_eq!(again.arrival_range(), Some((1_000, 6_000)));
        // Retention by time drops the oldest records; reads start past them.
        assert_eq!(again.enforce_retention(2_500, None).unwrap(), 2);
        assert_eq!(again.first_seq(), 2);
        assert_eq!(again.read(0, 10, 1 << 20).unwrap()[0].seq, 2);
        assert_eq!(again.seek_timestamp(0).unwrap(), 2);
        c.delete_shard("events.x", 0, "shardId-000000000000")
            .unwrap();
        c.delete_shard("events.x", 0, "shardId-000000000000")
            .unwrap();
        // `max_bytes`: the servers keep the newest records under the cap.
        let capped = c
            .open_shard(
                "capped",
                0,
                true,
                "shardId-000000000001",
                1 << 20,
                Some(4096),
                false,
            )
            .unwrap();
        let data = [7u8; 1000];
        for i in 0..10 {
            capped
                .append(&[Entry {
                    key: b"k",
                    data: &data,
                    arrival_ms: i,
                }])
                .unwrap();
        }
        capped.sync().unwrap();
        assert_eq!(capped.next_seq(), 10, "numbering goes on");
        assert!(capped.first_seq() >= 6, "{}", capped.first_seq());
        assert!(capped.total_bytes() <= 4096);
        assert_eq!(capped.read(0, 100, 1 << 20).unwrap().last().unwrap().seq, 9);
    }

    /// A node of `cluster`: its own connection, shards kept with `replicas` copies.
    pub(in crate::stream) fn node(
        cluster: &crate::testing::NatsCluster,
        replicas: usize,
        prefix: &str,
    ) -> Arc<Cluster> {
        Cluster::connect(JetStreamOptions {
            servers: cluster.urls(),
            replicas,
            prefix: prefix.into(),
            timeout: Duration::from_secs(10),
            ..JetStreamOptions::default()
        })
        .unwrap()
    }

    /// Two nodes appending to one shard: the one that meets the other's appends is
    /// refused with nothing stored (`Conflict`), numbers again and succeeds; both read
    /// every record, each once, in one order.
    #[test]
    fn two_nodes_append_to_one_shard_without_gaps_or_doubles() {
        let cluster = crate::testing::NatsCluster::start(3);
        let (a, b) = (node(&cluster, 3, "T"), node(&cluster, 3, "T"));
        let id = "shardId-000000000000";
        let sa = cluster.wait_for(|| a.open_shard("two", 0, true, id, 1 << 20, None, false));
        let sb = b
            .open_shard("two", 0, true, id, 1 << 20, None, false)
            .unwrap();
        let e = |data: &'static [u8]| Entry {
            key: b"k",
            data,
            arrival_ms: 1,
        };
        assert_eq!(sa.append(&[e(b"a1"), e(b"a2")]).unwrap().0, 0);
        assert!(matches!(
            sb.append(&[e(b"b1")]),
            Err(StorageError::Conflict)
        ));
        assert_eq!(sb.append(&[e(b"b1")]).unwrap().0, 2, "numbered after a's");
        assert!(matches!(
            sa.append(&[e(b"a3")]),
            Err(StorageError::Conflict)
        ));
        assert_eq!(sa.append(&[e(b"a3")]).unwrap().0, 3);
        for s in [&sa, &sb] {
            // What another node appended is seen at the next look at the server's state
            // (a read at the tip looks at most every TIP_REFRESH; `sync` looks now).
            s.sync().unwrap();
            let got: Vec<(u64, Vec<u8>)> = s
                .read(0, 10, 1 << 20)
                .unwrap()
                .into_iter()
                .map(|r| (r.seq, r.data))
                .collect();
            assert_eq!(
                got,
                [
                    (0, b"a1".to_vec()),
                    (1, b"a2".to_vec()),
                    (2, b"b1".to_vec()),
                    (3, b"a3".to_vec())
                ]
            );
        }
    }

    /// A shard sealed by one node refuses every node's appends with `Closed` (nothing
    /// stored), ends exactly after the last record either stored, and is still read,
    /// trimmed by retention, and opened sealed again — even by a node that thinks it open.
    #[test]
    fn a_sealed_shard_refuses_every_nodes_appends_and_keeps_its_records() {
        let cluster = crate::testing::NatsCluster::start(1);
        let (a, b) = (node(&cluster, 1, "S"), node(&cluster, 1, "S"));
        let id = "shardId-000000000000";
        let sa = cluster.wait_for(|| a.open_shard("p", 0, true, id, 1 << 20, None, false));
        let sb = b
            .open_shard("p", 0, true, id, 1 << 20, None, false)
            .unwrap();
        let e = |data: &'static [u8], arrival_ms: i64| Entry {
            key: b"k",
            data,
            arrival_ms,
        };
        sa.append(&[e(b"a1", 1_000), e(b"a2", 2_000)]).unwrap();
        sb.sync().unwrap();
        sb.append(&[e(b"b1", 3_000)]).unwrap();
        assert_eq!(
            sa.seal().unwrap(),
            3,
            "the end counts the other node's append"
        );
        assert_eq!(sa.seal().unwrap(), 3, "sealing again changes nothing");
        assert_eq!(sb.seal().unwrap(), 3, "another node finds the same end");
        for s in [&sa, &sb] {
            assert!(matches!(
                s.append(&[e(b"late", 4_000)]),
                Err(StorageError::Closed)
            ));
        }
        sb.sync().unwrap();
        // The seal's marker is not a record.
        assert_eq!(sb.read(0, 10, 1 << 20).unwrap().len(), 3);
        assert_eq!((sb.records(), sb.next_seq()), (3, 3));
        assert_eq!(sb.enforce_retention(1_500, None).unwrap(), 1);
        let again = b.open_shard("p", 0, true, id, 1 << 20, None, true).unwrap();
        assert_eq!(again.next_seq(), 3);
        assert_eq!(again.first_seq(), 1);
        assert!(matches!(
            again.append(&[e(b"later", 5_000)]),
            Err(StorageError::Closed)
        ));
        // A node whose topology still calls it open (it started during the resharding)
        // opens it sealed all the same: a parent's end never moves.
        let stale = a
            .open_shard("p", 0, true, id, 1 << 20, None, false)
            .unwrap();
        assert!(matches!(
            stale.append(&[e(b"stale", 5_000)]),
            Err(StorageError::Closed)
        ));
    }

    /// A record larger than the servers' `max_payload` is refused when the shard opens,
    /// naming the setting, not on the first large PutRecord.
    #[test]
    fn a_cluster_whose_max_payload_is_too_small_is_refused_at_open() {
        let cluster = crate::testing::NatsCluster::start(1);
        let c = Cluster::connect(JetStreamOptions {
            servers: cluster.urls(),
            replicas: 1,
            ..JetStreamOptions::default()
        })
        .unwrap();
        let e = c
            .open_shard("s", 0, true, "shardId-000000000000", 64 << 20, None, false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("max_payload"), "{e}");
    }
}
