//! The transform stage: runs the chain of transforms on each batch, on a blocking thread
//! of its own, and keeps a poison record from stopping the pipeline.
//!
//! **Poison records in-process.** When a transform call fails with an error that is not
//! retryable, or panics, the batch is bisected: each half is tried on its own (with a
//! fresh instance, since a panicked one is poisoned and a failed one is in an unknown
//! state), down to single records. A record that fails alone goes to the error output as
//! `processing-failed` with the plugin's message; every other record goes on, in order.
//! A chain whose failures exceed [`REMAKE_BUDGET`] fresh instances in one batch is broken,
//! not poisoned: the run fails and restarts with backoff, as before. Retryable errors
//! restart the run too (the source replays the batch).
//!
//! **Poison records that crash the process.** A dynamic (C ABI) plugin can crash the whole
//! daemon on a record (a segfault cannot be caught). Before each call into a dynamic
//! transform the worker writes which records are in flight to
//! `data_dir/quarantine/<pipeline>.inflight` (no fsync: a process crash keeps the page
//! cache) and clears it after the call. After a restart, a leftover marker names the call
//! that was in flight when the process died: each of its records gets a strike and from
//! then on goes through that plugin alone; a record in flight at a second crash is
//! quarantined for good (`<pipeline>.poison`, synced) and goes to the error output instead
//! of into the plugin. A crash for another reason (OOM killer, another pipeline) costs at
//! most one strike, never a quarantine; a poison record costs at most two crashes.

use super::{make_instance, plugin_err, Batch, PipelineError, PipelineShared, RuntimeCtx};
use crate::plugins::{CallError, TransformInstance, TransformOutput};
use crate::record::Record;
use crate::spec::ComponentSpec;
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;

/// Fresh instances one batch may use up while isolating failures.
pub const REMAKE_BUDGET: u32 = 64;
/// Quarantined records kept per pipeline (oldest dropped past it).
const MAX_POISON: usize = 1000;

/// One transform of the chain.
pub(super) struct Link {
    pub id: String,
    pub spec: ComponentSpec,
    pub inst: TransformInstance,
}

/// A record identity that survives a restart: its source position and a digest of its
/// bytes (sources that do not replay reuse positions; the digest tells records apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
struct RecordId {
    seq: u64,
    digest: u64,
}

fn record_id(r: &Record) -> RecordId {
    use md5::Digest as _;
    let d = md5::Md5::digest(&r.data);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    RecordId {
        seq: r.sequence,
        digest: u64::from_le_bytes(b),
    }
}

/// The in-flight marker: which component was called on which records.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct InFlight {
    component: String,
    records: Vec<RecordId>,
}

/// A record of a component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
struct Poison {
    component: String,
    record: RecordId,
}

/// Crashes are blamed with care: a record in flight when the process died gets a strike
/// (so it goes through the plugin alone from then on); a record in flight at a second
/// crash is quarantined. A crash for another reason (OOM killer, SIGKILL, another
/// pipeline's plugin) therefore never quarantines a record by itself.
const STRIKES_TO_QUARANTINE: u8 = 2;

/// Crash bookkeeping of one pipeline (dynamic plugins only).
struct CrashGuard {
    inflight: std::fs::File,
    poison_path: PathBuf,
    /// Strikes per record; persisted in `<pipeline>.poison`.
    strikes: HashMap<Poison, u8>,
    pipeline: String,
}

