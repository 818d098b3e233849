//! A running pipeline: source → transforms → sink, as three stages joined by bounded
//! channels, restarted with exponential backoff when a plugin fails.
//!
//! - The **source driver** polls the source only when the channel to the transforms has
//!   room (credit-based backpressure), waits on the plugin's `notify` or its requested poll
//!   delay otherwise, and passes delivery acks back to the source.
//! - The **transform worker** (a blocking thread: transforms are CPU-bound) runs the chain
//!   on each batch; rejected records are counted as `processing-failed`.
//! - The **sink driver** submits batches in order, one in flight, waits for the
//!   completion, retries retryable errors with backoff and jitter, then acks; for object
//!   sinks the **delivery driver** partitions, buffers and flushes objects instead.
//!
//! The source and sink/delivery drivers are async code run on threads of their own
//! ([`own_thread`]): every plugin call and the delivery's disk work block there, never a
//! tokio worker; channels and timers still go through the runtime.
//!
//! **Invariant:** a batch is acked to its source only after the sink completed it, so a
//! replayable source never moves its checkpoint past undelivered records.
//! **Invariant:** a plugin failure ends only this pipeline's current run; the supervisor's
//! other pipelines never see it.

use crate::plugins::{
    CallError, Instance, Registry, SinkInstance, SourceInstance, TransformInstance,
};
use crate::record::Record;
use crate::spec::{ComponentSpec, PipelineSpec};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

mod deliver;
mod kpl;
mod sink;
mod source;
mod transform;

/// Batches in each channel between stages: with one batch in each stage, at most
/// `2 * CHANNEL_BATCHES + 3` batches are in flight per pipeline.
pub const CHANNEL_BATCHES: usize = 4;
/// Most records a source is asked for per poll.
pub const POLL_MAX_RECORDS: u64 = 500;
/// Most bytes a source is asked for per poll.
pub const POLL_MAX_BYTES: u64 = 5 << 20;
/// Re-poll a pending source at least this often even without a notify.
const DEFAULT_REPOLL: Duration = Duration::from_millis(500);
/// Restart backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a stopping pipeline with a replayable source spends flushing its buffers at
/// most: this, or a quarter of `shutdown_timeout` when that is shorter.
pub const DRAIN_FLUSH_BUDGET: Duration = Duration::from_secs(5);
/// A run that lasted this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Why a pipeline run ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{component}: {source}")]
    Plugin {
        component: String,
        source: CallError,
    },
    /// The registry lost a plugin the validated spec names (the registry changed).
    #[error("{component}: {source}")]
    Unknown {
        component: String,
        source: crate::plugins::UnknownPlugin,
    },
    /// A stage task panicked or could not run.
    #[error("{stage} task failed: {source}")]
    Task {
        stage: &'static str,
        source: tokio::task::JoinError,
    },
    /// The source stage ended without saying why (a bug).
    #[error("source stage ended without a result")]
    NoResult,
    /// Delivery state on disk (intent log, spool) failed.
    #[error(transparent)]
    Delivery(#[from] crate::delivery::DeliveryError),
}

/// Lifecycle state, as `/admin/status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Creating and starting plugin instances.
    Starting,
    /// Records flow.
    Running,
    /// Failed; waiting to restart.
    Backoff,
    /// Draining buffered records before stopping.
    Draining,
    /// Stopped on request.
    Stopped,
    /// The source ended and everything was delivered.
    Finished,
}

/// Live numbers and state of one pipeline, shared with the admin API.
#[derive(Debug)]
pub struct PipelineShared {
    /// Name.
    pub name: String,
    state: Mutex<(State, Option<String>)>,
    /// Records read from the source.
    pub records_in: AtomicU64,
    /// Records the sink confirmed.
    pub records_out: AtomicU64,
    /// Records sent to the error output.
    pub records_failed: AtomicU64,
    /// Restarts after failures.
    pub restarts: AtomicU64,
    /// Records in open buffers (object sinks).
    pub buffered_records: AtomicU64,
    /// Uncompressed bytes in open buffers (object sinks).
    pub buffered_bytes: AtomicU64,
    /// Open partition buffers (object sinks).
    pub partitions: AtomicU64,
    /// When the last object was stored, ms since the epoch (0: never).
    pub last_flush_ms: AtomicU64,
    /// Whether the sink is storing what it is given.
    pub sink_health: crate::plugins::SinkHealth,
}

