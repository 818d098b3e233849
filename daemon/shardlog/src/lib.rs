//! `sluice-shardlog`: one shard's durable, append-only log.
//!
//! A shard is a folder of segment files named after their first sequence number
//! (`00000000000000000042.seg`). Each record is a CRC32C-checked frame ([`frame`]) holding a
//! shard-local sequence number (0, 1, 2, ... — increasing across restarts), an arrival time
//! (non-decreasing within the shard), the partition key and the data. A sparse in-memory
//! index per segment (every [`Options::index_every`] records, rebuilt on open) seeks by
//! sequence number and by time.
//!
//! **Durability** ([`FsyncPolicy`]): with `Batch`, [`ShardLog::append`] returns only after
//! the bytes are `fdatasync`ed; concurrent appends share one sync (group commit).
//! **Recovery**: on open every segment is scanned; a torn or corrupt tail of the last
//! segment is truncated to the last good record (reported in [`OpenReport`]); damage
//! followed by valid records is reported with its segment and offset and skipped by reads —
//! never silently. **Retention** drops whole closed segments by age or total size.

pub mod frame;

use frame::{Codec, Decoded, SegmentStart};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Errors of the shard log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("record too large: {0} bytes")]
    TooLarge(usize),
    #[error("partition key too long: {0} bytes")]
    KeyTooLong(usize),
    #[error("shard log lock poisoned")]
    Poisoned,
    #[error("the shard log was deleted")]
    Retired,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// When appended bytes are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` before `append` returns, shared by concurrent appends (group commit).
    Batch,
    /// Never (the OS writes back when it likes).
    None,
    /// By the owner calling [`ShardLog::sync`] on a timer.
    Interval(Duration),
}

/// Tuning of a shard log.
#[derive(Debug, Clone)]
pub struct Options {
    /// A segment is closed once it reaches this size.
    pub segment_bytes: u64,
    /// Durability policy.
    pub fsync: FsyncPolicy,
    /// One index entry every this many records.
    pub index_every: u32,
    /// No sequence number below it is ever issued: a log made again under a name whose
    /// earlier log was deleted starts above every number that one issued, so positions
    /// remembered by readers (checkpoints, object names) never meet a new record.
    pub floor: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 64 << 20,
            fsync: FsyncPolicy::Batch,
            index_every: 64,
            floor: 0,
        }
    }
}

/// A record to append.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Partition key (≤ 65,535 bytes).
    pub key: &'a [u8],
    /// Payload.
    pub data: &'a [u8],
    /// Arrival time; raised to the shard's last arrival if older, so time never goes back.
    pub arrival_ms: i64,
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Shard-local sequence number.
    pub seq: u64,
    /// Arrival time, ms since the epoch.
    pub arrival_ms: i64,
    /// Partition key.
    pub key: Vec<u8>,
    /// Payload.
    pub data: Vec<u8>,
}

/// Damaged bytes found on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset of the damage.
    pub offset: u64,
    /// Damaged bytes.
    pub len: u64,
    /// Truncated (a torn tail) rather than skipped (damage followed by good records).
    pub truncated: bool,
}

/// What opening found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Every damaged range, truncated or skipped.
    pub damage: Vec<Damage>,
    /// Records readable.
    pub records: u64,
    /// How far the next sequence number was raised past the last readable record, because
    /// numbers up to there may have been issued before (a crash, a lost tail): they are
    /// never issued again.
    pub seq_skipped: u64,
    /// The sequence mark file was unreadable or damaged (the skip is then a blind one).
    pub mark_damaged: bool,
}

/// File holding the sequence mark: `SLMARK1\0 | reserved u64 | crc32c u32`.
const MARK_FILE: &str = "seqmark";
const MARK_MAGIC: &[u8; 8] = b"SLMARK1\0";
/// How many sequence numbers one mark write reserves: the mark is synced once per this
/// many records, and a crash skips at most this many numbers.
pub const RESERVE: u64 = 1 << 20;

fn encode_mark(reserved: u64) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..8].copy_from_slice(MARK_MAGIC);
    b[8..16].copy_from_slice(&reserved.to_le_bytes());
    let crc = crc32c::crc32c(&b[..16]);
    b[16..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_mark(b: &[u8]) -> Option<u64> {
    if b.len() < 20 || &b[..8] != MARK_MAGIC {
        return None;
    }
    if crc32c::crc32c(&b[..16]) != u32::from_le_bytes([b[16], b[17], b[18], b[19]]) {
        return None;
    }
    let mut r = [0u8; 8];
    r.copy_from_slice(&b[8..16]);
    Some(u64::from_le_bytes(r))
}

#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    seq: u64,
    arrival_ms: i64,
    offset: u64,
}

