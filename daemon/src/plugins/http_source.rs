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
//! after the append returned (durable under the stream's fsync policy). Bounds: a body
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
            max_backlog: self.cfg.max_backlog,
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                self.cfg.max_in_flight.0 as usize,
            )),
            active: AtomicUsize::new(0),
            records: metrics::counter!("sluice_http_source_records_total", &labels),
            in_flight_bytes: metrics::gauge!("sluice_http_source_in_flight_bytes", &labels),
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
        // No new request is taken; the ones being handled finish (their records are in
        // the stream and will be read by the next run), then the reader checkpoints.
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
    max_backlog: u64,
    /// Body bytes being handled (permits are bytes).
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Requests being handled, for the graceful stop.
    active: AtomicUsize,
    records: metrics::Counter,
    in_flight_bytes: metrics::Gauge,
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
            .or_else(|| header(headers, "authorization").and_then(|a| a.strip_prefix("Bearer ")));
        let ok = given.is_some_and(|g| {
            use subtle_eq::ConstantTimeEq as _;
            g.as_bytes().ct_eq(key.as_bytes())
        });
        if !ok {
            return reply.err(StatusCode::UNAUTHORIZED, "missing or wrong access key");
        }
    }
    // Bytes in flight, reserved before reading: the declared size, or the limit.
    let declared = header(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > sh.max_body as u64) {
        return reply.err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format_args!("the body is larger than {} bytes", sh.max_body),
        );
    }
    let reserve = declared.map_or(sh.max_body, |n| n as usize).max(1);
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
    if sh.stream.backlog(&sh.pipeline) >= sh.max_backlog {
        return reply.err(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pipeline is behind; retry later",
        );
    }
    let raw = match read_limited(body, sh.max_body).await {
        Ok(b) => b,
        Err(e) => return reply.err(e.status(), e),
    };
    let raw = match decode_content(headers, raw, sh.max_body) {
        Ok(b) => b,
        Err(e) => return reply.err(e.status(), e),
    };
    let records = match parse(reply, headers, &raw, &sh.partition_key) {
        Ok(r) if r.is_empty() => {
            return reply.err(StatusCode::BAD_REQUEST, "the request holds no records")
        }
        Ok(r) => r,
        Err(e) => return reply.err(e.status(), e),
    };
    let limit = sh.stream.max_record_bytes();
    if let Some((i, r)) = records
        .iter()
        .enumerate()
        .find(|(_, r)| (r.data.len() + r.key.len()) as u64 > limit)
    {
        return reply.err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format_args!(
                "record {i} is {} bytes with its key; the stream takes at most {limit}",
                r.data.len() + r.key.len()
            ),
        );
    }
    let n = records.len();
    let stream = sh.stream.clone();
    let appended = tokio::task::spawn_blocking(move || {
        let now = crate::record::now_ms();
        let entries: Vec<sluice_shardlog::Entry<'_>> = records
            .iter()
            .map(|r| sluice_shardlog::Entry {
                key: &r.key,
                data: &r.data,
                arrival_ms: now,
            })
            .collect();
        stream.append_routed(&entries)
    })
    .await;
    match appended {
        Ok(Ok(())) => {
            sh.records.increment(n as u64);
            reply.ok(n)
        }
        Ok(Err(e)) => {
            tracing::warn!(pipeline = %sh.pipeline, error = %e, "http source: append failed");
            reply.err(
                StatusCode::SERVICE_UNAVAILABLE,
                format_args!("not stored: {e}"),
            )
        }
        Err(e) => reply.err(
            StatusCode::INTERNAL_SERVER_ERROR,
            format_args!("not stored: {e}"),
        ),
    }
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
}

