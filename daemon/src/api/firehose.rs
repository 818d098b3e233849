//! The Firehose Direct PUT API (`Firehose_20150804.*`) for pipelines whose source is
//! `direct-put`: PutRecord, PutRecordBatch, ListDeliveryStreams, DescribeDeliveryStream.
//! Records are appended (durably, under the stream's fsync policy) to the pipeline's
//! internal stream before the call answers; the pipeline delivers them from there.

use super::error::{ApiError, Violations};
use super::request::check_data;
use super::shapes::{FirehosePutInput, Shape};
use super::Call;
use crate::record::now_ms;
use crate::spec::direct_put_stream;
use crate::stream::{sequence_string, Stream};
use serde_json::{json, Value};
use sluice_shardlog::Entry;
use std::sync::Arc;

/// The operations served (the control plane's are in `firehose_control`).
pub const OPERATIONS: &[&str] = &[
    "PutRecord",
    "PutRecordBatch",
    "ListDeliveryStreams",
    "DescribeDeliveryStream",
    "CreateDeliveryStream",
    "DeleteDeliveryStream",
    "UpdateDestination",
    "TagDeliveryStream",
    "UntagDeliveryStream",
    "ListTagsForDeliveryStream",
    "StartDeliveryStreamEncryption",
    "StopDeliveryStreamEncryption",
];
/// PutRecordBatch limits, as Firehose.
pub const MAX_BATCH_RECORDS: usize = 500;
/// Total data per PutRecordBatch.
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Largest record (1,000 KiB), as Firehose.
pub const MAX_RECORD: usize = 1000 * 1024;

fn not_found(name: &str, account: &str) -> ApiError {
    ApiError::new(
        "ResourceNotFoundException",
        format!("Firehose {name} under account {account} not found."),
    )
}

/// The delivery stream a put names, its name validated as the control plane validates it
/// (Firehose's redacted form), and its internal stream if it has one.
fn delivery_stream(
    call: &Call<'_>,
    name: Option<&str>,
    v: &mut Violations,
) -> (String, Option<Arc<Stream>>) {
    super::firehose_control::check_name(v, name);
    let name = name.unwrap_or_default().to_string();
    let st = call.state.streams.get(&direct_put_stream(&name));
    (name, st)
}

/// The `Records` count of PutRecordBatch: 1 to [`MAX_BATCH_RECORDS`], in Firehose's
/// redacted form (the list is not printed).
fn check_batch_count(records: Option<usize>, v: &mut Violations) {
    match records {
        None => v.null("records"),
        Some(0) => v.add_at(
            "records",
            "Member must have length greater than or equal to 1",
        ),
        Some(n) if n > MAX_BATCH_RECORDS => v.add_at(
            "records",
            &format!("Member must have length less than or equal to {MAX_BATCH_RECORDS}"),
        ),
        Some(_) => {}
    }
}

/// Appends records; returns their record ids (the internal sequence numbers).
async fn append(st: Arc<Stream>, data: Vec<Vec<u8>>) -> Result<Vec<String>, ApiError> {
    let now = now_ms();
    let n = data.len();
    let (first, _) = tokio::task::spawn_blocking(move || {
        let entries: Vec<Entry<'_>> = data
            .iter()
            .map(|d| Entry {
                key: b"firehose",
                data: d,
                arrival_ms: now,
            })
            .collect();
        // The internal stream has one shard and is never resharded.
        let set = st.shards();
        let shard = set.open().first().cloned();
        shard.map_or(Err(crate::stream::StreamError::ShardClosed(0)), |sh| {
            sh.append(&entries)
        })
    })
    .await
    .map_err(|e| ApiError::internal(format!("append task failed: {e}")))?
    .map_err(|e| ApiError::internal(format!("append failed: {e}")))?;
    Ok((0..n as u64)
        .map(|i| sequence_string(0, first + i))
        .collect())
}

/// The internal stream a put goes to and whether the delivery stream encrypts; a
/// delivery stream that reads a Kinesis stream refuses puts, as Firehose does.
fn target(
    call: &Call<'_>,
    name: &str,
    st: Option<Arc<Stream>>,
) -> Result<(Arc<Stream>, bool), ApiError> {
    use super::firehose_control::{put_target, PutTarget};
    match (put_target(call, name, st.is_some()), st) {
        (PutTarget::DirectPut { encrypted }, Some(st)) => Ok((st, encrypted)),
        (PutTarget::KinesisSource, _) => Err(ApiError::invalid_argument(
            "This operation is not permitted on KinesisStreamAsSource delivery stream type.",
        )),
        _ => Err(not_found(name, &call.state.account)),
    }
}

/// Runs one Firehose operation.
pub async fn dispatch(call: &Call<'_>, op: &str, req: &Value) -> Result<Value, ApiError> {
    if !OPERATIONS.contains(&op) {
        return Err(ApiError::unknown_operation(&format!(
            "Firehose_20150804.{op}"
        )));
    }
    match op {
        "PutRecord" => {
            let r = FirehosePutInput::read_shape(req)?;
            let mut v = Violations::default();
            let (name, st) = delivery_stream(call, r.delivery_stream_name.as_deref(), &mut v);
            let data = match r.record {
                None => {
                    v.null("record");
                    None
                }
                Some(rec) => check_data(rec.data, "record.data", MAX_RECORD as u64, &mut v),
            };
            v.finish()?;
            let (st, encrypted) = target(call, &name, st)?;
            let ids = append(st, vec![data.unwrap_or_default()]).await?;
            Ok(json!({ "RecordId": ids[0], "Encrypted": encrypted }))
        }
        "PutRecordBatch" => {
            let r = FirehosePutInput::read_shape(req)?;
            let mut v = Violations::default();
            let (name, st) = delivery_stream(call, r.delivery_stream_name.as_deref(), &mut v);
            check_batch_count(r.records.as_ref().map(Vec::len), &mut v);
            let recs = r.records.unwrap_or_default();
            let mut data = Vec::with_capacity(recs.len());
            for (i, rec) in recs.into_iter().enumerate() {
                if let Some(d) = check_data(
                    rec.data,
                    &format!("records.{}.member.data", i + 1),
                    MAX_RECORD as u64,
                    &mut v,
                ) {
                    data.push(d);
                }
            }
            v.finish()?;
            let (st, encrypted) = target(call, &name, st)?;
            let total: usize = data.iter().map(Vec::len).sum();
            if total > MAX_BATCH_BYTES {
                return Err(ApiError::invalid_argument(format!(
                    "Records size exceeds 4 MiB limit: the request carries {total} bytes"
                )));
            }
            let ids = append(st, data).await?;
            Ok(json!({
                "FailedPutCount": 0,
                "Encrypted": encrypted,
                "RequestResponses": ids.iter().map(|id| json!({ "RecordId": id })).collect::<Vec<_>>(),
            }))
        }
        "ListDeliveryStreams" => super::firehose_control::list_hoses(call, req),
        "DescribeDeliveryStream" => super::firehose_control::describe(call, req),
        _ => super::firehose_control::dispatch(call, op, req).await,
    }
}
