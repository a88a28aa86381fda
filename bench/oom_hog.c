/* The OOM benchmark's two programs, timed with CLOCK_REALTIME (the clock
 * of palisade's journal):
 *   oom_hog hog BEAT      waits for BEAT's directory to hold `go`, then
 *                         touches memory 1 MiB at a time without end,
 *                         writing after each MiB the time (ns) to BEAT
 *                         (in place: the file never grows)
 *   oom_hog eventfd RUNS  the floor: one thread waits in poll(2) on an
 *                         eventfd, another writes it; prints the median
 *                         and 99th percentile of write-to-wake, in us */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int hog(const char *beat) {
    char go[4096];
    snprintf(go, sizeof go, "%s", beat);
    char *slash = strrchr(go, '/');
    if (!slash) return 2;
    strcpy(slash + 1, "go");
    while (access(go, F_OK) != 0) usleep(5000);
    int fd = open(beat, O_WRONLY | O_CREAT, 0644);
    if (fd < 0) return 2;
    for (;;) {
        char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 3;
        for (size_t i = 0; i < (1 << 20); i += 4096) p[i] = 1;
        char line[32];
        int n = snprintf(line, sizeof line, "%020llu\n", (unsigned long long)now_ns());
        if (pwrite(fd, line, (size_t)n, 0) != n) return 4;
    }
}

static int efd;
static volatile uint64_t sent;

static void *waker(void *arg) {
    int runs = *(int *)arg;
    for (int i = 0; i < runs; i++) {
        usleep(2000);
        sent = now_ns();
        uint64_t one = 1;
        if (write(efd, &one, 8) != 8) exit(5);
    }
    return NULL;
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int floor_eventfd(int runs) {
    efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    uint64_t *lat = calloc((size_t)runs, sizeof *lat);
    pthread_t t;
    pthread_create(&t, NULL, waker, &runs);
    for (int i = 0; i < runs; i++) {
        struct pollfd p = {efd, POLLIN, 0};
        poll(&p, 1, -1);
        lat[i] = now_ns() - sent;
        uint64_t v;
        if (read(efd, &v, 8) != 8) return 6;
    }
    pthread_join(t, NULL);
    qsort(lat, (size_t)runs, sizeof *lat, cmp);
    printf("%.1f %.1f\n", lat[runs / 2] / 1e3, lat[runs * 99 / 100] / 1e3);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "hog")) return hog(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "eventfd")) return floor_eventfd(atoi(argv[2]));
    fprintf(stderr, "usage: oom_hog hog BEAT | oom_hog eventfd RUNS\n");
    return 2;
}
