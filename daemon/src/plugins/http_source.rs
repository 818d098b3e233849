//! The bundled `http` source: producers POST events, sluice answers once they are durable
//! in a stream, and the pipeline reads that stream like the `stream` source (replayable,
//! checkpointed, exactly-once objects).
//!
//! Accepted requests (one listener per pipeline, `listen`):
//! - the CloudEvents HTTP binding: structured (`application/cloudevents+json`), batch
//!   (`application/cloudevents-batch+json`) and binary (`ce-*` headers; stored as the
//!   structured JSON event, `data` or `data_base64`);
//! - Firehose's HTTP-endpoint delivery request (`X-Amz-Firehose-Request-Id`, body
//!   `{requestId, timestamp, records: [{data}]}`, optional gzip), answered in that format,
//!   so a real Firehose can deliver into sluice;
//! - plain `application/json` (an object, or an array of records), NDJSON/JSON Lines and
//!   `text/plain` (one record per line).
//!
//! Every record of a request is validated before any is written; the answer is 200 only
//! after the append returned (durable under the stream's fsync policy). A storage failure
//! part-way through an append can leave part of a request stored (503: the producer's
//! retry repeats it — at least once). Bounds: a body
//! size limit (413), body bytes in flight across requests (503 + `Retry-After`), records
//! written but not yet delivered by this pipeline (`max_backlog`, 503 + `Retry-After`),
//! connections (`max_connections`), and the header/idle timeouts of [`crate::http`].
//!
//! Without `stream`, records go to the pipeline's own internal stream
//! (`__http-<pipeline>`, one shard, made by the config like Direct PUT's).

#![allow(unexpected_cfgs)] // `declare_library!` checks a `dylib` feature this crate does not have

use super::stream_io::{SourceConfig, Start, StreamSource};
use super::HostServices;
use crate::spec::{ByteSize, HumanDuration};
use crate::stream::Stream;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::value::RawValue;
use sluice_plugin_api::{declare_library, Context, Error, Output, Plugin, Poll, Source};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `http` source options.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// Address to listen on, `host:port`.
    pub listen: String,
    /// Only this path is served (any path when absent).
    #[serde(default)]
    pub path: Option<String>,
    /// The stream records are written to and read from; the pipeline's internal stream
    /// when absent.
    #[serde(default)]
    pub stream: Option<String>,
    /// When set, requests must carry it: `X-Amz-Firehose-Access-Key` (what Firehose sends),
    /// `X-Api-Key`, or `Authorization: Bearer <key>`.
    #[serde(default)]
    pub access_key: Option<String>,
    /// CloudEvents attribute used as the partition key (routing to shards).
    #[serde(default = "default_partition_key")]
    pub partition_key: String,
    /// Largest request body, before and after decompression.
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    /// Body bytes of all requests being handled at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: ByteSize,
    /// Records written but not yet delivered by this pipeline before producers are told
    /// to come back later (503).
    #[serde(default = "default_max_backlog")]
    pub max_backlog: u64,
    /// Open connections at most.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Records one request may hold (a larger one is refused with 413).
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// As the `stream` source's.
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    /// As the `stream` source's.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: HumanDuration,
}

fn default_partition_key() -> String {
    "id".into()
}
fn default_max_body() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_max_in_flight() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_max_backlog() -> u64 {
    1_000_000
}
fn default_max_records() -> usize {
    100_000
}
fn default_max_connections() -> usize {
    256
}
fn default_batch() -> u32 {
    500
}
fn default_checkpoint_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

/// Largest `max_body` and `max_in_flight` (the in-flight bound is a semaphore of bytes).
const MAX_BYTES_OPTION: u64 = 1 << 30;

/// How long a stopping source lets requests being handled finish.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The `http` source: an HTTP listener writing into a stream, and a [`StreamSource`]
/// reading it.
pub struct HttpSource {
    cfg: HttpSourceConfig,
    pipeline: String,
    services: Option<Arc<HostServices>>,
    reader: StreamSource,
    server: Option<Server>,
}

