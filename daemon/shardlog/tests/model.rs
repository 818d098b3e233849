//! The shard log against an in-memory model (`Vec<record>`), with random operations:
//! append, read by sequence, seek by time, reopen, retention; and crash recovery: a torn
//! tail is truncated, a flipped byte mid-segment is reported with its offset and skipped.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use sluice_shardlog::{Entry, FsyncPolicy, Options, ShardLog, StoredRecord};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(Vec<u8>, Vec<u8>, i64)>),
    Read {
        from: u64,
        max: usize,
        max_bytes: usize,
    },
    Seek(i64),
    Reopen,
    Retain(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 1..20), proptest::collection::vec(any::<u8>(), 0..300), 0i64..1000),
            1..20
        ).prop_map(Op::Append),
        3 => (0u64..300, 1usize..50, 1usize..5000).prop_map(|(from, max, max_bytes)| Op::Read { from, max, max_bytes }),
        1 => (0i64..1200).prop_map(Op::Seek),
        1 => Just(Op::Reopen),
        1 => (0i64..1200).prop_map(Op::Retain),
    ]
}

fn opts() -> Options {
    Options {
        segment_bytes: 2048,
        fsync: FsyncPolicy::None,
        index_every: 3,
        floor: 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = ShardLog::open(dir.path(), opts()).unwrap();
        let mut model: Vec<StoredRecord> = Vec::new();
        let mut last_arrival = i64::MIN;
        let mut horizon = 0u64; // records below this were dropped by retention
        for op in ops {
            match op {
                Op::Append(recs) => {
                    let entries: Vec<Entry> = recs.iter().map(|(k, d, t)| Entry { key: k, data: d, arrival_ms: *t }).collect();
                    let (first, arrivals) = log.append(&entries).unwrap();
                    prop_assert_eq!(first, model.len() as u64);
                    for (i, (k, d, t)) in recs.into_iter().enumerate() {
                        last_arrival = last_arrival.max(t);
                        prop_assert_eq!(arrivals[i], last_arrival);
                        model.push(StoredRecord { seq: first + i as u64, arrival_ms: last_arrival, key: k, data: d });
                    }
                }
                Op::Read { from, max, max_bytes } => {
                    let got = log.read(from, max, max_bytes).unwrap();
                    let start = from.max(horizon) as usize;
                    let avail = model.get(start..).unwrap_or(&[]);
                    // Same records, in order, within the limits, as many as the limits allow.
                    prop_assert!(got.len() <= max);
                    prop_assert_eq!(&got[..], &avail[..got.len()]);
                    let bytes: usize = got.iter().map(|r| r.data.len()).sum();
                    prop_assert!(got.len() <= 1 || bytes <= max_bytes);
                    if got.len() < avail.len() && got.len() < max {
                        prop_assert!(bytes + avail[got.len()].data.len() > max_bytes, "stopped early");
                    }
                }
                Op::Seek(ts) => {
                    let seq = log.seek_timestamp(ts).unwrap();
                    let expect = model[horizon as usize..].iter().find(|r| r.arrival_ms >= ts).map(|r| r.seq).unwrap_or(model.len() as u64);
                    prop_assert_eq!(seq, expect);
                }
                Op::Reopen => {
                    drop(log);
                    let (l, report) = ShardLog::open(dir.path(), opts()).unwrap();
                    prop_assert!(report.damage.is_empty());
                    log = l;
                    prop_assert_eq!(log.next_seq(), model.len() as u64);
                }
                Op::Retain(cutoff) => {
                    log.enforce_retention(cutoff, None).unwrap();
                    let first = log.first_seq();
                    // Only whole old segments go: never a record at/after the cutoff.
                    prop_assert!(first >= horizon);
                    prop_assert!(model[horizon as usize..first as usize].iter().all(|r| r.arrival_ms < cutoff));
                    horizon = first;
                }
            }
        }
    }
}

fn fill(dir: &std::path::Path, n: usize) -> ShardLog {
    let (log, _) = ShardLog::open(
        dir,
        Options {
            segment_bytes: 1 << 20,
            fsync: FsyncPolicy::Batch,
            index_every: 4,
            floor: 0,
        },
    )
    .unwrap();
    for i in 0..n {
        let data = format!("record-{i:04}");
        log.append(&[Entry {
            key: b"k",
            data: data.as_bytes(),
            arrival_ms: i as i64,
        }])
        .unwrap();
    }
    log
}

