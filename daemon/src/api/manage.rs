//! The Kinesis operations that manage a stream rather than its records: tags, retention,
//! shard-level monitoring, encryption settings, capacity mode, limits, resource policies
//! and enhanced fan-out consumer registrations. Validated and worded as AWS does (member
//! order, `ValidationException` items, then the semantic checks); the settings persist in
//! the stream's `stream.json` (`stream::StreamSettings`).

use super::error::{ApiError, Violations};
use super::kinesis::{lookup, require_stream, stream_name};
use super::request::{show_list, show_map};
use super::shapes::{
    ConsumerInput, EncryptionInput, ListTagsInput, MonitoringInput, ResourceInput, RetentionInput,
    Shape, StreamModeDetails, TagKeysInput, TagsInput, UpdateStreamModeInput,
};
use super::Call;
use crate::stream::{
    Consumer, Encryption, Stream, StreamOrigin, StreamSettings, MAX_CONSUMERS, MAX_TAGS,
};
use serde_json::{json, Value};
use std::sync::Arc;

/// The operations of this module.
pub const OPERATIONS: &[&str] = &[
    "AddTagsToStream",
    "RemoveTagsFromStream",
    "ListTagsForStream",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
    "IncreaseStreamRetentionPeriod",
    "DecreaseStreamRetentionPeriod",
    "EnableEnhancedMonitoring",
    "DisableEnhancedMonitoring",
    "StartStreamEncryption",
    "StopStreamEncryption",
    "DescribeLimits",
    "UpdateStreamMode",
    "PutResourcePolicy",
    "GetResourcePolicy",
    "DeleteResourcePolicy",
    "RegisterStreamConsumer",
    "DescribeStreamConsumer",
    "ListStreamConsumers",
    "DeregisterStreamConsumer",
];

/// Runs one of [`OPERATIONS`].
pub fn dispatch(call: &Call<'_>, op: &str, req: &Value) -> Result<Value, ApiError> {
    match op {
        "AddTagsToStream" => add_tags(call, req),
        "RemoveTagsFromStream" => remove_tags(call, req),
        "ListTagsForStream" => list_tags(call, req),
        "TagResource" => tag_resource(call, req),
        "UntagResource" => untag_resource(call, req),
        "ListTagsForResource" => list_tags_for_resource(call, req),
        "IncreaseStreamRetentionPeriod" => retention(call, req, true),
        "DecreaseStreamRetentionPeriod" => retention(call, req, false),
        "EnableEnhancedMonitoring" => monitoring(call, req, true),
        "DisableEnhancedMonitoring" => monitoring(call, req, false),
        "StartStreamEncryption" => encryption(call, req, true),
        "StopStreamEncryption" => encryption(call, req, false),
        "DescribeLimits" => describe_limits(call),
        "UpdateStreamMode" => update_mode(call, req),
        "PutResourcePolicy" => put_policy(call, req),
        "GetResourcePolicy" => get_policy(call, req),
        "DeleteResourcePolicy" => delete_policy(call, req),
        "RegisterStreamConsumer" => register_consumer(call, req),
        "DescribeStreamConsumer" => describe_consumer(call, req),
        "ListStreamConsumers" => list_consumers(call, req),
        "DeregisterStreamConsumer" => deregister_consumer(call, req),
        _ => Err(ApiError::unknown_operation(op)),
    }
}

/// Shard-level metrics, in the order AWS lists them when `ALL` is enabled.
const METRICS: [&str; 7] = [
    "IncomingBytes",
    "OutgoingRecords",
    "IteratorAgeMilliseconds",
    "IncomingRecords",
    "ReadProvisionedThroughputExceeded",
    "WriteProvisionedThroughputExceeded",
    "OutgoingBytes",
];

/// Shards the API's streams may hold in all (AWS's default account limit).
const ACCOUNT_SHARD_LIMIT: u64 = 500;
/// On-demand streams per account (AWS's default).
const ON_DEMAND_STREAM_LIMIT: u64 = 50;

pub(super) const STREAM_ARN_PATTERN: &str = "arn:aws.*:kinesis:.*:\\d{12}:stream/\\S+";
const RESOURCE_ARN_PATTERN: &str = "arn:aws.*:kinesis:.*:\\d{12}:.*stream/\\S+";
const NAME_PATTERN: &str = "[a-zA-Z0-9_.-]+";
const CONSUMER_ARN_PATTERN: &str = "^(arn):aws.*:kinesis:.*:\\d{12}:.*stream\\/[a-zA-Z0-9_.-]+\\/consumer\\/[a-zA-Z0-9_.-]+:[0-9]+";

fn empty() -> Value {
    json!({})
}

fn save<E>(
    r: Result<Result<(), E>, crate::stream::StreamError>,
) -> Result<Result<(), E>, ApiError> {
    r.map_err(|e| ApiError::internal(e.to_string()))
}

