"""What a router tells about itself: the views ``$management`` and the admin listener share.

Each view is plain data (dicts, lists, strings, numbers, None), fit both for an AMQP
message body and for JSON, read from the core's state when asked: nothing is counted on
the hot path for them.  The two ways of asking answer from the same functions, so they
cannot drift apart.

* ``network``: the routers, inter-router links, costs and next hops (``plane.view``), the
  messages sent to and received from each neighbour since its connection opened, and this
  router's number of client connections;
* ``queues``: the queues this router hosts (``QueueManager.view``, with the age of each
  queue's oldest message, which the store answers later: ``queues_view`` takes a callback);
* ``connections``: id (as in the log), peer, role, user, container, TLS, age, AMQP bytes in and out;
* ``links``: each link's connection id, address, direction, credit, unsettled and delivered counts;
* ``addresses``: distribution, local consumers, senders, other routers with consumers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .core import RouterCore
    from .links import ClientConnection, Inbound, Outbound

__all__ = [
    "VIEWS", "network_view", "queues_view", "connections_view", "links_view", "addresses_view", "connection_name",
]

VIEWS = ("network", "queues", "connections", "links", "addresses")
_SEQ_MASK = 0xFFFFFFFF


def network_view(core: "RouterCore") -> dict[str, Any]:
    view = core.plane.view()
    view["clients"] = sum(1 for conn in core.connections if conn.role == "normal")
    return view


def queues_view(core: "RouterCore", done: Callable[[list[dict[str, Any]]], None]) -> None:
    """The hosted queues; ``done(rows)`` is called once the store has told each queue's
    oldest message (at once when there is no store)."""
    rows = core.queues.view()

    def with_ages(ages: dict[str, float | None]) -> None:
        for row in rows:
            row["oldest_age_seconds"] = ages.get(row["name"])
        done(rows)

    core.queues.oldest_ages(with_ages)


def connection_name(conn: "ClientConnection") -> str:
    """``HOST:PORT`` of the peer: what the other views call the connection by."""
    peer = conn.port.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        return f"{host}:{peer[1]}"
    return str(peer)


def connections_view(core: "RouterCore") -> list[dict[str, Any]]:
    now = core.clock()
    rows = []
    for conn in core.connections:
        port = conn.port
        engine = port.engine
        neighbour = conn.neighbour
        rows.append({
            "id": conn.id,
            "connection": connection_name(conn),
            "role": conn.role,
            "router": neighbour.router_id if neighbour is not None else None,
            "user": engine.user,
            "container": conn.container_id,
            "tls": _tls(port),
            "age_seconds": round(now - conn.opened_at, 3),
            "bytes_in": getattr(port, "bytes_in", None),
            "bytes_out": getattr(port, "bytes_out", None),
            "links_in": len(conn.inbound),
            "links_out": len(conn.outbound),
            "write_paused": bool(port.write_paused),
        })
    rows.sort(key=lambda row: (row["role"], row["connection"]))
    return rows


def _tls(port: Any) -> dict[str, Any] | None:
    transport = getattr(port, "transport", None)
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    return {"version": ssl_object.version(), "cipher": cipher[0] if cipher else None}


def links_view(core: "RouterCore") -> list[dict[str, Any]]:
    rows = []
    for conn in core.connections:
        name = connection_name(conn)
        for inbound in conn.inbound:
            rows.append({**_inbound_row(name, inbound), "connection_id": conn.id})
        for out in conn.outbound:
            rows.append({**_outbound_row(name, out), "connection_id": conn.id})
    rows.sort(key=lambda row: (row["connection"], row["direction"], row["name"]))
    return rows


def _inbound_row(connection: str, inbound: "Inbound") -> dict[str, Any]:
    link = inbound.link
    return {
        "connection": connection,
        "name": link.name,
        "direction": "in",
        "address": inbound.address.name if inbound.address is not None else None,
        "credit": link.credit,
        "unsettled": len(link.unsettled),
        "delivered": (inbound.routed - inbound.first_count) & _SEQ_MASK,
        "blocked": inbound.blocked,
        "neighbour": inbound.neighbour.router_id if inbound.neighbour is not None else None,
    }


def _outbound_row(connection: str, out: "Outbound") -> dict[str, Any]:
    link = out.link
    return {
        "connection": connection,
        "name": link.name,
        "direction": "out",
        "address": out.address.name,
        "credit": link.credit,
        "unsettled": len(link.unsettled),
        # The link's delivery-count: a drain that spends credit counts too (AMQP 2.6.7).
        "delivered": (link.delivery_count - out.first_count) & _SEQ_MASK,
        "backlog": len(out.backlog) if out.backlog is not None else 0,
        "neighbour": out.neighbour.router_id if out.neighbour is not None else None,
    }


def addresses_view(core: "RouterCore") -> list[dict[str, Any]]:
    """Addresses in use here, and those only other routers have consumers for."""
    remote = core.plane.remote
    rows = []
    seen = set()
    for address in core.addresses:
        seen.add(address.name)
        rows.append({
            "address": address.name,
            "distribution": address.distribution,
            "consumers": len(address.consumers),
            "senders": len(address.senders),
            "remote_routers": sorted(remote.get(address.name, ())),
            "next_hop_links": len(address.remote),
            "held_messages": address.held_messages,
            "held_bytes": address.held_bytes,
            "messages_in": address.messages_in,
            "messages_out": address.messages_out,
            "rate_in": round(address.rate_in, 1),
            "rate_out": round(address.rate_out, 1),
            "owner": address.owner,
            "queue": address.hosted is not None,
            "dynamic": address.dynamic,
        })
    for name, routers in remote.items():
        if name in seen or not routers:
            continue
        rows.append({
            "address": name,
            "distribution": core.addresses.distribution_of(name),
            "consumers": 0,
            "senders": 0,
            "remote_routers": sorted(routers),
            "next_hop_links": 0,
            "held_messages": 0,
            "held_bytes": 0,
            "messages_in": 0,
            "messages_out": 0,
            "rate_in": 0.0,
            "rate_out": 0.0,
            "owner": None,
            "queue": False,
            "dynamic": False,
        })
    rows.sort(key=lambda row: str(row["address"]))
    return rows
