//! SQL over the lake sluice writes: `sluiced query`.
//!
//! Each pipeline with an object-store sink is a table named after the pipeline. Its
//! objects (NDJSON — plain, gzip, zstd or snappy — and Parquet) are found by listing
//! under the pipeline's prefix; the prefix's partition keys and time folders become
//! columns, and filters on them drop objects before any is opened. The engine is Apache
//! DataFusion, which streams: a lake bigger than memory is scanned in batches, and
//! `LIMIT` stops reading early. The same machinery answers S3 Select's dialect on one
//! object ([`select_object`]).
//!
//! The program `sluice-query` (`main.rs`), which `sluiced query` runs in its place, is
//! this crate's only user: the daemon neither links nor names it (DataFusion is most of a
//! fresh build's time).

mod decompress;
pub mod layout;
mod output;
mod table;

pub use output::OutputFormat;

use datafusion::arrow::datatypes::Schema;
use datafusion::common::TableReference;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::error::DataFusionError;
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sluiced::spec::Compression;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use table::{Format, LakeTable, Objects, ScanStats};

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL was refused or failed while running.
    #[error("{0}")]
    Sql(#[from] DataFusionError),
    /// The store could not be listed or read.
    #[error("{0}")]
    Store(#[from] object_store::Error),
    /// Records could not be converted or written.
    #[error("{0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// The answer could not be written.
    #[error("cannot write the answer: {0}")]
    Output(#[from] std::io::Error),
    /// Sampled records have no common schema.
    #[error("cannot infer the records' schema: {0}")]
    Schema(String),
    /// A lake location or object that cannot be used.
    #[error("{0}")]
    Input(String),
}

/// Where a lake (or one object) is.
#[derive(Debug, Clone)]
pub enum Location {
    /// A local directory.
    Dir(PathBuf),
    /// An S3 bucket and key prefix.
    S3(S3Location),
}

/// An S3 (or S3-compatible) location and how to reach it; unset credentials come from
/// the usual `AWS_*` environment, as for the sink.
#[derive(Debug, Clone, Default)]
pub struct S3Location {
    /// Bucket.
    pub bucket: String,
    /// Key prefix (no leading `/`).
    pub prefix: String,
    /// Endpoint of an S3-compatible store.
    pub endpoint: Option<String>,
    /// Region (default `us-east-1`).
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Path-style requests (default: when an endpoint is set).
    pub path_style: Option<bool>,
    /// Plain HTTP (default: when the endpoint starts with `http://`).
    pub allow_http: Option<bool>,
}

impl S3Location {
    /// Parses `s3://bucket/prefix`.
    pub fn parse(url: &str) -> Option<S3Location> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        (!bucket.is_empty()).then(|| S3Location {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            ..S3Location::default()
        })
    }
}

/// A pipeline's lake: its name (the table's), where its sink writes, and its prefix.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// The pipeline's name.
    pub name: String,
    /// Where the objects are.
    pub location: Location,
    /// The prefix template's parts (`sluiced::spec::Template::parts`).
    pub prefix: Vec<sluiced::spec::Part>,
}

/// What a query read, per table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// The table.
    pub name: String,
    /// Its objects found by listing (summed over scans).
    pub listed: usize,
    /// Objects left after partition pruning.
    pub scanned: usize,
    /// Objects actually opened (fewer when `LIMIT` stopped early).
    pub opened: usize,
}

/// What a query did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Rows answered.
    pub rows: usize,
    /// Per table, in definition order (only tables the query scanned).
    pub tables: Vec<TableReport>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} row(s)", self.rows)?;
        for t in &self.tables {
            write!(
                f,
                "; {}: {} object(s) listed, {} after partition pruning, {} read",
                t.name, t.listed, t.scanned, t.opened
            )?;
        }
        Ok(())
    }
}

/// The store and root a location names.
fn open_store(location: &Location) -> Result<(Arc<dyn ObjectStore>, Path), QueryError> {
    match location {
        Location::Dir(dir) => {
            if !dir.is_dir() {
                // Nothing delivered yet: an empty table, not an error.
                return Ok((
                    Arc::new(object_store::memory::InMemory::new()),
                    Path::default(),
                ));
            }
            let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| QueryError::Input(format!("{}: {e}", dir.display())))?;
            Ok((Arc::new(fs), Path::default()))
        }
        Location::S3(s3) => open_s3(s3),
    }
}

