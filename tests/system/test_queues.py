"""Durable queues on a real router process, with Qpid Proton clients.

    producer ──► router [queue/…  ⇄  SQLite under the router's data directory] ──► consumers

Every test runs on both stores (embedded SQLite, and PostgreSQL in a cluster the tests
start), except the SQLite data directory's lock.  What a user checks: a message sent before any consumer exists is there when one
attaches; a restart (clean or SIGKILL) loses nothing that was accepted; consumers
compete; each outcome does what it says (accept removes, release puts back at the head,
modified and a lost consumer redeliver with delivery-count + 1, reject dead-letters);
TTLs, idle-queue expiry and max length with each overflow policy; the operators'
view, purge and delete.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import subprocess
import time
from pathlib import Path

from queue_clients import QueueReceiver, QueueSender, management, queue_rows
from system_support import run_async, run_proton, switchboard_command

CONFIG = """
[router]
id = "qr"

[[addresses]]
prefix = "queue/"
distribution = "queue"
max_delivery_attempts = 3
dead_letter_address = "dead/queue"

[[addresses]]
prefix = "dead/"
distribution = "queue"

[[addresses]]
prefix = "short/"
distribution = "queue"
message_ttl = 0.3

[[addresses]]
prefix = "idle/"
distribution = "queue"
expiry = 1

[[addresses]]
prefix = "idle2/"
distribution = "queue"
expiry = 2

[[addresses]]
prefix = "brief/"
distribution = "queue"
message_ttl = 1
max_delivery_attempts = 1
dead_letter_address = "dead/brief"

[[addresses]]
prefix = "small/"
distribution = "queue"
max_messages = 5

[[addresses]]
prefix = "ring/"
distribution = "queue"
max_messages = 5
overflow = "drop-head"
"""


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def config(backend: str, request: pytest.FixtureRequest) -> str:
    """The queue configuration on each store: the same tests, the same answers."""
    if backend == "sqlite":
        return CONFIG
    dsn = request.getfixturevalue("postgres_dsn")
    return CONFIG + f'\n[store]\nbackend = "postgres"\ndsn = "{dsn}"\n'


def bodies(count: int, tag: str = "m") -> list[str]:
    return [f"{tag}{i}" for i in range(count)]


def send(url: str, address: str, items: list, **kwargs) -> QueueSender:
    sender = run_proton(QueueSender(url, address, items, **kwargs), timeout=30)
    assert not sender.errors, sender.errors
    return sender


def receive(url: str, address: str, count: int, **kwargs) -> QueueReceiver:
    receiver = run_proton(QueueReceiver(url, address, count, **kwargs), timeout=30)
    assert not receiver.errors, receiver.errors
    return receiver


def wait_for(predicate, what: str, timeout: float = 15.0) -> None:
    """Poll ``predicate`` (which asks the router) until it holds, bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)  # between two questions to the router, not instead of one


# ======================================================================================
# Store and forward
# ======================================================================================
def test_messages_sent_before_any_consumer_are_delivered_in_order_when_one_attaches(router, config) -> None:
    r = router(config)
    sender = send(r.url, "queue/early", bodies(300))
    assert sender.accepted == bodies(300), "every message is accepted once stored"
    assert queue_rows(r.url)["queue/early"]["depth"] == 300

    got = receive(r.url, "queue/early", 300, credit=50)
    assert got.received == bodies(300), "FIFO, nothing missing, nothing doubled"
    assert set(got.delivery_counts) == {0}
    wait_for(lambda: queue_rows(r.url)["queue/early"]["depth"] == 0, "accepted messages to leave the queue")


def test_presettled_messages_are_stored_too(router, config) -> None:
    r = router(config)
    send(r.url, "queue/fire", bodies(50), presettled=True)
    wait_for(lambda: queue_rows(r.url).get("queue/fire", {}).get("depth") == 50, "50 presettled messages stored")
    assert receive(r.url, "queue/fire", 50).received == bodies(50)


def test_accepted_messages_survive_a_clean_restart_and_a_sigkill(router, config, tmp_path: Path) -> None:
    r = router(config)
    send(r.url, "queue/kept", bodies(100))
    assert r.terminate() == 0
    r.expect_exit = True

    # Same working directory: the default data directory (./switchboard-data) again.
    r2 = router(config)
    assert (tmp_path / "switchboard-data").is_dir() == ("backend" not in config)
    wait_for(lambda: queue_rows(r2.url)["queue/kept"]["state"] == "ready", "the queue to be read back")
    assert queue_rows(r2.url)["queue/kept"]["depth"] == 100
    first = receive(r2.url, "queue/kept", 40)
    assert first.received == bodies(100)[:40]
    send(r2.url, "queue/kept", bodies(10, "late"))
    r2.kill()
    r2.expect_exit = True

    r3 = router(config)
    assert r3.wait_log(r"queue 'queue/kept' recovered: 70 messages", 10), r3.output()
    rest = receive(r3.url, "queue/kept", 70)
    assert rest.received == bodies(100)[40:] + bodies(10, "late")


