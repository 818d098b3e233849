//! Example third-party plugin library, loaded as a `.so` in tests and benchmarks.
//!
//! - `passthrough` (transform): outputs every input unchanged, the way any real transform
//!   copies through the host's builder — the baseline for measuring ABI overhead.
//! - `chaos` (transform): passes records through but panics (or fails) on records that
//!   contain a marker string, to show that a faulty plugin only fails its own pipeline.
//! - `flaky` (record sink): appends records to a file, but every `fail_every`-th batch it
//!   stores only the even-indexed records and reports the others as a retryable partial
//!   failure — to show that the host resubmits exactly the failed records.
//! - `replay` (replayable source, ABI 1.1): numbered records over a few partitions, with a
//!   checkpoint file written on every delivered ack, and each record's position — what a
//!   Kafka or NATS source would do — so the host gives it exactly-once objects.
//! - `late` (record sink): keeps completions past `destroy`, to show the host's handle checks.
//!
//! Build the `.so` with `cargo build -p sluice-example-passthrough --features dylib`.

use sluice_plugin_api::{
    declare_library, Batch, Completion, Context, Error, Metric, NewRecord, Output, Plugin, Poll,
    Position, Sink, Source, Submitted, Transform,
};
use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant};

/// `passthrough` takes no options.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassthroughConfig {}

/// Passes every record through unchanged, counting batches in a plugin metric
/// (`sluice_plugin_passthrough_batches_total`) to show the host metrics API.
#[derive(Default)]
pub struct Passthrough {
    batches: Option<Metric>,
}

impl Passthrough {
    /// An instance without metrics (for direct calls in benchmarks).
    pub fn new() -> Self {
        Passthrough { batches: None }
    }
}

impl Plugin for Passthrough {
    type Config = PassthroughConfig;
    fn create(_: PassthroughConfig, ctx: &Context) -> Result<Self, Error> {
        let batches = ctx.counter("passthrough_batches", "batches passed through")?;
        Ok(Passthrough {
            batches: Some(batches),
        })
    }
}

impl Transform for Passthrough {
    fn transform(&mut self, input: &Batch<'_>, out: &mut Output<'_>) -> Result<(), Error> {
        for i in 0..input.len() {
            out.keep(i);
        }
        if let Some(m) = &self.batches {
            m.record(1.0);
        }
        Ok(())
    }
}

/// `chaos` options.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosConfig {
    /// Panic when a record contains this string.
    #[serde(default)]
    pub panic_on: Option<String>,
    /// Return a fatal error when a record contains this string.
    #[serde(default)]
    pub fail_on: Option<String>,
    /// Kill the whole process (`abort`, like a segfault in C code) when a record contains
    /// this string.
    #[serde(default)]
    pub abort_on: Option<String>,
}

/// Passes records through, panicking or failing on marked ones.
pub struct Chaos {
    panic_on: Option<Vec<u8>>,
    fail_on: Option<Vec<u8>>,
    abort_on: Option<Vec<u8>>,
}

impl Plugin for Chaos {
    type Config = ChaosConfig;
    fn create(cfg: ChaosConfig, _: &Context) -> Result<Self, Error> {
        if cfg.panic_on.as_deref() == Some("") {
            return Err(Error::config_field("panic_on", "must not be empty"));
        }
        Ok(Chaos {
            panic_on: cfg.panic_on.map(String::into_bytes),
            fail_on: cfg.fail_on.map(String::into_bytes),
            abort_on: cfg.abort_on.map(String::into_bytes),
        })
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

impl Transform for Chaos {
    fn transform(&mut self, input: &Batch<'_>, out: &mut Output<'_>) -> Result<(), Error> {
        for (i, r) in input.iter().enumerate() {
            if let Some(a) = &self.abort_on {
                if contains(r.data, a) {
                    std::process::abort();
                }
            }
            if let Some(p) = &self.panic_on {
                if contains(r.data, p) {
                    panic!("chaos: record {} contains the panic marker", r.sequence);
                }
            }
            if let Some(f) = &self.fail_on {
                if contains(r.data, f) {
                    return Err(Error::fatal(format_args!(
                        "chaos: record {} contains the fail marker",
                        r.sequence
                    )));
                }
            }
            out.keep(i);
        }
        Ok(())
    }
}

/// `flaky` options.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlakyConfig {
    /// The file to append to.
    pub path: std::path::PathBuf,
    /// Fail partially on every this-many-th batch.
    pub fail_every: u32,
}

/// A record sink that fails partially on purpose.
pub struct Flaky {
    file: std::fs::File,
    fail_every: u32,
    batches: u32,
}

impl Plugin for Flaky {
    type Config = FlakyConfig;
    fn create(cfg: FlakyConfig, ctx: &Context) -> Result<Self, Error> {
        if cfg.fail_every == 0 {
            return Err(Error::config_field("fail_every", "must be at least 1"));
        }
        let path = ctx.resolve_path(&cfg.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::fatal(format_args!("{}: {e}", dir.display())))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::fatal(format_args!("{}: {e}", path.display())))?;
        Ok(Flaky {
            file,
            fail_every: cfg.fail_every,
            batches: 0,
        })
    }
}