/// Every readable sequence number, in order.
fn all_seqs(log: &ShardLog) -> Vec<u64> {
    log.read(0, 100, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

fn segment(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap()
}

#[test]
fn a_floor_starts_a_new_log_above_it_and_never_lowers_an_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let floor = |floor| Options {
        floor,
        ..Options::default()
    };
    let (log, report) = ShardLog::open(dir.path(), floor(1_000)).unwrap();
    assert_eq!(report.seq_skipped, 0, "a floor is not a skip");
    assert_eq!((log.first_seq(), log.next_seq()), (1_000, 1_000));
    let (first, _) = log
        .append(&[Entry {
            key: b"k",
            data: b"one",
            arrival_ms: 1,
        }])
        .unwrap();
    assert_eq!(first, 1_000);
    log.close().unwrap();
    drop(log);
    // Reopened (with or without the floor): numbering goes on above it.
    let (log, _) = ShardLog::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.next_seq(), 1_001);
    assert_eq!(all_seqs(&log), [1_000]);
    drop(log);
    // A floor below what the log issued changes nothing.
    let (log, _) = ShardLog::open(dir.path(), floor(5)).unwrap();
    assert_eq!(log.next_seq(), 1_001);
}

#[test]
fn torn_tail_is_truncated_to_the_last_good_record() {
    let dir = tempfile::tempdir().unwrap();
    drop(fill(dir.path(), 10));
    let seg = segment(dir.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    // A crash mid-write: half of the last frame is on disk, plus garbage.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    let (log, report) = ShardLog::open(dir.path(), Options::default()).unwrap();
    assert_eq!(report.damage.len(), 1);
    assert!(report.damage[0].truncated);
    assert_eq!(report.records, 9);
    // Number 9 was issued before the crash: it is never issued again.
    assert_eq!(log.next_seq(), 10);
    let all = log.read(0, 100, usize::MAX).unwrap();
    assert_eq!(all.len(), 9);
    // The log goes on from there, and the truncation is not reported again.
    log.append(&[Entry {
        key: b"k",
        data: b"after",
        arrival_ms: 100,
    }])
    .unwrap();
    drop(log);
    let (log, report) = ShardLog::open(dir.path(), Options::default()).unwrap();
    assert!(report.damage.is_empty());
    let after = log.read(9, 10, usize::MAX).unwrap();
    assert_eq!((after[0].seq, &after[0].data[..]), (10, &b"after"[..]));
}

#[test]
fn a_flipped_byte_mid_segment_is_reported_with_its_offset_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    drop(fill(dir.path(), 10));
    let seg = segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let head = sluice_shardlog::frame::SEGMENT_HEADER;
    let frame = (bytes.len() - head) / 10; // all frames have the same size here
    let victim = head + 4 * frame + frame - 3; // inside record 4's data
    bytes[victim] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let (log, report) = ShardLog::open(dir.path(), Options::default()).unwrap();
    assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
    let d = &report.damage[0];
    assert!(!d.truncated);
    assert_eq!(d.offset, (head + 4 * frame) as u64);
    assert_eq!(d.len, frame as u64);
    let seqs = all_seqs(&log);
    assert_eq!(seqs, [0, 1, 2, 3, 5, 6, 7, 8, 9]);
    // Reading from inside the damage skips it too; sequence numbers keep increasing.
    assert_eq!(log.read(4, 1, usize::MAX).unwrap()[0].seq, 5);
    assert_eq!(log.next_seq(), 10);
}

#[test]
fn sequence_numbers_survive_restarts_and_segments_roll() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_bytes: 200,
        fsync: FsyncPolicy::Batch,
        index_every: 2,
        floor: 0,
    };
    let (log, _) = ShardLog::open(dir.path(), opts.clone()).unwrap();
    for i in 0..50u64 {
        let (s, _) = log
            .append(&[Entry {
                key: b"key",
                data: &i.to_le_bytes(),
                arrival_ms: 1,
            }])
            .unwrap();
        assert_eq!(s, i);
    }
    drop(log);
    let segs = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(segs > 5, "segments rolled: {segs}");
    let (log, _) = ShardLog::open(dir.path(), opts).unwrap();
    assert_eq!(
        log.append(&[Entry {
            key: b"k",
            data: b"x",
            arrival_ms: 0
        }])
        .unwrap(),
        (50, vec![1])
    );
    assert_eq!(log.read(0, 1000, usize::MAX).unwrap().len(), 51);
}

