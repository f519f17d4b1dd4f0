//! Readers and writers that hash what passes through them.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use kiln_core::Sha256Digest;
use kiln_core::digest::Sha256Hasher;

/// Hashes every byte read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256Hasher,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256Hasher::default(),
        }
    }

    /// Reads and hashes whatever is left, then returns the digest and size of everything read.
    pub(crate) fn drain(mut self) -> io::Result<(Sha256Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hasher.finish())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Which side of a copy failed.
pub(crate) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `src` to `dst`, hashing the bytes; returns their digest and count.
pub(crate) fn copy_hashing(
    src: &mut impl Read,
    dst: &mut impl Write,
) -> Result<(Sha256Digest, u64), CopyError> {
    let mut hasher = Sha256Hasher::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
    dst.flush().map_err(CopyError::Write)?;
    Ok(hasher.finish())
}

/// Size of one chunk of a [`write_hashing`] pipeline: a multiple of [`ALIGN`].
const CHUNK: usize = 1 << 20;
/// Chunks in flight: enough for the reader, the hasher and the writer to each hold a few.
const CHUNKS: usize = 8;
/// Alignment of memory, file offsets and lengths for `O_DIRECT` writes (covers 512-byte and
/// 4 KiB logical blocks).
const ALIGN: usize = 4096;
/// When the destination cannot be opened `O_DIRECT` (e.g. on tmpfs), the writer asks the kernel
/// to write back every this many bytes, so the final fsync finds little left to do.
const SYNC_EVERY: u64 = 64 << 20;

/// Which stage of a [`write_hashing`] pipeline failed.
#[derive(Debug)]
pub(crate) enum PipeError<E> {
    /// The producer failed (e.g. reading the source).
    Produce(E),
    /// Writing or syncing the destination failed.
    Write(io::Error),
}

/// Chunks kept for the next [`write_hashing`] call, so that most calls allocate none. Freshly
/// allocated chunks cost more than their copying: glibc serves these sizes from the heap once
/// one was freed, so each `vec![0; CHUNK]` zeroes a megabyte and faults its pages in (~0.3 ms
/// apiece, measured as the worker's largest CPU cost per no-op step before the pool).
static CHUNK_POOL: std::sync::Mutex<Vec<Chunk>> = std::sync::Mutex::new(Vec::new());

/// A buffer whose usable `CHUNK` bytes start at an `ALIGN`ed address, as `O_DIRECT` needs.
struct Chunk {
    buf: Vec<u8>,
    start: usize,
}

impl Chunk {
    /// A chunk from the pool, or a new one.
    fn take() -> Self {
        let pooled = CHUNK_POOL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        pooled.unwrap_or_else(|| {
            let buf = vec![0u8; CHUNK + ALIGN];
            // Address arithmetic only: the offset of the first aligned byte.
            let start = (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN;
            Self { buf, start }
        })
    }

    /// Returns the chunk to the pool (at most [`CHUNKS`] are kept). Its old bytes stay: every
    /// user writes before it reads, and only the bytes it wrote.
    fn give_back(self) {
        let mut pool = CHUNK_POOL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool.len() < CHUNKS {
            pool.push(self);
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + CHUNK]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + CHUNK]
    }
}

/// The hasher and writer threads of a [`write_hashing`] call, started when its first chunk is
/// full: a stream that fits in one chunk (a step's log, most outputs) is hashed and written on
/// the caller's thread, without threads or more chunks.
struct Pipeline<'scope> {
    free: std::sync::mpsc::Receiver<Chunk>,
    full: std::sync::mpsc::SyncSender<(Chunk, usize)>,
    hasher: std::thread::ScopedJoinHandle<'scope, (Sha256Digest, u64)>,
    writer: std::thread::ScopedJoinHandle<'scope, io::Result<()>>,
}

