//! SubscribeToShard (enhanced fan-out): a registered consumer receives a shard's records
//! pushed over AWS's event-stream framing (`application/vnd.amazon.eventstream`) in the
//! HTTP response body — first an `initial-response` event (boto3 requires it), then
//! `SubscribeToShardEvent`s with `Records`, `ContinuationSequenceNumber` and
//! `MillisBehindLatest`, one whenever records arrive and at least one a second; at the end
//! of a closed shard a last event carries `ChildShards` and the stream ends; after five
//! minutes it ends too, as on Kinesis. A second subscription for the same consumer and
//! shard within 5 s is refused; later, it takes over and the older one ends with a
//! `ResourceInUseException` event.

use super::error::{ApiError, Violations};
use super::manage::{consumer_not_found, resource, Resource};
use super::shapes::{Shape, SubscribeToShardInput};
use super::Call;
use crate::record::now_ms;
use crate::stream::{parse_sequence, sequence_string, shard_end_sequence, Shard, Stream};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a subscription lasts, as Kinesis.
pub const LIFETIME: Duration = Duration::from_secs(300);
/// A subscription younger than this cannot be taken over.
const TAKEOVER_MS: i64 = 5_000;
/// Most records per event.
const MAX_EVENT_RECORDS: usize = 10_000;
/// Most data per event (a Kinesis shard pushes up to 2 MiB/s per consumer).
const MAX_EVENT_BYTES: usize = 2 << 20;
/// Events waiting for a slow reader, per subscription (then the pusher waits).
const QUEUE: usize = 4;

/// Live subscriptions: (consumer ARN, shard index) → (generation, start ms).
#[derive(Default)]
pub struct Registry {
    live: Mutex<HashMap<(String, u32), (u64, i64)>>,
    next: std::sync::atomic::AtomicU64,
}

impl Registry {
    /// Takes the slot, or says it is too young to take over.
    fn take(&self, key: (String, u32), now: i64) -> Option<u64> {
        let mut live = self.live.lock().ok()?;
        if live.get(&key).is_some_and(|(_, t)| now - t < TAKEOVER_MS) {
            return None;
        }
        let g = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        live.insert(key, (g, now));
        Some(g)
    }

    fn current(&self, key: &(String, u32)) -> Option<u64> {
        self.live.lock().ok()?.get(key).map(|(g, _)| *g)
    }

    fn release(&self, key: &(String, u32), generation: u64) {
        if let Ok(mut live) = self.live.lock() {
            if live.get(key).is_some_and(|(g, _)| *g == generation) {
                live.remove(key);
            }
        }
    }
}

/// One event-stream message: prelude (total length, headers length, their CRC32),
/// string headers, payload, CRC32 of everything before.
pub fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7); // string
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn event(kind: &str, payload: &Value) -> Bytes {
    Bytes::from(frame(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    ))
}

fn exception(kind: &str, message: &str) -> Bytes {
    Bytes::from(frame(
        &[
            (":exception-type", kind),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        json!({ "message": message }).to_string().as_bytes(),
    ))
}

/// The response body: frames as the pusher produces them.
pub struct EventBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for EventBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|m| m.map(|b| Ok(http_body::Frame::data(b))))
    }
}

const TYPES: [&str; 5] = [
    "AT_SEQUENCE_NUMBER",
    "AFTER_SEQUENCE_NUMBER",
    "TRIM_HORIZON",
    "LATEST",
    "AT_TIMESTAMP",
];