#[test]
fn concurrent_appends_share_syncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = ShardLog::open(dir.path(), Options::default()).unwrap();
    let log = std::sync::Arc::new(log);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let d = format!("{t}-{i}");
                    log.append(&[Entry {
                        key: b"k",
                        data: d.as_bytes(),
                        arrival_ms: 0,
                    }])
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = log.read(0, 10_000, usize::MAX).unwrap();
    assert_eq!(all.len(), 400);
    assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// The fuzz target's body on random bytes and on valid segments with random damage.
    #[test]
    fn recovery_never_panics_on_arbitrary_segments(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        sluice_shardlog::fuzzing::open_and_read(&bytes);
    }

    #[test]
    fn recovery_never_panics_on_damaged_segments(n in 1usize..30, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8), cut in any::<usize>(), v1: bool, salt: u64) {
        use sluice_shardlog::frame;
        let mut seg = Vec::new();
        if !v1 {
            seg.extend_from_slice(&frame::segment_header(salt));
        }
        for i in 0..n {
            let data = format!("data-{i}");
            if v1 {
                frame::encode_v1(&mut seg, i as u64, i as i64, b"key", data.as_bytes());
            } else {
                frame::encode(&mut seg, salt, i as u64, i as i64, b"key", data.as_bytes());
            }
        }
        for (at, x) in flips {
            let len = seg.len();
            seg[at % len] ^= x;
        }
        seg.truncate(cut % (seg.len() + 1));
        sluice_shardlog::fuzzing::open_and_read(&seg);
    }
}

fn append_one(log: &ShardLog, data: &[u8]) -> u64 {
    log.append(&[Entry {
        key: b"k",
        data,
        arrival_ms: 0,
    }])
    .unwrap()
    .0
}

#[test]
fn sequence_numbers_are_never_reused_after_a_crash_and_a_lost_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = fill(dir.path(), 10);
    // A crash: no clean close.
    std::mem::forget(log);
    let seg = segment(dir.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    // The disk lost the last records whole (fsync = none, power loss): no torn frame.
    let frame = (len - sluice_shardlog::frame::SEGMENT_HEADER as u64) / 10;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3 * frame)
        .unwrap();
    let (log, report) = ShardLog::open(dir.path(), Options::default()).unwrap();
    assert_eq!(report.records, 7);
    assert!(report.damage.is_empty());
    assert!(report.seq_skipped > 0);
    // Counts and the newest number come from the records, not from the (skipped) numbering.
    assert_eq!(log.records(), 7);
    assert_eq!(log.last_seq(), Some(6));
    let next = append_one(&log, b"new");
    assert_eq!((log.records(), log.last_seq()), (8, Some(next)));
    assert!(
        next >= 10,
        "number {next} may have been issued before the crash"
    );
    // Order holds: the new record reads back after the old ones.
    let seqs = all_seqs(&log);
    assert_eq!(seqs, [0, 1, 2, 3, 4, 5, 6, next]);
    // A clean stop resumes exactly where it was, without another skip.
    drop(log);
    let (log, report) = ShardLog::open(dir.path(), Options::default()).unwrap();
    assert_eq!(report.seq_skipped, 0);
    assert_eq!(append_one(&log, b"after clean stop"), next + 1);
}

#[test]
fn a_damaged_mark_skips_blindly_rather_than_reuse() {
    let dir = tempfile::tempdir().unwrap();
    drop(fill(dir.path(), 5));
    std::fs::write(dir.path().join("seqmark"), b"garbage").unwrap();
    let (log, report) = ShardLog::open(dir.path(), Options::default()).unwrap();
    assert!(report.mark_damaged);
    assert!(append_one(&log, b"x") >= 5);
}

#[test]
fn a_frame_hidden_in_record_data_never_comes_back() {
    use sluice_shardlog::frame;
    let dir = tempfile::tempdir().unwrap();
    let log = fill(dir.path(), 3);
    // A producer embeds well-formed frames (with every salt it might guess, and v1) in its
    // record, claiming a huge sequence number; then the tail is torn.
    let mut payload = Vec::new();
    for salt in [0u64, 1, u64::MAX] {
        frame::encode(&mut payload, salt, 1_000_000_000_000_000, 0, b"k", b"evil");
    }
    frame::encode_v1(&mut payload, 1_000_000_000_000_000, 0, b"k", b"evil");
    append_one(&log, &payload);
    std::mem::forget(log);
    let seg = segment(dir.path());
    let bytes = std::fs::read(&seg).unwrap();
    // Cut inside the record's header: everything after it is a torn tail.
    let cut = bytes.len() - payload.len() - 10;
    std::fs::write(&seg, &bytes[..cut]).unwrap();
    let (log, report) = ShardLog::open(dir.path(), Options::default()).unwrap();
    assert_eq!(report.records, 3);
    let recs = log.read(0, 100, usize::MAX).unwrap();
    assert!(recs.iter().all(|r| r.data != b"evil"), "{recs:?}");
    assert!(log.next_seq() < 1_000_000_000_000_000);
}

