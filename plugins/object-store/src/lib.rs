//! The bundled `object-store` object sink. `url` is a directory (relative paths resolve
//! against the daemon config's folder) or `file:///absolute/path`. Objects are written
//! the way readers never see a partial one: a hidden temp name in the target folder,
//! `fsync`, `rename`, `fsync` of the folder. Re-delivering an object with the same key
//! replaces it, so replays with deterministic names leave no duplicates.
//!
//! `s3://` URLs are recognised and refused for now with a clear error (S3 support is
//! tracked in the delivery issue).

use sluice_plugin_api::{
    declare_library, Completion, Context, Error, Object, ObjectSink, Plugin, Submitted,
};
use std::fs::File;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// `object-store` options (the host takes `prefix`, `error_prefix`, `compression` and
/// `delimiter` out of the table before it reaches the plugin).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// A directory, `file:///abs/path`, or (not yet) `s3://bucket/prefix`.
    pub url: String,
}

/// The sink.
pub struct ObjectStore {
    root: PathBuf,
    seq: u64,
}

fn safe_key(key: &str) -> Option<PathBuf> {
    let p = Path::new(key);
    let ok = !key.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| p.to_path_buf())
}

impl Plugin for ObjectStore {
    type Config = ObjectStoreConfig;
    fn create(cfg: ObjectStoreConfig, ctx: &Context) -> Result<Self, Error> {
        let url = cfg.url.trim();
        if url.is_empty() {
            return Err(Error::config_field("url", "must not be empty"));
        }
        let root = if let Some(p) = url.strip_prefix("file://") {
            if !p.starts_with('/') {
                return Err(Error::config_field(
                    "url",
                    "file:// URLs need an absolute path (file:///var/lake)",
                ));
            }
            PathBuf::from(p)
        } else if url.starts_with("s3://") {
            return Err(Error::config_field(
                "url",
                "s3:// destinations are not supported by this build yet; use a directory or file:// URL",
            ));
        } else if url.contains("://") {
            return Err(Error::config_field(
                "url",
                format_args!("unsupported URL scheme in `{url}` (use a directory or file://)"),
            ));
        } else {
            ctx.resolve_path(Path::new(url))
        };
        Ok(ObjectStore { root, seq: 0 })
    }

    fn start(&mut self) -> Result<(), Error> {
        std::fs::create_dir_all(&self.root)
            .map_err(|e| Error::fatal(format_args!("cannot create {}: {e}", self.root.display())))
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl ObjectStore {
    fn write(&mut self, obj: &Object<'_>) -> Result<(), Error> {
        let rel = safe_key(obj.key).ok_or_else(|| {
            Error::fatal(format_args!("refusing unsafe object key `{}`", obj.key))
        })?;
        let path = self.root.join(&rel);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let io = |what: &str, e: std::io::Error| {
            Error::retryable(format_args!("{what} {}: {e}", path.display()))
        };
        std::fs::create_dir_all(&dir).map_err(|e| io("cannot create the folder of", e))?;
        self.seq += 1;
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("object");
        let tmp = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), self.seq));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            match obj.body_path {
                Some(src) => {
                    std::io::copy(&mut File::open(src)?, &mut f)?;
                }
                None => f.write_all(obj.body)?,
            }
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            sync_dir(&dir)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io("cannot write", e)
        })
    }
}

impl ObjectSink for ObjectStore {
    fn submit_object(&mut self, obj: &Object<'_>, done: Completion) -> Result<Submitted, Error> {
        match self.write(obj) {
            Ok(()) => done.success(),
            Err(e) => done.fail(&e),
        }
        Ok(Submitted::Accepted)
    }
}

declare_library!(
    name: "object-store",
    plugins: [object_sink("object-store", ObjectStore, "writes flushed objects to a directory")]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_root() {
        assert!(safe_key("type=a/source=b/x.gz").is_some());
        assert!(safe_key("../x").is_none());
        assert!(safe_key("/etc/passwd").is_none());
        assert!(safe_key("a/./b").is_some()); // `.` components are normalised away by Path
        assert!(safe_key("").is_none());
    }
}
