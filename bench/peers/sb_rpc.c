/*
 * sb_rpc: request/response client. Sends N requests of B bytes to a service address with
 * reply-to set to its own reply address, keeps K requests in flight, matches replies by
 * correlation-id, and prints one JSON line with the call rate and round-trip percentiles.
 *
 * The reply address is a dynamic receiver (the peer names it) unless --reply-to gives a
 * fixed one; the Proton example broker does not support dynamic addresses.
 */
#include "sb_common.h"

static const char *PROG = "sb_rpc";

typedef struct app_t {
  sb_peer_t p; /* first: handlers cast sb_peer_t * back to app_t * */
  long count;
  long concurrency;
  long size;
  const char *fixed_reply_to;

  pn_link_t *sender;
  pn_link_t *receiver;
  char reply_to[1024];
  bool reply_ready;
  pn_message_t *request;
  pn_message_t *reply;
  pn_rwbytes_t encbuf;
  pn_rwbytes_t inbuf;
  size_t incap;
  char *body;

  long sent;
  long replied;
  long failed;      /* requests whose outcome means no reply will come */
  long unmatched;   /* replies with an unknown or repeated correlation-id */
  sb_outcomes_t outcomes;
  uint64_t *sent_at_ns; /* by sequence; 0 once answered */
  uint64_t *rtt_ns;
  size_t nrtt;

  uint64_t start_ns; /* end_ns: p.end_ns */
} app_t;

static void usage(void) {
  fprintf(stderr,
          "usage: %s -u amqp://HOST:PORT/SERVICE_ADDRESS [-c COUNT] [-k CONCURRENCY]\n"
          "       [-s BYTES] [--reply-to ADDRESS] [-t TIMEOUT_S] [--no-sasl] [-i CONTAINER_ID]\n",
          PROG);
  exit(64);
}

static long completed(const app_t *app) { return app->replied + app->failed; }

static void check_done(app_t *app) {
  if (completed(app) >= app->count) {
    app->p.done = true;
    sb_finish(&app->p);
  }
}

static void pump(app_t *app) {
  pn_link_t *l = app->sender;
  if (!app->reply_ready || app->p.closing) return;
  while (app->sent < app->count && pn_link_credit(l) > 0 &&
         app->sent - completed(app) < app->concurrency) {
    pn_delivery_t *d;
    uint64_t seq = (uint64_t)app->sent;
    pn_atom_t cid;
    cid.type = PN_ULONG;
    cid.u.as_ulong = seq;
    pn_message_set_correlation_id(app->request, cid);
    if (!app->start_ns) app->start_ns = sb_now_ns();
    sb_put_tag(l, seq, &d);
    app->sent_at_ns[seq] = sb_now_ns();
    if (pn_message_send(app->request, l, &app->encbuf) < 0) {
      sb_peer_error(&app->p, "cannot encode request", NULL);
      sb_finish(&app->p);
      return;
    }
    app->sent++;
  }
}

/* Outcome of one of our requests. Anything but accepted means no reply is coming, so the
 * request is finished as failed rather than left to hang until the timeout. */
static void on_request_outcome(app_t *app, pn_delivery_t *d) {
  uint64_t state = pn_delivery_remote_state(d);
  uint64_t seq;
  if (!sb_is_terminal(state) && !pn_delivery_settled(d)) return;
  sb_count_outcome(&app->outcomes, state);
  if (state != PN_ACCEPTED && sb_get_tag(d, &seq) && seq < (uint64_t)app->count &&
      app->sent_at_ns[seq]) {
    app->sent_at_ns[seq] = 0;
    app->failed++;
  }
  pn_delivery_settle(d);
  check_done(app);
  pump(app);
}

static void on_reply(app_t *app, pn_delivery_t *d) {
  int r;
  pn_atom_t cid;
  pn_link_t *l = pn_delivery_link(d);
  if (!pn_delivery_readable(d)) return;
  r = sb_read_delivery(d, &app->inbuf, &app->incap);
  if (r == 0) return;
  if (r > 0 && pn_message_decode(app->reply, app->inbuf.start, app->inbuf.size) == 0) {
    cid = pn_message_get_correlation_id(app->reply);
    if (cid.type == PN_ULONG && cid.u.as_ulong < (uint64_t)app->count &&
        app->sent_at_ns[cid.u.as_ulong]) {
      app->rtt_ns[app->nrtt++] = sb_now_ns() - app->sent_at_ns[cid.u.as_ulong];
      app->sent_at_ns[cid.u.as_ulong] = 0;
      app->replied++;
    } else {
      app->unmatched++;
    }
  } else {
    app->unmatched++;
  }
  app->inbuf.size = 0;
  if (!pn_delivery_settled(d)) pn_delivery_update(d, PN_ACCEPTED);
  pn_delivery_settle(d);
  /* Replies come only for requests in flight, so K credit is all the receiver needs. */
  if (pn_link_credit(l) <= app->concurrency / 2)
    pn_link_flow(l, (int)(app->concurrency - pn_link_credit(l)));
  check_done(app);
  pump(app);
}

