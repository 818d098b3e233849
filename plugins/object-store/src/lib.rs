//! The bundled `object-store` object sink. `url` is a directory (relative paths resolve
//! against the daemon config's folder) or `file:///absolute/path`. Objects are written
//! the way readers never see a partial one: a hidden temp name in the target folder,
//! `fsync`, `rename`, `fsync` of the folder. Re-delivering an object with the same key
//! replaces it (and removes temp files a crash left for that name), so replays with
//! deterministic names leave no duplicates and no debris.
//!
//! Objects are written by `concurrency` worker threads (default 8): `submit_object`
//! copies the object, hands it over and returns; past `concurrency` objects in flight it
//! answers "full" and wakes the host when one completes. Workers renaming into the same
//! folder share its `fsync` (a group commit: one sync covers every rename finished before
//! it started), so a flush round of many objects costs one folder sync per folder, not
//! one per object.
//!
//! `s3://bucket/prefix` writes to S3 or any S3-compatible store through the `object_store`
//! crate (`endpoint`, `region`, `access_key_id`, `secret_access_key`, `path_style`,
//! `allow_http`; credentials fall back to the usual `AWS_*` environment). Objects above
//! 16 MiB go up as multipart uploads. The plugin runs its own small tokio runtime: plugins
//! never share the daemon's. Failures are retryable: the host retries with backoff.

#[cfg(feature = "s3")]
mod s3;
use sluice_plugin_api::Notifier;
use sluice_plugin_api::{
    declare_library, Completion, Context, Error, Object, ObjectSink, Plugin, Submitted,
};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
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
}

/// Default of `concurrency`.
const DEFAULT_CONCURRENCY: u32 = 8;
/// Largest `concurrency`.
const MAX_CONCURRENCY: u32 = 64;

enum Target {
    Dir(PathBuf),
    #[cfg(feature = "s3")]
    S3(s3::S3Target),
}

/// The sink.
pub struct ObjectStore {
    inner: Arc<Inner>,
    concurrency: usize,
    /// Objects submitted and not yet completed.
    in_flight: Arc<AtomicUsize>,
    notifier: Notifier,
    /// The workers' queue (bounded by `in_flight`), and how many workers still run.
    jobs: Option<mpsc::Sender<Job>>,
    running: Arc<(Mutex<usize>, Condvar)>,
}

/// What the workers share.
struct Inner {
    target: Target,
    /// Folders known to exist (created or seen by this instance), so that an object
    /// costs no `mkdir -p`; bounded, and forgotten when a write finds one gone.
    known_dirs: Mutex<HashSet<PathBuf>>,
    /// Group commit of folder syncs, per folder (entries no write uses are pruned).
    dir_syncs: Mutex<HashMap<PathBuf, Arc<DirSync>>>,
}

/// An object copied out of the host's call, with its completion.
struct Job {
    key: String,
    content_type: String,
    content_encoding: String,
    record_count: u64,
    oldest_timestamp_ms: i64,
    body: Vec<u8>,
    body_path: Option<String>,
    done: Completion,
}

/// One folder's sync state: changes to its entries (renames into it, folders made in it)
/// counted, syncs covering them.
#[derive(Default)]
struct DirSync {
    state: Mutex<SyncState>,
    changed: Condvar,
}

#[derive(Default)]
struct SyncState {
    /// Renames finished into the folder.
    renamed: u64,
    /// Renames a finished sync covers.
    synced: u64,
    syncing: bool,
}

impl DirSync {
    /// Makes a change to `dir`'s entries (a rename into it, a folder made in it) durable:
    /// returns once a folder sync that started after it has finished — its own, or one
    /// another worker was running meanwhile.
    fn after_change(&self, dir: &Path) -> std::io::Result<()> {
        self.after_change_with(|| sync_dir(dir))
    }

    /// [`DirSync::after_change`] with the sync given (tests count them).
    fn after_change_with(&self, sync: impl Fn() -> std::io::Result<()>) -> std::io::Result<()> {
        let lock = || {
            self.state
                .lock()
                .map_err(|_| std::io::Error::other("folder sync state poisoned"))
        };
        let mut st = lock()?;
        st.renamed += 1;
        let mine = st.renamed;
        loop {
            if st.synced >= mine {
                return Ok(());
            }
            if st.syncing {
                st = self
                    .changed
                    .wait(st)
                    .map_err(|_| std::io::Error::other("folder sync state poisoned"))?;
                continue;
            }
            st.syncing = true;
            let upto = st.renamed;
            drop(st);
            let r = sync();
            st = lock()?;
            st.syncing = false;
            if r.is_ok() {
                st.synced = st.synced.max(upto);
            }
            self.changed.notify_all();
            // A failed sync fails this object (retried by the host); the others waiting
            // try a sync of their own.
            r?;
        }
    }
}

