"""Qpid Proton peers for the interop tests, run as subprocesses: ``broker``, ``send``, ``receive``.

Proton is the AMQP 1.0 implementation we did not write; these programs use its Python
reactor (``proton.reactor.Container``) and ``MessagingHandler`` the way its examples do.

``broker`` listens on 127.0.0.1 (port 0 by default), queues messages per address in
memory (dynamic sources get a fresh address) and prints ``LISTENING <port>`` once it
accepts connections.  It runs until killed or until stdin reaches end of file, so a test
that dies takes its broker with it.

``send`` and ``receive`` are clients.  Each prints one JSON line with what happened
(counts of outcomes, sizes and a SHA-256 of every body in order) and exits 0 when the
run completed; any error, or the ``--timeout`` expiring, exits 1 with the reason.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import sys
import threading
import uuid

from proton import Endpoint, Link, Message, SSLDomain
from proton.handlers import MessagingHandler
from proton.reactor import Container


# ======================================================================================
# broker
# ======================================================================================
class _Queue:
    def __init__(self, dynamic: bool = False) -> None:
        self.dynamic = dynamic
        self.messages: collections.deque[Message] = collections.deque()
        self.consumers: list[Link] = []

    def publish(self, message: Message) -> None:
        self.messages.append(message)
        self.dispatch()

    def dispatch(self, consumer: Link | None = None) -> None:
        consumers = [consumer] if consumer is not None else self.consumers
        progressed = True
        while progressed and self.messages:
            progressed = False
            for link in consumers:
                if link.credit > 0 and self.messages:
                    link.send(self.messages.popleft())
                    progressed = True


class Broker(MessagingHandler):
    """The shape of proton's ``examples/python/broker.py``, listening on port 0."""

    def __init__(
        self, host: str, port: int, ssl_domain: SSLDomain | None, presettle_out: bool, mechs: str | None
    ) -> None:
        super().__init__()
        self.mechs = mechs
        self.host = host
        self.port = port
        self.ssl_domain = ssl_domain
        self.presettle_out = presettle_out
        self.queues: dict[str, _Queue] = {}

    def on_start(self, event) -> None:
        # Container.listen() reads port 0 as "the default port": make the acceptor directly.
        acceptor = event.container.acceptor(self.host, self.port)
        if self.ssl_domain is not None:
            acceptor.set_ssl_domain(self.ssl_domain)
        port = acceptor._selectable._delegate.getsockname()[1]
        print(f"LISTENING {port}", flush=True)

    def on_connection_bound(self, event) -> None:
        if self.mechs:
            event.transport.sasl().allowed_mechs(self.mechs)

    def _queue(self, address: str) -> _Queue:
        if address not in self.queues:
            self.queues[address] = _Queue()
        return self.queues[address]

    def on_link_opening(self, event) -> None:
        link = event.link
        if link.is_sender:
            if self.presettle_out:
                link.snd_settle_mode = Link.SND_SETTLED
            if link.remote_source.dynamic:
                address = f"dynamic-{uuid.uuid4().hex}"
                link.source.address = address
                queue = _Queue(dynamic=True)
                self.queues[address] = queue
                queue.consumers.append(link)
            elif link.remote_source.address:
                link.source.address = link.remote_source.address
                self._queue(link.source.address).consumers.append(link)
        elif link.remote_target.address:
            link.target.address = link.remote_target.address

    def _unsubscribe(self, link: Link) -> None:
        address = link.source.address
        queue = self.queues.get(address)
        if queue is not None and link in queue.consumers:
            queue.consumers.remove(link)
            if queue.dynamic and not queue.consumers:
                del self.queues[address]

    def on_link_closing(self, event) -> None:
        if event.link.is_sender:
            self._unsubscribe(event.link)

    def _remove_stale_consumers(self, connection) -> None:
        link = connection.link_head(Endpoint.REMOTE_ACTIVE)
        while link:
            if link.is_sender:
                self._unsubscribe(link)
            link = link.next(Endpoint.REMOTE_ACTIVE)

    def on_connection_closing(self, event) -> None:
        self._remove_stale_consumers(event.connection)

    def on_disconnected(self, event) -> None:
        self._remove_stale_consumers(event.connection)

    def on_sendable(self, event) -> None:
        self._queue(event.link.source.address).dispatch(event.link)

    def on_message(self, event) -> None:
        address = event.link.target.address or event.message.address
        self._queue(address).publish(event.message)