def test_consumers_compete_and_share_the_messages(router, config) -> None:
    r = router(config)
    send(r.url, "queue/work", bodies(200))
    from system_support import ProtonThread

    one = ProtonThread(QueueReceiver(r.url, "queue/work", 100, credit=5), 30)
    two = ProtonThread(QueueReceiver(r.url, "queue/work", 100, credit=5), 30)
    one.start()
    two.start()
    got_one, got_two = one.join_result().received, two.join_result().received
    assert sorted(got_one + got_two, key=lambda b: int(b[1:])) == bodies(200), "each message to exactly one consumer"
    assert got_one and got_two


# ======================================================================================
# Outcomes
# ======================================================================================
def test_released_message_goes_back_to_the_head_undelivered(router, config) -> None:
    r = router(config)
    send(r.url, "queue/release", bodies(3))
    released = []

    def decide(message, delivery) -> str:
        if message.body == "m0" and not released:
            released.append(message.body)
            return "release"
        return "accept"

    got = receive(r.url, "queue/release", 4, decide=decide, credit=1)
    # m1 may already be on its way when m0 comes back; m2 is not: m0 goes before it.
    assert got.received[0] == "m0" and sorted(got.received) == ["m0", "m0", "m1", "m2"], got.received
    assert got.received.index("m0", 1) < got.received.index("m2"), got.received
    assert got.delivery_counts == [0, 0, 0, 0], "released: not counted as a delivery attempt"


def test_modified_redelivers_with_delivery_count_then_dead_letters(router, config) -> None:
    r = router(config)
    send(r.url, "queue/poison", ["poison", "fine"])
    got = receive(r.url, "queue/poison", 4, decide=lambda m, d: "modify" if m.body == "poison" else "accept", credit=1)
    # poison: attempts 1..3 fail, then it is dead-lettered; "fine" is taken in between.
    seen = [(body, count) for body, count in zip(got.received, got.delivery_counts)]
    assert [item for item in seen if item[0] == "poison"] == [("poison", 0), ("poison", 1), ("poison", 2)], seen
    assert ("fine", 0) in seen
    dead = receive(r.url, "dead/queue", 1)
    assert dead.received == ["poison"]
    wait_for(lambda: queue_rows(r.url)["queue/poison"]["depth"] == 0, "the poison message to leave its queue")


def test_rejected_message_is_dead_lettered(router, config) -> None:
    r = router(config)
    send(r.url, "queue/bad", ["bad", "good"])
    got = receive(r.url, "queue/bad", 2, decide=lambda m, d: "reject" if m.body == "bad" else "accept")
    assert got.received == ["bad", "good"]
    assert receive(r.url, "dead/queue", 1).received == ["bad"]


KILLED_CONSUMER = r'''
import sys
from proton.handlers import MessagingHandler
from proton.reactor import Container

url, address, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

class Holder(MessagingHandler):
    def __init__(self):
        super().__init__(prefetch=0, auto_accept=False)
        self.received = []
    def on_start(self, event):
        receiver = event.container.create_receiver(event.container.connect(url, reconnect=False), address)
        receiver.flow(count)  # exactly count, never more
    def on_message(self, event):
        self.received.append(event.message.body)
        if len(self.received) == count:
            print("HOLDING", " ".join(self.received), flush=True)

Container(Holder()).run()
'''


def test_messages_of_a_sigkilled_consumer_are_redelivered(router, config, spawn_script) -> None:
    r = router(config)
    send(r.url, "queue/jobs", bodies(30))
    holder = spawn_script(KILLED_CONSUMER, r.url, "queue/jobs", "10")
    held = holder.wait_line(r"HOLDING (.*)", 20).group(1).split()
    assert held == bodies(10)
    holder.kill()
    got = receive(r.url, "queue/jobs", 30)
    assert sorted(got.received, key=lambda b: int(b[1:])) == bodies(30), "nothing lost, nothing doubled"
    counts = dict(zip(got.received, got.delivery_counts))
    assert all(counts[b] == 1 for b in held), counts
    assert all(counts[b] == 0 for b in bodies(30)[10:]), counts
    assert got.received[:10] == held, "redelivered messages go first"