#[cfg(feature = "s3")]
fn open_s3(s3: &S3Location) -> Result<(Arc<dyn ObjectStore>, Path), QueryError> {
    use object_store::aws::AmazonS3Builder;
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(&s3.bucket)
        .with_region(s3.region.clone().unwrap_or_else(|| "us-east-1".into()));
    if let Some(e) = &s3.endpoint {
        b = b.with_endpoint(e.clone());
    }
    if let Some(k) = &s3.access_key_id {
        b = b.with_access_key_id(k.clone());
    }
    if let Some(k) = &s3.secret_access_key {
        b = b.with_secret_access_key(k.clone());
    }
    let allow_http = s3.allow_http.unwrap_or_else(|| {
        s3.endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
    });
    b = b
        .with_virtual_hosted_style_request(!s3.path_style.unwrap_or(s3.endpoint.is_some()))
        .with_allow_http(allow_http);
    let store = b.build()?;
    Ok((Arc::new(store), key_path(&s3.prefix)?))
}

/// A key as the store names it: taken as written (`%2F` in a Hive folder stays `%2F`).
fn key_path(key: &str) -> Result<Path, QueryError> {
    Path::parse(key.trim_matches('/')).map_err(|e| QueryError::Input(format!("`{key}`: {e}")))
}

#[cfg(not(feature = "s3"))]
fn open_s3(_: &S3Location) -> Result<(Arc<dyn ObjectStore>, Path), QueryError> {
    Err(QueryError::Input(
        "this sluiced was built without S3 support (cargo feature `s3`)".into(),
    ))
}

/// How a query runs and answers.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How the answer is written.
    pub format: OutputFormat,
    /// Memory for sorts, aggregations and joins; past it they spill to temporary files
    /// (or fail with a clear error where they cannot).
    pub memory_limit: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            format: OutputFormat::Table,
            memory_limit: 1 << 30,
        }
    }
}

/// A session as both modes want it: identifiers keep their case (JSON field names are
/// case-sensitive), objects are read whole (decompressed objects cannot be split), and
/// memory is bounded.
fn session(settings: &Settings) -> Result<SessionContext, QueryError> {
    let mut config = SessionConfig::new()
        .with_repartition_file_scans(false)
        .with_information_schema(true);
    config.options_mut().sql_parser.enable_ident_normalization = false;
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_limit(settings.memory_limit, 1.0)
        .build_arc()?;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// A registered table: its store, where it reads and how many objects it opened.
struct Registered {
    name: String,
    stats: Arc<ScanStats>,
    opened: Arc<decompress::Opened>,
}

fn runtime() -> Result<tokio::runtime::Runtime, QueryError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

#[allow(clippy::too_many_arguments)]
/// Registers one table over `objects` in `store`; the schema is inferred from a sample
/// of its NDJSON objects (and read from its Parquet objects).
async fn register(
    ctx: &SessionContext,
    index: usize,
    names: &[String],
    store: Arc<dyn ObjectStore>,
    codec: Option<Compression>,
    objects: Objects,
    format: Format,
    schema: Option<Schema>,
) -> Result<Registered, QueryError> {
    let opened = Arc::new(decompress::Opened::default());
    let wrapped: Arc<dyn ObjectStore> = Arc::new(decompress::Decompressing::new(
        store,
        Arc::clone(&opened),
        codec,
    ));
    let url = ObjectStoreUrl::parse(format!("sluice{index}://lake"))?;
    ctx.register_object_store(url.as_ref(), Arc::clone(&wrapped));
    let listed = objects.list(wrapped.as_ref()).await?;
    let schema = match schema {
        Some(s) => s,
        None => {
            let mut schema = table::infer_json_schema(wrapped.as_ref(), &listed).await?;
            // Each Parquet object carries its schema; objects written at different times
            // may disagree (an inferred column that held integers, then text): the table
            // takes a type every object's values convert to.
            use datafusion::datasource::file_format::FileFormat;
            let f = datafusion::datasource::file_format::parquet::ParquetFormat::default();
            let state = ctx.state();
            for o in listed
                .iter()
                .filter(|o| o.meta.location.as_ref().ends_with(".parquet"))
                .take(MAX_PARQUET_FOOTERS)
            {
                let one = f
                    .infer_schema(&state, &wrapped, std::slice::from_ref(&o.meta))
                    .await?;
                schema = if schema.fields().is_empty() {
                    one.as_ref().clone()
                } else {
                    table::merge_lenient(&schema, &one)
                };
            }
            schema
        }
    };
    // Opening for the sample is not part of the query's reads.
    opened.clear();
    let stats = Arc::new(ScanStats::default());
    let table = Arc::new(LakeTable::new(
        url,
        &objects,
        listed,
        format,
        &schema,
        Arc::clone(&stats),
    ));
    for name in names {
        // Exactly as written: the SQL keeps identifiers' case.
        ctx.register_table(TableReference::bare(name.as_str()), table.clone())?;
    }
    Ok(Registered {
        name: names.first().cloned().unwrap_or_default(),
        stats,
        opened,
    })
}

/// Runs `sql` over the lakes of `tables`, writing the answer to `out`.
pub fn query_lake(
    tables: &[TableDef],
    sql: &str,
    settings: &Settings,
    out: &mut dyn std::io::Write,
) -> Result<Report, QueryError> {
    let rt = runtime()?;
    rt.block_on(async {
        let ctx = session(settings)?;
        let mut registered = Vec::new();
        for (i, t) in tables.iter().enumerate() {
            let (store, root) = open_store(&t.location)?;
            let layout = layout::Layout::new(&t.prefix, &t.name)
                .map_err(|e| QueryError::Input(format!("pipeline `{}`: prefix: {e}", t.name)))?;
            let objects = Objects::Layout { root, layout };
            registered.push(
                register(
                    &ctx,
                    i,
                    std::slice::from_ref(&t.name),
                    store,
                    None,
                    objects,
                    Format::Auto,
                    None,
                )
                .await?,
            );
        }
        let rows = run(&ctx, sql, settings.format, out, false).await?;
        Ok(report(rows, &registered))
    })
}

fn report(rows: usize, registered: &[Registered]) -> Report {
    Report {
        rows,
        tables: registered
            .iter()
            .filter(|r| r.stats.listed.load(Ordering::Relaxed) > 0 || r.opened.count() > 0)
            .map(|r| TableReport {
                name: r.name.clone(),
                listed: r.stats.listed.load(Ordering::Relaxed),
                scanned: r.stats.scanned.load(Ordering::Relaxed),
                opened: r.opened.count(),
            })
            .collect(),
    }
}

async fn run(
    ctx: &SessionContext,
    sql: &str,
    format: OutputFormat,
    out: &mut dyn std::io::Write,
    s3_select_names: bool,
) -> Result<usize, QueryError> {
    let df = ctx.sql(sql).await?;
    let stream = df.execute_stream().await?;
    output::write(stream, format, out, s3_select_names).await
}

/// S3 Select's input serialization of the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectInput {
    /// JSON `Type: LINES`: one record per line.
    JsonLines,
    /// JSON `Type: DOCUMENT`: the object is one JSON value (an array's elements are the
    /// records) or several values one after another.
    JsonDocument,
    /// CSV.
    Csv {
        /// `FileHeaderInfo`.
        header: CsvHeader,
        /// `FieldDelimiter`.
        delimiter: u8,
        /// `QuoteCharacter`.
        quote: u8,
    },
    /// Parquet.
    Parquet,
}

