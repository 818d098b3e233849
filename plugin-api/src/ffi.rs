//! `#[repr(C)]` mirror of `include/sluice_plugin.h`, the normative ABI.
//!
//! Field order, types and sizes must match the header exactly; `tests/layout.rs` compiles C
//! code that asserts every `sizeof`/`offsetof` against the values computed here.
#![allow(non_camel_case_types)]

use std::ffi::c_void;

/// ABI major version: a different major is refused by the host.
pub const SL_ABI_MAJOR: u16 = 1;
/// ABI minor version this crate was built against.
pub const SL_ABI_MINOR: u16 = 1;
/// `"SLP1"` little-endian; catches random shared objects.
pub const SL_MAGIC: u32 = 0x3150_4C53;

/// Status returned by every fallible call.
pub type sl_status = i32;
pub const SL_OK: sl_status = 0;
pub const SL_PENDING: sl_status = 1;
pub const SL_EOF: sl_status = 2;
pub const SL_ERR_CONFIG: sl_status = -1;
pub const SL_ERR_RETRYABLE: sl_status = -2;
pub const SL_ERR_FATAL: sl_status = -3;
pub const SL_ERR_PANIC: sl_status = -4;
pub const SL_ERR_UNSUPPORTED: sl_status = -5;

/// Plugin kind.
pub type sl_kind = u32;
pub const SL_KIND_SOURCE: sl_kind = 1;
pub const SL_KIND_TRANSFORM: sl_kind = 2;
pub const SL_KIND_SINK: sl_kind = 3;

/// `sl_plugin_def.flags`: the sink takes flushed objects.
pub const SL_DEF_OBJECT_SINK: u32 = 1;
/// A replayable source (ABI 1.1): positions on every record, replay after restart.
pub const SL_DEF_REPLAYABLE: u32 = 2;
/// `sl_record.flags`: `partition` + `sequence` are the record's replay position (ABI 1.1).
pub const SL_RECORD_POSITIONED: u32 = 1;
/// `sl_library.flags`: built with `panic = "unwind"`.
pub const SL_LIB_PANICS_CAUGHT: u16 = 1;

pub const SL_LOG_ERROR: i32 = 1;
pub const SL_LOG_WARN: i32 = 2;
pub const SL_LOG_INFO: i32 = 3;
pub const SL_LOG_DEBUG: i32 = 4;
pub const SL_LOG_TRACE: i32 = 5;

pub const SL_METRIC_COUNTER: i32 = 1;
pub const SL_METRIC_GAUGE: i32 = 2;
pub const SL_METRIC_HISTOGRAM: i32 = 3;

/// `sl_record.timestamp_ms` when unset.
pub const SL_TIMESTAMP_UNSET: i64 = i64::MIN;

/// A borrowed byte view.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sl_bytes {
    pub ptr: *const u8,
    pub len: usize,
}

/// A borrowed UTF-8 view, not NUL-terminated.
pub type sl_str = sl_bytes;

impl sl_bytes {
    /// An empty view (dangling but non-null pointer, as Rust slices use).
    pub const EMPTY: sl_bytes = sl_bytes {
        ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
        len: 0,
    };

