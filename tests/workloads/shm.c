/* Checkpoint/restore workload for memory shared between processes: before
 * forking one child, the parent maps 1 MiB MAP_SHARED|MAP_ANONYMOUS (page 0
 * a control page, the rest a known pattern) and 256 KiB of private anonymous
 * memory (another pattern), which the child inherits copy-on-write; neither
 * writes either until the first verify, so at a first checkpoint the private
 * pages are still the same frames in both.
 *
 * Protocol as tree.c: argv[1].pids ("parent child") then the pid file
 * argv[1] (written aside, then renamed); the log argv[3] opened O_APPEND
 * before the fork and shared; on the trigger argv[2] (polled every 50 ms)
 * the parent deletes it and passes "CMD GEN" to the child in argv[2].0.
 * Both check the shared pattern, their private copy, and that
 * /proc/self/maps still shows the one shared and the other private. Then,
 * through the shared control page: the child rewrites its private copy and
 * announces GEN; the parent, having seen that, checks its private copy did
 * not change, rewrites its own and publishes a magic word for GEN, which
 * the child must see within 2 s, its private copy still its own. Each
 * appends "PASS pid" or "FAIL pid reason" to the log; the child answers in
 * argv[2].0.done, and the parent logs after it. On "exit" the child exits,
 * and the parent reaps it (exit 0 wanted) and exits 0. On FAIL the parent
 * kills the child by pid and exits 1; a child whose parent is gone logs
 * FAIL and exits. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "workload.h"

#define SHM_BYTES (1 << 20)
#define CTL_BYTES 4096
#define PRIV_BYTES (256 << 10)
#define MAGIC 0x5eed0000u
#define SHARED_SEED 31
#define FIRST_PRIV_SEED 41

/* The shared mapping's control page. */
struct ctl {
    uint32_t child_wrote; /* GEN: the child has rewritten its private copy */
    uint32_t magic;       /* MAGIC + GEN: the parent's word for the child */
};

static const char *trigger;
static uint8_t *shm, *priv;
static struct ctl *ctl;
static uint8_t priv_seed = FIRST_PRIV_SEED; /* what this process's private copy holds */

static uint8_t pattern(uintptr_t i, uint8_t seed) { return (uint8_t)(i * 131 + seed + (i >> 12)); }

static void fill(uint8_t *p, size_t n, uint8_t seed) {
    for (size_t i = 0; i < n; i++) p[i] = pattern(i, seed);
}

static int check_buf(const uint8_t *p, size_t n, uint8_t seed, const char *what, char *why, size_t wn) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern(i, seed)) {
            snprintf(why, wn, "%s byte %zu is %u, expected %u (seed %u)", what, i, p[i], pattern(i, seed), seed);
            return 0;
        }
    return 1;
}

/* The mapping at `addr` is listed in /proc/self/maps with 's' (shared) or
 * 'p' (private) as `kind`. */
static int check_maps(const void *addr, char kind, const char *what, char *why, size_t wn) {
    static char maps[1 << 16];
    int fd = open("/proc/self/maps", O_RDONLY);
    if (fd < 0) {
        snprintf(why, wn, "cannot open /proc/self/maps");
        return 0;
    }
    size_t len = 0;
    ssize_t r;
    while (len < sizeof maps - 1 && (r = read(fd, maps + len, sizeof maps - 1 - len)) > 0) len += r;
    close(fd);
    maps[len] = 0;
    char start[32];
    snprintf(start, sizeof start, "%lx-", (unsigned long)(uintptr_t)addr);
    for (char *line = maps; *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : line + strlen(line)) {
        if (strncmp(line, start, strlen(start)) != 0) continue;
        char *perms = strchr(line, ' ');
        if (perms && perms[4] == kind) return 1;
        snprintf(why, wn, "%s at %p is not '%c' in /proc/self/maps: %.60s", what, addr, kind, line);
        return 0;
    }
    snprintf(why, wn, "%s at %p is not in /proc/self/maps", what, addr);
    return 0;
}

/* What both processes check first. */
static int check_memory(char *why, size_t wn) {
    return check_buf(shm + CTL_BYTES, SHM_BYTES - CTL_BYTES, SHARED_SEED, "shared", why, wn) &&
           check_buf(priv, PRIV_BYTES, priv_seed, "private", why, wn) &&
           check_maps(shm, 's', "shared mapping", why, wn) && check_maps(priv, 'p', "private mapping", why, wn);
}

/* Waits up to `ms` for the control word to read `want`. */
static int await_word(const uint32_t *word, uint32_t want, long ms) {
    for (long waited = 0; waited < ms; waited += 5) {
        if (__atomic_load_n(word, __ATOMIC_ACQUIRE) == want) return 1;
        sleep_ms(5);
    }
    return __atomic_load_n(word, __ATOMIC_ACQUIRE) == want;
}

