/*
 * The inside half of kiln's attack suite (tests/hostile): one static binary, one subcommand per
 * attack. Each attack prints one verdict line and exits:
 *
 *   DENIED <attack>: <ERRNO or reason> [details]   exit 0: the attack was stopped
 *   ALLOWED <attack>: <what it got>                exit 1: the attack succeeded
 *
 * A few subcommands report rather than judge (env, uid-map, survivor, bind-socket): the outside
 * half of the test decides. Attacks whose success would harm the host stop at the first sign of
 * success and never do damage: the reboot attempt uses bad magic numbers (the capability check
 * comes first: EPERM means denied, EINVAL means it would have been allowed), the clock is set to
 * the time it already shows, /proc/sysrq-trigger and core_pattern are opened but never written.
 *
 * Built by the test with `gcc -static -O1`; no dynamic NSS, no getaddrinfo.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <linux/io_uring.h>
#include <linux/keyctl.h>
#include <linux/netlink.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>
#include <linux/rtnetlink.h>
#include <linux/sched.h>
#include <linux/userfaultfd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

static const char *attack = "?";

static const char *errname(int err) {
    const char *name = strerrorname_np(err);
    return name ? name : "E?";
}

/* Prints the verdict line in one write (stdout may be a file the step publishes). */
static void say(const char *verdict, const char *fmt, va_list ap) {
    char buf[8192];
    int n = snprintf(buf, sizeof buf, "%s %s: ", verdict, attack);
    n += vsnprintf(buf + n, sizeof buf - n, fmt, ap);
    if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
    buf[n++] = '\n';
    (void)!write(1, buf, n);
}

__attribute__((format(printf, 1, 2))) static int denied(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    say("DENIED", fmt, ap);
    va_end(ap);
    return 0;
}

__attribute__((format(printf, 1, 2))) static int allowed(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    say("ALLOWED", fmt, ap);
    va_end(ap);
    return 1;
}

/* A syscall result: -1 means denied with errno, anything else is a success. */
static int verdict_of(long ret, const char *what) {
    if (ret < 0) return denied("%s %s", errname(errno), what);
    return allowed("%s returned %ld", what, ret);
}

/* ---------------------------------------------------------------- network */

static int parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        *len = sizeof *in4;
        return AF_INET;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        *len = sizeof *in6;
        return AF_INET6;
    }
    fprintf(stderr, "probe: bad address %s\n", host);
    exit(2);
}

static void timeouts(int fd, int secs) {
    struct timeval tv = {.tv_sec = secs};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* tcp HOST PORT: connect to a TCP service. */
static int a_tcp(char **argv) {
    struct sockaddr_storage ss;
    socklen_t len;
    int family = parse_addr(argv[0], atoi(argv[1]), &ss, &len);
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0) return denied("%s socket", errname(errno));
    timeouts(fd, 3);
    if (connect(fd, (struct sockaddr *)&ss, len) < 0)
        return denied("%s connect %s port %s", errname(errno), argv[0], argv[1]);
    (void)!write(fd, "kiln-hostile\n", 13);
    return allowed("connected to %s port %s", argv[0], argv[1]);
}

/* Sends one datagram on a connected UDP socket and waits for an answer or an ICMP error. */
static int udp_exchange(const char *host, int port, const void *msg, size_t len) {
    struct sockaddr_storage ss;
    socklen_t slen;
    int family = parse_addr(host, port, &ss, &slen);
    int fd = socket(family, SOCK_DGRAM, 0);
    if (fd < 0) return denied("%s socket", errname(errno));
    timeouts(fd, 3);
    if (connect(fd, (struct sockaddr *)&ss, slen) < 0)
        return denied("%s connect %s port %d", errname(errno), host, port);
    if (send(fd, msg, len, 0) < 0) return denied("%s send to %s port %d", errname(errno), host, port);
    char buf[512];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n >= 0) return allowed("%zd bytes answered from %s port %d", n, host, port);
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return allowed("datagram to %s port %d sent without error, no answer", host, port);
    return denied("%s recv from %s port %d", errname(errno), host, port);
}

/* udp HOST PORT */
static int a_udp(char **argv) {
    return udp_exchange(argv[0], atoi(argv[1]), "kiln-hostile\n", 13);
}

/* dns [SERVER]: an A query for example.com, to SERVER or to each resolv.conf nameserver. */
static int a_dns(char **argv) {
    static const unsigned char query[] = {
        0x4b, 0x1e, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0, 0x00, 0x01, 0x00, 0x01,
    };
    if (argv[0]) return udp_exchange(argv[0], 53, query, sizeof query);
    FILE *f = fopen("/etc/resolv.conf", "r");
    if (!f) return denied("%s /etc/resolv.conf: no resolver configured", errname(errno));
    char line[256], server[128];
    int tried = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "nameserver %127s", server) == 1) {
            tried++;
            if (udp_exchange(server, 53, query, sizeof query)) return 1;
        }
    }
    if (!tried) return denied("ENOENT no nameserver in /etc/resolv.conf");
    return 0;
}

