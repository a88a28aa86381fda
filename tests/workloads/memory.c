/* Checkpoint/restore workload: fills heap (malloc), brk (sbrk), stack and
 * a read-only page with known patterns, keeps values in a callee-saved
 * register and an SSE register, installs a SIGUSR1 handler and blocks
 * SIGUSR2, works in the pid file's directory, then publishes its pid in argv[1] and
 * sleeps in 50 ms steps. Each time the file argv[2] appears it deletes
 * it, verifies everything and appends "PASS pid" or "FAIL pid reason" to
 * the log argv[3] (opened O_APPEND before the checkpoint, so the fd is
 * restored too); it exits (0 on PASS) when the trigger said "exit".
 * With argv[4] = "spin" it computes in a loop instead of sleeping, so it
 * is checkpointed in user code rather than in a syscall. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libgen.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <emmintrin.h>
#include "workload.h"

#define HEAP_BYTES (8 << 20)
#define BRK_BYTES (256 << 10)

static char cwd[4096];
static volatile sig_atomic_t usr1_seen;

static void on_usr1(int sig) { (void)sig; usr1_seen++; }
static char reason[256];

static uint8_t pattern(uintptr_t i, uint8_t seed) { return (uint8_t)(i * 131 + seed + (i >> 12)); }

static int check_buf(const uint8_t *p, size_t n, uint8_t seed, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern(i, seed)) {
            snprintf(reason, sizeof reason, "%s byte %zu is %u, expected %u", what, i, p[i], pattern(i, seed));
            return 0;
        }
    return 1;
}

static void fill(uint8_t *p, size_t n, uint8_t seed) {
    for (size_t i = 0; i < n; i++) p[i] = pattern(i, seed);
}

/* Some tens of ms of arithmetic in registers, no syscall. */
static volatile uint64_t sink;
__attribute__((noinline)) static void spin(void) {
    uint64_t x = sink;
    for (long i = 0; i < 20 * 1000 * 1000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        asm volatile("" : "+r"(x));
    }
    sink = x;
}

