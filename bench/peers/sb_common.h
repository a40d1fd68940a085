/*
 * Shared helpers for the Switchboard benchmark peers (sb_send, sb_recv, sb_rpc, sb_echo).
 *
 * Each peer is a single-threaded Qpid Proton proactor loop that prints exactly one JSON
 * object on stdout when it ends, so that bench/_peers.py can parse it. Everything here is
 * header-only to keep each peer a one-command gcc build.
 */
#ifndef SB_COMMON_H
#define SB_COMMON_H

#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/event.h>
#include <proton/link.h>
#include <proton/listener.h>
#include <proton/message.h>
#include <proton/proactor.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The proactor wakes us this often so that the deadline and signals are noticed even when
 * the peer is silent; short enough to stop promptly, long enough to cost nothing. */
#define SB_TICK_MS 100

/* Upper bound for per-message bookkeeping arrays (8 bytes each). */
#define SB_MAX_COUNT 50000000L

typedef struct sb_url_t {
  char host[256];
  char port[32];
  char address[1024];
} sb_url_t;

static volatile sig_atomic_t sb_signalled = 0;

static inline void sb_on_signal(int sig) {
  (void)sig;
  sb_signalled = 1;
}

/* Signals only set a flag: the proactor loop checks it on every tick, which keeps the
 * handler async-signal-safe and still lets the peer print its result before exiting. */
static inline void sb_install_signal_handlers(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = sb_on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
}

static inline uint64_t sb_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void sb_die(const char *prog, const char *msg) {
  fprintf(stderr, "%s: %s\n", prog, msg);
  exit(64);
}

/* Parse "amqp://HOST:PORT/ADDRESS" (scheme optional, port defaults to 5672). The address
 * is everything after the first '/' following HOST:PORT and may itself contain '/'. */
static inline bool sb_parse_url(const char *url, sb_url_t *out) {
  const char *p = url;
  const char *slash;
  const char *colon;
  size_t hostlen;
  memset(out, 0, sizeof(*out));
  if (strncmp(p, "amqp://", 7) == 0) p += 7;
  slash = strchr(p, '/');
  if (!slash || slash[1] == '\0') return false;
  if (strlen(slash + 1) >= sizeof(out->address)) return false;
  strcpy(out->address, slash + 1);
  colon = memchr(p, ':', (size_t)(slash - p));
  hostlen = (size_t)((colon ? colon : slash) - p);
  if (hostlen == 0 || hostlen >= sizeof(out->host)) return false;
  memcpy(out->host, p, hostlen);
  if (colon) {
    size_t portlen = (size_t)(slash - colon - 1);
    if (portlen == 0 || portlen >= sizeof(out->port)) return false;
    memcpy(out->port, colon + 1, portlen);
  } else {
    strcpy(out->port, "5672");
  }
  return true;
}

static inline long sb_parse_long(const char *prog, const char *what, const char *s, long lo, long hi) {
  char *end = NULL;
  long v;
  errno = 0;
  v = strtol(s, &end, 10);
  if (errno || !end || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "%s: %s must be an integer in [%ld, %ld], got '%s'\n", prog, what, lo, hi, s);
    exit(64);
  }
  return v;
}

static inline double sb_parse_seconds(const char *prog, const char *s) {
  char *end = NULL;
  double v = strtod(s, &end);
  if (!end || *end != '\0' || !(v > 0.0) || v > 86400.0) {
    fprintf(stderr, "%s: timeout must be a number of seconds in (0, 86400], got '%s'\n", prog, s);
    exit(64);
  }
  return v;
}

/* Write s as a JSON string literal (or null). */
static inline void sb_json_str(FILE *f, const char *s) {
  const unsigned char *p;
  if (!s) {
    fputs("null", f);
    return;
  }
  fputc('"', f);
  for (p = (const unsigned char *)s; *p; ++p) {
    if (*p == '"' || *p == '\\') {
      fputc('\\', f);
      fputc(*p, f);
    } else if (*p < 0x20) {
      fprintf(f, "\\u%04x", *p);
    } else {
      fputc(*p, f);
    }
  }
  fputc('"', f);
}

static inline int sb_cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile over a sorted array. */
static inline double sb_pct_us(const uint64_t *sorted, size_t n, double pct) {
  size_t rank;
  if (n == 0) return 0.0;
  rank = (size_t)((pct / 100.0) * (double)n + 0.999999);
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  return (double)sorted[rank - 1] / 1000.0;
}