/// Length checks of a string member, in AWS's order (pattern checked by the caller).
pub(super) fn check_len(v: &mut Violations, value: &str, field: &str, min: usize, max: usize) {
    let n = value.chars().count();
    if n < min {
        v.add(
            value,
            field,
            &format!("Member must have length greater than or equal to {min}"),
        );
    }
    if n > max {
        v.add(
            value,
            field,
            &format!("Member must have length less than or equal to {max}"),
        );
    }
}

fn pattern_ok(value: &str, pattern: &str) -> bool {
    match pattern {
        NAME_PATTERN => {
            !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        }
        // `arn:aws…:kinesis:<region>:<12 digits>:[…]stream/<non-space>`
        _ => {
            let parts: Vec<&str> = value.splitn(6, ':').collect();
            parts.len() == 6
                && parts[0] == "arn"
                && parts[1].starts_with("aws")
                && parts[2] == "kinesis"
                && parts[4].len() == 12
                && parts[4].bytes().all(|b| b.is_ascii_digit())
                && match pattern {
                    STREAM_ARN_PATTERN => parts[5].starts_with("stream/"),
                    _ => parts[5].contains("stream/"),
                }
                && !value.contains(char::is_whitespace)
                && !parts[5].ends_with("stream/")
        }
    }
}

/// `^(arn):aws.*:kinesis:.*:\d{12}:.*stream\/NAME\/consumer\/NAME:[0-9]+`: what
/// follows the account ends with `stream/<name>/consumer/<name>:<digits>` (neither name
/// holds a `/` or a `:`, so the last `stream/` and `/consumer/` are the ones).
fn consumer_arn_ok(value: &str) -> bool {
    let name_ok = |n: &str| pattern_ok(n, NAME_PATTERN);
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    if parts.len() != 6
        || parts[0] != "arn"
        || !parts[1].starts_with("aws")
        || parts[2] != "kinesis"
        || parts[4].len() != 12
        || !parts[4].bytes().all(|b| b.is_ascii_digit())
    {
        return false;
    }
    let Some((head, created)) = parts[5].rsplit_once(':') else {
        return false;
    };
    let Some((stream_part, consumer)) = head.rsplit_once("/consumer/") else {
        return false;
    };
    let Some((_, stream)) = stream_part.rsplit_once("stream/") else {
        return false;
    };
    !created.is_empty()
        && created.bytes().all(|b| b.is_ascii_digit())
        && name_ok(stream)
        && name_ok(consumer)
}

/// A `ConsumerARN` member's rules (AWS's pattern, 1 to 2048 characters).
pub(super) fn check_consumer_arn(v: &mut Violations, value: &str) {
    if !consumer_arn_ok(value) {
        v.add(
            value,
            "consumerARN",
            &format!("Member must satisfy regular expression pattern: {CONSUMER_ARN_PATTERN}"),
        );
    }
    check_len(v, value, "consumerARN", 1, 2048);
}

/// Validates a required string member: present, its pattern, its length bounds.
pub(super) fn required_str<'a>(
    s: Option<&'a str>,
    v: &mut Violations,
    field: &str,
    pattern: Option<&str>,
    (min, max): (usize, usize),
) -> Option<&'a str> {
    match s {
        None => v.null(field),
        Some(s) => {
            if let Some(p) = pattern.filter(|p| !pattern_ok(s, p)) {
                v.add(
                    s,
                    field,
                    &format!("Member must satisfy regular expression pattern: {p}"),
                );
            }
            check_len(v, s, field, min, max);
        }
    }
    s
}

/// What a `ResourceARN` names.
pub(super) enum Resource {
    Stream(String),
    Consumer { stream: String, name: String },
}

pub(super) fn resource(arn: &str) -> Option<Resource> {
    let (_, rest) = arn.split_once(":stream/")?;
    match rest.split_once("/consumer/") {
        None => Some(Resource::Stream(rest.to_string())),
        Some((stream, c)) => {
            let (name, _created) = c.rsplit_once(':')?;
            Some(Resource::Consumer {
                stream: stream.to_string(),
                name: name.to_string(),
            })
        }
    }
}

/// A `StreamARN` member the operation requires: 1 to 2048 characters, AWS's pattern.
pub(super) fn stream_arn_member<'a>(arn: Option<&'a str>, v: &mut Violations) -> Option<&'a str> {
    required_str(arn, v, "streamARN", Some(STREAM_ARN_PATTERN), (1, 2048))
}

/// The stream a valid `StreamARN` names, or AWS's not-found answer for that ARN.
pub(super) fn stream_by_arn(call: &Call<'_>, arn: &str) -> Result<Arc<Stream>, ApiError> {
    match resource(arn) {
        Some(Resource::Stream(s)) => lookup(call, &s),
        _ => Err(not_found_arn(call, arn)),
    }
}

pub(super) fn not_found_arn(call: &Call<'_>, arn: &str) -> ApiError {
    match resource(arn) {
        Some(Resource::Stream(s)) => ApiError::stream_not_found(&s, &call.state.account),
        Some(Resource::Consumer { name, .. }) => consumer_not_found(call, &name),
        None => ApiError::new(
            "ResourceNotFoundException",
            format!(
                "Resource {arn} under account {} not found.",
                call.state.account
            ),
        ),
    }
}

