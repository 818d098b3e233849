//! The Firehose control plane: CreateDeliveryStream, DescribeDeliveryStream,
//! ListDeliveryStreams, DeleteDeliveryStream, UpdateDestination, the tag operations and
//! Start/StopDeliveryStreamEncryption, for Direct PUT and Kinesis-stream sources with
//! (extended) S3 destinations.
//!
//! A delivery stream created here is a pipeline: its destination becomes a generated
//! pipeline file in `data_dir/delivery-streams/` (`delivery_streams.rs`), and the call
//! answers after the daemon reloaded with it — the same validation, start, drain and
//! restart as a file-declared pipeline. Pipelines declared in files are described in the
//! same shape and are read-only here, as file-declared streams are for the Kinesis API.

use super::delivery_streams::{self as store, Record};
use super::error::{ApiError, Violations};
use super::shapes::{
    CreateDeliveryStreamInput, DeleteDeliveryStreamInput, DeliveryStreamEncryptionInput,
    DescribeDeliveryStreamInput, Doc, FirehoseTag, ListDeliveryStreamsInput,
    ListTagsForDeliveryStreamInput, Shape, TagDeliveryStreamInput, UntagDeliveryStreamInput,
    UpdateDestinationInput,
};
use super::Call;
use crate::record::now_ms;
use crate::spec::FirehoseConfig;
use crate::spec::{Compression, PipelineSpec};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Most tags a delivery stream holds, as Firehose.
const MAX_TAGS: usize = 50;
/// The one destination's id, as Firehose numbers it.
const DESTINATION_ID: &str = "destinationId-000000000001";

/// What the control plane needs from the daemon.
pub struct FirehoseControl {
    /// `data_dir` (the generated pipeline files live under it).
    pub data_dir: PathBuf,
    /// How bucket ARNs map to object stores.
    pub config: FirehoseConfig,
    /// Asks the daemon to reload; answers with the reload's outcome.
    pub reload: tokio::sync::mpsc::Sender<ReloadReply>,
    /// The pipelines running now (replaced after every successful reload).
    pub pipelines: tokio::sync::watch::Receiver<Arc<BTreeMap<String, PipelineSpec>>>,
    /// One control-plane change at a time.
    pub lock: tokio::sync::Mutex<()>,
    /// Whether each API-made Direct PUT delivery stream encrypts, as puts report it
    /// (`Encrypted`): read from its record once, forgotten on every control-plane write.
    pub encrypted: std::sync::Mutex<BTreeMap<String, bool>>,
}

impl FirehoseControl {
    /// Drops what [`FirehoseControl::encrypted`] remembers (a record changed).
    fn forget(&self) {
        if let Ok(mut m) = self.encrypted.lock() {
            m.clear();
        }
    }
}

/// Why a reload the control plane asked for did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The configuration with the change does not validate, or cannot be applied.
    #[error("{0}")]
    Refused(String),
    /// The daemon is stopping.
    #[error("sluiced is shutting down")]
    ShuttingDown,
}

/// Where the daemon answers one reload request.
pub type ReloadReply = tokio::sync::oneshot::Sender<Result<(), ApplyError>>;

fn not_found(name: &str, account: &str) -> ApiError {
    ApiError::new(
        "ResourceNotFoundException",
        format!("Firehose {name} under account {account} not found."),
    )
}

fn control<'a>(call: &'a Call<'_>) -> Result<&'a FirehoseControl, ApiError> {
    call.state
        .firehose
        .as_ref()
        .ok_or_else(|| ApiError::internal("the Firehose control plane is not available"))
}

/// A delivery stream as the API sees it.
enum Hose {
    /// Created through this API.
    Api(Box<Record>),
    /// A pipeline from a file (read-only here).
    File(Box<PipelineSpec>),
}

/// Whether a pipeline is a delivery stream: a `stream` or `direct-put` source and an
/// object sink.
fn is_hose(p: &PipelineSpec) -> bool {
    p.delivery.is_some() && matches!(p.source.plugin.as_str(), "stream" | "direct-put")
}

/// Every delivery stream, by name.
fn hoses(c: &FirehoseControl) -> BTreeMap<String, Hose> {
    let api_dir = store::dir(&c.data_dir);
    let records = store::list(&c.data_dir);
    let running = c.pipelines.borrow().clone();
    let mut out = BTreeMap::new();
    for (name, p) in running.iter() {
        if !is_hose(p) {
            continue;
        }
        if p.file.parent() == Some(api_dir.as_path()) {
            if let Some(r) = records.get(name) {
                out.insert(name.clone(), Hose::Api(Box::new(r.clone())));
            }
        } else {
            out.insert(name.clone(), Hose::File(Box::new(p.clone())));
        }
    }
    out
}

/// What a PutRecord(Batch) to `name` meets.
pub(super) enum PutTarget {
    /// A Direct PUT delivery stream, with server-side encryption on or not.
    DirectPut { encrypted: bool },
    /// A delivery stream reading a Kinesis stream: puts are refused, as Firehose does.
    KinesisSource,
    /// No delivery stream of that name.
    Missing,
}

/// The delivery stream a put names. A Direct PUT one is known by its internal stream
/// (`has_stream`); the rest is read only when needed (the record of an API-made one for
/// its encryption, the list of delivery streams on the error path).
pub(super) fn put_target(call: &Call<'_>, name: &str, has_stream: bool) -> PutTarget {
    let Ok(c) = control(call) else {
        return if has_stream {
            PutTarget::DirectPut { encrypted: false }
        } else {
            PutTarget::Missing
        };
    };
    if has_stream {
        let known = c.encrypted.lock().ok().and_then(|m| m.get(name).copied());
        let encrypted = known.unwrap_or_else(|| {
            let e = store::load(&c.data_dir, name).is_some_and(|r| r.encryption.is_some());
            if let Ok(mut m) = c.encrypted.lock() {
                m.insert(name.to_string(), e);
            }
            e
        });
        return PutTarget::DirectPut { encrypted };
    }
    match hoses(c).remove(name) {
        Some(Hose::Api(r)) if r.kind == "KinesisStreamAsSource" => PutTarget::KinesisSource,
        Some(Hose::File(p)) if p.source.plugin == "stream" => PutTarget::KinesisSource,
        _ => PutTarget::Missing,
    }
}

fn hose(c: &FirehoseControl, name: &str, account: &str) -> Result<Hose, ApiError> {
    hoses(c)
        .remove(name)
        .ok_or_else(|| not_found(name, account))
}

fn read_only(name: &str, account: &str) -> ApiError {
    ApiError::new(
        "ResourceInUseException",
        format!("Firehose {name} under account {account} is defined in the sluiced configuration; change it in its file."),
    )
}

