//! The source stage: polls the source only when the channel to the transforms has room
//! (credit-based backpressure), waits on the plugin's `notify` or its poll delay
//! otherwise, and hands delivery acks back to the source. Runs on a thread of its own.

use super::{plugin_err, Ack, Batch, End, PipelineError, PipelineShared, State};
use super::{DEFAULT_REPOLL, POLL_MAX_BYTES, POLL_MAX_RECORDS};
use crate::plugins::{outside_runtime, SourceInstance};
use sluice_plugin_api::ffi;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Runs the source stage until EOF, drain or an error.
pub(crate) async fn driver(
    mut src: SourceInstance,
    tx: mpsc::Sender<Batch>,
    mut acks: mpsc::Receiver<Ack>,
    mut drain: watch::Receiver<bool>,
    shared: Arc<PipelineShared>,
    stop_deadline: Duration,
) -> Result<End, PipelineError> {
    let notify = src.instance().shared().clone();
    let records_in =
        metrics::counter!("sluice_pipeline_records_in_total", "pipeline" => shared.name.clone());
    let mut eof = false;
    loop {
        if *drain.borrow() || eof {
            break;
        }
        let permit = tokio::select! {
            biased;
            _ = drain.changed() => continue,
            Some(a) = acks.recv() => { outside_runtime(|| src.ack(a.token, true)); continue; }
            p = tx.reserve() => match p {
                Ok(p) => p,
                // The transform worker is gone: it reports its own error.
                Err(_) => break,
            },
        };
        let out = outside_runtime(|| src.poll(POLL_MAX_RECORDS, POLL_MAX_BYTES))
            .map_err(plugin_err("source"))?;
        let n = out.records.len();
        let wait = match out.status {
            ffi::SL_EOF => {
                eof = true;
                None
            }
            ffi::SL_PENDING => Some(out.poll_delay.unwrap_or(DEFAULT_REPOLL)),
            _ if n == 0 => Some(out.poll_delay.unwrap_or(Duration::from_millis(100))),
            _ => out.poll_delay,
        };
        if n > 0 {
            records_in.increment(n as u64);
            shared.records_in.fetch_add(n as u64, Ordering::Relaxed);
            permit.send(Batch {
                records: out.records,
                rejected: Vec::new(),
                token: out.ack_token,
            });
        } else {
            drop(permit);
        }
        if let Some(wait) = wait {
            tokio::select! {
                biased;
                _ = drain.changed() => {}
                Some(a) = acks.recv() => outside_runtime(|| src.ack(a.token, true)),
                _ = notify.notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
    if !eof {
        shared.set_state(State::Draining, None);
    }
    // Let the rest flow through: closing our end ends the worker, then the sink.
    drop(tx);
    while let Some(a) = acks.recv().await {
        outside_runtime(|| src.ack(a.token, true));
    }
    let res = outside_runtime(|| src.instance().stop(stop_deadline));
    if let Err(e) = res {
        tracing::warn!(pipeline = %shared.name, error = %e, "source stop failed");
    }
    Ok(if eof { End::Eof } else { End::Drained })
}
