//! The sandbox's mount table, as data first: [`plan`] turns a spec into an ordered list of
//! [`MountOp`]s (pure, unit-tested without root), `apply` performs them in the helper's
//! private mount namespace, and [`describe`] renders the same plan for the step record, so what
//! is recorded is what is mounted.
//!
//! Targets are paths as the step sees them (`/in/src`); `apply` resolves them under the
//! rootfs. Invariant: nothing is ever created in the rootfs itself: directories, files and
//! symlinks are only made inside tmpfs that the plan mounted first (the rootfs is shared by
//! many steps and is made read-only before anything else happens). `/proc` is not in the plan:
//! it is mounted by the sandbox's pid 1, inside its pid namespace (`hidepid=2`), which then
//! masks its host-wide parts with [`mask_proc`]. `/sys` is never mounted.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::{Mode, lstat};
use nix::unistd::{mkdir, symlinkat};

use crate::error::SetupError;
use crate::spec::{MountRoot, REQUIRED_DIRS, SandboxSpec};

/// Device nodes bind-mounted from the host into the sandbox's `/dev`.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Symlinks in the sandbox's `/dev`.
const DEV_LINKS: [(&str, &str); 4] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];
/// Size of the tmpfs that only hold mount points (`/in`, `/dev`).
const SKELETON_BYTES: u64 = 64 * 1024;
/// Options of the step's `/proc`: processes of other uids are invisible (pid 1 runs as unmapped
/// root, so the step cannot even list it). A user-namespace-owned proc accepts this since
/// Linux 5.8, when proc options became per mount.
pub(crate) const PROC_OPTIONS: &str = "hidepid=2";
/// Host-wide `/proc` files hidden behind `/dev/null` (runc's masked paths, plus kcore and keys'
/// siblings). Skipped when the kernel does not have them.
const PROC_MASKED_FILES: [&str; 6] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/latency_stats",
    "/proc/sched_debug",
];
/// Host-wide `/proc` directories hidden under an empty read-only tmpfs.
const PROC_MASKED_DIRS: [&str; 3] = ["/proc/acpi", "/proc/asound", "/proc/scsi"];
/// `/proc` paths bound read-only over themselves: sysctls and kernel knobs that are writable
/// through the step's own namespaces (or by a root that a kernel bug would hand out).
const PROC_READ_ONLY: [&str; 5] = [
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
];
/// Namespaces every sandbox gets, as recorded.
pub const NAMESPACES: [&str; 7] = ["user", "mount", "pid", "network", "ipc", "uts", "cgroup"];

/// What a bind mount is for, which decides its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindKind {
    /// Read-only data: `ro,nosuid,nodev`.
    ReadOnly,
    /// Writable data: `rw,nosuid,nodev`.
    ReadWrite,
    /// A host device node: keeps the host's flags (a device node cannot be executed and
    /// set-id bits mean nothing on it, so a remount would only cost time).
    Device,
}

/// One step of building the sandbox's mount table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountOp {
    /// Non-recursive bind mount of host path `src` at `target`, then a remount with `kind`'s flags.
    Bind {
        src: PathBuf,
        target: PathBuf,
        kind: BindKind,
    },
    /// A fresh `nosuid,nodev` tmpfs (plus `noexec` when `exec` is false).
    Tmpfs {
        target: PathBuf,
        size: u64,
        mode: u32,
        owner: Option<(u32, u32)>,
        exec: bool,
    },
    /// An empty directory, as a mount point inside a tmpfs.
    MakeDir { path: PathBuf },
    /// An empty file, as a mount point for a device node inside a tmpfs.
    MakeFile { path: PathBuf },
    /// A symlink inside a tmpfs.
    Symlink { path: PathBuf, to: &'static str },
    /// Makes the mount at `target` read-only (it becomes locked so in the step's namespace).
    ReadOnly { target: PathBuf },
}

