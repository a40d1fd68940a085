/*
 * sb_recv: attach a receiver to one AMQP 1.0 address, keep up to C credit outstanding,
 * accept N messages (or run until the timeout when N is 0), then print one JSON line.
 *
 * The credit granted never exceeds the messages still wanted, so a source that hands out
 * messages presettled (as the Proton example broker does) loses none to a receiver that
 * is about to detach.
 *
 * With --listen it is the server instead: it listens on HOST:PORT, takes the first
 * connection and receives on the first link a client opens towards it, whatever its
 * address. That measures a sender with no broker or router in between.
 */

#include "sb_common.h"

static const char *PROG = "sb_recv";

typedef struct app_t {
  sb_url_t url;
  long count; /* 0: until timeout or signal */
  long credit;
  bool decode;
  bool sasl;
  bool listen;
  double timeout_s;
  const char *ready_file;
  char container_id[64];

  pn_proactor_t *proactor;
  pn_listener_t *listener;
  pn_connection_t *conn;
  pn_link_t *receiver;
  pn_message_t *msg;
  pn_rwbytes_t buf;
  size_t bufcap;

  long received;
  long arrived_settled;
  long decode_errors;
  long aborted;
  uint64_t bytes;
  uint64_t first_ns, last_ns, deadline_ns;
  bool done;
  bool closing;
  const char *stopped;
  char error[512];
} app_t;

static void usage(void) {
  fprintf(stderr,
          "usage: %s -u amqp://HOST:PORT/ADDRESS [-c COUNT] [-C CREDIT] [--decode]\n"
          "       [-t TIMEOUT_S] [--ready-file PATH] [--listen] [--no-sasl] [-i CONTAINER_ID]\n",
          PROG);
  exit(64);
}

static void finish(app_t *app) {
  if (app->closing) return;
  app->closing = true;
  pn_connection_close(app->conn);
}

/* Top credit back up to min(credit, still wanted), but only once it has fallen to half,
 * so that flow frames are batched instead of one per message. */
static void replenish(app_t *app) {
  pn_link_t *l = app->receiver;
  long outstanding = pn_link_credit(l);
  long target = app->credit;
  if (app->count > 0 && app->count - app->received < target) target = app->count - app->received;
  if (target > outstanding && outstanding <= target / 2) pn_link_flow(l, (int)(target - outstanding));
}

static void on_delivery(app_t *app, pn_delivery_t *d) {
  int r;
  if (!pn_delivery_readable(d)) return;
  r = sb_read_delivery(d, &app->buf, &app->bufcap);
  if (r == 0) return;
  if (r < 0) {
    /* An aborted delivery is not a message: drop its bytes and free its credit slot. */
    app->aborted++;
    app->buf.size = 0;
    pn_delivery_settle(d);
    replenish(app);
    return;
  }
  if (app->decode && pn_message_decode(app->msg, app->buf.start, app->buf.size) != 0)
    app->decode_errors++;
  app->bytes += app->buf.size;
  app->buf.size = 0;
  if (pn_delivery_settled(d)) {
    app->arrived_settled++;
  } else {
    pn_delivery_update(d, PN_ACCEPTED);
  }
  pn_delivery_settle(d);
  app->last_ns = sb_now_ns();
  if (!app->first_ns) app->first_ns = app->last_ns;
  app->received++;
  if (app->count > 0 && app->received >= app->count) {
    app->done = true;
    finish(app);
  } else {
    replenish(app);
  }
}

static void touch_ready_file(app_t *app) {
  FILE *f;
  if (!app->ready_file) return;
  f = fopen(app->ready_file, "w");
  if (f) fclose(f);
}

/* Server side of --listen: answer the client's open/begin/attach. */
static void on_accept(app_t *app, pn_listener_t *listener) {
  pn_transport_t *t = pn_transport();
  if (app->conn) { /* one client only: refuse the rest */
    pn_listener_accept2(listener, NULL, NULL);
    return;
  }
  pn_transport_set_server(t);
  if (app->sasl) pn_sasl_allowed_mechs(pn_sasl(t), "ANONYMOUS");
  app->conn = pn_connection();
  pn_connection_set_container(app->conn, app->container_id);
  pn_listener_accept2(listener, app->conn, t);
}

static void on_server_link_open(app_t *app, pn_link_t *l) {
  if (pn_link_is_receiver(l) && !app->receiver) {
    app->receiver = l;
    pn_terminus_copy(pn_link_target(l), pn_link_remote_target(l));
    pn_link_open(l);
    replenish(app);
  } else {
    pn_condition_set_name(pn_link_condition(l), "amqp:not-implemented");
    pn_link_open(l);
    pn_link_close(l);
  }
}