/* Sorts lat_ns in place and prints {"p50":..,"p90":..,"p99":..,"p999":..,"max":..} in µs,
 * or null when there are no samples. */
static inline void sb_json_latency(FILE *f, uint64_t *lat_ns, size_t n) {
  if (n == 0) {
    fputs("null", f);
    return;
  }
  qsort(lat_ns, n, sizeof(uint64_t), sb_cmp_u64);
  fprintf(f, "{\"samples\":%zu,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f}",
          n, sb_pct_us(lat_ns, n, 50), sb_pct_us(lat_ns, n, 90), sb_pct_us(lat_ns, n, 99),
          sb_pct_us(lat_ns, n, 99.9), (double)lat_ns[n - 1] / 1000.0);
}

static inline void sb_set_error(char *buf, size_t len, const char *what, pn_condition_t *cond) {
  if (buf[0]) return; /* keep the first error: later ones are usually consequences */
  if (cond && pn_condition_is_set(cond)) {
    snprintf(buf, len, "%s: %s: %s", what, pn_condition_get_name(cond),
             pn_condition_get_description(cond) ? pn_condition_get_description(cond) : "");
  } else {
    snprintf(buf, len, "%s", what);
  }
}

/* Outcome counters for deliveries we sent unsettled. */
typedef struct sb_outcomes_t {
  long accepted, rejected, released, modified, other;
} sb_outcomes_t;

static inline void sb_count_outcome(sb_outcomes_t *o, uint64_t state) {
  switch (state) {
    case PN_ACCEPTED: o->accepted++; break;
    case PN_REJECTED: o->rejected++; break;
    case PN_RELEASED: o->released++; break;
    case PN_MODIFIED: o->modified++; break;
    default: o->other++; break;
  }
}

static inline bool sb_is_terminal(uint64_t state) {
  return state == PN_ACCEPTED || state == PN_REJECTED || state == PN_RELEASED ||
         state == PN_MODIFIED;
}

static inline void sb_json_outcomes(FILE *f, const sb_outcomes_t *o) {
  fprintf(f, "\"accepted\":%ld,\"rejected\":%ld,\"released\":%ld,\"modified\":%ld,\"other\":%ld",
          o->accepted, o->rejected, o->released, o->modified, o->other);
}

/* Connect with a fresh transport. SASL ANONYMOUS is on by default because many AMQP
 * servers (the Proton example broker included) expect a SASL layer; --no-sasl sends the
 * bare AMQP header for servers that do not offer SASL. */
static inline void sb_connect(pn_proactor_t *proactor, pn_connection_t *c, const sb_url_t *url,
                       bool sasl) {
  char addr[PN_MAX_ADDR];
  pn_transport_t *t = pn_transport();
  if (sasl) pn_sasl_allowed_mechs(pn_sasl(t), "ANONYMOUS");
  pn_proactor_addr(addr, sizeof(addr), url->host, url->port);
  pn_proactor_connect2(proactor, c, t, addr);
}

static inline void sb_put_tag(pn_link_t *l, uint64_t seq, pn_delivery_t **out) {
  *out = pn_delivery(l, pn_dtag((const char *)&seq, sizeof(seq)));
}

static inline bool sb_get_tag(pn_delivery_t *d, uint64_t *seq) {
  pn_delivery_tag_t tag = pn_delivery_tag(d);
  if (tag.size != sizeof(uint64_t)) return false;
  memcpy(seq, tag.start, sizeof(uint64_t));
  return true;
}

/* Read the rest of a (possibly multi-frame) incoming delivery into *buf, growing it as
 * needed. Returns 1 when the message is complete, 0 when more frames are due, -1 on error
 * (aborted or link failure). */
static inline int sb_read_delivery(pn_delivery_t *d, pn_rwbytes_t *buf, size_t *cap) {
  pn_link_t *l = pn_delivery_link(d);
  size_t pending = pn_delivery_pending(d);
  ssize_t n;
  if (buf->size + pending > *cap) {
    size_t ncap = *cap ? *cap : 4096;
    while (ncap < buf->size + pending) ncap *= 2;
    buf->start = (char *)realloc(buf->start, ncap);
    if (!buf->start) {
      fprintf(stderr, "out of memory\n");
      exit(70);
    }
    *cap = ncap;
  }
  n = pn_link_recv(l, buf->start + buf->size, pending);
  if (n == PN_ABORTED) return -1;
  if (n < 0 && n != PN_EOS) return -1;
  if (n > 0) buf->size += (size_t)n;
  return pn_delivery_partial(d) ? 0 : 1;
}

#endif /* SB_COMMON_H */