struct Segment {
    path: PathBuf,
    file: Arc<File>,
    /// Frame format and salt.
    codec: Codec,
    first_seq: u64,
    /// Bytes in the file.
    len: u64,
    records: u64,
    last_seq: Option<u64>,
    first_arrival: i64,
    last_arrival: i64,
    index: Vec<IndexEntry>,
    /// Damaged ranges (offset, len) that reads skip.
    holes: Vec<(u64, u64)>,
}

impl Segment {
    fn empty(path: PathBuf, file: File, first_seq: u64, codec: Codec) -> Segment {
        Segment {
            path,
            file: Arc::new(file),
            codec,
            first_seq,
            len: codec.data_start(),
            records: 0,
            last_seq: None,
            first_arrival: i64::MIN,
            last_arrival: i64::MIN,
            index: Vec::new(),
            holes: Vec::new(),
        }
    }

    /// Accounts for a frame (`seq`, `arrival_ms`) of `size` bytes stored at `offset`.
    fn note(&mut self, seq: u64, arrival_ms: i64, offset: u64, size: u64, index_every: u32) {
        if self.records.is_multiple_of(u64::from(index_every.max(1))) {
            self.index.push(IndexEntry {
                seq,
                arrival_ms,
                offset,
            });
        }
        if self.records == 0 {
            self.first_arrival = arrival_ms;
        }
        self.records += 1;
        self.last_seq = Some(seq);
        self.last_arrival = arrival_ms;
        self.len = offset + size;
    }
}

struct Inner {
    segments: BTreeMap<u64, Segment>,
    next_seq: u64,
    /// Every sequence number below this may have been issued (the durable mark); appends
    /// raise it, synced, before they issue a number at or past it.
    reserved: u64,
    /// The mark file, rewritten in place.
    mark: File,
    last_arrival: i64,
    /// Bytes ever appended since open (group-commit positions).
    written: u64,
    /// Bytes in all segments.
    total_bytes: u64,
}

/// Records written by [`ShardLog::append_unsynced`], durable after [`ShardLog::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Sequence number of the first record.
    pub first: u64,
    /// Arrival time given to each record.
    pub arrivals: Vec<i64>,
    /// Log position after the records (what [`ShardLog::commit`] must cover).
    pub end: u64,
}

/// Starts writeback of a file's dirty pages without waiting (Linux; elsewhere nothing).
fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        // SAFETY: a plain syscall on a descriptor the File keeps open for the call.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// The device a path lives on.
fn device_of(path: &Path) -> Result<u64, Error> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata(path).map_err(io(path))?.dev())
}

/// Commits the appends of several logs of one filesystem with one `syncfs(2)` instead of
/// one `fdatasync` each. On ext4 each `fdatasync` writes the inode and flushes the
/// device's cache; `syncfs` writes every dirty inode and flushes once — measured here at
/// half the CPU for 16 logs (BENCHMARKS.md). It also writes other files' dirty pages of
/// that filesystem, so a call waits for them too: callers use it only when many logs
/// need a sync at once.
///
/// Errors: `syncfs` reports a writeback error anywhere on the filesystem since this
/// descriptor last asked (Linux ≥ 5.8; older kernels report none, so [`FsSync::open`]
/// refuses them). The descriptor is opened before any append it confirms and calls are
/// serialised, so a success means no page written since the previous call was lost. A
/// failure may be another file's: the caller falls back to each log's own `fdatasync`,
/// which reports that log's errors only.
pub struct FsSync {
    dir: File,
    path: PathBuf,
    dev: u64,
    lock: Mutex<()>,
}

impl FsSync {
    /// A syncer for the filesystem of `dir`; `None` where `syncfs` cannot report
    /// writeback errors (not Linux, or a kernel before 5.8).
    pub fn open(dir: &Path) -> Result<Option<FsSync>, Error> {
        if !syncfs_reports_errors() {
            return Ok(None);
        }
        let file = File::open(dir).map_err(io(dir))?;
        Ok(Some(FsSync {
            dir: file,
            path: dir.to_path_buf(),
            dev: device_of(dir)?,
            lock: Mutex::new(()),
        }))
    }

    /// Whether `log` lives on this syncer's filesystem.
    pub fn covers(&self, log: &ShardLog) -> bool {
        self.dev == log.dev
    }