/// S3 Select's `FileHeaderInfo` for CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvHeader {
    /// The first line names the columns.
    Use,
    /// The first line is skipped; columns are `_1`, `_2`, …
    Ignore,
    /// There is no header; columns are `_1`, `_2`, …
    None,
}

/// Runs an S3 Select statement (`SELECT ... FROM s3object s ...`) on one object — a local
/// path or an object of `location` — decompressed by `codec` (or by its extension).
pub fn select_object(
    location: &Location,
    input: &SelectInput,
    codec: Option<Compression>,
    sql: &str,
    settings: &Settings,
    out: &mut dyn std::io::Write,
) -> Result<Report, QueryError> {
    let rt = runtime()?;
    rt.block_on(async {
        let ctx = session(settings)?;
        let (store, key): (Arc<dyn ObjectStore>, Path) = match location {
            Location::Dir(file) => {
                let dir = file
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                let name = file.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                    QueryError::Input(format!("{}: not a file name", file.display()))
                })?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| QueryError::Input(format!("{}: {e}", file.display())))?;
                (Arc::new(fs), Path::from(name))
            }
            Location::S3(s3) => {
                let mut whole = s3.clone();
                whole.prefix = String::new();
                let (store, _) = open_s3(&whole)?;
                (store, key_path(&s3.prefix)?)
            }
        };
        let meta = store.head(&key).await?;
        let codec = codec.unwrap_or_else(|| decompress::codec_of(key.as_ref()));
        let (format_, schema) = select_schema(&store, &meta, input, codec, &ctx).await?;
        let names = ["s3object", "S3Object", "S3OBJECT"].map(String::from);
        let reg = register(
            &ctx,
            0,
            &names,
            store,
            Some(codec),
            Objects::Single(meta),
            format_,
            schema,
        )
        .await?;
        let rows = run(&ctx, sql, settings.format, out, true).await?;
        Ok(report(rows, std::slice::from_ref(&reg)))
    })
}

