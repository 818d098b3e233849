//! Loading plugin libraries: `dlopen` (never unloaded) and the descriptor checks, in
//! order, each with its own message naming the file and both versions.
//!
//! Order: file and folder permissions → `dlopen` → entry symbol (probing other ABI
//! versions to say which one a file was built for) → magic → descriptor size → ABI major
//! → required host minor → each plugin definition (kind, sizes, required functions, UTF-8)
//! → name clashes (in [`super::Registry::register`]) → `init`.

use super::{Kind, Origin, PluginEntry, Registry};
use sluice_plugin_api::ffi;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Why a library was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: refused: {detail}")]
    Permissions { path: String, detail: String },
    #[error("{path}: cannot load: {error}")]
    Open { path: String, error: String },
    #[error("{path}: not a sluice plugin: it does not export `sl_plugin_library_v1`{hint}")]
    MissingSymbol { path: String, hint: String },
    #[error(
        "{path}: not a sluice plugin library: bad magic 0x{found:08x} (expected 0x{expected:08x})"
    )]
    BadMagic {
        path: String,
        found: u32,
        expected: u32,
    },
    #[error("{path}: descriptor too small: {size} bytes, ABI {host_major}.{host_minor} needs at least {min}")]
    TooSmall {
        path: String,
        size: u32,
        min: u32,
        host_major: u16,
        host_minor: u16,
    },
    #[error("{path}: library {library} was built for plugin ABI {major}.{minor}, but this sluiced {daemon} provides ABI {host_major}.{host_minor}: rebuild it against sluice-plugin-api {host_major}.x")]
    AbiMajor {
        path: String,
        library: String,
        major: u16,
        minor: u16,
        daemon: &'static str,
        host_major: u16,
        host_minor: u16,
    },
    #[error("{path}: library {library} requires sluiced plugin ABI >= {host_major}.{needed}, but this sluiced {daemon} provides ABI {host_major}.{host_minor}: upgrade sluiced")]
    HostTooOld {
        path: String,
        library: String,
        needed: u16,
        daemon: &'static str,
        host_major: u16,
        host_minor: u16,
    },
    #[error("{path}: library {library}: plugin #{index}: {reason}")]
    BadPlugin {
        path: String,
        library: String,
        index: u32,
        reason: String,
    },
    #[error("{path}: {kind} plugin `{name}` is already provided by {other}")]
    NameClash {
        path: String,
        kind: Kind,
        name: String,
        other: String,
    },
    #[error("{path}: library {library}: init failed: {message}")]
    Init {
        path: String,
        library: String,
        message: String,
    },
}

const DAEMON_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Reads a view the library handed us as UTF-8.
///
/// # Safety
/// The view must be valid static data of the library.
unsafe fn text(s: &ffi::sl_str) -> Result<String, &'static str> {
    if s.len > 0 && s.ptr.is_null() {
        return Err("null string view");
    }
    // SAFETY: caller's contract.
    let bytes = unsafe { s.as_slice() };
    std::str::from_utf8(bytes)
        .map(str::to_string)
        .map_err(|_| "string is not UTF-8")
}

/// Why a plugin file may not be loaded (sshd's StrictModes).
#[derive(Debug, thiserror::Error)]
enum Unsafe {
    #[error("cannot resolve: {0}")]
    Resolve(std::io::Error),
    #[error("cannot stat {}: {err}", .path.display())]
    Stat {
        path: std::path::PathBuf,
        err: std::io::Error,
    },
    #[error("{0} is not a regular file")]
    NotAFile(String),
    #[error("{what} is owned by uid {uid}, neither root nor the daemon's user (uid {me})")]
    Owner { what: String, uid: u32, me: u32 },
    #[error("{what} is writable by group or others (mode {mode:04o}); run `chmod go-w` on it")]
    Writable { what: String, mode: u32 },
}

