//! Privilege attacks: the step runs as uid 1000 of its own user namespace with every capability
//! set empty and `no_new_privs`; the kernel refuses what needs privilege, and the seccomp filter
//! refuses what an unprivileged process could otherwise reach (issue 3).

use crate::support::Hostile;

/// Where the masking technique is the sandbox's choice: a missing file, a read-only mount, a
/// device bound over it, or plain permissions all stop the attack.
const MASKED: &[&str] = &["EACCES", "EROFS", "ENOENT", "EPERM", "masked"];

#[test]
fn setuid_bits_do_not_survive_and_give_nothing() {
    let v = Hostile::new().attack("suid /in/probe/probe-suid");
    v.assert_denied("suid: setuid bit stripped (mode 0755), euid 1000 after exec");
}

#[test]
fn step_cannot_become_root_of_its_namespace() {
    // Only uid 1000 is mapped: uid 0 does not exist in the step's namespace (EINVAL, checked
    // before any privilege).
    let v = Hostile::new().attack("setuid0");
    v.assert_denied(
        "setuid0: EINVAL setuid(0), EINVAL setresuid(0,0,0), EINVAL setgid(0); uid 1000",
    );
}

#[test]
fn step_has_no_capabilities_and_no_new_privs() {
    let v = Hostile::new().attack("caps");
    v.assert_denied(
        "caps: no capabilities: CapInh=0 CapPrm=0 CapEff=0 CapBnd=0 CapAmb=0 NoNewPrivs=1",
    );
}

#[test]
fn step_cannot_ptrace_the_sandbox_pid_1() {
    let v = Hostile::new().attack("ptrace 1");
    v.assert_denied("ptrace: EPERM PTRACE_ATTACH pid 1, EPERM PTRACE_SEIZE");
}

#[test]
fn step_cannot_kill_the_sandbox_pid_1() {
    let v = Hostile::new().attack("kill1");
    v.assert_denied("kill1: EPERM kill(1, SIGKILL)");
}

#[test]
fn step_cannot_create_a_nested_user_namespace() {
    let v = Hostile::new().attack("unshare user");
    v.assert_denied("unshare: EPERM unshare user");
}

#[test]
fn step_cannot_clone_into_a_nested_user_namespace() {
    let v = Hostile::new().attack("clone-ns user");
    // A filter cannot read clone3's flags (they are behind a pointer): it either refuses
    // clone3 outright (ENOSYS, so libc falls back to clone) or with EPERM.
    v.assert_denied("clone-ns: EPERM clone user, E");
    assert!(
        v.line.ends_with("EPERM clone3") || v.line.ends_with("ENOSYS clone3"),
        "{}",
        v.all
    );
}

#[test]
fn step_cannot_create_a_network_or_mount_namespace() {
    let h = Hostile::new();
    h.attack("unshare net")
        .assert_denied("unshare: EPERM unshare net");
    h.attack("unshare mount")
        .assert_denied("unshare: EPERM unshare mount");
}

#[test]
fn step_cannot_use_the_kernel_keyring() {
    let v = Hostile::new().attack("keyctl");
    v.assert_denied("keyctl: EPERM add_key, EPERM keyctl, EPERM request_key");
}

#[test]
fn step_cannot_load_bpf_programs_or_maps() {
    let v = Hostile::new().attack("bpf");
    v.assert_denied("bpf: EPERM BPF_PROG_LOAD, EPERM BPF_MAP_CREATE");
}

#[test]
fn step_cannot_load_or_unload_kernel_modules() {
    let v = Hostile::new().attack("modules");
    v.assert_denied("modules: EPERM init_module, EPERM finit_module, EPERM delete_module");
}

#[test]
fn step_cannot_load_a_new_kernel() {
    let v = Hostile::new().attack("kexec");
    v.assert_denied("kexec: EPERM kexec_load, EPERM kexec_file_load");
}

#[test]
fn step_cannot_set_the_clock() {
    let v = Hostile::new().attack("clock");
    v.assert_denied("clock: EPERM clock_settime, EPERM settimeofday");
}

#[test]
fn step_cannot_reboot() {
    let v = Hostile::new().attack("reboot");
    v.assert_denied("reboot: EPERM reboot");
}

#[test]
fn step_cannot_open_perf_events() {
    let v = Hostile::new().attack("perf");
    v.assert_denied("perf: EPERM perf_event_open");
}

#[test]
fn step_cannot_create_a_userfaultfd() {
    let v = Hostile::new().attack("userfaultfd");
    v.assert_denied("userfaultfd: EPERM userfaultfd(UFFD_USER_MODE_ONLY), EPERM userfaultfd");
}

#[test]
fn step_cannot_set_up_io_uring() {
    let v = Hostile::new().attack("io-uring");
    v.assert_denied("io-uring: EPERM io_uring_setup");
}

#[test]
fn step_cannot_open_sysrq_trigger_for_writing() {
    let v = Hostile::new().attack("proc-write /proc/sysrq-trigger");
    v.assert_denied_with_one_of("proc-write", MASKED);
    v.assert_mentions("/proc/sysrq-trigger");
}

#[test]
fn step_cannot_set_the_core_pattern() {
    // core_pattern is global: a `|program` there runs as host root on the next crash.
    let v = Hostile::new().attack("proc-write /proc/sys/kernel/core_pattern");
    v.assert_denied_with_one_of("proc-write", MASKED);
    v.assert_mentions("/proc/sys/kernel/core_pattern");
}

#[test]
fn step_cannot_read_kernel_memory() {
    let v = Hostile::new().attack("proc-read /proc/kcore");
    v.assert_denied_with_one_of("proc-read", MASKED);
    v.assert_mentions("/proc/kcore");
}

#[test]
fn step_cannot_write_to_sys() {
    let v = Hostile::new().attack("write /sys/kernel/uevent_helper /sys/fs/cgroup/cgroup.procs");
    v.assert_denied_with_one_of("write", MASKED);
    v.assert_mentions("/sys/kernel/uevent_helper");
    v.assert_mentions("/sys/fs/cgroup/cgroup.procs");
}

#[test]
fn step_cannot_rewrite_its_id_maps() {
    let v = Hostile::new().attack(
        "write-data '0 0 4294967295' /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups",
    );
    v.assert_denied(
        "write-data: EPERM (EPERM /proc/self/uid_map, EPERM /proc/self/gid_map, EACCES /proc/self/setgroups)",
    );
}

#[test]
fn step_cannot_inject_input_into_a_terminal() {
    // The step has no controlling terminal and none of its descriptors is one.
    let v = Hostile::new().attack("tty");
    v.assert_denied(
        "tty: ENXIO open /dev/tty, ENOTTY TIOCSTI on 0, ENOTTY TIOCSTI on 1, ENOTTY TIOCSTI on 2",
    );
}
