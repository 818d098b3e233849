//! Encoding a buffer's bytes with the pipeline's compression. The gzip and zstd states
//! are kept by their owner ([`Encoders`], one per delivery) and reset for each object: a
//! new one allocates ~300 KiB (gzip) to ~1.4 MiB (zstd level 3) of fresh pages, which with thousands of small objects per
//! flush cost more than compressing them (page faults and `munmap` were 14 % of the
//! daemon's CPU at 10,000 partitions).

use crate::spec::{Codec, Compression};
use std::io::Write;

/// Compresses a whole buffer.
pub fn encode(c: Codec, data: &[u8]) -> Vec<u8> {
    Encoders::default().encode_slices(c, std::iter::once(data), data.len())
}

/// Compression states reused from one object to the next.
#[derive(Default)]
pub(super) struct Encoders {
    /// The deflate state and its level.
    deflate: Option<(u32, flate2::write::DeflateEncoder<Vec<u8>>)>,
    /// The zstd context and its level.
    zstd: Option<(i32, zstd::zstd_safe::CCtx<'static>)>,
}

impl Encoders {
    /// Compresses a buffer held in pieces (`len` bytes in all). Writing into a `Vec` cannot
    /// fail, so the encoders' I/O errors cannot happen here.
    pub(super) fn encode_slices<'a>(
        &mut self,
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
            Compression::Gzip => self.gzip(c.level.min(9), slices, len),
            Compression::Zstd => self.zstd(c.level as i32, slices, len),
            Compression::Snappy => {
                let mut e = snap::write::FrameEncoder::new(Vec::with_capacity(len / 2));
                all(&mut e, slices);
                e.into_inner().unwrap_or_default()
            }
        }
    }

    /// A gzip member (RFC 1952: header, deflate stream, CRC-32, length) from the reused
    /// deflate state.
    fn gzip<'a>(
        &mut self,
        level: u32,
        slices: impl Iterator<Item = &'a [u8]>,
        len: usize,
    ) -> Vec<u8> {
        // No name, no time (objects of the same records are the same bytes); XFL says
        // fastest / best as gzip(1) does; OS "unknown".
        let xfl = match level {
            9 => 2,
            0 | 1 => 4,
            _ => 0,
        };
        let mut out = Vec::with_capacity(len / 4 + 32);
        out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]);
        let mut crc = flate2::Crc::new();
        let enc = for_level(&mut self.deflate, level, || {
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level))
        });
        let body = (|| -> std::io::Result<Vec<u8>> {
            // `reset` ends whatever stream the state held (an empty one, into a `Vec` dropped
            // here) and starts a new one into `out`.
            enc.reset(out)?;
            for s in slices {
                crc.update(s);
                enc.write_all(s)?;
            }
            enc.reset(Vec::new())
        })();
        // Writing into a `Vec` cannot fail.
        let mut out = body.unwrap_or_default();
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&crc.amount().to_le_bytes());
        out
    }

    /// A zstd frame from the reused context.
    fn zstd<'a>(
        &mut self,
        level: i32,
        slices: impl Iterator<Item = &'a [u8]>,
        len: usize,
    ) -> Vec<u8> {
        use zstd::zstd_safe::{CCtx, CParameter, ResetDirective};
        let cctx = for_level(&mut self.zstd, level, || {
            let mut cctx = CCtx::create();
            let _ = cctx.set_parameter(CParameter::CompressionLevel(level));
            cctx
        });
        // A frame left unfinished (never: writing into a `Vec` cannot fail) is dropped;
        // the level stays.
        let _ = cctx.reset(ResetDirective::SessionOnly);
        let mut e = zstd::stream::write::Encoder::with_context(Vec::with_capacity(len / 4), cctx);
        for s in slices {
            let _ = e.write_all(s);
        }
        e.finish().unwrap_or_default()
    }
}

/// The state kept in `slot` if it was made for `level`, else a new one from `make`.
fn for_level<L: PartialEq + Copy, T>(
    slot: &mut Option<(L, T)>,
    level: L,
    make: impl FnOnce() -> T,
) -> &mut T {
    if slot.as_ref().is_some_and(|(l, _)| *l != level) {
        *slot = None;
    }
    &mut slot.get_or_insert_with(|| (level, make())).1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn decode(c: Compression, b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match c {
            Compression::Gzip => {
                // A single member: the plain decoder stops at its end, so trailing bytes
                // would go unnoticed — check they are none.
                let mut d = flate2::read::GzDecoder::new(b);
                d.read_to_end(&mut out).unwrap();
                let mut rest = Vec::new();
                d.into_inner().read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty(), "bytes after the gzip member");
            }
            Compression::Zstd => out = zstd::decode_all(b).unwrap(),
            _ => unreachable!(),
        }
        out
    }

    /// The reused state starts each object afresh: objects in a row, of any size and
    /// level (empty ones too), each decode to exactly their records, in the very bytes a
    /// fresh state gives.
    #[test]
    fn objects_from_the_reused_state_are_independent() {
        let mut shared = Encoders::default();
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut prev: Option<(Vec<u8>, Vec<u8>)> = None;
            for (i, level) in [1u32, 1, 6, 9, 1, 0, 3, 3].into_iter().enumerate() {
                if c == Compression::Zstd && level == 0 {
                    continue;
                }
                let data: Vec<u8> = (0..i * 7_919)
                    .map(|n| (n as u8).wrapping_mul(31) ^ (i as u8))
                    .collect();
                let codec = Codec {
                    compression: c,
                    level,
                };
                let pieces = data.chunks(3_000);
                let enc = shared.encode_slices(codec, pieces, data.len());
                assert_eq!(decode(c, &enc), data, "{c:?} level {level} object {i}");
                // A fresh state gives the same bytes (same pieces: where the input is cut
                // changes the deflate blocks).
                let fresh =
                    Encoders::default().encode_slices(codec, data.chunks(3_000), data.len());
                assert_eq!(fresh, enc, "{c:?}: the reused state starts afresh");
                if let Some((pdata, penc)) = &prev {
                    assert_eq!(&decode(c, penc), pdata, "an earlier object is untouched");
                }
                prev = Some((data, enc));
            }
        }
    }

    /// The gzip member has the header readers expect (magic, deflate, no flags) and a
    /// trailer with the CRC-32 and length of the records.
    #[test]
    fn gzip_members_carry_crc_and_length() {
        let data = b"{\"a\":1}\n{\"a\":2}\n".repeat(100);
        let enc = encode(
            Codec {
                compression: Compression::Gzip,
                level: 1,
            },
            &data,
        );
        assert_eq!(&enc[..4], &[0x1f, 0x8b, 8, 0]);
        let n = enc.len();
        let mut crc = flate2::Crc::new();
        crc.update(&data);
        assert_eq!(enc[n - 8..n - 4], crc.sum().to_le_bytes());
        assert_eq!(enc[n - 4..], (data.len() as u32).to_le_bytes());
    }
}
