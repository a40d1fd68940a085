"""A queue's semantics under any sequence of operations, checked against a plain model.

A real ``RouterCore`` with a real SQLite store (``router_harness``), real AMQP engines
for a producer and consumers, and a simulated clock.  Hypothesis plays random sequences
of: a producer sending unsettled messages; consumers attaching with credit, granting
more, settling what they hold (accepted, released, modified with and without
delivery-failed, rejected, settled with no outcome), detaching and losing their
connection; time passing beyond the TTL; a purge; a clean restart and a crash.

The model is one queue and its dead-letter queue in plain Python.  After each step the
router must agree with it: the management view (depth, bytes, ready, unacked), what
each consumer was sent (which messages, in which order, with which delivery-count),
what each producer was told, and the router's counters of expired, dropped and
dead-lettered messages.  Nothing the producer saw ``accepted`` may go anywhere but to a
consumer that accepted it, the dead-letter queue, expiry, the drop-head policy, a purge,
or still be queued.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from switchboard.amqp import events as ev
from switchboard.amqp.delivery import ACCEPTED, RELEASED, Delivery
from switchboard.amqp.link import ReceiverLink
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted, Modified, Rejected, Source
from switchboard.router.config import DEFAULT_ADDRESSES, AddressConfig, Limits, QueueSettings, RouterConfig

from router_harness import Client, RouterHarness, message

QUEUE = "q/work"
DEAD = "dlq/work"
TTL = 10.0
MAX_MESSAGES = 5
MAX_ATTEMPTS = 3
MAX_CONSUMERS = 3
STEP_SECONDS = 0.5
"""The clock moves in these steps, so a message's expiry is never between two ticks."""

def queue_config(overflow: str, window: int = 1 << 20) -> RouterConfig:
    return RouterConfig(
        router_id="model",
        addresses=(
            AddressConfig("q/", "queue", QueueSettings(
                message_ttl=TTL, max_messages=MAX_MESSAGES, overflow=overflow,
                max_delivery_attempts=MAX_ATTEMPTS, dead_letter_address=DEAD)),
            AddressConfig("dlq/", "queue", QueueSettings()),
            *DEFAULT_ADDRESSES,
        ),
        # Heartbeats are not what this is about; a silent consumer may hold messages long.
        # ``window``: payload bytes of a queue's waiting messages kept in memory; the rest
        # are read back from the store as the head reaches them.
        limits=Limits(idle_timeout=0.0, max_address_bytes=window),
    )


def decoded(delivery: Delivery) -> tuple[str, int, bool | None]:
    """(tag, delivery-count, first-acquirer) of a message as a consumer got it."""
    received = Message.decode(delivery.payload)
    body = received.body
    tag = (body if isinstance(body, bytes) else b"".join(body)).decode().split(":")[0]
    header = received.header
    if header is None:
        return tag, 0, None
    return tag, header.delivery_count or 0, header.first_acquirer


# ==========================================================================================
# The model
# ==========================================================================================
@dataclass
class Model:
    """One message as the model knows it."""

    seq: int
    """Order of arrival at the router: the queue's order."""
    tag: str
    size: int
    expires_at: float | None
    delivery_count: int = 0
    stored_count: int = 0
    """The delivery-count the store has for it."""
    stored_expiry: float | None = None
    """The expiry the store has for it."""


@dataclass
class Consumer:
    client: Client
    link: ReceiverLink
    credit: int
    """Credit the router has for this consumer (granted, less what it was sent)."""
    held: list[tuple[Delivery, Model]] = field(default_factory=list)
    """Deliveries it was sent and has not settled, oldest first."""


OUTCOMES = ("accept", "release", "modified-failed", "modified", "reject", "no-outcome")


