//! The host services a plugin instance may use: logging, metrics, notify and completions.

use crate::{ffi, Error};
use std::ffi::c_void;

/// Log levels, as the host's `log` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error = ffi::SL_LOG_ERROR as isize,
    Warn = ffi::SL_LOG_WARN as isize,
    Info = ffi::SL_LOG_INFO as isize,
    Debug = ffi::SL_LOG_DEBUG as isize,
    Trace = ffi::SL_LOG_TRACE as isize,
}

/// Kinds of plugin metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter = ffi::SL_METRIC_COUNTER as isize,
    Gauge = ffi::SL_METRIC_GAUGE as isize,
    Histogram = ffi::SL_METRIC_HISTOGRAM as isize,
}

/// The instance's handle on the host.
///
/// It copies what it needs from the host's `sl_instance_ctx` when the instance is created
/// and keeps no pointer into per-instance host memory: only the host API table (static in
/// the host, valid for the life of the process) and the instance handle. A sluice host
/// checks that handle on every call, so a `Context`, [`Notifier`] or [`Completion`] kept on
/// a plugin thread past `destroy` is refused by the host, never a use-after-free.
#[derive(Clone)]
pub struct Context {
    host: *const ffi::sl_host_api,
    inst: *const c_void,
    pipeline: std::sync::Arc<str>,
    component: std::sync::Arc<str>,
    config_dir: std::sync::Arc<str>,
}

// SAFETY: the host guarantees every host API function is thread-safe; the table is static
// in the host and `inst` is a handle the host checks, not memory read here.
unsafe impl Send for Context {}
// SAFETY: as above.
unsafe impl Sync for Context {}

impl Context {
    /// # Safety
    /// `ctx` must point at a valid `sl_instance_ctx` for the duration of this call, whose
    /// `host` table stays valid for the life of the process.
    pub unsafe fn from_raw(ctx: *const ffi::sl_instance_ctx) -> Self {
        // SAFETY: caller's contract; the views are copied before returning.
        let raw = unsafe { &*ctx };
        let text = |b: &ffi::sl_str| -> std::sync::Arc<str> {
            // SAFETY: caller's contract: the views are valid for this call.
            String::from_utf8_lossy(unsafe { b.as_slice() }).into()
        };
        Context {
            host: raw.host,
            inst: raw.inst,
            pipeline: text(&raw.pipeline),
            component: text(&raw.component_id),
            config_dir: text(&raw.config_dir),
        }
    }

    /// The opaque instance handle the host gave this instance (`sl_instance_ctx.inst`).
    /// Plugins never need it; a host may use it to find services it offers its own
    /// bundled plugins beyond the ABI.
    pub fn instance_handle(&self) -> *const c_void {
        self.inst
    }

    fn host(&self) -> &ffi::sl_host_api {
        // SAFETY: the host API table is static in the host.
        unsafe { &*self.host }
    }

    /// Name of the pipeline this instance belongs to.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The component id inside the pipeline (`source`, `transforms[0]`, `sink`).
    pub fn component_id(&self) -> &str {
        &self.component
    }

    /// Resolves a path from the plugin's config: relative paths are taken against the
    /// folder of the daemon's config file, as every path in sluice's config is.
    pub fn resolve_path(&self, p: &std::path::Path) -> std::path::PathBuf {
        let dir: &str = &self.config_dir;
        if p.is_absolute() || dir.is_empty() {
            p.to_path_buf()
        } else {
            std::path::Path::new(dir).join(p)
        }
    }

    /// Whether the host would record a message at `level`.
    pub fn log_enabled(&self, level: Level) -> bool {
        // SAFETY: host API function, thread-safe.
        self.host()
            .log_enabled
            .map(|f| unsafe { f(level as i32) })
            .unwrap_or(false)
    }

    /// Logs `msg` through the host's logger, with pipeline and plugin fields.
    pub fn log(&self, level: Level, msg: &str) {
        if let Some(f) = self.host().log {
            // SAFETY: host API function; msg is copied by the host.
            unsafe {
                f(
                    self.inst,
                    level as i32,
                    ffi::sl_bytes::from_slice(msg.as_bytes()),
                )
            }
        }
    }

    /// A handle other threads can use to ask the host to poll or submit again.
    pub fn notifier(&self) -> Notifier {
        Notifier {
            host: self.host,
            inst: self.inst,
        }
    }

