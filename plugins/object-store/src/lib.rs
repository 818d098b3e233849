//! The bundled `object-store` object sink. `url` is a directory (relative paths resolve
//! against the daemon config's folder) or `file:///absolute/path`. Objects are written
//! the way readers never see a partial one: a hidden temp name in the target folder, then
//! `rename`; they are confirmed to the host only once a sync covers them (`dir.rs`: a
//! group commit of every object renamed meanwhile, by one `syncfs` or by per-object
//! `fsync`s — the `sync` option). Re-delivering an object with the same key replaces it
//! (and removes temp files a crash left for that name), so replays with deterministic
//! names leave no duplicates and no debris.
//!
//! Objects are written by `concurrency` worker threads (default 8): `submit_object`
//! copies the object, hands it over and returns; past `concurrency` objects being written
//! it answers "full" and wakes the host when one is renamed into place.
//!
//! `s3://bucket/prefix` writes to S3 or any S3-compatible store through the `object_store`
//! crate (`endpoint`, `region`, `access_key_id`, `secret_access_key`, `path_style`,
//! `allow_http`; credentials fall back to the usual `AWS_*` environment). Objects above
//! 16 MiB go up as multipart uploads. The plugin runs its own small tokio runtime: plugins
//! never share the daemon's. Failures are retryable: the host retries with backoff.

mod dir;
#[cfg(feature = "s3")]
mod s3;
use dir::{DirTarget, SyncMode};
use sluice_plugin_api::Notifier;
use sluice_plugin_api::{
    declare_library, Completion, Context, Error, Object, ObjectSink, Plugin, Submitted,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};

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
    /// Objects written (or uploaded) at the same time, 1–64 (default 8).
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Directories: how written objects are made durable before they are confirmed —
    /// `auto` (default: one `syncfs` when the objects finished meanwhile would need 16 or
    /// more `fsync`s of files and folders, else those `fsync`s), `object` (always per object) or `filesystem` (always
    /// one `syncfs` per group).
    #[serde(default)]
    pub sync: Option<String>,
}

/// Default of `concurrency`.
const DEFAULT_CONCURRENCY: u32 = 8;
/// Largest `concurrency`.
const MAX_CONCURRENCY: u32 = 64;

enum Target {
    Dir(DirTarget),
    #[cfg(feature = "s3")]
    S3(s3::S3Target),
}

/// The sink.
pub struct ObjectStore {
    inner: Arc<Inner>,
    concurrency: usize,
    /// Objects submitted and not yet written (directories: renamed into place and queued
    /// for their sync; S3: uploaded).
    in_flight: Arc<AtomicUsize>,
    notifier: Notifier,
    /// The workers' queue (bounded by `in_flight`), and how many threads still run.
    jobs: Option<mpsc::Sender<Job>>,
    running: Arc<(Mutex<usize>, Condvar)>,
}

/// What the workers share.
struct Inner {
    target: Target,
}

/// An object copied out of the host's call, with its completion.
struct Job {
    obj: OwnedObject,
    done: Completion,
}

/// The object's fields, owned.
struct OwnedObject {
    key: String,
    content_type: String,
    content_encoding: String,
    record_count: u64,
    oldest_timestamp_ms: i64,
    body: Vec<u8>,
    body_path: Option<String>,
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
    let sync = match cfg.sync.as_deref() {
        None => SyncMode::Auto,
        Some(s) => SyncMode::parse(s).ok_or_else(|| {
            Error::config_field(
                "sync",
                format_args!("unknown sync `{s}` (use auto, object or filesystem)"),
            )
        })?,
    };
    let target = if let Some(rest) = url.strip_prefix("s3://") {
        if cfg.sync.is_some() {
            return Err(Error::config_field("sync", "only applies to directories"));
        }
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
            Target::Dir(DirTarget::new(PathBuf::from(p), sync))
        } else if url.contains("://") {
            return Err(Error::config_field(
                "url",
                format_args!(
                    "unsupported URL scheme in `{url}` (use a directory, file:// or s3://)"
                ),
            ));
        } else {
            Target::Dir(DirTarget::new(resolve(Path::new(url)), sync))
        }
    };
    Ok(target)
}

