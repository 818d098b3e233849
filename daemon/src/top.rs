//! `sluiced top`: a live terminal view of a running daemon, like `vector top`. Every
//! second it reads `/admin/status` from the operator endpoint and shows each pipeline
//! (state, sink health, records/s in and out, failures, restarts, buffered records and
//! bytes, open partitions, records left to deliver from its stream, last error) and each
//! shard (records/s in, records, bytes, age of the oldest record, the largest lag of the
//! pipelines reading it). Rates are differences between two reads. `q`, Esc or Ctrl-C quits.
//! A module of the binary (`main.rs`), not of the library.

use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Row, Table};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Counters of the previous read, for rates: (records in, records out) per pipeline and
/// records per shard.
#[derive(Default)]
struct Previous {
    at: Option<Instant>,
    pipelines: HashMap<String, (u64, u64)>,
    shards: HashMap<String, u64>,
}

fn num(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn rate(now: u64, before: Option<u64>, secs: f64) -> String {
    match before {
        Some(b) if secs > 0.0 => format!("{:.0}", now.saturating_sub(b) as f64 / secs),
        _ => "-".to_string(),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Runs the view until the user quits; `fetch` reads `/admin/status` as JSON.
pub fn run(
    title: String,
    mut fetch: impl FnMut() -> anyhow::Result<serde_json::Value>,
) -> anyhow::Result<()> {
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        let mut prev = Previous::default();
        let mut status: Result<serde_json::Value, String> = Err("connecting…".into());
        let mut last_read = Instant::now() - Duration::from_secs(10);
        let mut rates = (HashMap::new(), HashMap::new());
        loop {
            if last_read.elapsed() >= Duration::from_secs(1) {
                last_read = Instant::now();
                status = fetch().map_err(|e| format!("{e:#}"));
                if let Ok(v) = &status {
                    rates = update(&mut prev, v);
                }
            }
            terminal.draw(|f| draw(f, &title, &status, &rates))?;
            if event::poll(Duration::from_millis(200))? {
                if let Event::Key(k) = event::read()? {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                        return Ok(());
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result
}

type Rates = (HashMap<String, (String, String)>, HashMap<String, String>);

/// New rates from a read, keeping its counters for the next.
fn update(prev: &mut Previous, v: &serde_json::Value) -> Rates {
    let now = Instant::now();
    let secs = prev.at.map_or(0.0, |t| now.duration_since(t).as_secs_f64());
    let mut p_rates = HashMap::new();
    let mut pipelines = HashMap::new();
    for p in v["pipelines"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("").to_string();
        let (i, o) = (num(&p["records_in"]), num(&p["records_out"]));
        let before = prev.pipelines.get(&name).copied();
        p_rates.insert(
            name.clone(),
            (
                rate(i, before.map(|b| b.0), secs),
                rate(o, before.map(|b| b.1), secs),
            ),
        );
        pipelines.insert(name, (i, o));
    }
    let mut s_rates = HashMap::new();
    let mut shards = HashMap::new();
    for st in v["streams"].as_array().into_iter().flatten() {
        for sh in st["shards"].as_array().into_iter().flatten() {
            let key = format!(
                "{}/{}",
                st["name"].as_str().unwrap_or(""),
                sh["id"].as_str().unwrap_or("")
            );
            // The last sequence number grows with every record, whatever retention trims.
            let seq = sh["last_sequence_number"]
                .as_str()
                .and_then(|s| s.get(2..))
                .and_then(|s| s.parse::<u128>().ok())
                .map(|v| v as u64)
                .unwrap_or(0);
            s_rates.insert(key.clone(), rate(seq, prev.shards.get(&key).copied(), secs));
            shards.insert(key, seq);
        }
    }
    prev.at = Some(now);
    prev.pipelines = pipelines;
    prev.shards = shards;
    (p_rates, s_rates)
}

fn draw(
    f: &mut ratatui::Frame,
    title: &str,
    status: &Result<serde_json::Value, String>,
    rates: &Rates,
) {
    let area = f.area();
    let v = match status {
        Ok(v) => v,
        Err(e) => {
            let block = Block::bordered().title(format!(" sluiced top — {title} "));
            f.render_widget(
                ratatui::widgets::Paragraph::new(format!("cannot read the daemon: {e}"))
                    .block(block),
                area,
            );
            return;
        }
    };
    let pipelines: Vec<&serde_json::Value> =
        v["pipelines"].as_array().into_iter().flatten().collect();
    let shard_count: usize = v["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["shards"].as_array().map_or(0, Vec::len))
        .sum();
    let [top, bottom] = Layout::vertical([
        Constraint::Length(pipelines.len() as u16 + 3),
        Constraint::Min(shard_count.min(40) as u16 + 3),
    ])
    .areas(area);
    let head = Style::default().add_modifier(Modifier::BOLD);
    // Records each pipeline reading a stream has yet to deliver, over all shards.
    let mut lag: HashMap<&str, u64> = HashMap::new();
    for c in v["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|st| st["shards"].as_array().into_iter().flatten())
        .flat_map(|sh| sh["consumers"].as_array().into_iter().flatten())
    {
        *lag.entry(c["pipeline"].as_str().unwrap_or("")).or_default() += num(&c["lag_records"]);
    }
    let rows = pipelines.iter().map(|p| {
        let name = p["name"].as_str().unwrap_or("");
        let (rin, rout) = rates
            .0
            .get(name)
            .cloned()
            .unwrap_or(("-".into(), "-".into()));
        let sink = p["sink"].as_str().unwrap_or("");
        let err = p["last_error"]
            .as_str()
            .or_else(|| p["sink_error"].as_str().filter(|_| sink == "failing"))
            .unwrap_or("");
        Row::new(vec![
            Cell::from(name.to_string()),
            Cell::from(p["state"].as_str().unwrap_or("").to_string()),
            Cell::from(sink.to_string()),
            Cell::from(Line::from(rin).right_aligned()),
            Cell::from(Line::from(rout).right_aligned()),
            Cell::from(Line::from(num(&p["records_failed"]).to_string()).right_aligned()),
            Cell::from(Line::from(num(&p["restarts"]).to_string()).right_aligned()),
            Cell::from(Line::from(num(&p["buffered_records"]).to_string()).right_aligned()),
            Cell::from(Line::from(bytes(num(&p["buffered_bytes"]))).right_aligned()),
            Cell::from(Line::from(num(&p["partitions"]).to_string()).right_aligned()),
            Cell::from(
                Line::from(lag.get(name).map_or("-".to_string(), |l| l.to_string()))
                    .right_aligned(),
            ),
            Cell::from(err.to_string()),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(22),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new([
            "PIPELINE",
            "STATE",
            "SINK",
            "IN/s",
            "OUT/s",
            "FAILED",
            "RESTARTS",
            "BUFFERED",
            "BYTES",
            "PARTS",
            "LAG",
            "LAST ERROR",
        ])
        .style(head),
    )
    .block(Block::bordered().title(format!(
        " sluiced top — {title} — {} — q quits ",
        v["version"].as_str().unwrap_or("")
    )));
    f.render_widget(table, top);
    let mut shard_rows = Vec::new();
    for st in v["streams"].as_array().into_iter().flatten() {
        for sh in st["shards"].as_array().into_iter().flatten() {
            let stream = st["name"].as_str().unwrap_or("");
            let id = sh["id"].as_str().unwrap_or("");
            let r = rates
                .1
                .get(&format!("{stream}/{id}"))
                .cloned()
                .unwrap_or("-".into());
            let age = sh["oldest_record_age_seconds"]
                .as_f64()
                .map(|a| format!("{a:.0} s"))
                .unwrap_or_else(|| "-".into());
            // The most behind of the pipelines reading this shard.
            let lag = sh["consumers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| num(&c["lag_records"]))
                .max()
                .map_or("-".to_string(), |l| l.to_string());
            shard_rows.push(Row::new(vec![
                Cell::from(stream.to_string()),
                Cell::from(id.to_string()),
                Cell::from(Line::from(r).right_aligned()),
                Cell::from(Line::from(num(&sh["records"]).to_string()).right_aligned()),
                Cell::from(Line::from(bytes(num(&sh["bytes"]))).right_aligned()),
                Cell::from(Line::from(age).right_aligned()),
                Cell::from(Line::from(lag).right_aligned()),
            ]));
        }
    }
    let shards = Table::new(
        shard_rows,
        [
            Constraint::Length(22),
            Constraint::Length(22),
            Constraint::Length(9),
            Constraint::Length(12),
            Constraint::Length(11),
            Constraint::Length(10),
            Constraint::Length(9),
        ],
    )
    .header(
        Row::new([
            "STREAM", "SHARD", "IN/s", "RECORDS", "BYTES", "OLDEST", "LAG",
        ])
        .style(head),
    )
    .block(Block::bordered().title(" shards "));
    f.render_widget(shards, bottom);
}
