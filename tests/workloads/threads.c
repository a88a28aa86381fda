/* Checkpoint/restore workload for threads: main plus four workers t0..t3.
 * Each worker names itself (PR_SET_NAME "tK"), blocks its own signals, keeps
 * its own __thread value, and spins in blocks of an inline-asm loop that
 * makes no syscall and holds distinct per-thread values in ten
 * general-purpose registers and fourteen vector registers (ymm0..13 when the
 * CPU has AVX, else xmm0..13); after each block it compares what the
 * registers held at the end with what was loaded, so a checkpoint (very
 * likely taken inside a block) that loses a register is caught. Main keeps
 * values in r12..r15 across its sleeps, as memory.c does.
 *
 * Protocol as memory.c: argv[1] pid file (written aside, then renamed, once
 * everything is set up; before it, argv[1].tids holds the five tids, main's
 * first, then t0..t3, space-separated), argv[2] trigger polled every 50 ms,
 * argv[3] log opened O_APPEND. On a trigger main asks every worker, through
 * a shared generation counter, to verify itself (registers, tid, name as
 * seen in /proc/self/task/TID/comm, signal mask, TLS value), verifies
 * itself and appends one "PASS pid" or "FAIL pid reason" line; it exits (0
 * on PASS) when the trigger said "exit", or on FAIL. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
#include "workload.h"

#define WORKERS 4
#define NGPR 10 /* rbx rsi r8..r15; rdi points at the frame, rax rcx rdx are scratch */
#define NVEC 14 /* ymm0..13 (or xmm0..13); 14 and 15 are scratch */
/* Iterations of one asm block: some tens of ms of dependent arithmetic. */
#define BLOCK_ITERS (8 * 1000 * 1000)

struct regset {
    uint64_t gpr[NGPR];
    uint64_t vec[NVEC][4];
};

/* The asm addresses this by fixed offsets, asserted below. */
struct frame {
    struct regset in;  /* 0 */
    struct regset out; /* 528 */
    uint64_t iters;    /* 1056 */
    uint64_t acc;      /* 1064 */
};
_Static_assert(offsetof(struct frame, out) == 528, "asm offsets");
_Static_assert(offsetof(struct frame, iters) == 1056, "asm offsets");
_Static_assert(offsetof(struct frame, acc) == 1064, "asm offsets");

#define LD(i, r) "mov " #i "*8(%%rdi), %%" #r "\n\t"
#define ST(i, r) "mov %%" #r ", 528+" #i "*8(%%rdi)\n\t"
#define GPRS(X) X(0, rbx) X(1, rsi) X(2, r8) X(3, r9) X(4, r10) X(5, r11) X(6, r12) X(7, r13) X(8, r14) X(9, r15)
#define VLD(i, op, r) #op " 80+" #i "*32(%%rdi), %%" #r #i "\n\t"
#define VST(i, op, r) #op " %%" #r #i ", 608+" #i "*32(%%rdi)\n\t"
#define VECS(X, op, r) X(0, op, r) X(1, op, r) X(2, op, r) X(3, op, r) X(4, op, r) X(5, op, r) X(6, op, r) \
    X(7, op, r) X(8, op, r) X(9, op, r) X(10, op, r) X(11, op, r) X(12, op, r) X(13, op, r)
#define CLOBBERS "rax", "rbx", "rcx", "rdx", "rsi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", \
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",     \
    "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc"

/* Loads f->in into the registers, loops f->iters times on rax (and a
 * scratch vector register) while reading, never writing, the held ones,
 * then stores the held registers into f->out. No syscall, no memory access
 * inside the loop. */