    /// Makes each log's appends up to its `end` ([`Written::end`]) durable with one
    /// filesystem sync — a group commit: calls queue, and one sync covers every append
    /// written before it started, so a caller whose appends an earlier caller's sync
    /// covered returns without one. Returns whether this call synced. Logs on another
    /// filesystem are left to their own commit.
    pub fn commit(&self, logs: &[(&ShardLog, u64)]) -> Result<bool, Error> {
        let _one = self.lock.lock().map_err(|_| Error::Poisoned)?;
        if !logs
            .iter()
            .any(|(l, end)| self.covers(l) && l.needs_sync(*end))
        {
            return Ok(false);
        }
        let mut targets = Vec::with_capacity(logs.len());
        for (log, _) in logs.iter().filter(|(l, _)| self.covers(l)) {
            let g = log.inner.read().map_err(|_| Error::Poisoned)?;
            targets.push((log, g.written));
        }
        syncfs(&self.dir).map_err(io(&self.path))?;
        for (log, target) in targets {
            log.synced.fetch_max(target, Ordering::AcqRel);
        }
        Ok(true)
    }
}

#[cfg(target_os = "linux")]
fn syncfs(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a plain syscall on a descriptor the File keeps open for the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn syncfs(_: &File) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Linux 5.8 and later: `syncfs` returns writeback errors.
fn syncfs_reports_errors() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `uname` fills the zeroed struct it is given.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        if unsafe { libc::uname(&mut u) } != 0 {
            return false;
        }
        let release: String = u
            .release
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8 as char)
            .collect();
        kernel_at_least(&release, 5, 8)
    }
    #[cfg(not(target_os = "linux"))]
    false
}

#[cfg(test)]
mod fs_sync_tests {
    #[test]
    fn kernel_releases_are_compared_by_major_and_minor() {
        assert!(super::kernel_at_least("6.18.44-fc-v857", 5, 8));
        assert!(super::kernel_at_least("5.8.0", 5, 8));
        assert!(super::kernel_at_least("5.10.0-28-amd64", 5, 8));
        assert!(!super::kernel_at_least("5.7.19", 5, 8));
        assert!(!super::kernel_at_least("4.19.0-26-amd64", 5, 8));
        assert!(!super::kernel_at_least("", 5, 8));
        assert!(!super::kernel_at_least("garbage", 5, 8));
    }
}

/// Whether a kernel release string (`6.18.44-fc`) is at least `major.minor`.
fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// One shard's log. Thread-safe: appends serialise on a lock, reads share it.
pub struct ShardLog {
    dir: PathBuf,
    opts: Options,
    inner: RwLock<Inner>,
    sync_lock: Mutex<()>,
    synced: AtomicU64,
    /// Set when the log's stream is deleted: appends fail from then on, so a writer that
    /// still holds the log can never write into a folder recreated under the same name.
    retired: std::sync::atomic::AtomicBool,
    /// The device of the log's folder (which filesystem a [`FsSync`] would sync).
    dev: u64,
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// A fresh random salt from the OS (a segment's frames are checksummed with it).
fn new_salt() -> Result<u64, Error> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| Error::Io {
        path: PathBuf::from("getrandom"),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(u64::from_le_bytes(b))
}

/// Creates a v2 segment file (header written, and synced unless `fsync` is off).
fn create_segment(path: &Path, first_seq: u64, sync: bool) -> Result<Segment, Error> {
    let salt = new_salt()?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io(path))?;
    file.write_all_at(&frame::segment_header(salt), 0)
        .map_err(io(path))?;
    if sync {
        file.sync_data().map_err(io(path))?;
    }
    Ok(Segment::empty(
        path.to_path_buf(),
        file,
        first_seq,
        Codec::V2 { salt },
    ))
}

/// Where the next valid frame after damage at `pos` starts, if any. For v2 segments each
/// candidate offset costs one header checksum (O(1)), so the rescan is linear in the
/// segment size whatever the damaged bytes hold; a frame needs the segment's secret salt
/// to pass, so bytes from a record's payload never resynchronise.
fn resync(bytes: &[u8], pos: usize, codec: Codec, last_seq: Option<u64>) -> Option<usize> {
    (pos + 1..bytes.len()).find(|&q| {
        if codec != Codec::V1 && frame::check_header(&bytes[q..], codec).is_none() {
            return false;
        }
        matches!(frame::decode(&bytes[q..], codec), Decoded::Frame(f, _) if last_seq.is_none_or(|l| f.seq > l))
    })
}

