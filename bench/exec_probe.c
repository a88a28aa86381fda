/* The execs bench/classify.sh times:
 *   exec_probe probe
 *       run at once after an exec: reads /proc/self/cgroup until it shows a
 *       palisade container, and prints `probe NS READS`: the time from its
 *       first instruction of main to the first read showing the container,
 *       and how many reads showed it outside first (0: it never ran
 *       unclassified). Gives up after 2 s (prints `probe -1 READS`).
 *   exec_probe check
 *       one read: prints `probe 0 0` if in a container, `probe -1 1` if not
 *   exec_probe run N UID PATH [ARGS...]
 *       N times: fork, set the child's real and effective uid and gid to
 *       UID (no supplementary groups), exec PATH, wait for it; prints
 *       `run NS` for each, fork to reap (CLOCK_MONOTONIC).
 */
#define _GNU_SOURCE
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int in_container(void) {
    char buf[4096];
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, ":/palisade/") != NULL;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "probe") == 0) {
        long long t0 = now_ns();
        long reads = 0;
        while (!in_container()) {
            reads++;
            /* Leave the CPU to the agent between reads: on a small host a
             * spinning probe would delay the very move it waits for. */
            sched_yield();
            if (now_ns() - t0 > 2000000000LL) { printf("probe -1 %ld\n", reads); return 0; }
        }
        printf("probe %lld %ld\n", now_ns() - t0, reads);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "check") == 0) {
        printf(in_container() ? "probe 0 0\n" : "probe -1 1\n");
        return 0;
    }
    if (argc >= 5 && strcmp(argv[1], "run") == 0) {
        int n = atoi(argv[2]);
        uid_t uid = (uid_t)atol(argv[3]);
        for (int i = 0; i < n; i++) {
            fflush(stdout);
            long long t0 = now_ns();
            pid_t pid = fork();
            if (pid < 0) { perror("fork"); return 1; }
            if (pid == 0) {
                if (setgroups(0, NULL) || setresgid(uid, uid, uid) || setresuid(uid, uid, uid)) {
                    perror("setuid"); _exit(126);
                }
                execv(argv[4], argv + 4);
                perror("exec"); _exit(127);
            }
            int status;
            if (waitpid(pid, &status, 0) < 0) { perror("waitpid"); return 1; }
            long long t1 = now_ns();
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "child failed: %d\n", status); return 1;
            }
            printf("run %lld\n", t1 - t0);
        }
        return 0;
    }
    fprintf(stderr, "usage: exec_probe probe | exec_probe run N UID PATH [ARGS...]\n");
    return 2;
}