/// The listener's thread and how to stop it.
struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Plugin for HttpSource {
    type Config = HttpSourceConfig;
    fn create(cfg: HttpSourceConfig, ctx: &Context) -> Result<Self, Error> {
        if cfg.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::config_field(
                "listen",
                format_args!("`{}` is not an address like 127.0.0.1:8080", cfg.listen),
            ));
        }
        if let Some(p) = &cfg.path {
            if !p.starts_with('/') {
                return Err(Error::config_field("path", "must start with `/`"));
            }
        }
        if cfg.access_key.as_deref().is_some_and(str::is_empty) {
            return Err(Error::config_field(
                "access_key",
                "must not be empty (leave it out to accept requests without a key)",
            ));
        }
        for (field, v) in [
            ("max_body", cfg.max_body.0),
            ("max_in_flight", cfg.max_in_flight.0),
        ] {
            if v == 0 || v > MAX_BYTES_OPTION {
                return Err(Error::config_field(field, "must be between 1B and 1GiB"));
            }
        }
        if cfg.max_in_flight.0 < cfg.max_body.0 {
            return Err(Error::config_field(
                "max_in_flight",
                "must be at least `max_body` (one whole request must fit)",
            ));
        }
        if cfg.max_backlog == 0 {
            return Err(Error::config_field("max_backlog", "must be at least 1"));
        }
        if cfg.max_records == 0 || cfg.max_records > 1_000_000 {
            return Err(Error::config_field(
                "max_records",
                "must be between 1 and 1000000",
            ));
        }
        if cfg.max_connections == 0 || cfg.max_connections > 65_536 {
            return Err(Error::config_field(
                "max_connections",
                "must be between 1 and 65536",
            ));
        }
        let stream = cfg
            .stream
            .clone()
            .unwrap_or_else(|| crate::spec::http_stream(ctx.pipeline()));
        let reader = StreamSource::create(
            SourceConfig {
                stream,
                start: Start::TrimHorizon,
                batch_size: cfg.batch_size,
                checkpoint_interval: cfg.checkpoint_interval,
            },
            ctx,
        )?;
        Ok(HttpSource {
            pipeline: ctx.pipeline().to_string(),
            services: super::host::services(ctx.instance_handle()),
            cfg,
            reader,
            server: None,
        })
    }

    fn start(&mut self) -> Result<(), Error> {
        self.reader.start()?;
        let streams = &self
            .services
            .as_ref()
            .ok_or_else(|| Error::fatal("streams are not available (not running in sluiced)"))?
            .streams;
        let name = self
            .cfg
            .stream
            .clone()
            .unwrap_or_else(|| crate::spec::http_stream(&self.pipeline));
        let stream = streams
            .get(&name)
            .ok_or_else(|| Error::retryable(format_args!("stream `{name}` does not exist")))?;
        let listener = std::net::TcpListener::bind(&self.cfg.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| {
                Error::retryable(format_args!("cannot listen on {}: {e}", self.cfg.listen))
            })?;
        let labels = [("pipeline", self.pipeline.clone())];
        let shared = Arc::new(Shared {
            pipeline: self.pipeline.clone(),
            stream,
            path: self.cfg.path.clone(),
            access_key: self.cfg.access_key.clone(),
            partition_key: self.cfg.partition_key.clone(),
            max_body: self.cfg.max_body.0 as usize,
            max_records: self.cfg.max_records,
            max_backlog: self.cfg.max_backlog,
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                self.cfg.max_in_flight.0 as usize,
            )),
            active: AtomicUsize::new(0),
            records: metrics::counter!("sluice_http_source_records_total", &labels),
            in_flight_bytes: metrics::gauge!("sluice_http_source_in_flight_bytes", &labels),
            stored_ids: Default::default(),
            repeats: metrics::counter!("sluice_http_source_repeats_total", &labels),
        });
        shared.records.increment(0);
        let limits = crate::http::Limits {
            max_connections: self.cfg.max_connections,
            ..crate::http::LIMITS
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let pipeline = self.pipeline.clone();
        let addr = self.cfg.listen.clone();
        let thread = std::thread::Builder::new()
            .name(format!("http-source-{pipeline}"))
            .spawn(move || serve(listener, shared, limits, stopped))
            .map_err(|e| Error::retryable(format_args!("cannot start the listener thread: {e}")))?;
        tracing::info!(pipeline = %pipeline, listen = %addr, stream = %name, "http source listening");
        self.server = Some(Server {
            stop: Some(stop),
            thread: Some(thread),
        });
        Ok(())
    }

    fn stop(&mut self, deadline: Duration) -> Result<(), Error> {
        // The listener closes; requests being handled (and ones arriving on connections
        // already open) get up to 5 s, then the runtime is dropped with its connections
        // (a request cut then may have been stored: its producer's retry repeats it, at
        // least once). Stored records are read by the next run; the reader checkpoints.
        self.server = None;
        self.reader.stop(deadline)
    }
}

impl Source for HttpSource {
    fn poll_batch(&mut self, out: &mut Output<'_>) -> Result<Poll, Error> {
        self.reader.poll_batch(out)
    }
    fn ack(&mut self, token: u64, delivered: bool) {
        self.reader.ack(token, delivered)
    }
}

declare_library!(
    name: "http-source",
    plugins: [
        replayable_source("http", HttpSource, "CloudEvents (structured, batch, binary), Firehose HTTP-endpoint requests and JSON/NDJSON posted over HTTP, acknowledged once durable in a stream"),
    ]
);

/// What every request handler shares.
struct Shared {
    pipeline: String,
    stream: Arc<Stream>,
    path: Option<String>,
    access_key: Option<String>,
    partition_key: String,
    max_body: usize,
    max_records: usize,
    max_backlog: u64,
    /// Body bytes being handled (permits are bytes).
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Requests being handled, for the graceful stop.
    active: AtomicUsize,
    records: metrics::Counter,
    in_flight_bytes: metrics::Gauge,
    /// Firehose request ids stored lately: Firehose sends a request again, same id and
    /// records, when it did not see the 200 (a cut connection, its 3-minute timeout).
    stored_ids: std::sync::Mutex<RecentIds>,
    repeats: metrics::Counter,
}

