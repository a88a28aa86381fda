/* Incremental checkpoint workload: keeps rewriting random pages while
 * pre-dumps copy it, so a dirty page the tracker misses restores stale
 * memory and the next check says so.
 *
 * Protocol as memory.c: argv[1] pid file (written once set up), argv[2]
 * trigger polled every 50 ms, argv[3] log (O_APPEND). Then, in any order:
 *   MIB       size of the main region (default 64);
 *   rate=N    page writes per millisecond per writer (0 or absent: flat
 *             out, a cpu pause hint between pages); paced by spinning on
 *             CLOCK_MONOTONIC, since sleeps are too coarse below a ms;
 *   seed=N    seeds the writers' page choice (default 1);
 *   a comma list of modes: "mutate" (honour the "mutate" trigger), and,
 *   to prove the verifier can fail, "selftest-corrupt" (flip a byte),
 *   "selftest-stale" (a page keeps its old content while its version
 *   moves on: a missed dirty page), "selftest-rollback" (a page and its
 *   version both go back one write: page and version page both missed),
 *   "selftest-rewind" (log a write count above the real one: the whole
 *   process went back in time); each is done once, at the first check.
 * Trigger words and what they log:
 *   check   park the writers, verify, "PASS pid writes=N ..." or
 *           "FAIL pid why", let the writers go on;
 *   exit    the same, then exit 0 on PASS, 1 on FAIL;
 *   count   "WRITES N": page writes so far, writers left running;
 *   mutate  change the address space (below), then "MUTATED n".
 *
 * Memory: every 4 KiB page of a written region has a version (an array of
 * its own, mmapped beside it) and its content is a function of (region
 * salt, page index, version): word 0 the salt xor the index (a page at
 * the wrong address shows), word 1 the version (so a FAIL can say which
 * write it holds), the rest a xorshift stream seeded by all three. A
 * write is ++version, then the whole page rewritten, then ++ the
 * writer's own write counter. The main thread writes the even pages of
 * the main region and one thread the odd ones, so no page has two
 * writers.
 *
 * Stop points: ptrace may stop a writer at any instruction, mid-page, and
 * the final dump is taken there. That needs no tolerance in the check:
 * what the write still has to do (page, version, loop index, PRNG state)
 * is in the thread's registers and stack, restored with the memory, so
 * the restored writer finishes the page, from the restored half-written
 * page. The verifier runs only with every writer parked between two
 * writes (a handshake: `pausing` set, each writer acknowledges in
 * `parked`), where page, version and counter agree. So a check after
 * restore demands exact equality everywhere; a page the tracker missed is
 * either stale against its version, or (page and version page both
 * missed) leaves the versions of its writer's pages summing to less than
 * the writer's counter, or (counter page missed too) leaves the total
 * below a count already written to the log, which no checkpoint rewinds;
 * every check compares with the log's highest "WRITES N" / "writes=N".
 *
 * Setup also maps a 2 MiB region at a fixed address (region 0) and grows
 * the heap by sbrk, both written once. mutate, each time (n = 1, 2, ...):
 * maps region n, at a fixed address never used before, and writes it;
 * unmaps region n-1 (so the range a parent image still holds must stay
 * unmapped, and the check demands it); grows the heap by sbrk and writes
 * the new part (the check demands the break unmoved); starts one more
 * writer thread (up to 8 more), on a stack of its own, rewriting a 4 MiB
 * region of its own like the main one; and (up to 7 times) moves a spare
 * 2 MiB region, mapped and written at setup, with mremap(MREMAP_FIXED)
 * onto the range of spare 0, whose content it replaces: the same range,
 * size and protection, still write-protected by the tracker if it was,
 * and other content (the check demands spare n's salt there, and spare
 * n's own range unmapped). A tracker that misses the move keeps the old
 * content's copies for that range, and the restore fails the check.
 *
 * Checkpointable as it is: no shared mappings, no signal handlers, no fd
 * kept but the log (the trigger, and the log read back during a check,
 * are opened only for a moment); no malloc after setup beyond
 * pthread_create's own. */
