"""Failures: a consumer killed with deliveries outstanding; hostile and broken clients.

    sender ──100──► router ──100──► consumer process (receives, settles none) ── SIGKILL

Every one of the 100 comes back to its sender as ``modified(delivery-failed)`` or
``released``: none accepted, none silent.

    garbage, half frames, 300 silent sockets ──► router ◄── well-behaved pair

The hostile ones are closed or ignored; the pair's exchange completes; the router lives.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time

import pytest

from system_support import HOST, RawPeer, run_async, wait_socket_closed
from switchboard.amqp import events as ev
from switchboard.amqp.connection import Connection
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted, Modified, Source, Target
from switchboard.client.connection import Client

# ======================================================================================
# A consumer process SIGKILLed with 100 deliveries outstanding
# ======================================================================================
OUR_HOLDER = r'''
import asyncio, sys
from switchboard.client.connection import Client

url, address, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def main():
    client = await Client.connect(url)
    receiver = await client.receiver(address, credit=count)
    print("ATTACHED", flush=True)
    held = []
    while len(held) < count:
        held.append(await receiver.receive())   # and never settled
    print("READY", len(held), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
'''

PROTON_HOLDER = r'''
import sys
from proton.handlers import MessagingHandler
from proton.reactor import Container

url, address, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

class Holder(MessagingHandler):
    def __init__(self):
        super().__init__(prefetch=count, auto_accept=False)
        self.received = 0
    def on_start(self, event):
        conn = event.container.connect(url, reconnect=False)
        event.container.create_receiver(conn, address)
    def on_link_opened(self, event):
        print("ATTACHED", flush=True)
    def on_message(self, event):
        self.received += 1
        if self.received == count:
            print("READY", self.received, flush=True)

Container(Holder()).run()
'''


@pytest.mark.parametrize("consumer_kind", ["ours", "proton"])
def test_killed_consumer_deliveries_come_back(router, spawn_script, consumer_kind: str) -> None:
    r = router()
    count = 100
    source = OUR_HOLDER if consumer_kind == "ours" else PROTON_HOLDER
    consumer = spawn_script(source, r.url, "work/killed", str(count))
    consumer.wait_line("ATTACHED", 20)

    async def scenario():
        async with await Client.connect(r.url) as client:
            sender = await client.sender("work/killed")
            futures = [await sender.send(Message(f"task {i}"), wait=False) for i in range(count)]
            await asyncio.to_thread(consumer.wait_line, r"READY 100", 20)
            assert not any(f.done() for f in futures), "a delivery was settled before the consumer died"
            consumer.kill()
            killed = time.monotonic()
            done, pending = await asyncio.wait(futures, timeout=10)
            assert not pending, f"{len(pending)} deliveries never got an outcome"
            return [f.result() for f in futures], time.monotonic() - killed

    outcomes, elapsed = run_async(scenario, timeout=60)
    kinds = {type(o).__name__ for o in outcomes}
    assert kinds <= {"Modified", "Released"}, kinds
    for outcome in outcomes:
        if isinstance(outcome, Modified):
            assert outcome.delivery_failed
    assert elapsed < 5.0


def test_killed_consumer_with_a_survivor_on_the_same_address(router, spawn_script) -> None:
    """Only the killed consumer's deliveries fail; the survivor's are accepted as usual."""
    r = router()
    count = 40
    consumer = spawn_script(OUR_HOLDER, r.url, "work/shared", str(count))
    consumer.wait_line("ATTACHED", 20)

    async def scenario():
        async with await Client.connect(r.url) as survivor_client, await Client.connect(r.url) as client:
            survivor = await survivor_client.receiver("work/shared", credit=count)
            sender = await client.sender("work/shared")
            futures = [await sender.send(Message(f"task {i}"), wait=False) for i in range(2 * count)]
            survived = []
            while len(survived) < count:
                survived.append(await survivor.receive(timeout=20))
            await asyncio.to_thread(consumer.wait_line, r"READY", 20)
            consumer.kill()
            for item in survived:
                item.accept()
            done, pending = await asyncio.wait(futures, timeout=10)
            assert not pending
            return [f.result() for f in futures]

    outcomes = run_async(scenario, timeout=60)
    kinds = [type(o).__name__ for o in outcomes]
    assert kinds.count("Accepted") == count, kinds
    assert kinds.count("Modified") + kinds.count("Released") == count, kinds


# ======================================================================================
# Hostile and broken clients do not disturb others
# ======================================================================================
SILENT_SOCKETS = 300


def _raw(port: int) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=10)


def _header_and_open() -> bytes:
    engine = Connection("half-frame", idle_timeout=None)
    engine.open()
    return b"".join(bytes(chunk) for chunk in engine.data_to_send())


def test_hostile_clients_do_not_disturb_a_working_pair(router) -> None:
    r = router()
    rng = random.Random(20240601)
    silent = []
    garbage = []
    try:
        for _ in range(SILENT_SOCKETS):
            silent.append(_raw(r.port))
        http = _raw(r.port)
        http.sendall(b"GET / HTTP/1.1\r\nHost: router\r\n\r\n")
        garbage.append(("http", http))
        noise = _raw(r.port)
        noise.sendall(bytes(rng.getrandbits(8) for _ in range(4096)))
        garbage.append(("noise", noise))
        huge = _raw(r.port)
        huge.sendall(_header_and_open() + b"\xff\xff\xff\xf0\x02\x00\x00\x00")  # a 4 GiB frame
        garbage.append(("huge-frame", huge))
        bad_sasl = _raw(r.port)
        bad_sasl.sendall(b"AMQP\x03\x01\x00\x00" + bytes(rng.getrandbits(8) for _ in range(512)))
        garbage.append(("bad-sasl", bad_sasl))
        half = _raw(r.port)
        half.sendall(_header_and_open() + b"\x00\x00\x02\x00\x02\x00\x00\x00\x00\x53\x10")
        silent.append(half)  # stops mid-frame: stays until the idle timeout, harming nobody

        async def exchange():
            count = 200
            async with await Client.connect(r.url) as a, await Client.connect(r.url) as b:
                receiver = await b.receiver("work/pair", credit=50)
                sender = await a.sender("work/pair")

                async def send_all():
                    return [await sender.send(Message(f"m {i}"), wait=False) for i in range(count)]

                sending = asyncio.create_task(send_all())
                bodies = []
                for _ in range(count):
                    item = await receiver.receive(timeout=20)
                    bodies.append(item.message().body)
                    item.accept()
                outcomes = await asyncio.gather(*await sending)
                return bodies, outcomes

        bodies, outcomes = run_async(exchange, timeout=60)
        assert bodies == [f"m {i}" for i in range(200)]
        assert all(isinstance(o, Accepted) for o in outcomes)

        for name, sock in garbage:
            assert wait_socket_closed(sock, timeout=10) is not None, f"{name}: the router kept a garbage connection open"
    finally:
        for sock in silent:
            sock.close()
        for _, sock in garbage:
            sock.close()

    assert r.alive()

    async def after():
        async with await Client.connect(r.url) as client:
            receiver = await client.receiver("work/after")
            sender = await client.sender("work/after")
            future = await sender.send(Message("still here"), wait=False)
            item = await receiver.receive(timeout=10)
            item.accept()
            return await future

    assert isinstance(run_async(after, timeout=30), Accepted)


def test_malformed_message_is_rejected_and_the_link_goes_on(router) -> None:
    r = router()
    peer = RawPeer(r.port, Connection("malformed", idle_timeout=None))
    try:
        engine = peer.engine
        engine.open()
        session = engine.begin_session()
        link = session.sender("bad-messages", source=Source(address="me"), target=Target(address="work/malformed"))
        consumer_side = session.receiver("consumer", source=Source(address="work/malformed"), target=Target(address="me"), credit=10)
        assert peer.pump(lambda: link.credit > 0, timeout=5), peer.events
        # A properties section (which routing reads) whose list claims 255 bytes and has 2.
        bad = link.send(b"\x00\x53\x73\xc0\xff\x03\x40")
        good = link.send(Message("fine").encode())
        assert peer.pump(lambda: bad.remote_settled and any(
            isinstance(e, ev.DeliveryReceived) for e in peer.events), timeout=5), peer.events
        assert type(bad.remote_state).__name__ == "Rejected"
        assert str(bad.remote_state.error.condition) == "amqp:decode-error"
        received = [e.delivery for e in peer.events if isinstance(e, ev.DeliveryReceived)]
        assert len(received) == 1 and Message.decode(received[0].payload).body == "fine"
        received[0].settle(Accepted())
        assert peer.pump(lambda: good.remote_settled, timeout=5)
        assert isinstance(good.remote_state, Accepted)
        assert consumer_side.active and link.active
    finally:
        peer.close()


@pytest.mark.parametrize("seed", range(8))
def test_fuzzed_frames_never_crash_the_router(router, seed: int) -> None:
    """Valid header and open, then frames of random bytes: closed, never a crash."""
    r = router()
    rng = random.Random(seed)
    sockets = []
    for _ in range(25):
        sock = _raw(r.port)
        body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200)))
        if rng.random() < 0.5:
            body = b"\x00\x53" + bytes([rng.choice([0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18])]) + body
        frame = (8 + len(body)).to_bytes(4, "big") + b"\x02\x00" + rng.choice([b"\x00\x00", os.urandom(2)]) + body
        sock.sendall(_header_and_open() + frame)
        sockets.append(sock)

    async def check():
        # The fuzzed input went out first; a full attach round trip later the router
        # has read it all (one process, one loop) and must still serve.
        async with await Client.connect(r.url) as client:
            await client.receiver("alive")

    try:
        run_async(check, timeout=20)
    finally:
        for sock in sockets:
            sock.close()
    assert r.alive()