static void on_receiver_open(app_t *app, pn_link_t *l) {
  const char *addr = app->fixed_reply_to;
  if (!addr) addr = pn_terminus_get_address(pn_link_remote_source(l));
  if (!addr || !addr[0] || strlen(addr) >= sizeof(app->reply_to)) {
    sb_peer_error(&app->p, "peer assigned no dynamic reply address", NULL);
    sb_finish(&app->p);
    return;
  }
  strcpy(app->reply_to, addr);
  pn_message_set_reply_to(app->request, app->reply_to);
  app->reply_ready = true;
  pump(app);
}

static bool handle(sb_peer_t *p, pn_event_t *e) {
  app_t *app = (app_t *)p;
  switch (pn_event_type(e)) {
    case PN_LINK_REMOTE_OPEN:
      if (pn_event_link(e) == app->receiver) on_receiver_open(app, app->receiver);
      return true;
    case PN_LINK_FLOW:
      if (pn_event_link(e) == app->sender) pump(app);
      return true;
    case PN_DELIVERY: {
      pn_delivery_t *d = pn_event_delivery(e);
      if (pn_delivery_link(d) == app->sender)
        on_request_outcome(app, d);
      else
        on_reply(app, d);
      return true;
    }
    default:
      return sb_handle_common(p, e);
  }
}

static void print_result(app_t *app) {
  uint64_t end = app->p.end_ns ? app->p.end_ns : sb_now_ns();
  double secs = app->start_ns ? (double)(end - app->start_ns) / 1e9 : 0.0;
  bool ok = !app->p.error[0] && !app->p.stopped && app->p.done && app->failed == 0;
  sb_error_from_stopped(&app->p);
  sb_json_begin(&app->p, ok, false);
  printf(",\"reply_to\":");
  sb_json_str(stdout, app->reply_to[0] ? app->reply_to : NULL);
  printf(",\"count\":%ld,\"size\":%ld,\"concurrency\":%ld,\"sent\":%ld,\"replied\":%ld,"
         "\"failed\":%ld,\"unmatched\":%ld,",
         app->count, app->size, app->concurrency, app->sent, app->replied, app->failed,
         app->unmatched);
  sb_json_outcomes(stdout, &app->outcomes);
  printf(",\"seconds\":%.6f,\"calls_per_sec\":%.1f,\"rtt_us\":", secs,
         secs > 0 ? (double)app->replied / secs : 0.0);
  sb_json_latency(stdout, app->rtt_ns, app->nrtt);
  sb_json_end();
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"count", required_argument, 0, 'c'},      {"concurrency", required_argument, 0, 'k'},
      {"size", required_argument, 0, 's'},       {"reply-to", required_argument, 0, 'r'},
      SB_COMMON_LONG_OPTIONS};
  app_t app;
  int opt, rc;
  memset(&app, 0, sizeof(app));
  sb_peer_init(&app.p, PROG);
  app.count = 1000;
  app.concurrency = 1;
  app.size = 100;
  while ((opt = getopt_long(argc, argv, "c:k:s:r:" SB_COMMON_SHORT_OPTIONS, opts, NULL)) != -1) {
    switch (opt) {
      case 'c': app.count = sb_parse_long(PROG, "count", optarg, 1, SB_MAX_COUNT); break;
      case 'k': app.concurrency = sb_parse_long(PROG, "concurrency", optarg, 1, 1L << 20); break;
      case 's': app.size = sb_parse_long(PROG, "size", optarg, 0, 64L << 20); break;
      case 'r': app.fixed_reply_to = optarg; break;
      default: if (!sb_common_option(&app.p, opt, optarg)) usage();
    }
  }
  sb_check_args(&app.p, argc, usage);

  app.sent_at_ns = (uint64_t *)calloc((size_t)app.count, sizeof(uint64_t));
  app.rtt_ns = (uint64_t *)calloc((size_t)app.count, sizeof(uint64_t));
  app.body = (char *)malloc((size_t)app.size + 1);
  if (!app.sent_at_ns || !app.rtt_ns || !app.body) sb_die(PROG, "out of memory");
  memset(app.body, 'r', (size_t)app.size);
  app.request = pn_message();
  app.reply = pn_message();
  pn_message_set_inferred(app.request, true);
  pn_data_put_binary(pn_message_body(app.request), pn_bytes((size_t)app.size, app.body));
  sb_install_signal_handlers();

  app.p.proactor = pn_proactor();
  {
    pn_session_t *ssn = sb_open_session(&app.p);
    app.receiver = pn_receiver(ssn, "sb_rpc-replies");
    if (app.fixed_reply_to)
      pn_terminus_set_address(pn_link_source(app.receiver), app.fixed_reply_to);
    else
      pn_terminus_set_dynamic(pn_link_source(app.receiver), true);
    pn_link_open(app.receiver);
    pn_link_flow(app.receiver, (int)app.concurrency);
    app.sender = pn_sender(ssn, "sb_rpc-requests");
    pn_terminus_set_address(pn_link_target(app.sender), app.p.url.address);
    pn_link_open(app.sender);
  }
  sb_run(&app.p, true, handle);
  print_result(&app);
  rc = sb_shutdown(&app.p);
  pn_message_free(app.request);
  pn_message_free(app.reply);
  free(app.encbuf.start);
  free(app.inbuf.start);
  free(app.body);
  if (rc) return rc;
  return app.failed ? 1 : 0;
}