/// Reads a whole segment and finds its frames; returns the segment and its damage.
fn scan(
    path: &Path,
    first_seq: u64,
    last: bool,
    index_every: u32,
) -> Result<(Segment, Vec<Damage>), Error> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let codec = match frame::segment_start(&bytes) {
        SegmentStart::V2(salt) => Codec::V2 { salt },
        SegmentStart::V1 => Codec::V1,
        // Created but its header never made it to disk: it holds no record. Start it
        // again with a fresh header.
        SegmentStart::TornHeader => {
            return Ok((create_segment(path, first_seq, true)?, Vec::new()))
        }
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(path))?;
    let mut seg = Segment::empty(path.to_path_buf(), file, first_seq, codec);
    let mut damage = Vec::new();
    let mut pos = codec.data_start() as usize;
    while pos < bytes.len() {
        match frame::decode(&bytes[pos..], codec) {
            Decoded::Frame(f, n) if seg.last_seq.is_none_or(|l| f.seq > l) => {
                seg.note(f.seq, f.arrival_ms, pos as u64, n as u64, index_every);
                pos += n;
            }
            _ => {
                // Resynchronise: the next offset where a whole valid frame starts.
                match resync(&bytes, pos, codec, seg.last_seq) {
                    Some(q) => {
                        damage.push(Damage {
                            segment: path.to_path_buf(),
                            offset: pos as u64,
                            len: (q - pos) as u64,
                            truncated: false,
                        });
                        seg.holes.push((pos as u64, (q - pos) as u64));
                        seg.len = q as u64;
                        pos = q;
                    }
                    None => {
                        damage.push(Damage {
                            segment: path.to_path_buf(),
                            offset: pos as u64,
                            len: (bytes.len() - pos) as u64,
                            truncated: last,
                        });
                        if last {
                            seg.file.set_len(pos as u64).map_err(io(path))?;
                            seg.file.sync_all().map_err(io(path))?;
                            seg.len = pos as u64;
                        } else {
                            seg.holes.push((pos as u64, (bytes.len() - pos) as u64));
                            seg.len = bytes.len() as u64;
                        }
                        break;
                    }
                }
            }
        }
    }
    Ok((seg, damage))
}