pub(super) fn consumer_not_found(call: &Call<'_>, name: &str) -> ApiError {
    ApiError::new(
        "ResourceNotFoundException",
        format!("Consumer {name}, account {} not found.", call.state.account),
    )
}

/// AWS's tag character rule: Unicode letters and digits, white space, `_ . / = + - % @`.
fn tag_chars_ok(s: &str) -> bool {
    s.chars().all(|c| {
        c.is_alphanumeric() || matches!(c, ' ' | '_' | '.' | '/' | '=' | '+' | '-' | '%' | '@')
    })
}

/// A list's or map's count outside `1..=max`, worded as AWS words it (value: the whole
/// list or map as AWS prints it).
fn count_bounds(v: &mut Violations, shown: &str, field: &str, n: usize, max: usize) {
    if n == 0 {
        v.add(
            shown,
            field,
            "Member must have length greater than or equal to 1",
        );
    }
    if n > max {
        v.add(
            shown,
            field,
            &format!("Member must have length less than or equal to {max}"),
        );
    }
}

/// Validates a `Tags` map member (before the stream name, as AWS orders them).
pub(super) fn check_tags(v: &mut Violations, tags: Option<&[(&str, &str)]>, field: &str) {
    let Some(tags) = tags else {
        v.null(field);
        return;
    };
    let shown = show_map(tags);
    count_bounds(v, &shown, field, tags.len(), 200);
    if tags
        .iter()
        .any(|(k, _)| k.is_empty() || k.chars().count() > 128)
    {
        v.add(&shown, field, "Map keys must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1]");
    }
    if tags.iter().any(|(_, val)| val.chars().count() > 256) {
        v.add(&shown, field, "Map value must satisfy constraint: [Member must have length less than or equal to 256, Member must have length greater than or equal to 0]");
    }
}

fn check_tag_keys(v: &mut Violations, keys: Option<&[&str]>, field: &str) {
    let Some(keys) = keys else {
        v.null(field);
        return;
    };
    let shown = show_list(keys);
    count_bounds(v, &shown, field, keys.len(), 50);
    if keys.iter().any(|k| k.is_empty() || k.chars().count() > 128) {
        v.add(&shown, field, "Member must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1]");
    }
}

/// The character checks AWS runs on tags once the stream exists: `verb` is `add` or
/// `remove`, `what` names the resource (`stream NAME`).
pub(super) fn tag_semantics(
    call: &Call<'_>,
    texts: &[&str],
    verb: &str,
    what: &str,
) -> Result<(), ApiError> {
    if texts.iter().any(|t| !tag_chars_ok(t)) {
        return Err(ApiError::invalid_argument(
            "Some tags contain invalid characters. Valid characters: Unicode letters, digits, white space, _ . / = + - % @.",
        ));
    }
    if texts.iter().any(|t| t.contains('%')) {
        return Err(ApiError::invalid_argument(format!(
            "Failed to {verb} tags {} {what} under account {} because some tags contained illegal characters. The allowed characters are Unicode letters, white-spaces, '_',',','/','=','+','-','@'.",
            if verb == "add" { "to" } else { "from" },
            call.state.account
        )));
    }
    Ok(())
}

fn merge_tags(
    call: &Call<'_>,
    current: &mut std::collections::BTreeMap<String, String>,
    tags: &[(&str, &str)],
    what: &str,
) -> Result<(), ApiError> {
    let mut next = current.clone();
    for (k, val) in tags {
        next.insert((*k).to_string(), (*val).to_string());
    }
    if next.len() > MAX_TAGS {
        // AWS's words (its message says 10 while it enforces 50).
        return Err(ApiError::invalid_argument(format!(
            "Failed to add tags to {what} under account {} because a given stream cannot have more than 10 tags associated with it.",
            call.state.account
        )));
    }
    *current = next;
    Ok(())
}

/// Key → value tags of a stream or a consumer.
type Tags = std::collections::BTreeMap<String, String>;

/// The tags a request changes: the stream's, or those of one of its consumers.
fn tags_of<'a>(
    call: &Call<'_>,
    s: &'a mut StreamSettings,
    consumer: Option<&str>,
) -> Result<&'a mut Tags, ApiError> {
    match consumer {
        None => Ok(&mut s.tags),
        Some(c) => match s.consumers.iter_mut().find(|x| x.name == c) {
            Some(x) => Ok(&mut x.tags),
            None => Err(consumer_not_found(call, c)),
        },
    }
}

/// AddTagsToStream and TagResource after their own checks: AWS's character and count
/// rules, then the merge, persisted.
fn add_tags_to(
    call: &Call<'_>,
    st: &Stream,
    consumer: Option<&str>,
    tags: &[(&str, &str)],
) -> Result<Value, ApiError> {
    let texts: Vec<&str> = tags.iter().flat_map(|(k, val)| [*k, *val]).collect();
    let what = match consumer {
        Some(c) => format!("consumer {c}"),
        None => format!("stream {}", st.name),
    };
    tag_semantics(call, &texts, "add", &what)?;
    save(st.update_settings(|s| {
        let current = tags_of(call, s, consumer)?;
        merge_tags(call, current, tags, &what)
    }))??;
    Ok(empty())
}

