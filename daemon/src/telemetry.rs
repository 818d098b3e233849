//! Metrics and the operator listener: the Prometheus recorder (every metric described
//! here, so `/metrics` carries HELP and TYPE lines and passes `promtool check metrics`),
//! and the admin HTTP server on `[metrics].listen`: `/metrics`, `/healthz`, `/readyz`,
//! `/admin/status`, `POST /admin/reload`.

use crate::supervisor::{all_running, statuses, StatusBoard};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Latency buckets (seconds) for call and request durations.
const DURATION_BUCKETS: &[f64] = &[
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0,
];
/// Buckets for end-to-end delivery latency (seconds).
const DELIVERY_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

/// Installs the global recorder and describes the daemon's metrics.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(DURATION_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("sluice_delivery_latency_seconds".into()),
            DELIVERY_BUCKETS,
        )?
        .install_recorder()?;
    describe();
    metrics::gauge!("sluice_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("sluice_build_info", "Build information; always 1");
    describe_gauge!("sluice_plugin_info", "Every usable plugin; always 1");
    describe_gauge!(
        "sluice_pipeline_up",
        "1 while the pipeline runs, 0 while it starts, backs off or is stopped"
    );
    describe_counter!(
        "sluice_pipeline_restarts_total",
        "Pipeline restarts after a failure"
    );
    describe_counter!(
        "sluice_pipeline_records_in_total",
        "Records read from the pipeline's source"
    );
    describe_counter!(
        "sluice_records_failed_total",
        "Records sent to the error output, by error type"
    );
    describe_counter!(
        "sluice_sink_records_total",
        "Records the sink confirmed delivered"
    );
    describe_counter!(
        "sluice_sink_bytes_total",
        Unit::Bytes,
        "Record bytes the sink confirmed delivered"
    );
    describe_counter!("sluice_sink_retries_total", "Retried sink deliveries");
    describe_counter!(
        "sluice_plugin_calls_total",
        "Calls into plugins through the ABI, by call and status"
    );
    describe_histogram!(
        "sluice_plugin_call_duration_seconds",
        Unit::Seconds,
        "Duration of calls into plugins"
    );
    describe_counter!("sluice_plugin_panics_total", "Panics caught in plugin code");
    describe_counter!(
        "sluice_plugin_late_calls_total",
        "Host calls refused because they carried the handle of a destroyed instance, by call"
    );
    for call in ["log", "metric_register", "notify", "complete"] {
        metrics::counter!("sluice_plugin_late_calls_total", "call" => call).increment(0);
    }
    describe_gauge!(
        "sluice_buffer_bytes",
        Unit::Bytes,
        "Uncompressed bytes in the pipeline's open buffers"
    );
    describe_gauge!(
        "sluice_buffer_records",
        "Records in the pipeline's open buffers"
    );
    describe_gauge!("sluice_buffer_partitions_active", "Open partition buffers");
    describe_gauge!(
        "sluice_buffer_oldest_record_age_seconds",
        Unit::Seconds,
        "Age of the oldest buffered record"
    );
    describe_counter!(
        "sluice_buffer_flushes_total",
        "Buffer flushes, by reason (size, interval, memory, partitions, drain)"
    );
    describe_gauge!(
        "sluice_buffer_memory_bytes",
        Unit::Bytes,
        "Bytes buffered by all pipelines together"
    );
    describe_gauge!(
        "sluice_buffer_memory_limit_bytes",
        Unit::Bytes,
        "limits.buffer_memory"
    );
    describe_counter!(
        "sluice_sink_objects_total",
        "Objects handed to the sink, by result"
    );
    describe_histogram!(
        "sluice_delivery_latency_seconds",
        Unit::Seconds,
        "Arrival of an object's oldest record to its durable storage"
    );
    describe_counter!(
        "sluice_delivery_replay_skipped_records_total",
        "Records replayed after a crash that the intent log found in an object already stored"
    );
    describe_histogram!(
        "sluice_jetstream_publish_seconds",
        Unit::Seconds,
        "Time from sending an append's records to a JetStream shard until the cluster acknowledged them all (stored on a quorum)"
    );
    describe_counter!(
        "sluice_jetstream_errors_total",
        "Calls to the JetStream cluster that failed or timed out, by operation (publish, read, info, purge, seal; conflict: another node appended first, the append was made again)"
    );
    describe_gauge!(
        "sluice_lease_owned",
        "1 for each shard whose lease this node holds for the pipeline (it reads that shard), 0 once given back or lost"
    );
    describe_counter!(
        "sluice_lease_takeovers_total",
        "Shard leases this node took from another node after they expired (that node stopped renewing them)"
    );
    describe_counter!(
        "sluice_lease_lost_total",
        "Shard leases this node failed to renew because another node holds them now"
    );
    describe_gauge!(
        "sluice_jetstream_connected",
        "1 while the daemon is connected to a server of its JetStream cluster, else 0"
    );
    describe_gauge!(
        "sluice_delivery_objects_in_flight",
        "Objects of the current flush round handed to the sink and not yet stored (at most 64 per round)"
    );
    describe_gauge!(
        "sluice_delivery_inferred_schemas",
        "Partitions whose inferred Parquet schema the pipeline keeps (schema = \"infer\")"
    );
    describe_counter!(
        "sluice_delivery_duplicate_records_total",
        "Records written again under a new object name after a crash (possible duplicates)"
    );
    describe_counter!(
        "sluice_shard_incoming_records_total",
        "Records appended to the shard"
    );
    describe_counter!(
        "sluice_shard_incoming_bytes_total",
        Unit::Bytes,
        "Record data bytes appended to the shard"
    );
    describe_counter!(
        "sluice_shard_write_throttled_total",
        "Records refused by the shard's write limit"
    );
    describe_gauge!(
        "sluice_shard_log_bytes",
        Unit::Bytes,
        "Bytes of the shard's log on disk"
    );
    describe_gauge!(
        "sluice_shard_oldest_record_age_seconds",
        Unit::Seconds,
        "Age of the oldest retained record"
    );
    describe_gauge!(
        "sluice_shard_last_sequence_number",
        "Shard-local sequence number of the newest record (-1 when empty)"
    );
    describe_gauge!(
        "sluice_shard_iterator_age_seconds",
        Unit::Seconds,
        "How far a consumer's last read is behind the shard's tip"
    );
    describe_counter!(
        "sluice_shard_outgoing_records_total",
        "Records read from the shard, by consumer"
    );
    describe_counter!(
        "sluice_stream_syncfs_total",
        "Filesystem syncs that made many shards' appends durable at once (instead of one sync per shard)"
    );
    describe_counter!(
        "sluice_stream_syncfs_failures_total",
        "Filesystem syncs that failed (each shard then synced on its own)"
    );
    describe_counter!(
        "sluice_shard_recovered_truncations_total",
        "Torn tails truncated when opening the shard"
    );
    describe_counter!(
        "sluice_shard_corrupt_bytes_total",
        Unit::Bytes,
        "Damaged bytes skipped in the middle of segments"
    );
    describe_counter!(
        "sluice_api_requests_total",
        "API requests, by operation and HTTP status"
    );
    describe_histogram!(
        "sluice_api_request_duration_seconds",
        Unit::Seconds,
        "API request duration, by operation"
    );
    describe_counter!(
        "sluice_config_reloads_total",
        "Config loads and reloads, by result"
    );
    describe_gauge!(
        "sluice_http_connections",
        "Open HTTP connections, by listener (api, admin)"
    );
    describe_counter!(
        "sluice_http_connections_refused_total",
        "Connections closed at once because the listener had its maximum open"
    );
    describe_gauge!(
        "sluice_api_in_flight_bytes",
        "Request bytes the Kinesis/Firehose API is handling (a 256 MiB budget; past it, 503)"
    );
    describe_counter!(
        "sluice_http_source_requests_total",
        "Requests to an http source, by pipeline and status code"
    );
    describe_counter!(
        "sluice_http_source_records_total",
        "Records an http source stored in its stream"
    );
    describe_counter!(
        "sluice_http_source_repeats_total",
        "Firehose requests an http source had stored already (same request id), answered without storing them twice"
    );
    describe_gauge!(
        "sluice_http_source_in_flight_bytes",
        "Body and record bytes an http source is handling (max_in_flight)"
    );
    describe_counter!(
        "sluice_checkpoint_writes_total",
        "Durable checkpoint writes of a stream source (at most one per checkpoint_interval, and one at stop)"
    );
    describe_counter!(
        "sluice_stream_reshards_total",
        "Reshardings of a stream (SplitShard, MergeShards, UpdateShardCount, a changed `shards`)"
    );
    describe_counter!(
        "sluice_checkpoint_damaged_total",
        "Checkpoint files found damaged at start (the pipeline resumed from the oldest record)"
    );
    describe_counter!(
        "sluice_poison_records_total",
        "Records a transform failed or panicked on alone (isolated by bisecting their batch; sent to the error output)"
    );
    describe_counter!(
        "sluice_plugin_crashes_total",
        "Restarts after the process died inside a dynamic transform (its records were then narrowed down and quarantined)"
    );
    describe_counter!(
        "sluice_buffer_spills_total",
        "Times a buffer's bytes moved from RAM to its spill file under memory pressure"
    );
    describe_counter!(
        "sluice_buffer_spilled_bytes_total",
        "Uncompressed bytes moved from RAM to spill files under memory pressure"
    );
    describe_gauge!(
        "sluice_shard_max_bytes",
        Unit::Bytes,
        "The stream's max_bytes cap per shard log (only for streams that set one)"
    );
    describe_gauge!(
        "sluice_sink_up",
        "1 while the pipeline's sink stores what it is given, 0 while deliveries keep failing"
    );
    describe_counter!(
        "sluice_config_unchanged_events_total",
        "File events after which every configuration file held the same content (no reload)"
    );
    describe_gauge!(
        "sluice_config_last_reload_successful",
        "1 if the last config (re)load succeeded"
    );
    describe_gauge!(
        "sluice_config_last_reload_success_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last successful config (re)load"
    );
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The files do not validate (every error, located).
    #[error(transparent)]
    Invalid(#[from] crate::config::ConfigErrors),
    /// The streams cannot take the change live.
    #[error(transparent)]
    Streams(#[from] crate::stream::StreamError),
    /// The blocking task that read the files failed.
    #[error("reload task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A reload asked for over HTTP, answered with the outcome.
pub type ReloadRequest = oneshot::Sender<Result<serde_json::Value, ReloadError>>;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Renders `/metrics`.
    pub prom: PrometheusHandle,
    /// Pipelines' live state.
    pub board: StatusBoard,
    /// Set once the first config was applied.
    pub loaded: Arc<AtomicBool>,
    /// Reload requests to the daemon's main loop.
    pub reload: mpsc::Sender<ReloadRequest>,
    /// Streams, for `/admin/status`.
    pub streams: Arc<crate::stream::Streams>,
}

/// Binds the admin listener (so a busy port fails startup) and serves it in the background.
pub async fn serve(addr: SocketAddr, state: AdminState) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/admin/status", get(status))
        .route("/admin/reload", post(reload))
        .with_state(state);
    tokio::spawn(crate::http::serve(
        listener,
        app,
        crate::http::LIMITS,
        "admin",
    ));
    Ok(local)
}

async fn metrics_handler(State(s): State<AdminState>) -> Response {
    s.prom.run_upkeep();
    let mut text = s.prom.render();
    text.push_str(&process_metrics());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The standard `process_*` metrics (as Prometheus client libraries export them), read
/// from `/proc/self` at each scrape: CPU seconds, resident and virtual memory, open and
/// maximum file descriptors, start time. Empty where `/proc` is not available.
pub fn process_metrics() -> String {
    let mut out = String::new();
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return out;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as f64,
        )
    };
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    let mut metric = |name: &str, kind: &str, help: &str, v: Option<f64>| {
        if let Some(v) = v {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        }
    };
    // Indexes are field numbers (proc(5)) minus 3: state is field 3.
    let cpu = match (field(11), field(12)) {
        (Some(u), Some(s)) => Some((u + s) / ticks),
        _ => None,
    };
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        cpu,
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        field(21).map(|p| p * page),
    );
    metric(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        field(20),
    );
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    let start = match (boot, field(19)) {
        (Some(b), Some(st)) => Some(b + st / ticks),
        _ => None,
    };
    metric(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        start,
    );
    let fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        fds,
    );
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<f64>().ok())
        });
    metric(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        max_fds,
    );
    out
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if !s.loaded.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "config not loaded\n").into_response();
    }
    if s.streams.cluster().is_some_and(|c| !c.connected()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the JetStream cluster is unreachable\n",
        )
            .into_response();
    }
    if all_running(&s.board) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let waiting: Vec<String> = statuses(&s.board)
            .into_iter()
            .filter(|p| {
                !matches!(
                    p.state,
                    crate::pipeline::State::Running | crate::pipeline::State::Finished
                ) || p.sink != "ok"
            })
            .map(|p| match (&p.state, p.sink, &p.sink_error) {
                (crate::pipeline::State::Running, "failing", e) => {
                    format!("{}: sink failing: {}", p.name, e.as_deref().unwrap_or("?"))
                }
                (state, _, _) => format!("{}: {state:?}", p.name),
            })
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", waiting.join(", ")),
        )
            .into_response()
    }
}