/* raw: raw IP sockets, v4 and v6. */
static int a_raw(char **argv) {
    (void)argv;
    int fd4 = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    if (fd4 >= 0) return allowed("raw AF_INET socket opened");
    int e4 = errno;
    int fd6 = socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6);
    if (fd6 >= 0) return allowed("raw AF_INET6 socket opened");
    return denied("%s AF_INET SOCK_RAW, %s AF_INET6 SOCK_RAW", errname(e4), errname(errno));
}

/* packet: link-layer sockets. */
static int a_packet(char **argv) {
    (void)argv;
    int fd = socket(AF_PACKET, SOCK_RAW, htons(0x0003 /* ETH_P_ALL */));
    if (fd >= 0) return allowed("AF_PACKET socket opened");
    int e = errno;
    fd = socket(AF_PACKET, SOCK_DGRAM, htons(0x0003));
    if (fd >= 0) return allowed("AF_PACKET SOCK_DGRAM socket opened");
    return denied("%s AF_PACKET SOCK_RAW, %s AF_PACKET SOCK_DGRAM", errname(e), errname(errno));
}

static struct rtattr *rta_add(struct nlmsghdr *nh, int type, const void *data, int len) {
    struct rtattr *rta = (struct rtattr *)((char *)nh + NLMSG_ALIGN(nh->nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = RTA_LENGTH(len);
    if (len) memcpy(RTA_DATA(rta), data, len);
    nh->nlmsg_len = NLMSG_ALIGN(nh->nlmsg_len) + RTA_ALIGN(rta->rta_len);
    return rta;
}

/* netlink-newlink KIND: RTM_NEWLINK for an interface of KIND (dummy, veth, bridge ...). */
static int a_netlink_newlink(char **argv) {
    const char *kind = argv[0];
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) return denied("%s netlink socket", errname(errno));
    timeouts(fd, 3);
    union {
        struct nlmsghdr nh;
        char buf[1024];
    } req;
    memset(&req, 0, sizeof req);
    req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    req.nh.nlmsg_type = RTM_NEWLINK;
    req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
    req.nh.nlmsg_seq = 1;
    struct ifinfomsg *ifi = NLMSG_DATA(&req.nh);
    ifi->ifi_family = AF_UNSPEC;
    rta_add(&req.nh, IFLA_IFNAME, "kilnevil0", 10);
    struct rtattr *info = rta_add(&req.nh, IFLA_LINKINFO, NULL, 0);
    rta_add(&req.nh, IFLA_INFO_KIND, kind, strlen(kind) + 1);
    info->rta_len = (char *)&req.nh + req.nh.nlmsg_len - (char *)info;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, &req, req.nh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0)
        return denied("%s sendto RTM_NEWLINK", errname(errno));
    char ans[4096];
    ssize_t n = recv(fd, ans, sizeof ans, 0);
    if (n < 0) return denied("%s recv RTM_NEWLINK ack", errname(errno));
    struct nlmsghdr *h = (struct nlmsghdr *)ans;
    if (h->nlmsg_type != NLMSG_ERROR) return allowed("unexpected netlink answer type %d", h->nlmsg_type);
    struct nlmsgerr *err = NLMSG_DATA(h);
    if (err->error == 0) return allowed("created a %s interface kilnevil0", kind);
    return denied("%s RTM_NEWLINK %s", errname(-err->error), kind);
}

static int unix_connect(const char *path, int abstract) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n + 2 > sizeof sun.sun_path) n = sizeof sun.sun_path - 2;
    memcpy(sun.sun_path + (abstract ? 1 : 0), path, n);
    socklen_t len = offsetof(struct sockaddr_un, sun_path) + n + (abstract ? 1 : 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) return denied("%s socket", errname(errno));
    if (connect(fd, (struct sockaddr *)&sun, len) < 0)
        return denied("%s connect %s%s", errname(errno), abstract ? "@" : "", path);
    (void)!write(fd, "kiln-hostile\n", 13);
    return allowed("connected to %s%s", abstract ? "@" : "", path);
}

/* unix-abstract NAME: connect to the abstract unix socket @NAME. */
static int a_unix_abstract(char **argv) { return unix_connect(argv[0], 1); }

/* unix-path PATH: connect to a unix socket by path. */
static int a_unix_path(char **argv) { return unix_connect(argv[0], 0); }

/* bind-socket PATH: leaves a unix socket behind at PATH (reports, does not judge). */
static int a_bind_socket(char **argv) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strncpy(sun.sun_path, argv[0], sizeof sun.sun_path - 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0)
        return denied("%s bind %s", errname(errno), argv[0]);
    printf("CREATED socket %s\n", argv[0]);
    return 0;
}

/* listen-abstract NAME SECS: holds the abstract unix socket @NAME open for SECS seconds and
 * counts connections (reports, does not judge). */
static int a_listen_abstract(char **argv) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t n = strlen(argv[0]);
    if (n + 2 > sizeof sun.sun_path) n = sizeof sun.sun_path - 2;
    memcpy(sun.sun_path + 1, argv[0], n);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, offsetof(struct sockaddr_un, sun_path) + n + 1) < 0 ||
        listen(fd, 16) < 0)
        return denied("%s listen @%s", errname(errno), argv[0]);
    long accepted = 0;
    for (long i = 0; i < atol(argv[1]) * 10; i++) {
        while (accept(fd, NULL, NULL) >= 0) accepted++;
        usleep(100000);
    }
    printf("LISTENED @%s: %ld connections\n", argv[0], accepted);
    return 0;
}

