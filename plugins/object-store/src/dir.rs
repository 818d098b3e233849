//! Durable object writes into a local folder. Each object is written under a hidden temp
//! name in its folder and renamed into place (readers never see a partial object), then
//! handed to the **committer**, which completes it once a sync covers it: a group commit
//! that takes every object renamed meanwhile and makes them durable together — either one
//! `syncfs` of the lake's filesystem for the lot, or each object's file and each folder it
//! changed `fsync`ed once. Which one is `sync` (`auto`: `syncfs` once the group would
//! need [`AUTO_MIN_SYNCS`] `fsync`s — its files plus the distinct folders they changed, a
//! new partition's object ~7 — as when thousands of partitions flush at once; on ext4
//! one `syncfs` writes the inode table blocks and flushes the device once). An object is completed only after its sync returned, so a stored object
//! survives a power cut; one renamed but not yet synced may be torn after one, and is
//! rewritten under the same name by the host's replay (it was never confirmed).

use sluice_plugin_api::fs::sync_dir;
use sluice_plugin_api::{Error, Object};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
#[cfg(unix)]
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Condvar, Mutex};

/// How the committer makes a group of objects durable (`sync` option).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// `syncfs` for groups that need at least [`AUTO_MIN_SYNCS`] `fsync`s, else those.
    Auto,
    /// Every object's file `fsync`ed, every folder it changed `fsync`ed (once per group).
    Object,
    /// One `syncfs` of the lake's filesystem per group.
    Filesystem,
}

impl SyncMode {
    /// Parses the `sync` option.
    pub fn parse(s: &str) -> Option<SyncMode> {
        match s {
            "auto" => Some(SyncMode::Auto),
            "object" => Some(SyncMode::Object),
            "filesystem" => Some(SyncMode::Filesystem),
            _ => None,
        }
    }
}

/// Fewest `fsync`s (files plus distinct folders) a group needs for `auto` to commit it
/// with one `syncfs` instead: below it, a few `fsync`s risk less than writing back
/// everything dirty on the filesystem.
pub const AUTO_MIN_SYNCS: usize = 16;

/// Most objects renamed and waiting for their sync; writers wait past it.
pub const MAX_PENDING: usize = 1024;

/// Most folders remembered; past it the set starts over (a cache, not a record).
const MAX_KNOWN_DIRS: usize = 65_536;

/// Called once with the object's outcome.
pub type Done = Box<dyn FnOnce(Result<(), Error>) + Send>;

/// A lake folder and its committer's queue.
pub struct DirTarget {
    root: PathBuf,
    mode: SyncMode,
    /// The root folder, kept open for `syncfs`, and the device it is on.
    root_fd: Option<File>,
    root_dev: u64,
    /// Folders known to exist, and whether each is on the root's filesystem (only then
    /// does a `syncfs` of the root cover it). Saves a `mkdir -p` per object.
    known_dirs: Mutex<HashMap<PathBuf, bool>>,
    queue: Mutex<Queue>,
    /// Signalled when objects are queued or the last writer leaves (to the committer), and
    /// when the committer takes a group (to writers waiting for room).
    changed: Condvar,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    /// Writers that may still queue objects; the committer ends at 0 with nothing left.
    writers: usize,
}

/// An object renamed into place, waiting for its sync.
struct Pending {
    path: PathBuf,
    /// Folders whose entries it changed: its own, and the parents of folders made for it.
    dirs: Vec<PathBuf>,
    /// Whether a `syncfs` of the root covers it.
    on_root_fs: bool,
    done: Done,
}

/// Why a key is refused: it would leave the root.
pub fn safe_key(key: &str) -> Option<PathBuf> {
    let p = Path::new(key);
    let ok = !key.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| p.to_path_buf())
}

impl DirTarget {
    /// A target writing under `root` (created if missing).
    pub fn new(root: PathBuf, mode: SyncMode) -> DirTarget {
        DirTarget {
            root,
            mode,
            root_fd: None,
            root_dev: 0,
            known_dirs: Default::default(),
            queue: Default::default(),
            changed: Condvar::new(),
        }
    }

