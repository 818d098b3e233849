//! Safe host-side wrappers around plugin instances: every ABI call goes through here,
//! is timed and counted (`sluice_plugin_calls_total`, `sluice_plugin_call_duration_seconds`),
//! and its status is turned into a typed result. Host callbacks (the builder's `push` and
//! `reject`) copy what the plugin hands over before returning.

use super::host::{host_api, CompletionResult, InstanceShared};
use super::PluginEntry;
use crate::record::{now_ms, position_key, Position, Record, MAX_OFFSET, MAX_PARTITIONS};
use crate::spec::Kind;
use bytes::Bytes;
use sluice_plugin_api::ffi;
use std::collections::HashMap;
use std::ffi::c_void;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A failed plugin call.
#[derive(Debug, Clone)]
pub struct CallError {
    /// Plugin name.
    pub plugin: String,
    /// Which call (`create`, `transform`, ...).
    pub call: &'static str,
    /// The status the plugin returned.
    pub status: ffi::sl_status,
    /// The plugin's message.
    pub message: String,
    /// Config key the error is about (config errors).
    pub field: String,
    /// Retry hint.
    pub retry_after_ms: u32,
}

impl CallError {
    /// The plugin panicked (its instance is poisoned).
    pub fn is_panic(&self) -> bool {
        self.status == ffi::SL_ERR_PANIC
    }
    /// Worth retrying.
    pub fn is_retryable(&self) -> bool {
        self.status == ffi::SL_ERR_RETRYABLE
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin `{}` {} failed ({}): {}",
            self.plugin,
            self.call,
            status_name(self.status),
            self.message
        )
    }
}

impl std::error::Error for CallError {}

/// Metric label for a status.
pub fn status_name(st: ffi::sl_status) -> &'static str {
    match st {
        ffi::SL_OK => "ok",
        ffi::SL_PENDING => "pending",
        ffi::SL_EOF => "eof",
        ffi::SL_ERR_CONFIG => "config_error",
        ffi::SL_ERR_RETRYABLE => "retryable_error",
        ffi::SL_ERR_PANIC => "panic",
        ffi::SL_ERR_UNSUPPORTED => "unsupported",
        _ => "fatal_error",
    }
}

/// A live plugin instance. Never used concurrently (it is `Send`, not `Sync`); destroyed
/// on drop.
pub struct Instance {
    entry: Arc<PluginEntry>,
    this: *mut c_void,
    shared: Arc<InstanceShared>,
    // Boxed so its address is stable: the plugin keeps the pointer until destroy.
    _ctx: Box<ffi::sl_instance_ctx>,
    calls: HashMap<(&'static str, ffi::sl_status), metrics::Counter>,
    durations: HashMap<&'static str, metrics::Histogram>,
}

// SAFETY: the ABI requires instances to be movable between threads (never used concurrently).
unsafe impl Send for Instance {}

impl Instance {
    /// Creates an instance: the plugin parses and validates `config_json`.
    pub fn create(
        entry: Arc<PluginEntry>,
        pipeline: &str,
        component: &str,
        config_dir: &Path,
        config_json: &str,
        services: Option<Arc<super::HostServices>>,
    ) -> Result<Instance, CallError> {
        let shared = Arc::new(InstanceShared::new(
            &entry.name,
            pipeline,
            component,
            &config_dir.to_string_lossy(),
            services,
        ));
        let ctx = Box::new(ffi::sl_instance_ctx {
            struct_size: std::mem::size_of::<ffi::sl_instance_ctx>() as u32,
            host: host_api(),
            inst: super::host::register_instance(shared.clone()),
            pipeline: ffi::sl_bytes::from_slice(shared.pipeline.as_bytes()),
            component_id: ffi::sl_bytes::from_slice(shared.component.as_bytes()),
            config_dir: ffi::sl_bytes::from_slice(shared.config_dir.as_bytes()),
        });
        let mut inst = Instance {
            entry,
            this: std::ptr::null_mut(),
            shared,
            _ctx: ctx,
            calls: HashMap::new(),
            durations: HashMap::new(),
        };
        let Some(create) = inst.entry.vtable.create else {
            return Err(inst.error("create", ffi::SL_ERR_UNSUPPORTED, &ffi::sl_error::zeroed()));
        };
        let mut err = ffi::sl_error::zeroed();
        let mut this: *mut c_void = std::ptr::null_mut();
        let json = ffi::sl_bytes::from_slice(config_json.as_bytes());
        let t = Instant::now();
        // SAFETY: validated vtable; ctx and the JSON view outlive the call (ctx until destroy).
        let st = unsafe { create(&*inst._ctx, json, &mut this, &mut err) };
        inst.record("create", st, t);
        if st != ffi::SL_OK {
            return Err(inst.error("create", st, &err));
        }
        if this.is_null() {
            return Err(inst.error("create", ffi::SL_ERR_FATAL, &ffi::sl_error::zeroed()));
        }
        inst.this = this;
        // The kind's hot call is exported with a zero count before its first batch, so
        // latency panels and alerts see zeros, not gaps.
        let hot = match (inst.entry.kind, inst.entry.object_sink) {
            (Kind::Source, _) => "poll_batch",
            (Kind::Transform, _) => "transform",
            (Kind::Sink, false) => "submit",
            (Kind::Sink, true) => "submit_object",
        };
        let plugin = inst.entry.name.clone();
        inst.durations.entry(hot).or_insert_with(|| {
            metrics::histogram!("sluice_plugin_call_duration_seconds", "plugin" => plugin, "call" => hot)
        });
        Ok(inst)
    }

