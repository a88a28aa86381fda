/* Checkpoint/restore workload for task state. argv[4] picks what it sets
 * up before publishing its pid in argv[1], and verifies each time the
 * trigger file argv[2] appears (appending "PASS pid" or "FAIL pid reason"
 * to the log argv[3]; it exits, 0 on PASS, when the trigger said "exit"):
 *   signals   - SIGUSR1 handler with SA_ONSTACK on a sigaltstack; SIGUSR2
 *               and SIGRTMIN+1 blocked, SIGUSR2 pending for the process
 *               (kill) and SIGRTMIN+1 twice for the thread (sigqueue
 *               values 4242, 4343);
 *   timers    - ITIMER_REAL every 300 ms; POSIX timers on CLOCK_MONOTONIC:
 *               a disarmed one (id 0), a SIGEV_SIGNAL one (sival 777,
 *               200 ms) created after a deleted one, a SIGEV_THREAD_ID one
 *               (sival 888, 250 ms);
 *   limits    - RLIMIT_NOFILE soft 200, RLIMIT_CORE 0, personality
 *               UNAME26|ADDR_NO_RANDOMIZE, no_new_privs, dumpable 0,
 *               child subreaper, timer slack 123456 ns;
 *   creds     - groups [1000, 1002], gids 1000/1001/1002, uids
 *               1000/1001/0, securebits KEEP_CAPS|NO_SETUID_FIXUP, a
 *               reduced capability set, two bounding caps dropped, an
 *               ambient cap (started as root);
 *   pdeathsig - a parent-death signal (to be refused at checkpoint);
 *   seccomp   - two seccomp filters: getppid fails with EPERM, mmap kills
 *               (the checkpoint's injected calls must not be filtered);
 *   strict    - a child in seccomp strict mode, on pipes (see setup_strict);
 *   zombies   - five zombie children: exit 0, exit 255, SIGTERM, SIGSEGV,
 *               SIGKILL;
 *   misc      - umask, oom_score_adj, THP off, MCE kill policy, nice, CPU
 *               affinity, I/O priority;
 *   thread_filter - a thread with a seccomp filter of its own (refused).
 * Every mode also checks that clock_gettime (vdso) works and that
 * CLOCK_MONOTONIC never went backwards. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sched.h>
#include <stddef.h>
#include <sys/time.h>
#include <grp.h>
#include <time.h>
#include <unistd.h>

static char reason[300];
#define FAIL(...) do { snprintf(reason, sizeof reason, __VA_ARGS__); return 0; } while (0)

static struct timespec last_mono;

static int check_clock(void) {
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0) FAIL("clock_gettime: %s", strerror(errno));
    if (now.tv_sec < last_mono.tv_sec || (now.tv_sec == last_mono.tv_sec && now.tv_nsec < last_mono.tv_nsec))
        FAIL("CLOCK_MONOTONIC went back from %ld.%09ld to %ld.%09ld", (long)last_mono.tv_sec,
             last_mono.tv_nsec, (long)now.tv_sec, now.tv_nsec);
    last_mono = now;
    return 1;
}

static long elapsed_ms(const struct timespec *a) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - a->tv_sec) * 1000 + (now.tv_nsec - a->tv_nsec) / 1000000;
}

static void nap(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static uint64_t status_hex(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    uint64_t v = ~0ULL;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, strlen(key)) == 0) v = strtoull(line + strlen(key), NULL, 16);
    if (f) fclose(f);
    return v;
}

/* ---- signals ---- */
#define ALT_SIZE (64 * 1024)
static char *alt;
static volatile uintptr_t handler_local;
static volatile int rt_count, usr2_count, usr2_code, usr2_pid;
static volatile int rt_values[8];
static uint64_t restorer0;
struct kact { uint64_t handler, flags, restorer, mask; };

