"""A router's views as tables for people (``switchboard stat``, ``network``, ``queues list``).

Each function takes a view as the router answers it (``router/views.py``; the same data
``--json`` prints raw) and returns the text to print.  Tables are drawn by ``rich``,
which sizes the columns to the terminal; when the output is not a terminal (a pipe, a
file) lines are not wrapped, so ``grep`` and ``awk`` see one row per line.  Byte counts
and ages are shown in units people read (``1.5 MiB``, ``3m 12s``); JSON keeps them raw.
"""

from __future__ import annotations

import io
import shutil
import sys
from typing import Any, Callable, Iterable

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table

__all__ = [
    "TABLES", "connections_table", "links_table", "addresses_table", "queues_table", "network_table",
    "human_bytes", "human_seconds",
]

NOT_A_TERMINAL_WIDTH = 400
"""Width given to rich when printing to a pipe: wide enough that no row wraps."""


def human_bytes(count: Any) -> str:
    """``1536`` -> ``1.5 KiB``; ``-`` when unknown."""
    if not isinstance(count, (int, float)) or isinstance(count, bool):
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_seconds(seconds: Any) -> str:
    """``192.4`` -> ``3m 12s``; ``-`` when unknown."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _table(title: str | None, columns: Iterable[tuple[str, str]]) -> Table:
    """A table of ``(header, justify)`` columns in the style every view shares."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  header_style="bold")
    for header, justify in columns:
        table.add_column(header, justify=justify, no_wrap=justify == "right")  # type: ignore[arg-type]
    return table


def render(*renderables: RenderableType) -> str:
    """The renderables as text: colours and terminal width when stdout is a terminal."""
    terminal = sys.stdout.isatty()
    width = shutil.get_terminal_size().columns if terminal else NOT_A_TERMINAL_WIDTH
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=terminal, no_color=not terminal,
                      highlight=False, emoji=False, soft_wrap=not terminal)
    for index, renderable in enumerate(renderables):
        if index:
            console.print()
        console.print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").split("\n"))


def connections_table(rows: list[dict[str, Any]]) -> str:
    """Peer, role, who (user, container or router), TLS, age, bytes each way, links."""
    if not rows:
        return "(no connections)"
    table = _table(None, [
        ("CONNECTION", "left"), ("ROLE", "left"), ("USER", "left"), ("CONTAINER / ROUTER", "left"),
        ("TLS", "left"), ("AGE", "right"), ("BYTES IN", "right"), ("BYTES OUT", "right"),
        ("LINKS IN", "right"), ("LINKS OUT", "right"), ("PAUSED", "left"),
    ])
    for row in rows:
        tls = row.get("tls")
        who = f"router {row['router']}" if row.get("router") else row.get("container")
        table.add_row(
            _text(row.get("connection")), _text(row.get("role")), _text(row.get("user")), _text(who),
            _text(tls.get("version") if isinstance(tls, dict) else None), human_seconds(row.get("age_seconds")),
            human_bytes(row.get("bytes_in")), human_bytes(row.get("bytes_out")),
            _text(row.get("links_in")), _text(row.get("links_out")), "paused" if row.get("write_paused") else "",
        )
    return render(table)


def links_table(rows: list[dict[str, Any]]) -> str:
    """Each link: its connection, direction, address, credit, unsettled, delivered, and
    what holds it (a sender without credit, a consumer's backlog of copies)."""
    if not rows:
        return "(no links)"
    table = _table(None, [
        ("CONNECTION", "left"), ("DIR", "left"), ("ADDRESS", "left"), ("CREDIT", "right"),
        ("UNSETTLED", "right"), ("DELIVERED", "right"), ("BACKLOG", "right"), ("BLOCKED", "left"),
        ("ROUTER", "left"), ("NAME", "left"),
    ])
    for row in rows:
        incoming = row.get("direction") == "in"
        table.add_row(
            _text(row.get("connection")), _text(row.get("direction")), _text(row.get("address")),
            _text(row.get("credit")), _text(row.get("unsettled")), _text(row.get("delivered")),
            "" if incoming else _text(row.get("backlog")), ("blocked" if row.get("blocked") else "") if incoming else "",
            _text(row.get("neighbour")) if row.get("neighbour") else "", _text(row.get("name")),
        )
    return render(table)