/// Validates the request in AWS's order and starts the pusher; errors before the stream
/// starts are ordinary error answers.
pub async fn subscribe(call: &Call<'_>, req: &Value) -> Result<EventBody, ApiError> {
    let r = SubscribeToShardInput::read_shape(req)?;
    let mut v = Violations::default();
    match r.consumer_arn.as_deref() {
        None => v.null("consumerARN"),
        Some(a) => super::manage::check_consumer_arn(&mut v, a),
    }
    super::reshard::check_shard_member(&mut v, r.shard_id.as_deref(), "shardId", true);
    match r.starting_position.as_ref().map(|p| p.kind.as_deref()) {
        None => v.null("startingPosition"),
        Some(None) => v.null("startingPosition.type"),
        Some(Some(t)) if !TYPES.contains(&t) => v.add(
            t,
            "startingPosition.type",
            "Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, AT_SEQUENCE_NUMBER, AT_TIMESTAMP, TRIM_HORIZON, LATEST]",
        ),
        _ => {}
    }
    // A constraint of the request, so checked before the consumer is looked up.
    if let Some(s) = r
        .starting_position
        .as_ref()
        .and_then(|p| p.sequence_number.as_deref())
    {
        if !super::kinesis::is_sequence_pattern(s) {
            v.add(
                s,
                "startingPosition.sequenceNumber",
                "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,128})",
            );
        }
    }
    v.finish()?;
    let account = &call.state.account;
    let arn = r.consumer_arn.clone().unwrap_or_default();
    let Some(Resource::Consumer { stream, name }) = resource(&arn) else {
        return Err(consumer_not_found(call, &arn));
    };
    let st = super::kinesis::lookup(call, &stream)?;
    if !st.with_settings(|s| s.consumers.iter().any(|c| c.name == name && c.arn == arn)) {
        return Err(consumer_not_found(call, &arn));
    }
    let raw = r.shard_id.clone().unwrap_or_default();
    let not_found = || {
        ApiError::new(
            "ResourceNotFoundException",
            format!("Could not find shard {raw} in stream {stream} under account {account}."),
        )
    };
    let index = super::kinesis::shard_index(&raw).ok_or_else(not_found)?;
    let sh = st.shards().get(index).cloned().ok_or_else(not_found)?;
    let pos = r.starting_position.unwrap_or_default();
    let from = start(&sh, &pos, &stream, account)?;
    let key = (arn.clone(), index);
    let Some(generation) = call.state.subscriptions.take(key.clone(), now_ms()) else {
        return Err(ApiError::new(
            "ResourceInUseException",
            format!(
                "Another active subscription exists for consumer {arn} on shard {}",
                sh.id
            ),
        ));
    };
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
    let registry = call.state.subscriptions.clone();
    tokio::spawn(async move {
        push(st, sh, from, tx, &registry, &key, generation).await;
        registry.release(&key, generation);
    });
    Ok(EventBody(rx))
}

/// The first shard-local position to push.
fn start(
    sh: &Shard,
    pos: &super::shapes::StartingPosition,
    stream: &str,
    account: &str,
) -> Result<u64, ApiError> {
    let kind = pos.kind.as_deref().unwrap_or_default();
    let seq = || -> Result<u64, ApiError> {
        let s = pos.sequence_number.as_deref().ok_or_else(|| {
            ApiError::invalid_argument(format!(
                "StartingPosition.SequenceNumber is required for {kind}."
            ))
        })?;
        match parse_sequence(s) {
            Some((i, low)) if i == sh.index => Ok(low),
            _ => Err(ApiError::invalid_argument(format!(
                "StartingSequenceNumber {s} used in SubscribeToShard on shard {} in stream {stream} under account {account} is invalid.",
                sh.id
            ))),
        }
    };
    Ok(match kind {
        "TRIM_HORIZON" => sh.log.first_seq(),
        "LATEST" => sh.closed().map_or_else(|| sh.log.next_seq(), |c| c.at_seq),
        // A number is one above its record's shard-local position.
        "AT_SEQUENCE_NUMBER" => seq()?.saturating_sub(1),
        "AFTER_SEQUENCE_NUMBER" => seq()?,
        _ => {
            let ts = pos.timestamp.as_ref().map(|t| t.0).ok_or_else(|| {
                ApiError::invalid_argument(
                    "StartingPosition.Timestamp is required for AT_TIMESTAMP.",
                )
            })?;
            sh.log
                .seek_timestamp((ts * 1000.0) as i64)
                .map_err(|e| ApiError::internal(e.to_string()))?
        }
    }
    .max(sh.log.first_seq()))
}

/// What became of one frame handed to the reader.
enum Sent {
    Yes,
    /// The reader left, the lifetime ended or another subscription took over: stop.
    Stop,
}

/// Hands `frame` to the reader, waiting while it reads slowly — but never past the
/// subscription's end or a takeover (checked each second), so a client that stops reading
/// cannot keep the task alive.
async fn send(
    tx: &tokio::sync::mpsc::Sender<Bytes>,
    frame: Bytes,
    ends: tokio::time::Instant,
    registry: &Registry,
    key: &(String, u32),
    generation: u64,
) -> Sent {
    loop {
        let tick = (tokio::time::Instant::now() + Duration::from_secs(1)).min(ends);
        match tokio::time::timeout_at(tick, tx.reserve()).await {
            Ok(Ok(permit)) => {
                permit.send(frame);
                return Sent::Yes;
            }
            Ok(Err(_)) => return Sent::Stop,
            Err(_) => {
                if tokio::time::Instant::now() >= ends || registry.current(key) != Some(generation)
                {
                    return Sent::Stop;
                }
            }
        }
    }
}