static void on_usr1(int sig, siginfo_t *si, void *uc) {
    volatile int local = sig;
    (void)si; (void)uc;
    handler_local = (uintptr_t)&local;
}
static void on_rt1(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)uc;
    if (rt_count < 8) rt_values[rt_count] = si->si_value.sival_int;
    rt_count++;
}
static void on_usr2(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)uc;
    usr2_count++;
    usr2_code = si->si_code;
    usr2_pid = si->si_pid;
}

static void handle(int sig, void (*fn)(int, siginfo_t *, void *), int flags) {
    struct sigaction sa = {0};
    sa.sa_sigaction = fn;
    sa.sa_flags = SA_SIGINFO | flags;
    sigaction(sig, &sa, NULL);
}

static sigset_t blocked_set(void) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    sigaddset(&s, SIGRTMIN + 1);
    return s;
}

static void queue_signals(void) {
    kill(getpid(), SIGUSR2);
    pthread_sigqueue(pthread_self(), SIGRTMIN + 1, (union sigval){.sival_int = 4242});
    pthread_sigqueue(pthread_self(), SIGRTMIN + 1, (union sigval){.sival_int = 4343});
}

static int setup_signals(void) {
    alt = mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    stack_t ss = {.ss_sp = alt, .ss_size = ALT_SIZE, .ss_flags = 0};
    if (alt == MAP_FAILED || sigaltstack(&ss, NULL) != 0) return 0;
    handle(SIGUSR1, on_usr1, SA_ONSTACK);
    handle(SIGUSR2, on_usr2, 0);
    handle(SIGRTMIN + 1, on_rt1, 0);
    struct kact k;
    if (syscall(SYS_rt_sigaction, SIGUSR1, NULL, &k, 8) != 0 || k.restorer == 0) return 0;
    restorer0 = k.restorer;
    sigset_t b = blocked_set();
    sigprocmask(SIG_BLOCK, &b, NULL);
    queue_signals();
    return 1;
}

static int check_signals(void) {
    stack_t ss;
    if (sigaltstack(NULL, &ss) != 0 || ss.ss_sp != alt || ss.ss_size != ALT_SIZE || ss.ss_flags != 0)
        FAIL("sigaltstack is %p size %zu flags %d, expected %p size %d flags 0", ss.ss_sp, ss.ss_size,
             ss.ss_flags, (void *)alt, ALT_SIZE);
    handler_local = 0;
    raise(SIGUSR1);
    if (handler_local < (uintptr_t)alt || handler_local >= (uintptr_t)alt + ALT_SIZE)
        FAIL("SIGUSR1 handler ran with a local at %#lx, not on the alternate stack %p",
             (unsigned long)handler_local, (void *)alt);
    struct kact k;
    if (syscall(SYS_rt_sigaction, SIGUSR1, NULL, &k, 8) != 0 || k.restorer != restorer0 || !(k.flags & SA_ONSTACK))
        FAIL("SIGUSR1 sigaction restorer %#lx flags %#lx", (unsigned long)k.restorer, (unsigned long)k.flags);
    uint64_t usr2 = 1ULL << (SIGUSR2 - 1), rt1 = 1ULL << (SIGRTMIN + 1 - 1);
    uint64_t shd = status_hex("ShdPnd:"), thr = status_hex("SigPnd:");
    if (shd != usr2 || thr != rt1)
        FAIL("pending: shared %#lx thread %#lx, expected shared %#lx thread %#lx", (unsigned long)shd,
             (unsigned long)thr, (unsigned long)usr2, (unsigned long)rt1);
    sigset_t p;
    if (sigpending(&p) != 0 || !sigismember(&p, SIGUSR2) || !sigismember(&p, SIGRTMIN + 1))
        FAIL("sigpending lacks SIGUSR2 or SIGRTMIN+1");
    if (rt_count || usr2_count) FAIL("a blocked signal's handler ran");
    sigset_t b = blocked_set();
    sigprocmask(SIG_UNBLOCK, &b, NULL);
    if (usr2_count != 1 || usr2_code != SI_USER || usr2_pid != getpid())
        FAIL("SIGUSR2 delivered %d times, code %d pid %d", usr2_count, usr2_code, usr2_pid);
    if (rt_count != 2 || rt_values[0] != 4242 || rt_values[1] != 4343)
        FAIL("SIGRTMIN+1 delivered %d times, values %d %d", rt_count, rt_values[0], rt_values[1]);
    /* Back as it was, for the next check. */
    sigprocmask(SIG_BLOCK, &b, NULL);
    rt_count = usr2_count = 0;
    queue_signals();
    return 1;
}

