//! The object-sink stage (Firehose delivery): records go into per-partition buffers
//! (`crate::delivery`), due buffers are encoded and delivered with retries, and what a
//! stored object releases is acked in order. Runs on a thread of its own.

use super::{
    plugin_err, Ack, Batch, PipelineError, PipelineShared, RuntimeCtx, DRAIN_FLUSH_BUDGET,
};
use crate::plugins::{outside_runtime, SinkInstance};
use crate::spec::PipelineSpec;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The intent log of a pipeline whose source replays the same records with the same
/// positions after a crash (`stream`, `direct-put`, `kinesis`, replayable plugins); others
/// get none.
/// A `stream` (or `http`) source on a stream kept on JetStream, or a `kinesis` source in a daemon with
/// a cluster, shares its shards with other nodes: its intents go to the cluster
/// (`crate::stream::lease::SharedSource`).
pub(crate) fn journal(
    spec: &PipelineSpec,
    data_dir: Option<&Path>,
    services: Option<&crate::plugins::HostServices>,
) -> Option<crate::delivery::Journal> {
    if !spec.source.replayable {
        return None;
    }
    let dir = crate::names::child(&data_dir?.join("delivery"), &spec.name).ok()?;
    let shared = services.and_then(|s| match spec.source.plugin.as_str() {
        "kinesis" => crate::plugins::kinesis_source::shared_source(&spec.source.config_json, s),
        p => crate::plugins::stream_io::shared_stream(p, &spec.source.config_json, &spec.name, s),
    });
    Some(crate::delivery::Journal {
        dir,
        config_hash: spec.delivery_identity(),
        shared,
    })
}

fn disk_err(e: crate::delivery::DeliveryError) -> PipelineError {
    PipelineError::Delivery(e)
}

/// Sends the acks a flush released (the source checkpoints on them).
async fn send_acks(acks: &mpsc::Sender<Ack>, tokens: Vec<u64>) {
    for token in tokens {
        let _ = acks.send(Ack { token }).await;
    }
}

/// Most objects one flush round takes out and hands to the sink together ...
const ROUND_OBJECTS: usize = 64;
/// ... and about this many bytes of records (their encoded bodies are held until stored).
const ROUND_BYTES: u64 = 64 << 20;

/// One flush round: takes due buffers out as objects (one intent-log sync for all of
/// them), hands them to the sink together — the sink works on as many at once as it
/// allows (the object-store sink's `concurrency`) and says when it is full — and once
/// every one is stored, acks what they release (one more sync).
async fn flush_round(
    d: &mut crate::delivery::Delivery,
    due: &[(crate::delivery::Slot, crate::delivery::FlushReason)],
    sink: &Mutex<SinkInstance>,
    acks: &mpsc::Sender<Ack>,
    shared: &PipelineShared,
) -> Result<(), PipelineError> {
    let objects = d.take_round(due, ROUND_BYTES).map_err(disk_err)?;
    let limit = d.retry_limit();
    let health = &shared.sink_health;
    let in_flight =
        metrics::gauge!("sluice_delivery_objects_in_flight", "pipeline" => shared.name.clone());
    in_flight.set(objects.len() as f64);
    let results = futures_util::future::join_all(objects.iter().map(|f| async move {
        sluice_plugin_api::failpoint("delivery-before-upload");
        crate::delivery::deliver(sink, f, health, limit).await
    }))
    .await;
    in_flight.set(0.0);
    for (f, r) in objects.into_iter().zip(results) {
        let f = match r {
            Ok(()) => f,
            // Only a bounded retry returns a retryable error: keep the records under the
            // error prefix (retried without bound there: nothing acknowledged is dropped).
            Err(e) if e.is_retryable() => {
                let f = d.redirect(f, &e.message);
                crate::delivery::deliver(sink, &f, health, None)
                    .await
                    .map_err(plugin_err("sink"))?;
                f
            }
            Err(e) => return Err(plugin_err("sink")(e)),
        };
        sluice_plugin_api::failpoint("delivery-after-upload");
        let before = d.delivered;
        d.mark_stored(&f).map_err(disk_err)?;
        shared
            .records_out
            .fetch_add(d.delivered - before, Ordering::Relaxed);
    }
    shared
        .last_flush_ms
        .store(crate::record::now_ms().max(0) as u64, Ordering::Relaxed);
    send_acks(acks, d.ready().map_err(disk_err)?).await;
    Ok(())
}