/* ---------------------------------------------------------------- filesystem */

/* Set by write-data: what `write` writes. */
static const char *argc_data;

/* write PATH...: create or truncate each PATH and write to it. */
static int a_write(char **argv) {
    char detail[4096] = "";
    int first = 0;
    for (; *argv; argv++) {
        int fd = open(*argv, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            const char *data = argc_data ? argc_data : "kiln-hostile\n";
            ssize_t n = write(fd, data, strlen(data));
            close(fd);
            if (n >= 0) return allowed("wrote %zd bytes to %s", n, *argv);
        }
        if (!first) first = errno;
        size_t used = strlen(detail);
        snprintf(detail + used, sizeof detail - used, "%s%s %s", used ? ", " : "", errname(errno), *argv);
    }
    return denied("%s (%s)", errname(first), detail);
}

/* write-data DATA PATH...: `write` with DATA (e.g. a uid map line). */
static int a_write_data(char **argv) {
    argc_data = argv[0];
    return a_write(argv + 1);
}

/* tty: the host's terminal, through /dev/tty or an inherited descriptor: TIOCSTI would type
 * commands into it (CVE-2017-5226 in bubblewrap). */
static int a_tty(char **argv) {
    (void)argv;
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd >= 0) return allowed("opened /dev/tty, a controlling terminal");
    int e = errno;
    char detail[256] = "";
    for (int i = 0; i <= 2; i++) {
        char c = ' ';
        if (ioctl(i, TIOCSTI, &c) == 0) return allowed("TIOCSTI on descriptor %d", i);
        size_t used = strlen(detail);
        snprintf(detail + used, sizeof detail - used, ", %s TIOCSTI on %d", errname(errno), i);
    }
    return denied("%s open /dev/tty%s", errname(e), detail);
}

/* read PATH...: open each PATH for reading; any success is a leak. */
static int a_read(char **argv) {
    char detail[8192] = "";
    int first = 0;
    for (; *argv; argv++) {
        int fd = open(*argv, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            char buf[64];
            ssize_t n = read(fd, buf, sizeof buf);
            return allowed("opened %s (read returned %zd)", *argv, n);
        }
        if (!first) first = errno;
        size_t used = strlen(detail);
        snprintf(detail + used, sizeof detail - used, "%s%s %s", used ? ", " : "", errname(errno), *argv);
    }
    return denied("%s (%s)", errname(first), detail);
}

/* mount: mount a fresh tmpfs over /tmp. */
static int a_mount(char **argv) {
    (void)argv;
    return verdict_of(mount("tmpfs", "/tmp", "tmpfs", 0, "size=1m"), "mount tmpfs /tmp");
}

/* remount: make the read-only rootfs writable again. */
static int a_remount(char **argv) {
    (void)argv;
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND, NULL) == 0)
        return allowed("remounted / read-write");
    int e = errno;
    if (mount(NULL, "/", NULL, MS_REMOUNT, NULL) == 0) return allowed("remounted / read-write");
    return denied("%s remount,bind /, %s remount /", errname(e), errname(errno));
}

/* umount PATH: uncover what lies under a mount. */
static int a_umount(char **argv) {
    return verdict_of(umount2(argv[0], MNT_DETACH), "umount2 MNT_DETACH");
}

/* pivot-root: pivot into /tmp. */
static int a_pivot_root(char **argv) {
    (void)argv;
    mkdir("/tmp/new", 0755);
    mkdir("/tmp/new/old", 0755);
    return verdict_of(syscall(SYS_pivot_root, "/tmp/new", "/tmp/new/old"), "pivot_root");
}

/* chroot: the classic escape needs chroot(2) first. */
static int a_chroot(char **argv) {
    (void)argv;
    mkdir("/tmp/jail", 0755);
    if (chroot("/tmp/jail") < 0) return denied("%s chroot /tmp/jail", errname(errno));
    for (int i = 0; i < 64; i++) (void)!chdir("..");
    (void)!chroot(".");
    return allowed("chroot succeeded, then chroot(\".\") after 64 chdir(\"..\")");
}

/* mknod: device nodes, anywhere writable. */
static int a_mknod(char **argv) {
    (void)argv;
    if (mknod("/tmp/null", S_IFCHR | 0666, makedev(1, 3)) == 0) return allowed("made /tmp/null (1,3)");
    int e = errno;
    if (mknod("/out/sda", S_IFBLK | 0666, makedev(8, 0)) == 0) return allowed("made /out/sda (8,0)");
    return denied("%s mknod char 1:3 in /tmp, %s mknod block 8:0 in /out", errname(e), errname(errno));
}

/* hardlink SRC DST */
static int a_hardlink(char **argv) {
    if (link(argv[0], argv[1]) == 0) return allowed("linked %s to %s", argv[1], argv[0]);
    return denied("%s link %s -> %s", errname(errno), argv[1], argv[0]);
}

/* open-by-handle: open_by_handle_at with a forged handle (inode 2, the root of most file
 * systems), the "shocker" container escape. */
