//! `kiln keys`: make a signing key pair, show the data dir's public key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
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
    }
    Ok(ExitCode::SUCCESS)
}