class QueueMachine(RuleBasedStateMachine):
    overflow = "reject-publish"
    window = 1 << 20

    # -- life ------------------------------------------------------------------------------
    @initialize()
    def start(self) -> None:
        # A real SQLite file; in memory-backed /dev/shm where there is one, so that its
        # syncs cost little and many sequences run in a few seconds.
        shm = Path("/dev/shm")
        self.directory = Path(tempfile.mkdtemp(prefix="queue-model-", dir=shm if shm.is_dir() else None))
        self.harness = RouterHarness(config=queue_config(self.overflow, self.window), store_path=self.directory / "queues.db")
        self.queued: dict[int, Model] = {}
        """Messages of the queue: waiting, or out with a consumer."""
        self.out: set[int] = set()
        self.dead: list[Model] = []
        """Messages in the dead-letter queue."""
        self.fate: dict[str, str] = {}
        """Where each message the router accepted went (if it left the queue)."""
        self.accepted: set[str] = set()
        self.sent_count = 0
        self.consumers: list[Consumer] = []
        self.counted = Counter()
        """What the router's counters should say, summed over its starts."""
        self.before_restarts = Counter()
        """The counters of the cores that came before the one running now."""
        self.connect_producer()

    def teardown(self) -> None:
        harness = getattr(self, "harness", None)
        if harness is not None and harness.store is not None:
            harness.store.close()
        if hasattr(self, "directory"):
            shutil.rmtree(self.directory, ignore_errors=True)

    def connect_producer(self) -> None:
        self.producer = self.harness.connect("producer")
        self.sender = self.producer.sender(QUEUE)
        self.harness.settle()

    @property
    def core(self):
        return self.harness.core

    def wall(self) -> float:
        return self.harness.wall_clock_ms() / 1000.0

    # -- what the model does ---------------------------------------------------------------
    def ready(self) -> list[int]:
        return sorted(seq for seq in self.queued if seq not in self.out)

    def credit_left(self, promised: list[Model]) -> int:
        return sum(c.credit for c in self.consumers) - len(promised)

    def pump(self, promised: list[Model]) -> None:
        """What the router sends: the oldest waiting messages, while consumers have credit.
        (An expired one is never sent; it goes at the next tick.)"""
        now = self.wall()
        for seq in self.ready():
            if self.credit_left(promised) <= 0:
                return
            message_ = self.queued[seq]
            if message_.expires_at is not None and message_.expires_at <= now:
                continue
            self.out.add(seq)
            promised.append(message_)

    def leave(self, message_: Model, fate: str) -> None:
        del self.queued[message_.seq]
        self.out.discard(message_.seq)
        self.fate[message_.tag] = fate

    def dead_letter(self, message_: Model) -> None:
        self.leave(message_, "dead-lettered")
        self.counted["dead_lettered"] += 1
        # Moved as it is: its TTL and its failed deliveries go with it.
        self.dead.append(Model(seq=message_.seq, tag=message_.tag, size=message_.size,
                               expires_at=message_.expires_at, delivery_count=message_.delivery_count,
                               stored_count=message_.delivery_count, stored_expiry=message_.expires_at))

    def failed(self, message_: Model) -> None:
        """A delivery that may have reached the consumer, without an outcome."""
        message_.delivery_count += 1
        message_.stored_count = message_.delivery_count
        if message_.delivery_count >= MAX_ATTEMPTS:
            self.dead_letter(message_)
        else:
            self.out.discard(message_.seq)

    def settle_model(self, message_: Model, outcome: str) -> None:
        if message_.seq not in self.queued:
            return  # purged while out: the outcome changes nothing
        if outcome == "accept":
            self.leave(message_, "consumed")
        elif outcome in ("release", "modified"):
            self.out.discard(message_.seq)
        elif outcome == "reject":
            self.dead_letter(message_)
        else:
            self.failed(message_)

    def tick_model(self) -> None:
        now = self.wall()
        for seq in self.ready():
            message_ = self.queued[seq]
            if message_.expires_at is not None and message_.expires_at <= now:
                self.leave(message_, "expired")
                self.counted["expired"] += 1
        for message_ in list(self.dead):
            if message_.expires_at is not None and message_.expires_at <= now:
                self.dead.remove(message_)
                self.fate[message_.tag] = "expired as a dead letter"
                self.counted["expired"] += 1

    # -- a step ends -----------------------------------------------------------------------
    def finish(self, promised: list[Model]) -> None:
        """Let everything move (store answers, a tick at the same time), then check what
        each consumer was sent against what the model promised."""
        harness = self.harness
        harness.settle()
        harness.tick()
        harness.settle()
        self.tick_model()
        got: dict[str, tuple[Consumer, Delivery, int, bool | None]] = {}
        for consumer in self.consumers:
            received = [e.delivery for e in consumer.client.take(ev.DeliveryReceived)]
            assert len(received) <= consumer.credit, "a consumer was sent more than its credit"
            consumer.credit -= len(received)
            order = []
            for delivery in received:
                tag, count, first = decoded(delivery)
                assert tag not in got, f"{tag} sent to two consumers at once"
                got[tag] = (consumer, delivery, count, first)
                order.append(tag)
            seqs = [self.seq_of(tag) for tag in order]
            assert seqs == sorted(seqs), f"a consumer got {order}: not in queue order"
        expected = {m.tag for m in promised}
        assert set(got) == expected, f"consumers were sent {sorted(got)}, the model expects {sorted(expected)}"
        by_tag = {m.tag: m for m in promised}
        for tag, (consumer, delivery, count, first) in sorted(got.items(), key=lambda kv: by_tag[kv[0]].seq):
            model = by_tag[tag]
            assert count == model.delivery_count, f"{tag}: delivery-count {count}, expected {model.delivery_count}"
            if model.delivery_count:
                assert first is False, f"{tag}: sent again with first-acquirer {first}"
            consumer.held.append((delivery, model))

    def seq_of(self, tag: str) -> int:
        return int(tag[1:])

    # -- rules -----------------------------------------------------------------------------
    @rule(count=st.integers(1, 3), padding=st.integers(0, 40))
    def send(self, count: int, padding: int) -> None:
        """The producer sends up to ``count`` unsettled messages at once (as credit allows)."""
        count = min(count, self.sender.credit)
        sends: list[tuple[Delivery, Model]] = []
        for _ in range(count):
            self.sent_count += 1
            tag = f"m{self.sent_count:05d}"
            payload = message(f"{tag}:" + "p" * padding)
            model = Model(seq=self.sent_count, tag=tag, size=len(payload), expires_at=None)
            sends.append((self.sender.send(payload), model))
        now = self.wall()
        # Each arrival is judged against the queue's bound as it arrives ...
        incoming = 0
        stored: list[Model] = []
        refused: set[str] = set()
        for _, model in sends:
            if self.overflow == "reject-publish" and len(self.queued) + incoming >= MAX_MESSAGES:
                refused.add(model.tag)
                continue
            incoming += 1
            model.expires_at = now + TTL
            stored.append(model)
        # ... and once durable, each joins the queue, pushes out the oldest waiting one
        # under drop-head, and goes to a consumer if one has credit.
        promised: list[Model] = []
        for model in stored:
            self.queued[model.seq] = model
            self.accepted.add(model.tag)
            if self.overflow == "drop-head":
                while len(self.queued) > MAX_MESSAGES and self.ready():
                    self.leave(self.queued[self.ready()[0]], "dropped")
                    self.counted["dropped"] += 1
            self.pump(promised)
        self.finish(promised)
        for delivery, model in sends:
            assert delivery.remote_settled, f"{model.tag}: the producer was never answered"
            state = delivery.remote_state
            if model.tag in refused:
                assert isinstance(state, Rejected), f"{model.tag}: {state!r}, expected rejected (queue full)"
                assert state.error.condition == "amqp:resource-limit-exceeded"
            else:
                assert isinstance(state, Accepted), f"{model.tag}: {state!r}, expected accepted"

    @precondition(lambda self: len(self.consumers) < MAX_CONSUMERS)
    @rule(credit=st.integers(0, 4))
    def attach_consumer(self, credit: int) -> None:
        client = self.harness.connect(f"consumer-{len(self.consumers)}")
        link = client.receiver(QUEUE, credit=credit)
        self.consumers.append(Consumer(client, link, credit))
        promised: list[Model] = []
        self.pump(promised)
        self.finish(promised)
        assert link.active

    @precondition(lambda self: self.consumers)
    @rule(which=st.integers(0, MAX_CONSUMERS - 1), more=st.integers(1, 4))
    def grant_credit(self, which: int, more: int) -> None:
        consumer = self.consumers[which % len(self.consumers)]
        consumer.link.add_credit(more)
        consumer.credit += more
        promised: list[Model] = []
        self.pump(promised)
        self.finish(promised)

    @precondition(lambda self: any(c.held for c in self.consumers))
    @rule(which=st.integers(0, 100), index=st.integers(0, 100), outcome=st.sampled_from(OUTCOMES))
    def settle(self, which: int, index: int, outcome: str) -> None:
        holding = [c for c in self.consumers if c.held]
        consumer = holding[which % len(holding)]
        delivery, model = consumer.held.pop(index % len(consumer.held))
        state = {
            "accept": ACCEPTED,
            "release": RELEASED,
            "modified-failed": Modified(delivery_failed=True),
            "modified": Modified(delivery_failed=False),
            "reject": Rejected(),
            "no-outcome": None,
        }[outcome]
        delivery.settle(state)
        self.settle_model(model, outcome)
        promised: list[Model] = []
        self.pump(promised)
        self.finish(promised)

    @precondition(lambda self: self.consumers)
    @rule(which=st.integers(0, MAX_CONSUMERS - 1), how=st.sampled_from(["detach", "connection-lost"]))
    def consumer_leaves(self, which: int, how: str) -> None:
        """A consumer goes with what it holds unsettled: each counts as a failed delivery."""
        consumer = self.consumers.pop(which % len(self.consumers))
        if how == "detach":
            consumer.link.detach()
        else:
            consumer.client.port.abort()
        for _, model in consumer.held:
            self.settle_model(model, "no-outcome")
        promised: list[Model] = []
        self.pump(promised)
        self.finish(promised)

    @rule(steps=st.integers(1, 25))
    def time_passes(self, steps: int) -> None:
        self.harness.advance(steps * STEP_SECONDS, step=STEP_SECONDS)
        self.tick_model()
        self.finish([])

    @rule()
    def purge(self) -> None:
        count = self.core.queues.purge(QUEUE)
        assert count == len(self.queued)
        for model in list(self.queued.values()):
            self.leave(model, "purged")
        self.finish([])

    @rule(clean=st.booleans())
    def restart(self, clean: bool) -> None:
        """The router stops (cleanly, or dies) and starts again on the same store."""
        if clean:
            # Connections are closed: what was out with consumers failed to be delivered.
            for consumer in self.consumers:
                for _, model in consumer.held:
                    self.settle_model(model, "no-outcome")
        self.out.clear()
        self.consumers = []
        stopped = self.core.queues
        self.harness.restart(clean=clean)
        self.before_restarts.update(expired=stopped.expired, dropped=stopped.dropped,
                                    dead_lettered=stopped.dead_lettered)
        self.connect_producer()
        self.finish([])

    @rule()
    def drain_dead_letters(self) -> None:
        """A consumer takes everything from the dead-letter queue: exactly what the model
        dead-lettered, sent as the model says."""
        client = self.harness.connect("dead-letters")
        link = client.receiver(DEAD, credit=1000)
        self.harness.settle()
        deliveries = [e.delivery for e in client.take(ev.DeliveryReceived)]
        received = [decoded(delivery) for delivery in deliveries]
        expected = [(m.tag, m.delivery_count, False if m.delivery_count else None) for m in self.dead]
        assert sorted(received) == sorted(expected)
        for delivery in deliveries:
            delivery.settle(ACCEPTED)
        for model in self.dead:
            self.fate[model.tag] = "dead-letter consumed"
        self.dead = []
        client.engine.close()
        self.finish([])

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def view_agrees(self) -> None:
        if not hasattr(self, "harness"):
            return
        rows = {row["name"]: row for row in self.core.queues.view()}
        row = rows.get(QUEUE)
        assert row is not None, "the queue is gone"
        assert row["depth"] == len(self.queued), f"depth {row['depth']}, model {sorted(self.queued)}"
        assert row["bytes"] == sum(m.size for m in self.queued.values())
        assert row["ready"] == len(self.queued) - len(self.out)
        assert row["unacked"] == len(self.out)
        assert row["consumers"] == len(self.consumers)
        dead = rows.get(DEAD)
        assert (dead["depth"] if dead else 0) == len(self.dead)
        assert (dead["bytes"] if dead else 0) == sum(m.size for m in self.dead)
        for each in rows.values():
            assert each["depth"] >= 0 and each["bytes"] >= 0 and each["ready"] >= 0

    @invariant()
    def nothing_accepted_is_lost(self) -> None:
        if not hasattr(self, "harness"):
            return
        queued = {m.tag for m in self.queued.values()}
        dead = {m.tag for m in self.dead}
        for tag in self.accepted:
            assert tag in queued or tag in dead or tag in self.fate, f"{tag} was accepted and is nowhere"
        assert not (queued & dead)

    @invariant()
    def counters_agree(self) -> None:
        if not hasattr(self, "harness"):
            return
        queues = self.core.queues
        before = self.before_restarts
        assert before["expired"] + queues.expired == self.counted["expired"]
        assert before["dropped"] + queues.dropped == self.counted["dropped"]
        assert before["dead_lettered"] + queues.dead_lettered == self.counted["dead_lettered"]
        assert queues.store_errors == 0