/// The sink stage of a pipeline with an object sink: buffers, flushes and acks in order.
pub(crate) async fn driver(
    sink: SinkInstance,
    mut rx: mpsc::Receiver<Batch>,
    acks: mpsc::Sender<Ack>,
    spec: crate::spec::DeliverySpec,
    journal: Option<crate::delivery::Journal>,
    shared: Arc<PipelineShared>,
    ctx: Arc<RuntimeCtx>,
) -> Result<(), PipelineError> {
    use crate::delivery::Delivery;
    let stop_deadline = ctx.stop_deadline;
    let name = shared.name.clone();
    let spool_dir = ctx
        .data_dir()
        .and_then(|d| crate::names::child(&d.join("spool"), &name).ok());
    let replayable = journal.is_some();
    let budget = ctx.memory.clone();
    let sink = Mutex::new(sink);
    let mut d =
        Delivery::new(&name, spec, journal.as_ref(), spool_dir, budget).map_err(disk_err)?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut maintained = std::time::Instant::now();
    let mut open = true;
    loop {
        loop {
            let due = d.due(ROUND_OBJECTS);
            if due.is_empty() {
                break;
            }
            flush_round(&mut d, &due, &sink, &acks, &shared).await?;
        }
        send_acks(&acks, d.ready().map_err(disk_err)?).await;
        if maintained.elapsed() >= Duration::from_secs(5) {
            maintained = std::time::Instant::now();
            d.maintain().map_err(disk_err)?;
        }
        d.publish_gauges();
        let (records, bytes, parts) = d.stats();
        shared.buffered_records.store(records, Ordering::Relaxed);
        shared.buffered_bytes.store(bytes, Ordering::Relaxed);
        shared.partitions.store(parts, Ordering::Relaxed);
        if !open {
            break;
        }
        tokio::select! {
            b = rx.recv() => match b {
                Some(batch) => {
                    d.claim_shards(&batch.records, &batch.rejected).map_err(disk_err)?;
                    // Rejected records were counted by the transform stage already.
                    d.add(batch.token, &batch.records, &batch.rejected);
                }
                None => open = false,
            },
            _ = tick.tick() => {}
        }
    }
    // Draining: what is buffered is flushed and delivered before stopping — for a source
    // that replays (its records stay in the stream until acknowledged), only for
    // DRAIN_FLUSH_BUDGET: the rest is delivered after the restart, so a stop never waits
    // for thousands of uploads.
    let budget_end = Instant::now() + DRAIN_FLUSH_BUDGET.min(stop_deadline / 4);
    loop {
        let all = d.any(ROUND_OBJECTS);
        if all.is_empty() {
            break;
        }
        if replayable && Instant::now() >= budget_end {
            let (records, _, partitions) = d.stats();
            tracing::info!(pipeline = %name, partitions, records, "stopping without flushing the rest: those records stay in the stream and are delivered after the restart");
            break;
        }
        flush_round(&mut d, &all, &sink, &acks, &shared).await?;
    }
    send_acks(&acks, d.ready().map_err(disk_err)?).await;
    if let Err(e) = outside_runtime(|| {
        crate::plugins::lock_sink(&sink)
            .instance()
            .stop(stop_deadline)
    }) {
        tracing::warn!(pipeline = %name, error = %e, "sink stop failed");
    }
    Ok(())
}
