/*
 * loadgen: many WebSocket clients in one process, timing every message.
 *
 * Written in C with epoll so that the load generator is never the bottleneck
 * of a fan-out benchmark: one process holds 10,000 connections and stamps
 * each frame's arrival with CLOCK_REALTIME as it is read.
 *
 *   loadgen HOST PORT PATH COUNT SECONDS [options]
 *     --deflate      offer permessage-deflate (as browsers do); inflate replies
 *     --socketio     speak Engine.IO v4 / Socket.IO v5 over the WebSocket
 *     --connect-rate N   new connections per second (default 2000)
 *     --reconnect    reopen a connection 200 ms after it ends (soak tests)
 *
 * Each received message whose text contains "bench_t":<unix seconds> and
 * "bench_id":<n> yields a latency sample (arrival - bench_t). On exit it
 * prints one JSON line per bench_id: clients reached, p50/p99/max latency and
 * the spread (last arrival - first arrival), then a summary line with its own
 * CPU time and, per client slot, the longest time without any message (the
 * gap spans reconnections). Server pings are answered (masked pongs;
 * Engine.IO "3").
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define MAX_IDS 4096
#define BUF 262144

enum { CONNECTING, HANDSHAKE, OPEN, CLOSED };

typedef struct {
    int fd;
    int state;
    int deflate;
    unsigned char *buf;
    size_t len;
    z_stream z;
    int zinit;
    int sio_ready;
    double last_msg;   /* arrival of the last message, 0 before the first */
    double max_gap;    /* longest time between two messages */
    double reopen_at;  /* when to reconnect (with --reconnect), 0 = not due */
    int reconnects;
} conn_t;

typedef struct {
    double *lat;
    size_t n, cap;
    double first, last;
} series_t;

static series_t series[MAX_IDS];
static int max_id = -1;
static long messages = 0, opened = 0, closed_n = 0, failed = 0;
static int opt_deflate = 0, opt_sio = 0, opt_reconnect = 0;
static char inflate_buf[1 << 20];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void record(const char *text, size_t n, double t) {
    const char *p = memmem(text, n, "\"bench_t\":", 10);
    const char *q = memmem(text, n, "\"bench_id\":", 11);
    messages++;
    if (!p || !q) return;
    double sent = strtod(p + 10, NULL);
    int id = atoi(q + 11);
    if (id < 0 || id >= MAX_IDS) return;
    series_t *s = &series[id];
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->lat = realloc(s->lat, s->cap * sizeof(double));
    }
    s->lat[s->n++] = t - sent;
    if (s->n == 1 || t < s->first) s->first = t;
    if (t > s->last) s->last = t;
    if (id > max_id) max_id = id;
}

