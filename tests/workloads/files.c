/* Checkpoint/restore workload for file descriptors. argv[4] names what
 * it sets up (several may be joined with commas, "all" is every
 * supported kind):
 *   files    regular files: offset, O_APPEND, a dup sharing the offset,
 *            close-on-exec, a directory
 *   deleted  an unlinked open file with contents and an offset
 *   pipes    a pipe with both ends and 3 KiB buffered, a pipe whose write
 *            end is gone with 100 bytes buffered
 *   unix     stream, seqpacket and datagram socket pairs with messages
 *            queued both ways
 *   inet     a listening TCP socket on 127.0.0.1 (port written to the
 *            file "port" in the pid file's directory; each connection
 *            gets "pong PID\n") and a bound UDP socket
 *   events   eventfds (plain and semaphore), timerfds, a signalfd and an
 *            epoll set over a pipe and an eventfd
 *   inotify  an inotify fd (not supported)
 *   tcpconn  a connected TCP socket (not supported)
 *   unixfd   a socket pair with a message carrying an fd queued (not
 *            supported)
 * Protocol as memory.c: pid file argv[1], trigger argv[2], log argv[3];
 * on the trigger it verifies its fds once and logs PASS or FAIL. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static int logfd = -1;
static char reason[512];

#define FAIL(...) do { snprintf(reason, sizeof reason, __VA_ARGS__); return 0; } while (0)

static uint8_t pattern(size_t i, uint8_t seed) { return (uint8_t)(i * 131 + seed + (i >> 8)); }

static int has(const char *mode, const char *what) {
    if (strcmp(mode, "all") == 0) return strcmp(what, "inotify") && strcmp(what, "tcpconn") && strcmp(what, "unixfd");
    size_t n = strlen(what);
    for (const char *p = mode; (p = strstr(p, what)); p += n)
        if ((p == mode || p[-1] == ',') && (p[n] == 0 || p[n] == ',')) return 1;
    return 0;
}

static int move_to(int fd, int want) {
    if (fd == want) return fd;
    if (dup2(fd, want) != want) exit(2);
    close(fd);
    return want;
}

/* ---- files ---- */
static int f_plain = 30, f_dup = 31, f_app = 32, f_ro = 33, f_dir = 34;

static void setup_files(void) {
    move_to(open("data", O_RDWR | O_CREAT | O_TRUNC, 0644), f_plain);
    if (write(f_plain, "0123456789abcdef", 16) != 16) exit(2);
    lseek(f_plain, 5, SEEK_SET);
    if (dup2(f_plain, f_dup) != f_dup) exit(2);
    move_to(open("append", O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644), f_app);
    if (write(f_app, "abc", 3) != 3) exit(2);
    lseek(f_app, 1, SEEK_SET);
    int ro = open("data", O_RDONLY);
    if (dup3(ro, f_ro, O_CLOEXEC) != f_ro) exit(2);
    close(ro);
    lseek(f_ro, 9, SEEK_SET);
    move_to(open(".", O_RDONLY | O_DIRECTORY), f_dir);
}