/// Runs one control-plane operation.
pub async fn dispatch(call: &Call<'_>, op: &str, req: &Value) -> Result<Value, ApiError> {
    match op {
        "CreateDeliveryStream" => create(call, req).await,
        "DeleteDeliveryStream" => delete(call, req).await,
        "UpdateDestination" => update(call, req).await,
        "TagDeliveryStream" => tag(call, req).await,
        "UntagDeliveryStream" => untag(call, req).await,
        "ListTagsForDeliveryStream" => list_tags(call, req),
        "StartDeliveryStreamEncryption" => encryption(call, req, true).await,
        "StopDeliveryStreamEncryption" => encryption(call, req, false).await,
        _ => Err(ApiError::unknown_operation(op)),
    }
}

// ---- validation ----

/// `deliveryStreamName`: required, 1..64, `[a-zA-Z0-9_.-]+`.
pub(super) fn check_name(v: &mut Violations, name: Option<&str>) {
    check_name_at(v, name, "deliveryStreamName");
}

/// A delivery stream name at `field` (`None` is a missing required member): 1..64,
/// `[a-zA-Z0-9_.-]+`, the length item first as Firehose lists them.
fn check_name_at(v: &mut Violations, name: Option<&str>, field: &str) {
    match name {
        None => v.null(field),
        Some(n) => {
            if n.is_empty() {
                v.add_at(field, "Member must have length greater than or equal to 1");
            } else if n.len() > 64 {
                v.add_at(field, "Member must have length less than or equal to 64");
            }
            if n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            {
                v.add_at(
                    field,
                    "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+",
                );
            }
        }
    }
}

/// A destination id at `field` (`DestinationId`, `ExclusiveStartDestinationId`): 1..100,
/// `[a-zA-Z0-9-]+`.
fn check_destination_id(v: &mut Violations, id: &str, field: &str) {
    length(v, Some(id), field, 1, 100);
    if !id.is_empty() && !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        v.add_at(
            field,
            "Member must satisfy regular expression pattern: [a-zA-Z0-9-]+",
        );
    }
}

/// `arn:.*:<service>:<region>:<account>:<kind>/<id>`, read from the right (the region,
/// account and id hold no `:`, what `arn:.*` covers may): `(region, account, id)` when
/// the service and the kind are these.
fn arn_tail<'a>(arn: &'a str, service: &str, kind: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let rest = arn.strip_prefix("arn:")?;
    let mut parts = rest.rsplitn(4, ':');
    let id = parts.next()?.strip_prefix(kind)?.strip_prefix('/')?;
    let account = parts.next()?;
    let region = parts.next()?;
    let head = parts.next()?;
    head.strip_suffix(service)?
        .ends_with(':')
        .then_some((region, account, id))
}

/// The characters of an IAM role or KMS key id in Firehose's patterns: `[a-zA-Z_0-9+=,.@\-_/]`.
fn iam_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-/".contains(&b))
}

fn twelve_digits(account: &str) -> bool {
    account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
}

const ROLE_ARN_PATTERN: &str =
    "Member must satisfy regular expression pattern: arn:.*:iam::\\d{12}:role/[a-zA-Z_0-9+=,.@\\-_/]+";

/// A role ARN member at `path`: 1..512, `arn:.*:iam::\d{12}:role/[a-zA-Z_0-9+=,.@\-_/]+`
/// (the pattern checked on a non-empty value, as the bucket's).
fn check_role_arn(v: &mut Violations, role: Option<&str>, path: &str) {
    length(v, role, path, 1, 512);
    if let Some(r) = role.filter(|r| !r.is_empty()) {
        let ok = arn_tail(r, "iam", "role").is_some_and(|(region, account, id)| {
            region.is_empty() && twelve_digits(account) && iam_id_ok(id)
        });
        if !ok {
            v.add_at(path, ROLE_ARN_PATTERN);
        }
    }
}

/// A member of a JSON structure, `null` counting as absent.
fn member<'a>(d: &'a Value, key: &str) -> Option<&'a Value> {
    d.get(key).filter(|x| !x.is_null())
}

/// A string member, with AWS's type error for another JSON type.
fn string<'a>(d: &'a Value, key: &str) -> Result<Option<&'a str>, ApiError> {
    match member(d, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(super::request::wrong_type(other, "an String")),
    }
}

fn integer(d: &Value, key: &str) -> Result<Option<i64>, ApiError> {
    match member(d, key) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_i64().or(Some(i64::MAX))),
        Some(other) => Err(super::request::wrong_type(other, "an Integer")),
    }
}

fn boolean(d: &Value, key: &str) -> Result<Option<bool>, ApiError> {
    match member(d, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(super::request::wrong_type(other, "an Boolean")),
    }
}

fn structure<'a>(d: &'a Value, key: &str) -> Result<Option<&'a Value>, ApiError> {
    match member(d, key) {
        None => Ok(None),
        Some(x @ Value::Object(_)) => Ok(Some(x)),
        Some(other) => Err(super::request::not_a_structure(other)),
    }
}

fn list<'a>(d: &'a Value, key: &str) -> Result<&'a [Value], ApiError> {
    match member(d, key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(super::request::not_a_list(other)),
    }
}

fn range(v: &mut Violations, value: Option<i64>, path: &str, lo: i64, hi: i64) {
    match value {
        Some(n) if n < lo => v.add_at(
            path,
            &format!("Member must have value greater than or equal to {lo}"),
        ),
        Some(n) if n > hi => v.add_at(
            path,
            &format!("Member must have value less than or equal to {hi}"),
        ),
        _ => {}
    }
}

fn length(v: &mut Violations, value: Option<&str>, path: &str, lo: usize, hi: usize) {
    if let Some(s) = value {
        let n = s.chars().count();
        if n < lo {
            v.add_at(
                path,
                &format!("Member must have length greater than or equal to {lo}"),
            );
        } else if n > hi {
            v.add_at(
                path,
                &format!("Member must have length less than or equal to {hi}"),
            );
        }
    }
}

fn one_of(v: &mut Violations, value: Option<&str>, path: &str, set: &[&str], shown: &str) {
    if let Some(s) = value {
        if !set.contains(&s) {
            v.add_at(
                path,
                &format!("Member must satisfy enum value set: {shown}"),
            );
        }
    }
}

const PROCESSOR_TYPES: &[&str] = &[
    "RecordDeAggregation",
    "Decompression",
    "CloudWatchLogProcessing",
    "Lambda",
    "MetadataExtraction",
    "AppendDelimiterToRecord",
];
const PARAMETER_NAMES: &[&str] = &[
    "LambdaArn",
    "NumberOfRetries",
    "MetadataExtractionQuery",
    "JsonParsingEngine",
    "RoleArn",
    "BufferSizeInMBs",
    "BufferIntervalInSeconds",
    "SubRecordType",
    "Delimiter",
    "CompressionFormat",
    "DataMessageExtraction",
];

