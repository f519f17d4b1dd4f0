//! `kiln mirror fetch URL --name N@V --sha256 HEX`: download on an operator's machine, then
//! admit exactly like `kiln mirror add` (digest, signature, provenance, license, policy).

use anyhow::Context as _;
use kiln_core::{MirrorRef, Sha256Digest};
use kiln_daemon::Controller;
use kiln_daemon::controller::Admission;
use kiln_daemon::evidence::Fetched;

/// Downloads `url` into a temporary file in the data dir (removed whatever happens) and admits
/// it as `name`. The name is checked against the policy's deny-list before anything is
/// downloaded, and a rule's `max_size` caps the download.
pub async fn fetch(
    controller: &Controller,
    url: &str,
    name: MirrorRef,
    sha256: Sha256Digest,
    file_name: Option<&str>,
    evidence: &Admission<'_>,
) -> anyhow::Result<()> {
    let file_name = match file_name {
        Some(n) => n.to_owned(),
        None => last_segment(url)
            .with_context(|| format!("{url} names no file; give the file name with --file-name"))?,
    };
    let policy = controller.load_policy(evidence.policy)?;
    let limit = match &policy {
        Some(p) => {
            p.check_name(name.name()).map_err(anyhow::Error::msg)?;
            p.rule_for(name.name()).and_then(|r| r.max_size)
        }
        None => None,
    };
    let tmp_dir = controller.data_dir().join("tmp");
    std::fs::create_dir_all(&tmp_dir)
        .with_context(|| format!("cannot create {}", tmp_dir.display()))?;
    sweep_stale_downloads(&tmp_dir);
    let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
        .with_context(|| format!("cannot create a temporary file in {}", tmp_dir.display()))?;
    let tmp_path = tmp.path().to_owned();
    let downloaded = kiln_client::fetch::download(url, tmp.as_file_mut(), &tmp_path, limit)
        .await
        .with_context(|| format!("cannot fetch {name}"))?;
    eprintln!(
        "fetched {} bytes from {}",
        downloaded.size, downloaded.final_url
    );
    let admission = Admission {
        expected: Some(sha256),
        file_name: Some(&file_name),
        fetched: Some(Fetched {
            url: downloaded.final_url,
            at: now_rfc3339(),
        }),
        ..evidence.clone()
    };
    let (entry, outcome) = controller
        .mirror_admit_file(&tmp_path, name.clone(), &admission)
        .await
        .with_context(|| format!("cannot add {url} as {name}"))?;
    crate::cmd_mirror::print_added(&entry, outcome);
    Ok(())
}

/// Downloads older than a day are what a killed `kiln mirror fetch` left behind: a live one
/// writes to its file continuously.
const STALE_DOWNLOAD: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Removes stale downloads (best effort: a file that cannot be removed is left for next time).
fn sweep_stale_downloads(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_DOWNLOAD);
        if stale && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The URL path's last segment, if it can be a file name.
fn last_segment(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?;
    let (_, after_scheme) = path.split_once("://")?;
    let (_, path) = after_scheme.split_once('/')?;
    let name = path.rsplit('/').next()?;
    let ok = !name.is_empty() && name != "." && name != ".." && !name.contains('\\');
    ok.then(|| name.to_owned())
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_name_is_the_urls_last_segment() {
        assert_eq!(
            last_segment("https://x.org/a/zlib-1.3.tar.gz?dl=1").as_deref(),
            Some("zlib-1.3.tar.gz")
        );
        assert_eq!(last_segment("https://x.org/"), None);
        assert_eq!(last_segment("https://x.org"), None);
        assert_eq!(last_segment("http://x.org/a/.."), None);
    }
}
