//! The host API table handed to every plugin (log, metrics, notify, complete), and the
//! per-instance state those functions reach through the opaque `inst` pointer.
//!
//! Every function is `extern "C"`, thread-safe, non-blocking, never re-enters plugin code,
//! and runs inside `catch_unwind` so a host bug cannot unwind into C.

use sluice_plugin_api::ffi;
use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{oneshot, Notify};

/// How a sink finished a submitted batch or object.
#[derive(Debug, Clone)]
pub struct CompletionResult {
    /// `SL_OK`, `SL_ERR_RETRYABLE`, ...
    pub status: ffi::sl_status,
    /// Indexes of records that failed (partial failure).
    pub failed: Vec<u32>,
    /// The plugin's message.
    pub message: String,
    /// Retry hint.
    pub retry_after_ms: u32,
}

/// State shared between the host and one plugin instance; `inst` points at it.
pub struct InstanceShared {
    /// Plugin name.
    pub plugin: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Component id inside the pipeline.
    pub component: String,
    /// Folder relative paths resolve against.
    pub config_dir: String,
    /// Woken by the plugin's `notify`.
    pub notify: Notify,
    /// Services for bundled plugins (none for validation instances).
    services: Option<Arc<super::HostServices>>,
    completions: Mutex<HashMap<u64, oneshot::Sender<CompletionResult>>>,
    next_ticket: AtomicU64,
}

impl InstanceShared {
    pub(crate) fn new(
        plugin: &str,
        pipeline: &str,
        component: &str,
        config_dir: &str,
        services: Option<Arc<super::HostServices>>,
    ) -> Self {
        InstanceShared {
            plugin: plugin.to_string(),
            pipeline: pipeline.to_string(),
            component: component.to_string(),
            config_dir: config_dir.to_string(),
            notify: Notify::new(),
            services,
            completions: Mutex::new(HashMap::new()),
            next_ticket: AtomicU64::new(1),
        }
    }

    /// A fresh ticket and the receiver its completion arrives on. Registered before the
    /// submit call, since a sink may complete synchronously inside it.
    pub fn register_ticket(&self) -> (u64, oneshot::Receiver<CompletionResult>) {
        let t = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut m) = self.completions.lock() {
            m.insert(t, tx);
        }
        (t, rx)
    }

    /// Forgets a ticket whose submit was not accepted.
    pub fn cancel_ticket(&self, t: u64) {
        if let Ok(mut m) = self.completions.lock() {
            m.remove(&t);
        }
    }

    fn complete(&self, t: u64, r: CompletionResult) {
        let tx = self.completions.lock().ok().and_then(|mut m| m.remove(&t));
        match tx {
            Some(tx) => {
                let _ = tx.send(r);
            }
            None => tracing::warn!(
                plugin = %self.plugin,
                pipeline = %self.pipeline,
                ticket = t,
                "plugin completed an unknown or already completed ticket"
            ),
        }
    }
}

/// The instance handles given to plugins as `sl_instance_ctx.inst`.
///
/// `inst` is not a pointer but a checked handle: a slot index and that slot's generation.
/// A plugin thread that calls `complete`, `notify`, `log` or `metric_register` with the
/// handle of a destroyed instance (a `Completion` kept past `destroy`, say) finds the
/// generation changed and is refused — counted in `sluice_plugin_late_calls_total` —
/// instead of reaching freed host memory. The C callbacks carry nothing but this handle,
/// so the table is process-wide: it is the ABI's handle registry, not a runtime service.
struct Handles {
    slots: Vec<(u32, Option<Arc<InstanceShared>>)>,
    free: Vec<u32>,
}

static HANDLES: RwLock<Handles> = RwLock::new(Handles {
    slots: Vec::new(),
    free: Vec::new(),
});

/// Handles pack (slot index + 1) in the high 32 bits and the generation in the low 32 bits
/// of a pointer-sized value, so 0 (null) is never a live handle.
const _: () = assert!(usize::BITS == 64, "instance handles need 64-bit pointers");

/// Registers a new instance; its handle is what the plugin passes back.
pub(crate) fn register_instance(s: Arc<InstanceShared>) -> *const c_void {
    let mut h = HANDLES.write().unwrap_or_else(|e| e.into_inner());
    let index = match h.free.pop() {
        Some(i) => i,
        None => {
            h.slots.push((0, None));
            (h.slots.len() - 1) as u32
        }
    };
    let slot = &mut h.slots[index as usize];
    slot.1 = Some(s);
    let handle = (u64::from(index) + 1) << 32 | u64::from(slot.0);
    handle as usize as *const c_void
}