/// Pushes events until the shard's end, the lifetime, a takeover or the reader leaving.
async fn push(
    st: Arc<Stream>,
    sh: Arc<Shard>,
    mut next: u64,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    registry: &Registry,
    key: &(String, u32),
    generation: u64,
) {
    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
    let ends = tokio::time::Instant::now() + LIFETIME;
    let first = event("initial-response", &json!({}));
    if let Sent::Stop = send(&tx, first, ends, registry, key, generation).await {
        return;
    }
    let began = std::time::Instant::now();
    let mut last_event = std::time::Instant::now() - Duration::from_secs(1);
    let encryption = st.with_settings(|s| s.encryption_type());
    let consumer = format!("efo:{}", key.0.rsplit('/').next().unwrap_or(""));
    while began.elapsed() < LIFETIME {
        if registry.current(key) != Some(generation) {
            // Best effort: a reader that is not reading does not get it.
            let _ = tx.try_send(exception(
                "ResourceInUseException",
                "Another subscription took over this consumer's shard.",
            ));
            return;
        }
        // Observed before reading: an empty read of a closed shard is its end.
        let closed = sh.closed();
        let reader = sh.clone();
        let from = next;
        let recs = match tokio::task::spawn_blocking(move || {
            reader.read(from, MAX_EVENT_RECORDS, MAX_EVENT_BYTES)
        })
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let _ = tx.try_send(exception("InternalFailure", &e.to_string()));
                return;
            }
            Err(_) => return,
        };
        if let Some(r) = recs.last() {
            next = r.seq + 1;
        }
        let newest = sh.log.last_seq();
        let at_end = closed.is_some_and(|c| next >= c.at_seq || newest.is_none_or(|n| n < next));
        if recs.is_empty() && !at_end && last_event.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let behind = match recs.last() {
            Some(r) if newest.is_some_and(|n| r.seq < n) => (now_ms() - r.arrival_ms).max(0),
            _ => 0,
        };
        metrics::counter!("sluice_shard_outgoing_records_total", "stream" => st.name.clone(), "shard" => sh.id.clone(), "consumer" => consumer.clone())
            .increment(recs.len() as u64);
        let mut payload = json!({
            "Records": recs.iter().map(|r| json!({
                "SequenceNumber": sequence_string(sh.index, r.seq),
                "ApproximateArrivalTimestamp": r.arrival_ms as f64 / 1000.0,
                "Data": B64.encode(&r.data),
                "PartitionKey": String::from_utf8_lossy(&r.key),
                "EncryptionType": encryption,
            })).collect::<Vec<_>>(),
            // Resuming AFTER_SEQUENCE_NUMBER of it continues at `next`.
            "ContinuationSequenceNumber": shard_end_sequence(sh.index, next),
            "MillisBehindLatest": behind,
        });
        if at_end {
            payload["ChildShards"] = super::kinesis::child_shards(&st, sh.index);
        }
        let frame = event("SubscribeToShardEvent", &payload);
        if let Sent::Stop = send(&tx, frame, ends, registry, key, generation).await {
            return;
        }
        last_event = std::time::Instant::now();
        if at_end {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames_carry_both_checksums() {
        let f = super::frame(&[(":message-type", "event")], b"{}");
        let total = u32::from_be_bytes(f[0..4].try_into().unwrap()) as usize;
        assert_eq!(total, f.len());
        let headers = u32::from_be_bytes(f[4..8].try_into().unwrap()) as usize;
        assert_eq!(headers, 1 + 13 + 1 + 2 + 5);
        assert_eq!(
            u32::from_be_bytes(f[8..12].try_into().unwrap()),
            crc32fast::hash(&f[..8])
        );
        assert_eq!(
            u32::from_be_bytes(f[total - 4..].try_into().unwrap()),
            crc32fast::hash(&f[..total - 4])
        );
        assert_eq!(&f[12 + headers..total - 4], b"{}");
    }
}