#define _GNU_SOURCE
#include "workload.h"
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define WORDS (PAGE / 8)
#define MAX_EXTRA 8
#define MAX_WRITERS (2 + MAX_EXTRA)
#define MAX_MUTATIONS 200
#define STILL_BYTES (2 << 20)
#define OWN_BYTES (4 << 20)
#define BRK_BYTES (256 << 10)
#define STACK_BYTES (256 << 10)
/* Far below where the kernel places mmap(NULL): these addresses are ours,
 * so an unmapped one must stay unmapped. */
#define MUTATE_BASE 0x300000000000UL
#define MUTATE_STEP (16UL << 20)
/* Spare regions for the moves (mutate), fixed addresses. */
#define SPARES 8
#define SPARE_BASE 0x380000000000UL
/* Counted in 1 ms sleeps, not wall time: after a restore the clock has
 * jumped but the writers have not yet run. */
#define PARK_POLLS 5000
#define POLL_NS (50 * 1000 * 1000ULL)

static char reason[400];
#define FAIL(...) do { snprintf(reason, sizeof reason, __VA_ARGS__); return 0; } while (0)

/* Pages rewritten over and over, each with a version. */
struct region {
    char name[16];
    uint64_t *mem, *ver;
    size_t pages;
    uint64_t salt;
};

/* A writer owns the pages first, first+stride, ... of its region. */
struct writer {
    struct region *r;
    size_t first, stride;
    uint64_t rng, next_ns;
    uint64_t writes; /* read by "count" while running: atomic */
    int parked;      /* atomic */
} __attribute__((aligned(64)));

/* Memory written once (mutate's regions, brk chunks). */
struct still {
    uint64_t *addr;
    size_t bytes;
    uint64_t salt;
    int live;
};

static struct region regions[1 + MAX_EXTRA];
static int nregions;
static struct writer writers[MAX_WRITERS];
static int nwriters; /* writers[0] is the main thread */
static struct still stills[MAX_MUTATIONS], chunks[MAX_MUTATIONS];
/* spares[0] holds whichever spare was moved onto it last (its salt). */
static struct still spares[SPARES];
static int mutations, nchunks;
static void *brk_end;
static int pausing;
static uint64_t rate, seed = 1;
static char modes[256];
static const char *log_path;

static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static uint64_t stream_seed(uint64_t salt, size_t p, uint64_t v) {
    return mix(salt ^ mix(p * 0x100000001b3ULL + v)) | 1;
}

static void fill_page(uint64_t *pg, uint64_t salt, size_t p, uint64_t v) {
    uint64_t s = stream_seed(salt, p, v);
    pg[0] = salt ^ p;
    pg[1] = v;
    for (size_t i = 2; i < WORDS; i++) pg[i] = xorshift(&s);
}

/* The first word of page `p` that is not what (salt, p, v) makes, or -1. */
static long page_differs(const uint64_t *pg, uint64_t salt, size_t p, uint64_t v) {
    if (pg[0] != (salt ^ p)) return 0;
    if (pg[1] != v) return 1;
    uint64_t s = stream_seed(salt, p, v);
    for (size_t i = 2; i < WORDS; i++)
        if (pg[i] != xorshift(&s)) return (long)i;
    return -1;
}

static uint64_t mono_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static int mapped(const void *addr, size_t bytes) {
    return msync((void *)addr, bytes, MS_ASYNC) == 0;
}

static void *map_anon(void *at, size_t bytes) {
    void *p = mmap(at, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | (at ? MAP_FIXED_NOREPLACE : 0), -1, 0);
    return p == MAP_FAILED || (at && p != at) ? NULL : p;
}

/* ---- writing ---- */

static void write_page_at(struct writer *w, size_t p) {
    struct region *r = w->r;
    uint64_t v = ++r->ver[p];
    fill_page(r->mem + p * WORDS, r->salt, p, v);
    __atomic_store_n(&w->writes, w->writes + 1, __ATOMIC_RELAXED);
}

static size_t pick_page(struct writer *w) {
    size_t share = (w->r->pages - w->first + w->stride - 1) / w->stride;
    uint64_t x = w->rng;
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    w->rng = x;
    return w->first + w->stride * ((x * 0x2545f4914f6cdd1dULL >> 11) % share);
}

