"""Password verification off the event loop, and throttling of failed logins per host.

scrypt is slow on purpose (tens of milliseconds and 16 MiB a check): run on the event
loop, a burst of logins would stall every connection.  ``Authenticator.verify`` therefore

1. refuses at once, without hashing, a host that failed too often lately (``LoginThrottle``);
2. refuses at once with sasl-code ``sys-temp`` ("try again later") when
   ``max_pending_logins`` verifications are already running or waiting — the queue
   of work is bounded, not the clients' patience;
3. otherwise hashes in a small thread pool (``hashlib.scrypt`` releases the GIL) and
   hands the sasl-code to a callback on the event loop when it is ready.

The throttle's table of hosts is bounded: past ``max_tracked_hosts`` the host whose
record changed least recently is forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from ..amqp.spec import SaslCode
from .config import AuthenticationConfig
from .credentials import Credentials
from .logs import fields

__all__ = ["Authenticator", "LoginThrottle"]

log = logging.getLogger("switchboard.router.auth")

BUSY_LOG_SECONDS = 60.0
"""At most one "too many logins waiting" line per this many seconds."""


class _HostRecord:
    __slots__ = ("failures", "window_start", "blocked_until")

    def __init__(self, now: float) -> None:
        self.failures = 0
        self.window_start = now
        self.blocked_until = 0.0


class LoginThrottle:
    """Counts failed logins per remote host; blocks a host that fails too often.

    After ``max_failures`` failures within ``window`` seconds of its first one, a host is
    blocked for ``block`` seconds: every login from it is refused without a check,
    including one with the right password.  A successful login clears its count.
    """

    def __init__(self, max_failures: int, window: float, block: float, max_hosts: int) -> None:
        self.max_failures = max_failures
        self.window = window
        self.block = block
        self.max_hosts = max_hosts
        self._hosts: OrderedDict[str, _HostRecord] = OrderedDict()

    def blocked(self, host: str, now: float) -> bool:
        record = self._hosts.get(host)
        return record is not None and now < record.blocked_until

    def failed(self, host: str, now: float) -> bool:
        """Record a failure; True if it starts a block (for the once-per-block log line)."""
        record = self._hosts.get(host)
        if record is None:
            record = _HostRecord(now)
            self._hosts[host] = record
            while len(self._hosts) > self.max_hosts:
                self._hosts.popitem(last=False)
        else:
            self._hosts.move_to_end(host)
        if now - record.window_start > self.window:
            record.failures = 0
            record.window_start = now
        record.failures += 1
        if record.failures >= self.max_failures and now >= record.blocked_until:
            record.blocked_until = now + self.block
            record.failures = 0
            record.window_start = record.blocked_until
            return True
        return False

    def succeeded(self, host: str) -> None:
        self._hosts.pop(host, None)

    def __len__(self) -> int:
        return len(self._hosts)


class Authenticator:
    """Checks SASL PLAIN credentials for the router; lives on the event loop's thread."""

    def __init__(
        self,
        credentials: Credentials,
        config: AuthenticationConfig,
        counters: Any,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.credentials = credentials
        self.config = config
        self.counters = counters
        self._loop = loop
        self.throttle = LoginThrottle(
            config.max_failed_logins, config.failure_window, config.block_period, config.max_tracked_hosts
        )
        self._executor = ThreadPoolExecutor(max_workers=config.verify_threads, thread_name_prefix="switchboard-auth")
        self.pending = 0
        """Verifications running or waiting for a thread."""
        self._busy_logged_at: float | None = None
        credentials.decoy()  # made now, so the first unknown name costs no more than a known one
        path = config.credentials_file
        if path is not None:
            count = len(credentials)
            log.info("credentials file %s: %d %s", path, count, "user" if count == 1 else "users")
            try:
                if os.stat(path).st_mode & 0o077:
                    log.warning("the credentials file %s can be read by other users; chmod 600 it", path)
            except OSError:
                pass

    def verify(self, host: str, user: str, password: str, decided: Callable[[int], None],
               conn_id: str = "-", peer: str | None = None) -> None:
        """Judge ``user``/``password`` from ``host``; ``decided(sasl_code)`` runs on the loop.

        A refusal that needs no hashing (blocked host, too many waiting) is decided
        before this returns.  ``conn_id`` and ``peer`` name the connection in the log.
        """
        now = self._loop.time()
        if self.throttle.blocked(host, now):
            self.counters.logins_throttled += 1
            # The block itself was logged once; each refused attempt only at debug.
            if log.isEnabledFor(logging.DEBUG):
                log.debug("login refused: connection %s from %s, user %r: the host is blocked", conn_id,
                          peer or host, user, extra=fields(conn=conn_id, peer=peer or host, user=user))
            decided(SaslCode.AUTH)
            return
        if self.pending >= self.config.max_pending_logins:
            self.counters.logins_busy += 1
            if self._busy_logged_at is None or now - self._busy_logged_at >= BUSY_LOG_SECONDS:
                self._busy_logged_at = now
                log.warning(
                    "%d logins are already being verified (authentication.max_pending_logins);"
                    " refusing more with sys-temp until some finish", self.pending,
                )
            decided(SaslCode.SYS_TEMP)
            return
        self.pending += 1
        future = self._loop.run_in_executor(self._executor, self.credentials.verify, user, password)
        future.add_done_callback(lambda done: self._finished(done, host, user, decided, conn_id, peer or host))

    def _finished(self, future: "asyncio.Future[bool]", host: str, user: str, decided: Callable[[int], None],
                  conn_id: str = "-", peer: str = "") -> None:
        self.pending -= 1
        if future.cancelled():
            return  # shutting down
        error = future.exception()
        if error is not None:
            log.error("verifying the password of %r failed: %r", user, error)
            decided(SaslCode.SYS)
            return
        if future.result():
            self.throttle.succeeded(host)
            decided(SaslCode.OK)
            return
        self.counters.logins_failed += 1
        log.warning("login failed: connection %s from %s, user %r: wrong user name or password", conn_id, peer, user,
                    extra=fields(conn=conn_id, peer=peer, user=user))
        config = self.config
        if self.throttle.failed(host, self._loop.time()):
            log.warning(
                "%d failed logins from %s within %g s: refusing its logins for %g s",
                config.max_failed_logins, host, config.failure_window, config.block_period,
            )
        decided(SaslCode.AUTH)

    def close(self) -> None:
        """Stop the threads; verifications still waiting are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)
