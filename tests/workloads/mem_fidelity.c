/* Checkpoint/restore workload for memory state the engine must keep.
 * argv[4] is a comma-separated list of what to set up before publishing
 * the pid in argv[1]; each time the trigger file argv[2] appears it
 * verifies all of it and appends "PASS pid" or "FAIL pid reason" to the
 * log argv[3] (and exits, 0 on PASS, when the trigger said "exit"):
 *   protnone  - 16 private pages of a pattern made PROT_NONE (and 4 made
 *               PROT_WRITE|PROT_EXEC-less, i.e. PROT_NONE after a write);
 *   zeroshm   - a MAP_SHARED mapping of /dev/zero with a pattern, PROT_NONE;
 *   maywrite  - a read-only MAP_SHARED mapping of a file opened O_RDWR,
 *               whose fd is closed: it can still be made writable;
 *   advice    - regions with MADV_DONTFORK, MADV_WIPEONFORK, MADV_DONTDUMP
 *               and MADV_HUGEPAGE (checked in /proc/self/smaps);
 *   mlock     - a locked page (to be refused at checkpoint). */
#define _GNU_SOURCE
#include "workload.h"
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static char reason[300];
#define FAIL(...) do { snprintf(reason, sizeof reason, __VA_ARGS__); return 0; } while (0)
#define PAGE 4096


static uint64_t word(size_t i, uint64_t salt) { return (uint64_t)i * 0x9e3779b97f4a7c15ULL ^ salt; }

static void fill(uint64_t *p, size_t bytes, uint64_t salt) {
    for (size_t i = 0; i < bytes / 8; i++) p[i] = word(i, salt);
}

static int same(const uint64_t *p, size_t bytes, uint64_t salt) {
    for (size_t i = 0; i < bytes / 8; i++)
        if (p[i] != word(i, salt)) return 0;
    return 1;
}

/* ---- protnone ---- */
static uint64_t *none_pages;
static int setup_protnone(void) {
    none_pages = mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (none_pages == MAP_FAILED) return 0;
    fill(none_pages, 16 * PAGE, 0x1111);
    return mprotect(none_pages, 16 * PAGE, PROT_NONE) == 0;
}
static int check_protnone(void) {
    if (mprotect(none_pages, 16 * PAGE, PROT_READ) != 0) FAIL("mprotect read: %s", strerror(errno));
    int ok = same(none_pages, 16 * PAGE, 0x1111);
    mprotect(none_pages, 16 * PAGE, PROT_NONE);
    if (!ok) FAIL("PROT_NONE data changed");
    return 1;
}

/* ---- zeroshm ---- */
static uint64_t *zero_shm;
static int setup_zeroshm(void) {
    int fd = open("/dev/zero", O_RDWR);
    if (fd < 0) return 0;
    zero_shm = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (zero_shm == MAP_FAILED) return 0;
    fill(zero_shm, 4 * PAGE, 0x2222);
    return mprotect(zero_shm, 4 * PAGE, PROT_NONE) == 0;
}
static int check_zeroshm(void) {
    if (mprotect(zero_shm, 4 * PAGE, PROT_READ | PROT_WRITE) != 0) FAIL("mprotect: %s", strerror(errno));
    int ok = same(zero_shm, 4 * PAGE, 0x2222);
    mprotect(zero_shm, 4 * PAGE, PROT_NONE);
    if (!ok) FAIL("shared /dev/zero data changed");
    return 1;
}

/* ---- maywrite ---- */
static char *rw_map;
static int setup_maywrite(void) {
    int fd = open("maywrite.dat", O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, "abcdefgh", 8) != 8 || ftruncate(fd, PAGE) != 0) return 0;
    rw_map = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    return rw_map != MAP_FAILED;
}
static int check_maywrite(void) {
    if (memcmp(rw_map, "abcdefgh", 8) != 0) FAIL("maywrite contents");
    if (mprotect(rw_map, PAGE, PROT_READ | PROT_WRITE) != 0)
        FAIL("cannot make the shared mapping writable again: %s", strerror(errno));
    rw_map[0] = 'a';
    mprotect(rw_map, PAGE, PROT_READ);
    return 1;
}

/* ---- advice ---- */
static char *adv[4];
static const int advices[4] = {MADV_DONTFORK, MADV_WIPEONFORK, MADV_DONTDUMP, MADV_HUGEPAGE};
static const char *adv_flags[4] = {" dc", " wf", " dd", " hg"};
static int setup_advice(void) {
    for (int i = 0; i < 4; i++) {
        adv[i] = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (adv[i] == MAP_FAILED || madvise(adv[i], 4 * PAGE, advices[i]) != 0) return 0;
        adv[i][0] = (char)i;
    }
    return 1;
}
static int check_advice(void) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) FAIL("smaps");
    char line[512];
    int cur = -1, seen = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long start;
        if (sscanf(line, "%lx-", &start) == 1 && strchr(line, ' ') && !strstr(line, "kB")) {
            cur = -1;
            for (int i = 0; i < 4; i++)
                if ((unsigned long)adv[i] == start) cur = i;
        } else if (cur >= 0 && !strncmp(line, "VmFlags:", 8)) {
            if (!strstr(line, adv_flags[cur])) {
                fclose(f);
                FAIL("region %d lost%s: %.200s", cur, adv_flags[cur], line);
            }
            seen++;
        }
    }
    fclose(f);
    if (seen != 4) FAIL("found %d of the 4 advised regions", seen);
    for (int i = 0; i < 4; i++)
        if (adv[i][0] != (char)i) FAIL("advised region %d data", i);
    return 1;
}

/* ---- mlock ---- */
static char *locked;
static int setup_mlock(void) {
    locked = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return locked != MAP_FAILED && mlock(locked, PAGE) == 0;
}

static const char *mode;

/* Every check of what `mode` set up. */
static int check_all(void) {
    int ok = 1;
    if (ok && has_word(mode, "protnone")) ok = check_protnone();
    if (ok && has_word(mode, "zeroshm")) ok = check_zeroshm();
    if (ok && has_word(mode, "maywrite")) ok = check_maywrite();
    if (ok && has_word(mode, "advice")) ok = check_advice();
    return ok;
}

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    mode = argv[4];
    char *dir = dirname(strdup(argv[1]));
    if (open_log(argv[3]) != 0 || chdir(dir) != 0) return 2;
    if (has_word(mode, "protnone") && !setup_protnone()) return 3;
    if (has_word(mode, "zeroshm") && !setup_zeroshm()) return 3;
    if (has_word(mode, "maywrite") && !setup_maywrite()) return 3;
    if (has_word(mode, "advice") && !setup_advice()) return 3;
    if (has_word(mode, "mlock") && !setup_mlock()) return 3;
    return serve_checks(argv[1], argv[2], check_all, reason);
}