    /// The plugin's registry entry.
    pub fn entry(&self) -> &PluginEntry {
        &self.entry
    }

    /// State shared with the plugin (notify, completions).
    pub fn shared(&self) -> &Arc<InstanceShared> {
        &self.shared
    }

    fn record(&mut self, call: &'static str, st: ffi::sl_status, started: Instant) {
        let elapsed = started.elapsed().as_secs_f64();
        let (plugin, pipeline) = (&self.entry.name, &self.shared.pipeline);
        self.calls
            .entry((call, st))
            .or_insert_with(|| {
                metrics::counter!("sluice_plugin_calls_total",
                    "plugin" => plugin.clone(), "pipeline" => pipeline.clone(),
                    "call" => call, "status" => status_name(st))
            })
            .increment(1);
        self.durations
            .entry(call)
            .or_insert_with(|| metrics::histogram!("sluice_plugin_call_duration_seconds", "plugin" => plugin.clone(), "call" => call))
            .record(elapsed);
        if st == ffi::SL_ERR_PANIC {
            metrics::counter!("sluice_plugin_panics_total", "plugin" => plugin.clone(), "pipeline" => pipeline.clone())
                .increment(1);
        }
    }

    fn error(&self, call: &'static str, st: ffi::sl_status, err: &ffi::sl_error) -> CallError {
        let (mut message, field) = sluice_plugin_api::read_error(err);
        if message.is_empty() {
            message = format!("returned {}", status_name(st));
        }
        CallError {
            plugin: self.entry.name.clone(),
            call,
            status: st,
            message,
            field,
            retry_after_ms: err.retry_after_ms,
        }
    }

    /// Runs one vtable call with timing, metrics and error conversion; `Ok` carries the
    /// non-negative status (OK, PENDING, EOF).
    fn call(
        &mut self,
        name: &'static str,
        f: impl FnOnce(*mut c_void, *mut ffi::sl_error) -> ffi::sl_status,
    ) -> Result<ffi::sl_status, CallError> {
        let mut err = ffi::sl_error::zeroed();
        let t = Instant::now();
        let st = f(self.this, &mut err);
        self.record(name, st, t);
        if st < 0 {
            Err(self.error(name, st, &err))
        } else {
            Ok(st)
        }
    }

    /// Starts background work. May block.
    pub fn start(&mut self) -> Result<(), CallError> {
        let Some(start) = self.entry.vtable.start else {
            return Ok(());
        };
        // SAFETY: live instance, validated vtable.
        self.call("start", |this, err| unsafe { start(this, err) })
            .map(drop)
    }

