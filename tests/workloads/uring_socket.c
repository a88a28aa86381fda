/* Creates sockets of several families twice: with plain socket(), and
 * through io_uring's IORING_OP_SOCKET (raw system calls, no liburing), to
 * see whether a policy that seccomp enforces can be stepped around.
 *
 * Prints `setup RESULT` (io_uring_setup), then one line per family:
 * `NAME plain=RESULT uring=RESULT`, where RESULT is `ok` (a socket was
 * created, then closed) or the errno's name. When io_uring_setup failed,
 * every uring result is its errno. Exits 0 once everything is printed. */
#include <errno.h>
#include <linux/io_uring.h>
#include <linux/if_ether.h>
#include <linux/netlink.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

struct family {
    const char *name;
    int domain, type, protocol;
};

static const struct family families[] = {
    {"packet_raw", AF_PACKET, SOCK_RAW, 0},
    {"packet_dgram", AF_PACKET, SOCK_DGRAM, 0},
    {"netlink", AF_NETLINK, SOCK_RAW, NETLINK_ROUTE},
    {"vsock", AF_VSOCK, SOCK_STREAM, 0},
    {"inet6", AF_INET6, SOCK_STREAM, 0},
    {"inet", AF_INET, SOCK_STREAM, 0},
};

static const char *errname(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case ENOSYS: return "ENOSYS";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
    case ESOCKTNOSUPPORT: return "ESOCKTNOSUPPORT";
    case ENOMEM: return "ENOMEM";
    default: {
        static char buf[32];
        snprintf(buf, sizeof buf, "errno%d", e);
        return buf;
    }
    }
}

/* One ring: its fd and the mapped submission and completion queues. */
struct ring {
    int fd;
    unsigned *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
};

/* 0, or the errno of the step that failed. */
static int ring_open(struct ring *r) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    r->fd = (int)syscall(SYS_io_uring_setup, 4, &p);
    if (r->fd < 0) return errno;
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    char *sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                    IORING_OFF_SQ_RING);
    char *cq = mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                    IORING_OFF_CQ_RING);
    r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (sq == MAP_FAILED || cq == MAP_FAILED || r->sqes == MAP_FAILED) return errno;
    r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->cq_head = (unsigned *)(cq + p.cq_off.head);
    r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    return 0;
}

/* Submits one IORING_OP_SOCKET and waits for it: the new fd, or -errno. */
static int uring_socket(struct ring *r, const struct family *f) {
    unsigned tail = *r->sq_tail;
    unsigned slot = tail & *r->sq_mask;
    struct io_uring_sqe *sqe = &r->sqes[slot];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = IORING_OP_SOCKET;
    sqe->fd = f->domain;
    sqe->off = (uint64_t)f->type;
    sqe->len = (uint32_t)f->protocol;
    sqe->user_data = 1;
    r->sq_array[slot] = slot;
    __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
    int n = (int)syscall(SYS_io_uring_enter, r->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0);
    if (n < 0) return -errno;
    unsigned head = *r->cq_head;
    if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) return -EAGAIN;
    int res = r->cqes[head & *r->cq_mask].res;
    __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
    return res;
}

static const char *outcome(int fd_or_neg_errno) {
    if (fd_or_neg_errno >= 0) {
        close(fd_or_neg_errno);
        return "ok";
    }
    return errname(-fd_or_neg_errno);
}

int main(void) {
    struct ring r = {.fd = -1};
    int setup = ring_open(&r);
    printf("setup %s\n", setup == 0 ? "ok" : errname(setup));
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        struct family f = families[i];
        if (f.domain == AF_PACKET) f.protocol = htons(ETH_P_ALL);
        int plain = socket(f.domain, f.type, f.protocol);
        printf("%s plain=%s ", f.name, outcome(plain < 0 ? -errno : plain));
        printf("uring=%s\n", setup == 0 ? outcome(uring_socket(&r, &f)) : errname(setup));
    }
    return 0;
}
