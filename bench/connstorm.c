/* The raw limit beside bench_storm.py: how fast a broker accepts N MQTT logins.
 *
 * connstorm HOST PORT LOGINS_FILE INFLIGHT [PROTOCOL]
 * LOGINS_FILE: one "username password" per line (client id = username);
 * PROTOCOL 5 (MQTT 5, the default) or 4 (MQTT 3.1.1, e.g. NATS).
 * Opens at most INFLIGHT connections at a time (non-blocking, epoll), sends
 * CONNECT, waits for CONNACK, keeps every accepted connection open (as devices
 * do) and prints: "logins N accepted A refused R seconds S p50 X p90 Y p99 Z"
 * (S: until the last answer; pNN: seconds until that share of the logins was accepted).
 * Build: cc -O2 -o connstorm connstorm.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct { char user[80]; char pass[80]; int fd; int state; } login_t;

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int put_str(unsigned char *p, const char *s) {
    int n = (int)strlen(s);
    p[0] = (unsigned char)(n >> 8);
    p[1] = (unsigned char)(n & 0xff);
    memcpy(p + 2, s, n);
    return n + 2;
}

static int protocol = 5;

static int connect_packet(unsigned char *out, const login_t *l) {
    unsigned char body[512];
    int n = 0;
    n += put_str(body + n, "MQTT");
    body[n++] = (unsigned char)protocol;
    body[n++] = 0xC2; /* username, password, clean start */
    body[n++] = 0;
    body[n++] = 60;   /* keepalive */
    if (protocol == 5) body[n++] = 0; /* no properties */
    n += put_str(body + n, l->user); /* client id = username (pinned by the broker) */
    n += put_str(body + n, l->user);
    n += put_str(body + n, l->pass);
    int m = 0;
    out[m++] = 0x10;
    int len = n;
    do {
        unsigned char b = len % 128;
        len /= 128;
        if (len) b |= 0x80;
        out[m++] = b;
    } while (len);
    memcpy(out + m, body, n);
    return m + n;
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: connstorm HOST PORT LOGINS_FILE INFLIGHT [PROTOCOL]\n");
        return 2;
    }
    if (argc == 6) protocol = atoi(argv[5]);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    int inflight_max = atoi(argv[4]);
    FILE *f = fopen(argv[3], "r");
    if (!f) { perror("logins"); return 2; }
    int cap = 1024, n = 0;
    login_t *logins = malloc(sizeof(login_t) * cap);
    while (1) {
        if (n == cap) { cap *= 2; logins = realloc(logins, sizeof(login_t) * cap); }
        if (fscanf(f, "%79s %79s", logins[n].user, logins[n].pass) != 2) break;
        logins[n].fd = -1;
        logins[n].state = 0;
        n++;
    }
    fclose(f);
    int ep = epoll_create1(0);
    int next = 0, inflight = 0, accepted = 0, refused = 0;
    double start = now();
    double *accepted_at = malloc(sizeof(double) * (n ? n : 1));
    struct epoll_event events[256];
    while (accepted + refused < n) {
        while (inflight < inflight_max && next < n) {
            login_t *l = &logins[next];
            l->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (l->fd < 0) { perror("socket"); return 1; }
            int one = 1;
            setsockopt(l->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            int rc = connect(l->fd, (struct sockaddr *)&addr, sizeof addr);
            if (rc < 0 && errno != EINPROGRESS) { refused++; close(l->fd); next++; continue; }
            struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (unsigned)next};
            epoll_ctl(ep, EPOLL_CTL_ADD, l->fd, &ev);
            l->state = 1;
            inflight++;
            next++;
        }
        int k = epoll_wait(ep, events, 256, 30000);
        if (k <= 0) { fprintf(stderr, "timed out waiting\n"); break; }
        for (int i = 0; i < k; i++) {
            login_t *l = &logins[events[i].data.u32];
            if (l->state == 1) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                unsigned char pkt[600];
                int m = connect_packet(pkt, l);
                if (err || write(l->fd, pkt, m) != m) {
                    refused++; inflight--; epoll_ctl(ep, EPOLL_CTL_DEL, l->fd, NULL);
                    close(l->fd); l->state = 3; continue;
                }
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = events[i].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, l->fd, &ev);
                l->state = 2;
            } else if (l->state == 2) {
                unsigned char buf[64];
                ssize_t r = read(l->fd, buf, sizeof buf);
                if (r >= 4 && buf[0] == 0x20 && buf[3] == 0) accepted_at[accepted++] = now() - start;
                else refused++;
                inflight--;
                epoll_ctl(ep, EPOLL_CTL_DEL, l->fd, NULL);
                l->state = 3;
            }
        }
    }
    double seconds = now() - start;
    qsort(accepted_at, accepted, sizeof(double), by_value);
    double q[3] = {0.5, 0.9, 0.99};
    double at[3] = {-1, -1, -1};
    for (int i = 0; i < 3; i++) {
        int k = (int)(q[i] * n + 0.999999) - 1; /* share of all logins, not of the accepted */
        if (k < accepted) at[i] = accepted_at[k < 0 ? 0 : k];
    }
    printf("logins %d accepted %d refused %d seconds %.3f p50 %.3f p90 %.3f p99 %.3f\n", n,
           accepted, refused, seconds, at[0], at[1], at[2]);
    fflush(stdout);
    for (int i = 0; i < n; i++) if (logins[i].fd >= 0) close(logins[i].fd);
    return 0;
}
