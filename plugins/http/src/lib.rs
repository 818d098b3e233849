//! The bundled `http` record sink: Firehose's HTTP-endpoint destination, so endpoints
//! written for Firehose (and services that accept it) receive what sluice delivers.
//!
//! Each batch the host hands over is one request: `POST url` with `Content-Type:
//! application/json`, `X-Amz-Firehose-Protocol-Version: 1.0`, `X-Amz-Firehose-Request-Id`
//! (the same for every attempt of the batch), `X-Amz-Firehose-Source-Arn`, the optional
//! `X-Amz-Firehose-Access-Key` and `X-Amz-Firehose-Common-Attributes`, optionally gzip
//! (`Content-Encoding: gzip`), and the body `{"requestId", "timestamp", "records":
//! [{"data": base64}]}`.
//!
//! The response contract is Firehose's: only a 200 whose JSON body carries the same
//! `requestId` is a delivery; any other status (other 2xx included), a body that is not
//! such a document, a timeout or a connection failure is a failed attempt. Failed
//! attempts are retried (the host backs off) until `retry_duration_secs` has passed since
//! the first one; then the batch's records go to the error output — one Firehose error
//! document per record under `<error_output>/http-endpoint-failed/YYYY/MM/DD/HH/`, written
//! durably — and the batch counts as delivered. Nothing is lost: a record is acknowledged
//! only once the endpoint took it or it is on disk in the error output.

use base64::Engine as _;
use serde::Deserialize;
use sluice_plugin_api::{
    declare_library, Batch, Completion, Context, Error, Level, Metric, Plugin, Sink, Submitted,
};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
/// The HTTP client crate, for users of [`client_agent`].
pub use ureq;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Largest response body read (Firehose's limit for endpoint responses).
const MAX_RESPONSE: u64 = 1 << 20;

/// `http` sink options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// The endpoint, `https://host/path` or `http://host:port/path`.
    pub url: String,
    /// PEM file of the certificates to trust for `https://` instead of the system's roots
    /// (a private CA, a self-signed endpoint).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Sent verbatim as `X-Amz-Firehose-Access-Key`.
    #[serde(default)]
    pub access_key: Option<String>,
    /// `none` or `gzip` (Firehose's `ContentEncoding`).
    #[serde(default)]
    pub content_encoding: Encoding,
    /// Sent as `X-Amz-Firehose-Common-Attributes: {"commonAttributes": {...}}`.
    #[serde(default)]
    pub common_attributes: BTreeMap<String, String>,
    /// How long one request may take (Firehose gives endpoints 3 minutes).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// How long a batch is retried before its records go to the error output (Firehose's
    /// `RetryOptions.DurationInSeconds`: 0..7200, default 300; 0 = no retry).
    #[serde(default = "default_retry_duration")]
    pub retry_duration_secs: u64,
    /// Folder for records the endpoint never took (`http-endpoint-failed/...` below it).
    pub error_output: PathBuf,
    /// `X-Amz-Firehose-Source-Arn` (default: a Firehose ARN named after the pipeline).
    #[serde(default)]
    pub source_arn: Option<String>,
}

/// Request body encoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Plain JSON.
    #[default]
    None,
    /// gzip, with `Content-Encoding: gzip`.
    Gzip,
}

fn default_timeout() -> u64 {
    180
}
fn default_retry_duration() -> u64 {
    300
}

/// A batch whose attempts failed so far: the host submits it again until it is stored.
struct Retrying {
    /// Which batch: its length and first and last record numbers. A different batch (a
    /// new instance never sees an old one, but nothing here should rely on that) starts
    /// afresh with its own request id and retry clock.
    batch: (usize, u64, u64),
    request_id: String,
    since: Instant,
    attempts: u32,
}

fn fingerprint(batch: &Batch<'_>) -> (usize, u64, u64) {
    let seq = |r: Option<sluice_plugin_api::Record<'_>>| r.map_or(0, |r| r.sequence);
    (
        batch.len(),
        seq(batch.get(0)),
        seq(batch.get(batch.len().saturating_sub(1))),
    )
}

/// The sink.
pub struct HttpSink {
    cfg: HttpSinkConfig,
    pipeline: String,
    source_arn: String,
    common: Option<String>,
    agent: ureq::Agent,
    retrying: Option<Retrying>,
    ctx: Context,
    /// Requests sent, failed attempts, records written to the error output.
    metrics: (Metric, Metric, Metric),
}

/// A failed attempt, in Firehose's error vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    code: &'static str,
    message: String,
}