/* ---- timers ---- */
static volatile int alrm_count, t1_count, t2_count, t1_value, t2_value, t1_id;
static timer_t t0, t1, t2;
static void on_alrm(int sig) { (void)sig; alrm_count++; }
static void on_t1(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)uc;
    t1_count++; t1_value = si->si_value.sival_int; t1_id = si->si_timerid;
}
static void on_t2(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)uc;
    t2_count++; t2_value = si->si_value.sival_int;
}

static int setup_timers(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_alrm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    handle(SIGRTMIN + 2, on_t1, SA_RESTART);
    handle(SIGRTMIN + 3, on_t2, SA_RESTART);
    struct itimerval it = {{0, 300000}, {0, 300000}};
    if (setitimer(ITIMER_REAL, &it, NULL) != 0) return 0;
    struct sigevent none = {.sigev_notify = SIGEV_NONE};
    timer_t gone;
    if (timer_create(CLOCK_MONOTONIC, &none, &t0) != 0 || timer_create(CLOCK_MONOTONIC, &none, &gone) != 0)
        return 0;
    timer_delete(gone);
    struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN + 2};
    ev.sigev_value.sival_int = 777;
    if (timer_create(CLOCK_MONOTONIC, &ev, &t1) != 0) return 0;
    struct sigevent ev2 = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGRTMIN + 3};
    ev2.sigev_value.sival_int = 888;
    ev2._sigev_un._tid = gettid();
    if (timer_create(CLOCK_MONOTONIC, &ev2, &t2) != 0) return 0;
    struct itimerspec s1 = {{0, 200000000}, {0, 200000000}}, s2 = {{0, 250000000}, {0, 250000000}};
    return timer_settime(t1, 0, &s1, NULL) == 0 && timer_settime(t2, 0, &s2, NULL) == 0;
}

static int check_timers(void) {
    int a0 = alrm_count, c1 = t1_count, c2 = t2_count;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    /* Liveness, not timing: up to 20 s for two more of each. */
    while (alrm_count < a0 + 2 || t1_count < c1 + 2 || t2_count < c2 + 2) {
        if (elapsed_ms(&start) > 20000)
            FAIL("timers stopped: SIGALRM %d->%d, timer 1 %d->%d, timer 2 %d->%d", a0, alrm_count, c1,
                 t1_count, c2, t2_count);
        nap(50);
    }
    if (t1_value != 777 || t2_value != 888) FAIL("timer sival %d and %d, expected 777 and 888", t1_value, t2_value);
    if (t1_id != (int)(intptr_t)t1) FAIL("timer 1 signals id %d, its timer_t is %d", t1_id, (int)(intptr_t)t1);
    struct itimerspec s;
    if (timer_gettime(t1, &s) != 0 || s.it_interval.tv_nsec != 200000000)
        FAIL("timer_gettime of timer 1 (id %d): %s", (int)(intptr_t)t1, strerror(errno));
    if (timer_gettime(t2, &s) != 0 || s.it_interval.tv_nsec != 250000000)
        FAIL("timer_gettime of timer 2 (id %d): %s", (int)(intptr_t)t2, strerror(errno));
    if (timer_gettime(t0, &s) != 0 || s.it_value.tv_sec || s.it_value.tv_nsec)
        FAIL("disarmed timer 0 (id %d) is gone or armed", (int)(intptr_t)t0);
    struct itimerval it;
    if (getitimer(ITIMER_REAL, &it) != 0 || it.it_interval.tv_usec != 300000 || it.it_interval.tv_sec)
        FAIL("ITIMER_REAL interval is %ld us", (long)it.it_interval.tv_usec);
    return 1;
}