__attribute__((noinline)) static int run(const char *trigger, const char *tmp, const char *pidfile, int spinning) {
    volatile uint8_t stackbuf[16384];
    for (size_t i = 0; i < sizeof stackbuf; i++) stackbuf[i] = pattern(i, 7);

    uint8_t *heap = malloc(HEAP_BYTES);
    fill(heap, HEAP_BYTES, 11);
    uint8_t *brk0 = sbrk(BRK_BYTES);
    if (brk0 == (void *)-1) return 2;
    fill(brk0, BRK_BYTES, 13);
    void *brk_end = sbrk(0);
    uint8_t *ro = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    fill(ro, 4096, 17);
    mprotect(ro, 4096, PROT_READ);
    uint8_t *guard = mmap(NULL, 3 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    /* The environment: one variable from the start (the harness sets
     * it), one set at run time (a new environ array on the heap). */
    setenv("PALISADE_CKPT_SET", "at-run-time", 1);

    /* A handler (its restorer is glibc's, in the image) and a mask. */
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2);
    sigprocmask(SIG_BLOCK, &block, NULL);

    register uint64_t kept asm("rbx") = 0x1234567890abcdefULL;
    __m128d sse = _mm_set_pd(3.25, -1.5);
    asm volatile("" : "+r"(kept), "+x"(sse));
    if (rename(tmp, pidfile) != 0) return 2;

    for (;;) {
        if (spinning) {
            /* Busy in user code: checkpointed outside any syscall. */
            spin();
        } else {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        asm volatile("" : "+r"(kept), "+x"(sse));
        int fd = open(trigger, O_RDONLY);
        if (fd < 0) continue;
        char cmd[16] = {0};
        if (read(fd, cmd, sizeof cmd - 1) < 0) cmd[0] = 0;
        close(fd);
        unlink(trigger);
        int ok = 1;
        reason[0] = 0;
        uint8_t tmp[16384];
        for (size_t i = 0; i < sizeof tmp; i++) tmp[i] = stackbuf[i];
        ok = ok && check_buf(tmp, sizeof tmp, 7, "stack");
        ok = ok && check_buf(heap, HEAP_BYTES, 11, "heap");
        ok = ok && check_buf(brk0, BRK_BYTES, 13, "brk");
        ok = ok && check_buf(ro, 4096, 17, "read-only page");
        if (ok && sbrk(0) != brk_end) { ok = 0; snprintf(reason, sizeof reason, "brk moved"); }
        /* brk still grows from where it was. */
        if (ok) {
            uint8_t *more = sbrk(65536);
            if (more != brk_end) { ok = 0; snprintf(reason, sizeof reason, "sbrk grew at %p, expected %p", (void *)more, brk_end); }
            else { memset(more, 1, 65536); sbrk(-65536); }
        }
        if (ok && kept != 0x1234567890abcdefULL) { ok = 0; snprintf(reason, sizeof reason, "rbx lost"); }
        double d[2];
        _mm_storeu_pd(d, sse);
        if (ok && (d[0] != -1.5 || d[1] != 3.25)) { ok = 0; snprintf(reason, sizeof reason, "xmm lost"); }
        struct timespec now;
        if (ok && clock_gettime(CLOCK_MONOTONIC, &now) != 0) { ok = 0; snprintf(reason, sizeof reason, "clock_gettime"); }
        struct sigaction now_sa;
        if (ok && (sigaction(SIGUSR1, NULL, &now_sa) != 0 || now_sa.sa_handler != on_usr1 || !(now_sa.sa_flags & SA_RESTART))) {
            ok = 0; snprintf(reason, sizeof reason, "SIGUSR1 handler lost");
        }
        if (ok) {
            sig_atomic_t before = usr1_seen;
            raise(SIGUSR1);
            if (usr1_seen != before + 1) { ok = 0; snprintf(reason, sizeof reason, "SIGUSR1 handler did not run"); }
        }
        sigset_t cur;
        if (ok && (sigprocmask(SIG_BLOCK, NULL, &cur) != 0 || !sigismember(&cur, SIGUSR2) || sigismember(&cur, SIGUSR1))) {
            ok = 0; snprintf(reason, sizeof reason, "signal mask lost");
        }
        char now_cwd[4096];
        if (ok && (getcwd(now_cwd, sizeof now_cwd) == NULL || strcmp(now_cwd, cwd) != 0)) {
            ok = 0; snprintf(reason, sizeof reason, "cwd is %s, expected %s", now_cwd, cwd);
        }
        /* The guard region is still there (msync finds it mapped), still
         * inaccessible (reading it through process_vm_readv faults). */
        if (ok) {
            char probe[8];
            struct iovec local = {probe, sizeof probe}, remote = {guard + 4096, sizeof probe};
            if (msync(guard, 3 * 4096, MS_ASYNC) != 0) {
                ok = 0; snprintf(reason, sizeof reason, "guard region %p is gone", (void *)guard);
            } else if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != -1 || errno != EFAULT) {
                ok = 0; snprintf(reason, sizeof reason, "guard region %p became readable", (void *)guard);
            }
        }
        const char *e1 = getenv("PALISADE_CKPT_ENV"), *e2 = getenv("PALISADE_CKPT_SET");
        if (ok && (!e1 || strcmp(e1, "from-the-start") != 0 || !e2 || strcmp(e2, "at-run-time") != 0)) {
            ok = 0; snprintf(reason, sizeof reason, "environment lost: %s, %s", e1 ? e1 : "(unset)", e2 ? e2 : "(unset)");
        }
        char line[400];
        snprintf(line, sizeof line, "%s %d %s\n", ok ? "PASS" : "FAIL", getpid(), reason);
        say(line);
        if (strncmp(cmd, "exit", 4) == 0 || !ok) return ok ? 0 : 1;
    }
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    logfd = open(argv[3], O_WRONLY | O_APPEND | O_CREAT, 0644);
    /* Work in the pid file's directory: the cwd must come back too. */
    char *dir = strdup(argv[1]);
    if (chdir(dirname(dir)) != 0 || getcwd(cwd, sizeof cwd) == NULL) return 2;
    if (logfd < 0) return 2;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d\n", getpid());
    /* The pid file appears complete: written aside, then renamed. */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
    int pf = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (pf < 0 || write(pf, buf, n) != n) return 2;
    close(pf);
    return run(argv[2], tmp, argv[1], argc > 4 && strcmp(argv[4], "spin") == 0);
}
