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

/// The instance's handle on the host, valid from `create` until the instance is destroyed.
#[derive(Clone)]
pub struct Context {
    ctx: *const ffi::sl_instance_ctx,
}

// SAFETY: the host guarantees every host API function is thread-safe, and the context
// outlives the instance that holds it.
unsafe impl Send for Context {}
// SAFETY: as above.
unsafe impl Sync for Context {}

impl Context {
    /// # Safety
    /// `ctx` must be valid until the instance is destroyed.
    pub unsafe fn from_raw(ctx: *const ffi::sl_instance_ctx) -> Self {
        Context { ctx }
    }

    fn raw(&self) -> &ffi::sl_instance_ctx {
        // SAFETY: from_raw's contract.
        unsafe { &*self.ctx }
    }

    fn host(&self) -> &ffi::sl_host_api {
        // SAFETY: the host API table is static in the host.
        unsafe { &*self.raw().host }
    }

    /// Name of the pipeline this instance belongs to.
    pub fn pipeline(&self) -> &str {
        // SAFETY: the view lives as long as the context.
        std::str::from_utf8(unsafe { self.raw().pipeline.as_slice() }).unwrap_or("")
    }

    /// The component id inside the pipeline (`source`, `transforms[0]`, `sink`).
    pub fn component_id(&self) -> &str {
        // SAFETY: the view lives as long as the context.
        std::str::from_utf8(unsafe { self.raw().component_id.as_slice() }).unwrap_or("")
    }

    /// Resolves a path from the plugin's config: relative paths are taken against the
    /// folder of the daemon's config file, as every path in sluice's config is.
    pub fn resolve_path(&self, p: &std::path::Path) -> std::path::PathBuf {
        // SAFETY: the view lives as long as the context.
        let dir = std::str::from_utf8(unsafe { self.raw().config_dir.as_slice() }).unwrap_or("");
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
                    self.raw().inst,
                    level as i32,
                    ffi::sl_bytes::from_slice(msg.as_bytes()),
                )
            }
        }
    }

    /// A handle other threads can use to ask the host to poll or submit again.
    pub fn notifier(&self) -> Notifier {
        Notifier {
            host: self.raw().host,
            inst: self.raw().inst,
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
                self.raw().inst,
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
            host: self.raw().host,
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
    /// Wakes the host's driver of this instance. Must not be called after `stop` returned.
    pub fn notify(&self) {
        // SAFETY: host API table is static; notify is thread-safe.
        if let Some(f) = unsafe { (*self.host).notify } {
            // SAFETY: inst is valid until destroy.
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
/// it uncompleted reports a fatal error to the host.
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
            host: ctx.raw().host,
            inst: ctx.raw().inst,
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