/// Checks a library descriptor and returns its plugin entries.
pub(super) fn validate_descriptor(
    lib: &ffi::sl_library,
    origin: &Origin,
) -> Result<Vec<PluginEntry>, LoadError> {
    let path = origin.to_string();
    if lib.magic != ffi::SL_MAGIC {
        return Err(LoadError::BadMagic {
            path,
            found: lib.magic,
            expected: ffi::SL_MAGIC,
        });
    }
    if lib.struct_size < ffi::SL_LIBRARY_V1_MIN_SIZE {
        return Err(LoadError::TooSmall {
            path,
            size: lib.struct_size,
            min: ffi::SL_LIBRARY_V1_MIN_SIZE,
            host_major: ffi::SL_ABI_MAJOR,
            host_minor: ffi::SL_ABI_MINOR,
        });
    }
    // SAFETY: the descriptor is static data of a loaded library; the size was checked.
    let name = unsafe { text(&lib.library_name) }.unwrap_or_else(|e| format!("<{e}>"));
    // SAFETY: as above.
    let version = unsafe { text(&lib.library_version) }.unwrap_or_default();
    // SAFETY: as above.
    let build = unsafe { text(&lib.build_info) }.unwrap_or_default();
    let library = format!("\"{name}\" {version} ({build})");
    if lib.abi_major != ffi::SL_ABI_MAJOR {
        return Err(LoadError::AbiMajor {
            path,
            library,
            major: lib.abi_major,
            minor: lib.abi_minor,
            daemon: DAEMON_VERSION,
            host_major: ffi::SL_ABI_MAJOR,
            host_minor: ffi::SL_ABI_MINOR,
        });
    }
    if lib.min_host_minor > ffi::SL_ABI_MINOR {
        return Err(LoadError::HostTooOld {
            path,
            library,
            needed: lib.min_host_minor,
            daemon: DAEMON_VERSION,
            host_major: ffi::SL_ABI_MAJOR,
            host_minor: ffi::SL_ABI_MINOR,
        });
    }
    if lib.plugin_count > 0 && lib.plugins.is_null() {
        return Err(LoadError::BadPlugin {
            path,
            library,
            index: 0,
            reason: "plugin list is null".into(),
        });
    }
    let mut out = Vec::new();
    for i in 0..lib.plugin_count {
        let bad = |reason: String| LoadError::BadPlugin {
            path: path.clone(),
            library: library.clone(),
            index: i,
            reason,
        };
        // SAFETY: the list holds plugin_count definitions; sizes are checked before use.
        let def = unsafe { &*lib.plugins.add(i as usize) };
        if def.struct_size < ffi::SL_PLUGIN_DEF_V1_MIN_SIZE {
            return Err(bad(format!(
                "definition too small: {} bytes, need {}",
                def.struct_size,
                ffi::SL_PLUGIN_DEF_V1_MIN_SIZE
            )));
        }
        // SAFETY: static data of the library.
        let pname = unsafe { text(&def.name) }.map_err(|e| bad(e.to_string()))?;
        if pname.is_empty()
            || !pname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(format!("invalid plugin name `{pname}`")));
        }
        let kind = Kind::from_ffi(def.kind)
            .ok_or_else(|| bad(format!("`{pname}`: unknown kind {}", def.kind)))?;
        if def.vtable.is_null() {
            return Err(bad(format!("`{pname}`: null vtable")));
        }
        // SAFETY: non-null pointer to the library's static vtable; its size is checked next.
        let vt = unsafe { &*def.vtable };
        if vt.struct_size < ffi::SL_VTABLE_V1_MIN_SIZE {
            return Err(bad(format!(
                "`{pname}`: vtable too small: {} bytes, need {}",
                vt.struct_size,
                ffi::SL_VTABLE_V1_MIN_SIZE
            )));
        }
        let object_sink = def.flags & ffi::SL_DEF_OBJECT_SINK != 0;
        let replayable = def.flags & ffi::SL_DEF_REPLAYABLE != 0;
        if replayable && (kind != Kind::Source || lib.abi_minor < 1) {
            return Err(bad(format!(
                "`{pname}` ({kind}): SL_DEF_REPLAYABLE is for sources of ABI 1.1 or later"
            )));
        }
        let missing = |what: &str| {
            bad(format!(
                "`{pname}` ({kind}): required function `{what}` is null"
            ))
        };
        if vt.create.is_none() {
            return Err(missing("create"));
        }
        if vt.destroy.is_none() {
            return Err(missing("destroy"));
        }
        match kind {
            Kind::Source if vt.poll_batch.is_none() => return Err(missing("poll_batch")),
            Kind::Source if replayable && vt.ack.is_none() => return Err(missing("ack")),
            Kind::Transform if vt.transform.is_none() => return Err(missing("transform")),
            Kind::Sink if object_sink && vt.submit_object.is_none() => {
                return Err(missing("submit_object"))
            }
            Kind::Sink if !object_sink && vt.submit.is_none() => return Err(missing("submit")),
            _ => {}
        }
        out.push(PluginEntry {
            name: pname,
            kind,
            object_sink,
            replayable,
            // SAFETY: static data of the library.
            version: unsafe { text(&def.version) }.unwrap_or_default(),
            // SAFETY: static data of the library.
            description: unsafe { text(&def.description) }.unwrap_or_default(),
            library: name.clone(),
            library_version: version.clone(),
            abi: (lib.abi_major, lib.abi_minor),
            origin: origin.clone(),
            vtable: *vt,
        });
    }
    if let Some(init) = lib.init {
        let mut err = ffi::sl_error::zeroed();
        // SAFETY: validated descriptor; the host API table is static.
        let st = unsafe { init(super::host::host_api(), &mut err) };
        if st != ffi::SL_OK {
            return Err(LoadError::Init {
                path,
                library,
                message: sluice_plugin_api::read_error(&err).0,
            });
        }
    }
    Ok(out)
}

