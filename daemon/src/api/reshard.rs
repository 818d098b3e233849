//! The shard operations: SplitShard, MergeShards, UpdateShardCount and ListShards (with
//! `ShardFilter`), validated in AWS's order with AWS's wording. The lineage itself is
//! `stream::Topology`'s; a resharding is durable when the call returns, and the stream
//! then reports `UPDATING` for a moment (during which another resharding is refused, as
//! on Kinesis). Unlike Kinesis, the new shards are in place at once rather than when the
//! status returns to `ACTIVE`.

use super::error::{ApiError, Violations};
use super::kinesis::{lookup, require_stream, shard_index, shard_json, stream_name};
use super::shapes::{
    ListShardsInput, MergeShardsInput, Shape, SplitShardInput, UpdateShardCountInput,
};
use super::Call;
use crate::record::now_ms;
use crate::spec::MAX_SHARDS;
use crate::stream::{shard_id, Stream, StreamError, StreamOrigin, TopologyError};
use base64::Engine as _;
use serde_json::{json, Value};
use std::sync::Arc;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const SHARD_ID_PATTERN: &str = "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+";

/// The shard-id member rules (`[a-zA-Z0-9_.-]+`, 1..128), pattern before length as AWS;
/// also a stream name's.
pub(super) fn check_shard_member(
    v: &mut Violations,
    value: Option<&str>,
    field: &str,
    required: bool,
) {
    match value {
        None if required => v.null(field),
        None => {}
        Some(s) => {
            if s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            {
                v.add(s, field, SHARD_ID_PATTERN);
            }
            if s.is_empty() {
                v.add(
                    s,
                    field,
                    "Member must have length greater than or equal to 1",
                );
            } else if s.len() > 128 {
                v.add(
                    s,
                    field,
                    "Member must have length less than or equal to 128",
                );
            }
        }
    }
}

/// A shard id parsed as AWS parses it, or AWS's answer naming the raw value.
fn parse_shard(raw: &str, stream: &str, account: &str) -> Result<u32, ApiError> {
    shard_index(raw).ok_or_else(|| {
        ApiError::new(
            "ResourceNotFoundException",
            format!("Could not find shard {raw} in stream {stream} under account {account}."),
        )
    })
}

fn no_shard(index: u32, stream: &str, account: &str) -> ApiError {
    ApiError::new(
        "ResourceNotFoundException",
        format!(
            "Could not find shard {} in stream {stream} under account {account}.",
            shard_id(index)
        ),
    )
}

/// The stream checks every resharding makes after the lookup, in AWS's order: capacity
/// mode, status; then sluice's own: a stream from the configuration is resharded by
/// editing its file.
fn reshardable(call: &Call<'_>, st: &Stream, what: &str) -> Result<(), ApiError> {
    let account = &call.state.account;
    if st.with_settings(|s| s.on_demand) {
        return Err(ApiError::new(
            "ValidationException",
            format!(
                "Request is invalid. Stream {} under account {account} is in On-Demand mode.",
                st.name
            ),
        ));
    }
    if st.status() != "ACTIVE" {
        return Err(not_active(st, account));
    }
    if st.origin == StreamOrigin::Config {
        return Err(super::kinesis::defined_in_config(
            call,
            st,
            &format!("{what} by changing `shards` in its file"),
        ));
    }
    Ok(())
}

pub(super) fn not_active(st: &Stream, account: &str) -> ApiError {
    ApiError::new(
        "ResourceInUseException",
        format!(
            "Stream {} under account {account} not ACTIVE, instead in state {}",
            st.name,
            st.status()
        ),
    )
}

fn already_resharded(index: u32, st: &Stream, account: &str) -> ApiError {
    ApiError::invalid_argument(format!(
        "Shard {} in stream {} under account {account} has already been merged or split, and thus is not eligible for merging or splitting.",
        shard_id(index),
        st.name
    ))
}

fn shard_limit(st: &Stream, call: &Call<'_>, more: usize) -> ApiError {
    ApiError::new(
        "LimitExceededException",
        format!(
            "This request would exceed the shard limit for the account {} in {}. Current shard count for the account: {}. Limit: {MAX_SHARDS}. Number of additional shards that would have resulted from this request: {more}. Refer to the AWS Service Limits page (http://docs.aws.amazon.com/general/latest/gr/aws_service_limits.html) for current limits and how to request higher limits.",
            call.state.account,
            call.region,
            st.shards().open().len()
        ),
    )
}

