/* The two microbenchmarks of the host-wide accounting tax (issue 18):
 *
 *   host_tax pipe N     N round trips of one byte between this process and
 *                       a child over two pipes (two context switches each
 *                       on one CPU); prints nanoseconds per round trip.
 *   host_tax fault MIB R  R times: map MIB MiB anonymous, touch every page
 *                       once (a first-touch fault each), unmap; prints
 *                       nanoseconds per fault.
 *   host_tax spawn N    N times: fork a child that exits at once, and reap
 *                       it; prints nanoseconds per child (a thread exit
 *                       each, where palisade's exit program runs).
 *   host_tax empty TP   attaches a BPF program that does nothing
 *                       (`return 0`) to the raw tracepoint TP, prints
 *                       "ready", and holds it until stdin closes: the
 *                       floor of any program on that tracepoint.
 *
 * Pin it to one CPU (taskset -c N) so both ends of the pipe share it. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <linux/bpf.h>

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int pipe_bench(long n) {
    int ab[2], ba[2];
    if (pipe(ab) || pipe(ba)) { perror("pipe"); return 1; }
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 1; }
    char c = 0;
    if (child == 0) {
        for (long i = 0; i < n; i++) {
            if (read(ab[0], &c, 1) != 1 || write(ba[1], &c, 1) != 1) _exit(1);
        }
        _exit(0);
    }
    double start = now_ns();
    for (long i = 0; i < n; i++) {
        if (write(ab[1], &c, 1) != 1 || read(ba[0], &c, 1) != 1) { perror("pipe io"); return 1; }
    }
    double end = now_ns();
    int status;
    waitpid(child, &status, 0);
    printf("%.1f\n", (end - start) / n);
    return 0;
}

static int fault_bench(long mib, long rounds) {
    size_t len = (size_t)mib << 20;
    long page = sysconf(_SC_PAGESIZE), faults = 0;
    double total = 0;
    for (long r = 0; r < rounds; r++) {
        char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) { perror("mmap"); return 1; }
        double start = now_ns();
        for (size_t off = 0; off < len; off += page) m[off] = 1;
        total += now_ns() - start;
        faults += len / page;
        munmap(m, len);
    }
    printf("%.1f\n", total / faults);
    return 0;
}

static int spawn_bench(long n) {
    double start = now_ns();
    for (long i = 0; i < n; i++) {
        pid_t child = fork();
        if (child < 0) { perror("fork"); return 1; }
        if (child == 0) _exit(0);
        int status;
        if (waitpid(child, &status, 0) != child) { perror("waitpid"); return 1; }
    }
    printf("%.1f\n", (now_ns() - start) / n);
    return 0;
}

static int hold_empty(const char *tracepoint) {
    struct bpf_insn insns[2];
    memset(insns, 0, sizeof insns);
    insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K; /* r0 = 0 */
    insns[0].dst_reg = BPF_REG_0;
    insns[1].code = BPF_JMP | BPF_EXIT;
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_RAW_TRACEPOINT;
    attr.insns = (uint64_t)(uintptr_t)insns;
    attr.insn_cnt = 2;
    attr.license = (uint64_t)(uintptr_t)"GPL";
    int prog = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    if (prog < 0) { perror("BPF_PROG_LOAD"); return 1; }
    memset(&attr, 0, sizeof attr);
    attr.raw_tracepoint.name = (uint64_t)(uintptr_t)tracepoint;
    attr.raw_tracepoint.prog_fd = prog;
    if (syscall(SYS_bpf, BPF_RAW_TRACEPOINT_OPEN, &attr, sizeof attr) < 0) {
        perror("BPF_RAW_TRACEPOINT_OPEN");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {}
    return 0; /* the link goes with the process */
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "pipe")) return pipe_bench(atol(argv[2]));
    if (argc == 4 && !strcmp(argv[1], "fault")) return fault_bench(atol(argv[2]), atol(argv[3]));
    if (argc == 3 && !strcmp(argv[1], "spawn")) return spawn_bench(atol(argv[2]));
    if (argc == 3 && !strcmp(argv[1], "empty")) return hold_empty(argv[2]);
    fprintf(stderr, "usage: host_tax pipe N | fault MIB ROUNDS | spawn N | empty TRACEPOINT\n");
    return 2;
}
