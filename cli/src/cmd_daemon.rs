//! `kiln daemon`: the controller as a service. Serves the HTTP API (docs/api.md) on
//! `--listen`, leases steps to `kiln worker`s and never runs a step itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use kiln_daemon::state::Database;
use kiln_daemon::{DispatchConfig, Server, ServerConfig};

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Address to listen on; port 0 picks a free port (printed as `listening on http://…`).
    /// Loopback only without `--tls`.
    #[arg(long, default_value = "127.0.0.1:7420", value_name = "ADDR")]
    listen: SocketAddr,
    /// Sign provenance with this PKCS#8 PEM key instead of the data dir's key.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Seconds a lease lives without a heartbeat.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    lease_ttl: u64,
    /// Leases a step gets before it fails.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,
    /// Serve HTTPS with a certificate from the data dir's CA (`DATA/pki`, made on first start);
    /// worker routes then need a client certificate from that CA, and the other routes answer
    /// loopback clients only (until API tokens exist).
    #[arg(long)]
    tls: bool,
    /// Another name (DNS name or IP address) for the server certificate; repeatable. The listen
    /// address, 127.0.0.1 and localhost are always included.
    #[arg(long = "tls-name", value_name = "NAME", requires = "tls")]
    tls_names: Vec<String>,
    /// Seconds a worker's client certificate is valid; workers renew at 2/3 of it.
    #[arg(long, default_value_t = 24 * 3600, value_name = "SECS", requires = "tls", value_parser = clap::value_parser!(u64).range(5..))]
    worker_cert_ttl: u64,
}

pub fn run(
    data_dir: &Path,
    database: Option<Database>,
    args: DaemonArgs,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.tls || args.listen.ip().is_loopback(),
        "--listen {}: without --tls nothing is authenticated, so the daemon listens only on \
         a loopback address (e.g. 127.0.0.1:7420)",
        args.listen
    );
    let config = ServerConfig {
        database,
        key: args.key,
        dispatch: DispatchConfig {
            lease_ttl: Duration::from_secs(args.lease_ttl),
            max_attempts: args.max_attempts,
            ..DispatchConfig::default()
        },
        ..ServerConfig::new(data_dir.to_owned())
    };
    crate::runtime()?.block_on(async {
        let server = Server::open(config).await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener
            .local_addr()
            .context("cannot read the listening address")?;
        if args.tls {
            let pki = kiln_daemon::pki::Pki::open_or_create(data_dir)?;
            let mut names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
            if !addr.ip().is_unspecified() {
                names.push(addr.ip().to_string());
            }
            names.extend(args.tls_names);
            names.sort();
            names.dedup();
            println!("ca fingerprint sha256:{}", pki.ca_fingerprint());
            println!("listening on https://{addr}");
            server
                .serve_tls(
                    listener,
                    &names,
                    Duration::from_secs(args.worker_cert_ttl),
                    shutdown_signal(),
                )
                .await?;
        } else {
            println!("listening on http://{addr}");
            server.serve(listener, shutdown_signal()).await?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Completes on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