    /// Creates the root folder and opens it for `syncfs`.
    pub fn open(&mut self) -> std::io::Result<()> {
        sluice_plugin_api::fs::make_dirs_durable(&self.root)?;
        let fd = File::open(&self.root)?;
        #[cfg(unix)]
        {
            self.root_dev = fd.metadata()?.dev();
        }
        self.root_fd = Some(fd);
        Ok(())
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Counts a writer thread that will call [`DirTarget::write`]; each calls
    /// [`DirTarget::writer_done`] once when it ends.
    pub fn add_writer(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.writers += 1;
        }
    }

    /// A writer has ended; the committer stops once none is left and nothing waits.
    pub fn writer_done(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.writers = q.writers.saturating_sub(1);
        }
        self.changed.notify_all();
    }

    /// Writes `obj` and renames it into place, then queues it for the committer, which
    /// calls `done` once it is durable. An error before queueing is returned (and `done`
    /// not called).
    pub fn write(&self, obj: &Object<'_>, done: Done) -> Result<(), (Error, Done)> {
        let Some(rel) = safe_key(obj.key) else {
            let e = Error::fatal(format_args!("refusing unsafe object key `{}`", obj.key));
            return Err((e, done));
        };
        let path = self.root.join(&rel);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let io = |what: &str, e: std::io::Error| {
            Error::retryable(format_args!("{what} {}: {e}", path.display()))
        };
        let mut dirs = vec![dir.clone()];
        let on_root_fs = match self
            .known_dirs
            .lock()
            .ok()
            .and_then(|k| k.get(&dir).copied())
        {
            Some(same) => same,
            None => match self.make_dir(&dir, &mut dirs) {
                Ok(same) => same,
                Err(e) => return Err((io("cannot create the folder of", e), done)),
            },
        };
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
            sluice_plugin_api::failpoint("object-store-mid-upload");
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            if e.kind() == std::io::ErrorKind::NotFound {
                // The folder went away under us: make it again on the retry.
                if let Ok(mut k) = self.known_dirs.lock() {
                    k.remove(&dir);
                }
            }
            return Err((io("cannot write", e), done));
        }
        let pending = Pending {
            path,
            dirs,
            on_root_fs,
            done,
        };
        let mut q = match self.queue.lock() {
            Ok(q) => q,
            Err(_) => {
                return Err((
                    Error::retryable("object-store queue poisoned"),
                    pending.done,
                ))
            }
        };
        while q.pending.len() >= MAX_PENDING {
            q = match self.changed.wait(q) {
                Ok(q) => q,
                Err(_) => {
                    return Err((
                        Error::retryable("object-store queue poisoned"),
                        pending.done,
                    ))
                }
            };
        }
        q.pending.push(pending);
        drop(q);
        self.changed.notify_all();
        Ok(())
    }

    /// `mkdir -p dir`, noting in `dirs` the parents that gained a folder (they need a
    /// sync too), and remembering `dir` and those parents. Returns whether `dir` is on
    /// the root's filesystem. Below a folder already known (another partition's), the
    /// new folders are made top-down with no `stat` walk — at thousands of new partitions
    /// per flush, the walk was a tenth of the folders' cost — and are on that folder's
    /// filesystem (a folder just made is no mount point).
    fn make_dir(&self, dir: &Path, dirs: &mut Vec<PathBuf>) -> std::io::Result<bool> {
        let gained = std::cell::RefCell::new(Vec::new());
        let note = |parent: &Path| {
            gained.borrow_mut().push(parent.to_path_buf());
            Ok(())
        };
        let base = self.known_dirs.lock().ok().and_then(|k| {
            dir.ancestors()
                .skip(1)
                .take_while(|a| a.starts_with(&self.root))
                .find_map(|a| k.get(a).map(|same| (a.to_path_buf(), *same)))
        });
        let from_base = match base {
            Some((base, same)) => match sluice_plugin_api::fs::make_dirs_from(&base, dir, note) {
                Ok(_) => Some(same),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Removed under us: forgotten, and made the long way.
                    if let Ok(mut k) = self.known_dirs.lock() {
                        k.clear();
                    }
                    gained.borrow_mut().clear();
                    None
                }
                Err(e) => return Err(e),
            },
            None => None,
        };
        let same = match from_base {
            Some(same) => same,
            None => {
                sluice_plugin_api::fs::make_dirs(dir, note)?;
                #[cfg(unix)]
                let same = std::fs::metadata(dir)?.dev() == self.root_dev;
                #[cfg(not(unix))]
                let same = false;
                same
            }
        };
        let gained = gained.into_inner();
        if let Ok(mut k) = self.known_dirs.lock() {
            if k.len() + gained.len() >= MAX_KNOWN_DIRS {
                k.clear();
            }
            // The parents that gained a folder are on `dir`'s filesystem too: the folders
            // made below them lead to it.
            for p in gained.iter().filter(|p| p.starts_with(&self.root)) {
                k.insert(p.clone(), same);
            }
            k.insert(dir.to_path_buf(), same);
        }
        dirs.extend(gained);
        Ok(same)
    }

    /// The committer: until the last writer has left and nothing waits, takes every
    /// object queued, syncs them as one group and completes them; `after_group` runs
    /// after each group (the sink wakes the host there).
    pub fn run_committer(&self, after_group: impl Fn()) {
        loop {
            let group = {
                let Ok(mut q) = self.queue.lock() else { return };
                while q.pending.is_empty() && q.writers > 0 {
                    q = match self.changed.wait(q) {
                        Ok(q) => q,
                        Err(_) => return,
                    };
                }
                if q.pending.is_empty() {
                    return;
                }
                std::mem::take(&mut q.pending)
            };
            self.changed.notify_all();
            self.commit(group, &sync_dir, &syncfs);
            after_group();
        }
    }

    /// Makes `group` durable with the syncs given (tests count them) and completes each.
    fn commit(
        &self,
        group: Vec<Pending>,
        sync_dir: &dyn Fn(&Path) -> std::io::Result<()>,
        syncfs: &dyn Fn(&File) -> std::io::Result<()>,
    ) {
        let whole_fs = match self.mode {
            SyncMode::Filesystem => true,
            SyncMode::Object => false,
            SyncMode::Auto => {
                let folders: HashSet<&Path> = group
                    .iter()
                    .flat_map(|p| p.dirs.iter().map(PathBuf::as_path))
                    .collect();
                group.len() + folders.len() >= AUTO_MIN_SYNCS
            }
        };
        let fs_result = match (&self.root_fd, whole_fs) {
            (Some(fd), true) => Some(syncfs(fd).map_err(|e| {
                Error::retryable(format_args!(
                    "cannot sync the filesystem of {}: {e}",
                    self.root.display()
                ))
            })),
            _ => None,
        };
        let covered = |p: &Pending| p.on_root_fs && fs_result.is_some();
        // Per-object syncs for what the `syncfs` does not cover: files first, then each
        // folder once for the whole group.
        let mut file_results = Vec::with_capacity(group.len());
        let mut folders = HashSet::new();
        for p in &group {
            if covered(p) {
                file_results.push(Ok(()));
                continue;
            }
            let r = File::open(&p.path).and_then(|f| f.sync_all());
            if r.is_ok() {
                folders.extend(p.dirs.iter().map(PathBuf::as_path));
            }
            file_results.push(r.map_err(|e| {
                Error::retryable(format_args!("cannot sync {}: {e}", p.path.display()))
            }));
        }
        let folder_results: HashMap<&Path, Result<(), Error>> = folders
            .into_iter()
            .map(|d| {
                let r = sync_dir(d).map_err(|e| {
                    Error::retryable(format_args!("cannot sync folder {}: {e}", d.display()))
                });
                (d, r)
            })
            .collect();
        let results: Vec<Result<(), Error>> = group
            .iter()
            .zip(file_results)
            .map(|(p, file)| {
                if covered(p) {
                    return fs_result.clone().unwrap_or(Ok(()));
                }
                file.and_then(|()| {
                    p.dirs
                        .iter()
                        .find_map(|d| match folder_results.get(d.as_path()) {
                            Some(Err(e)) => Some(Err(e.clone())),
                            _ => None,
                        })
                        .unwrap_or(Ok(()))
                })
            })
            .collect();
        drop(folder_results);
        for (p, r) in group.into_iter().zip(results) {
            if r.is_err() {
                // Made again (and synced into its parent) on the retry.
                if let (Some(d), Ok(mut k)) = (p.dirs.first(), self.known_dirs.lock()) {
                    k.remove(d);
                }
            }
            (p.done)(r);
        }
    }
}

