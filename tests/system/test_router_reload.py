"""Reloading a real router's configuration: SIGHUP, ``RELOAD config``, ``POST /api/reload``.

A Qpid Proton client keeps a connection and its links open across each reload: the new
configuration applies to new links (a prefix turned multicast) and to the queues the
router hosts (a lowered bound refuses the next message on a link attached before), while
the old connection keeps delivering.  A file with a mistake, or with a change that needs
a restart, is refused naming the key, and the running configuration stays.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from proton import Delivery, Message as ProtonMessage
from proton.reactor import AtMostOnce
from proton.utils import BlockingConnection, SendException

from system_support import switchboard_command

CONFIG = """
[router]
id = "reloading"
data_dir = "data"

[admin]
port = 0

[[addresses]]
prefix = "fan/"
distribution = "{fan}"

[[addresses]]
prefix = "jobs/"
distribution = "queue"
max_messages = {max_messages}
{extra}
"""

_ADMIN = re.compile(r"admin on (http://\S+)")


def config(fan: str = "balanced", max_messages: int = 100, extra: str = "") -> str:
    return CONFIG.format(fan=fan, max_messages=max_messages, extra=extra)


def admin_url(process: Any) -> str:
    match = process.stdout.wait_for(_ADMIN, 15)
    assert match is not None, process.output()
    return match.group(1)


def http(method: str, url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_reloads(base: str, count: int, timeout: float = 15.0) -> dict[str, Any]:
    """Poll ``GET /api/reload`` (bounded) until the router has done ``count`` reloads."""
    deadline = time.monotonic() + timeout
    while True:
        status, state = http("GET", f"{base}/api/reload")
        assert status == 200, state
        if state["reloads"] >= count:
            return state
        assert time.monotonic() < deadline, f"no reload {count} within {timeout} s: {state}"
        time.sleep(0.05)


def distribution(base: str, address: str) -> str | None:
    _, rows = http("GET", f"{base}/api/addresses")
    return next((row["distribution"] for row in rows if row["address"] == address), None)


def proton_management(url: str, operation: str, what: str) -> tuple[dict[str, Any], Any]:
    """One ``$management`` request from a Proton client: the answer's properties and body."""
    connection = BlockingConnection(url, timeout=10)
    try:
        replies = connection.create_receiver(None, dynamic=True, credit=1)
        requests = connection.create_sender("$management")
        requests.send(ProtonMessage(id="reload-1", reply_to=replies.link.remote_source.address,
                                    properties={"operation": operation, "type": what}))
        answer = replies.receive(timeout=10)  # sent settled: nothing to accept
        return answer.properties, answer.body
    finally:
        connection.close()


def test_sighup_changes_behaviour_for_new_links_and_queues_without_dropping_a_connection(router, tmp_path) -> None:
    r = router(config())
    base = admin_url(r)
    old = BlockingConnection(r.url, timeout=10)
    new = None
    try:
        # At most once: the router settles the sender's message as it passes it on, so one
        # blocking connection can both send and receive it.
        old_receiver = old.create_receiver("fan/old", credit=10, options=AtMostOnce())
        old_sender = old.create_sender("fan/old")
        jobs = old.create_sender("jobs/a")
        for i in range(3):
            jobs.send(ProtonMessage(body=f"job {i}"))

        r.config_path.write_text(config(fan="multicast", max_messages=2))
        r.signal(signal.SIGHUP)
        state = wait_reloads(base, 1)
        assert state["outcome"] == "applied", state
        assert "address prefix 'fan/': distribution balanced -> multicast" in state["changes"]
        assert "address prefix 'jobs/': max_messages 100 -> 2" in state["changes"]
        assert r.wait_log(r"reload: .*distribution balanced -> multicast.*max_messages 100 -> 2", 10), r.output()

        # A new link on a fan/ address is multicast: both consumers get the message.
        new = BlockingConnection(r.url, timeout=10)
        first = new.create_receiver("fan/new", credit=10, name="first")
        second = new.create_receiver("fan/new", credit=10, name="second")
        new.create_sender("fan/new").send(ProtonMessage(body="to all"))
        assert first.receive(timeout=10).body == "to all"
        assert second.receive(timeout=10).body == "to all"
        assert distribution(base, "fan/new") == "multicast"

        # The queue's lower bound applies at once, to the link attached before: the next
        # message is refused, and the three stored are kept.
        with pytest.raises(SendException) as refused:
            jobs.send(ProtonMessage(body="job 3"))
        assert refused.value.state == Delivery.REJECTED
        _, queues = http("GET", f"{base}/api/queues")
        assert [(q["name"], q["depth"]) for q in queues] == [("jobs/a", 3)]

        # The connection opened before the reload still delivers, on its old links.
        old_sender.send(ProtonMessage(body="still here"))
        assert old_receiver.receive(timeout=10).body == "still here"
    finally:
        if new is not None:
            new.close()
        old.close()