impl Sink for Flaky {
    fn submit(&mut self, batch: &Batch<'_>, done: Completion) -> Result<Submitted, Error> {
        self.batches += 1;
        let partial = self.batches.is_multiple_of(self.fail_every) && batch.len() > 1;
        let mut buf = Vec::new();
        let mut failed = Vec::new();
        for (i, r) in batch.iter().enumerate() {
            if partial && i % 2 == 1 {
                failed.push(i as u32);
            } else {
                buf.extend_from_slice(r.data);
                buf.push(b'\n');
            }
        }
        if let Err(e) = self.file.write_all(&buf) {
            done.fail(&Error::retryable(e));
        } else if failed.is_empty() {
            done.success();
        } else {
            done.partial(&failed, &Error::retryable("flaky: odd records refused"));
        }
        Ok(Submitted::Accepted)
    }
}

/// `replay` options.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// Records per partition.
    pub per_partition: u64,
    /// Partitions.
    #[serde(default = "three")]
    pub partitions: u32,
    /// Records per second at most (per run).
    #[serde(default = "thousand")]
    pub rate: u64,
    /// The checkpoint file (relative paths against the config's folder).
    pub state: std::path::PathBuf,
}

fn three() -> u32 {
    3
}

fn thousand() -> u64 {
    1000
}

/// A replayable source: record `o` of partition `p` is `{"p":p,"o":o,"t":"t<o%3>"}` at
/// position (p, o). Batches hold one partition's records; acks arrive in poll order, and a
/// delivered one moves that partition's checkpoint (a JSON array of next offsets, replaced
/// atomically). After a restart it resumes at the checkpoint, replaying what was not acked.
pub struct Replay {
    cfg: ReplayConfig,
    state: std::path::PathBuf,
    next: Vec<u64>,
    committed: Vec<u64>,
    in_flight: VecDeque<(u64, usize, u64)>,
    token: u64,
    turn: usize,
    started: Option<Instant>,
    emitted: u64,
}

impl Plugin for Replay {
    type Config = ReplayConfig;
    fn create(cfg: ReplayConfig, ctx: &Context) -> Result<Self, Error> {
        if cfg.partitions == 0 || cfg.partitions > 64 {
            return Err(Error::config_field(
                "partitions",
                "must be between 1 and 64",
            ));
        }
        let state = ctx.resolve_path(&cfg.state);
        let committed: Vec<u64> = match std::fs::read(&state) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::fatal(format_args!("{}: {e}", state.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                vec![0; cfg.partitions as usize]
            }
            Err(e) => return Err(Error::fatal(format_args!("{}: {e}", state.display()))),
        };
        if committed.len() != cfg.partitions as usize {
            return Err(Error::fatal("checkpoint has another number of partitions"));
        }
        Ok(Replay {
            next: committed.clone(),
            committed,
            state,
            cfg,
            in_flight: VecDeque::new(),
            token: 0,
            turn: 0,
            started: None,
            emitted: 0,
        })
    }
}