/// The last [`RecentIds::CAP`] ids, for answering a repeated request without storing it
/// twice (per run of the pipeline: a restart forgets them, and a repeat is then stored
/// again — at least once).
#[derive(Default)]
struct RecentIds {
    set: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
}

impl RecentIds {
    const CAP: usize = 10_000;

    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: &str) {
        if self.set.insert(id.to_string()) {
            self.order.push_back(id.to_string());
            if self.order.len() > Self::CAP {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// The listener thread: a current-thread runtime serving until told to stop, then at most
/// [`STOP_GRACE`] for the requests being handled.
fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    limits: crate::http::Limits,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(pipeline = %shared.pipeline, error = %e, "http source: no runtime");
            return;
        }
    };
    rt.block_on(async {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(pipeline = %shared.pipeline, error = %e, "http source: listener unusable");
                return;
            }
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        tokio::select! {
            _ = crate::http::serve(listener, app, limits, "http_source") => {}
            _ = stopped => {}
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while shared.active.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    // Dropping the runtime closes the remaining (idle) connections.
}

/// Counts a request as being handled while it lives.
struct Active<'a>(&'a AtomicUsize);
impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How a request is answered: Firehose's format when it came from Firehose.
#[derive(Clone)]
enum Reply {
    Firehose(String),
    Plain,
}

impl Reply {
    fn ok(&self, records: usize) -> Response {
        let body = match self {
            Reply::Firehose(id) => serde_json::json!({
                "requestId": id,
                "timestamp": crate::record::now_ms(),
            }),
            Reply::Plain => serde_json::json!({ "accepted": records }),
        };
        json(StatusCode::OK, &body)
    }

    fn err(&self, code: StatusCode, message: impl std::fmt::Display) -> Response {
        let message = message.to_string();
        let body = match self {
            Reply::Firehose(id) => serde_json::json!({
                "requestId": id,
                "timestamp": crate::record::now_ms(),
                "errorMessage": message,
            }),
            Reply::Plain => serde_json::json!({ "message": message }),
        };
        let mut r = json(code, &body);
        if code == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        r
    }
}

fn json(code: StatusCode, body: &serde_json::Value) -> Response {
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    sh.active.fetch_add(1, Ordering::AcqRel);
    let _active = Active(&sh.active);
    let reply = match header(&headers, "x-amz-firehose-request-id") {
        Some(id) => Reply::Firehose(id.to_string()),
        None => Reply::Plain,
    };
    let r = answer(&sh, &reply, method, uri, &headers, body).await;
    let code = r.status().as_u16().to_string();
    metrics::counter!("sluice_http_source_requests_total", "pipeline" => sh.pipeline.clone(), "code" => code)
        .increment(1);
    r
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn answer(
    sh: &Arc<Shared>,
    reply: &Reply,
    method: Method,
    uri: Uri,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    if sh.path.as_deref().is_some_and(|p| p != uri.path()) {
        return reply.err(
            StatusCode::NOT_FOUND,
            format_args!("nothing is served at {}", uri.path()),
        );
    }
    if method != Method::POST {
        let mut r = reply.err(StatusCode::METHOD_NOT_ALLOWED, "only POST is accepted");
        r.headers_mut()
            .insert("allow", HeaderValue::from_static("POST"));
        return r;
    }
    if let Some(key) = &sh.access_key {
        let given = header(headers, "x-amz-firehose-access-key")
            .or_else(|| header(headers, "x-api-key"))
            .or_else(|| {
                header(headers, "authorization").and_then(|a| {
                    a.get(..7)
                        .filter(|p| p.eq_ignore_ascii_case("bearer "))
                        .map(|_| &a[7..])
                })
            });
        let ok = given.is_some_and(|g| {
            use subtle_eq::ConstantTimeEq as _;
            g.as_bytes().ct_eq(key.as_bytes())
        });
        if !ok {
            return reply.err(StatusCode::UNAUTHORIZED, "missing or wrong access key");
        }
    }
    // Bytes in flight, reserved before reading: the declared size, or the limit — and the
    // limit for an encoded body, which may inflate up to it.
    let declared = header(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > sh.max_body as u64) {
        return reply.err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format_args!("the body is larger than {} bytes", sh.max_body),
        );
    }
    let encoded = header(headers, "content-encoding")
        .is_some_and(|e| !e.trim().is_empty() && !e.trim().eq_ignore_ascii_case("identity"));
    let reserve = match declared {
        Some(n) if !encoded => n as usize,
        _ => sh.max_body,
    }
    .max(1);
    let Ok(permit) = sh.in_flight.clone().try_acquire_many_owned(reserve as u32) else {
        return reply.err(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many request bytes in flight; retry later",
        );
    };
    sh.in_flight_bytes.increment(reserve as f64);
    let _release = Release(&sh.in_flight_bytes, reserve, permit);
    if sh.stream.is_deleted() {
        return reply.err(StatusCode::SERVICE_UNAVAILABLE, "the stream was deleted");
    }
    let raw = match read_limited(body, sh.max_body).await {
        Ok(b) => b,
        Err(e) => return reply.err(e.status(), e),
    };
    // The rest blocks (the backlog reads shard logs under their locks, decoding and parsing
    // are CPU work, the append syncs): off this listener's only runtime thread.
    let (shb, replyb, headersb) = (sh.clone(), reply.clone(), headers.clone());
    match tokio::task::spawn_blocking(move || store(&shb, &replyb, &headersb, raw)).await {
        Ok(Ok(n)) => {
            sh.records.increment(n as u64);
            reply.ok(n)
        }
        Ok(Err((code, message))) => reply.err(code, message),
        Err(e) => reply.err(
            StatusCode::INTERNAL_SERVER_ERROR,
            format_args!("not stored: {e}"),
        ),
    }
}

/// Memory a parsed record costs beyond its bytes (its entries on the way to the shard
/// logs), charged to `max_in_flight` too.
const RECORD_OVERHEAD: usize = 192;

/// Decodes, parses and checks a request, then appends its records; the number stored, or
/// the refusal. Nothing is written unless every record is valid; a storage failure
/// part-way through may leave part of the request stored (the producer's retry then
/// repeats it: at least once).
fn store(
    sh: &Shared,
    reply: &Reply,
    headers: &HeaderMap,
    raw: Bytes,
) -> Result<usize, (StatusCode, String)> {
    let refuse = |e: RequestError| (e.status(), e.to_string());
    let firehose_id = match reply {
        Reply::Firehose(id) => Some(id.as_str()),
        Reply::Plain => None,
    };
    let seen = |id: &str| sh.stored_ids.lock().is_ok_and(|r| r.contains(id));
    if let Some(id) = firehose_id.filter(|id| seen(id)) {
        tracing::debug!(pipeline = %sh.pipeline, request = %id, "a Firehose request stored before came again; answered without storing it twice");
        sh.repeats.increment(1);
        return Ok(0);
    }
    if sh.stream.backlog(&sh.pipeline) >= sh.max_backlog {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the pipeline is behind; retry later".into(),
        ));
    }
    let raw = decode_content(headers, raw, sh.max_body).map_err(refuse)?;
    let records = parse(reply, headers, &raw, &sh.partition_key, sh.max_records).map_err(refuse)?;
    drop(raw);
    if records.is_empty() {
        return Ok(0);
    }
    let extra = records.len().saturating_mul(RECORD_OVERHEAD);
    let Ok(_records_permit) = u32::try_from(extra)
        .ok()
        .and_then(|n| sh.in_flight.clone().try_acquire_many_owned(n).ok())
        .ok_or(())
    else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "too many records in flight; retry later".into(),
        ));
    };
    let limit = sh.stream.max_record_bytes();
    // A record without a key is stored with the key `-`.
    let size = |r: &NewRec| (r.data.len() + r.key.len().max(1)) as u64;
    if let Some((i, r)) = records.iter().enumerate().find(|(_, r)| size(r) > limit) {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "record {i} is {} bytes with its key; the stream takes at most {limit}",
                size(r)
            ),
        ));
    }
    let now = crate::record::now_ms();
    let entries: Vec<sluice_shardlog::Entry<'_>> = records
        .iter()
        .map(|r| sluice_shardlog::Entry {
            key: &r.key,
            data: &r.data,
            arrival_ms: now,
        })
        .collect();
    sh.stream.append_routed(&entries).map_err(|e| {
        tracing::warn!(pipeline = %sh.pipeline, error = %e, "http source: append failed");
        (StatusCode::SERVICE_UNAVAILABLE, format!("not stored: {e}"))
    })?;
    if let (Some(id), Ok(mut recent)) = (firehose_id, sh.stored_ids.lock()) {
        recent.insert(id);
    }
    Ok(records.len())
}