/// The namespaces and mount table of a sandbox, as strings for the step record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// e.g. `["user", "mount", "pid", "network", "ipc", "uts", "cgroup"]`.
    pub namespaces: Vec<String>,
    /// One line per mount, e.g. `/out <- /data/out (bind, rw,nosuid,nodev)`.
    pub mounts: Vec<String>,
    /// e.g. `uid 1000 -> host 100000, gid 1000 -> host 100000`.
    pub identity: String,
    /// One line on the seccomp filter, e.g. `deny-list, default allow: 52 syscalls -> EPERM; …`.
    pub seccomp: String,
    /// Hex sha256 of the seccomp filter's BPF instructions as installed (each filter's length,
    /// then its `struct sock_filter`s, little-endian, in install order).
    pub seccomp_sha256: String,
    /// Resource limits applied inside the step, e.g. `RLIMIT_CORE=0, RLIMIT_NOFILE=4096`.
    pub rlimits: String,
}

/// The mount plan for `spec`, in the order `apply` performs it.
pub fn plan(spec: &SandboxSpec) -> Vec<MountOp> {
    let owner = Some((spec.ids.host_uid, spec.ids.host_gid));
    let tmpfs = |target: &str, size, mode, owner, exec| MountOp::Tmpfs {
        target: target.into(),
        size,
        mode,
        owner,
        exec,
    };
    let mut ops = vec![MountOp::Bind {
        src: spec.rootfs.clone(),
        target: "/".into(),
        kind: BindKind::ReadOnly,
    }];
    for root in [MountRoot::In, MountRoot::Src] {
        let inputs: Vec<_> = spec.inputs.iter().filter(|i| i.root == root).collect();
        // `/in` is always there; `/src` only in a step with sources, so a rootfs extracted
        // before `/src` existed still serves every other step.
        if root != MountRoot::In && inputs.is_empty() {
            continue;
        }
        ops.push(tmpfs(root.path(), SKELETON_BYTES, 0o755, None, false));
        for input in inputs {
            let target = Path::new(root.path()).join(&input.name);
            ops.push(MountOp::MakeDir {
                path: target.clone(),
            });
            ops.push(MountOp::Bind {
                src: input.source.clone(),
                target,
                kind: BindKind::ReadOnly,
            });
        }
        ops.push(MountOp::ReadOnly {
            target: root.path().into(),
        });
    }
    ops.push(match &spec.out_dir {
        Some(out_dir) => MountOp::Bind {
            src: out_dir.clone(),
            target: "/out".into(),
            kind: BindKind::ReadWrite,
        },
        None => tmpfs("/out", spec.scratch_bytes, 0o755, owner, true),
    });
    ops.push(tmpfs("/work", spec.scratch_bytes, 0o755, owner, true));
    ops.push(tmpfs("/tmp", spec.scratch_bytes, 0o1777, owner, true));
    ops.push(tmpfs("/dev", SKELETON_BYTES, 0o755, None, false));
    for dev in DEVICES {
        let target = Path::new("/dev").join(dev);
        ops.push(MountOp::MakeFile {
            path: target.clone(),
        });
        ops.push(MountOp::Bind {
            src: target.clone(),
            target,
            kind: BindKind::Device,
        });
    }
    for (name, to) in DEV_LINKS {
        ops.push(MountOp::Symlink {
            path: Path::new("/dev").join(name),
            to,
        });
    }
    ops.push(MountOp::ReadOnly {
        target: "/dev".into(),
    });
    ops
}

