//! The `sluiced` binary: command-line parsing, logging setup, and the commands.

mod scaffold;
mod top;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use sluiced::config;
use sluiced::plugins::Registry;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// sluice: Kinesis Data Streams and Firehose on your own machine.
#[derive(Parser)]
#[command(name = "sluiced", version, about)]
struct Cli {
    /// The daemon config file.
    #[arg(
        long,
        global = true,
        default_value = "/etc/sluice/sluiced.toml",
        env = "SLUICE_CONFIG"
    )]
    config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `info,sluiced::pipeline=debug`.
    #[arg(long, global = true, env = "SLUICE_LOG", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Validate the whole configuration (plugin configs and jq programs included) without
    /// starting anything; exit 0 if valid, 1 if not.
    Check,
    /// List every plugin found (bundled and in plugin_dirs), and every refused library.
    Plugins,
    /// Show the running daemon's streams, shards and pipelines (records in and out,
    /// failures, restarts, buffers, sink health), read from its operator endpoint.
    Status,
    /// A live view of the running daemon (refreshed each second): per pipeline records/s
    /// in and out, failures, buffers, partitions, sink health; per shard records/s,
    /// records, bytes, oldest record. `q` quits.
    Top,
    /// Print records of a stream as they arrive, one per line.
    Tail {
        /// The stream.
        stream: String,
        /// Start at the oldest retained record instead of new ones.
        #[arg(long)]
        from_start: bool,
        /// Exit after this many records.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Print shell completions for SHELL (bash, zsh, fish, elvish, powershell) to stdout,
    /// e.g. `sluiced completions bash > /usr/share/bash-completion/completions/sluiced`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, e.g. `sluiced man | man -l -`.
    Man,
    /// Plugin author tools.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// SQL over the lake: each pipeline with an object-store sink is a table named after
    /// it, with its partition keys and time folders as columns; `--object` runs S3
    /// Select's dialect on one object. Runs the `sluice-query` program installed next to
    /// sluiced (`sluiced query --help` lists its options).
    #[command(disable_help_flag = true)]
    Query {
        /// The query's arguments (see `sluiced query --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<std::ffi::OsString>,
    },
    /// Put records read from stdin, one per line, into a stream.
    Put {
        /// The stream.
        stream: String,
        /// Partition key for every record (default: a different key per line).
        #[arg(long)]
        partition_key: Option<String>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Write a buildable plugin project (Rust or C) of KIND into DIR (default ./NAME):
    /// the code, its build file, and the SDK (Rust) or the ABI header and JSON helper (C).
    New {
        /// The plugin's name (`plugin = "NAME"` in pipeline files).
        name: String,
        /// The language.
        #[arg(long, value_enum)]
        lang: scaffold::Lang,
        /// The kind.
        #[arg(long, value_enum)]
        kind: scaffold::Kind,
        /// Where to write it (must not exist or be empty).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Prefixes each line with its syslog priority (`<3>` error … `<7>` debug), which journald
/// reads from a service's stderr (`SyslogLevelPrefix=`, on by default).
struct SyslogPrefix<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for SyslogPrefix<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    use tracing_subscriber::prelude::*;
    let targets: tracing_subscriber::filter::Targets = filter
        .parse()
        .with_context(|| format!("invalid log filter `{filter}`"))?;
    // Under journald, timestamps come from the journal: don't print them twice; and a
    // `<N>` prefix gives each line its priority (`journalctl -p warning` works).
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(targets);
    match (format, journald) {
        (LogFormat::Json, _) => registry.with(fmt.json().flatten_event(true)).init(),
        (LogFormat::Text, true) => registry
            .with(fmt.event_format(SyslogPrefix(
                tracing_subscriber::fmt::format().without_time(),
            )))
            .init(),
        (LogFormat::Text, false) => registry.with(fmt).init(),
    }
    Ok(())
}

/// Tunes glibc's malloc before any thread starts (BENCHMARKS.md, memory). glibc raises its
/// mmap threshold each time a large block is freed, after which the large, short-lived
/// blocks of every flush (encoder state, compressed body) are carved from the heap between
/// long-lived buffers and fragment it: a fixed 128 KiB threshold sends them to `mmap` and
/// back to the system. With that (and pooled buffer chunks) the arena count no longer
/// moves RSS, while too few arenas make the pipeline threads contend on malloc's locks:
/// 8 arenas measured best.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: called first thing in main, before any other thread exists.
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            unsafe { libc::mallopt(libc::M_ARENA_MAX, 8) };
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10) };
        }
    }
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_format, &cli.log_level) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&cli.config),
        Command::Check => return check(&cli.config),
        Command::Plugins => plugins(&cli.config),
        Command::Status => status(&cli.config),
        Command::Top => top(&cli.config),
        Command::Tail {
            stream,
            from_start,
            limit,
        } => tail(&cli.config, &stream, from_start, limit),
        Command::Query { args } => query(&cli.config, &args),
        Command::Put {
            stream,
            partition_key,
        } => put(&cli.config, &stream, partition_key.as_deref()),
        Command::Plugin {
            command:
                PluginCommand::New {
                    name,
                    lang,
                    kind,
                    dir,
                },
        } => scaffold::new_project(&name, lang, kind, dir.as_deref()).map(|(dir, build)| {
            println!(
                "wrote {} — build it with `cd {} && {build}`, then copy the .so into a folder of plugin_dirs and reload",
                dir.display(),
                dir.display()
            );
        }),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "sluiced",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => {
            use clap::CommandFactory as _;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .context("cannot write the man page")
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A plain message for the person at the terminal; the daemon's own failures
            // were logged where they happened.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// "1 pipeline", "2 pipelines".
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Prints rows as a table whose columns fit their widest cell (the last column is not
/// padded). Numbers are right-aligned.
fn table(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let numeric: Vec<bool> = (0..cols)
        .map(|c| {
            rows.len() > 1
                && rows.iter().skip(1).filter_map(|r| r.get(c)).all(|s| {
                    !s.is_empty()
                        && s.chars()
                            .all(|ch| ch.is_ascii_digit() || ch == '.' || ch == '-')
                })
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            if c + 1 == r.len() {
                line.push_str(cell);
            } else if numeric[c] {
                line.push_str(&format!("{cell:>w$}", w = width[c]));
            } else {
                line.push_str(&format!("{cell:<w$}", w = width[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// `sluiced query`: runs `sluice-query` (next to this executable, else on `PATH`) in this
/// process's place, with the config file in `SLUICE_CONFIG`. The query engine is a program
/// of its own so that the daemon never links it.
fn query(config: &Path, args: &[std::ffi::OsString]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let sibling = std::env::current_exe()
        .ok()
        .map(|p| p.with_file_name("sluice-query"))
        .filter(|p| p.is_file());
    let program = sibling.unwrap_or_else(|| PathBuf::from("sluice-query"));
    let err = std::process::Command::new(&program)
        .args(args)
        .env("SLUICE_CONFIG", config)
        .exec();
    if err.kind() == std::io::ErrorKind::NotFound {
        anyhow::bail!(
            "`sluiced query` needs the sluice-query program next to sluiced or on PATH (the Debian package installs it; from the source tree: cargo build --release -p sluice-query)"
        );
    }
    Err(err).with_context(|| format!("cannot run {}", program.display()))
}

fn run(config: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluiced")
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(sluiced::daemon::run(config.to_path_buf()))
}

fn check(path: &Path) -> ExitCode {
    let result = config::load_daemon(path).and_then(|(d, base)| {
        let registry = Registry::discover(&d.plugin_dirs);
        config::load_with(path, d, base, &registry)
    });
    match result {
        Ok(set) => {
            eprintln!(
                "{}: ok ({}, {})",
                path.display(),
                plural(set.streams.len(), "stream", "streams"),
                plural(set.pipelines.len(), "pipeline", "pipelines")
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn plugins(path: &Path) -> anyhow::Result<()> {
    let dirs = match config::load_daemon(path) {
        Ok((d, _)) => d.plugin_dirs,
        Err(e) => {
            tracing::warn!("{e}; listing bundled plugins only");
            Vec::new()
        }
    };
    let reg = Registry::discover(&dirs);
    let mut out = std::io::stdout().lock();
    let mut rows = vec![["NAME", "KIND", "VERSION", "ABI", "LIBRARY", "PATH"]
        .map(String::from)
        .to_vec()];
    let mut entries: Vec<_> = reg.entries().iter().collect();
    entries.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    for e in entries {
        let kind = if e.object_sink {
            "sink(obj)".to_string()
        } else {
            e.kind.to_string()
        };
        rows.push(vec![
            e.name.clone(),
            kind,
            e.version.clone(),
            format!("{}.{}", e.abi.0, e.abi.1),
            format!("{} {}", e.library, e.library_version),
            e.origin.to_string(),
        ]);
    }
    table(&mut out, &rows)?;
    if !reg.refused().is_empty() {
        writeln!(out, "\nREFUSED")?;
        for r in reg.refused() {
            writeln!(out, "{}", r.reason)?;
        }
        // Refusals are failures an operator must see in scripts too.
        anyhow::bail!(
            "{} refused (see REFUSED above)",
            plural(
                reg.refused().len(),
                "plugin library was",
                "plugin libraries were"
            )
        );
    }
    Ok(())
}

/// A minimal HTTP/1.1 GET against the operator listener (no client library needed).
fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3))
        .with_context(|| format!("cannot reach sluiced at {addr} (is it running?)"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // The admin server answers with Content-Length for JSON; chunked bodies are not used.
    Ok((code, body.to_string()))
}

fn status(path: &Path) -> anyhow::Result<()> {
    let (d, _) = config::load_daemon(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (code, body) = http_get(d.metrics.listen, "/admin/status")?;
    anyhow::ensure!(code == 200, "sluiced answered HTTP {code}: {body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).context("unexpected /admin/status answer")?;
    let mut out = std::io::stdout().lock();
    let txt = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let mut rows = vec![[
        "STREAM",
        "SHARD",
        "RECORDS",
        "BYTES",
        "OLDEST(s)",
        "LEASED BY",
    ]
    .map(String::from)
    .to_vec()];
    for st in v["streams"].as_array().into_iter().flatten() {
        for sh in st["shards"].as_array().into_iter().flatten() {
            let age = sh["oldest_record_age_seconds"]
                .as_f64()
                .map(|a| format!("{a:.0}"))
                .unwrap_or_else(|| "-".into());
            // On a JetStream stream: the pipelines of this node that hold the shard's lease.
            let leased = match st["storage"].as_str() {
                Some("jetstream") => {
                    let by: Vec<&str> = sh["leased_by"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p.as_str())
                        .collect();
                    if by.is_empty() {
                        "-".to_string()
                    } else {
                        by.join(",")
                    }
                }
                _ => String::new(),
            };
            rows.push(vec![
                txt(&st["name"]),
                txt(&sh["id"]),
                txt(&sh["records"]),
                txt(&sh["bytes"]),
                age,
                leased,
            ]);
        }
    }
    table(&mut out, &rows)?;
    writeln!(out)?;
    let mut rows = vec![[
        "PIPELINE",
        "STATE",
        "SINK",
        "IN",
        "OUT",
        "FAILED",
        "RESTARTS",
        "BUFFERED",
        "PARTS",
        "LAST ERROR",
    ]
    .map(String::from)
    .to_vec()];
    for p in v["pipelines"].as_array().into_iter().flatten() {
        let err = p["last_error"]
            .as_str()
            .or_else(|| p["sink_error"].as_str().filter(|_| p["sink"] == "failing"))
            .unwrap_or("");
        rows.push(vec![
            txt(&p["name"]),
            txt(&p["state"]),
            txt(&p["sink"]),
            txt(&p["records_in"]),
            txt(&p["records_out"]),
            txt(&p["records_failed"]),
            txt(&p["restarts"]),
            txt(&p["buffered_records"]),
            txt(&p["partitions"]),
            err.to_string(),
        ]);
    }
    table(&mut out, &rows)?;
    Ok(())
}

fn top(path: &Path) -> anyhow::Result<()> {
    let (d, _) = config::load_daemon(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let addr = d.metrics.listen;
    top::run(format!("{} ({addr})", path.display()), move || {
        let (code, body) = http_get(addr, "/admin/status")?;
        anyhow::ensure!(code == 200, "sluiced answered HTTP {code}");
        serde_json::from_str(&body).context("unexpected /admin/status answer")
    })
}

fn client(path: &Path) -> anyhow::Result<sluiced::client::KinesisClient> {
    let (d, _) = config::load_daemon(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let creds = d
        .api
        .credentials
        .first()
        .map(|c| (c.access_key_id.clone(), c.secret_access_key.clone()));
    Ok(sluiced::client::KinesisClient::new(d.api.listen, creds))
}

fn tail(path: &Path, stream: &str, from_start: bool, limit: Option<u64>) -> anyhow::Result<()> {
    use serde_json::json;
    let c = client(path)?;
    let kind = if from_start { "TRIM_HORIZON" } else { "LATEST" };
    let mut iters: Vec<String> = Vec::new();
    for shard in c.shards(stream)? {
        let v = c.call(
            "GetShardIterator",
            &json!({ "StreamName": stream, "ShardId": shard, "ShardIteratorType": kind }),
        )?;
        iters.push(v["ShardIterator"].as_str().unwrap_or_default().to_string());
    }
    let mut out = std::io::stdout().lock();
    let mut seen = 0u64;
    loop {
        let mut got = 0;
        for it in iters.iter_mut() {
            let v = c.call("GetRecords", &json!({ "ShardIterator": it, "Limit": 1000 }))?;
            for r in v["Records"].as_array().into_iter().flatten() {
                use base64::Engine as _;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(r["Data"].as_str().unwrap_or(""))
                    .unwrap_or_default();
                out.write_all(&data)?;
                out.write_all(b"\n")?;
                got += 1;
                seen += 1;
                if limit.is_some_and(|l| seen >= l) {
                    out.flush()?;
                    return Ok(());
                }
            }
            *it = v["NextShardIterator"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
        out.flush()?;
        if got == 0 {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

fn put(path: &Path, stream: &str, key: Option<&str>) -> anyhow::Result<()> {
    use base64::Engine as _;
    use serde_json::json;
    let c = client(path)?;
    let (mut batch, mut bytes, mut total, mut n) = (Vec::new(), 0usize, 0u64, 0u64);
    let flush = |batch: &mut Vec<serde_json::Value>| -> anyhow::Result<u64> {
        if batch.is_empty() {
            return Ok(0);
        }
        let v = c.call(
            "PutRecords",
            &json!({ "StreamName": stream, "Records": batch }),
        )?;
        let failed = v["FailedRecordCount"].as_u64().unwrap_or(0);
        anyhow::ensure!(failed == 0, "{failed} records failed: {}", v["Records"]);
        let k = batch.len() as u64;
        batch.clear();
        Ok(k)
    };
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        n += 1;
        let pk = key
            .map(str::to_string)
            .unwrap_or_else(|| format!("line-{n}"));
        bytes += line.len() + pk.len();
        batch.push(json!({ "Data": base64::engine::general_purpose::STANDARD.encode(&line), "PartitionKey": pk }));
        if batch.len() == 500 || bytes > 4 << 20 {
            total += flush(&mut batch)?;
            bytes = 0;
        }
    }
    total += flush(&mut batch)?;
    eprintln!(
        "put {} into {stream}",
        plural(total as usize, "record", "records")
    );
    Ok(())
}