/// Gives the reserved in-flight bytes back.
struct Release<'a>(
    &'a metrics::Gauge,
    usize,
    #[allow(dead_code)] tokio::sync::OwnedSemaphorePermit,
);
impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.decrement(self.1 as f64);
    }
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body did not arrive in time")]
    Timeout,
    #[error("the body could not be read: {0}")]
    Read(String),
    #[error("content encoding `{0}` is not supported (identity or gzip)")]
    Encoding(String),
    #[error("the gzip body is damaged: {0}")]
    Gzip(std::io::Error),
    #[error("content type `{0}` is not supported: use application/cloudevents+json, application/cloudevents-batch+json, ce-* headers (binary mode), Firehose's HTTP-endpoint request, application/json, application/x-ndjson or text/plain")]
    ContentType(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the request holds more than {0} records (max_records)")]
    TooMany(usize),
}

impl RequestError {
    fn status(&self) -> StatusCode {
        match self {
            RequestError::TooLarge(_) | RequestError::TooMany(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::Timeout => StatusCode::REQUEST_TIMEOUT,
            RequestError::Encoding(_) | RequestError::ContentType(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Time a body has to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

async fn read_limited(body: Body, max: usize) -> Result<Bytes, RequestError> {
    use http_body_util::BodyExt as _;
    let limited = http_body_util::Limited::new(body, max);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(RequestError::TooLarge(max))
        }
        Ok(Err(e)) => Err(RequestError::Read(e.to_string())),
        Err(_) => Err(RequestError::Timeout),
    }
}

/// The body after its `Content-Encoding` (gzip, bounded like the body itself).
fn decode_content(headers: &HeaderMap, raw: Bytes, max: usize) -> Result<Bytes, RequestError> {
    let enc = header(headers, "content-encoding")
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match enc.as_str() {
        "" | "identity" => Ok(raw),
        "gzip" | "x-gzip" => {
            use std::io::Read as _;
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&raw[..])
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(RequestError::Gzip)?;
            if out.len() > max {
                return Err(RequestError::TooLarge(max));
            }
            Ok(Bytes::from(out))
        }
        other => Err(RequestError::Encoding(other.to_string())),
    }
}

/// One record to write.
#[derive(Debug, PartialEq, Eq)]
struct NewRec {
    key: Vec<u8>,
    data: Vec<u8>,
}

/// The records of a request, by its format.
fn parse(
    reply: &Reply,
    headers: &HeaderMap,
    body: &[u8],
    key_attr: &str,
    max_records: usize,
) -> Result<Vec<NewRec>, RequestError> {
    if let Reply::Firehose(id) = reply {
        return firehose(body, id, max_records);
    }
    let ctype = header(headers, "content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    // The content type says structured or batch mode; `ce-*` headers mean binary mode
    // only otherwise (as the binding tells them apart).
    match ctype.as_str() {
        "application/cloudevents+json" => {
            let ev = event(body, "the event")?;
            return Ok(vec![ev_record(&ev, compact(body), key_attr)]);
        }
        "application/cloudevents-batch+json" => {
            return array_items(body, max_records)?
                .iter()
                .enumerate()
                .map(|(i, raw)| {
                    let ev = event(raw.get().as_bytes(), &format!("event {i}"))?;
                    Ok(ev_record(&ev, compact(raw.get().as_bytes()), key_attr))
                })
                .collect();
        }
        _ if headers.contains_key("ce-specversion") => {
            return binary_event(headers, &ctype, body, key_attr).map(|r| vec![r]);
        }
        _ => {}
    }
    let plain = |data: Vec<u8>| NewRec {
        key: Vec::new(),
        data,
    };
    match ctype.as_str() {
        "application/json" => {
            let v: &RawValue = serde_json::from_slice(body)
                .map_err(|e| RequestError::Invalid(format!("the body is not JSON: {e}")))?;
            if v.get().starts_with('[') {
                Ok(array_items(v.get().as_bytes(), max_records)?
                    .iter()
                    .map(|r| plain(compact(r.get().as_bytes())))
                    .collect())
            } else {
                Ok(vec![plain(compact(v.get().as_bytes()))])
            }
        }
        "application/x-ndjson"
        | "application/jsonl"
        | "application/json-lines"
        | "application/x-jsonlines"
        | "text/plain" => {
            let lines: Vec<NewRec> = body
                .split(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .take(max_records.saturating_add(1))
                .map(|l| plain(l.to_vec()))
                .collect();
            if lines.len() > max_records {
                return Err(RequestError::TooMany(max_records));
            }
            Ok(lines)
        }
        other => Err(RequestError::ContentType(other.to_string())),
    }
}

/// Marks the error of an array with too many items.
const TOO_MANY: &str = "sluice: too many items";

/// The items of a JSON array, refused past `max` while they are read (no list of
/// millions is built first).
fn array_items(json: &[u8], max: usize) -> Result<Vec<&RawValue>, RequestError> {
    use serde::de::{Error as _, SeqAccess, Visitor};
    struct Items(usize);
    impl<'de> Visitor<'de> for Items {
        type Value = Vec<&'de RawValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element::<&'de RawValue>()? {
                if out.len() == self.0 {
                    return Err(A::Error::custom(TOO_MANY));
                }
                out.push(v);
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let fail = |e: serde_json::Error| {
        if e.to_string().contains(TOO_MANY) {
            RequestError::TooMany(max)
        } else {
            RequestError::Invalid(format!("expected a JSON array: {e}"))
        }
    };
    let items = serde::Deserializer::deserialize_seq(&mut de, Items(max)).map_err(fail)?;
    de.end().map_err(fail)?;
    Ok(items)
}

/// Firehose's HTTP-endpoint request: `{requestId, timestamp, records: [{data}]}`.
fn firehose(body: &[u8], id: &str, max_records: usize) -> Result<Vec<NewRec>, RequestError> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Req<'a> {
        #[serde(borrow)]
        records: &'a RawValue,
    }
    #[derive(serde::Deserialize)]
    struct Rec {
        data: String,
    }
    // Firehose's ids are 36-character UUIDs; the id is every record's key.
    if id.len() > 256 {
        return Err(RequestError::Invalid(
            "X-Amz-Firehose-Request-Id is longer than 256 bytes".into(),
        ));
    }
    let bad = |e: serde_json::Error| {
        RequestError::Invalid(format!("not a Firehose HTTP-endpoint request: {e}"))
    };
    let req: Req<'_> = serde_json::from_slice(body).map_err(bad)?;
    array_items(req.records.get().as_bytes(), max_records)?
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let r: Rec = serde_json::from_str(raw.get()).map_err(bad)?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(r.data.as_bytes())
                .map_err(|e| {
                    RequestError::Invalid(format!("records[{i}].data is not base64: {e}"))
                })?;
            // One request's records stay on one shard, in order.
            Ok(NewRec {
                key: id.as_bytes().to_vec(),
                data,
            })
        })
        .collect()
}

/// A structured event, checked for the attributes CloudEvents requires.
fn event(
    bytes: &[u8],
    what: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, RequestError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| RequestError::Invalid(format!("{what} is not JSON: {e}")))?;
    let serde_json::Value::Object(m) = v else {
        return Err(RequestError::Invalid(format!(
            "{what} is not a JSON object"
        )));
    };
    required(&m, what)?;
    Ok(m)
}

fn required(
    m: &serde_json::Map<String, serde_json::Value>,
    what: &str,
) -> Result<(), RequestError> {
    for attr in ["specversion", "id", "source", "type"] {
        match m.get(attr) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => {}
            _ => {
                return Err(RequestError::Invalid(format!(
                    "{what} lacks the required CloudEvents attribute `{attr}` (a non-empty string)"
                )))
            }
        }
    }
    // The versions of the CloudEvents spec (the attributes above are required by both).
    match m.get("specversion").and_then(|v| v.as_str()) {
        Some("1.0" | "0.3") => Ok(()),
        other => Err(RequestError::Invalid(format!(
            "{what} has specversion {}; CloudEvents 1.0 (or 0.3) is accepted",
            other.unwrap_or("?")
        ))),
    }
}

