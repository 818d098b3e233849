//! Kinesis Data Streams operations (`Kinesis_20131202.*`), validated like AWS validates
//! them. Field names in `Violations` are AWS's (camelCase member names).

use super::error::{ApiError, Violations};
use super::iterator::{IteratorError, Position};
use super::shapes::{
    CreateStreamInput, DeleteStreamInput, DescribeStreamInput, GetRecordsInput,
    GetShardIteratorInput, ListStreamsInput, PutRecordInput, PutRecordsInput, Shape, StreamRef,
};
use super::Call;
use crate::record::now_ms;
use crate::spec::MAX_SHARDS;
use crate::stream::{
    hash_key, parse_sequence, sequence_string, shard_id, Shard, Stream, StreamError, StreamSettings,
};
use base64::Engine as _;
use serde_json::{json, Value};
use sluice_shardlog::Entry;
use std::sync::Arc;

/// The operations served (others answer `UnknownOperationException`).
pub const OPERATIONS: &[&str] = &[
    "CreateStream",
    "DeleteStream",
    "ListStreams",
    "DescribeStream",
    "DescribeStreamSummary",
    "ListShards",
    "SplitShard",
    "MergeShards",
    "UpdateShardCount",
    "PutRecord",
    "PutRecords",
    "GetShardIterator",
    "GetRecords",
    "SubscribeToShard",
];

/// Whether `op` is a Kinesis operation sluice serves.
pub fn is_operation(op: &str) -> bool {
    OPERATIONS.contains(&op)
        || super::manage::OPERATIONS.contains(&op)
        || super::account::OPERATIONS.contains(&op)
}

/// Every Kinesis operation sluice serves.
pub fn all_operations() -> impl Iterator<Item = &'static str> {
    OPERATIONS
        .iter()
        .chain(super::manage::OPERATIONS)
        .chain(super::account::OPERATIONS)
        .copied()
}

/// The shard index a `ShardId` names, as AWS reads it: the digits after the first `-`
/// (or the whole value), at most 2147483647.
pub(super) fn shard_index(raw: &str) -> Option<u32> {
    let digits = raw.split_once('-').map_or(raw, |(_, d)| d);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= i32::MAX as u64)
        .and_then(|n| u32::try_from(n).ok())
}

/// `0|([1-9]\d{0,128})`.
pub(super) fn is_sequence_pattern(s: &str) -> bool {
    s == "0"
        || (s.len() <= 129
            && s.starts_with(|c: char| ('1'..='9').contains(&c))
            && s.bytes().all(|b| b.is_ascii_digit()))
}

/// PutRecords limits, as Kinesis.
pub const MAX_PUT_RECORDS: usize = 500;
/// Total data of one PutRecords call.
pub const MAX_PUT_BYTES: usize = 5 << 20;
/// GetRecords limits.
pub const MAX_GET_RECORDS: usize = 10_000;
/// Most data one GetRecords call returns.
pub const MAX_GET_BYTES: usize = 10 << 20;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Runs one operation on its request (parsed once, by the protocol checks).
pub async fn dispatch(call: &Call<'_>, op: &str, req: &Value) -> Result<Value, ApiError> {
    if !is_operation(op) {
        return Err(ApiError::unknown_operation(&format!(
            "Kinesis_20131202.{op}"
        )));
    }
    if super::manage::OPERATIONS.contains(&op) {
        return super::manage::dispatch(call, op, req);
    }
    if super::account::OPERATIONS.contains(&op) {
        return super::account::dispatch(call, op, req);
    }
    match op {
        "CreateStream" => create_stream(call, req),
        "DeleteStream" => delete_stream(call, req),
        "ListStreams" => list_streams(call, req),
        "DescribeStream" => describe_stream(call, req),
        "DescribeStreamSummary" => describe_stream_summary(call, req),
        "ListShards" => super::reshard::list_shards(call, req),
        "SplitShard" => super::reshard::split_shard(call, req),
        "MergeShards" => super::reshard::merge_shards(call, req),
        "UpdateShardCount" => super::reshard::update_shard_count(call, req),
        "PutRecord" => put_record(call, req).await,
        "PutRecords" => put_records(call, req).await,
        "GetShardIterator" => get_shard_iterator(call, req),
        "GetRecords" => get_records(call, req).await,
        // Served as an event stream by the listener; here (fuzzing) only its checks.
        "SubscribeToShard" => super::subscribe::subscribe(call, req)
            .await
            .map(|_| json!({})),
        _ => Err(ApiError::unknown_operation(op)),
    }
}

/// The stream-name rules: AWS's, which are a shard id's (`[a-zA-Z0-9_.-]+`, 1 to 128
/// characters; every item listed, the pattern's first), and the one of `names` that AWS
/// lacks. Together they refuse every name `names::check` refuses.
pub(super) fn check_stream_name(v: &mut Violations, name: &str) {
    super::reshard::check_shard_member(v, Some(name), "streamName", false);
    // AWS's pattern admits them; here a stream name is a folder, and these two are not.
    if name == "." || name == ".." {
        v.add(name, "streamName", "Member must not be '.' or '..'");
    }
}