# ======================================================================================
# Bounds and time
# ======================================================================================
def test_reject_publish_tells_the_sender_the_queue_is_full(router, config) -> None:
    r = router(config)
    sender = send(r.url, "small/q", bodies(8))
    assert sender.accepted == bodies(5)
    for body in bodies(8)[5:]:
        assert sender.outcomes[body] == "rejected:amqp:resource-limit-exceeded", sender.outcomes
    assert receive(r.url, "small/q", 5).received == bodies(5)
    assert send(r.url, "small/q", ["again"]).accepted == ["again"], "room again once consumed"


def test_drop_head_keeps_the_newest(router, config) -> None:
    r = router(config)
    sender = send(r.url, "ring/q", bodies(8))
    assert sender.accepted == bodies(8)
    assert queue_rows(r.url)["ring/q"]["depth"] == 5
    assert receive(r.url, "ring/q", 5).received == bodies(8)[3:]


def test_messages_past_their_ttl_are_dropped(router, config) -> None:
    r = router(config)
    send(r.url, "short/q", bodies(5))             # the prefix's message_ttl (0.3 s)
    send(r.url, "queue/ttl", ["brief"], ttl=0.2)  # the message's own TTL
    send(r.url, "queue/ttl", ["lasting"])
    wait_for(lambda: queue_rows(r.url)["short/q"]["depth"] == 0, "messages past the prefix's TTL to go")
    wait_for(lambda: queue_rows(r.url)["queue/ttl"]["depth"] == 1, "the message past its own TTL to go")
    assert receive(r.url, "queue/ttl", 1).received == ["lasting"]
    send(r.url, "short/q", ["fresh"])
    assert receive(r.url, "short/q", 1).received == ["fresh"]


def test_an_idle_queue_expires_with_its_messages(router, config) -> None:
    r = router(config)
    send(r.url, "idle/forgotten", bodies(3))
    assert "idle/forgotten" in queue_rows(r.url)
    assert r.wait_log(r"queue 'idle/forgotten' expired after \d+ s with no consumer and no new message \(3 messages\)", 15), r.output()
    assert "idle/forgotten" not in queue_rows(r.url)


def test_a_queue_with_a_consumer_does_not_expire(router, config) -> None:
    r = router(config)
    from system_support import ProtonThread

    waiting = ProtonThread(QueueReceiver(r.url, "idle/watched", 1), 30)
    waiting.start()
    wait_for(lambda: queue_rows(r.url).get("idle/watched", {}).get("consumers") == 1, "the consumer to attach")
    # Two expiry periods with the consumer attached: the queue is still there.
    assert r.wait_log(r"queue 'idle/watched' expired", 2.5) is None
    send(r.url, "idle/watched", ["still here"])
    assert waiting.join_result().received == ["still here"]


def test_a_dead_lettered_message_keeps_its_time_to_live(router, config) -> None:
    r = router(config)
    send(r.url, "brief/q", ["doomed"])
    receive(r.url, "brief/q", 1, decide=lambda m, d: "reject")
    rows = queue_rows(r.url)
    assert rows["dead/brief"]["depth"] == 1 and rows["brief/q"]["dead_lettered"] == 1
    wait_for(lambda: queue_rows(r.url)["dead/brief"]["depth"] == 0, "the dead-lettered message to expire")
    assert queue_rows(r.url)["dead/brief"]["expired"] == 1


def test_the_idle_clock_starts_again_when_the_router_restarts(router, config, spawn_script) -> None:
    r = router(config)
    send(r.url, "idle2/held", bodies(2))
    holder = spawn_script(KILLED_CONSUMER, r.url, "idle2/held", "2")
    holder.wait_line("HOLDING", 20)
    # Longer than the expiry with the consumer holding both: the queue stays.
    assert r.wait_log(r"queue 'idle2/held' expired", 3) is None
    r.kill()
    r.expect_exit = True
    holder.kill()
    r2 = router(config)
    wait_for(lambda: queue_rows(r2.url)["idle2/held"]["state"] == "ready", "the queue to be read back")
    # The first once-a-second check comes and goes: the queue is still there.
    assert r2.wait_log(r"queue 'idle2/held' expired", 1.5) is None, r2.output()
    assert queue_rows(r2.url)["idle2/held"]["depth"] == 2, "not expired on the idle time before the crash"
    assert receive(r2.url, "idle2/held", 2).received == bodies(2)


# ======================================================================================
# Operators
# ======================================================================================
def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*switchboard_command(), *args], capture_output=True, text=True, timeout=60)


