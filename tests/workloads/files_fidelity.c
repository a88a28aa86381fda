/* Checkpoint/restore workload for file state the engine must keep, or
 * refuse. argv[4] is a comma-separated list of what to set up before
 * publishing the pid in argv[1]; each time the trigger file argv[2]
 * appears it verifies all of it and appends "PASS pid" or "FAIL pid
 * reason" to the log argv[3] (exiting, 0 on PASS, when the trigger said
 * "exit"). Kept exactly:
 *   async      - a pipe with O_ASYNC, F_SETOWN_EX to itself and F_SETSIG
 *                SIGUSR1: a write to it raises SIGUSR1 with si_fd;
 *   sockfilter - a datagram socket pair whose receiving end has a locked
 *                classic BPF filter dropping messages starting with 'x';
 *   ghost      - a deleted file open through two descriptions, sparse (a
 *                hole of 1 MiB before 4 KiB of data), mtime 1000000000;
 *   unixbound  - unix sockets bound to a path (listening, mode 0640; and
 *                datagram), to an abstract name (seqpacket, listening),
 *                and an unbound datagram one: each works after restore;
 *   memfd      - a sealed, sparse memfd open through two descriptions, and
 *                one made with MFD_NOEXEC_SEAL;
 *   epollmoved - an epoll watching a pipe whose fd was moved to another
 *                number, its old number holding /dev/null now;
 *   opath      - O_PATH fds of a symlink (O_NOFOLLOW) and a directory;
 *   timerfd    - an armed relative timerfd (60 s, interval 7 s) and an
 *                absolute one (TFD_TIMER_ABSTIME, 90 s ahead);
 * refused at checkpoint (the test checks the refusal):
 *   posixlock, ofdlock, flock - a file lock of each kind;
 *   unixpending - a listener with a connection not yet accepted;
 *   memfdmapped - a memfd both open and mapped;
 *   rmdir      - an fd on a removed directory;
 *   fifogone   - a fifo open read-write, then unlinked;
 *   clonefiles - a child made with CLONE_FILES;
 *   ctty       - a pty slave as its controlling terminal. */
#define _GNU_SOURCE
#include "workload.h"
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/filter.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char reason[300];
#define FAIL(...) do { snprintf(reason, sizeof reason, __VA_ARGS__); return 0; } while (0)


/* ---- async ---- */
static int async_pipe[2];
static volatile int usr1_count, usr1_fd;
static void on_usr1(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)uc;
    usr1_count++;
    usr1_fd = si->si_fd;
}
static int setup_async(void) {
    struct sigaction sa = {0};
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    if (pipe2(async_pipe, O_NONBLOCK) != 0) return 0;
    struct f_owner_ex o = {F_OWNER_PID, getpid()};
    return fcntl(async_pipe[0], F_SETOWN_EX, &o) == 0 && fcntl(async_pipe[0], F_SETSIG, SIGUSR1) == 0 &&
           fcntl(async_pipe[0], F_SETFL, O_ASYNC | O_NONBLOCK) == 0;
}
static int check_async(void) {
    struct f_owner_ex o;
    if (fcntl(async_pipe[0], F_GETOWN_EX, &o) != 0 || o.type != F_OWNER_PID || o.pid != getpid())
        FAIL("owner is %d/%d", o.type, o.pid);
    if (fcntl(async_pipe[0], F_GETSIG) != SIGUSR1) FAIL("F_GETSIG %d", fcntl(async_pipe[0], F_GETSIG));
    if (!(fcntl(async_pipe[0], F_GETFL) & O_ASYNC)) FAIL("O_ASYNC is off");
    int before = usr1_count;
    if (write(async_pipe[1], "a", 1) != 1) FAIL("write");
    for (int i = 0; i < 100 && usr1_count == before; i++) usleep(10000);
    char c;
    if (read(async_pipe[0], &c, 1) != 1) FAIL("read");
    if (usr1_count == before) FAIL("no SIGUSR1 for the write");
    if (usr1_fd != async_pipe[0]) FAIL("si_fd %d", usr1_fd);
    return 1;
}