class SmallWindowQueueMachine(QueueMachine):
    """Most waiting payloads are on disk only: they are read back as the head reaches them."""

    window = 100


class DropHeadQueueMachine(QueueMachine):
    overflow = "drop-head"


MODEL_SETTINGS = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("machine", [QueueMachine, SmallWindowQueueMachine, DropHeadQueueMachine],
                         ids=["reject-publish", "reject-publish-small-window", "drop-head"])
def test_a_queue_agrees_with_its_model_under_any_sequence_of_operations(machine) -> None:
    run_state_machine_as_test(machine, settings=MODEL_SETTINGS)


# ==========================================================================================
# Edge cases, one at a time
# ==========================================================================================
@pytest.fixture
def harness(tmp_path: Path):
    made: list[RouterHarness] = []

    def make(overflow: str = "reject-publish") -> RouterHarness:
        made.append(RouterHarness(config=queue_config(overflow), store_path=tmp_path / "queues.db"))
        return made[-1]

    yield make
    for each in made:
        if each.store is not None:
            each.store.close()


def send_all(harness: RouterHarness, bodies: list[str], address: str = QUEUE) -> list[Delivery]:
    client = harness.connect("producer")
    sender = client.sender(address)
    harness.settle()
    deliveries = [sender.send(message(body)) for body in bodies]
    harness.settle()
    return deliveries


