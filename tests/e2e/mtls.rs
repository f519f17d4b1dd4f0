//! `kiln daemon --tls` as a real process on loopback: who the TLS acceptor lets in.
//!
//! The tests play the worker with `kiln_client` over TLS, using certificates they issue from
//! the daemon's CA in its data dir (or from another CA, or with a past validity).

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Env;
use common::process::Proc;
use kiln_client::{Client, ClientError, ClientIdentity, TransportSecurity};
use kiln_core::api::v1::{
    Heartbeat, JoinRequest, LeaseRequest, RegisterWorker, RunState, StepReport, SubmitRun,
};
use kiln_daemon::pki::Pki;
use time::OffsetDateTime;

/// `kiln daemon --tls` on a free loopback port, killed on drop.
struct Daemon {
    proc: Proc,
    url: String,
    env: Env,
    /// Team `blue`'s API token.
    token: String,
}

impl Daemon {
    fn start() -> Self {
        Self::start_in(Env::new())
    }

    fn start_in(env: Env) -> Self {
        Self::start_with(env, &[])
    }

    fn start_with(env: Env, extra: &[&str]) -> Self {
        let data = env.data_dir();
        let mut args = vec!["--data-dir", data.to_str().unwrap()];
        args.extend(["daemon", "--listen", "127.0.0.1:0", "--tls"]);
        args.extend(extra);
        let proc = Proc::spawn("daemon", env.dir.path(), &args);
        let url = proc.listening_url();
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        let token = env.team_token("blue", "1h");
        Self {
            proc,
            url,
            env,
            token,
        }
    }

    /// The daemon's CA, loaded from its data dir.
    fn pki(&self) -> Pki {
        Pki::open_or_create(&self.env.data_dir()).unwrap()
    }

    fn client(&self, ca: &Pki, identity: Option<ClientIdentity>) -> Client {
        Client::with_security(
            &self.url,
            TransportSecurity::Tls {
                ca_pem: ca.ca_pem().to_string(),
                identity,
            },
        )
        .unwrap()
    }
}

impl Daemon {
    /// `kiln admin join-token create --ttl TTL` against the daemon's data dir; the token.
    fn join_token(&self, ttl: &str) -> String {
        let out = self
            .env
            .kiln_ok(&["admin", "join-token", "create", "--ttl", ttl]);
        let printed = String::from_utf8(out.stdout).unwrap();
        printed
            .lines()
            .find_map(|l| l.strip_prefix("join token: "))
            .unwrap_or_else(|| panic!("no token in {printed}"))
            .to_string()
    }

    /// A client that only pins the CA fingerprint, as a joining worker has.
    fn pinned_client(&self) -> Client {
        Client::with_security(
            &self.url,
            TransportSecurity::PinnedCa {
                fingerprint: self.pki().ca_fingerprint(),
            },
        )
        .unwrap()
    }

    /// A team's client: the daemon's CA, no certificate, team `blue`'s token.
    fn team_client(&self) -> Client {
        self.client(&self.pki(), None).with_token(&self.token)
    }

    fn submit(&self, yaml: &str) -> String {
        let client = self.team_client();
        runtime().block_on(async {
            client
                .submit_run(&SubmitRun {
                    pipeline_file: "p.yaml".into(),
                    pipeline_yaml: yaml.into(),
                    request_id: None,
                })
                .await
                .expect("submit over TLS with a team token")
                .run()
                .id
                .clone()
        })
    }

    fn logs(&self) -> String {
        self.proc.output()
    }
}

fn identity(pki: &Pki, worker: &str, from: OffsetDateTime, to: OffsetDateTime) -> ClientIdentity {
    let issued = pki.issue_worker_with_key(worker, from, to).unwrap();
    ClientIdentity {
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
    }
}

fn valid(pki: &Pki, worker: &str) -> ClientIdentity {
    let now = OffsetDateTime::now_utc();
    identity(
        pki,
        worker,
        now - Duration::from_secs(60),
        now + Duration::from_secs(3600),
    )
}