static int check_files(void) {
    off_t at = lseek(f_plain, 0, SEEK_CUR);
    if (at != 5) FAIL("plain file offset %ld, expected 5", (long)at);
    char c = 0;
    if (read(f_dup, &c, 1) != 1 || c != '5') FAIL("dup read '%c', expected '5'", c);
    if (lseek(f_plain, 0, SEEK_CUR) != 6) FAIL("the dup does not share the offset");
    if (fcntl(f_plain, F_GETFD) != 0) FAIL("plain file is close-on-exec");
    if (!(fcntl(f_ro, F_GETFD) & FD_CLOEXEC)) FAIL("close-on-exec lost");
    if ((fcntl(f_ro, F_GETFL) & O_ACCMODE) != O_RDONLY) FAIL("read-only file is not");
    if (lseek(f_ro, 0, SEEK_CUR) != 9) FAIL("read-only offset %ld", (long)lseek(f_ro, 0, SEEK_CUR));
    if (read(f_ro, &c, 1) != 1 || c != '9') FAIL("read-only read '%c'", c);
    if (!(fcntl(f_app, F_GETFL) & O_APPEND)) FAIL("O_APPEND lost");
    /* The write lands at the end, wherever the offset was. */
    struct stat before;
    if (stat("append", &before) != 0) FAIL("stat append");
    if (write(f_app, "X", 1) != 1) FAIL("append write: %s", strerror(errno));
    char buf[64] = {0};
    int fd = open("append", O_RDONLY);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n != before.st_size + 1 || strncmp(buf, "abc", 3) != 0 || buf[n - 1] != 'X')
        FAIL("append file holds '%s' (%zd bytes, %ld before the write)", buf, n, (long)before.st_size);
    struct stat a, b;
    if (fstat(f_dir, &a) != 0 || stat(".", &b) != 0 || !S_ISDIR(a.st_mode) || a.st_ino != b.st_ino)
        FAIL("directory fd is not the cwd");
    return 1;
}

/* ---- deleted ---- */
static int d_fd = 35;
#define DEL_BYTES 10000

static void setup_deleted(void) {
    move_to(open("gone", O_RDWR | O_CREAT | O_TRUNC, 0640), d_fd);
    fchmod(d_fd, 0640);
    uint8_t buf[DEL_BYTES];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = pattern(i, 3);
    if (write(d_fd, buf, sizeof buf) != sizeof buf) exit(2);
    lseek(d_fd, 1234, SEEK_SET);
    unlink("gone");
}

static int check_deleted(void) {
    char link[4200] = {0}, path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", d_fd);
    ssize_t n = readlink(path, link, sizeof link - 1);
    const char *tail = "/gone (deleted)";
    if (n < (ssize_t)strlen(tail) || strcmp(link + n - strlen(tail), tail) != 0)
        FAIL("deleted file's link is '%s'", link);
    struct stat st;
    if (fstat(d_fd, &st) != 0 || st.st_nlink != 0 || st.st_size != DEL_BYTES || (st.st_mode & 0777) != 0640)
        FAIL("deleted file: nlink %lu size %ld mode %o", (unsigned long)st.st_nlink, (long)st.st_size, st.st_mode & 0777);
    if (lseek(d_fd, 0, SEEK_CUR) != 1234) FAIL("deleted file offset %ld", (long)lseek(d_fd, 0, SEEK_CUR));
    uint8_t buf[DEL_BYTES];
    if (pread(d_fd, buf, sizeof buf, 0) != DEL_BYTES) FAIL("deleted file: short pread");
    for (size_t i = 0; i < sizeof buf; i++)
        if (buf[i] != pattern(i, 3)) FAIL("deleted file byte %zu is %u", i, buf[i]);
    if (read(d_fd, buf, 1) != 1 || buf[0] != pattern(1234, 3)) FAIL("deleted file: read at the offset");
    return 1;
}

/* ---- pipes ---- */
static int p_r = 50, p_w = 51, p_lone = 52, f_r = 53, f_w = 54;
#define PIPE_BYTES 3072

static void setup_pipes(void) {
    int p[2];
    if (pipe(p) != 0) exit(2);
    move_to(p[0], p_r);
    move_to(p[1], p_w);
    if (fcntl(p_w, F_SETPIPE_SZ, 128 << 10) < 0) exit(2);
    uint8_t buf[PIPE_BYTES];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = pattern(i, 5);
    if (write(p_w, buf, sizeof buf) != sizeof buf) exit(2);
    if (pipe2(p, O_NONBLOCK) != 0) exit(2);
    for (size_t i = 0; i < 100; i++) buf[i] = pattern(i, 9);
    if (write(p[1], buf, 100) != 100) exit(2);
    close(p[1]);
    move_to(p[0], p_lone);
    /* A named pipe, both ends open, 500 bytes buffered. */
    unlink("fifo");
    if (mkfifo("fifo", 0600) != 0) exit(2);
    move_to(open("fifo", O_RDONLY | O_NONBLOCK), f_r);
    move_to(open("fifo", O_WRONLY), f_w);
    for (size_t i = 0; i < 500; i++) buf[i] = pattern(i, 11);
    if (write(f_w, buf, 500) != 500) exit(2);
}