def take(harness: RouterHarness, client: Client) -> list[tuple[str, Delivery]]:
    harness.settle()
    return [(decoded(e.delivery)[0], e.delivery) for e in client.take(ev.DeliveryReceived)]


def row(harness: RouterHarness, name: str = QUEUE) -> dict:
    return {r["name"]: r for r in harness.core.queues.view()}[name]


def test_drop_head_at_its_bound_with_every_older_message_out_drops_the_newest(harness) -> None:
    # drop-head discards the oldest *waiting* message; messages out with a consumer still
    # count against the bound but cannot be dropped, so the newcomer is the one that goes.
    router = harness("drop-head")
    consumer = router.connect("consumer")
    consumer.receiver(QUEUE, credit=MAX_MESSAGES)
    held = take(router, consumer)  # nothing yet
    assert held == []
    sent = send_all(router, [f"m{i}" for i in range(MAX_MESSAGES)])
    held = take(router, consumer)
    assert [tag for tag, _ in held] == [f"m{i}" for i in range(MAX_MESSAGES)]

    late = send_all(router, ["late"])

    assert all(isinstance(d.remote_state, Accepted) for d in sent + late)
    assert row(router)["depth"] == MAX_MESSAGES
    assert row(router)["unacked"] == MAX_MESSAGES
    assert router.core.queues.dropped == 1
    # The consumer releases everything: the queue is back to what it held, in order.
    for _, delivery in held:
        delivery.settle(RELEASED)
    consumer_two = router.connect("consumer-two")
    consumer_two.receiver(QUEUE, credit=10)
    again = take(router, consumer) + take(router, consumer_two)
    assert sorted(tag for tag, _ in again) == [f"m{i}" for i in range(MAX_MESSAGES)]


