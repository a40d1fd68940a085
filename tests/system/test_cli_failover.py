"""``switchboard send`` and ``receive`` with a list of routers, run as real processes.

    switchboard send/receive ──► r1 ─ ─► r2        (our asyncio client on the other end)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, Iterator

from system_support import HOST, run_async, switchboard_command
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted
from switchboard.client import Client

WAIT = 30.0


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A bound loopback port that never listens: connections to it are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


def router_list(*ports: int, address: str = "") -> str:
    return "amqp://" + ",".join(f"{HOST}:{port}" for port in ports) + f"/{address}"


async def start_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *switchboard_command(), *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    """Wait (bounded) for the command to end; its exit status, stdout and stderr."""
    try:
        async with asyncio.timeout(WAIT * 2):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        raise AssertionError(f"the command did not finish:\n{out.decode()}\n{err.decode()}") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def kill(process: Any) -> None:
    process.expect_exit = True
    process.kill()


def test_send_to_a_list_whose_first_router_is_down(router) -> None:
    r2 = router()
    with refused_port() as dead:

        async def scenario() -> None:
            async with await Client.connect(router_list(r2.port)) as client:
                receiver = await client.receiver("cli-send")
                command = await start_cli("send", router_list(dead, r2.port, address="cli-send"), "--count", "5")
                for _ in range(5):
                    (await receiver.receive(timeout=WAIT)).accept()
                code, out, err = await finish(command)
            assert code == 0, out + err
            assert out.startswith("5 accepted, 0 rejected, 0 released, 0 modified;"), out
            assert f"cannot connect to {HOST}:{dead}" in err

        run_async(scenario, timeout=120)


def test_receive_keeps_receiving_after_its_router_is_killed(router) -> None:
    r1, r2 = router(), router()

    async def scenario() -> None:
        command = await start_cli("receive", router_list(r1.port, r2.port, address="cli-rx"), "--count", "6")
        # An outcome is the consumer's own: "accepted" means the command took it.
        async with await Client.connect(router_list(r1.port)) as producer:
            sender = await producer.sender("cli-rx")
            for i in range(3):
                assert isinstance(await sender.send(Message(body=f"r1-{i}")), Accepted)
        kill(r1)
        async with await Client.connect(router_list(r2.port)) as producer:
            sender = await producer.sender("cli-rx")  # credit comes once the command is back
            for i in range(3):
                assert isinstance(await sender.send(Message(body=f"r2-{i}")), Accepted)
        code, out, err = await finish(command)
        assert code == 0, out + err
        assert out.splitlines() == ["r1-0", "r1-1", "r1-2", "r2-0", "r2-1", "r2-2"]
        assert f"connection to {HOST}:{r1.port} lost" in err
        assert f"failed over to {HOST}:{r2.port}" in err
        assert "received 6 messages" in err

    run_async(scenario, timeout=120)


def test_send_reports_outcomes_lost_with_the_router_and_fails(router) -> None:
    """Five messages sit unsettled at a consumer on r1 when r1 is killed: the command
    reports them as outcome unknown, apart from the router's own outcomes, and exits 1."""
    r1, r2 = router(), router()

    async def scenario() -> None:
        async with await Client.connect(router_list(r1.port)) as holder:
            receiver = await holder.receiver("cli-unknown", credit=10)
            command = await start_cli("send", router_list(r1.port, r2.port, address="cli-unknown"), "--count", "5")
            for _ in range(5):
                await receiver.receive(timeout=WAIT)  # held, never settled
            kill(r1)
            code, out, err = await finish(command)
        assert code == 1, out + err
        assert out.startswith(
            "0 accepted, 0 rejected, 0 released, 0 modified,"
            " 5 outcome unknown (connection lost in flight: maybe delivered);"
        ), out
        assert f"connection to {HOST}:{r1.port} lost" in err and "5 outcomes unknown" in err

    run_async(scenario, timeout=120)


def test_a_bad_router_list_is_refused_with_the_reason(router) -> None:
    async def scenario() -> None:
        command = await start_cli("send", f"amqp://{HOST}:5672,,{HOST}:5673/q")
        code, out, err = await finish(command)
        assert code == 2, out + err
        assert "router 2 is empty" in err

    run_async(scenario, timeout=60)
