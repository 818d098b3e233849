//! The AWS-compatible data API on `[api].listen`: AWS JSON 1.1 over `POST /`, dispatched
//! on `X-Amz-Target` (`Kinesis_20131202.<Op>`). Errors use AWS's shapes and wording
//! (`{"__type": ..., "message": ...}`, HTTP 400), every response carries
//! `x-amzn-RequestId`, and nothing a client sends yields a 500.

mod account;
mod cbor;
mod delivery_streams;
mod error;
mod firehose;
mod firehose_control;
mod iterator;
mod kinesis;
mod manage;
mod request;
mod reshard;
mod shapes;
mod sigv4;
mod subscribe;

pub use error::ApiError;
pub use firehose::OPERATIONS as FIREHOSE_OPERATIONS;
pub use firehose_control::{ApplyError, FirehoseControl, ReloadReply};
pub use iterator::IteratorCodec;
pub use kinesis::OPERATIONS as KINESIS_OPERATIONS;
pub use sigv4::Verifier;

use crate::stream::Streams;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Largest request body: PutRecords carries ≤ 5 MiB of data, base64-encoded in JSON.
pub const MAX_BODY: usize = 8 << 20;

/// What the API handlers share.
pub struct ApiState {
    /// Every stream.
    pub streams: Arc<Streams>,
    /// Account id for ARNs and messages.
    pub account: String,
    /// Signs and checks shard iterators.
    pub iterators: IteratorCodec,
    /// Verifies SigV4 signatures when credentials are configured.
    pub verifier: Option<Verifier>,
    /// The Firehose control plane's link to the daemon (reloads, running pipelines).
    pub firehose: Option<FirehoseControl>,
    /// Live SubscribeToShard subscriptions.
    pub subscriptions: Arc<subscribe::Registry>,
    /// Request body bytes being handled, across every connection (permits are bytes).
    pub bodies: BodyBudget,
}

/// Request bytes the API handles at once: each request holds its declared size (or
/// [`MAX_BODY`] when it declares none) from before its body is read until it is answered.
/// Past it, requests are answered 503 at once (SDKs retry those with backoff) instead of
/// letting 1,024 connections × 100 HTTP/2 streams × 8 MiB pile up in memory.
pub struct BodyBudget {
    bytes: Arc<tokio::sync::Semaphore>,
    gauge: metrics::Gauge,
}

/// [`BodyBudget`]'s size: 256 MiB.
pub const MAX_BODIES_IN_FLIGHT: usize = 256 << 20;

impl Default for BodyBudget {
    fn default() -> Self {
        BodyBudget::new(MAX_BODIES_IN_FLIGHT)
    }
}

/// Bytes of one request, given back when it is answered.
struct BodyPermit(
    #[allow(dead_code)] tokio::sync::OwnedSemaphorePermit,
    metrics::Gauge,
    f64,
);

impl Drop for BodyPermit {
    fn drop(&mut self) {
        self.1.decrement(self.2);
    }
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        BodyBudget {
            bytes: Arc::new(tokio::sync::Semaphore::new(bytes)),
            gauge: metrics::gauge!("sluice_api_in_flight_bytes"),
        }
    }

    fn reserve(&self, headers: &HeaderMap) -> Option<BodyPermit> {
        let declared = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        // Over MAX_BODY is refused by the read itself; reserve no more than that.
        let n = declared.unwrap_or(MAX_BODY).clamp(1, MAX_BODY);
        let permit = self.bytes.clone().try_acquire_many_owned(n as u32).ok()?;
        self.gauge.increment(n as f64);
        Some(BodyPermit(permit, self.gauge.clone(), n as f64))
    }
}

/// Binds the API listener and serves it in the background.
pub async fn serve(addr: SocketAddr, state: Arc<ApiState>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    // Every operation's series exist from the start (zeros, not gaps).
    let ops = kinesis::all_operations().map(|op| op.to_string());
    let ops = ops.chain(
        firehose::OPERATIONS
            .iter()
            .map(|op| format!("Firehose.{op}")),
    );
    for op in ops {
        metrics::counter!("sluice_api_requests_total", "operation" => op.clone(), "code" => "200")
            .increment(0);
        let _ = metrics::histogram!("sluice_api_request_duration_seconds", "operation" => op);
    }
    // AWS never looks at the path: every request goes through `entry`.
    let app = Router::new()
        .fallback(entry)
        .layer(DefaultBodyLimit::disable())
        .with_state(state);
    tokio::spawn(crate::http::serve(
        listener,
        app,
        crate::http::LIMITS,
        "api",
    ));
    Ok(local)
}

