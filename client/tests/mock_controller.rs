//! The client against a scripted HTTP/1.1 server: status codes map to the right error, downloads
//! are verified byte for byte, uploads stream the file.

use std::sync::{Arc, Mutex};

use kiln_client::{Client, ClientError, Uploaded};
use kiln_core::Sha256Digest;
use kiln_core::api::v1::{Heartbeat, LeaseRequest, SubmitRun};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// A server that answers every request with the same status, content type and body.
struct Scripted {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    async fn start(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let request = read_request(&mut conn).await;
                log.lock().unwrap().push(request);
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(&body).await;
                let _ = conn.shutdown().await;
            }
        });
        Self { url, seen }
    }

    fn client(&self) -> Client {
        Client::new(&self.url).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads one request with a `content-length` body (the client never sends chunked bodies).
async fn read_request(conn: &mut tokio::net::TcpStream) -> Seen {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let len = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse::<usize>().unwrap());
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await.unwrap();
    Seen { method, path, body }
}

#[tokio::test]
async fn a_download_whose_bytes_do_not_match_the_digest_is_refused_and_removed() {
    let server = Scripted::start(200, "application/octet-stream", b"evil".to_vec()).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blob");
    let wanted = Sha256Digest::of(b"good");
    let err = server
        .client()
        .download_blob(&wanted, &dest)
        .await
        .unwrap_err();
    match err {
        ClientError::DigestMismatch {
            expected,
            actual,
            size,
        } => {
            assert_eq!(expected, wanted);
            assert_eq!(actual, Sha256Digest::of(b"evil"));
            assert_eq!(size, 4);
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(!dest.exists(), "refused bytes must not stay on disk");
    assert_eq!(
        server.seen()[0].path,
        format!("/v1/blobs/{}", wanted),
        "blobs are fetched by digest"
    );
}

#[tokio::test]
async fn a_download_that_matches_is_kept() {
    let server = Scripted::start(200, "application/octet-stream", b"good".to_vec()).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blob");
    let size = server
        .client()
        .download_blob(&Sha256Digest::of(b"good"), &dest)
        .await
        .unwrap();
    assert_eq!(size, 4);
    assert_eq!(std::fs::read(&dest).unwrap(), b"good");
}

#[tokio::test]
async fn a_download_never_overwrites_an_existing_file() {
    let server = Scripted::start(200, "application/octet-stream", b"good".to_vec()).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blob");
    std::fs::write(&dest, "mine").unwrap();
    let err = server
        .client()
        .download_blob(&Sha256Digest::of(b"good"), &dest)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::File { .. }), "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"mine");
}

#[tokio::test]
async fn an_upload_streams_the_file_to_its_digest() {
    let server = Scripted::start(201, "text/plain", Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("out");
    std::fs::write(&src, b"output bytes").unwrap();
    let digest = Sha256Digest::of(b"output bytes");
    let uploaded = server.client().upload_blob(&digest, &src).await.unwrap();
    assert_eq!(uploaded, Uploaded::Created);
    let seen = server.seen();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].path, format!("/v1/blobs/{digest}"));
    assert_eq!(seen[0].body, b"output bytes");
}

#[tokio::test]
async fn an_upload_of_a_blob_the_controller_has_is_already_present() {
    let server = Scripted::start(200, "text/plain", Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("out");
    std::fs::write(&src, b"x").unwrap();
    let uploaded = server
        .client()
        .upload_blob(&Sha256Digest::of(b"x"), &src)
        .await
        .unwrap();
    assert_eq!(uploaded, Uploaded::AlreadyPresent);
}

#[tokio::test]
async fn a_conflict_on_heartbeat_is_a_conflict_not_a_network_error() {
    let body = br#"{"error":"lease expired"}"#.to_vec();
    let server = Scripted::start(409, "application/json", body).await;
    let err = server
        .client()
        .heartbeat(
            "lease-1",
            &Heartbeat {
                worker_id: "w".into(),
            },
        )
        .await
        .unwrap_err();
    match &err {
        ClientError::Conflict { error, .. } => assert_eq!(error, "lease expired"),
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(!err.is_transient());
    assert_eq!(server.seen()[0].path, "/v1/leases/lease-1/heartbeat");
}

#[tokio::test]
async fn a_refused_submission_carries_every_diagnostic() {
    let body = br#"{"error":"invalid pipeline","diagnostics":["p.yaml:1:1: a","p.yaml:2:3: b"]}"#;
    let server = Scripted::start(400, "application/json", body.to_vec()).await;
    let err = server
        .client()
        .submit_run(&SubmitRun {
            pipeline_file: "p.yaml".into(),
            pipeline_yaml: "version: 1\n".into(),
            request_id: Some("req-1".into()),
        })
        .await
        .unwrap_err();
    match err {
        ClientError::Http {
            status,
            error,
            diagnostics,
            ..
        } => {
            assert_eq!(status, 400);
            assert_eq!(error, "invalid pipeline");
            assert_eq!(diagnostics, ["p.yaml:1:1: a", "p.yaml:2:3: b"]);
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
    let sent: serde_json::Value = serde_json::from_slice(&server.seen()[0].body).unwrap();
    assert_eq!(sent["request_id"], "req-1");
}

#[tokio::test]
async fn no_content_on_a_lease_request_means_nothing_is_ready() {
    let server = Scripted::start(204, "text/plain", Vec::new()).await;
    let lease = server
        .client()
        .claim_lease(&LeaseRequest {
            worker_id: "w".into(),
            wait_ms: None,
        })
        .await
        .unwrap();
    assert!(lease.is_none());
}

#[tokio::test]
async fn a_server_error_without_an_error_view_is_transient_and_explained() {
    let server = Scripted::start(503, "text/plain", b"starting up".to_vec()).await;
    let err = server.client().list_runs().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("starting up"), "{err}");
}

#[tokio::test]
async fn a_controller_that_is_not_there_is_a_transient_transport_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = Client::new(&url).unwrap().list_runs().await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_malformed_answer_is_a_decode_error() {
    let server = Scripted::start(200, "application/json", b"{not json".to_vec()).await;
    let err = server.client().get_run("r1").await.unwrap_err();
    assert!(matches!(err, ClientError::Decode { .. }), "{err}");
}