/// Refuses files (and folders) that others than the owner can write: whoever can write a
/// plugin runs code as the daemon.
/// sshd's StrictModes for plugin files: after resolving symlinks, the file and every
/// folder on the way to it must be owned by root or by the daemon's user and not writable
/// by anyone else (a world-writable folder with the sticky bit, like `/tmp`, is fine: others
/// cannot replace entries they do not own). Returns the resolved path, which is what gets
/// loaded, so a link cannot be swapped between the check and `dlopen`'s open of the target.
fn check_permissions(path: &Path) -> Result<std::path::PathBuf, Unsafe> {
    let real = std::fs::canonicalize(path).map_err(Unsafe::Resolve)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let stat = |p: &Path| {
        std::fs::metadata(p).map_err(|err| Unsafe::Stat {
            path: p.to_path_buf(),
            err,
        })
    };
    let meta = stat(&real)?;
    if !meta.is_file() {
        return Err(Unsafe::NotAFile(real.display().to_string()));
    }
    let shown = |p: &Path| {
        if p == real && real != path {
            format!("its target {}", p.display())
        } else if p == real {
            "the file".to_string()
        } else {
            format!("its folder {}", p.display())
        }
    };
    for (i, p) in real.ancestors().enumerate() {
        let m = if i == 0 { meta.clone() } else { stat(p)? };
        if m.uid() != 0 && m.uid() != me {
            return Err(Unsafe::Owner {
                what: shown(p),
                uid: m.uid(),
                me,
            });
        }
        let mode = m.permissions().mode();
        let sticky_dir = i > 0 && mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !sticky_dir {
            return Err(Unsafe::Writable {
                what: shown(p),
                mode: mode & 0o7777,
            });
        }
    }
    Ok(real)
}