def test_operators_list_purge_and_delete_queues(router, config) -> None:
    r = router(config)
    send(r.url, "queue/a", bodies(7))
    send(r.url, "queue/b", bodies(2))
    listed = cli("queues", "list", "--router", r.url, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["queue/a"]["depth"] == 7 and rows["queue/b"]["depth"] == 2
    assert rows["queue/a"]["bytes"] > 0 and rows["queue/a"]["consumers"] == 0
    assert rows["queue/a"]["oldest_age_seconds"] is not None

    table = cli("queues", "list", "--router", r.url)
    assert "queue/a" in table.stdout and "DEPTH" in table.stdout

    purged = cli("queues", "purge", "queue/a", "--router", r.url)
    assert purged.returncode == 0 and "7 messages removed" in purged.stdout
    assert queue_rows(r.url)["queue/a"]["depth"] == 0

    deleted = cli("queues", "delete", "queue/b", "--router", r.url)
    assert deleted.returncode == 0, deleted.stderr
    assert "queue/b" not in queue_rows(r.url)

    missing = cli("queues", "delete", "queue/none", "--router", r.url)
    assert missing.returncode != 0 and "404" in missing.stderr and "queue/none" in missing.stderr

    # A queue deleted and used again starts empty.
    send(r.url, "queue/b", ["new"])
    assert receive(r.url, "queue/b", 1).received == ["new"]


def test_a_second_router_on_the_same_data_directory_is_refused(router, tmp_path: Path) -> None:
    config = CONFIG
    first = router(config)
    send(first.url, "queue/mine", ["made"])  # the store is made when a queue is first used
    from system_support import start_router_process

    second = start_router_process(tmp_path, config, name="second")
    assert second.proc.wait(30) != 0
    assert "lock" in second.stderr.text().lower(), second.output()


def test_management_of_an_unknown_queue_is_a_clear_404(router) -> None:
    r = router(CONFIG)
    try:
        management(r.url, "PURGE", "queue", "queue/none")
    except AssertionError as exc:
        assert "404" in str(exc)
    else:
        raise AssertionError("purging an unknown queue succeeded")


def test_queue_sender_gets_credit_without_any_consumer(router, config) -> None:
    """Credit comes from the queue's room: 1,000 messages go in with nobody listening."""
    r = router(config)

    async def scenario() -> int:
        from switchboard.amqp.message import Message
        from switchboard.client import Client

        async with await Client.connect(r.url) as client:
            sender = await client.sender("queue/room")
            futures = [await sender.send(Message(f"n{i}"), wait=False) for i in range(1000)]
            outcomes = await asyncio.gather(*futures)
            return sum(type(o).__name__ == "Accepted" for o in outcomes)

    assert run_async(scenario, timeout=60) == 1000
    assert queue_rows(r.url)["queue/room"]["depth"] == 1000


def test_routers_that_never_use_a_queue_share_a_directory_and_one_that_cannot_make_its_store_says_so(
        router, tmp_path: Path) -> None:
    """The store is made when a queue is first used: two routers started from one
    directory both run; the second to use a queue cannot take the store, and its client
    is told why instead of waiting."""
    from system_support import start_router_process

    first = router(CONFIG)
    second = start_router_process(tmp_path, CONFIG, name="second")
    second.wait_listening()
    try:
        assert send(first.url, "queue/one", ["a"]).accepted == ["a"]
        refused = run_proton(QueueSender(second.url, "queue/two", ["b"]), timeout=30)
        assert any("internal-error" in error for error in refused.errors) or \
            refused.outcomes.get("b", "").startswith("rejected:amqp:internal-error"), (refused.errors, refused.outcomes)
        assert second.wait_log(r"queue store: .*lock", 5), second.output()
    finally:
        second.terminate()


def test_a_consumer_that_stops_reading_holds_back_only_what_it_was_sent(router, config, spawn_script) -> None:
    """A consumer with a huge credit window stops reading its socket (SIGSTOP): the queue
    goes on serving the others, and what the stopped one held comes back when it dies."""
    import signal

    r = router(config)
    holder = spawn_script(KILLED_CONSUMER, r.url, "queue/stall", "100000")
    deadline = time.monotonic() + 20
    while queue_rows(r.url).get("queue/stall", {}).get("consumers") != 1:
        assert time.monotonic() < deadline, "the stalling consumer never attached"
        time.sleep(0.05)  # between two questions to the router
    holder.proc.send_signal(signal.SIGSTOP)
    payload = "x" * 4096
    items = [f"{i}:{payload}" for i in range(3000)]
    assert send(r.url, "queue/stall", items).accepted == items
    # The stopped consumer holds at most a bounded share; another consumer gets the rest.
    rows = queue_rows(r.url)["queue/stall"]
    assert rows["unacked"] <= 1000, rows  # limits.max_link_unsettled
    others = receive(r.url, "queue/stall", 3000 - rows["unacked"], credit=200)
    holder.kill()
    rest = receive(r.url, "queue/stall", rows["unacked"], credit=200) if rows["unacked"] else None
    got = [item.split(":", 1)[0] for item in others.received + (rest.received if rest else [])]
    assert sorted(got, key=int) == [str(i) for i in range(3000)], "each message once, none lost"
