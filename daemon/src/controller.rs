//! The controller: one handle over the data dir's state, store and signing key.
//!
//! Data dir layout: `state.sqlite` (the database, unless a PostgreSQL database is given),
//! `store/` (the content-addressed store), `keys/kiln.key` + `keys/kiln.pub` (the default
//! signing key, generated on first use), `keys/steplog.key` + `keys/steplog.vkey` (the step
//! log's Ed25519 checkpoint key and its verifier key string, generated on first use).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use kiln_attest::keys::{KeyId, KeyPair, PublicKey};
use kiln_attest::tlog::{CheckpointError, NoteSigner, NoteVerifier};
use kiln_core::{BlobKind, MirrorRef, Sha256Digest};
use kiln_mirror::{BlobStore, StoreError};
use time::OffsetDateTime;

use crate::evidence::{BundleEvidence, Fetched, LicenseEvidence};
use crate::policy::{Candidate, Decision, MirrorPolicy, POLICY_FILE, PolicyError};
use crate::state::{AddOutcome, Database, MirrorEntry, MirrorEvidence, State, StateError};

/// Who asserts a `--sha256` digest. Only an operator at the CLI can, for now.
const ASSERTED_BY_OPERATOR: &str = "operator";

/// Where the last good copy of each mirror policy file is kept, in the data dir.
const LAST_GOOD_POLICY_DIR: &str = "policy-last-good";

/// Errors of the controller's own operations.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot create data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] kiln_attest::keys::KeyError),
    #[error("{path}: expected a regular file")]
    NotAFile { path: PathBuf },
    #[error("step log key {path}")]
    LogKey {
        path: PathBuf,
        #[source]
        source: CheckpointError,
    },
    #[error("cannot read or write step log key {path}")]
    LogKeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not hold a verifier key string (`<name>+<key ID>+<key>`)")]
    LogVerifierKey { path: PathBuf },
    #[error("{path}: expected a directory or a tar archive")]
    NotATree { path: PathBuf },
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{reason}; nothing was stored")]
    Refused { reason: String },
    #[error("cannot read signature {path}")]
    ReadSignature {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a base64 signature (as `cosign sign-blob` writes)")]
    SignatureEncoding {
        path: PathBuf,
        #[source]
        source: base64::DecodeError,
    },
    #[error(
        "a signature or bundle needs one key to verify it with (--key or --certificate), and a key needs a signature"
    )]
    SignatureWithoutKey,
    #[error("cannot read {path}")]
    ReadSource {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has sha256 {actual}, but {expected} was asserted")]
    DigestMismatch {
        path: PathBuf,
        expected: Sha256Digest,
        actual: Sha256Digest,
    },
}

/// The controller's handle on its data dir.
#[derive(Debug)]
pub struct Controller {
    data_dir: PathBuf,
    state: State,
    store: BlobStore,
    /// The step log key, loaded on first use.
    log_signer: Mutex<Option<Arc<NoteSigner>>>,
}

impl Controller {
    /// Opens (creating if needed) the data dir, with its state in `DATA/state.sqlite`.
    pub async fn open(data_dir: &Path) -> Result<Self, ControllerError> {
        Self::open_with(data_dir, None).await
    }

