/*
 * sb_send: send N messages of B bytes to one AMQP 1.0 address as fast as credit and a
 * window of unsettled deliveries allow, then print one JSON line with the rate, the
 * outcomes and the send->settle latency percentiles.
 *
 * Every message is the same pre-encoded bytes (a data section of B bytes) so that the
 * sender spends its CPU on the protocol, not on encoding; only the delivery tag differs.
 */
#include "sb_common.h"

static const char *PROG = "sb_send";

typedef struct app_t {
  sb_peer_t p; /* first: handlers cast sb_peer_t * back to app_t * */
  long count;
  long size;
  long window;
  bool presettled;
  bool durable; /* header durable=true: a broker must keep the message on disk */
  bool stamp;   /* the body ends with SB_STAMP_MAGIC and the send time */

  pn_link_t *sender;
  pn_rwbytes_t encoded;

  long sent;
  long settled;
  long unsettled;
  sb_outcomes_t outcomes;
  uint64_t *sent_at_ns; /* indexed by sequence, for latency */
  uint64_t *lat_ns;
  size_t nlat;

  uint64_t start_ns; /* end_ns: p.end_ns; done: p.done = every message sent (presettled) or settled */
} app_t;

static void usage(void) {
  fprintf(stderr,
          "usage: %s -u amqp://HOST:PORT/ADDRESS [-c COUNT] [-s BYTES] [-w WINDOW]\n"
          "       [--presettled] [--durable] [--stamp] [-t TIMEOUT_S] [--no-sasl]\n"
          "       [-i CONTAINER_ID]\n",
          PROG);
  exit(64);
}

static void encode_message(app_t *app) {
  pn_message_t *m = pn_message();
  char *body = (char *)malloc((size_t)app->size ? (size_t)app->size : 1);
  size_t cap = (size_t)app->size + 256;
  int err;
  memset(body, 'x', (size_t)app->size);
  if (app->stamp) memcpy(body + app->size - SB_STAMP_LEN, SB_STAMP_MAGIC, SB_STAMP_LEN - 8);
  pn_message_set_durable(m, app->durable);
  /* inferred=true makes a binary body a data section rather than an amqp-value. */
  pn_message_set_inferred(m, true);
  pn_data_put_binary(pn_message_body(m), pn_bytes((size_t)app->size, body));
  for (;;) {
    size_t len = cap;
    app->encoded.start = (char *)realloc(app->encoded.start, cap);
    err = pn_message_encode(m, app->encoded.start, &len);
    if (err == 0) {
      app->encoded.size = len;
      break;
    }
    if (err != PN_OVERFLOW) sb_die(PROG, "cannot encode message");
    cap *= 2;
  }
  free(body);
  pn_message_free(m);
}

static void pump(app_t *app) {
  pn_link_t *l = app->sender;
  if (app->p.closing || app->p.done) return;
  while (app->sent < app->count && pn_link_credit(l) > 0 &&
         (app->presettled || app->unsettled < app->window)) {
    pn_delivery_t *d;
    uint64_t seq = (uint64_t)app->sent;
    if (!app->start_ns) app->start_ns = sb_now_ns();
    sb_put_tag(l, seq, &d);
    if (app->stamp) {
      uint64_t now = sb_now_ns();
      memcpy(app->encoded.start + app->encoded.size - 8, &now, 8);
    }
    pn_link_send(l, app->encoded.start, app->encoded.size);
    pn_link_advance(l);
    if (app->presettled) {
      pn_delivery_settle(d);
    } else {
      app->sent_at_ns[seq] = sb_now_ns();
      app->unsettled++;
    }
    app->sent++;
  }
  if (app->presettled && app->sent == app->count) {
    /* Presettled deliveries need no reply: we are done once they are on their way. The
     * end time is taken at TRANSPORT_CLOSED so that it covers writing them out. */
    app->p.done = true;
    app->p.closing = true;
    pn_connection_close(app->p.conn);
  }
}

static void on_delivery(app_t *app, pn_delivery_t *d) {
  uint64_t state = pn_delivery_remote_state(d);
  uint64_t seq;
  /* Wait for a terminal outcome or a remote settle; non-terminal states (received) are
   * progress reports we do not count. */
  if (!sb_is_terminal(state) && !pn_delivery_settled(d)) return;
  sb_count_outcome(&app->outcomes, state);
  if (sb_get_tag(d, &seq) && seq < (uint64_t)app->count && app->sent_at_ns[seq]) {
    app->lat_ns[app->nlat++] = sb_now_ns() - app->sent_at_ns[seq];
    app->sent_at_ns[seq] = 0;
  }
  pn_delivery_settle(d);
  app->unsettled--;
  app->settled++;
  if (app->settled == app->count) {
    app->p.done = true;
    sb_finish(&app->p);
  } else {
    pump(app);
  }
}

