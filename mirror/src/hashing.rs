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

/// A buffer whose usable `CHUNK` bytes start at an `ALIGN`ed address, as `O_DIRECT` needs.
struct Chunk {
    buf: Vec<u8>,
    start: usize,
}

impl Chunk {
    fn new() -> Self {
        let buf = vec![0u8; CHUNK + ALIGN];
        // Address arithmetic only: the offset of the first aligned byte.
        let start = (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN;
        Self { buf, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + CHUNK]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + CHUNK]
    }
}

/// The producer's end of a [`write_hashing`] pipeline: fill it with [`ChunkWriter::read_from`]
/// or through [`Write`].
pub(crate) struct ChunkWriter {
    free: std::sync::mpsc::Receiver<Chunk>,
    full: std::sync::mpsc::SyncSender<(Chunk, usize)>,
    chunk: Chunk,
    len: usize,
}

/// The error a [`ChunkWriter`] returns once the hasher or the writer has stopped; the real cause
/// is the writer's own error, which [`write_hashing`] reports instead.
fn broken_pipe() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the store writer stopped")
}

impl ChunkWriter {
    /// Hands the current chunk on and takes a free one. Only the last chunk may be partial.
    fn send(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let next = self.free.recv().map_err(|_| broken_pipe())?;
        let full = std::mem::replace(&mut self.chunk, next);
        self.full
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
            match src.read(&mut self.chunk.bytes_mut()[self.len..]) {
                Ok(0) => return Ok(Ok(())),
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Ok(Err(e)),
            }
        }
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.len == CHUNK {
            self.send()?;
        }
        let n = bytes.len().min(CHUNK - self.len);
        self.chunk.bytes_mut()[self.len..self.len + n].copy_from_slice(&bytes[..n]);
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
/// `path`) and hashes it, on three threads: the caller's produces chunk *n* while one thread
/// hashes chunk *n−1* and another writes chunk *n−2* (see [`ChunkSink`]). The digest is of
/// exactly the bytes written, in order. Returns their digest and count. The file still needs an
/// fsync to be durable.
pub(crate) fn write_hashing<E>(
    dst: &File,
    path: &Path,
    produce: impl FnOnce(&mut ChunkWriter) -> Result<(), E>,
) -> Result<(Sha256Digest, u64), PipeError<E>> {
    use std::sync::mpsc::sync_channel;

    let (free_tx, free_rx) = sync_channel::<Chunk>(CHUNKS);
    let (hash_tx, hash_rx) = sync_channel::<(Chunk, usize)>(CHUNKS);
    let (write_tx, write_rx) = sync_channel::<(Chunk, usize)>(CHUNKS);
    for _ in 1..CHUNKS {
        // Cannot fail: the channel has room for all of them and its receiver is alive.
        let _ = free_tx.send(Chunk::new());
    }
    std::thread::scope(|scope| {
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
                // The producer may be gone already (it failed, or it is done).
                let _ = free_tx.send(chunk);
            }
            Ok(())
        });

        let mut chunks = ChunkWriter {
            free: free_rx,
            full: hash_tx,
            chunk: Chunk::new(),
            len: 0,
        };
        let produced = produce(&mut chunks).map(|()| chunks.send());
        // Closing the hasher's input ends both threads once they have drained it.
        drop(chunks);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("writer panicked")));
        let hashed = hasher
            .join()
            .map_err(|_| io::Error::other("hasher panicked"));
        match (produced, written) {
            (_, Err(err)) => Err(PipeError::Write(err)),
            (Err(err), Ok(())) => Err(PipeError::Produce(err)),
            (Ok(Err(err)), Ok(())) => Err(PipeError::Write(err)),
            (Ok(Ok(())), Ok(())) => hashed.map_err(PipeError::Write),
        }
    })
}