def _run_broker(args: argparse.Namespace) -> int:
    ssl_domain = None
    if args.cert:
        ssl_domain = SSLDomain(SSLDomain.MODE_SERVER)
        ssl_domain.set_credentials(args.cert, args.key, None)
        ssl_domain.allow_unsecured_client()  # the same listener serves amqp:// too
    container = Container(Broker(args.host, args.port, ssl_domain, args.presettle_out, args.mechs))

    def exit_on_stdin_eof() -> None:
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=exit_on_stdin_eof, daemon=True).start()
    container.run()
    return 0


# ======================================================================================
# clients
# ======================================================================================
def _client_ssl(args: argparse.Namespace) -> SSLDomain | None:
    if not args.ca:
        return None
    domain = SSLDomain(SSLDomain.MODE_CLIENT)
    domain.set_trusted_ca_db(args.ca)
    domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME, args.ca)
    return domain


def _connect(event, args: argparse.Namespace):
    kwargs = {}
    if args.user is not None:
        kwargs.update(user=args.user, password=args.password, allowed_mechs="PLAIN", allow_insecure_mechs=True)
    if args.ca:
        kwargs.update(ssl_domain=_client_ssl(args), virtual_host="localhost")
    return event.container.connect(args.url, reconnect=False, heartbeat=args.heartbeat, **kwargs)


class _Client(MessagingHandler):
    def __init__(self, args: argparse.Namespace, **kwargs) -> None:
        super().__init__(**kwargs)
        self.args = args
        self.result: dict = {"error": None}
        self.done = False

    def fail(self, event, reason: str) -> None:
        if self.result["error"] is None:
            self.result["error"] = reason
        if event.connection is not None:
            event.connection.close()

    def finish(self, event) -> None:
        self.done = True
        event.connection.close()

    def on_transport_error(self, event) -> None:
        condition = event.transport.condition
        self.result["error"] = self.result["error"] or (
            f"transport error: {condition.name}: {condition.description}" if condition else "transport error"
        )
        self.result["condition"] = condition.name if condition else None

    def on_connection_error(self, event) -> None:
        condition = event.connection.remote_condition
        self.result["error"] = self.result["error"] or f"connection error: {condition.name}: {condition.description}"
        self.result["condition"] = condition.name
        event.connection.close()

    def on_link_error(self, event) -> None:
        condition = event.link.remote_condition
        self.fail(event, f"link error: {condition.name}: {condition.description}")

    def on_disconnected(self, event) -> None:
        if not self.done and self.result["error"] is None:
            self.result["error"] = "disconnected before the run completed"