fn ev_record(
    ev: &serde_json::Map<String, serde_json::Value>,
    data: Vec<u8>,
    key_attr: &str,
) -> NewRec {
    let key = match ev.get(key_attr) {
        Some(serde_json::Value::String(s)) => s.as_bytes().to_vec(),
        Some(v) if !v.is_null() => v.to_string().into_bytes(),
        _ => Vec::new(),
    };
    // Kinesis keys are at most 256 characters: longer ones are routed by their bytes.
    let key = if key.len() > 256 { Vec::new() } else { key };
    NewRec { key, data }
}

/// Binary mode: attributes in `ce-*` headers (percent-encoded), the data in the body.
/// Stored as the equivalent structured event.
fn binary_event(
    headers: &HeaderMap,
    ctype: &str,
    body: &[u8],
    key_attr: &str,
) -> Result<NewRec, RequestError> {
    use base64::Engine as _;
    let mut m = serde_json::Map::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let v = value
            .to_str()
            .map_err(|_| RequestError::Invalid(format!("header ce-{attr} is not text")))?;
        let v = percent_decode(v).ok_or_else(|| {
            RequestError::Invalid(format!(
                "header ce-{attr} is not valid percent-encoded UTF-8"
            ))
        })?;
        m.insert(attr.to_string(), serde_json::Value::String(v));
    }
    if let Some(ct) = header(headers, "content-type") {
        m.insert("datacontenttype".into(), ct.into());
    }
    required(&m, "the event (ce-* headers)")?;
    // JSON data is kept byte for byte (compacted), not rebuilt: numbers keep their
    // precision. Without a content type, data that parses as JSON is JSON (what SDKs send
    // for objects), anything else is opaque.
    let declared_json = ctype == "application/json" || ctype.ends_with("+json");
    let json_data = !body.is_empty()
        && (declared_json
            || (ctype.is_empty() && serde_json::from_slice::<&RawValue>(body).is_ok()));
    if declared_json && !json_data && !body.is_empty() {
        return Err(RequestError::Invalid(
            "the data is declared JSON but is not".into(),
        ));
    }
    if !body.is_empty() && !json_data {
        if let (true, Ok(text)) = (ctype.starts_with("text/"), std::str::from_utf8(body)) {
            m.insert("data".into(), text.into());
        } else {
            m.insert(
                "data_base64".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(body)
                    .into(),
            );
        }
    }
    let mut data = serde_json::to_vec(&m).map_err(|e| RequestError::Invalid(e.to_string()))?;
    if json_data {
        let raw: &RawValue = serde_json::from_slice(body).map_err(|e| {
            RequestError::Invalid(format!("the data is declared JSON but is not: {e}"))
        })?;
        // `m` holds the required attributes, so it ends `...}`: the data goes before it.
        data.pop();
        data.extend_from_slice(b",\"data\":");
        data.extend_from_slice(&compact(raw.get().as_bytes()));
        data.push(b'}');
    }
    Ok(ev_record(&m, data, key_attr))
}