    /// Stops background work. May block.
    pub fn stop(&mut self, deadline: Duration) -> Result<(), CallError> {
        let Some(stop) = self.entry.vtable.stop else {
            return Ok(());
        };
        let ms = deadline.as_millis().min(u32::MAX as u128) as u32;
        // SAFETY: live instance, validated vtable.
        self.call("stop", |this, err| unsafe { stop(this, ms, err) })
            .map(drop)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.this.is_null() {
            if let Some(destroy) = self.entry.vtable.destroy {
                // SAFETY: live instance, destroyed exactly once.
                unsafe { destroy(self.this) };
            }
        }
        self.this = std::ptr::null_mut();
        // From here on a call with this instance's handle is refused.
        super::host::release_instance(self._ctx.inst);
    }
}

/// Builds `sl_record` views over host records (and their attributes).
/// The batch struct itself lives here too: a sink may hold its pointer until completion.
struct Views {
    records: Vec<ffi::sl_record>,
    attrs: Vec<ffi::sl_attr>,
    batch: ffi::sl_batch,
}

// SAFETY: the raw pointers point into records owned by the caller for the duration the
// ABI allows; the views are plain data otherwise.
unsafe impl Send for Views {}

impl Default for Views {
    fn default() -> Self {
        Views {
            records: Vec::new(),
            attrs: Vec::new(),
            batch: ffi::sl_batch {
                struct_size: std::mem::size_of::<ffi::sl_batch>() as u32,
                record_stride: std::mem::size_of::<ffi::sl_record>() as u32,
                records: std::ptr::null(),
                len: 0,
            },
        }
    }
}

impl Views {
    fn fill(&mut self, input: &[Record]) -> *const ffi::sl_batch {
        self.records.clear();
        self.attrs.clear();
        for r in input {
            for (k, v) in &r.attrs {
                self.attrs.push(ffi::sl_attr {
                    key: ffi::sl_bytes::from_slice(k.as_bytes()),
                    value: ffi::sl_bytes::from_slice(v.as_bytes()),
                });
            }
        }
        // Attribute pointers are taken after `attrs` stopped growing.
        let mut at = 0usize;
        for r in input {
            let n = r.attrs.len();
            self.records.push(ffi::sl_record {
                data: ffi::sl_bytes::from_slice(&r.data),
                partition_key: ffi::sl_bytes::from_slice(&r.partition_key),
                sequence: r.sequence,
                timestamp_ms: r.arrival_ms,
                attrs: if n == 0 {
                    std::ptr::null()
                } else {
                    self.attrs[at..].as_ptr()
                },
                attrs_len: n as u32,
                flags: if r.position.is_some() {
                    ffi::SL_RECORD_POSITIONED
                } else {
                    0
                },
                partition: r.position.map_or(0, |p| p.partition),
                reserved: 0,
            });
            at += n;
        }
        self.batch.records = self.records.as_ptr();
        self.batch.len = self.records.len();
        &self.batch
    }
}

/// What the builder callbacks collect during one call.
struct Collector<'a> {
    input: &'a [Record],
    out: Vec<Record>,
    rejects: Vec<(usize, String)>,
    credit_records: u64,
    credit_bytes: u64,
    bytes: u64,
    now: i64,
    next_seq: u64,
    /// A source record with a position outside [`MAX_PARTITIONS`]/[`MAX_OFFSET`].
    bad_position: Option<Position>,
}

impl<'a> Collector<'a> {
    /// A collector for a transform call over `input` (no credit limit).
    fn for_transform(input: &'a [Record]) -> Self {
        Collector {
            input,
            out: Vec::with_capacity(input.len()),
            rejects: Vec::new(),
            credit_records: u64::MAX,
            credit_bytes: u64::MAX,
            bytes: 0,
            now: now_ms(),
            next_seq: 0,
            bad_position: None,
        }
    }

    /// The transform's outputs, with its rejects resolved to their input records.
    fn into_output(self) -> TransformOutput {
        let input = self.input;
        TransformOutput {
            records: self.out,
            rejected: self
                .rejects
                .into_iter()
                .map(|(i, why)| (input[i].clone(), why))
                .collect(),
        }
    }
}

