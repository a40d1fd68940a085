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
  sb_peer_t p; /* first: handlers cast sb_peer_t * back to app_t * */
  long count; /* 0: until timeout or signal */
  long credit;
  bool decode;
  bool latency; /* end-to-end latency from the stamps of sb_send --stamp */
  bool listen;
  const char *ready_file;

  pn_listener_t *listener;
  pn_link_t *receiver;
  pn_message_t *msg;
  pn_rwbytes_t buf;
  size_t bufcap;

  long received;
  long arrived_settled;
  long decode_errors;
  long aborted;
  uint64_t bytes;
  uint64_t first_ns, last_ns;
  uint64_t *lat_ns; /* one per stamped message, up to count */
  size_t nlat;
} app_t;

static void usage(void) {
  fprintf(stderr,
          "usage: %s -u amqp://HOST:PORT/ADDRESS [-c COUNT] [-C CREDIT] [--decode] [--latency]\n"
          "       [-t TIMEOUT_S] [--ready-file PATH] [--listen] [--no-sasl] [-i CONTAINER_ID]\n",
          PROG);
  exit(64);
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
  if (app->lat_ns && app->nlat < (size_t)app->count && app->buf.size >= SB_STAMP_LEN &&
      memcmp(app->buf.start + app->buf.size - SB_STAMP_LEN, SB_STAMP_MAGIC, SB_STAMP_LEN - 8) == 0) {
    uint64_t sent;
    memcpy(&sent, app->buf.start + app->buf.size - 8, 8);
    app->lat_ns[app->nlat++] = sb_now_ns() - sent;
  }
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
    app->p.done = true;
    sb_finish(&app->p);
  } else {
    replenish(app);
  }
}

/* Server side of --listen: answer the client's open/begin/attach. */
static void on_accept(app_t *app, pn_listener_t *listener) {
  pn_transport_t *t = pn_transport();
  if (app->p.conn) { /* one client only: refuse the rest */
    pn_listener_accept2(listener, NULL, NULL);
    return;
  }
  pn_transport_set_server(t);
  if (app->p.sasl) pn_sasl_allowed_mechs(pn_sasl(t), "ANONYMOUS");
  app->p.conn = pn_connection();
  pn_connection_set_container(app->p.conn, app->p.container_id);
  pn_listener_accept2(listener, app->p.conn, t);
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

static bool handle(sb_peer_t *p, pn_event_t *e) {
  app_t *app = (app_t *)p;
  switch (pn_event_type(e)) {
    case PN_LISTENER_OPEN:
      sb_touch_ready_file(app->ready_file);
      return true;
    case PN_LISTENER_ACCEPT:
      on_accept(app, pn_event_listener(e));
      return true;
    case PN_LISTENER_CLOSE:
      sb_peer_error(p, "listener closed", pn_listener_condition(pn_event_listener(e)));
      return false;
    case PN_CONNECTION_REMOTE_OPEN:
      if (app->listen && pn_event_connection(e) == p->conn) pn_connection_open(p->conn);
      return true;
    case PN_SESSION_REMOTE_OPEN:
      if (app->listen) pn_session_open(pn_event_session(e));
      return true;
    case PN_LINK_REMOTE_OPEN:
      if (app->listen && pn_link_state(pn_event_link(e)) & PN_LOCAL_UNINIT)
        on_server_link_open(app, pn_event_link(e));
      else if (pn_event_link(e) == app->receiver)
        sb_touch_ready_file(app->ready_file);
      return true;
    case PN_DELIVERY:
      on_delivery(app, pn_event_delivery(e));
      return true;
    case PN_TRANSPORT_CLOSED:
      if (pn_event_connection(e) != p->conn) return true; /* a refused extra client */
      return sb_handle_common(p, e);
    default:
      return sb_handle_common(p, e);
  }
}

static void print_result(app_t *app) {
  double secs = app->first_ns ? (double)(app->last_ns - app->first_ns) / 1e9 : 0.0;
  /* With COUNT 0 the run is meant to end by timeout or signal, so that is success. */
  bool ok = !app->p.error[0] && (app->p.done || (app->count == 0 && app->p.stopped));
  if (app->count > 0) sb_error_from_stopped(&app->p);
  sb_json_begin(&app->p, ok, true);
  printf(",\"count\":%ld,\"credit\":%ld,\"received\":%ld,\"bytes\":%" PRIu64
         ",\"arrived_settled\":%ld,\"aborted\":%ld,\"decode_errors\":%ld,"
         "\"seconds\":%.6f,\"msgs_per_sec\":%.1f,\"latency_us\":",
         app->count, app->credit, app->received, app->bytes, app->arrived_settled, app->aborted,
         app->decode_errors, secs, secs > 0 ? (double)(app->received - 1) / secs : 0.0);
  sb_json_latency(stdout, app->lat_ns, app->nlat);
  sb_json_end();
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"count", required_argument, 0, 'c'},      {"credit", required_argument, 0, 'C'},
      {"decode", no_argument, 0, 'd'},           {"ready-file", required_argument, 0, 'r'},
      {"listen", no_argument, 0, 'l'},           {"latency", no_argument, 0, 'L'},
      SB_COMMON_LONG_OPTIONS};
  app_t app;
  int opt;
  memset(&app, 0, sizeof(app));
  sb_peer_init(&app.p, PROG);
  app.count = 1000;
  app.credit = 1000;
  while ((opt = getopt_long(argc, argv, "c:C:dr:lL" SB_COMMON_SHORT_OPTIONS, opts, NULL)) != -1) {
    switch (opt) {
      case 'c': app.count = sb_parse_long(PROG, "count", optarg, 0, SB_MAX_COUNT); break;
      case 'C': app.credit = sb_parse_long(PROG, "credit", optarg, 1, 1L << 24); break;
      case 'd': app.decode = true; break;
      case 'r': app.ready_file = optarg; break;
      case 'l': app.listen = true; break;
      case 'L': app.latency = true; break;
      default: if (!sb_common_option(&app.p, opt, optarg)) usage();
    }
  }
  sb_check_args(&app.p, argc, usage);
  if (app.latency && app.count == 0) sb_die(PROG, "--latency needs --count");
  if (app.latency) {
    app.lat_ns = (uint64_t *)calloc((size_t)app.count, sizeof(uint64_t));
    if (!app.lat_ns) sb_die(PROG, "out of memory");
  }
  sb_install_signal_handlers();

  app.msg = pn_message();
  app.p.proactor = pn_proactor();
  if (app.listen) {
    char addr[PN_MAX_ADDR];
    pn_proactor_addr(addr, sizeof(addr), app.p.url.host, app.p.url.port);
    app.listener = pn_listener();
    pn_proactor_listen(app.p.proactor, app.listener, addr, 16);
  } else {
    app.receiver = pn_receiver(sb_open_session(&app.p), "sb_recv");
    pn_terminus_set_address(pn_link_source(app.receiver), app.p.url.address);
    pn_link_open(app.receiver);
    replenish(&app);
  }
  sb_run(&app.p, !app.listen, handle);
  print_result(&app);
  {
    int rc = sb_shutdown(&app.p);
    pn_message_free(app.msg);
    free(app.buf.start);
    free(app.lat_ns);
    return rc;
  }
}