static int check_pipes(void) {
    if (fcntl(p_r, F_GETPIPE_SZ) != 128 << 10) FAIL("pipe size %d", fcntl(p_r, F_GETPIPE_SZ));
    fcntl(p_r, F_SETFL, O_NONBLOCK);
    uint8_t buf[PIPE_BYTES + 16];
    ssize_t got = 0, n;
    while (got < PIPE_BYTES && (n = read(p_r, buf + got, sizeof buf - got)) > 0) got += n;
    if (got != PIPE_BYTES) FAIL("pipe gave %zd bytes, expected %d", got, PIPE_BYTES);
    for (size_t i = 0; i < PIPE_BYTES; i++)
        if (buf[i] != pattern(i, 5)) FAIL("pipe byte %zu is %u", i, buf[i]);
    if (read(p_r, buf, 1) != -1 || errno != EAGAIN) FAIL("pipe has more than it had");
    if (write(p_w, "z", 1) != 1 || read(p_r, buf, 1) != 1 || buf[0] != 'z') FAIL("the two ends are not one pipe");
    if (!(fcntl(p_lone, F_GETFL) & O_NONBLOCK)) FAIL("O_NONBLOCK of the lone read end lost");
    n = read(p_lone, buf, sizeof buf);
    if (n != 100) FAIL("lone pipe gave %zd bytes, expected 100", n);
    for (size_t i = 0; i < 100; i++)
        if (buf[i] != pattern(i, 9)) FAIL("lone pipe byte %zu", i);
    n = read(p_lone, buf, 1);
    if (n != 0) FAIL("lone pipe: read gave %zd (%s), expected end of file (no writer)", n, strerror(errno));
    char link[4200] = {0}, path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", f_r);
    n = readlink(path, link, sizeof link - 1);
    if (n < 5 || strcmp(link + n - 5, "/fifo") != 0) FAIL("fifo fd is '%.300s'", link);
    if (!(fcntl(f_r, F_GETFL) & O_NONBLOCK) || (fcntl(f_w, F_GETFL) & O_ACCMODE) != O_WRONLY) FAIL("fifo flags");
    n = read(f_r, buf, sizeof buf);
    if (n != 500) FAIL("fifo gave %zd bytes, expected 500", n);
    for (size_t i = 0; i < 500; i++)
        if (buf[i] != pattern(i, 11)) FAIL("fifo byte %zu", i);
    if (write(f_w, "f", 1) != 1 || read(f_r, buf, 2) != 1 || buf[0] != 'f') FAIL("the fifo's ends are not one pipe");
    return 1;
}

/* ---- unix ---- */
static int u_st[2] = {60, 61}, u_sp[2] = {62, 63}, u_dg[2] = {64, 65}, u_shut[2] = {66, 67};

static void pair(int type, int *at) {
    int s[2];
    if (socketpair(AF_UNIX, type, 0, s) != 0) exit(2);
    move_to(s[0], at[0]);
    move_to(s[1], at[1]);
}

static void put(int fd, const char *s) {
    if (send(fd, s, strlen(s), 0) != (ssize_t)strlen(s)) exit(2);
}

