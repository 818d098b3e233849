//! Delivery streams created through the Firehose API, kept in
//! `data_dir/delivery-streams/`: per stream a record of what the API was told
//! (`NAME.json`: source, extended S3 destination, tags, encryption, version) and the
//! pipeline file generated from it (`NAME.toml`), which the config loader reads like any
//! file of `pipelines_dir` — so a delivery stream made through the API is validated,
//! started, reloaded and drained exactly as a file-declared pipeline, and survives
//! restarts. Both files are replaced atomically; the record is written last, so a
//! pipeline file without a record is never described as the API's.

use crate::spec::FirehoseConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the API was told about one delivery stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// The delivery stream's name (= the pipeline's).
    pub name: String,
    /// `DirectPut` or `KinesisStreamAsSource`.
    pub kind: String,
    /// Creation time, ms.
    pub created_ms: i64,
    /// Last UpdateDestination or encryption change, ms.
    pub updated_ms: i64,
    /// `VersionId`: 1, then one more per UpdateDestination.
    pub version: u64,
    /// `KinesisStreamSourceConfiguration` as given.
    #[serde(default)]
    pub source: Option<Value>,
    /// `ExtendedS3DestinationConfiguration` as given (a plain `S3DestinationConfiguration`
    /// is kept in this form too), updates merged in.
    pub destination: Value,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Server-side encryption as StartDeliveryStreamEncryption set it (`KeyType`,
    /// `KeyARN`); recorded and reported, there is no key service.
    #[serde(default)]
    pub encryption: Option<Value>,
    /// When Start/StopDeliveryStreamEncryption were called (ms), the last 24 hours' worth:
    /// Firehose allows 25 such calls per delivery stream in 24 hours.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encryption_calls: Vec<i64>,
}

/// Why a destination cannot become a pipeline (worded for the API's answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// The folder.
pub fn dir(data_dir: &Path) -> PathBuf {
    crate::spec::delivery_streams_dir(data_dir)
}

/// `<folder>/<name>.<ext>` (not `with_extension`: a name may hold dots of its own).
fn file(data_dir: &Path, name: &str, ext: &str) -> std::io::Result<PathBuf> {
    crate::names::check(name).map_err(std::io::Error::other)?;
    Ok(dir(data_dir).join(format!("{name}.{ext}")))
}

/// One record, if the API made a delivery stream of this name.
pub fn load(data_dir: &Path, name: &str) -> Option<Record> {
    let text = std::fs::read(file(data_dir, name, "json").ok()?).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Every record, by name.
pub fn list(data_dir: &Path) -> BTreeMap<String, Record> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir(data_dir)) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") {
            if let Some(r) = std::fs::read_to_string(&p)
                .ok()
                .and_then(|t| serde_json::from_str::<Record>(&t).ok())
            {
                out.insert(r.name.clone(), r);
            }
        }
    }
    out
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let parent = path.parent().unwrap_or(Path::new("."));
    sluice_plugin_api::fs::make_dirs_durable(parent)?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(parent)?.sync_all()
}

/// Writes the record, then the pipeline file: a crash in between leaves a record that
/// describes nothing (only pipeline files run, and a record without a running pipeline
/// is overwritten by the next CreateDeliveryStream of that name).
pub fn save(data_dir: &Path, rec: &Record, pipeline_toml: &str) -> std::io::Result<()> {
    save_record(data_dir, rec)?;
    write_atomic(
        &file(data_dir, &rec.name, "toml")?,
        pipeline_toml.as_bytes(),
    )
}

/// Rewrites only the record (tags, encryption: nothing the pipeline reads).
pub fn save_record(data_dir: &Path, rec: &Record) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
    write_atomic(&file(data_dir, &rec.name, "json")?, &json)
}

