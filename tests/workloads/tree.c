/* Checkpoint/restore workload for a process tree: main is a session leader
 * (started by setsid(1), else it calls setsid) with
 *   c1, c2  children in main's process group,
 *   c3      a child that leads a process group of its own, with
 *   g       c3's child, in c3's group,
 *   z       a child that exits at once with status 7 and stays a zombie
 *           (unreaped) until the final verify.
 * Before publishing its pid (argv[1], written aside then renamed) main
 * writes argv[1].pids: "main c1 c2 c3 g z", space-separated. The log argv[3]
 * is opened O_APPEND by main before forking, so the whole tree shares it.
 *
 * When the trigger argv[2] appears (polled every 50 ms) main deletes it and
 * hands the command on to c1, c2, c3, g through files argv[2].0 .. .3, which
 * each polls; each checks its pid, ppid, process group and session, appends
 * "PASS pid" or "FAIL pid reason" to the log and answers main in
 * argv[2].N.done. Main checks its own pid, group and session and its zombie
 * (waitid WNOWAIT on "check"; on "exit" it reaps it and wants status 7), and
 * appends its own line only once every child has answered. On "exit" every
 * process exits: c3 after reaping g, main after reaping c1, c2, c3 (each
 * must exit 0). On FAIL main kills the tree by pid and exits 1. A child
 * whose parent is gone (its ppid changed) logs FAIL and exits, so nothing
 * outlives a killed main. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "workload.h"

enum { C1, C2, C3, G, LIVE }; /* the children main triggers, by index */
static const char *const role_name[LIVE] = {"c1", "c2", "c3", "g"};

/* Who a process must be, after any number of checkpoints and restores
 * (ppid 0: not checked, main's parent is whoever restored it). */
struct ident {
    pid_t pid, ppid, pgrp, sid;
};

/* What a child tells main over the setup pipe (one write, atomic). */
struct ready {
    int role;
    int ok;
    pid_t pid;
};

static const char *trigger;

static int check_ident(const struct ident *want, char *why, size_t n) {
    struct ident now = {getpid(), getppid(), getpgrp(), getsid(0)};
    if (now.pid != want->pid) snprintf(why, n, "pid is %d, expected %d", now.pid, want->pid);
    else if (want->ppid && now.ppid != want->ppid) snprintf(why, n, "ppid is %d, expected %d", now.ppid, want->ppid);
    else if (now.pgrp != want->pgrp) snprintf(why, n, "process group is %d, expected %d", now.pgrp, want->pgrp);
    else if (now.sid != want->sid) snprintf(why, n, "session is %d, expected %d", now.sid, want->sid);
    else return 1;
    return 0;
}

/* Waits up to `ms` for `pid` (a child) to exit; its exit code, 128+signal,
 * or -1 (still running, or not our child: errno says). */
static int wait_exit(pid_t pid, long ms) {
    for (long waited = 0;; waited += 10) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0 || waited >= ms) return -1;
        sleep_ms(10);
    }
}

/* A child's life after setup: poll its trigger, verify, answer, maybe exit.
 * `kid` is g's pid for c3 (reaped before c3 exits), else 0. */
static int child_loop(int role, const struct ident *want, pid_t kid) {
    char path[4200], done[4200];
    snprintf(path, sizeof path, "%s.%d", trigger, role);
    snprintf(done, sizeof done, "%s.%d.done", trigger, role);
    for (;;) {
        sleep_ms(50);
        char why[300] = "", line[400], cmd[16];
        if (getppid() != want->ppid) {
            snprintf(line, sizeof line, "FAIL %d %s: parent %d is gone (ppid is %d)\n", want->pid, role_name[role],
                     want->ppid, getppid());
            say(line);
            return 1;
        }
        if (!take_file(path, cmd, sizeof cmd)) continue;
        int exiting = strncmp(cmd, "exit", 4) == 0;
        int ok = check_ident(want, why, sizeof why);
        snprintf(line, sizeof line, "%s %d %s%s%s\n", ok ? "PASS" : "FAIL", want->pid, ok ? "" : role_name[role],
                 ok ? "" : ": ", why);
        say(line);
        snprintf(line, sizeof line, "%s %s", ok ? "PASS" : "FAIL", why);
        if (write_file(done, line) != 0) return 2;
        if (exiting || !ok) {
            if (exiting && ok && kid) {
                int code = wait_exit(kid, 20000);
                if (code != 0) {
                    snprintf(line, sizeof line, "FAIL %d c3: g (%d) exited with %d\n", want->pid, kid, code);
                    say(line);
                    return 1;
                }
            }
            return ok ? 0 : 1;
        }
    }
}

/* Forks a child that checks it is `want` (pid filled in), reports on the
 * setup pipe and runs child_loop. Returns the child's pid in the parent. */
static pid_t spawn(int role, struct ident want, int pipefd[2]) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    close(pipefd[0]);
    want.pid = getpid();
    if (role == C3) {
        want.pgrp = want.pid;
        if (setpgid(0, 0) != 0) _exit(2);
    }
    char why[300];
    struct ready r = {role, check_ident(&want, why, sizeof why), want.pid};
    pid_t kid = 0;
    if (role == C3) {
        struct ident g = {0, want.pid, want.pid, want.sid};
        kid = spawn(G, g, pipefd);
        if (kid < 0) r.ok = 0;
    }
    if (write(pipefd[1], &r, sizeof r) != sizeof r) _exit(2);
    close(pipefd[1]);
    _exit(child_loop(role, &want, kid));
}