/// `syncfs(2)`: every dirty page, inode and folder entry of `fd`'s filesystem written
/// and the device cache flushed, once. (Linux reports write-back errors of the
/// filesystem since `fd` was opened.)
#[cfg(target_os = "linux")]
fn syncfs(fd: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; syncfs reads nothing from user memory.
    if unsafe { libc::syncfs(fd.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn syncfs(_fd: &File) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "syncfs is Linux only; use sync = \"object\"",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};

    fn object<'a>(key: &'a str, body: &'a [u8]) -> Object<'a> {
        Object {
            key,
            content_type: "application/octet-stream",
            content_encoding: "",
            record_count: 1,
            oldest_timestamp_ms: 0,
            body,
            body_path: None,
        }
    }

    fn target(mode: SyncMode) -> (PathBuf, DirTarget) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "sluice-dir-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let mut t = DirTarget::new(root.clone(), mode);
        t.open().unwrap();
        (root, t)
    }

    type Outcomes = mpsc::Receiver<(String, Result<(), Error>)>;

    /// Writes `keys` (not committed: the group is taken out of the queue and returned).
    fn write_all(t: &DirTarget, keys: &[String]) -> (Vec<Pending>, Outcomes) {
        let (tx, rx) = mpsc::channel();
        for k in keys {
            let (tx, key) = (tx.clone(), k.clone());
            let done: Done = Box::new(move |r| tx.send((key, r)).unwrap());
            t.write(&object(k, k.as_bytes()), done)
                .map_err(|(e, _)| e)
                .unwrap();
        }
        (std::mem::take(&mut t.queue.lock().unwrap().pending), rx)
    }

    /// Counting syncs: (folders synced, `syncfs` calls).
    struct Syncs {
        folders: Mutex<Vec<PathBuf>>,
        whole: AtomicUsize,
        fail_folder: Option<PathBuf>,
        fail_whole: bool,
    }

    impl Syncs {
        fn new() -> Syncs {
            Syncs {
                folders: Default::default(),
                whole: AtomicUsize::new(0),
                fail_folder: None,
                fail_whole: false,
            }
        }
        fn commit(&self, t: &DirTarget, group: Vec<Pending>) {
            let sync_dir = |d: &Path| {
                self.folders.lock().unwrap().push(d.to_path_buf());
                if self.fail_folder.as_deref() == Some(d) {
                    return Err(std::io::Error::other("folder sync failed"));
                }
                Ok(())
            };
            let syncfs = |_: &File| {
                self.whole.fetch_add(1, Ordering::SeqCst);
                if self.fail_whole {
                    return Err(std::io::Error::other("syncfs failed"));
                }
                Ok(())
            };
            t.commit(group, &sync_dir, &syncfs);
        }
    }

    /// Below the `auto` threshold (3 files + 3 folders) each object's folder — and each
    /// parent that gained a folder — is synced, once per group however many objects went
    /// in; from the threshold on one `syncfs` covers the group and no folder is synced on
    /// its own.
    #[test]
    fn auto_syncs_small_groups_per_object_and_large_ones_by_filesystem() {
        let (root, t) = target(SyncMode::Auto);
        let keys: Vec<String> = (0..3).map(|i| format!("type=a/source=b/o{i}")).collect();
        let (group, rx) = write_all(&t, &keys);
        let syncs = Syncs::new();
        syncs.commit(&t, group);
        assert_eq!(syncs.whole.load(Ordering::SeqCst), 0);
        let mut folders = syncs.folders.lock().unwrap().clone();
        folders.sort();
        let want: Vec<PathBuf> = vec![
            root.clone(),
            root.join("type=a"),
            root.join("type=a/source=b"),
        ];
        assert_eq!(folders, want, "each changed folder synced once");
        for _ in 0..3 {
            let (key, r) = rx.try_recv().unwrap();
            assert!(r.is_ok(), "{key}: {r:?}");
            assert_eq!(std::fs::read(root.join(&key)).unwrap(), key.as_bytes());
        }

        let keys: Vec<String> = (0..AUTO_MIN_SYNCS)
            .map(|i| format!("type=c/source=d{i}/o"))
            .collect();
        let (group, rx) = write_all(&t, &keys);
        let syncs = Syncs::new();
        syncs.commit(&t, group);
        assert_eq!(syncs.whole.load(Ordering::SeqCst), 1);
        assert!(syncs.folders.lock().unwrap().is_empty());
        assert_eq!(
            rx.try_iter().filter(|(_, r)| r.is_ok()).count(),
            AUTO_MIN_SYNCS
        );
        let left: Vec<_> = std::fs::read_dir(root.join("type=c/source=d0"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["o"], "no temp file left");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// `object` never uses `syncfs`; `filesystem` always does, even for one object.
    #[test]
    fn fixed_modes_keep_to_their_sync() {
        let (root, t) = target(SyncMode::Object);
        let keys: Vec<String> = (0..AUTO_MIN_SYNCS).map(|i| format!("p{i}/o")).collect();
        let (group, _rx) = write_all(&t, &keys);
        let syncs = Syncs::new();
        syncs.commit(&t, group);
        assert_eq!(syncs.whole.load(Ordering::SeqCst), 0);
        // The root gained 16 folders (synced once), and each folder gained its object.
        assert_eq!(syncs.folders.lock().unwrap().len(), AUTO_MIN_SYNCS + 1);
        std::fs::remove_dir_all(&root).unwrap();

        let (root, t) = target(SyncMode::Filesystem);
        let (group, _rx) = write_all(&t, &["p/o".to_string()]);
        let syncs = Syncs::new();
        syncs.commit(&t, group);
        assert_eq!(syncs.whole.load(Ordering::SeqCst), 1);
        assert!(syncs.folders.lock().unwrap().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A failed `syncfs` fails every object of its group; a failed folder sync fails
    /// only the objects that changed that folder. Failures are retryable.
    #[test]
    fn a_failed_sync_fails_exactly_the_objects_it_should_have_covered() {
        let (root, t) = target(SyncMode::Filesystem);
        let keys: Vec<String> = (0..4).map(|i| format!("p/o{i}")).collect();
        let (group, rx) = write_all(&t, &keys);
        let mut syncs = Syncs::new();
        syncs.fail_whole = true;
        syncs.commit(&t, group);
        let outcomes: Vec<_> = rx.try_iter().collect();
        assert_eq!(outcomes.len(), 4);
        for (_, r) in &outcomes {
            let e = r.as_ref().unwrap_err();
            assert!(e.to_string().contains("cannot sync the filesystem"), "{e}");
            assert_eq!(e.kind, sluice_plugin_api::ErrorKind::Retryable);
        }
        std::fs::remove_dir_all(&root).unwrap();

        let (root, t) = target(SyncMode::Object);
        let keys = ["a/o".to_string(), "b/o".to_string()];
        let (group, rx) = write_all(&t, &keys);
        let mut syncs = Syncs::new();
        syncs.fail_folder = Some(root.join("a"));
        syncs.commit(&t, group);
        let mut outcomes: Vec<_> = rx.try_iter().collect();
        outcomes.sort_by(|a, b| a.0.cmp(&b.0));
        assert!(outcomes[0].1.is_err(), "a/o's folder sync failed");
        assert!(outcomes[1].1.is_ok(), "b/o is not in that folder");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Writers and the committer on their threads: every object is confirmed once,
    /// written in full, and the committer ends when the writers have left.
    #[test]
    fn the_committer_confirms_every_object_of_concurrent_writers() {
        for mode in [SyncMode::Auto, SyncMode::Object, SyncMode::Filesystem] {
            let (root, t) = target(mode);
            let t = Arc::new(t);
            (0..4).for_each(|_| t.add_writer());
            let committer = {
                let t = t.clone();
                std::thread::spawn(move || t.run_committer(|| {}))
            };
            let (tx, rx) = mpsc::channel();
            let writers: Vec<_> = (0..4)
                .map(|w| {
                    let (t, tx) = (t.clone(), tx.clone());
                    std::thread::spawn(move || {
                        for i in 0..50 {
                            let key = format!("w={w}/k={}/o{i}", i % 7);
                            let (tx, k) = (tx.clone(), key.clone());
                            let done: Done = Box::new(move |r| tx.send((k, r)).unwrap());
                            t.write(&object(&key, key.as_bytes()), done)
                                .map_err(|(e, _)| e)
                                .unwrap();
                        }
                        t.writer_done();
                    })
                })
                .collect();
            drop(tx);
            writers.into_iter().for_each(|w| w.join().unwrap());
            committer.join().unwrap();
            let outcomes: Vec<_> = rx.iter().collect();
            assert_eq!(outcomes.len(), 200, "{mode:?}");
            for (key, r) in outcomes {
                assert!(r.is_ok(), "{mode:?} {key}: {r:?}");
                assert_eq!(std::fs::read(root.join(&key)).unwrap(), key.as_bytes());
            }
            std::fs::remove_dir_all(&root).unwrap();
        }
    }

    /// An object on another filesystem than the root's (a mount or symlink under the
    /// lake) is not covered by the root's `syncfs`: its file and folders are synced on
    /// their own, even in `filesystem` mode.
    #[test]
    fn objects_off_the_roots_filesystem_get_their_own_syncs() {
        let (root, t) = target(SyncMode::Filesystem);
        let (mut group, rx) = write_all(&t, &["a/o".to_string(), "b/o".to_string()]);
        assert!(
            group.iter().all(|p| p.on_root_fs),
            "same filesystem as the root"
        );
        group[0].on_root_fs = false;
        let syncs = Syncs::new();
        syncs.commit(&t, group);
        assert_eq!(syncs.whole.load(Ordering::SeqCst), 1);
        let mut folders = syncs.folders.lock().unwrap().clone();
        folders.sort();
        assert_eq!(
            folders,
            [root.clone(), root.join("a")],
            "only a/o's folders"
        );
        assert_eq!(rx.try_iter().filter(|(_, r)| r.is_ok()).count(), 2);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// At most [`MAX_PENDING`] objects wait for their sync: the next writer waits until
    /// the committer takes them, then all are confirmed.
    #[test]
    fn writers_wait_when_the_sync_queue_is_full() {
        let (root, t) = target(SyncMode::Filesystem);
        let t = Arc::new(t);
        t.add_writer();
        let (tx, rx) = mpsc::channel();
        let writer = {
            let t = t.clone();
            std::thread::spawn(move || {
                for i in 0..=MAX_PENDING {
                    let key = format!("p/o{i}");
                    let tx = tx.clone();
                    let done: Done = Box::new(move |r| tx.send(r).unwrap());
                    t.write(&object(&key, b"x"), done)
                        .map_err(|(e, _)| e)
                        .unwrap();
                }
                t.writer_done();
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while t.queue.lock().unwrap().pending.len() < MAX_PENDING {
            assert!(
                std::time::Instant::now() < deadline,
                "the queue never filled"
            );
            std::thread::yield_now();
        }
        // Full, and nothing takes from it: the last write cannot have been queued.
        assert!(!writer.is_finished(), "a writer went past a full queue");
        assert_eq!(t.queue.lock().unwrap().pending.len(), MAX_PENDING);
        t.run_committer(|| {});
        writer.join().unwrap();
        let outcomes: Vec<_> = rx.iter().collect();
        assert_eq!(outcomes.len(), MAX_PENDING + 1);
        assert!(outcomes.iter().all(Result::is_ok));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn unsafe_keys_are_refused_before_anything_is_written() {
        let (root, t) = target(SyncMode::Auto);
        let done: Done = Box::new(|_| panic!("not queued"));
        let (e, _) = t.write(&object("../x", b""), done).err().unwrap();
        assert!(e.to_string().contains("unsafe object key"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
