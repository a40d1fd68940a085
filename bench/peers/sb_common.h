/*
 * Shared helpers for the Switchboard benchmark peers (sb_send, sb_recv, sb_rpc, sb_echo).
 *
 * Each peer is a single-threaded Qpid Proton proactor loop that prints exactly one JSON
 * object on stdout when it ends, so that bench/_peers.py can parse it. Everything here is
 * header-only to keep each peer a one-command gcc build: the low-level helpers first, then
 * the shared peer core (sb_peer_t) that owns options, connection, event loop and result
 * head, leaving each peer only its own links, counters and JSON fields.
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

/* End-to-end timestamps (sb_send --stamp, sb_recv --latency): the last SB_STAMP_LEN bytes
 * of the body are SB_STAMP_MAGIC followed by the send time from sb_now_ns() in host byte
 * order. CLOCK_MONOTONIC is one clock for every process on the machine, so the receiver
 * can subtract it from its own reading. The body is the last section of the messages the
 * peers send (no footer), so the stamp is the last bytes of the delivery as well. */
#define SB_STAMP_MAGIC "sb-stamp"
#define SB_STAMP_LEN 16

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

/* ------------------------------------------------------------------ the shared peer core
 *
 * Every peer embeds an sb_peer_t as the FIRST member of its own app_t, so that the shared
 * code below (option parsing, connection setup, the proactor loop, the common event cases,
 * the head of the JSON line) works on the sb_peer_t and the peer's own handler can cast
 * the sb_peer_t * back to its app_t *. */

typedef struct sb_peer_t {
  const char *prog;    /* also the "peer" field of the JSON line */
  const char *url_arg; /* -u as given */
  sb_url_t url;
  bool sasl;
  double timeout_s;
  char container_id[64];

  pn_proactor_t *proactor;
  pn_connection_t *conn;

  uint64_t end_ns, deadline_ns;
  bool done;           /* the peer's work is complete */
  bool closing;
  const char *stopped; /* why the run ended early ("signal", "timeout"), or NULL */
  char error[512];
} sb_peer_t;

/* Peer event handler: returns false when the event loop should stop. */
typedef bool sb_handler_t(sb_peer_t *p, pn_event_t *e);

/* Long and short options every peer takes; each peer lists its own before these. */
#define SB_COMMON_LONG_OPTIONS                                                   \
  {"url", required_argument, 0, 'u'}, {"timeout", required_argument, 0, 't'},   \
      {"no-sasl", no_argument, 0, 'N'}, {"id", required_argument, 0, 'i'},       \
      {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}
#define SB_COMMON_SHORT_OPTIONS "u:t:Ni:h"

static inline void sb_peer_init(sb_peer_t *p, const char *prog) {
  p->prog = prog;
  p->sasl = true;
  p->timeout_s = 60.0;
  snprintf(p->container_id, sizeof(p->container_id), "%s-%ld", prog, (long)getpid());
}

/* Handles one of the SB_COMMON options; false for any other option character. */
static inline bool sb_common_option(sb_peer_t *p, int opt, const char *arg) {
  switch (opt) {
    case 'u': p->url_arg = arg; return true;
    case 't': p->timeout_s = sb_parse_seconds(p->prog, arg); return true;
    case 'N': p->sasl = false; return true;
    case 'i': snprintf(p->container_id, sizeof(p->container_id), "%s", arg); return true;
    default: return false;
  }
}

/* After getopt: -u is required, no positional arguments are allowed. */
static inline void sb_check_args(sb_peer_t *p, int argc, void (*usage)(void)) {
  if (!p->url_arg || optind != argc) usage();
  if (!sb_parse_url(p->url_arg, &p->url))
    sb_die(p->prog, "bad --url, expected amqp://HOST:PORT/ADDRESS");
}

static inline void sb_peer_error(sb_peer_t *p, const char *what, pn_condition_t *cond) {
  sb_set_error(p->error, sizeof(p->error), what, cond);
}

/* Start closing the connection (once); the end time is the first close request. */
static inline void sb_finish(sb_peer_t *p) {
  if (p->closing) return;
  p->closing = true;
  if (!p->end_ns) p->end_ns = sb_now_ns();
  pn_connection_close(p->conn);
}

/* Creates the proactor and the (not yet connected) connection with one open session. */
static inline pn_session_t *sb_open_session(sb_peer_t *p) {
  pn_session_t *ssn;
  p->conn = pn_connection();
  pn_connection_set_container(p->conn, p->container_id);
  pn_connection_open(p->conn);
  ssn = pn_session(p->conn);
  pn_session_open(ssn);
  return ssn;
}

