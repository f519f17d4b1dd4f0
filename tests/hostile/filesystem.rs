//! Filesystem attacks: the rootfs and inputs are read-only, the host's tree is detached, mounts
//! and device nodes need privileges the step does not have, and nothing but plain files and
//! directories leaves through /out.

use std::fs;

use crate::common::text;
use crate::support::{Hostile, unique_marker};

#[test]
fn step_cannot_write_to_its_rootfs() {
    let h = Hostile::new();
    let v = h.attack("write /bin/evil /etc/passwd /kiln-evil");
    v.assert_denied("write: EROFS");
    v.assert_mentions("EROFS /bin/evil, EROFS /etc/passwd, EROFS /kiln-evil");
    let passwd = fs::read_to_string(h.env.path("busybox-rootfs/etc/passwd")).unwrap();
    assert!(passwd.starts_with("root:x:0:0"), "{passwd}");
}

#[test]
fn step_cannot_write_to_its_inputs() {
    let h = Hostile::new();
    let v = h.attack("write /in/probe/probe /in/probe/evil /in/evil");
    v.assert_denied("write: EROFS");
    v.assert_mentions("EROFS /in/probe/probe, EROFS /in/probe/evil, EROFS /in/evil");
}

#[test]
fn step_cannot_remount_its_rootfs_read_write() {
    let v = Hostile::new().attack("remount");
    v.assert_denied("remount: EPERM remount,bind /, EPERM remount /");
}

#[test]
fn step_cannot_mount_a_file_system() {
    let v = Hostile::new().attack("mount");
    v.assert_denied("mount: EPERM mount tmpfs /tmp");
}

#[test]
fn step_cannot_unmount_an_input_to_see_what_is_below() {
    let v = Hostile::new().attack("umount /in/probe");
    v.assert_denied("umount: EPERM umount2 MNT_DETACH");
}

#[test]
fn step_cannot_pivot_root() {
    let v = Hostile::new().attack("pivot-root");
    v.assert_denied("pivot-root: EPERM pivot_root");
}

#[test]
fn step_cannot_chroot_to_escape() {
    let v = Hostile::new().attack("chroot");
    v.assert_denied("chroot: EPERM chroot /tmp/jail");
}

#[test]
fn step_cannot_make_device_nodes() {
    let v = Hostile::new().attack("mknod");
    v.assert_denied("mknod: EPERM mknod char 1:3 in /tmp, EPERM mknod block 8:0 in /out");
}

#[test]
fn step_cannot_open_files_by_forged_handle() {
    let v = Hostile::new().attack("open-by-handle");
    v.assert_denied("open-by-handle: EPERM open_by_handle_at");
}

#[test]
fn step_cannot_read_host_files_through_proc_1_root() {
    let h = Hostile::new();
    let secret = h.env.write("host-secret", &unique_marker("secret"));
    let p = secret.display();
    // Pid 1 is the sandbox's own, privileged in the step's namespace; /proc is mounted with
    // hidepid=2, so the step does not even see it (without hidepid: EACCES).
    let v = h.attack(&format!(
        "read /proc/1/root{p} /proc/1/cwd{p} /proc/1/root/etc/passwd"
    ));
    v.assert_denied(&format!(
        "read: ENOENT (ENOENT /proc/1/root{p}, ENOENT /proc/1/cwd{p}, ENOENT /proc/1/root/etc/passwd)"
    ));
}

#[test]
fn step_cannot_read_host_files_through_proc_self_root_or_cwd() {
    let h = Hostile::new();
    let secret = h.env.write("host-secret", &unique_marker("secret"));
    let p = secret.display();
    let v = h.attack(&format!(
        "read {p} /proc/self/root{p} /proc/self/cwd/../../../../..{p} /proc/self/root/../../..{p} /proc/thread-self/root{p}"
    ));
    v.assert_denied(&format!(
        "read: ENOENT (ENOENT {p}, ENOENT /proc/self/root{p}, ENOENT /proc/self/cwd/../../../../..{p}, \
         ENOENT /proc/self/root/../../..{p}, ENOENT /proc/thread-self/root{p})"
    ));
}

#[test]
fn step_inherits_no_descriptors_beyond_stdio() {
    let v = Hostile::new().attack("inherited-fds");
    v.assert_denied("inherited-fds: none beyond 0 1 2");
}