static void setup_unix(void) {
    pair(SOCK_STREAM, u_st);
    pair(SOCK_SEQPACKET, u_sp);
    pair(SOCK_DGRAM, u_dg);
    put(u_st[0], "hello ");
    put(u_st[0], "from 60");
    put(u_st[1], "reply from 61");
    put(u_sp[0], "one");
    put(u_sp[0], "two!");
    put(u_sp[0], "three");
    put(u_sp[1], "x");
    put(u_dg[0], "d1");
    put(u_dg[0], "dgram2");
    put(u_dg[1], "back");
    /* A pair one end of which said its last word. */
    pair(SOCK_STREAM, u_shut);
    put(u_shut[0], "bye");
    shutdown(u_shut[0], SHUT_WR);
}

/* Receives the next message of fd and compares it; "" expects none. */
static int expect(int fd, const char *want) {
    char buf[256] = {0};
    ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
    if (!*want) {
        if (n != -1 || errno != EAGAIN) FAIL("fd %d: more queued than expected (%zd: %s)", fd, n, buf);
        return 1;
    }
    if (n != (ssize_t)strlen(want) || strcmp(buf, want) != 0)
        FAIL("fd %d: received '%s' (%zd), expected '%s'", fd, n < 0 ? strerror(errno) : buf, n, want);
    return 1;
}

static int check_unix(void) {
    int ids[6] = {60, 61, 62, 63, 64, 65};
    for (int i = 0; i < 6; i++) {
        int v = 0;
        socklen_t l = sizeof v;
        if (getsockopt(ids[i], SOL_SOCKET, SO_PEEK_OFF, &v, &l) != 0 || v != -1)
            FAIL("fd %d: SO_PEEK_OFF is %d, expected -1", ids[i], v);
    }
    if (!expect(u_st[1], "hello from 60") || !expect(u_st[1], "")) return 0;
    if (!expect(u_st[0], "reply from 61") || !expect(u_st[0], "")) return 0;
    if (!expect(u_sp[1], "one") || !expect(u_sp[1], "two!") || !expect(u_sp[1], "three") || !expect(u_sp[1], "")) return 0;
    if (!expect(u_sp[0], "x") || !expect(u_sp[0], "")) return 0;
    if (!expect(u_dg[1], "d1") || !expect(u_dg[1], "dgram2") || !expect(u_dg[1], "")) return 0;
    if (!expect(u_dg[0], "back") || !expect(u_dg[0], "")) return 0;
    put(u_st[0], "ping");
    put(u_sp[1], "pong");
    put(u_dg[1], "dd");
    if (!expect(u_st[1], "ping") || !expect(u_sp[0], "pong") || !expect(u_dg[0], "dd")) return 0;
    if (!expect(u_shut[1], "bye")) return 0;
    char c;
    ssize_t n = recv(u_shut[1], &c, 1, MSG_DONTWAIT);
    if (n != 0) FAIL("shut-down pair: recv gave %zd (%s), expected end of file", n, n < 0 ? strerror(errno) : "data");
    if (send(u_shut[0], "x", 1, MSG_NOSIGNAL) != -1 || errno != EPIPE) FAIL("shut-down end can still send");
    put(u_shut[1], "still");
    if (!expect(u_shut[0], "still")) return 0;
    return 1;
}

/* ---- inet ---- */
static int i_tcp = 70, i_udp = 71, i_tcp6 = 72;
static int tcp_port, udp_port, tcp6_port, served;

static int port_of(int fd) {
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &l) != 0) return -1;
    return ntohs(a.sin_port);
}

static int intopt(int fd, int level, int name) {
    int v = -1;
    socklen_t l = sizeof v;
    if (getsockopt(fd, level, name, &v, &l) != 0) return -1;
    return v;
}