/// Retires a handle after its instance was destroyed: later calls with it are refused.
pub(crate) fn release_instance(handle: *const c_void) {
    let mut h = HANDLES.write().unwrap_or_else(|e| e.into_inner());
    let (index, generation) = split(handle);
    let Some(slot) = index.and_then(|i| h.slots.get_mut(i as usize)) else {
        return;
    };
    if slot.0 == generation && slot.1.is_some() {
        slot.1 = None;
        slot.0 = slot.0.wrapping_add(1);
        if let Some(i) = index {
            h.free.push(i);
        }
    }
}

fn split(handle: *const c_void) -> (Option<u32>, u32) {
    let v = handle as usize as u64;
    let index = ((v >> 32) as u32).checked_sub(1);
    (index, v as u32)
}

/// The host services of the live instance behind `handle` (a bundled plugin's own
/// `Context::instance_handle`).
pub fn services(handle: *const c_void) -> Option<Arc<super::HostServices>> {
    shared(handle, "services").and_then(|s| s.services.clone())
}

/// The live instance behind a handle, or `None` (counted) for a destroyed or made-up one.
fn shared(inst: *const c_void, call: &'static str) -> Option<Arc<InstanceShared>> {
    if inst.is_null() {
        // No instance at all (a library-level log line, say): not a late call.
        return None;
    }
    let (index, generation) = split(inst);
    let found = {
        let h = HANDLES.read().unwrap_or_else(|e| e.into_inner());
        index
            .and_then(|i| h.slots.get(i as usize))
            .filter(|slot| slot.0 == generation)
            .and_then(|slot| slot.1.clone())
    };
    if found.is_none() {
        metrics::counter!("sluice_plugin_late_calls_total", "call" => call).increment(1);
        tracing::warn!(
            call,
            "a plugin called the host with the handle of a destroyed instance; refused"
        );
    }
    found
}

/// # Safety
/// The view must be valid for the call.
unsafe fn view(s: &ffi::sl_str) -> String {
    // SAFETY: caller's contract.
    String::from_utf8_lossy(unsafe { s.as_slice() }).into_owned()
}

unsafe extern "C" fn log_enabled(level: i32) -> bool {
    catch_unwind(|| match level {
        ffi::SL_LOG_ERROR => tracing::enabled!(tracing::Level::ERROR),
        ffi::SL_LOG_WARN => tracing::enabled!(tracing::Level::WARN),
        ffi::SL_LOG_INFO => tracing::enabled!(tracing::Level::INFO),
        ffi::SL_LOG_DEBUG => tracing::enabled!(tracing::Level::DEBUG),
        _ => tracing::enabled!(tracing::Level::TRACE),
    })
    .unwrap_or(false)
}

unsafe extern "C" fn log(inst: *const c_void, level: i32, msg: ffi::sl_str) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: host contract: msg valid for the call.
        let (s, msg) = (shared(inst, "log"), unsafe { view(&msg) });
        let (plugin, pipeline, component) = s
            .as_ref()
            .map(|s| (s.plugin.as_str(), s.pipeline.as_str(), s.component.as_str()))
            .unwrap_or(("?", "", ""));
        match level {
            ffi::SL_LOG_ERROR => tracing::error!(plugin, pipeline, component, "{msg}"),
            ffi::SL_LOG_WARN => tracing::warn!(plugin, pipeline, component, "{msg}"),
            ffi::SL_LOG_INFO => tracing::info!(plugin, pipeline, component, "{msg}"),
            ffi::SL_LOG_DEBUG => tracing::debug!(plugin, pipeline, component, "{msg}"),
            _ => tracing::trace!(plugin, pipeline, component, "{msg}"),
        }
    }));
}

struct Family {
    name: String,
    kind: i32,
    labels: Vec<String>,
    consts: Vec<(String, String)>,
}

enum Child {
    Counter(metrics::Counter),
    Gauge(metrics::Gauge),
    Histogram(metrics::Histogram),
}

/// Bound on plugin metric families and children: plugin metrics cannot grow memory without limit.
const MAX_FAMILIES: usize = 10_000;
const MAX_CHILDREN: usize = 100_000;

static FAMILIES: Mutex<Vec<Family>> = Mutex::new(Vec::new());
static CHILDREN: RwLock<Vec<Child>> = RwLock::new(Vec::new());
/// (family handle, label values) → child handle, so re-created instances reuse children.
static CHILD_INDEX: Mutex<BTreeMap<(u64, Vec<String>), u64>> = Mutex::new(BTreeMap::new());

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

