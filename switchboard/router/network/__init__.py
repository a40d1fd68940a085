"""The router network's control plane: neighbours, link state, paths, addresses; sans-IO.

It imports nothing of Switchboard but ``switchboard.amqp`` and does no I/O and reads no
clock, so a whole network of them runs in one process on a simulated clock (the tests in
``tests/router/network/`` and ``bench/scale.py``).  ``RouterNetwork`` is the entry point.
"""

from .engine import NetworkAdapter, NetworkTimers, RouterNetwork
from .messages import HELLO, LSR, LSU, MAR, MAU, PROTOCOL_VERSION, RA, ControlMessage, RouterSummary, parse_message
from .paths import Topology, shortest_paths

__all__ = [
    "HELLO",
    "LSR",
    "LSU",
    "MAR",
    "MAU",
    "PROTOCOL_VERSION",
    "RA",
    "ControlMessage",
    "NetworkAdapter",
    "NetworkTimers",
    "RouterNetwork",
    "RouterSummary",
    "Topology",
    "parse_message",
    "shortest_paths",
]
