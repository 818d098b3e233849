//! Watches `pipelines_dir` for edits (inotify through `notify`) and turns bursts of file
//! events into single reload triggers. Editors save in many ways — write in place, write a
//! temp file and rename it over, vim's backup-then-write, deletes — so any event touching a
//! visible `*.toml` file counts; hidden files (`.#x.toml`, `.x.toml.swp`) do not.

use notify::{RecursiveMode, Watcher};
use std::path::Path;
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

/// Starts watching `dir`; the receiver yields once per burst of relevant events (after
/// [`DEBOUNCE`] of quiet). The watcher lives as long as the returned guard.
pub fn watch(dir: &Path) -> notify::Result<(notify::RecommendedWatcher, mpsc::Receiver<()>)> {
    let (raw_tx, mut raw_rx) = mpsc::channel::<()>(64);
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) if ev.paths.iter().any(|p| relevant(p)) => {
            // A full channel already means "something changed": dropping is fine.
            let _ = raw_tx.try_send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "watching the pipelines folder failed"),
    })?;
    w.watch(dir, RecursiveMode::NonRecursive)?;
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
}