/// Time for a request body to arrive once its head has.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An error answer outside any operation (size, method, path), in AWS's shape with a
/// request id. `close` asks the client to close the connection (the body was not read).
fn refusal(status: StatusCode, kind: &'static str, message: String, close: bool) -> Response {
    let e = ApiError {
        kind,
        message,
        status,
    };
    metrics::counter!("sluice_api_requests_total", "operation" => "unknown", "code" => status.as_u16().to_string()).increment(1);
    let mut resp = (status, e.body()).into_response();
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        h.insert("x-amzn-requestid", v);
    }
    if close {
        h.insert("connection", HeaderValue::from_static("close"));
    }
    resp
}

/// A protocol-level answer outside any operation: `status`, an exact body and its content
/// type (none for AWS's XML refusals), with a request id.
fn protocol(
    status: StatusCode,
    body: &'static str,
    content_type: Option<&'static str>,
) -> Response {
    metrics::counter!("sluice_api_requests_total", "operation" => "unknown", "code" => status.as_u16().to_string()).increment(1);
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.remove("content-type");
    if let Some(ct) = content_type {
        h.insert("content-type", HeaderValue::from_static(ct));
    }
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

/// What AWS answers any method but POST (GET, PUT, an OPTIONS without `Origin`...).
const ACCESS_DENIED: &str = "<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be authorized</Message>\n</AccessDeniedException>\n";

/// Every request: a CORS preflight (OPTIONS with `Origin`) is answered for any target; any
/// other method than POST gets AWS's AccessDenied document; POSTs go to [`handle`], with
/// the CORS headers a browser needs when they carry `Origin`.
async fn entry(
    state: State<Arc<ApiState>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let origin = headers.contains_key("origin");
    if origin && method == axum::http::Method::OPTIONS {
        let mut resp = protocol(StatusCode::OK, "", None);
        let h = resp.headers_mut();
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        h.insert("access-control-max-age", HeaderValue::from_static("172800"));
        for (asked, allow) in [
            (
                "access-control-request-headers",
                "access-control-allow-headers",
            ),
            (
                "access-control-request-method",
                "access-control-allow-methods",
            ),
        ] {
            if let Some(v) = headers.get(asked) {
                h.insert(allow, v.clone());
            }
        }
        return resp;
    }
    if method != axum::http::Method::POST {
        return protocol(StatusCode::FORBIDDEN, ACCESS_DENIED, None);
    }
    let mut resp = handle(state, uri, headers, body).await;
    if origin {
        let h = resp.headers_mut();
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        h.insert(
            "access-control-expose-headers",
            HeaderValue::from_static("x-amzn-RequestId,x-amzn-ErrorType,x-amz-request-id,x-amz-id-2,x-amzn-ErrorMessage,Date"),
        );
    }
    resp
}

/// Whether the request is in the CBOR form (answered in CBOR).
fn is_cbor(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim() == cbor::MEDIA_TYPE)
}

/// A JSON answer of a CBOR request, re-encoded in CBOR.
fn as_cbor(resp: Response, text: &str) -> Response {
    let (mut parts, _) = resp.into_parts();
    parts
        .headers
        .insert("content-type", HeaderValue::from_static(cbor::MEDIA_TYPE));
    parts.headers.remove("content-length");
    Response::from_parts(
        parts,
        axum::body::Body::from(cbor::response_from_json(text)),
    )
}

/// A protocol-level answer: status, exact body, content type (none for AWS's XML
/// documents).
struct Answer(StatusCode, &'static str, Option<&'static str>);

/// [`precheck_json`]'s answer as a response: its JSON documents in CBOR for a CBOR request.
fn precheck(
    headers: &HeaderMap,
    target: &str,
    body: &[u8],
    json: &[u8],
) -> Result<serde_json::Value, Box<Response>> {
    precheck_json(headers, target, body, json).map_err(|Answer(status, text, ct)| {
        let resp = protocol(status, text, ct);
        Box::new(
            if is_cbor(headers) && ct == Some("application/x-amz-json-1.1") {
                as_cbor(resp, text)
            } else {
                resp
            },
        )
    })
}