/// Copies a plugin record into a host record, inheriting from the input at `origin`.
///
/// # Safety
/// `r` must be a valid record whose views are valid for the call.
unsafe fn copy_record(c: &Collector<'_>, origin: usize, r: &ffi::sl_record) -> Record {
    let from = c.input.get(origin);
    // Positions come from sources; a transform's outputs keep their input's.
    let position = (r.flags & ffi::SL_RECORD_POSITIONED != 0).then_some(Position {
        partition: r.partition,
        offset: r.sequence,
    });
    // SAFETY: caller's contract.
    let (data, key) = unsafe { (r.data.as_slice(), r.partition_key.as_slice()) };
    let mut attrs = from.map(|f| f.attrs.clone()).unwrap_or_default();
    if !r.attrs.is_null() && r.attrs_len > 0 {
        // SAFETY: attrs_len attributes at attrs.
        for a in unsafe { std::slice::from_raw_parts(r.attrs, r.attrs_len as usize) } {
            // SAFETY: attribute views valid for the call.
            let (k, v) = unsafe { (a.key.as_slice(), a.value.as_slice()) };
            let (k, v) = (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            );
            match attrs.iter_mut().find(|(ek, _)| *ek == k) {
                Some(slot) => slot.1 = v,
                None => attrs.push((k, v)),
            }
        }
    }
    let partition_key = match (key.is_empty(), from) {
        (true, Some(f)) => f.partition_key.clone(),
        (true, None) => Bytes::new(),
        (false, Some(f)) if f.partition_key == key => f.partition_key.clone(),
        (false, _) => Bytes::copy_from_slice(key),
    };
    let data = match from {
        // A pass-through output shares the input's bytes instead of copying them.
        Some(f) if f.data.as_ptr() == data.as_ptr() && f.data.len() == data.len() => f.data.clone(),
        _ => Bytes::copy_from_slice(data),
    };
    Record {
        data,
        partition_key,
        arrival_ms: if r.timestamp_ms != ffi::SL_TIMESTAMP_UNSET {
            r.timestamp_ms
        } else {
            from.map(|f| f.arrival_ms).unwrap_or(c.now)
        },
        sequence: match (from, position) {
            (Some(f), _) => f.sequence,
            (None, Some(p)) => position_key(p),
            (None, None) if r.sequence != 0 => r.sequence,
            (None, None) => c.next_seq,
        },
        position: match from {
            Some(f) => f.position,
            None => position,
        },
        attrs,
    }
}

unsafe extern "C" fn push_cb(
    host: *mut c_void,
    origin: usize,
    rec: *const ffi::sl_record,
    size: u32,
) -> ffi::sl_status {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `host` is the Collector of the ongoing call.
        let Some(c) = (unsafe { (host as *mut Collector<'_>).as_mut() }) else {
            return ffi::SL_ERR_FATAL;
        };
        if rec.is_null() || (size as usize) < ffi::SL_RECORD_V1_0_SIZE {
            return ffi::SL_ERR_FATAL;
        }
        // An ABI 1.0 plugin's record is shorter: read what it has, the rest stays zero.
        let mut copy = ffi::sl_record::zeroed();
        let n = (size as usize).min(std::mem::size_of::<ffi::sl_record>());
        // SAFETY: `size` readable bytes at `rec` (ABI rule), of which we copy at most a record.
        unsafe {
            std::ptr::copy_nonoverlapping(rec as *const u8, &mut copy as *mut _ as *mut u8, n)
        };
        let r = &copy;
        if r.flags & ffi::SL_RECORD_POSITIONED != 0
            && (r.partition >= MAX_PARTITIONS || r.sequence > MAX_OFFSET)
        {
            c.bad_position = Some(Position {
                partition: r.partition,
                offset: r.sequence,
            });
            return ffi::SL_ERR_FATAL;
        }
        if c.out.len() as u64 >= c.credit_records
            || c.bytes + r.data.len as u64 > c.credit_bytes && !c.out.is_empty()
        {
            return ffi::SL_PENDING;
        }
        // SAFETY: views valid for the call (ABI rule).
        let rec = unsafe { copy_record(c, origin, r) };
        c.bytes += rec.data.len() as u64;
        c.next_seq += 1;
        c.out.push(rec);
        ffi::SL_OK
    }))
    .unwrap_or(ffi::SL_ERR_FATAL)
}

unsafe extern "C" fn reject_cb(
    host: *mut c_void,
    index: usize,
    reason: ffi::sl_str,
) -> ffi::sl_status {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `host` is the Collector of the ongoing call.
        let Some(c) = (unsafe { (host as *mut Collector<'_>).as_mut() }) else {
            return ffi::SL_ERR_FATAL;
        };
        if index >= c.input.len() {
            return ffi::SL_ERR_FATAL;
        }
        // SAFETY: view valid for the call.
        let reason = String::from_utf8_lossy(unsafe { reason.as_slice() }).into_owned();
        c.rejects.push((index, reason));
        ffi::SL_OK
    }))
    .unwrap_or(ffi::SL_ERR_FATAL)
}

