//! The SDK's handle types (`Context`, `Notifier`, `Completion`) outliving their instance.
//!
//! A plugin written in safe Rust can move them to a thread that runs on after `destroy`.
//! They must then hold nothing that points into per-instance host memory: this test frees
//! (and scribbles over) the host's `sl_instance_ctx` right after `create`, destroys the
//! instance, and only then uses all three. A host that checks instance handles (as sluice
//! does) refuses the late calls. Run under valgrind, any read of the freed context is an
//! error (`scripts/sanitize`); the assertions hold without it.
#![allow(clippy::unwrap_used)]

use sluice_plugin_api::{
    ffi, Batch, Completion, Context, Error, Level, Notifier, Plugin, Sink, Submitted,
};
use std::collections::HashSet;
use std::ffi::c_void;
use std::sync::Mutex;

/// Handles of live instances, as a checking host keeps them.
static LIVE: Mutex<Option<HashSet<usize>>> = Mutex::new(None);
/// Every host call: (call, handle, accepted).
static CALLS: Mutex<Vec<(&'static str, usize, bool)>> = Mutex::new(Vec::new());

fn seen(call: &'static str, inst: *const c_void) {
    let h = inst as usize;
    let ok = LIVE
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|l| l.contains(&h));
    CALLS.lock().unwrap().push((call, h, ok));
}

unsafe extern "C" fn log_enabled(_: i32) -> bool {
    true
}
unsafe extern "C" fn log(inst: *const c_void, _: i32, _: ffi::sl_str) {
    seen("log", inst)
}
unsafe extern "C" fn notify(inst: *const c_void) {
    seen("notify", inst)
}
unsafe extern "C" fn complete(
    inst: *const c_void,
    _: u64,
    _: ffi::sl_status,
    _: *const u32,
    _: usize,
    _: *const ffi::sl_error,
) {
    seen("complete", inst)
}

static HOST: ffi::sl_host_api = ffi::sl_host_api {
    struct_size: std::mem::size_of::<ffi::sl_host_api>() as u32,
    abi_major: ffi::SL_ABI_MAJOR,
    abi_minor: ffi::SL_ABI_MINOR,
    log_enabled: Some(log_enabled),
    log: Some(log),
    metric_register: None,
    metric_bind: None,
    metric_record: None,
    notify: Some(notify),
    complete: Some(complete),
};

/// What the plugin hands to its "thread" when destroyed.
type Kept = (Context, Notifier, Vec<Completion>);
static KEPT: Mutex<Option<Kept>> = Mutex::new(None);

#[derive(serde::Deserialize)]
struct NoConfig {}

struct Keeper {
    ctx: Context,
    held: Vec<Completion>,
}

impl Plugin for Keeper {
    type Config = NoConfig;
    fn create(_: NoConfig, ctx: &Context) -> Result<Self, Error> {
        Ok(Keeper {
            ctx: ctx.clone(),
            held: Vec::new(),
        })
    }
}

impl Sink for Keeper {
    fn submit(&mut self, _: &Batch<'_>, done: Completion) -> Result<Submitted, Error> {
        self.held.push(done);
        Ok(Submitted::Accepted)
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let n = self.ctx.notifier();
        *KEPT.lock().unwrap() = Some((self.ctx.clone(), n, std::mem::take(&mut self.held)));
    }
}

static LIBRARY: sluice_plugin_api::Library =
    sluice_plugin_api::Library::new("handles-test", "0", {
        const PLUGINS: &[sluice_plugin_api::PluginDef] =
            &[sluice_plugin_api::PluginDef::sink::<Keeper>(
                "keeper",
                "0",
                "keeps completions past destroy",
            )];
        PLUGINS
    });

#[test]
fn handles_used_after_destroy_touch_no_freed_host_memory() {
    let handle = 0x5eed_0001usize;
    LIVE.lock()
        .unwrap()
        .get_or_insert_with(HashSet::new)
        .insert(handle);
    // SAFETY: the static descriptor built above.
    let def = unsafe { &*LIBRARY.0.plugins };
    // SAFETY: as above.
    let vt = unsafe { &*def.vtable };

    // The per-instance host memory: the context and the strings it points at.
    let pipeline = String::from("pipe");
    let component = String::from("sink");
    let dir = String::from("/etc/sluice");
    let ctx = Box::new(ffi::sl_instance_ctx {
        struct_size: std::mem::size_of::<ffi::sl_instance_ctx>() as u32,
        host: &HOST,
        inst: handle as *const c_void,
        pipeline: ffi::sl_bytes::from_slice(pipeline.as_bytes()),
        component_id: ffi::sl_bytes::from_slice(component.as_bytes()),
        config_dir: ffi::sl_bytes::from_slice(dir.as_bytes()),
    });
    let mut this: *mut c_void = std::ptr::null_mut();
    let mut err = ffi::sl_error::zeroed();
    // SAFETY: valid context and out-pointers; the JSON view lives for the call.
    let st =
        unsafe { vt.create.unwrap()(&*ctx, ffi::sl_bytes::from_slice(b"{}"), &mut this, &mut err) };
    assert_eq!(st, ffi::SL_OK);
    let batch = ffi::sl_batch {
        struct_size: std::mem::size_of::<ffi::sl_batch>() as u32,
        record_stride: std::mem::size_of::<ffi::sl_record>() as u32,
        records: std::ptr::null(),
        len: 0,
    };
    // SAFETY: a live instance and an empty batch.
    let st = unsafe { vt.submit.unwrap()(this, &batch, 7, &mut err) };
    assert_eq!(st, ffi::SL_OK);
    // SAFETY: live instance, destroyed once.
    unsafe { vt.destroy.unwrap()(this) };
    LIVE.lock().unwrap().as_mut().unwrap().remove(&handle);

    // The host frees the instance's memory; scribble first so a stale read would show.
    let raw = Box::into_raw(ctx);
    // SAFETY: raw is the box just leaked; overwritten with zeros, then freed.
    unsafe {
        std::ptr::write_bytes(
            raw as *mut u8,
            0xA5,
            std::mem::size_of::<ffi::sl_instance_ctx>(),
        );
        drop(Box::from_raw(raw));
    }
    drop((pipeline, component, dir));

    // The plugin's thread goes on with what it kept.
    let (ctx, notifier, held) = KEPT.lock().unwrap().take().unwrap();
    assert_eq!(ctx.pipeline(), "pipe", "copied at create");
    assert_eq!(ctx.component_id(), "sink");
    assert_eq!(
        ctx.resolve_path(std::path::Path::new("x")),
        std::path::Path::new("/etc/sluice/x")
    );
    ctx.log(Level::Warn, "after destroy");
    notifier.notify();
    assert_eq!(held.len(), 1);
    for c in held {
        c.success();
    }
    let calls = CALLS.lock().unwrap().clone();
    let late: Vec<_> = calls.iter().map(|(c, h, ok)| (*c, *h, *ok)).collect();
    assert_eq!(
        late,
        vec![
            ("log", handle, false),
            ("notify", handle, false),
            ("complete", handle, false)
        ],
        "every late call carries the handle, which the host can refuse"
    );
}
