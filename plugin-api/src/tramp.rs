//! `extern "C"` trampolines from the ABI's vtable slots to the safe traits.
//!
//! Each one runs the plugin's code inside `catch_unwind`. A caught panic writes
//! `panic: <message>` into the host's `sl_error`, returns `SL_ERR_PANIC` and poisons the
//! instance: its value is dropped (under a second `catch_unwind`, leaked if that panics
//! too) and every later call returns `SL_ERR_PANIC` without running plugin code.
//! These are plain `extern "C"`: a panic that escapes anyway aborts instead of unwinding
//! into C.

use crate::{
    ffi, Batch, Completion, Context, Error, ObjectSink, Output, Plugin, Poll, Sink, Source,
    Submitted, Transform,
};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

/// The instance behind the opaque `self` pointer.
struct Slot<T> {
    inner: Option<T>,
    ctx: Context,
}

impl<T> Slot<T> {
    fn poison(&mut self) {
        if let Some(v) = self.inner.take() {
            if catch_unwind(AssertUnwindSafe(|| drop(v))).is_err() {
                // The value's destructor panicked as well; the value is gone either way.
            }
        }
    }
}

fn poisoned(err: *mut ffi::sl_error) -> ffi::sl_status {
    Error::fatal("instance poisoned by an earlier panic").write_to(err);
    ffi::SL_ERR_PANIC
}

fn write_panic(err: *mut ffi::sl_error, payload: &(dyn std::any::Any + Send)) -> ffi::sl_status {
    Error::from_panic(payload).write_to(err);
    ffi::SL_ERR_PANIC
}

/// catch_unwind + poisoning + error marshalling, shared by every trampoline.
fn guard<T, F>(this: *mut c_void, err: *mut ffi::sl_error, f: F) -> ffi::sl_status
where
    F: FnOnce(&mut T, &Context) -> Result<ffi::sl_status, Error>,
{
    if this.is_null() {
        return Error::fatal("null instance").write_to(err);
    }
    // SAFETY: `this` was produced by `create::<T>` and is not used concurrently (ABI rule).
    let slot = unsafe { &mut *(this as *mut Slot<T>) };
    let ctx = slot.ctx.clone();
    let Some(inner) = slot.inner.as_mut() else {
        return poisoned(err);
    };
    match catch_unwind(AssertUnwindSafe(|| f(inner, &ctx))) {
        Ok(Ok(st)) => st,
        Ok(Err(e)) => e.write_to(err),
        Err(payload) => {
            let st = write_panic(err, payload.as_ref());
            slot.poison();
            st
        }
    }
}

/// Strips serde_json's " at line L column C" (meaningless to someone editing TOML).
fn strip_position(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(" column ") => &msg[..i],
        _ => msg,
    }
}

fn parse_config<C: serde::de::DeserializeOwned>(json: &[u8]) -> Result<C, Error> {
    let de = &mut serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let msg = strip_position(&e.inner().to_string()).to_string();
        if path == "." || path.is_empty() {
            Error::config(msg)
        } else {
            Error::config_field(path, msg)
        }
    })
}

pub unsafe extern "C" fn create<T: Plugin>(
    ctx: *const ffi::sl_instance_ctx,
    config_json: ffi::sl_str,
    this: *mut *mut c_void,
    err: *mut ffi::sl_error,
) -> ffi::sl_status {
    if ctx.is_null() || this.is_null() {
        return Error::fatal("null argument to create").write_to(err);
    }
    // SAFETY: the host keeps ctx valid until destroy.
    let context = unsafe { Context::from_raw(ctx) };
    // SAFETY: the config view is valid for the duration of the call.
    let json = unsafe { config_json.as_slice() };
    let made = catch_unwind(AssertUnwindSafe(|| {
        let cfg = parse_config::<T::Config>(if json.is_empty() { b"{}" } else { json })?;
        T::create(cfg, &context)
    }));
    match made {
        Ok(Ok(v)) => {
            let slot = Box::new(Slot {
                inner: Some(v),
                ctx: context,
            });
            // SAFETY: checked non-null above.
            unsafe { *this = Box::into_raw(slot) as *mut c_void };
            ffi::SL_OK
        }
        Ok(Err(e)) => e.write_to(err),
        Err(payload) => write_panic(err, payload.as_ref()),
    }
}

pub unsafe extern "C" fn start<T: Plugin>(
    this: *mut c_void,
    err: *mut ffi::sl_error,
) -> ffi::sl_status {
    guard::<T, _>(this, err, |t, _| t.start().map(|_| ffi::SL_OK))
}