/* ---- sockfilter ---- */
static int sock_pair[2];
static int setup_sockfilter(void) {
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sock_pair) != 0) return 0;
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 'x', 0, 1),
        BPF_STMT(BPF_RET | BPF_K, 0),
        BPF_STMT(BPF_RET | BPF_K, 0xffff)};
    struct sock_fprog prog = {4, code};
    int one = 1;
    return setsockopt(sock_pair[1], SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) == 0 &&
           setsockopt(sock_pair[1], SOL_SOCKET, SO_LOCK_FILTER, &one, sizeof one) == 0;
}
static int check_sockfilter(void) {
    int locked = 0;
    socklen_t len = sizeof locked;
    if (getsockopt(sock_pair[1], SOL_SOCKET, SO_LOCK_FILTER, &locked, &len) != 0 || !locked)
        FAIL("the filter is not locked");
    struct sock_filter got[8];
    len = 8;
    if (getsockopt(sock_pair[1], SOL_SOCKET, SO_GET_FILTER, got, &len) != 0 || len != 4)
        FAIL("SO_GET_FILTER: %u instructions", (unsigned)len);
    if (send(sock_pair[0], "xdrop", 5, 0) != 5 || send(sock_pair[0], "keep", 4, 0) != 4) FAIL("send");
    char buf[16] = {0};
    ssize_t n = recv(sock_pair[1], buf, sizeof buf, MSG_DONTWAIT);
    if (n != 4 || memcmp(buf, "keep", 4) != 0) FAIL("received %zd bytes '%.16s'", n, buf);
    if (recv(sock_pair[1], buf, sizeof buf, MSG_DONTWAIT) != -1) FAIL("a dropped message arrived");
    return 1;
}

/* ---- ghost ---- */
static int ghost_a, ghost_b;
#define HOLE (1 << 20)
static int setup_ghost(void) {
    ghost_a = open("ghost.dat", O_RDWR | O_CREAT | O_TRUNC, 0640);
    if (ghost_a < 0) return 0;
    char data[4096];
    memset(data, 'g', sizeof data);
    if (pwrite(ghost_a, data, sizeof data, HOLE) != (ssize_t)sizeof data) return 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", ghost_a);
    ghost_b = open(path, O_RDWR); /* a second description of the same file */
    if (ghost_b < 0 || unlink("ghost.dat") != 0) return 0;
    struct timespec t[2] = {{1000000000, 123}, {1000000000, 456}};
    return futimens(ghost_a, t) == 0;
}
static int check_ghost(void) {
    struct stat a, b;
    if (fstat(ghost_a, &a) != 0 || fstat(ghost_b, &b) != 0) FAIL("fstat");
    if (a.st_ino != b.st_ino || a.st_dev != b.st_dev) FAIL("the two descriptions are two files now");
    if (a.st_nlink != 0 || a.st_size != HOLE + 4096) FAIL("nlink %lu size %ld", (unsigned long)a.st_nlink, (long)a.st_size);
    if (a.st_mtim.tv_sec != 1000000000 || a.st_mtim.tv_nsec != 456) FAIL("mtime %ld.%09ld", (long)a.st_mtim.tv_sec, a.st_mtim.tv_nsec);
    off_t d = lseek(ghost_b, 0, SEEK_DATA);
    if (d != HOLE) FAIL("first data at %ld, not after the hole", (long)d);
    char c = 0;
    if (pread(ghost_b, &c, 1, HOLE + 10) != 1 || c != 'g') FAIL("data");
    /* A write through one is seen through the other. */
    static int round;
    char w = (char)('A' + round++ % 26), r = 0;
    if (pwrite(ghost_a, &w, 1, 7) != 1 || pread(ghost_b, &r, 1, 7) != 1 || r != w) FAIL("not one file");
    return 1;
}