static int a_open_by_handle(char **argv) {
    (void)argv;
    struct {
        struct file_handle fh;
        unsigned char bytes[8];
    } h;
    memset(&h, 0, sizeof h);
    h.fh.handle_bytes = 8;
    h.fh.handle_type = 1; /* FILEID_INO32_GEN */
    uint32_t ino = 2;
    memcpy(h.fh.f_handle, &ino, 4);
    int mfd = open("/in/probe", O_RDONLY | O_DIRECTORY);
    int fd = open_by_handle_at(mfd, &h.fh, O_RDONLY);
    if (fd >= 0) return allowed("open_by_handle_at opened inode 2");
    return denied("%s open_by_handle_at", errname(errno));
}

/* inherited-fds: any descriptor beyond 0, 1, 2 could point outside the sandbox. */
static int a_inherited_fds(char **argv) {
    (void)argv;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return allowed("cannot list /proc/self/fd: %s", errname(errno));
    char extra[4096] = "";
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd <= 2 || fd == dirfd(d)) continue;
        char link[256], target[512] = "";
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n > 0) target[n] = 0;
        size_t used = strlen(extra);
        snprintf(extra + used, sizeof extra - used, " %d->%s", fd, target);
    }
    if (extra[0]) return allowed("inherited descriptors:%s", extra);
    return denied("none beyond 0 1 2");
}

/* proc1-fds: the sandbox's pid 1 runs with privileges in the step's namespace; its descriptors
 * (pipes to the helper, the log) must not be reachable. */
static int a_proc1_fds(char **argv) {
    (void)argv;
    DIR *d = opendir("/proc/1/fd");
    if (d) return allowed("listed /proc/1/fd");
    int e = errno;
    int fd = open("/proc/1/fd/1", O_WRONLY);
    if (fd >= 0) return allowed("opened /proc/1/fd/1 for writing");
    return denied("%s opendir /proc/1/fd, %s open /proc/1/fd/1", errname(e), errname(errno));
}

/* proc-write PATH: open a kernel control file for writing. Never writes: if the open works,
 * the attack is reported as allowed unless the path is masked by a device such as /dev/null. */
static int a_proc_write(char **argv) {
    int fd = open(argv[0], O_WRONLY | O_CLOEXEC);
    if (fd < 0) return denied("%s open %s for writing", errname(errno), argv[0]);
    struct stat st;
    fstat(fd, &st);
    if (S_ISCHR(st.st_mode))
        return denied("masked %s is a character device %u:%u", argv[0], major(st.st_rdev), minor(st.st_rdev));
    return allowed("opened %s for writing (not written)", argv[0]);
}

/* proc-read PATH: open a kernel file for reading; a masked path reads as empty. */
static int a_proc_read(char **argv) {
    int fd = open(argv[0], O_RDONLY | O_CLOEXEC);
    if (fd < 0) return denied("%s open %s", errname(errno), argv[0]);
    char buf[16];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return denied("masked %s reads %zd bytes", argv[0], n);
    return allowed("read %zd bytes of %s", n, argv[0]);
}

/* ---------------------------------------------------------------- privilege */

static int a_euid(char **argv) {
    (void)argv;
    printf("euid %d\n", (int)geteuid());
    return 0;
}

/* suid PATH: a setuid copy of the probe, shipped in the input tree: its bit must be gone and
 * running it must not raise the effective uid. */
static int a_suid(char **argv) {
    struct stat st;
    if (stat(argv[0], &st) < 0) return allowed("cannot stat %s: %s", argv[0], errname(errno));
    int pipefd[2];
    if (pipe(pipefd) < 0) return allowed("pipe: %s", errname(errno));
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 1);
        execl(argv[0], argv[0], "euid", (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    char buf[64] = "";
    ssize_t n = read(pipefd[0], buf, sizeof buf - 1);
    if (n > 0) buf[n] = 0;
    waitpid(pid, NULL, 0);
    int euid = -1;
    sscanf(buf, "euid %d", &euid);
    int bits = st.st_mode & 06000;
    if (bits || euid != (int)getuid())
        return allowed("mode %04o, euid %d after exec", st.st_mode & 07777, euid);
    return denied("setuid bit stripped (mode %04o), euid %d after exec", st.st_mode & 07777, euid);
}

/* setuid0: become root (uid 0) of the step's user namespace. */
static int a_setuid0(char **argv) {
    (void)argv;
    if (setuid(0) == 0) return allowed("setuid(0)");
    int e = errno;
    if (setresuid(0, 0, 0) == 0) return allowed("setresuid(0, 0, 0)");
    int e2 = errno;
    if (setgid(0) == 0) return allowed("setgid(0)");
    return denied("%s setuid(0), %s setresuid(0,0,0), %s setgid(0); uid %d", errname(e), errname(e2),
                  errname(errno), (int)getuid());
}

/* caps: every capability set of the step is empty and no_new_privs is on. */
static int a_caps(char **argv) {
    (void)argv;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return allowed("cannot read /proc/self/status: %s", errname(errno));
    char line[256], found[1024] = "";
    int bad = 0, nnp = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        char name[32];
        if (sscanf(line, "%31[^:]:\t%llx", name, &v) == 2 && strncmp(name, "Cap", 3) == 0) {
            size_t used = strlen(found);
            snprintf(found + used, sizeof found - used, " %s=%llx", name, v);
            if (v) bad = 1;
        }
        sscanf(line, "NoNewPrivs:\t%d", &nnp);
    }
    if (bad || nnp != 1) return allowed("%s NoNewPrivs=%d", found, nnp);
    return denied("no capabilities:%s NoNewPrivs=1", found);
}

