//! The bundled `lambda` transform: Firehose's data-transformation contract, so existing
//! transformation functions run unchanged. Each batch goes out as Firehose's invocation
//! event (`invocationId`, `deliveryStreamArn`, `region`, `records[{recordId,
//! approximateArrivalTimestamp, data}]`, data base64) and the answer comes back as
//! `records[{recordId, result, data, metadata.partitionKeys}]`, checked as Firehose checks
//! it: `Ok` records continue with the function's data (and their partition keys feed
//! `!{partitionKeyFromLambda:KEY}`), `Dropped` ones are gone, `ProcessingFailed` ones — and
//! records whose id is missing, repeated or unknown, or whose result or data is not valid —
//! go to the error output as `processing-failed`.
//!
//! Two ways to reach a function: `command = ["python3", "fn.py"]` keeps a process running
//! and writes one event per line to its stdin, reading one response document per line
//! from its stdout (restarted when it dies or times out); `url = "http://..."` POSTs each
//! event (the Lambda Runtime Interface Emulator's invoke URL, or any HTTP function). A
//! failed invocation (timeout, exit, HTTP error, an answer that is not a response
//! document) is retried `retries` times with backoff, as Firehose retries; then its records
//! go to the error output. No record is ever lost: every input is pushed, dropped on the
//! function's word, or rejected.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_plugin_api::{
    declare_library, Batch, Context, Error, Level, NewRecord, Output, Plugin, Transform,
};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `lambda` options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaConfig {
    /// A command kept running: one invocation event per line on stdin, one response per
    /// line on stdout.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// An HTTP function: each event is POSTed here, the body is the response.
    #[serde(default)]
    pub url: Option<String>,
    /// How long one invocation may take (default 60 s; Lambda's own limit is 900 s).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Retries of a failed invocation before its records go to the error output
    /// (Firehose's `NumberOfRetries`, default 3).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Invocations in flight at once (each its own process in command mode).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Largest invocation event, bytes (Lambda's synchronous payload limit is 6 MB);
    /// batches are split to fit.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// `deliveryStreamArn` in the events (default: a Firehose ARN named after the pipeline).
    #[serde(default)]
    pub delivery_stream_arn: Option<String>,
    /// `region` in the events.
    #[serde(default = "default_region")]
    pub region: String,
}

fn default_timeout() -> u64 {
    60
}
fn default_retries() -> u32 {
    3
}
fn default_concurrency() -> usize {
    1
}
fn default_max_payload() -> usize {
    6_000_000
}
fn default_region() -> String {
    "us-east-1".into()
}

/// Why an invocation gave no usable answer (a timeout, an exit, an HTTP error, an answer
/// that is not a response document); worded with Firehose's error code where it has one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct InvokeError(String);

impl From<String> for InvokeError {
    fn from(s: String) -> Self {
        InvokeError(s)
    }
}

impl From<&str> for InvokeError {
    fn from(s: &str) -> Self {
        InvokeError(s.to_string())
    }
}

type Answer = Result<Vec<u8>, InvokeError>;
/// Each chunk's outcome, filled by the worker that ran it.
type Slots = Vec<std::sync::Mutex<Option<Called>>>;
type LogFn = Box<dyn Fn(Level, &str) + Send>;

/// One way to call the function.
trait Invoke: Send {
    /// The function's answer to `event`, or why there is none.
    fn invoke(&mut self, event: &[u8], timeout: Duration) -> Answer;
    /// Forgets the function's state after an answer that was not a valid response (a
    /// command is restarted: the next line it prints may belong to the bad one).
    fn reset(&mut self) {}
}

/// A command kept running, one line per event and per answer.
struct Process {
    argv: Vec<String>,
    dir: std::path::PathBuf,
    max_line: usize,
    live: Option<Live>,
}