/// Snapshot for `/admin/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineStatus {
    /// Name.
    pub name: String,
    /// State.
    pub state: State,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Records read from the source.
    pub records_in: u64,
    /// Records delivered.
    pub records_out: u64,
    /// Records failed.
    pub records_failed: u64,
    /// Restarts.
    pub restarts: u64,
    /// Records in open buffers.
    pub buffered_records: u64,
    /// Bytes in open buffers.
    pub buffered_bytes: u64,
    /// Open partitions.
    pub partitions: u64,
    /// Last object stored, ms since the epoch (0: never).
    pub last_flush_ms: u64,
    /// `ok`, or `failing` while deliveries to the sink keep failing.
    pub sink: &'static str,
    /// Since when the sink has been failing (ms since the epoch).
    pub sink_failing_since_ms: Option<i64>,
    /// The sink's last delivery error.
    pub sink_error: Option<String>,
}

impl PipelineShared {
    fn new(name: &str, objects: bool) -> Self {
        // Series exist from the start (zeros, not gaps, for dashboards and alerts).
        metrics::counter!("sluice_pipeline_restarts_total", "pipeline" => name.to_string())
            .increment(0);
        metrics::counter!("sluice_records_failed_total", "pipeline" => name.to_string(), "error_type" => "processing-failed").increment(0);
        PipelineShared {
            sink_health: crate::plugins::SinkHealth::new(name, objects),
            name: name.to_string(),
            state: Mutex::new((State::Starting, None)),
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            records_failed: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            buffered_records: AtomicU64::new(0),
            buffered_bytes: AtomicU64::new(0),
            partitions: AtomicU64::new(0),
            last_flush_ms: AtomicU64::new(0),
        }
    }

    fn set_state(&self, s: State, err: Option<String>) {
        if let Ok(mut g) = self.state.lock() {
            g.0 = s;
            if err.is_some() {
                g.1 = err;
            }
        }
        let up = if s == State::Running { 1.0 } else { 0.0 };
        metrics::gauge!("sluice_pipeline_up", "pipeline" => self.name.clone()).set(up);
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state.lock().map(|g| g.0).unwrap_or(State::Backoff)
    }

    /// A snapshot.
    pub fn status(&self) -> PipelineStatus {
        let (state, last_error) = self
            .state
            .lock()
            .map(|g| g.clone())
            .unwrap_or((State::Backoff, None));
        PipelineStatus {
            name: self.name.clone(),
            state,
            last_error,
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            records_failed: self.records_failed.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            buffered_records: self.buffered_records.load(Ordering::Relaxed),
            buffered_bytes: self.buffered_bytes.load(Ordering::Relaxed),
            partitions: self.partitions.load(Ordering::Relaxed),
            last_flush_ms: self.last_flush_ms.load(Ordering::Relaxed),
            sink: if self.sink_health.failing_since_ms().is_some() {
                "failing"
            } else {
                "ok"
            },
            sink_failing_since_ms: self.sink_health.failing_since_ms(),
            sink_error: self.sink_health.last_error(),
        }
    }
}

/// What every pipeline needs from the daemon.
pub struct RuntimeCtx {
    /// Streams and data directory for the bundled `stream` plugins.
    pub services: Option<Arc<crate::plugins::HostServices>>,
    /// The buffer memory budget all pipelines share.
    pub memory: Arc<crate::delivery::MemoryBudget>,
    /// Pipelines whose crash marker this process has read (only a pipeline's first run
    /// after the process started may blame a crash).
    pub crash_markers_read: Mutex<std::collections::HashSet<String>>,
    /// The plugin registry (replaced when a reload rescans `plugin_dirs`; pipelines
    /// started later see the new one).
    pub registry: std::sync::RwLock<Arc<Registry>>,
    /// Folder relative config paths resolve against.
    pub base_dir: PathBuf,
    /// Deadline for plugin `stop` calls.
    pub stop_deadline: Duration,
}