#[test]
fn step_cannot_reach_the_descriptors_of_the_sandbox_pid_1() {
    let v = Hostile::new().attack("proc1-fds");
    // hidepid=2: pid 1 is invisible to the step (without hidepid: EACCES).
    v.assert_denied("proc1-fds: ENOENT opendir /proc/1/fd, ENOENT open /proc/1/fd/1");
}

#[test]
fn step_cannot_hard_link_an_input_into_out() {
    let v = Hostile::new().attack("hardlink /in/probe/probe /out/probe");
    v.assert_denied("hardlink: EXDEV link /out/probe -> /in/probe/probe");
}

/// Runs one step with `run` that declares `outputs`; returns the `kiln run` text, which must
/// report a failed run.
#[track_caller]
fn failing_collect(run: &str, outputs: &str) -> String {
    let h = Hostile::new();
    let yaml = format!(
        "version: 1
name: hostile
rootfs: busybox@1
inputs:
  probe: {{ mirror: probe@1 }}
steps:
  - name: smuggle
    inputs: [probe]
    run: '{run}'
    outputs: [{outputs}]
"
    );
    let out = h.run_pipeline(&yaml, 1, &[]);
    let all = text(&out);
    assert!(!out.status.success(), "the run must fail:\n{all}");
    assert!(all.contains("[FAIL] smuggle"), "{all}");
    all
}

#[test]
fn relative_symlink_climbing_out_of_out_fails_the_run() {
    let all = failing_collect(
        "echo hi > /out/ok && ln -s ../../../../../../etc/passwd /out/passwd",
        "ok",
    );
    assert!(
        all.contains("output /out/passwd is a symlink (to ../../../../../../etc/passwd)"),
        "{all}"
    );
}

#[test]
fn absolute_symlink_to_a_directory_in_out_fails_the_run() {
    // The declared output goes through the link: collecting it naively would read the host's
    // /etc/passwd.
    let all = failing_collect("ln -s / /out/root", "root/etc/passwd");
    assert!(
        all.contains("output /out/root is a symlink (to /)"),
        "{all}"
    );
}

#[test]
fn hard_link_inside_out_fails_the_run() {
    let all = failing_collect("echo hi > /out/a && ln /out/a /out/b", "a");
    assert!(
        all.contains("has 2 hard links; only files with a single link are collected"),
        "{all}"
    );
}

#[test]
fn fifo_in_out_fails_the_run() {
    let all = failing_collect("echo hi > /out/ok && mkfifo /out/pipe", "ok");
    assert!(
        all.contains(
            "output /out/pipe is a fifo; only regular files and directories are collected"
        ),
        "{all}"
    );
}

#[test]
fn socket_in_out_fails_the_run() {
    let all = failing_collect(
        "echo hi > /out/ok && /in/probe/probe bind-socket /out/sock",
        "ok",
    );
    assert!(
        all.contains(
            "output /out/sock is a socket; only regular files and directories are collected"
        ),
        "{all}"
    );
}

#[test]
fn sparse_file_past_the_output_cap_fails_the_run() {
    // 5 GiB of apparent size that costs no disk: the cap counts what would be hashed and stored.
    let all = failing_collect(
        "echo hi > /out/ok && dd if=/dev/zero of=/out/big bs=1M count=0 seek=5120",
        "ok",
    );
    assert!(
        all.contains("/out holds 5368709123 bytes, over the output limit of"),
        "{all}"
    );
}

#[test]
fn setuid_output_is_published_without_its_bit() {
    use std::os::unix::fs::PermissionsExt as _;
    let h = Hostile::new();
    let yaml = "version: 1
name: hostile
rootfs: busybox@1
inputs:
  probe: { mirror: probe@1 }
steps:
  - name: plant
    inputs: [probe]
    run: cp /in/probe/probe /out/tool && chmod 6755 /out/tool && stat -c %a /out/tool > /out/mode
    outputs: [tool, mode]
artifacts:
  - { name: tool, from: plant, path: tool }
  - { name: mode, from: plant, path: mode }
";
    let out = h.run_pipeline(yaml, 1, &[]);
    let run = text(&out);
    assert!(out.status.success(), "{run}");
    // The step did set the bits inside /out (nosuid only stops them from working there) ...
    assert_eq!(h.artifact("mode").unwrap().trim(), "6755", "{run}");
    // ... but the artifact kiln writes on the host, as root, carries none of them.
    let mode = fs::metadata(h.out_dir().join("tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7000, 0, "artifact mode {mode:o}");
}
