//! The stream-storage seam: where one shard's records live. The Kinesis API, the bundled
//! `stream` plugins, retention and telemetry reach a shard's records only through
//! [`ShardStorage`]; the local shard log (`sluice-shardlog`) is its first implementation,
//! and a clustered engine (NATS JetStream, issue #12: one subject per shard) is meant to be
//! the second. Everything else about a stream — routing by hash key, write limits, settings,
//! consumer positions — stays above this seam and is shared by every storage.

pub use sluice_shardlog::{Entry, StoredRecord};

/// A storage failure, as the storage words it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The shard's stream was deleted while the call was on its way.
    #[error("the stream was deleted")]
    Retired,
    /// The local shard log.
    #[error(transparent)]
    Log(sluice_shardlog::Error),
    /// The JetStream cluster refused, failed or did not answer in time (retryable).
    #[error("{0}")]
    Cluster(String),
    /// Another writer (another sluiced node) appended to the shard first: nothing of this
    /// append was stored, and the same records may be appended again at once.
    #[error("another writer appended to the shard first; nothing was stored")]
    Conflict,
    /// The shard takes no more records: another node closed it in a resharding (nothing
    /// of this append was stored). Its stream's topology says where the records go now.
    #[error("the shard was closed by a resharding on another node; nothing was stored")]
    Closed,
    /// The first `stored` records of the append were stored (numbered from its first
    /// sequence), the rest refused: another writer appended in between (append them
    /// again), or — `sealed` — the shard was closed meanwhile (route them again).
    #[error("{stored} records of the append were stored, the rest refused ({})", if *.sealed { "the shard was closed by a resharding" } else { "another writer appended in between" })]
    Partial {
        /// How many records, from the first, were stored.
        stored: usize,
        /// The rest was refused because the shard was sealed.
        sealed: bool,
    },
}

impl From<sluice_shardlog::Error> for StorageError {
    fn from(e: sluice_shardlog::Error) -> Self {
        match e {
            sluice_shardlog::Error::Retired => StorageError::Retired,
            e => StorageError::Log(e),
        }
    }
}