/// Runs a resharding, which waits for the appends in flight (their fsyncs) and writes
/// files, without stalling the runtime's other tasks (the API has two workers).
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The failures a resharding can meet after the checks passed.
fn reshard_error(e: StreamError, st: &Stream, call: &Call<'_>) -> ApiError {
    match e {
        StreamError::Updating(_) => not_active(st, &call.state.account),
        StreamError::Topology(TopologyError::TooManyShards) => ApiError::new(
            "LimitExceededException",
            format!(
                "Stream {} under account {} keeps {} shards (open and closed); closed shards leave when their records pass the retention period.",
                st.name,
                call.state.account,
                crate::stream::MAX_RETAINED_SHARDS
            ),
        ),
        StreamError::Topology(TopologyError::Closed(i)) => {
            already_resharded(i, st, &call.state.account)
        }
        e => ApiError::internal(e.to_string()),
    }
}

/// SplitShard.
pub fn split_shard(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = SplitShardInput::read_shape(req)?;
    let mut v = Violations::default();
    let key = r.new_starting_hash_key.as_deref();
    match key {
        None => v.null("newStartingHashKey"),
        Some(k) if !is_hash_key(k) => v.add(
            k,
            "newStartingHashKey",
            "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
        ),
        _ => {}
    }
    let name = stream_name(r.stream_name.as_deref(), r.stream_arn.as_deref(), &mut v);
    check_shard_member(&mut v, r.shard_to_split.as_deref(), "shardToSplit", true);
    v.finish()?;
    let name = require_stream(name)?;
    let account = &call.state.account;
    let index = parse_shard(r.shard_to_split.as_deref().unwrap_or(""), &name, account)?;
    let st = lookup(call, &name)?;
    reshardable(call, &st, "split its shards")?;
    let set = st.shards();
    let sh = set
        .get(index)
        .ok_or_else(|| no_shard(index, &name, account))?;
    if set.open().len() + 1 > MAX_SHARDS as usize {
        return Err(shard_limit(&st, call, 1));
    }
    super::manage::within_account_shards(call, 1)?;
    let key_text = key.unwrap_or_default();
    // AWS's range: greater than one plus the start, less than the end.
    let in_range = key_text
        .parse::<u128>()
        .ok()
        .filter(|k| Some(*k) > sh.start.checked_add(1) && *k < sh.end);
    let Some(k) = in_range else {
        return Err(ApiError::invalid_argument(format!(
            "NewStartingHashKey {key_text} used in SplitShard() on shard {} in stream {name} under account {account} is not both greater than one plus the shard's StartingHashKey {} and less than the shard's EndingHashKey {}.",
            sh.id, sh.start, sh.end
        )));
    };
    if sh.closed().is_some() {
        return Err(already_resharded(index, &st, account));
    }
    off_the_runtime(|| st.split_shard(index, k)).map_err(|e| reshard_error(e, &st, call))?;
    Ok(json!({}))
}

/// `0|([1-9]\d{0,38})`.
fn is_hash_key(s: &str) -> bool {
    s == "0"
        || (s.len() <= 39
            && s.starts_with(|c: char| ('1'..='9').contains(&c))
            && s.bytes().all(|b| b.is_ascii_digit()))
}

/// MergeShards.
pub fn merge_shards(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = MergeShardsInput::read_shape(req)?;
    let mut v = Violations::default();
    check_shard_member(&mut v, r.shard_to_merge.as_deref(), "shardToMerge", true);
    check_shard_member(
        &mut v,
        r.adjacent_shard_to_merge.as_deref(),
        "adjacentShardToMerge",
        true,
    );
    let name = stream_name(r.stream_name.as_deref(), r.stream_arn.as_deref(), &mut v);
    v.finish()?;
    let name = require_stream(name)?;
    let account = &call.state.account;
    let a = parse_shard(r.shard_to_merge.as_deref().unwrap_or(""), &name, account)?;
    let b = parse_shard(
        r.adjacent_shard_to_merge.as_deref().unwrap_or(""),
        &name,
        account,
    )?;
    let st = lookup(call, &name)?;
    reshardable(call, &st, "merge its shards")?;
    let set = st.shards();
    let sa = set.get(a).ok_or_else(|| no_shard(a, &name, account))?;
    let sb = set.get(b).ok_or_else(|| no_shard(b, &name, account))?;
    // Directional, as AWS: the adjacent shard's range starts where ShardToMerge's ends.
    if sa.end.checked_add(1) != Some(sb.start) {
        return Err(ApiError::invalid_argument(format!(
            "Shards {} and {} in stream {name} under account {account} are not an adjacent pair of shards eligible for merging",
            sa.id, sb.id
        )));
    }
    for s in [sa, sb] {
        if s.closed().is_some() {
            return Err(already_resharded(s.index, &st, account));
        }
    }
    off_the_runtime(|| st.merge_shards(a, b)).map_err(|e| reshard_error(e, &st, call))?;
    Ok(json!({}))
}