unsafe extern "C" fn metric_register(
    inst: *const c_void,
    kind: i32,
    name: ffi::sl_str,
    help: ffi::sl_str,
    label_names: *const ffi::sl_str,
    n_labels: usize,
    out: *mut u64,
) -> ffi::sl_status {
    catch_unwind(AssertUnwindSafe(|| {
        if out.is_null() || (n_labels > 0 && label_names.is_null()) || n_labels > 16 {
            return ffi::SL_ERR_FATAL;
        }
        // SAFETY: host contract: views valid for the call.
        let (s, name, help) = (
            shared(inst, "metric_register"),
            unsafe { view(&name) },
            unsafe { view(&help) },
        );
        // SAFETY: n_labels views at label_names.
        let labels: Vec<String> = (0..n_labels)
            .map(|i| unsafe { sanitize(&view(&*label_names.add(i))) })
            .collect();
        let mut full = format!("sluice_plugin_{}", sanitize(&name));
        if kind == ffi::SL_METRIC_COUNTER && !full.ends_with("_total") {
            full.push_str("_total");
        }
        let help = if help.is_empty() {
            format!("plugin metric {name}")
        } else {
            help
        };
        match kind {
            ffi::SL_METRIC_COUNTER => metrics::describe_counter!(full.clone(), help),
            ffi::SL_METRIC_GAUGE => metrics::describe_gauge!(full.clone(), help),
            ffi::SL_METRIC_HISTOGRAM => metrics::describe_histogram!(full.clone(), help),
            _ => return ffi::SL_ERR_UNSUPPORTED,
        }
        let mut consts = vec![];
        if let Some(s) = s {
            consts.push(("plugin".to_string(), s.plugin.clone()));
            consts.push(("pipeline".to_string(), s.pipeline.clone()));
        }
        let Ok(mut fams) = FAMILIES.lock() else {
            return ffi::SL_ERR_FATAL;
        };
        // Instances are re-created on every restart and config check: reuse the family.
        if let Some(i) = fams.iter().position(|f| {
            f.name == full && f.kind == kind && f.labels == labels && f.consts == consts
        }) {
            // SAFETY: checked non-null.
            unsafe { *out = i as u64 + 1 };
            return ffi::SL_OK;
        }
        if fams.len() >= MAX_FAMILIES {
            return ffi::SL_ERR_FATAL;
        }
        fams.push(Family {
            name: full,
            kind,
            labels,
            consts,
        });
        // SAFETY: checked non-null.
        unsafe { *out = fams.len() as u64 };
        ffi::SL_OK
    }))
    .unwrap_or(ffi::SL_ERR_FATAL)
}

unsafe extern "C" fn metric_bind(
    handle: u64,
    values_ptr: *const ffi::sl_str,
    n_values: usize,
    out: *mut u64,
) -> ffi::sl_status {
    catch_unwind(AssertUnwindSafe(|| {
        if out.is_null() || (n_values > 0 && values_ptr.is_null()) {
            return ffi::SL_ERR_FATAL;
        }
        let Ok(fams) = FAMILIES.lock() else {
            return ffi::SL_ERR_FATAL;
        };
        let Some(fam) = handle.checked_sub(1).and_then(|i| fams.get(i as usize)) else {
            return ffi::SL_ERR_FATAL;
        };
        if n_values != fam.labels.len() {
            return ffi::SL_ERR_FATAL;
        }
        // SAFETY: n_values views at values_ptr, valid for the call.
        let values: Vec<String> = (0..n_values)
            .map(|i| unsafe { view(&*values_ptr.add(i)) })
            .collect();
        let Ok(mut index) = CHILD_INDEX.lock() else {
            return ffi::SL_ERR_FATAL;
        };
        // Re-created instances bind the same labels again: reuse the child.
        if let Some(&h) = index.get(&(handle, values.clone())) {
            // SAFETY: checked non-null.
            unsafe { *out = h };
            return ffi::SL_OK;
        }
        let mut labels: Vec<metrics::Label> = fam
            .consts
            .iter()
            .map(|(k, v)| metrics::Label::new(k.clone(), v.clone()))
            .collect();
        for (k, v) in fam.labels.iter().zip(&values) {
            labels.push(metrics::Label::new(k.clone(), v.clone()));
        }
        let child = match fam.kind {
            ffi::SL_METRIC_COUNTER => Child::Counter(metrics::counter!(fam.name.clone(), labels)),
            ffi::SL_METRIC_GAUGE => Child::Gauge(metrics::gauge!(fam.name.clone(), labels)),
            _ => Child::Histogram(metrics::histogram!(fam.name.clone(), labels)),
        };
        let Ok(mut children) = CHILDREN.write() else {
            return ffi::SL_ERR_FATAL;
        };
        if children.len() >= MAX_CHILDREN {
            return ffi::SL_ERR_FATAL;
        }
        children.push(child);
        let h = children.len() as u64;
        index.insert((handle, values), h);
        // SAFETY: checked non-null.
        unsafe { *out = h };
        ffi::SL_OK
    }))
    .unwrap_or(ffi::SL_ERR_FATAL)
}