struct Live {
    child: Child,
    /// To the thread writing the command's stdin: a write that blocks (the command stopped
    /// reading) never blocks the pipeline, whose deadline kills the command instead.
    events: mpsc::SyncSender<Vec<u8>>,
    lines: mpsc::Receiver<Answer>,
}

impl Process {
    fn start(&mut self) -> Result<&mut Live, InvokeError> {
        if self.live.is_none() {
            let (prog, args) = self
                .argv
                .split_first()
                .ok_or(InvokeError::from("empty command"))?;
            let mut child = Command::new(prog)
                .args(args)
                .current_dir(&self.dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| InvokeError(format!("cannot start {prog}: {e}")))?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                let _ = child.kill();
                return Err("the command's pipes are missing".into());
            };
            let (etx, erx) = mpsc::sync_channel::<Vec<u8>>(1);
            std::thread::Builder::new()
                .name("sluice-lambda-in".into())
                .spawn(move || write_events(stdin, erx))
                .map_err(|e| InvokeError(e.to_string()))?;
            let (tx, rx) = mpsc::sync_channel(1);
            let max = self.max_line;
            std::thread::Builder::new()
                .name("sluice-lambda-out".into())
                .spawn(move || {
                    let mut r = BufReader::new(stdout);
                    loop {
                        let mut line = Vec::new();
                        // Bounded: an answer larger than any valid one is an error.
                        match r.by_ref().take(max as u64 + 1).read_until(b'\n', &mut line) {
                            Ok(0) => {
                                let _ = tx.send(Err("the command exited".into()));
                                return;
                            }
                            Ok(_) if line.len() > max => {
                                let _ = tx.send(Err(InvokeError(format!(
                                    "an answer longer than {max} bytes"
                                ))));
                                return;
                            }
                            Ok(_) => {
                                if tx.send(Ok(line)).is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                let _ = tx.send(Err(InvokeError(e.to_string())));
                                return;
                            }
                        }
                    }
                })
                .map_err(|e| InvokeError(e.to_string()))?;
            self.live = Some(Live {
                child,
                events: etx,
                lines: rx,
            });
        }
        self.live.as_mut().ok_or_else(|| "not running".into())
    }

    fn stop(&mut self) {
        if let Some(mut l) = self.live.take() {
            let _ = l.child.kill();
            let _ = l.child.wait();
        }
    }
}

impl Invoke for Process {
    fn reset(&mut self) {
        self.stop();
    }

    fn invoke(&mut self, event: &[u8], timeout: Duration) -> Answer {
        let live = self.start()?;
        let mut line = Vec::with_capacity(event.len() + 1);
        line.extend_from_slice(event);
        line.push(b'\n');
        let answer = match live.events.try_send(line) {
            Err(_) => Err(InvokeError::from(
                "the command is not reading its input (or exited)",
            )),
            Ok(()) => match live.lines.recv_timeout(timeout) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => Err(InvokeError(format!(
                    "no answer within {} s",
                    timeout.as_secs()
                ))),
                Err(mpsc::RecvTimeoutError::Disconnected) => Err("the command exited".into()),
            },
        };
        if answer.is_err() {
            // A fresh process for the retry: the old one may be stuck or half-way.
            self.stop();
        }
        answer
    }
}