/// The members of an S3 / extended S3 destination (configuration or update) under
/// `path`: types (SerializationException) and constraints (ValidationException).
fn check_destination(
    v: &mut Violations,
    d: &Value,
    path: &str,
    update: bool,
) -> Result<(), ApiError> {
    let at = |m: &str| format!("{path}.{m}");
    let role = string(d, "RoleARN")?;
    let bucket = string(d, "BucketARN")?;
    if !update {
        if role.is_none() {
            v.null(&at("roleARN"));
        }
        if bucket.is_none() {
            v.null(&at("bucketARN"));
        }
    }
    check_role_arn(v, role, &at("roleARN"));
    length(v, bucket, &at("bucketARN"), 1, 2048);
    if bucket.is_some_and(|b| !b.is_empty() && store::bucket_name(b).is_none()) {
        v.add_at(
            &at("bucketARN"),
            "Member must satisfy regular expression pattern: arn:.*:s3:::[\\w\\.\\-]{1,255}",
        );
    }
    length(v, string(d, "Prefix")?, &at("prefix"), 0, 1024);
    length(
        v,
        string(d, "ErrorOutputPrefix")?,
        &at("errorOutputPrefix"),
        0,
        1024,
    );
    if let Some(h) = structure(d, "BufferingHints")? {
        range(
            v,
            integer(h, "SizeInMBs")?,
            &at("bufferingHints.sizeInMBs"),
            1,
            128,
        );
        range(
            v,
            integer(h, "IntervalInSeconds")?,
            &at("bufferingHints.intervalInSeconds"),
            0,
            900,
        );
    }
    one_of(
        v,
        string(d, "CompressionFormat")?,
        &at("compressionFormat"),
        &["UNCOMPRESSED", "GZIP", "ZIP", "Snappy", "HADOOP_SNAPPY"],
        "[ZIP, HADOOP_SNAPPY, Snappy, GZIP, UNCOMPRESSED]",
    );
    one_of(
        v,
        string(d, "S3BackupMode")?,
        &at("s3BackupMode"),
        &["Disabled", "Enabled"],
        "[Disabled, Enabled]",
    );
    if let Some(pc) = structure(d, "ProcessingConfiguration")? {
        boolean(pc, "Enabled")?;
        for (i, p) in list(pc, "Processors")?.iter().enumerate() {
            let pp = format!("processingConfiguration.processors.{}.member", i + 1);
            let kind = string(p, "Type")?;
            match kind {
                None => v.null(&at(&format!("{pp}.type"))),
                Some(_) => one_of(
                    v,
                    kind,
                    &at(&format!("{pp}.type")),
                    PROCESSOR_TYPES,
                    "[Decompression, Lambda, RecordDeAggregation, MetadataExtraction, AppendDelimiterToRecord, CloudWatchLogProcessing]",
                ),
            }
            for (j, param) in list(p, "Parameters")?.iter().enumerate() {
                let q = format!("{pp}.parameters.{}.member", j + 1);
                let name = string(param, "ParameterName")?;
                let value = string(param, "ParameterValue")?;
                match name {
                    None => v.null(&at(&format!("{q}.parameterName"))),
                    Some(_) => one_of(
                        v,
                        name,
                        &at(&format!("{q}.parameterName")),
                        PARAMETER_NAMES,
                        "[DataMessageExtraction, NumberOfRetries, Delimiter, RoleArn, JsonParsingEngine, SubRecordType, MetadataExtractionQuery, BufferIntervalInSeconds, LambdaArn, BufferSizeInMBs, CompressionFormat]",
                    ),
                }
                match value {
                    None => v.null(&at(&format!("{q}.parameterValue"))),
                    Some(_) => length(v, value, &at(&format!("{q}.parameterValue")), 1, 5120),
                }
            }
        }
    }
    if let Some(dp) = structure(d, "DynamicPartitioningConfiguration")? {
        boolean(dp, "Enabled")?;
        if let Some(r) = structure(dp, "RetryOptions")? {
            range(
                v,
                integer(r, "DurationInSeconds")?,
                &at("dynamicPartitioningConfiguration.retryOptions.durationInSeconds"),
                0,
                7200,
            );
        }
    }
    if let Some(cw) = structure(d, "CloudWatchLoggingOptions")? {
        boolean(cw, "Enabled")?;
        string(cw, "LogGroupName")?;
        string(cw, "LogStreamName")?;
    }
    if let Some(e) = structure(d, "EncryptionConfiguration")? {
        one_of(
            v,
            string(e, "NoEncryptionConfig")?,
            &at("encryptionConfiguration.noEncryptionConfig"),
            &["NoEncryption"],
            "[NoEncryption]",
        );
    }
    Ok(())
}

/// A `Tags` list that was given: 1..50 tags, each key and value.
fn check_tags(v: &mut Violations, tags: &[FirehoseTag], path: &str) {
    if tags.is_empty() {
        v.add_at(path, "Member must have length greater than or equal to 1");
    }
    if tags.len() > MAX_TAGS {
        v.add_at(path, "Member must have length less than or equal to 50");
    }
    for (i, t) in tags.iter().enumerate() {
        let p = format!("{path}.{}.member", i + 1);
        match t.key.as_deref() {
            None => v.null(&format!("{p}.key")),
            Some(k) => {
                length(v, Some(k), &format!("{p}.key"), 1, 128);
                if k.starts_with("aws:") || !k.chars().all(tag_char) {
                    v.add_at(
                        &format!("{p}.key"),
                        "Member must satisfy regular expression pattern: ^(?!aws:)[\\p{L}\\p{Z}\\p{N}_.:\\/=+\\-@%]*$",
                    );
                }
            }
        }
        if let Some(val) = t.value.as_deref() {
            length(v, Some(val), &format!("{p}.value"), 0, 256);
            if !val.chars().all(tag_char) {
                v.add_at(
                    &format!("{p}.value"),
                    "Member must satisfy regular expression pattern: ^[\\p{L}\\p{Z}\\p{N}_.:\\/=+\\-@%]*$",
                );
            }
        }
    }
}

fn tag_char(c: char) -> bool {
    c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@%".contains(c)
}