class Sender(_Client):
    """Send ``--count`` messages of ``--size`` bytes (or numbered bodies) and count outcomes."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, auto_settle=True)
        self.sent = 0
        self.outcomes = collections.Counter()
        self.result.update(sent=0, accepted=0, rejected=0, released=0, modified=0, settled=0, sha256=[])

    def on_start(self, event) -> None:
        connection = _connect(event, self.args)
        options = None
        if self.args.presettled:
            from proton.reactor import AtMostOnce

            options = AtMostOnce()
        event.container.create_sender(connection, self.args.address, options=options)

    def _body(self, number: int) -> bytes:
        if self.args.size is None:
            return f"message {number}".encode()
        return os.urandom(self.args.size) if self.args.random else bytes([number % 256]) * self.args.size

    def on_sendable(self, event) -> None:
        sender = event.sender
        while sender.credit > 0 and self.sent < self.args.count:
            body = self._body(self.sent)
            message = Message(body=body, inferred=True, id=self.sent)
            sender.send(message)
            self.sent += 1
            if self.args.size is not None and self.args.size >= 65536:
                self.result["sha256"].append(hashlib.sha256(body).hexdigest())
        if self.sent >= self.args.count and self.args.presettled:
            # Nothing comes back for presettled deliveries: close once all are written.
            self.result["sent"] = self.sent
            self.finish(event)

    def _settled(self, event, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.result[outcome] += 1
        if sum(self.outcomes.values()) >= self.args.count:
            self.result["sent"] = self.sent
            self.finish(event)

    def on_accepted(self, event) -> None:
        self._settled(event, "accepted")

    def on_rejected(self, event) -> None:
        self._settled(event, "rejected")

    def on_released(self, event) -> None:
        self._settled(event, "released")


class Receiver(_Client):
    """Receive ``--count`` messages from ``--address`` (accepting each) and hash bodies."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, prefetch=args.credit, auto_accept=True)
        self.received = 0
        self.digest = hashlib.sha256()
        self.result.update(received=0, settled_by_sender=0, bytes=0, sha256=[], digest=None, bodies=[])

    def on_start(self, event) -> None:
        connection = _connect(event, self.args)
        options = None
        if self.args.presettled:
            from proton.reactor import AtMostOnce

            options = AtMostOnce()  # ask the sender to presettle (snd-settle-mode settled)
        event.container.create_receiver(connection, self.args.address, options=options)

    def on_message(self, event) -> None:
        body = event.message.body
        if isinstance(body, str):
            body = body.encode()
        body = bytes(body) if body is not None else b""
        self.received += 1
        self.result["received"] = self.received
        self.result["bytes"] += len(body)
        if event.delivery.settled:  # proton: settled by the remote end
            self.result["settled_by_sender"] += 1
        self.digest.update(body)
        if len(body) >= 65536:
            self.result["sha256"].append(hashlib.sha256(body).hexdigest())
        elif len(self.result["bodies"]) < 3:
            self.result["bodies"].append(body.decode("utf-8", "replace"))
        if self.received >= self.args.count:
            self.result["digest"] = self.digest.hexdigest()
            self.finish(event)


def _run_client(handler: _Client, args: argparse.Namespace) -> int:
    container = Container(handler)
    finished = threading.Event()

    def watchdog() -> None:
        if not finished.wait(args.timeout):
            handler.result["error"] = handler.result["error"] or f"timed out after {args.timeout} s"
            print(json.dumps(handler.result), flush=True)
            os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        container.run()
    except Exception as exc:  # proton raises for some transport failures
        handler.result["error"] = handler.result["error"] or f"{type(exc).__name__}: {exc}"
    finished.set()
    print(json.dumps(handler.result), flush=True)
    return 0 if handler.done and handler.result["error"] is None else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    broker = commands.add_parser("broker")
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument("--port", type=int, default=0)
    broker.add_argument("--cert", help="PEM certificate: serve TLS (and plain) connections")
    broker.add_argument("--key")
    broker.add_argument("--mechs", help="SASL mechanisms the broker allows, e.g. 'PLAIN'")
    broker.add_argument("--presettle-out", action="store_true", help="send to consumers presettled")

    for name in ("send", "receive"):
        client = commands.add_parser(name)
        client.add_argument("url", help="amqp[s]://host:port (no address)")
        client.add_argument("address")
        client.add_argument("--count", type=int, default=1)
        client.add_argument("--user")
        client.add_argument("--password")
        client.add_argument("--ca", help="trust this PEM certificate (TLS)")
        client.add_argument("--heartbeat", type=float, default=None, help="idle timeout to advertise (s)")
        client.add_argument("--timeout", type=float, default=60.0)
        if name == "send":
            client.add_argument("--size", type=int)
            client.add_argument("--random", action="store_true", help="random bodies (with --size)")
            client.add_argument("--presettled", action="store_true")
        else:
            client.add_argument("--credit", type=int, default=500)
            client.add_argument("--presettled", action="store_true", help="ask the sender to presettle")

    args = parser.parse_args(argv)
    if args.command == "broker":
        return _run_broker(args)
    if args.command == "send":
        return _run_client(Sender(args), args)
    return _run_client(Receiver(args), args)


if __name__ == "__main__":
    sys.exit(main())
