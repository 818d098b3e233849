//! Plugins: the registry of every plugin the daemon can use, the loader of dynamic
//! libraries, the host API handed to plugins, and safe wrappers around instances.
//!
//! Bundled plugins are registered from their static `LIBRARY` descriptors through exactly
//! the same validation and vtable calls as `.so` files found in `plugin_dirs`; only the
//! `dlopen` differs.

mod host;
pub mod http_source;
mod instance;
pub mod kinesis_source;
mod loader;
mod retry;
pub mod stream_io;

pub use host::{CompletionResult, InstanceShared};
pub use instance::{
    direct_transform, status_name, CallError, DirectViews, HostObject, Instance, PollOutcome,
    SinkInstance, SourceInstance, Submit, TransformInstance, TransformOutput,
};
pub use loader::{load_dir, LoadError};
pub use retry::{lock_sink, until_stored, SinkHealth};

use sluice_plugin_api::ffi;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::spec::Kind;

impl Kind {
    fn from_ffi(k: ffi::sl_kind) -> Option<Kind> {
        match k {
            ffi::SL_KIND_SOURCE => Some(Kind::Source),
            ffi::SL_KIND_TRANSFORM => Some(Kind::Transform),
            ffi::SL_KIND_SINK => Some(Kind::Sink),
            _ => None,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Transform => "transform",
            Kind::Sink => "sink",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Compiled into the daemon.
    Bundled,
    /// Loaded from this file.
    Dylib(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Bundled => f.write_str("(bundled)"),
            Origin::Dylib(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Runs plugin code outside the tokio runtime's context. The pipeline stages are async
/// code on threads of their own; a plugin called from there must not find itself inside
/// a runtime, since it may block on a runtime of its own (the S3 sink does). On such a
/// thread this only leaves the context; it never moves work between threads.
pub fn outside_runtime<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

/// No plugin of that kind and name.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "unknown {kind} plugin `{name}` (available: {available}){}{}; looked in: {looked_in}",
    other_kind.map(|k| format!("; `{name}` is a {k} plugin")).unwrap_or_default(),
    match refused {
        0 => String::new(),
        1 => "; 1 plugin library was refused, see `sluiced plugins`".to_string(),
        n => format!("; {n} plugin libraries were refused, see `sluiced plugins`"),
    }
)]
pub struct UnknownPlugin {
    /// The kind asked for.
    pub kind: Kind,
    /// The name asked for.
    pub name: String,
    /// The plugins of that kind, comma-separated.
    pub available: String,
    /// The kind of a plugin with that name, when it is of another kind.
    pub other_kind: Option<Kind>,
    /// How many libraries were refused (one of them may have had it).
    pub refused: usize,
    /// Where plugins come from: the bundled set and each folder of `plugin_dirs`.
    pub looked_in: String,
}

/// What the daemon offers its bundled plugins beyond the ABI's host table, handed down
/// explicitly (daemon → supervisor → `RuntimeCtx` → each instance) and reached by a bundled
/// plugin through its instance handle ([`host::services`]). Dynamic plugins never see it.
pub struct HostServices {
    /// The daemon's streams.
    pub streams: Arc<crate::stream::Streams>,
    /// The data directory (checkpoints live under it).
    pub data_dir: PathBuf,
}

/// One usable plugin.
pub struct PluginEntry {
    /// The name used in TOML.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Object sink (vs record sink).
    pub object_sink: bool,
    /// A replayable source (ABI 1.1 `SL_DEF_REPLAYABLE`): its pipeline gets the intent log.
    pub replayable: bool,
    /// The plugin's version.
    pub version: String,
    /// One-line description.
    pub description: String,
    /// The library holding it.
    pub library: String,
    /// The library's version.
    pub library_version: String,
    /// The ABI the library was built for (major, minor).
    pub abi: (u16, u16),
    /// Bundled or the `.so` path.
    pub origin: Origin,
    /// The vtable, copied out of the library (static data, never unloaded).
    pub(crate) vtable: ffi::sl_plugin_vtable,
}

impl fmt::Debug for PluginEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginEntry")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("origin", &self.origin)
            .finish()
    }
}

// SAFETY: the vtable holds function pointers into static code of a never-unloaded library.
unsafe impl Send for PluginEntry {}
// SAFETY: as above; the entry is immutable.
unsafe impl Sync for PluginEntry {}

/// A library the loader refused, and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The file.
    pub path: PathBuf,
    /// Why, naming the file and the versions involved.
    pub reason: String,
}

/// Every plugin the daemon knows, bundled and loaded.
#[derive(Default, Clone)]
pub struct Registry {
    entries: Vec<Arc<PluginEntry>>,
    refused: Vec<Refusal>,
    /// (device, inode) of every library file seen, to load each file once.
    seen: Vec<(u64, u64)>,
    /// Each loaded library file and what it was when loaded: a file changed since then
    /// cannot take effect (libraries are never unloaded) and is reported on a rescan.
    loaded: Vec<(PathBuf, loader::Stamp)>,
    /// The `plugin_dirs` scanned.
    dirs: Vec<PathBuf>,
}

/// The libraries compiled into the daemon.
pub fn bundled_libraries() -> [&'static sluice_plugin_api::Library; 10] {
    [
        &stream_io::LIBRARY,
        &kinesis_source::LIBRARY,
        &http_source::LIBRARY,
        &sluice_plugin_generator::LIBRARY,
        &sluice_plugin_jq::LIBRARY,
        &sluice_plugin_lambda::LIBRARY,
        &sluice_plugin_http::LIBRARY,
        &sluice_plugin_stdout::LIBRARY,
        &sluice_plugin_file::LIBRARY,
        &sluice_plugin_object_store::LIBRARY,
    ]
}

