//! The supervisor owns every running pipeline and applies config sets to them by diffing
//! names: unchanged pipelines are not touched, removed ones drain and stop, changed ones
//! drain and restart, new ones start. Startup is `apply` from an empty set — the same
//! code path as every reload.

use crate::pipeline::{self, PipelineHandle, PipelineShared, PipelineStatus, RuntimeCtx, State};
use crate::plugins::Registry;
use crate::spec::PipelineSpec;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What an apply changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Started.
    pub added: Vec<String>,
    /// Drained and stopped.
    pub removed: Vec<String>,
    /// Drained and restarted with the new spec.
    pub changed: Vec<String>,
    /// Left running as they were.
    pub unchanged: Vec<String>,
}

/// Names of the pipelines to add, remove, change and keep, going from `old` to `new`.
pub fn diff(
    old: &BTreeMap<String, Arc<PipelineSpec>>,
    new: &BTreeMap<String, PipelineSpec>,
) -> ApplyReport {
    let mut r = ApplyReport::default();
    for (name, spec) in new {
        match old.get(name) {
            None => r.added.push(name.clone()),
            Some(o) if **o == *spec => r.unchanged.push(name.clone()),
            Some(_) => r.changed.push(name.clone()),
        }
    }
    r.removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    r
}

/// Pipelines' live state, readable by the admin API.
pub type StatusBoard = Arc<RwLock<BTreeMap<String, Arc<PipelineShared>>>>;

/// Owns the running pipelines.
pub struct Supervisor {
    ctx: Arc<RuntimeCtx>,
    running: BTreeMap<String, PipelineHandle>,
    board: StatusBoard,
    drain_timeout: Duration,
}

impl Supervisor {
    /// Uses `registry` for the pipelines started from now on (a reload rescanned
    /// `plugin_dirs`); running ones keep their instances.
    pub fn set_registry(&self, registry: Arc<Registry>) {
        if let Ok(mut r) = self.ctx.registry.write() {
            *r = registry;
        }
    }

    /// A supervisor running nothing yet; relative plugin paths resolve against
    /// `base_dir`, a stopping pipeline gets `drain_timeout`, pipelines keep their state in
    /// the services' data directory and share the buffer `memory` budget.
    pub fn new(
        registry: Arc<Registry>,
        base_dir: PathBuf,
        drain_timeout: Duration,
        services: Option<Arc<crate::plugins::HostServices>>,
        memory: Arc<crate::delivery::MemoryBudget>,
    ) -> Self {
        Supervisor {
            ctx: Arc::new(RuntimeCtx {
                services,
                memory,
                crash_markers_read: Default::default(),
                registry: std::sync::RwLock::new(registry),
                base_dir,
                stop_deadline: drain_timeout,
            }),
            running: BTreeMap::new(),
            board: StatusBoard::default(),
            drain_timeout,
        }
    }

    /// The live status board.
    pub fn board(&self) -> StatusBoard {
        self.board.clone()
    }

    /// Makes the running pipelines match `pipelines`.
    pub async fn apply(&mut self, pipelines: &BTreeMap<String, PipelineSpec>) -> ApplyReport {
        let current: BTreeMap<String, Arc<PipelineSpec>> = self
            .running
            .iter()
            .map(|(k, h)| (k.clone(), h.spec.clone()))
            .collect();
        let report = diff(&current, pipelines);
        // Drain removed and changed pipelines concurrently: one slow drain must not hold
        // up the others.
        let mut drains = Vec::new();
        for name in report.removed.iter().chain(&report.changed) {
            if let Some(h) = self.running.remove(name) {
                let t = self.drain_timeout;
                drains.push(tokio::spawn(async move { h.drain(t).await }));
            }
        }
        for d in drains {
            let _ = d.await;
        }
        for name in report.added.iter().chain(&report.changed) {
            if let Some(spec) = pipelines.get(name) {
                let h = pipeline::spawn(Arc::new(spec.clone()), self.ctx.clone());
                if let Ok(mut b) = self.board.write() {
                    b.insert(name.clone(), h.shared.clone());
                }
                self.running.insert(name.clone(), h);
            }
        }
        if let Ok(mut b) = self.board.write() {
            for name in &report.removed {
                b.remove(name);
            }
        }
        tracing::info!(
            added = ?report.added, removed = ?report.removed, changed = ?report.changed,
            unchanged = report.unchanged.len(), "config applied"
        );
        report
    }

    /// Drains every pipeline (flush, deliver, stop) within the shutdown timeout.
    pub async fn shutdown(&mut self) {
        let t = self.drain_timeout;
        let drains: Vec<_> = std::mem::take(&mut self.running)
            .into_values()
            .map(|h| tokio::spawn(async move { h.drain(t).await }))
            .collect();
        for d in drains {
            let _ = d.await;
        }
    }
}

/// Snapshots of every pipeline.
pub fn statuses(board: &StatusBoard) -> Vec<PipelineStatus> {
    board
        .read()
        .map(|b| b.values().map(|s| s.status()).collect())
        .unwrap_or_default()
}

/// Ready when every pipeline is running (or finished its finite source) and no sink is
/// failing.
pub fn all_running(board: &StatusBoard) -> bool {
    board
        .read()
        .map(|b| {
            b.values().all(|s| {
                matches!(s.state(), State::Running | State::Finished)
                    && s.sink_health.failing_since_ms().is_none()
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::Kind;
    use crate::spec::{BatchConfig, ComponentSpec};
    use std::path::PathBuf;

    fn spec(name: &str, filter: &str) -> PipelineSpec {
        let c = |id: &str, kind, plugin: &str, json: &str| ComponentSpec {
            id: id.into(),
            plugin: plugin.into(),
            kind,
            config_json: json.into(),
            replayable: false,
        };
        PipelineSpec {
            name: name.into(),
            file: PathBuf::from("p.toml"),
            source: c("source", Kind::Source, "generator", "{}"),
            transforms: vec![c("transforms[0]", Kind::Transform, "jq", filter)],
            sink: c("sink", Kind::Sink, "stdout", "{}"),
            batch: BatchConfig::default(),
            deaggregate: false,
            delivery: None,
        }
    }

    #[test]
    fn diff_by_name_and_content() {
        let old: BTreeMap<_, _> = [("a", "."), ("b", "."), ("c", ".")]
            .into_iter()
            .map(|(n, f)| (n.to_string(), Arc::new(spec(n, f))))
            .collect();
        let new: BTreeMap<_, _> = [("a", "."), ("b", ".x"), ("d", ".")]
            .into_iter()
            .map(|(n, f)| (n.to_string(), spec(n, f)))
            .collect();
        let r = diff(&old, &new);
        assert_eq!(r.unchanged, ["a"]);
        assert_eq!(r.changed, ["b"]);
        assert_eq!(r.added, ["d"]);
        assert_eq!(r.removed, ["c"]);
        let from_empty = diff(&BTreeMap::new(), &new);
        assert_eq!(from_empty.added, ["a", "b", "d"]);
    }
}