/// A `StreamARN` member's rules (1 to 2048 characters, AWS's pattern).
pub(super) fn check_stream_arn(v: &mut Violations, arn: &str) {
    super::manage::stream_arn_member(Some(arn), v);
}

/// A change the API may not make to a stream declared in the configuration: the
/// refusal, and `then`, what to do instead.
pub(super) fn defined_in_config(call: &Call<'_>, st: &Stream, then: &str) -> ApiError {
    ApiError::new(
        "ResourceInUseException",
        format!(
            "Stream {} under account {} is defined in the sluiced configuration; {then}.",
            st.name, call.state.account
        ),
    )
}

/// The stream a request names by `StreamName` or `StreamARN` (the name when both are
/// given), each member given validated into `v` (`streamName`, then `streamARN`). `None`
/// when it names none: AWS lists every member's violations first, and refuses a request
/// without a stream only once they all pass ([`require_stream`], after
/// `Violations::finish`).
pub(super) fn stream_name(
    name: Option<&str>,
    arn: Option<&str>,
    v: &mut Violations,
) -> Option<String> {
    if let Some(n) = name {
        check_stream_name(v, n);
    }
    if let Some(a) = arn {
        check_stream_arn(v, a);
    }
    match (name, arn) {
        (Some(n), _) => Some(n.to_string()),
        // What follows `:stream/` (a valid ARN has it right after its account). A name
        // sluice could not hold is looked up all the same, and not found, as AWS answers.
        (None, Some(a)) => a.split_once(":stream/").map(|(_, n)| n.to_string()),
        (None, None) => None,
    }
}

/// The stream [`stream_name`] found, or AWS's refusal of a request that names none.
pub(super) fn require_stream(name: Option<String>) -> Result<String, ApiError> {
    name.ok_or_else(|| {
        ApiError::invalid_argument("Either StreamName or StreamARN should be provided.")
    })
}

/// A stream the Kinesis API may see: internal streams (`__…`, the Direct PUT buffers of
/// Firehose pipelines) are reachable only through their own API.
pub(super) fn lookup(call: &Call<'_>, name: &str) -> Result<Arc<Stream>, ApiError> {
    call.state
        .streams
        .get(name)
        .filter(|_| !crate::spec::is_internal(name))
        .ok_or_else(|| ApiError::stream_not_found(name, &call.state.account))
}

fn named_stream(
    call: &Call<'_>,
    name: Option<&str>,
    arn: Option<&str>,
) -> Result<Arc<Stream>, ApiError> {
    let mut v = Violations::default();
    let name = stream_name(name, arn, &mut v);
    v.finish()?;
    lookup(call, &require_stream(name)?)
}