impl Registry {
    /// The bundled plugins plus every library in `plugin_dirs` (refusals are recorded,
    /// logged, and do not stop the daemon).
    pub fn discover(plugin_dirs: &[PathBuf]) -> Registry {
        let mut reg = Registry::default();
        for lib in bundled_libraries() {
            if let Err(e) = reg.register(&lib.0, Origin::Bundled) {
                // A bundled library failing validation is a build bug; report it like any other.
                reg.refused.push(Refusal {
                    path: PathBuf::from("(bundled)"),
                    reason: e.to_string(),
                });
            }
        }
        reg.dirs = plugin_dirs.to_vec();
        for dir in plugin_dirs {
            load_dir(&mut reg, dir);
        }
        for r in &reg.refused {
            tracing::warn!(path = %r.path.display(), reason = %r.reason, "plugin library refused");
        }
        reg
    }

    /// The registry after scanning `plugin_dirs` again (every reload does): new library
    /// files load, loaded ones stay; a loaded file that changed since is refused with the
    /// reason (a library cannot be replaced in a running process: restart sluiced).
    pub fn rescan(&self, plugin_dirs: &[PathBuf]) -> Registry {
        let mut reg = self.clone();
        reg.dirs = plugin_dirs.to_vec();
        let before = reg.refused.len();
        for dir in plugin_dirs {
            load_dir(&mut reg, dir);
        }
        for r in &reg.refused[before..] {
            tracing::warn!(path = %r.path.display(), reason = %r.reason, "plugin library refused");
        }
        reg
    }

    /// Validates a descriptor and registers its plugins (all or none).
    pub fn register(&mut self, lib: &ffi::sl_library, origin: Origin) -> Result<usize, LoadError> {
        let entries = loader::validate_descriptor(lib, &origin)?;
        for e in &entries {
            if let Some(other) = self
                .entries
                .iter()
                .find(|o| o.kind == e.kind && o.name == e.name)
            {
                return Err(LoadError::NameClash {
                    path: origin.to_string(),
                    kind: e.kind,
                    name: e.name.clone(),
                    other: other.origin.to_string(),
                });
            }
        }
        let n = entries.len();
        for e in entries {
            metrics::gauge!(
                "sluice_plugin_info",
                "plugin" => e.name.clone(),
                "kind" => e.kind.as_str(),
                "version" => e.version.clone(),
                "abi" => format!("{}.{}", e.abi.0, e.abi.1),
            )
            .set(1.0);
            self.entries.push(Arc::new(e));
        }
        Ok(n)
    }

    pub(crate) fn refuse(&mut self, path: &Path, reason: String) {
        // A rescan meets the same refusals again: each is kept once.
        if self
            .refused
            .iter()
            .any(|r| r.path == path && r.reason == reason)
        {
            return;
        }
        self.refused.push(Refusal {
            path: path.to_path_buf(),
            reason,
        });
    }

    /// Every usable plugin.
    pub fn entries(&self) -> &[Arc<PluginEntry>] {
        &self.entries
    }

    /// Every refused library.
    pub fn refused(&self) -> &[Refusal] {
        &self.refused
    }

    /// The plugin of `kind` named `name`, or an error listing the available ones (and
    /// saying so when a library that would have provided it was refused).
    pub fn lookup(&self, kind: Kind, name: &str) -> Result<Arc<PluginEntry>, UnknownPlugin> {
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.kind == kind && e.name == name)
        {
            return Ok(e.clone());
        }
        let mut available: Vec<&str> = self
            .entries
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.name.as_str())
            .collect();
        available.sort_unstable();
        Err(UnknownPlugin {
            kind,
            name: name.to_string(),
            available: available.join(", "),
            other_kind: self.entries.iter().find(|e| e.name == name).map(|e| e.kind),
            refused: self.refused.len(),
            looked_in: std::iter::once("(bundled)".to_string())
                .chain(self.dirs.iter().map(|d| d.display().to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// A plugin's verdict on a config, from its `create`.
#[derive(Debug, Clone)]
pub struct ConfigVerdict {
    /// Dotted key path the error is about (may be empty).
    pub field: String,
    /// The message.
    pub message: String,
}

/// Asks the plugin to validate `config_json` by creating (and destroying, never starting)
/// an instance.
pub fn validate_config(
    entry: &Arc<PluginEntry>,
    pipeline: &str,
    component: &str,
    config_dir: &Path,
    config_json: &str,
) -> Result<(), ConfigVerdict> {
    // Validation instances get no host services: `create` must not need them.
    match Instance::create(
        entry.clone(),
        pipeline,
        component,
        config_dir,
        config_json,
        None,
    ) {
        Ok(inst) => {
            drop(inst);
            Ok(())
        }
        Err(e) => Err(ConfigVerdict {
            field: e.field,
            message: e.message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused library stays one refusal however many reloads rescan its folder (each
    /// reload clones the registry and scans again).
    #[test]
    fn a_refused_library_is_reported_once_across_rescans() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bad = dir.path().join("libnot_a_plugin.so");
        std::fs::write(&bad, b"not an ELF file").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o644)).unwrap();
        let dirs = [dir.path().to_path_buf()];
        let reg = Registry::discover(&dirs);
        let mine = |r: &Registry| r.refused().iter().filter(|x| x.path == bad).count();
        assert_eq!(mine(&reg), 1, "{:?}", reg.refused());
        let again = reg.rescan(&dirs).rescan(&dirs);
        assert_eq!(mine(&again), 1, "{:?}", again.refused());
    }
}
