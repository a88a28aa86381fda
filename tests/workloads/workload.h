/* What the checkpoint workloads share: their log (opened O_APPEND before
 * the checkpoint, so it is one of the fds restored), atomic writes of the
 * small files the tests read (pid files, answers), and taking a trigger
 * file (read, then deleted). */
#ifndef PALISADE_WORKLOAD_H
#define PALISADE_WORKLOAD_H

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int logfd = -1;

/* Appends `s` to the log; a process that cannot report exits 3. */
static inline void say(const char *s) {
    if (write(logfd, s, strlen(s)) < 0) _exit(3);
}

static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000 * 1000};
    nanosleep(&ts, NULL);
}

/* Writes `text` to `path` aside, then renames it in: readers never see
 * half a file. */
static inline int write_file(const char *path, const char *text) {
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    ssize_t n = (ssize_t)strlen(text);
    int ok = write(fd, text, n) == n;
    close(fd);
    return ok ? rename(tmp, path) : -1;
}

/* Reads and deletes `path`; 0 if it is not there (yet). */
static inline int take_file(const char *path, char *buf, size_t n) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t r = read(fd, buf, n - 1);
    close(fd);
    buf[r > 0 ? r : 0] = 0;
    unlink(path);
    return 1;
}

/* Appends "PASS pid why" or "FAIL pid why" to the log. */
static inline void verdict(int ok, int pid, const char *why) {
    char line[512];
    snprintf(line, sizeof line, "%s %d %s\n", ok ? "PASS" : "FAIL", pid, why);
    say(line);
}

/* Closes every fd inherited above stderr, then opens the log at `path`
 * (O_APPEND); -1 if it cannot. */
static inline int open_log(const char *path) {
    close_range(3, ~0U, 0);
    logfd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    return logfd < 0 ? -1 : 0;
}

/* Whether the comma-separated `list` holds the word `what`. */
static inline int has_word(const char *list, const char *what) {
    size_t n = strlen(what);
    for (const char *p = list; (p = strstr(p, what)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == 0 || p[n] == ',')) return 1;
    return 0;
}

/* The fidelity workloads' main loop, once set up: publishes the pid in
 * `pid_path`, then each time `trigger` appears runs `check` (which fills
 * `why` on failure) and logs the verdict; returns (0 on PASS) when the
 * trigger said "exit". */
static inline int serve_checks(const char *pid_path, const char *trigger, int (*check)(void),
                               char *why) {
    char buf[32];
    snprintf(buf, sizeof buf, "%d\n", getpid());
    if (write_file(pid_path, buf) != 0) return 2;
    for (;;) {
        sleep_ms(50);
        char cmd[16];
        if (!take_file(trigger, cmd, sizeof cmd)) continue;
        why[0] = 0;
        int ok = check();
        verdict(ok, getpid(), why);
        if (!strncmp(cmd, "exit", 4)) return ok ? 0 : 1;
    }
}

#endif