impl<'scope> Pipeline<'scope> {
    fn start<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        dst: &'env File,
        path: &'env Path,
    ) -> Self {
        use std::sync::mpsc::sync_channel;

        let (free_tx, free_rx) = sync_channel::<Chunk>(CHUNKS);
        let (hash_tx, hash_rx) = sync_channel::<(Chunk, usize)>(CHUNKS);
        let (write_tx, write_rx) = sync_channel::<(Chunk, usize)>(CHUNKS);
        // The producer holds one chunk; the rest circulate.
        for _ in 1..CHUNKS {
            // Cannot fail: the channel has room for all of them and its receiver is alive.
            let _ = free_tx.send(Chunk::take());
        }
        let hasher = scope.spawn(move || {
            let mut hasher = Sha256Hasher::default();
            for (chunk, len) in hash_rx {
                hasher.update(&chunk.bytes()[..len]);
                if write_tx.send((chunk, len)).is_err() {
                    break;
                }
            }
            hasher.finish()
        });
        let writer = scope.spawn(move || -> io::Result<()> {
            let mut sink = ChunkSink::new(dst, path);
            for (chunk, len) in write_rx {
                sink.write(&chunk.bytes()[..len])?;
                // The producer may be gone already (it failed, or it is done): then the chunk
                // goes back to the pool.
                if let Err(std::sync::mpsc::SendError(chunk)) = free_tx.send(chunk) {
                    chunk.give_back();
                }
            }
            Ok(())
        });
        Self {
            free: free_rx,
            full: hash_tx,
            hasher,
            writer,
        }
    }

    /// Closes the hasher's input, which ends both threads once they have drained it; returns
    /// the writer's result and the digest.
    fn finish(self) -> (io::Result<()>, io::Result<(Sha256Digest, u64)>) {
        drop(self.full);
        let written = self
            .writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("writer panicked")));
        let hashed = self
            .hasher
            .join()
            .map_err(|_| io::Error::other("hasher panicked"));
        // The chunks still circulating go back to the pool.
        for chunk in self.free.try_iter() {
            chunk.give_back();
        }
        (written, hashed)
    }
}

/// The producer's end of a [`write_hashing`] pipeline: fill it with [`ChunkWriter::read_from`]
/// or through [`Write`].
pub(crate) struct ChunkWriter<'scope, 'env> {
    scope: &'scope std::thread::Scope<'scope, 'env>,
    dst: &'env File,
    path: &'env Path,
    /// `None` until the first chunk is full.
    pipeline: Option<Pipeline<'scope>>,
    /// Always `Some` but while a chunk is handed on.
    chunk: Option<Chunk>,
    len: usize,
}

/// The error a [`ChunkWriter`] returns once the hasher or the writer has stopped; the real cause
/// is the writer's own error, which [`write_hashing`] reports instead.
fn broken_pipe() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the store writer stopped")
}

impl ChunkWriter<'_, '_> {
    fn chunk_mut(&mut self) -> &mut [u8] {
        self.chunk
            .as_mut()
            .expect("a chunk is held between sends")
            .bytes_mut()
    }

    /// Hands the current chunk on (starting the pipeline on the first) and takes a free one.
    /// Only the last chunk may be partial.
    fn send(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let (scope, dst, path) = (self.scope, self.dst, self.path);
        let pipeline = self
            .pipeline
            .get_or_insert_with(|| Pipeline::start(scope, dst, path));
        let next = pipeline.free.recv().map_err(|_| broken_pipe())?;
        let full = self.chunk.replace(next).expect("a chunk is held");
        pipeline
            .full
            .send((full, std::mem::take(&mut self.len)))
            .map_err(|_| broken_pipe())
    }

    /// Reads `src` to its end straight into the pipeline's chunks. Read errors are returned as
    /// `Ok(Err(_))`, so the caller can tell them from a stopped pipeline (`Err(_)`).
    pub(crate) fn read_from(&mut self, src: &mut impl Read) -> io::Result<io::Result<()>> {
        loop {
            if self.len == CHUNK {
                self.send()?;
            }
            let len = self.len;
            match src.read(&mut self.chunk_mut()[len..]) {
                Ok(0) => return Ok(Ok(())),
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Ok(Err(e)),
            }
        }
    }

    /// Ends the stream: hashes and writes what is left, waits for the pipeline if one started.
    /// `produced` is the producer's own result.
    fn finish<E>(mut self, produced: Result<(), E>) -> Result<(Sha256Digest, u64), PipeError<E>> {
        if self.pipeline.is_none() {
            // Everything fits in this one chunk: no thread was started.
            let chunk = self.chunk.take().expect("a chunk is held");
            if let Err(err) = produced {
                chunk.give_back();
                return Err(PipeError::Produce(err));
            }
            let bytes = &chunk.bytes()[..self.len];
            let written = self.dst.write_all_at(bytes, 0);
            let mut hasher = Sha256Hasher::default();
            hasher.update(bytes);
            chunk.give_back();
            written.map_err(PipeError::Write)?;
            return Ok(hasher.finish());
        }
        let sent = match produced {
            Ok(()) => Ok(self.send()),
            Err(err) => Err(err),
        };
        let pipeline = self.pipeline.take().expect("started above");
        if let Some(chunk) = self.chunk.take() {
            chunk.give_back();
        }
        match (sent, pipeline.finish()) {
            (_, (Err(err), _)) => Err(PipeError::Write(err)),
            (Err(err), (Ok(()), _)) => Err(PipeError::Produce(err)),
            (Ok(Err(err)), (Ok(()), _)) => Err(PipeError::Write(err)),
            (Ok(Ok(())), (Ok(()), hashed)) => hashed.map_err(PipeError::Write),
        }
    }
}

