//! `kiln keys`: make a signing key pair, show the data dir's public key, rotate it and
//! export the set of keys it ever signed with (`kiln_attest::keyring`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use kiln_attest::keyring;
use kiln_attest::keys::KeyPair;
use kiln_daemon::Controller;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Write a new ECDSA P-256 key pair: DIR/kiln.key (PKCS#8 PEM, 0600) and DIR/kiln.pub (SPKI PEM).
    Generate {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print the public half of the data dir's signing key (generating it on first use).
    Public,
    /// Replace the data dir's signing key with a new one. The old key is retired: its private
    /// half is deleted, its public half stays in the key set with its validity, so provenance
    /// it signed still verifies (`kiln verify --keyring`). A running daemon signs with the new
    /// key after a restart.
    Rotate,
    /// Print the trusted public keys with their key ids and validity periods.
    Export {
        /// The key set as JSON (`kiln.dev/keyring/v1`), for `kiln verify --keyring`.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(data_dir: &Path, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Generate { out } => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let pair = KeyPair::generate()?;
            let files = pair.write_key_files(&out)?;
            println!("keyid {}", pair.keyid());
            println!("private key {}", files.private_key.display());
            println!("public key {}", files.public_key.display());
        }
        KeysCommand::Public => {
            let pair = crate::runtime()?.block_on(async {
                let controller = Controller::open(data_dir).await?;
                let pair = controller.signing_key(None);
                controller.state().close().await;
                pair
            })?;
            print!("{}", pair.public_key_pem()?);
        }
        KeysCommand::Rotate => {
            let dir = key_dir(data_dir)?;
            let old = KeyPair::from_pkcs8_pem_file(&dir.join(kiln_attest::keys::PRIVATE_KEY_FILE))?;
            let new = keyring::rotate(&dir, time::OffsetDateTime::now_utc())?;
            println!(
                "retired key {} (public half kept in {})",
                old.keyid(),
                dir.join(keyring::KEYRING_FILE).display()
            );
            println!("signing key {}", new.keyid());
        }
        KeysCommand::Export { json } => {
            let ring = keyring::Keyring::of_dir(&key_dir(data_dir)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ring)?);
            } else {
                for key in &ring.keys {
                    let until = key
                        .not_after
                        .map_or("now (signing)".to_string(), |t| t.to_string());
                    println!(
                        "keyid {} ({}), valid {} to {until}",
                        key.keyid, key.algorithm, key.not_before
                    );
                    print!("{}", key.public_key);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The data dir's key directory, with its signing key made if there is none yet.
fn key_dir(data_dir: &Path) -> anyhow::Result<PathBuf> {
    crate::runtime()?.block_on(async {
        let controller = Controller::open(data_dir).await?;
        let made = controller.signing_key(None).map(drop);
        controller.state().close().await;
        made
    })?;
    Ok(data_dir.join("keys"))
}
