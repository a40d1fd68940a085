"""Heartbeats: with ``[limits] idle_timeout = 1.0`` the router notices silent peers fast.

    sender (healthy) ──► router ──► consumer (SIGSTOPped, holds 20 unsettled)

A silent peer is closed with ``amqp:resource-limit-exceeded`` about one idle timeout after
its last frame, and the deliveries it held go back to their senders as
``modified(delivery-failed)`` — within a few seconds, not never.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections import Counter

import pytest
from proton import Message as ProtonMessage

from system_support import HOST, ProtonClient, ProtonThread, RawPeer, run_async, wait_socket_closed
from switchboard.amqp import events as ev
from switchboard.amqp.connection import Connection
from switchboard.client.connection import Client

IDLE_CONFIG = """
[limits]
idle_timeout = 1.0
"""

CLOSE_BOUND = 2.5
"""Seconds within which a peer silent since its open is closed (idle 1 s, plus slack)."""


def test_silent_peer_after_open_is_closed(router) -> None:
    r = router(IDLE_CONFIG)
    peer = RawPeer(r.port, Connection("silent-peer", idle_timeout=None))
    try:
        peer.engine.open()
        assert peer.pump(lambda: bool(peer.of_type(ev.ConnectionOpened)), timeout=5)
        assert peer.engine.remote_idle_timeout == 0.5  # half the 1 s threshold (spec 2.4.5)
        opened = time.monotonic()
        data = wait_socket_closed(peer.sock, timeout=10)
        elapsed = time.monotonic() - opened
        assert data is not None, "the router never closed a silent connection"
        assert elapsed < CLOSE_BOUND, f"closed after {elapsed:.2f} s"
        assert elapsed > 0.5, f"closed after only {elapsed:.2f} s"
        peer.engine.receive_data(data)
        closed = [e for e in peer.engine.take_events() if isinstance(e, ev.ConnectionClosed)]
        assert closed and closed[0].by_peer
        assert str(closed[0].error.condition) == "amqp:resource-limit-exceeded"
    finally:
        peer.close()


def test_silent_peer_after_a_partial_frame_is_closed(router) -> None:
    """A peer that stops in the middle of a frame is as silent as one that says nothing."""
    r = router(IDLE_CONFIG)
    peer = RawPeer(r.port, Connection("half-frame-peer", idle_timeout=None))
    try:
        peer.engine.open()
        assert peer.pump(lambda: bool(peer.of_type(ev.ConnectionOpened)), timeout=5)
        peer.send_raw(b"\x00\x00\x01\x00\x02\x00\x00\x00\x00\x53")  # says 256 bytes, sends 10
        started = time.monotonic()
        assert wait_socket_closed(peer.sock, timeout=10) is not None
        assert time.monotonic() - started < CLOSE_BOUND
    finally:
        peer.close()


class HeartbeatingProton(ProtonClient):
    """Connects with a 1 s idle timeout of its own, holds a link, stays idle for ``seconds``."""

    def __init__(self, url: str, seconds: float) -> None:
        super().__init__()
        self.url = url
        self.seconds = seconds
        self.opened = False
        self.survived = False

    def on_start(self, event):
        self.conn = self.connect(event.container, self.url, heartbeat=1.0)
        event.container.create_receiver(self.conn, "idle/proton")

    def on_link_opened(self, event):
        self.opened = True
        event.container.schedule(self.seconds, self)

    def on_timer_task(self, event):
        self.survived = not self.errors
        self.finish()


def test_idle_proton_client_with_heartbeats_both_ways_stays_connected(router) -> None:
    """The router answers a 1 s idle timeout with heartbeats, and honours the client's."""
    r = router(IDLE_CONFIG)
    client = ProtonThread(HeartbeatingProton(r.url, 3.5), timeout=20).start().join_result()
    assert client.opened and client.survived, client.describe()
    assert "idle timeout" not in r.stderr.text()


def test_idle_client_of_ours_stays_connected(router) -> None:
    """Our client's first heartbeat must reach the router before its 1 s idle deadline."""
    r = router(IDLE_CONFIG)

    async def scenario():
        async with await Client.connect(r.url, idle_timeout=None) as client:
            receiver = await client.receiver("idle/ours")
            await asyncio.sleep(3.0)  # idle on purpose: three idle timeouts of the router
            return receiver.error

    error = run_async(scenario, timeout=20)
    assert error is None, f"dropped: {error}"


def test_router_heartbeats_reach_an_idle_client_of_ours_in_time(router) -> None:
    r = router()  # the router's own idle timeout is the default 16 s

    async def scenario():
        async with await Client.connect(r.url, idle_timeout=1.0) as client:
            receiver = await client.receiver("idle/ours")
            await asyncio.sleep(3.0)  # idle on purpose: the router must beat every 0.5 s
            return receiver.error

    error = run_async(scenario, timeout=20)
    assert error is None, f"dropped: {error}"


# ======================================================================================
# A consumer that goes silent (SIGSTOP) while holding deliveries
# ======================================================================================
PROTON_HOLDER = r'''
import sys
from proton.handlers import MessagingHandler
from proton.reactor import Container

url, address, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

class Holder(MessagingHandler):
    """Takes ``count`` deliveries and settles none of them."""
    def __init__(self):
        super().__init__(prefetch=count, auto_accept=False)
        self.received = 0
    def on_start(self, event):
        conn = event.container.connect(url, reconnect=False, heartbeat=float(sys.argv[4]))
        event.container.create_receiver(conn, address)
    def on_link_opened(self, event):
        print("ATTACHED", flush=True)
    def on_message(self, event):
        self.received += 1
        if self.received == count:
            print("READY", self.received, flush=True)

Container(Holder()).run()
'''