/* ptrace PID */
static int a_ptrace(char **argv) {
    pid_t pid = atoi(argv[0]);
    if (ptrace(PTRACE_ATTACH, pid, 0, 0) == 0) {
        ptrace(PTRACE_DETACH, pid, 0, 0);
        return allowed("attached to pid %d", pid);
    }
    int e = errno;
    if (ptrace(PTRACE_SEIZE, pid, 0, 0) == 0) return allowed("seized pid %d", pid);
    return denied("%s PTRACE_ATTACH pid %d, %s PTRACE_SEIZE", errname(e), pid, errname(errno));
}

/* kill1: signal the sandbox's pid 1, which reports the step's status. */
static int a_kill1(char **argv) {
    (void)argv;
    return verdict_of(kill(1, SIGKILL), "kill(1, SIGKILL)");
}

static int ns_flag(const char *name) {
    if (!strcmp(name, "user")) return CLONE_NEWUSER;
    if (!strcmp(name, "net")) return CLONE_NEWNET;
    if (!strcmp(name, "mount")) return CLONE_NEWNS;
    if (!strcmp(name, "pid")) return CLONE_NEWPID;
    if (!strcmp(name, "ipc")) return CLONE_NEWIPC;
    if (!strcmp(name, "uts")) return CLONE_NEWUTS;
    if (!strcmp(name, "cgroup")) return CLONE_NEWCGROUP;
    fprintf(stderr, "probe: unknown namespace %s\n", name);
    exit(2);
}

/* unshare NS: a new namespace of kind NS (user, net, mount, ...). */
static int a_unshare(char **argv) {
    if (unshare(ns_flag(argv[0])) == 0) return allowed("unshare(CLONE_NEW%s)", argv[0]);
    return denied("%s unshare %s", errname(errno), argv[0]);
}

/* clone-ns NS: the same through clone(2) and clone3(2), which a filter must cover too. */
static int a_clone_ns(char **argv) {
    int flag = ns_flag(argv[0]);
    long pid = syscall(SYS_clone, flag | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) syscall(SYS_exit, 0);
    if (pid > 0) {
        waitpid(pid, NULL, 0);
        return allowed("clone(CLONE_NEW%s)", argv[0]);
    }
    int e = errno;
    struct clone_args args = {.flags = flag, .exit_signal = SIGCHLD};
    pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) syscall(SYS_exit, 0);
    if (pid > 0) {
        waitpid(pid, NULL, 0);
        return allowed("clone3(CLONE_NEW%s)", argv[0]);
    }
    return denied("%s clone %s, %s clone3", errname(e), argv[0], errname(errno));
}

/* keyctl: the kernel keyring (add_key, request_key, keyctl). */
static int a_keyctl(char **argv) {
    (void)argv;
    long k = syscall(SYS_add_key, "user", "kiln-hostile", "x", 1, KEY_SPEC_SESSION_KEYRING);
    if (k >= 0) return allowed("add_key returned key %ld", k);
    int e1 = errno;
    long r = syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, "kiln-hostile");
    if (r >= 0) return allowed("keyctl(JOIN_SESSION_KEYRING) returned %ld", r);
    int e2 = errno;
    r = syscall(SYS_request_key, "user", "kiln-hostile", NULL, 0);
    int e3 = r >= 0 ? 0 : errno;
    if (r >= 0) return allowed("request_key returned %ld", r);
    return denied("%s add_key, %s keyctl, %s request_key", errname(e1), errname(e2), errname(e3));
}

/* bpf: load a two-instruction socket filter, create a map. */
static int a_bpf(char **argv) {
    (void)argv;
    struct bpf_insn insns[2] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0},
        {.code = BPF_JMP | BPF_EXIT},
    };
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insns = (uintptr_t)insns;
    attr.insn_cnt = 2;
    attr.license = (uintptr_t) "GPL";
    long fd = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    if (fd >= 0) return allowed("BPF_PROG_LOAD returned %ld", fd);
    int e = errno;
    memset(&attr, 0, sizeof attr);
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    fd = syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr);
    if (fd >= 0) return allowed("BPF_MAP_CREATE returned %ld", fd);
    return denied("%s BPF_PROG_LOAD, %s BPF_MAP_CREATE", errname(e), errname(errno));
}

/* modules: init_module with an empty image, finit_module with the probe itself, and
 * delete_module of a name that is not loaded; privilege is checked before the argument. */
static int a_modules(char **argv) {
    (void)argv;
    char image[16] = {0};
    if (syscall(SYS_init_module, image, sizeof image, "") == 0) return allowed("init_module");
    int e1 = errno;
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (syscall(SYS_finit_module, fd, "", 0) == 0) return allowed("finit_module");
    int e2 = errno;
    if (syscall(SYS_delete_module, "kiln_hostile", O_NONBLOCK) == 0) return allowed("delete_module");
    return denied("%s init_module, %s finit_module, %s delete_module", errname(e1), errname(e2),
                  errname(errno));
}

