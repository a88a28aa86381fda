/* Pre-copy benchmark workload (bench/precopy.sh): writes chosen numbers
 * of pages on demand, or a steady one page per unit of CPU work, so the
 * bench can time pre-dump iterations and the cost of dirty tracking.
 *
 * usage: bench_dirty PIDFILE TRIGGER LOG ANSWER MIB [pace]
 *
 * Maps MIB MiB of private anonymous memory and writes a known 64-bit
 * pattern into every word (every page present and distinct), then
 * publishes its pid in PIDFILE. Keeps only the log LOG (O_APPEND) open;
 * every other fd above stderr is closed, and no signal handler is set,
 * so palisade and CRIU can checkpoint it as it is.
 *
 * Writes: the k-th write (k = 0, 1, ...) stores one word, word 0 of page
 * P(k), where P is a permutation of the pages (a bijective scramble of k
 * mod pages, by cycle-walking), so any run of up to `pages` consecutive
 * writes touches distinct pages spread over the whole region. The value
 * written is the pattern xor a mark of k, so the last write of each page
 * can be checked.
 *
 * The file TRIGGER is polled (every 2 ms when idle; in pace mode every
 * 16 units), read and deleted; each command answers by writing the file
 * ANSWER (written aside, then renamed in):
 *   dirty N   does the next N writes (N distinct pages) at once, then
 *             answers "dirty N writes=W"; idle otherwise, so exactly
 *             those pages (and the few of its stack) are written between
 *             two steps of the bench;
 *   count     answers "count UNITS MONO_NS CPU_NS ITERS": the units of
 *             work done so far (pace mode), CLOCK_MONOTONIC and this
 *             process's CPU time when counted, the loop iterations in a
 *             unit;
 *   check     replays every write so far and checks every word of the
 *             region: answers (and logs) "PASS pid writes=W" or "FAIL
 *             pid page P word I ...";
 *   exit      exits 0.
 * pace: loops over a fixed unit of CPU work (a dependent multiply-xorshift
 * chain in registers, calibrated at start to about 1 ms), then ONE write,
 * then counts the unit; the trigger is checked every 16 units. */
#define _GNU_SOURCE
#include "workload.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE_WORDS 512

static uint64_t *mem;
static uint64_t pages, mask;
static unsigned half;
static uint64_t writes; /* writes done */
static uint64_t units;  /* pace mode: units of work done */
static uint64_t iters;  /* pace mode: loop iterations per unit */

static uint64_t word(uint64_t i) { return i * 0x9e3779b97f4a7c15ULL ^ 0x5bd1e995u; }
static uint64_t mark(uint64_t k) { return (k + 1) * 0xd1b54a32d192ed03ULL; }

/* A bijection of [0, mask]: odd multiplies and xor-shifts, mod 2^bits. */
static uint64_t scramble(uint64_t x) {
    x = (x * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL) & mask;
    x ^= x >> half;
    x = (x * 0xbf58476d1ce4e5b9ULL) & mask;
    x ^= x >> half;
    return x;
}

/* The page of the k-th write: cycle-walking keeps scramble a bijection
 * of [0, pages). */
static uint64_t page_of(uint64_t k) {
    uint64_t x = scramble(k % pages);
    while (x >= pages) x = scramble(x);
    return x;
}

static void write_one(void) {
    uint64_t p = page_of(writes), i = p * PAGE_WORDS;
    mem[i] = word(i) ^ mark(writes);
    writes++;
}

