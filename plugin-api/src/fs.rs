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
        std::fs::remove_dir_all(&root).unwrap();
    }
}