async fn status(State(s): State<AdminState>) -> Json<serde_json::Value> {
    let pipelines = statuses(&s.board);
    // Lag only of pipelines that still run: a removed pipeline's last position is history.
    let running: std::collections::HashSet<&str> =
        pipelines.iter().map(|p| p.name.as_str()).collect();
    Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
                "streams": s.streams.list().iter().map(|st| serde_json::json!({
            "name": st.name,
            "origin": st.origin,
            "storage": if st.cluster().is_some() { "jetstream" } else { "log" },
            "retention_hours": st.retention_hours(),
            "shards": st.shards().all.iter().map(|sh| {
                let age = sh.log.arrival_range().map(|(o, _)| (crate::record::now_ms() - o).max(0) as f64 / 1000.0);
                serde_json::json!({
                    "id": sh.id,
                    "open": sh.closed().is_none(),
                    "records": sh.log.records(),
                    "bytes": sh.log.total_bytes(),
                    "last_sequence_number": sh.log.last_seq().map(|n| crate::stream::sequence_string(sh.index, n)),
                    "oldest_record_age_seconds": age,
                    "leased_by": sh.leased_by(),
                    "consumers": sh.consumer_lag().into_iter()
                        .filter(|(p, _)| running.contains(p.as_str()))
                        .map(|(p, lag)| serde_json::json!({"pipeline": p, "lag_records": lag}))
                        .collect::<Vec<_>>(),
                })
            }).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "pipelines": pipelines,
    }))
}

async fn reload(State(s): State<AdminState>) -> Response {
    let (tx, rx) = oneshot::channel();
    if s.reload.send(tx).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match rx.await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}
