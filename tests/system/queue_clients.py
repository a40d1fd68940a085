"""Qpid Proton clients for the queue tests: a sender that records each message's outcome,
a receiver that settles each message as told and records what it saw."""

from __future__ import annotations

from typing import Any, Callable

from proton import Delivery, Message
from proton.handlers import MessagingHandler

from system_support import ProtonClient

__all__ = ["QueueSender", "QueueReceiver", "outcome_name"]


def outcome_name(delivery: Any) -> str:
    state = delivery.remote_state
    if state == Delivery.ACCEPTED:
        return "accepted"
    if state == Delivery.REJECTED:
        condition = delivery.remote.condition
        return f"rejected:{condition.name if condition else None}"
    if state == Delivery.RELEASED:
        return "released"
    if state == Delivery.MODIFIED:
        return "modified"
    return f"state:{state}"


class QueueSender(ProtonClient):
    """Sends ``bodies`` to ``address`` (unsettled) and records each outcome by body."""

    def __init__(self, url: str, address: str, bodies: list[Any], ttl: float | None = None,
                 durable: bool = True, presettled: bool = False) -> None:
        super().__init__(auto_settle=True)
        self.url, self.address, self.bodies = url, address, list(bodies)
        self.ttl, self.durable, self.presettled = ttl, durable, presettled
        self.next = 0
        self.outcomes: dict[Any, str] = {}
        self.by_delivery: dict[Any, Any] = {}

    def on_start(self, event: Any) -> None:
        connection = self.connect(event.container, self.url)
        options = None
        if self.presettled:
            from proton.reactor import AtMostOnce

            options = AtMostOnce()
        event.container.create_sender(connection, self.address, options=options)

    def on_sendable(self, event: Any) -> None:
        while event.sender.credit and self.next < len(self.bodies):
            body = self.bodies[self.next]
            self.next += 1
            message = Message(body=body, durable=self.durable)
            if self.ttl is not None:
                message.ttl = self.ttl
            delivery = event.sender.send(message)
            self.by_delivery[delivery] = body
            if self.presettled:
                self.outcomes[body] = "presettled"
        if self.presettled and self.next == len(self.bodies):
            self.finish()

    def on_link_error(self, event: Any) -> None:
        super().on_link_error(event)  # recorded in errors
        self.finish()  # nothing more can be sent on it

    def on_settled(self, event: Any) -> None:
        if event.delivery not in self.by_delivery:
            return
        body = self.by_delivery.pop(event.delivery)
        self.outcomes[body] = outcome_name(event.delivery)
        if len(self.outcomes) == len(self.bodies):
            self.finish()

    @property
    def accepted(self) -> list[Any]:
        return [body for body, outcome in self.outcomes.items() if outcome == "accepted"]


class QueueReceiver(ProtonClient):
    """Receives from ``address`` until ``count`` messages came; ``decide(message, delivery)``
    returns how to settle each: "accept", "release", "reject", "modify" (delivery-failed)."""

    def __init__(self, url: str, address: str, count: int, decide: Callable[[Any, Any], str] | None = None,
                 credit: int = 10) -> None:
        # Credit given by hand: exactly ``credit`` outstanding, one more for each message
        # settled, never beyond ``count`` in all.
        super().__init__(auto_accept=False, prefetch=0)
        self.credit = min(credit, count)
        self.url, self.address, self.count = url, address, count
        self.decide = decide or (lambda message, delivery: "accept")
        self.received: list[Any] = []
        self.delivery_counts: list[int] = []
        self.first_acquirers: list[bool] = []
        self.receiver: Any = None

    def on_start(self, event: Any) -> None:
        connection = self.connect(event.container, self.url)
        self.receiver = event.container.create_receiver(connection, self.address)
        self.receiver.flow(self.credit)

    def on_message(self, event: Any) -> None:
        if len(self.received) >= self.count:
            return  # credit still out when the count was reached: left unsettled, it goes back
        message = event.message
        self.received.append(message.body)
        self.delivery_counts.append(message.delivery_count)
        self.first_acquirers.append(message.first_acquirer)
        action = self.decide(message, event.delivery)
        if action == "accept":
            self.accept(event.delivery)
        elif action == "release":
            self.release(event.delivery, delivered=False)
        elif action == "modify":
            event.delivery.local.failed = True  # modified(delivery-failed): one more failed attempt
            event.delivery.update(Delivery.MODIFIED)
            event.delivery.settle()
        elif action == "reject":
            self.reject(event.delivery)
        if len(self.received) >= self.count:
            self.finish()
        elif len(self.received) + self.receiver.credit < self.count:
            self.receiver.flow(1)


def queue_rows(url: str, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """The router's queues by name, as ``$management`` reports them (``QUERY queues``)."""
    return {row["name"]: row for row in management(url, "QUERY", "queues", timeout=timeout)}


def management(url: str, operation: str, what: str, name: str | None = None, timeout: float = 10.0) -> Any:
    """One ``$management`` request through the project's own client; the answer's body
    (an AssertionError for any status but 200)."""
    from switchboard.client import Client
    from switchboard.router.management import MANAGEMENT_ADDRESS, query

    from system_support import run_async

    async def ask() -> Any:
        async with await Client.connect(url) as client:
            replies = await client.receiver(None, dynamic=True, credit=1)
            requests = await client.sender(MANAGEMENT_ADDRESS)
            await requests.send(query(operation, what, reply_to=replies.address, message_id="q", name=name))
            answer = await replies.receive()
            answer.accept()
            return answer.message()

    message = run_async(ask, timeout=timeout)
    properties = message.application_properties or {}
    assert properties.get("status-code") == 200, properties
    return message.body