/// The namespaces and mount table `spec` gets, for the step record. Does not touch the system.
pub fn describe(spec: &SandboxSpec) -> Description {
    let ops = plan(spec);
    let read_only = |target: &Path| {
        ops.iter()
            .any(|op| matches!(op, MountOp::ReadOnly { target: t } if t == target))
    };
    let mut mounts = Vec::new();
    for op in &ops {
        match op {
            MountOp::Bind {
                kind: BindKind::Device,
                ..
            } => {}
            MountOp::Bind { src, target, kind } => {
                let flags = if *kind == BindKind::ReadOnly {
                    "ro"
                } else {
                    "rw"
                };
                mounts.push(format!(
                    "{} <- {} (bind, {flags},nosuid,nodev)",
                    target.display(),
                    src.display()
                ));
            }
            MountOp::Tmpfs {
                target, size, exec, ..
            } => {
                let access = if read_only(target) { "ro" } else { "rw" };
                let noexec = if *exec { "" } else { ",noexec" };
                let mut line = format!(
                    "{} tmpfs size={size} ({access},nosuid,nodev{noexec})",
                    target.display()
                );
                if target == Path::new("/dev") {
                    line.push_str(&format!(
                        ", devices {} bound from the host",
                        DEVICES.join(" ")
                    ));
                }
                mounts.push(line);
            }
            MountOp::MakeDir { .. } | MountOp::MakeFile { .. } | MountOp::Symlink { .. } => {}
            MountOp::ReadOnly { .. } => {}
        }
    }
    mounts.push(format!(
        "/proc proc (rw,nosuid,nodev,noexec,{PROC_OPTIONS}), the sandbox's own pid namespace"
    ));
    mounts.push(format!(
        "/proc masked where present: {} <- /dev/null; {} empty ro tmpfs; {} ro",
        PROC_MASKED_FILES.join(" "),
        PROC_MASKED_DIRS.join(" "),
        PROC_READ_ONLY.join(" ")
    ));
    let ids = &spec.ids;
    Description {
        namespaces: NAMESPACES.map(String::from).to_vec(),
        mounts,
        identity: format!(
            "uid {} -> host {}, gid {} -> host {}",
            ids.step_uid, ids.host_uid, ids.step_gid, ids.host_gid
        ),
        seccomp: crate::seccomp::summary().into(),
        seccomp_sha256: crate::seccomp::sha256().into(),
        rlimits: format!("RLIMIT_CORE=0, RLIMIT_NOFILE={}", spec.limits.open_files),
    }
}

/// Refuses a rootfs that lacks one of the directories the sandbox mounts over, or where one of
/// them is a symlink (which would send a mount outside the rootfs). `/src` is only needed, and
/// only checked, when the spec mounts git sources: a rootfs extracted before it existed lacks it.
pub(crate) fn check_rootfs(spec: &SandboxSpec) -> Result<(), SetupError> {
    let rootfs = &spec.rootfs;
    let has_sources = spec.inputs.iter().any(|i| i.root == MountRoot::Src);
    let dirs = REQUIRED_DIRS
        .iter()
        .copied()
        .chain(has_sources.then_some("src"));
    let paths = std::iter::once(rootfs.to_owned()).chain(dirs.map(|dir| rootfs.join(dir)));
    for path in paths {
        let stat = lstat(&path).map_err(|source| SetupError::Inspect {
            path: path.clone(),
            source,
        })?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(SetupError::NotADirectory { path });
        }
    }
    Ok(())
}

/// Performs `ops` under `rootfs`. The caller must already be in a private mount namespace.
pub(crate) fn apply(rootfs: &Path, ops: &[MountOp]) -> Result<(), SetupError> {
    let host = |target: &Path| match target.strip_prefix("/") {
        Ok(rel) if rel.as_os_str().is_empty() => rootfs.to_owned(),
        Ok(rel) => rootfs.join(rel),
        Err(_) => rootfs.join(target),
    };
    for op in ops {
        tracing::debug!(?op, "mount plan");
        match op {
            MountOp::Bind { src, target, kind } => bind(src, &host(target), *kind)?,
            MountOp::Tmpfs {
                target,
                size,
                mode,
                owner,
                exec,
            } => {
                tmpfs(&host(target), *size, *mode, *owner, *exec)?;
            }
            MountOp::MakeDir { path } => {
                let path = host(path);
                mkdir(&path, Mode::from_bits_truncate(0o755))
                    .map_err(|source| SetupError::CreateDir { path, source })?;
            }
            MountOp::MakeFile { path } => make_file(&host(path))?,
            MountOp::Symlink { path, to } => {
                let path = host(path);
                symlinkat(*to, nix::fcntl::AT_FDCWD, &path)
                    .map_err(|source| SetupError::Symlink { path, source })?;
            }
            MountOp::ReadOnly { target } => {
                let flags = MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC;
                remount(&host(target), flags)?;
            }
        }
    }
    Ok(())
}