unsafe extern "C" fn metric_record(handle: u64, value: f64) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Ok(children) = CHILDREN.read() else {
            return;
        };
        match handle.checked_sub(1).and_then(|i| children.get(i as usize)) {
            Some(Child::Counter(c)) => c.increment(value.max(0.0) as u64),
            Some(Child::Gauge(g)) => g.set(value),
            Some(Child::Histogram(h)) => h.record(value),
            None => {}
        }
    }));
}

unsafe extern "C" fn notify(inst: *const c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if let Some(s) = shared(inst, "notify") {
            s.notify.notify_one();
        }
    }));
}

unsafe extern "C" fn complete(
    inst: *const c_void,
    ticket: u64,
    status: ffi::sl_status,
    failed_idx: *const u32,
    n_failed: usize,
    err: *const ffi::sl_error,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(s) = shared(inst, "complete") else {
            return;
        };
        let failed = if failed_idx.is_null() || n_failed == 0 {
            Vec::new()
        } else {
            // SAFETY: n_failed indexes at failed_idx.
            unsafe { std::slice::from_raw_parts(failed_idx, n_failed) }.to_vec()
        };
        // SAFETY: null or a valid error buffer for the call.
        let (message, retry_after_ms) = match unsafe { err.as_ref() } {
            Some(e) => (sluice_plugin_api::read_error(e).0, e.retry_after_ms),
            None => (String::new(), 0),
        };
        s.complete(
            ticket,
            CompletionResult {
                status,
                failed,
                message,
                retry_after_ms,
            },
        );
    }));
}

static HOST_API: ffi::sl_host_api = ffi::sl_host_api {
    struct_size: std::mem::size_of::<ffi::sl_host_api>() as u32,
    abi_major: ffi::SL_ABI_MAJOR,
    abi_minor: ffi::SL_ABI_MINOR,
    log_enabled: Some(log_enabled),
    log: Some(log),
    metric_register: Some(metric_register),
    metric_bind: Some(metric_bind),
    metric_record: Some(metric_record),
    notify: Some(notify),
    complete: Some(complete),
};

/// The host API table (static).
pub fn host_api() -> *const ffi::sl_host_api {
    &HOST_API
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A completion that arrives after its instance was destroyed is refused, including
    /// when the slot was reused by a newer instance (the generation differs).
    #[test]
    fn late_calls_with_a_destroyed_handle_are_refused() {
        let a = Arc::new(InstanceShared::new("p", "pl", "sink", "", None));
        let ha = register_instance(a.clone());
        let (ticket, mut rx) = a.register_ticket();
        assert!(shared(ha, "test").is_some());
        release_instance(ha);
        assert!(shared(ha, "test").is_none(), "released handle refused");
        // SAFETY: the callback checks the handle; arrays are null with length 0.
        unsafe {
            complete(
                ha,
                ticket,
                ffi::SL_OK,
                std::ptr::null(),
                0,
                std::ptr::null(),
            )
        };
        assert!(rx.try_recv().is_err(), "a late completion reaches nobody");
        // SAFETY: as above.
        unsafe { notify(ha) };
        let b = Arc::new(InstanceShared::new("p", "pl", "sink", "", None));
        let hb = register_instance(b.clone());
        assert_ne!(ha, hb, "a reused slot has a new generation");
        assert!(shared(ha, "test").is_none());
        assert!(Arc::ptr_eq(&shared(hb, "test").unwrap(), &b));
        // Made-up handles are refused too, and null is no instance at all.
        assert!(shared(0xdead_beef_0000_0001usize as *const c_void, "test").is_none());
        assert!(shared(std::ptr::null(), "test").is_none());
        release_instance(hb);
        release_instance(hb);
        assert!(shared(hb, "test").is_none());
    }
}