/// RemoveTagsFromStream and UntagResource after their own checks.
fn remove_tags_from(
    call: &Call<'_>,
    st: &Stream,
    consumer: Option<&str>,
    keys: &[&str],
) -> Result<Value, ApiError> {
    save(st.update_settings(|s| {
        let tags = tags_of(call, s, consumer)?;
        for k in keys {
            tags.remove(*k);
        }
        Ok::<(), ApiError>(())
    }))??;
    Ok(empty())
}

fn add_tags(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = TagsInput::read_shape(req)?;
    let mut v = Violations::default();
    let tags = r.tags.as_ref().map(|t| t.pairs());
    check_tags(&mut v, tags.as_deref(), "tags");
    let name = stream_name(r.stream_name.as_deref(), r.stream_arn.as_deref(), &mut v);
    v.finish()?;
    let st = lookup(call, &require_stream(name)?)?;
    add_tags_to(call, &st, None, &tags.unwrap_or_default())
}

fn remove_tags(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = TagKeysInput::read_shape(req)?;
    let mut v = Violations::default();
    let keys = r
        .tag_keys
        .as_ref()
        .map(|k| k.iter().map(String::as_str).collect::<Vec<_>>());
    check_tag_keys(&mut v, keys.as_deref(), "tagKeys");
    let name = stream_name(r.stream_name.as_deref(), r.stream_arn.as_deref(), &mut v);
    v.finish()?;
    let st = lookup(call, &require_stream(name)?)?;
    let keys = keys.unwrap_or_default();
    tag_semantics(call, &keys, "remove", &format!("stream {}", st.name))?;
    remove_tags_from(call, &st, None, &keys)
}

fn list_tags(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = ListTagsInput::read_shape(req)?;
    let mut v = Violations::default();
    let limit = r.limit;
    if let Some(l) = limit {
        if l < 1 {
            v.add(
                &l.to_string(),
                "limit",
                "Member must have value greater than or equal to 1",
            );
        }
        if l > 50 {
            v.add(
                &l.to_string(),
                "limit",
                "Member must have value less than or equal to 50",
            );
        }
    }
    let start = r.exclusive_start_tag_key.as_deref();
    if let Some(s) = start {
        check_len(&mut v, s, "exclusiveStartTagKey", 1, 128);
    }
    let name = stream_name(r.stream_name.as_deref(), r.stream_arn.as_deref(), &mut v);
    v.finish()?;
    let st = lookup(call, &require_stream(name)?)?;
    let tags = st.settings().tags;
    let after: Vec<(&String, &String)> = tags
        .iter()
        .filter(|(k, _)| start.is_none_or(|s| k.as_str() > s))
        .collect();
    let limit = limit.unwrap_or(50) as usize;
    Ok(json!({
        "Tags": after.iter().take(limit).map(|(k, val)| json!({"Key": k, "Value": val})).collect::<Vec<_>>(),
        "HasMoreTags": after.len() > limit,
    }))
}

/// Validates `ResourceARN` (after the members AWS lists before it).
fn resource_arn<'a>(arn: Option<&'a str>, v: &mut Violations) -> Option<&'a str> {
    required_str(arn, v, "resourceARN", Some(RESOURCE_ARN_PATTERN), (1, 2048))
}

/// The stream a resource ARN names (for a consumer: its stream), and the consumer name.
fn resource_stream(call: &Call<'_>, arn: &str) -> Result<(Arc<Stream>, Option<String>), ApiError> {
    match resource(arn) {
        Some(Resource::Stream(s)) => Ok((lookup(call, &s)?, None)),
        Some(Resource::Consumer { stream, name }) => {
            let st = lookup(call, &stream).map_err(|_| consumer_not_found(call, &name))?;
            if !st.settings().consumers.iter().any(|c| c.arn == arn) {
                return Err(consumer_not_found(call, &name));
            }
            Ok((st, Some(name)))
        }
        None => Err(not_found_arn(call, arn)),
    }
}

fn tag_resource(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = TagsInput::read_shape(req)?;
    let mut v = Violations::default();
    let tags = r.tags.as_ref().map(|t| t.pairs());
    check_tags(&mut v, tags.as_deref(), "tags");
    let arn = resource_arn(r.resource_arn.as_deref(), &mut v);
    v.finish()?;
    let arn = arn.unwrap_or_default();
    let (st, consumer) = resource_stream(call, arn)?;
    add_tags_to(call, &st, consumer.as_deref(), &tags.unwrap_or_default())
}

fn untag_resource(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = TagKeysInput::read_shape(req)?;
    let mut v = Violations::default();
    let keys = r
        .tag_keys
        .as_ref()
        .map(|k| k.iter().map(String::as_str).collect::<Vec<_>>());
    check_tag_keys(&mut v, keys.as_deref(), "tagKeys");
    let arn = resource_arn(r.resource_arn.as_deref(), &mut v);
    v.finish()?;
    let (st, consumer) = resource_stream(call, arn.unwrap_or_default())?;
    let keys = keys.unwrap_or_default();
    tag_semantics(call, &keys, "remove", &format!("resource {}", st.name))?;
    remove_tags_from(call, &st, consumer.as_deref(), &keys)
}