impl Plugin for ObjectStore {
    type Config = ObjectStoreConfig;
    fn create(cfg: ObjectStoreConfig, ctx: &Context) -> Result<Self, Error> {
        let concurrency = cfg.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(Error::config_field(
                "concurrency",
                format_args!("concurrency must be between 1 and {MAX_CONCURRENCY}"),
            ));
        }
        let target = target(&cfg, |p| ctx.resolve_path(p))?;
        Ok(ObjectStore {
            inner: Arc::new(Inner { target }),
            concurrency: concurrency as usize,
            in_flight: Default::default(),
            notifier: ctx.notifier(),
            jobs: None,
            running: Default::default(),
        })
    }

    fn start(&mut self) -> Result<(), Error> {
        let inner = Arc::get_mut(&mut self.inner).ok_or_else(|| Error::fatal("started twice"))?;
        match &mut inner.target {
            Target::Dir(d) => d.open().map_err(|e| {
                Error::fatal(format_args!("cannot create {}: {e}", d.root().display()))
            })?,
            #[cfg(feature = "s3")]
            Target::S3(t) => t.start()?,
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        self.jobs = Some(tx);
        // Writers are counted before the committer starts: it ends when none is left.
        let mut uncounted = 0;
        if let Target::Dir(d) = &self.inner.target {
            (0..self.concurrency).for_each(|_| d.add_writer());
            uncounted = self.concurrency;
            let (inner, notifier) = (self.inner.clone(), self.notifier.clone());
            let committer = move || {
                if let Target::Dir(d) = &inner.target {
                    d.run_committer(|| notifier.notify());
                }
            };
            if let Err(e) = self.spawn("object-store-sync".into(), committer) {
                self.abort_start(uncounted);
                return Err(e);
            }
        }
        for i in 0..self.concurrency {
            let (rx, inner) = (rx.clone(), self.inner.clone());
            let (in_flight, notifier) = (self.in_flight.clone(), self.notifier.clone());
            let worker = move || {
                loop {
                    // The lock is held only to take a job, not while writing it.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => break,
                    };
                    let Ok(Job { obj, done }) = job else { break };
                    match &inner.target {
                        Target::Dir(d) => {
                            let done: dir::Done = Box::new(move |r| match r {
                                Ok(()) => done.success(),
                                Err(e) => done.fail(&e),
                            });
                            // Confirmed by the committer once synced.
                            if let Err((e, done)) = d.write(&obj.object(), done) {
                                done(Err(e));
                            }
                        }
                        #[cfg(feature = "s3")]
                        Target::S3(t) => match dir::safe_key(&obj.key)
                            .ok_or_else(|| {
                                Error::fatal(format_args!(
                                    "refusing unsafe object key `{}`",
                                    obj.key
                                ))
                            })
                            .and_then(|_| t.write(&obj.object()))
                        {
                            Ok(()) => done.success(),
                            Err(e) => done.fail(&e),
                        },
                    }
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                    notifier.notify();
                }
                if let Target::Dir(d) = &inner.target {
                    d.writer_done();
                }
            };
            if let Err(e) = self.spawn(format!("object-store-{i}"), worker) {
                self.abort_start(uncounted);
                return Err(e);
            }
            uncounted = uncounted.saturating_sub(1);
        }
        Ok(())
    }

    fn stop(&mut self, deadline: std::time::Duration) -> Result<(), Error> {
        self.shut(deadline);
        Ok(())
    }
}