/* ---- limits and prctl ---- */
#define PERSONA (PER_LINUX | UNAME26 | ADDR_NO_RANDOMIZE)
static rlim_t nofile_hard;
static int setup_limits(void) {
    struct rlimit r;
    getrlimit(RLIMIT_NOFILE, &r);
    nofile_hard = r.rlim_max;
    r.rlim_cur = 200;
    struct rlimit core = {0, 0};
    return setrlimit(RLIMIT_NOFILE, &r) == 0 && setrlimit(RLIMIT_CORE, &core) == 0 &&
           personality(PERSONA) != -1 && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 &&
           prctl(PR_SET_TIMERSLACK, 123456, 0, 0, 0) == 0;
}

static int check_limits(void) {
    struct rlimit r;
    getrlimit(RLIMIT_NOFILE, &r);
    if (r.rlim_cur != 200 || r.rlim_max != nofile_hard)
        FAIL("RLIMIT_NOFILE %lu/%lu, expected 200/%lu", (unsigned long)r.rlim_cur, (unsigned long)r.rlim_max,
             (unsigned long)nofile_hard);
    getrlimit(RLIMIT_CORE, &r);
    if (r.rlim_cur != 0 || r.rlim_max != 0) FAIL("RLIMIT_CORE %lu/%lu", (unsigned long)r.rlim_cur, (unsigned long)r.rlim_max);
    int p = personality(0xffffffff);
    if (p != PERSONA) FAIL("personality %#x, expected %#x", p, PERSONA);
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) FAIL("no_new_privs lost");
    if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) FAIL("dumpable is %d", prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
    int sub = 0;
    if (prctl(PR_GET_CHILD_SUBREAPER, &sub, 0, 0, 0) != 0 || sub != 1) FAIL("child subreaper is %d", sub);
    int slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    if (slack != 123456) FAIL("timer slack %d", slack);
    return 1;
}

/* ---- credentials ---- */
#define CAPS_KEPT ((1u << CAP_NET_BIND_SERVICE) | (1u << CAP_KILL) | (1u << CAP_CHOWN))
#define CAPS_EFF (1u << CAP_NET_BIND_SERVICE)
#define CAPS_INH (1u << CAP_KILL)
#define SECBITS ((1 << 4) | (1 << 2)) /* KEEP_CAPS, NO_SETUID_FIXUP */
static int caps(uint32_t eff, uint32_t perm, uint32_t inh) {
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2] = {{eff, perm, inh}, {0, 0, 0}};
    return syscall(SYS_capset, &h, d) == 0;
}

static int setup_creds(const char *dir) {
    gid_t groups[2] = {1000, 1002};
    return chmod(dir, 0777) == 0 && setgroups(2, groups) == 0 && setresgid(1000, 1001, 1002) == 0 &&
           prctl(PR_SET_SECUREBITS, SECBITS, 0, 0, 0) == 0 && prctl(PR_CAPBSET_DROP, CAP_SYS_MODULE, 0, 0, 0) == 0 &&
           prctl(PR_CAPBSET_DROP, CAP_SYS_RAWIO, 0, 0, 0) == 0 &&
           caps(CAPS_KEPT | (1u << CAP_SETUID), CAPS_KEPT | (1u << CAP_SETUID), CAPS_INH) &&
           prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_KILL, 0, 0) == 0 && setresuid(1000, 1001, 0) == 0 &&
           caps(CAPS_EFF, CAPS_KEPT, CAPS_INH);
}

