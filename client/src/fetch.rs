//! `kiln mirror fetch`: downloading a file from anywhere on the web for the mirror, on an
//! operator's machine that has network. The daemon never fetches at build time.
//!
//! Nothing downloaded is trusted for what it claims to be: the caller pins the digest, and the
//! mirror's admission checks it (and any signature, provenance and policy) before a byte is
//! stored. So plain `http://` is allowed here, and `https://` is checked against the
//! machine's own root certificates (the `ca-certificates` store), not kiln's controller CA.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;
/// How long the server may stay silent in the middle of an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a download did not complete. Nothing is kept of a failed download.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot set up the HTTP client: {reason}")]
    Setup { reason: String },
    #[error("{url}: cannot download")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: more than {limit} bytes; refused")]
    TooLarge { url: String, limit: u64 },
    #[error("cannot write the download to {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What came back: the size, and the URL the bytes were finally served from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    pub size: u64,
    pub final_url: String,
}

/// Downloads `url` into `out` (at `path`, for messages), at most `limit` bytes when given.
///
/// `http://` and `https://` only; https is verified against the machine's root store.
pub async fn download(
    url: &str,
    out: &mut std::fs::File,
    path: &Path,
    limit: Option<u64>,
) -> Result<Downloaded, FetchError> {
    let parsed = Url::parse(url).map_err(|e| FetchError::Url {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(FetchError::Url {
            url: url.to_owned(),
            reason: format!(
                "unsupported scheme {:?}; use http:// or https://",
                parsed.scheme()
            ),
        });
    }
    let transport = |source| FetchError::Transport {
        url: url.to_owned(),
        source,
    };
    let mut response = web_client()?.get(parsed).send().await.map_err(transport)?;
    if !response.status().is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let too_large = || FetchError::TooLarge {
        url: url.to_owned(),
        limit: limit.unwrap_or(u64::MAX),
    };
    if let (Some(limit), Some(len)) = (limit, response.content_length())
        && len > limit
    {
        return Err(too_large());
    }
    let final_url = response.url().to_string();
    let mut size = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        size += chunk.len() as u64;
        if limit.is_some_and(|limit| size > limit) {
            return Err(too_large());
        }
        out.write_all(&chunk).map_err(|source| FetchError::Write {
            path: path.to_owned(),
            source,
        })?;
    }
    out.sync_all().map_err(|source| FetchError::Write {
        path: path.to_owned(),
        source,
    })?;
    Ok(Downloaded { size, final_url })
}

/// A client for the public web: the machine's root certificates, a few redirects, the
/// environment's proxy settings (an operator's network may need one).
fn web_client() -> Result<reqwest::Client, FetchError> {
    let setup = |reason: String| FetchError::Setup { reason };
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A system store may hold a certificate rustls cannot use; the rest still count.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| setup(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_http_and_https_are_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut file = std::fs::File::create(&path).unwrap();
        let err = download("file:///etc/passwd", &mut file, &path, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("unsupported scheme"), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