/// The protocol checks AWS makes before an operation runs, in its order: an empty body,
/// the content type, the JSON itself, the operation's name (all before authentication).
/// `body` as received; `json` its JSON form (the same bytes unless it came as CBOR). The
/// request, parsed once, when it passes.
fn precheck_json(
    headers: &HeaderMap,
    target: &str,
    body: &[u8],
    json_body: &[u8],
) -> Result<serde_json::Value, Answer> {
    let parts = target
        .split_once('.')
        .filter(|(s, o)| !s.is_empty() && !o.is_empty());
    let known = match parts {
        Some(("Kinesis_20131202", op)) => kinesis::is_operation(op),
        Some(("Firehose_20150804", op)) => firehose::OPERATIONS.contains(&op),
        _ => false,
    };
    let json = "application/x-amz-json-1.1";
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim());
    if body.is_empty() {
        return Err(Answer(
            StatusCode::BAD_REQUEST,
            if known {
                r#"{"__type":"SerializationException"}"#
            } else {
                r#"{"__type":"UnknownOperationException"}"#
            },
            Some(json),
        ));
    }
    match ct {
        Some("application/x-amz-json-1.1") | Some("application/x-amz-cbor-1.1") => {}
        Some("application/json") => {
            return Err(Answer(
                StatusCode::NOT_FOUND,
                r#"{"Output":{"__type":"com.amazon.coral.service#UnknownOperationException"},"Version":"1.0"}"#,
                Some("application/json"),
            ))
        }
        _ if parts.is_none() => return Err(Answer(StatusCode::FORBIDDEN, ACCESS_DENIED, None)),
        _ => {
            return Err(Answer(
                StatusCode::NOT_FOUND,
                "<UnknownOperationException/>\n",
                None,
            ))
        }
    }
    let Ok(req) = request::body(json_body) else {
        return Err(Answer(
            StatusCode::BAD_REQUEST,
            r#"{"__type":"SerializationException"}"#,
            Some(json),
        ));
    };
    if !known {
        return Err(Answer(
            StatusCode::BAD_REQUEST,
            r#"{"__type":"UnknownOperationException"}"#,
            Some(json),
        ));
    }
    Ok(req)
}

fn too_large(n: Option<u64>) -> Response {
    let what = n.map_or("The request body".to_string(), |n| {
        format!("A request body of {n} bytes")
    });
    refusal(
        StatusCode::PAYLOAD_TOO_LARGE,
        "SerializationException",
        format!("{what} exceeds the limit of {MAX_BODY} bytes."),
        true,
    )
}

/// Reads the body: refused before reading when its declared length is over [`MAX_BODY`],
/// cut off when it grows past it, and given [`BODY_TIMEOUT`] to arrive.
async fn read_body(headers: &HeaderMap, body: axum::body::Body) -> Result<Bytes, Response> {
    read_body_within(headers, body, BODY_TIMEOUT).await
}

async fn read_body_within(
    headers: &HeaderMap,
    body: axum::body::Body,
    timeout: std::time::Duration,
) -> Result<Bytes, Response> {
    use http_body_util::BodyExt as _;
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large(declared));
    }
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        // Over the limit while streaming (no or a false Content-Length)...
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(None)),
        // ... or a broken body (bad chunked encoding, the client went away).
        Ok(Err(e)) => Err(refusal(
            StatusCode::BAD_REQUEST,
            "SerializationException",
            format!("Could not read the request body: {e}"),
            true,
        )),
        Err(_) => Err(refusal(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeoutException",
            format!(
                "The request body did not arrive within {} seconds.",
                timeout.as_secs()
            ),
            true,
        )),
    }
}

/// Region from the SigV4 credential scope (`Credential=AKID/date/REGION/service/...`).
fn region(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(2))
        .filter(|r| !r.is_empty() && r.len() < 64)
        .unwrap_or("us-east-1")
        .to_string()
}

fn request_id() -> String {
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// Per-request context.
pub struct Call<'a> {
    /// Shared state.
    pub state: &'a ApiState,
    /// Region for ARNs.
    pub region: String,
}

impl Call<'_> {
    /// `arn:aws:kinesis:<region>:<account>:stream/<name>`.
    pub fn stream_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:kinesis:{}:{}:stream/{name}",
            self.region, self.state.account
        )
    }
}