static int check_creds(void) {
    uid_t r, e, s;
    gid_t rg, eg, sg;
    getresuid(&r, &e, &s);
    getresgid(&rg, &eg, &sg);
    if (r != 1000 || e != 1001 || s != 0) FAIL("uids %u %u %u", r, e, s);
    if (rg != 1000 || eg != 1001 || sg != 1002) FAIL("gids %u %u %u", rg, eg, sg);
    int fsuid = setfsuid(-1), fsgid = setfsgid(-1);
    if (fsuid != 1001 || fsgid != 1001) FAIL("fsuid %d fsgid %d", fsuid, fsgid);
    gid_t g[8];
    int n = getgroups(8, g);
    if (n != 2 || g[0] != 1000 || g[1] != 1002) FAIL("%d groups: %u %u", n, n > 0 ? g[0] : 0, n > 1 ? g[1] : 0);
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) != 0) FAIL("capget: %s", strerror(errno));
    if (d[0].effective != CAPS_EFF || d[0].permitted != CAPS_KEPT || d[0].inheritable != CAPS_INH || d[1].permitted)
        FAIL("caps eff %#x perm %#x inh %#x", d[0].effective, d[0].permitted, d[0].inheritable);
    if (prctl(PR_CAPBSET_READ, CAP_SYS_MODULE, 0, 0, 0) != 0 || prctl(PR_CAPBSET_READ, CAP_SYS_RAWIO, 0, 0, 0) != 0 ||
        prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN, 0, 0, 0) != 1)
        FAIL("bounding set wrong");
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_KILL, 0, 0) != 1 ||
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_NET_BIND_SERVICE, 0, 0) != 0)
        FAIL("ambient set wrong");
    int sb = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
    if (sb != SECBITS) FAIL("securebits %#x, expected %#x", sb, SECBITS);
    return 1;
}

/* ---- parent-death signal ---- */
static int check_pdeathsig(void) {
    int sig = 0;
    if (prctl(PR_GET_PDEATHSIG, &sig, 0, 0, 0) != 0 || sig != SIGUSR1) FAIL("pdeathsig is %d", sig);
    return 1;
}

/* ---- seccomp ---- */
/* Two filters: getppid fails with EPERM; mmap kills the process (the
 * checkpoint's own injected mmap must not be filtered). */
static int setup_seccomp(void) {
    struct sock_filter eperm[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_filter kill_mmap[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mmap, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog a = {4, eperm}, b = {4, kill_mmap};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return 0;
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &a) == 0 &&
           syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &b) == 0;
}
static int check_seccomp(void) {
    uint64_t mode = status_hex("Seccomp:");
    if (mode != SECCOMP_MODE_FILTER) FAIL("seccomp mode %lu", (unsigned long)mode);
    if (status_hex("Seccomp_filters:") != 2) FAIL("%lu filters", (unsigned long)status_hex("Seccomp_filters:"));
    errno = 0;
    long ppid = syscall(SYS_getppid);
    if (ppid != -1 || errno != EPERM) FAIL("getppid gave %ld (errno %d), not EPERM", ppid, errno);
    return 1;
}

/* A child in seccomp strict mode answers 'c' with 'k' on a pipe; 'x'
 * makes it call getpid, which strict mode kills it for. */