/// Firehose's semantic rules for a destination (after the constraints passed), in the
/// order its front end applies them, then what sluice cannot do (refused, never
/// silently ignored).
fn check_semantics(d: &Value) -> Result<(), ApiError> {
    let bad = |m: &str| Err(ApiError::invalid_argument(m));
    let prefix = member(d, "Prefix").and_then(Value::as_str).unwrap_or("");
    let error_prefix = member(d, "ErrorOutputPrefix")
        .and_then(Value::as_str)
        .unwrap_or("");
    let dp = store::dynamic_partitioning(d);
    let processors = store::processors(d);
    if let Some(e) = member(d, "EncryptionConfiguration") {
        let n = usize::from(member(e, "NoEncryptionConfig").is_some())
            + usize::from(member(e, "KMSEncryptionConfig").is_some());
        if n != 1 {
            return bad(
                "Exactly one of NoEncryptionConfig or KMSEncryptionConfig must be specified",
            );
        }
    }
    if let Some(cw) = member(d, "CloudWatchLoggingOptions") {
        if member(cw, "Enabled").and_then(Value::as_bool) == Some(true)
            && member(cw, "LogGroupName")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            return bad("CloudWatch Log Group Name is required if CloudWatch Logging is enabled");
        }
    }
    let size = member(d, "BufferingHints")
        .and_then(|h| member(h, "SizeInMBs"))
        .and_then(Value::as_i64);
    if dp && size.is_some_and(|s| s < 64) {
        return bad(
            "BufferingHints.SizeInMBs must be at least 64 when Dynamic Partitioning is enabled.",
        );
    }
    let has_ns =
        |p: &str| p.contains("!{partitionKeyFromQuery:") || p.contains("!{partitionKeyFromLambda:");
    if dp && !has_ns(prefix) {
        return bad("S3 Prefix should contain Dynamic Partitioning namespaces when Dynamic Partitioning is enabled");
    }
    if !dp && has_ns(prefix) {
        return bad("Dynamic Partitioning Namespaces can only be part of a prefix expression when Dynamic Partitioning is enabled.");
    }
    if has_ns(error_prefix) {
        return bad("Dynamic Partitioning Namespaces can't be part of an error prefix expression");
    }
    let constraint = |m: &str| {
        Err(ApiError::invalid_argument(format!(
            "The supplied prefix(es) do not satisfy the following constraint: {m}"
        )))
    };
    if prefix.contains("!{") && error_prefix.is_empty() {
        return constraint(
            "ErrorOutputPrefix cannot be null or empty when Prefix contains expressions",
        );
    }
    if prefix.contains("!{firehose:error-output-type}") {
        return constraint(
            "Prefix must not contain any occurrence of !{firehose:error-output-type}",
        );
    }
    if error_prefix.contains("!{") && !error_prefix.contains("!{firehose:error-output-type}") {
        return bad("ErrorOutputPrefix must contain at least one occurrence of !{firehose:error-output-type}");
    }
    if let Some(pc) = member(d, "ProcessingConfiguration") {
        let enabled = member(pc, "Enabled")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let n = member(pc, "Processors")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if enabled && !(1..=5).contains(&n) {
            return bad("A maximum of 5 and a minimum of 1 processor needs to be supplied when processing is enabled.");
        }
    }
    for (kind, params) in &processors {
        match kind.as_str() {
            "MetadataExtraction" if !dp => {
                return bad("class com.amazonaws.services.firehose.internal.model.MetadataExtractionProcessor can only be present when Dynamic Partitioning is enabled.")
            }
            "RecordDeAggregation" if !dp => {
                return bad("class com.amazonaws.services.firehose.internal.model.RecordDeAggregationProcessor can only be present when Dynamic Partitioning is enabled.")
            }
            "MetadataExtraction"
                if params
                    .get("JsonParsingEngine")
                    .is_some_and(|e| e != "JQ-1.6") =>
            {
                return bad("MetaDataExtraction JSON Parsing Engine has to be one of JQ-1.6")
            }
            "Lambda" if !params.contains_key("LambdaArn") => {
                return bad("LambdaArn is required when Lambda processor is used.")
            }
            _ => {}
        }
    }
    if member(d, "S3BackupMode").and_then(Value::as_str) == Some("Enabled")
        && member(d, "S3BackupConfiguration").is_none()
    {
        return bad("S3 backup destination configuration is required when enabling S3 backup.");
    }
    Ok(())
}

/// Validates `DeliveryStreamEncryptionConfigurationInput`.
fn check_encryption(v: &mut Violations, e: &Value) -> Result<(), ApiError> {
    let kind = string(e, "KeyType")?;
    let key = string(e, "KeyARN")?;
    match kind {
        None => v.null("deliveryStreamEncryptionConfigurationInput.keyType"),
        Some(_) => one_of(
            v,
            kind,
            "deliveryStreamEncryptionConfigurationInput.keyType",
            &["AWS_OWNED_CMK", "CUSTOMER_MANAGED_CMK"],
            "[AWS_OWNED_CMK, CUSTOMER_MANAGED_CMK]",
        ),
    }
    length(
        v,
        key,
        "deliveryStreamEncryptionConfigurationInput.keyARN",
        1,
        512,
    );
    if let Some(k) = key.filter(|k| !k.is_empty()) {
        let ok = arn_tail(k, "kms", "key").is_some_and(|(region, account, id)| {
            !region.is_empty()
                && region
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && twelve_digits(account)
                && iam_id_ok(id)
        });
        if !ok {
            v.add_at(
                "deliveryStreamEncryptionConfigurationInput.keyARN",
                "Member must satisfy regular expression pattern: arn:.*:kms:[a-zA-Z0-9\\-]+:\\d{12}:key/[a-zA-Z_0-9+=,.@\\-_/]+",
            );
        }
    }
    Ok(())
}

fn encryption_semantics(e: &Value) -> Result<(), ApiError> {
    let kind = member(e, "KeyType").and_then(Value::as_str).unwrap_or("");
    let key = member(e, "KeyARN").is_some();
    if kind == "CUSTOMER_MANAGED_CMK" && !key {
        return Err(ApiError::invalid_argument(
            "KeyARN has to be specified when KeyType is CUSTOMER_MANAGED_CMK",
        ));
    }
    if kind == "AWS_OWNED_CMK" && key {
        return Err(ApiError::invalid_argument(
            "KeyARN cannot be specified when KeyType is AWS_OWNED_CMK",
        ));
    }
    Ok(())
}

const SSE_ONLY_DIRECT_PUT: &str = "Server side encryption from firehose is only allowed for direct put delivery streams and database as a source delivery streams";

// ---- applying ----

/// Writes the files and reloads; on a refused reload the previous files come back and
/// the refusal is the answer.
async fn apply(
    c: &FirehoseControl,
    rec: &Record,
    previous: Option<&Record>,
) -> Result<(), ApiError> {
    let toml = store::pipeline_toml(rec, &c.config)
        .map_err(|e| ApiError::invalid_argument(e.to_string()))?;
    c.forget();
    let (dir, r) = (c.data_dir.clone(), rec.clone());
    blocking(move || store::save(&dir, &r, &toml)).await?;
    if let Err(msg) = reload(c).await {
        // Put back what was there, so the running set and the files agree again.
        let dir = c.data_dir.clone();
        match previous.cloned() {
            Some(p) => {
                let toml = store::pipeline_toml(&p, &c.config).unwrap_or_default();
                blocking(move || store::save(&dir, &p, &toml)).await?;
            }
            None => {
                let name = rec.name.clone();
                blocking(move || store::remove(&dir, &name)).await?;
            }
        }
        let _ = reload(c).await;
        return Err(ApiError::invalid_argument(msg.to_string()));
    }
    Ok(())
}