impl CrashGuard {
    /// Opens the pipeline's files; `after_crash_check` reads (and blames) a marker left by
    /// a process that died — only for the first run of the pipeline in this process, since
    /// a run aborted by a drain timeout may still be inside its last call.
    fn open(
        pipeline: &str,
        data_dir: Option<&std::path::Path>,
        after_crash_check: bool,
    ) -> Option<CrashGuard> {
        let dir = data_dir?.join("quarantine");
        std::fs::create_dir_all(&dir).ok()?;
        crate::names::check(pipeline).ok()?;
        // Not `with_extension`: pipeline names may contain dots (`lake.v1`, `lake.v2`).
        let inflight_path = dir.join(format!("{pipeline}.inflight"));
        let poison_path = dir.join(format!("{pipeline}.poison"));
        let saved: Vec<(Poison, u8)> = std::fs::read(&poison_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut g = CrashGuard {
            inflight: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&inflight_path)
                .ok()?,
            poison_path,
            strikes: saved.into_iter().collect(),
            pipeline: pipeline.to_string(),
        };
        if after_crash_check {
            let left = std::fs::read(&inflight_path).unwrap_or_default();
            if !left.is_empty() {
                match serde_json::from_slice::<InFlight>(&left) {
                    Ok(f) => g.after_crash(f),
                    Err(e) => {
                        tracing::warn!(pipeline, error = %e, "unreadable in-flight marker ignored")
                    }
                }
                let _ = g.inflight.set_len(0);
            }
        }
        Some(g)
    }

    fn after_crash(&mut self, f: InFlight) {
        let pipeline = self.pipeline.clone();
        metrics::counter!("sluice_plugin_crashes_total", "pipeline" => pipeline.clone(), "component" => f.component.clone()).increment(1);
        let mut quarantined = 0;
        for r in &f.records {
            let n = self
                .strikes
                .entry(Poison {
                    component: f.component.clone(),
                    record: *r,
                })
                .or_insert(0);
            *n = (*n + 1).min(STRIKES_TO_QUARANTINE);
            if *n >= STRIKES_TO_QUARANTINE {
                quarantined += 1;
                tracing::error!(pipeline = %pipeline, component = %f.component, sequence = r.seq, "the process died inside this plugin twice with this record in flight; the record is quarantined and goes to the error output");
            }
        }
        if quarantined == 0 {
            tracing::error!(pipeline = %pipeline, component = %f.component, records = f.records.len(), "the process died with a call into this plugin in flight; those records go through it one at a time from now on");
        }
        // Bounded: the oldest single strikes go first.
        if self.strikes.len() > MAX_POISON {
            let mut ones: Vec<Poison> = self
                .strikes
                .iter()
                .filter(|(_, n)| **n < STRIKES_TO_QUARANTINE)
                .map(|(p, _)| p.clone())
                .collect();
            ones.sort_by_key(|p| p.record.seq);
            for p in ones.into_iter().take(self.strikes.len() - MAX_POISON) {
                self.strikes.remove(&p);
            }
        }
        self.save();
    }

    fn save(&self) {
        let tmp = self.poison_path.with_extension("poison.tmp");
        let entries: Vec<(&Poison, &u8)> = self.strikes.iter().collect();
        let res = (|| -> std::io::Result<()> {
            let f = std::fs::File::create(&tmp)?;
            f.write_all_at(&serde_json::to_vec(&entries).unwrap_or_default(), 0)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.poison_path)?;
            if let Some(d) = self.poison_path.parent() {
                std::fs::File::open(d)?.sync_all()?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            tracing::error!(pipeline = %self.pipeline, error = %e, "cannot persist the quarantine list");
        }
    }

    fn strikes_of(&self, component: &str, r: &Record) -> u8 {
        if self.strikes.is_empty() {
            return 0;
        }
        self.strikes
            .get(&Poison {
                component: component.to_string(),
                record: record_id(r),
            })
            .copied()
            .unwrap_or(0)
    }

    /// A suspect went through alone without killing the process: its strike is gone.
    fn cleared(&mut self, component: &str, r: &Record) {
        if !self.strikes.is_empty() {
            self.strikes.remove(&Poison {
                component: component.to_string(),
                record: record_id(r),
            });
        }
    }

    /// Marks a call in flight (plain write: only a process crash must keep it).
    fn enter(&self, component: &str, records: &[Record]) {
        let f = InFlight {
            component: component.to_string(),
            records: records.iter().map(record_id).collect(),
        };
        let b = serde_json::to_vec(&f).unwrap_or_default();
        let _ = self.inflight.set_len(0);
        let _ = self.inflight.write_all_at(&b, 0);
    }

    fn leave(&self) {
        let _ = self.inflight.set_len(0);
    }
}

/// The transform chain of one pipeline run.
pub(super) struct Chain<'a> {
    pub pipeline: &'a str,
    pub links: Vec<Link>,
    pub ctx: &'a RuntimeCtx,
    guard: Option<CrashGuard>,
    failed: metrics::Counter,
}

