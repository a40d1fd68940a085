"""Random sequences of store operations, checked against a plain in-memory model.

Operations are made without waiting for one another, as the router makes them; the
checks (``fetch``, ``queue``, ``expire``, a restart's ``Recovered``) wait, and at that
point the store must agree with the model, which applies every call at once, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from switchboard.store import FSYNC_POLICIES, QueueRecord, StoredMessage

T0 = 1_800_000_000.0
NAMES = st.sampled_from(["a", "b", "dead"])
MAX_EXAMPLES = 60
STEPS = 50


@dataclass
class ModelQueue:
    created_at: float
    last_active_at: float
    next_message_id: int = 1
    messages: dict[int, tuple[StoredMessage, float]] = field(default_factory=dict)
    """id -> (message, enqueued_at)"""

    def record(self, name: str) -> QueueRecord:
        oldest = min(self.messages) if self.messages else None
        return QueueRecord(
            name=name, messages=len(self.messages),
            bytes=sum(len(m.payload) for m, _ in self.messages.values()),
            created_at=self.created_at, last_active_at=self.last_active_at,
            oldest_at=None if oldest is None else self.messages[oldest][1],
            next_message_id=self.next_message_id)

    def add(self, message: StoredMessage, now: float) -> None:
        self.messages[message.message_id] = (message, now)
        self.next_message_id = max(self.next_message_id, message.message_id + 1)
        self.last_active_at = max(self.last_active_at, now)


def run_model_test(store_factory, completions, fsync: str) -> None:
    class StoreAgreesWithModel(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            self.store, recovered = store_factory(completions.post, fsync)
            # Every example starts from an empty store; the database is the test's.
            for record in recovered.queues:
                assert completions.call(self.store.delete_queue, record.name) is None
            self.model: dict[str, ModelQueue] = {}
            self.now = T0
            self.acks: list = []

        def teardown(self) -> None:
            if hasattr(self, "store"):
                self.store.close()

        def tick(self) -> float:
            self.now += 1.0
            return self.now

        def queue_of(self, name: str, now: float) -> ModelQueue:
            if name not in self.model:
                self.model[name] = ModelQueue(created_at=now, last_active_at=now)
            return self.model[name]

        def some_id(self, name: str, data) -> int:
            """Mostly a message the queue holds; sometimes one it does not."""
            held = sorted(self.model[name].messages) if name in self.model else []
            absent = st.integers(1, 60)
            return data.draw(st.sampled_from(held) | absent if held else absent)

        # -- operations (no waiting) -----------------------------------------------------

        @rule(name=NAMES)
        def create(self, name: str) -> None:
            now = self.tick()
            self.store.create_queue(name, now)
            self.queue_of(name, now)

        @rule(name=NAMES, size=st.integers(0, 3000), ttl=st.none() | st.integers(1, 30),
              wait=st.booleans())
        def enqueue(self, name: str, size: int, ttl: int | None, wait: bool) -> None:
            now = self.tick()
            q = self.queue_of(name, now)
            message_id = q.next_message_id
            m = StoredMessage(message_id, bytes([message_id % 256]) * size,
                              None if ttl is None else now + ttl)
            pending = completions.pending() if wait else None
            self.store.enqueue(name, m, now, pending)
            q.add(m, now)
            if pending is not None:
                self.acks.append(pending)

        @rule(name=NAMES, data=st.data())
        def remove(self, name: str, data) -> None:
            message_id = self.some_id(name, data)
            self.store.remove(name, message_id)
            if name in self.model:
                self.model[name].messages.pop(message_id, None)

        @rule(name=NAMES, data=st.data(), count=st.integers(0, 6))
        def set_delivery_count(self, name: str, data, count: int) -> None:
            message_id = self.some_id(name, data)
            self.store.set_delivery_count(name, message_id, count)
            q = self.model.get(name)
            if q is not None and message_id in q.messages:
                m, at = q.messages[message_id]
                q.messages[message_id] = (StoredMessage(m.message_id, m.payload, m.expires_at, count), at)

        @rule(name=NAMES, to_name=NAMES, data=st.data())
        def move(self, name: str, to_name: str, data) -> None:
            if name == to_name:
                return
            message_id = self.some_id(name, data)
            now = self.tick()
            q = self.model.get(name)
            if q is None or message_id not in q.messages:
                # Nothing to move; the router gives the next id of the target anyway.
                to_id = self.model[to_name].next_message_id if to_name in self.model else 1
                self.store.move(name, message_id, to_name, to_id, now)
                return
            to = self.queue_of(to_name, now)
            new_id = to.next_message_id
            self.store.move(name, message_id, to_name, new_id, now)
            m, _ = q.messages.pop(message_id)
            to.add(StoredMessage(new_id, m.payload, m.expires_at, m.delivery_count), now)

        @rule(name=NAMES)
        def touch(self, name: str) -> None:
            now = self.tick()
            self.store.touch_queue(name, now)
            if name in self.model:
                self.model[name].last_active_at = now

        @rule(name=NAMES)
        def purge(self, name: str) -> None:
            self.store.purge_queue(name)
            if name in self.model:
                self.model[name].messages.clear()

        @rule(name=NAMES)
        def delete(self, name: str) -> None:
            self.store.delete_queue(name)
            self.model.pop(name, None)

        # -- checks (wait for the store) --------------------------------------------------

        @rule(name=NAMES, after=st.integers(0, 12), max_count=st.integers(1, 8),
              max_bytes=st.integers(0, 8000))
        def fetch(self, name: str, after: int, max_count: int, max_bytes: int) -> None:
            got = completions.call(self.store.fetch, name, after, max_count, max_bytes)
            q = self.model.get(name)
            candidates = [] if q is None else [q.messages[i][0] for i in sorted(q.messages) if i > after]
            expected: list[StoredMessage] = []
            total = 0
            for m in candidates[:max_count]:
                total += len(m.payload)
                if expected and total > max_bytes:
                    break
                expected.append(m)
            assert got == expected

        @rule(name=NAMES)
        def record(self, name: str) -> None:
            got = completions.call(self.store.queue, name)
            q = self.model.get(name)
            assert got == (None if q is None else q.record(name))

        @rule(later=st.integers(0, 40))
        def expire(self, later: int) -> None:
            now = self.now + later
            got = completions.call(self.store.expire, now)
            expected: dict[str, int] = {}
            for name, q in self.model.items():
                gone = [i for i, (m, _) in q.messages.items()
                        if m.expires_at is not None and m.expires_at < now]
                for i in gone:
                    del q.messages[i]
                if gone:
                    expected[name] = len(gone)
            assert got == expected

        @rule()
        def restart(self) -> None:
            self.store.close()
            for pending in self.acks:
                assert completions.wait(pending) is None
            self.acks = []
            self.store, recovered = store_factory(completions.post, fsync)
            assert sorted(recovered.queues, key=lambda r: r.name) == [
                self.model[name].record(name) for name in sorted(self.model)]

        @invariant()
        def acknowledged_enqueues_succeeded(self) -> None:
            completions.run_posted()
            for pending in self.acks:
                if pending.called:
                    assert pending.result is None
            self.acks = [p for p in self.acks if not p.called]

    run_state_machine_as_test(
        StoreAgreesWithModel,
        settings=settings(max_examples=MAX_EXAMPLES, stateful_step_count=STEPS, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], database=None))


@pytest.mark.parametrize("fsync", FSYNC_POLICIES)
def test_the_store_agrees_with_a_model(store_factory, completions, fsync):
    run_model_test(store_factory, completions, fsync)