static pid_t pids[LIVE];
static pid_t zombie = -1;

/* On failure nothing may outlive main: kill by pid (g before c3, so g is
 * still c3's), reap ours. */
static void kill_tree(void) {
    for (int i = LIVE - 1; i >= 0; i--)
        if (pids[i] > 0) kill(pids[i], SIGKILL);
    for (int i = 0; i < LIVE; i++)
        if (pids[i] > 0 && i != G) waitpid(pids[i], NULL, 0);
    if (zombie > 0) waitpid(zombie, NULL, 0);
}

/* The zombie is there, exited with 7: looked at only ("check") or reaped. */
static int check_zombie(int reap, char *why, size_t n) {
    if (reap) {
        int st;
        pid_t r = waitpid(zombie, &st, WNOHANG);
        if (r != zombie) snprintf(why, n, "waitpid(zombie %d) returned %d (%s)", zombie, r, r < 0 ? strerror(errno) : "not exited");
        else if (!WIFEXITED(st) || WEXITSTATUS(st) != 7) snprintf(why, n, "zombie %d: wait status %#x, expected exit 7", zombie, st);
        else {
            zombie = -1;
            return 1;
        }
        return 0;
    }
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, zombie, &si, WEXITED | WNOHANG | WNOWAIT) != 0) snprintf(why, n, "waitid(zombie %d): %s", zombie, strerror(errno));
    else if (si.si_pid != zombie) snprintf(why, n, "zombie %d has not exited", zombie);
    else if (si.si_code != CLD_EXITED || si.si_status != 7) snprintf(why, n, "zombie %d: code %d status %d, expected exit 7", zombie, si.si_code, si.si_status);
    else return 1;
    return 0;
}

static int run(const char *pidfile) {
    pid_t me = getpid();
    struct ident want = {me, 0, me, me}, child = {0, me, me, me};
    int pipefd[2];
    if (pipe(pipefd) != 0) return 2;
    for (int i = C1; i <= C3; i++) {
        pids[i] = spawn(i, child, pipefd);
        if (pids[i] < 0) {
            kill_tree();
            return 2;
        }
    }
    zombie = fork();
    if (zombie == 0) _exit(7);
    close(pipefd[1]);
    /* EOF once every child (g too) has reported and closed its end. */
    int ready = 0, setup_ok = zombie > 0;
    struct ready r;
    while (read(pipefd[0], &r, sizeof r) == sizeof r) {
        ready++;
        setup_ok = setup_ok && r.ok;
        if (r.role == G) pids[G] = r.pid;
    }
    close(pipefd[0]);
    siginfo_t si;
    if (!setup_ok || ready != LIVE || waitid(P_PID, zombie, &si, WEXITED | WNOWAIT) != 0) {
        kill_tree();
        return 2;
    }

    char text[128], path[4200];
    snprintf(text, sizeof text, "%d %d %d %d %d %d\n", me, pids[C1], pids[C2], pids[C3], pids[G], zombie);
    snprintf(path, sizeof path, "%s.pids", pidfile);
    if (write_file(path, text) != 0) return 2;
    snprintf(text, sizeof text, "%d\n", me);
    if (write_file(pidfile, text) != 0) return 2;

    for (;;) {
        sleep_ms(50);
        char cmd[16];
        if (!take_file(trigger, cmd, sizeof cmd)) continue;
        int exiting = strncmp(cmd, "exit", 4) == 0;
        for (int i = 0; i < LIVE; i++) {
            snprintf(path, sizeof path, "%s.%d", trigger, i);
            if (write_file(path, exiting ? "exit" : "check") != 0) return 2;
        }
        char why[400] = "";
        int ok = check_ident(&want, why, sizeof why);
        ok = ok && check_zombie(0, why, sizeof why);
        /* Every child answers within a few polls; allow for a slow machine. */
        for (int i = 0; i < LIVE; i++) {
            char answer[320] = "";
            snprintf(path, sizeof path, "%s.%d.done", trigger, i);
            int got = 0;
            for (int waited = 0; !(got = take_file(path, answer, sizeof answer)) && waited < 20000; waited += 10)
                sleep_ms(10);
            if (!ok) continue;
            if (!got) {
                ok = 0;
                snprintf(why, sizeof why, "%s (%d) did not answer in 20 s", role_name[i], pids[i]);
            } else if (strncmp(answer, "PASS", 4) != 0) {
                ok = 0;
                snprintf(why, sizeof why, "%s (%d): %s", role_name[i], pids[i], answer);
            }
        }
        if (ok && exiting) {
            for (int i = C1; ok && i <= C3; i++) {
                int code = wait_exit(pids[i], 20000);
                if (code != 0) {
                    ok = 0;
                    if (code < 0)
                        snprintf(why, sizeof why, "%s (%d) did not exit in 20 s or is not our child", role_name[i], pids[i]);
                    else
                        snprintf(why, sizeof why, "%s (%d) exited with %d, expected 0", role_name[i], pids[i], code);
                } else {
                    pids[i] = 0;
                    if (i == C3) pids[G] = 0;
                }
            }
            ok = ok && check_zombie(1, why, sizeof why);
        }
        if (!ok) kill_tree();
        verdict(ok, me, why);
        if (exiting || !ok) return ok ? 0 : 1;
    }
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    if (open_log(argv[3]) != 0) return 2;
    trigger = argv[2];
    if (getsid(0) != getpid() && setsid() < 0) return 2;
    return run(argv[1]);
}