    /// Opens (creating if needed) the data dir, with its state in `database` (`None`: the
    /// data dir's `state.sqlite`).
    pub async fn open_with(
        data_dir: &Path,
        database: Option<&Database>,
    ) -> Result<Self, ControllerError> {
        fs::create_dir_all(data_dir).map_err(|source| ControllerError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let store = BlobStore::open(&data_dir.join("store"))?;
        let state = match database {
            Some(db) => State::connect(db).await?,
            None => State::open(&data_dir.join("state.sqlite")).await?,
        };
        Ok(Self {
            data_dir: data_dir.to_owned(),
            state,
            store,
            log_signer: Mutex::new(None),
        })
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `DATA/git`, where every git mirror is kept as a bare `NAME.git` (docs/git-sources.md).
    pub fn git_dir(&self) -> PathBuf {
        self.data_dir.join("git")
    }

    /// The state database.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The content-addressed store.
    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    /// The signing key at `path`, or the data dir's default key, generated on first use.
    pub fn signing_key(&self, path: Option<&Path>) -> Result<KeyPair, ControllerError> {
        if let Some(path) = path {
            return Ok(KeyPair::from_pkcs8_pem_file(path)?);
        }
        let dir = self.data_dir.join("keys");
        let private = dir.join("kiln.key");
        if !private.exists() {
            fs::create_dir_all(&dir).map_err(|source| ControllerError::DataDir {
                path: dir.clone(),
                source,
            })?;
            let pair = KeyPair::generate()?;
            pair.write_key_files(&dir)?;
            tracing::info!(keyid = %pair.keyid(), path = %private.display(), "generated signing key");
            return Ok(pair);
        }
        Ok(KeyPair::from_pkcs8_pem_file(&private)?)
    }

    /// The step log's checkpoint key: `keys/steplog.key` (PKCS#8 PEM, mode 0600) named as
    /// `keys/steplog.vkey` says, or a fresh Ed25519 key named `kiln/<hostname>/steps`,
    /// generated and written on first use. Workers never see it; only checkpoints are signed
    /// with it.
    pub fn log_signer(&self) -> Result<Arc<NoteSigner>, ControllerError> {
        let mut cached = self.log_signer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(signer) = cached.as_ref() {
            return Ok(signer.clone());
        }
        let dir = self.data_dir.join("keys");
        let private = dir.join(crate::steplog::LOG_KEY_FILE);
        let public = dir.join(crate::steplog::LOG_VKEY_FILE);
        let file_err = |path: &Path| {
            let path = path.to_owned();
            move |source| ControllerError::LogKeyFile { path, source }
        };
        let key_err = |path: &Path| {
            let path = path.to_owned();
            move |source| ControllerError::LogKey { path, source }
        };
        let signer = if private.exists() {
            let vkey = self.log_verifier()?;
            let pem = fs::read(&private).map_err(file_err(&private))?;
            let signer =
                NoteSigner::from_pkcs8_pem(vkey.name(), &pem).map_err(key_err(&private))?;
            if signer.verifier() != vkey {
                return Err(ControllerError::LogVerifierKey { path: public });
            }
            signer
        } else {
            fs::create_dir_all(&dir).map_err(|source| ControllerError::DataDir {
                path: dir.clone(),
                source,
            })?;
            let signer = NoteSigner::generate(&crate::steplog::default_log_name())
                .map_err(key_err(&private))?;
            {
                let pem = signer.to_pkcs8_pem().map_err(key_err(&private))?;
                write_new(&private, 0o600, pem.as_bytes()).map_err(file_err(&private))?;
            }
            write_new(
                &public,
                0o644,
                format!("{}\n", signer.verifier()).as_bytes(),
            )
            .map_err(file_err(&public))?;
            tracing::info!(name = signer.name(), key_id = %signer.key_id(), path = %private.display(), "generated step log key");
            signer
        };
        let signer = Arc::new(signer);
        *cached = Some(signer.clone());
        Ok(signer)
    }

    /// The step log's verifier key, as kept in `keys/steplog.vkey`.
    pub fn log_verifier(&self) -> Result<NoteVerifier, ControllerError> {
        let path = self
            .data_dir
            .join("keys")
            .join(crate::steplog::LOG_VKEY_FILE);
        let text = fs::read_to_string(&path).map_err(|source| ControllerError::LogKeyFile {
            path: path.clone(),
            source,
        })?;
        text.trim()
            .parse()
            .map_err(|_| ControllerError::LogVerifierKey { path })
    }

    /// The trust policy's path: `path`, or `mirror-policy.yaml` in the data dir.
    pub fn policy_path(&self, path: Option<&Path>) -> PathBuf {
        path.map_or_else(|| self.data_dir.join(POLICY_FILE), Path::to_owned)
    }

    /// The trust policy in force now (read on every add, so edits apply without a restart).
    /// A policy file with an error is reported (a warning with every `FILE:LINE:COLUMN`) and
    /// its last good copy, kept under `DATA/policy-last-good/`, stays in force; with no good
    /// copy yet, the error refuses the add.
    pub fn load_policy(
        &self,
        path: Option<&Path>,
    ) -> Result<Option<MirrorPolicy>, ControllerError> {
        let path = self.policy_path(path);
        let keep = self.data_dir.join(LAST_GOOD_POLICY_DIR);
        let (policy, problem) = MirrorPolicy::load_keeping_last_good(&path, &keep)?;
        if let Some(problem) = problem {
            tracing::warn!(
                policy = %path.display(),
                "the mirror policy has errors; its last good copy stays in force:\n{problem}"
            );
        }
        Ok(policy)
    }

    /// Adds a single file to the mirror as NAME@VERSION, under the data dir's policy.
    pub async fn mirror_add_file(
        &self,
        path: &Path,
        reference: MirrorRef,
        expected: Option<Sha256Digest>,
    ) -> Result<(MirrorEntry, AddOutcome), ControllerError> {
        let admission = Admission {
            expected,
            ..Admission::default()
        };
        self.mirror_admit_file(path, reference, &admission).await
    }

    /// Adds a single file to the mirror as NAME@VERSION with the evidence in `admission`.
    ///
    /// The policy is read now (so edits apply without a restart). The file is staged once:
    /// copied into a temporary file in the store while it is hashed. The digest, signature
    /// (plain or in a Sigstore bundle), kiln provenance, license and policy are all checked
    /// against the staged copy, and only then is that copy committed under its digest: a
    /// refused file leaves no blob and no row, and a file changed while it is being added
    /// cannot swap the verified bytes for others.
    ///
    /// Bytes kiln built are recognised by digest even without `--provenance`: an artifact this
    /// controller published is admitted only when its provenance (from the store) verifies.
    pub async fn mirror_admit_file(
        &self,
        path: &Path,
        reference: MirrorRef,
        admission: &Admission<'_>,
    ) -> Result<(MirrorEntry, AddOutcome), ControllerError> {
        let policy = self.load_policy(admission.policy)?;
        let meta = fs::metadata(path).map_err(|_| ControllerError::NotAFile {
            path: path.to_owned(),
        })?;
        let file_name = admission
            .file_name
            .map(str::to_owned)
            .or_else(|| path.file_name().and_then(|n| n.to_str()).map(str::to_owned));
        let (true, Some(file_name)) = (meta.is_file(), file_name) else {
            return Err(ControllerError::NotAFile {
                path: path.to_owned(),
            });
        };
        if let Some(policy) = &policy {
            refuse_on(policy.check_name(reference.name()))?;
            refuse_on(policy.check_size(reference.name(), meta.len()))?;
        }
        // Staged: hashed on the way into a temporary file in the store, checked there, and
        // only given its name (committed) once every check passed; dropped otherwise.
        let staged = self.store.stage_file(path)?;
        let digest = staged.sha256();
        check_expected(path, admission.expected, digest)?;
        let mut evidence = MirrorEvidence {
            asserted: admission
                .expected
                .map(|d| (d, ASSERTED_BY_OPERATOR.to_owned())),
            ..no_evidence(policy.as_ref())
        };
        evidence.details.fetched = admission.fetched.clone();
        let signer = self.check_signature(path, staged.path(), admission, &mut evidence)?;
        let provenance = self
            .check_built(
                &reference,
                digest,
                admission,
                policy.as_ref(),
                &mut evidence,
            )
            .await?;
        if let Some(policy) = &policy {
            self.check_license(policy, &reference, admission.license, &mut evidence)?;
            let candidate = Candidate {
                name: reference.name(),
                size: staged.size(),
                verified_signer: signer.as_ref(),
            };
            match policy.decide(&candidate) {
                Decision::Refuse(reason) => return Err(ControllerError::Refused { reason }),
                Decision::Admit { by, signer } => {
                    evidence.policy_decision = format!("{}: {by}", policy.origin());
                    evidence.signer_name = signer;
                }
            }
        } else if let Some(license) = admission.license {
            evidence.details.license = Some(declared_license(license, "no policy".into()));
        }
        if let Some(document) = provenance {
            self.store.put_reader(document.as_bytes())?;
        }
        let stored = staged.commit()?;
        self.catalogue(reference, stored, BlobKind::File { file_name }, &evidence)
            .await
    }

    /// Verifies a plain signature or a Sigstore bundle over the staged bytes at `staged`,
    /// recording it in `evidence`; returns the verifying key's id. A signature that does not
    /// verify is always refused, policy or not. (The signed bytes are read into memory for
    /// the check: a rule's `max_size` bounds them.)
    fn check_signature(
        &self,
        path: &Path,
        staged: &Path,
        admission: &Admission<'_>,
        evidence: &mut MirrorEvidence,
    ) -> Result<Option<KeyId>, ControllerError> {
        let signed = admission.signature.or(admission.bundle);
        let key = match (admission.key, admission.certificate, signed) {
            (Some(key), None, Some(_)) => PublicKey::from_spki_pem_file(key)?,
            (None, Some(cert), Some(_)) => {
                let (key, certificate) =
                    crate::admission::read_certificate(cert, OffsetDateTime::now_utc())
                        .map_err(|reason| ControllerError::Refused { reason })?;
                evidence.details.certificate = Some(certificate);
                key
            }
            (None, None, None) => return Ok(None),
            _ => return Err(ControllerError::SignatureWithoutKey),
        };
        let bytes = &fs::read(staged).map_err(|source| ControllerError::ReadSource {
            path: path.to_owned(),
            source,
        })?[..];
        let refused = |what: &Path, detail: String| ControllerError::Refused {
            reason: format!(
                "{} does not verify over {} with key {} ({}): {detail}",
                what.display(),
                path.display(),
                key.keyid(),
                key.algorithm()
            ),
        };
        let (raw, b64) = if let Some(bundle) = admission.bundle {
            let text =
                fs::read_to_string(bundle).map_err(|source| ControllerError::ReadSource {
                    path: bundle.to_owned(),
                    source,
                })?;
            let verified = kiln_attest::bundle::verify_blob_bundle(bytes, &text, &key)
                .map_err(|e| refused(bundle, e.to_string()))?;
            evidence.details.bundle = Some(BundleEvidence {
                media_type: verified.media_type,
                sha256: Sha256Digest::of(text.as_bytes()).to_string(),
                tlog_entries: verified.tlog_entries,
            });
            let b64 = base64::engine::general_purpose::STANDARD.encode(&verified.signature);
            (verified.signature, b64)
        } else {
            let sig = admission.signature.expect("checked above");
            let (raw, b64) = read_signature(sig)?;
            if !key.verifies(&raw, bytes) {
                return Err(refused(sig, "bad signature".into()));
            }
            (raw, b64)
        };
        debug_assert!(key.verifies(&raw, bytes));
        evidence.signature = Some(b64);
        evidence.signer_keyid = Some(key.keyid().to_string());
        evidence.signer_algorithm = Some(key.algorithm().to_string());
        Ok(Some(key.keyid().clone()))
    }

    /// Checks kiln provenance, given (`--provenance`) or found (the bytes are an artifact this
    /// controller published), recording it in `evidence`; returns the document to keep in the
    /// store. Refuses a name whose rule requires provenance when there is none.
    async fn check_built(
        &self,
        reference: &MirrorRef,
        digest: Sha256Digest,
        admission: &Admission<'_>,
        policy: Option<&MirrorPolicy>,
        evidence: &mut MirrorEvidence,
    ) -> Result<Option<String>, ControllerError> {
        let document =
            match admission.provenance {
                Some(path) => Some(fs::read_to_string(path).map_err(|source| {
                    ControllerError::ReadSource {
                        path: path.to_owned(),
                        source,
                    }
                })?),
                None => self.published_provenance(digest).await?,
            };
        let Some(document) = document else {
            if let Some(rule) = policy
                .filter(|p| p.requires_provenance(reference.name()))
                .and_then(|p| p.rule_for(reference.name()))
            {
                return Err(ControllerError::Refused {
                    reason: format!(
                        "refused by {rule}: kiln provenance required (give --provenance FILE)"
                    ),
                });
            }
            return Ok(None);
        };
        let builders = self.trusted_builders(policy, reference.name());
        let checked =
            crate::admission::check_provenance(&self.state, &builders, digest, &document).await?;
        match checked {
            Ok(found) => {
                evidence.details.provenance = Some(found);
                Ok(Some(document))
            }
            Err(reason) => Err(ControllerError::Refused {
                reason: format!("{reference} was built by kiln, but {reason}"),
            }),
        }
    }

    /// The stored provenance of the newest published artifact with these bytes, if any.
    async fn published_provenance(
        &self,
        digest: Sha256Digest,
    ) -> Result<Option<String>, ControllerError> {
        let Some(built) = self.state.newest_published_artifact(&digest).await? else {
            return Ok(None);
        };
        let bytes = self.store.read_verified(&built.provenance_sha256)?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// The keys trusted to sign kiln provenance for `name`: the policy's builders, or, when it
    /// names none, every key of this controller's keyring (current and rotated out).
    fn trusted_builders(
        &self,
        policy: Option<&MirrorPolicy>,
        name: &str,
    ) -> Vec<crate::admission::TrustedBuilder> {
        if let Some(builders) = policy.and_then(|p| p.builders_for(name)) {
            return builders.into_iter().map(Into::into).collect();
        }
        let ring = match kiln_attest::keyring::Keyring::of_dir(&self.data_dir.join("keys")) {
            Ok(ring) => ring,
            Err(err) => {
                tracing::warn!(error = %err, "no keyring: this controller's keys are not trusted as builders");
                return Vec::new();
            }
        };
        ring.keys
            .iter()
            .filter_map(|k| k.public_key().ok())
            .map(|key| crate::admission::TrustedBuilder { name: None, key })
            .collect()
    }

    /// Decides the declared license under `policy`, recording it in `evidence`.
    fn check_license(
        &self,
        policy: &MirrorPolicy,
        reference: &MirrorRef,
        license: Option<&str>,
        evidence: &mut MirrorEvidence,
    ) -> Result<(), ControllerError> {
        let decision = policy
            .check_license(reference.name(), license)
            .map_err(|reason| ControllerError::Refused { reason })?;
        if license.is_some() || decision != "no license rule" {
            evidence.details.license = Some(LicenseEvidence {
                expression: license.map(str::to_owned),
                source: ASSERTED_BY_OPERATOR.into(),
                decision,
            });
        }
        Ok(())
    }

    /// Adds a directory (archived deterministically) or a tar archive to the mirror as a tree.
    /// The tree is extracted once before it is catalogued, so a hostile archive is refused now.
    pub async fn mirror_add_tree(
        &self,
        path: &Path,
        reference: MirrorRef,
        as_rootfs: bool,
    ) -> Result<(MirrorEntry, AddOutcome), ControllerError> {
        self.mirror_admit_tree(path, reference, as_rootfs, None)
            .await
    }

    /// Like [`Self::mirror_add_tree`], under the policy at `policy` (default: the data dir's).
    /// Trees carry no signature yet, so a rule that requires one refuses every tree; size is
    /// measured (the deterministic archive of a directory, or the tar file) before anything is
    /// stored.
    pub async fn mirror_admit_tree(
        &self,
        path: &Path,
        reference: MirrorRef,
        as_rootfs: bool,
        policy: Option<&Path>,
    ) -> Result<(MirrorEntry, AddOutcome), ControllerError> {
        let policy = self.load_policy(policy)?;
        let meta = fs::metadata(path).map_err(|_| ControllerError::NotATree {
            path: path.to_owned(),
        })?;
        if !meta.is_dir() && !meta.is_file() {
            return Err(ControllerError::NotATree {
                path: path.to_owned(),
            });
        }
        let mut evidence = no_evidence(policy.as_ref());
        if as_rootfs {
            evidence.details.packages = crate::admission::rootfs_packages(path);
        }
        if let Some(policy) = &policy {
            let name = reference.name();
            refuse_on(policy.check_name(name))?;
            check_package_licenses(policy, name, &mut evidence)?;
            if let Some(rule) = policy.rule_for(name) {
                if rule.require_signature {
                    return Err(ControllerError::Refused {
                        reason: format!(
                            "refused by {rule}: signature required (trees cannot be signed yet: \
                             add a signed tar archive as a file)"
                        ),
                    });
                }
                if rule.max_size.is_some() {
                    let size = if meta.is_dir() {
                        let mut counter = CountingSink(0);
                        kiln_mirror::archive_dir(path, &mut counter)?;
                        counter.0
                    } else {
                        meta.len()
                    };
                    refuse_on(policy.check_size(name, size))?;
                }
                evidence.policy_decision = format!("{}: {rule}", policy.origin());
            } else {
                evidence.policy_decision = format!("{}: no rule matched", policy.origin());
            }
        }
        let stored = if meta.is_dir() {
            self.store.put_dir(path)?
        } else {
            self.store.put_file(path)?
        };
        if as_rootfs {
            self.store.rootfs(&stored.sha256)?;
        } else {
            self.store.tree(&stored.sha256)?;
        }
        self.catalogue(reference, stored, BlobKind::Tree, &evidence)
            .await
    }

    async fn catalogue(
        &self,
        reference: MirrorRef,
        stored: kiln_mirror::Stored,
        kind: BlobKind,
        evidence: &MirrorEvidence,
    ) -> Result<(MirrorEntry, AddOutcome), ControllerError> {
        let entry = MirrorEntry {
            reference,
            sha256: stored.sha256,
            kind,
            size: stored.size,
            added_at: OffsetDateTime::now_utc(),
        };
        let outcome = self
            .state
            .add_mirror_entry_with_evidence(&entry, Some(evidence))
            .await?;
        Ok((entry, outcome))
    }
}

/// What an operator presents with a file: an asserted digest, a cosign-style signature or a
/// Sigstore bundle and the key to verify it with, kiln provenance, a license, where it was
/// fetched from, and the policy to decide under (default: the data dir's).
#[derive(Clone, Debug, Default)]
pub struct Admission<'a> {
    pub expected: Option<Sha256Digest>,
    pub signature: Option<&'a Path>,
    /// A Sigstore bundle holding a signature over the file (`cosign sign-blob --bundle`).
    pub bundle: Option<&'a Path>,
    pub key: Option<&'a Path>,
    /// An X.509 certificate (PEM) whose key verifies the signature, instead of `key`.
    pub certificate: Option<&'a Path>,
    /// kiln provenance (`.intoto.jsonl`) for bytes kiln built.
    pub provenance: Option<&'a Path>,
    /// The file's license, an SPDX expression.
    pub license: Option<&'a str>,
    /// `kiln mirror fetch`: where the bytes came from.
    pub fetched: Option<Fetched>,
    /// The file name steps see (default: the file's own name).
    pub file_name: Option<&'a str>,
    pub policy: Option<&'a Path>,
}

/// Decides every package's license of a root filesystem under the rule for `name`, before
/// anything is stored; a package whose license is known and not allowed refuses the import.
fn check_package_licenses(
    policy: &MirrorPolicy,
    name: &str,
    evidence: &mut MirrorEvidence,
) -> Result<(), ControllerError> {
    let packages = &evidence.details.packages;
    if packages.is_empty() || policy.check_license(name, None).as_deref() == Ok("no license rule") {
        return Ok(());
    }
    for p in packages {
        if let Err(reason) = policy.check_license(name, p.license.as_deref()) {
            return Err(ControllerError::Refused {
                reason: format!("package {} {}: {reason}", p.name, p.version),
            });
        }
    }
    let known = packages.iter().filter(|p| p.license.is_some()).count();
    evidence.details.license = Some(LicenseEvidence {
        expression: None,
        source: "debian copyright files".into(),
        decision: format!(
            "{known} of {} packages with a known license, all allowed; the rest unknown",
            packages.len()
        ),
    });
    Ok(())
}

/// A license the operator declared, where no policy decides on it.
fn declared_license(expression: &str, decision: String) -> LicenseEvidence {
    LicenseEvidence {
        expression: Some(expression.to_owned()),
        source: ASSERTED_BY_OPERATOR.into(),
        decision,
    }
}

/// Evidence with nothing asserted or signed yet.
fn no_evidence(policy: Option<&MirrorPolicy>) -> MirrorEvidence {
    MirrorEvidence {
        policy_decision: match policy {
            None => "no policy".into(),
            Some(p) => format!("{}: no rule matched", p.origin()),
        },
        ..MirrorEvidence::default()
    }
}

fn refuse_on(check: Result<(), String>) -> Result<(), ControllerError> {
    check.map_err(|reason| ControllerError::Refused { reason })
}

/// Reads a cosign-style signature file: base64 of the raw signature (ASN.1 DER for ECDSA).
/// Returns the raw bytes and the normalised base64 text.
fn read_signature(path: &Path) -> Result<(Vec<u8>, String), ControllerError> {
    let text = fs::read_to_string(path).map_err(|source| ControllerError::ReadSignature {
        path: path.to_owned(),
        source,
    })?;
    let b64: String = text.split_whitespace().collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .map_err(|source| ControllerError::SignatureEncoding {
            path: path.to_owned(),
            source,
        })?;
    Ok((raw, b64))
}

/// Creates `path` (which must not exist) with `mode` and writes `bytes`, durably.
fn write_new(path: &Path, mode: u32, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Counts the bytes of a directory's archive without storing it.
struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn check_expected(
    path: &Path,
    expected: Option<Sha256Digest>,
    actual: Sha256Digest,
) -> Result<(), ControllerError> {
    match expected {
        Some(expected) if expected != actual => Err(ControllerError::DigestMismatch {
            path: path.to_owned(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}
