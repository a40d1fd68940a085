"""Login throttling per host, and password verification off the event loop."""

import asyncio
import threading

from switchboard.amqp.spec import SaslCode
from switchboard.router.auth import Authenticator, LoginThrottle
from switchboard.router.config import AuthenticationConfig
from switchboard.router.core import Counters
from switchboard.router.credentials import Credentials


def test_a_host_is_blocked_after_max_failures_within_the_window() -> None:
    throttle = LoginThrottle(max_failures=3, window=10.0, block=30.0, max_hosts=100)
    assert [throttle.failed("h", t) for t in (0.0, 1.0)] == [False, False]
    assert not throttle.blocked("h", 2.0)
    assert throttle.failed("h", 2.0) is True  # the third starts the block: logged once
    assert throttle.blocked("h", 2.0) and throttle.blocked("h", 31.9)
    assert not throttle.blocked("other", 3.0)
    assert not throttle.blocked("h", 32.0)  # the block ends


def test_failures_outside_the_window_do_not_add_up() -> None:
    throttle = LoginThrottle(max_failures=3, window=10.0, block=30.0, max_hosts=100)
    throttle.failed("h", 0.0)
    throttle.failed("h", 5.0)
    assert throttle.failed("h", 11.0) is False  # the window restarted at 11
    assert not throttle.blocked("h", 11.0)


def test_a_success_clears_the_count() -> None:
    throttle = LoginThrottle(max_failures=2, window=10.0, block=30.0, max_hosts=100)
    throttle.failed("h", 0.0)
    throttle.succeeded("h")
    assert throttle.failed("h", 1.0) is False


def test_the_table_of_hosts_is_bounded() -> None:
    throttle = LoginThrottle(max_failures=5, window=10.0, block=30.0, max_hosts=50)
    for i in range(10_000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}", float(i) / 1000)
    assert len(throttle) == 50


def _authenticator(loop, **config) -> tuple[Authenticator, Counters]:
    credentials = Credentials()
    credentials.set_password("alice", "s3cret", n=2**4, r=1, p=1)
    counters = Counters()
    return Authenticator(credentials, AuthenticationConfig(**config), counters, loop), counters


def test_verification_runs_off_the_loop_and_answers_on_it() -> None:
    async def scenario():
        loop = asyncio.get_running_loop()
        auth, counters = _authenticator(loop)
        results = []
        for user, password in (("alice", "s3cret"), ("alice", "wrong"), ("mallory", "s3cret")):
            decided = loop.create_future()
            auth.verify("10.0.0.1", user, password,
                        lambda code, f=decided: f.set_result((code, threading.current_thread() is threading.main_thread())))
            assert not decided.done()  # never answered in the caller's turn: the hash is on a thread
            results.append(await asyncio.wait_for(decided, 10))
        auth.close()
        return results, counters

    results, counters = asyncio.run(scenario())
    assert results == [(SaslCode.OK, True), (SaslCode.AUTH, True), (SaslCode.AUTH, True)]
    assert counters.logins_failed == 2


def test_beyond_max_pending_a_login_is_refused_at_once_with_sys_temp() -> None:
    async def scenario():
        loop = asyncio.get_running_loop()
        auth, counters = _authenticator(loop, verify_threads=1, max_pending_logins=2)
        waiting = [loop.create_future() for _ in range(2)]
        for future in waiting:
            auth.verify("h", "alice", "s3cret", future.set_result)
        at_once = []
        auth.verify("h", "alice", "s3cret", at_once.append)
        assert at_once == [SaslCode.SYS_TEMP]
        assert await asyncio.wait_for(asyncio.gather(*waiting), 10) == [SaslCode.OK, SaslCode.OK]
        again = loop.create_future()
        auth.verify("h", "alice", "s3cret", again.set_result)  # room again
        assert await asyncio.wait_for(again, 10) == SaslCode.OK
        auth.close()
        return counters

    assert asyncio.run(scenario()).logins_busy == 1


def test_a_blocked_host_is_refused_without_hashing_even_with_the_right_password() -> None:
    async def scenario():
        loop = asyncio.get_running_loop()
        auth, counters = _authenticator(loop, max_failed_logins=2, block_period=60.0)
        for _ in range(2):
            done = loop.create_future()
            auth.verify("10.1.1.1", "alice", "wrong", done.set_result)
            assert await asyncio.wait_for(done, 10) == SaslCode.AUTH
        at_once = []
        auth.verify("10.1.1.1", "alice", "s3cret", at_once.append)
        assert at_once == [SaslCode.AUTH] and auth.pending == 0
        other = loop.create_future()
        auth.verify("10.2.2.2", "alice", "s3cret", other.set_result)
        assert await asyncio.wait_for(other, 10) == SaslCode.OK
        auth.close()
        return counters

    counters = asyncio.run(scenario())
    assert (counters.logins_failed, counters.logins_throttled) == (2, 1)