static void setup_inet(void) {
    int one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    move_to(socket(AF_INET, SOCK_STREAM, 0), i_tcp);
    setsockopt(i_tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(i_tcp, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (bind(i_tcp, (struct sockaddr *)&a, sizeof a) != 0 || listen(i_tcp, 7) != 0) exit(2);
    fcntl(i_tcp, F_SETFL, O_NONBLOCK);
    tcp_port = port_of(i_tcp);
    move_to(socket(AF_INET, SOCK_DGRAM, 0), i_udp);
    setsockopt(i_udp, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
    if (bind(i_udp, (struct sockaddr *)&a, sizeof a) != 0) exit(2);
    udp_port = port_of(i_udp);
    /* IPv6, v6-only, on ::1. */
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    move_to(socket(AF_INET6, SOCK_STREAM, 0), i_tcp6);
    setsockopt(i_tcp6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(i_tcp6, (struct sockaddr *)&a6, sizeof a6) != 0 || listen(i_tcp6, 3) != 0) exit(2);
    socklen_t l6 = sizeof a6;
    getsockname(i_tcp6, (struct sockaddr *)&a6, &l6);
    tcp6_port = ntohs(a6.sin6_port);
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d\n", tcp_port);
    int fd = open("port.tmp", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, buf, n) != n) exit(2);
    close(fd);
    rename("port.tmp", "port");
}

/* Answers one waiting connection, if any. */
static void serve(void) {
    int c = accept4(i_tcp, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) return;
    char buf[64];
    struct pollfd p = {.fd = c, .events = POLLIN};
    if (poll(&p, 1, 5000) == 1 && read(c, buf, sizeof buf) > 0) {
        int n = snprintf(buf, sizeof buf, "pong %d\n", getpid());
        if (write(c, buf, n) == n) served++;
    }
    close(c);
}

static int check_inet(void) {
    if (served < 1) FAIL("no connection was served after restore");
    if (port_of(i_tcp) != tcp_port) FAIL("tcp port %d, expected %d", port_of(i_tcp), tcp_port);
    if (intopt(i_tcp, SOL_SOCKET, SO_ACCEPTCONN) != 1) FAIL("not listening");
    if (intopt(i_tcp, SOL_SOCKET, SO_REUSEADDR) != 1) FAIL("SO_REUSEADDR lost");
    if (intopt(i_tcp, IPPROTO_TCP, TCP_NODELAY) != 1) FAIL("TCP_NODELAY lost");
    if (!(fcntl(i_tcp, F_GETFL) & O_NONBLOCK)) FAIL("O_NONBLOCK of the listener lost");
    struct tcp_info ti;
    socklen_t l = sizeof ti;
    if (getsockopt(i_tcp, IPPROTO_TCP, TCP_INFO, &ti, &l) != 0 || ti.tcpi_sacked != 7)
        FAIL("listen backlog is %u, expected 7", ti.tcpi_sacked);
    struct sockaddr_in6 a6;
    socklen_t l6 = sizeof a6;
    char ip6[64] = "?";
    if (getsockname(i_tcp6, (struct sockaddr *)&a6, &l6) != 0 || a6.sin6_family != AF_INET6 || ntohs(a6.sin6_port) != tcp6_port ||
        !inet_ntop(AF_INET6, &a6.sin6_addr, ip6, sizeof ip6) || strcmp(ip6, "::1") != 0)
        FAIL("ipv6 listener is at [%s]:%d, expected [::1]:%d", ip6, ntohs(a6.sin6_port), tcp6_port);
    if (intopt(i_tcp6, IPPROTO_IPV6, IPV6_V6ONLY) != 1 || intopt(i_tcp6, SOL_SOCKET, SO_ACCEPTCONN) != 1)
        FAIL("ipv6 listener: v6only or listening lost");
    l = sizeof ti;
    if (getsockopt(i_tcp6, IPPROTO_TCP, TCP_INFO, &ti, &l) != 0 || ti.tcpi_sacked != 3) FAIL("ipv6 backlog %u", ti.tcpi_sacked);
    if (port_of(i_udp) != udp_port) FAIL("udp port %d, expected %d", port_of(i_udp), udp_port);
    if (intopt(i_udp, SOL_SOCKET, SO_BROADCAST) != 1) FAIL("SO_BROADCAST lost");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(udp_port)};
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sendto(s, "u", 1, 0, (struct sockaddr *)&a, sizeof a) != 1) FAIL("udp send: %s", strerror(errno));
    close(s);
    struct pollfd p = {.fd = i_udp, .events = POLLIN};
    char c = 0;
    if (poll(&p, 1, 5000) != 1 || recv(i_udp, &c, 1, 0) != 1 || c != 'u') FAIL("udp socket received nothing");
    return 1;
}