#[test]
fn rescanning_damage_checks_a_constant_header_per_offset() {
    use sluice_shardlog::frame::{self, Codec};
    // A damaged 1 MiB record whose payload holds small little-endian numbers: every
    // offset spells a plausible length. The header checksum rejects each offset without
    // reading the length it claims, so the rescan is linear.
    let payload: Vec<u8> = (0..(1u32 << 18))
        .flat_map(|i| (100 + i % 300).to_le_bytes())
        .collect();
    let codec = Codec::V2 { salt: 0x1234_5678 };
    let passing = (0..payload.len())
        .filter(|&q| frame::check_header(&payload[q..], codec).is_some())
        .count();
    assert_eq!(passing, 0);
}

#[test]
fn a_retired_log_refuses_appends_and_keeps_its_mark() {
    let dir = tempfile::tempdir().unwrap();
    let log = fill(dir.path(), 3);
    log.retire();
    assert!(matches!(
        log.append(&[Entry {
            key: b"k",
            data: b"late",
            arrival_ms: 0
        }]),
        Err(sluice_shardlog::Error::Retired)
    ));
    assert_eq!(log.read(0, 10, usize::MAX).unwrap().len(), 3);
}

/// One `syncfs` commits the appends of many logs: each is then synced up to its end (its
/// own commit has nothing left to do), a second commit of the same ends syncs nothing,
/// and everything reads back after a reopen.
#[test]
fn one_filesystem_sync_commits_many_logs() {
    use sluice_shardlog::FsSync;
    let dir = tempfile::tempdir().unwrap();
    let fs = FsSync::open(dir.path())
        .unwrap()
        .expect("Linux >= 5.8: syncfs reports writeback errors");
    let logs: Vec<ShardLog> = (0..16)
        .map(|i| {
            ShardLog::open(&dir.path().join(format!("s{i}")), Options::default())
                .unwrap()
                .0
        })
        .collect();
    let ends: Vec<u64> = logs
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let d = format!("r{i}");
            l.append_unsynced(&[Entry {
                key: b"k",
                data: d.as_bytes(),
                arrival_ms: 0,
            }])
            .unwrap()
            .end
        })
        .collect();
    assert!(logs.iter().zip(&ends).all(|(l, e)| l.needs_sync(*e)));
    assert!(logs.iter().all(|l| fs.covers(l)));
    let pairs: Vec<(&ShardLog, u64)> = logs.iter().zip(ends.iter().copied()).collect();
    assert!(fs.commit(&pairs).unwrap(), "the first commit syncs");
    assert!(logs.iter().zip(&ends).all(|(l, e)| !l.needs_sync(*e)));
    assert!(
        !fs.commit(&pairs).unwrap(),
        "covered already: no second sync"
    );
    drop(logs);
    for i in 0..16 {
        let (log, _) =
            ShardLog::open(&dir.path().join(format!("s{i}")), Options::default()).unwrap();
        let recs = log.read(0, 10, usize::MAX).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(&recs[0].data[..], format!("r{i}").as_bytes());
    }
}

/// Writers appending to many logs at once, some committing through the filesystem sync
/// and some through each log's own: every commit covers its appends, nothing is lost or
/// numbered twice.
#[test]
fn filesystem_and_per_log_commits_mix_safely() {
    use sluice_shardlog::FsSync;
    let dir = tempfile::tempdir().unwrap();
    let fs = std::sync::Arc::new(FsSync::open(dir.path()).unwrap().unwrap());
    let logs: std::sync::Arc<Vec<ShardLog>> = std::sync::Arc::new(
        (0..12)
            .map(|i| {
                ShardLog::open(&dir.path().join(format!("s{i}")), Options::default())
                    .unwrap()
                    .0
            })
            .collect(),
    );
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (fs, logs) = (fs.clone(), logs.clone());
            std::thread::spawn(move || {
                for round in 0..40 {
                    let d = format!("{t}-{round}");
                    let ends: Vec<u64> = logs
                        .iter()
                        .map(|l| {
                            l.append_unsynced(&[Entry {
                                key: b"k",
                                data: d.as_bytes(),
                                arrival_ms: 0,
                            }])
                            .unwrap()
                            .end
                        })
                        .collect();
                    if t % 2 == 0 {
                        let pairs: Vec<(&ShardLog, u64)> =
                            logs.iter().zip(ends.iter().copied()).collect();
                        fs.commit(&pairs).unwrap();
                    } else {
                        for (l, e) in logs.iter().zip(&ends) {
                            l.commit(*e).unwrap();
                        }
                    }
                    assert!(logs.iter().zip(&ends).all(|(l, e)| !l.needs_sync(*e)));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for l in logs.iter() {
        let all = l.read(0, 10_000, usize::MAX).unwrap();
        assert_eq!(all.len(), 160);
        assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    }
}