impl<'a> Chain<'a> {
    pub fn new(pipeline: &'a str, links: Vec<Link>, ctx: &'a RuntimeCtx) -> Self {
        let dynamic = links.iter().any(|l| l.dynamic());
        Chain {
            pipeline,
            links,
            ctx,
            guard: if dynamic {
                CrashGuard::open(
                    pipeline,
                    ctx.data_dir(),
                    ctx.crash_markers_read
                        .lock()
                        .map(|mut seen| seen.insert(pipeline.to_string()))
                        .unwrap_or(false),
                )
            } else {
                None
            },
            failed: metrics::counter!("sluice_records_failed_total", "pipeline" => pipeline.to_string(), "error_type" => "processing-failed"),
        }
    }

    /// Runs every transform on `records`; returns the outputs and the records sent to the
    /// error output (with why).
    pub fn run(
        &mut self,
        mut records: Vec<Record>,
        rejected: &mut Vec<(Record, String)>,
    ) -> Result<Vec<Record>, PipelineError> {
        for i in 0..self.links.len() {
            if records.is_empty() {
                break;
            }
            // Only the failure and one-at-a-time paths fill `out`: the common path moves the
            // plugin's output on and allocates nothing here.
            let mut out = Vec::new();
            let mut budget = REMAKE_BUDGET;
            // Quarantine checks only while any record has a strike (they are rare).
            let dynamic = self.links[i].dynamic()
                && self.guard.as_ref().is_some_and(|g| !g.strikes.is_empty());
            if dynamic {
                let id = self.links[i].id.clone();
                // Quarantined records never enter the plugin again; suspects go alone.
                let mut pass = Vec::with_capacity(records.len());
                let mut singles = false;
                if let Some(g) = &self.guard {
                    for r in records {
                        match g.strikes_of(&id, &r) {
                            n if n >= STRIKES_TO_QUARANTINE => {
                                rejected.push((r, format!("{id}: the process died inside this plugin twice with this record in flight; quarantined")));
                                continue;
                            }
                            0 => {}
                            _ => singles = true,
                        }
                        pass.push(r);
                    }
                } else {
                    pass = records;
                }
                if singles {
                    for r in pass {
                        self.isolate(i, std::slice::from_ref(&r), &mut out, rejected, &mut budget)?;
                        if let Some(g) = &mut self.guard {
                            g.cleared(&id, &r);
                        }
                    }
                    records = out;
                    continue;
                }
                records = pass;
            }
            // The common case: one call for the whole batch, its output moved on as is.
            match self.call(i, &records) {
                Ok(o) => {
                    rejected.extend(o.rejected);
                    records = o.records;
                }
                Err(e) => {
                    self.after_failure(i, &records, e, &mut out, rejected, &mut budget)?;
                    records = out;
                }
            }
        }
        Ok(records)
    }

    /// Calls transform `i` on `records`; on a failure bisects (see the module docs).
    fn isolate(
        &mut self,
        i: usize,
        records: &[Record],
        out: &mut Vec<Record>,
        rejected: &mut Vec<(Record, String)>,
        budget: &mut u32,
    ) -> Result<(), PipelineError> {
        if records.is_empty() {
            return Ok(());
        }
        match self.call(i, records) {
            Ok(o) => {
                out.extend(o.records);
                rejected.extend(o.rejected);
                Ok(())
            }
            Err(e) => self.after_failure(i, records, e, out, rejected, budget),
        }
    }