fn list_tags_for_resource(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = ResourceInput::read_shape(req)?;
    let mut v = Violations::default();
    let arn = resource_arn(r.resource_arn.as_deref(), &mut v);
    v.finish()?;
    let (st, consumer) = resource_stream(call, arn.unwrap_or_default())?;
    let settings = st.settings();
    let tags = match &consumer {
        None => settings.tags,
        Some(c) => settings
            .consumers
            .into_iter()
            .find(|x| &x.name == c)
            .map(|x| x.tags)
            .unwrap_or_default(),
    };
    Ok(json!({
        "Tags": tags.iter().map(|(k, val)| json!({"Key": k, "Value": val})).collect::<Vec<_>>(),
    }))
}

fn retention(call: &Call<'_>, req: &Value, increase: bool) -> Result<Value, ApiError> {
    let r = RetentionInput::read_shape(req)?;
    let mut v = Violations::default();
    let hours = r.retention_period_hours;
    if hours.is_none() {
        v.null("retentionPeriodHours");
    }
    let name = stream_name(r.stream_name.as_deref(), r.stream_arn.as_deref(), &mut v);
    v.finish()?;
    let st = lookup(call, &require_stream(name)?)?;
    active(call, &st)?;
    let hours = hours.unwrap_or_default();
    if hours < 24 {
        return Err(ApiError::invalid_argument(format!(
            "Minimum allowed retention period is 24 hours. Requested retention period ({hours} hours) is too short."
        )));
    }
    if hours > 8760 {
        return Err(ApiError::invalid_argument(format!(
            "Maximum allowed retention period is 8760 hours. Requested retention period ({hours} hours) is too long."
        )));
    }
    // Checked against the current period where it is changed (on a cluster, the
    // cluster's: another node may have changed it a moment ago).
    st.update_retention(|current| {
        let current = current as i64;
        if increase && hours < current {
            return Err(ApiError::invalid_argument(format!(
                "Requested retention period ({hours} hours) for stream {} can not be shorter than existing retention period ({current} hours). Use DecreaseRetentionPeriod API.",
                st.name
            )));
        }
        if !increase && hours > current {
            return Err(ApiError::invalid_argument(format!(
                "Requested retention period ({hours} hours) for stream {} can not be longer than existing retention period ({current} hours). Use IncreaseRetentionPeriod API.",
                st.name
            )));
        }
        if st.origin == StreamOrigin::Config && hours != current {
            return Err(super::kinesis::defined_in_config(
                call,
                &st,
                "change `retention` in its file",
            ));
        }
        Ok(hours as u64)
    })
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(empty())
}

fn monitoring(call: &Call<'_>, req: &Value, enable: bool) -> Result<Value, ApiError> {
    let r = MonitoringInput::read_shape(req)?;
    let mut v = Violations::default();
    let metrics = r
        .shard_level_metrics
        .as_ref()
        .map(|k| k.iter().map(String::as_str).collect::<Vec<_>>());
    match &metrics {
        None => v.null("shardLevelMetrics"),
        Some(m) => {
            let shown = show_list(m);
            count_bounds(&mut v, &shown, "shardLevelMetrics", m.len(), 7);
            if m.iter().any(|x| *x != "ALL" && !METRICS.contains(x)) {
                v.add(&shown, "shardLevelMetrics", "Member must satisfy constraint: [Member must satisfy enum value set: [IncomingBytes, OutgoingRecords, IteratorAgeMilliseconds, IncomingRecords, ReadProvisionedThroughputExceeded, WriteProvisionedThroughputExceeded, ALL, OutgoingBytes]]");
            }
        }
    }
    let name = stream_name(r.stream_name.as_deref(), r.stream_arn.as_deref(), &mut v);
    v.finish()?;
    let st = lookup(call, &require_stream(name)?)?;
    let asked: Vec<&str> = match metrics {
        Some(m) if m.contains(&"ALL") => METRICS.to_vec(),
        Some(m) => m,
        None => Vec::new(),
    };
    let before = st.settings().shard_level_metrics;
    let mut after = before.clone();
    save(st.update_settings(|s| {
        for m in &asked {
            if enable {
                s.shard_level_metrics.insert((*m).to_string());
            } else {
                s.shard_level_metrics.remove(*m);
            }
        }
        after = s.shard_level_metrics.clone();
        Ok::<(), ApiError>(())
    }))??;
    Ok(json!({
        "StreamName": st.name,
        "StreamARN": call.stream_arn(&st.name),
        "CurrentShardLevelMetrics": before,
        "DesiredShardLevelMetrics": after,
    }))
}

