//! Submitting to a sink until the data is stored: one policy for record batches and
//! flushed objects. A full sink is waited for (its `notify`, or a re-try after 500 ms);
//! retryable failures back off exponentially with jitter (100 ms → 30 s, at least the
//! sink's `retry_after`), are logged and counted in `sluice_sink_retries_total`, and are
//! retried forever unless a limit is given (`retry_duration`: then the last retryable
//! error is returned once it has passed); any other failure is returned and ends the
//! pipeline's run.

use super::host::CompletionResult;
use super::instance::{CallError, SinkInstance, Submit};
use sluice_plugin_api::ffi;
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};
use std::sync::Mutex;
use std::time::Duration;

/// How a pipeline's sink is doing, as the retry loop sees it: healthy until a delivery
/// fails, failing (with the time it started and the last error) until one succeeds.
/// Exported as `sluice_sink_up{pipeline}` (1/0); each failed attempt of an object sink
/// counts in `sluice_sink_objects_total{result="error"}`. `/readyz` and `sluiced status`
/// read it.
pub struct SinkHealth {
    pipeline: String,
    objects: bool,
    failing_since_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
    up: metrics::Gauge,
    object_errors: metrics::Counter,
}

impl std::fmt::Debug for SinkHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkHealth")
            .field("pipeline", &self.pipeline)
            .field("failing_since_ms", &self.failing_since_ms())
            .finish()
    }
}

impl SinkHealth {
    /// A healthy sink of `pipeline`; `objects` for object sinks.
    pub fn new(pipeline: &str, objects: bool) -> Self {
        let up = metrics::gauge!("sluice_sink_up", "pipeline" => pipeline.to_string());
        up.set(1.0);
        let object_errors = metrics::counter!("sluice_sink_objects_total", "pipeline" => pipeline.to_string(), "result" => "error");
        if objects {
            object_errors.increment(0);
            metrics::counter!("sluice_sink_objects_total", "pipeline" => pipeline.to_string(), "result" => "success").increment(0);
        }
        SinkHealth {
            pipeline: pipeline.to_string(),
            objects,
            failing_since_ms: AtomicI64::new(0),
            last_error: Mutex::new(None),
            up,
            object_errors,
        }
    }

    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    fn failed(&self, message: &str) {
        let _ = self.failing_since_ms.compare_exchange(
            0,
            crate::record::now_ms().max(1),
            AtomicOrdering::AcqRel,
            AtomicOrdering::Acquire,
        );
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(message.to_string());
        }
        self.up.set(0.0);
        if self.objects {
            self.object_errors.increment(1);
        }
    }

    fn ok(&self) {
        if self.failing_since_ms.swap(0, AtomicOrdering::AcqRel) != 0 {
            tracing::info!(pipeline = %self.pipeline, "sink delivers again");
        }
        self.up.set(1.0);
    }

    /// Since when (ms since the epoch) the sink has been failing, if it is.
    pub fn failing_since_ms(&self) -> Option<i64> {
        Some(self.failing_since_ms.load(AtomicOrdering::Acquire)).filter(|&t| t != 0)
    }

    /// The last delivery error (kept after recovery, for `sluiced status`).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// The sink of a stage, shared by the deliveries in flight to it. A panic in host code
/// while it was held leaves the instance as usable as before (plugin panics never unwind
/// into the host), so a poisoned lock is taken anyway.
pub fn lock_sink(sink: &std::sync::Mutex<SinkInstance>) -> std::sync::MutexGuard<'_, SinkInstance> {
    sink.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(30);
const FULL_REPOLL: Duration = Duration::from_millis(500);

/// Calls `submit` until the sink completes with success. `submit` receives the indexes
/// the previous attempt reported as failed (empty at first and after whole failures), so
/// a record sink can resubmit only those. With `limit`, a retryable failure that happens
/// after `limit` has passed since the first attempt is returned (still retryable).
///
/// The sink is borrowed only for each `submit` call, never across a wait, so several
/// deliveries to one sink (an object sink's uploads in parallel) can be awaited together
/// on one thread: the instance is still never called concurrently.
pub async fn until_stored(
    sink: &std::sync::Mutex<SinkInstance>,
    health: &SinkHealth,
    limit: Option<Duration>,
    mut submit: impl FnMut(&mut SinkInstance, &[u32]) -> Result<Submit, CallError>,
) -> Result<(), CallError> {
    let notify = lock_sink(sink).instance().shared().clone();
    let plugin = || lock_sink(sink).instance().entry().name.clone();
    let pipeline = health.pipeline();
    let retries =
        metrics::counter!("sluice_sink_retries_total", "pipeline" => pipeline.to_string());
    let mut delay = RETRY_MIN;
    let mut failed: Vec<u32> = Vec::new();
    let started = std::time::Instant::now();
    loop {
        // Listening before submitting: a wake-up sent between a "full" answer and the
        // wait is not lost (with several deliveries waiting on one sink, a lost one would
        // cost a whole FULL_REPOLL).
        let room = notify.notify.notified();
        tokio::pin!(room);
        room.as_mut().enable();
        let res = super::outside_runtime(|| submit(&mut lock_sink(sink), &failed));
        let (message, retry_after_ms) = match res {
            Ok(Submit::Accepted(done)) => match done.await {
                Ok(CompletionResult {
                    status: ffi::SL_OK, ..
                }) => {
                    health.ok();
                    return Ok(());
                }
                Ok(c) if c.status == ffi::SL_ERR_RETRYABLE => {
                    failed = c.failed;
                    (c.message, c.retry_after_ms)
                }
                Ok(c) => {
                    health.failed(&c.message);
                    return Err(CallError {
                        plugin: plugin(),
                        call: "complete",
                        status: c.status,
                        message: c.message,
                        field: String::new(),
                        retry_after_ms: 0,
                    });
                }
                Err(_) => {
                    failed.clear();
                    ("the sink dropped a completion".to_string(), 0)
                }
            },
            Ok(Submit::Full) => {
                tokio::select! {
                    _ = room => {}
                    _ = tokio::time::sleep(FULL_REPOLL) => {}
                }
                continue;
            }
            Err(e) if e.is_retryable() => {
                failed.clear();
                (e.message, e.retry_after_ms)
            }
            Err(e) => {
                health.failed(&e.message);
                return Err(e);
            }
        };
        health.failed(&message);
        if limit.is_some_and(|l| started.elapsed() >= l) {
            return Err(CallError {
                plugin: plugin(),
                call: "submit",
                status: ffi::SL_ERR_RETRYABLE,
                message: format!("gave up after retry_duration: {message}"),
                field: String::new(),
                retry_after_ms: 0,
            });
        }
        retries.increment(1);
        tracing::warn!(pipeline, error = %message, retry_in = ?delay, "sink delivery failed; retrying");
        let jitter = Duration::from_millis(fastrand::u64(0..=delay.as_millis() as u64 / 2));
        tokio::time::sleep(
            (delay / 2 + jitter).max(Duration::from_millis(u64::from(retry_after_ms))),
        )
        .await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}