__attribute__((noinline)) static void block_avx(struct frame *f) {
    asm volatile(GPRS(LD) VECS(VLD, vmovdqu, ymm)
                 "mov 1056(%%rdi), %%rcx\n\t"
                 "mov 1064(%%rdi), %%rax\n\t"
                 "vxorps %%ymm15, %%ymm15, %%ymm15\n\t"
                 "1:\n\t"
                 "imul $1103515245, %%rax, %%rax\n\t"
                 "add $12345, %%rax\n\t"
                 "mov %%rbx, %%rdx\n\t"
                 "xor %%r15, %%rdx\n\t"
                 "vxorps %%ymm0, %%ymm15, %%ymm15\n\t"
                 "vxorps %%ymm13, %%ymm15, %%ymm14\n\t"
                 "dec %%rcx\n\t"
                 "jnz 1b\n\t"
                 "mov %%rax, 1064(%%rdi)\n\t"
                 GPRS(ST) VECS(VST, vmovdqu, ymm)
                 "vzeroupper\n\t"
                 :
                 : "D"(f)
                 : CLOBBERS);
}

__attribute__((noinline)) static void block_sse(struct frame *f) {
    asm volatile(GPRS(LD) VECS(VLD, movdqu, xmm)
                 "mov 1056(%%rdi), %%rcx\n\t"
                 "mov 1064(%%rdi), %%rax\n\t"
                 "pxor %%xmm15, %%xmm15\n\t"
                 "1:\n\t"
                 "imul $1103515245, %%rax, %%rax\n\t"
                 "add $12345, %%rax\n\t"
                 "mov %%rbx, %%rdx\n\t"
                 "xor %%r15, %%rdx\n\t"
                 "pxor %%xmm0, %%xmm15\n\t"
                 "movdqa %%xmm15, %%xmm14\n\t"
                 "pxor %%xmm13, %%xmm14\n\t"
                 "dec %%rcx\n\t"
                 "jnz 1b\n\t"
                 "mov %%rax, 1064(%%rdi)\n\t"
                 GPRS(ST) VECS(VST, movdqu, xmm)
                 :
                 : "D"(f)
                 : CLOBBERS);
}

static const char *const gpr_names[NGPR] = {"rbx", "rsi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"};

static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Thread k's (main is WORKERS) blocked signals: one classic, one real-time. */
static void mask_of(int k, sigset_t *set) {
    static const int classic[WORKERS + 1] = {SIGUSR1, SIGUSR2, SIGHUP, SIGWINCH, SIGPIPE};
    sigemptyset(set);
    sigaddset(set, classic[k]);
    sigaddset(set, SIGRTMIN + 1 + k);
}

static __thread uint64_t tls_value;
static uint64_t tls_of(int k) { return 0x7715000000000000ULL + mix(100 + k); }

struct worker {
    int idx;
    pid_t tid;
    pthread_t thread;
    char broken[200];        /* the first register loss seen, sticky */
    unsigned done_gen;       /* the last verify request answered */
    int ok;                  /* that answer, with reason */
    char reason[300];
};

static struct worker workers[WORKERS];
static unsigned req_gen; /* main bumps it to ask every worker to verify */
static int stop;         /* main sets it on "exit" */
static int avx;
static pthread_barrier_t ready;

/* Appends the first mismatch between the live mask and thread k's to why. */
static int mask_ok(int k, char *why, size_t n) {
    sigset_t want, cur;
    mask_of(k, &want);
    if (pthread_sigmask(SIG_BLOCK, NULL, &cur) != 0) {
        snprintf(why, n, "pthread_sigmask failed");
        return 0;
    }
    for (int s = 1; s <= SIGRTMAX; s++) {
        if (s > 31 && s < SIGRTMIN) continue; /* glibc's own */
        if (sigismember(&cur, s) != sigismember(&want, s)) {
            snprintf(why, n, "signal %d is %sblocked", s, sigismember(&cur, s) ? "" : "not ");
            return 0;
        }
    }
    return 1;
}

static int comm_ok(pid_t tid, const char *want, char *why, size_t n) {
    char path[64], got[32] = {0};
    snprintf(path, sizeof path, "/proc/self/task/%d/comm", tid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        snprintf(why, n, "cannot open %s", path);
        return 0;
    }
    ssize_t r = read(fd, got, sizeof got - 1);
    close(fd);
    if (r > 0 && got[r - 1] == '\n') got[r - 1] = 0;
    if (r <= 0 || strcmp(got, want) != 0) {
        snprintf(why, n, "%s is \"%s\", expected \"%s\"", path, got, want);
        return 0;
    }
    return 1;
}