static int strict_in[2], strict_out[2];
static pid_t strict_child;
static int setup_strict(const char *pids) {
    if (pipe(strict_in) != 0 || pipe(strict_out) != 0) return 0;
    strict_child = fork();
    if (strict_child < 0) return 0;
    if (strict_child == 0) {
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0) _exit(9);
        for (;;) {
            char c;
            if (read(strict_in[0], &c, 1) != 1) syscall(SYS_exit, 8);
            if (c == 'x') syscall(SYS_getpid);
            if (write(strict_out[1], "k", 1) != 1) syscall(SYS_exit, 7);
        }
    }
    FILE *f = fopen(pids, "w");
    if (!f) return 0;
    fprintf(f, "%d %d\n", getpid(), strict_child);
    return fclose(f) == 0;
}
static int check_strict(void) {
    char path[64], c = 0;
    snprintf(path, sizeof path, "/proc/%d/status", strict_child);
    FILE *f = fopen(path, "r");
    char line[256];
    int mode = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Seccomp:", 8)) mode = atoi(line + 8);
    if (f) fclose(f);
    if (mode != SECCOMP_MODE_STRICT) FAIL("the child's seccomp mode is %d", mode);
    if (write(strict_in[1], "c", 1) != 1 || read(strict_out[0], &c, 1) != 1 || c != 'k')
        FAIL("the strict child did not answer");
    if (write(strict_in[1], "x", 1) != 1) FAIL("write x");
    int st = 0;
    if (waitpid(strict_child, &st, 0) != strict_child || !WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
        FAIL("the strict child was not killed for getpid (status %#x)", st);
    return 1;
}

/* Zombies of every death: exit 0, exit 255, killed by SIGTERM, by
 * SIGSEGV (no core: RLIMIT_CORE 0) and by SIGKILL. The parent finds the same wait
 * status; "exit" reaps them. */
#define ZOMBIES 5
static pid_t zombies[ZOMBIES];
static const int zombie_code[ZOMBIES] = {CLD_EXITED, CLD_EXITED, CLD_KILLED, CLD_KILLED, CLD_KILLED};
static const int zombie_status[ZOMBIES] = {0, 255, SIGTERM, SIGSEGV, SIGKILL};
static int setup_zombies(const char *pids) {
    FILE *f = fopen(pids, "w");
    if (!f) return 0;
    fprintf(f, "%d", getpid());
    for (int i = 0; i < ZOMBIES; i++) {
        zombies[i] = fork();
        if (zombies[i] < 0) return 0;
        if (zombies[i] == 0) {
            struct rlimit none = {0, 0};
            setrlimit(RLIMIT_CORE, &none);
            if (i < 2) _exit(zombie_status[i]);
            signal(zombie_status[i], SIG_DFL);
            raise(zombie_status[i]);
            _exit(99);
        }
        fprintf(f, " %d", zombies[i]);
        siginfo_t si;
        if (waitid(P_PID, zombies[i], &si, WEXITED | WNOWAIT) != 0) return 0;
    }
    fprintf(f, "\n");
    return fclose(f) == 0;
}
static int check_zombies(void) {
    for (int i = 0; i < ZOMBIES; i++) {
        siginfo_t si = {0};
        if (waitid(P_PID, zombies[i], &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid != zombies[i])
            FAIL("zombie %d is not there", zombies[i]);
        if (si.si_code != zombie_code[i] || si.si_status != zombie_status[i])
            FAIL("zombie %d: code %d status %d, expected %d %d", zombies[i], si.si_code, si.si_status,
                 zombie_code[i], zombie_status[i]);
    }
    return 1;
}

/* Per-process and per-thread settings: umask, oom_score_adj, THP off,
 * machine-check kill policy, nice, CPU affinity, I/O priority. */
static int setup_misc(void) {
    umask(0345);
    int fd = open("/proc/self/oom_score_adj", O_WRONLY);
    if (fd < 0 || write(fd, "400", 3) != 3) return 0;
    close(fd);
    if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0) return 0;
    if (prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY, 0, 0) != 0) return 0;
    if (setpriority(PRIO_PROCESS, 0, 5) != 0) return 0;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) return 0;
    /* IOPRIO_CLASS_BE (2) level 7 */
    return syscall(SYS_ioprio_set, 1, 0, (2 << 13) | 7) == 0;
}
static int check_misc(void) {
    mode_t old = umask(0);
    umask(old);
    if (old != 0345) FAIL("umask %o", old);
    char buf[16] = {0};
    int fd = open("/proc/self/oom_score_adj", O_RDONLY);
    if (fd < 0 || read(fd, buf, sizeof buf - 1) < 1) FAIL("read oom_score_adj");
    close(fd);
    if (atoi(buf) != 400) FAIL("oom_score_adj %s", buf);
    if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) != 1) FAIL("THP not disabled");
    if (prctl(PR_MCE_KILL_GET, 0, 0, 0, 0) != PR_MCE_KILL_EARLY) FAIL("MCE kill policy");
    errno = 0;
    if (getpriority(PRIO_PROCESS, 0) != 5) FAIL("nice %d", getpriority(PRIO_PROCESS, 0));
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) != 1 || !CPU_ISSET(0, &set))
        FAIL("affinity is not CPU 0 alone");
    long io = syscall(SYS_ioprio_get, 1, 0);
    if (io != ((2 << 13) | 7)) FAIL("ioprio %#lx", io);
    return 1;
}

