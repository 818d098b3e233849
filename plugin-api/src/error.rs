//! Plugin errors and their marshalling into the host-owned `sl_error`.

use crate::ffi;
use std::fmt;
use std::time::Duration;

/// How the host should react to an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Invalid configuration (from `create`).
    Config,
    /// Transient: retry with backoff.
    Retryable,
    /// The instance is broken: its pipeline restarts.
    Fatal,
    /// The call is not supported by this plugin.
    Unsupported,
}

/// An error returned by plugin code.
#[derive(Debug, Clone)]
pub struct Error {
    /// What the host should do.
    pub kind: ErrorKind,
    /// Human-readable message (truncated to 1024 bytes at the boundary).
    pub message: String,
    /// For config errors: the dotted key path the error is about ("batch.max_records").
    pub field: Option<String>,
    /// For retryable errors: how long to wait at least.
    pub retry_after: Option<Duration>,
}

impl Error {
    fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Error {
            kind,
            message: message.to_string(),
            field: None,
            retry_after: None,
        }
    }
    /// A config error.
    pub fn config(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    /// A config error about one key.
    pub fn config_field(field: impl Into<String>, message: impl fmt::Display) -> Self {
        Error {
            field: Some(field.into()),
            ..Self::config(message)
        }
    }
    /// A retryable error.
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Retryable, message)
    }
    /// A fatal error.
    pub fn fatal(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Fatal, message)
    }

    pub(crate) fn status(&self) -> ffi::sl_status {
        match self.kind {
            ErrorKind::Config => ffi::SL_ERR_CONFIG,
            ErrorKind::Retryable => ffi::SL_ERR_RETRYABLE,
            ErrorKind::Fatal => ffi::SL_ERR_FATAL,
            ErrorKind::Unsupported => ffi::SL_ERR_UNSUPPORTED,
        }
    }

    /// Writes this error into `err` (if non-null) and returns its status.
    pub(crate) fn write_to(&self, err: *mut ffi::sl_error) -> ffi::sl_status {
        let status = self.status();
        // SAFETY: the host passes a valid, exclusive sl_error (or null).
        if let Some(e) = unsafe { err.as_mut() } {
            e.code = status;
            e.retry_after_ms = self
                .retry_after
                .map(|d| d.as_millis().min(u32::MAX as u128) as u32)
                .unwrap_or(0);
            e.len = copy_truncated(&self.message, &mut e.msg);
            e.field_len = copy_truncated(self.field.as_deref().unwrap_or(""), &mut e.field);
        }
        status
    }

    pub(crate) fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let msg = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_string()
        };
        Self::new(ErrorKind::Fatal, format_args!("panic: {msg}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

/// Copies `s` into `buf`, truncated on a char boundary; returns the bytes written.
fn copy_truncated(s: &str, buf: &mut [u8]) -> u32 {
    let mut n = s.len().min(buf.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    buf[..n].copy_from_slice(&s.as_bytes()[..n]);
    n as u32
}

/// Reads an `sl_error` written by a plugin (host side helper, also used in tests).
pub fn read_error(err: &ffi::sl_error) -> (String, String) {
    let len = (err.len as usize).min(err.msg.len());
    let flen = (err.field_len as usize).min(err.field.len());
    (
        String::from_utf8_lossy(&err.msg[..len]).into_owned(),
        String::from_utf8_lossy(&err.field[..flen]).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundary() {
        let mut buf = [0u8; 4];
        assert_eq!(copy_truncated("aéé", &mut buf), 3);
        assert_eq!(&buf[..3], "aé".as_bytes());
    }

    #[test]
    fn round_trips_through_sl_error() {
        let mut e = ffi::sl_error::zeroed();
        let st = Error::config_field("rate", "must be > 0").write_to(&mut e);
        assert_eq!(st, ffi::SL_ERR_CONFIG);
        assert_eq!(read_error(&e), ("must be > 0".into(), "rate".into()));
    }
}