/* ---- timerfd ---- */
static int tfd_rel, tfd_abs;
static struct timespec abs_expiry;
static int setup_timerfd(void) {
    tfd_rel = timerfd_create(CLOCK_MONOTONIC, 0);
    tfd_abs = timerfd_create(CLOCK_MONOTONIC, 0);
    if (tfd_rel < 0 || tfd_abs < 0) return 0;
    struct itimerspec rel = {{7, 0}, {60, 0}};
    clock_gettime(CLOCK_MONOTONIC, &abs_expiry);
    abs_expiry.tv_sec += 90;
    struct itimerspec abst = {{0, 0}, abs_expiry};
    return timerfd_settime(tfd_rel, 0, &rel, NULL) == 0 &&
           timerfd_settime(tfd_abs, TFD_TIMER_ABSTIME, &abst, NULL) == 0;
}
static int check_timerfd(void) {
    struct itimerspec r, a;
    if (timerfd_gettime(tfd_rel, &r) != 0 || timerfd_gettime(tfd_abs, &a) != 0) FAIL("timerfd_gettime");
    if (r.it_value.tv_sec == 0 && r.it_value.tv_nsec == 0) FAIL("the relative timer is disarmed");
    if (r.it_value.tv_sec > 60 || r.it_interval.tv_sec != 7) FAIL("relative timer %ld/%ld", (long)r.it_value.tv_sec, (long)r.it_interval.tv_sec);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long left = abs_expiry.tv_sec - now.tv_sec;
    if (a.it_value.tv_sec == 0 && a.it_value.tv_nsec == 0) FAIL("the absolute timer is disarmed");
    if (labs(a.it_value.tv_sec - left) > 1) FAIL("absolute timer: %ld s left, expected %ld", (long)a.it_value.tv_sec, left);
    /* Still armed as an absolute timer (its settime flags). */
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", tfd_abs);
    FILE *f = fopen(path, "r");
    int abs_flag = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "settime flags:", 14)) abs_flag = (int)strtol(line + 14, NULL, 8) & TFD_TIMER_ABSTIME;
    if (f) fclose(f);
    if (!abs_flag) FAIL("the absolute timer came back relative");
    return 1;
}

/* ---- opath ---- */
static int opath_link, opath_dir;
static int setup_opath(void) {
    if (symlink("somewhere-else", "link") != 0 || mkdir("place", 0700) != 0) return 0;
    opath_link = open("link", O_PATH | O_NOFOLLOW);
    opath_dir = open("place", O_PATH | O_DIRECTORY);
    return opath_link >= 0 && opath_dir >= 0;
}
static int check_opath(void) {
    struct stat st;
    if (fstatat(opath_link, "", &st, AT_EMPTY_PATH) != 0 || !S_ISLNK(st.st_mode)) FAIL("the O_PATH fd is not the symlink");
    if (!(fcntl(opath_link, F_GETFL) & O_PATH) || !(fcntl(opath_dir, F_GETFL) & O_PATH)) FAIL("O_PATH lost");
    char target[64] = {0};
    if (readlinkat(opath_link, "", target, sizeof target - 1) < 0 || strcmp(target, "somewhere-else") != 0)
        FAIL("readlink gives '%s'", target);
    if (fstatat(opath_dir, "", &st, AT_EMPTY_PATH) != 0 || !S_ISDIR(st.st_mode)) FAIL("the O_PATH directory");
    return 1;
}