/// Most folders whose sync state is kept while unused.
const MAX_DIR_SYNCS: usize = 1024;

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
        let concurrency = cfg.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(Error::config_field(
                "concurrency",
                format_args!("concurrency must be between 1 and {MAX_CONCURRENCY}"),
            ));
        }
        let target = target(&cfg, |p| ctx.resolve_path(p))?;
        Ok(ObjectStore {
            inner: Arc::new(Inner {
                target,
                known_dirs: Default::default(),
                dir_syncs: Default::default(),
            }),
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
            Target::Dir(root) => std::fs::create_dir_all(&*root)
                .map_err(|e| Error::fatal(format_args!("cannot create {}: {e}", root.display())))?,
            #[cfg(feature = "s3")]
            Target::S3(t) => t.start()?,
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        self.jobs = Some(tx);
        for i in 0..self.concurrency {
            let (rx, inner) = (rx.clone(), self.inner.clone());
            let (in_flight, notifier) = (self.in_flight.clone(), self.notifier.clone());
            let running = self.running.clone();
            if let Ok(mut n) = running.0.lock() {
                *n += 1;
            }
            let spawned = std::thread::Builder::new()
                .name(format!("object-store-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only to take a job, not while writing it.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => break,
                        };
                        let Ok(job) = job else { break };
                        let result = inner.write(&job.object());
                        match result {
                            Ok(()) => job.done.success(),
                            Err(e) => job.done.fail(&e),
                        }
                        in_flight.fetch_sub(1, Ordering::AcqRel);
                        notifier.notify();
                    }
                    if let Ok(mut n) = running.0.lock() {
                        *n -= 1;
                        running.1.notify_all();
                    }
                });
            if let Err(e) = spawned {
                if let Ok(mut n) = self.running.0.lock() {
                    *n -= 1;
                }
                self.shut(std::time::Duration::ZERO);
                return Err(Error::fatal(format_args!(
                    "cannot start a writer thread: {e}"
                )));
            }
        }
        Ok(())
    }

    fn stop(&mut self, deadline: std::time::Duration) -> Result<(), Error> {
        self.shut(deadline);
        Ok(())
    }
}

impl ObjectStore {
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

impl Job {
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

use sluice_plugin_api::fs::sync_dir;

impl Inner {
    /// The sync state of `dir`, shared by the writers into it.
    fn dir_sync(&self, dir: &Path) -> std::io::Result<Arc<DirSync>> {
        let mut syncs = self
            .dir_syncs
            .lock()
            .map_err(|_| std::io::Error::other("folder sync table poisoned"))?;
        if syncs.len() >= MAX_DIR_SYNCS {
            // Bounded: forget the folders no write is using now.
            syncs.retain(|_, s| Arc::strong_count(s) > 1);
        }
        Ok(syncs.entry(dir.to_path_buf()).or_default().clone())
    }

    fn write(&self, obj: &Object<'_>) -> Result<(), Error> {
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
        let known = |d: &Path| self.known_dirs.lock().is_ok_and(|k| k.contains(d));
        if !known(&dir) {
            // New folders are synced into their parents, through the folder group commit.
            sluice_plugin_api::fs::make_dirs(&dir, |parent| {
                self.dir_sync(parent)?.after_change(parent)
            })
            .map_err(|e| io("cannot create the folder of", e))?;
            if let Ok(mut k) = self.known_dirs.lock() {
                if k.len() >= MAX_KNOWN_DIRS {
                    k.clear();
                }
                k.insert(dir.clone());
            }
        }
        let dir_sync = self
            .dir_sync(&dir)
            .map_err(|e| io("cannot sync the folder of", e))?;
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
            dir_sync.after_change(&dir)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            if e.kind() == std::io::ErrorKind::NotFound {
                // The folder went away under us: make it again on the retry.
                if let Ok(mut k) = self.known_dirs.lock() {
                    k.remove(&dir);
                }
            }
            io("cannot write", e)
        })
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
        let job = Job {
            key: obj.key.to_string(),
            content_type: obj.content_type.to_string(),
            content_encoding: obj.content_encoding.to_string(),
            record_count: obj.record_count,
            oldest_timestamp_ms: obj.oldest_timestamp_ms,
            // The host's bytes are borrowed for this call only.
            body: obj.body.to_vec(),
            body_path: obj.body_path.map(str::to_string),
            done,
        };
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

    /// Writers renaming into one folder at the same time share folder syncs, and none
    /// returns before a sync that started after its rename has finished.
    #[test]
    fn folder_syncs_are_group_committed() {
        use std::sync::atomic::AtomicU64;
        let ds = Arc::new(DirSync::default());
        let (started, finished) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (ds, started, finished) = (ds.clone(), started.clone(), finished.clone());
                std::thread::spawn(move || {
                    // The rename happened: every sync started from now on covers it.
                    let syncs_before = started.load(Ordering::SeqCst);
                    ds.after_change_with(|| {
                        started.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        finished.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .unwrap();
                    assert!(
                        finished.load(Ordering::SeqCst) > syncs_before,
                        "returned before a sync that covers the rename finished"
                    );
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let syncs = started.load(Ordering::SeqCst);
        assert!((1..16).contains(&syncs), "{syncs} syncs for 16 renames");
        // A failed sync fails its caller; the next one syncs again.
        let ds = DirSync::default();
        assert!(ds
            .after_change_with(|| Err(std::io::Error::other("disk gone")))
            .is_err());
        assert!(ds.after_change_with(|| Ok(())).is_ok());
    }

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