async fn blocking(
    f: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> Result<(), ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("task failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("cannot write the delivery stream: {e}")))
}

/// Reloads the daemon's configuration; the error is the refusal, worded for a user.
async fn reload(c: &FirehoseControl) -> Result<(), ApplyError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    c.reload
        .send(tx)
        .await
        .map_err(|_| ApplyError::ShuttingDown)?;
    rx.await.map_err(|_| ApplyError::ShuttingDown)?
}

// ---- operations ----

async fn create(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = CreateDeliveryStreamInput::read_shape(req)?;
    let mut v = Violations::default();
    check_name(&mut v, r.delivery_stream_name.as_deref());
    one_of(
        &mut v,
        r.delivery_stream_type.as_deref(),
        "deliveryStreamType",
        &[
            "DirectPut",
            "KinesisStreamAsSource",
            "MSKAsSource",
            "DatabaseAsSource",
        ],
        "[DirectPut, KinesisStreamAsSource, MSKAsSource, DatabaseAsSource]",
    );
    if let Some(Doc(k)) = &r.kinesis_stream_source_configuration {
        let arn = string(k, "KinesisStreamARN")?;
        let role = string(k, "RoleARN")?;
        match arn {
            None => v.null("kinesisStreamSourceConfiguration.kinesisStreamARN"),
            Some(a) => {
                length(
                    &mut v,
                    Some(a),
                    "kinesisStreamSourceConfiguration.kinesisStreamARN",
                    1,
                    512,
                );
                if !a.is_empty() && store::stream_of_arn(a).is_none() {
                    v.add_at("kinesisStreamSourceConfiguration.kinesisStreamARN", "Member must satisfy regular expression pattern: arn:.*:kinesis:[a-zA-Z0-9\\-]+:\\d{12}:stream/[a-zA-Z0-9_.-]+");
                }
            }
        }
        match role {
            None => v.null("kinesisStreamSourceConfiguration.roleARN"),
            Some(_) => check_role_arn(&mut v, role, "kinesisStreamSourceConfiguration.roleARN"),
        }
    }
    if let Some(Doc(e)) = &r.encryption {
        check_encryption(&mut v, e)?;
    }
    if let Some(Doc(d)) = &r.extended_s3_destination_configuration {
        check_destination(&mut v, d, "extendedS3DestinationConfiguration", false)?;
    }
    if let Some(Doc(d)) = &r.s3_destination_configuration {
        check_destination(&mut v, d, "s3DestinationConfiguration", false)?;
    }
    let tags = r.tags.clone().unwrap_or_default();
    if let Some(t) = &r.tags {
        check_tags(&mut v, t, "tags");
    }
    v.finish()?;
    let c = control(call)?;
    let account = &call.state.account;
    let name = r.delivery_stream_name.clone().unwrap_or_default();
    let _one = c.lock.lock().await;
    // A record without a running pipeline (a crash between the two files) is stale.
    let exists = hoses(c).contains_key(&name) || c.pipelines.borrow().contains_key(&name);
    if exists {
        return Err(ApiError::new(
            "ResourceInUseException",
            format!("Firehose {name} under accountId {account} already exists"),
        ));
    }
    let others = count_given(&[
        &r.redshift,
        &r.elasticsearch,
        &r.opensearch,
        &r.splunk,
        &r.http_endpoint,
        &r.opensearch_serverless,
        &r.snowflake,
        &r.iceberg,
    ]);
    let s3 = usize::from(r.extended_s3_destination_configuration.is_some())
        + usize::from(r.s3_destination_configuration.is_some());
    one_destination(s3, others, true, "Configuration")?;
    let kind = r
        .delivery_stream_type
        .clone()
        .unwrap_or_else(|| "DirectPut".into());
    match (kind.as_str(), r.kinesis_stream_source_configuration.is_some()) {
        ("KinesisStreamAsSource", false) => {
            return Err(ApiError::invalid_argument(
                "KinesisSourceStreamConfig is mandatory for KinesisStreamAsSource stream type.",
            ))
        }
        ("DirectPut", true) => {
            return Err(ApiError::invalid_argument(
                "KinesisSourceStreamConfig is only applicable for KinesisStreamAsSource stream type",
            ))
        }
        ("MSKAsSource" | "DatabaseAsSource", _) => {
            return Err(ApiError::invalid_argument(format!(
                "DeliveryStreamType {kind} is not supported by sluice (DirectPut and KinesisStreamAsSource are)."
            )))
        }
        _ => {}
    }
    if let Some(Doc(e)) = &r.encryption {
        if kind != "DirectPut" {
            return Err(ApiError::invalid_argument(SSE_ONLY_DIRECT_PUT));
        }
        encryption_semantics(e)?;
    }
    let destination = r
        .extended_s3_destination_configuration
        .or(r.s3_destination_configuration)
        .map(|d| d.0)
        .unwrap_or_default();
    check_semantics(&destination)?;
    let now = now_ms();
    let rec = Record {
        name: name.clone(),
        kind,
        created_ms: now,
        updated_ms: now,
        version: 1,
        source: r.kinesis_stream_source_configuration.map(|d| d.0),
        destination,
        tags: tags
            .iter()
            .map(|t| {
                (
                    t.key.clone().unwrap_or_default(),
                    t.value.clone().unwrap_or_default(),
                )
            })
            .collect(),
        encryption: r.encryption.map(|e| e.0),
        encryption_calls: Vec::new(),
    };
    apply(c, &rec, None).await?;
    Ok(json!({ "DeliveryStreamARN": hose_arn(call, &name) }))
}

/// Firehose's one-destination rule (a create needs exactly one, an update at most one),
/// then sluice's own: S3 destinations only. `form` names the members: `Configuration`
/// or `Update`.
fn one_destination(s3: usize, others: usize, create: bool, form: &str) -> Result<(), ApiError> {
    let n = s3 + others;
    if n > 1 || (create && n == 0) {
        return Err(ApiError::invalid_argument(
            "Exactly one destination configuration is supported for a Firehose",
        ));
    }
    if others > 0 {
        return Err(ApiError::invalid_argument(format!(
            "sluice delivers to S3 destinations only (ExtendedS3Destination{form} or S3Destination{form})."
        )));
    }
    Ok(())
}

/// How many of these destination members a request gave (Firehose takes exactly one).
fn count_given(destinations: &[&Option<Doc>]) -> usize {
    destinations.iter().filter(|d| d.is_some()).count()
}

