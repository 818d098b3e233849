//! Crash points for crash-recovery tests. `SLUICE_FAILPOINTS="name"` (or `"name:N"`, several
//! separated by commas) makes the process kill itself with `SIGKILL` the N-th time (default:
//! the first) it reaches `failpoint("name")` — a real `kill -9` at an exact place (after an
//! upload, before a rename, ...). Without the variable a failpoint is one atomic load.
//! Only with the cargo feature `failpoints` (the test command turns it on): in every other
//! build `failpoint` is an empty inline function and the variable is ignored.

#[cfg(not(feature = "failpoints"))]
/// Does nothing: this build has no failpoints (cargo feature `failpoints` off).
#[inline(always)]
pub fn failpoint(_name: &str) {}

#[cfg(feature = "failpoints")]
pub use armed::failpoint;

#[cfg(feature = "failpoints")]
mod armed {
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
}

#[cfg(all(test, not(feature = "failpoints")))]
mod tests {
    /// A build without the feature ignores the variable: the process lives on.
    #[test]
    fn without_the_feature_an_armed_failpoint_does_nothing() {
        std::env::set_var("SLUICE_FAILPOINTS", "anything:1");
        super::failpoint("anything");
        super::failpoint("anything");
    }
}