impl Write for ChunkWriter<'_, '_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.len == CHUNK {
            self.send()?;
        }
        let len = self.len;
        let n = bytes.len().min(CHUNK - len);
        self.chunk_mut()[len..len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes chunks at increasing offsets of the file at `path`: whole blocks through an `O_DIRECT`
/// descriptor when the file system allows one (no copy into the page cache, and the disk works
/// while the next chunks are hashed), the rest through `dst`.
struct ChunkSink<'a> {
    dst: &'a File,
    direct: Option<File>,
    pos: u64,
    unsynced: u64,
}

impl<'a> ChunkSink<'a> {
    fn new(dst: &'a File, path: &Path) -> Self {
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .inspect_err(|err| tracing::debug!(path = %path.display(), %err, "no O_DIRECT"))
            .ok();
        Self {
            dst,
            direct,
            pos: 0,
            unsynced: 0,
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let aligned = match &self.direct {
            Some(direct) => {
                let aligned = bytes.len() / ALIGN * ALIGN;
                match direct.write_all_at(&bytes[..aligned], self.pos) {
                    Ok(()) => aligned,
                    // Some file systems accept O_DIRECT at open() but not these alignments:
                    // write through the page cache from here on.
                    Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                        tracing::debug!(%err, "O_DIRECT write refused; writing buffered");
                        self.direct = None;
                        0
                    }
                    Err(err) => return Err(err),
                }
            }
            None => 0,
        };
        self.dst
            .write_all_at(&bytes[aligned..], self.pos + aligned as u64)?;
        self.pos += bytes.len() as u64;
        self.unsynced += (bytes.len() - aligned) as u64;
        if self.unsynced >= SYNC_EVERY {
            self.dst.sync_data()?;
            self.unsynced = 0;
        }
        Ok(())
    }
}

/// Writes what `produce` puts into its [`ChunkWriter`] to the empty file `dst` (opened at
/// `path`) and hashes it. Past one chunk, on three threads: the caller's produces chunk *n*
/// while one thread hashes chunk *n−1* and another writes chunk *n−2* (see [`ChunkSink`]); a
/// stream that fits in one chunk is hashed and written on the caller's thread. The digest is of
/// exactly the bytes written, in order. Returns their digest and count. The file still needs an
/// fsync to be durable.
pub(crate) fn write_hashing<E>(
    dst: &File,
    path: &Path,
    produce: impl FnOnce(&mut ChunkWriter) -> Result<(), E>,
) -> Result<(Sha256Digest, u64), PipeError<E>> {
    std::thread::scope(|scope| {
        let mut chunks = ChunkWriter {
            scope,
            dst,
            path,
            pipeline: None,
            chunk: Some(Chunk::take()),
            len: 0,
        };
        let produced = produce(&mut chunks);
        chunks.finish(produced)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    type Written = Result<(Sha256Digest, u64), PipeError<io::Error>>;

    /// Runs `write_hashing` over `data` into a fresh file; returns the result and the file.
    fn write(data: &[u8]) -> (Written, Vec<u8>) {
        let temp = tempfile::NamedTempFile::new().unwrap();
        let result = write_hashing(temp.as_file(), temp.path(), |chunks| {
            chunks.read_from(&mut &data[..])?
        });
        (result, std::fs::read(temp.path()).unwrap())
    }

    #[test]
    fn every_size_around_a_chunk_is_written_and_hashed_exactly() {
        for len in [0, 1, ALIGN + 3, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let data = pattern(len);
            let (result, written) = write(&data);
            let Ok((digest, size)) = result else {
                panic!("{len} bytes: write failed");
            };
            assert_eq!(size, len as u64, "{len} bytes");
            assert_eq!(digest, Sha256Digest::of(&data), "{len} bytes");
            assert!(
                written == data,
                "{len} bytes: the file differs from the stream"
            );
        }
    }

    #[test]
    fn a_failing_producer_is_reported_with_or_without_threads() {
        for len in [10, 2 * CHUNK + 5] {
            let temp = tempfile::NamedTempFile::new().unwrap();
            let data = pattern(len);
            let result = write_hashing(temp.as_file(), temp.path(), |chunks| {
                chunks.write_all(&data).map_err(|_| "pipe")?;
                Err::<(), _>("source broke")
            });
            assert!(
                matches!(result, Err(PipeError::Produce("source broke"))),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn pooled_chunks_leave_no_old_bytes_in_a_shorter_stream() {
        let (_, long) = write(&pattern(CHUNK));
        assert_eq!(long.len(), CHUNK);
        let (result, short) = write(b"short");
        assert_eq!(short, b"short");
        assert_eq!(result.ok().map(|r| r.1), Some(5));
    }
}