def test_a_bad_file_keeps_the_running_configuration_and_names_the_key(router, tmp_path) -> None:
    r = router(config())
    base = admin_url(r)
    old = BlockingConnection(r.url, timeout=10)
    try:
        old_receiver = old.create_receiver("fan/kept", credit=10, options=AtMostOnce())
        old_sender = old.create_sender("fan/kept")

        # SIGHUP with an unknown key: refused, logged with the key.
        r.config_path.write_text(config(fan="multicast", extra='colour = "blue"'))
        r.signal(signal.SIGHUP)
        state = wait_reloads(base, 1)
        assert state["outcome"] == "refused"
        assert state["error"].startswith("addresses[1].colour: unknown key"), state
        assert r.wait_log(r"reload refused, configuration kept: addresses\[1\]\.colour: unknown key", 10), r.output()

        # RELOAD config from a Proton client, with a bad value: 400 naming the key.
        r.config_path.write_text(config(fan="multicast", max_messages=0))
        properties, _ = proton_management(r.url, "RELOAD", "config")
        assert properties["status-code"] == 400
        assert "addresses[1].max_messages: must be 1..1000000000, got 0" in properties["status-description"]

        # A change that needs a restart, over HTTP: refused, naming the key.
        r.config_path.write_text(config(fan="multicast").replace('id = "reloading"', 'id = "renamed"'))
        status, answer = http("POST", f"{base}/api/reload")
        assert status == 400
        assert answer["description"].startswith("router.id: changes need a restart"), answer

        # Nothing changed: fan/ is still balanced for a new link, the old connection delivers.
        probe = old.create_receiver("fan/probe", credit=1)
        assert distribution(base, "fan/probe") == "balanced"
        probe.close()
        old_sender.send(ProtonMessage(body="after three refusals"))
        assert old_receiver.receive(timeout=10).body == "after three refusals"

        # The file put right: `switchboard reload` applies it.
        r.config_path.write_text(config(fan="multicast"))
        done = subprocess.run([*switchboard_command(), "reload", "--router", r.url],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "changed: address prefix 'fan/': distribution balanced -> multicast" in done.stdout
        assert wait_reloads(base, 4)["outcome"] == "applied"
    finally:
        old.close()


def test_a_router_started_without_a_file_has_nothing_to_reload(router) -> None:
    r = router()
    done = subprocess.run([*switchboard_command(), "reload", "--router", r.url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "started without --config: the embedded defaults do not change" in done.stdout
    assert r.wait_log(r"reload: no configuration file \(started without --config\)", 10), r.output()


def test_a_router_of_the_network_reloads_when_asked_through_another(network) -> None:
    """``switchboard reload --at B`` through A: B reads its own file again."""
    routers = network({"A": [], "B": [("A", 1)]})
    b = routers["B"].process
    original = b.config_path.read_text(encoding="utf-8")

    def reload_b_through_a(at: str = "B") -> subprocess.CompletedProcess[str]:
        return subprocess.run([*switchboard_command(), "reload", "--router", routers["A"].url, "--at", at],
                              capture_output=True, text=True, timeout=60)

    b.config_path.write_text(original + '\n[[addresses]]\nprefix = "fan/"\ndistribution = "multicast"\n', encoding="utf-8")
    done = reload_b_through_a()
    assert done.returncode == 0, done.stderr
    assert "changed: address prefix 'fan/' added (multicast)" in done.stdout, done.stdout
    assert b.wait_log(r"switchboard\.router\.config: reload: address prefix 'fan/' added", 10), b.output()

    b.config_path.write_text(original + '\n[[addresses]]\nprefix = "fan/"\ndistribution = "sideways"\n', encoding="utf-8")
    refused = reload_b_through_a()
    assert refused.returncode == 1 and "configuration refused" in refused.stderr, refused
    assert "addresses[0].distribution" in refused.stderr and "sideways" in refused.stderr, refused.stderr

    unknown = reload_b_through_a("Q")
    assert unknown.returncode == 1 and "router 'Q' is not in the network" in unknown.stderr, unknown.stderr