/* ---- events ---- */
static int e_count = 80, e_sem = 81, e_long = 82, e_tick = 83, e_sig = 84, e_poll = 85, e_pr = 86, e_pw = 87;

static void setup_events(void) {
    move_to(eventfd(5, EFD_NONBLOCK), e_count);
    move_to(eventfd(3, EFD_SEMAPHORE), e_sem);
    move_to(timerfd_create(CLOCK_MONOTONIC, 0), e_long);
    struct itimerspec long_ = {.it_value = {60, 0}};
    timerfd_settime(e_long, 0, &long_, NULL);
    move_to(timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK), e_tick);
    struct itimerspec tick = {.it_value = {0, 300000000}, .it_interval = {0, 300000000}};
    timerfd_settime(e_tick, 0, &tick, NULL);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR2);
    sigprocmask(SIG_BLOCK, &m, NULL);
    move_to(signalfd(-1, &m, SFD_NONBLOCK), e_sig);
    int p[2];
    if (pipe(p) != 0) exit(2);
    move_to(p[0], e_pr);
    move_to(p[1], e_pw);
    if (write(e_pw, "e", 1) != 1) exit(2);
    move_to(epoll_create1(0), e_poll);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x1111};
    epoll_ctl(e_poll, EPOLL_CTL_ADD, e_pr, &ev);
    ev.data.u64 = 0x2222;
    epoll_ctl(e_poll, EPOLL_CTL_ADD, e_count, &ev);
    ev.events = EPOLLIN | EPOLLET;
    ev.data.u64 = 0x3333;
    epoll_ctl(e_poll, EPOLL_CTL_ADD, e_pw, &ev);
}

static int check_events(void) {
    struct epoll_event evs[8];
    int n = epoll_wait(e_poll, evs, 8, 1000);
    if (n != 2) FAIL("epoll_wait reported %d ready, expected 2", n);
    int seen1 = 0, seen2 = 0;
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u64 == 0x1111 && (evs[i].events & EPOLLIN)) seen1 = 1;
        if (evs[i].data.u64 == 0x2222 && (evs[i].events & EPOLLIN)) seen2 = 1;
    }
    if (!seen1 || !seen2) FAIL("epoll data %llx %llx", (unsigned long long)evs[0].data.u64, (unsigned long long)evs[1].data.u64);
    uint64_t v = 0;
    if (read(e_count, &v, 8) != 8 || v != 5) FAIL("eventfd count %llu, expected 5", (unsigned long long)v);
    if (read(e_count, &v, 8) != -1 || errno != EAGAIN) FAIL("eventfd not empty or blocking");
    for (int i = 0; i < 3; i++)
        if (read(e_sem, &v, 8) != 8 || v != 1) FAIL("semaphore eventfd read %d gave %llu", i, (unsigned long long)v);
    struct pollfd p = {.fd = e_sem, .events = POLLIN};
    if (poll(&p, 1, 0) != 0) FAIL("semaphore eventfd still readable after 3 reads");
    struct itimerspec cur;
    timerfd_gettime(e_long, &cur);
    if (cur.it_value.tv_sec >= 60 || (cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec == 0) || cur.it_interval.tv_sec || cur.it_interval.tv_nsec)
        FAIL("60 s timer has %ld.%09ld left, interval %ld", (long)cur.it_value.tv_sec, cur.it_value.tv_nsec, (long)cur.it_interval.tv_sec);
    timerfd_gettime(e_tick, &cur);
    if (cur.it_interval.tv_sec != 0 || cur.it_interval.tv_nsec != 300000000) FAIL("tick interval lost");
    if (read(e_tick, &v, 8) < 0 && errno != EAGAIN) FAIL("tick read: %s", strerror(errno));
    p.fd = e_tick;
    if (poll(&p, 1, 5000) != 1 || read(e_tick, &v, 8) != 8 || v < 1) FAIL("the interval timer does not fire");
    if (kill(getpid(), SIGUSR2) != 0) FAIL("kill");
    struct signalfd_siginfo si;
    if (read(e_sig, &si, sizeof si) != sizeof si || si.ssi_signo != SIGUSR2) FAIL("signalfd did not deliver SIGUSR2");
    return 1;
}