fn encryption(call: &Call<'_>, req: &Value, start: bool) -> Result<Value, ApiError> {
    let r = EncryptionInput::read_shape(req)?;
    let mut v = Violations::default();
    let kind = r.encryption_type.as_deref();
    match kind {
        None => v.null("encryptionType"),
        Some(k) if k != "NONE" && k != "KMS" => v.add(
            k,
            "encryptionType",
            "Member must satisfy enum value set: [KMS, NONE]",
        ),
        Some(_) => {}
    }
    let key = required_str(r.key_id.as_deref(), &mut v, "keyId", None, (1, 2048));
    let name = stream_name(r.stream_name.as_deref(), r.stream_arn.as_deref(), &mut v);
    v.finish()?;
    let st = lookup(call, &require_stream(name)?)?;
    active(call, &st)?;
    if start && kind == Some("NONE") {
        return Err(ApiError::invalid_argument(
            "Encryption type NONE is not valid for StartStreamEncryption; use KMS.",
        ));
    }
    let key = key.unwrap_or_default().to_string();
    save(st.update_settings(|s| {
        s.encryption = start.then(|| Encryption {
            kind: "KMS".to_string(),
            key_id: key.clone(),
        });
        Ok::<(), ApiError>(())
    }))??;
    Ok(empty())
}

/// Open shards of the streams the API shows: (all, those of config streams).
fn open_shards(call: &Call<'_>) -> (u64, u64) {
    let mut all = 0;
    let mut config = 0;
    for s in call.state.streams.list() {
        if crate::spec::is_internal(&s.name) {
            continue;
        }
        let n = s.shards().open().len() as u64;
        all += n;
        if s.origin == StreamOrigin::Config {
            config += n;
        }
    }
    (all, config)
}

/// The account's shard limit, as DescribeLimits reports it: AWS's default of 500 for the
/// API's streams, on top of what the configuration declares (config streams are the
/// operator's and never use up the API's allowance).
fn shard_limit(config_shards: u64) -> u64 {
    ACCOUNT_SHARD_LIMIT + config_shards
}

/// Refuses a request that would take the account's open shards past the limit
/// DescribeLimits reports, as Kinesis does (LimitExceededException).
pub(super) fn within_account_shards(call: &Call<'_>, more: u64) -> Result<(), ApiError> {
    let (now, config) = open_shards(call);
    let limit = shard_limit(config);
    if now + more <= limit {
        return Ok(());
    }
    Err(ApiError::new(
        "LimitExceededException",
        format!(
            "This request would exceed the shard limit for the account {} in {}. Current shard count for the account: {now}. Limit: {limit}. Number of additional shards that would have resulted from this request: {more}. Refer to the AWS Service Limits page (http://docs.aws.amazon.com/general/latest/gr/aws_service_limits.html) for current limits and how to request higher limits.",
            call.state.account, call.region
        ),
    ))
}

/// Stream changes wait while a resharding settles (status UPDATING), as on Kinesis.
fn active(call: &Call<'_>, st: &Stream) -> Result<(), ApiError> {
    if st.status() == "ACTIVE" {
        Ok(())
    } else {
        Err(super::reshard::not_active(st, &call.state.account))
    }
}

fn describe_limits(call: &Call<'_>) -> Result<Value, ApiError> {
    let streams: Vec<Arc<Stream>> = call
        .state
        .streams
        .list()
        .into_iter()
        .filter(|s| !crate::spec::is_internal(&s.name))
        .collect();
    let (open, config) = open_shards(call);
    Ok(json!({
        "ShardLimit": shard_limit(config),
        "OpenShardCount": open,
        "OnDemandStreamCount": streams.iter().filter(|s| s.settings().on_demand).count(),
        "OnDemandStreamCountLimit": ON_DEMAND_STREAM_LIMIT,
    }))
}

/// `StreamModeDetails.StreamMode`, validated (`ON_DEMAND` is `Some(true)`).
pub fn stream_mode(
    details: Option<&StreamModeDetails>,
    v: &mut Violations,
    required: bool,
) -> Option<bool> {
    let Some(details) = details else {
        if required {
            v.null("streamModeDetails");
        }
        return None;
    };
    match details.stream_mode.as_deref() {
        None => {
            v.null("streamModeDetails.streamMode");
            None
        }
        Some("ON_DEMAND") => Some(true),
        Some("PROVISIONED") => Some(false),
        Some(other) => {
            v.add(
                other,
                "streamModeDetails.streamMode",
                "Member must satisfy enum value set: [PROVISIONED, ON_DEMAND]",
            );
            None
        }
    }
}

