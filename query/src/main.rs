//! `sluice-query`, run as `sluiced query`: the lake of every pipeline with an object-store
//! sink as SQL tables, or S3 Select's dialect on one object. A binary of its own, so the
//! daemon's binary never links the query engine (DataFusion is most of a fresh build's
//! time); `sluiced query ARGS` runs this program with the same arguments. It reads the
//! daemon's configuration with the daemon's own loader and turns each pipeline with an
//! object-store sink into a table definition for the engine (`lib.rs`).

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use sluiced::config;
use sluiced::plugins::Registry;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// SQL over the lake: each pipeline with an object-store sink is a table named after it,
/// with its partition keys and time folders as columns; `--object` runs S3 Select's
/// dialect on one object. What was read goes to stderr.
#[derive(Parser)]
#[command(name = "sluiced query", version)]
struct QueryArgs {
    /// The daemon config file.
    #[arg(
        long,
        default_value = "/etc/sluice/sluiced.toml",
        env = "SLUICE_CONFIG"
    )]
    config: PathBuf,
    /// The SQL statement. On the lake, each pipeline is a table named after it (quote
    /// names with `-` or `.`: "events-to-lake"); on `--object`, the table is `s3object`.
    sql: String,
    /// How the answer is written.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Run S3 Select's dialect on one object — a local path or s3://bucket/key — instead
    /// of the lake.
    #[arg(long, value_name = "PATH_OR_S3_URL")]
    object: Option<String>,
    /// With --object: how its records are serialized (default: parquet for `.parquet`,
    /// csv for `.csv`, else json-lines).
    #[arg(long, value_enum)]
    input: Option<Input>,
    /// With --input csv: S3 Select's FileHeaderInfo.
    #[arg(long, value_enum, default_value_t = Header::Use)]
    csv_header: Header,
    /// With --input csv: the field delimiter.
    #[arg(long, default_value_t = ',')]
    field_delimiter: char,
    /// With --input csv: the quote character.
    #[arg(long, default_value_t = '"')]
    quote_character: char,
    /// With --object: its compression (default: from its name's extension).
    #[arg(long, value_enum)]
    compression: Option<Compression>,
    /// With an s3:// --object: the endpoint of an S3-compatible store (credentials come
    /// from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
    #[arg(long)]
    endpoint: Option<String>,
    /// With an s3:// --object: the region.
    #[arg(long)]
    region: Option<String>,
    /// Memory for sorts, aggregations and joins before they spill to temporary files
    /// (e.g. 512MiB, 4GiB).
    #[arg(long, default_value = "1GiB", value_parser = size)]
    memory_limit: u64,
    /// Do not print what was read (rows, objects listed, pruned and read) on stderr.
    #[arg(long, short)]
    quiet: bool,
}