/// Writes each event line to the command's stdin until the command or the sender goes.
fn write_events(mut stdin: ChildStdin, events: mpsc::Receiver<Vec<u8>>) {
    for line in events {
        if stdin.write_all(&line).and_then(|()| stdin.flush()).is_err() {
            return;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP function.
struct Http {
    url: String,
    agent: Option<ureq::Agent>,
    max_body: usize,
}

impl Invoke for Http {
    fn invoke(&mut self, event: &[u8], timeout: Duration) -> Answer {
        let agent = self.agent.get_or_insert_with(|| {
            ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .http_status_as_error(false)
                .build()
                .into()
        });
        let mut resp = agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .send(event)
            .map_err(|e| InvokeError(format!("POST {}: {e}", self.url)))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(self.max_body as u64)
            .read_to_vec()
            .map_err(|e| InvokeError(format!("reading the answer of {}: {e}", self.url)))?;
        if !(200..300).contains(&status) {
            return Err(InvokeError(format!(
                "{} answered {status}: {}",
                self.url,
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        Ok(body)
    }
}

/// The transform.
pub struct Lambda {
    cfg: LambdaConfig,
    arn: String,
    workers: Vec<Box<dyn Invoke>>,
    ctx_log: LogFn,
    invocation: u64,
    /// `sluice_plugin_lambda_invocations_total` and `..._invocation_failures_total`.
    metrics: (sluice_plugin_api::Metric, sluice_plugin_api::Metric),
}

impl Plugin for Lambda {
    type Config = LambdaConfig;
    fn create(cfg: LambdaConfig, ctx: &Context) -> Result<Self, Error> {
        let max_line = cfg.max_payload_bytes.saturating_mul(2);
        if !(1..=64).contains(&cfg.concurrency) {
            return Err(Error::config_field(
                "concurrency",
                "must be between 1 and 64",
            ));
        }
        if cfg.timeout_secs == 0 || cfg.timeout_secs > 900 {
            return Err(Error::config_field(
                "timeout_secs",
                "must be between 1 and 900",
            ));
        }
        if cfg.retries > 300 {
            return Err(Error::config_field("retries", "must be at most 300"));
        }
        if !(1024..=64 << 20).contains(&cfg.max_payload_bytes) {
            return Err(Error::config_field(
                "max_payload_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        let workers: Vec<Box<dyn Invoke>> = match (&cfg.command, &cfg.url) {
            (Some(argv), None) => {
                if argv.is_empty() || argv[0].is_empty() {
                    return Err(Error::config_field("command", "must name a program"));
                }
                let dir = ctx.resolve_path(std::path::Path::new("."));
                (0..cfg.concurrency)
                    .map(|_| {
                        Box::new(Process {
                            argv: argv.clone(),
                            dir: dir.clone(),
                            max_line,
                            live: None,
                        }) as Box<dyn Invoke>
                    })
                    .collect()
            }
            (None, Some(url)) => {
                if !url.starts_with("http://") {
                    return Err(Error::config_field(
                        "url",
                        "must be an http:// URL (the Lambda Runtime Interface Emulator, or any local HTTP function)",
                    ));
                }
                (0..cfg.concurrency)
                    .map(|_| {
                        Box::new(Http {
                            url: url.clone(),
                            agent: None,
                            max_body: max_line,
                        }) as Box<dyn Invoke>
                    })
                    .collect()
            }
            _ => {
                return Err(Error::config(
                    "give exactly one of `command` (a program kept running) or `url` (an HTTP function)",
                ))
            }
        };
        let arn = cfg.delivery_stream_arn.clone().unwrap_or_else(|| {
            format!(
                "arn:aws:firehose:{}:000000000000:deliverystream/{}",
                cfg.region,
                ctx.pipeline()
            )
        });
        let log_ctx = ctx.clone();
        let metrics = (
            ctx.counter(
                "lambda_invocations_total",
                "Invocations of the function, retries included",
            )?,
            ctx.counter(
                "lambda_invocation_failures_total",
                "Invocations that timed out, failed or answered an invalid document",
            )?,
        );
        Ok(Lambda {
            metrics,
            cfg,
            arn,
            workers,
            ctx_log: Box::new(move |l, m| log_ctx.log(l, m)),
            invocation: 0,
        })
    }
}

/// What became of one input record.
#[derive(Debug)]
enum Outcome {
    /// `Ok`: new data and partition keys.
    Ok(Vec<u8>, Vec<(String, String)>),
    /// `Dropped`.
    Dropped,
    /// To the error output, with Firehose's error code and a message.
    Failed(String),
}

/// Firehose's checks of a response, per input record of the invocation.
fn outcomes(answer: &[u8], ids: &[String]) -> Result<Vec<Outcome>, InvokeError> {
    let v: Value = serde_json::from_slice(answer).map_err(|e| {
        InvokeError(format!(
            "Lambda.JsonProcessingException: the answer is not JSON: {e}"
        ))
    })?;
    let records = v
        .get("records")
        .and_then(Value::as_array)
        .ok_or(InvokeError::from(
            "Lambda.JsonProcessingException: the answer has no `records` list",
        ))?;
    let index: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut out: Vec<Option<Outcome>> = (0..ids.len()).map(|_| None).collect();
    let mut unknown = Vec::new();
    for r in records {
        let Some(id) = r.get("recordId").and_then(Value::as_str) else {
            unknown.push("(no recordId)".to_string());
            continue;
        };
        let Some(&i) = index.get(id) else {
            unknown.push(id.to_string());
            continue;
        };
        if out[i].is_some() {
            out[i] = Some(Outcome::Failed(format!(
                "Lambda.DuplicatedRecordId: recordId {id} is in the answer more than once"
            )));
            continue;
        }
        out[i] = Some(match r.get("result").and_then(Value::as_str) {
            Some("Ok") => match r.get("data").and_then(Value::as_str).map(|d| B64.decode(d)) {
                Some(Ok(data)) => {
                    let keys = r
                        .get("metadata")
                        .and_then(|m| m.get("partitionKeys"))
                        .and_then(Value::as_object);
                    let mut pk = Vec::new();
                    let mut bad = None;
                    for (k, val) in keys.into_iter().flatten() {
                        match val.as_str() {
                            Some(s) => pk.push((k.clone(), s.to_string())),
                            None => bad = Some(k.clone()),
                        }
                    }
                    match bad {
                        Some(k) => Outcome::Failed(format!(
                            "Lambda.InvalidPartitionKey: partition key {k} of recordId {id} is not a string"
                        )),
                        None => Outcome::Ok(data, pk),
                    }
                }
                Some(Err(e)) => Outcome::Failed(format!(
                    "Lambda.InvalidBase64: the data of recordId {id} is not base64: {e}"
                )),
                None => Outcome::Failed(format!(
                    "Lambda.MissingData: recordId {id} is Ok but has no data"
                )),
            },
            Some("Dropped") => Outcome::Dropped,
            Some("ProcessingFailed") => Outcome::Failed(format!(
                "Lambda.ProcessingFailed: the function returned ProcessingFailed for recordId {id}"
            )),
            other => Outcome::Failed(format!(
                "Lambda.InvalidResult: recordId {id} has result {}; expected Ok, Dropped or ProcessingFailed",
                other.map_or("(none)".to_string(), |s| format!("`{s}`"))
            )),
        });
    }
    if !unknown.is_empty() {
        // Records the invocation did not contain: the answer as a whole is not this
        // invocation's, as Firehose judges it.
        return Err(InvokeError(format!(
            "Lambda.InvalidRecordId: the answer names records that were not sent: {}",
            unknown.join(", ")
        )));
    }
    Ok(out
        .into_iter()
        .zip(ids)
        .map(|(o, id)| {
            o.unwrap_or_else(|| {
                Outcome::Failed(format!(
                    "Lambda.MissingRecordId: the answer has no record with recordId {id}"
                ))
            })
        })
        .collect())
}

/// One invocation's records: (first input index, count).
fn chunks(data_lens: impl Iterator<Item = usize>, max_payload: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut start, mut size, mut count) = (0usize, 256usize, 0usize);
    for (i, len) in data_lens.enumerate() {
        // Base64 plus the record's JSON around it.
        let n = len.div_ceil(3) * 4 + 96;
        if i > start && size + n > max_payload {
            out.push((start, i - start));
            start = i;
            size = 256;
        }
        size += n;
        count = i + 1;
    }
    if count > start {
        out.push((start, count - start));
    }
    out
}

impl Lambda {
    fn event(
        &self,
        batch: &Batch<'_>,
        (start, n): (usize, usize),
        invocation: u64,
    ) -> (Vec<u8>, Vec<String>) {
        let mut ids = Vec::with_capacity(n);
        let records: Vec<Value> = (start..start + n)
            .filter_map(|i| batch.get(i).map(|r| (i, r)))
            .map(|(i, r)| {
                let id = format!("{invocation:016x}-{i:06}");
                ids.push(id.clone());
                let mut rec = json!({
                    "recordId": id,
                    "approximateArrivalTimestamp": r.timestamp_ms.unwrap_or(0),
                    "data": B64.encode(r.data),
                });
                if !r.partition_key.is_empty() {
                    rec["kinesisRecordMetadata"] = json!({
                        "partitionKey": String::from_utf8_lossy(r.partition_key),
                        "approximateArrivalTimestamp": r.timestamp_ms.unwrap_or(0),
                    });
                }
                rec
            })
            .collect();
        let event = json!({
            "invocationId": format!("{:08x}-{:04x}-4000-8000-{:012x}", invocation as u32, (invocation >> 32) as u16, std::process::id()),
            "deliveryStreamArn": self.arn,
            "region": self.cfg.region,
            "records": records,
        });
        (event.to_string().into_bytes(), ids)
    }
}

/// What one chunk's invocation came to: the outcomes (or the last failure) and every
/// failed attempt on the way.
struct Called {
    result: Result<Vec<Outcome>, InvokeError>,
    failures: Vec<InvokeError>,
}

/// Calls the function until it answers a valid document or the retries are spent.
fn call(
    w: &mut dyn Invoke,
    event: &[u8],
    ids: &[String],
    timeout: Duration,
    retries: u32,
) -> Called {
    let mut failures = Vec::new();
    for attempt in 0..=retries {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis((100u64 << attempt.min(6)).min(5_000)));
        }
        match w.invoke(event, timeout) {
            Err(e) => failures.push(e),
            Ok(answer) => match outcomes(&answer, ids) {
                Ok(o) => {
                    return Called {
                        result: Ok(o),
                        failures,
                    }
                }
                Err(e) => {
                    w.reset();
                    failures.push(e);
                }
            },
        }
    }
    let last = failures
        .last()
        .cloned()
        .unwrap_or_else(|| InvokeError::from("not invoked"));
    Called {
        result: Err(last),
        failures,
    }
}

impl Transform for Lambda {
    fn transform(&mut self, input: &Batch<'_>, out: &mut Output<'_>) -> Result<(), Error> {
        if input.is_empty() {
            return Ok(());
        }
        let parts = chunks(
            input.iter().map(|r| r.data.len()),
            self.cfg.max_payload_bytes,
        );
        let first = self.invocation;
        self.invocation += parts.len() as u64;
        let events: Vec<(Vec<u8>, Vec<String>)> = parts
            .iter()
            .enumerate()
            .map(|(k, &p)| self.event(input, p, first + k as u64))
            .collect();
        let timeout = Duration::from_secs(self.cfg.timeout_secs);
        let retries = self.cfg.retries;
        // At most `concurrency` invocations at once, each worker taking the next chunk.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Slots = events.iter().map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for w in self.workers.iter_mut().take(events.len()) {
                let (next, events, results) = (&next, &events, &results);
                s.spawn(move || loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((event, ids)) = events.get(k) else {
                        return;
                    };
                    let r = call(w.as_mut(), event, ids, timeout, retries);
                    if let Ok(mut slot) = results[k].lock() {
                        *slot = Some(r);
                    }
                });
            }
        });
        for (&(start, n), slot) in parts.iter().zip(results) {
            let called = slot.into_inner().ok().flatten().unwrap_or(Called {
                result: Err(InvokeError::from("the invocation did not run")),
                failures: Vec::new(),
            });
            for e in &called.failures {
                (self.ctx_log)(Level::Warn, &format!("invocation failed: {e}"));
            }
            self.metrics.0.record(1.0 + called.failures.len() as f64);
            self.metrics.1.record(called.failures.len() as f64);
            match called.result {
                Err(e) => {
                    (self.ctx_log)(
                        Level::Warn,
                        &format!("invocation failed after {retries} retries; {n} records to the error output: {e}"),
                    );
                    for i in start..start + n {
                        out.reject(i, &e.to_string());
                    }
                }
                Ok(outcomes) => {
                    for (k, o) in outcomes.into_iter().enumerate() {
                        let i = start + k;
                        let Some(r) = input.get(i) else { continue };
                        match o {
                            Outcome::Ok(data, keys) => {
                                let attrs: Vec<(&str, &str)> =
                                    keys.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                                out.push(
                                    i,
                                    &NewRecord {
                                        data: &data,
                                        attrs: &attrs,
                                        ..r.to_new()
                                    },
                                );
                            }
                            Outcome::Dropped => {}
                            Outcome::Failed(e) => out.reject(i, &e),
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

declare_library!(
    name: "lambda",
    plugins: [transform("lambda", Lambda, "Firehose's data transformation: runs a Lambda-style function (a local command or an HTTP URL) on each batch")]
);

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("r{i}")).collect()
    }

    #[test]
    fn batches_are_split_to_fit_the_payload_limit() {
        // 1,000 bytes of data are 1,432 bytes of event with their JSON.
        assert_eq!(
            chunks([1000; 5].into_iter(), 3_200),
            [(0, 2), (2, 2), (4, 1)]
        );
        assert_eq!(chunks([1000; 5].into_iter(), 1 << 20), [(0, 5)]);
        // A record larger than the limit still goes, alone.
        assert_eq!(
            chunks([10, 9_000, 10].into_iter(), 4_096),
            [(0, 1), (1, 1), (2, 1)]
        );
        assert!(chunks(std::iter::empty(), 4_096).is_empty());
    }

    #[test]
    fn answers_are_checked_as_firehose_checks_them() {
        let a = br#"{"records":[
            {"recordId":"r0","result":"Ok","data":"eHg=","metadata":{"partitionKeys":{"t":"a"}}},
            {"recordId":"r1","result":"Dropped"},
            {"recordId":"r2","result":"ProcessingFailed"},
            {"recordId":"r3","result":"Maybe"},
            {"recordId":"r4","result":"Ok","data":"!!"},
            {"recordId":"r6","result":"Ok","data":"eA=="},
            {"recordId":"r6","result":"Ok","data":"eA=="}
        ]}"#;
        let o = outcomes(a, &ids(7)).unwrap();
        assert!(
            matches!(&o[0], Outcome::Ok(d, k) if d == b"xx" && k == &[("t".to_string(), "a".to_string())])
        );
        assert!(matches!(o[1], Outcome::Dropped));
        assert!(matches!(&o[2], Outcome::Failed(e) if e.starts_with("Lambda.ProcessingFailed")));
        assert!(matches!(&o[3], Outcome::Failed(e) if e.starts_with("Lambda.InvalidResult")));
        assert!(matches!(&o[4], Outcome::Failed(e) if e.starts_with("Lambda.InvalidBase64")));
        assert!(matches!(&o[5], Outcome::Failed(e) if e.starts_with("Lambda.MissingRecordId")));
        assert!(matches!(&o[6], Outcome::Failed(e) if e.starts_with("Lambda.DuplicatedRecordId")));
        assert!(outcomes(
            br#"{"records":[{"recordId":"zz","result":"Ok","data":""}]}"#,
            &ids(1)
        )
        .unwrap_err()
        .to_string()
        .starts_with("Lambda.InvalidRecordId"));
        assert!(outcomes(b"nope", &ids(1)).is_err());
        assert!(outcomes(b"{}", &ids(1)).is_err());
    }
}