fn update_mode(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = UpdateStreamModeInput::read_shape(req)?;
    let mut v = Violations::default();
    let arn = stream_arn_member(r.stream_arn.as_deref(), &mut v);
    let on_demand = stream_mode(r.stream_mode_details.as_ref(), &mut v, true);
    let warm = r.warm_throughput_mibps;
    if let Some(m) = warm.filter(|m| *m < 0) {
        v.add(
            &m.to_string(),
            "warmThroughputMiBps",
            "Member must have value greater than or equal to 0",
        );
    }
    v.finish()?;
    let arn = arn.unwrap_or_default();
    let st = stream_by_arn(call, arn)?;
    active(call, &st)?;
    let on_demand = on_demand.unwrap_or_default();
    // Warm throughput comes with the mode, under UpdateStreamWarmThroughput's rules.
    if let Some(m) = warm {
        super::account::check_warm(call, on_demand, m)?;
    }
    let now = crate::record::now_ms();
    save(st.update_settings(|s| {
        if s.on_demand != on_demand {
            // Two switches per stream in 24 hours, as Kinesis.
            s.mode_switches.retain(|t| now - t < 86_400_000);
            if s.mode_switches.len() >= 2 {
                return Err(ApiError::new(
                    "LimitExceededException",
                    format!(
                        "Stream {} under account {} has switched its capacity mode twice in the last 24 hours; it can switch again 24 hours after the first of them.",
                        st.name, call.state.account
                    ),
                ));
            }
            s.mode_switches.push(now);
        }
        s.on_demand = on_demand;
        if let Some(m) = warm {
            s.warm_throughput_mibps = Some(m as u32);
        }
        Ok::<(), ApiError>(())
    }))??;
    Ok(empty())
}

fn put_policy(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = ResourceInput::read_shape(req)?;
    let mut v = Violations::default();
    let arn = resource_arn(r.resource_arn.as_deref(), &mut v);
    let policy = r.policy.as_deref();
    if policy.is_none() {
        v.null("policy");
    }
    v.finish()?;
    let (st, consumer) = resource_stream(call, arn.unwrap_or_default())?;
    let policy = policy.unwrap_or_default();
    if !serde_json::from_str::<Value>(policy).is_ok_and(|p| p.is_object()) {
        return Err(ApiError::invalid_argument(
            "Policy is not a valid JSON policy document.",
        ));
    }
    save(st.update_settings(|s| {
        match &consumer {
            None => s.policy = Some(policy.to_string()),
            Some(c) => {
                if let Some(x) = s.consumers.iter_mut().find(|x| &x.name == c) {
                    x.policy = Some(policy.to_string());
                }
            }
        }
        Ok::<(), ApiError>(())
    }))??;
    Ok(empty())
}

fn policy_of(s: &StreamSettings, consumer: &Option<String>) -> Option<String> {
    match consumer {
        None => s.policy.clone(),
        Some(c) => s
            .consumers
            .iter()
            .find(|x| &x.name == c)
            .and_then(|x| x.policy.clone()),
    }
}

fn get_policy(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = ResourceInput::read_shape(req)?;
    let mut v = Violations::default();
    let arn = resource_arn(r.resource_arn.as_deref(), &mut v);
    v.finish()?;
    let (st, consumer) = resource_stream(call, arn.unwrap_or_default())?;
    // No policy is `"{}"`, not an error, as AWS answers.
    Ok(
        json!({ "Policy": policy_of(&st.settings(), &consumer).unwrap_or_else(|| "{}".to_string()) }),
    )
}

fn delete_policy(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = ResourceInput::read_shape(req)?;
    let mut v = Violations::default();
    let arn = resource_arn(r.resource_arn.as_deref(), &mut v);
    v.finish()?;
    let arn = arn.unwrap_or_default();
    let (st, consumer) = resource_stream(call, arn)?;
    if policy_of(&st.settings(), &consumer).is_none() {
        return Err(ApiError::new(
            "ResourceNotFoundException",
            format!("No resource policy found for resource ARN {arn}."),
        ));
    }
    save(st.update_settings(|s| {
        match &consumer {
            None => s.policy = None,
            Some(c) => {
                if let Some(x) = s.consumers.iter_mut().find(|x| &x.name == c) {
                    x.policy = None;
                }
            }
        }
        Ok::<(), ApiError>(())
    }))??;
    Ok(empty())
}

fn consumer_json(c: &Consumer, status: &str) -> Value {
    json!({
        "ConsumerName": c.name,
        "ConsumerARN": c.arn,
        "ConsumerStatus": status,
        "ConsumerCreationTimestamp": c.created_ms as f64 / 1000.0,
    })
}

fn register_consumer(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = ConsumerInput::read_shape(req)?;
    let mut v = Violations::default();
    let arn = stream_arn_member(r.stream_arn.as_deref(), &mut v);
    let name = required_str(
        r.consumer_name.as_deref(),
        &mut v,
        "consumerName",
        Some(NAME_PATTERN),
        (1, 128),
    );
    let tags = r.tags.as_ref().map(|t| t.pairs());
    if tags.is_some() {
        check_tags(&mut v, tags.as_deref(), "tags");
    }
    v.finish()?;
    let (arn, name) = (arn.unwrap_or_default(), name.unwrap_or_default());
    let st = stream_by_arn(call, arn)?;
    let now = crate::record::now_ms();
    let consumer = Consumer {
        name: name.to_string(),
        arn: format!(
            "{}/consumer/{name}:{}",
            call.stream_arn(&st.name),
            now / 1000
        ),
        created_ms: now,
        tags: tags
            .unwrap_or_default()
            .into_iter()
            .map(|(k, val)| (k.to_string(), val.to_string()))
            .collect(),
        policy: None,
    };
    save(st.update_settings(|s| {
        if s.consumers.iter().any(|c| c.name == name) {
            return Err(ApiError::new(
                "ResourceInUseException",
                format!(
                    "Consumer {name} under stream {} already exists for account {}.",
                    st.name, call.state.account
                ),
            ));
        }
        if s.consumers.len() >= MAX_CONSUMERS {
            return Err(ApiError::new(
                "LimitExceededException",
                format!(
                    "Stream {} under account {} already has {MAX_CONSUMERS} registered consumers.",
                    st.name, call.state.account
                ),
            ));
        }
        s.consumers.push(consumer.clone());
        Ok(())
    }))??;
    // Registration is immediate here; AWS answers CREATING and turns ACTIVE within
    // seconds, which is what DescribeStreamConsumer shows from now on.
    Ok(json!({ "Consumer": consumer_json(&consumer, "CREATING") }))
}

