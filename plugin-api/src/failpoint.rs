//! Crash points for crash-recovery tests. `SLUICE_FAILPOINTS="name"` (or `"name:N"`, several
//! separated by commas) makes the process kill itself with `SIGKILL` the N-th time (default:
//! the first) it reaches `failpoint("name")` — a real `kill -9` at an exact place (after an
//! upload, before a rename, ...). Without the variable a failpoint is one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static POINTS: OnceLock<Vec<(String, AtomicU64)>> = OnceLock::new();

fn points() -> &'static [(String, AtomicU64)] {
    POINTS.get_or_init(|| {
        std::env::var("SLUICE_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| match s.split_once(':') {
                Some((n, k)) => (n.to_string(), AtomicU64::new(k.parse().unwrap_or(1))),
                None => (s.to_string(), AtomicU64::new(1)),
            })
            .collect()
    })
}

/// Kills the process (`SIGKILL`) if `name` is armed in `SLUICE_FAILPOINTS` and this is the
/// hit it waits for.
pub fn failpoint(name: &str) {
    for (n, left) in points() {
        if n == name && left.fetch_sub(1, Ordering::SeqCst) == 1 {
            eprintln!("failpoint {name}: killing the process");
            // SAFETY: getpid/kill have no preconditions.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}