fn hose_arn(call: &Call<'_>, name: &str) -> String {
    format!(
        "arn:aws:firehose:{}:{}:deliverystream/{name}",
        call.region, call.state.account
    )
}

async fn delete(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = DeleteDeliveryStreamInput::read_shape(req)?;
    let mut v = Violations::default();
    check_name(&mut v, r.delivery_stream_name.as_deref());
    v.finish()?;
    let c = control(call)?;
    let account = &call.state.account;
    let name = r.delivery_stream_name.unwrap_or_default();
    let _one = c.lock.lock().await;
    match hose(c, &name, account)? {
        Hose::File(_) => Err(read_only(&name, account)),
        Hose::Api(rec) => {
            c.forget();
            let dir = c.data_dir.clone();
            let n = name.clone();
            blocking(move || store::remove(&dir, &n)).await?;
            // The reload drains the pipeline (buffers flushed and delivered) and stops it.
            if let Err(e) = reload(c).await {
                // Refused (an unrelated file that does not validate): the pipeline still
                // runs, so its files come back and the answer says why.
                let (dir, toml) = (c.data_dir.clone(), store::pipeline_toml(&rec, &c.config));
                if let Ok(toml) = toml {
                    blocking(move || store::save(&dir, &rec, &toml)).await?;
                }
                return Err(ApiError::internal(format!(
                    "Firehose {name} could not be removed: {e}"
                )));
            }
            // A delivery stream made again under this name starts afresh: no checkpoint,
            // no intent log or spool files (the new internal stream numbers its records
            // from 0 again: old intents would skip them as already stored), and no Direct
            // PUT records of the old one waiting in its internal stream.
            let mut gone = Vec::new();
            for state in ["checkpoints", "delivery", "spool"] {
                if let Ok(d) = crate::names::child(&c.data_dir.join(state), &name) {
                    gone.push(d);
                }
            }
            if let Ok(st) = crate::names::child(
                &c.data_dir.join("streams"),
                &crate::spec::direct_put_stream(&name),
            ) {
                gone.push(st);
            }
            let _ = tokio::task::spawn_blocking(move || {
                for g in gone {
                    let _ = std::fs::remove_dir_all(g);
                }
            })
            .await;
            Ok(json!({}))
        }
    }
}

/// Merges an update into a destination: members given replace, nested structures merge.
fn merge(into: &mut Value, update: &Value) {
    match (into, update) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, val) in b {
                if val.is_null() {
                    continue;
                }
                match a.get_mut(k) {
                    Some(slot @ Value::Object(_)) if val.is_object() => merge(slot, val),
                    _ => {
                        a.insert(k.clone(), val.clone());
                    }
                }
            }
        }
        (slot, val) => *slot = val.clone(),
    }
}

async fn update(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = UpdateDestinationInput::read_shape(req)?;
    let mut v = Violations::default();
    check_name(&mut v, r.delivery_stream_name.as_deref());
    match r.current_delivery_stream_version_id.as_deref() {
        None => v.null("currentDeliveryStreamVersionId"),
        Some(id) => {
            length(&mut v, Some(id), "currentDeliveryStreamVersionId", 1, 50);
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                v.add_at(
                    "currentDeliveryStreamVersionId",
                    "Member must satisfy regular expression pattern: [0-9]+",
                );
            }
        }
    }
    match r.destination_id.as_deref() {
        None => v.null("destinationId"),
        Some(id) => check_destination_id(&mut v, id, "destinationId"),
    }
    if let Some(Doc(d)) = &r.extended_s3_destination_update {
        check_destination(&mut v, d, "extendedS3DestinationUpdate", true)?;
    }
    if let Some(Doc(d)) = &r.s3_destination_update {
        check_destination(&mut v, d, "s3DestinationUpdate", true)?;
    }
    v.finish()?;
    let c = control(call)?;
    let account = &call.state.account;
    let name = r.delivery_stream_name.clone().unwrap_or_default();
    let _one = c.lock.lock().await;
    let rec = match hose(c, &name, account)? {
        Hose::File(_) => return Err(read_only(&name, account)),
        Hose::Api(rec) => rec,
    };
    let given = r
        .current_delivery_stream_version_id
        .clone()
        .unwrap_or_default();
    if given != rec.version.to_string() {
        return Err(ApiError::new(
            "ConcurrentModificationException",
            format!(
                "Cannot update firehose: {name} since the current version id: {} and specified version id: {given} do not match",
                rec.version
            ),
        ));
    }
    let id = r.destination_id.clone().unwrap_or_default();
    if id != DESTINATION_ID {
        return Err(ApiError::invalid_argument(format!(
            "Destination Id {id} not found"
        )));
    }
    let others = count_given(&[
        &r.redshift,
        &r.elasticsearch,
        &r.opensearch,
        &r.splunk,
        &r.http_endpoint,
        &r.opensearch_serverless,
        &r.snowflake,
        &r.iceberg,
    ]);
    let s3 = usize::from(r.extended_s3_destination_update.is_some())
        + usize::from(r.s3_destination_update.is_some());
    one_destination(s3, others, false, "Update")?;
    let mut next = rec.clone();
    if let Some(Doc(u)) = r
        .extended_s3_destination_update
        .as_ref()
        .or(r.s3_destination_update.as_ref())
    {
        if store::dynamic_partitioning(&rec.destination)
            && member(u, "DynamicPartitioningConfiguration")
                .and_then(|d| member(d, "Enabled"))
                .and_then(Value::as_bool)
                == Some(false)
        {
            return Err(ApiError::invalid_argument(
                "Dynamic Partitioning cannot be disabled once it is enabled.",
            ));
        }
        merge(&mut next.destination, u);
    }
    check_semantics(&next.destination)?;
    next.version += 1;
    next.updated_ms = now_ms();
    apply(c, &next, Some(&rec)).await?;
    Ok(json!({}))
}

/// An API record for a change that does not touch the pipeline (tags, encryption).
fn api_record(c: &FirehoseControl, name: &str, account: &str) -> Result<Record, ApiError> {
    match hose(c, name, account)? {
        Hose::File(_) => Err(read_only(name, account)),
        Hose::Api(rec) => Ok(*rec),
    }
}

async fn save_record(c: &FirehoseControl, rec: Record) -> Result<(), ApiError> {
    c.forget();
    let dir = c.data_dir.clone();
    blocking(move || store::save_record(&dir, &rec)).await
}