/// UpdateShardCount (UNIFORM_SCALING): the open shards become `TargetShardCount`
/// uniform shards, through splits and merges (so closed shards and short-lived
/// intermediate shards appear in ListShards, as on Kinesis).
pub fn update_shard_count(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = UpdateShardCountInput::read_shape(req)?;
    let mut v = Violations::default();
    let name = stream_name(r.stream_name.as_deref(), r.stream_arn.as_deref(), &mut v);
    match r.target_shard_count {
        None => v.null("targetShardCount"),
        Some(n) if n < 1 => v.add(
            &n.to_string(),
            "targetShardCount",
            "Member must have value greater than or equal to 1",
        ),
        _ => {}
    }
    match r.scaling_type.as_deref() {
        None => v.null("scalingType"),
        Some("UNIFORM_SCALING") => {}
        Some(t) => v.add(
            t,
            "scalingType",
            "Member must satisfy enum value set: [UNIFORM_SCALING]",
        ),
    }
    v.finish()?;
    let st = lookup(call, &require_stream(name)?)?;
    reshardable(call, &st, "change its shard count")?;
    let target = r.target_shard_count.unwrap_or(1);
    let current = st.shards().open().len() as i64;
    // Kinesis's documented limits, refused as Kinesis refuses them (LimitExceededException).
    if target > current * 2 {
        return Err(ApiError::new(
            "LimitExceededException",
            format!("UpdateShardCount cannot scale up over double your current open shard count. Current open shard count: {current} Target shard count: {target}"),
        ));
    }
    if target * 2 < current {
        return Err(ApiError::new(
            "LimitExceededException",
            format!("UpdateShardCount cannot scale down below half your current open shard count. Current open shard count: {current} Target shard count: {target}"),
        ));
    }
    if target > current {
        super::manage::within_account_shards(call, (target - current) as u64)?;
    }
    if target > i64::from(MAX_SHARDS) {
        return Err(shard_limit(&st, call, (target - current).max(0) as usize));
    }
    off_the_runtime(|| st.scale_to(target as u32, true))
        .map_err(|e| reshard_error(e, &st, call))?;
    Ok(json!({
        "StreamName": st.name,
        "StreamARN": call.stream_arn(&st.name),
        "CurrentShardCount": current,
        "TargetShardCount": target,
    }))
}

/// What a ListShards page token carries: the stream, the last shard listed, the filter.
#[derive(serde::Serialize, serde::Deserialize)]
struct PageToken {
    s: String,
    a: String,
    #[serde(default)]
    f: Option<Filter>,
}

/// A `ShardFilter`, resolved.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Filter {
    AfterShardId(String),
    AtTrimHorizon,
    FromTrimHorizon,
    AtLatest,
    AtTimestamp(i64),
    FromTimestamp(i64),
}

const FILTER_TYPES: [&str; 6] = [
    "AFTER_SHARD_ID",
    "AT_TRIM_HORIZON",
    "FROM_TRIM_HORIZON",
    "AT_LATEST",
    "AT_TIMESTAMP",
    "FROM_TIMESTAMP",
];