impl ShardLog {
    /// Opens (or creates) the shard log in `dir`, recovering from crashes.
    pub fn open(dir: &Path, opts: Options) -> Result<(ShardLog, OpenReport), Error> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let stem = p.file_name()?.to_str()?.strip_suffix(".seg")?;
                Some((stem.parse().ok()?, p))
            })
            .collect();
        names.sort();
        let mut report = OpenReport::default();
        let mut segments = BTreeMap::new();
        let had_segments = !names.is_empty();
        let mut next_seq = 0;
        let mut last_arrival = i64::MIN;
        let mut total = 0;
        let n = names.len();
        for (i, (first, path)) in names.into_iter().enumerate() {
            let (seg, mut damage) = scan(&path, first, i + 1 == n, opts.index_every)?;
            report.damage.append(&mut damage);
            report.records += seg.records;
            next_seq = next_seq.max(seg.last_seq.map(|s| s + 1).unwrap_or(first));
            if seg.records > 0 {
                last_arrival = last_arrival.max(seg.last_arrival);
            }
            total += seg.len;
            segments.insert(first, seg);
        }
        // Sequence numbers are never issued twice: every number below the mark may have
        // been issued (and read, and delivered) before, even if its record is gone now.
        let mark_path = dir.join(MARK_FILE);
        let mark_bytes = match std::fs::read(&mark_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&mark_path)(e)),
        };
        let scanned = next_seq.max(opts.floor);
        let reserved = match mark_bytes.as_deref().map(decode_mark) {
            Some(Some(r)) => r,
            // A log written before marks existed (or a new one): what is there is all
            // that was issued, as far as anyone can know.
            None if !had_segments || report.damage.iter().all(|d| !d.truncated) => scanned,
            // Damaged mark, or no mark with a lost tail: skip far enough to pass anything
            // the lost bytes could have held.
            _ => {
                report.mark_damaged = mark_bytes.is_some();
                let lost: u64 = report.damage.iter().map(|d| d.len).sum();
                scanned + 2 * RESERVE + lost / frame::HEADER_V1 as u64
            }
        };
        next_seq = scanned.max(reserved);
        report.seq_skipped = next_seq - scanned;
        let mark = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&mark_path)
            .map_err(io(&mark_path))?;
        if mark_bytes.is_none() || report.mark_damaged {
            mark.set_len(0).map_err(io(&mark_path))?;
            mark.write_all_at(&encode_mark(next_seq), 0)
                .map_err(io(&mark_path))?;
            mark.sync_all().map_err(io(&mark_path))?;
            // A new mark's directory entry must survive a power loss too.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        // Segments are created eagerly, so the directory entry of the first one must last.
        let log = ShardLog {
            dir: dir.to_path_buf(),
            opts,
            inner: RwLock::new(Inner {
                segments,
                next_seq,
                reserved: next_seq,
                mark,
                last_arrival,
                written: 0,
                total_bytes: total,
            }),
            sync_lock: Mutex::new(()),
            synced: AtomicU64::new(0),
            retired: std::sync::atomic::AtomicBool::new(false),
            dev: device_of(dir)?,
        };
        Ok((log, report))
    }

    fn sync_dir(&self) -> Result<(), Error> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))
    }

    /// Appends records in order; returns the sequence number of the first and the arrival
    /// time given to each. Durable on return under [`FsyncPolicy::Batch`].
    pub fn append(&self, entries: &[Entry<'_>]) -> Result<(u64, Vec<i64>), Error> {
        let w = self.append_unsynced(entries)?;
        self.commit(w.end)?;
        Ok((w.first, w.arrivals))
    }

    /// Starts writing what was appended to disk without waiting for it (Linux
    /// `sync_file_range`), so that the syncs of several shards' appends overlap; the
    /// [`ShardLog::commit`] that follows then mostly finds its bytes on the way. A hint:
    /// failures are ignored (the commit syncs anyway).
    pub fn start_sync(&self) {
        if self.opts.fsync != FsyncPolicy::Batch {
            return;
        }
        let Ok(g) = self.inner.read() else { return };
        if let Some(s) = g.segments.values().next_back() {
            start_writeback(&s.file);
        }
    }

    /// Makes an [`ShardLog::append_unsynced`] durable as [`ShardLog::append`] would, given
    /// its [`Written::end`] (under [`FsyncPolicy::Batch`]: a group commit shared with
    /// concurrent appends; otherwise nothing).
    pub fn commit(&self, end: u64) -> Result<(), Error> {
        if self.opts.fsync == FsyncPolicy::Batch && end > 0 {
            self.sync_upto(end)?;
        }
        Ok(())
    }

    /// The first half of [`ShardLog::append`]: the records are numbered and written, not
    /// yet durable — [`ShardLog::commit`] is the second half. Lets one caller write to
    /// several shards first and then wait for all their syncs together.
    pub fn append_unsynced(&self, entries: &[Entry<'_>]) -> Result<Written, Error> {
        if entries.is_empty() {
            let g = self.inner.read().map_err(|_| Error::Poisoned)?;
            return Ok(Written {
                first: g.next_seq,
                arrivals: Vec::new(),
                end: 0,
            });
        }
        let total: usize = entries
            .iter()
            .map(|e| frame::encoded_len(e.key.len(), e.data.len()))
            .sum();
        let mut buf = Vec::with_capacity(total);
        let (first, arrivals, end) = {
            let mut g = self.inner.write().map_err(|_| Error::Poisoned)?;
            // Checked under the write lock: `retire` takes it too, so no append is
            // half-way through when the folder goes.
            if self.retired.load(Ordering::Acquire) {
                return Err(Error::Retired);
            }
            let first = g.next_seq;
            for e in entries {
                if e.key.len() > u16::MAX as usize {
                    return Err(Error::KeyTooLong(e.key.len()));
                }
                if frame::encoded_len(e.key.len(), e.data.len()) > frame::MAX_FRAME {
                    return Err(Error::TooLarge(e.data.len()));
                }
            }
            let end_seq = first + entries.len() as u64;
            if end_seq > g.reserved {
                // Reserve before issuing: after a crash the log resumes past the mark.
                let r = end_seq + RESERVE;
                g.mark
                    .write_all_at(&encode_mark(r), 0)
                    .map_err(io(&self.dir))?;
                g.mark.sync_data().map_err(io(&self.dir))?;
                g.reserved = r;
            }
            // Roll to a new segment when the active one is full (and not empty), when it
            // is a legacy (v1) segment, or when the numbers would not follow on in it.
            let need_new = match g.segments.values().next_back() {
                None => true,
                Some(s) => {
                    let used = s.len > s.codec.data_start();
                    s.codec == Codec::V1
                        || (used && s.len + total as u64 > self.opts.segment_bytes)
                        || s.last_seq.map_or(s.first_seq, |l| l + 1) != first
                }
            };
            if need_new {
                if let Some(s) = g.segments.values().next_back() {
                    // Everything in a closed segment is durable before the next one starts.
                    if self.opts.fsync != FsyncPolicy::None {
                        s.file.sync_data().map_err(io(&s.path))?;
                    }
                }
                let path = self.dir.join(segment_name(first));
                let seg = create_segment(&path, first, self.opts.fsync != FsyncPolicy::None)?;
                g.total_bytes += seg.len;
                g.segments.insert(first, seg);
                if self.opts.fsync != FsyncPolicy::None {
                    self.sync_dir()?;
                }
            }
            let every = self.opts.index_every;
            let Some(seg) = g.segments.values_mut().next_back() else {
                return Err(Error::Poisoned);
            };
            let Codec::V2 { salt } = seg.codec else {
                return Err(Error::Poisoned);
            };
            let mut arrivals = Vec::with_capacity(entries.len());
            let mut last = g.last_arrival;
            for (i, e) in entries.iter().enumerate() {
                last = last.max(e.arrival_ms);
                arrivals.push(last);
                frame::encode(&mut buf, salt, first + i as u64, last, e.key, e.data);
            }
            let Some(seg) = g.segments.values_mut().next_back() else {
                return Err(Error::Poisoned);
            };
            let base = seg.len;
            if let Err(e) = seg.file.write_all_at(&buf, base) {
                // Nothing of a failed append may stay: its frames carry numbers the next
                // append issues again.
                let _ = seg.file.set_len(base);
                return Err(io(&seg.path)(e));
            }
            // The frames were just encoded: account for them without decoding them again.
            let mut off = base;
            for (i, e) in entries.iter().enumerate() {
                let n = frame::encoded_len(e.key.len(), e.data.len()) as u64;
                seg.note(first + i as u64, arrivals[i], off, n, every);
                off += n;
            }
            g.next_seq = end_seq;
            g.last_arrival = last;
            g.written += buf.len() as u64;
            g.total_bytes += buf.len() as u64;
            (first, arrivals, g.written)
        };
        Ok(Written {
            first,
            arrivals,
            end,
        })
    }

    /// Whether [`ShardLog::commit`] of `end` would still have to sync (a
    /// [`FsSync::commit`] can do it for several logs at once).
    pub fn needs_sync(&self, end: u64) -> bool {
        self.opts.fsync == FsyncPolicy::Batch
            && end > 0
            && self.synced.load(Ordering::Acquire) < end
    }

    /// Group commit: one `fdatasync` covers every append written before it started.
    fn sync_upto(&self, pos: u64) -> Result<(), Error> {
        if self.synced.load(Ordering::Acquire) >= pos {
            return Ok(());
        }
        let _g = self.sync_lock.lock().map_err(|_| Error::Poisoned)?;
        if self.synced.load(Ordering::Acquire) >= pos {
            return Ok(());
        }
        self.sync()
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<(), Error> {
        let (target, file, path) = {
            let g = self.inner.read().map_err(|_| Error::Poisoned)?;
            match g.segments.values().next_back() {
                Some(s) => (g.written, s.file.clone(), s.path.clone()),
                None => return Ok(()),
            }
        };
        file.sync_data().map_err(io(&path))?;
        self.synced.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// A clean stop: syncs the data and sets the mark to exactly the next sequence number,
    /// so the next open resumes there without a skip. Appends after this raise the mark
    /// again (and a crash after them skips, as always).
    pub fn close(&self) -> Result<(), Error> {
        let mut g = self.inner.write().map_err(|_| Error::Poisoned)?;
        if self.retired.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(s) = g.segments.values().next_back() {
            s.file.sync_data().map_err(io(&s.path))?;
        }
        let next = g.next_seq;
        g.mark
            .write_all_at(&encode_mark(next), 0)
            .map_err(io(&self.dir))?;
        g.mark.sync_data().map_err(io(&self.dir))?;
        g.reserved = next;
        Ok(())
    }

    /// The next sequence number to be assigned.
    pub fn next_seq(&self) -> u64 {
        self.inner.read().map(|g| g.next_seq).unwrap_or(0)
    }

    /// The oldest readable sequence number (the trim horizon).
    pub fn first_seq(&self) -> u64 {
        self.inner
            .read()
            .map(|g| {
                g.segments
                    .values()
                    .next()
                    .map(|s| s.first_seq)
                    .unwrap_or(g.next_seq)
            })
            .unwrap_or(0)
    }

    /// Records readable now. Not `next_seq() - first_seq()`: numbering skips past every
    /// number that may have been issued before a crash.
    pub fn records(&self) -> u64 {
        self.inner
            .read()
            .map(|g| g.segments.values().map(|s| s.records).sum())
            .unwrap_or(0)
    }

    /// The sequence number of the newest readable record (not `next_seq() - 1`, for the
    /// same reason).
    pub fn last_seq(&self) -> Option<u64> {
        let g = self.inner.read().ok()?;
        g.segments.values().rev().find_map(|s| s.last_seq)
    }

    /// Bytes on disk.
    pub fn total_bytes(&self) -> u64 {
        self.inner.read().map(|g| g.total_bytes).unwrap_or(0)
    }

    /// Arrival time of the oldest and newest readable records.
    pub fn arrival_range(&self) -> Option<(i64, i64)> {
        let g = self.inner.read().ok()?;
        let first = g.segments.values().find(|s| s.records > 0)?.first_arrival;
        let last = g
            .segments
            .values()
            .rev()
            .find(|s| s.records > 0)?
            .last_arrival;
        Some((first, last))
    }

    /// Reads records with `seq >= from`, at most `max_records` and (beyond the first)
    /// `max_bytes` of data, in order. Records before the trim horizon are gone: reading
    /// starts at the oldest one left.
    pub fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, Error> {
        let g = self.inner.read().map_err(|_| Error::Poisoned)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let start_key = g
            .segments
            .range(..=from)
            .next_back()
            .map(|(k, _)| *k)
            .unwrap_or(0);
        for seg in g.segments.range(start_key..).map(|(_, s)| s) {
            if seg.last_seq.is_none_or(|l| l < from) {
                continue;
            }
            let i = seg.index.partition_point(|e| e.seq <= from);
            let mut offset = if i == 0 {
                seg.codec.data_start()
            } else {
                seg.index[i - 1].offset
            };
            if !read_segment(
                seg,
                &mut offset,
                from,
                max_records,
                max_bytes,
                &mut out,
                &mut bytes,
            )? {
                return Ok(out);
            }
        }
        Ok(out)
    }

    /// The sequence number of the first record that arrived at or after `ts_ms`
    /// (`next_seq()` when none did).
    pub fn seek_timestamp(&self, ts_ms: i64) -> Result<u64, Error> {
        let g = self.inner.read().map_err(|_| Error::Poisoned)?;
        for seg in g.segments.values() {
            if seg.records == 0 || seg.last_arrival < ts_ms {
                continue;
            }
            let i = seg.index.partition_point(|e| e.arrival_ms < ts_ms);
            let from = if i == 0 {
                seg.first_seq
            } else {
                seg.index[i - 1].seq
            };
            let mut offset = if i == 0 {
                seg.codec.data_start()
            } else {
                seg.index[i - 1].offset
            };
            let mut recs = Vec::new();
            let mut bytes = 0;
            // Scan at most one index stride to the exact record.
            read_segment(
                seg,
                &mut offset,
                from,
                self.opts.index_every as usize + 1,
                usize::MAX,
                &mut recs,
                &mut bytes,
            )?;
            if let Some(r) = recs.iter().find(|r| r.arrival_ms >= ts_ms) {
                return Ok(r.seq);
            }
        }
        Ok(g.next_seq)
    }

    /// Drops closed segments whose newest record arrived before `cutoff_ms`, then the
    /// oldest closed segments while the log exceeds `max_bytes`. Returns segments removed.
    pub fn enforce_retention(
        &self,
        cutoff_ms: i64,
        max_bytes: Option<u64>,
    ) -> Result<usize, Error> {
        let mut g = self.inner.write().map_err(|_| Error::Poisoned)?;
        let mut removed = 0;
        loop {
            let n = g.segments.len();
            let Some((&first, seg)) = g.segments.iter().next() else {
                break;
            };
            if n <= 1 {
                break; // the active segment stays
            }
            let too_old = seg.records == 0 || seg.last_arrival < cutoff_ms;
            let too_big = max_bytes.is_some_and(|m| g.total_bytes > m);
            if !(too_old || too_big) {
                break;
            }
            let path = seg.path.clone();
            let len = seg.len;
            std::fs::remove_file(&path).map_err(io(&path))?;
            g.segments.remove(&first);
            g.total_bytes = g.total_bytes.saturating_sub(len);
            removed += 1;
        }
        Ok(removed)
    }

    /// Refuses every later append (the stream is being deleted); waits for an append in
    /// progress to finish.
    pub fn retire(&self) {
        let _g = self.inner.write();
        self.retired.store(true, Ordering::Release);
    }

    /// Takes appends again (a deletion that could not complete).
    pub fn unretire(&self) {
        let _g = self.inner.write();
        self.retired.store(false, Ordering::Release);
    }

    /// Deletes the whole log (stream deletion).
    pub fn destroy(self) -> Result<(), Error> {
        std::fs::remove_dir_all(&self.dir).map_err(io(&self.dir))
    }
}

impl Drop for ShardLog {
    /// Dropping the log is a clean stop ([`ShardLog::close`]); a crash is what skips.
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "closing the shard log failed; the next open skips sequence numbers");
        }
    }
}