static bool handle(app_t *app, pn_event_t *e) {
  switch (pn_event_type(e)) {
    case PN_LISTENER_OPEN:
      touch_ready_file(app);
      break;
    case PN_LISTENER_ACCEPT:
      on_accept(app, pn_event_listener(e));
      break;
    case PN_LISTENER_CLOSE:
      sb_set_error(app->error, sizeof(app->error), "listener closed",
                   pn_listener_condition(pn_event_listener(e)));
      return false;
    case PN_CONNECTION_REMOTE_OPEN:
      if (app->listen && pn_event_connection(e) == app->conn) pn_connection_open(app->conn);
      break;
    case PN_SESSION_REMOTE_OPEN:
      if (app->listen) pn_session_open(pn_event_session(e));
      break;
    case PN_LINK_REMOTE_OPEN:
      if (app->listen && pn_link_state(pn_event_link(e)) & PN_LOCAL_UNINIT)
        on_server_link_open(app, pn_event_link(e));
      else if (pn_event_link(e) == app->receiver)
        touch_ready_file(app);
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
      if (pn_event_connection(e) != app->conn) break; /* a refused extra client */
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
  double secs = app->first_ns ? (double)(app->last_ns - app->first_ns) / 1e9 : 0.0;
  /* With COUNT 0 the run is meant to end by timeout or signal, so that is success. */
  bool ok = !app->error[0] && (app->done || (app->count == 0 && app->stopped));
  if (!app->error[0] && app->stopped && app->count > 0)
    snprintf(app->error, sizeof(app->error), "%s", app->stopped);
  printf("{\"peer\":\"sb_recv\",\"ok\":%s,\"error\":", ok ? "true" : "false");
  sb_json_str(stdout, app->error[0] ? app->error : NULL);
  printf(",\"stopped\":");
  sb_json_str(stdout, app->stopped);
  printf(",\"address\":");
  sb_json_str(stdout, app->url.address);
  printf(",\"count\":%ld,\"credit\":%ld,\"received\":%ld,\"bytes\":%" PRIu64
         ",\"arrived_settled\":%ld,\"aborted\":%ld,\"decode_errors\":%ld,"
         "\"seconds\":%.6f,\"msgs_per_sec\":%.1f}\n",
         app->count, app->credit, app->received, app->bytes, app->arrived_settled, app->aborted,
         app->decode_errors, secs, secs > 0 ? (double)(app->received - 1) / secs : 0.0);
  fflush(stdout);
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"url", required_argument, 0, 'u'},     {"count", required_argument, 0, 'c'},
      {"credit", required_argument, 0, 'C'},  {"decode", no_argument, 0, 'd'},
      {"timeout", required_argument, 0, 't'}, {"ready-file", required_argument, 0, 'r'},
      {"no-sasl", no_argument, 0, 'N'},       {"id", required_argument, 0, 'i'},
      {"listen", no_argument, 0, 'l'},        {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  app_t app;
  const char *url = NULL;
  int opt;
  memset(&app, 0, sizeof(app));
  app.count = 1000;
  app.credit = 1000;
  app.sasl = true;
  app.timeout_s = 60.0;
  snprintf(app.container_id, sizeof(app.container_id), "sb_recv-%ld", (long)getpid());
  while ((opt = getopt_long(argc, argv, "u:c:C:dt:r:Ni:lh", opts, NULL)) != -1) {
    switch (opt) {
      case 'u': url = optarg; break;
      case 'c': app.count = sb_parse_long(PROG, "count", optarg, 0, SB_MAX_COUNT); break;
      case 'C': app.credit = sb_parse_long(PROG, "credit", optarg, 1, 1L << 24); break;
      case 'd': app.decode = true; break;
      case 't': app.timeout_s = sb_parse_seconds(PROG, optarg); break;
      case 'r': app.ready_file = optarg; break;
      case 'N': app.sasl = false; break;
      case 'l': app.listen = true; break;
      case 'i': snprintf(app.container_id, sizeof(app.container_id), "%s", optarg); break;
      default: usage();
    }
  }
  if (!url || optind != argc) usage();
  if (!sb_parse_url(url, &app.url)) sb_die(PROG, "bad --url, expected amqp://HOST:PORT/ADDRESS");
  sb_install_signal_handlers();

  app.msg = pn_message();
  app.proactor = pn_proactor();
  app.deadline_ns = sb_now_ns() + (uint64_t)(app.timeout_s * 1e9);
  if (app.listen) {
    char addr[PN_MAX_ADDR];
    pn_proactor_addr(addr, sizeof(addr), app.url.host, app.url.port);
    app.listener = pn_listener();
    pn_proactor_listen(app.proactor, app.listener, addr, 16);
  } else {
    pn_session_t *ssn;
    app.conn = pn_connection();
    pn_connection_set_container(app.conn, app.container_id);
    pn_connection_open(app.conn);
    ssn = pn_session(app.conn);
    pn_session_open(ssn);
    app.receiver = pn_receiver(ssn, "sb_recv");
    pn_terminus_set_address(pn_link_source(app.receiver), app.url.address);
    pn_link_open(app.receiver);
    replenish(&app);
    sb_connect(app.proactor, app.conn, &app.url, app.sasl);
  }
  pn_proactor_set_timeout(app.proactor, SB_TICK_MS);

  for (bool running = true; running;) {
    pn_event_batch_t *batch = pn_proactor_wait(app.proactor);
    pn_event_t *e;
    while (running && (e = pn_event_batch_next(batch))) running = handle(&app, e);
    pn_proactor_done(app.proactor, batch);
  }
  print_result(&app);
  if (!app.stopped) pn_proactor_free(app.proactor);
  pn_message_free(app.msg);
  free(app.buf.start);
  return (app.error[0]) ? (app.stopped ? 2 : 1) : 0;
}