/* kexec: load a new kernel (empty segment list). */
static int a_kexec(char **argv) {
    (void)argv;
    if (syscall(SYS_kexec_load, 0UL, 0UL, NULL, 0UL) == 0) return allowed("kexec_load");
    int e = errno;
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (syscall(SYS_kexec_file_load, fd, fd, 1UL, "", 0UL) == 0) return allowed("kexec_file_load");
    return denied("%s kexec_load, %s kexec_file_load", errname(e), errname(errno));
}

/* clock: set the system clocks to the time they already show. */
static int a_clock(char **argv) {
    (void)argv;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (clock_settime(CLOCK_REALTIME, &now) == 0) return allowed("clock_settime(CLOCK_REALTIME)");
    int e1 = errno;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (settimeofday(&tv, NULL) == 0) return allowed("settimeofday");
    return denied("%s clock_settime, %s settimeofday", errname(e1), errname(errno));
}

/* reboot: with bad magic numbers, so it is harmless even if allowed: the kernel checks
 * CAP_SYS_BOOT first (EPERM), then the magic (EINVAL: the caller was privileged enough). */
static int a_reboot(char **argv) {
    (void)argv;
    if (syscall(SYS_reboot, 0xdead, 0xbeef, LINUX_REBOOT_CMD_CAD_OFF, NULL) == 0)
        return allowed("reboot returned 0");
    if (errno == EINVAL) return allowed("reboot passed the privilege check (EINVAL for bad magic)");
    return denied("%s reboot", errname(errno));
}

/* perf: a software counter on the probe itself, the most that perf_event_paranoid allows. */
static int a_perf(char **argv) {
    (void)argv;
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.type = PERF_TYPE_SOFTWARE;
    a.size = sizeof a;
    a.config = PERF_COUNT_SW_TASK_CLOCK;
    a.disabled = 1;
    a.exclude_kernel = 1;
    a.exclude_hv = 1;
    return verdict_of(syscall(SYS_perf_event_open, &a, 0, -1, -1, 0), "perf_event_open (self, user-only)");
}

/* userfaultfd: user-mode-only first (allowed to unprivileged processes), then full. */
static int a_userfaultfd(char **argv) {
    (void)argv;
    long fd = syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
    if (fd >= 0) return allowed("userfaultfd(UFFD_USER_MODE_ONLY) returned %ld", fd);
    int e = errno;
    fd = syscall(SYS_userfaultfd, O_CLOEXEC);
    if (fd >= 0) return allowed("userfaultfd returned %ld", fd);
    return denied("%s userfaultfd(UFFD_USER_MODE_ONLY), %s userfaultfd", errname(e), errname(errno));
}

/* io-uring: set up a ring. */
static int a_io_uring(char **argv) {
    (void)argv;
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    return verdict_of(syscall(SYS_io_uring_setup, 4, &p), "io_uring_setup");
}

/* ---------------------------------------------------------------- resources */

/* fork-bomb MAX: fork until the kernel refuses; each child waits to be killed. */
static int a_fork_bomb(char **argv) {
    long max = atol(argv[0]);
    pid_t *kids = calloc(max, sizeof *kids);
    long n = 0;
    int err = 0;
    for (; n < max; n++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (;;) pause();
        }
        if (pid < 0) {
            err = errno;
            break;
        }
        kids[n] = pid;
    }
    int r = err ? denied("%s fork after %ld processes", errname(err), n)
                : allowed("forked %ld processes", n);
    for (long i = 0; i < n; i++) kill(kids[i], SIGKILL);
    while (wait(NULL) > 0) {}
    return r;
}

