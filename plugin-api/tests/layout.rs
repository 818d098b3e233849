//! The C header is normative: this test generates C code asserting, for every struct of
//! `include/sluice_plugin.h`, the `sizeof` and each field's `offsetof` computed from the Rust
//! mirror in `ffi.rs`, and compiles it with the system C compiler. Any drift fails the build
//! of that C file with the offending assertion.

#![allow(clippy::unwrap_used)]

use sluice_plugin_api::ffi::*;
use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::process::Command;

macro_rules! layout {
    ($out:ident, $ty:ident { $($field:ident),* $(,)? }) => {{
        writeln!($out, "_Static_assert(sizeof({}) == {}, \"sizeof({}) differs from Rust\");",
            stringify!($ty), size_of::<$ty>(), stringify!($ty)).unwrap();
        $(
            writeln!($out, "_Static_assert(offsetof({}, {}) == {}, \"offsetof({}, {}) differs from Rust\");",
                stringify!($ty), stringify!($field), offset_of!($ty, $field),
                stringify!($ty), stringify!($field)).unwrap();
        )*
    }};
}

macro_rules! constant {
    ($out:ident, $name:ident) => {
        writeln!(
            $out,
            "_Static_assert(({}) == ({}), \"{} differs from Rust\");",
            stringify!($name),
            $name,
            stringify!($name)
        )
        .unwrap();
    };
}

fn generated_c() -> String {
    let mut c = String::from("#include \"sluice_plugin.h\"\n");
    layout!(c, sl_bytes { ptr, len });
    layout!(
        c,
        sl_error {
            code,
            retry_after_ms,
            len,
            field_len,
            field,
            msg
        }
    );
    layout!(c, sl_attr { key, value });
    layout!(
        c,
        sl_record {
            data,
            partition_key,
            sequence,
            timestamp_ms,
            attrs,
            attrs_len,
            flags,
            partition,
            reserved
        }
    );
    layout!(
        c,
        sl_batch {
            struct_size,
            record_stride,
            records,
            len
        }
    );
    layout!(
        c,
        sl_batch_builder {
            struct_size,
            poll_delay_ms,
            host,
            push,
            reject,
            credit_records,
            credit_bytes,
            keep
        }
    );
    layout!(
        c,
        sl_object {
            struct_size,
            flags,
            key,
            content_type,
            content_encoding,
            record_count,
            oldest_timestamp_ms,
            body,
            body_path
        }
    );
    layout!(
        c,
        sl_host_api {
            struct_size,
            abi_major,
            abi_minor,
            log_enabled,
            log,
            metric_register,
            metric_bind,
            metric_record,
            notify,
            complete
        }
    );
    layout!(
        c,
        sl_instance_ctx {
            struct_size,
            host,
            inst,
            pipeline,
            component_id,
            config_dir
        }
    );
    layout!(
        c,
        sl_plugin_vtable {
            struct_size,
            create,
            start,
            stop,
            destroy,
            poll_batch,
            ack,
            transform,
            submit,
            submit_object
        }
    );
    layout!(
        c,
        sl_plugin_def {
            struct_size,
            kind,
            flags,
            reserved,
            name,
            version,
            description,
            vtable
        }
    );
    layout!(
        c,
        sl_library {
            magic,
            struct_size,
            abi_major,
            abi_minor,
            min_host_minor,
            flags,
            library_name,
            library_version,
            build_info,
            plugins,
            plugin_count,
            reserved,
            init
        }
    );
    writeln!(
        c,
        "_Static_assert(sizeof(sl_status) == {}, \"sl_status\");",
        size_of::<sl_status>()
    )
    .unwrap();
    writeln!(
        c,
        "_Static_assert(sizeof(sl_kind) == {}, \"sl_kind\");",
        size_of::<sl_kind>()
    )
    .unwrap();
    writeln!(
        c,
        "_Static_assert(sizeof(bool) == {}, \"bool\");",
        size_of::<bool>()
    )
    .unwrap();
    constant!(c, SL_ABI_MAJOR);
    constant!(c, SL_ABI_MINOR);
    constant!(c, SL_MAGIC);
    for (name, v) in [
        ("SL_OK", SL_OK),
        ("SL_PENDING", SL_PENDING),
        ("SL_EOF", SL_EOF),
        ("SL_ERR_CONFIG", SL_ERR_CONFIG),
        ("SL_ERR_RETRYABLE", SL_ERR_RETRYABLE),
        ("SL_ERR_FATAL", SL_ERR_FATAL),
        ("SL_ERR_PANIC", SL_ERR_PANIC),
        ("SL_ERR_UNSUPPORTED", SL_ERR_UNSUPPORTED),
        ("SL_LOG_ERROR", SL_LOG_ERROR),
        ("SL_LOG_TRACE", SL_LOG_TRACE),
        ("SL_METRIC_COUNTER", SL_METRIC_COUNTER),
        ("SL_METRIC_HISTOGRAM", SL_METRIC_HISTOGRAM),
    ] {
        writeln!(
            c,
            "_Static_assert(({name}) == ({v}), \"{name} differs from Rust\");"
        )
        .unwrap();
    }
    for (name, v) in [
        ("SL_KIND_SOURCE", SL_KIND_SOURCE),
        ("SL_KIND_TRANSFORM", SL_KIND_TRANSFORM),
        ("SL_KIND_SINK", SL_KIND_SINK),
        ("SL_DEF_OBJECT_SINK", SL_DEF_OBJECT_SINK),
    ] {
        writeln!(
            c,
            "_Static_assert(({name}) == ({v}u), \"{name} differs from Rust\");"
        )
        .unwrap();
    }
    writeln!(
        c,
        "_Static_assert((SL_LIB_PANICS_CAUGHT) == ({}), \"SL_LIB_PANICS_CAUGHT\");",
        SL_LIB_PANICS_CAUGHT
    )
    .unwrap();
    writeln!(
        c,
        "_Static_assert((SL_TIMESTAMP_UNSET) == (INT64_MIN), \"SL_TIMESTAMP_UNSET\");"
    )
    .unwrap();
    assert_eq!(SL_TIMESTAMP_UNSET, i64::MIN);
    c
}

#[test]
fn header_matches_rust_mirror() {
    let dir = std::env::temp_dir().join(format!("sluice-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    std::fs::write(&src, generated_c()).unwrap();
    let include = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args([
            "-std=c11",
            "-Wall",
            "-Werror",
            "-fsyntax-only",
            "-I",
            include,
        ])
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run C compiler `{cc}`: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "header and Rust mirror disagree:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn header_compiles_as_cpp_too() {
    let include = concat!(env!("CARGO_MANIFEST_DIR"), "/include/sluice_plugin.h");
    let out = Command::new("c++")
        .args(["-std=c++11", "-fsyntax-only", "-x", "c++", include])
        .output()
        .expect("c++ not found: run scripts/install-test-deps (Debian package g++)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
