//! Where kiln keeps its data when `--data-dir` is not given.

use std::path::PathBuf;

/// `--data-dir`, else `$XDG_DATA_HOME/kiln`, else `~/.local/share/kiln`.
pub fn resolve(flag: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = flag {
        return dir;
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("kiln");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".local/share/kiln")
}