static void check_block(struct worker *w, const struct frame *f) {
    if (w->broken[0]) return;
    for (int j = 0; j < NGPR; j++)
        if (f->out.gpr[j] != f->in.gpr[j]) {
            snprintf(w->broken, sizeof w->broken, "%s is %#llx, expected %#llx", gpr_names[j],
                     (unsigned long long)f->out.gpr[j], (unsigned long long)f->in.gpr[j]);
            return;
        }
    int lanes = avx ? 4 : 2;
    for (int j = 0; j < NVEC; j++)
        for (int l = 0; l < lanes; l++)
            if (f->out.vec[j][l] != f->in.vec[j][l]) {
                snprintf(w->broken, sizeof w->broken, "%s%d qword %d is %#llx, expected %#llx", avx ? "ymm" : "xmm",
                         j, l, (unsigned long long)f->out.vec[j][l], (unsigned long long)f->in.vec[j][l]);
                return;
            }
}

static void verify_worker(struct worker *w) {
    char why[300] = "";
    char name[16];
    snprintf(name, sizeof name, "t%d", w->idx);
    int ok = 1;
    if (w->broken[0]) {
        ok = 0;
        snprintf(why, sizeof why, "registers: %s", w->broken);
    }
    if (ok && gettid() != w->tid) {
        ok = 0;
        snprintf(why, sizeof why, "tid is %d, expected %d", gettid(), w->tid);
    }
    ok = ok && comm_ok(w->tid, name, why, sizeof why);
    ok = ok && mask_ok(w->idx, why, sizeof why);
    if (ok && tls_value != tls_of(w->idx)) {
        ok = 0;
        snprintf(why, sizeof why, "__thread value is %#llx, expected %#llx", (unsigned long long)tls_value,
                 (unsigned long long)tls_of(w->idx));
    }
    w->ok = ok;
    snprintf(w->reason, sizeof w->reason, "%s", why);
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    char name[16];
    snprintf(name, sizeof name, "t%d", w->idx);
    prctl(PR_SET_NAME, name, 0, 0, 0);
    sigset_t set;
    mask_of(w->idx, &set);
    pthread_sigmask(SIG_SETMASK, &set, NULL);
    tls_value = tls_of(w->idx);
    w->tid = gettid();

    static __thread struct frame f; /* per thread, off the stack */
    for (int j = 0; j < NGPR; j++) f.in.gpr[j] = mix(((uint64_t)w->idx << 16) + j);
    for (int j = 0; j < NVEC; j++)
        for (int l = 0; l < 4; l++) f.in.vec[j][l] = mix(((uint64_t)w->idx << 16) + 0x100 + j * 4 + l);
    f.iters = BLOCK_ITERS;
    f.acc = w->idx;
    pthread_barrier_wait(&ready);

    unsigned seen = 0;
    while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
        memset(&f.out, 0, sizeof f.out);
        if (avx)
            block_avx(&f);
        else
            block_sse(&f);
        check_block(w, &f);
        unsigned gen = __atomic_load_n(&req_gen, __ATOMIC_ACQUIRE);
        if (gen != seen) {
            seen = gen;
            verify_worker(w);
            __atomic_store_n(&w->done_gen, gen, __ATOMIC_RELEASE);
        }
    }
    return NULL;
}