/* ---- unixbound ---- */
#include <sys/un.h>
static int ub_listen, ub_abstract, ub_dgram, ub_unbound;
static char ub_abstract_name[64];
static int unix_addr(struct sockaddr_un *a, const char *path, int abstract) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    size_t n = strlen(path);
    memcpy(a->sun_path + (abstract ? 1 : 0), path, n);
    return (int)(offsetof(struct sockaddr_un, sun_path) + n + (abstract ? 1 : 0));
}
static int setup_unixbound(void) {
    struct sockaddr_un a;
    int len;
    ub_listen = socket(AF_UNIX, SOCK_STREAM, 0);
    len = unix_addr(&a, "srv.sock", 0);
    if (ub_listen < 0 || bind(ub_listen, (struct sockaddr *)&a, len) != 0 || listen(ub_listen, 5) != 0) return 0;
    if (chmod("srv.sock", 0640) != 0) return 0;
    snprintf(ub_abstract_name, sizeof ub_abstract_name, "palisade-test-%d", getpid());
    ub_abstract = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    len = unix_addr(&a, ub_abstract_name, 1);
    if (ub_abstract < 0 || bind(ub_abstract, (struct sockaddr *)&a, len) != 0 || listen(ub_abstract, 3) != 0) return 0;
    ub_dgram = socket(AF_UNIX, SOCK_DGRAM, 0);
    len = unix_addr(&a, "dg.sock", 0);
    if (ub_dgram < 0 || bind(ub_dgram, (struct sockaddr *)&a, len) != 0) return 0;
    ub_unbound = socket(AF_UNIX, SOCK_DGRAM, 0);
    return ub_unbound >= 0;
}
static int check_unixbound(void) {
    struct sockaddr_un a, got;
    socklen_t gl = sizeof got;
    int len = unix_addr(&a, "srv.sock", 0);
    if (getsockname(ub_listen, (struct sockaddr *)&got, &gl) != 0 || strcmp(got.sun_path, "srv.sock") != 0)
        FAIL("the listener's name is '%s'", got.sun_path);
    int on = 0;
    socklen_t ol = sizeof on;
    if (getsockopt(ub_listen, SOL_SOCKET, SO_ACCEPTCONN, &on, &ol) != 0 || !on) FAIL("not listening");
    struct stat st;
    if (stat("srv.sock", &st) != 0 || !S_ISSOCK(st.st_mode) || (st.st_mode & 0777) != 0640)
        FAIL("srv.sock mode %o", st.st_mode & 0777);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&a, len) != 0) FAIL("connect srv.sock: %s", strerror(errno));
    int s2 = accept(ub_listen, NULL, NULL);
    if (s2 < 0 || write(c, "hi", 2) != 2) FAIL("accept");
    char buf[8] = {0};
    if (read(s2, buf, 2) != 2 || strcmp(buf, "hi") != 0) FAIL("through the accepted connection");
    close(c);
    close(s2);
    len = unix_addr(&a, ub_abstract_name, 1);
    c = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    if (connect(c, (struct sockaddr *)&a, len) != 0) FAIL("connect @%s: %s", ub_abstract_name, strerror(errno));
    s2 = accept(ub_abstract, NULL, NULL);
    if (s2 < 0) FAIL("accept abstract");
    close(c);
    close(s2);
    len = unix_addr(&a, "dg.sock", 0);
    if (sendto(ub_unbound, "dg", 2, 0, (struct sockaddr *)&a, len) != 2) FAIL("sendto dg.sock: %s", strerror(errno));
    memset(buf, 0, sizeof buf);
    if (recv(ub_dgram, buf, sizeof buf, MSG_DONTWAIT) != 2 || strcmp(buf, "dg") != 0) FAIL("datagram");
    gl = sizeof got;
    if (getsockname(ub_unbound, (struct sockaddr *)&got, &gl) != 0) FAIL("getsockname unbound");
    int type = 0;
    ol = sizeof type;
    if (getsockopt(ub_abstract, SOL_SOCKET, SO_TYPE, &type, &ol) != 0 || type != SOCK_SEQPACKET) FAIL("type %d", type);
    return 1;
}
static int setup_unixpending(void) {
    if (!setup_unixbound()) return 0;
    struct sockaddr_un a;
    int len = unix_addr(&a, "srv.sock", 0);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    return connect(c, (struct sockaddr *)&a, len) == 0;
}