/* memory-bomb MIB: allocate and touch MIB MiB in 64 MiB pieces. */
static int a_memory_bomb(char **argv) {
    long mib = atol(argv[0]), done = 0;
    while (done < mib) {
        char *p = mmap(NULL, 64 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return denied("%s mmap after %ld MiB", errname(errno), done);
        memset(p, 0x5a, 64 << 20);
        done += 64;
    }
    return allowed("touched %ld MiB", done);
}

/* fill DIR MAX_MIB: write until the file system refuses. */
static int a_fill(char **argv) {
    char path[4096];
    snprintf(path, sizeof path, "%s/kiln-fill", argv[0]);
    long max = atol(argv[1]);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return denied("%s open %s", errname(errno), path);
    static char chunk[1 << 20];
    memset(chunk, 0x5a, sizeof chunk);
    long long total = 0;
    int err = 0;
    while (total < (long long)max << 20) {
        ssize_t n = write(fd, chunk, sizeof chunk);
        if (n < 0) {
            err = errno;
            break;
        }
        total += n;
    }
    close(fd);
    unlink(path);
    if (err) return denied("%s after %lld MiB (%lld bytes) in %s", errname(err), total >> 20, total, argv[0]);
    return allowed("wrote %lld MiB to %s", total >> 20, argv[0]);
}

/* fds MAX: open descriptors until the rlimit stops it; then try to raise the limit. */
static int a_fds(char **argv) {
    long max = atol(argv[0]), n = 0;
    int err = 0;
    for (; n < max; n++) {
        if (open("/dev/null", O_RDONLY) < 0) {
            err = errno;
            break;
        }
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    struct rlimit more = {rl.rlim_max + 1, rl.rlim_max + 1};
    int raise = setrlimit(RLIMIT_NOFILE, &more) == 0 ? 0 : errno;
    if (!err) return allowed("opened %ld descriptors", n);
    if (!raise) return allowed("%s after %ld descriptors, but raised RLIMIT_NOFILE past %llu", errname(err), n,
                               (unsigned long long)rl.rlim_max);
    return denied("%s after %ld descriptors (RLIMIT_NOFILE %llu/%llu, raising it: %s)", errname(err), n,
                  (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max, errname(raise));
}

/* core-limit: core dumps are off and cannot be turned on. */
static int a_core_limit(char **argv) {
    (void)argv;
    struct rlimit rl;
    getrlimit(RLIMIT_CORE, &rl);
    struct rlimit on = {RLIM_INFINITY, RLIM_INFINITY};
    if (rl.rlim_max != 0) return allowed("RLIMIT_CORE hard limit %llu", (unsigned long long)rl.rlim_max);
    if (setrlimit(RLIMIT_CORE, &on) == 0) return allowed("raised RLIMIT_CORE to unlimited");
    return denied("%s raising RLIMIT_CORE %llu/%llu", errname(errno), (unsigned long long)rl.rlim_cur,
                  (unsigned long long)rl.rlim_max);
}

static void ignore_signals(void) {
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
}

/* spin: ignore every catchable signal and burn CPU in three processes, forever. */
static int a_spin(char **argv) {
    (void)argv;
    ignore_signals();
    fork();
    fork();
    printf("SPINNING\n");
    fflush(stdout);
    for (volatile unsigned long i = 0;; i++) {}
    return 0;
}

/* linger MARKER: what a survivor runs (MARKER is in its command line). */
static int a_linger(char **argv) {
    (void)argv;
    ignore_signals();
    for (;;) sleep(1);
    return 0;
}

/* survivor MARKER: a double-forked, session-leading, SIGTERM-ignoring process whose command line
 * holds MARKER. Reports its pid once it runs; the outside half checks the host afterwards. */
static int a_survivor(char **argv) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return allowed("pipe: %s", errname(errno));
    pid_t child = fork();
    if (child == 0) {
        setsid();
        if (fork() == 0) {
            ignore_signals();
            close(p[0]);
            char *args[] = {"probe", "linger", argv[0], NULL};
            execv("/proc/self/exe", args);
            _exit(127);
        }
        _exit(0);
    }
    close(p[1]);
    waitpid(child, NULL, 0);
    char c;
    (void)!read(p[0], &c, 1); /* EOF once the survivor has exec'd */
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[300], cmd[512];
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        ssize_t n = read(fd, cmd, sizeof cmd - 1);
        close(fd);
        if (n <= 0) continue;
        for (ssize_t i = 0; i < n; i++)
            if (!cmd[i]) cmd[i] = ' ';
        cmd[n] = 0;
        if (strstr(cmd, argv[0]) && strstr(cmd, "linger")) {
            printf("SPAWNED survivor pid %s: %s\n", e->d_name, cmd);
            return 0;
        }
    }
    printf("NOT SPAWNED survivor\n");
    return 2;
}

/* ---------------------------------------------------------------- information */

/* env: the environment kiln gave the step, one "ENV NAME=VALUE" line each: that of the step's
 * shell (the probe's parent) as it was exec'd, before the shell added PWD and SHLVL for its
 * children (reports, does not judge). */
static int a_env(char **argv) {
    (void)argv;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/environ", (int)getppid());
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return allowed("cannot read %s: %s", path, errname(errno));
    static char buf[1 << 16];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0) return allowed("cannot read %s: %s", path, errname(errno));
    buf[n] = 0;
    for (char *e = buf; e < buf + n; e += strlen(e) + 1) printf("ENV %s\n", e);
    return 0;
}

/* uid-map: this step's uid mapping (reports, does not judge). */
static int a_uid_map(char **argv) {
    (void)argv;
    FILE *f = fopen("/proc/self/uid_map", "r");
    unsigned inside, outside, count;
    if (!f || fscanf(f, "%u %u %u", &inside, &outside, &count) != 3) return 2;
    printf("UIDMAP %u %u %u\n", inside, outside, count);
    return 0;
}

static long files_read, marker_hits;
static char hit_path[4096];

static void search_file(const char *path, const char *marker) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return;
    static char buf[1 << 20];
    size_t mlen = strlen(marker), have = 0;
    files_read++;
    for (long total = 0; total < (64 << 20);) {
        ssize_t n = read(fd, buf + have, sizeof buf - have);
        if (n <= 0) break;
        total += n;
        have += n;
        if (memmem(buf, have, marker, mlen)) {
            marker_hits++;
            snprintf(hit_path, sizeof hit_path, "%s", path);
            break;
        }
        if (have >= mlen) {
            memmove(buf, buf + have - (mlen - 1), mlen - 1);
            have = mlen - 1;
        }
    }
    close(fd);
}

