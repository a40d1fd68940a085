"""A test-side AMQP 1.0 server built from our own pieces: ``io.listen`` + the engine.

It is a peer for tests, not the router: messages are kept per address in memory.

* A link on which the peer sends (our end receives): credit is granted as a window and
  topped up at half; each message is stored under the link's target address (or, for an
  anonymous target, the message's ``to``) and accepted.  ``settle_incoming=False``
  leaves deliveries unsettled, for tests about what a sender learns when a connection
  drops mid-flight.
* A link on which the peer receives (our end sends): stored messages for the source
  address go out as credit allows, settled or unsettled per the link's
  sender-settle-mode.  A dynamic source gets a fresh address.  Deliveries the peer
  releases or modifies, and unsettled ones on a link that ends, go back to the queue.
* Sending stops while the socket's buffer is full (``writing_paused``) and resumes when
  it drains.

Use it in a test's own event loop (``await broker.start()``), or run this file as a
program (``python amqp_broker.py --port 0``), which prints ``LISTENING <port>`` and
serves until killed or until its stdin is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import threading
from collections import Counter, deque
from typing import Any, Callable

from switchboard.amqp import events as ev
from switchboard.amqp.connection import Connection
from switchboard.amqp.delivery import ACCEPTED
from switchboard.amqp.link import Link, ReceiverLink, SenderLink
from switchboard.amqp.message import read_routing
from switchboard.amqp.sasl import ANONYMOUS, PLAIN, SaslServer
from switchboard.amqp.spec import Accepted, Error, Rejected, Source, Target
from switchboard.io.listener import listen
from switchboard.io.protocol import AmqpProtocol

__all__ = ["Broker", "plain_sasl"]


def plain_sasl(users: dict[str, str], anonymous: bool = False) -> Callable[[], SaslServer]:
    """A SASL factory: PLAIN checked against ``users`` (and ANONYMOUS if allowed)."""
    mechanisms = (PLAIN, ANONYMOUS) if anonymous else (PLAIN,)
    return lambda: SaslServer(mechanisms, authenticate=lambda user, password: users.get(user) == password)


class Broker:
    """The handler of every connection the listener accepts (a ``ConnectionHandler``)."""

    def __init__(
        self,
        *,
        sasl: Callable[[], SaslServer | None] | None = None,
        credit_window: int = 200,
        idle_timeout: float | None = None,
        handshake_timeout: float | None = 10.0,
        max_frame_size: int = 65536,
        settle_incoming: bool = True,
    ) -> None:
        self.sasl = sasl or (lambda: SaslServer((ANONYMOUS,)))
        self.credit_window = credit_window
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.max_frame_size = max_frame_size
        self.settle_incoming = settle_incoming
        self.queues: dict[str, deque[bytes]] = {}
        self.consumers: dict[str, list[SenderLink]] = {}
        self.protocols: set[AmqpProtocol] = set()
        # What happened, for tests to look at.
        self.received: Counter[str] = Counter()
        self.authenticated: list[tuple[str, str | None]] = []
        self.closed: list[ev.ConnectionClosed] = []
        self.pauses: list[bool] = []
        self.server: asyncio.Server | None = None
        self._changed: asyncio.Event | None = None
        self._dynamic = 0

    # -- running -----------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None) -> int:
        """Listen; return the bound port."""
        self._changed = asyncio.Event()
        self.server = await listen(host, port, self._engine, self, ssl_context=ssl_context)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for protocol in list(self.protocols):
            protocol.abort()
        if self.server is not None:
            async with asyncio.timeout(5):
                await self.server.wait_closed()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait (bounded) until ``predicate()`` is true; it is checked after every event."""
        assert self._changed is not None
        async with asyncio.timeout(timeout):
            while not (result := predicate()):
                self._changed.clear()
                await self._changed.wait()
        return result

    def _engine(self) -> Connection:
        return Connection(
            "switchboard-test-broker",
            server=True,
            sasl=self.sasl(),
            idle_timeout=self.idle_timeout,
            handshake_timeout=self.handshake_timeout,
            max_frame_size=self.max_frame_size,
        )

    def _poke(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # -- ConnectionHandler -------------------------------------------------------------
    def connection_started(self, protocol: AmqpProtocol) -> None:
        self.protocols.add(protocol)
        protocol.engine.context = protocol
        protocol.engine.open()

    def connection_ended(self, protocol: AmqpProtocol) -> None:
        self.protocols.discard(protocol)
        self._poke()

    def writing_paused(self, protocol: AmqpProtocol, paused: bool) -> None:
        self.pauses.append(paused)
        if not paused:
            for session in list(protocol.engine.sessions.values()):
                for link in list(session.links.values()):
                    if isinstance(link, SenderLink):
                        self._pump(link)
        self._poke()

    def events_received(self, protocol: AmqpProtocol, events: list[ev.Event]) -> None:
        for event in events:
            kind = type(event)
            if kind is ev.DeliveryReceived:
                self._on_message(event.delivery)  # type: ignore[attr-defined]
            elif kind is ev.CreditGranted:
                self._pump(event.link)  # type: ignore[attr-defined]
            elif kind is ev.DeliveryUpdated:
                self._on_outcome(event.delivery)  # type: ignore[attr-defined]
            elif kind is ev.LinkAttached:
                self._on_attach(event.link)  # type: ignore[attr-defined]
            elif kind is ev.LinkDetached:
                self._on_detach(event.link)  # type: ignore[attr-defined]
            elif kind is ev.Authenticated:
                self.authenticated.append((event.mechanism, event.user))  # type: ignore[attr-defined]
            elif kind is ev.ConnectionClosed:
                self.closed.append(event)  # type: ignore[arg-type]
        self._poke()

    # -- links -------------------------------------------------------------------------
    def _on_attach(self, link: Link) -> None:
        if not link.remote_initiated:
            return
        if isinstance(link, ReceiverLink):
            if not isinstance(link.remote_target, Target):
                # Null, a coordinator (transactions), or whatever a hostile peer encoded.
                link.refuse(Error(condition="amqp:invalid-field", description="a sending link needs a target"))
                return
            link.attach()
            link.flow(self.credit_window)
            return
        source = link.remote_source
        if not isinstance(source, Source):
            link.refuse(Error(condition="amqp:invalid-field", description="a receiving link needs a source"))
            return
        if source.dynamic:
            self._dynamic += 1
            address = f"dynamic-{self._dynamic}"
            link.source = Source(address=address, dynamic=True)
        elif source.address is not None:
            address = str(source.address)
        else:
            link.refuse(Error(condition="amqp:not-found", description="a receiver needs a source address"))
            return
        link.context = address
        link.attach()
        self.consumers.setdefault(address, []).append(link)
        self._pump(link)

    def _on_detach(self, link: Link) -> None:
        if not isinstance(link, SenderLink) or link.context is None:
            return
        address = link.context
        consumers = self.consumers.get(address, [])
        if link in consumers:
            consumers.remove(link)
        # At least once: what the peer never settled goes back, in its original order.
        unsettled = [d.payload for d in link.unsettled.values() if d.payload is not None]
        if unsettled:
            self.queues.setdefault(address, deque()).extendleft(reversed(unsettled))
            self._dispatch(address)

    def _on_message(self, delivery: Any) -> None:
        link = delivery.link
        address = link.remote_target.address
        payload = bytes(delivery.payload or b"")
        if address is None:
            try:
                address = read_routing(payload).to
            except Exception:  # DecodeError: not a message we can route
                address = None
        if address is None:
            delivery.settle(Rejected(error=Error(condition="amqp:not-found", description="no address")))
        else:
            self.queues.setdefault(str(address), deque()).append(payload)
            self.received[str(address)] += 1
            if self.settle_incoming and not delivery.remote_settled:
                delivery.settle(ACCEPTED)
        if link.credit <= self.credit_window // 2 and link.active:
            link.flow(self.credit_window)
        if address is not None:
            self._dispatch(str(address))

    def _on_outcome(self, delivery: Any) -> None:
        if not delivery.remote_settled:
            if delivery.remote_state is not None:
                delivery.settle()  # receiver-settle-mode second: we settle on its outcome
            return
        if not isinstance(delivery.remote_state, (Accepted, Rejected)) and delivery.payload is not None:
            address = delivery.link.context
            self.queues.setdefault(address, deque()).appendleft(delivery.payload)
            self._dispatch(address)

    def _dispatch(self, address: str) -> None:
        for link in list(self.consumers.get(address, ())):
            self._pump(link)
            if not self.queues.get(address):
                break

    def _pump(self, link: Link) -> None:
        if not isinstance(link, SenderLink) or link.context is None or not link.active:
            return
        protocol: AmqpProtocol = link.session.connection.context
        if protocol.write_paused:
            return
        queue = self.queues.get(link.context)
        sent = False
        while queue and link.credit > 0:
            link.send(queue.popleft())
            sent = True
        if link.drain and link.credit > 0 and not queue:
            link.drained()
            sent = True
        if sent:
            protocol.request_flush()


# ======================================================================================
# As a program (for tests that need the server in another process)
# ======================================================================================
async def _serve(args: argparse.Namespace) -> None:
    sasl = plain_sasl({args.user: args.password}, anonymous=True) if args.user else None
    broker = Broker(
        sasl=sasl,
        idle_timeout=args.idle_timeout or None,
        handshake_timeout=args.handshake_timeout or None,
        max_frame_size=args.max_frame_size,
        credit_window=args.credit,
    )
    ssl_context = None
    if args.cert:
        from switchboard.io.tls import server_context

        ssl_context = server_context(args.cert, args.key)
    port = await broker.start(args.host, args.port, ssl_context)
    print(f"LISTENING {port}", flush=True)
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()

    def wait_for_stdin_eof() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(lambda: stopped.done() or stopped.set_result(None))

    threading.Thread(target=wait_for_stdin_eof, daemon=True).start()
    await stopped
    await broker.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="switchboard test broker")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--idle-timeout", type=float, default=0.0, help="seconds (0: none)")
    parser.add_argument("--handshake-timeout", type=float, default=10.0, help="seconds (0: none)")
    parser.add_argument("--max-frame-size", type=int, default=65536)
    parser.add_argument("--credit", type=int, default=200)
    parser.add_argument("--user", help="accept SASL PLAIN for this user (ANONYMOUS too)")
    parser.add_argument("--password")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args(argv)
    from switchboard.io.loop import run

    run(lambda: _serve(args))


if __name__ == "__main__":
    main()