impl ObjectStore {
    /// Runs `body` on a thread of its own, counted in `running` until it returns.
    fn spawn(&self, name: String, body: impl FnOnce() + Send + 'static) -> Result<(), Error> {
        let running = self.running.clone();
        if let Ok(mut n) = running.0.lock() {
            *n += 1;
        }
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            body();
            if let Ok(mut n) = running.0.lock() {
                *n -= 1;
                running.1.notify_all();
            }
        });
        spawned.map(drop).map_err(|e| {
            if let Ok(mut n) = self.running.0.lock() {
                *n -= 1;
            }
            Error::fatal(format_args!("cannot start a writer thread: {e}"))
        })
    }

    /// A thread could not start: the writers counted but not started leave, and what did
    /// start is stopped.
    fn abort_start(&mut self, uncounted: usize) {
        if let Target::Dir(d) = &self.inner.target {
            (0..uncounted).for_each(|_| d.writer_done());
        }
        self.shut(std::time::Duration::ZERO);
    }

    /// Closes the queue (the workers finish what was handed over, then end) and waits
    /// for them at most `deadline`: a worker stuck in an upload is left to finish on its
    /// own — its late completion is refused by the host, harmlessly.
    fn shut(&mut self, deadline: std::time::Duration) {
        self.jobs = None;
        let (count, ended) = &*self.running;
        if let Ok(n) = count.lock() {
            let _ = ended.wait_timeout_while(n, deadline, |n| *n > 0);
        }
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        self.shut(std::time::Duration::from_secs(5));
    }
}

impl OwnedObject {
    fn object(&self) -> Object<'_> {
        Object {
            key: &self.key,
            content_type: &self.content_type,
            content_encoding: &self.content_encoding,
            record_count: self.record_count,
            oldest_timestamp_ms: self.oldest_timestamp_ms,
            body: &self.body,
            body_path: self.body_path.as_deref(),
        }
    }
}

impl ObjectSink for ObjectStore {
    fn submit_object(&mut self, obj: &Object<'_>, done: Completion) -> Result<Submitted, Error> {
        let Some(jobs) = &self.jobs else {
            return Err(Error::fatal("not started"));
        };
        if self.in_flight.load(Ordering::Acquire) >= self.concurrency {
            // The host asks again when notified (a worker notifies as it finishes).
            return Ok(Submitted::Full(done));
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let obj = OwnedObject {
            key: obj.key.to_string(),
            content_type: obj.content_type.to_string(),
            content_encoding: obj.content_encoding.to_string(),
            record_count: obj.record_count,
            oldest_timestamp_ms: obj.oldest_timestamp_ms,
            // The host's bytes are borrowed for this call only.
            body: obj.body.to_vec(),
            body_path: obj.body_path.map(str::to_string),
        };
        let job = Job { obj, done };
        if let Err(mpsc::SendError(job)) = jobs.send(job) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            job.done
                .fail(&Error::retryable("the writer threads are gone"));
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
        use dir::safe_key;
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

    /// `sync` takes auto, object or filesystem, and only for directories.
    #[test]
    fn sync_is_checked() {
        let with = |url: &str, sync: &str| -> ObjectStoreConfig {
            serde_json::from_value(serde_json::json!({ "url": url, "sync": sync })).unwrap()
        };
        for ok in ["auto", "object", "filesystem"] {
            assert!(target(&with("lake", ok), Path::to_path_buf).is_ok(), "{ok}");
        }
        let e = target(&with("lake", "fsync"), Path::to_path_buf)
            .err()
            .unwrap();
        assert_eq!(e.field.as_deref(), Some("sync"));
        assert!(e.message.contains("unknown sync `fsync`"), "{e}");
        let e = target(&with("s3://bucket/p", "auto"), Path::to_path_buf)
            .err()
            .unwrap();
        assert_eq!(e.field.as_deref(), Some("sync"));
        assert!(e.message.contains("only applies to directories"), "{e}");
    }

    #[cfg(feature = "s3")]
    #[test]
    fn s3_urls_need_a_bucket() {
        assert!(target(&cfg("s3://"), Path::to_path_buf).is_err());
        assert!(target(&cfg("s3://bucket/p"), Path::to_path_buf).is_ok());
    }
}
