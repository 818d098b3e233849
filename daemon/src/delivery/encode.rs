//! Encoding a buffer's bytes with the pipeline's compression.

use crate::spec::{Codec, Compression};

/// Compresses a whole buffer.
pub fn encode(c: Codec, data: &[u8]) -> Vec<u8> {
    encode_slices(c, std::iter::once(data), data.len())
}

/// Compresses a buffer held in pieces (`len` bytes in all). Writing into a `Vec` cannot
/// fail, so the encoders' I/O errors cannot happen here.
pub(super) fn encode_slices<'a>(
    c: Codec,
    slices: impl Iterator<Item = &'a [u8]>,
    len: usize,
) -> Vec<u8> {
    fn all<'a, W: std::io::Write>(w: &mut W, slices: impl Iterator<Item = &'a [u8]>) {
        for s in slices {
            let _ = w.write_all(s);
        }
    }
    match c.compression {
        Compression::None => {
            let mut out = Vec::with_capacity(len);
            all(&mut out, slices);
            out
        }
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(len / 4),
                flate2::Compression::new(c.level.min(9)),
            );
            all(&mut e, slices);
            e.finish().unwrap_or_default()
        }
        Compression::Zstd => {
            match zstd::stream::write::Encoder::new(Vec::with_capacity(len / 4), c.level as i32) {
                Ok(mut e) => {
                    all(&mut e, slices);
                    e.finish().unwrap_or_default()
                }
                Err(_) => Vec::new(),
            }
        }
        Compression::Snappy => {
            let mut e = snap::write::FrameEncoder::new(Vec::with_capacity(len / 2));
            all(&mut e, slices);
            e.into_inner().unwrap_or_default()
        }
    }
}