/* Holds the writer to `rate` pages a ms. After a stop (a checkpoint, a
 * check) it starts afresh rather than catching up in a burst, and so it
 * does if the clock went back (restored under another boot's clock). */
static void pace(struct writer *w) {
    if (rate == 0) {
        for (int i = 0; i < 8; i++) __builtin_ia32_pause();
        return;
    }
    uint64_t now = mono_ns();
    w->next_ns += 1000000 / rate;
    if (now > w->next_ns + 10000000 || w->next_ns > now + 10000000) w->next_ns = now;
    while (now < w->next_ns) {
        __builtin_ia32_pause();
        now = mono_ns();
    }
}

/* Between two writes: the one safe point, where page, version and
 * counter agree. */
static void park(struct writer *w) {
    __atomic_store_n(&w->parked, 1, __ATOMIC_RELEASE);
    while (__atomic_load_n(&pausing, __ATOMIC_ACQUIRE)) sleep_ms(1);
    __atomic_store_n(&w->parked, 0, __ATOMIC_RELEASE);
}

static void *writer_loop(void *arg) {
    struct writer *w = arg;
    for (;;) {
        if (__atomic_load_n(&pausing, __ATOMIC_ACQUIRE)) park(w);
        write_page_at(w, pick_page(w));
        pace(w);
    }
    return NULL;
}

/* Waits until every thread writer's `parked` is `want`. */
static int await_parked(int want) {
    for (int i = 1; i < nwriters; i++) {
        int polls = 0;
        while (__atomic_load_n(&writers[i].parked, __ATOMIC_ACQUIRE) != want) {
            if (++polls > PARK_POLLS) FAIL("writer %d never %s", i, want ? "parked" : "resumed");
            sleep_ms(1);
        }
    }
    return 1;
}

static int pause_writers(void) {
    __atomic_store_n(&pausing, 1, __ATOMIC_RELEASE);
    return await_parked(1);
}

static void resume_writers(void) {
    __atomic_store_n(&pausing, 0, __ATOMIC_RELEASE);
    char keep[sizeof reason];
    memcpy(keep, reason, sizeof keep); /* a resume timeout must not hide the verdict */
    await_parked(0);
    memcpy(reason, keep, sizeof keep);
}

static uint64_t total_writes(void) {
    uint64_t n = 0;
    for (int i = 0; i < nwriters; i++) n += __atomic_load_n(&writers[i].writes, __ATOMIC_RELAXED);
    return n;
}

/* ---- setting up ---- */

static struct region *new_region(const char *name, size_t bytes, uint64_t salt) {
    struct region *r = &regions[nregions];
    r->pages = bytes / PAGE;
    r->mem = map_anon(NULL, bytes);
    r->ver = map_anon(NULL, (r->pages * 8 + PAGE - 1) / PAGE * PAGE);
    if (!r->mem || !r->ver) return NULL;
    snprintf(r->name, sizeof r->name, "%s", name);
    r->salt = salt;
    for (size_t p = 0; p < r->pages; p++) fill_page(r->mem + p * WORDS, salt, p, 0);
    nregions++;
    return r;
}

static struct writer *add_writer(struct region *r, size_t first, size_t stride) {
    struct writer *w = &writers[nwriters];
    w->r = r;
    w->first = first;
    w->stride = stride;
    w->rng = mix(seed * 0x9e3779b97f4a7c15ULL + (uint64_t)nwriters) | 1;
    w->next_ns = mono_ns();
    return w;
}

/* Starts a thread on `w` (the next slot), on a stack mapped here. */
static int start_writer(struct writer *w) {
    void *stack = map_anon(NULL, STACK_BYTES);
    pthread_attr_t a;
    pthread_t t;
    if (!stack || pthread_attr_init(&a) != 0 || pthread_attr_setstack(&a, stack, STACK_BYTES) != 0 ||
        pthread_create(&t, &a, writer_loop, w) != 0)
        FAIL("cannot start writer %d", nwriters);
    pthread_attr_destroy(&a);
    nwriters++;
    return 1;
}