async fn tag(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = TagDeliveryStreamInput::read_shape(req)?;
    let mut v = Violations::default();
    check_name(&mut v, r.delivery_stream_name.as_deref());
    let tags = r.tags.clone().unwrap_or_default();
    match &r.tags {
        None => v.null("tags"),
        Some(t) => check_tags(&mut v, t, "tags"),
    }
    v.finish()?;
    let c = control(call)?;
    let account = &call.state.account;
    let name = r.delivery_stream_name.unwrap_or_default();
    let _one = c.lock.lock().await;
    let mut rec = api_record(c, &name, account)?;
    for t in &tags {
        rec.tags.insert(
            t.key.clone().unwrap_or_default(),
            t.value.clone().unwrap_or_default(),
        );
    }
    if rec.tags.len() > MAX_TAGS {
        return Err(ApiError::new(
            "LimitExceededException",
            format!(
                "Firehose {name} under account {account} would have more than {MAX_TAGS} tags."
            ),
        ));
    }
    save_record(c, rec).await?;
    Ok(json!({}))
}

async fn untag(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = UntagDeliveryStreamInput::read_shape(req)?;
    let mut v = Violations::default();
    check_name(&mut v, r.delivery_stream_name.as_deref());
    match &r.tag_keys {
        None => v.null("tagKeys"),
        Some(k) if k.is_empty() => v.add_at(
            "tagKeys",
            "Member must have length greater than or equal to 1",
        ),
        Some(k) if k.len() > MAX_TAGS => v.add_at(
            "tagKeys",
            "Member must have length less than or equal to 50",
        ),
        Some(_) => {}
    }
    v.finish()?;
    let c = control(call)?;
    let account = &call.state.account;
    let name = r.delivery_stream_name.unwrap_or_default();
    let _one = c.lock.lock().await;
    let mut rec = api_record(c, &name, account)?;
    for k in r.tag_keys.unwrap_or_default() {
        rec.tags.remove(&k);
    }
    save_record(c, rec).await?;
    Ok(json!({}))
}

fn list_tags(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = ListTagsForDeliveryStreamInput::read_shape(req)?;
    let mut v = Violations::default();
    check_name(&mut v, r.delivery_stream_name.as_deref());
    range(&mut v, r.limit, "limit", 1, 50);
    if let Some(k) = r.exclusive_start_tag_key.as_deref() {
        // A tag key's rules.
        length(&mut v, Some(k), "exclusiveStartTagKey", 1, 128);
        if k.starts_with("aws:") || !k.chars().all(tag_char) {
            v.add_at(
                "exclusiveStartTagKey",
                "Member must satisfy regular expression pattern: ^(?!aws:)[\\p{L}\\p{Z}\\p{N}_.:\\/=+\\-@%]*$",
            );
        }
    }
    v.finish()?;
    let c = control(call)?;
    let account = &call.state.account;
    let name = r.delivery_stream_name.unwrap_or_default();
    let tags = match hose(c, &name, account)? {
        Hose::File(_) => BTreeMap::new(),
        Hose::Api(rec) => rec.tags,
    };
    let after = r.exclusive_start_tag_key.unwrap_or_default();
    let limit = r.limit.unwrap_or(50) as usize;
    let rest: Vec<(&String, &String)> = tags.iter().filter(|(k, _)| **k > after).collect();
    Ok(json!({
        "Tags": rest.iter().take(limit).map(|(k, val)| json!({"Key": k, "Value": val})).collect::<Vec<_>>(),
        "HasMoreTags": rest.len() > limit,
    }))
}

async fn encryption(call: &Call<'_>, req: &Value, start: bool) -> Result<Value, ApiError> {
    let r = DeliveryStreamEncryptionInput::read_shape(req)?;
    let mut v = Violations::default();
    check_name(&mut v, r.delivery_stream_name.as_deref());
    if let (true, Some(Doc(e))) = (start, &r.encryption) {
        check_encryption(&mut v, e)?;
    }
    v.finish()?;
    let c = control(call)?;
    let account = &call.state.account;
    let name = r.delivery_stream_name.unwrap_or_default();
    let _one = c.lock.lock().await;
    let mut rec = api_record(c, &name, account)?;
    if rec.kind != "DirectPut" {
        return Err(ApiError::invalid_argument(SSE_ONLY_DIRECT_PUT));
    }
    // Start and Stop together: 25 calls per delivery stream in 24 hours, as Firehose.
    let now = now_ms();
    rec.encryption_calls.retain(|t| now - t < 86_400_000);
    if rec.encryption_calls.len() >= 25 {
        return Err(ApiError::new(
            "LimitExceededException",
            format!("Firehose {name} under account {account} has had 25 StartDeliveryStreamEncryption and StopDeliveryStreamEncryption calls in the last 24 hours, the most allowed."),
        ));
    }
    rec.encryption_calls.push(now);
    if start {
        let e = r
            .encryption
            .map(|d| d.0)
            .unwrap_or_else(|| json!({"KeyType": "AWS_OWNED_CMK"}));
        encryption_semantics(&e)?;
        rec.encryption = Some(e);
    } else {
        rec.encryption = None;
    }
    rec.updated_ms = now_ms();
    save_record(c, rec).await?;
    Ok(json!({}))
}

// ---- description ----

/// DescribeDeliveryStream.
pub fn describe(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = DescribeDeliveryStreamInput::read_shape(req)?;
    let mut v = Violations::default();
    check_name(&mut v, r.delivery_stream_name.as_deref());
    range(&mut v, r.limit, "limit", 1, 10_000);
    if let Some(id) = r.exclusive_start_destination_id.as_deref() {
        check_destination_id(&mut v, id, "exclusiveStartDestinationId");
    }
    v.finish()?;
    let c = control(call)?;
    let account = &call.state.account;
    let name = r.delivery_stream_name.unwrap_or_default();
    let h = hose(c, &name, account)?;
    let mut d = description(call, &name, &h);
    // The one destination is past any ExclusiveStartDestinationId.
    if r.exclusive_start_destination_id.is_some() {
        d["Destinations"] = json!([]);
    }
    Ok(json!({ "DeliveryStreamDescription": d }))
}

/// ListDeliveryStreams.
pub fn list_hoses(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = ListDeliveryStreamsInput::read_shape(req)?;
    let mut v = Violations::default();
    range(&mut v, r.limit, "limit", 1, 10_000);
    one_of(
        &mut v,
        r.delivery_stream_type.as_deref(),
        "deliveryStreamType",
        &[
            "DirectPut",
            "KinesisStreamAsSource",
            "MSKAsSource",
            "DatabaseAsSource",
        ],
        "[DirectPut, KinesisStreamAsSource, MSKAsSource, DatabaseAsSource]",
    );
    if let Some(n) = r.exclusive_start_delivery_stream_name.as_deref() {
        check_name_at(&mut v, Some(n), "exclusiveStartDeliveryStreamName");
    }
    v.finish()?;
    let c = control(call)?;
    let start = r.exclusive_start_delivery_stream_name.unwrap_or_default();
    let limit = r.limit.unwrap_or(10) as usize;
    let names: Vec<String> = hoses(c)
        .into_iter()
        .filter(|(n, h)| {
            *n > start
                && r.delivery_stream_type
                    .as_deref()
                    .is_none_or(|t| kind_of(h) == t)
        })
        .map(|(n, _)| n)
        .collect();
    Ok(json!({
        "DeliveryStreamNames": names.iter().take(limit).collect::<Vec<_>>(),
        "HasMoreDeliveryStreams": names.len() > limit,
    }))
}

