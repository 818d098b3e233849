//! The buffer memory budget all pipelines share (`limits.buffer_memory`): allocated bytes
//! counted, one budget per daemon handed to every `Delivery`.

use std::sync::atomic::{AtomicU64, Ordering};

/// The buffer memory budget (`limits.buffer_memory`) that every pipeline's buffers share:
/// one per daemon, handed to each `Delivery` (no process-wide state).
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicU64,
    limit: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, none used.
    pub fn new(limit: u64) -> Self {
        metrics::gauge!("sluice_buffer_memory_limit_bytes").set(limit as f64);
        MemoryBudget {
            used: AtomicU64::new(0),
            limit: AtomicU64::new(limit),
        }
    }

    /// Bytes counted now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    pub(super) fn add(&self, n: u64) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn sub(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}