    /// Registers a metric family `sluice_plugin_<name>` with extra label names.
    /// Only valid during `create` and `start`.
    pub fn metric(
        &self,
        kind: MetricKind,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<MetricFamily, Error> {
        let f = self
            .host()
            .metric_register
            .ok_or_else(|| Error::fatal("host has no metric_register"))?;
        let names: Vec<ffi::sl_str> = labels
            .iter()
            .map(|l| ffi::sl_bytes::from_slice(l.as_bytes()))
            .collect();
        let mut handle = 0u64;
        // SAFETY: host API function; all views are copied before it returns.
        let st = unsafe {
            f(
                self.inst,
                kind as i32,
                ffi::sl_bytes::from_slice(name.as_bytes()),
                ffi::sl_bytes::from_slice(help.as_bytes()),
                names.as_ptr(),
                names.len(),
                &mut handle,
            )
        };
        if st != ffi::SL_OK {
            return Err(Error::fatal(format_args!("cannot register metric {name}")));
        }
        Ok(MetricFamily {
            host: self.host,
            handle,
        })
    }

    /// Registers an unlabelled counter.
    pub fn counter(&self, name: &str, help: &str) -> Result<Metric, Error> {
        self.metric(MetricKind::Counter, name, help, &[])?.bind(&[])
    }
}

/// Thread-safe "poll/submit me again" handle.
#[derive(Clone)]
pub struct Notifier {
    host: *const ffi::sl_host_api,
    inst: *const c_void,
}

// SAFETY: `notify` is thread-safe by contract.
unsafe impl Send for Notifier {}
// SAFETY: as above.
unsafe impl Sync for Notifier {}

impl Notifier {
    /// Wakes the host's driver of this instance. After `destroy` the host refuses the call
    /// (it checks the instance handle), so a notifier kept on a thread is harmless.
    pub fn notify(&self) {
        // SAFETY: host API table is static; notify is thread-safe.
        if let Some(f) = unsafe { (*self.host).notify } {
            // SAFETY: inst is a handle the host checks, never dereferenced here.
            unsafe { f(self.inst) }
        }
    }
}

/// A registered metric family; bind label values to get a [`Metric`].
pub struct MetricFamily {
    host: *const ffi::sl_host_api,
    handle: u64,
}

// SAFETY: host metric functions are thread-safe.
unsafe impl Send for MetricFamily {}
// SAFETY: as above.
unsafe impl Sync for MetricFamily {}

impl MetricFamily {
    /// The child metric for these label values (cache it).
    pub fn bind(&self, values: &[&str]) -> Result<Metric, Error> {
        // SAFETY: static host table.
        let host = unsafe { &*self.host };
        let f = host
            .metric_bind
            .ok_or_else(|| Error::fatal("host has no metric_bind"))?;
        let vals: Vec<ffi::sl_str> = values
            .iter()
            .map(|v| ffi::sl_bytes::from_slice(v.as_bytes()))
            .collect();
        let mut child = 0;
        // SAFETY: views are copied before the call returns.
        let st = unsafe { f(self.handle, vals.as_ptr(), vals.len(), &mut child) };
        if st != ffi::SL_OK {
            return Err(Error::fatal("cannot bind metric labels"));
        }
        Ok(Metric {
            host: self.host,
            handle: child,
        })
    }
}

/// A metric child: counters add, gauges set, histograms observe.
#[derive(Clone)]
pub struct Metric {
    host: *const ffi::sl_host_api,
    handle: u64,
}

// SAFETY: host metric functions are thread-safe.
unsafe impl Send for Metric {}
// SAFETY: as above.
unsafe impl Sync for Metric {}

impl Metric {
    /// Adds (counter), sets (gauge) or observes (histogram) `value`.
    pub fn record(&self, value: f64) {
        // SAFETY: static host table.
        if let Some(f) = unsafe { (*self.host).metric_record } {
            // SAFETY: thread-safe host function.
            unsafe { f(self.handle, value) }
        }
    }
}

/// A move-only ticket for a submitted batch or object. Complete it exactly once; dropping
/// it uncompleted reports a fatal error to the host. It holds only the static host table,
/// the instance handle and the ticket: completing it after `destroy` is refused by the
/// host, never a use-after-free.
pub struct Completion {
    host: *const ffi::sl_host_api,
    inst: *const c_void,
    ticket: u64,
    done: bool,
}

// SAFETY: `complete` is thread-safe by contract; a sink may complete from its own threads.
unsafe impl Send for Completion {}

impl Completion {
    /// # Safety
    /// `ctx` must be the instance's valid context.
    pub unsafe fn from_raw(ctx: &Context, ticket: u64) -> Self {
        Completion {
            host: ctx.host,
            inst: ctx.inst,
            ticket,
            done: false,
        }
    }

    fn finish(mut self, status: ffi::sl_status, failed: &[u32], err: Option<&Error>) {
        self.done = true;
        let mut e = ffi::sl_error::zeroed();
        if let Some(err) = err {
            err.write_to(&mut e);
        }
        // SAFETY: static host table; complete copies what it needs.
        if let Some(f) = unsafe { (*self.host).complete } {
            // SAFETY: as above.
            unsafe {
                f(
                    self.inst,
                    self.ticket,
                    status,
                    failed.as_ptr(),
                    failed.len(),
                    &e,
                )
            }
        }
    }

    /// Everything was durably delivered.
    pub fn success(self) {
        self.finish(ffi::SL_OK, &[], None)
    }

    /// Delivered except the records at `failed` indexes (retry those).
    pub fn partial(self, failed: &[u32], err: &Error) {
        self.finish(ffi::SL_ERR_RETRYABLE, failed, Some(err))
    }

    /// Nothing was delivered.
    pub fn fail(self, err: &Error) {
        self.finish(err.status(), &[], Some(err))
    }

    pub(crate) fn forget(mut self) {
        self.done = true;
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            let e = Error::fatal("completion dropped without being completed");
            let mut raw = ffi::sl_error::zeroed();
            let st = e.write_to(&mut raw);
            // SAFETY: static host table.
            if let Some(f) = unsafe { (*self.host).complete } {
                // SAFETY: as above.
                unsafe { f(self.inst, self.ticket, st, std::ptr::null(), 0, &raw) }
            }
        }
    }
}
