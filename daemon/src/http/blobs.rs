//! Blob bodies, streamed both ways: nothing holds a whole blob in memory.
//!
//! Uploads go through [`BlobStore::put_reader`] behind a reader that hashes what it passes on
//! and fails at the end of the body when the digest is not the one in the path, so the store
//! drops its temporary file and keeps nothing. Downloads are re-verified by the store first.

use std::io::{self, Read};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt as _;
use kiln_core::Sha256Digest;
use kiln_core::digest::Sha256Hasher;
use kiln_mirror::{BlobStore, StoreError};
use tokio_util::io::{ReaderStream, StreamReader, SyncIoBridge};

use super::error::ApiError;
use crate::controller::Controller;

/// A digest from a URL path.
pub fn parse_digest(text: &str) -> Result<Sha256Digest, ApiError> {
    Sha256Digest::from_str(text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{text:?} is not a sha256 digest: {e}"),
        )
    })
}

/// Why [`CheckedReader`] ended an upload early.
#[derive(Debug, thiserror::Error)]
enum UploadRefused {
    #[error("the body has sha256 {actual}, not {expected}")]
    Mismatch {
        expected: Sha256Digest,
        actual: Sha256Digest,
    },
    #[error("the body is larger than {max} bytes")]
    TooLarge { max: u64 },
}

/// Passes bytes through while hashing them; at the end, an error unless they hash to
/// `expected`, so the store never commits them.
struct CheckedReader<R> {
    inner: R,
    hasher: Option<Sha256Hasher>,
    expected: Sha256Digest,
    seen: u64,
    max: u64,
}

impl<R: Read> Read for CheckedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(n);
        };
        if n == 0 {
            let (actual, _) = self.hasher.take().expect("checked above").finish();
            if actual != self.expected {
                return Err(io::Error::other(UploadRefused::Mismatch {
                    expected: self.expected,
                    actual,
                }));
            }
            return Ok(0);
        }
        self.seen += n as u64;
        if self.seen > self.max {
            return Err(io::Error::other(UploadRefused::TooLarge { max: self.max }));
        }
        hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// `PUT /v1/blobs/{sha256}`: 201 when stored, 200 when already present, 422 when the bytes
/// do not hash to the path's digest (nothing kept), 413 past `max_bytes`.
pub async fn put(
    controller: Arc<Controller>,
    expected: Sha256Digest,
    body: Body,
    max_bytes: u64,
) -> Result<StatusCode, ApiError> {
    if controller.store().contains(&expected) {
        return Ok(StatusCode::OK);
    }
    let stream = body.into_data_stream().map_err(io::Error::other);
    let reader = CheckedReader {
        inner: SyncIoBridge::new(StreamReader::new(stream)),
        hasher: Some(Sha256Hasher::default()),
        expected,
        seen: 0,
        max: max_bytes,
    };
    let stored = tokio::task::spawn_blocking(move || controller.store().put_reader(reader))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    match stored {
        Ok(stored) if stored.sha256 == expected => {
            tracing::debug!(sha256 = %expected, size = stored.size, "blob uploaded");
            Ok(StatusCode::CREATED)
        }
        Ok(stored) => Err(ApiError::internal(&UploadRefused::Mismatch {
            expected,
            actual: stored.sha256,
        })),
        Err(StoreError::ReadStream { err }) => match err
            .get_ref()
            .and_then(|e| e.downcast_ref::<UploadRefused>())
        {
            Some(refused @ UploadRefused::Mismatch { .. }) => {
                tracing::warn!(sha256 = %expected, error = %refused, "blob upload refused");
                Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("blob refused: {refused}"),
                ))
            }
            Some(refused @ UploadRefused::TooLarge { .. }) => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("blob refused: {refused}"),
            )),
            None => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {err}"),
            )),
        },
        Err(err) => Err(ApiError::internal(&err)),
    }
}

/// Where the store keeps a blob (its documented layout: `blobs/sha256/<2 hex>/<64 hex>`).
fn blob_path(store: &BlobStore, digest: &Sha256Digest) -> PathBuf {
    let hex = digest.to_string();
    store
        .root()
        .join("blobs")
        .join("sha256")
        .join(&hex[..2])
        .join(&hex)
}

/// A blob as a streamed response, after the store re-verified it.
pub async fn get(
    controller: Arc<Controller>,
    digest: Sha256Digest,
    content_type: &'static str,
) -> Result<Response, ApiError> {
    get_from(controller, digest, 0, content_type).await
}

/// [`get`] from byte `offset` on (past the end: an empty body).
pub async fn get_from(
    controller: Arc<Controller>,
    digest: Sha256Digest,
    offset: u64,
    content_type: &'static str,
) -> Result<Response, ApiError> {
    let check = controller.clone();
    let verified = tokio::task::spawn_blocking(move || check.store().verify(&digest))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    match verified {
        Ok(()) => {}
        Err(StoreError::Missing { .. }) => {
            return Err(ApiError::not_found(format!("no blob {digest}")));
        }
        Err(err) => return Err(ApiError::internal(&err)),
    }
    let path = blob_path(controller.store(), &digest);
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal(&e))?
        .len();
    let offset = offset.min(size);
    tokio::io::AsyncSeekExt::seek(&mut file, io::SeekFrom::Start(offset))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let len = size - offset;
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(ReaderStream::new(file)),
    )
        .into_response())
}

/// `200` with the blob's length when the store has it, else `404`.
pub fn head(controller: &Controller, digest: &Sha256Digest) -> Result<Response, ApiError> {
    let path = blob_path(controller.store(), digest);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_LENGTH, meta.len().to_string()),
            ],
            Body::empty(),
        )
            .into_response()),
        _ => Err(ApiError::not_found(format!("no blob {digest}"))),
    }
}