/* ---- mutate ---- */

static void fill_still(const struct still *s) {
    for (size_t p = 0; p < s->bytes / PAGE; p++) fill_page(s->addr + p * WORDS, s->salt, p, 0);
}

static int map_still(int n) {
    struct still *s = &stills[n];
    s->bytes = STILL_BYTES;
    s->salt = 0x5717000000000000ULL + (uint64_t)n;
    s->addr = map_anon((void *)(MUTATE_BASE + (uint64_t)n * MUTATE_STEP), STILL_BYTES);
    if (!s->addr) FAIL("mutate %d: mmap at %#lx: %s", n, MUTATE_BASE + n * MUTATE_STEP, strerror(errno));
    fill_still(s);
    s->live = 1;
    return 1;
}

static int grow_brk(int n) {
    char *old = sbrk(BRK_BYTES + PAGE);
    if (old == (void *)-1) FAIL("mutate %d: sbrk: %s", n, strerror(errno));
    struct still *c = &chunks[nchunks++];
    c->addr = (uint64_t *)(((uintptr_t)old + PAGE - 1) & ~(uintptr_t)(PAGE - 1));
    c->bytes = BRK_BYTES;
    c->salt = 0xb4c0000000000000ULL + (uint64_t)n;
    c->live = 1;
    fill_still(c);
    return 1;
}

static int map_spares(void) {
    for (int k = 0; k < SPARES; k++) {
        struct still *s = &spares[k];
        s->bytes = STILL_BYTES;
        s->salt = 0x5a4e000000000000ULL + (uint64_t)k;
        s->addr = map_anon((void *)(SPARE_BASE + (uint64_t)k * MUTATE_STEP), STILL_BYTES);
        if (!s->addr) FAIL("spare %d: mmap: %s", k, strerror(errno));
        fill_still(s);
        s->live = 1;
    }
    return 1;
}

static int move_spare(int n) {
    if (n >= SPARES) return 1;
    struct still *from = &spares[n], *to = &spares[0];
    void *at = mremap(from->addr, from->bytes, to->bytes, MREMAP_MAYMOVE | MREMAP_FIXED, to->addr);
    if (at == MAP_FAILED) FAIL("mutate %d: mremap of spare %d: %s", n, n, strerror(errno));
    to->salt = from->salt;
    from->live = 0;
    return 1;
}

static int mutate(void) {
    int n = mutations + 1;
    if (n >= MAX_MUTATIONS) FAIL("mutate: at most %d", MAX_MUTATIONS - 1);
    if (!map_still(n)) return 0;
    mutations = n;
    struct still *old = &stills[n - 1];
    if (munmap(old->addr, old->bytes) != 0) FAIL("mutate %d: munmap: %s", n, strerror(errno));
    old->live = 0;
    if (nwriters < MAX_WRITERS) {
        char name[16];
        snprintf(name, sizeof name, "own%d", nwriters);
        struct region *r = new_region(name, OWN_BYTES, 0x0e1e000000000000ULL + (uint64_t)nwriters);
        if (!r) FAIL("mutate %d: mmap: %s", n, strerror(errno));
        if (!start_writer(add_writer(r, 0, 1))) return 0;
    }
    if (!move_spare(n)) return 0;
    /* After pthread_create, whose malloc may have moved the break. */
    if (!grow_brk(n)) return 0;
    brk_end = sbrk(0);
    return 1;
}

/* ---- checking ---- */

static int check_region(const struct region *r) {
    if (!mapped(r->mem, r->pages * PAGE) || !mapped(r->ver, r->pages * 8))
        FAIL("region %s at %p is no longer mapped", r->name, (void *)r->mem);
    size_t bad = 0, first = 0;
    long word = -1;
    for (size_t p = 0; p < r->pages; p++) {
        long d = page_differs(r->mem + p * WORDS, r->salt, p, r->ver[p]);
        if (d < 0) continue;
        if (bad++ == 0) first = p, word = d;
    }
    if (bad)
        FAIL("region %s: %zu of %zu pages wrong; page %zu word %ld: it holds version %llu, versions[] says %llu",
             r->name, bad, r->pages, first, word, (unsigned long long)r->mem[first * WORDS + 1],
             (unsigned long long)r->ver[first]);
    return 1;
}

