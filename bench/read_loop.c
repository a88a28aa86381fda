// Reads a file whole, N times (open, read to the end, close), and prints
// the median and 99th percentile of one whole read in microseconds, and
// the bytes one read returned. What `cat FILE` costs, without the fork.
//
// usage: read_loop FILE N
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: read_loop FILE N\n");
    return 2;
  }
  long n = atol(argv[2]);
  if (n <= 0) return 2;
  double *took = malloc(sizeof(double) * n);
  static char buf[65536];
  long bytes = 0;
  for (long i = 0; i < n; i++) {
    double start = now_us();
    int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      perror(argv[1]);
      return 1;
    }
    long got = 0;
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0) got += r;
    if (r < 0) {
      perror(argv[1]);
      return 1;
    }
    close(fd);
    took[i] = now_us() - start;
    bytes = got;
  }
  qsort(took, n, sizeof(double), by_value);
  printf("%.2f %.2f %ld\n", took[n / 2], took[n * 99 / 100], bytes);
  return 0;
}