fn bind(src: &Path, dst: &Path, kind: BindKind) -> Result<(), SetupError> {
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|source| {
        SetupError::Bind {
            src: src.to_owned(),
            dst: dst.to_owned(),
            source,
        }
    })?;
    match kind {
        BindKind::ReadOnly => remount(
            dst,
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        ),
        BindKind::ReadWrite => remount(dst, MsFlags::MS_NOSUID | MsFlags::MS_NODEV),
        BindKind::Device => Ok(()),
    }
}

/// Changes the per-mount flags of the bind or mount at `target` (`MS_REMOUNT | MS_BIND`).
fn remount(target: &Path, flags: MsFlags) -> Result<(), SetupError> {
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags;
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(|source| {
        SetupError::Remount {
            target: target.to_owned(),
            source,
        }
    })
}

fn tmpfs(
    target: &Path,
    size: u64,
    mode: u32,
    owner: Option<(u32, u32)>,
    exec: bool,
) -> Result<(), SetupError> {
    let mut data = format!("size={size},mode={mode:o}");
    if let Some((uid, gid)) = owner {
        data.push_str(&format!(",uid={uid},gid={gid}"));
    }
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if !exec {
        flags |= MsFlags::MS_NOEXEC;
    }
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|source| SetupError::Tmpfs {
        target: target.to_owned(),
        source,
    })
}

