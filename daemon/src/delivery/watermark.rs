//! The acknowledgement watermark: which source batches (ack tokens) may be acked. A batch
//! is released once no open buffer holds any of its records, and batches are released in
//! the order they arrived, so a source's checkpoint never passes an undelivered record.

use std::collections::{BTreeMap, VecDeque};

/// Batches in flight and how many buffers still hold records of each.
#[derive(Debug, Default)]
pub(super) struct Watermark {
    /// token → buffers still holding its records.
    pending: BTreeMap<u64, usize>,
    /// Tokens in arrival order.
    order: VecDeque<u64>,
}

impl Watermark {
    /// A batch arrived whose records went into `buffers` buffers.
    pub(super) fn arrived(&mut self, token: u64, buffers: usize) {
        self.pending.insert(token, buffers);
        self.order.push_back(token);
    }

    /// A buffer holding records of these batches was stored.
    pub(super) fn stored(&mut self, tokens: &[u64]) {
        for t in tokens {
            if let Some(n) = self.pending.get_mut(t) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// The batches that may be acked now, oldest first (removed from the watermark).
    pub(super) fn release(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(&t) = self.order.front() {
            if self.pending.get(&t).copied().unwrap_or(0) > 0 {
                break;
            }
            self.order.pop_front();
            self.pending.remove(&t);
            out.push(t);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_release_in_order_once_every_buffer_is_stored() {
        let mut w = Watermark::default();
        w.arrived(1, 2);
        w.arrived(2, 1);
        w.arrived(3, 0);
        w.stored(&[2]);
        assert!(
            w.release().is_empty(),
            "1 still held: 2 and 3 wait behind it"
        );
        w.stored(&[1]);
        assert!(w.release().is_empty());
        w.stored(&[1]);
        assert_eq!(w.release(), [1, 2, 3]);
        assert!(w.release().is_empty());
    }
}