impl Plugin for HttpSink {
    type Config = HttpSinkConfig;
    fn create(mut cfg: HttpSinkConfig, ctx: &Context) -> Result<Self, Error> {
        let rest = match cfg.url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", rest)) if cfg!(feature = "tls") => rest,
            Some(("https", _)) => {
                return Err(Error::config_field(
                    "url",
                    "https is not supported by this build (built without the `tls` feature)",
                ))
            }
            _ => {
                return Err(Error::config_field(
                    "url",
                    "must be an http:// or https:// URL",
                ))
            }
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(Error::config_field("url", "must name a host"));
        }
        if cfg.timeout_secs == 0 || cfg.timeout_secs > 900 {
            return Err(Error::config_field(
                "timeout_secs",
                "must be between 1 and 900",
            ));
        }
        if cfg.retry_duration_secs > 7200 {
            return Err(Error::config_field(
                "retry_duration_secs",
                "must be between 0 and 7200 (Firehose's range)",
            ));
        }
        if cfg.access_key.as_ref().is_some_and(|k| k.len() > 4096) {
            return Err(Error::config_field(
                "access_key",
                "must be at most 4096 bytes (Firehose's limit)",
            ));
        }
        if cfg
            .access_key
            .as_ref()
            .is_some_and(|k| k.bytes().any(|b| b.is_ascii_control()))
        {
            return Err(Error::config_field(
                "access_key",
                "must not hold control characters",
            ));
        }
        if cfg.error_output.as_os_str().is_empty() {
            return Err(Error::config_field("error_output", "must name a folder"));
        }
        cfg.error_output = ctx.resolve_path(&cfg.error_output);
        let common = if cfg.common_attributes.is_empty() {
            None
        } else {
            Some(serde_json::json!({ "commonAttributes": cfg.common_attributes }).to_string())
        };
        let source_arn = cfg.source_arn.clone().unwrap_or_else(|| {
            format!(
                "arn:aws:firehose:us-east-1:000000000000:deliverystream/{}",
                ctx.pipeline()
            )
        });
        if let Some(ca) = &mut cfg.ca_file {
            if !cfg.url.starts_with("https://") {
                return Err(Error::config_field(
                    "ca_file",
                    "is for https:// endpoints; this url is plain http",
                ));
            }
            *ca = ctx.resolve_path(ca);
        }
        let agent = agent(&cfg)?;
        let metrics = (
            ctx.counter(
                "http_requests_total",
                "Requests sent to the endpoint, retries included",
            )?,
            ctx.counter(
                "http_request_failures_total",
                "Requests the endpoint did not accept (status, response, timeout, connection)",
            )?,
            ctx.counter(
                "http_records_failed_total",
                "Records written to the error output after retry_duration_secs",
            )?,
        );
        Ok(HttpSink {
            pipeline: ctx.pipeline().to_string(),
            source_arn,
            common,
            agent,
            retrying: None,
            ctx: ctx.clone(),
            metrics,
            cfg,
        })
    }
}

impl Sink for HttpSink {
    fn submit(&mut self, batch: &Batch<'_>, done: Completion) -> Result<Submitted, Error> {
        if batch.is_empty() {
            done.success();
            return Ok(Submitted::Accepted);
        }
        let batch_id = fingerprint(batch);
        let mut r = match self.retrying.take() {
            Some(r) if r.batch == batch_id => r,
            _ => Retrying {
                batch: batch_id,
                request_id: request_id(),
                since: Instant::now(),
                attempts: 0,
            },
        };
        r.attempts += 1;
        self.metrics.0.record(1.0);
        let outcome = body(&r.request_id, batch, self.cfg.content_encoding)
            .map_err(|e| Failure {
                code: "HttpEndpoint.RequestEncodingFailed",
                message: e.to_string(),
            })
            .and_then(|b| self.send(&r.request_id, &b));
        let failure = match outcome {
            Ok(()) => {
                done.success();
                return Ok(Submitted::Accepted);
            }
            Err(f) => f,
        };
        self.metrics.1.record(1.0);
        self.ctx.log(
            Level::Warn,
            &format!(
                "request {} (attempt {}) failed: {}: {}",
                r.request_id, r.attempts, failure.code, failure.message
            ),
        );
        if r.since.elapsed() < Duration::from_secs(self.cfg.retry_duration_secs) {
            let err = Error::retryable(format_args!("{}: {}", failure.code, failure.message));
            self.retrying = Some(r);
            done.fail(&err);
            return Ok(Submitted::Accepted);
        }
        // Out of time: the records go where Firehose puts them, durably, then count as
        // delivered. A failed write is retried like a failed request.
        match write_errors(&self.cfg.error_output, &self.pipeline, &r, &failure, batch) {
            Ok(path) => {
                self.metrics.2.record(batch.len() as f64);
                self.ctx.log(
                    Level::Error,
                    &format!(
                        "request {} gave up after {} attempts; {} records written to {}",
                        r.request_id,
                        r.attempts,
                        batch.len(),
                        path.display()
                    ),
                );
                done.success();
            }
            Err(e) => {
                let err = Error::retryable(format_args!(
                    "cannot write the error output {}: {e}",
                    self.cfg.error_output.display()
                ));
                self.retrying = Some(r);
                done.fail(&err);
            }
        }
        Ok(Submitted::Accepted)
    }
}