unsafe extern "C" fn keep_cb(host: *mut c_void, idx: *const u32, n: usize) -> ffi::sl_status {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `host` is the Collector of the ongoing call.
        let Some(c) = (unsafe { (host as *mut Collector<'_>).as_mut() }) else {
            return ffi::SL_ERR_FATAL;
        };
        if n == 0 {
            return ffi::SL_OK;
        }
        if idx.is_null() {
            return ffi::SL_ERR_FATAL;
        }
        // SAFETY: n indexes at idx, valid for the call.
        let idx = unsafe { std::slice::from_raw_parts(idx, n) };
        let mut st = ffi::SL_OK;
        c.out.reserve(n);
        for &i in idx {
            match c.input.get(i as usize) {
                Some(r) => {
                    c.bytes += r.data.len() as u64;
                    c.out.push(r.clone());
                }
                None => st = ffi::SL_ERR_FATAL,
            }
        }
        st
    }))
    .unwrap_or(ffi::SL_ERR_FATAL)
}

fn builder(c: &mut Collector<'_>) -> ffi::sl_batch_builder {
    ffi::sl_batch_builder {
        struct_size: std::mem::size_of::<ffi::sl_batch_builder>() as u32,
        poll_delay_ms: 0,
        host: c as *mut Collector<'_> as *mut c_void,
        push: Some(push_cb),
        reject: Some(reject_cb),
        credit_records: c.credit_records,
        credit_bytes: c.credit_bytes,
        keep: Some(keep_cb),
    }
}

/// Result of polling a source.
#[derive(Debug)]
pub struct PollOutcome {
    /// New records (arrival time and sequence assigned).
    pub records: Vec<Record>,
    /// `SL_OK`, `SL_PENDING` or `SL_EOF`.
    pub status: ffi::sl_status,
    /// Token to ack once these records are delivered.
    pub ack_token: u64,
    /// The source's requested re-poll delay.
    pub poll_delay: Option<Duration>,
}

/// A source instance.
pub struct SourceInstance {
    inst: Instance,
    next_seq: u64,
}

impl SourceInstance {
    /// Wraps a created source instance.
    pub fn new(inst: Instance) -> Self {
        SourceInstance { inst, next_seq: 0 }
    }
    /// The underlying instance.
    pub fn instance(&mut self) -> &mut Instance {
        &mut self.inst
    }

    /// Polls for at most `max_records` / `max_bytes`. Must not block (ABI rule).
    pub fn poll(&mut self, max_records: u64, max_bytes: u64) -> Result<PollOutcome, CallError> {
        let Some(poll) = self.inst.entry.vtable.poll_batch else {
            return Err(self.inst.error(
                "poll_batch",
                ffi::SL_ERR_UNSUPPORTED,
                &ffi::sl_error::zeroed(),
            ));
        };
        let mut c = Collector {
            input: &[],
            out: Vec::new(),
            rejects: Vec::new(),
            credit_records: max_records,
            credit_bytes: max_bytes,
            bytes: 0,
            now: now_ms(),
            next_seq: self.next_seq,
            bad_position: None,
        };
        let mut b = builder(&mut c);
        let mut token = 0u64;
        // SAFETY: live instance; builder and collector outlive the call.
        let st = self.inst.call("poll_batch", |this, err| unsafe {
            poll(this, &mut b, &mut token, err)
        })?;
        let delay = (b.poll_delay_ms > 0).then(|| Duration::from_millis(b.poll_delay_ms as u64));
        // A replayable source's promise is what exactly-once rests on: a record without a
        // usable position breaks it, so the source fails (and restarts) instead.
        let broken = match c.bad_position {
            Some(p) => Some(format!(
                "record position {}:{} out of range (partitions < {MAX_PARTITIONS}, offsets <= {MAX_OFFSET})",
                p.partition, p.offset
            )),
            None if self.inst.entry.replayable && c.out.iter().any(|r| r.position.is_none()) => {
                Some("a replayable source emitted a record without a position".to_string())
            }
            None => None,
        };
        if let Some(message) = broken {
            return Err(CallError {
                plugin: self.inst.entry.name.clone(),
                call: "poll_batch",
                status: ffi::SL_ERR_FATAL,
                message,
                field: String::new(),
                retry_after_ms: 0,
            });
        }
        self.next_seq = c.next_seq;
        Ok(PollOutcome {
            records: c.out,
            status: st,
            ack_token: token,
            poll_delay: delay,
        })
    }