static void search_tree(const char *dir, const char *marker, int depth) {
    if (depth > 32) return;
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", strcmp(dir, "/") ? dir : "", e->d_name);
        if (!strcmp(path, "/proc") || !strcmp(path, "/sys") || !strcmp(path, "/dev")) continue;
        struct stat st;
        if (lstat(path, &st) < 0) continue;
        if (S_ISDIR(st.st_mode)) search_tree(path, marker, depth + 1);
        else if (S_ISREG(st.st_mode)) search_file(path, marker);
    }
    closedir(d);
}

/* search REVERSED-MARKER [PATH...]: look for another step's secret in every readable file,
 * in every visible process's command line and environment, on the abstract unix socket named
 * after it, and at the given host paths. The
 * marker is passed reversed so that the probe's own command line does not contain it. */
static int a_search(char **argv) {
    char marker[256];
    size_t n = strlen(argv[0]);
    if (n >= sizeof marker) n = sizeof marker - 1;
    for (size_t i = 0; i < n; i++) marker[i] = argv[0][n - 1 - i];
    marker[n] = 0;
    search_tree("/", marker, 0);
    long procs = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        procs++;
        char path[300];
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        search_file(path, marker);
        snprintf(path, sizeof path, "/proc/%s/environ", e->d_name);
        search_file(path, marker);
    }
    if (marker_hits) return allowed("found the marker in %s", hit_path);
    char detail[4096] = "";
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path + 1, marker, n < sizeof sun.sun_path - 2 ? n : sizeof sun.sun_path - 2);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&sun, offsetof(struct sockaddr_un, sun_path) + 1 + n) == 0)
        return allowed("connected to the abstract socket named after the marker");
    snprintf(detail, sizeof detail, ", %s connect to the abstract socket", errname(errno));
    for (char **p = argv + 1; *p; p++) {
        int fd = open(*p, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) return allowed("opened %s", *p);
        size_t used = strlen(detail);
        snprintf(detail + used, sizeof detail - used, ", %s %s", errname(errno), *p);
    }
    return denied("marker not found in %ld files, %ld processes visible%s", files_read, procs, detail);
}

/* ---------------------------------------------------------------- main */

struct cmd {
    const char *name;
    int nargs; /* minimum */
    int (*run)(char **argv);
};

static const struct cmd cmds[] = {
    {"tcp", 2, a_tcp},
    {"udp", 2, a_udp},
    {"dns", 0, a_dns},
    {"raw", 0, a_raw},
    {"packet", 0, a_packet},
    {"netlink-newlink", 1, a_netlink_newlink},
    {"unix-abstract", 1, a_unix_abstract},
    {"unix-path", 1, a_unix_path},
    {"bind-socket", 1, a_bind_socket},
    {"listen-abstract", 2, a_listen_abstract},
    {"write", 1, a_write},
    {"read", 1, a_read},
    {"write-data", 2, a_write_data},
    {"tty", 0, a_tty},
    {"mount", 0, a_mount},
    {"remount", 0, a_remount},
    {"umount", 1, a_umount},
    {"pivot-root", 0, a_pivot_root},
    {"chroot", 0, a_chroot},
    {"mknod", 0, a_mknod},
    {"hardlink", 2, a_hardlink},
    {"open-by-handle", 0, a_open_by_handle},
    {"inherited-fds", 0, a_inherited_fds},
    {"proc1-fds", 0, a_proc1_fds},
    {"proc-write", 1, a_proc_write},
    {"proc-read", 1, a_proc_read},
    {"euid", 0, a_euid},
    {"suid", 1, a_suid},
    {"setuid0", 0, a_setuid0},
    {"caps", 0, a_caps},
    {"ptrace", 1, a_ptrace},
    {"kill1", 0, a_kill1},
    {"unshare", 1, a_unshare},
    {"clone-ns", 1, a_clone_ns},
    {"keyctl", 0, a_keyctl},
    {"bpf", 0, a_bpf},
    {"modules", 0, a_modules},
    {"kexec", 0, a_kexec},
    {"clock", 0, a_clock},
    {"reboot", 0, a_reboot},
    {"perf", 0, a_perf},
    {"userfaultfd", 0, a_userfaultfd},
    {"io-uring", 0, a_io_uring},
    {"fork-bomb", 1, a_fork_bomb},
    {"memory-bomb", 1, a_memory_bomb},
    {"fill", 2, a_fill},
    {"fds", 1, a_fds},
    {"core-limit", 0, a_core_limit},
    {"spin", 0, a_spin},
    {"linger", 1, a_linger},
    {"survivor", 1, a_survivor},
    {"env", 0, a_env},
    {"uid-map", 0, a_uid_map},
    {"search", 1, a_search},
};

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: probe ATTACK [ARGS]\n");
        return 2;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(argv[1], cmds[i].name)) continue;
        if (argc - 2 < cmds[i].nargs) {
            fprintf(stderr, "probe %s: needs %d arguments\n", argv[1], cmds[i].nargs);
            return 2;
        }
        attack = argv[1];
        return cmds[i].run(argv + 2);
    }
    fprintf(stderr, "probe: unknown attack %s\n", argv[1]);
    return 2;
}