/* Each writer's pages' versions add up to its own count of writes. */
static int check_sums(void) {
    for (int i = 0; i < nwriters; i++) {
        const struct writer *w = &writers[i];
        uint64_t sum = 0;
        for (size_t p = w->first; p < w->r->pages; p += w->stride) sum += w->r->ver[p];
        if (sum != w->writes)
            FAIL("writer %d: its pages' versions add up to %llu, it counted %llu writes", i,
                 (unsigned long long)sum, (unsigned long long)w->writes);
    }
    return 1;
}

static int check_still(const struct still *s, const char *what, int n) {
    if (!s->live) {
        if (mapped(s->addr, PAGE)) FAIL("%s %d at %p was unmapped, is mapped again", what, n, (void *)s->addr);
        return 1;
    }
    if (!mapped(s->addr, s->bytes)) FAIL("%s %d at %p is no longer mapped", what, n, (void *)s->addr);
    for (size_t p = 0; p < s->bytes / PAGE; p++) {
        long d = page_differs(s->addr + p * WORDS, s->salt, p, 0);
        if (d >= 0) FAIL("%s %d at %p: page %zu word %ld differs", what, n, (void *)s->addr, p, d);
    }
    return 1;
}

static int check_mutations(void) {
    for (int n = 0; n <= mutations; n++)
        if (!check_still(&stills[n], "mutate region", n)) return 0;
    for (int i = 0; i < nchunks; i++)
        if (!check_still(&chunks[i], "brk chunk", i)) return 0;
    if (has_word(modes, "mutate"))
        for (int k = 0; k < SPARES; k++)
            if (!check_still(&spares[k], "spare", k)) return 0;
    if (sbrk(0) != brk_end) FAIL("the break is %p, expected %p", sbrk(0), brk_end);
    return 1;
}

/* The highest write count in one log line ("WRITES N" or "... writes=N"). */
static uint64_t line_count(char *line) {
    if (!strncmp(line, "WRITES ", 7)) return strtoull(line + 7, NULL, 10);
    char *w = strstr(line, " writes=");
    return w ? strtoull(w + 8, NULL, 10) : 0;
}

/* The highest write count the log holds: the log is a file, outside what
 * a checkpoint restores, so the total must never be below it. */
