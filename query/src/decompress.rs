//! An object store that hands out objects decompressed (by their extension: `.gz`,
//! `.zst`, `.snappy`) and counts the objects a query opened.
//!
//! DataFusion's own decompression needs its `compression` feature (liblzma, bzip2) and
//! has no snappy; sluice's objects only ever use gzip, zstd or snappy (framed), which the
//! codecs already in the build read. Decoding runs on a blocking thread and streams in
//! bounded chunks, so an object is never held whole in memory and a query that stops
//! early (LIMIT) stops the decoder.

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use sluiced::spec::Compression;
use std::collections::HashSet;
use std::io::Read;
use std::sync::{Arc, Mutex};

/// The objects a query read from (whole or in ranges, as Parquet is read).
#[derive(Debug, Default)]
pub struct Opened(Mutex<HashSet<Path>>);

impl Opened {
    fn add(&self, p: &Path) {
        if let Ok(mut s) = self.0.lock() {
            if !s.contains(p) {
                s.insert(p.clone());
            }
        }
    }

    /// How many objects were read.
    pub fn count(&self) -> usize {
        self.0.lock().map_or(0, |s| s.len())
    }

    /// Forgets them (reads for the schema sample are not the query's).
    pub fn clear(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.clear();
        }
    }
}

/// How an object's bytes are compressed, from its name: the extension the sink gives
/// each compression (`Compression::extension`).
pub fn codec_of(name: &str) -> Compression {
    [Compression::Gzip, Compression::Zstd, Compression::Snappy]
        .into_iter()
        .find(|c| name.ends_with(c.extension()))
        .unwrap_or(Compression::None)
}

/// A reader of `inner`'s bytes decompressed with `c`.
fn reader<'a>(
    c: Compression,
    inner: Box<dyn Read + Send + 'a>,
) -> std::io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match c {
        Compression::None => inner,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(inner)?),
        Compression::Snappy => Box::new(snap::read::FrameDecoder::new(inner)),
    })
}

/// Decompressed chunks handed over at a time (bounded: this many in flight per object).
const CHUNK: usize = 256 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;

/// The wrapper.
#[derive(Debug)]
pub struct Decompressing {
    inner: Arc<dyn ObjectStore>,
    opened: Arc<Opened>,
    codec: Option<Compression>,
}

impl Decompressing {
    /// Wraps `inner`; every object read is noted in `opened`. `codec`, when
    /// given, applies to every object whatever its name.
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        opened: Arc<Opened>,
        codec: Option<Compression>,
    ) -> Decompressing {
        Decompressing {
            inner,
            opened,
            codec,
        }
    }
}

impl std::fmt::Display for Decompressing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Decompressing({})", self.inner)
    }
}

/// A blocking `Read` over an object's byte stream (used on a blocking thread only).
struct StreamReader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    handle: tokio::runtime::Handle,
    current: Bytes,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

fn generic(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: "sluice-query",
        source: Box::new(e),
    }
}

/// Streams `payload` decompressed with `codec`, decoding on a blocking thread.
fn decompressed(
    payload: GetResultPayload,
    codec: Compression,
    location: &Path,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<object_store::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    let handle = tokio::runtime::Handle::current();
    let what = location.to_string();
    tokio::task::spawn_blocking(move || {
        let raw: Box<dyn Read + Send> = match payload {
            GetResultPayload::File(f, _) => Box::new(f),
            GetResultPayload::Stream(stream) => Box::new(StreamReader {
                stream,
                handle,
                current: Bytes::new(),
            }),
        };
        let mut reader = match reader(codec, raw) {
            Ok(r) => r,
            Err(e) => {
                let _ =
                    tx.blocking_send(Err(generic(std::io::Error::other(format!("{what}: {e}")))));
                return;
            }
        };
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            // Fill whole chunks: decoders hand out small pieces.
            let eof = loop {
                match reader.read(&mut buf[filled..]) {
                    Ok(0) => break true,
                    Ok(n) => {
                        filled += n;
                        if filled == CHUNK {
                            break false;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let msg = format!("cannot decompress {what}: {e}");
                        let _ = tx.blocking_send(Err(generic(std::io::Error::other(msg))));
                        return;
                    }
                }
            };
            buf.truncate(filled);
            if filled > 0 && tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return; // the reader stopped (LIMIT, error elsewhere)
            }
            if eof {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }).boxed()
}

#[async_trait::async_trait]
impl ObjectStore for Decompressing {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let codec = self.codec.unwrap_or_else(|| codec_of(location.as_ref()));
        let whole = options.range.is_none() && !options.head;
        if !options.head {
            self.opened.add(location);
        }
        let mut result = self.inner.get_opts(location, options).await?;
        if codec == Compression::None || !whole {
            return Ok(result);
        }
        let payload = std::mem::replace(
            &mut result.payload,
            GetResultPayload::Stream(futures::stream::empty().boxed()),
        );
        result.payload = GetResultPayload::Stream(decompressed(payload, codec, location));
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