impl RequestError {
    fn status(&self) -> StatusCode {
        match self {
            RequestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
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
) -> Result<Vec<NewRec>, RequestError> {
    if let Reply::Firehose(id) = reply {
        return firehose(body, id);
    }
    let ctype = header(headers, "content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if headers.contains_key("ce-specversion") {
        return binary_event(headers, &ctype, body, key_attr).map(|r| vec![r]);
    }
    match ctype.as_str() {
        "application/cloudevents+json" => {
            let ev = event(body, "the event")?;
            Ok(vec![ev_record(&ev, compact(body), key_attr)])
        }
        "application/cloudevents-batch+json" => {
            let items: Vec<&serde_json::value::RawValue> =
                serde_json::from_slice(body).map_err(|e| {
                    RequestError::Invalid(format!("a batch must be a JSON array of events: {e}"))
                })?;
            items
                .iter()
                .enumerate()
                .map(|(i, raw)| {
                    let ev = event(raw.get().as_bytes(), &format!("event {i}"))?;
                    Ok(ev_record(&ev, compact(raw.get().as_bytes()), key_attr))
                })
                .collect()
        }
        "application/json" => {
            let v: &serde_json::value::RawValue = serde_json::from_slice(body)
                .map_err(|e| RequestError::Invalid(format!("the body is not JSON: {e}")))?;
            if v.get().starts_with('[') {
                let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(v.get())
                    .map_err(|e| RequestError::Invalid(e.to_string()))?;
                Ok(items
                    .iter()
                    .map(|r| NewRec {
                        key: Vec::new(),
                        data: compact(r.get().as_bytes()),
                    })
                    .collect())
            } else {
                Ok(vec![NewRec {
                    key: Vec::new(),
                    data: compact(v.get().as_bytes()),
                }])
            }
        }
        "application/x-ndjson"
        | "application/jsonl"
        | "application/json-lines"
        | "application/x-jsonlines"
        | "text/plain" => Ok(body
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(|l| NewRec {
                key: Vec::new(),
                data: l.to_vec(),
            })
            .collect()),
        other => Err(RequestError::ContentType(other.to_string())),
    }
}

/// Firehose's HTTP-endpoint request: `{requestId, timestamp, records: [{data}]}`.
fn firehose(body: &[u8], id: &str) -> Result<Vec<NewRec>, RequestError> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Req {
        records: Vec<Rec>,
    }
    #[derive(serde::Deserialize)]
    struct Rec {
        data: String,
    }
    let req: Req = serde_json::from_slice(body)
        .map_err(|e| RequestError::Invalid(format!("not a Firehose HTTP-endpoint request: {e}")))?;
    req.records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
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
    Ok(())
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
    if !body.is_empty() {
        let json_data = ctype == "application/json" || ctype.ends_with("+json") || ctype.is_empty();
        if json_data {
            let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
                RequestError::Invalid(format!("the data is declared JSON but is not: {e}"))
            })?;
            m.insert("data".into(), v);
        } else if let (true, Ok(text)) = (ctype.starts_with("text/"), std::str::from_utf8(body)) {
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
    let data = serde_json::to_vec(&m).map_err(|e| RequestError::Invalid(e.to_string()))?;
    Ok(ev_record(&m, data, key_attr))
}

/// `%XX` sequences decoded (CloudEvents header values); `None` if not UTF-8 after.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
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
        let r = parse(&Reply::Plain, &h, ev, "id").unwrap();
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
            parse(&Reply::Plain, &h, batch.as_bytes(), "source")
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
        let r = parse(&Reply::Plain, &h, br#"{"n": 1}"#, "source").unwrap();
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
        let r = parse(&Reply::Plain, &h, &[0, 159, 146, 150], "id").unwrap();
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
        )
        .unwrap_err();
        assert!(e.to_string().contains("`type`"), "{e}");
        let h = hm(&[("content-type", "application/cloudevents-batch+json")]);
        let e = parse(
            &Reply::Plain,
            &h,
            br#"[{"specversion":"1.0","id":"1","source":"s","type":"t"}, 5]"#,
            "id",
        )
        .unwrap_err();
        assert!(e.to_string().contains("event 1"), "{e}");
        let h = hm(&[("content-type", "application/xml")]);
        assert_eq!(
            parse(&Reply::Plain, &h, b"<a/>", "id")
                .unwrap_err()
                .status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }

    #[test]
    fn firehose_requests_decode_every_record_or_none() {
        let body =
            br#"{"requestId":"r1","timestamp":1,"records":[{"data":"aGk="},{"data":"eW8="}]}"#;
        let r = parse(&Reply::Firehose("r1".into()), &HeaderMap::new(), body, "id").unwrap();
        assert_eq!(
            r.iter().map(|r| &r.data[..]).collect::<Vec<_>>(),
            [&b"hi"[..], b"yo"]
        );
        let bad = br#"{"requestId":"r1","timestamp":1,"records":[{"data":"aGk="},{"data":"!!"}]}"#;
        let e = parse(&Reply::Firehose("r1".into()), &HeaderMap::new(), bad, "id").unwrap_err();
        assert!(e.to_string().contains("records[1]"), "{e}");
    }

    #[test]
    fn lines_and_json_arrays_split_into_records() {
        let h = hm(&[("content-type", "application/x-ndjson")]);
        let r = parse(&Reply::Plain, &h, b"{\"a\":1}\r\n\n{\"a\":2}\n", "id").unwrap();
        assert_eq!(r.len(), 2);
        let h = hm(&[("content-type", "application/json")]);
        assert_eq!(
            parse(&Reply::Plain, &h, b"[1, {\"b\": 2}]", "id")
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            parse(&Reply::Plain, &h, b" {\"b\":\n 2} ", "id").unwrap()[0].data,
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
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%FF"), None);
        assert_eq!(percent_decode("end%2").as_deref(), Some("end%2"));
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
