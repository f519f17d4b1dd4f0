//! Readers and writers that hash what passes through them.

use std::io::{self, Read, Write};

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

/// Hashes every byte written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256Hasher::default(),
        }
    }

    /// Flushes, then returns the inner writer with the digest and size of everything written.
    pub(crate) fn finish(mut self) -> io::Result<(W, Sha256Digest, u64)> {
        self.inner.flush()?;
        let (digest, size) = self.hasher.finish();
        Ok((self.inner, digest, size))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
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