__attribute__((noinline)) static int run(const char *pidfile, const char *trigger) {
    char main_comm[32] = {0};
    int fd = open("/proc/self/comm", O_RDONLY);
    if (fd < 0 || read(fd, main_comm, sizeof main_comm - 1) <= 0) return 2;
    close(fd);
    main_comm[strcspn(main_comm, "\n")] = 0;
    pid_t pid = getpid();
    sigset_t set;
    mask_of(WORKERS, &set);
    pthread_sigmask(SIG_SETMASK, &set, NULL);
    tls_value = tls_of(WORKERS);

    pthread_barrier_init(&ready, NULL, WORKERS + 1);
    for (int k = 0; k < WORKERS; k++) {
        workers[k].idx = k;
        if (pthread_create(&workers[k].thread, NULL, worker_main, &workers[k]) != 0) return 2;
    }
    pthread_barrier_wait(&ready);

    char tids[128], path[4200];
    int len = snprintf(tids, sizeof tids, "%d", gettid());
    for (int k = 0; k < WORKERS; k++) len += snprintf(tids + len, sizeof tids - len, " %d", workers[k].tid);
    snprintf(tids + len, sizeof tids - len, "\n");
    snprintf(path, sizeof path, "%s.tids", pidfile);
    if (write_file(path, tids) != 0) return 2;

    register uint64_t k12 asm("r12") = mix(900);
    register uint64_t k13 asm("r13") = mix(901);
    register uint64_t k14 asm("r14") = mix(902);
    register uint64_t k15 asm("r15") = mix(903);
    asm volatile("" : "+r"(k12), "+r"(k13), "+r"(k14), "+r"(k15));

    char pidtext[32];
    snprintf(pidtext, sizeof pidtext, "%d\n", pid);
    if (write_file(pidfile, pidtext) != 0) return 2;

    unsigned gen = 0;
    for (;;) {
        sleep_ms(50);
        asm volatile("" : "+r"(k12), "+r"(k13), "+r"(k14), "+r"(k15));
        fd = open(trigger, O_RDONLY);
        if (fd < 0) continue;
        char cmd[16] = {0};
        if (read(fd, cmd, sizeof cmd - 1) < 0) cmd[0] = 0;
        close(fd);
        unlink(trigger);
        int exiting = strncmp(cmd, "exit", 4) == 0;

        gen++;
        __atomic_store_n(&req_gen, gen, __ATOMIC_RELEASE);
        char why[400] = "";
        int ok = 1;
        if (k12 != mix(900) || k13 != mix(901) || k14 != mix(902) || k15 != mix(903)) {
            ok = 0;
            snprintf(why, sizeof why, "main: r12..r15 lost");
        }
        if (ok && (getpid() != pid || gettid() != pid)) {
            ok = 0;
            snprintf(why, sizeof why, "main: pid %d tid %d, expected %d", getpid(), gettid(), pid);
        }
        if (ok && !comm_ok(pid, main_comm, why, sizeof why)) ok = 0;
        if (ok && !mask_ok(WORKERS, why, sizeof why)) ok = 0;
        if (ok && tls_value != tls_of(WORKERS)) {
            ok = 0;
            snprintf(why, sizeof why, "main: __thread value lost");
        }
        /* Every worker answers after its current block; allow for a slow,
         * shared machine. */
        for (int k = 0; k < WORKERS; k++) {
            int waited = 0;
            while (__atomic_load_n(&workers[k].done_gen, __ATOMIC_ACQUIRE) != gen && waited < 30000) {
                sleep_ms(10);
                waited += 10;
            }
            if (!ok) continue;
            if (__atomic_load_n(&workers[k].done_gen, __ATOMIC_ACQUIRE) != gen) {
                ok = 0;
                snprintf(why, sizeof why, "t%d (tid %d) did not answer in 30 s", k, workers[k].tid);
            } else if (!workers[k].ok) {
                ok = 0;
                snprintf(why, sizeof why, "t%d (tid %d): %s", k, workers[k].tid, workers[k].reason);
            }
        }
        if (exiting || !ok) {
            __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
            for (int k = 0; k < WORKERS; k++) pthread_join(workers[k].thread, NULL);
        }
        verdict(ok, pid, why);
        if (exiting || !ok) return ok ? 0 : 1;
    }
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    if (open_log(argv[3]) != 0) return 2;
    __builtin_cpu_init();
    avx = __builtin_cpu_supports("avx");
    return run(argv[1], argv[2]);
}
