//! `sluiced run`: load and validate the config, start the operator listener, apply the
//! config from empty, then serve signals — SIGHUP and `POST /admin/reload` reload,
//! SIGTERM/SIGINT drain every pipeline and exit.

use crate::api::{self, ApiState, IteratorCodec};
use crate::config::{self, ConfigSet};
use crate::plugins::Registry;
use crate::sdnotify::SdNotify;
use crate::stream::Streams;
use crate::supervisor::Supervisor;
use crate::telemetry::{self, AdminState, ReloadError, ReloadRequest};
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    // Handlers first: a SIGHUP right after READY must reload, not kill the process.
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;
    // The recorder comes first: plugin registration already records `sluice_plugin_info`.
    let prom = telemetry::install().context("cannot install the metrics recorder")?;
    let (daemon_cfg, base) =
        config::load_daemon(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config_path.display(),
        data_dir = %daemon_cfg.data_dir.display(),
        pipelines_dir = %daemon_cfg.pipelines_dir.display(),
        "sluiced starting"
    );
    let mut registry = Arc::new(Registry::discover(&daemon_cfg.plugin_dirs));
    let set = match config::load_with(&config_path, daemon_cfg, base, &registry) {
        Ok(s) => s,
        Err(e) => {
            record_reload(false);
            return Err(anyhow::anyhow!("invalid configuration:\n{e}"));
        }
    };
    let streams =
        Arc::new(Streams::open(&set.daemon.data_dir).with_context(|| {
            format!("cannot open streams in {}", set.daemon.data_dir.display())
        })?);
    if let Some(js) = &set.daemon.jetstream {
        // Blocking (its own runtime, at most `timeout`): off the async workers.
        let opts = js.options();
        let cluster =
            tokio::task::spawn_blocking(move || crate::stream::jetstream::Cluster::connect(opts))
                .await
                .context("connecting to the JetStream cluster")?
                .context("cannot connect to the JetStream cluster of [jetstream]")?;
        tracing::info!(servers = ?js.servers, replicas = js.replicas, "connected to the JetStream cluster");
        streams.set_cluster(cluster);
        if js.api_streams == crate::config::ApiStreams::JetStream {
            streams.share_api_streams();
        }
    }
    // Opening JetStream shards waits on the cluster: off the async workers. A cluster that
    // is slow to answer (busy, or electing leaders) is tried again for a minute before
    // the start fails.
    let patience = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let streams_for_apply = Arc::clone(&streams);
        let specs = set.streams.clone();
        match tokio::task::spawn_blocking(move || streams_for_apply.apply_config(&specs))
            .await
            .context("opening the configured streams")?
        {
            Ok(_) => break,
            Err(crate::stream::StreamError::Storage(crate::stream::StorageError::Cluster(e)))
                if std::time::Instant::now() < patience =>
            {
                tracing::warn!(error = %e, "cannot open the configured streams on the JetStream cluster yet; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).context("cannot open the configured streams"),
        }
    }
    // The streams made through the API on the cluster (by any node) are served from the
    // first request on.
    {
        let streams = Arc::clone(&streams);
        tokio::task::spawn_blocking(move || streams.sync_topologies())
            .await
            .context("opening the streams made on the JetStream cluster")?;
    }
    let memory = Arc::new(crate::delivery::MemoryBudget::new(
        set.daemon.limits.buffer_memory.0,
    ));
    // The Firehose control plane applies delivery streams through the same reload as
    // SIGHUP, and reads the running pipelines.
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(8);
    let (apply_tx, mut apply_rx) = mpsc::channel::<api::ReloadReply>(8);
    {
        // The API's reload requests join the operator's, answered in the API's terms.
        let reload_tx = reload_tx.clone();
        tokio::spawn(async move {
            while let Some(reply) = apply_rx.recv().await {
                let (tx, rx) = tokio::sync::oneshot::channel();
                if reload_tx.send(tx).await.is_err() {
                    let _ = reply.send(Err(api::ApplyError::ShuttingDown));
                    continue;
                }
                let r = match rx.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(api::ApplyError::Refused(e.to_string())),
                    Err(_) => Err(api::ApplyError::ShuttingDown),
                };
                let _ = reply.send(r);
            }
        });
    }
    let (pipelines_tx, pipelines_rx) = tokio::sync::watch::channel(Arc::new(set.pipelines.clone()));
    let api_state = Arc::new(ApiState {
        subscriptions: Default::default(),
        bodies: Default::default(),
        firehose: Some(api::FirehoseControl {
            data_dir: set.daemon.data_dir.clone(),
            config: set.daemon.firehose.clone(),
            reload: apply_tx,
            pipelines: pipelines_rx,
            lock: tokio::sync::Mutex::new(()),
            encrypted: Default::default(),
        }),
        streams: streams.clone(),
        account: set.daemon.api.account_id.clone(),
        iterators: IteratorCodec::with_ttl(set.daemon.api.iterator_ttl.0),
        verifier: (!set.daemon.api.credentials.is_empty()).then(|| {
            api::Verifier::new(
                set.daemon
                    .api
                    .credentials
                    .iter()
                    .map(|c| (c.access_key_id.clone(), c.secret_access_key.clone())),
            )
        }),
    });
    let api_listen = set.daemon.api.listen;
    let api_addr = api::serve(api_listen, api_state)
        .await
        .with_context(|| format!("cannot listen on {api_listen} ([api].listen)"))?;
    tracing::info!(addr = %api_addr, "Kinesis API up");
    // `fsync = "interval:<d>"` streams are checked every 100 ms; retention and shard gauges
    // every 5 s. Both do file I/O, so they run on the blocking pool.
    every(
        Duration::from_millis(100),
        streams.clone(),
        Streams::sync_due,
    );
    every(Duration::from_secs(5), streams.clone(), Streams::upkeep);
    // Another node's resharding of a JetStream stream is taken within a second.
    every(
        Duration::from_secs(1),
        streams.clone(),
        Streams::sync_topologies,
    );
    let mut sup = Supervisor::new(
        registry.clone(),
        set.base_dir.clone(),
        set.daemon.shutdown_timeout.0,
        Some(Arc::new(crate::plugins::HostServices {
            streams: streams.clone(),
            data_dir: set.daemon.data_dir.clone(),
        })),
        memory,
    );
    let loaded = Arc::new(AtomicBool::new(false));
    let admin = AdminState {
        prom,
        board: sup.board(),
        loaded: loaded.clone(),
        reload: reload_tx,
        streams: streams.clone(),
    };
    let listen = set.daemon.metrics.listen;
    let addr = telemetry::serve(listen, admin)
        .await
        .with_context(|| format!("cannot listen on {listen} ([metrics].listen)"))?;
    tracing::info!(%addr, "operator listener up: /metrics /healthz /readyz /admin/status");

    sup.apply(&set.pipelines).await;
    record_reload(true);
    loaded.store(true, Ordering::Release);
    let sd = SdNotify::from_env();
    sd.ready(&summary(&set));
    if let Some(every) = SdNotify::watchdog_interval() {
        tokio::spawn(async move {
            let sd = SdNotify::from_env();
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                sd.send("WATCHDOG=1");
            }
        });
    }
    let watched = if set.daemon.watch {
        crate::watch::watch(&set.daemon.pipelines_dir, &config_path)
    } else {
        Err(notify::Error::generic("disabled by `watch = false`"))
    };
    let (_watcher, mut file_events) = match watched {
        Ok((w, rx)) => (Some(w), rx),
        Err(e) => {
            tracing::warn!(dir = %set.daemon.pipelines_dir.display(), error = %e, "cannot watch the pipelines folder; reload with SIGHUP or POST /admin/reload");
            (None, tokio::sync::mpsc::channel(1).1)
        }
    };
    let mut current = set;
    let mut last_seen = fingerprint(&config_path, &current.daemon.pipelines_dir).await;
    metrics::counter!("sluice_config_unchanged_events_total").increment(0);

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining pipelines"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: draining pipelines"); break; }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading configuration");
                last_seen = fingerprint(&config_path, &current.daemon.pipelines_dir).await;
                sd.reloading();
                let _ = reload(&config_path, &mut registry, &streams, &mut sup, &mut current, &pipelines_tx).await;
                sd.ready(&summary(&current));
            }
            Some(()) = file_events.recv() => {
                // Only a change of content reloads: an event that left every file as it
                // was (a touch, saving the same text) is not a reload and is not counted.
                let now = fingerprint(&config_path, &current.daemon.pipelines_dir).await;
                if now == last_seen {
                    tracing::debug!("configuration files unchanged; no reload");
                    metrics::counter!("sluice_config_unchanged_events_total").increment(1);
                    continue;
                }
                last_seen = now;
                tracing::info!("configuration files changed: reloading configuration");
                sd.reloading();
                let _ = reload(&config_path, &mut registry, &streams, &mut sup, &mut current, &pipelines_tx).await;
                sd.ready(&summary(&current));
            }
            Some(reply) = reload_rx.recv() => {
                tracing::info!("reload requested over HTTP");
                last_seen = fingerprint(&config_path, &current.daemon.pipelines_dir).await;
                sd.reloading();
                let r = reload(&config_path, &mut registry, &streams, &mut sup, &mut current, &pipelines_tx).await;
                sd.ready(&summary(&current));
                let _ = reply.send(r);
            }
        }
    }
    sd.stopping();
    sup.shutdown().await;
    let st = streams.clone();
    let _ = tokio::task::spawn_blocking(move || st.close()).await;
    tracing::info!("all pipelines drained; exiting");
    Ok(())
}