/// One shard's records: append-only, numbered by a shard-local sequence that never goes
/// back and is never reused, readable from any sequence still held.
pub trait ShardStorage: Send + Sync {
    /// Appends records in order (durable on return, per the stream's fsync policy);
    /// returns the first sequence number given and each record's arrival time.
    fn append(&self, entries: &[Entry<'_>]) -> Result<(u64, Vec<i64>), StorageError> {
        let a = self.append_unsynced(entries)?;
        self.commit(a.commit)?;
        Ok((a.first, a.arrivals))
    }
    /// The first half of [`ShardStorage::append`]: the records are numbered and written,
    /// durable only after [`ShardStorage::commit`] of `commit`. One writer to several
    /// shards writes to all, then commits all: the syncs overlap instead of queueing.
    fn append_unsynced(&self, entries: &[Entry<'_>]) -> Result<Appended, StorageError>;
    /// A hint that commits follow: start making the appends durable now.
    fn start_sync(&self) {}
    /// Makes the append that returned `commit` durable (per the fsync policy).
    fn commit(&self, commit: u64) -> Result<(), StorageError>;
    /// The local shard log behind it, if any: several of them can share one filesystem
    /// sync ([`sluice_shardlog::FsSync`]).
    fn shard_log(&self) -> Option<&sluice_shardlog::ShardLog> {
        None
    }
    /// At most `max_records` records from sequence `from` on (or from the oldest one
    /// still held), at most `max_bytes` of data unless the first record alone is larger.
    fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, StorageError>;
    /// The sequence of the first record that arrived at or after `ts_ms` (the next
    /// sequence when none did).
    fn seek_timestamp(&self, ts_ms: i64) -> Result<u64, StorageError>;
    /// The oldest sequence still held (the trim horizon).
    fn first_seq(&self) -> u64;
    /// The sequence the next append gets.
    fn next_seq(&self) -> u64;
    /// The newest record's sequence, if any record was ever appended.
    fn last_seq(&self) -> Option<u64>;
    /// Records held.
    fn records(&self) -> u64;
    /// Bytes held.
    fn total_bytes(&self) -> u64;
    /// Arrival times of the oldest and newest records held.
    fn arrival_range(&self) -> Option<(i64, i64)>;
    /// Makes every append so far durable (interval fsync).
    fn sync(&self) -> Result<(), StorageError>;
    /// Drops what arrived before `cutoff_ms`, and the oldest records past `max_bytes`.
    fn enforce_retention(
        &self,
        cutoff_ms: i64,
        max_bytes: Option<u64>,
    ) -> Result<usize, StorageError>;
    /// Refuses every later append (the stream is being deleted).
    fn retire(&self);
    /// Takes appends again after [`ShardStorage::retire`] (a deletion that failed).
    fn unretire(&self);
    /// A clean stop: durable, and numbering resumes exactly after a restart.
    fn close(&self) -> Result<(), StorageError>;
    /// Closes the shard to appends for good (a resharding made it a parent) and returns
    /// the sequence the next append would have got: the exact end of its records. A
    /// storage only this node writes is closed by its caller's gate already; a shared one
    /// must refuse every node's appends from here on.
    fn seal(&self) -> Result<u64, StorageError> {
        Ok(self.next_seq())
    }
}

/// Records an [`ShardStorage::append_unsynced`] wrote.
#[derive(Debug)]
pub struct Appended {
    /// Sequence number of the first record.
    pub first: u64,
    /// Arrival time given to each record.
    pub arrivals: Vec<i64>,
    /// What to hand [`ShardStorage::commit`].
    pub commit: u64,
}

impl ShardStorage for sluice_shardlog::ShardLog {
    fn append(&self, entries: &[Entry<'_>]) -> Result<(u64, Vec<i64>), StorageError> {
        Ok(sluice_shardlog::ShardLog::append(self, entries)?)
    }
    fn append_unsynced(&self, entries: &[Entry<'_>]) -> Result<Appended, StorageError> {
        let w = sluice_shardlog::ShardLog::append_unsynced(self, entries)?;
        Ok(Appended {
            first: w.first,
            arrivals: w.arrivals,
            commit: w.end,
        })
    }
    fn start_sync(&self) {
        sluice_shardlog::ShardLog::start_sync(self)
    }
    fn commit(&self, commit: u64) -> Result<(), StorageError> {
        Ok(sluice_shardlog::ShardLog::commit(self, commit)?)
    }
    fn shard_log(&self) -> Option<&sluice_shardlog::ShardLog> {
        Some(self)
    }
    fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        Ok(sluice_shardlog::ShardLog::read(
            self,
            from,
            max_records,
            max_bytes,
        )?)
    }
    fn seek_timestamp(&self, ts_ms: i64) -> Result<u64, StorageError> {
        Ok(sluice_shardlog::ShardLog::seek_timestamp(self, ts_ms)?)
    }
    fn first_seq(&self) -> u64 {
        sluice_shardlog::ShardLog::first_seq(self)
    }
    fn next_seq(&self) -> u64 {
        sluice_shardlog::ShardLog::next_seq(self)
    }
    fn last_seq(&self) -> Option<u64> {
        sluice_shardlog::ShardLog::last_seq(self)
    }
    fn records(&self) -> u64 {
        sluice_shardlog::ShardLog::records(self)
    }
    fn total_bytes(&self) -> u64 {
        sluice_shardlog::ShardLog::total_bytes(self)
    }
    fn arrival_range(&self) -> Option<(i64, i64)> {
        sluice_shardlog::ShardLog::arrival_range(self)
    }
    fn sync(&self) -> Result<(), StorageError> {
        Ok(sluice_shardlog::ShardLog::sync(self)?)
    }
    fn enforce_retention(
        &self,
        cutoff_ms: i64,
        max_bytes: Option<u64>,
    ) -> Result<usize, StorageError> {
        Ok(sluice_shardlog::ShardLog::enforce_retention(
            self, cutoff_ms, max_bytes,
        )?)
    }
    fn retire(&self) {
        sluice_shardlog::ShardLog::retire(self)
    }
    fn unretire(&self) {
        sluice_shardlog::ShardLog::unretire(self)
    }
    fn close(&self) -> Result<(), StorageError> {
        Ok(sluice_shardlog::ShardLog::close(self)?)
    }
}

/// A storage whose numbers start at `base` instead of 0: the shards of a stream made
/// through the API on JetStream under a deleted stream's name (JetStream numbers every new
/// stream from 1), so that they number above everything the deleted one issued, as the
/// shard log's floor does on one node.
pub struct Based {
    inner: Box<dyn ShardStorage>,
    base: u64,
}

impl Based {
    /// `inner`, numbered from `base`.
    pub fn new(inner: Box<dyn ShardStorage>, base: u64) -> Based {
        Based { inner, base }
    }
}

impl ShardStorage for Based {
    fn append_unsynced(&self, entries: &[Entry<'_>]) -> Result<Appended, StorageError> {
        let mut a = self.inner.append_unsynced(entries)?;
        a.first += self.base;
        Ok(a)
    }
    fn start_sync(&self) {
        self.inner.start_sync()
    }
    fn commit(&self, commit: u64) -> Result<(), StorageError> {
        self.inner.commit(commit)
    }
    fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        let mut out = self
            .inner
            .read(from.saturating_sub(self.base), max_records, max_bytes)?;
        for r in &mut out {
            r.seq += self.base;
        }
        Ok(out)
    }
    fn seek_timestamp(&self, ts_ms: i64) -> Result<u64, StorageError> {
        Ok(self.inner.seek_timestamp(ts_ms)? + self.base)
    }
    fn first_seq(&self) -> u64 {
        self.inner.first_seq() + self.base
    }
    fn next_seq(&self) -> u64 {
        self.inner.next_seq() + self.base
    }
    fn last_seq(&self) -> Option<u64> {
        self.inner.last_seq().map(|s| s + self.base)
    }
    fn records(&self) -> u64 {
        self.inner.records()
    }
    fn total_bytes(&self) -> u64 {
        self.inner.total_bytes()
    }
    fn arrival_range(&self) -> Option<(i64, i64)> {
        self.inner.arrival_range()
    }
    fn sync(&self) -> Result<(), StorageError> {
        self.inner.sync()
    }
    fn enforce_retention(
        &self,
        cutoff_ms: i64,
        max_bytes: Option<u64>,
    ) -> Result<usize, StorageError> {
        self.inner.enforce_retention(cutoff_ms, max_bytes)
    }
    fn retire(&self) {
        self.inner.retire()
    }
    fn unretire(&self) {
        self.inner.unretire()
    }
    fn close(&self) -> Result<(), StorageError> {
        self.inner.close()
    }
    fn seal(&self) -> Result<u64, StorageError> {
        Ok(self.inner.seal()? + self.base)
    }
}

/// The behaviour every storage must have, as one function a second storage's tests can run
/// too (issue #12: the same suite against JetStream).
#[cfg(test)]
pub(crate) fn conformance(s: &dyn ShardStorage, base: u64) {
    let b = base;
    let e = |key: &'static [u8], data: &'static [u8], at: i64| Entry {
        key,
        data,
        arrival_ms: at,
    };
    assert_eq!(
        (s.first_seq(), s.next_seq(), s.last_seq(), s.records()),
        (b, b, None, 0)
    );
    let (first, arrivals) = s
        .append(&[e(b"a", b"one", 1_000), e(b"b", b"two", 2_000)])
        .unwrap();
    assert_eq!((first, arrivals.len()), (b, 2));
    let (first, _) = s.append(&[e(b"c", b"three", 3_000)]).unwrap();
    assert_eq!(first, b + 2, "numbers continue, never reused");
    assert_eq!(
        (s.next_seq(), s.last_seq(), s.records()),
        (b + 3, Some(b + 2), 3)
    );
    let all = s.read(b, 10, 1 << 20).unwrap();
    let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [b, b + 1, b + 2]);
    assert_eq!(&all[1].data[..], b"two");
    assert_eq!(&all[1].key[..], b"b");
    // Limits: records, and bytes (the first record always comes).
    assert_eq!(s.read(b + 1, 1, 1 << 20).unwrap().len(), 1);
    assert_eq!(s.read(b, 10, 1).unwrap().len(), 1);
    assert!(
        s.read(b + 3, 10, 1 << 20).unwrap().is_empty(),
        "nothing past the end"
    );
    assert_eq!(s.seek_timestamp(1_500).unwrap(), b + 1);
    assert_eq!(s.seek_timestamp(9_000).unwrap(), b + 3);
    assert_eq!(s.arrival_range().map(|r| r.1), Some(3_000));
    // In two halves: numbered when written, readable after the commit, numbering on.
    let a = s
        .append_unsynced(&[e(b"d", b"four", 4_000), e(b"e", b"five", 5_000)])
        .unwrap();
    assert_eq!((a.first, a.arrivals.len()), (b + 3, 2));
    let b2 = s.append_unsynced(&[e(b"f", b"six", 6_000)]).unwrap();
    assert_eq!(b2.first, b + 5);
    s.start_sync();
    s.commit(a.commit).unwrap();
    s.commit(b2.commit).unwrap();
    let seqs: Vec<u64> = s
        .read(b + 3, 10, 1 << 20)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, [b + 3, b + 4, b + 5]);
    s.sync().unwrap();
    s.retire();
    assert!(matches!(
        s.append(&[e(b"g", b"late", 7_000)]),
        Err(StorageError::Retired)
    ));
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shard_log_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = sluice_shardlog::ShardLog::open(
            &dir.path().join("shard"),
            sluice_shardlog::Options::default(),
        )
        .unwrap();
        super::conformance(&log, 0);
    }

    /// A storage numbered from a base behaves as every storage does, its numbers moved.
    #[test]
    fn a_based_storage_conforms_from_its_base() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = sluice_shardlog::ShardLog::open(
            &dir.path().join("shard"),
            sluice_shardlog::Options::default(),
        )
        .unwrap();
        let based = super::Based::new(Box::new(log), 1_000_000);
        super::conformance(&based, 1_000_000);
        assert_eq!(super::ShardStorage::seal(&based).unwrap(), 1_000_006);
        // A position below the base (a reader of the deleted stream) reads from the start.
        assert_eq!(
            super::ShardStorage::read(&based, 7, 1, 1 << 20).unwrap()[0].seq,
            1_000_000
        );
    }
}