/* ---- memfd ---- */
#include <sys/mman.h>
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif
static int mfd_a, mfd_b, mfd_nx;
static int setup_memfd(void) {
    mfd_a = memfd_create("palisade-test", MFD_ALLOW_SEALING);
    if (mfd_a < 0 || ftruncate(mfd_a, HOLE + 4096) != 0) return 0;
    char data[4096];
    memset(data, 'm', sizeof data);
    if (pwrite(mfd_a, data, sizeof data, HOLE) != (ssize_t)sizeof data) return 0;
    if (fcntl(mfd_a, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) return 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", mfd_a);
    mfd_b = open(path, O_RDWR);
    mfd_nx = memfd_create("noexec", MFD_NOEXEC_SEAL);
    /* A kernel before 6.3 has no such memfd (the test says SKIPPED). */
    if (mfd_nx < 0 && errno == EINVAL) mfd_nx = -2;
    return mfd_b >= 0 && mfd_nx != -1;
}
static int check_memfd(void) {
    char path[64], link[128] = {0};
    snprintf(path, sizeof path, "/proc/self/fd/%d", mfd_a);
    if (readlink(path, link, sizeof link - 1) < 0 || strcmp(link, "/memfd:palisade-test (deleted)") != 0)
        FAIL("memfd is '%s'", link);
    if (fcntl(mfd_a, F_GET_SEALS) != (F_SEAL_SHRINK | F_SEAL_GROW)) FAIL("seals %#x", fcntl(mfd_a, F_GET_SEALS));
    struct stat a, b;
    if (fstat(mfd_a, &a) != 0 || fstat(mfd_b, &b) != 0 || a.st_ino != b.st_ino) FAIL("two memfds now");
    if (a.st_size != HOLE + 4096 || lseek(mfd_b, 0, SEEK_DATA) != HOLE) FAIL("size or hole");
    if (ftruncate(mfd_a, 10) == 0 || errno != EPERM) FAIL("the shrink seal is gone");
    static int round;
    char w = (char)('a' + round++ % 26), r = 0;
    if (pwrite(mfd_a, &w, 1, HOLE + 1) != 1 || pread(mfd_b, &r, 1, HOLE + 1) != 1 || r != w) FAIL("not one memfd");
    struct stat nx;
    if (mfd_nx == -2) return 1;
    if (fstat(mfd_nx, &nx) != 0 || (nx.st_mode & 0111) || !(fcntl(mfd_nx, F_GET_SEALS) & F_SEAL_EXEC))
        FAIL("the noexec memfd: mode %o seals %#x", nx.st_mode & 0777, fcntl(mfd_nx, F_GET_SEALS));
    return 1;
}
static int setup_memfdmapped(void) {
    int fd = memfd_create("mapped", 0);
    if (fd < 0 || ftruncate(fd, 4096) != 0) return 0;
    return mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) != MAP_FAILED;
}

/* ---- epollmoved ---- */
#include <sys/epoll.h>
static int ep_fd, ep_pipe[2], ep_moved, ep_old;
static int setup_epollmoved(void) {
    ep_fd = epoll_create1(0);
    if (ep_fd < 0 || pipe(ep_pipe) != 0) return 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x5eed};
    if (epoll_ctl(ep_fd, EPOLL_CTL_ADD, ep_pipe[0], &ev) != 0) return 0;
    /* The watched read end moves to another number; the old number now
     * holds another file. */
    ep_old = ep_pipe[0];
    ep_moved = dup(ep_pipe[0]);
    close(ep_pipe[0]);
    return ep_moved >= 0 && open("/dev/null", O_RDONLY) == ep_old;
}
static int check_epollmoved(void) {
    char path[64], link[64] = {0};
    snprintf(path, sizeof path, "/proc/self/fd/%d", ep_old);
    if (readlink(path, link, sizeof link - 1) < 0 || strcmp(link, "/dev/null") != 0) FAIL("fd %d is '%s'", ep_old, link);
    if (write(ep_pipe[1], "e", 1) != 1) FAIL("write");
    struct epoll_event got;
    int n = epoll_wait(ep_fd, &got, 1, 1000);
    char c;
    if (read(ep_moved, &c, 1) != 1) FAIL("read");
    if (n != 1 || got.data.u64 != 0x5eed) FAIL("epoll_wait gave %d events (data %#llx)", n, (unsigned long long)got.data.u64);
    return 1;
}