pub unsafe extern "C" fn stop<T: Plugin>(
    this: *mut c_void,
    deadline_ms: u32,
    err: *mut ffi::sl_error,
) -> ffi::sl_status {
    guard::<T, _>(this, err, |t, _| {
        t.stop(Duration::from_millis(deadline_ms as u64))
            .map(|_| ffi::SL_OK)
    })
}

pub unsafe extern "C" fn destroy<T: Plugin>(this: *mut c_void) {
    if this.is_null() {
        return;
    }
    // SAFETY: produced by create::<T>; the host calls destroy exactly once.
    let slot = unsafe { Box::from_raw(this as *mut Slot<T>) };
    if catch_unwind(AssertUnwindSafe(|| drop(slot))).is_err() {
        // A panicking destructor: nothing more to do, the memory is released or leaked.
    }
}

pub unsafe extern "C" fn poll_batch<T: Source>(
    this: *mut c_void,
    out: *mut ffi::sl_batch_builder,
    ack_token: *mut u64,
    err: *mut ffi::sl_error,
) -> ffi::sl_status {
    if out.is_null() {
        return Error::fatal("null builder").write_to(err);
    }
    guard::<T, _>(this, err, |t, _| {
        // SAFETY: the host's builder is valid and exclusive for the call.
        let mut o = unsafe { Output::from_raw(out) };
        let p = t.poll_batch(&mut o)?;
        if !ack_token.is_null() {
            // The token is the sequence of the poll; sources that need richer acks keep a map.
            // SAFETY: host-provided out pointer.
            unsafe { *ack_token = o.ack_token() };
        }
        Ok(match p {
            Poll::Ready => ffi::SL_OK,
            Poll::Pending => ffi::SL_PENDING,
            Poll::Eof => ffi::SL_EOF,
        })
    })
}

pub unsafe extern "C" fn ack<T: Source>(this: *mut c_void, token: u64, outcome: ffi::sl_status) {
    let mut scratch = ffi::sl_error::zeroed();
    guard::<T, _>(this, &mut scratch, |t, _| {
        t.ack(token, outcome == ffi::SL_OK);
        Ok(ffi::SL_OK)
    });
}

pub unsafe extern "C" fn transform<T: Transform>(
    this: *mut c_void,
    input: *const ffi::sl_batch,
    out: *mut ffi::sl_batch_builder,
    err: *mut ffi::sl_error,
) -> ffi::sl_status {
    if input.is_null() || out.is_null() {
        return Error::fatal("null batch or builder").write_to(err);
    }
    guard::<T, _>(this, err, |t, _| {
        // SAFETY: host-owned views valid for the call.
        let (b, mut o) = unsafe { (Batch::from_raw(&*input), Output::from_raw(out)) };
        let r = t.transform(&b, &mut o);
        o.finish();
        r.map(|_| ffi::SL_OK)
    })
}

fn submitted(s: Submitted) -> ffi::sl_status {
    match s {
        Submitted::Accepted => ffi::SL_OK,
        Submitted::Full(done) => {
            done.forget();
            ffi::SL_PENDING
        }
    }
}

pub unsafe extern "C" fn submit<T: Sink>(
    this: *mut c_void,
    batch: *const ffi::sl_batch,
    ticket: u64,
    err: *mut ffi::sl_error,
) -> ffi::sl_status {
    if batch.is_null() {
        return Error::fatal("null batch").write_to(err);
    }
    guard::<T, _>(this, err, |t, ctx| {
        // SAFETY: the host keeps the batch alive until complete(ticket).
        let b = unsafe { Batch::from_raw(&*batch) };
        // SAFETY: ctx is this instance's context.
        let done = unsafe { Completion::from_raw(ctx, ticket) };
        t.submit(&b, done).map(submitted)
    })
}

pub unsafe extern "C" fn submit_object<T: ObjectSink>(
    this: *mut c_void,
    object: *const ffi::sl_object,
    ticket: u64,
    err: *mut ffi::sl_error,
) -> ffi::sl_status {
    if object.is_null() {
        return Error::fatal("null object").write_to(err);
    }
    guard::<T, _>(this, err, |t, ctx| {
        // SAFETY: the host keeps the object alive until complete(ticket).
        let o = unsafe { crate::Object::from_raw(&*object) };
        // SAFETY: ctx is this instance's context.
        let done = unsafe { Completion::from_raw(ctx, ticket) };
        t.submit_object(&o, done).map(submitted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_serde_json_positions() {
        assert_eq!(
            strip_position("invalid type: string \"x\", expected u64 at line 1 column 9"),
            "invalid type: string \"x\", expected u64"
        );
        assert_eq!(strip_position("plain"), "plain");
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        batch: Inner,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        max_records: u32,
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = parse_config::<Cfg>(br#"{"batch":{"max_records":"x"}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("batch.max_records"));
        assert!(e.message.contains("expected u32"), "{}", e.message);
    }
}
