//! The record-sink stage: submits batches in order, one in flight, retrying retryable
//! failures with backoff and jitter, then acks. Runs on a thread of its own.

use super::{plugin_err, Ack, Batch, PipelineError, PipelineShared};
use crate::plugins::{outside_runtime, SinkInstance};
use crate::record::Record;
use crate::spec::BatchConfig;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Splits records into chunks of at most `max_records` and (unless one record is larger)
/// `max_bytes`.
fn chunks<'a>(records: &'a [Record], cfg: &BatchConfig) -> impl Iterator<Item = &'a [Record]> + 'a {
    let (max_n, max_b) = (cfg.max_records.max(1) as usize, cfg.max_bytes.0.max(1));
    let mut rest = records;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut n = 0;
        let mut bytes = 0u64;
        while n < rest.len() && n < max_n {
            let b = rest[n].data.len() as u64;
            if n > 0 && bytes + b > max_b {
                break;
            }
            bytes += b;
            n += 1;
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

/// Runs the record-sink stage until its input closes or an error.
pub(crate) async fn driver(
    sink: SinkInstance,
    mut rx: mpsc::Receiver<Batch>,
    acks: mpsc::Sender<Ack>,
    cfg: BatchConfig,
    shared: Arc<PipelineShared>,
    stop_deadline: Duration,
) -> Result<(), PipelineError> {
    let name = shared.name.clone();
    let sink = std::sync::Mutex::new(sink);
    let sink_records = metrics::counter!("sluice_sink_records_total", "pipeline" => name.clone());
    let sink_bytes = metrics::counter!("sluice_sink_bytes_total", "pipeline" => name.clone());
    while let Some(batch) = rx.recv().await {
        for chunk in chunks(&batch.records, &cfg) {
            let mut pending: Vec<Record> = chunk.to_vec();
            crate::plugins::until_stored(&sink, &shared.sink_health, None, |sink, failed| {
                if !failed.is_empty() {
                    // Partial failure: resubmit only the failed records, in order.
                    let mut idx: Vec<usize> = failed
                        .iter()
                        .map(|&i| i as usize)
                        .filter(|&i| i < pending.len())
                        .collect();
                    idx.sort_unstable();
                    idx.dedup();
                    pending = idx.into_iter().map(|i| pending[i].clone()).collect();
                }
                sink.submit(&pending)
            })
            .await
            .map_err(plugin_err("sink"))?;
        }
        let n = batch.records.len() as u64;
        sink_records.increment(n);
        sink_bytes.increment(batch.records.iter().map(|r| r.data.len() as u64).sum());
        shared.records_out.fetch_add(n, Ordering::Relaxed);
        if acks.send(Ack { token: batch.token }).await.is_err() {
            break;
        }
    }
    if let Err(e) = outside_runtime(|| {
        crate::plugins::lock_sink(&sink)
            .instance()
            .stop(stop_deadline)
    }) {
        tracing::warn!(pipeline = %name, error = %e, "sink stop failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ByteSize;

    fn rec(n: usize) -> Record {
        Record {
            data: bytes::Bytes::from(vec![b'x'; n]),
            ..Default::default()
        }
    }

    #[test]
    fn chunks_respect_records_and_bytes() {
        let recs: Vec<Record> = (0..7).map(|_| rec(10)).collect();
        let cfg = BatchConfig {
            max_records: 3,
            max_bytes: ByteSize(25),
        };
        let sizes: Vec<usize> = chunks(&recs, &cfg).map(|c| c.len()).collect();
        assert_eq!(sizes, [2, 2, 2, 1]);
        let big = vec![rec(100), rec(1)];
        let sizes: Vec<usize> = chunks(&big, &cfg).map(|c| c.len()).collect();
        assert_eq!(sizes, [1, 1], "an oversized record travels alone");
    }
}