/* ---- refused kinds ---- */
static int setup_lock(int kind) {
    int fd = open("locked.dat", O_RDWR | O_CREAT, 0600);
    if (fd < 0) return 0;
    struct flock l = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    if (kind == 0) return fcntl(fd, F_SETLK, &l) == 0;
    if (kind == 1) return fcntl(fd, F_OFD_SETLK, &l) == 0;
    return flock(fd, LOCK_EX) == 0;
}
static int setup_rmdir(void) {
    if (mkdir("gone", 0700) != 0) return 0;
    int fd = open("gone", O_RDONLY | O_DIRECTORY);
    return fd >= 0 && rmdir("gone") == 0;
}
static int setup_fifogone(void) {
    if (mkfifo("fifo", 0600) != 0) return 0;
    int fd = open("fifo", O_RDWR | O_NONBLOCK);
    return fd >= 0 && unlink("fifo") == 0;
}
static char clone_stack[64 * 1024];
static int clone_child(void *arg) {
    (void)arg;
    for (;;) pause();
    return 0;
}
static int setup_clonefiles(const char *pids) {
    pid_t c = clone(clone_child, clone_stack + sizeof clone_stack, CLONE_FILES | SIGCHLD, NULL);
    if (c < 0) return 0;
    FILE *f = fopen(pids, "w");
    if (!f) return 0;
    fprintf(f, "%d %d\n", getpid(), c);
    return fclose(f) == 0;
}
static int setup_ctty(void) {
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) != 0 || unlockpt(m) != 0) return 0;
    /* A session leader without a terminal acquires the slave it opens. */
    return open(ptsname(m), O_RDWR) >= 0;
}

static const char *mode;

/* Every check of what `mode` set up. */
static int check_all(void) {
    int ok = 1;
    if (ok && has_word(mode, "async")) ok = check_async();
    if (ok && has_word(mode, "sockfilter")) ok = check_sockfilter();
    if (ok && has_word(mode, "ghost")) ok = check_ghost();
    if (ok && has_word(mode, "timerfd")) ok = check_timerfd();
    if (ok && has_word(mode, "opath")) ok = check_opath();
    if (ok && has_word(mode, "epollmoved")) ok = check_epollmoved();
    if (ok && has_word(mode, "memfd")) ok = check_memfd();
    if (ok && has_word(mode, "unixbound")) ok = check_unixbound();
    return ok;
}

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    mode = argv[4];
    char *dir = dirname(strdup(argv[1]));
    if (open_log(argv[3]) != 0 || chdir(dir) != 0) return 2;
    char pids[4096];
    snprintf(pids, sizeof pids, "%s.pids", argv[1]);
    int ok = 1;
    if (has_word(mode, "async")) ok = ok && setup_async();
    if (has_word(mode, "sockfilter")) ok = ok && setup_sockfilter();
    if (has_word(mode, "ghost")) ok = ok && setup_ghost();
    if (has_word(mode, "timerfd")) ok = ok && setup_timerfd();
    if (has_word(mode, "opath")) ok = ok && setup_opath();
    if (has_word(mode, "epollmoved")) ok = ok && setup_epollmoved();
    if (has_word(mode, "memfd")) ok = ok && setup_memfd();
    if (has_word(mode, "memfdmapped")) ok = ok && setup_memfdmapped();
    if (has_word(mode, "unixbound")) ok = ok && setup_unixbound();
    if (has_word(mode, "unixpending")) ok = ok && setup_unixpending();
    if (has_word(mode, "posixlock")) ok = ok && setup_lock(0);
    if (has_word(mode, "ofdlock")) ok = ok && setup_lock(1);
    if (has_word(mode, "flock")) ok = ok && setup_lock(2);
    if (has_word(mode, "rmdir")) ok = ok && setup_rmdir();
    if (has_word(mode, "fifogone")) ok = ok && setup_fifogone();
    if (has_word(mode, "clonefiles")) ok = ok && setup_clonefiles(pids);
    if (has_word(mode, "ctty")) ok = ok && setup_ctty();
    if (!ok) return 3;
    return serve_checks(argv[1], argv[2], check_all, reason);
}
