//! The static library descriptor and plugin definitions, and the `declare_library!` macro.

use crate::{ffi, tramp, ObjectSink, Plugin, Sink, Source, Transform};

/// A `#[repr(C)]` `sl_library` that can live in a `static`.
#[repr(transparent)]
pub struct Library(pub ffi::sl_library);

// SAFETY: the descriptor is immutable static data (pointers to other statics).
unsafe impl Sync for Library {}

/// A `#[repr(C)]` `sl_plugin_def`.
#[repr(transparent)]
pub struct PluginDef(pub ffi::sl_plugin_def);

// SAFETY: immutable static data.
unsafe impl Sync for PluginDef {}

const LIB_FLAGS: u16 = if cfg!(panic = "unwind") {
    ffi::SL_LIB_PANICS_CAUGHT
} else {
    0
};

impl Library {
    /// A descriptor for `plugins`, built by the SDK at ABI 1.0.
    pub const fn new(
        name: &'static str,
        version: &'static str,
        plugins: &'static [PluginDef],
    ) -> Self {
        Library(ffi::sl_library {
            magic: ffi::SL_MAGIC,
            struct_size: std::mem::size_of::<ffi::sl_library>() as u32,
            abi_major: ffi::SL_ABI_MAJOR,
            abi_minor: ffi::SL_ABI_MINOR,
            min_host_minor: 0,
            flags: LIB_FLAGS,
            library_name: ffi::sl_bytes::from_static(name),
            library_version: ffi::sl_bytes::from_static(version),
            build_info: ffi::sl_bytes::from_static(concat!(
                "sluice-plugin-api ",
                env!("CARGO_PKG_VERSION"),
                "; rust"
            )),
            plugins: plugins.as_ptr() as *const ffi::sl_plugin_def,
            plugin_count: plugins.len() as u32,
            reserved: 0,
            init: None,
        })
    }

    /// The raw descriptor, as `sl_plugin_library_v1` returns it.
    pub const fn as_ffi(&'static self) -> *const ffi::sl_library {
        &self.0
    }
}

const fn base_vtable<T: Plugin>() -> ffi::sl_plugin_vtable {
    ffi::sl_plugin_vtable {
        struct_size: std::mem::size_of::<ffi::sl_plugin_vtable>() as u32,
        create: Some(tramp::create::<T>),
        start: Some(tramp::start::<T>),
        stop: Some(tramp::stop::<T>),
        destroy: Some(tramp::destroy::<T>),
        poll_batch: None,
        ack: None,
        transform: None,
        submit: None,
        submit_object: None,
    }
}

/// Per-type vtables as associated consts, so `&VTables::<T>::X` is promoted to a static.
struct VTables<T>(std::marker::PhantomData<T>);

impl<T: Source> VTables<T> {
    const SOURCE: ffi::sl_plugin_vtable = ffi::sl_plugin_vtable {
        poll_batch: Some(tramp::poll_batch::<T>),
        ack: Some(tramp::ack::<T>),
        ..base_vtable::<T>()
    };
}
impl<T: Transform> VTables<T> {
    const TRANSFORM: ffi::sl_plugin_vtable = ffi::sl_plugin_vtable {
        transform: Some(tramp::transform::<T>),
        ..base_vtable::<T>()
    };
}
impl<T: Sink> VTables<T> {
    const SINK: ffi::sl_plugin_vtable = ffi::sl_plugin_vtable {
        submit: Some(tramp::submit::<T>),
        ..base_vtable::<T>()
    };
}
impl<T: ObjectSink> VTables<T> {
    const OBJECT_SINK: ffi::sl_plugin_vtable = ffi::sl_plugin_vtable {
        submit_object: Some(tramp::submit_object::<T>),
        ..base_vtable::<T>()
    };
}

const fn def(
    kind: ffi::sl_kind,
    flags: u32,
    name: &'static str,
    version: &'static str,
    description: &'static str,
    vtable: &'static ffi::sl_plugin_vtable,
) -> PluginDef {
    PluginDef(ffi::sl_plugin_def {
        struct_size: std::mem::size_of::<ffi::sl_plugin_def>() as u32,
        kind,
        flags,
        reserved: 0,
        name: ffi::sl_bytes::from_static(name),
        version: ffi::sl_bytes::from_static(version),
        description: ffi::sl_bytes::from_static(description),
        vtable,
    })
}

impl PluginDef {
    /// A source definition.
    pub const fn source<T: Source>(
        name: &'static str,
        version: &'static str,
        description: &'static str,
    ) -> Self {
        def(
            ffi::SL_KIND_SOURCE,
            0,
            name,
            version,
            description,
            &VTables::<T>::SOURCE,
        )
    }
    /// A replayable source definition (ABI 1.1): its records carry positions
    /// ([`crate::Position`]) and it replays unacknowledged batches after a restart, so the
    /// host gives its pipeline exactly-once object delivery.
    pub const fn replayable_source<T: Source>(
        name: &'static str,
        version: &'static str,
        description: &'static str,
    ) -> Self {
        def(
            ffi::SL_KIND_SOURCE,
            ffi::SL_DEF_REPLAYABLE,
            name,
            version,
            description,
            &VTables::<T>::SOURCE,
        )
    }
    /// A transform definition.
    pub const fn transform<T: Transform>(
        name: &'static str,
        version: &'static str,
        description: &'static str,
    ) -> Self {
        def(
            ffi::SL_KIND_TRANSFORM,
            0,
            name,
            version,
            description,
            &VTables::<T>::TRANSFORM,
        )
    }
    /// A record-sink definition.
    pub const fn sink<T: Sink>(
        name: &'static str,
        version: &'static str,
        description: &'static str,
    ) -> Self {
        def(
            ffi::SL_KIND_SINK,
            0,
            name,
            version,
            description,
            &VTables::<T>::SINK,
        )
    }
    /// An object-sink definition.
    pub const fn object_sink<T: ObjectSink>(
        name: &'static str,
        version: &'static str,
        description: &'static str,
    ) -> Self {
        def(
            ffi::SL_KIND_SINK,
            ffi::SL_DEF_OBJECT_SINK,
            name,
            version,
            description,
            &VTables::<T>::OBJECT_SINK,
        )
    }
}

/// Declares a plugin library: emits `pub static LIBRARY` (registered by the daemon for
/// bundled plugins) and, when the calling crate's `dylib` feature is on, the exported
/// `sl_plugin_library_v1` entry symbol returning the same descriptor.
///
/// Kinds: `source`, `transform`, `sink`, `object_sink`.
#[macro_export]
macro_rules! declare_library {
    (name: $name:literal, plugins: [$($kind:ident($pname:literal, $ty:ty, $desc:literal)),* $(,)?]) => {
        /// This crate's plugin library descriptor.
        pub static LIBRARY: $crate::Library = $crate::Library::new($name, env!("CARGO_PKG_VERSION"), {
            const PLUGINS: &[$crate::PluginDef] =
                &[$($crate::PluginDef::$kind::<$ty>($pname, env!("CARGO_PKG_VERSION"), $desc)),*];
            PLUGINS
        });

        /// The exported entry point of the `.so` build.
        #[cfg(feature = "dylib")]
        #[unsafe(no_mangle)]
        pub extern "C" fn sl_plugin_library_v1() -> *const $crate::ffi::sl_library {
            LIBRARY.as_ffi()
        }
    };
}