async fn handle(
    State(state): State<Arc<ApiState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let started = Instant::now();
    let Some(_bytes) = state.bodies.reserve(&headers) else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            "sluiced is handling too many request bytes at once; retry with backoff.".into(),
            false,
        );
    };
    let body = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The CBOR form is read as its JSON form; a body that is not CBOR stays as it is and
    // fails the JSON check like any unreadable body.
    let cbor = is_cbor(&headers);
    let json_body = match cbor {
        true => cbor::request_to_json(&body)
            .map(Bytes::from)
            .unwrap_or_else(|| Bytes::from_static(b"not CBOR")),
        false => body.clone(),
    };
    let req = match precheck(&headers, target, &body, &json_body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    let call = Call {
        state: &state,
        region: region(&headers),
    };
    let auth = match &state.verifier {
        Some(v) => v.verify(
            "POST",
            uri.path(),
            uri.query().unwrap_or(""),
            &headers,
            &body,
            crate::record::now_ms() / 1000,
        ),
        None => Ok(()),
    };
    // SubscribeToShard answers with a stream of events, not one document.
    if auth.is_ok() && target == "Kinesis_20131202.SubscribeToShard" {
        let rid = request_id();
        let (status, resp) = match subscribe::subscribe(&call, &req).await {
            Ok(events) => {
                let mut resp = Response::new(axum::body::Body::new(events));
                resp.headers_mut().insert(
                    "content-type",
                    HeaderValue::from_static("application/vnd.amazon.eventstream"),
                );
                (StatusCode::OK, resp)
            }
            Err(e) => {
                let body = if cbor {
                    cbor::response_from_json(&e.body())
                } else {
                    e.body().into_bytes()
                };
                let ct = if cbor {
                    cbor::MEDIA_TYPE
                } else {
                    "application/x-amz-json-1.1"
                };
                let mut resp = (e.status, body).into_response();
                resp.headers_mut()
                    .insert("content-type", HeaderValue::from_static(ct));
                (e.status, resp)
            }
        };
        metrics::counter!("sluice_api_requests_total", "operation" => "SubscribeToShard", "code" => status.as_u16().to_string()).increment(1);
        metrics::histogram!("sluice_api_request_duration_seconds", "operation" => "SubscribeToShard")
            .record(started.elapsed().as_secs_f64());
        let mut resp = resp;
        if let Ok(v) = HeaderValue::from_str(&rid) {
            resp.headers_mut().insert("x-amzn-requestid", v);
        }
        return resp;
    }
    let (op, result) = match (auth, target.split_once('.')) {
        (Err(e), _) => ("unauthenticated".to_string(), Err(e)),
        (Ok(()), Some(("Kinesis_20131202", op))) => {
            (op.to_string(), kinesis::dispatch(&call, op, &req).await)
        }
        (Ok(()), Some(("Firehose_20150804", op))) => (
            format!("Firehose.{op}"),
            firehose::dispatch(&call, op, &req).await,
        ),
        (Ok(()), _) => (
            "unknown".to_string(),
            Err(ApiError::unknown_operation(target)),
        ),
    };
    let rid = request_id();
    let (status, text) = match result {
        Ok(v) => (StatusCode::OK, v.to_string()),
        Err(e) => {
            tracing::debug!(operation = %op, error_type = e.kind, message = %e.message, "API error");
            (e.status, e.body())
        }
    };
    let known = kinesis::is_operation(&op)
        || op
            .strip_prefix("Firehose.")
            .is_some_and(|o| firehose::OPERATIONS.contains(&o));
    let op_label = if known { op } else { "unknown".to_string() };
    metrics::counter!("sluice_api_requests_total", "operation" => op_label.clone(), "code" => status.as_u16().to_string()).increment(1);
    metrics::histogram!("sluice_api_request_duration_seconds", "operation" => op_label)
        .record(started.elapsed().as_secs_f64());
    // (No copy of the answer for JSON: a GetRecords answer can be 10 MiB.)
    let (body, content_type) = if cbor {
        (cbor::response_from_json(&text), cbor::MEDIA_TYPE)
    } else {
        (text.into_bytes(), "application/x-amz-json-1.1")
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&rid) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

/// Entry points shared by the cargo-fuzz target (`daemon/fuzz`) and the property tests that
/// run it on every `cargo test`.
pub mod fuzzing {
    use super::*;
    use std::sync::OnceLock;

    struct Env {
        rt: tokio::runtime::Runtime,
        state: ApiState,
        _dir: std::path::PathBuf,
    }

    /// Folders of earlier runs whose process is gone (the environment lives as long as
    /// the process, so each run removes what dead ones left).
    fn remove_stale() {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("sluice-api-fuzz-"))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// A control plane whose reloads always succeed (no daemon behind it).
    fn fuzz_control(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> FirehoseControl {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ReloadReply>(1);
        rt.spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(Ok(()));
            }
        });
        let (_keep, pipelines) = tokio::sync::watch::channel(Arc::new(Default::default()));
        std::mem::forget(_keep);
        FirehoseControl {
            data_dir: dir.to_path_buf(),
            config: Default::default(),
            reload: tx,
            pipelines,
            lock: tokio::sync::Mutex::new(()),
            encrypted: Default::default(),
        }
    }

    fn env() -> Option<&'static Env> {
        static ENV: OnceLock<Option<Env>> = OnceLock::new();
        ENV.get_or_init(|| {
            remove_stale();
            let dir = std::env::temp_dir().join(format!("sluice-api-fuzz-{}", std::process::id()));
            let streams = Streams::open(&dir).ok()?;
            streams.create("events", 2, Default::default()).ok()?;
            // The internal stream of a `direct-put` pipeline named `lake`.
            streams
                .create(
                    &crate::spec::direct_put_stream("lake"),
                    1,
                    Default::default(),
                )
                .ok()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .ok()?;
            let control = fuzz_control(&rt, &dir);
            Some(Env {
                rt,
                state: ApiState {
                    streams: Arc::new(streams),
                    account: "000000000000".into(),
                    iterators: IteratorCodec::new(),
                    verifier: None,
                    firehose: Some(control),
                    subscriptions: Default::default(),
                    bodies: Default::default(),
                },
                _dir: dir,
            })
        })
        .as_ref()
    }

    /// Runs Kinesis operation `op` on `body`: it must answer (never panic) and any error
    /// must be a client error (4xx), never an internal one.
    pub fn dispatch(op: &str, body: &[u8]) {
        run(op, body, false);
    }

    /// The same for Firehose operation `op` (delivery stream `lake` exists).
    pub fn dispatch_firehose(op: &str, body: &[u8]) {
        run(op, body, true);
    }

    fn run(op: &str, body: &[u8], firehose: bool) {
        // No environment means no case can run: that is a failure, not a pass.
        let Some(env) = env() else {
            panic!(
                "the API fuzz environment (streams in a temp folder, a runtime) could not be built"
            );
        };
        let call = Call {
            state: &env.state,
            region: "us-east-1".into(),
        };
        // Bytes the protocol checks would refuse never reach an operation.
        let Ok(req) = request::body(body) else {
            return;
        };
        let res = env.rt.block_on(async {
            if firehose {
                firehose::dispatch(&call, op, &req).await
            } else {
                kinesis::dispatch(&call, op, &req).await
            }
        });
        if let Err(e) = res {
            assert!(
                e.status.is_client_error(),
                "{op} answered {} {}: {}",
                e.status,
                e.kind,
                e.message
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes_in_flight_are_bounded() {
        let budget = BodyBudget::new(3 * MAX_BODY);
        let with_length = |n: usize| {
            let mut h = HeaderMap::new();
            h.insert("content-length", HeaderValue::from(n));
            h
        };
        let held: Vec<BodyPermit> = (0..3)
            .map(|_| budget.reserve(&with_length(MAX_BODY)).unwrap())
            .collect();
        assert!(budget.reserve(&with_length(1)).is_none(), "full");
        drop(held);
        // No declared length: the most a body may be is held.
        let unknown = budget.reserve(&HeaderMap::new()).unwrap();
        assert_eq!(budget.bytes.available_permits(), 2 * MAX_BODY);
        // A declared length above the limit holds no more than the limit (the read refuses it).
        let big = budget.reserve(&with_length(usize::MAX)).unwrap();
        assert_eq!(budget.bytes.available_permits(), MAX_BODY);
        drop((unknown, big));
        assert_eq!(budget.bytes.available_permits(), 3 * MAX_BODY);
    }

    /// A body that never sends anything (a client that announced one and went quiet).
    struct Silent;

    impl axum::body::HttpBody for Silent {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_is_not_waited_for() {
        let r = read_body_within(
            &HeaderMap::new(),
            axum::body::Body::new(Silent),
            std::time::Duration::from_millis(50),
        )
        .await
        .err()
        .unwrap();
        assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(r.headers().contains_key("x-amzn-requestid"));
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_cut_off_while_streaming() {
        let big = axum::body::Body::from(vec![b' '; MAX_BODY + 1]);
        let r = read_body_within(&HeaderMap::new(), big, BODY_TIMEOUT)
            .await
            .err()
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let ok = axum::body::Body::from(vec![b' '; MAX_BODY]);
        assert_eq!(
            read_body_within(&HeaderMap::new(), ok, BODY_TIMEOUT)
                .await
                .map(|b| b.len())
                .ok(),
            Some(MAX_BODY)
        );
    }
}