static int child_loop(pid_t parent) {
    pid_t me = getpid();
    char path[4200], done[4200];
    snprintf(path, sizeof path, "%s.0", trigger);
    snprintf(done, sizeof done, "%s.0.done", trigger);
    for (;;) {
        sleep_ms(50);
        char why[300] = "", line[400], cmd[32];
        if (getppid() != parent) {
            snprintf(line, sizeof line, "FAIL %d child: parent %d is gone (ppid is %d)\n", me, parent, getppid());
            say(line);
            return 1;
        }
        if (!take_file(path, cmd, sizeof cmd)) continue;
        int exiting = strncmp(cmd, "exit", 4) == 0;
        char *sp = strchr(cmd, ' ');
        uint32_t gen = sp ? (uint32_t)strtoul(sp + 1, NULL, 10) : 0;
        int ok = 1;
        if (getpid() != me) {
            ok = 0;
            snprintf(why, sizeof why, "pid is %d, expected %d", getpid(), me);
        }
        ok = ok && check_memory(why, sizeof why);
        if (ok) {
            /* Our private copy changes; the parent must not see it. */
            priv_seed = (uint8_t)(100 + gen);
            fill(priv, PRIV_BYTES, priv_seed);
            __atomic_store_n(&ctl->child_wrote, gen, __ATOMIC_RELEASE);
            if (!await_word(&ctl->magic, MAGIC + gen, 2000)) {
                ok = 0;
                snprintf(why, sizeof why, "the parent's word %#x never appeared in shared memory (it reads %#x)",
                         MAGIC + gen, __atomic_load_n(&ctl->magic, __ATOMIC_ACQUIRE));
            }
        }
        /* The parent rewrote its private copy before its word: not here. */
        ok = ok && check_buf(priv, PRIV_BYTES, priv_seed, "private after the parent's write", why, sizeof why);
        snprintf(line, sizeof line, "%s %d %s%s\n", ok ? "PASS" : "FAIL", me, ok ? "" : "child: ", why);
        say(line);
        snprintf(line, sizeof line, "%s %s", ok ? "PASS" : "FAIL", why);
        if (write_file(done, line) != 0) return 2;
        if (exiting || !ok) return ok ? 0 : 1;
    }
}

/* By pid, and only a child not reaped yet (0: reaped). */
static void kill_child(pid_t child) {
    if (child <= 0) return;
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
}

static int run(const char *pidfile) {
    shm = mmap(NULL, SHM_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    priv = mmap(NULL, PRIV_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED || priv == MAP_FAILED) return 2;
    ctl = (struct ctl *)shm;
    fill(shm + CTL_BYTES, SHM_BYTES - CTL_BYTES, SHARED_SEED);
    fill(priv, PRIV_BYTES, priv_seed);

    pid_t me = getpid();
    pid_t child = fork();
    if (child < 0) return 2;
    if (child == 0) _exit(child_loop(me));

    char text[64], path[4200];
    snprintf(text, sizeof text, "%d %d\n", me, child);
    snprintf(path, sizeof path, "%s.pids", pidfile);
    if (write_file(path, text) != 0) {
        kill_child(child);
        return 2;
    }
    snprintf(text, sizeof text, "%d\n", me);
    if (write_file(pidfile, text) != 0) {
        kill_child(child);
        return 2;
    }

    for (uint32_t gen = 1;; gen++) {
        char cmd[16];
        while (sleep_ms(50), !take_file(trigger, cmd, sizeof cmd)) {}
        int exiting = strncmp(cmd, "exit", 4) == 0;
        snprintf(path, sizeof path, "%s.0", trigger);
        snprintf(text, sizeof text, "%s %u", exiting ? "exit" : "check", gen);
        if (write_file(path, text) != 0) {
            kill_child(child);
            return 2;
        }
        char why[400] = "";
        int ok = 1;
        if (getpid() != me) {
            ok = 0;
            snprintf(why, sizeof why, "pid is %d, expected %d", getpid(), me);
        }
        ok = ok && check_memory(why, sizeof why);
        if (ok && !await_word(&ctl->child_wrote, gen, 20000)) {
            ok = 0;
            snprintf(why, sizeof why, "the child's word %u never appeared in shared memory (it reads %u)", gen,
                     __atomic_load_n(&ctl->child_wrote, __ATOMIC_ACQUIRE));
        }
        ok = ok && check_buf(priv, PRIV_BYTES, priv_seed, "private after the child's write", why, sizeof why);
        if (ok) {
            priv_seed = (uint8_t)(200 + gen);
            fill(priv, PRIV_BYTES, priv_seed);
            __atomic_store_n(&ctl->magic, MAGIC + gen, __ATOMIC_RELEASE);
        }
        char answer[320] = "";
        snprintf(path, sizeof path, "%s.0.done", trigger);
        int got = 0;
        for (int waited = 0; !(got = take_file(path, answer, sizeof answer)) && waited < 20000; waited += 10)
            sleep_ms(10);
        if (ok && !got) {
            ok = 0;
            snprintf(why, sizeof why, "child (%d) did not answer in 20 s", child);
        } else if (ok && strncmp(answer, "PASS", 4) != 0) {
            ok = 0;
            snprintf(why, sizeof why, "child (%d): %s", child, answer);
        }
        if (ok && exiting) {
            int st = 0;
            pid_t r = -1;
            for (int waited = 0; (r = waitpid(child, &st, WNOHANG)) == 0 && waited < 20000; waited += 10) sleep_ms(10);
            if (r != child) { /* child is still ours, or gone */
                ok = 0;
                snprintf(why, sizeof why, "child (%d) did not exit in 20 s or is not our child", child);
            } else if (child = 0, !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                ok = 0;
                snprintf(why, sizeof why, "child (%d) wait status %#x, expected exit 0", r, st);
            }
        }
        if (!ok) kill_child(child);
        verdict(ok, me, why);
        if (exiting || !ok) return ok ? 0 : 1;
    }
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    if (open_log(argv[3]) != 0) return 2;
    trigger = argv[2];
    return run(argv[1]);
}