def test_outcomes_of_messages_purged_while_out_change_nothing(harness) -> None:
    router = harness()
    send_all(router, ["a", "b", "c"])
    consumer = router.connect("consumer")
    consumer.receiver(QUEUE, credit=3)
    held = dict(take(router, consumer))
    assert sorted(held) == ["a", "b", "c"]

    assert router.core.queues.purge(QUEUE) == 3
    held["a"].settle(RELEASED)
    held["b"].settle(Modified(delivery_failed=True))
    held["c"].settle(Rejected())
    router.settle()

    assert row(router)["depth"] == 0 and row(router)["bytes"] == 0
    assert DEAD not in {r["name"] for r in router.core.queues.view()}
    late = router.connect("late")
    late.receiver(QUEUE, credit=10)
    assert take(router, late) == []
    router.restart(clean=False)
    assert row(router)["depth"] == 0


def test_a_consumer_whose_max_message_size_is_below_the_head_gets_nothing_until_another_takes_it(harness) -> None:
    # The queue keeps its order: a message too large for a consumer is not skipped for it
    # (spec 2.7.3: it must not be sent), and it is neither dropped nor rejected.
    router = harness()
    send_all(router, ["big:" + "x" * 500, "small"])
    small_only = router.connect("small-only")
    session = small_only.begin()
    session.receiver("small-only", source=Source(address=QUEUE), credit=10, max_message_size=100)
    assert take(router, small_only) == []
    assert row(router)["ready"] == 2

    anyone = router.connect("anyone")
    anyone.receiver(QUEUE, credit=1)
    got_big = take(router, anyone)
    assert [tag for tag, _ in got_big] == ["big"]
    assert [tag for tag, _ in take(router, small_only)] == ["small"]
    got_big[0][1].settle(ACCEPTED)
    router.settle()
    assert row(router)["depth"] == 1  # "small", out with the small-only consumer