    /// One guarded call of transform `i`.
    fn call(&mut self, i: usize, records: &[Record]) -> Result<TransformOutput, CallError> {
        // Only calls into dynamic plugins are marked: bundled ones cannot crash the process.
        let guard = self.guard.as_ref().filter(|_| self.links[i].dynamic());
        if let Some(g) = guard {
            g.enter(&self.links[i].id, records);
        }
        let res = self.links[i].inst.transform(records);
        if let Some(g) = guard {
            g.leave();
        }
        res
    }

    /// Transform `i` failed with `e` on `records`: a retryable error ends the run; any
    /// other error or a panic gets a fresh instance and the records bisected.
    fn after_failure(
        &mut self,
        i: usize,
        records: &[Record],
        e: CallError,
        out: &mut Vec<Record>,
        rejected: &mut Vec<(Record, String)>,
        budget: &mut u32,
    ) -> Result<(), PipelineError> {
        let id = self.links[i].id.clone();
        if e.is_retryable() {
            return Err(plugin_err(&id)(e));
        }
        if *budget == 0 {
            tracing::error!(pipeline = self.pipeline, component = %id, "transform fails on too many records of one batch to be a poison record: failing the run");
            return Err(plugin_err(&id)(e));
        }
        *budget -= 1;
        // A panicked instance is poisoned, a failed one in an unknown state: stop it (a
        // poisoned one refuses, which is fine) and start a fresh one.
        let fresh = make_instance(self.pipeline, &self.links[i].spec, self.ctx)?;
        let mut old = std::mem::replace(&mut self.links[i].inst, TransformInstance::new(fresh));
        let _ = old.instance().stop(Duration::from_secs(1));
        if let [one] = records {
            tracing::warn!(pipeline = self.pipeline, component = %id, sequence = one.sequence, error = %e, "poison record isolated; it goes to the error output");
            metrics::counter!("sluice_poison_records_total", "pipeline" => self.pipeline.to_string(), "component" => id.clone()).increment(1);
            rejected.push((one.clone(), format!("{id}: {e}")));
            return Ok(());
        }
        let (a, b) = records.split_at(records.len() / 2);
        self.isolate(i, a, out, rejected, budget)?;
        self.isolate(i, b, out, rejected, budget)
    }

    /// Stops every instance (and persists cleared strikes).
    pub fn stop(&mut self, deadline: Duration) {
        if let Some(g) = &self.guard {
            g.save();
        }
        for l in self.links.iter_mut() {
            if let Err(e) = l.inst.instance().stop(deadline) {
                tracing::warn!(pipeline = self.pipeline, component = %l.id, error = %e, "transform stop failed");
            }
        }
    }
}

impl Link {
    /// Loaded from a library file (its code can crash the process).
    fn dynamic(&self) -> bool {
        self.inst.is_dynamic()
    }
}

/// The stage loop: batches in, transformed batches out.
pub(super) fn worker(
    deaggregate: bool,
    mut chain: Chain<'_>,
    mut rx: mpsc::Receiver<Batch>,
    tx: mpsc::Sender<Batch>,
    shared: &PipelineShared,
    stop_deadline: Duration,
) -> Result<(), PipelineError> {
    let res = (|| {
        while let Some(mut batch) = rx.blocking_recv() {
            if deaggregate {
                batch.records = super::kpl::deaggregate_records(batch.records);
            }
            let before = batch.rejected.len();
            let records = std::mem::take(&mut batch.records);
            batch.records = chain.run(records, &mut batch.rejected)?;
            let n = (batch.rejected.len() - before) as u64;
            if n > 0 {
                chain.failed.increment(n);
                shared.records_failed.fetch_add(n, Ordering::Relaxed);
                if let Some((rec, why)) = batch.rejected.get(before) {
                    tracing::debug!(pipeline = chain.pipeline, sequence = rec.sequence, reason = %why, rejected = n, "records failed processing");
                }
            }
            if tx.blocking_send(batch).is_err() {
                break;
            }
        }
        Ok(())
    })();
    chain.stop(stop_deadline);
    res
}