impl Source for Replay {
    fn poll_batch(&mut self, out: &mut Output<'_>) -> Result<Poll, Error> {
        let started = *self.started.get_or_insert_with(Instant::now);
        let allowed = (started.elapsed().as_secs_f64() * self.cfg.rate as f64) as u64;
        let budget = allowed
            .saturating_sub(self.emitted)
            .min(out.credit_records())
            .min(50);
        let n = self.next.len();
        let p = (0..n)
            .map(|k| (self.turn + k) % n)
            .find(|&p| self.next[p] < self.cfg.per_partition);
        let (Some(p), true) = (p, budget > 0) else {
            out.set_poll_delay(Duration::from_millis(20));
            return Ok(Poll::Pending);
        };
        self.turn = (p + 1) % n;
        let end = (self.next[p] + budget).min(self.cfg.per_partition);
        let mut data = String::new();
        for o in self.next[p]..end {
            data.clear();
            data.push_str(&format!(r#"{{"p":{p},"o":{o},"t":"t{}"}}"#, o % 3));
            out.emit(&NewRecord {
                data: data.as_bytes(),
                partition_key: format!("{p}").as_bytes(),
                timestamp_ms: None,
                position: Some(Position {
                    partition: p as u32,
                    offset: o,
                }),
                attrs: &[],
            });
        }
        self.emitted += end - self.next[p];
        self.next[p] = end;
        self.token += 1;
        self.in_flight.push_back((self.token, p, end));
        out.set_ack_token(self.token);
        Ok(Poll::Ready)
    }

    fn ack(&mut self, token: u64, delivered: bool) {
        while let Some(&(t, p, end)) = self.in_flight.front() {
            if t > token {
                break;
            }
            self.in_flight.pop_front();
            if delivered && t == token {
                self.committed[p] = self.committed[p].max(end);
            }
        }
        if delivered {
            let tmp = self.state.with_extension("tmp");
            let text = serde_json::to_vec(&self.committed).unwrap_or_default();
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, &self.state);
            }
        }
    }
}

/// `late` takes `after_ms`: how long after `destroy` its thread completes the batches it held.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LateConfig {
    /// Delay between `destroy` and the late calls.
    #[serde(default = "late_default")]
    pub after_ms: u64,
}

fn late_default() -> u64 {
    100
}

/// A misbehaving record sink for tests of the host's handle checks: it never completes a
/// batch while it lives, and when destroyed hands the completions, its context and a
/// notifier to a thread that uses them all afterwards — the safe-Rust equivalent of a
/// plugin thread outliving its instance. A sluice host refuses those late calls.
pub struct Late {
    ctx: Context,
    held: Vec<Completion>,
    after: std::time::Duration,
}

impl Plugin for Late {
    type Config = LateConfig;
    fn create(cfg: LateConfig, ctx: &Context) -> Result<Self, Error> {
        Ok(Late {
            ctx: ctx.clone(),
            held: Vec::new(),
            after: std::time::Duration::from_millis(cfg.after_ms),
        })
    }
}

impl Sink for Late {
    fn submit(&mut self, _batch: &Batch<'_>, done: Completion) -> Result<Submitted, Error> {
        if self.held.len() >= 16 {
            return Ok(Submitted::Full(done));
        }
        self.held.push(done);
        Ok(Submitted::Accepted)
    }
}

impl Drop for Late {
    fn drop(&mut self) {
        let (ctx, held, after) = (self.ctx.clone(), std::mem::take(&mut self.held), self.after);
        let notifier = ctx.notifier();
        std::thread::spawn(move || {
            // Fault injection, not synchronisation: the point is to call after destroy.
            std::thread::sleep(after);
            ctx.log(
                sluice_plugin_api::Level::Warn,
                "late: completing after destroy",
            );
            notifier.notify();
            for c in held {
                c.success();
            }
        });
    }
}

declare_library!(
    name: "example-passthrough",
    plugins: [
        transform("passthrough", Passthrough, "outputs every record unchanged"),
        transform("chaos", Chaos, "passes records through; panics or fails on marked records"),
        sink("flaky", Flaky, "appends records to a file, failing some of them on purpose"),
        sink("late", Late, "holds every batch and completes them after it was destroyed"),
        replayable_source("replay", Replay, "numbered records with positions, replayed from a checkpoint file"),
    ]
);
