//! The S3 half of the `object-store` sink (cargo feature `s3`, on by default): any
//! S3-compatible store through the `object_store` crate, on the plugin's own small tokio
//! runtime; objects above 16 MiB go up as multipart uploads read from the spool file.

use super::ObjectStoreConfig;
use object_store::ObjectStoreExt as _;
use sluice_plugin_api::{Error, Object};
use std::fs::File;

/// Why a multipart upload failed.
#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error("reading the spool file: {0}")]
    Spool(#[from] std::io::Error),
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

/// An S3 bucket and prefix, with the runtime the client runs on.
pub(super) struct S3Target {
    store: Box<dyn object_store::ObjectStore>,
    prefix: String,
    rt: Option<tokio::runtime::Runtime>,
}

/// Opens `s3://bucket/prefix` with the sink's S3 settings.
pub(super) fn open(cfg: &ObjectStoreConfig, rest: &str) -> Result<S3Target, Error> {
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
    Ok(S3Target {
        store: Box::new(store),
        prefix: if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        },
        rt: None,
    })
}

impl Drop for S3Target {
    /// The host drops its sinks from inside its own async runtime (a pipeline's driver
    /// ending: shutdown, reload); dropping a runtime there would block and panics, so it
    /// is shut down in the background instead (nothing is in flight: `write` blocks until
    /// its upload is done).
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl S3Target {
    /// Starts the client's runtime.
    pub(super) fn start(&mut self) -> Result<(), Error> {
        let r = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::fatal(format_args!("cannot start the S3 client runtime: {e}")))?;
        self.rt = Some(r);
        Ok(())
    }

    /// Stores one object (retryable failures: the host retries with backoff).
    pub(super) fn write(&self, obj: &Object<'_>) -> Result<(), Error> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| Error::fatal("not started"))?;
        let (store, prefix) = (&self.store, &self.prefix);
        let spool_err =
            |p: &str, e| Error::retryable(format_args!("cannot read spool file {p}: {e}"));
        let len = match obj.body_path {
            Some(p) => std::fs::metadata(p).map_err(|e| spool_err(p, e))?.len() as usize,
            None => obj.body.len(),
        };
        // Keys are already safe and Hive-escaped: taken as they are (`from` would
        // percent-encode the `%` of escaped values a second time).
        let path = object_store::path::Path::parse(format!("{prefix}{}", obj.key))
            .map_err(|e| Error::fatal(format_args!("invalid object key `{}`: {e}", obj.key)))?;
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
        let res: Result<(), UploadError> = rt.block_on(async {
            let upload = store.put_multipart(&path).await?;
            let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let sent: Result<(), UploadError> = async {
                match &mut file {
                    Some(f) => {
                        let mut chunk = vec![0u8; PART_SIZE];
                        loop {
                            let n = read_full(f, &mut chunk)?;
                            if n == 0 {
                                break;
                            }
                            w.wait_for_capacity(2).await?;
                            w.write(&chunk[..n]);
                        }
                    }
                    None => w.write(obj.body),
                }
                w.wait_for_capacity(0).await?;
                sluice_plugin_api::failpoint("object-store-mid-upload");
                Ok(())
            }
            .await;
            match sent {
                Ok(()) => w.finish().await.map(drop).map_err(UploadError::from),
                Err(e) => {
                    // No orphaned parts left behind in the store.
                    let _ = w.abort().await;
                    Err(e)
                }
            }
        });
        res.map_err(|e| Error::retryable(format_args!("S3 put {path}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon drops a sink inside its pipeline's async driver: that must not panic
    /// (it did: "Cannot drop a runtime in a context where blocking is not allowed").
    #[test]
    fn a_started_target_is_dropped_inside_an_async_context() {
        let cfg: ObjectStoreConfig = serde_json::from_value(serde_json::json!({
            "url": "s3://lake/events",
            "endpoint": "http://127.0.0.1:9",
            "access_key_id": "x",
            "secret_access_key": "x",
        }))
        .unwrap();
        let mut t = open(&cfg, "lake/events").unwrap();
        t.start().unwrap();
        let host = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        host.block_on(async move { drop(t) });
    }
}