impl RuntimeCtx {
    /// The plugin registry as it stands.
    pub fn registry(&self) -> Arc<Registry> {
        match self.registry.read() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Where pipelines keep their state (intent logs, spool and quarantine files): the
    /// services' data directory.
    pub fn data_dir(&self) -> Option<&Path> {
        self.services.as_deref().map(|s| s.data_dir.as_path())
    }
}

/// A spawned pipeline.
pub struct PipelineHandle {
    /// The spec it runs.
    pub spec: Arc<PipelineSpec>,
    /// Live numbers.
    pub shared: Arc<PipelineShared>,
    drain: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl PipelineHandle {
    /// Asks the pipeline to drain (stop reading, deliver what it has, stop) and waits up
    /// to `timeout`; past it the pipeline is aborted.
    pub async fn drain(self, timeout: Duration) -> bool {
        let _ = self.drain.send(true);
        let abort = self.task.abort_handle();
        match tokio::time::timeout(timeout, self.task).await {
            Ok(_) => true,
            Err(_) => {
                abort.abort();
                tracing::warn!(pipeline = %self.spec.name, "pipeline did not drain in time; aborted");
                false
            }
        }
    }
}

/// Starts a pipeline.
pub fn spawn(spec: Arc<PipelineSpec>, ctx: Arc<RuntimeCtx>) -> PipelineHandle {
    let shared = Arc::new(PipelineShared::new(&spec.name, spec.delivery.is_some()));
    let (drain, drain_rx) = watch::channel(false);
    let task = tokio::spawn(supervise(spec.clone(), ctx, shared.clone(), drain_rx));
    PipelineHandle {
        spec,
        shared,
        drain,
        task,
    }
}

/// How a run ended without error.
pub(crate) enum End {
    Drained,
    Eof,
}

async fn supervise(
    spec: Arc<PipelineSpec>,
    ctx: Arc<RuntimeCtx>,
    shared: Arc<PipelineShared>,
    mut drain: watch::Receiver<bool>,
) {
    let name = spec.name.clone();
    let mut backoff = BACKOFF_MIN;
    loop {
        if *drain.borrow() {
            shared.set_state(State::Stopped, None);
            return;
        }
        shared.set_state(State::Starting, None);
        let started = Instant::now();
        match run_once(&spec, &ctx, &shared, drain.clone()).await {
            Ok(End::Drained) => {
                tracing::info!(pipeline = %name, "pipeline stopped");
                shared.set_state(State::Stopped, None);
                return;
            }
            Ok(End::Eof) => {
                tracing::info!(pipeline = %name, "source ended; pipeline finished");
                shared.set_state(State::Finished, None);
                return;
            }
            Err(e) => {
                if started.elapsed() > HEALTHY_RUN {
                    backoff = BACKOFF_MIN;
                }
                tracing::error!(pipeline = %name, error = %e, retry_in = ?backoff, "pipeline failed; restarting");
                shared.restarts.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sluice_pipeline_restarts_total", "pipeline" => name.clone())
                    .increment(1);
                shared.set_state(State::Backoff, Some(e.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = drain.changed() => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

pub(crate) fn plugin_err(component: &str) -> impl FnOnce(CallError) -> PipelineError + '_ {
    move |source| PipelineError::Plugin {
        component: component.to_string(),
        source,
    }
}

struct Instances {
    source: SourceInstance,
    transforms: Vec<transform::Link>,
    sink: SinkInstance,
}

/// Creates and starts one instance of component `c`. May block.
fn make_instance(
    pipeline: &str,
    c: &ComponentSpec,
    ctx: &RuntimeCtx,
) -> Result<Instance, PipelineError> {
    let entry =
        ctx.registry()
            .lookup(c.kind, &c.plugin)
            .map_err(|source| PipelineError::Unknown {
                component: c.id.clone(),
                source,
            })?;
    let mut inst = Instance::create(
        entry,
        pipeline,
        &c.id,
        &ctx.base_dir,
        &c.config_json,
        ctx.services.clone(),
    )
    .map_err(plugin_err(&c.id))?;
    inst.start().map_err(plugin_err(&c.id))?;
    Ok(inst)
}

/// Creates and starts every instance (sink first, source last). May block.
fn build(spec: &PipelineSpec, ctx: &RuntimeCtx) -> Result<Instances, PipelineError> {
    let make = |c: &ComponentSpec| make_instance(&spec.name, c, ctx);
    let sink = SinkInstance::new(make(&spec.sink)?);
    let transforms = spec
        .transforms
        .iter()
        .map(|t| {
            make(t).map(|i| transform::Link {
                id: t.id.clone(),
                spec: t.clone(),
                inst: TransformInstance::new(i),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let source = SourceInstance::new(make(&spec.source)?);
    Ok(Instances {
        source,
        transforms,
        sink,
    })
}

/// A batch moving through the stages.
pub(crate) struct Batch {
    records: Vec<Record>,
    /// Records transforms sent to the error output, with the reason.
    rejected: Vec<(Record, String)>,
    token: u64,
}

pub(crate) struct Ack {
    token: u64,
}

async fn run_once(
    spec: &Arc<PipelineSpec>,
    ctx: &Arc<RuntimeCtx>,
    shared: &Arc<PipelineShared>,
    drain: watch::Receiver<bool>,
) -> Result<End, PipelineError> {
    let (s2, c2) = (spec.clone(), ctx.clone());
    let inst = tokio::task::spawn_blocking(move || build(&s2, &c2))
        .await
        .map_err(|source| PipelineError::Task {
            stage: "startup",
            source,
        })??;
    shared.set_state(State::Running, None);
    tracing::info!(pipeline = %spec.name, "pipeline running");

    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(CHANNEL_BATCHES);
    let (out_tx, out_rx) = mpsc::channel::<Batch>(CHANNEL_BATCHES);
    // Acks never exceed the batches in flight, which the channels above bound.
    let (ack_tx, ack_rx) = mpsc::channel::<Ack>(4 * CHANNEL_BATCHES + 8);

    let stop_deadline = ctx.stop_deadline;
    // A pipeline aborted past its drain deadline drops this future: the stages must end
    // with it, or the old source and sink would run on beside their replacement. Dropping
    // `_stop` cancels them (their instances are destroyed on their own threads); the worker
    // ends when its channels close.
    let (cancel, _) = watch::channel(false);
    let _stop = CancelOnDrop(cancel.clone());
    let mut src = own_thread(
        "source",
        cancel.subscribe(),
        source::driver(
            inst.source,
            batch_tx,
            ack_rx,
            drain,
            shared.clone(),
            stop_deadline,
        ),
    );
    let (name, sh, c3) = (spec.name.clone(), shared.clone(), ctx.clone());
    let deagg = spec.deaggregate;
    let links = inst.transforms;
    let mut work = tokio::task::spawn_blocking(move || {
        let chain = transform::Chain::new(&name, links, &c3);
        transform::worker(deagg, chain, batch_rx, out_tx, &sh, stop_deadline)
    });
    let snk_cancel = cancel.subscribe();
    let mut snk = match &spec.delivery {
        Some(d) => own_thread(
            "delivery",
            snk_cancel,
            deliver::driver(
                inst.sink,
                out_rx,
                ack_tx,
                d.clone(),
                deliver::journal(spec, ctx.data_dir(), ctx.services.as_deref()),
                shared.clone(),
                ctx.clone(),
            ),
        ),
        None => own_thread(
            "sink",
            snk_cancel,
            sink::driver(
                inst.sink,
                out_rx,
                ack_tx,
                spec.batch.clone(),
                shared.clone(),
                stop_deadline,
            ),
        ),
    };

    let mut end = None;
    let mut first_err: Option<PipelineError> = None;
    let (mut s_done, mut w_done, mut k_done) = (false, false, false);
    let flatten =
        |stage: &'static str, r: Result<Result<(), PipelineError>, tokio::task::JoinError>| match r
        {
            Ok(r) => r,
            Err(source) => Err(PipelineError::Task { stage, source }),
        };
    while !(s_done && w_done && k_done) {
        let res = tokio::select! {
            r = &mut src, if !s_done => {
                s_done = true;
                match r {
                    Ok(Some(Ok(e))) => { end = Some(e); Ok(()) }
                    Ok(Some(Err(e))) => Err(e),
                    // Cancelled after another stage failed.
                    Ok(None) => Ok(()),
                    Err(source) => Err(PipelineError::Task { stage: "source", source }),
                }
            }
            r = &mut work, if !w_done => { w_done = true; flatten("transform", r) }
            r = &mut snk, if !k_done => {
                k_done = true;
                flatten("sink", r.map(|r| r.unwrap_or(Ok(()))))
            }
        };
        if let Err(e) = res {
            if first_err.is_none() {
                // One stage failed: stop the others (the worker exits when its channels close).
                let _ = cancel.send(true);
                first_err = Some(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => end.ok_or(PipelineError::NoResult),
    }
}

/// Cancels the stages when dropped.
struct CancelOnDrop(watch::Sender<bool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// Runs a stage on a thread of its own (from the blocking pool), not on a tokio worker:
/// plugin calls (a source's ack writes and fsyncs its checkpoint, an S3 sink waits on its
/// own runtime) and the delivery's disk work block there without stalling the API and the
/// other pipelines on the two workers. The stage still awaits channels and timers through
/// the runtime. `None` when `cancel` fired first; the stage's state (its plugin instances)
/// is dropped on that thread.
fn own_thread<T: Send + 'static>(
    stage: &'static str,
    mut cancel: watch::Receiver<bool>,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> JoinHandle<Option<T>> {
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _span = tracing::debug_span!("stage", stage).entered();
        rt.block_on(async move {
            tokio::select! {
                r = fut => Some(r),
                _ = cancel.wait_for(|c| *c) => None,
            }
        })
    })
}