static uint64_t ns(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t work(uint64_t n, uint64_t x) {
    for (uint64_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        x ^= x >> 29;
        __asm__ volatile("" : "+r"(x));
    }
    return x;
}

/* Iterations of `work` in about 1 ms: the fastest of a few 20 ms trials,
 * so a preempted trial does not shrink the unit. */
static uint64_t calibrate(void) {
    uint64_t n = 1 << 16, best = ~0ULL, x = 1;
    for (;;) {
        uint64_t t = ns(CLOCK_MONOTONIC);
        x = work(n, x);
        if (ns(CLOCK_MONOTONIC) - t >= 20000000ULL) break;
        n *= 2;
    }
    for (int trial = 0; trial < 5; trial++) {
        uint64_t t = ns(CLOCK_MONOTONIC);
        x = work(n, x);
        t = ns(CLOCK_MONOTONIC) - t;
        if (t < best) best = t;
    }
    __asm__ volatile("" : : "r"(x));
    return n * 1000000ULL / best;
}

/* Replays the writes (the last one of each page wins) and checks every
 * word; fills `why` on failure. */
static int check(char *why, size_t n) {
    uint64_t *last = mmap(NULL, pages * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (last == MAP_FAILED) {
        snprintf(why, n, "cannot map the replay table");
        return 0;
    }
    for (uint64_t k = 0; k < writes; k++) last[page_of(k)] = k + 1;
    int ok = 1;
    for (uint64_t p = 0; p < pages && ok; p++)
        for (uint64_t w = 0; w < PAGE_WORDS; w++) {
            uint64_t i = p * PAGE_WORDS + w;
            uint64_t want = word(i) ^ (w == 0 && last[p] ? mark(last[p] - 1) : 0);
            if (mem[i] != want) {
                snprintf(why, n, "page %llu word %llu is %#llx, not %#llx (writes=%llu)",
                         (unsigned long long)p, (unsigned long long)w, (unsigned long long)mem[i],
                         (unsigned long long)want, (unsigned long long)writes);
                ok = 0;
                break;
            }
        }
    munmap(last, pages * 8);
    if (ok) snprintf(why, n, "writes=%llu", (unsigned long long)writes);
    return ok;
}

/* Serves one trigger, if there is one; returns 1 on "exit". */
static int serve(const char *trigger, const char *answer) {
    char cmd[64], out[512], why[400];
    if (!take_file(trigger, cmd, sizeof cmd)) return 0;
    if (strncmp(cmd, "dirty ", 6) == 0) {
        uint64_t n = strtoull(cmd + 6, NULL, 10);
        for (uint64_t j = 0; j < n; j++) write_one();
        snprintf(out, sizeof out, "dirty %llu writes=%llu\n", (unsigned long long)n,
                 (unsigned long long)writes);
    } else if (strncmp(cmd, "count", 5) == 0) {
        snprintf(out, sizeof out, "count %llu %llu %llu %llu\n", (unsigned long long)units,
                 (unsigned long long)ns(CLOCK_MONOTONIC),
                 (unsigned long long)ns(CLOCK_PROCESS_CPUTIME_ID), (unsigned long long)iters);
    } else if (strncmp(cmd, "check", 5) == 0) {
        int ok = check(why, sizeof why);
        snprintf(out, sizeof out, "%s %d %s\n", ok ? "PASS" : "FAIL", getpid(), why);
        say(out);
    } else if (strncmp(cmd, "exit", 4) == 0) {
        return 1;
    } else {
        snprintf(out, sizeof out, "unknown command %s\n", cmd);
    }
    if (write_file(answer, out) != 0) _exit(3);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 6) return 2;
    const char *pidfile = argv[1], *trigger = argv[2], *answer = argv[4];
    int pace = argc > 6 && strcmp(argv[6], "pace") == 0;
    uint64_t bytes = (uint64_t)atoll(argv[5]) << 20;
    if (open_log(argv[3]) != 0 || bytes == 0) return 2;
    pages = bytes / 4096;
    unsigned bits = 1;
    while ((1ULL << bits) < pages) bits++;
    mask = (1ULL << bits) - 1;
    half = bits / 2 + 1;
    mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return 2;
    for (uint64_t i = 0; i < bytes / 8; i++) mem[i] = word(i);
    if (pace) iters = calibrate();

    char buf[32];
    snprintf(buf, sizeof buf, "%d\n", getpid());
    if (write_file(pidfile, buf) != 0) return 2;

    if (!pace)
        for (;;) {
            sleep_ms(2);
            if (serve(trigger, answer)) return 0;
        }
    for (uint64_t x = 1;;) {
        x = work(iters, x);
        write_one();
        units++;
        if (units % 16 == 0 && serve(trigger, answer)) return 0;
    }
}