fn create_stream(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = CreateStreamInput::read_shape(req)?;
    let mut v = Violations::default();
    let name = r.stream_name.as_deref();
    // AWS lists `shardCount` before `streamName`.
    let shards = r.shard_count;
    if let Some(n) = shards.filter(|n| *n < 1) {
        v.add(
            &n.to_string(),
            "shardCount",
            "Member must have value greater than or equal to 1",
        );
    }
    match name {
        None => v.null("streamName"),
        Some(n) => check_stream_name(&mut v, n),
    }
    let on_demand =
        super::manage::stream_mode(r.stream_mode_details.as_ref(), &mut v, false).unwrap_or(false);
    let tags = r.tags.as_ref().map(|t| t.pairs());
    if tags.is_some() {
        super::manage::check_tags(&mut v, tags.as_deref(), "tags");
    }
    if let Some(m) = r.warm_throughput_mibps.filter(|m| *m < 0) {
        v.add(
            &m.to_string(),
            "warmThroughputMiBps",
            "Member must have value greater than or equal to 0",
        );
    }
    if let Some(k) = r.max_record_size_kib {
        super::account::check_max_record_kib(&mut v, k);
    }
    v.finish()?;
    if r.warm_throughput_mibps.is_some() {
        super::account::check_warm(call, on_demand, r.warm_throughput_mibps.unwrap_or(0))?;
    }
    // On-demand streams start with 4 shards, as Kinesis; a provisioned one needs a count
    // (sluice defaults to 4 there too, as before).
    let shards = shards.unwrap_or(4);
    if shards > i64::from(MAX_SHARDS) {
        return Err(ApiError::new(
            "LimitExceededException",
            format!("This request would exceed the shard limit for the account {}. Current limit on shards per stream is {MAX_SHARDS}.", call.state.account),
        ));
    }
    super::manage::within_account_shards(call, shards as u64)?;
    let name = name.unwrap_or_default();
    if crate::spec::is_internal(name) {
        return Err(ApiError::invalid_argument(format!(
            "Stream names starting with `__` are reserved: {name}"
        )));
    }
    let tags = tags.unwrap_or_default();
    if !tags.is_empty() {
        let texts: Vec<&str> = tags.iter().flat_map(|(k, val)| [*k, *val]).collect();
        super::manage::tag_semantics(call, &texts, "add", &format!("stream {name}"))?;
        if tags.len() > crate::stream::MAX_TAGS {
            return Err(ApiError::invalid_argument(format!(
                "Failed to add tags to stream {name} under account {} because a given stream cannot have more than 10 tags associated with it.",
                call.state.account
            )));
        }
    }
    // Made with its settings: on a cluster, every node serves it with them from the start.
    let mut settings = crate::stream::StreamSettings {
        on_demand,
        max_record_kib: r.max_record_size_kib.map(|k| k as u32),
        warm_throughput_mibps: r.warm_throughput_mibps.map(|m| m as u32),
        ..Default::default()
    };
    for (k, val) in &tags {
        settings.tags.insert((*k).to_string(), (*val).to_string());
    }
    match call.state.streams.create(name, shards as u32, settings) {
        Ok(_) => Ok(json!({})),
        Err(StreamError::Exists(_)) => Err(ApiError::new(
            "ResourceInUseException",
            format!(
                "Stream {name} under account {} already exists.",
                call.state.account
            ),
        )),
        Err(StreamError::LeftOnDisk(_)) => Err(ApiError::new(
            "ResourceInUseException",
            format!(
                "Stream {name} under account {} was removed from the sluiced configuration and its records are still in the data directory: declare it again, or remove its folder.",
                call.state.account
            ),
        )),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

fn delete_stream(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = DeleteStreamInput::read_shape(req)?;
    let st = named_stream(call, r.stream_name.as_deref(), r.stream_arn.as_deref())?;
    let with_consumers = r.enforce_consumer_deletion == Some(true);
    match call.state.streams.delete(&st.name, with_consumers) {
        Ok(()) => Ok(json!({})),
        Err(StreamError::HasConsumers(n, consumers)) => Err(ApiError::new(
            "ResourceInUseException",
            format!(
                "Stream {n} under account {} has {consumers} registered consumer(s): deregister them, or set EnforceConsumerDeletion to delete them with the stream.",
                call.state.account
            ),
        )),
        Err(StreamError::NotFound(n)) => Err(ApiError::stream_not_found(&n, &call.state.account)),
        Err(StreamError::FromConfig(n)) => Err(ApiError::new(
            "ResourceInUseException",
            format!("Stream {n} under account {} is defined in the sluiced configuration and cannot be deleted through the API.", call.state.account),
        )),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

fn mode(st: &Stream) -> Value {
    json!({ "StreamMode": st.with_settings(StreamSettings::mode) })
}

/// `EnhancedMonitoring`, `EncryptionType` and `KeyId` of a description.
fn describe_settings(st: &Stream, out: &mut Value) {
    let s = st.settings();
    out["EnhancedMonitoring"] = json!([{ "ShardLevelMetrics": s.shard_level_metrics }]);
    out["EncryptionType"] = json!(s.encryption_type());
    if let Some(e) = &s.encryption {
        out["KeyId"] = json!(e.key_id);
    }
}

fn list_streams(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = ListStreamsInput::read_shape(req)?;
    let limit = r.limit.unwrap_or(100);
    let mut v = Violations::default();
    v.range(limit, "limit", 10_000);
    // A stream name's rules.
    super::reshard::check_shard_member(
        &mut v,
        r.exclusive_start_stream_name.as_deref(),
        "exclusiveStartStreamName",
        false,
    );
    if let Some(t) = r.next_token.as_deref() {
        super::manage::check_len(&mut v, t, "nextToken", 1, 1_048_576);
    }
    v.finish()?;
    // A page token names the last stream listed (opaque: base64 of a small JSON document).
    let after = match r.next_token.as_deref() {
        None => None,
        Some(t) => Some(
            B64.decode(t)
                .ok()
                .and_then(|b| serde_json::from_slice::<StreamsToken>(&b).ok())
                .map(|t| t.after)
                .ok_or_else(|| ApiError::invalid_argument(format!("Invalid NextToken: {t}")))?,
        ),
    };
    let start = after
        .as_deref()
        .or(r.exclusive_start_stream_name.as_deref())
        .unwrap_or("");
    let all: Vec<Arc<Stream>> = call
        .state
        .streams
        .list()
        .into_iter()
        .filter(|s| s.name.as_str() > start && !crate::spec::is_internal(&s.name))
        .collect();
    let page: Vec<&Arc<Stream>> = all.iter().take(limit as usize).collect();
    let more = all.len() > page.len();
    let mut out = json!({
        "StreamNames": page.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "HasMoreStreams": more,
        "StreamSummaries": page.iter().map(|s| json!({
            "StreamName": s.name,
            "StreamARN": call.stream_arn(&s.name),
            "StreamStatus": s.status(),
            "StreamModeDetails": mode(s),
            "StreamCreationTimestamp": s.created_ms as f64 / 1000.0,
        })).collect::<Vec<_>>(),
    });
    if let (true, Some(last)) = (more, page.last()) {
        let t = serde_json::to_vec(&StreamsToken {
            after: last.name.clone(),
        })
        .unwrap_or_default();
        out["NextToken"] = json!(B64.encode(t));
    }
    Ok(out)
}

/// What a ListStreams page token carries.
#[derive(serde::Serialize, serde::Deserialize)]
struct StreamsToken {
    after: String,
}

/// A shard as DescribeStream and ListShards show it.
pub(super) fn shard_json(s: &Shard) -> Value {
    let mut range =
        json!({ "StartingSequenceNumber": crate::stream::shard_start_sequence(s.index) });
    if let Some(c) = s.closed() {
        range["EndingSequenceNumber"] = json!(crate::stream::shard_end_sequence(s.index, c.at_seq));
    }
    let mut out = json!({
        "ShardId": s.id,
        "HashKeyRange": { "StartingHashKey": s.start.to_string(), "EndingHashKey": s.end.to_string() },
        "SequenceNumberRange": range,
    });
    if let Some(p) = s.parent {
        out["ParentShardId"] = json!(shard_id(p));
    }
    if let Some(p) = s.adjacent_parent {
        out["AdjacentParentShardId"] = json!(shard_id(p));
    }
    out
}

fn describe_stream(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = DescribeStreamInput::read_shape(req)?;
    let mut v = Violations::default();
    // AWS's order: `limit`, `exclusiveStartShardId`, the stream.
    let limit = r.limit.unwrap_or(100);
    v.range(limit, "limit", 10_000);
    super::reshard::check_shard_member(
        &mut v,
        r.exclusive_start_shard_id.as_deref(),
        "exclusiveStartShardId",
        false,
    );
    let name = stream_name(r.stream_name.as_deref(), r.stream_arn.as_deref(), &mut v);
    v.finish()?;
    let st = lookup(call, &require_stream(name)?)?;
    let limit = limit as usize;
    let after = r.exclusive_start_shard_id.as_deref().unwrap_or("");
    let set = st.shards();
    let after: Vec<&Arc<Shard>> = set.all.iter().filter(|s| s.id.as_str() > after).collect();
    let page: Vec<Value> = after.iter().take(limit).map(|s| shard_json(s)).collect();
    let mut d = json!({
        "StreamName": st.name,
        "StreamARN": call.stream_arn(&st.name),
        "StreamStatus": st.status(),
        "StreamModeDetails": mode(&st),
        "Shards": page,
        "HasMoreShards": after.len() > limit,
        "RetentionPeriodHours": st.retention_hours(),
        "StreamCreationTimestamp": st.created_ms as f64 / 1000.0,
    });
    describe_settings(&st, &mut d);
    Ok(json!({ "StreamDescription": d }))
}

fn describe_stream_summary(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = StreamRef::read_shape(req)?;
    let st = named_stream(call, r.stream_name.as_deref(), r.stream_arn.as_deref())?;
    let mut d = json!({
        "StreamName": st.name,
        "StreamARN": call.stream_arn(&st.name),
        "StreamStatus": st.status(),
        "StreamModeDetails": mode(&st),
        "RetentionPeriodHours": st.retention_hours(),
        "StreamCreationTimestamp": st.created_ms as f64 / 1000.0,
        "OpenShardCount": st.shards().open().len(),
        "ConsumerCount": st.with_settings(|s| s.consumers.len()),
    });
    describe_settings(&st, &mut d);
    super::account::describe_summary_extras(&st, &mut d);
    Ok(json!({ "StreamDescriptionSummary": d }))
}

/// One validated record of a put.
struct PutEntry {
    key: String,
    data: Vec<u8>,
    hash: u128,
}

/// Validates one record's members; `prefix` is `` for PutRecord, `records.N.member.` for PutRecords.
fn check_record(
    rec: &mut PutRecordInput,
    prefix: &str,
    max_data: u64,
    v: &mut Violations,
) -> Result<Option<PutEntry>, ApiError> {
    let key = rec.partition_key.as_deref();
    let explicit = rec.explicit_hash_key.as_deref();
    let field = |f: &str| format!("{prefix}{f}");
    if let Some(o) = rec.sequence_number_for_ordering.as_deref() {
        let ok = o == "0"
            || (o.len() <= 129
                && o.starts_with(|c: char| ('1'..='9').contains(&c))
                && o.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            v.add(
                o,
                &field("sequenceNumberForOrdering"),
                "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,128})",
            );
        }
    }
    match key {
        None => v.null(&field("partitionKey")),
        Some("") => v.add(
            "",
            &field("partitionKey"),
            "Member must have length greater than or equal to 1",
        ),
        Some(k) if k.chars().count() > 256 => v.add(
            k,
            &field("partitionKey"),
            "Member must have length less than or equal to 256",
        ),
        _ => {}
    }
    let bytes = super::request::check_data(rec.data.take(), &field("data"), max_data, v);
    // The limit counts data and partition key together, as AWS counts them.
    if let (Some(d), Some(k)) = (bytes.as_ref(), key) {
        let size = d.len() as u64 + k.len() as u64;
        if d.len() as u64 <= max_data && size > max_data {
            return Err(ApiError::invalid_argument(format!(
                "Record size {size} bytes (data and partition key) exceeds the stream's maximum record size of {max_data} bytes."
            )));
        }
    }
    let mut hash = None;
    if let Some(h) = explicit {
        if h.is_empty()
            || h.len() > 39
            || !h.bytes().all(|c| c.is_ascii_digit())
            || (h.len() > 1 && h.starts_with('0'))
        {
            v.add(
                h,
                &field("explicitHashKey"),
                "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
            );
        } else {
            match h.parse::<u128>() {
                Ok(x) => hash = Some(x),
                Err(_) => {
                    return Err(ApiError::invalid_argument(format!(
                        "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was {h}"
                    )))
                }
            }
        }
    }
    Ok(match (key, bytes) {
        (Some(k), Some(data)) => Some(PutEntry {
            key: k.to_string(),
            hash: hash.unwrap_or_else(|| hash_key(k.as_bytes())),
            data,
        }),
        _ => None,
    })
}

/// A shard's index, the shard, and the request's entries routed to it (with their places
/// in the request).
type ShardGroup = (u32, Arc<crate::stream::Shard>, Vec<(usize, PutEntry)>);

/// Appends entries (grouped per shard, every shard's group written and then all synced
/// together on one blocking thread);
/// returns per entry, in request order, (shard index, shard-local seq) or, when the
/// shard's write limit refused it, `Err(shard index)`. Entries that reach a shard a
/// resharding closed meanwhile are routed again, to its children (at most a few rounds:
/// a resharding settles before the next one).
async fn append(
    st: Arc<Stream>,
    entries: Vec<PutEntry>,
    account: &str,
) -> Result<Vec<Result<(u32, u64), Refused>>, ApiError> {
    let now = now_ms();
    let n = entries.len();
    let mut out: Vec<Result<(u32, u64), Refused>> = vec![Err(Refused::Throttled(0)); n];
    // A shard's storage failed (a JetStream cluster electing a leader, say): its records
    // fail alone, as on Kinesis, so a retry does not write the others twice — unless
    // nothing was stored at all, which fails the call.
    let mut failed: Option<String> = None;
    let mut pending: Vec<(usize, PutEntry)> = entries.into_iter().enumerate().collect();
    let mut admitted = vec![false; n];
    let mut sealed = false;
    for _round in 0..8 {
        if pending.is_empty() {
            return Ok(out);
        }
        // A shard another node closed: its resharding is read before routing again.
        // (Still being resharded after a few seconds: those records fail, retryably.)
        if std::mem::take(&mut sealed) {
            let s = st.clone();
            let synced = tokio::task::spawn_blocking(move || s.sync_topology(true)).await;
            if !matches!(synced, Ok(Ok(()))) {
                break;
            }
        }
        let set = st.shards();
        let mut per_shard: std::collections::BTreeMap<u32, Vec<(usize, PutEntry)>> =
            Default::default();
        for (i, e) in pending.drain(..) {
            let s = set.route(e.hash).index;
            // The write limit is charged once per record, not again when it is rerouted.
            if admitted[i] || st.admit(s, e.data.len()) {
                admitted[i] = true;
                per_shard.entry(s).or_default().push((i, e));
            } else {
                out[i] = Err(Refused::Throttled(s));
            }
        }
        // Every shard's group on one blocking thread: all written, then all made durable
        // together (`stream::append_groups`), instead of a thread and a queued sync each.
        let groups: Vec<ShardGroup> = per_shard
            .into_iter()
            .filter_map(|(s, group)| set.get(s).cloned().map(|sh| (s, sh, group)))
            .collect();
        let done = tokio::task::spawn_blocking(move || {
            let entries: Vec<Vec<Entry<'_>>> = groups
                .iter()
                .map(|(_, _, group)| {
                    group
                        .iter()
                        .map(|(_, e)| Entry {
                            key: e.key.as_bytes(),
                            data: &e.data,
                            arrival_ms: now,
                        })
                        .collect()
                })
                .collect();
            let calls: Vec<(&crate::stream::Shard, &[Entry<'_>])> = groups
                .iter()
                .zip(&entries)
                .map(|((_, sh, _), e)| (&**sh, e.as_slice()))
                .collect();
            let results = crate::stream::append_groups(&calls);
            drop(calls);
            drop(entries);
            (groups, results)
        })
        .await
        .map_err(|e| ApiError::internal(format!("append task failed: {e}")))?;
        let (groups, results) = done;
        for ((s, _, group), r) in groups.into_iter().zip(results) {
            // What was stored is acknowledged, even when the rest of its group was not.
            for ((i, _), seq) in group.iter().zip(&r.seqs) {
                out[*i] = Ok((s, *seq));
            }
            let rest = group.into_iter().skip(r.seqs.len());
            match r.error {
                None => {}
                Some(StreamError::ShardClosed(_)) => {
                    sealed = true;
                    pending.extend(rest);
                }
                // Deleted while this call was on its way: as AWS answers for a missing stream.
                Some(StreamError::Storage(crate::stream::StorageError::Retired)) => {
                    return Err(ApiError::stream_not_found(&st.name, account))
                }
                Some(e) => {
                    tracing::error!(stream = %st.name, shard = s, error = %e, "append failed");
                    for (i, _) in rest {
                        out[i] = Err(Refused::Failed);
                    }
                    failed.get_or_insert(e.to_string());
                }
            }
        }
    }
    if !pending.is_empty() {
        for (i, _) in pending {
            out[i] = Err(Refused::Failed);
        }
        failed.get_or_insert(format!(
            "stream {} kept being resharded while records were appended; try again",
            st.name
        ));
    }
    if let Some(e) = failed {
        if !out.iter().any(Result::is_ok) {
            return Err(ApiError::internal(format!("append failed: {e}")));
        }
    }
    Ok(out)
}

/// Why one record of a put was not stored.
#[derive(Debug, Clone, Copy)]
enum Refused {
    /// Its shard's write limit (the shard's index).
    Throttled(u32),
    /// Its shard's storage failed (retryable).
    Failed,
}

fn throttled(st: &Stream, shard: u32, account: &str) -> String {
    format!(
        "Rate exceeded for shard {} in stream {} under account {account}.",
        shard_id(shard),
        st.name
    )
}

async fn put_record(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let mut r = PutRecordInput::read_shape(req)?;
    let mut v = Violations::default();
    // AWS lists the record's members first, then the stream's.
    let mut stream_v = Violations::default();
    let name = stream_name(
        r.stream_name.as_deref(),
        r.stream_arn.as_deref(),
        &mut stream_v,
    );
    let st_opt = name.as_deref().and_then(|n| lookup(call, n).ok());
    let max = st_opt
        .as_ref()
        .map(|s| s.max_record_bytes())
        .unwrap_or(1 << 20);
    let entry = check_record(&mut r, "", max, &mut v)?;
    v.append(stream_v);
    v.finish()?;
    let name = require_stream(name)?;
    let st = st_opt.ok_or_else(|| ApiError::stream_not_found(&name, &call.state.account))?;
    let Some(entry) = entry else {
        return Err(ApiError::serialization("missing record"));
    };
    let r = append(st.clone(), vec![entry], &call.state.account).await?;
    match r[0] {
        Ok((s, seq)) => Ok(
            json!({ "ShardId": shard_id(s), "SequenceNumber": sequence_string(s, seq), "EncryptionType": st.with_settings(StreamSettings::encryption_type) }),
        ),
        Err(Refused::Throttled(s)) => Err(ApiError::new(
            "ProvisionedThroughputExceededException",
            throttled(&st, s, &call.state.account),
        )),
        Err(Refused::Failed) => Err(ApiError::internal("append failed".to_string())),
    }
}

async fn put_records(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = PutRecordsInput::read_shape(req)?;
    let mut v = Violations::default();
    // AWS lists `records` and its entries first, then the stream name.
    let mut stream_v = Violations::default();
    let name = stream_name(
        r.stream_name.as_deref(),
        r.stream_arn.as_deref(),
        &mut stream_v,
    );
    super::request::check_records(
        r.records.as_deref(),
        MAX_PUT_RECORDS,
        "com.amazonaws.kinesis.v20131202.PutRecordsRequestEntry",
        &mut v,
    );
    let st_opt = name.as_deref().and_then(|n| lookup(call, n).ok());
    let max = st_opt
        .as_ref()
        .map(|s| s.max_record_bytes())
        .unwrap_or(1 << 20);
    let records = r.records.unwrap_or_default();
    let mut entries = Vec::with_capacity(records.len());
    for (i, mut rec) in records.into_iter().enumerate() {
        if let Some(e) = check_record(&mut rec, &format!("records.{}.member.", i + 1), max, &mut v)?
        {
            entries.push(e);
        }
    }
    v.append(stream_v);
    v.finish()?;
    let name = require_stream(name)?;
    let st = st_opt.ok_or_else(|| ApiError::stream_not_found(&name, &call.state.account))?;
    let total: usize = entries.iter().map(|e| e.data.len() + e.key.len()).sum();
    if total > MAX_PUT_BYTES {
        return Err(ApiError::invalid_argument(
            "Records size exceeds 5 MB limit",
        ));
    }
    let r = append(st.clone(), entries, &call.state.account).await?;
    let failed = r.iter().filter(|x| x.is_err()).count();
    Ok(json!({
        "FailedRecordCount": failed,
        "Records": r.iter().map(|x| match *x {
            Ok((s, seq)) => json!({ "ShardId": shard_id(s), "SequenceNumber": sequence_string(s, seq) }),
            Err(Refused::Throttled(s)) => json!({ "ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": throttled(&st, s, &call.state.account) }),
            // Kinesis's wording for a record its service failed to store.
            Err(Refused::Failed) => json!({ "ErrorCode": "InternalFailure", "ErrorMessage": "Internal service failure." }),
        }).collect::<Vec<_>>(),
        "EncryptionType": st.with_settings(StreamSettings::encryption_type),
    }))
}

fn get_shard_iterator(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = GetShardIteratorInput::read_shape(req)?;
    let mut v = Violations::default();
    // AWS's order: `shardId`, `shardIteratorType`, `startingSequenceNumber`, the stream.
    let shard = r.shard_id.as_deref();
    super::reshard::check_shard_member(&mut v, shard, "shardId", true);
    let typ = r.shard_iterator_type.as_deref();
    const TYPES: [&str; 5] = [
        "AT_SEQUENCE_NUMBER",
        "AFTER_SEQUENCE_NUMBER",
        "TRIM_HORIZON",
        "LATEST",
        "AT_TIMESTAMP",
    ];
    match typ {
        None => v.null("shardIteratorType"),
        Some(t) if !TYPES.contains(&t) => v.add(
            t,
            "shardIteratorType",
            "Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, LATEST, AT_TIMESTAMP, AT_SEQUENCE_NUMBER, TRIM_HORIZON]",
        ),
        _ => {}
    }
    if let Some(s) = r.starting_sequence_number.as_deref() {
        if !is_sequence_pattern(s) {
            v.add(
                s,
                "startingSequenceNumber",
                "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,128})",
            );
        }
    }
    let name = stream_name(r.stream_name.as_deref(), r.stream_arn.as_deref(), &mut v);
    v.finish()?;
    let name = require_stream(name)?;
    let account = &call.state.account;
    // AWS resolves the shard id before it looks the stream up: the number after the first
    // `-` (or the whole id), so `shardId-1`, `shard-0` and `7` all name a shard.
    let raw = shard.unwrap_or_default();
    let Some(index) = shard_index(raw) else {
        return Err(ApiError::new(
            "ResourceNotFoundException",
            format!("Could not find shard {raw} in stream {name} under account {account}."),
        ));
    };
    let no_shard = || {
        ApiError::new(
            "ResourceNotFoundException",
            format!(
                "Shard {} in stream {name} under account {account} does not exist",
                shard_id(index)
            ),
        )
    };
    let st = lookup(call, &name).map_err(|_| no_shard())?;
    let set = st.shards();
    let sh = set.get(index).ok_or_else(no_shard)?;
    let typ = typ.unwrap_or_default();
    let either = |what: &str| {
        ApiError::invalid_argument(format!(
            "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no StartingSequenceNumber. Request specified {typ} and {what} StartingSequenceNumber."
        ))
    };
    if matches!(typ, "TRIM_HORIZON" | "LATEST") && r.starting_sequence_number.is_some() {
        return Err(either("also a"));
    }
    let seq_arg = || -> Result<u64, ApiError> {
        let s = r
            .starting_sequence_number
            .as_deref()
            .ok_or_else(|| either("no"))?;
        match parse_sequence(s) {
            Some((i, seq)) if i == sh.index => Ok(seq),
            Some((i, _)) => Err(ApiError::invalid_argument(format!(
                "Invalid StartingSequenceNumber. It encodes {}, while it was used in a call to a shard with {}",
                shard_id(i),
                sh.id
            ))),
            None => Err(ApiError::invalid_argument(format!(
                "StartingSequenceNumber {s} used in GetShardIterator on shard {} in stream {name} under account {account} is invalid.",
                sh.id
            ))),
        }
    };
    let seq = match typ {
        "TRIM_HORIZON" => sh.log.first_seq(),
        // On a closed shard: its end, where GetRecords answers with the children.
        "LATEST" => sh.closed().map_or_else(|| sh.log.next_seq(), |c| c.at_seq),
        // A number is one above its record's shard-local position.
        "AT_SEQUENCE_NUMBER" => seq_arg()?.saturating_sub(1),
        "AFTER_SEQUENCE_NUMBER" => seq_arg()?,
        _ => {
            let Some(super::shapes::Timestamp(ts)) = r.timestamp else {
                return Err(ApiError::invalid_argument(
                    "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP. Current request has no timestamp parameter.",
                ));
            };
            // Seconds since the epoch; far outside what a date can be is not a timestamp.
            if !ts.is_finite() || ts.abs() > 1e13 {
                return Err(ApiError::serialization(format!(
                    "Timestamp {ts} is out of range"
                )));
            }
            let now = now_ms();
            if (ts * 1000.0) as i64 > now {
                return Err(ApiError::invalid_argument(format!(
                    "The timestampInMillis parameter cannot be greater than the currentTimestampInMillis. timestampInMillis: {}, currentTimestampInMillis: {now}",
                    (ts * 1000.0) as i64
                )));
            }
            sh.log
                .seek_timestamp((ts * 1000.0) as i64)
                .map_err(|e| ApiError::internal(e.to_string()))?
        }
    };
    let token = call.state.iterators.encode(&Position {
        stream: st.name.clone(),
        shard: sh.index,
        seq,
        issued_ms: now_ms(),
    });
    Ok(json!({ "ShardIterator": token }))
}

async fn get_records(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = GetRecordsInput::read_shape(req)?;
    let mut v = Violations::default();
    // AWS's order: `limit`, `shardIterator`, `streamARN` (checked, not used: the iterator
    // names the stream).
    let limit = r.limit.unwrap_or(MAX_GET_RECORDS as i64);
    v.range(limit, "limit", MAX_GET_RECORDS as i64);
    let token = r.shard_iterator.as_deref();
    match token {
        None => v.null("shardIterator"),
        Some("") => v.add(
            "",
            "shardIterator",
            "Member must have length greater than or equal to 1",
        ),
        Some(t) if t.len() > 512 => v.add(
            t,
            "shardIterator",
            "Member must have length less than or equal to 512",
        ),
        _ => {}
    }
    if let Some(a) = r.stream_arn.as_deref() {
        check_stream_arn(&mut v, a);
    }
    v.finish()?;
    let now = now_ms();
    let pos = match call.state.iterators.decode(token.unwrap_or_default(), now) {
        Ok(p) => p,
        Err(IteratorError::Invalid) => return Err(ApiError::invalid_argument("Invalid ShardIterator.")),
        Err(IteratorError::Expired { issued_ms }) => {
            return Err(ApiError::new(
                "ExpiredIteratorException",
                format!(
                    "Iterator expired. The iterator was created at time {issued_ms} while right now it is {now} which is further in the future than the tolerated delay of {} milliseconds.",
                    call.state.iterators.ttl_ms()
                ),
            ))
        }
    };
    let st = lookup(call, &pos.stream)?;
    let Some(sh) = st.shards().get(pos.shard).cloned() else {
        return Err(ApiError::invalid_argument("Invalid ShardIterator."));
    };
    // Read before the closed mark: a shard closed meanwhile still counts as open for
    // this answer, whose records then end before its end.
    let closed = sh.closed();
    let from = pos.seq;
    let reader = sh.clone();
    let recs =
        tokio::task::spawn_blocking(move || reader.read(from, limit as usize, MAX_GET_BYTES))
            .await
            .map_err(|e| ApiError::internal(format!("read task failed: {e}")))?
            .map_err(|e| ApiError::internal(e.to_string()))?;
    let next = recs
        .last()
        .map(|r| r.seq + 1)
        .unwrap_or_else(|| from.max(sh.log.first_seq()));
    // Behind while newer records exist (the numbering may skip: compare with the newest
    // record, not with the next number).
    let newest = sh.log.last_seq();
    let behind = match recs.last() {
        Some(r) if newest.is_some_and(|n| r.seq < n) => (now - r.arrival_ms).max(0),
        _ => 0,
    };
    // The end of a closed shard: no record at or after `next` (every record is below
    // the closing number, and none comes any more).
    let at_end = closed.is_some_and(|c| next >= c.at_seq || newest.is_none_or(|n| n < next));
    let consumer = "get-records";
    metrics::counter!("sluice_shard_outgoing_records_total", "stream" => st.name.clone(), "shard" => sh.id.clone(), "consumer" => consumer)
        .increment(recs.len() as u64);
    metrics::gauge!("sluice_shard_iterator_age_seconds", "stream" => st.name.clone(), "shard" => sh.id.clone(), "consumer" => consumer)
        .set(behind as f64 / 1000.0);
    let records: Vec<Value> = recs
        .iter()
        .map(|r| {
            json!({
                "SequenceNumber": sequence_string(sh.index, r.seq),
                "ApproximateArrivalTimestamp": r.arrival_ms as f64 / 1000.0,
                "Data": B64.encode(&r.data),
                "PartitionKey": String::from_utf8_lossy(&r.key),
            })
        })
        .collect();
    if at_end {
        // As Kinesis: no next iterator, and the shards to read next.
        return Ok(json!({
            "Records": records,
            "MillisBehindLatest": 0,
            "ChildShards": child_shards(&st, sh.index),
        }));
    }
    let next_token = call.state.iterators.encode(&Position {
        stream: st.name.clone(),
        shard: sh.index,
        seq: next,
        issued_ms: now,
    });
    Ok(json!({ "Records": records, "NextShardIterator": next_token, "MillisBehindLatest": behind }))
}

/// `ChildShards` of shard `index`: each child with its parents and range.
pub(super) fn child_shards(st: &Stream, index: u32) -> Value {
    let set = st.shards();
    Value::Array(
        set.children(index)
            .into_iter()
            .map(|c| {
                let parents: Vec<String> = c
                    .parent
                    .into_iter()
                    .chain(c.adjacent_parent)
                    .map(shard_id)
                    .collect();
                json!({
                    "ShardId": c.id,
                    "ParentShards": parents,
                    "HashKeyRange": { "StartingHashKey": c.start.to_string(), "EndingHashKey": c.end.to_string() },
                })
            })
            .collect(),
    )
}
