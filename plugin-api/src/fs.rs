//! File-system steps a sink needs to survive a power cut, for plugins and the host alike.

use std::path::Path;

/// Creates `dir` and its missing parents and makes every new folder durable: a folder is
/// only as durable as its entry in its parent (on ext4 without a journal, for one, nothing
/// else writes that entry), so each parent that gained one is passed to `sync` — which
/// should `fsync` it, or share a sync with concurrent writers — before this returns.
/// `dir` itself is not synced (its caller syncs it after putting something in it). A
/// folder that exists already costs one `stat`.
pub fn make_dirs(dir: &Path, sync: impl Fn(&Path) -> std::io::Result<()>) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} is a file, not a folder", at.display()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(at);
                match at.parent() {
                    Some(p) if !p.as_os_str().is_empty() => at = p,
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    for d in missing.iter().rev() {
        match std::fs::create_dir(d) {
            // Another writer made it: its entry is synced below all the same.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            r => r?,
        }
    }
    for d in &missing {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync(parent)?;
        }
    }
    Ok(())
}

/// `mkdir -p dir` below `base`, a folder the caller knows to exist (an ancestor of `dir`):
/// the folders between them are made top-down, one `mkdir` each and no `stat` (one that
/// exists already — another writer made it — counts as there). Each parent that gained a
/// folder is passed to `sync`, as in [`make_dirs`]. Returns the folders made. `NotFound`
/// when `base` is gone (the caller's knowledge was stale: use [`make_dirs`] then).
pub fn make_dirs_from(
    base: &Path,
    dir: &Path,
    sync: impl Fn(&Path) -> std::io::Result<()>,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    let invalid = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a folder below {}", dir.display(), base.display()),
        )
    };
    let rel = dir.strip_prefix(base).map_err(|_| invalid())?;
    let mut at = base.to_path_buf();
    let mut made = Vec::new();
    for c in rel.components() {
        match c {
            std::path::Component::Normal(c) => at.push(c),
            _ => return Err(invalid()),
        }
        match std::fs::create_dir(&at) {
            Ok(()) => made.push(at.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    for d in &made {
        if let Some(parent) = d.parent() {
            sync(parent)?;
        }
    }
    Ok(made)
}

/// `fsync` of a folder: makes its entries durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// [`make_dirs`] with each parent synced on its own.
pub fn make_dirs_durable(dir: &Path) -> std::io::Result<()> {
    make_dirs(dir, sync_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Mutex;

    /// Every folder made is synced into its parent; folders that existed cost nothing.
    #[test]
    fn new_folders_are_synced_into_their_parents() {
        let root = std::env::temp_dir().join(format!("sluice-fs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a")).unwrap();
        let synced = Mutex::new(Vec::new());
        let sync = |p: &Path| {
            synced
                .lock()
                .unwrap()
                .push(p.strip_prefix(&root).unwrap().to_path_buf());
            sync_dir(p)
        };
        make_dirs(&root.join("a/b/c/d"), sync).unwrap();
        assert!(root.join("a/b/c/d").is_dir());
        let mut got = synced.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, [PathBuf::from("a"), "a/b".into(), "a/b/c".into()]);
        synced.lock().unwrap().clear();
        make_dirs(&root.join("a/b/c/d"), sync).unwrap();
        assert!(
            synced.lock().unwrap().is_empty(),
            "nothing new, nothing synced"
        );
        std::fs::write(root.join("a/f"), b"").unwrap();
        assert!(make_dirs(&root.join("a/f/g"), sync).is_err());
        // From a known folder: top-down, the same folders made and synced.
        synced.lock().unwrap().clear();
        let made = make_dirs_from(&root.join("a"), &root.join("a/b/x/y"), sync).unwrap();
        assert_eq!(made, [root.join("a/b/x"), root.join("a/b/x/y")]);
        assert!(root.join("a/b/x/y").is_dir());
        let mut got = synced.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, [PathBuf::from("a/b"), "a/b/x".into()]);
        assert!(make_dirs_from(&root.join("a"), &root.join("a/b/x/y"), sync)
            .unwrap()
            .is_empty());
        // A stale base, a file in the way, a path not below the base: errors.
        let gone = make_dirs_from(&root.join("z"), &root.join("z/q"), sync).unwrap_err();
        assert_eq!(gone.kind(), std::io::ErrorKind::NotFound);
        assert!(make_dirs_from(&root.join("a"), &root.join("a/f/g"), sync).is_err());
        assert!(make_dirs_from(&root.join("a/b"), &root.join("a/c"), sync).is_err());
        assert!(make_dirs_from(&root.join("a"), &root.join("a/../b"), sync).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