/// The consumer a Describe/Deregister request names: `ConsumerARN`, or `StreamARN` +
/// `ConsumerName`.
fn named_consumer(call: &Call<'_>, req: &Value) -> Result<(Arc<Stream>, Consumer), ApiError> {
    let r = ConsumerInput::read_shape(req)?;
    let mut v = Violations::default();
    let stream_arn = r.stream_arn.as_deref();
    if let Some(a) = stream_arn {
        if !pattern_ok(a, STREAM_ARN_PATTERN) {
            v.add(
                a,
                "streamARN",
                &format!("Member must satisfy regular expression pattern: {STREAM_ARN_PATTERN}"),
            );
        }
    }
    let name = r.consumer_name.as_deref();
    if let Some(n) = name {
        if !pattern_ok(n, NAME_PATTERN) {
            v.add(
                n,
                "consumerName",
                &format!("Member must satisfy regular expression pattern: {NAME_PATTERN}"),
            );
        }
        check_len(&mut v, n, "consumerName", 1, 128);
    }
    let consumer_arn = r.consumer_arn.as_deref();
    if let Some(a) = consumer_arn {
        check_consumer_arn(&mut v, a);
    }
    v.finish()?;
    let (stream, cname) = match (consumer_arn, stream_arn, name) {
        (Some(arn), _, _) => match resource(arn) {
            Some(Resource::Consumer { stream, name }) => (stream, name),
            _ => return Err(consumer_not_found(call, arn)),
        },
        (None, Some(sa), Some(n)) => match resource(sa) {
            Some(Resource::Stream(s)) => (s, n.to_string()),
            _ => return Err(not_found_arn(call, sa)),
        },
        _ => {
            return Err(ApiError::invalid_argument(
                "ConsumerARN or both ConsumerName and StreamARN are required for this request.",
            ))
        }
    };
    let st = lookup(call, &stream)?;
    let found = st
        .settings()
        .consumers
        .into_iter()
        .find(|c| c.name == cname && consumer_arn.is_none_or(|a| a == c.arn));
    match found {
        Some(c) => Ok((st, c)),
        None => Err(consumer_not_found(call, consumer_arn.unwrap_or(&cname))),
    }
}

fn describe_consumer(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let (st, c) = named_consumer(call, req)?;
    let mut d = consumer_json(&c, "ACTIVE");
    d["StreamARN"] = json!(call.stream_arn(&st.name));
    Ok(json!({ "ConsumerDescription": d }))
}

fn deregister_consumer(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let (st, c) = named_consumer(call, req)?;
    save(st.update_settings(|s| {
        s.consumers.retain(|x| x.name != c.name);
        Ok::<(), ApiError>(())
    }))??;
    Ok(empty())
}

fn list_consumers(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = ConsumerInput::read_shape(req)?;
    use base64::Engine as _;
    let mut v = Violations::default();
    let arn = stream_arn_member(r.stream_arn.as_deref(), &mut v);
    let max = r.max_results;
    if let Some(m) = max {
        v.range(m, "maxResults", 10_000);
    }
    let token = r.next_token.as_deref();
    if let Some(t) = token {
        check_len(&mut v, t, "nextToken", 1, 1_048_576);
    }
    v.finish()?;
    let arn = arn.unwrap_or_default();
    let st = stream_by_arn(call, arn)?;
    // The token is the last name listed, base64: opaque to clients, stable across calls.
    let after = match token {
        None => None,
        Some(t) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::invalid_argument(format!("Invalid NextToken: {t}")))?,
        ),
    };
    let mut consumers = st.settings().consumers;
    consumers.sort_by(|a, b| a.name.cmp(&b.name));
    let rest: Vec<&Consumer> = consumers
        .iter()
        .filter(|c| after.as_deref().is_none_or(|a| c.name.as_str() > a))
        .collect();
    let page = max.unwrap_or(100).min(100) as usize;
    let mut out = json!({
        "Consumers": rest.iter().take(page).map(|c| consumer_json(c, "ACTIVE")).collect::<Vec<_>>(),
    });
    if rest.len() > page {
        if let Some(last) = rest.get(page - 1) {
            out["NextToken"] = json!(base64::engine::general_purpose::STANDARD.encode(&last.name));
        }
    }
    Ok(out)
}