impl HttpSink {
    /// One attempt: the request, then the response checked against the contract.
    fn send(&self, request_id: &str, body: &[u8]) -> Result<(), Failure> {
        let mut req = self
            .agent
            .post(&self.cfg.url)
            .header("Content-Type", "application/json")
            .header("X-Amz-Firehose-Protocol-Version", "1.0")
            .header("X-Amz-Firehose-Request-Id", request_id)
            .header("X-Amz-Firehose-Source-Arn", &self.source_arn);
        if let Some(k) = &self.cfg.access_key {
            req = req.header("X-Amz-Firehose-Access-Key", k);
        }
        if let Some(c) = &self.common {
            req = req.header("X-Amz-Firehose-Common-Attributes", c);
        }
        if self.cfg.content_encoding == Encoding::Gzip {
            req = req.header("Content-Encoding", "gzip");
        }
        let mut resp = req.send(body).map_err(|e| {
            let timeout = matches!(e, ureq::Error::Timeout(_));
            Failure {
                code: if timeout {
                    "HttpEndpoint.RequestTimeout"
                } else {
                    "HttpEndpoint.ConnectionFailed"
                },
                message: format!("POST {}: {e}", self.cfg.url),
            }
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .map_err(|e| Failure {
                code: match e {
                    ureq::Error::BodyExceedsLimit(_) => "HttpEndpoint.ResponseTooLarge",
                    ureq::Error::Timeout(_) => "HttpEndpoint.RequestTimeout",
                    _ => "HttpEndpoint.ConnectionFailed",
                },
                message: format!("reading the response: {e}"),
            })?;
        check_response(status, &text, request_id)
    }
}

/// The HTTP client the daemon's own calls use (its `kinesis` source): this sink's stack —
/// `timeout` per request, statuses as answers, no redirects, and for `https://` the
/// platform's trust roots.
pub fn client_agent(timeout: Duration) -> ureq::Agent {
    let builder = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false);
    #[cfg(feature = "tls")]
    let builder = builder.tls_config(tls_config(ureq::tls::RootCerts::PlatformVerifier));
    builder.build().into()
}

/// Makes aws-lc the process's default rustls provider (for clients that take the
/// default, such as the NATS client): with both rustls providers compiled into one
/// binary (feature unification) rustls cannot pick one by itself. Idempotent.
#[cfg(feature = "tls")]
pub fn install_crypto_provider() {
    // Err: a provider is installed already, which is all that is needed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(feature = "tls")]
fn tls_config(roots: ureq::tls::RootCerts) -> ureq::tls::TlsConfig {
    ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(roots)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .build()
}

/// The HTTP client: the request timeout, statuses as answers (the contract is checked
/// here), and for `https://` the platform's trust roots or `ca_file`'s certificates.
fn agent(cfg: &HttpSinkConfig) -> Result<ureq::Agent, Error> {
    let builder = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(cfg.timeout_secs)))
        .http_status_as_error(false)
        // As Firehose: a redirect is a failed attempt (following one would send the
        // access key and the records to wherever it points).
        .max_redirects(0)
        .max_redirects_will_error(false);
    #[cfg(feature = "tls")]
    let builder = {
        use ureq::tls::RootCerts;
        let roots = match &cfg.ca_file {
            None => RootCerts::PlatformVerifier,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    Error::config_field(
                        "ca_file",
                        format_args!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    return Err(Error::config_field(
                        "ca_file",
                        format_args!("{} holds no PEM certificate", path.display()),
                    ));
                }
                RootCerts::new_with_certs(&certs)
            }
        };
        builder.tls_config(tls_config(roots))
    };
    #[cfg(not(feature = "tls"))]
    if cfg.ca_file.is_some() {
        return Err(Error::config_field(
            "ca_file",
            "this build has no TLS (built without the `tls` feature)",
        ));
    }
    Ok(builder.build().into())
}

/// Firehose's contract: a 200 with a JSON body naming the same request id.
fn check_response(status: u16, body: &[u8], request_id: &str) -> Result<(), Failure> {
    let shown = String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
    if status != 200 {
        return Err(Failure {
            code: "HttpEndpoint.DestinationException",
            message: format!(
                "The following response was received from the endpoint destination. {status}: {shown}"
            ),
        });
    }
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "requestId")]
        request_id: String,
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(a) if a.request_id == request_id => Ok(()),
        Ok(a) => Err(Failure {
            code: "HttpEndpoint.InvalidResponseFromDestination",
            message: format!(
                "the response names request {} instead of {request_id}",
                a.request_id
            ),
        }),
        Err(e) => Err(Failure {
            code: "HttpEndpoint.InvalidResponseFromDestination",
            message: format!("the response is not a Firehose response document ({e}): {shown}"),
        }),
    }
}