/* A thread with a seccomp filter of its own (not synchronised): the
 * process is refused, and must be left exactly as it was. */
static void *own_filter(void *arg) {
    (void)arg;
    struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog prog = {1, allow};
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
    for (;;) pause();
    return NULL;
}
static int setup_thread_filter(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, own_filter, NULL) != 0) return 0;
    nap(100);
    return 1;
}
static int check_nothing(void) { return 1; }

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    const char *mode = argv[4];
    int logfd = open(argv[3], O_WRONLY | O_APPEND | O_CREAT, 0644);
    char *dir = strdup(argv[1]);
    dir = dirname(dir);
    if (logfd < 0 || chdir(dir) != 0) return 2;
    char tmp[4096], buf[32];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
    int n = snprintf(buf, sizeof buf, "%d\n", getpid());
    int pf = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (pf < 0 || write(pf, buf, n) != n) return 2;
    close(pf);
    int (*check)(void);
    int ok;
    if (!strcmp(mode, "signals")) { ok = setup_signals(); check = check_signals; }
    else if (!strcmp(mode, "timers")) { ok = setup_timers(); check = check_timers; }
    else if (!strcmp(mode, "limits")) { ok = setup_limits(); check = check_limits; }
    else if (!strcmp(mode, "creds")) { ok = setup_creds(dir); check = check_creds; }
    else if (!strcmp(mode, "pdeathsig")) {
        signal(SIGUSR1, SIG_IGN);
        ok = prctl(PR_SET_PDEATHSIG, SIGUSR1, 0, 0, 0) == 0;
        check = check_pdeathsig;
    } else if (!strcmp(mode, "seccomp")) { ok = setup_seccomp(); check = check_seccomp; }
    else if (!strcmp(mode, "strict")) {
        char pids[4096];
        snprintf(pids, sizeof pids, "%s.pids", argv[1]);
        ok = setup_strict(pids);
        check = check_strict;
    } else if (!strcmp(mode, "misc")) { ok = setup_misc(); check = check_misc; }
    else if (!strcmp(mode, "zombies")) {
        char pids[4096];
        snprintf(pids, sizeof pids, "%s.pids", argv[1]);
        ok = setup_zombies(pids);
        check = check_zombies;
    }
    else if (!strcmp(mode, "thread_filter")) { ok = setup_thread_filter(); check = check_nothing; }
    else return 2;
    if (!ok) return 3;
    clock_gettime(CLOCK_MONOTONIC, &last_mono);
    if (rename(tmp, argv[1]) != 0) return 2;
    for (;;) {
        nap(50);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > last_mono.tv_sec || (now.tv_sec == last_mono.tv_sec && now.tv_nsec >= last_mono.tv_nsec))
            last_mono = now;
        int fd = open(argv[2], O_RDONLY);
        if (fd < 0) continue;
        char cmd[16] = {0};
        if (read(fd, cmd, sizeof cmd - 1) < 0) cmd[0] = 0;
        close(fd);
        unlink(argv[2]);
        reason[0] = 0;
        int good = check_clock() && check();
        char line[400];
        snprintf(line, sizeof line, "%s %d %s\n", good ? "PASS" : "FAIL", getpid(), reason);
        if (write(logfd, line, strlen(line)) < 0) return 3;
        if (strncmp(cmd, "exit", 4) == 0 || !good) return good ? 0 : 1;
    }
}
