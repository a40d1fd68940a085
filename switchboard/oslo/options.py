"""The driver's options, in the ``[oslo_messaging_switchboard]`` group of a service's
configuration (oslo.config), with their defaults."""

from __future__ import annotations

from oslo_config import cfg

__all__ = ["GROUP", "OPTIONS", "register"]

GROUP = "oslo_messaging_switchboard"

OPTIONS = [
    cfg.FloatOpt("connect_timeout", default=10.0, min=0.1,
                 help="Seconds for one connection attempt to one router (TCP, TLS, SASL, open)."),
    cfg.FloatOpt("idle_timeout", default=10.0, min=0.0,
                 help="A router silent this long is taken for dead and the driver fails over to the "
                      "next one; the driver heartbeats at half the router's own idle timeout. 0: no "
                      "heartbeats."),
    cfg.FloatOpt("reconnect_max_delay", default=5.0, min=0.1,
                 help="The longest pause between two rounds of connection attempts over the router "
                      "list (the driver never stops trying while the service runs)."),
    cfg.FloatOpt("send_timeout", default=30.0, min=0.1,
                 help="Seconds a cast or a notification may wait for a router and a consumer before "
                      "send fails with MessagingTimeout (a call waits for its own timeout instead)."),
    cfg.FloatOpt("startup_timeout", default=60.0, min=0.1,
                 help="Seconds a server or notification listener waits, as it starts, for a router "
                      "to subscribe on."),
    cfg.IntOpt("rpc_prefetch", default=16, min=1,
               help="RPC requests an RPC server takes ahead of its workers. Requests beyond this "
                    "stay with the router, which hands them to another server of the topic."),
    cfg.IntOpt("notification_prefetch", default=64, min=1,
               help="Notifications a notification listener takes ahead of its workers."),
    cfg.FloatOpt("pool_discovery_timeout", default=0.5, min=0.0,
                 help="Seconds a notifier, before its first notification to an exchange, waits for "
                      "listener pools to announce themselves, so that each pool gets a copy from the "
                      "first notification on."),
    cfg.FloatOpt("pool_announce_interval", default=30.0, min=1.0,
                 help="Seconds between a pooled notification listener's announcements of its pool "
                      "(it also answers each notifier's question at once)."),
    cfg.FloatOpt("pool_memory", default=86400.0, min=1.0,
                 help="Seconds a notifier keeps sending to a pool it has not heard of since: a pool "
                      "whose listeners are gone for good stops getting copies (its queue then "
                      "expires as the router's queue settings say)."),
    cfg.FloatOpt("reply_retry_timeout", default=5.0, min=0.0,
                 help="Seconds an RPC server retries a reply the router could not deliver yet "
                      "before it drops it (the caller has gone)."),
]


def register(conf: cfg.ConfigOpts) -> cfg.ConfigOpts:
    """Register the options (idempotent) and return the group's values."""
    conf.register_opts(OPTIONS, group=GROUP)
    return getattr(conf, GROUP)
