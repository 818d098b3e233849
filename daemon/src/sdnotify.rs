//! The systemd notification protocol (`sd_notify`), spoken directly over `$NOTIFY_SOCKET`
//! (no libsystemd): READY, RELOADING (with MONOTONIC_USEC), STOPPING, STATUS and WATCHDOG
//! pings. Without `$NOTIFY_SOCKET` every call is a no-op.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A handle on the service manager's notification socket.
pub struct SdNotify {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl SdNotify {
    /// Reads `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub fn from_env() -> SdNotify {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|p| {
            let p = p.to_str()?.to_string();
            let addr = if let Some(name) = p.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                SocketAddr::from_pathname(&p).ok()?
            };
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, addr))
        });
        SdNotify { target }
    }

    /// Sends one notification (newline-separated `KEY=VALUE` lines); errors are logged.
    pub fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(msg.as_bytes(), addr) {
                tracing::warn!(error = %e, "cannot notify the service manager");
            }
        }
    }

    /// Startup finished.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// A reload starts (systemd ≥ 253 `Type=notify-reload` semantics).
    pub fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    /// Shutdown starts.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=draining pipelines");
    }

    /// The watchdog interval systemd expects pings at (half of `WATCHDOG_USEC`), if any.
    pub fn watchdog_interval() -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.parse::<u32>().ok()? != std::process::id() {
                return None;
            }
        }
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}