    /// Tells the source its batch `token` was delivered (or abandoned).
    pub fn ack(&mut self, token: u64, delivered: bool) {
        if let Some(ack) = self.inst.entry.vtable.ack {
            let st = if delivered {
                ffi::SL_OK
            } else {
                ffi::SL_ERR_FATAL
            };
            let t = Instant::now();
            // SAFETY: live instance.
            unsafe { ack(self.inst.this, token, st) };
            self.inst.record("ack", ffi::SL_OK, t);
        }
    }
}

/// Output of a transform call.
#[derive(Debug, Default)]
pub struct TransformOutput {
    /// Records to pass on.
    pub records: Vec<Record>,
    /// Input records sent to the error output, with the plugin's reason.
    pub rejected: Vec<(Record, String)>,
}

/// A transform instance.
pub struct TransformInstance {
    inst: Instance,
    views: Views,
}

impl TransformInstance {
    /// Whether the plugin was loaded from a library file (not bundled).
    pub fn is_dynamic(&self) -> bool {
        matches!(self.inst.entry.origin, super::Origin::Dylib(_))
    }

    /// Wraps a created transform instance.
    pub fn new(inst: Instance) -> Self {
        TransformInstance {
            inst,
            views: Views::default(),
        }
    }
    /// The underlying instance.
    pub fn instance(&mut self) -> &mut Instance {
        &mut self.inst
    }

    /// Runs the transform on a batch (CPU-bound: call from a worker thread).
    pub fn transform(&mut self, input: &[Record]) -> Result<TransformOutput, CallError> {
        let Some(transform) = self.inst.entry.vtable.transform else {
            return Err(self.inst.error(
                "transform",
                ffi::SL_ERR_UNSUPPORTED,
                &ffi::sl_error::zeroed(),
            ));
        };
        let batch = self.views.fill(input);
        let mut c = Collector::for_transform(input);
        let mut b = builder(&mut c);
        // SAFETY: live instance; views, builder and collector outlive the call.
        self.inst.call("transform", |this, err| unsafe {
            transform(this, batch, &mut b, err)
        })?;
        Ok(c.into_output())
    }
}

/// Result of a submit call.
pub enum Submit {
    /// Accepted: the completion arrives on this receiver.
    Accepted(oneshot::Receiver<CompletionResult>),
    /// The sink is full: wait for its notify and submit again.
    Full,
}

/// A record-sink instance.
pub struct SinkInstance {
    inst: Instance,
    views: Views,
    object: ffi::sl_object,
}

// SAFETY: the object view points into a HostObject the caller keeps alive; plain data.
unsafe impl Send for SinkInstance {}

impl SinkInstance {
    /// Wraps a created sink instance.
    pub fn new(inst: Instance) -> Self {
        SinkInstance {
            inst,
            views: Views::default(),
            object: ffi::sl_object {
                struct_size: std::mem::size_of::<ffi::sl_object>() as u32,
                flags: 0,
                key: ffi::sl_bytes::EMPTY,
                content_type: ffi::sl_bytes::EMPTY,
                content_encoding: ffi::sl_bytes::EMPTY,
                record_count: 0,
                oldest_timestamp_ms: 0,
                body: ffi::sl_bytes::EMPTY,
                body_path: ffi::sl_bytes::EMPTY,
            },
        }
    }
    /// The underlying instance.
    pub fn instance(&mut self) -> &mut Instance {
        &mut self.inst
    }

    /// Turns a submit call's status into [`Submit`]; a ticket that will never complete is
    /// forgotten.
    fn submitted(
        &self,
        res: Result<ffi::sl_status, CallError>,
        ticket: u64,
        rx: oneshot::Receiver<CompletionResult>,
    ) -> Result<Submit, CallError> {
        match res {
            Ok(ffi::SL_PENDING) => {
                self.inst.shared.cancel_ticket(ticket);
                Ok(Submit::Full)
            }
            Ok(_) => Ok(Submit::Accepted(rx)),
            Err(e) => {
                self.inst.shared.cancel_ticket(ticket);
                Err(e)
            }
        }
    }