static void send_all(int fd, const void *data, size_t n) {
    const char *p = data;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* A masked client frame (RFC 6455 5.3): the mask key is zero, which is valid. */
static void send_frame(int fd, int opcode, const char *payload, size_t n) {
    unsigned char hdr[14];
    size_t h = 0;
    hdr[h++] = 0x80 | opcode;
    if (n < 126) {
        hdr[h++] = 0x80 | n;
    } else {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (n >> 8) & 0xff;
        hdr[h++] = n & 0xff;
    }
    memset(hdr + h, 0, 4);
    h += 4;
    send_all(fd, hdr, h);
    if (n) send_all(fd, payload, n);
}

static void on_text(conn_t *c, const char *text, size_t n, double t) {
    if (c->last_msg > 0 && t - c->last_msg > c->max_gap) c->max_gap = t - c->last_msg;
    c->last_msg = t;
    if (!opt_sio) {
        record(text, n, t);
        return;
    }
    /* Engine.IO packets: 0 open, 2 ping, 4 message (40 connect, 42 event). */
    if (n >= 1 && text[0] == '0') {
        send_frame(c->fd, 1, "40", 2);
    } else if (n >= 1 && text[0] == '2') {
        send_frame(c->fd, 1, "3", 1);
    } else if (n >= 2 && text[0] == '4' && text[1] == '0') {
        c->sio_ready = 1;
    } else if (n >= 2 && text[0] == '4' && text[1] == '2') {
        record(text, n, t);
    }
}

static int inflate_message(conn_t *c, unsigned char *data, size_t n, size_t *out) {
    static const unsigned char tail[4] = {0, 0, 0xff, 0xff};
    if (!c->zinit) {
        memset(&c->z, 0, sizeof c->z);
        if (inflateInit2(&c->z, -15) != Z_OK) return -1;
        c->zinit = 1;
    }
    c->z.next_out = (unsigned char *)inflate_buf;
    c->z.avail_out = sizeof inflate_buf;
    c->z.next_in = data;
    c->z.avail_in = n;
    if (inflate(&c->z, Z_SYNC_FLUSH) < 0) return -1;
    c->z.next_in = (unsigned char *)tail;
    c->z.avail_in = 4;
    if (inflate(&c->z, Z_SYNC_FLUSH) < 0) return -1;
    *out = sizeof inflate_buf - c->z.avail_out;
    return 0;
}

/* Parse as many complete frames as the buffer holds. */
static void parse_frames(conn_t *c, double t) {
    size_t off = 0;
    for (;;) {
        if (c->len - off < 2) break;
        unsigned char *f = c->buf + off;
        int fin_op = f[0], compressed = f[0] & 0x40, opcode = f[0] & 0x0f;
        uint64_t plen = f[1] & 0x7f;
        size_t h = 2;
        if (plen == 126) {
            if (c->len - off < 4) break;
            plen = ((uint64_t)f[2] << 8) | f[3];
            h = 4;
        } else if (plen == 127) {
            if (c->len - off < 10) break;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = (plen << 8) | f[2 + i];
            h = 10;
        }
        if (c->len - off < h + plen) break;
        unsigned char *payload = f + h;
        (void)fin_op;
        if (opcode == 1 || opcode == 2) {
            if (compressed) {
                size_t outn;
                if (inflate_message(c, payload, plen, &outn) == 0) on_text(c, inflate_buf, outn, t);
            } else {
                on_text(c, (char *)payload, plen, t);
            }
        } else if (opcode == 9) {
            send_frame(c->fd, 10, (char *)payload, plen);
        } else if (opcode == 8) {
            c->state = CLOSED;
        }
        off += h + plen;
    }
    if (off) {
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= off;
    }
}

static void send_handshake(conn_t *c, const char *host, const char *path) {
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     "%s\r\n",
                     path, host,
                     opt_deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "");
    send_all(c->fd, req, (size_t)n);
    c->state = HANDSHAKE;
}

static void open_conn(int ep, conn_t *c, uint32_t idx, struct addrinfo *ai) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    c->len = 0;
    c->deflate = opt_deflate;
    c->sio_ready = 0;
    if (c->zinit) {
        inflateEnd(&c->z);
        c->zinit = 0;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    connect(c->fd, ai->ai_addr, ai->ai_addrlen);
    c->state = CONNECTING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = idx};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* A connection ended: close it and, with --reconnect, schedule a new one. */