def addresses_table(rows: list[dict[str, Any]]) -> str:
    """Each address in use: distribution, consumers here and routers with consumers
    elsewhere, senders, messages per second in and out, messages held, and what kind of
    address it is."""
    if not rows:
        return "(no addresses)"
    table = _table(None, [
        ("ADDRESS", "left"), ("DISTRIBUTION", "left"), ("CONSUMERS", "right"), ("SENDERS", "right"),
        ("REMOTE ROUTERS", "left"), ("IN/S", "right"), ("OUT/S", "right"), ("HELD", "right"),
        ("HELD BYTES", "right"), ("KIND", "left"),
    ])
    for row in rows:
        kinds = [kind for kind in ("queue", "dynamic") if row.get(kind)]
        if row.get("owner"):
            kinds.append(f"of {row['owner']}")
        table.add_row(
            _text(row.get("address")), _text(row.get("distribution")), _text(row.get("consumers")),
            _text(row.get("senders")), ", ".join(row.get("remote_routers") or []) or "-",
            _rate(row.get("rate_in")), _rate(row.get("rate_out")), _text(row.get("held_messages")), human_bytes(row.get("held_bytes")), " ".join(kinds),
        )
    return render(table)


def _rate(value: Any) -> str:
    return f"{value:,.1f}" if isinstance(value, (int, float)) else "-"


def queues_table(rows: list[dict[str, Any]]) -> str:
    """The hosted queues: depth, bytes, unacked, consumers (here and through other
    routers), senders, age of the oldest message, state."""
    if not rows:
        return "(no queues)"
    table = _table(None, [
        ("QUEUE", "left"), ("DEPTH", "right"), ("BYTES", "right"), ("UNACKED", "right"),
        ("CONSUMERS", "right"), ("SENDERS", "right"), ("OLDEST", "right"), ("STATE", "left"),
    ])
    for row in rows:
        consumers = (row.get("consumers") or 0) + (row.get("remote_consumers") or 0)
        table.add_row(
            _text(row.get("name")), _text(row.get("depth")), human_bytes(row.get("bytes")),
            _text(row.get("unacked")), str(consumers), _text(row.get("senders")),
            human_seconds(row.get("oldest_age_seconds")), _text(row.get("state")),
        )
    return render(table)


def network_table(view: dict[str, Any]) -> str:
    """The routers this one knows (reachable or not, cost, next hop) and its neighbours."""
    routers = _table(f"router {view.get('router')} (instance {view.get('instance')}): routers of the network", [
        ("ROUTER", "left"), ("REACHABLE", "left"), ("COST", "right"), ("NEXT HOP", "left"), ("ADDRESSES", "right"),
    ])
    for entry in view.get("routers") or []:
        is_self = entry.get("id") == view.get("router")
        routers.add_row(
            _text(entry.get("id")) + (" (this router)" if is_self else ""), _text(entry.get("reachable")),
            _text(entry.get("cost")), "-" if is_self else _text(entry.get("next_hop")), _text(entry.get("addresses")),
        )
    neighbours = _table("neighbours (connected routers)", [
        ("ROUTER", "left"), ("STATE", "left"), ("COST", "right"), ("FROM", "left"), ("ADDRESS LINKS", "right"),
    ])
    for n in view.get("neighbours") or []:
        neighbours.add_row(_text(n.get("router")), "up" if n.get("up") else "connecting", _text(n.get("cost")),
                           _text(n.get("host")), _text(n.get("address_links")))
    if not view.get("neighbours"):
        neighbours.add_row("(none)", "", "", "", "")
    return render(routers, neighbours)


TABLES: dict[str, Callable[[Any], str]] = {
    "connections": connections_table,
    "links": links_table,
    "addresses": addresses_table,
    "queues": queues_table,
    "network": network_table,
}
"""Each view of ``switchboard stat`` and the function that draws it."""