static bool handle(sb_peer_t *p, pn_event_t *e) {
  app_t *app = (app_t *)p;
  switch (pn_event_type(e)) {
    case PN_LINK_FLOW:
      if (pn_event_link(e) == app->sender) pump(app);
      return true;
    case PN_DELIVERY:
      on_delivery(app, pn_event_delivery(e));
      return true;
    case PN_TRANSPORT_CLOSED:
      if (p->done && app->presettled) p->end_ns = sb_now_ns();
      return sb_handle_common(p, e);
    default:
      return sb_handle_common(p, e);
  }
}

static void print_result(app_t *app) {
  uint64_t end = app->p.end_ns ? app->p.end_ns : sb_now_ns();
  double secs = app->start_ns ? (double)(end - app->start_ns) / 1e9 : 0.0;
  long completed = app->presettled ? app->sent : app->settled;
  bool ok = !app->p.error[0] && !app->p.stopped && app->p.done;
  sb_error_from_stopped(&app->p);
  sb_json_begin(&app->p, ok, false);
  printf(",\"count\":%ld,\"size\":%ld,\"encoded_size\":%zu,\"presettled\":%s,\"durable\":%s,"
         "\"window\":%ld,\"sent\":%ld,\"settled\":%ld,",
         app->count, app->size, app->encoded.size, app->presettled ? "true" : "false",
         app->durable ? "true" : "false", app->window, app->sent, app->settled);
  sb_json_outcomes(stdout, &app->outcomes);
  printf(",\"seconds\":%.6f,\"msgs_per_sec\":%.1f,\"latency_us\":", secs,
         secs > 0 ? (double)completed / secs : 0.0);
  sb_json_latency(stdout, app->lat_ns, app->nlat);
  sb_json_end();
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"count", required_argument, 0, 'c'},  {"size", required_argument, 0, 's'},
      {"window", required_argument, 0, 'w'}, {"presettled", no_argument, 0, 'p'},
      {"durable", no_argument, 0, 'D'},      {"stamp", no_argument, 0, 'S'},
      SB_COMMON_LONG_OPTIONS};
  app_t app;
  int opt;
  memset(&app, 0, sizeof(app));
  sb_peer_init(&app.p, PROG);
  app.count = 1000;
  app.size = 100;
  app.window = 1000;
  while ((opt = getopt_long(argc, argv, "c:s:w:pDS" SB_COMMON_SHORT_OPTIONS, opts, NULL)) != -1) {
    switch (opt) {
      case 'c': app.count = sb_parse_long(PROG, "count", optarg, 1, SB_MAX_COUNT); break;
      case 's': app.size = sb_parse_long(PROG, "size", optarg, 0, 64L << 20); break;
      case 'w': app.window = sb_parse_long(PROG, "window", optarg, 1, 1L << 24); break;
      case 'p': app.presettled = true; break;
      case 'D': app.durable = true; break;
      case 'S': app.stamp = true; break;
      default: if (!sb_common_option(&app.p, opt, optarg)) usage();
    }
  }
  sb_check_args(&app.p, argc, usage);
  if (app.stamp && app.size < SB_STAMP_LEN) sb_die(PROG, "--stamp needs --size of at least 16");

  app.sent_at_ns = (uint64_t *)calloc((size_t)app.count, sizeof(uint64_t));
  app.lat_ns = (uint64_t *)calloc((size_t)app.count, sizeof(uint64_t));
  if (!app.sent_at_ns || !app.lat_ns) sb_die(PROG, "out of memory");
  encode_message(&app);
  sb_install_signal_handlers();

  app.p.proactor = pn_proactor();
  {
    pn_session_t *ssn = sb_open_session(&app.p);
    app.sender = pn_sender(ssn, "sb_send");
    pn_terminus_set_address(pn_link_target(app.sender), app.p.url.address);
    if (app.presettled) pn_link_set_snd_settle_mode(app.sender, PN_SND_SETTLED);
    pn_link_open(app.sender);
  }
  sb_run(&app.p, true, handle);
  print_result(&app);
  return sb_shutdown(&app.p);
}
