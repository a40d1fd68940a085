/*
 * sb_echo: echo responder for request/response benchmarks. Receives requests on one
 * address and sends each body back to the request's reply-to with the request's
 * correlation-id (or its message-id when no correlation-id is set). Prints one JSON line
 * when it has answered N requests, or at the timeout / SIGTERM when N is 0.
 *
 * Replies go on one sender link per reply-to address by default, which any AMQP server
 * accepts; --anonymous sends them all on one anonymous-relay link with the `to` field set
 * instead, which is what a router is expected to offer.
 */
#include "sb_common.h"

static const char *PROG = "sb_echo";

#define MAX_REPLY_LINKS 4096

typedef struct reply_link_t {
  char *address;
  pn_link_t *link;
} reply_link_t;

typedef struct app_t {
  sb_peer_t p; /* first: handlers cast sb_peer_t * back to app_t * */
  long count; /* 0: until timeout or signal */
  long credit;
  bool presettled;
  bool anonymous;
  const char *ready_file;

  pn_session_t *session;
  pn_link_t *receiver;
  pn_link_t *anon_sender;
  reply_link_t links[MAX_REPLY_LINKS];
  size_t nlinks;
  size_t last_hit;
  pn_message_t *msg;
  pn_rwbytes_t inbuf;
  size_t incap;
  pn_rwbytes_t encbuf;
  uint64_t next_tag;

  long requests;
  long replies_sent;
  long replies_settled;
  long no_reply_to;
  long bad_requests;
  sb_outcomes_t outcomes;
  uint64_t first_ns, last_ns;
} app_t;

static void usage(void) {
  fprintf(stderr,
          "usage: %s -u amqp://HOST:PORT/ADDRESS [-c COUNT] [-C CREDIT] [--presettled]\n"
          "       [--anonymous] [-t TIMEOUT_S] [--ready-file PATH] [--no-sasl] [-i CONTAINER_ID]\n",
          PROG);
  exit(64);
}

/* Replies that are buffered (no credit yet) or unacknowledged. Request credit is only
 * granted while this is below --credit, so a reply destination that stops granting credit
 * stops us from taking more requests instead of growing our memory. */
static long queued_replies(app_t *app) {
  long queued = 0;
  size_t i;
  if (app->anon_sender) queued += pn_link_queued(app->anon_sender);
  for (i = 0; i < app->nlinks; ++i) queued += pn_link_queued(app->links[i].link);
  return queued;
}

static long pending_replies(app_t *app) {
  return queued_replies(app) + (app->presettled ? 0 : app->replies_sent - app->replies_settled);
}

static void replenish(app_t *app) {
  pn_link_t *l = app->receiver;
  long outstanding = pn_link_credit(l);
  long target = app->credit - pending_replies(app);
  if (app->count > 0 && app->count - app->requests < target) target = app->count - app->requests;
  if (app->p.closing || target <= outstanding) return;
  if (outstanding <= target / 2) pn_link_flow(l, (int)(target - outstanding));
}

static void check_done(app_t *app) {
  if (app->p.closing || app->count == 0 || app->requests < app->count) return;
  if (!app->presettled && app->replies_settled < app->replies_sent) return;
  /* Closing the connection discards replies still waiting for credit, so wait until
   * every reply has been handed to the transport (re-checked on each tick). */
  if (queued_replies(app) > 0) return;
  app->p.done = true;
  sb_finish(&app->p);
}

