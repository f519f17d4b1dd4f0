/* Inside half of sandbox/tests/hardening.rs: a static probe that tries one thing per argument
 * and prints "NAME: RESULT", RESULT being "ok" or the errno's name (EPERM, ENOSYS, ...).
 *
 * Arguments are chosen so that, without kiln's seccomp filter, most calls would get a
 * *different* answer from the kernel (ok, EFAULT, EBADF, ENOENT, EINVAL): an EPERM then shows
 * that the filter, not a capability check, refused the call. Built by the test with
 * `gcc -static -pthread`. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char *result(long ret) {
    if (ret >= 0) return "ok";
    const char *name = strerrorname_np(errno);
    return name ? name : "E?";
}

/* clone(2) with `flags`, fork-like; the child exits at once. */
static long raw_clone(unsigned long flags) {
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid((pid_t)pid, NULL, 0);
    return pid;
}

static void *thread_main(void *arg) { return arg; }

static long threads(void) {
    pthread_t t;
    int err = pthread_create(&t, NULL, thread_main, NULL);
    if (err) { errno = err; return -1; }
    return pthread_join(t, NULL) == 0 ? 0 : -1;
}

static long spawn_true(void) {
    pid_t pid;
    char *argv[] = {"/bin/true", NULL};
    int err = posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ);
    if (err) { errno = err; return -1; }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : (errno = ECHILD, -1);
}

/* chroot into a directory, climb out with "..", chroot("."): the classic escape. */
static long chroot_escape(void) {
    mkdir("/tmp/jail", 0755);
    if (chroot("/tmp/jail") != 0) return -1;
    for (int i = 0; i < 64; i++) chdir("..");
    return chroot(".");
}

static long run(const char *name) {
    struct timespec ts = {0, 0};
    char buf[8];
    struct iovec local = {buf, sizeof buf}, remote = {buf, sizeof buf};
    struct { struct file_handle h; unsigned char bytes[128]; } fh = {{.handle_bytes = 128}};
    int mount_id;
    struct clone_args args = {.exit_signal = SIGCHLD};

    if (!strcmp(name, "mount")) return mount("none", "/kiln-nonexistent", "tmpfs", 0, NULL);
    if (!strcmp(name, "umount")) return umount2("/kiln-nonexistent", 0);
    if (!strcmp(name, "open_tree")) return syscall(SYS_open_tree, AT_FDCWD, "/", 0);
    if (!strcmp(name, "fsopen")) return syscall(SYS_fsopen, "tmpfs", 0);
    if (!strcmp(name, "pivot_root")) return syscall(SYS_pivot_root, "/kiln-nonexistent", "/kiln-nonexistent");
    if (!strcmp(name, "unshare_user")) return unshare(CLONE_NEWUSER);
    if (!strcmp(name, "setns")) return setns(-1, 0);
    if (!strcmp(name, "clone_newnet")) return raw_clone(CLONE_NEWNET);
    if (!strcmp(name, "clone_newuser_newnet")) return raw_clone(CLONE_NEWUSER | CLONE_NEWNET);
    if (!strcmp(name, "clone_plain")) return raw_clone(0);
    if (!strcmp(name, "clone3")) {
        long pid = syscall(SYS_clone3, &args, sizeof args);
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid((pid_t)pid, NULL, 0);
        return pid;
    }
    if (!strcmp(name, "ptrace_traceme")) return ptrace(PTRACE_TRACEME, 0, 0, 0);
    if (!strcmp(name, "ptrace_attach_1")) return ptrace(PTRACE_ATTACH, 1, 0, 0);
    if (!strcmp(name, "process_vm_readv")) return process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    if (!strcmp(name, "bpf")) return syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, (void *)8, 8);
    if (!strcmp(name, "perf_event_open")) return syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0);
    if (!strcmp(name, "keyctl")) return syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0);
    if (!strcmp(name, "add_key")) return syscall(SYS_add_key, "user", "kiln", "x", 1, -3);
    if (!strcmp(name, "init_module")) return syscall(SYS_init_module, NULL, 0, "");
    if (!strcmp(name, "finit_module")) return syscall(SYS_finit_module, -1, "", 0);
    if (!strcmp(name, "kexec_load")) return syscall(SYS_kexec_load, 0, 0, NULL, 0);
    if (!strcmp(name, "reboot")) return syscall(SYS_reboot, 0, 0, 0, NULL);
    if (!strcmp(name, "clock_settime")) return clock_settime(CLOCK_MONOTONIC, &ts);
    if (!strcmp(name, "settimeofday")) return syscall(SYS_settimeofday, NULL, NULL);
    if (!strcmp(name, "userfaultfd")) return syscall(SYS_userfaultfd, 1 /* UFFD_USER_MODE_ONLY */ | O_CLOEXEC);
    if (!strcmp(name, "open_by_handle_at")) return syscall(SYS_open_by_handle_at, -1, NULL, 0);
    if (!strcmp(name, "name_to_handle_at")) return syscall(SYS_name_to_handle_at, AT_FDCWD, "/", &fh.h, &mount_id, 0);
    if (!strcmp(name, "io_uring_setup")) return syscall(SYS_io_uring_setup, 1, NULL);
    if (!strcmp(name, "syslog")) return syscall(SYS_syslog, 10 /* SIZE_BUFFER */, NULL, 0);
    if (!strcmp(name, "personality_no_aslr")) return personality(ADDR_NO_RANDOMIZE);
    if (!strcmp(name, "personality_linux32")) {
        long old = personality(PER_LINUX32);
        personality(PER_LINUX);
        return old;
    }
    if (!strcmp(name, "personality_query")) return personality(0xffffffff);
    if (!strcmp(name, "newer_than_policy")) return syscall(467 /* open_tree_attr */, AT_FDCWD, "/", 0, NULL, 0);
    if (!strcmp(name, "chroot_escape")) return chroot_escape();
    if (!strcmp(name, "threads")) return threads();
    if (!strcmp(name, "posix_spawn")) return spawn_true();
    if (!strcmp(name, "netlink")) return socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0 /* ROUTE */);
    /* These two do not return if the filter works: the kernel kills the process. */
    if (!strcmp(name, "x32")) return syscall(0x40000000 | SYS_getpid);
#if defined(__x86_64__)
    if (!strcmp(name, "i386")) {
        long ret = 20; /* getpid in the i386 table */
        __asm__ volatile("int $0x80" : "+a"(ret) : : "memory");
        return ret;
    }
#endif
    fprintf(stderr, "probe: unknown probe %s\n", name);
    exit(2);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    for (int i = 1; i < argc; i++) {
        errno = 0;
        long ret = run(argv[i]);
        printf("%s: %s\n", argv[i], result(ret));
    }
    return 0;
}
