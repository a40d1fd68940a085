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
  sb_url_t url;
  long count;
  long size;
  long window;
  bool presettled;
  bool sasl;
  double timeout_s;
  char container_id[64];

  pn_proactor_t *proactor;
  pn_connection_t *conn;
  pn_link_t *sender;
  pn_rwbytes_t encoded;

  long sent;
  long settled;
  long unsettled;
  sb_outcomes_t outcomes;
  uint64_t *sent_at_ns; /* indexed by sequence, for latency */
  uint64_t *lat_ns;
  size_t nlat;

  uint64_t start_ns, end_ns, deadline_ns;
  bool done;      /* every message sent (presettled) or settled */
  bool closing;
  const char *stopped; /* why the run ended early, or NULL */
  char error[512];
} app_t;

static void usage(void) {
  fprintf(stderr,
          "usage: %s -u amqp://HOST:PORT/ADDRESS [-c COUNT] [-s BYTES] [-w WINDOW]\n"
          "       [--presettled] [-t TIMEOUT_S] [--no-sasl] [-i CONTAINER_ID]\n",
          PROG);
  exit(64);
}

static void encode_message(app_t *app) {
  pn_message_t *m = pn_message();
  char *body = (char *)malloc((size_t)app->size ? (size_t)app->size : 1);
  size_t cap = (size_t)app->size + 256;
  int err;
  memset(body, 'x', (size_t)app->size);
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

static void finish(app_t *app) {
  if (app->closing) return;
  app->closing = true;
  if (!app->end_ns) app->end_ns = sb_now_ns();
  pn_connection_close(app->conn);
}

static void pump(app_t *app) {
  pn_link_t *l = app->sender;
  if (app->closing || app->done) return;
  while (app->sent < app->count && pn_link_credit(l) > 0 &&
         (app->presettled || app->unsettled < app->window)) {
    pn_delivery_t *d;
    uint64_t seq = (uint64_t)app->sent;
    if (!app->start_ns) app->start_ns = sb_now_ns();
    sb_put_tag(l, seq, &d);
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
    app->done = true;
    app->closing = true;
    pn_connection_close(app->conn);
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
    app->done = true;
    finish(app);
  } else {
    pump(app);
  }
}

/* Returns false when the event loop should stop. */
static bool handle(app_t *app, pn_event_t *e) {
  switch (pn_event_type(e)) {
    case PN_LINK_FLOW:
      if (pn_event_link(e) == app->sender) pump(app);
      break;
    case PN_DELIVERY:
      on_delivery(app, pn_event_delivery(e));
      break;
    case PN_LINK_REMOTE_CLOSE:
    case PN_LINK_REMOTE_DETACH:
      sb_set_error(app->error, sizeof(app->error), "link closed by peer",
                   pn_link_remote_condition(pn_event_link(e)));
      finish(app);
      break;
    case PN_SESSION_REMOTE_CLOSE:
      sb_set_error(app->error, sizeof(app->error), "session closed by peer",
                   pn_session_remote_condition(pn_event_session(e)));
      finish(app);
      break;
    case PN_CONNECTION_REMOTE_CLOSE:
      if (!app->closing)
        sb_set_error(app->error, sizeof(app->error), "connection closed by peer",
                     pn_connection_remote_condition(pn_event_connection(e)));
      finish(app);
      break;
    case PN_TRANSPORT_CLOSED:
      if (app->done && app->presettled) app->end_ns = sb_now_ns();
      if (!app->done)
        sb_set_error(app->error, sizeof(app->error), "transport closed",
                     pn_transport_condition(pn_event_transport(e)));
      /* One connection per peer: once it is gone there is nothing left to wait for (the
       * pending tick timeout would otherwise hold off PN_PROACTOR_INACTIVE). */
      return false;
    case PN_PROACTOR_TIMEOUT:
      if (sb_signalled) {
        app->stopped = "signal";
        return false;
      }
      if (sb_now_ns() >= app->deadline_ns) {
        app->stopped = "timeout";
        return false;
      }
      pn_proactor_set_timeout(app->proactor, SB_TICK_MS);
      break;
    case PN_PROACTOR_INACTIVE:
      return false;
    default:
      break;
  }
  return true;
}

static void print_result(app_t *app) {
  uint64_t end = app->end_ns ? app->end_ns : sb_now_ns();
  double secs = app->start_ns ? (double)(end - app->start_ns) / 1e9 : 0.0;
  long completed = app->presettled ? app->sent : app->settled;
  bool ok = !app->error[0] && !app->stopped && app->done;
  if (!app->error[0] && app->stopped) snprintf(app->error, sizeof(app->error), "%s", app->stopped);
  printf("{\"peer\":\"sb_send\",\"ok\":%s,\"error\":", ok ? "true" : "false");
  sb_json_str(stdout, app->error[0] ? app->error : NULL);
  printf(",\"address\":");
  sb_json_str(stdout, app->url.address);
  printf(",\"count\":%ld,\"size\":%ld,\"encoded_size\":%zu,\"presettled\":%s,\"window\":%ld,"
         "\"sent\":%ld,\"settled\":%ld,",
         app->count, app->size, app->encoded.size, app->presettled ? "true" : "false",
         app->window, app->sent, app->settled);
  sb_json_outcomes(stdout, &app->outcomes);
  printf(",\"seconds\":%.6f,\"msgs_per_sec\":%.1f,\"latency_us\":", secs,
         secs > 0 ? (double)completed / secs : 0.0);
  sb_json_latency(stdout, app->lat_ns, app->nlat);
  printf("}\n");
  fflush(stdout);
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"url", required_argument, 0, 'u'},     {"count", required_argument, 0, 'c'},
      {"size", required_argument, 0, 's'},    {"window", required_argument, 0, 'w'},
      {"presettled", no_argument, 0, 'p'},    {"timeout", required_argument, 0, 't'},
      {"no-sasl", no_argument, 0, 'N'},       {"id", required_argument, 0, 'i'},
      {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
  app_t app;
  const char *url = NULL;
  int opt;
  memset(&app, 0, sizeof(app));
  app.count = 1000;
  app.size = 100;
  app.window = 1000;
  app.sasl = true;
  app.timeout_s = 60.0;
  snprintf(app.container_id, sizeof(app.container_id), "sb_send-%ld", (long)getpid());
  while ((opt = getopt_long(argc, argv, "u:c:s:w:pt:Ni:h", opts, NULL)) != -1) {
    switch (opt) {
      case 'u': url = optarg; break;
      case 'c': app.count = sb_parse_long(PROG, "count", optarg, 1, SB_MAX_COUNT); break;
      case 's': app.size = sb_parse_long(PROG, "size", optarg, 0, 64L << 20); break;
      case 'w': app.window = sb_parse_long(PROG, "window", optarg, 1, 1L << 24); break;
      case 'p': app.presettled = true; break;
      case 't': app.timeout_s = sb_parse_seconds(PROG, optarg); break;
      case 'N': app.sasl = false; break;
      case 'i': snprintf(app.container_id, sizeof(app.container_id), "%s", optarg); break;
      default: usage();
    }
  }
  if (!url || optind != argc) usage();
  if (!sb_parse_url(url, &app.url)) sb_die(PROG, "bad --url, expected amqp://HOST:PORT/ADDRESS");

  app.sent_at_ns = (uint64_t *)calloc((size_t)app.count, sizeof(uint64_t));
  app.lat_ns = (uint64_t *)calloc((size_t)app.count, sizeof(uint64_t));
  if (!app.sent_at_ns || !app.lat_ns) sb_die(PROG, "out of memory");
  encode_message(&app);
  sb_install_signal_handlers();

  app.proactor = pn_proactor();
  app.conn = pn_connection();
  pn_connection_set_container(app.conn, app.container_id);
  pn_connection_open(app.conn);
  {
    pn_session_t *ssn = pn_session(app.conn);
    pn_session_open(ssn);
    app.sender = pn_sender(ssn, "sb_send");
    pn_terminus_set_address(pn_link_target(app.sender), app.url.address);
    if (app.presettled) pn_link_set_snd_settle_mode(app.sender, PN_SND_SETTLED);
    pn_link_open(app.sender);
  }
  app.deadline_ns = sb_now_ns() + (uint64_t)(app.timeout_s * 1e9);
  sb_connect(app.proactor, app.conn, &app.url, app.sasl);
  pn_proactor_set_timeout(app.proactor, SB_TICK_MS);

  for (bool running = true; running;) {
    pn_event_batch_t *batch = pn_proactor_wait(app.proactor);
    pn_event_t *e;
    while (running && (e = pn_event_batch_next(batch))) running = handle(&app, e);
    pn_proactor_done(app.proactor, batch);
  }
  print_result(&app);
  /* Skip pn_proactor_free on early stop: it would wait on a peer that may be hung. */
  if (!app.stopped) pn_proactor_free(app.proactor);
  return app.error[0] ? (app.stopped ? 2 : 1) : 0;
}