static pn_link_t *reply_link_for(app_t *app, const char *address) {
  size_t i;
  pn_link_t *l;
  char name[64];
  if (app->anonymous) return app->anon_sender;
  if (app->nlinks > 0 && strcmp(app->links[app->last_hit].address, address) == 0)
    return app->links[app->last_hit].link;
  for (i = 0; i < app->nlinks; ++i) {
    if (strcmp(app->links[i].address, address) == 0) {
      app->last_hit = i;
      return app->links[i].link;
    }
  }
  if (app->nlinks == MAX_REPLY_LINKS) return NULL;
  snprintf(name, sizeof(name), "sb_echo-reply-%zu", app->nlinks);
  l = pn_sender(app->session, name);
  pn_terminus_set_address(pn_link_target(l), address);
  if (app->presettled) pn_link_set_snd_settle_mode(l, PN_SND_SETTLED);
  pn_link_open(l);
  app->links[app->nlinks].address = strdup(address);
  app->links[app->nlinks].link = l;
  app->last_hit = app->nlinks++;
  return l;
}

/* Turns the decoded request in app->msg into its reply and sends it. A request without
 * reply-to is a one-way message: counted, nothing sent. */
static void send_reply(app_t *app) {
  const char *rt = pn_message_get_reply_to(app->msg);
  char reply_to[1024];
  pn_link_t *l;
  pn_delivery_t *d;
  if (!rt || !rt[0] || strlen(rt) >= sizeof(reply_to)) {
    app->no_reply_to++;
    return;
  }
  strcpy(reply_to, rt);
  l = reply_link_for(app, reply_to);
  if (!l) {
    sb_peer_error(&app->p, "too many distinct reply-to addresses", NULL);
    sb_finish(&app->p);
    return;
  }
  if (pn_message_get_correlation_id(app->msg).type == PN_NULL)
    pn_message_set_correlation_id(app->msg, pn_message_get_id(app->msg));
  pn_message_set_address(app->msg, reply_to);
  pn_message_set_reply_to(app->msg, NULL);
  /* Sending without credit is allowed: Proton buffers the delivery on the link until
   * credit arrives, and pending_replies() bounds how many can pile up. */
  sb_put_tag(l, app->next_tag++, &d);
  if (pn_message_send(app->msg, l, &app->encbuf) < 0) {
    sb_peer_error(&app->p, "cannot encode reply", NULL);
    sb_finish(&app->p);
    return;
  }
  if (app->presettled) pn_delivery_settle(d);
  app->replies_sent++;
}

static void on_request(app_t *app, pn_delivery_t *d) {
  int r;
  bool decoded = false;
  if (!pn_delivery_readable(d)) return;
  r = sb_read_delivery(d, &app->inbuf, &app->incap);
  if (r == 0) return;
  if (r > 0 && pn_message_decode(app->msg, app->inbuf.start, app->inbuf.size) == 0) {
    decoded = true;
    send_reply(app);
  } else {
    app->bad_requests++;
  }
  app->inbuf.size = 0;
  if (!pn_delivery_settled(d)) pn_delivery_update(d, decoded ? PN_ACCEPTED : PN_REJECTED);
  pn_delivery_settle(d);
  app->last_ns = sb_now_ns();
  if (!app->first_ns) app->first_ns = app->last_ns;
  app->requests++;
  check_done(app);
  replenish(app);
}

static void on_reply_outcome(app_t *app, pn_delivery_t *d) {
  uint64_t state = pn_delivery_remote_state(d);
  if (!sb_is_terminal(state) && !pn_delivery_settled(d)) return;
  sb_count_outcome(&app->outcomes, state);
  pn_delivery_settle(d);
  app->replies_settled++;
  check_done(app);
  replenish(app);
}

static bool handle(sb_peer_t *p, pn_event_t *e) {
  app_t *app = (app_t *)p;
  switch (pn_event_type(e)) {
    case PN_LINK_REMOTE_OPEN:
      if (pn_event_link(e) == app->receiver) sb_touch_ready_file(app->ready_file);
      return true;
    case PN_LINK_FLOW:
      /* Credit on a reply link lets buffered replies go, which may free request credit. */
      replenish(app);
      check_done(app);
      return true;
    case PN_DELIVERY: {
      pn_delivery_t *d = pn_event_delivery(e);
      if (pn_link_is_sender(pn_delivery_link(d))) /* our only senders carry replies */
        on_reply_outcome(app, d);
      else
        on_request(app, d);
      return true;
    }
    case PN_PROACTOR_TIMEOUT:
      if (sb_tick_expired(p)) return false;
      /* Buffered replies may have been written since the last event. */
      replenish(app);
      check_done(app);
      pn_proactor_set_timeout(p->proactor, SB_TICK_MS);
      return true;
    default:
      return sb_handle_common(p, e);
  }
}