/* ---- refused kinds ---- */
static void setup_inotify(void) {
    move_to(inotify_init1(0), 90);
    inotify_add_watch(90, ".", IN_CREATE);
}

static void setup_tcpconn(void) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int l = socket(AF_INET, SOCK_STREAM, 0);
    socklen_t len = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1) != 0) exit(2);
    getsockname(l, (struct sockaddr *)&a, &len);
    int c = move_to(socket(AF_INET, SOCK_STREAM, 0), 91);
    if (connect(c, (struct sockaddr *)&a, sizeof a) != 0) exit(2);
    move_to(accept(l, NULL, NULL), 92);
    close(l);
}

static void setup_unixfd(void) {
    int s[2];
    pair(SOCK_DGRAM, (int[]){93, 94});
    if (pipe(s) != 0) exit(2);
    char cbuf[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec iov = {.iov_base = "f", .iov_len = 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &s[0], sizeof(int));
    if (sendmsg(93, &m, 0) != 1) exit(2);
    close(s[0]);
    close(s[1]);
}

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    const char *mode = argv[4];
    logfd = open(argv[3], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    char *dir = strdup(argv[1]);
    if (logfd < 0 || chdir(dirname(dir)) != 0) return 2;
    if (has(mode, "files")) setup_files();
    if (has(mode, "deleted")) setup_deleted();
    if (has(mode, "pipes")) setup_pipes();
    if (has(mode, "unix")) setup_unix();
    if (has(mode, "inet")) setup_inet();
    if (has(mode, "events")) setup_events();
    if (has(mode, "inotify")) setup_inotify();
    if (has(mode, "tcpconn")) setup_tcpconn();
    if (has(mode, "unixfd")) setup_unixfd();
    char buf[32], tmp[4200];
    int n = snprintf(buf, sizeof buf, "%d\n", getpid());
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
    int pf = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (pf < 0 || write(pf, buf, n) != n) return 2;
    close(pf);
    if (rename(tmp, argv[1]) != 0) return 2;
    for (;;) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (has(mode, "inet")) serve();
        int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        char cmd[16] = {0};
        if (read(fd, cmd, sizeof cmd - 1) < 0) cmd[0] = 0;
        close(fd);
        unlink(argv[2]);
        reason[0] = 0;
        int ok = 1;
        if (ok && has(mode, "files")) ok = check_files();
        if (ok && has(mode, "deleted")) ok = check_deleted();
        if (ok && has(mode, "pipes")) ok = check_pipes();
        if (ok && has(mode, "unix")) ok = check_unix();
        if (ok && has(mode, "inet")) ok = check_inet();
        if (ok && has(mode, "events")) ok = check_events();
        char line[700];
        int len = snprintf(line, sizeof line, "%s %d %s\n", ok ? "PASS" : "FAIL", getpid(), reason);
        if (write(logfd, line, len) != len) return 3;
        if (strncmp(cmd, "exit", 4) == 0 || !ok) return ok ? 0 : 1;
    }
}