/// ListShards.
pub fn list_shards(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = ListShardsInput::read_shape(req)?;
    let mut v = Violations::default();
    // AWS's order: `maxResults`, `exclusiveStartShardId`, the stream, `nextToken`,
    // `shardFilter`.
    let max = r.max_results.unwrap_or(1000);
    v.range(max, "maxResults", 10_000);
    check_shard_member(
        &mut v,
        r.exclusive_start_shard_id.as_deref(),
        "exclusiveStartShardId",
        false,
    );
    let named = stream_name(r.stream_name.as_deref(), r.stream_arn.as_deref(), &mut v);
    if let Some(t) = r.next_token.as_deref() {
        if t.is_empty() {
            v.add(
                t,
                "nextToken",
                "Member must have length greater than or equal to 1",
            );
        } else if t.len() > 1_048_576 {
            v.add(
                t,
                "nextToken",
                "Member must have length less than or equal to 1048576",
            );
        }
    }
    if let Some(f) = &r.shard_filter {
        match f.kind.as_deref() {
            None => v.null("shardFilter.type"),
            Some(t) if !FILTER_TYPES.contains(&t) => v.add(
                t,
                "shardFilter.type",
                "Member must satisfy enum value set: [AFTER_SHARD_ID, AT_TRIM_HORIZON, FROM_TRIM_HORIZON, AT_LATEST, AT_TIMESTAMP, FROM_TIMESTAMP]",
            ),
            _ => {}
        }
        check_shard_member(&mut v, f.shard_id.as_deref(), "shardFilter.shardId", false);
    }
    v.finish()?;
    let (st, after, filter) = match r.next_token.as_deref() {
        Some(tok) => {
            if r.stream_name.is_some() || r.stream_arn.is_some() {
                return Err(ApiError::invalid_argument(
                    "NextToken and StreamName cannot be provided together.",
                ));
            }
            if r.exclusive_start_shard_id.is_some()
                || r.stream_creation_timestamp.is_some()
                || r.shard_filter.is_some()
            {
                return Err(ApiError::invalid_argument(
                    "Cannot define ExclusiveStartShardId, StreamCreationTimestamp or StreamName if NextToken is defined",
                ));
            }
            let t: PageToken = B64
                .decode(tok)
                .ok()
                .and_then(|raw| serde_json::from_slice(&raw).ok())
                .ok_or_else(|| ApiError::invalid_argument("Invalid NextToken."))?;
            (lookup(call, &t.s)?, t.a, t.f)
        }
        None => {
            if r.stream_name.is_none() && r.stream_arn.is_none() {
                return Err(ApiError::invalid_argument(
                    "Either NextToken or StreamName should be provided.",
                ));
            }
            let filter = match &r.shard_filter {
                None => None,
                Some(f) => Some(filter(f)?),
            };
            let st = lookup(call, &require_stream(named)?)?;
            (
                st,
                r.exclusive_start_shard_id.clone().unwrap_or_default(),
                filter,
            )
        }
    };
    let set = st.shards();
    let after_key = order_key(&after);
    let chosen: Vec<&Arc<crate::stream::Shard>> = set
        .all
        .iter()
        .filter(|s| after.is_empty() || s.index as u64 > after_key)
        .filter(|s| filter.as_ref().is_none_or(|f| keeps(f, &st, s)))
        .collect();
    // AWS returns at most 1000 shards a page, whatever MaxResults says.
    let page = (max as usize).min(1000);
    let shown: Vec<Value> = chosen.iter().take(page).map(|s| shard_json(s)).collect();
    let mut out = json!({ "Shards": shown });
    if chosen.len() > page {
        if let Some(last) = chosen.get(page - 1) {
            let t = PageToken {
                s: st.name.clone(),
                a: last.id.clone(),
                f: filter,
            };
            out["NextToken"] = json!(B64.encode(serde_json::to_vec(&t).unwrap_or_default()));
        }
    }
    Ok(out)
}

/// Where a shard id sorts: its index as AWS parses it (`shardId-7`, `7`), or before
/// every shard when it does not parse.
fn order_key(id: &str) -> u64 {
    shard_index(id).map_or(0, u64::from)
}

fn filter(f: &super::shapes::ShardFilter) -> Result<Filter, ApiError> {
    let ts = || {
        f.timestamp.as_ref().map(|t| (t.0 * 1000.0) as i64).ok_or_else(|| {
            ApiError::invalid_argument(
                "Timestamp must be supplied in a ShardFilter with a Type of FROM_TIMESTAMP or AT_TIMESTAMP",
            )
        })
    };
    Ok(match f.kind.as_deref().unwrap_or_default() {
        "AFTER_SHARD_ID" => Filter::AfterShardId(f.shard_id.clone().ok_or_else(|| {
            ApiError::invalid_argument(
                "ShardId must be supplied in a ShardFilter with a Type of AFTER_SHARD_ID",
            )
        })?),
        "AT_TRIM_HORIZON" => Filter::AtTrimHorizon,
        "AT_LATEST" => Filter::AtLatest,
        "AT_TIMESTAMP" => Filter::AtTimestamp(ts()?),
        "FROM_TIMESTAMP" => Filter::FromTimestamp(ts()?),
        _ => Filter::FromTrimHorizon,
    })
}

/// Whether `s` passes the filter, as AWS's ListShards documents each type.
fn keeps(f: &Filter, st: &Stream, s: &crate::stream::Shard) -> bool {
    // The trim horizon as a time: records older than this have left.
    let horizon = (now_ms() - st.retention_hours() as i64 * 3_600_000).max(st.created_ms);
    let open_at = |t: i64| s.created_ms <= t && s.closed().is_none_or(|c| c.ms >= t);
    match f {
        Filter::AfterShardId(id) => s.index as u64 > order_key(id),
        Filter::AtTrimHorizon => open_at(horizon),
        Filter::FromTrimHorizon => true,
        Filter::AtLatest => s.closed().is_none(),
        Filter::AtTimestamp(t) => open_at((*t).max(horizon)),
        Filter::FromTimestamp(t) => s.closed().is_none_or(|c| c.ms >= (*t).max(horizon)),
    }
}