/// The request body, gzipped if asked.
fn body(request_id: &str, batch: &Batch<'_>, enc: Encoding) -> std::io::Result<Vec<u8>> {
    let mut json = Vec::with_capacity(
        64 + batch
            .iter()
            .map(|r| r.data.len() * 4 / 3 + 12)
            .sum::<usize>(),
    );
    write!(
        json,
        "{{\"requestId\":{},\"timestamp\":{},\"records\":[",
        serde_json::Value::from(request_id),
        now_ms()
    )?;
    for (i, r) in batch.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(b"{\"data\":\"");
        json.extend_from_slice(B64.encode(r.data).as_bytes());
        json.extend_from_slice(b"\"}");
    }
    json.extend_from_slice(b"]}");
    match enc {
        Encoding::None => Ok(json),
        Encoding::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&json)?;
            gz.finish()
        }
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A random UUID (v4) as Firehose's request ids look.
fn request_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness (never seen on Linux): time-based, still unique per process.
        b[..16].copy_from_slice(&jiff::Timestamp::now().as_nanosecond().to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Writes one Firehose error document per record to
/// `<dir>/http-endpoint-failed/YYYY/MM/DD/HH/<pipeline>-<request id>` (temp file, fsync,
/// rename, folder fsync); returns the file.
fn write_errors(
    dir: &Path,
    pipeline: &str,
    r: &Retrying,
    f: &Failure,
    batch: &Batch<'_>,
) -> std::io::Result<PathBuf> {
    let now = jiff::Timestamp::now();
    let folder = dir
        .join("http-endpoint-failed")
        .join(now.strftime("%Y/%m/%d/%H").to_string());
    create_durably(&folder)?;
    let name = format!("{pipeline}-{}", r.request_id);
    let path = folder.join(&name);
    let tmp = folder.join(format!(".{name}.tmp"));
    let mut out = Vec::new();
    for rec in batch.iter() {
        let doc = serde_json::json!({
            "attemptsMade": r.attempts,
            "arrivalTimestamp": rec.timestamp_ms.unwrap_or(now.as_millisecond()),
            "errorCode": f.code,
            "errorMessage": f.message,
            "attemptEndingTimestamp": now.as_millisecond(),
            "rawData": B64.encode(rec.data),
            "sequenceNumber": rec.sequence.to_string(),
            "pipeline": pipeline,
        });
        serde_json::to_writer(&mut out, &doc)?;
        out.push(b'\n');
    }
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&out)?;
    file.sync_data()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(&folder)?.sync_all()?;
    Ok(path)
}

/// `mkdir -p` whose new folders survive a power loss: each one made is synced into its
/// parent.
fn create_durably(folder: &Path) -> std::io::Result<()> {
    if folder.is_dir() {
        return Ok(());
    }
    if let Some(parent) = folder.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_durably(parent)?;
        match std::fs::create_dir(folder) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        std::fs::File::open(parent)?.sync_all()
    } else {
        std::fs::create_dir_all(folder)
    }
}

declare_library!(
    name: "http-sink",
    plugins: [
        sink("http", HttpSink, "Firehose's HTTP-endpoint destination: batches POSTed in its request format, retried for retry_duration_secs, then to the error output"),
    ]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_200_naming_the_request_is_a_delivery() {
        assert_eq!(
            check_response(200, br#"{"requestId":"r1","timestamp":1}"#, "r1"),
            Ok(())
        );
        let e = check_response(200, br#"{"requestId":"r2","timestamp":1}"#, "r1").unwrap_err();
        assert_eq!(e.code, "HttpEndpoint.InvalidResponseFromDestination");
        let e = check_response(200, b"OK", "r1").unwrap_err();
        assert_eq!(e.code, "HttpEndpoint.InvalidResponseFromDestination");
        let e = check_response(202, br#"{"requestId":"r1"}"#, "r1").unwrap_err();
        assert_eq!(e.code, "HttpEndpoint.DestinationException");
        let e = check_response(413, br#"{"errorMessage":"Payload too large"}"#, "r1").unwrap_err();
        assert_eq!(
            e.message,
            r#"The following response was received from the endpoint destination. 413: {"errorMessage":"Payload too large"}"#
        );
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let (a, b) = (request_id(), request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert!(a.split('-').map(str::len).eq([8, 4, 4, 4, 12]));
    }
}
