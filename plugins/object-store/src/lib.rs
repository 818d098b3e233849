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

use object_store::ObjectStoreExt as _;
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
    S3 {
        store: Box<dyn object_store::ObjectStore>,
        prefix: String,
        rt: Option<tokio::runtime::Runtime>,
    },
}

/// The sink.
pub struct ObjectStore {
    target: Target,
    seq: u64,
}

/// Objects larger than this are uploaded in parts.
const MULTIPART_ABOVE: usize = 16 << 20;
/// Size of one part of a multipart upload.
const PART_SIZE: usize = 8 << 20;

/// Fills `buf` from `r` unless the end comes first; returns how much was read.
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn s3(cfg: &ObjectStoreConfig, rest: &str) -> Result<Target, Error> {
    use object_store::aws::AmazonS3Builder;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::config_field(
            "url",
            "s3:// URLs need a bucket: s3://bucket/prefix",
        ));
    }
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(cfg.region.clone().unwrap_or_else(|| "us-east-1".into()));
    let allow_http = cfg.allow_http.unwrap_or_else(|| {
        cfg.endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
    });
    if let Some(e) = &cfg.endpoint {
        b = b.with_endpoint(e.clone());
    }
    if let Some(k) = &cfg.access_key_id {
        b = b.with_access_key_id(k.clone());
    }
    if let Some(s) = &cfg.secret_access_key {
        b = b.with_secret_access_key(s.clone());
    }
    b = b.with_virtual_hosted_style_request(!cfg.path_style.unwrap_or(cfg.endpoint.is_some()));
    let timeout = std::time::Duration::from_secs(cfg.timeout_secs.unwrap_or(30).max(1));
    b = b.with_client_options(
        // allow_http lives in the client options: set it here, where they are replaced.
        object_store::ClientOptions::new()
            .with_allow_http(allow_http)
            .with_timeout(timeout)
            .with_connect_timeout(timeout.min(std::time::Duration::from_secs(5))),
    );
    // The host retries with its own backoff (and counts retries): none in the client.
    b = b.with_retry(object_store::RetryConfig {
        max_retries: 0,
        ..Default::default()
    });
    let store = b
        .build()
        .map_err(|e| Error::config_field("url", format_args!("invalid S3 settings: {e}")))?;
    let prefix = prefix.trim_matches('/');
    Ok(Target::S3 {
        store: Box::new(store),
        prefix: if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        },
        rt: None,
    })
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
        let s3_only = [
            ("endpoint", cfg.endpoint.is_some()),
            ("region", cfg.region.is_some()),
            ("access_key_id", cfg.access_key_id.is_some()),
            ("secret_access_key", cfg.secret_access_key.is_some()),
            ("path_style", cfg.path_style.is_some()),
            ("allow_http", cfg.allow_http.is_some()),
        ];
        let target = if let Some(rest) = url.strip_prefix("s3://") {
            s3(&cfg, rest)?
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
                Target::Dir(ctx.resolve_path(Path::new(url)))
            }
        };
        Ok(ObjectStore { target, seq: 0 })
    }

    fn start(&mut self) -> Result<(), Error> {
        match &mut self.target {
            Target::Dir(root) => std::fs::create_dir_all(&*root)
                .map_err(|e| Error::fatal(format_args!("cannot create {}: {e}", root.display()))),
            Target::S3 { rt, .. } => {
                let r = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        Error::fatal(format_args!("cannot start the S3 client runtime: {e}"))
                    })?;
                *rt = Some(r);
                Ok(())
            }
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
            Target::S3 { store, prefix, rt } => {
                let rt = rt.as_ref().ok_or_else(|| Error::fatal("not started"))?;
                let spool_err =
                    |p: &str, e| Error::retryable(format_args!("cannot read spool file {p}: {e}"));
                let len = match obj.body_path {
                    Some(p) => std::fs::metadata(p).map_err(|e| spool_err(p, e))?.len() as usize,
                    None => obj.body.len(),
                };
                // Keys are already safe and Hive-escaped: taken as they are (`from` would
                // percent-encode the `%` of escaped values a second time).
                let path = object_store::path::Path::parse(format!("{prefix}{}", obj.key))
                    .map_err(|e| {
                        Error::fatal(format_args!("invalid object key `{}`: {e}", obj.key))
                    })?;
                if len <= MULTIPART_ABOVE {
                    let body: bytes::Bytes = match obj.body_path {
                        Some(p) => std::fs::read(p).map_err(|e| spool_err(p, e))?.into(),
                        None => bytes::Bytes::copy_from_slice(obj.body),
                    };
                    let res = rt.block_on(store.put(&path, object_store::PutPayload::from(body)));
                    return res
                        .map(drop)
                        .map_err(|e| Error::retryable(format_args!("S3 put {path}: {e}")));
                }
                // Large: parts of PART_SIZE, at most two in flight, read from the spool
                // file as they go (a spooled object never sits in RAM whole).
                let mut file = match obj.body_path {
                    Some(p) => Some(File::open(p).map_err(|e| spool_err(p, e))?),
                    None => None,
                };
                let res: Result<(), String> = rt.block_on(async {
                    let upload = store
                        .put_multipart(&path)
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut w =
                        object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                    let sent: Result<(), String> = async {
                        match &mut file {
                            Some(f) => {
                                let mut chunk = vec![0u8; PART_SIZE];
                                loop {
                                    let n = read_full(f, &mut chunk).map_err(|e| e.to_string())?;
                                    if n == 0 {
                                        break;
                                    }
                                    w.wait_for_capacity(2).await.map_err(|e| e.to_string())?;
                                    w.write(&chunk[..n]);
                                }
                            }
                            None => w.write(obj.body),
                        }
                        w.wait_for_capacity(0).await.map_err(|e| e.to_string())?;
                        sluice_plugin_api::failpoint("object-store-mid-upload");
                        Ok(())
                    }
                    .await;
                    match sent {
                        Ok(()) => w.finish().await.map(drop).map_err(|e| e.to_string()),
                        Err(e) => {
                            // No orphaned parts left behind in the store.
                            let _ = w.abort().await;
                            Err(e)
                        }
                    }
                });
                return res.map_err(|e| Error::retryable(format_args!("S3 put {path}: {e}")));
            }
        };
        let path = root.join(&rel);
        let dir = path.parent().unwrap_or(&root).to_path_buf();
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
            sluice_plugin_api::failpoint("object-store-mid-upload");
            std::fs::rename(&tmp, &path)?;
            sync_dir(&dir)?;
            // A crash mid-write leaves `.<name>.tmp-<pid>-<n>` behind; the replay writes the
            // same name into the same folder, so that is where its leftovers are found.
            let stale = format!(".{name}.tmp-");
            for e in std::fs::read_dir(&dir)?.flatten() {
                if e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&stale))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            Ok(())
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