static void end_conn(conn_t *c, double t) {
    c->state = CLOSED;
    close(c->fd);
    if (opt_reconnect) c->reopen_at = t + 0.2;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: loadgen HOST PORT PATH COUNT SECONDS [--deflate] [--socketio] [--connect-rate N]\n");
        return 2;
    }
    const char *host = argv[1], *port = argv[2], *path = argv[3];
    int count = atoi(argv[4]);
    double seconds = atof(argv[5]);
    int rate = 2000;
    for (int i = 6; i < argc; i++) {
        if (!strcmp(argv[i], "--deflate")) opt_deflate = 1;
        else if (!strcmp(argv[i], "--socketio")) opt_sio = 1;
        else if (!strcmp(argv[i], "--connect-rate") && i + 1 < argc) rate = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reconnect")) opt_reconnect = 1;
    }
    struct addrinfo hints = {0}, *ai;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &ai) != 0) {
        fprintf(stderr, "cannot resolve %s\n", host);
        return 2;
    }
    int ep = epoll_create1(0);
    conn_t *conns = calloc((size_t)count, sizeof(conn_t));
    double start = now(), end = start + seconds;
    int next = 0;
    struct epoll_event evs[1024];
    char hostport[300];
    snprintf(hostport, sizeof hostport, "%s:%s", host, port);
    while (now() < end) {
        /* Open connections at the configured rate. */
        int due = (int)((now() - start) * rate) + 1;
        while (next < count && next < due) {
            conns[next].buf = malloc(BUF);
            open_conn(ep, &conns[next], (uint32_t)next, ai);
            next++;
        }
        if (opt_reconnect) {
            double tn = now();
            for (int i = 0; i < next; i++) {
                conn_t *c = &conns[i];
                if (c->state == CLOSED && c->reopen_at > 0 && c->reopen_at <= tn) {
                    c->reopen_at = 0;
                    c->reconnects++;
                    open_conn(ep, c, (uint32_t)i, ai);
                }
            }
        }
        int n = epoll_wait(ep, evs, 1024, 10);
        double t = now();
        for (int i = 0; i < n; i++) {
            conn_t *c = &conns[evs[i].data.u32];
            if (c->state == CLOSED) continue;
            if (c->state == CONNECTING && (evs[i].events & EPOLLOUT)) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    failed++;
                    end_conn(c, t);
                    continue;
                }
                send_handshake(c, hostport, path);
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[i].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                continue;
            }
            if (!(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            for (;;) {
                ssize_t r = recv(c->fd, c->buf + c->len, BUF - c->len, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    if (c->state == OPEN) closed_n++;
                    else failed++;
                    end_conn(c, t);
                    break;
                }
                if (r < 0) break;
                c->len += (size_t)r;
                if (c->state == HANDSHAKE) {
                    char *eoh = memmem(c->buf, c->len, "\r\n\r\n", 4);
                    if (!eoh) continue;
                    if (memcmp(c->buf, "HTTP/1.1 101", 12) != 0) {
                        failed++;
                        end_conn(c, t);
                        break;
                    }
                    c->deflate = memmem(c->buf, (size_t)(eoh - (char *)c->buf), "permessage-deflate", 18) != NULL;
                    size_t hl = (size_t)(eoh + 4 - (char *)c->buf);
                    memmove(c->buf, c->buf + hl, c->len - hl);
                    c->len -= hl;
                    c->state = OPEN;
                    opened++;
                }
                parse_frames(c, t);
                if (c->state == CLOSED) { /* a close frame */
                    closed_n++;
                    end_conn(c, t);
                    break;
                }
                if (c->len == BUF) c->len = 0; /* a frame larger than the buffer: drop it */
            }
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    int deflated = 0, reconnects = 0;
    double *gaps = malloc(sizeof(double) * (size_t)(next ? next : 1));
    double tend = now();
    for (int i = 0; i < next; i++) {
        conn_t *c = &conns[i];
        deflated += c->zinit;
        reconnects += c->reconnects;
        double g = c->max_gap;
        if (c->last_msg > 0 && tend - c->last_msg > g) g = tend - c->last_msg;
        gaps[i] = c->last_msg > 0 ? g : seconds;
    }
    qsort(gaps, (size_t)next, sizeof(double), cmp);
    /* Every latency sample of every broadcast, for overall percentiles. */
    size_t total = 0;
    for (int id = 0; id <= max_id; id++) total += series[id].n;
    double *all = malloc(sizeof(double) * (total ? total : 1));
    size_t k = 0;
    for (int id = 0; id <= max_id; id++)
        for (size_t j = 0; j < series[id].n; j++) all[k++] = series[id].lat[j];
    qsort(all, total, sizeof(double), cmp);
    for (int id = 0; id <= max_id; id++) {
        series_t *s = &series[id];
        if (!s->n) continue;
        qsort(s->lat, s->n, sizeof(double), cmp);
        printf("{\"bench_id\":%d,\"clients\":%zu,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
               "\"spread_ms\":%.3f}\n",
               id, s->n, s->lat[s->n / 2] * 1e3, s->lat[(size_t)(s->n * 0.99)] * 1e3,
               s->lat[s->n - 1] * 1e3, (s->last - s->first) * 1e3);
    }
    printf("{\"summary\":true,\"connections\":%d,\"opened\":%ld,\"failed\":%ld,\"closed_by_server\":%ld,"
           "\"reconnects\":%d,\"messages\":%ld,\"inflating\":%d,\"cpu_s\":%.3f,\"wall_s\":%.3f,"
           "\"max_gap_s\":%.3f,\"p99_gap_s\":%.3f,\"median_gap_s\":%.3f,"
           "\"samples\":%zu,\"all_p50_ms\":%.3f,\"all_p99_ms\":%.3f,\"all_max_ms\":%.3f}\n",
           next, opened, failed, closed_n, reconnects, messages, deflated, cpu, now() - start,
           next ? gaps[next - 1] : 0.0, next ? gaps[(size_t)(next * 0.99)] : 0.0, next ? gaps[next / 2] : 0.0,
           total, total ? all[total / 2] * 1e3 : 0.0, total ? all[(size_t)(total * 0.99)] * 1e3 : 0.0,
           total ? all[total - 1] * 1e3 : 0.0);
    return 0;
}