/// Reads frames of `seg` from `*offset`; returns false once a limit is reached.
fn read_segment(
    seg: &Segment,
    offset: &mut u64,
    from: u64,
    max_records: usize,
    max_bytes: usize,
    out: &mut Vec<StoredRecord>,
    bytes: &mut usize,
) -> Result<bool, Error> {
    const CHUNK: usize = 256 << 10;
    let mut buf = Vec::new();
    while *offset < seg.len {
        if let Some(&(h, l)) = seg
            .holes
            .iter()
            .find(|&&(h, l)| *offset >= h && *offset < h + l)
        {
            *offset = h + l;
            continue;
        }
        let want = (seg.len - *offset).min(CHUNK as u64) as usize;
        buf.resize(want, 0);
        seg.file
            .read_exact_at(&mut buf, *offset)
            .map_err(io(&seg.path))?;
        let mut pos = 0;
        loop {
            match frame::decode(&buf[pos..], seg.codec) {
                Decoded::Frame(f, n) => {
                    if f.seq >= from {
                        if out.len() >= max_records
                            || (!out.is_empty() && *bytes + f.data.len() > max_bytes)
                        {
                            return Ok(false);
                        }
                        *bytes += f.data.len();
                        out.push(StoredRecord {
                            seq: f.seq,
                            arrival_ms: f.arrival_ms,
                            key: f.key.to_vec(),
                            data: f.data.to_vec(),
                        });
                    }
                    pos += n;
                }
                Decoded::Incomplete if pos > 0 => break,
                Decoded::Incomplete => {
                    if buf.len() < 4 {
                        return Ok(true);
                    }
                    // One frame larger than the chunk: read it whole.
                    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize + 4;
                    if len > frame::MAX_FRAME || *offset + len as u64 > seg.len {
                        return Ok(true);
                    }
                    buf.resize(len, 0);
                    seg.file
                        .read_exact_at(&mut buf, *offset)
                        .map_err(io(&seg.path))?;
                    continue;
                }
                Decoded::Invalid => {
                    // Damage found on open starts here: skip the hole and go on.
                    *offset += pos as u64;
                    if seg.holes.iter().any(|&(h, _)| h == *offset) {
                        pos = 0;
                        buf.clear();
                        break;
                    }
                    return Ok(true);
                }
            }
            if pos >= buf.len() {
                break;
            }
        }
        *offset += pos as u64;
        if buf.is_empty() {
            continue; // at a hole: the loop head skips it
        }
    }
    Ok(true)
}

/// Entry points shared by the cargo-fuzz targets (`daemon/shardlog/fuzz`) and the
/// property tests that run them on every `cargo test`.
pub mod fuzzing {
    use super::*;

    /// Treats `bytes` as a segment file left by a crash: opening must recover without
    /// panicking, and everything reported readable must read back with valid frames.
    pub fn open_and_read(bytes: &[u8]) {
        let dir =
            std::env::temp_dir().join(format!("sluice-fuzz-{}-{}", std::process::id(), unique()));
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        if std::fs::write(dir.join(segment_name(0)), bytes).is_ok() {
            let opts = Options {
                fsync: FsyncPolicy::None,
                ..Options::default()
            };
            if let Ok((log, report)) = ShardLog::open(&dir, opts) {
                let recs = log.read(0, usize::MAX, usize::MAX).unwrap_or_default();
                assert_eq!(
                    recs.len() as u64,
                    report.records,
                    "every record found on open reads back"
                );
                assert!(
                    recs.windows(2).all(|w| w[0].seq < w[1].seq),
                    "sequence numbers increase"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn unique() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }
}