def test_a_message_being_stored_when_its_queue_is_purged_is_purged_in_memory_as_on_disk(harness) -> None:
    router = harness()
    client = router.connect("producer")
    sender = client.sender(QUEUE)
    router.settle()
    delivery = sender.send(message("in-flight"))
    router.run()  # the router has it and has asked the store to write it; no answer yet
    router.core.queues.purge(QUEUE)
    router.settle()
    assert isinstance(delivery.remote_state, Accepted)
    before = row(router)["depth"]
    router.restart(clean=False)
    assert before == row(router)["depth"] == 0


def test_a_dead_letter_is_the_same_message_after_a_restart(harness) -> None:
    router = harness()
    send_all(router, ["doomed"])
    consumer = router.connect("consumer")
    consumer.receiver(QUEUE, credit=2)
    [(_, first)] = take(router, consumer)
    first.settle(Modified(delivery_failed=True))
    [(_, second)] = take(router, consumer)
    second.settle(Rejected())
    router.settle()

    def look_at_the_dead_letter() -> tuple[str, int, bool | None]:
        reader = router.connect("reader")
        link = reader.receiver(DEAD, credit=1)
        router.settle()
        [event] = reader.take(ev.DeliveryReceived)
        seen = decoded(event.delivery)
        event.delivery.settle(RELEASED)  # put back unchanged
        link.detach()
        router.settle()
        return seen

    before = look_at_the_dead_letter()
    router.restart(clean=False)
    assert look_at_the_dead_letter() == before, "the same delivery-count and first-acquirer"
    # It keeps its time to live, before a restart as after.
    router.advance(TTL + 1.0, step=STEP_SECONDS)
    assert row(router, DEAD)["depth"] == 0