/// An in-memory copy of the library (a `memfd`), to be mapped instead of the file: a
/// file overwritten in place (a `cp` over a loaded plugin) would otherwise change the
/// pages of code the daemon is running and crash it. The descriptor stays open for the
/// life of the process (libraries are never unloaded), which also keeps every copy's
/// `/proc/self/fd/N` name distinct for the dynamic loader. `None` when memfds are not
/// available: the file itself is loaded then.
fn private_copy(real: &Path) -> Option<(std::fs::File, std::path::PathBuf)> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: a valid NUL-terminated name; the flags are constants.
    let fd = unsafe { libc::memfd_create(c"sluice-plugin".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just created and is owned here.
    let mut mem = unsafe { std::fs::File::from_raw_fd(fd) };
    let copied = std::fs::File::open(real).and_then(|mut src| std::io::copy(&mut src, &mut mem));
    copied
        .ok()
        .map(|_| (mem, std::path::PathBuf::from(format!("/proc/self/fd/{fd}"))))
}

/// Opens one library and registers its plugins.
pub fn load_file(reg: &mut Registry, path: &Path) -> Result<usize, LoadError> {
    let shown = path.display().to_string();
    let real = check_permissions(path).map_err(|e| LoadError::Permissions {
        path: shown.clone(),
        detail: e.to_string(),
    })?;
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: loading a library runs its initialisers: plugins are trusted code (checked
    // for permissions above). RTLD_NODELETE: libraries are never unloaded.
    let flags = RTLD_NOW | RTLD_LOCAL | libc::RTLD_NODELETE;
    // The private copy first; when it cannot be mapped (memfds without exec rights, a
    // library that finds its siblings through `$ORIGIN`), the file itself.
    let from_copy = private_copy(&real).and_then(|(mem, mapped)| {
        // SAFETY: as below, on the same bytes.
        let lib = unsafe { Library::open(Some(&mapped), flags) }.ok()?;
        // The copy stays open for the life of the process, like the library.
        std::mem::forget(mem);
        Some(lib)
    });
    let lib = match from_copy {
        Some(lib) => Ok(lib),
        // SAFETY: see above.
        None => unsafe { Library::open(Some(&real), flags) },
    }
    .map_err(|e| LoadError::Open {
        path: shown.clone(),
        // libloading's message is only "dlopen failed": the loader's own reason
        // (dlerror: missing symbols, wrong ELF class, not an ELF file) is its source.
        error: match std::error::Error::source(&e) {
            Some(why) => format!("{e}: {why}"),
            None => e.to_string(),
        },
    })?;
    type Entry = unsafe extern "C" fn() -> *const ffi::sl_library;
    // SAFETY: the symbol, when present, has the documented signature.
    let entry = match unsafe { lib.get::<Entry>(ffi::ENTRY_SYMBOL) } {
        Ok(sym) => *sym,
        Err(_) => {
            let mut hint = String::new();
            for v in [0u32, 2, 3, 4] {
                let name = format!("sl_plugin_library_v{v}\0");
                // SAFETY: only probing for presence.
                if unsafe { lib.get::<Entry>(name.as_bytes()) }.is_ok() {
                    hint = format!(
                        " (it exports `sl_plugin_library_v{v}`: built for plugin ABI {v}, but this sluiced {DAEMON_VERSION} provides ABI {}.{})",
                        ffi::SL_ABI_MAJOR,
                        ffi::SL_ABI_MINOR
                    );
                    break;
                }
            }
            std::mem::forget(lib);
            return Err(LoadError::MissingSymbol { path: shown, hint });
        }
    };
    // Never unload: dlclose is unsafe with thread-locals and outstanding function pointers.
    std::mem::forget(lib);
    // SAFETY: the entry point returns static data and has no side effects (ABI rule).
    let desc = unsafe { entry() };
    if desc.is_null() {
        return Err(LoadError::BadMagic {
            path: shown,
            found: 0,
            expected: ffi::SL_MAGIC,
        });
    }
    // The magic and size are read first: the size field is at a fixed offset in every version.
    // SAFETY: non-null pointer to static data; the size is checked before other fields are trusted.
    let desc = unsafe { &*desc };
    reg.register(desc, Origin::Dylib(path.to_path_buf()))
}

/// What a library file was when it was loaded: identity, size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
}

/// Loads every `*.so` in `dir` not loaded yet, recording refusals in the registry; a
/// library file that changed since it was loaded is refused (once per change).
pub fn load_dir(reg: &mut Registry, dir: &Path) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(dir = %dir.display(), "plugin folder does not exist; no plugins loaded from it");
            return;
        }
        Err(e) => {
            reg.refuse(
                dir,
                format!("{}: cannot list plugin folder: {e}", dir.display()),
            );
            return;
        }
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "so"))
        .collect();
    files.sort();
    for path in files {
        let stamp = std::fs::metadata(&path).ok().map(|m| Stamp::of(&m));
        if let Some((_, was)) = reg.loaded.iter().find(|(p, _)| *p == path) {
            if stamp.is_some_and(|s| s != *was) {
                let reason = format!(
                    "{}: the file changed since sluiced loaded it; a loaded library is never unloaded, so its plugins keep running the old build: restart sluiced to use the new one",
                    path.display()
                );
                if !reg
                    .refused
                    .iter()
                    .any(|r| r.path == path && r.reason == reason)
                {
                    reg.refuse(&path, reason);
                }
            }
            continue;
        }
        // The same file twice (symlinks, overlapping folders) is loaded once.
        if let Some(s) = stamp {
            let id = (s.dev, s.ino);
            if reg.seen.contains(&id) {
                continue;
            }
            reg.seen.push(id);
        }
        match load_file(reg, &path) {
            Ok(n) => {
                tracing::info!(path = %path.display(), plugins = n, "plugin library loaded");
                if let Some(s) = stamp {
                    reg.loaded.push((path.clone(), s));
                }
            }
            Err(e) => reg.refuse(&path, e.to_string()),
        }
    }
}
