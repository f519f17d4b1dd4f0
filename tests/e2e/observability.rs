//! The real `kiln daemon`, with `--log-format json`: its log is JSON lines with the events'
//! fields, and the probe and metrics routes answer over TCP.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_core::api::v1::{RegisterWorker, WorkerRegistered};

/// The daemon process, killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection; the status and the body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

#[test]
fn daemon_logs_json_lines_with_the_events_fields() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("daemon.log");
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["--log-format", "json", "--log", "info", "daemon"])
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("KILN_LOG")
        .env_remove("KILN_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);
    let mut stdout = BufReader::new(daemon.0.stdout.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the daemon exited: {}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        if let Some(url) = line.trim().strip_prefix("listening on http://") {
            break url.to_owned();
        }
    };

    assert_eq!(http(&addr, "GET", "/healthz", ""), (200, "ok\n".into()));
    assert_eq!(http(&addr, "GET", "/readyz", ""), (200, "ready\n".into()));
    let register = serde_json::to_string(&RegisterWorker {
        name: "w1".into(),
        slots: 2,
        labels: Default::default(),
    })
    .unwrap();
    let (status, body) = http(&addr, "POST", "/v1/workers", &register);
    assert_eq!(status, 200, "{body}");
    let worker_id = serde_json::from_str::<WorkerRegistered>(&body)
        .unwrap()
        .worker_id;
    let (status, metrics) = http(&addr, "GET", "/metrics", "");
    assert_eq!(status, 200);
    assert!(
        metrics.lines().any(|l| l == "kiln_workers_registered 1"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "kiln_workers_alive 1"),
        "{metrics}"
    );

    // The event is written before the answer is sent; give the writer a moment all the same.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log_path)
        .unwrap()
        .contains("worker registered")
    {
        assert!(Instant::now() < deadline, "no `worker registered` event");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(daemon);

    let log = std::fs::read_to_string(&log_path).unwrap();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect();
    assert!(!events.is_empty());
    for event in &events {
        assert!(event["timestamp"].is_string(), "{event}");
        assert!(event["level"].is_string(), "{event}");
        assert!(event["message"].is_string(), "{event}");
    }
    let registered = events
        .iter()
        .find(|e| e["message"] == "worker registered")
        .unwrap();
    assert_eq!(registered["level"], "INFO");
    assert_eq!(registered["target"], "kiln_daemon::dispatch");
    assert_eq!(registered["worker"], worker_id.as_str());
    assert_eq!(registered["name"], "w1");
    assert_eq!(registered["slots"], 2);
    let key = events
        .iter()
        .find(|e| e["message"] == "generated signing key")
        .unwrap();
    assert!(key["keyid"].is_string(), "{key}");
}