    /// A view of a static string (usable in statics).
    pub const fn from_static(s: &'static str) -> sl_bytes {
        sl_bytes {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// A view borrowing `b`; valid as long as `b` is.
    pub fn from_slice(b: &[u8]) -> sl_bytes {
        sl_bytes {
            ptr: b.as_ptr(),
            len: b.len(),
        }
    }

    /// # Safety
    /// `ptr` must be valid for `len` bytes for `'a` (or `len` must be 0).
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            &[]
        } else {
            // SAFETY: guaranteed by the caller.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// Host-owned error buffer, zeroed before each call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sl_error {
    pub code: i32,
    pub retry_after_ms: u32,
    pub len: u32,
    pub field_len: u32,
    pub field: [u8; 128],
    pub msg: [u8; 1024],
}

impl sl_error {
    /// A zeroed error buffer.
    pub const fn zeroed() -> sl_error {
        sl_error {
            code: 0,
            retry_after_ms: 0,
            len: 0,
            field_len: 0,
            field: [0; 128],
            msg: [0; 1024],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sl_attr {
    pub key: sl_str,
    pub value: sl_str,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sl_record {
    pub data: sl_bytes,
    pub partition_key: sl_str,
    pub sequence: u64,
    pub timestamp_ms: i64,
    pub attrs: *const sl_attr,
    pub attrs_len: u32,
    pub flags: u32,
    /// ABI 1.1.
    pub partition: u32,
    /// ABI 1.1, 0.
    pub reserved: u32,
}

impl sl_record {
    /// An empty record: null views, no attributes, no flags.
    pub const fn zeroed() -> sl_record {
        sl_record {
            data: sl_bytes {
                ptr: std::ptr::null(),
                len: 0,
            },
            partition_key: sl_bytes {
                ptr: std::ptr::null(),
                len: 0,
            },
            sequence: 0,
            timestamp_ms: 0,
            attrs: std::ptr::null(),
            attrs_len: 0,
            flags: 0,
            partition: 0,
            reserved: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sl_batch {
    pub struct_size: u32,
    pub record_stride: u32,
    pub records: *const sl_record,
    pub len: usize,
}

#[repr(C)]
pub struct sl_batch_builder {
    pub struct_size: u32,
    pub poll_delay_ms: u32,
    pub host: *mut c_void,
    pub push: Option<
        unsafe extern "C" fn(
            host: *mut c_void,
            origin: usize,
            record: *const sl_record,
            record_size: u32,
        ) -> sl_status,
    >,
    pub reject: Option<
        unsafe extern "C" fn(host: *mut c_void, input_index: usize, reason: sl_str) -> sl_status,
    >,
    pub credit_records: u64,
    pub credit_bytes: u64,
    pub keep: Option<
        unsafe extern "C" fn(host: *mut c_void, input_indexes: *const u32, n: usize) -> sl_status,
    >,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sl_object {
    pub struct_size: u32,
    pub flags: u32,
    pub key: sl_str,
    pub content_type: sl_str,
    pub content_encoding: sl_str,
    pub record_count: u64,
    pub oldest_timestamp_ms: i64,
    pub body: sl_bytes,
    pub body_path: sl_str,
}

#[repr(C)]
pub struct sl_host_api {
    pub struct_size: u32,
    pub abi_major: u16,
    pub abi_minor: u16,
    pub log_enabled: Option<unsafe extern "C" fn(level: i32) -> bool>,
    pub log: Option<unsafe extern "C" fn(inst: *const c_void, level: i32, msg: sl_str)>,
    pub metric_register: Option<
        unsafe extern "C" fn(
            inst: *const c_void,
            kind: i32,
            name: sl_str,
            help: sl_str,
            label_names: *const sl_str,
            n_labels: usize,
            out_handle: *mut u64,
        ) -> sl_status,
    >,
    pub metric_bind: Option<
        unsafe extern "C" fn(
            handle: u64,
            label_values: *const sl_str,
            n_values: usize,
            out_child: *mut u64,
        ) -> sl_status,
    >,
    pub metric_record: Option<unsafe extern "C" fn(handle: u64, value: f64)>,
    pub notify: Option<unsafe extern "C" fn(inst: *const c_void)>,
    pub complete: Option<
        unsafe extern "C" fn(
            inst: *const c_void,
            ticket: u64,
            status: sl_status,
            failed_idx: *const u32,
            n_failed: usize,
            err: *const sl_error,
        ),
    >,
}

#[repr(C)]
pub struct sl_instance_ctx {
    pub struct_size: u32,
    pub host: *const sl_host_api,
    pub inst: *const c_void,
    pub pipeline: sl_str,
    pub component_id: sl_str,
    pub config_dir: sl_str,
}

pub type CreateFn = unsafe extern "C" fn(
    ctx: *const sl_instance_ctx,
    config_json: sl_str,
    this: *mut *mut c_void,
    err: *mut sl_error,
) -> sl_status;
pub type StartFn = unsafe extern "C" fn(this: *mut c_void, err: *mut sl_error) -> sl_status;
pub type StopFn =
    unsafe extern "C" fn(this: *mut c_void, deadline_ms: u32, err: *mut sl_error) -> sl_status;
pub type DestroyFn = unsafe extern "C" fn(this: *mut c_void);
pub type PollBatchFn = unsafe extern "C" fn(
    this: *mut c_void,
    out: *mut sl_batch_builder,
    ack_token: *mut u64,
    err: *mut sl_error,
) -> sl_status;
pub type AckFn = unsafe extern "C" fn(this: *mut c_void, ack_token: u64, outcome: sl_status);
pub type TransformFn = unsafe extern "C" fn(
    this: *mut c_void,
    input: *const sl_batch,
    out: *mut sl_batch_builder,
    err: *mut sl_error,
) -> sl_status;
pub type SubmitFn = unsafe extern "C" fn(
    this: *mut c_void,
    batch: *const sl_batch,
    ticket: u64,
    err: *mut sl_error,
) -> sl_status;
pub type SubmitObjectFn = unsafe extern "C" fn(
    this: *mut c_void,
    object: *const sl_object,
    ticket: u64,
    err: *mut sl_error,
) -> sl_status;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sl_plugin_vtable {
    pub struct_size: u32,
    pub create: Option<CreateFn>,
    pub start: Option<StartFn>,
    pub stop: Option<StopFn>,
    pub destroy: Option<DestroyFn>,
    pub poll_batch: Option<PollBatchFn>,
    pub ack: Option<AckFn>,
    pub transform: Option<TransformFn>,
    pub submit: Option<SubmitFn>,
    pub submit_object: Option<SubmitObjectFn>,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sl_plugin_def {
    pub struct_size: u32,
    pub kind: sl_kind,
    pub flags: u32,
    pub reserved: u32,
    pub name: sl_str,
    pub version: sl_str,
    pub description: sl_str,
    pub vtable: *const sl_plugin_vtable,
}

pub type InitFn = unsafe extern "C" fn(host: *const sl_host_api, err: *mut sl_error) -> sl_status;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sl_library {
    pub magic: u32,
    pub struct_size: u32,
    pub abi_major: u16,
    pub abi_minor: u16,
    pub min_host_minor: u16,
    pub flags: u16,
    pub library_name: sl_str,
    pub library_version: sl_str,
    pub build_info: sl_str,
    pub plugins: *const sl_plugin_def,
    pub plugin_count: u32,
    pub reserved: u32,
    pub init: Option<InitFn>,
}

/// Size of an ABI 1.0 `sl_record` (everything before `partition`).
pub const SL_RECORD_V1_0_SIZE: usize = std::mem::offset_of!(sl_record, partition);
/// Smallest `sl_library` the host accepts: everything up to and including `init`.
pub const SL_LIBRARY_V1_MIN_SIZE: u32 = std::mem::size_of::<sl_library>() as u32;
/// Smallest `sl_plugin_def` the host accepts.
pub const SL_PLUGIN_DEF_V1_MIN_SIZE: u32 = std::mem::size_of::<sl_plugin_def>() as u32;
/// Smallest vtable the host accepts (ABI 1.0 has every slot).
pub const SL_VTABLE_V1_MIN_SIZE: u32 = std::mem::size_of::<sl_plugin_vtable>() as u32;
/// Name of the exported entry symbol.
pub const ENTRY_SYMBOL: &[u8] = b"sl_plugin_library_v1\0";