/// Removes the pipeline file and the record (the pipeline file first: a record left
/// behind by a crash describes nothing, since only generated files run).
pub fn remove(data_dir: &Path, name: &str) -> std::io::Result<()> {
    for ext in ["toml", "json"] {
        match std::fs::remove_file(file(data_dir, name, ext)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    if let Ok(d) = std::fs::File::open(dir(data_dir)) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The bucket name of an S3 bucket ARN (`arn:aws:s3:::NAME`, any partition).
pub fn bucket_name(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:")?;
    let (_partition, rest) = rest.split_once(":s3:::")?;
    // AWS's pattern (`[\w.-]{1,255}`); `.` and `..` would leave the buckets folder.
    let ok = (1..=255).contains(&rest.len())
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && rest != "."
        && rest != "..";
    ok.then_some(rest)
}

/// The stream name of a Kinesis stream ARN.
pub fn stream_of_arn(arn: &str) -> Option<&str> {
    let (head, name) = arn.rsplit_once(":stream/")?;
    (head.starts_with("arn:") && head.contains(":kinesis:") && crate::names::check(name).is_ok())
        .then_some(name)
}

/// A member of a JSON object.
fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    get(v, key).and_then(Value::as_str)
}

/// The processors of a `ProcessingConfiguration`, when it is enabled: (type, parameters).
pub fn processors(dest: &Value) -> Vec<(String, BTreeMap<String, String>)> {
    let Some(pc) = get(dest, "ProcessingConfiguration") else {
        return Vec::new();
    };
    if get(pc, "Enabled").and_then(Value::as_bool) == Some(false) {
        return Vec::new();
    }
    get(pc, "Processors")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let params = get(p, "Parameters")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| {
                                    Some((
                                        str_of(x, "ParameterName")?.to_string(),
                                        str_of(x, "ParameterValue")?.to_string(),
                                    ))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    (str_of(p, "Type").unwrap_or_default().to_string(), params)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether dynamic partitioning is on.
pub fn dynamic_partitioning(dest: &Value) -> bool {
    get(dest, "DynamicPartitioningConfiguration")
        .and_then(|d| get(d, "Enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Buffering hints with Firehose's defaults: (MiB, seconds). Dynamic partitioning
/// raises the default size to 64 MiB, as Firehose does.
pub fn buffering(dest: &Value) -> (u64, u64) {
    let h = get(dest, "BufferingHints");
    let size = h
        .and_then(|h| get(h, "SizeInMBs"))
        .and_then(Value::as_u64)
        .unwrap_or(if dynamic_partitioning(dest) { 64 } else { 5 });
    let secs = h
        .and_then(|h| get(h, "IntervalInSeconds"))
        .and_then(Value::as_u64)
        .unwrap_or(300);
    (size, secs)
}

/// The pipeline file of a delivery stream: `[pipelines.NAME]` with the source, the
/// partitioning query, the buffer and the object-store sink its destination describes.
pub fn pipeline_toml(rec: &Record, fh: &FirehoseConfig) -> Result<String, Unsupported> {
    use toml::{Table, Value as T};
    let bad = |m: String| Err(Unsupported(m));
    let dest = &rec.destination;
    let mut source = Table::new();
    match rec.kind.as_str() {
        "KinesisStreamAsSource" => {
            let arn = rec
                .source
                .as_ref()
                .and_then(|s| str_of(s, "KinesisStreamARN"))
                .unwrap_or_default();
            let Some(stream) = stream_of_arn(arn) else {
                return bad(format!("KinesisStreamARN {arn} does not name a stream."));
            };
            source.insert("plugin".into(), T::String("stream".into()));
            source.insert("stream".into(), T::String(stream.into()));
            // Firehose starts reading a Kinesis source at its latest position.
            source.insert("start".into(), T::String("latest".into()));
        }
        _ => {
            source.insert("plugin".into(), T::String("direct-put".into()));
        }
    }
    let arn = str_of(dest, "BucketARN").unwrap_or_default();
    let Some(bucket) = bucket_name(arn) else {
        return bad(format!("BucketARN {arn} is not an S3 bucket ARN."));
    };
    let mut sink = match fh.buckets.get(bucket) {
        Some(t) => t.clone(),
        None => {
            let root = fh
                .buckets_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("buckets"));
            let mut t = Table::new();
            t.insert(
                "url".into(),
                T::String(root.join(bucket).to_string_lossy().into_owned()),
            );
            t
        }
    };
    sink.insert("plugin".into(), T::String("object-store".into()));
    sink.insert(
        "prefix".into(),
        T::String(str_of(dest, "Prefix").unwrap_or_default().into()),
    );
    // Firehose's own default error output: `<error type>/` at the top of the bucket.
    let error_prefix = str_of(dest, "ErrorOutputPrefix")
        .filter(|p| !p.is_empty())
        .unwrap_or("!{firehose:error-output-type}/");
    sink.insert("error_prefix".into(), T::String(error_prefix.into()));
    let compression = match str_of(dest, "CompressionFormat").unwrap_or("UNCOMPRESSED") {
        "UNCOMPRESSED" => "none",
        "GZIP" => "gzip",
        "Snappy" => "snappy",
        other => {
            return bad(format!(
                "CompressionFormat {other} is not supported by sluice (UNCOMPRESSED, GZIP and Snappy are)."
            ))
        }
    };
    sink.insert("compression".into(), T::String(compression.into()));
    if let Some(ext) = str_of(dest, "FileExtension").filter(|e| !e.is_empty()) {
        return bad(format!(
            "FileExtension {ext} is not supported by sluice (object names end with the compression's extension)."
        ));
    }
    if let Some(tz) = str_of(dest, "CustomTimeZone").filter(|t| !t.is_empty() && *t != "UTC") {
        return bad(format!(
            "CustomTimeZone {tz} is not supported by sluice (prefix times are UTC)."
        ));
    }
    if str_of(dest, "S3BackupMode").is_some_and(|m| m != "Disabled") {
        return bad("S3BackupMode Enabled is not supported by sluice.".into());
    }
    // Record format conversion: Parquet (the Glue table of `SchemaConfiguration` is not
    // read here; the schema is inferred from each object's records). Compression is then
    // the serializer's, inside the file.
    let conversion = get(dest, "DataFormatConversionConfiguration")
        .filter(|d| get(d, "Enabled").and_then(Value::as_bool).unwrap_or(true));
    if let Some(conv) = conversion {
        let serializer = get(conv, "OutputFormatConfiguration").and_then(|o| get(o, "Serializer"));
        if serializer.and_then(|s| get(s, "OrcSerDe")).is_some() {
            return bad("OrcSerDe is not supported by sluice (ParquetSerDe is).".into());
        }
        let parquet_compression = serializer
            .and_then(|s| get(s, "ParquetSerDe"))
            .and_then(|p| str_of(p, "Compression"))
            .unwrap_or("SNAPPY");
        let c = match parquet_compression {
            "SNAPPY" => "snappy",
            "GZIP" => "gzip",
            "UNCOMPRESSED" => "none",
            other => {
                return bad(format!(
                    "ParquetSerDe Compression {other} is not supported by sluice (SNAPPY, GZIP and UNCOMPRESSED are)."
                ))
            }
        };
        sink.insert("compression".into(), T::String(c.into()));
        sink.insert("format".into(), T::String("parquet".into()));
        sink.insert("schema".into(), T::String("infer".into()));
    }
    let mut delimiter = String::new();
    let mut query = None;
    for (kind, params) in processors(dest) {
        match kind.as_str() {
            "MetadataExtraction" => {
                if let Some(engine) = params.get("JsonParsingEngine") {
                    if !engine.starts_with("JQ-") {
                        return bad(format!("JsonParsingEngine {engine} is not supported."));
                    }
                }
                query = params.get("MetadataExtractionQuery").cloned();
            }
            "AppendDelimiterToRecord" => {
                delimiter = params
                    .get("Delimiter")
                    .cloned()
                    .unwrap_or_else(|| "\n".into());
            }
            other => {
                return bad(format!(
                    "Processor type {other} is not supported by sluice (MetadataExtraction and AppendDelimiterToRecord are)."
                ))
            }
        }
    }
    if conversion.is_none() {
        sink.insert("delimiter".into(), T::String(delimiter));
    }
    if dynamic_partitioning(dest) {
        if let Some(secs) = get(dest, "DynamicPartitioningConfiguration")
            .and_then(|d| get(d, "RetryOptions"))
            .and_then(|r| get(r, "DurationInSeconds"))
            .and_then(Value::as_u64)
        {
            sink.insert("retry_duration".into(), T::String(format!("{secs}s")));
        }
    }
    let (mib, secs) = buffering(dest);
    let mut buffer = Table::new();
    buffer.insert("size".into(), T::String(format!("{mib}MiB")));
    buffer.insert("interval".into(), T::String(format!("{secs}s")));
    let mut p = Table::new();
    p.insert("source".into(), T::Table(source));
    if let Some(q) = query.filter(|_| dynamic_partitioning(dest)) {
        let mut part = Table::new();
        part.insert("query".into(), T::String(q));
        p.insert("partitioning".into(), T::Table(part));
    }
    p.insert("buffer".into(), T::Table(buffer));
    p.insert("sink".into(), T::Table(sink));
    let mut pipelines = Table::new();
    pipelines.insert(rec.name.clone(), T::Table(p));
    let mut root = Table::new();
    root.insert("pipelines".into(), T::Table(pipelines));
    let body = toml::to_string(&root).map_err(|e| Unsupported(e.to_string()))?;
    Ok(format!(
        "# Generated by sluiced from CreateDeliveryStream/UpdateDestination of `{}`;\n# edits are replaced by the next UpdateDestination. DeleteDeliveryStream removes it.\n{body}",
        rec.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_seed_delivery_stream_becomes_a_pipeline_file() {
        let rec = Record {
            name: "events-to-lake".into(),
            kind: "KinesisStreamAsSource".into(),
            created_ms: 0,
            updated_ms: 0,
            version: 1,
            source: Some(
                json!({"KinesisStreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/events", "RoleARN": "arn:aws:iam::000000000000:role/x"}),
            ),
            destination: json!({
                "BucketARN": "arn:aws:s3:::lake",
                "Prefix": "type=!{partitionKeyFromQuery:type}/",
                "ErrorOutputPrefix": "kdferror/!{firehose:error-output-type}/",
                "BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": 60},
                "CompressionFormat": "GZIP",
                "DynamicPartitioningConfiguration": {"Enabled": true},
                "ProcessingConfiguration": {"Enabled": true, "Processors": [
                    {"Type": "MetadataExtraction", "Parameters": [
                        {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{type: .type}"},
                        {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]},
                    {"Type": "AppendDelimiterToRecord"}]},
            }),
            tags: BTreeMap::new(),
            encryption: None,
            encryption_calls: Vec::new(),
        };
        let fh = FirehoseConfig {
            buckets_dir: Some(PathBuf::from("/data/buckets")),
            buckets: BTreeMap::new(),
        };
        let t: toml::Table = toml::from_str(&pipeline_toml(&rec, &fh).unwrap()).unwrap();
        let p = &t["pipelines"]["events-to-lake"];
        assert_eq!(p["source"]["stream"].as_str(), Some("events"));
        assert_eq!(p["partitioning"]["query"].as_str(), Some("{type: .type}"));
        assert_eq!(p["buffer"]["size"].as_str(), Some("64MiB"));
        assert_eq!(p["sink"]["url"].as_str(), Some("/data/buckets/lake"));
        assert_eq!(p["sink"]["compression"].as_str(), Some("gzip"));
        assert_eq!(p["sink"]["delimiter"].as_str(), Some("\n"));
        // Record format conversion to Parquet: the serializer's compression, inside.
        let mut conv = rec.clone();
        conv.destination["DataFormatConversionConfiguration"] = json!({"Enabled": true,
            "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
            "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {"Compression": "GZIP"}}},
            "SchemaConfiguration": {"DatabaseName": "db", "TableName": "t"}});
        let t: toml::Table = toml::from_str(&pipeline_toml(&conv, &fh).unwrap()).unwrap();
        let sink = &t["pipelines"]["events-to-lake"]["sink"];
        assert_eq!(sink["format"].as_str(), Some("parquet"));
        assert_eq!(sink["schema"].as_str(), Some("infer"));
        assert_eq!(sink["compression"].as_str(), Some("gzip"));
        assert!(sink.get("delimiter").is_none());
        conv.destination["DataFormatConversionConfiguration"]["OutputFormatConfiguration"] =
            json!({"Serializer": {"OrcSerDe": {}}});
        assert!(pipeline_toml(&conv, &fh).is_err());
        let mut zip = rec.clone();
        zip.destination["CompressionFormat"] = json!("ZIP");
        assert!(pipeline_toml(&zip, &fh).is_err());
        assert_eq!(bucket_name("arn:aws:s3:::my.bucket-1"), Some("my.bucket-1"));
        assert_eq!(bucket_name("arn:aws:s3:::../x"), None);
        assert_eq!(bucket_name("arn:aws:s3:::.."), None);
        assert_eq!(
            stream_of_arn("arn:aws:kinesis:eu-west-1:1:stream/s"),
            Some("s")
        );
    }
}