fn kind_of(h: &Hose) -> &str {
    match h {
        Hose::Api(r) => &r.kind,
        Hose::File(p) if p.source.plugin == "stream" => "KinesisStreamAsSource",
        Hose::File(_) => "DirectPut",
    }
}

/// A description in AWS's shape, for either origin.
fn description(call: &Call<'_>, name: &str, h: &Hose) -> Value {
    let account = &call.state.account;
    let role = format!("arn:aws:iam::{account}:role/sluice");
    let (kind, created, updated, version, source, dest, enc) = match h {
        Hose::Api(r) => (
            r.kind.clone(),
            r.created_ms,
            (r.updated_ms != r.created_ms).then_some(r.updated_ms),
            r.version,
            r.source.clone(),
            r.destination.clone(),
            r.encryption.clone(),
        ),
        Hose::File(p) => {
            let stream = serde_json::from_str::<Value>(&p.source.config_json)
                .ok()
                .and_then(|v| v.get("stream").and_then(Value::as_str).map(str::to_string));
            let source =
                stream.map(|s| json!({ "KinesisStreamARN": call.stream_arn(&s), "RoleARN": role }));
            let created = std::fs::metadata(&p.file)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            (
                kind_of(h).to_string(),
                created,
                None,
                1,
                source,
                file_destination(p, &role),
                None,
            )
        }
    };
    let mut d = json!({
        "DeliveryStreamName": name,
        "DeliveryStreamARN": hose_arn(call, name),
        "DeliveryStreamStatus": "ACTIVE",
        "DeliveryStreamType": kind,
        "VersionId": version.to_string(),
        "CreateTimestamp": created as f64 / 1000.0,
        "Destinations": [destination_description(&dest)],
        "HasMoreDestinations": false,
    });
    if let Some(u) = updated {
        d["LastUpdateTimestamp"] = json!(u as f64 / 1000.0);
    }
    if let Some(mut s) = source {
        s["DeliveryStartTimestamp"] = json!(created as f64 / 1000.0);
        d["Source"] = json!({ "KinesisStreamSourceDescription": s });
    }
    if kind == "DirectPut" {
        d["DeliveryStreamEncryptionConfiguration"] = match enc {
            None => json!({ "Status": "DISABLED" }),
            Some(e) => {
                let mut out = json!({ "KeyType": e.get("KeyType").cloned().unwrap_or(json!("AWS_OWNED_CMK")), "Status": "ENABLED" });
                if let Some(k) = e.get("KeyARN") {
                    out["KeyARN"] = k.clone();
                }
                out
            }
        };
    }
    d
}

/// The destination of a file-declared pipeline, as its configuration would read.
fn file_destination(p: &PipelineSpec, role: &str) -> Value {
    let Some(del) = &p.delivery else {
        return json!({});
    };
    let sink: Value = serde_json::from_str(&p.sink.config_json).unwrap_or_default();
    let url = sink.get("url").and_then(Value::as_str).unwrap_or("");
    // An S3 URL names its bucket; a directory stands for a bucket of its name.
    let bucket = url
        .strip_prefix("s3://")
        .map(|r| r.split('/').next().unwrap_or(""))
        .unwrap_or_else(|| {
            std::path::Path::new(url)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("lake")
        });
    let mut d = json!({
        "RoleARN": role,
        "BucketARN": format!("arn:aws:s3:::{bucket}"),
        "Prefix": del.prefix,
        "ErrorOutputPrefix": del.error_prefix,
        "BufferingHints": { "SizeInMBs": del.size.div_ceil(1 << 20), "IntervalInSeconds": del.interval.as_secs() },
        "CompressionFormat": match del.compression {
            Compression::None => "UNCOMPRESSED",
            Compression::Gzip => "GZIP",
            Compression::Snappy => "Snappy",
            // Not a Firehose format; shown as what it is.
            Compression::Zstd => "ZSTD",
        },
        "DynamicPartitioningConfiguration": { "Enabled": del.query.is_some() },
    });
    let mut processors = Vec::new();
    if let Some(q) = &del.query {
        processors.push(json!({ "Type": "MetadataExtraction", "Parameters": [
            { "ParameterName": "MetadataExtractionQuery", "ParameterValue": q },
            { "ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6" },
        ]}));
    }
    if !del.delimiter.is_empty() {
        processors.push(json!({ "Type": "AppendDelimiterToRecord", "Parameters": [] }));
    }
    if !processors.is_empty() {
        d["ProcessingConfiguration"] = json!({ "Enabled": true, "Processors": processors });
    }
    d
}

/// `{DestinationId, ExtendedS3DestinationDescription, S3DestinationDescription}` with
/// Firehose's defaults filled in.
fn destination_description(dest: &Value) -> Value {
    let mut ext: Map<String, Value> = dest.as_object().cloned().unwrap_or_default();
    let (mib, secs) = store::buffering(dest);
    ext.insert(
        "BufferingHints".into(),
        json!({ "SizeInMBs": mib, "IntervalInSeconds": secs }),
    );
    ext.entry("CompressionFormat")
        .or_insert(json!("UNCOMPRESSED"));
    ext.entry("EncryptionConfiguration")
        .or_insert(json!({ "NoEncryptionConfig": "NoEncryption" }));
    ext.entry("CloudWatchLoggingOptions")
        .or_insert(json!({ "Enabled": false }));
    ext.entry("S3BackupMode").or_insert(json!("Disabled"));
    if let Some(Value::Object(dp)) = ext.get_mut("DynamicPartitioningConfiguration") {
        dp.entry("RetryOptions")
            .or_insert(json!({ "DurationInSeconds": 300 }));
    }
    if let Some(b) = ext.remove("S3BackupConfiguration") {
        ext.insert("S3BackupDescription".into(), b);
    }
    let mut s3 = Map::new();
    for k in [
        "RoleARN",
        "BucketARN",
        "Prefix",
        "ErrorOutputPrefix",
        "BufferingHints",
        "CompressionFormat",
        "EncryptionConfiguration",
        "CloudWatchLoggingOptions",
    ] {
        if let Some(x) = ext.get(k) {
            s3.insert(k.into(), x.clone());
        }
    }
    json!({
        "DestinationId": DESTINATION_ID,
        "ExtendedS3DestinationDescription": ext,
        "S3DestinationDescription": s3,
    })
}