    /// Submits a batch. The records' bytes must stay alive until the completion arrives
    /// (the caller keeps the batch); only one batch is in flight per instance.
    pub fn submit(&mut self, records: &[Record]) -> Result<Submit, CallError> {
        let Some(submit) = self.inst.entry.vtable.submit else {
            return Err(self.inst.error(
                "submit",
                ffi::SL_ERR_UNSUPPORTED,
                &ffi::sl_error::zeroed(),
            ));
        };
        let batch = self.views.fill(records);
        let (ticket, rx) = self.inst.shared.register_ticket();
        // SAFETY: live instance; the views stay in `self.views` until the next submit.
        let res = self.inst.call("submit", |this, err| unsafe {
            submit(this, batch, ticket, err)
        });
        self.submitted(res, ticket, rx)
    }
}

/// Runs a transform's Rust implementation directly — same record views and host builder
/// as [`TransformInstance::transform`], without the vtable, trampoline, `catch_unwind` or
/// call metrics. The baseline of the ABI-overhead benchmark.
#[doc(hidden)]
pub fn direct_transform<T: sluice_plugin_api::Transform>(
    plugin: &mut T,
    views: &mut DirectViews,
    input: &[Record],
) -> Result<TransformOutput, sluice_plugin_api::Error> {
    let batch = views.0.fill(input);
    let mut c = Collector::for_transform(input);
    let mut b = builder(&mut c);
    // SAFETY: the views and the builder outlive the call.
    let (batch, mut out) = unsafe {
        (
            sluice_plugin_api::Batch::from_raw(&*batch),
            sluice_plugin_api::Output::from_raw(&mut b),
        )
    };
    plugin.transform(&batch, &mut out)?;
    out.finish();
    Ok(c.into_output())
}

/// Scratch space for [`direct_transform`].
#[doc(hidden)]
#[derive(Default)]
pub struct DirectViews(Views);

/// A flushed object, owned by the host until its completion.
#[derive(Debug)]
pub struct HostObject {
    /// Object key.
    pub key: String,
    /// MIME type.
    pub content_type: &'static str,
    /// Content encoding (`gzip`, ...), empty for none.
    pub content_encoding: &'static str,
    /// Records inside.
    pub record_count: u64,
    /// Oldest arrival, ms.
    pub oldest_ms: i64,
    /// The encoded body (empty when it is in `body_path`).
    pub body: Vec<u8>,
    /// A spool file holding the encoded body instead.
    pub body_path: Option<std::path::PathBuf>,
}

impl SinkInstance {
    /// Submits a flushed object (object sinks). The object must stay alive until the
    /// completion arrives; the host keeps it.
    pub fn submit_object(&mut self, obj: &HostObject) -> Result<Submit, CallError> {
        let Some(submit) = self.inst.entry.vtable.submit_object else {
            return Err(self.inst.error(
                "submit_object",
                ffi::SL_ERR_UNSUPPORTED,
                &ffi::sl_error::zeroed(),
            ));
        };
        self.object = ffi::sl_object {
            struct_size: std::mem::size_of::<ffi::sl_object>() as u32,
            flags: 0,
            key: ffi::sl_bytes::from_slice(obj.key.as_bytes()),
            content_type: ffi::sl_bytes::from_slice(obj.content_type.as_bytes()),
            content_encoding: ffi::sl_bytes::from_slice(obj.content_encoding.as_bytes()),
            record_count: obj.record_count,
            oldest_timestamp_ms: obj.oldest_ms,
            body: ffi::sl_bytes::from_slice(&obj.body),
            body_path: match &obj.body_path {
                Some(p) => {
                    ffi::sl_bytes::from_slice(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))
                }
                None => ffi::sl_bytes::EMPTY,
            },
        };
        let (ticket, rx) = self.inst.shared.register_ticket();
        let raw: *const ffi::sl_object = &self.object;
        // SAFETY: live instance; the sl_object lives in self until the next submit.
        let res = self.inst.call("submit_object", |this, err| unsafe {
            submit(this, raw, ticket, err)
        });
        self.submitted(res, ticket, rx)
    }
}
