//! `kiln admin`: operator commands run against the daemon's data dir (like `kiln mirror`),
//! on the controller's machine.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use kiln_daemon::Controller;
use kiln_daemon::pki::{Enrollment, Pki};
use kiln_daemon::state::Database;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// One-time tokens with which workers join (get a client certificate).
    #[command(subcommand)]
    JoinToken(JoinTokenCommand),
    /// API tokens with which a team submits and reads its runs.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make an expiring API token for a team. Only its hash is stored, so it is printed once.
    Create {
        /// The team: 1-64 of A-Z a-z 0-9 . _ -
        #[arg(long, value_name = "NAME")]
        team: String,
        /// How long the token is valid: e.g. 90s, 30m, 1h, 30d.
        #[arg(long, default_value = "30d", value_parser = parse_ttl)]
        ttl: Duration,
    },
}

#[derive(Subcommand, Debug)]
pub enum JoinTokenCommand {
    /// Make a one-time, expiring join token. It embeds the CA fingerprint the worker pins;
    /// only its hash is stored, so it is printed once.
    Create {
        /// How long the token may be used: e.g. 90s, 30m, 1h, 2d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
    },
}

/// `90s`, `30m`, `1h`, `2d` (or bare seconds).
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("expected a duration like 1h or 30m, found {text:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}; use s, m, h or d"
            ));
        }
    };
    if secs == 0 {
        return Err("the ttl must be above 0".into());
    }
    Ok(Duration::from_secs(secs))
}

pub fn run(
    data_dir: &Path,
    database: Option<&Database>,
    cmd: AdminCommand,
) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(async {
        let controller = Controller::open_with(data_dir, database)
            .await
            .context("cannot open the data dir")?;
        match cmd {
            AdminCommand::JoinToken(JoinTokenCommand::Create { ttl }) => {
                let pki = Pki::open_or_create(data_dir).context("cannot open the daemon's CA")?;
                let fingerprint = pki.ca_fingerprint();
                let token = Enrollment::new(controller.state().clone())
                    .create_token(&fingerprint, ttl, OffsetDateTime::now_utc())
                    .await
                    .context("cannot create a join token")?;
                println!("join token: {}", token.token);
                println!("ca fingerprint: sha256:{fingerprint}");
                println!(
                    "expires: {}",
                    token.expires_at.format(&Rfc3339).unwrap_or_default()
                );
            }
            AdminCommand::Token(TokenCommand::Create { team, ttl }) => {
                anyhow::ensure!(
                    kiln_daemon::state::valid_team_name(&team),
                    "invalid team name {team:?}: use 1-64 of A-Z a-z 0-9 . _ -"
                );
                let secret = kiln_daemon::state::random_secret()
                    .context("cannot draw random bytes for the token")?;
                let made = controller
                    .state()
                    .create_team_token(&team, &secret, ttl, OffsetDateTime::now_utc())
                    .await
                    .context("cannot create an API token")?;
                println!("token: {}", made.token);
                println!("team: {team}");
                println!(
                    "expires: {}",
                    made.expires_at.format(&Rfc3339).unwrap_or_default()
                );
            }
        }
        controller.state().close().await;
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_take_a_unit() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("45"), Ok(Duration::from_secs(45)));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