fn register() -> RegisterWorker {
    RegisterWorker {
        name: "w".into(),
        slots: 1,
        labels: Default::default(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A refusal in the handshake: the request never reached a handler.
fn assert_handshake_refused(result: Result<impl std::fmt::Debug, ClientError>) {
    match result {
        Err(ClientError::Transport { .. }) => {}
        other => panic!("expected a failed TLS handshake, got {other:?}"),
    }
}

#[test]
fn worker_routes_refuse_a_client_without_a_certificate() {
    let daemon = Daemon::start();
    let pki = daemon.pki();
    let client = daemon.client(&pki, None);
    runtime().block_on(async {
        match client.register_worker(&register()).await {
            Err(ClientError::Http { status: 401, .. }) => {}
            other => panic!("expected 401, got {other:?}"),
        }
        let digest = "0".repeat(64).parse().unwrap();
        let blob = daemon.env.path("blob");
        fs::write(&blob, b"x").unwrap();
        match client.upload_blob(&digest, &blob).await {
            Err(ClientError::Http { status: 401, .. }) => {}
            other => panic!("expected 401 for a blob upload, got {other:?}"),
        }
        // Team routes need a team token, even from loopback.
        match client.list_runs().await {
            Err(ClientError::Http { status: 401, .. }) => {}
            other => panic!("expected 401 without a team token, got {other:?}"),
        }
        daemon
            .team_client()
            .list_runs()
            .await
            .expect("GET /v1/runs with a team token");
    });
}

#[test]
fn a_certificate_from_the_daemons_ca_may_use_worker_routes() {
    let daemon = Daemon::start();
    let pki = daemon.pki();
    let client = daemon.client(&pki, Some(valid(&pki, "0190-test-worker")));
    runtime().block_on(async {
        client
            .register_worker(&register())
            .await
            .expect("a worker certificate from the daemon's CA is accepted");
    });
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let daemon = Daemon::start();
    let pki = daemon.pki();
    let other_dir = tempfile::tempdir().unwrap();
    let other = Pki::open_or_create(other_dir.path()).unwrap();
    assert_ne!(other.ca_fingerprint(), pki.ca_fingerprint());
    let client = daemon.client(&pki, Some(valid(&other, "intruder")));
    runtime().block_on(async {
        assert_handshake_refused(client.register_worker(&register()).await);
    });
}

#[test]
fn an_expired_certificate_is_refused() {
    let daemon = Daemon::start();
    let pki = daemon.pki();
    let now = OffsetDateTime::now_utc();
    let expired = identity(
        &pki,
        "expired",
        now - Duration::from_secs(2 * 24 * 3600),
        now - Duration::from_secs(24 * 3600),
    );
    let client = daemon.client(&pki, Some(expired));
    runtime().block_on(async {
        assert_handshake_refused(client.register_worker(&register()).await);
    });
}

#[test]
fn a_client_pinning_another_ca_refuses_the_daemon() {
    let daemon = Daemon::start();
    let other_dir = tempfile::tempdir().unwrap();
    let other = Pki::open_or_create(other_dir.path()).unwrap();
    let client = daemon.client(&other, None);
    runtime().block_on(async {
        assert_handshake_refused(client.list_runs().await);
    });
}

#[test]
fn the_daemon_keeps_its_ca_key_private_in_its_data_dir() {
    let daemon = Daemon::start();
    let key = daemon.env.data_dir().join("pki/ca.key");
    let mode = fs::metadata(&key).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    assert!(Path::new(&daemon.env.data_dir().join("pki/ca.pem")).exists());
}

#[test]
fn a_join_token_works_once() {
    let daemon = Daemon::start();
    let token = daemon.join_token("1h");
    let client = daemon.pinned_client();
    runtime().block_on(async {
        let (_, csr_pem) = kiln_client::enroll::new_key_and_csr().unwrap();
        let join = JoinRequest {
            token: token.clone(),
            csr_pem,
        };
        let enrolled = client.join(&join).await.expect("a fresh token joins");
        assert_eq!(
            kiln_client::enroll::pem_fingerprint(&enrolled.ca_pem),
            Some(daemon.pki().ca_fingerprint())
        );
        match client.join(&join).await {
            Err(ClientError::Http { status: 403, .. }) => {}
            other => panic!("a used token must be refused with 403, got {other:?}"),
        }
    });
}

#[test]
fn an_expired_join_token_is_refused() {
    let daemon = Daemon::start();
    let token = daemon.join_token("1s");
    std::thread::sleep(Duration::from_millis(1500));
    let client = daemon.pinned_client();
    runtime().block_on(async {
        let (_, csr_pem) = kiln_client::enroll::new_key_and_csr().unwrap();
        match client.join(&JoinRequest { token, csr_pem }).await {
            Err(ClientError::Http { status: 403, .. }) => {}
            other => panic!("an expired token must be refused with 403, got {other:?}"),
        }
    });
}

#[test]
fn a_worker_pinning_another_fingerprint_does_not_join() {
    let daemon = Daemon::start();
    let token = daemon.join_token("1h");
    let client = Client::with_security(
        &daemon.url,
        TransportSecurity::PinnedCa {
            fingerprint: "ab".repeat(32),
        },
    )
    .unwrap();
    runtime().block_on(async {
        let (_, csr_pem) = kiln_client::enroll::new_key_and_csr().unwrap();
        assert_handshake_refused(client.join(&JoinRequest { token, csr_pem }).await);
    });
}

const DAG: &str = "version: 1\nname: dag\nrootfs: busybox@1\nsteps:\n  - name: a\n    run: echo 1 > /out/n\n    outputs: [n]\n  - name: b\n    run: echo 2 > /out/n\n    outputs: [n]\n  - name: sum\n    needs: [a, b]\n    run: cat /in/a/n /in/b/n > /out/all\n    outputs: [all]\nartifacts:\n  - { name: all, from: sum, path: all }\n";

/// `kiln worker --controller https://… --join-token TOKEN`, killed on drop.
struct Worker {
    proc: Proc,
    data: std::path::PathBuf,
}

impl Worker {
    fn join(daemon: &Daemon, token: &str) -> Self {
        Self::start(daemon, Some(token), "worker")
    }

    /// Starts a worker; `log` names its output files.
    fn start(daemon: &Daemon, token: Option<&str>, log: &str) -> Self {
        let data = daemon.env.path("worker");
        let mut args = vec!["--data-dir", data.to_str().unwrap()];
        args.extend(["worker", "--controller", &daemon.url, "--name", "w1"]);
        args.extend(["--slots", "2", "--host-ids", "1300000:16"]);
        if let Some(token) = token {
            args.extend(["--join-token", token]);
        }
        let proc = Proc::spawn(log, daemon.env.dir.path(), &args);
        Self { proc, data }
    }

    fn logs(&self) -> String {
        self.proc.stderr()
    }
}

impl Daemon {
    /// Submits `yaml` and waits for the run to end.
    fn run_to_end(&self, yaml: &str, worker: &Worker) -> kiln_core::api::v1::RunView {
        let run = self.submit(yaml);
        let client = self.team_client();
        let deadline = Instant::now() + Duration::from_secs(120);
        runtime().block_on(async {
            loop {
                let view = client.get_run(&run).await.unwrap();
                if view.state != RunState::Running {
                    break view;
                }
                assert!(
                    Instant::now() < deadline,
                    "the run did not finish: {view:#?}\n{}\n{}",
                    self.logs(),
                    worker.logs()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }
}

#[test]
fn a_worker_renews_its_certificate_before_it_expires() {
    let env = Env::new();
    env.import_busybox();
    let daemon = Daemon::start_with(env, &["--worker-cert-ttl", "6"]);
    let token = daemon.join_token("1h");
    let worker = Worker::join(&daemon, &token);
    let deadline = Instant::now() + Duration::from_secs(60);
    let first_cert = loop {
        if let Ok(cert) = fs::read_to_string(worker.data.join("identity/cert.pem")) {
            break cert;
        }
        assert!(Instant::now() < deadline, "never joined\n{}", worker.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    // Past the first certificate's end (6 s): only renewed certificates can work now.
    std::thread::sleep(Duration::from_secs(11));
    let renewals = worker.logs().matches("client certificate renewed").count();
    assert!(renewals >= 2, "{renewals} renewal(s)\n{}", worker.logs());
    assert_ne!(
        fs::read_to_string(worker.data.join("identity/cert.pem")).unwrap(),
        first_cert
    );
    let view = daemon.run_to_end(DAG, &worker);
    assert_eq!(
        view.state,
        RunState::Succeeded,
        "{view:#?}\n{}\n{}",
        daemon.logs(),
        worker.logs()
    );
}

const ONE_STEP: &str = "version: 1\nname: one\nrootfs: busybox@1\nsteps:\n  - name: hello\n    run: echo hi > /out/h\n    outputs: [h]\nartifacts:\n  - { name: h, from: hello, path: h }\n";

#[test]
fn a_worker_cannot_act_for_another_worker() {
    let env = Env::new();
    env.import_busybox();
    let daemon = Daemon::start_in(env);
    let pki = daemon.pki();
    let alice = daemon.client(&pki, Some(valid(&pki, "alice")));
    let mallory = daemon.client(&pki, Some(valid(&pki, "mallory")));
    let run = daemon.submit(ONE_STEP);
    runtime().block_on(async {
        let a = alice.register_worker(&register()).await.unwrap().worker_id;
        let m = mallory
            .register_worker(&register())
            .await
            .unwrap()
            .worker_id;
        let lease = alice
            .claim_lease(&LeaseRequest {
                worker_id: a.clone(),
                wait_ms: None,
            })
            .await
            .unwrap()
            .expect("alice gets the step");
        // Mallory cannot speak as alice: claim, heartbeat or report with her worker id.
        let as_alice = |r: Result<_, ClientError>| match r {
            Err(ClientError::Http { status: 403, .. }) => {}
            other => panic!("expected 403, got {other:?}"),
        };
        as_alice(
            mallory
                .claim_lease(&LeaseRequest {
                    worker_id: a.clone(),
                    wait_ms: None,
                })
                .await
                .map(drop),
        );
        as_alice(
            mallory
                .heartbeat(
                    &lease.lease_id,
                    &Heartbeat {
                        worker_id: a.clone(),
                    },
                )
                .await,
        );
        assert_eq!(lease.spec.run_id, run);
        let record = record_for(&lease.spec);
        as_alice(
            mallory
                .report(
                    &lease.lease_id,
                    &StepReport {
                        worker_id: a.clone(),
                        record: record.clone(),
                        // Nor take alice's next lease through her report's answer.
                        claim_next: true,
                    },
                )
                .await
                .map(drop),
        );
        // ... nor report alice's lease as herself: the lease is not hers (409).
        match mallory
            .report(
                &lease.lease_id,
                &StepReport {
                    worker_id: m.clone(),
                    record,
                    claim_next: true,
                },
            )
            .await
        {
            Err(ClientError::Conflict { .. }) => {}
            other => panic!("expected 409, got {other:?}"),
        }
        // Alice's own heartbeat still works.
        alice
            .heartbeat(&lease.lease_id, &Heartbeat { worker_id: a })
            .await
            .expect("alice heartbeats her own lease");
    });
}

#[test]
fn a_joined_worker_runs_a_dag_over_mutual_tls() {
    let env = Env::new();
    env.import_busybox();
    let daemon = Daemon::start_in(env);
    let token = daemon.join_token("1h");
    let worker = Worker::join(&daemon, &token);
    let view = daemon.run_to_end(DAG, &worker);
    assert_eq!(
        view.state,
        RunState::Succeeded,
        "{view:#?}\n{}\n{}",
        daemon.logs(),
        worker.logs()
    );
    let worker_data = worker.data.clone();
    drop(worker);
    // Restarted without a token, the worker uses the certificate it keeps.
    let again = Worker::start(&daemon, None, "worker-again");
    let view = daemon.run_to_end(DAG, &again);
    assert_eq!(
        view.state,
        RunState::Succeeded,
        "{view:#?}\n{}",
        again.logs()
    );
    assert!(
        again.logs().contains("using the stored client certificate"),
        "{}",
        again.logs()
    );
    drop(again);
    // The worker keeps its key to itself.
    let mode = fs::metadata(worker_data.join("identity/key.pem"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    // The token is spent: a second worker cannot join with it.
    let client = daemon.pinned_client();
    runtime().block_on(async {
        let (_, csr_pem) = kiln_client::enroll::new_key_and_csr().unwrap();
        match client.join(&JoinRequest { token, csr_pem }).await {
            Err(ClientError::Http { status: 403, .. }) => {}
            other => panic!("a used token must be refused with 403, got {other:?}"),
        }
    });
}

/// A record for `spec` as a worker would report it (nothing uploaded; never accepted here).
fn record_for(spec: &kiln_core::StepSpec) -> kiln_core::StepRecord {
    let log = kiln_core::LogRecord {
        sha256: "0".repeat(64).parse().unwrap(),
        size: 0,
    };
    let exit = kiln_core::ExitRecord::Exited { code: 0 };
    kiln_daemon::state::testing::record_for_spec(spec, exit, Vec::new(), log)
}
