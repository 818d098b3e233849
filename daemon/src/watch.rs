//! Watches `pipelines_dir` and the daemon file for edits (inotify through `notify`) and
//! turns bursts of file events into single reload triggers. Editors save in many ways —
//! write in place, write a temp file and rename it over, vim's backup-then-write, deletes —
//! so every event that can change a file's content counts (create, modify, write-close,
//! rename, delete) on a visible `*.toml` file; hidden files (`.#x.toml`, `.x.toml.swp`) do
//! not. Reads never count: opening or reading a file (a `cat`, a backup job, the reload's
//! own reads) must not start a reload, or one reload would trigger the next forever.

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time after the last event before a reload starts. An editor's save is a burst
/// of events microseconds apart (truncate + write, temp + rename, vim's backup dance), so
/// 50 ms of quiet ends it; a reload caught mid-save at worst sees an invalid file, which
/// changes nothing, and the burst's last event triggers the reload that counts.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

fn relevant(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && name.ends_with(".toml")
}

/// Whether an event of this kind can change what a file holds. Access events (open,
/// read, close after reading) and metadata changes (`touch`, `chmod`) cannot.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// Starts watching `dir` (every visible `*.toml` in it) and `daemon_file`; the receiver
/// yields once per burst of content-changing events (after [`DEBOUNCE`] of quiet). The
/// watchers live as long as the returned guard.
pub fn watch(
    dir: &Path,
    daemon_file: &Path,
) -> notify::Result<(notify::RecommendedWatcher, mpsc::Receiver<()>)> {
    let (raw_tx, mut raw_rx) = mpsc::channel::<()>(64);
    let pipelines: PathBuf = dir.to_path_buf();
    let daemon_name = daemon_file.file_name().map(|n| n.to_os_string());
    let daemon_dir = daemon_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let dd = daemon_dir.clone();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev)
            if changes_content(&ev.kind)
                && ev.paths.iter().any(|p| {
                    (p.parent() == Some(pipelines.as_path()) && relevant(p))
                        || (p.file_name() == daemon_name.as_deref() && p.parent() == Some(&dd))
                }) =>
        {
            // A full channel already means "something changed": dropping is fine.
            let _ = raw_tx.try_send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "watching the configuration files failed"),
    })?;
    w.watch(dir, RecursiveMode::NonRecursive)?;
    if daemon_dir != dir {
        w.watch(&daemon_dir, RecursiveMode::NonRecursive)?;
    }
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Debounce: wait until the burst is over.
            loop {
                match tokio::time::timeout(DEBOUNCE, raw_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let _ = tx.try_send(());
        }
    });
    Ok((w, rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_toml_files_count() {
        assert!(relevant(Path::new("/etc/sluice/pipelines/lake.toml")));
        assert!(!relevant(Path::new("/etc/sluice/pipelines/.lake.toml.swp")));
        assert!(!relevant(Path::new("/etc/sluice/pipelines/lake.toml~")));
        assert!(!relevant(Path::new("/etc/sluice/pipelines/.#lake.toml")));
        assert!(!relevant(Path::new("/etc/sluice/pipelines/4913")));
    }

    #[test]
    fn reads_and_metadata_do_not_count() {
        use notify::event::{CreateKind, MetadataKind, RemoveKind, RenameMode};
        assert!(!changes_content(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Read)));
        assert!(!changes_content(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::Any
        ))));
        assert!(changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
        assert!(changes_content(&EventKind::Remove(RemoveKind::File)));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
    }
}