class OutcomeSender(ProtonClient):
    """Sends ``count`` messages to ``address`` once started, and records each outcome."""

    def __init__(self, url: str, address: str, count: int) -> None:
        super().__init__()
        self.url = url
        self.address = address
        self.count = count
        self.sent = 0
        self.outcomes: Counter[str] = Counter()
        self.delivery_failed = 0
        self.settled_at: dict[str, float] = {}
        self.all_settled = threading.Event()

    def on_start(self, event):
        conn = self.connect(event.container, self.url, heartbeat=1.0)
        event.container.create_sender(conn, self.address)

    def on_sendable(self, event):
        while event.sender.credit > 0 and self.sent < self.count:
            event.sender.send(ProtonMessage(body=f"task {self.sent}"))
            self.sent += 1

    def on_accepted(self, event):
        self._record("accepted")

    def on_rejected(self, event):
        self._record("rejected")

    def on_released(self, event):
        # MessagingHandler reports both released and modified here; tell them apart.
        delivery = event.delivery
        if delivery.remote_state == delivery.MODIFIED:
            if delivery.remote.failed:
                self.delivery_failed += 1
            self._record("modified")
        else:
            self._record("released")

    def on_settled(self, event):
        pass

    def _record(self, name):
        self.outcomes[name] += 1
        if sum(self.outcomes.values()) == self.count:
            self.all_settled.set()
            self.finish()


def test_stopped_consumer_deliveries_return_to_sender(router, spawn_script) -> None:
    r = router(IDLE_CONFIG)
    count = 20
    consumer = spawn_script(PROTON_HOLDER, r.url, "work/stalled", str(count), "1.0")
    consumer.wait_line("ATTACHED", 20)
    sender = OutcomeSender(r.url, "work/stalled", count)
    thread = ProtonThread(sender, timeout=40).start()
    consumer.wait_line("READY", 20)
    consumer.proc.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        assert sender.all_settled.wait(10), sender.describe()
        elapsed = time.monotonic() - stopped
    finally:
        consumer.kill()  # SIGKILL works on a stopped process
    thread.join_result()
    assert sender.outcomes == {"modified": count}, sender.outcomes
    assert sender.delivery_failed == count
    assert elapsed < 1.0 + 3.0, f"outcomes came {elapsed:.2f} s after the consumer stopped"
    assert r.wait_log("idle timeout", 5), r.output()


# ======================================================================================
# Peers that never finish the handshake
# ======================================================================================
HANDSHAKE_CONFIG = IDLE_CONFIG + "handshake_timeout = 1.0\n"

@pytest.mark.parametrize(
    "sends",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"AMQP", id="half-a-header"),
        pytest.param(b"AMQP\x00\x01\x00\x00", id="header-only"),
        pytest.param(b"AMQP\x03\x01\x00\x00", id="sasl-header-only"),
    ],
)
def test_peer_that_never_opens_is_closed(router, sends: bytes) -> None:
    """A socket that never completes the AMQP open holds a connection slot: it must not
    hold it for ever (hundreds of them would lock out every real client)."""
    r = router(HANDSHAKE_CONFIG)
    sock = socket.create_connection((HOST, r.port), timeout=10)
    try:
        sock.sendall(sends)
        started = time.monotonic()
        assert wait_socket_closed(sock, timeout=10) is not None, "the router kept a silent connection"
        assert time.monotonic() - started < 1.0 + 2.5
    finally:
        sock.close()


def test_silent_sockets_do_not_lock_out_real_clients(router) -> None:
    """max_connections_per_host = 20: twenty silent sockets are closed, then a client gets in."""
    r = router(HANDSHAKE_CONFIG + "max_connections_per_host = 20\n")
    silent = [socket.create_connection((HOST, r.port), timeout=10) for _ in range(20)]
    try:
        for sock in silent:
            assert wait_socket_closed(sock, timeout=10) is not None

        async def connect():
            async with await Client.connect(r.url) as client:
                await client.receiver("in/at/last")

        run_async(connect, timeout=20)
    finally:
        for sock in silent:
            sock.close()


OUR_HOLDER = r'''
import asyncio, sys
from switchboard.client.connection import Client

url, address, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def main():
    client = await Client.connect(url)
    receiver = await client.receiver(address, credit=count)
    print("ATTACHED", flush=True)
    held = [await receiver.receive() for _ in range(count)]   # never settled
    print("READY", len(held), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
'''


def test_stopped_consumer_of_ours_deliveries_return_to_our_sender(router, spawn_script) -> None:
    r = router(IDLE_CONFIG)
    count = 20
    consumer = spawn_script(OUR_HOLDER, r.url, "work/stalled-ours", str(count))
    consumer.wait_line("ATTACHED", 20)

    async def scenario():
        async with await Client.connect(r.url) as client:
            sender = await client.sender("work/stalled-ours")
            futures = [await sender.send(b"\x00\x53\x77\xa1\x04task", wait=False) for _ in range(count)]
            await asyncio.to_thread(consumer.wait_line, "READY", 20)
            consumer.proc.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                done, pending = await asyncio.wait(futures, timeout=10)
                elapsed = time.monotonic() - stopped
            finally:
                consumer.kill()
            assert not pending, f"{len(pending)} deliveries without an outcome"
            return [f.result() for f in futures], elapsed

    outcomes, elapsed = run_async(scenario, timeout=40)
    assert all(type(o).__name__ == "Modified" and o.delivery_failed for o in outcomes), outcomes
    assert elapsed < 1.0 + 3.0, f"outcomes came {elapsed:.2f} s after the consumer stopped"
