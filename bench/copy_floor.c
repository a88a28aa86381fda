/* The floors bench/checkpoint.sh compares palisade against, timed inside
 * (CLOCK_MONOTONIC), so only the copy is counted:
 *   copy_floor write FILE MIB   a touched MIB MiB buffer written to FILE
 *                               with write(2) (open to close, fsync'd)
 *   copy_floor read FILE MIB    FILE read into a fresh (never touched)
 *                               buffer with read(2), then every page of it
 *                               touched (open to last touch)
 * Prints the seconds taken. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: copy_floor write|read FILE MIB\n"); return 2; }
    size_t bytes = (size_t)atol(argv[3]) << 20;
    uint8_t *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) { perror("mmap"); return 1; }
    double t0, t1;
    if (strcmp(argv[1], "write") == 0) {
        uint64_t *w = (uint64_t *)buf;
        for (size_t i = 0; i < bytes / 8; i++) w[i] = i * 0x9e3779b97f4a7c15ULL;
        t0 = now();
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0) { perror(argv[2]); return 1; }
        for (size_t done = 0; done < bytes;) {
            ssize_t n = write(fd, buf + done, bytes - done);
            if (n <= 0) { perror("write"); return 1; }
            done += n;
        }
        if (fsync(fd) != 0 || close(fd) != 0) { perror("close"); return 1; }
        t1 = now();
    } else {
        t0 = now();
        int fd = open(argv[2], O_RDONLY);
        if (fd < 0) { perror(argv[2]); return 1; }
        for (size_t done = 0; done < bytes;) {
            ssize_t n = read(fd, buf + done, bytes - done);
            if (n <= 0) { perror("read"); return 1; }
            done += n;
        }
        close(fd);
        volatile uint64_t sum = 0;
        for (size_t i = 0; i < bytes; i += 4096) sum += buf[i];
        t1 = now();
    }
    printf("%.6f\n", t1 - t0);
    return 0;
}