/// `--memory-limit`: a size with binary units, as in the config files.
fn size(s: &str) -> Result<u64, sluiced::spec::UnitError> {
    sluiced::spec::ByteSize::parse(s).map(|b| b.0)
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
enum Input {
    JsonLines,
    JsonDocument,
    Csv,
    Parquet,
}

#[derive(Clone, Copy, ValueEnum)]
enum Header {
    Use,
    Ignore,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum Compression {
    None,
    Gzip,
    Zstd,
    Snappy,
}

fn main() -> ExitCode {
    let args = QueryArgs::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: QueryArgs) -> anyhow::Result<()> {
    let config_path = args.config.as_path();
    use sluice_query as q;
    let settings = q::Settings {
        format: match args.format {
            Format::Table => q::OutputFormat::Table,
            Format::Json => q::OutputFormat::Json,
            Format::Csv => q::OutputFormat::Csv,
        },
        memory_limit: usize::try_from(args.memory_limit).unwrap_or(usize::MAX),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let report = if let Some(object) = &args.object {
        let location = match q::S3Location::parse(object) {
            Some(mut s3) => {
                s3.endpoint = args.endpoint.clone();
                s3.region = args.region.clone();
                q::Location::S3(s3)
            }
            None if object.starts_with("s3://") => {
                anyhow::bail!("`{object}`: s3:// URLs need a bucket and a key")
            }
            None => q::Location::Dir(object.strip_prefix("file://").unwrap_or(object).into()),
        };
        let name = object
            .trim_end_matches(".gz")
            .trim_end_matches(".zst")
            .trim_end_matches(".snappy");
        let input = args.input.unwrap_or(if name.ends_with(".parquet") {
            Input::Parquet
        } else if name.ends_with(".csv") {
            Input::Csv
        } else {
            Input::JsonLines
        });
        let byte = |c: char, what: &str| -> anyhow::Result<u8> {
            u8::try_from(c)
                .ok()
                .filter(u8::is_ascii)
                .with_context(|| format!("{what} must be one ASCII character"))
        };
        let input = match input {
            Input::JsonLines => q::SelectInput::JsonLines,
            Input::JsonDocument => q::SelectInput::JsonDocument,
            Input::Parquet => q::SelectInput::Parquet,
            Input::Csv => q::SelectInput::Csv {
                header: match args.csv_header {
                    Header::Use => q::CsvHeader::Use,
                    Header::Ignore => q::CsvHeader::Ignore,
                    Header::None => q::CsvHeader::None,
                },
                delimiter: byte(args.field_delimiter, "--field-delimiter")?,
                quote: byte(args.quote_character, "--quote-character")?,
            },
        };
        let codec = args.compression.map(|c| match c {
            Compression::None => sluiced::spec::Compression::None,
            Compression::Gzip => sluiced::spec::Compression::Gzip,
            Compression::Zstd => sluiced::spec::Compression::Zstd,
            Compression::Snappy => sluiced::spec::Compression::Snappy,
        });
        q::select_object(&location, &input, codec, &args.sql, &settings, &mut out).map_err(flat)?
    } else {
        if args.input.is_some() || args.compression.is_some() || args.endpoint.is_some() {
            anyhow::bail!("--input, --compression and --endpoint apply to --object only");
        }
        let tables = lake_tables(config_path)?;
        q::query_lake(&tables, &args.sql, &settings, &mut out).map_err(flat)?
    };
    drop(out);
    if !args.quiet {
        eprintln!("{report}");
    }
    Ok(())
}

/// The engine's message alone: DataFusion's errors already spell out their causes, which
/// `{:#}` would print a second time.
fn flat(e: sluice_query::QueryError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Each pipeline with an object-store sink, as a table definition.
fn lake_tables(config_path: &Path) -> anyhow::Result<Vec<sluice_query::TableDef>> {
    use sluice_query as q;
    let set = config::load_daemon(config_path)
        .and_then(|(d, base)| {
            let registry = Registry::discover(&d.plugin_dirs);
            config::load_with(config_path, d, base, &registry)
        })
        .map_err(|errors| {
            let lines: Vec<String> = errors.0.iter().map(|e| format!("error: {e}")).collect();
            anyhow::anyhow!("the configuration is not valid:\n{}", lines.join("\n"))
        })?;
    let mut tables = Vec::new();
    for (name, p) in &set.pipelines {
        let Some(delivery) = &p.delivery else {
            continue;
        };
        if p.sink.plugin != "object-store" {
            continue;
        }
        let sink: sluice_plugin_object_store::ObjectStoreConfig =
            serde_json::from_str(&p.sink.config_json)
                .with_context(|| format!("pipeline `{name}`: the sink's options"))?;
        let url = sink.url.trim();
        let location = if let Some(mut s3) = q::S3Location::parse(url) {
            s3.endpoint = sink.endpoint;
            s3.region = sink.region;
            s3.access_key_id = sink.access_key_id;
            s3.secret_access_key = sink.secret_access_key;
            s3.path_style = sink.path_style;
            s3.allow_http = sink.allow_http;
            q::Location::S3(s3)
        } else {
            let dir = Path::new(url.strip_prefix("file://").unwrap_or(url));
            q::Location::Dir(set.base_dir.join(dir))
        };
        tables.push(q::TableDef {
            name: name.clone(),
            location,
            prefix: delivery.prefix_template.parts().to_vec(),
        });
    }
    Ok(tables)
}