/* True when the run must stop at this tick (signal or deadline), recording why. */
static inline bool sb_tick_expired(sb_peer_t *p) {
  if (sb_signalled) {
    p->stopped = "signal";
    return true;
  }
  if (sb_now_ns() >= p->deadline_ns) {
    p->stopped = "timeout";
    return true;
  }
  return false;
}

/* The event cases every peer treats alike: the peer closing things on us, the end of the
 * transport, the tick and inactivity. Peers call it for every event they do not handle. */
static inline bool sb_handle_common(sb_peer_t *p, pn_event_t *e) {
  switch (pn_event_type(e)) {
    case PN_LINK_REMOTE_CLOSE:
    case PN_LINK_REMOTE_DETACH:
      sb_peer_error(p, "link closed by peer", pn_link_remote_condition(pn_event_link(e)));
      sb_finish(p);
      break;
    case PN_SESSION_REMOTE_CLOSE:
      sb_peer_error(p, "session closed by peer",
                    pn_session_remote_condition(pn_event_session(e)));
      sb_finish(p);
      break;
    case PN_CONNECTION_REMOTE_CLOSE:
      if (!p->closing)
        sb_peer_error(p, "connection closed by peer",
                      pn_connection_remote_condition(pn_event_connection(e)));
      sb_finish(p);
      break;
    case PN_TRANSPORT_CLOSED:
      if (!p->done)
        sb_peer_error(p, "transport closed", pn_transport_condition(pn_event_transport(e)));
      /* One connection per peer: once it is gone there is nothing left to wait for (the
       * pending tick timeout would otherwise hold off PN_PROACTOR_INACTIVE). */
      return false;
    case PN_PROACTOR_TIMEOUT:
      if (sb_tick_expired(p)) return false;
      pn_proactor_set_timeout(p->proactor, SB_TICK_MS);
      break;
    case PN_PROACTOR_INACTIVE:
      return false;
    default:
      break;
  }
  return true;
}

/* Arms the deadline, connects p->conn unless the peer listens instead, and runs the
 * proactor loop until the handler says stop. */
static inline void sb_run(sb_peer_t *p, bool connect, sb_handler_t *handle) {
  p->deadline_ns = sb_now_ns() + (uint64_t)(p->timeout_s * 1e9);
  if (connect) sb_connect(p->proactor, p->conn, &p->url, p->sasl);
  pn_proactor_set_timeout(p->proactor, SB_TICK_MS);
  for (bool running = true; running;) {
    pn_event_batch_t *batch = pn_proactor_wait(p->proactor);
    pn_event_t *e;
    while (running && (e = pn_event_batch_next(batch))) running = handle(p, e);
    pn_proactor_done(p->proactor, batch);
  }
}

/* Frees the proactor, except on early stop: pn_proactor_free would wait on a peer that
 * may be hung. Returns the exit status: 0, 1 on error, 2 when stopped early. */
static inline int sb_shutdown(sb_peer_t *p) {
  if (!p->stopped) pn_proactor_free(p->proactor);
  return p->error[0] ? (p->stopped ? 2 : 1) : 0;
}

/* Prints the head of the JSON line: {"peer":..,"ok":..,"error":..[,"stopped":..],
 * "address":..  The caller continues with its own ",field":value pairs and sb_json_end. */
static inline void sb_json_begin(sb_peer_t *p, bool ok, bool with_stopped) {
  printf("{\"peer\":");
  sb_json_str(stdout, p->prog);
  printf(",\"ok\":%s,\"error\":", ok ? "true" : "false");
  sb_json_str(stdout, p->error[0] ? p->error : NULL);
  if (with_stopped) {
    printf(",\"stopped\":");
    sb_json_str(stdout, p->stopped);
  }
  printf(",\"address\":");
  sb_json_str(stdout, p->url.address);
}

static inline void sb_json_end(void) {
  printf("}\n");
  fflush(stdout);
}

/* An early stop with no other error is reported as the error. */
static inline void sb_error_from_stopped(sb_peer_t *p) {
  if (!p->error[0] && p->stopped) snprintf(p->error, sizeof(p->error), "%s", p->stopped);
}

/* --ready-file: created once the peer is attached (or listening). */
static inline void sb_touch_ready_file(const char *path) {
  FILE *f;
  if (!path) return;
  f = fopen(path, "w");
  if (f) fclose(f);
}

#endif /* SB_COMMON_H */