/// The format and, where it cannot be sampled like a lake, the schema of one object.
async fn select_schema(
    store: &Arc<dyn ObjectStore>,
    meta: &object_store::ObjectMeta,
    input: &SelectInput,
    codec: Compression,
    ctx: &SessionContext,
) -> Result<(Format, Option<Schema>), QueryError> {
    use datafusion::arrow::datatypes::{DataType, Field};
    let wrapped = decompress::Decompressing::new(
        Arc::clone(store),
        Arc::new(decompress::Opened::default()),
        Some(codec),
    );
    Ok(match input {
        SelectInput::JsonLines => (Format::Json { array: false }, None),
        SelectInput::Parquet => {
            use datafusion::datasource::file_format::FileFormat;
            let f = datafusion::datasource::file_format::parquet::ParquetFormat::default();
            let s = f
                .infer_schema(&ctx.state(), store, std::slice::from_ref(meta))
                .await?;
            (Format::Auto, Some(s.as_ref().clone()))
        }
        SelectInput::JsonDocument => {
            let bytes = read_all(&wrapped, &meta.location).await?;
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
            let values: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&bytes)
                .into_iter::<serde_json::Value>()
                .collect::<Result<_, _>>()
                .map_err(|e| QueryError::Input(format!("{}: not JSON: {e}", meta.location)))?;
            let records: Vec<&serde_json::Value> = if first == Some(b'[') {
                values
                    .iter()
                    .flat_map(|v| v.as_array().into_iter().flatten())
                    .collect()
            } else {
                values.iter().collect()
            };
            let schema = datafusion::arrow::json::reader::infer_json_schema_from_iterator(
                records.into_iter().map(Ok),
            )
            .map_err(|e| QueryError::Schema(e.to_string()))?;
            (
                Format::Json {
                    array: first == Some(b'['),
                },
                Some(schema),
            )
        }
        SelectInput::Csv {
            header,
            delimiter,
            quote,
        } => {
            let bytes = read_head_line(&wrapped, &meta.location).await?;
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(*delimiter)
                .quote(*quote)
                .has_headers(false)
                .flexible(true)
                .from_reader(&bytes[..]);
            let first: Vec<String> = match reader.records().next() {
                Some(Ok(r)) => r.iter().map(String::from).collect(),
                Some(Err(e)) => {
                    return Err(QueryError::Input(format!(
                        "{}: not CSV: {e}",
                        meta.location
                    )))
                }
                None => Vec::new(),
            };
            let names: Vec<String> = match header {
                CsvHeader::Use => first,
                CsvHeader::Ignore | CsvHeader::None => {
                    (1..=first.len()).map(|i| format!("_{i}")).collect()
                }
            };
            // S3 Select reads every CSV value as text (CAST turns it into numbers).
            let schema = Schema::new(
                names
                    .iter()
                    .map(|n| Field::new(n, DataType::Utf8, true))
                    .collect::<Vec<_>>(),
            );
            let options = datafusion::common::config::CsvOptions {
                has_header: Some(*header != CsvHeader::None),
                delimiter: *delimiter,
                quote: *quote,
                ..Default::default()
            };
            (Format::Csv(Box::new(options)), Some(schema))
        }
    })
}

/// Parquet objects whose schema (footer) a table reads to find its columns.
const MAX_PARQUET_FOOTERS: usize = 256;

/// Most bytes of a JSON DOCUMENT object read to infer its schema.
const MAX_DOCUMENT: usize = 256 << 20;

async fn read_all(store: &dyn ObjectStore, location: &Path) -> Result<Vec<u8>, QueryError> {
    use futures::TryStreamExt;
    let mut stream = store.get(location).await?.into_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.try_next().await? {
        buf.extend_from_slice(&chunk);
        if buf.len() > MAX_DOCUMENT {
            return Err(QueryError::Input(format!(
                "{location}: a JSON DOCUMENT object above {} MiB is not read (use JSON LINES)",
                MAX_DOCUMENT >> 20
            )));
        }
    }
    Ok(buf)
}

async fn read_head_line(store: &dyn ObjectStore, location: &Path) -> Result<Vec<u8>, QueryError> {
    use futures::TryStreamExt;
    let mut stream = store.get(location).await?.into_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.try_next().await? {
        buf.extend_from_slice(&chunk);
        if buf.contains(&b'\n') || buf.len() > (1 << 20) {
            break;
        }
    }
    Ok(buf)
}
