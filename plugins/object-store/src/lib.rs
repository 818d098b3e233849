//! The bundled `object-store` object sink. `url` is a directory (relative paths resolve
//! against the daemon config's folder) or `file:///absolute/path`. Objects are written
//! the way readers never see a partial one: a hidden temp name in the target folder,
//! `fsync`, `rename`, `fsync` of the folder. Re-delivering an object with the same key
//! replaces it (and removes temp files a crash left for that name), so replays with
//! deterministic names leave no duplicates and no debris.
//!
//! `s3://bucket/prefix` writes to S3 or any S3-compatible store through the `object_store`
//! crate (`endpoint`, `region`, `access_key_id`, `secret_access_key`, `path_style`,
//! `allow_http`; credentials fall back to the usual `AWS_*` environment). Objects above
//! 16 MiB go up as multipart uploads. The plugin runs its own small tokio runtime: plugins
//! never share the daemon's. Failures are retryable: the host retries with backoff.

#[cfg(feature = "s3")]
mod s3;
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
    /// A directory, `file:///abs/path`, or `s3://bucket/prefix`.
    pub url: String,
    /// S3: endpoint of an S3-compatible store (`http://127.0.0.1:9000`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3: region (default `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// S3: access key id (default: `AWS_ACCESS_KEY_ID`).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// S3: secret (default: `AWS_SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// S3: path-style requests (`endpoint/bucket/key`), as most S3-compatible stores want.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// S3: allow plain HTTP endpoints (default: true when `endpoint` starts with http://).
    #[serde(default)]
    pub allow_http: Option<bool>,
    /// S3: per-request timeout (default 30s).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

enum Target {
    Dir(PathBuf),
    #[cfg(feature = "s3")]
    S3(s3::S3Target),
}

/// The sink.
pub struct ObjectStore {
    target: Target,
    /// Folders known to exist (created or seen by this instance), so that an object
    /// costs no `mkdir -p`; bounded, and forgotten when a write finds one gone.
    known_dirs: std::collections::HashSet<PathBuf>,
}

/// Most folders remembered; past it the set starts over (a cache, not a record).
const MAX_KNOWN_DIRS: usize = 65_536;

fn safe_key(key: &str) -> Option<PathBuf> {
    let p = Path::new(key);
    let ok = !key.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| p.to_path_buf())
}

/// Where `url` points: a directory (relative ones resolved by `resolve`) or S3.
fn target(cfg: &ObjectStoreConfig, resolve: impl Fn(&Path) -> PathBuf) -> Result<Target, Error> {
    let url = cfg.url.trim();
    if url.is_empty() {
        return Err(Error::config_field("url", "must not be empty"));
    }
    let s3_only = [
        ("endpoint", cfg.endpoint.is_some()),
        ("region", cfg.region.is_some()),
        ("access_key_id", cfg.access_key_id.is_some()),
        ("secret_access_key", cfg.secret_access_key.is_some()),
        ("path_style", cfg.path_style.is_some()),
        ("allow_http", cfg.allow_http.is_some()),
    ];
    let target = if let Some(rest) = url.strip_prefix("s3://") {
        #[cfg(feature = "s3")]
        {
            Target::S3(s3::open(cfg, rest)?)
        }
        #[cfg(not(feature = "s3"))]
        {
            let _ = rest;
            return Err(Error::config_field(
                "url",
                "this sluiced was built without S3 support (cargo feature `s3`)",
            ));
        }
    } else {
        if let Some((k, _)) = s3_only.iter().find(|(_, set)| *set) {
            return Err(Error::config_field(*k, "only applies to s3:// URLs"));
        }
        if let Some(p) = url.strip_prefix("file://") {
            if !p.starts_with('/') {
                return Err(Error::config_field(
                    "url",
                    "file:// URLs need an absolute path (file:///var/lake)",
                ));
            }
            Target::Dir(PathBuf::from(p))
        } else if url.contains("://") {
            return Err(Error::config_field(
                "url",
                format_args!(
                    "unsupported URL scheme in `{url}` (use a directory, file:// or s3://)"
                ),
            ));
        } else {
            Target::Dir(resolve(Path::new(url)))
        }
    };
    Ok(target)
}

impl Plugin for ObjectStore {
    type Config = ObjectStoreConfig;
    fn create(cfg: ObjectStoreConfig, ctx: &Context) -> Result<Self, Error> {
        let target = target(&cfg, |p| ctx.resolve_path(p))?;
        Ok(ObjectStore {
            target,
            known_dirs: Default::default(),
        })
    }

    fn start(&mut self) -> Result<(), Error> {
        match &mut self.target {
            Target::Dir(root) => std::fs::create_dir_all(&*root)
                .map_err(|e| Error::fatal(format_args!("cannot create {}: {e}", root.display()))),
            #[cfg(feature = "s3")]
            Target::S3(t) => t.start(),
        }
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
        let root = match &self.target {
            Target::Dir(root) => root.clone(),
            #[cfg(feature = "s3")]
            Target::S3(t) => return t.write(obj),
        };
        let path = root.join(&rel);
        let dir = path.parent().unwrap_or(&root).to_path_buf();
        let io = |what: &str, e: std::io::Error| {
            Error::retryable(format_args!("{what} {}: {e}", path.display()))
        };
        if !self.known_dirs.contains(&dir) {
            std::fs::create_dir_all(&dir).map_err(|e| io("cannot create the folder of", e))?;
            if self.known_dirs.len() >= MAX_KNOWN_DIRS {
                self.known_dirs.clear();
            }
            self.known_dirs.insert(dir.clone());
        }
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("object");
        // One temp name per object: a crash mid-write leaves `.<name>.tmp`, and the replay,
        // which writes the same object into the same folder, overwrites and renames it —
        // no leftovers and no folder scan per object.
        let tmp = dir.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            match obj.body_path {
                Some(src) => {
                    std::io::copy(&mut File::open(src)?, &mut f)?;
                }
                None => f.write_all(obj.body)?,
            }
            f.sync_all()?;
            sluice_plugin_api::failpoint("object-store-mid-upload");
            std::fs::rename(&tmp, &path)?;
            sync_dir(&dir)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            if e.kind() == std::io::ErrorKind::NotFound {
                // The folder went away under us: make it again on the retry.
                self.known_dirs.remove(&dir);
            }
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

    fn cfg(url: &str) -> ObjectStoreConfig {
        serde_json::from_value(serde_json::json!({ "url": url })).unwrap()
    }

    /// Without the `s3` feature an `s3://` URL is a clear config error, not a mystery.
    #[cfg(not(feature = "s3"))]
    #[test]
    fn without_the_s3_feature_s3_urls_are_refused() {
        let e = target(&cfg("s3://bucket/prefix"), Path::to_path_buf)
            .err()
            .unwrap();
        assert!(e.to_string().contains("built without S3 support"), "{e}");
        assert!(target(&cfg("lake"), Path::to_path_buf).is_ok());
    }

    #[cfg(feature = "s3")]
    #[test]
    fn s3_urls_need_a_bucket() {
        assert!(target(&cfg("s3://"), Path::to_path_buf).is_err());
        assert!(target(&cfg("s3://bucket/p"), Path::to_path_buf).is_ok());
    }
}