static void print_result(app_t *app) {
  double secs = app->first_ns ? (double)(app->last_ns - app->first_ns) / 1e9 : 0.0;
  bool ok = !app->p.error[0] && (app->p.done || (app->count == 0 && app->p.stopped));
  if (app->count > 0) sb_error_from_stopped(&app->p);
  sb_json_begin(&app->p, ok, true);
  printf(",\"count\":%ld,\"credit\":%ld,\"presettled\":%s,\"anonymous\":%s,\"requests\":%ld,"
         "\"replies_sent\":%ld,\"replies_settled\":%ld,\"no_reply_to\":%ld,"
         "\"bad_requests\":%ld,\"reply_links\":%zu,",
         app->count, app->credit, app->presettled ? "true" : "false",
         app->anonymous ? "true" : "false", app->requests, app->replies_sent,
         app->replies_settled, app->no_reply_to, app->bad_requests, app->nlinks);
  sb_json_outcomes(stdout, &app->outcomes);
  printf(",\"seconds\":%.6f,\"requests_per_sec\":%.1f", secs,
         secs > 0 ? (double)(app->requests - 1) / secs : 0.0);
  sb_json_end();
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"count", required_argument, 0, 'c'},      {"credit", required_argument, 0, 'C'},
      {"presettled", no_argument, 0, 'p'},       {"anonymous", no_argument, 0, 'a'},
      {"ready-file", required_argument, 0, 'r'}, SB_COMMON_LONG_OPTIONS};
  app_t app;
  int opt, rc;
  size_t i;
  memset(&app, 0, sizeof(app));
  sb_peer_init(&app.p, PROG);
  app.count = 0;
  app.credit = 100;
  while ((opt = getopt_long(argc, argv, "c:C:par:" SB_COMMON_SHORT_OPTIONS, opts, NULL)) != -1) {
    switch (opt) {
      case 'c': app.count = sb_parse_long(PROG, "count", optarg, 0, SB_MAX_COUNT); break;
      case 'C': app.credit = sb_parse_long(PROG, "credit", optarg, 1, 1L << 24); break;
      case 'p': app.presettled = true; break;
      case 'a': app.anonymous = true; break;
      case 'r': app.ready_file = optarg; break;
      default: if (!sb_common_option(&app.p, opt, optarg)) usage();
    }
  }
  sb_check_args(&app.p, argc, usage);
  sb_install_signal_handlers();

  app.msg = pn_message();
  app.p.proactor = pn_proactor();
  app.session = sb_open_session(&app.p);
  app.receiver = pn_receiver(app.session, "sb_echo-requests");
  pn_terminus_set_address(pn_link_source(app.receiver), app.p.url.address);
  pn_link_open(app.receiver);
  if (app.anonymous) {
    /* A sender with a null target address is the anonymous relay (AMQP 1.0 ANONYMOUS-RELAY). */
    app.anon_sender = pn_sender(app.session, "sb_echo-anonymous");
    if (app.presettled) pn_link_set_snd_settle_mode(app.anon_sender, PN_SND_SETTLED);
    pn_link_open(app.anon_sender);
  }
  replenish(&app);
  sb_run(&app.p, true, handle);
  print_result(&app);
  rc = sb_shutdown(&app.p);
  for (i = 0; i < app.nlinks; ++i) free(app.links[i].address);
  pn_message_free(app.msg);
  free(app.inbuf.start);
  free(app.encbuf.start);
  return rc;
}
