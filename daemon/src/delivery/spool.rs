//! Spool files: a partition buffer that grows past [`SPILL_AT`] moves to disk, and from
//! then on its records stream through the compressor into a file under
//! `data_dir/spool/<pipeline>/`, so a large object never sits in RAM (compressed or not).
//! The finished file is the object's body (`sl_object.body_path`) and is removed when the
//! object is dropped — stored, or abandoned (a replay from the checkpoint rebuilds it).
//! Spool files are scratch: leftovers of a crash are deleted when the pipeline starts.

use crate::spec::{Codec, Compression};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Uncompressed bytes after which a buffer moves to a spool file.
pub const SPILL_AT: usize = 8 << 20;
/// Most spool files a pipeline keeps open (each holds a file descriptor and an encoder);
/// past it, buffers stay in RAM under the memory budget.
pub const MAX_OPEN: usize = 256;
const WRITE_BUFFER: usize = 64 << 10;

/// A spool file that is removed when dropped.
#[derive(Debug)]
pub struct SpoolFile(PathBuf);

impl SpoolFile {
    /// A new, empty spool file in `dir`, opened for writing (a converted object's body).
    pub fn create(dir: &Path) -> std::io::Result<(File, SpoolFile)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{:016x}.spool", fastrand::u64(..)));
        let f = File::create(&path)?;
        Ok((f, SpoolFile(path)))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// One per spooled buffer (at most MAX_OPEN): the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Encoder {
    None(BufWriter<File>),
    Gzip(flate2::write::GzEncoder<BufWriter<File>>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<File>>),
    Snappy(snap::write::FrameEncoder<BufWriter<File>>),
}

/// An open spool: records written here are compressed on the way to the file.
pub struct Spool {
    enc: Encoder,
    raw: u64,
    // Last: dropped (file removed) after the encoder closed it.
    file: SpoolFile,
}

impl Spool {
    /// A new spool file in `dir`, compressing like [`super::encode`].
    pub fn create(dir: &Path, c: Codec) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{:016x}.spool", fastrand::u64(..)));
        let out = BufWriter::with_capacity(WRITE_BUFFER, File::create(&path)?);
        let file = SpoolFile(path);
        let enc = match c.compression {
            Compression::None => Encoder::None(out),
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::new(c.level.min(9)),
            )),
            Compression::Zstd => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(out, c.level as i32)?)
            }
            Compression::Snappy => Encoder::Snappy(snap::write::FrameEncoder::new(out)),
        };
        Ok(Spool { enc, raw: 0, file })
    }

    /// RAM an open spool holds (encoder state and write buffer), for the memory budget.
    pub fn memory(c: Codec) -> u64 {
        WRITE_BUFFER as u64
            + match c.compression {
                Compression::None => 0,
                Compression::Gzip => 320 << 10,
                // zstd's context grows with its window: measured upper bounds per level band
                // (levels 1-3, 4-9, 10-19).
                Compression::Zstd if c.level <= 3 => 1400 << 10,
                Compression::Zstd if c.level <= 9 => 12 << 20,
                Compression::Zstd => 96 << 20,
                Compression::Snappy => 140 << 10,
            }
    }

    /// Appends uncompressed bytes.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.raw += bytes.len() as u64;
        match &mut self.enc {
            Encoder::None(w) => w.write_all(bytes),
            Encoder::Gzip(w) => w.write_all(bytes),
            Encoder::Zstd(w) => w.write_all(bytes),
            Encoder::Snappy(w) => w.write_all(bytes),
        }
    }

    /// Uncompressed bytes written so far.
    pub fn raw(&self) -> u64 {
        self.raw
    }

    /// Ends the compressed stream and flushes it to the file (no fsync: the stream, not
    /// the spool, is what survives a crash).
    pub fn finish(self) -> std::io::Result<SpoolFile> {
        let out = match self.enc {
            Encoder::None(w) => w,
            Encoder::Gzip(w) => w.finish()?,
            Encoder::Zstd(w) => w.finish()?,
            Encoder::Snappy(w) => w.into_inner().map_err(|e| e.into_error())?,
        };
        out.into_inner().map_err(|e| e.into_error())?;
        Ok(self.file)
    }
}

/// The uncompressed bytes of a buffer moved out of RAM under memory pressure (a spill):
/// appended chunk by chunk whenever the budget is exceeded, with no file descriptor or
/// encoder held in between, so any number of buffers can spill. At flush the bytes go
/// through the compressor into an ordinary [`Spool`] file, and the object keeps the size
/// and time boundaries of `buffer.size` / `buffer.interval`.
pub struct RawSpill {
    file: SpoolFile,
    len: u64,
}

impl RawSpill {
    /// A new, empty spill file in `dir`.
    pub fn create(dir: &Path) -> std::io::Result<RawSpill> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{:016x}.raw", fastrand::u64(..)));
        File::create(&path)?;
        Ok(RawSpill {
            file: SpoolFile(path),
            len: 0,
        })
    }

    /// Appends bytes (no fsync: the stream, not the spill, is what survives a crash).
    pub fn append<'a>(&mut self, slices: impl Iterator<Item = &'a [u8]>) -> std::io::Result<()> {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.file.path())?;
        let before = self.len;
        let mut w = BufWriter::with_capacity(WRITE_BUFFER, f);
        let mut added = 0u64;
        let res = slices
            .into_iter()
            .try_for_each(|s| {
                added += s.len() as u64;
                w.write_all(s)
            })
            .and_then(|()| w.flush());
        match res {
            Ok(()) => {
                self.len = before + added;
                Ok(())
            }
            Err(e) => {
                // All or nothing: a partial append would put these bytes in the object
                // twice (they stay in RAM). Cut the file back to what it held.
                let _ = w.get_ref().set_len(before);
                Err(e)
            }
        }
    }

    /// Bytes spilled.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Streams the spilled bytes into `sp`, 64 KiB at a time.
    pub fn copy_into(&self, sp: &mut Spool) -> std::io::Result<()> {
        use std::io::Read;
        let mut f = File::open(self.file.path())?;
        let mut buf = vec![0u8; WRITE_BUFFER];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            sp.write(&buf[..n])?;
        }
    }
}

/// Removes a pipeline's leftover spool and spill files (from a crash).
pub fn clean(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.path()
            .extension()
            .is_some_and(|x| x == "spool" || x == "raw")
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spool_holds_what_encode_would_produce_and_vanishes_when_dropped() {
        use super::super::tests::{decode, json_lines, ALL};
        let dir = tempfile::tempdir().unwrap();
        let data = json_lines(200_000);
        for c in ALL {
            let mut s = Spool::create(dir.path(), c.codec()).unwrap();
            for chunk in data.chunks(777) {
                s.write(chunk).unwrap();
            }
            assert_eq!(s.raw(), data.len() as u64);
            let f = s.finish().unwrap();
            let body = std::fs::read(f.path()).unwrap();
            assert_eq!(decode(c, &body), data, "{c:?}");
            let p = f.path().to_path_buf();
            drop(f);
            assert!(!p.exists());
        }
        let s = Spool::create(dir.path(), Compression::Gzip.codec()).unwrap();
        drop(s);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
