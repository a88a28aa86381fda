/* Checkpoint benchmark workload: maps argv[4] MiB of private anonymous
 * memory, writes a known 64-bit pattern into every word (so every page is
 * present and distinct), publishes its pid in argv[1] and sleeps in 50 ms
 * steps. When the file argv[2] appears it deletes it, verifies every word
 * and appends "PASS pid" or "FAIL pid reason" to the log argv[3]; it
 * exits (0 on PASS) when the trigger said "exit". */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static uint64_t word(size_t i) { return (uint64_t)i * 0x9e3779b97f4a7c15ULL ^ 0x5bd1e995u; }

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    size_t bytes = (size_t)atol(argv[4]) << 20;
    int logfd = open(argv[3], O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (logfd < 0 || bytes == 0) return 2;
    uint64_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return 2;
    size_t words = bytes / 8;
    for (size_t i = 0; i < words; i++) mem[i] = word(i);

    /* The pid file appears complete: written aside, then renamed. */
    char tmp[4096], buf[32];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
    int n = snprintf(buf, sizeof buf, "%d\n", getpid());
    int pf = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (pf < 0 || write(pf, buf, n) != n || close(pf) != 0 || rename(tmp, argv[1]) != 0) return 2;

    for (;;) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        int fd = open(argv[2], O_RDONLY);
        if (fd < 0) continue;
        char cmd[16] = {0};
        if (read(fd, cmd, sizeof cmd - 1) < 0) cmd[0] = 0;
        close(fd);
        unlink(argv[2]);
        char line[200];
        size_t bad = words;
        for (size_t i = 0; i < words; i++)
            if (mem[i] != word(i)) { bad = i; break; }
        if (bad == words)
            snprintf(line, sizeof line, "PASS %d (every word)\n", getpid());
        else
            snprintf(line, sizeof line, "FAIL %d word %zu of %zu differs\n", getpid(), bad, words);
        if (write(logfd, line, strlen(line)) < 0) return 3;
        if (strncmp(cmd, "exit", 4) == 0 || bad != words) return bad == words ? 0 : 1;
    }
}