/// `%XX` sequences decoded (CloudEvents header values); `None` if not UTF-8 after.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Valid JSON without the whitespace between tokens (one record per line downstream);
/// member order and every string kept byte for byte.
fn compact(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_str, mut esc) = (false, false);
    for &c in json {
        if in_str {
            out.push(c);
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            if c == b'"' {
                in_str = true;
            }
            out.push(c);
        }
    }
    out
}

/// Constant-time comparison of access keys (no early exit on the first difference).
mod subtle_eq {
    pub trait ConstantTimeEq {
        fn ct_eq(&self, other: &Self) -> bool;
    }
    impl ConstantTimeEq for [u8] {
        fn ct_eq(&self, other: &[u8]) -> bool {
            if self.len() != other.len() {
                return false;
            }
            self.iter()
                .zip(other)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hm(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn structured_batch_and_binary_events_become_structured_records() {
        let ev = br#"{ "specversion": "1.0", "id": "a1", "source": "s",
            "type": "t", "data": {"x": "a b"} }"#;
        let h = hm(&[(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )]);
        let r = parse(&Reply::Plain, &h, ev, "id", 1000).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].key, b"a1");
        assert_eq!(
            String::from_utf8(r[0].data.clone()).unwrap(),
            r#"{"specversion":"1.0","id":"a1","source":"s","type":"t","data":{"x":"a b"}}"#
        );
        let batch = format!(
            "[{}, {}]",
            std::str::from_utf8(ev).unwrap(),
            std::str::from_utf8(ev).unwrap()
        );
        let h = hm(&[("content-type", "application/cloudevents-batch+json")]);
        assert_eq!(
            parse(&Reply::Plain, &h, batch.as_bytes(), "source", 1000)
                .unwrap()
                .len(),
            2
        );
        let h = hm(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "b2"),
            ("ce-source", "https%3A%2F%2Fexample.com"),
            ("ce-type", "t"),
            ("content-type", "application/json"),
        ]);
        let r = parse(&Reply::Plain, &h, br#"{"n": 1}"#, "source", 1000).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r[0].data).unwrap();
        assert_eq!(v["source"], "https://example.com");
        assert_eq!(v["data"]["n"], 1);
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(r[0].key, b"https://example.com");
        let h = hm(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "c"),
            ("ce-source", "s"),
            ("ce-type", "t"),
            ("content-type", "application/octet-stream"),
        ]);
        let r = parse(&Reply::Plain, &h, &[0, 159, 146, 150], "id", 1000).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r[0].data).unwrap();
        assert_eq!(v["data_base64"], "AJ+Slg==");
    }

    #[test]
    fn events_missing_a_required_attribute_are_refused_by_name() {
        let h = hm(&[("content-type", "application/cloudevents+json")]);
        let e = parse(
            &Reply::Plain,
            &h,
            br#"{"specversion":"1.0","id":"1","source":"s"}"#,
            "id",
            1000,
        )
        .unwrap_err();
        assert!(e.to_string().contains("`type`"), "{e}");
        let h = hm(&[("content-type", "application/cloudevents-batch+json")]);
        let e = parse(
            &Reply::Plain,
            &h,
            br#"[{"specversion":"1.0","id":"1","source":"s","type":"t"}, 5]"#,
            "id",
            1000,
        )
        .unwrap_err();
        assert!(e.to_string().contains("event 1"), "{e}");
        let h = hm(&[("content-type", "application/xml")]);
        assert_eq!(
            parse(&Reply::Plain, &h, b"<a/>", "id", 1000)
                .unwrap_err()
                .status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }

    #[test]
    fn firehose_requests_decode_every_record_or_none() {
        let body =
            br#"{"requestId":"r1","timestamp":1,"records":[{"data":"aGk="},{"data":"eW8="}]}"#;
        let r = parse(
            &Reply::Firehose("r1".into()),
            &HeaderMap::new(),
            body,
            "id",
            1000,
        )
        .unwrap();
        assert_eq!(
            r.iter().map(|r| &r.data[..]).collect::<Vec<_>>(),
            [&b"hi"[..], b"yo"]
        );
        let bad = br#"{"requestId":"r1","timestamp":1,"records":[{"data":"aGk="},{"data":"!!"}]}"#;
        let e = parse(
            &Reply::Firehose("r1".into()),
            &HeaderMap::new(),
            bad,
            "id",
            1000,
        )
        .unwrap_err();
        assert!(e.to_string().contains("records[1]"), "{e}");
    }

    #[test]
    fn lines_and_json_arrays_split_into_records() {
        let h = hm(&[("content-type", "application/x-ndjson")]);
        let r = parse(&Reply::Plain, &h, b"{\"a\":1}\r\n\n{\"a\":2}\n", "id", 1000).unwrap();
        assert_eq!(r.len(), 2);
        let h = hm(&[("content-type", "application/json")]);
        assert_eq!(
            parse(&Reply::Plain, &h, b"[1, {\"b\": 2}]", "id", 1000)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            parse(&Reply::Plain, &h, b" {\"b\":\n 2} ", "id", 1000).unwrap()[0].data,
            b"{\"b\":2}"
        );
    }

    #[test]
    fn gzip_bodies_are_bounded_after_decompression() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![b'a'; 10_000]).unwrap();
        let packed = Bytes::from(gz.finish().unwrap());
        let h = hm(&[("content-encoding", "gzip")]);
        assert_eq!(
            decode_content(&h, packed.clone(), 10_000).unwrap().len(),
            10_000
        );
        assert!(matches!(
            decode_content(&h, packed, 9_999),
            Err(RequestError::TooLarge(_))
        ));
        let h = hm(&[("content-encoding", "br")]);
        assert!(matches!(
            decode_content(&h, Bytes::new(), 10),
            Err(RequestError::Encoding(_))
        ));
    }

    #[test]
    fn percent_decoding_follows_the_binding() {
        assert_eq!(percent_decode("a%20b%22").as_deref(), Some("a b\""));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(
            percent_decode("bad%zz").as_deref(),
            Some("bad%zz"),
            "not an escape: kept"
        );
        assert_eq!(percent_decode("%FF"), None);
        assert_eq!(percent_decode("end%2").as_deref(), Some("end%2"));
    }

    #[test]
    fn requests_are_bounded_and_modes_told_apart_as_the_binding_says() {
        // Too many records: refused while parsing, for every format.
        let h = hm(&[("content-type", "application/x-ndjson")]);
        let e = parse(&Reply::Plain, &h, b"1\n2\n3\n", "id", 2).unwrap_err();
        assert!(matches!(e, RequestError::TooMany(2)), "{e}");
        let h = hm(&[("content-type", "application/json")]);
        assert!(matches!(
            parse(&Reply::Plain, &h, b"[1,2,3]", "id", 2),
            Err(RequestError::TooMany(2))
        ));
        let fh =
            br#"{"requestId":"r","timestamp":1,"records":[{"data":""},{"data":""},{"data":""}]}"#;
        assert!(matches!(
            parse(&Reply::Firehose("r".into()), &HeaderMap::new(), fh, "id", 2),
            Err(RequestError::TooMany(2))
        ));
        let long = "r".repeat(300);
        assert!(
            parse(&Reply::Firehose(long), &HeaderMap::new(), fh, "id", 10).is_err(),
            "a huge request id is refused"
        );
        // Structured mode wins over stray ce-* headers.
        let h = hm(&[
            ("content-type", "application/cloudevents+json"),
            ("ce-specversion", "1.0"),
        ]);
        let ev = br#"{"specversion":"1.0","id":"1","source":"s","type":"t"}"#;
        assert_eq!(
            parse(&Reply::Plain, &h, ev, "id", 10).unwrap()[0].data,
            ev.to_vec()
        );
        // Binary mode keeps JSON data byte for byte (precision), opaque data without a type.
        let base = [
            ("ce-specversion", "1.0"),
            ("ce-id", "b"),
            ("ce-source", "s"),
            ("ce-type", "t"),
        ];
        let h = hm(&base);
        let r = parse(
            &Reply::Plain,
            &h,
            b"{\"big\": 123456789012345678901234567890}",
            "id",
            10,
        )
        .unwrap();
        assert!(
            String::from_utf8_lossy(&r[0].data)
                .ends_with(r#","data":{"big":123456789012345678901234567890}}"#),
            "{}",
            String::from_utf8_lossy(&r[0].data)
        );
        let r = parse(&Reply::Plain, &h, b"not json", "id", 10).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r[0].data).unwrap();
        assert_eq!(v["data_base64"], "bm90IGpzb24=");
        // Only CloudEvents 1.0 and 0.3.
        let h = hm(&[("content-type", "application/cloudevents+json")]);
        let e = parse(
            &Reply::Plain,
            &h,
            br#"{"specversion":"2.0","id":"1","source":"s","type":"t"}"#,
            "id",
            10,
        )
        .unwrap_err();
        assert!(e.to_string().contains("specversion 2.0"), "{e}");
        // An empty batch is no error.
        let h = hm(&[("content-type", "application/cloudevents-batch+json")]);
        assert!(parse(&Reply::Plain, &h, b"[]", "id", 10)
            .unwrap()
            .is_empty());
        assert_eq!(
            percent_decode("%+5"),
            Some("%+5".into()),
            "a sign is no hex digit"
        );
    }

    #[test]
    fn recent_request_ids_are_bounded() {
        let mut r = RecentIds::default();
        for i in 0..RecentIds::CAP + 5 {
            r.insert(&format!("id-{i}"));
        }
        r.insert("id-9"); // still held: inserting it again adds nothing
        assert!(
            !r.contains("id-0") && !r.contains("id-4"),
            "the oldest are forgotten"
        );
        assert!(r.contains("id-5") && r.contains(&format!("id-{}", RecentIds::CAP + 4)));
        assert_eq!(r.set.len(), RecentIds::CAP);
        assert_eq!(r.order.len(), RecentIds::CAP);
    }

    proptest! {
        /// Compacting keeps the JSON value (and member order) and leaves no line break.
        #[test]
        fn compact_keeps_the_value(v in arb_json()) {
            let pretty = serde_json::to_vec_pretty(&v).unwrap();
            let c = compact(&pretty);
            prop_assert!(!c.contains(&b'\n'));
            let back: serde_json::Value = serde_json::from_slice(&c).unwrap();
            prop_assert_eq!(back, v.clone());
            prop_assert_eq!(c, serde_json::to_vec(&v).unwrap());
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[ \\t\\n\"\\\\a-z\u{e9}]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z \"]{0,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
