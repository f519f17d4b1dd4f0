//! The step's seccomp filter: the policy is data (`sandbox/policy/seccomp.json`, with the
//! reasons for each syscall group), compiled to BPF at build time by `build.rs` for the target
//! architecture, and installed by the step as the last thing before `execve`, after
//! `no_new_privs`.
//!
//! In short: a deny-list whose default is allow; mount, namespace, ptrace, bpf, perf, module,
//! kexec, keyring, clock, io_uring, userfaultfd, file-handle calls and the like return EPERM,
//! `clone3` returns ENOSYS (its flags are out of a filter's reach; libc falls back to `clone`,
//! whose namespace flags are filtered), syscalls newer than the reviewed table return ENOSYS,
//! and a foreign ABI (i386 on x86_64, x32) kills the process.
//!
//! This module does not parse the policy at run time and knows no syscall names: what it
//! installs is exactly what [`sha256`] digests.

use nix::errno::Errno;
use seccompiler::sock_filter;

include!(concat!(env!("OUT_DIR"), "/seccomp_filters.rs"));

/// Installs every filter of the policy on the calling thread (the step, single-threaded, right
/// before `execve`). Also sets `no_new_privs`, which the kernel requires for an unprivileged
/// filter.
pub(crate) fn install() -> Result<(), Errno> {
    for filter in FILTERS {
        seccompiler::apply_filter(filter).map_err(|err| match err {
            seccompiler::Error::Prctl(err) | seccompiler::Error::Seccomp(err) => {
                Errno::from_raw(err.raw_os_error().unwrap_or(libc::EINVAL))
            }
            _ => Errno::EINVAL,
        })?;
    }
    Ok(())
}

/// Hex sha256 of the installed filters: for each, in install order, its instruction count
/// (u16 LE, as in `struct sock_fprog`), then its `struct sock_filter`s (code u16 LE, jt, jf,
/// k u32 LE). It changes whenever the policy, the compiler or the architecture does.
pub(crate) fn sha256() -> &'static str {
    SHA256
}

/// One line saying what the filter does, for the step record.
pub(crate) fn summary() -> &'static str {
    SUMMARY
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn digest_covers_exactly_the_installed_instructions() {
        let mut hasher = Sha256::new();
        for filter in FILTERS {
            hasher.update((filter.len() as u16).to_le_bytes());
            for insn in *filter {
                hasher.update(insn.code.to_le_bytes());
                hasher.update([insn.jt, insn.jf]);
                hasher.update(insn.k.to_le_bytes());
            }
        }
        let hex: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, sha256());
    }

    #[test]
    fn every_filter_falls_back_to_allow_and_the_first_checks_the_architecture() {
        const RET_ALLOW: u32 = 0x7fff_0000;
        for filter in FILTERS {
            let last = filter.last().expect("non-empty filter");
            assert_eq!((last.code, last.k), (0x06, RET_ALLOW));
        }
        // ld [arch]; jeq NATIVE; ret KILL_PROCESS
        let first = FILTERS[0];
        assert_eq!((first[0].code, first[0].k), (0x20, 4));
        assert_eq!((first[2].code, first[2].k), (0x06, 0x8000_0000));
    }

    #[test]
    fn summary_names_the_fail_closed_edges() {
        let summary = summary();
        assert!(summary.starts_with("deny-list, default allow"), "{summary}");
        assert!(summary.contains("foreign arch"), "{summary}");
        assert!(summary.contains("-> ENOSYS"), "{summary}");
    }

    /// The policy file names every syscall issue 3 requires, each with a reason.
    #[test]
    fn policy_denies_what_the_issue_requires() {
        let policy: serde_json::Value =
            serde_json::from_str(include_str!("../policy/seccomp.json")).unwrap();
        let mut denied = Vec::new();
        for group in policy["groups"].as_array().unwrap() {
            assert!(group["comment"].as_str().is_some_and(|c| c.len() > 20));
            for name in group["syscalls"].as_array().into_iter().flatten() {
                denied.push(name.as_str().unwrap().to_owned());
            }
            for rule in group["rules"].as_array().into_iter().flatten() {
                denied.push(rule["syscall"].as_str().unwrap().to_owned());
            }
        }
        let required = [
            "mount",
            "umount2",
            "pivot_root",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsmount",
            "fspick",
            "fsconfig",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "reboot",
            "clock_settime",
            "clock_adjtime",
            "settimeofday",
            "adjtimex",
            "userfaultfd",
            "open_by_handle_at",
            "name_to_handle_at",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "swapon",
            "swapoff",
            "acct",
            "quotactl",
            "lookup_dcookie",
            "syslog",
            "vhangup",
            "personality",
            "ioperm",
            "iopl",
        ];
        for name in required {
            assert!(
                denied.iter().any(|d| d == name),
                "{name} is not in the policy"
            );
        }
    }
}