/// [`config::fingerprint`] on the blocking pool.
async fn fingerprint(config_path: &Path, pipelines_dir: &Path) -> [u8; 32] {
    let (c, p) = (config_path.to_path_buf(), pipelines_dir.to_path_buf());
    tokio::task::spawn_blocking(move || config::fingerprint(&c, &p))
        .await
        .unwrap_or([0; 32])
}

/// Runs `f` on the streams every `period`, on the blocking pool.
fn every(period: Duration, streams: Arc<Streams>, f: fn(&Streams)) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let s = streams.clone();
            let _ = tokio::task::spawn_blocking(move || f(&s)).await;
        }
    });
}

/// One-line STATUS for systemd.
fn summary(set: &ConfigSet) -> String {
    format!(
        "{} streams, {} pipelines running",
        set.streams.len(),
        set.pipelines.len()
    )
}

fn record_reload(ok: bool) {
    let result = if ok { "success" } else { "failure" };
    metrics::counter!("sluice_config_reloads_total", "result" => result).increment(1);
    metrics::gauge!("sluice_config_last_reload_successful").set(if ok { 1.0 } else { 0.0 });
    if ok {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        metrics::gauge!("sluice_config_last_reload_success_timestamp_seconds").set(now);
    }
}

/// Re-reads every file; applies the pipelines if all of it is valid, changes nothing
/// otherwise. Daemon-level settings (listeners, folders) need a restart.
async fn reload(
    path: &Path,
    registry: &mut Arc<Registry>,
    streams: &Arc<Streams>,
    sup: &mut Supervisor,
    current: &mut ConfigSet,
    published: &tokio::sync::watch::Sender<
        Arc<std::collections::BTreeMap<String, crate::spec::PipelineSpec>>,
    >,
) -> Result<serde_json::Value, ReloadError> {
    // Reading, parsing and validating (plugins compile their programs) is blocking work:
    // on the blocking pool it cannot stall the API's tasks on the two runtime workers.
    // `plugin_dirs` are scanned again first: a library dropped in since loads now (the
    // folders themselves are the running daemon file's; changing them needs a restart).
    let (p, old, dirs) = (
        path.to_path_buf(),
        registry.clone(),
        current.daemon.plugin_dirs.clone(),
    );
    let scanned = tokio::task::spawn_blocking(move || {
        let reg = Arc::new(old.rescan(&dirs));
        let set =
            config::load_daemon(&p).and_then(|(d, base)| config::load_with(&p, d, base, &reg));
        (reg, set)
    })
    .await
    .map_err(|e| {
        record_reload(false);
        ReloadError::Task(e)
    })?;
    let (reg, new) = scanned;
    // Libraries that loaded stay loaded whatever the configuration says: the registry is
    // the new one either way.
    sup.set_registry(reg.clone());
    *registry = reg;
    match new {
        Err(e) => {
            record_reload(false);
            for err in &e.0 {
                tracing::error!(error = %err, "reload refused: invalid configuration; the running configuration is kept");
            }
            Err(ReloadError::Invalid(e))
        }
        Ok(set) => {
            if set.daemon != current.daemon {
                tracing::warn!(
                    "changes to the daemon file other than pipelines take effect after a restart"
                );
            }
            let (st, specs) = (streams.clone(), set.streams.clone());
            let applied = tokio::task::spawn_blocking(move || st.apply_config(&specs))
                .await
                .map_err(|e| {
                    record_reload(false);
                    ReloadError::Task(e)
                })?;
            if let Err(e) = applied {
                record_reload(false);
                tracing::error!(error = %e, "reload refused: the streams cannot take this change; the running configuration is kept");
                return Err(ReloadError::Streams(e));
            }
            let report = sup.apply(&set.pipelines).await;
            record_reload(true);
            published.send_replace(Arc::new(set.pipelines.clone()));
            *current = set;
            Ok(serde_json::json!({
                "added": report.added,
                "removed": report.removed,
                "changed": report.changed,
                "unchanged": report.unchanged,
            }))
        }
    }
}