fn make_file(path: &Path) -> Result<(), SetupError> {
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    match open(path, flags, Mode::from_bits_truncate(0o644)) {
        Ok(_fd) => Ok(()),
        Err(source) => Err(SetupError::CreateFile {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Masks the host-wide parts of the freshly mounted `/proc` (see [`PROC_MASKED_FILES`],
/// [`PROC_MASKED_DIRS`], [`PROC_READ_ONLY`]). Runs in the sandbox's pid 1 after `pivot_root`;
/// paths this kernel does not have are skipped.
pub(crate) fn mask_proc() -> Result<(), SetupError> {
    let masked = |path: &str, source| SetupError::MaskProc {
        path: path.into(),
        source,
    };
    let skip_missing = |result: nix::Result<()>| match result {
        Err(Errno::ENOENT) => Ok(()),
        other => other,
    };
    let none = None::<&str>;
    for path in PROC_MASKED_FILES {
        skip_missing(mount(Some("/dev/null"), path, none, MsFlags::MS_BIND, none))
            .map_err(|source| masked(path, source))?;
    }
    let locked_down = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let locked_down = locked_down | MsFlags::MS_NOEXEC;
    for path in PROC_MASKED_DIRS {
        let data = Some("size=4k,nr_inodes=1,mode=555");
        skip_missing(mount(Some("tmpfs"), path, Some("tmpfs"), locked_down, data))
            .map_err(|source| masked(path, source))?;
    }
    for path in PROC_READ_ONLY {
        let bound = mount(
            Some(path),
            path,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        );
        match bound {
            Err(Errno::ENOENT) => continue,
            other => other.map_err(|source| masked(path, source))?,
        }
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | locked_down;
        mount(none, path, none, flags, none).map_err(|source| masked(path, source))?;
    }
    Ok(())
}

/// The errno of a failed std I/O call, for errors that cross the pipe.
pub(crate) fn errno_of(err: &std::io::Error) -> Errno {
    Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::InputMount;
    use crate::spec::tests::example;

    impl MountOp {
        /// The path inside the sandbox this operation works on.
        fn target(&self) -> &Path {
            match self {
                MountOp::Bind { target, .. }
                | MountOp::Tmpfs { target, .. }
                | MountOp::ReadOnly { target } => target,
                MountOp::MakeDir { path }
                | MountOp::MakeFile { path }
                | MountOp::Symlink { path, .. } => path,
            }
        }
    }

    /// The mount that `path` lives on, according to the ops before index `upto`.
    fn covering_tmpfs(ops: &[MountOp], upto: usize, path: &Path) -> bool {
        ops[..upto]
            .iter()
            .any(|op| matches!(op, MountOp::Tmpfs { target, .. } if path.starts_with(target) && path != target))
    }

    #[test]
    fn rootfs_bind_comes_first_and_is_read_only() {
        let ops = plan(&example());
        let first = MountOp::Bind {
            src: "/store/rootfs/abc".into(),
            target: "/".into(),
            kind: BindKind::ReadOnly,
        };
        assert_eq!(ops[0], first);
    }

    #[test]
    fn nothing_is_created_in_the_rootfs_itself() {
        let ops = plan(&example());
        for (i, op) in ops.iter().enumerate() {
            if let MountOp::MakeDir { path }
            | MountOp::MakeFile { path }
            | MountOp::Symlink { path, .. } = op
            {
                assert!(
                    covering_tmpfs(&ops, i, path),
                    "{op:?} is not inside an earlier tmpfs"
                );
            }
        }
    }

    #[test]
    fn skeleton_tmpfs_become_read_only_after_their_last_mount() {
        let ops = plan(&example());
        for skeleton in ["/in", "/dev"] {
            let ro = ops.iter().position(
                |op| matches!(op, MountOp::ReadOnly { target } if target == Path::new(skeleton)),
            );
            let ro = ro.unwrap_or_else(|| panic!("{skeleton} is never made read-only"));
            let last_use = ops.iter().rposition(|op| match op {
                MountOp::Bind { target, .. } | MountOp::MakeDir { path: target } => {
                    target.starts_with(skeleton)
                }
                _ => false,
            });
            assert!(last_use.unwrap() < ro, "{skeleton}");
        }
    }

    #[test]
    fn inputs_are_read_only_and_only_out_is_writable() {
        let ops = plan(&example());
        let writable: Vec<_> = ops
            .iter()
            .filter_map(|op| match op {
                MountOp::Bind {
                    target,
                    kind: BindKind::ReadWrite,
                    ..
                } => Some(target.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(writable, [PathBuf::from("/out")]);
        assert!(ops.contains(&MountOp::Bind {
            src: "/data/src".into(),
            target: "/in/src".into(),
            kind: BindKind::ReadOnly
        }));
    }

    #[test]
    fn without_an_out_dir_out_is_a_scratch_tmpfs_and_nothing_is_writable_on_the_host() {
        let mut spec = example();
        spec.out_dir = None;
        let ops = plan(&spec);
        assert!(
            !ops.iter().any(|op| matches!(
                op,
                MountOp::Bind {
                    kind: BindKind::ReadWrite,
                    ..
                }
            )),
            "{ops:?}"
        );
        let out = ops.iter().find(|op| op.target() == Path::new("/out"));
        assert_eq!(
            out,
            Some(&MountOp::Tmpfs {
                target: "/out".into(),
                size: spec.scratch_bytes,
                mode: 0o755,
                owner: Some((spec.ids.host_uid, spec.ids.host_gid)),
                exec: true,
            })
        );
    }

    #[test]
    fn git_sources_get_their_own_read_only_root_only_when_present() {
        let without = plan(&example());
        assert!(!without.iter().any(|op| op.target().starts_with("/src")));

        let mut spec = example();
        spec.inputs.push(InputMount {
            source: "/store/trees/app".into(),
            name: "app".into(),
            root: MountRoot::Src,
        });
        let ops = plan(&spec);
        let at = |wanted: &MountOp| ops.iter().position(|op| op == wanted).unwrap();
        let bind = at(&MountOp::Bind {
            src: "/store/trees/app".into(),
            target: "/src/app".into(),
            kind: BindKind::ReadOnly,
        });
        let read_only = at(&MountOp::ReadOnly {
            target: "/src".into(),
        });
        assert!(bind < read_only);
        // The source is not also under /in.
        assert!(!ops.iter().any(|op| op.target() == Path::new("/in/app")));
    }

    #[test]
    fn a_rootfs_without_src_serves_only_steps_without_sources() {
        let tmp = tempfile::tempdir().unwrap();
        for dir in REQUIRED_DIRS {
            std::fs::create_dir(tmp.path().join(dir)).unwrap();
        }
        let mut spec = example();
        spec.rootfs = tmp.path().to_owned();
        check_rootfs(&spec).unwrap();
        spec.inputs[0].root = MountRoot::Src;
        let err = check_rootfs(&spec).unwrap_err();
        assert!(
            matches!(&err, SetupError::Inspect { path, .. } if path.ends_with("src")),
            "{err}"
        );
        std::fs::create_dir(tmp.path().join("src")).unwrap();
        check_rootfs(&spec).unwrap();
    }

    #[test]
    fn scratch_is_capped_and_owned_by_the_step() {
        let spec = example();
        for target in ["/work", "/tmp"] {
            let found = plan(&spec).into_iter().find_map(|op| match op {
                MountOp::Tmpfs {
                    target: t,
                    size,
                    owner,
                    exec,
                    ..
                } if t == Path::new(target) => Some((size, owner, exec)),
                _ => None,
            });
            assert_eq!(
                found,
                Some((spec.scratch_bytes, Some((100_000, 100_000)), true)),
                "{target}"
            );
        }
    }

    #[test]
    fn description_lists_every_mount_with_its_access() {
        let description = describe(&example());
        assert_eq!(description.namespaces, NAMESPACES);
        let expected = [
            "/ <- /store/rootfs/abc (bind, ro,nosuid,nodev)",
            "/in tmpfs size=65536 (ro,nosuid,nodev,noexec)",
            "/in/src <- /data/src (bind, ro,nosuid,nodev)",
            "/out <- /data/out (bind, rw,nosuid,nodev)",
            "/work tmpfs size=1048576 (rw,nosuid,nodev)",
            "/tmp tmpfs size=1048576 (rw,nosuid,nodev)",
            "/dev tmpfs size=65536 (ro,nosuid,nodev,noexec), devices null zero full random urandom tty bound from the host",
            "/proc proc (rw,nosuid,nodev,noexec,hidepid=2), the sandbox's own pid namespace",
            "/proc masked where present: /proc/kcore /proc/keys /proc/timer_list \
             /proc/timer_stats /proc/latency_stats /proc/sched_debug <- /dev/null; /proc/acpi \
             /proc/asound /proc/scsi empty ro tmpfs; /proc/sys /proc/sysrq-trigger /proc/bus \
             /proc/fs /proc/irq ro",
        ];
        assert_eq!(description.mounts, expected);
        assert_eq!(
            description.identity,
            "uid 1000 -> host 100000, gid 1000 -> host 100000"
        );
        assert_eq!(description.rlimits, "RLIMIT_CORE=0, RLIMIT_NOFILE=4096");
    }

    #[test]
    fn description_carries_the_seccomp_digest() {
        let description = describe(&example());
        assert_eq!(description.seccomp_sha256, crate::seccomp::sha256());
        assert_eq!(description.seccomp_sha256.len(), 64);
        assert!(
            description.seccomp.contains("EPERM"),
            "{}",
            description.seccomp
        );
    }
}