static uint64_t logged_writes(void) {
    static char buf[65536 + 1];
    int fd = open(log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    uint64_t best = 0;
    size_t have = 0;
    ssize_t n;
    while ((n = read(fd, buf + have, sizeof buf - 1 - have)) > 0) {
        have += (size_t)n;
        char *s = buf, *nl;
        while ((nl = memchr(s, '\n', have - (size_t)(s - buf)))) {
            *nl = 0;
            uint64_t c = line_count(s);
            if (c > best) best = c;
            s = nl + 1;
        }
        have -= (size_t)(s - buf);
        memmove(buf, s, have);
        if (have == sizeof buf - 1) have = 0; /* no line is that long: skip it */
    }
    close(fd);
    return best;
}

static int check_witness(void) {
    uint64_t logged = logged_writes(), now = total_writes();
    if (now < logged)
        FAIL("%llu page writes done, but the log already reported %llu: memory went back in time",
             (unsigned long long)now, (unsigned long long)logged);
    return 1;
}

/* The damage each selftest mode does, to the main thread's pages. */
static void selftest_damage(void) {
    static int done;
    if (done++) return;
    struct writer *w = &writers[0];
    struct region *r = w->r;
    size_t p = pick_page(w);
    if (has_word(modes, "selftest-corrupt")) ((volatile char *)(r->mem + p * WORDS))[w->rng % PAGE] ^= 1;
    if (has_word(modes, "selftest-stale")) {
        r->ver[p]++;
        w->writes++;
    }
    /* As if a write's page and version were both lost. */
    if (has_word(modes, "selftest-rollback")) w->writes++;
    if (has_word(modes, "selftest-rewind")) {
        char line[64];
        snprintf(line, sizeof line, "WRITES %llu\n", (unsigned long long)total_writes() + 1000000000ULL);
        say(line);
    }
}

static int check_all(void) {
    int ok = pause_writers();
    if (ok) {
        selftest_damage();
        for (int i = 0; ok && i < nregions; i++) ok = check_region(&regions[i]);
        ok = ok && check_sums() && check_mutations() && check_witness();
    }
    if (ok) {
        snprintf(reason, sizeof reason, "writes=%llu regions=%d writers=%d mutations=%d",
                 (unsigned long long)total_writes(), nregions, nwriters, mutations);
    }
    resume_writers();
    return ok;
}

/* ---- main ---- */

/* Acts on a trigger; returns the exit code, or -1 to go on. */
static int obey(const char *cmd) {
    char line[64];
    if (!strncmp(cmd, "count", 5)) {
        snprintf(line, sizeof line, "WRITES %llu\n", (unsigned long long)total_writes());
        say(line);
    } else if (!strncmp(cmd, "mutate", 6)) {
        reason[0] = 0;
        if (!has_word(modes, "mutate")) {
            verdict(0, getpid(), "mutate asked without mode mutate");
        } else if (!mutate()) {
            verdict(0, getpid(), reason);
        } else {
            snprintf(line, sizeof line, "MUTATED %d\n", mutations);
            say(line);
        }
    } else {
        reason[0] = 0;
        int ok = check_all();
        verdict(ok, getpid(), reason);
        if (!strncmp(cmd, "exit", 4)) return ok ? 0 : 1;
    }
    return -1;
}

/* The main thread is writer 0; between pages it looks for the trigger. */
static int serve(const char *pid_path, const char *trigger) {
    char buf[32];
    snprintf(buf, sizeof buf, "%d\n", getpid());
    if (write_file(pid_path, buf) != 0) return 2;
    uint64_t next_poll = 0;
    for (;;) {
        write_page_at(&writers[0], pick_page(&writers[0]));
        pace(&writers[0]);
        uint64_t now = mono_ns();
        if (now < next_poll && next_poll - now <= POLL_NS) continue; /* (or the clock went back) */
        next_poll = now + POLL_NS;
        char cmd[16];
        if (!take_file(trigger, cmd, sizeof cmd)) continue;
        int code = obey(cmd);
        if (code >= 0) return code;
        writers[0].next_ns = mono_ns();
    }
}

static int known_mode(const char *w) {
    static const char *const known[] = {"mutate", "selftest-corrupt", "selftest-stale",
                                        "selftest-rollback", "selftest-rewind"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (!strcmp(w, known[i])) return 1;
    return 0;
}

/* MIB, rate=N, seed=N and mode words; -1 on anything else. */
static long parse_args(int argc, char **argv) {
    long mib = 64;
    for (int i = 4; i < argc; i++) {
        if (isdigit((unsigned char)argv[i][0])) {
            mib = atol(argv[i]);
            continue;
        }
        char list[256], *save = NULL;
        snprintf(list, sizeof list, "%s", argv[i]);
        for (char *w = strtok_r(list, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
            if (!strncmp(w, "rate=", 5)) rate = strtoull(w + 5, NULL, 10);
            else if (!strncmp(w, "seed=", 5)) seed = strtoull(w + 5, NULL, 10);
            else if (known_mode(w) && strlen(modes) + strlen(w) + 2 < sizeof modes)
                strcat(strcat(modes, ","), w);
            else return -1;
        }
    }
    return mib;
}

int main(int argc, char **argv) {
    if (argc < 4 || open_log(argv[3]) != 0) return 2;
    log_path = argv[3];
    long mib = parse_args(argc, argv);
    if (mib < 1) return 2;
    struct region *main_region = new_region("main", (size_t)mib << 20, 0x3a17000000000000ULL);
    if (!main_region) return 2;
    add_writer(main_region, 0, 2);
    nwriters = 1;
    if (!start_writer(add_writer(main_region, 1, 2)) || !map_still(0) || !grow_brk(0)) return 2;
    if (has_word(modes, "mutate") && !map_spares()) return 2;
    brk_end = sbrk(0);
    return serve(argv[1], argv[2]);
}
