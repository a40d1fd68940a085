"""The engine's entry point: one AMQP connection, sans-IO.

Bytes in, events out; calls in, bytes out::

    conn.receive_data(data)          # bytes from the socket
    events = conn.take_events()      # what the peer did, as facts
    conn.data_to_send()              # list of bytes-like, for transport.writelines
    deadline = conn.tick(now)        # heartbeats and timeouts; next time to call
    conn.sasl_decided(code)          # a server's answer to CredentialsReceived

The owner calls ``tick(now)`` after each batch of input and output and again at the
deadline it returns.  Nothing here blocks, sleeps, reads a clock or raises for the peer's
mistakes: a peer's violation becomes a close (or end, or detach) carrying the spec's
error condition, plus events.  When ``transport_done`` turns true the owner writes what
is left from ``data_to_send()`` and closes the socket.

Time is judged on whole frames: the bytes of a frame that has not all arrived are no
sign of life.  Three bounds follow: ``idle_timeout`` (no complete frame for that long),
``frame_timeout`` (a frame still unfinished that long after its first byte, whatever
``idle_timeout`` is) and ``handshake_timeout`` (no open that long after the start,
however the bytes trickle).  Heartbeats go out at half the peer's idle-time-out, never
more often than ``min_heartbeat_interval``, which our open announces
(``MIN_HEARTBEAT_INTERVAL``).
"""

from __future__ import annotations

import struct
from typing import Any, Callable, ClassVar, Final, cast

from .codec import decode_value
from .errors import AmqpError, Condition, DecodeError, FramingError, LocalProtocolError
from .events import Authenticated, ConnectionClosed, ConnectionOpened, CredentialsReceived, Event, SessionBegun
from .fastpath import (
    DISPOSITION_HEAD, FLOW_HEAD, TRANSFER_HEAD, TRANSFER_OVERHEAD, fast_state, read_disposition, read_flow,
    read_transfer, write_disposition_frame, write_flow_frame,
)
from .framing import AMQP_HEADER, EMPTY_FRAME, FRAME_AMQP, FRAME_SASL, MIN_MAX_FRAME_SIZE, SASL_HEADER, FrameReader
from .sasl import PENDING, SaslClient, SaslServer
from .session import Session, SessionError
from .spec import (
    Attach,
    Begin,
    Close,
    Detach,
    Disposition,
    End,
    Error,
    Flow,
    Open,
    SaslChallenge,
    SaslCode,
    SaslInit,
    SaslMechanisms,
    SaslOutcome,
    Transfer,
)
from .states import CONNECTION_TRANSITIONS, ConnectionState, Input, SessionState, StateMachine
from .types import Symbol, UInt

__all__ = ["Connection", "MIN_HEARTBEAT_INTERVAL"]

MIN_HEARTBEAT_INTERVAL: Final = Symbol("switchboard:min-heartbeat-interval")
"""Open property: the fewest milliseconds between our heartbeats, whatever the peer asks."""

_FRAME_SIZE: Final = struct.Struct(">I")
# Enum members and spec constants read for every frame, as module constants: from
# compiled code, reading one off its class is a generic attribute lookup (an enum
# class's through its metaclass's __getattr__ hook), dearer than the rest of the check.
_SESSION_MAPPED: Final = SessionState.MAPPED
_TRANSFER_OVERHEAD: Final = TRANSFER_OVERHEAD

# Which input is expected next, outside the AMQP frame phase.
_FIRST_HEADER: Final = "first header"
_SASL_HEADER: Final = "sasl header"
_SASL_FRAMES: Final = "sasl frames"
_SASL_DECISION: Final = "sasl decision"  # input waits while the owner judges credentials
_AMQP_HEADER: Final = "amqp header"
_FRAMES: Final = "frames"
_UNTIL_CLOSE: Final = "frames until the peer's close"
_NOTHING: Final = "nothing"

Trace = Callable[[str, int, Any, int], None]

# Spec 5.3.3.6, for the error a refused client reports.
_SASL_CODE_MEANINGS: Final = {
    SaslCode.AUTH: "authentication failed",
    SaslCode.SYS: "system error",
    SaslCode.SYS_PERM: "permanent system error",
    SaslCode.SYS_TEMP: "temporary system error, try again later",
}

# Once a close is sent or received, no new session may start.
_CLOSING: Final = frozenset((
    ConnectionState.OC_PIPE, ConnectionState.CLOSE_PIPE, ConnectionState.CLOSE_SENT,
    ConnectionState.CLOSE_RCVD, ConnectionState.DISCARDING, ConnectionState.END,
))


class Connection:
    """One AMQP connection's protocol state, either role (``server=True`` for listeners)."""

    raise_internal_errors: ClassVar[bool] = False
    """A bug of ours met while handling input is raised instead of closing the connection
    with ``amqp:internal-error`` (the test suite turns this on)."""

    def __init__(
        self,
        container_id: str,
        *,
        server: bool = False,
        hostname: str | None = None,
        max_frame_size: int = 65536,
        channel_max: int = 255,
        handle_max: int = 1023,
        idle_timeout: float | None = None,
        handshake_timeout: float | None = 10.0,
        frame_timeout: float | None = None,
        min_heartbeat_interval: float | None = None,
        sasl: SaslClient | SaslServer | None = None,
        properties: dict[Any, Any] | None = None,
        offered_capabilities: list[str] | None = None,
        desired_capabilities: list[str] | None = None,
        trace: Trace | None = None,
    ) -> None:
        if max_frame_size < MIN_MAX_FRAME_SIZE:
            raise LocalProtocolError(f"max_frame_size must be at least {MIN_MAX_FRAME_SIZE}")
        if server and sasl is not None and not isinstance(sasl, SaslServer):
            raise LocalProtocolError("a server connection takes a SaslServer")
        if not server and sasl is not None and not isinstance(sasl, SaslClient):
            raise LocalProtocolError("a client connection takes a SaslClient")
        self.container_id = container_id
        self.server = server
        self.hostname = hostname
        self.max_frame_size = max_frame_size
        self.channel_max = channel_max
        self.handle_max = handle_max
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.frame_timeout = frame_timeout
        self.min_heartbeat_interval = min_heartbeat_interval
        self._started_at: float | None = None
        self.sasl = sasl
        self.properties = properties
        self.offered_capabilities = offered_capabilities
        self.desired_capabilities = desired_capabilities
        self.trace = trace
        self.context: Any = None
        self.on_output: Callable[[], None] | None = None
        """Called when ``data_to_send`` hands over bytes: the moment they count as written
        for an owner that must know (the client's sender). A hook rather than a subclass:
        an interpreted class cannot subclass the compiled engine."""

        self.machine: StateMachine[ConnectionState] = StateMachine(CONNECTION_TRANSITIONS, ConnectionState.START)
        self.remote_open: Open | None = None
        self.remote_max_frame_size = MIN_MAX_FRAME_SIZE
        self.remote_channel_max = 0
        self.remote_idle_timeout: float | None = None
        self._beat_interval: float | None = None
        self.user: str | None = None
        """Who SASL authenticated (servers), if SASL ran."""
        self._sasl_pending: tuple[str, str] | None = None
        self.error: Error | None = None
        """Why the connection ended, once it has."""
        self.transport_done = False
        """True once the socket should be closed after writing what is left to send."""
        self.max_partial_bytes: int | None = None
        """Bytes of incomplete multi-frame messages this connection may hold at once (None:
        no bound beyond each link's max-message-size); past it the link that would cross
        it is detached with ``amqp:resource-limit-exceeded``."""
        self.partial_bytes = 0
        self.frame_budget: int | None = None
        """Frames handled per ``receive_data``/``continue_input`` call (None: all)."""
        self.input_pending = False
        """Frames are buffered beyond the last call's ``frame_budget``."""

        self.sessions: dict[int, Session] = {}
        self._remote_channels: dict[int, Session] = {}
        self._dirty_sessions: list[Session] = []
        self._events: list[Event] = []
        self._reader = FrameReader(max_frame_size)
        self._out = bytearray()
        self._chunks: list[Any] = []
        self._open_requested = False
        self._open_sent = False
        self._before_open: list[tuple[int, Any, Any]] = []
        self._closed_reported = False
        self._received = False
        """A whole header or frame arrived since the last tick (liveness)."""
        self._partial_since: float | None = None
        """When the tick first saw the bytes of an unfinished frame (None: none waiting)."""
        self._sent = False
        self._beat_only = False
        self._last_received_at: float | None = None
        self._last_sent_at: float | None = None
        self._handlers: dict[type, Callable[[int, Any, bytes, int], None]] = {
            Transfer: self._on_transfer,
            Disposition: self._on_disposition,
            Flow: self._on_flow,
            Attach: self._on_attach,
            Detach: self._on_detach,
            Begin: self._on_begin,
            End: self._on_end,
            Open: self._on_open,
            Close: self._on_close,
        }
        if server:
            self._expect = _FIRST_HEADER
        elif sasl is not None:
            self._write_raw(SASL_HEADER)
            self._expect = _SASL_HEADER
        else:
            self._send_amqp_header()
            self._expect = _AMQP_HEADER

    # ================================================================================
    # I/O contract
    # ================================================================================
    def receive_data(self, data: Any) -> None:
        """Feed bytes received from the peer; events and output follow from them.

        With a ``frame_budget``, at most that many frames are handled per call; if more
        are buffered, ``input_pending`` is true and ``continue_input()`` handles the next
        batch.  The owner uses this to share its time fairly between connections.
        """
        if self.transport_done or self._expect == _NOTHING:
            return
        self._reader.feed(data)
        self._handle_input()

    @property
    def buffered_input(self) -> int:
        """Bytes received and not yet handled."""
        return self._reader.buffered

    def continue_input(self, max_frames: int | None = None) -> None:
        """Handle the next batch of frames already received (see ``receive_data``): up
        to ``max_frames``, or ``frame_budget`` if that is None."""
        if self.transport_done or self._expect == _NOTHING:
            self.input_pending = False
            return
        self._handle_input(max_frames)

    def _handle_input(self, max_frames: int | None = None) -> None:
        reader = self._reader
        self.input_pending = False
        try:
            self._process(reader, self.frame_budget if max_frames is None else max_frames)
        except AmqpError as error:
            self._fail(error)
        except Exception as exc:  # a bug must not take the process down with the peer
            if self.raise_internal_errors:
                raise
            self._fail(AmqpError(f"internal error: {type(exc).__name__}: {exc}", Condition.INTERNAL_ERROR))
        finally:
            # Liveness is a whole header or frame consumed.  The buffer is compacted once
            # the batch is all handled: no memmove per budget.
            if reader.consumed if self.input_pending else reader.compact():
                self._received = True

    def connection_lost(self, reason: str | None = None) -> None:
        """The transport closed under us (the peer vanished, or we closed it); ``reason``
        is what the transport knows of why (a TLS alert from the peer, say)."""
        self._expect = _NOTHING
        self.transport_done = True
        if self.machine.state is ConnectionState.END and self._closed_reported:
            return
        self.machine.remote(Input.TRANSPORT_LOST)
        if not self._closed_reported:
            description = f"connection lost: {reason}" if reason else "connection lost"
            self._end_all(Error(condition=Condition.CONNECTION_FORCED, description=description), by_peer=True)

    def take_events(self) -> list[Event]:
        """Return (and forget) the events since the last call, oldest first."""
        events = self._events
        if events:
            self._events = []
        return events

    def data_to_send(self) -> list[Any]:
        """Return (and forget) the bytes to write, as a list for ``writelines``."""
        if self._dirty_sessions:
            dirty = self._dirty_sessions
            self._dirty_sessions = []
            for session in dirty:
                session._flush()
        if self._out:
            self._chunks.append(self._out)
            self._out = bytearray()
        chunks = self._chunks
        if not chunks:
            return []  # never our own list: the caller may still hold it when we write more
        self._chunks = []
        beat_only, self._beat_only = self._beat_only, False
        # Only tick()'s heartbeat, already timed at that tick, must not count as sent
        # at the next tick's later time: the beats would slip by a tick each.
        if not (beat_only and len(chunks) == 1 and len(chunks[0]) == len(EMPTY_FRAME)):
            self._sent = True
        if self.on_output is not None:
            self.on_output()
        return chunks

    def tick(self, now: float) -> float | None:
        """Send a heartbeat if due, close on the peer's silence; return the next deadline."""
        if self._received or self._last_received_at is None:
            self._last_received_at = now
            self._received = False
            self._partial_since = None  # bytes still waiting, if any, begin a new frame
        if self._sent or self._last_sent_at is None:
            self._last_sent_at = now
            self._sent = False
        if self.transport_done:
            return None
        deadline: float | None = None
        if self._started_at is None:
            self._started_at = now
        if self.remote_open is None and self.handshake_timeout:
            # A peer that connects and never completes its open holds a socket for
            # nothing; the idle timeout only starts once frames flow.
            expires = self._started_at + self.handshake_timeout
            if now >= expires:
                # Once headers are exchanged a close frame can say why; before, nothing can.
                error_type = AmqpError if self._expect == _FRAMES else _HeaderError
                self._fail(error_type(
                    f"no open from the peer within {self.handshake_timeout:g} s",
                    Condition.RESOURCE_LIMIT_EXCEEDED,
                ))
                return None
            deadline = expires
        unfinished = self._reader.buffered
        if self.frame_timeout and unfinished:
            if self._partial_since is None:
                self._partial_since = now
            expires = self._partial_since + self.frame_timeout
            if now >= expires:
                error_type = AmqpError if self._expect == _FRAMES else _HeaderError
                self._fail(error_type(
                    f"a frame stayed unfinished for {self.frame_timeout:g} s"
                    f" (frame timeout; {unfinished} bytes of it received)",
                    Condition.RESOURCE_LIMIT_EXCEEDED,
                ))
                return None
            deadline = expires if deadline is None else min(deadline, expires)
        if self.idle_timeout and self._expect == _FRAMES:
            expires = self._last_received_at + self.idle_timeout
            if now >= expires:
                partial = f"; {unfinished} bytes of an unfinished frame received" if unfinished else ""
                self._fail(AmqpError(
                    f"no frame from the peer for {self.idle_timeout:g} s (idle timeout{partial})",
                    Condition.RESOURCE_LIMIT_EXCEEDED,
                ))
                return None
            deadline = expires if deadline is None else min(deadline, expires)
        interval = self._beat_interval
        if interval is not None and self.machine.state in (
            ConnectionState.OPENED, ConnectionState.OPEN_SENT, ConnectionState.CLOSE_SENT
        ):
            if now - self._last_sent_at >= interval:
                self._beat_only = not self._out and not self._chunks
                self._write_raw(EMPTY_FRAME)
                self._last_sent_at = now
            beat = self._last_sent_at + interval
            deadline = beat if deadline is None else min(deadline, beat)
        return deadline

    # ================================================================================
    # Our actions
    # ================================================================================
    @property
    def state(self) -> ConnectionState:
        return self.machine.state

    @property
    def closed(self) -> bool:
        """The connection is over (reported with ConnectionClosed)."""
        return self._closed_reported

    def open(self) -> None:
        """Send our open, now or as soon as the headers (and SASL) allow."""
        if self._open_requested:
            return
        self._open_requested = True
        self._maybe_send_open()

    def close(self, error: Error | None = None) -> None:
        """Close the connection (with an optional error); the peer's close completes it."""
        state = self.machine.state
        if self._closed_reported or state in (
            ConnectionState.CLOSE_SENT, ConnectionState.CLOSE_PIPE, ConnectionState.OC_PIPE,
            ConnectionState.DISCARDING, ConnectionState.END,
        ):
            return
        if not self._open_sent:
            # A close must follow an open (spec 2.4.5): send ours first if the headers
            # allow, so that the peer learns why (a server refusing a client, say).
            self._open_requested = True
            self._maybe_send_open()
        if not self._open_sent:
            # Before the headers (or during SASL): there is no close to exchange.
            self.transport_done = True
            self._expect = _NOTHING
            self._end_all(error, by_peer=False)
            return
        self.machine.local(Input.SEND_CLOSE)
        self._flush_sessions()
        self._write_frame(0, Close(error=error))
        for session in self.sessions.values():
            session._stop_sending()
        if self._expect == _FRAMES:
            self._expect = _UNTIL_CLOSE
        if self.machine.state is ConnectionState.END:
            self.transport_done = True
            self._end_all(error, by_peer=False)

    def begin_session(self) -> Session:
        """Start a new session (our begin is sent at once, or right after our open)."""
        if not self._open_requested or self._closed_reported or self.machine.state in _CLOSING:
            raise LocalProtocolError(f"cannot begin a session in state {self.machine.state.value}")
        session = Session(self, self._free_channel(), self.handle_max)
        self.sessions[session.channel] = session
        session.begin()
        return session

    def sasl_decided(self, code: int) -> None:
        """Answer a ``CredentialsReceived``: ``SaslCode.OK`` lets the client in, any other
        sasl-code refuses it (``AUTH`` for bad credentials, ``SYS_TEMP`` for "try later").

        Input received meanwhile is processed now.  A no-op if the connection ended
        while the decision was pending (handshake timeout, the peer went away).
        """
        if self._expect != _SASL_DECISION:
            return
        if code == PENDING or not 0 <= code <= SaslCode.SYS_TEMP:
            raise LocalProtocolError(f"not a sasl-code: {code}")
        assert self._sasl_pending is not None
        mechanism, user = self._sasl_pending
        self._sasl_pending = None
        try:
            self._send_sasl_outcome(mechanism, code, user if code == SaslCode.OK else None)
        except AmqpError as error:
            self._fail(error)
            return
        self._handle_input()

    # ================================================================================
    # Input
    # ================================================================================
    def _process(self, reader: FrameReader, budget: int | None = None) -> None:
        handlers = self._handlers
        while True:
            expect = self._expect
            if expect == _FRAMES:
                if budget is not None:
                    if budget <= 0:
                        self.input_pending = reader.buffered >= 8
                        return
                    budget -= 1
                frame = reader.next_frame()
                if frame is None:
                    return
                frame_type, channel, body = frame
                if not body:
                    continue  # heartbeat
                if frame_type != FRAME_AMQP:
                    raise FramingError(f"frame of type {frame_type} after SASL", Condition.CONNECTION_FRAMING_ERROR)
                if self.trace is None:
                    # The common transfers, dispositions and flows, read without their
                    # performative objects; None: anything the generic decoder must judge.
                    if body.startswith(TRANSFER_HEAD):
                        fields = read_transfer(body)
                        if fields is not None:
                            self._on_transfer_fields(channel, fields, body)
                            continue
                    elif body.startswith(DISPOSITION_HEAD):
                        fields = read_disposition(body)
                        if fields is not None:
                            self._on_disposition_fields(channel, fields)
                            continue
                    elif body.startswith(FLOW_HEAD):
                        fields = read_flow(body)
                        if fields is not None:
                            self._on_flow_fields(channel, fields)
                            continue
                performative, offset = decode_value(body, 0)
                if self.trace is not None:
                    self.trace("<-", channel, performative, len(body) - offset)
                handler = handlers.get(type(performative))
                if handler is None:
                    raise DecodeError(f"not a performative: {type(performative).__name__}")
                handler(channel, performative, body, offset)
            elif expect == _SASL_FRAMES:
                frame = reader.next_frame()
                if frame is None:
                    return
                frame_type, channel, body = frame
                if not body:
                    continue
                if frame_type != FRAME_SASL:
                    raise FramingError("AMQP frame during SASL", Condition.CONNECTION_FRAMING_ERROR)
                performative, _ = decode_value(body, 0)
                if self.trace is not None:
                    self.trace("<-", channel, performative, 0)
                self._on_sasl(performative)
            elif expect == _UNTIL_CLOSE:
                # Our close is written: nothing of ours may follow it, so the peer's frames
                # are read only for its open (if our close came first) and its close.
                frame = reader.next_frame()
                if frame is None:
                    return
                frame_type, channel, body = frame
                if not body or frame_type != FRAME_AMQP:
                    continue
                performative, offset = decode_value(body, 0)
                if type(performative) is Open or type(performative) is Close:
                    handlers[type(performative)](channel, performative, body, offset)
            elif expect == _NOTHING:
                return
            elif expect == _SASL_DECISION:
                # A client has no reason to send much before its outcome: what it sends
                # waits here, so it is bounded.
                if reader.buffered > self.max_frame_size:
                    raise _HeaderError(
                        f"more than {self.max_frame_size} bytes sent before the SASL outcome",
                        Condition.RESOURCE_LIMIT_EXCEEDED,
                    )
                return
            else:
                header = reader.read_header()
                if header is None:
                    return
                self._on_header(header)

    def _on_header(self, header: bytes) -> None:
        expect = self._expect
        sasl = self.sasl
        if expect == _FIRST_HEADER:
            if header == SASL_HEADER:
                if sasl is None:
                    self._write_raw(AMQP_HEADER)
                    raise _HeaderError("SASL was asked for but this listener does not offer it")
                self._write_raw(SASL_HEADER)
                offered = cast(SaslServer, sasl).offered()  # a server's (checked in __init__)
                self._write_frame(0, SaslMechanisms(sasl_server_mechanisms=offered), frame_type=FRAME_SASL)
                self._expect = _SASL_FRAMES
                return
            if header == AMQP_HEADER:
                if isinstance(sasl, SaslServer) and not sasl.allows_anonymous:
                    self._write_raw(SASL_HEADER)
                    raise _HeaderError("this listener requires SASL authentication")
                self._accept_amqp_header()
                return
            self._write_raw(AMQP_HEADER)
            raise _HeaderError(f"not an AMQP 1.0 protocol header: {header!r}")
        if expect == _SASL_HEADER:
            if header != SASL_HEADER:
                raise _HeaderError(f"expected the SASL protocol header, got {header!r}")
            self._expect = _SASL_FRAMES
            return
        # _AMQP_HEADER
        if header != AMQP_HEADER:
            if self.server:
                self._write_raw(AMQP_HEADER)
            raise _HeaderError(f"expected the AMQP protocol header, got {header!r}")
        if self.server:
            self._accept_amqp_header()
        else:
            self.machine.remote(Input.RECV_HEADER)
            self._expect = _FRAMES

    def _accept_amqp_header(self) -> None:
        self.machine.remote(Input.RECV_HEADER)
        self._send_amqp_header()
        self._expect = _FRAMES
        self._maybe_send_open()

    def _on_sasl(self, frame: Any) -> None:
        sasl = self.sasl
        if self.server:
            if not isinstance(frame, SaslInit):
                raise _HeaderError(f"unexpected {type(frame).__name__} from a SASL client", Condition.NOT_ALLOWED)
            assert isinstance(sasl, SaslServer)
            code, user = sasl.judge(frame.mechanism, frame.initial_response)
            if code == PENDING:
                user, password = sasl.take_pending()
                self._sasl_pending = (str(frame.mechanism), user)
                self._expect = _SASL_DECISION
                self._events.append(CredentialsReceived(str(frame.mechanism), user, password))
                return
            self._send_sasl_outcome(str(frame.mechanism), code, user)
            return
        assert isinstance(sasl, SaslClient)
        if isinstance(frame, SaslMechanisms):
            choice = sasl.choose(frame.sasl_server_mechanisms or [])
            if choice is None:
                offered = ", ".join(frame.sasl_server_mechanisms or [])
                raise _HeaderError(f"no acceptable SASL mechanism among: {offered}", Condition.UNAUTHORIZED_ACCESS)
            mechanism, response = choice
            self._write_frame(0, SaslInit(mechanism=mechanism, initial_response=response, hostname=self.hostname), frame_type=FRAME_SASL)
        elif isinstance(frame, SaslOutcome):
            if frame.code != SaslCode.OK:
                code = int(frame.code)
                meaning = _SASL_CODE_MEANINGS.get(code, "unknown code")
                raise _HeaderError(f"SASL authentication refused (code {code}: {meaning})", Condition.UNAUTHORIZED_ACCESS)
            self._events.append(Authenticated(str(sasl.chosen or ""), sasl.username))
            self._send_amqp_header()
            self._expect = _AMQP_HEADER
            self._maybe_send_open()
        elif isinstance(frame, SaslChallenge):
            raise _HeaderError("SASL challenges are not supported by ANONYMOUS, PLAIN or EXTERNAL", Condition.NOT_IMPLEMENTED)
        else:
            raise _HeaderError(f"unexpected SASL frame {type(frame).__name__}", Condition.NOT_ALLOWED)

    def _send_sasl_outcome(self, mechanism: str, code: int, user: str | None) -> None:
        self._write_frame(0, SaslOutcome(code=code), frame_type=FRAME_SASL)
        if code != SaslCode.OK:
            raise _HeaderError(f"SASL {mechanism} authentication failed", Condition.UNAUTHORIZED_ACCESS)
        self.user = user
        self._events.append(Authenticated(mechanism, user))
        self._expect = _AMQP_HEADER

    def _on_open(self, channel: int, frame: Open, body: bytes, offset: int) -> None:
        if not self.machine.remote(Input.RECV_OPEN):
            raise AmqpError(f"open in state {self.machine.state.value}", Condition.NOT_ALLOWED)
        self.remote_open = frame
        self.remote_max_frame_size = max(MIN_MAX_FRAME_SIZE, min(frame.max_frame_size, 1 << 32))
        self.remote_channel_max = frame.channel_max
        self.remote_idle_timeout = frame.idle_time_out / 1000 if frame.idle_time_out else None
        if self.remote_idle_timeout:
            # Half the peer's wish (spec 2.4.5), but a peer cannot make us beat faster
            # than our floor: a 1 ms idle-time-out would otherwise cost a core.
            self._beat_interval = max(self.remote_idle_timeout / 2, self.min_heartbeat_interval or 0.0)
        self._events.append(ConnectionOpened(self))
        if self.machine.state is ConnectionState.CLOSE_SENT:
            # We closed before the peer's open arrived (CLOSE_PIPE): its close follows.
            return

    def _on_close(self, channel: int, frame: Close, body: bytes, offset: int) -> None:
        state = self.machine.state
        if state is ConnectionState.OPEN_RCVD:
            # The peer closes before we opened (a pipelined open and close): our close
            # must still follow an open of ours.
            self._open_requested = True
            self._maybe_send_open()
        if not self.machine.remote(Input.RECV_CLOSE):
            raise AmqpError(f"close in state {state.value}", Condition.NOT_ALLOWED)
        if self.machine.state is ConnectionState.CLOSE_RCVD:
            self.machine.local(Input.SEND_CLOSE)
            self._write_frame(0, Close())
        self.transport_done = True
        self._expect = _NOTHING
        if state is not ConnectionState.DISCARDING:
            self._end_all(frame.error, by_peer=True)

    def _on_begin(self, channel: int, frame: Begin, body: bytes, offset: int) -> None:
        self._require_open()
        if channel > self.channel_max:
            raise self._channel_error(channel)
        if channel in self._remote_channels:
            raise AmqpError(f"begin on channel {channel}, which is already in use", Condition.NOT_ALLOWED)
        if frame.remote_channel is not None:
            session = self.sessions.get(frame.remote_channel)
            if session is None or session.machine.state is not SessionState.BEGIN_SENT:
                raise AmqpError(f"begin answers channel {frame.remote_channel}, where no begin was sent", Condition.NOT_ALLOWED)
            session.remote_channel = channel
            session.machine.remote(Input.RECV_BEGIN)
            session._on_begin(frame)
            self._remote_channels[channel] = session
            self._events.append(SessionBegun(session))
            return
        session = Session(self, self._free_channel(answering=True), self.handle_max)
        session.remote_channel = channel
        session.machine.remote(Input.RECV_BEGIN)
        session._on_begin(frame)
        self.sessions[session.channel] = session
        self._remote_channels[channel] = session
        session.begin()
        self._events.append(SessionBegun(session))

    def _session_for(self, channel: int) -> Session:
        session = self._remote_channels.get(channel)
        if session is None:
            if channel > self.channel_max:
                raise self._channel_error(channel)
            raise AmqpError(f"frame on channel {channel}, which has no session", Condition.NOT_ALLOWED)
        return session

    def _channel_error(self, channel: int) -> AmqpError:
        # Spec 2.7.1: a channel outside the range we announced is a framing error.
        return FramingError(f"channel {channel} exceeds channel-max {self.channel_max}")

    def _on_end(self, channel: int, frame: End, body: bytes, offset: int) -> None:
        session = self._session_for(channel)
        session._on_end(frame)

    def _session_frame(self, channel: int, handler: Callable[[Session, Any], None], frame: Any) -> None:
        session = self._session_for(channel)
        if session.machine.state is not _SESSION_MAPPED:
            return  # a session we are ending: frames in flight are dropped
        try:
            handler(session, frame)
        except SessionError as error:
            session._fail(error)

    def _on_attach(self, channel: int, frame: Attach, body: bytes, offset: int) -> None:
        self._session_frame(channel, Session._on_attach, frame)

    def _on_detach(self, channel: int, frame: Detach, body: bytes, offset: int) -> None:
        self._session_frame(channel, Session._on_detach, frame)

    def _on_flow(self, channel: int, frame: Flow, body: bytes, offset: int) -> None:
        self._session_frame(channel, Session._on_flow, frame)

    def _on_disposition(self, channel: int, frame: Disposition, body: bytes, offset: int) -> None:
        self._session_frame(channel, Session._on_disposition, frame)

    def _on_disposition_fields(self, channel: int, fields: tuple[Any, ...]) -> None:
        """``_on_disposition`` for a disposition the fast decoder read (``read_disposition``)."""
        session = self._session_for(channel)
        if session.machine.state is not _SESSION_MAPPED:
            return
        role, first, last, settled, state = fields
        try:
            session._on_disposition_fields(role, first, last, settled, state)
        except SessionError as error:
            session._fail(error)

    def _on_flow_fields(self, channel: int, fields: tuple[Any, ...]) -> None:
        """``_on_flow`` for a flow the fast decoder read (``read_flow``)."""
        session = self._session_for(channel)
        if session.machine.state is not _SESSION_MAPPED:
            return
        (next_incoming_id, incoming_window, next_outgoing_id, outgoing_window, handle, delivery_count,
         link_credit, available, drain, echo) = fields
        try:
            session._on_flow_fields(next_incoming_id, incoming_window, next_outgoing_id, outgoing_window, handle,
                                    delivery_count, link_credit, available, drain, echo)
        except SessionError as error:
            session._fail(error)

    def _on_transfer(self, channel: int, frame: Transfer, body: bytes, offset: int) -> None:
        session = self._remote_channels.get(channel)
        if session is None:
            if channel > self.channel_max:
                raise self._channel_error(channel)
            raise AmqpError(f"transfer on channel {channel}, which has no session", Condition.NOT_ALLOWED)
        if session.machine.state is not _SESSION_MAPPED:
            return
        try:
            session._on_transfer(frame, body[offset:] if offset else body)
        except SessionError as error:
            session._fail(error)

    def _on_transfer_fields(self, channel: int, fields: tuple[Any, ...], body: bytes) -> None:
        """``_on_transfer`` for a transfer the fast decoder read (``read_transfer``)."""
        session = self._remote_channels.get(channel)
        if session is None:
            if channel > self.channel_max:
                raise self._channel_error(channel)
            raise AmqpError(f"transfer on channel {channel}, which has no session", Condition.NOT_ALLOWED)
        if session.machine.state is not _SESSION_MAPPED:
            return
        handle, delivery_id, tag, message_format, settled, more, aborted, end = fields
        try:
            session._on_transfer_fields(
                handle, delivery_id, tag, message_format, settled, more, aborted, None, body[end:]
            )
        except SessionError as error:
            session._fail(error)

    def _require_open(self) -> None:
        if self.machine.state not in (ConnectionState.OPENED, ConnectionState.CLOSE_SENT, ConnectionState.OPEN_RCVD):
            raise AmqpError(f"session frame in connection state {self.machine.state.value}", Condition.NOT_ALLOWED)

    # ================================================================================
    # Output and bookkeeping
    # ================================================================================
    def _send_amqp_header(self) -> None:
        self.machine.local(Input.SEND_HEADER)
        self._write_raw(AMQP_HEADER)

    def _maybe_send_open(self) -> None:
        if not self._open_requested or self._open_sent:
            return
        if self._expect not in (_FRAMES, _AMQP_HEADER) or not self.machine.can(Input.SEND_OPEN):
            return
        self.machine.local(Input.SEND_OPEN)
        self._open_sent = True
        properties = self.properties
        if self.min_heartbeat_interval:
            floor_ms = UInt(round(self.min_heartbeat_interval * 1000))
            properties = {**(properties or {}), MIN_HEARTBEAT_INTERVAL: floor_ms}
        self._write_frame(
            0,
            Open(
                container_id=self.container_id,
                hostname=self.hostname,
                max_frame_size=self.max_frame_size,
                channel_max=self.channel_max,
                # Spec 2.4.5: advertise half the real threshold, so a peer that sends
                # just inside what we advertise never races our timer.
                idle_time_out=max(1, int(self.idle_timeout * 500)) if self.idle_timeout else None,
                offered_capabilities=self.offered_capabilities,
                desired_capabilities=self.desired_capabilities,
                properties=properties,
            ),
        )
        waiting = self._before_open
        self._before_open = []
        for channel, performative, payload in waiting:
            self._write_frame(channel, performative, payload)

    def _write_raw(self, data: bytes) -> None:
        self._out += data

    def _write_frame(self, channel: int, performative: Any, payload: Any = None, frame_type: int = FRAME_AMQP) -> None:
        if not self._open_sent and frame_type == FRAME_AMQP and type(performative) is not Open:
            # Sessions and links may be started before SASL lets our open out; their
            # frames wait for it, in order.
            self._before_open.append((channel, performative, payload))
            return
        out = self._out
        start = len(out)
        out += b"\x00\x00\x00\x00\x02"
        out.append(frame_type)
        out += channel.to_bytes(2, "big")
        performative.encode_into(out)
        if payload is None:
            _FRAME_SIZE.pack_into(out, start, len(out) - start)
        else:
            size = len(payload)
            _FRAME_SIZE.pack_into(out, start, len(out) - start + size)
            if size >= 8192:
                # Large payloads go out as their own buffer: no copy into ours.
                self._chunks.append(out)
                self._chunks.append(payload)
                self._out = bytearray()
            else:
                out += payload
        if self.trace is not None:
            self.trace("->", channel, performative, 0 if payload is None else len(payload))

    def _write_disposition(self, channel: int, role: bool, first: int, last: int | None, settled: bool, state: Any) -> None:
        """``_write_frame`` of ``Disposition(...)``, written without one when it can be."""
        if self.trace is not None or not self._open_sent or not fast_state(state):
            self._write_frame(channel, Disposition(role=role, first=first, last=last, settled=settled, state=state))
            return
        write_disposition_frame(self._out, channel, role, first, last, settled, state)

    def _write_flow(
        self, channel: int, next_incoming_id: int | None, incoming_window: int, next_outgoing_id: int,
        outgoing_window: int, handle: int | None, delivery_count: int | None, link_credit: int | None,
        available: int | None, drain: bool,
    ) -> None:
        """``_write_frame`` of ``Flow(...)`` (echo false, no properties), written without
        one when it can be."""
        if self.trace is not None or not self._open_sent:
            self._write_frame(channel, Flow(
                next_incoming_id=next_incoming_id, incoming_window=incoming_window, next_outgoing_id=next_outgoing_id,
                outgoing_window=outgoing_window, handle=handle, delivery_count=delivery_count, link_credit=link_credit,
                available=available, drain=drain,
            ))
            return
        write_flow_frame(self._out, channel, next_incoming_id, incoming_window, next_outgoing_id, outgoing_window,
                         handle, delivery_count, link_credit, available, drain)

    def _transfer_room(self, channel: int, transfer: Transfer) -> int:
        tag = transfer.delivery_tag
        return self.remote_max_frame_size - _TRANSFER_OVERHEAD - (len(tag) if tag else 0)

    def _flush_sessions(self) -> None:
        if self._dirty_sessions:
            dirty = self._dirty_sessions
            self._dirty_sessions = []
            for session in dirty:
                session._flush()

    def _free_channel(self, answering: bool = False) -> int:
        """Our lowest free channel.  Answering the peer's begin, only the peer's
        channel-max bounds it (our own bounds the channels the peer uses)."""
        limit = self.channel_max
        if self.remote_open is not None:
            limit = self.remote_channel_max if answering else min(limit, self.remote_channel_max)
        for channel in range(len(self.sessions) + 1):
            if channel not in self.sessions:
                if channel > limit:
                    break
                return channel
        if answering:
            raise AmqpError(f"no channel left to answer a begin (channel-max {limit})",
                            Condition.RESOURCE_LIMIT_EXCEEDED)
        raise LocalProtocolError(f"no free channel (channel-max {limit})")

    def _session_gone(self, session: Session) -> None:
        if self.sessions.get(session.channel) is session:
            del self.sessions[session.channel]
        if session.remote_channel is not None and self._remote_channels.get(session.remote_channel) is session:
            del self._remote_channels[session.remote_channel]

    def _fail(self, error: AmqpError) -> None:
        """Close for the peer's violation (or our idle timeout) and stop reading."""
        err = Error(condition=error.condition, description=error.description, info=error.info)
        if self.machine.can(Input.SEND_CLOSE_FOR_ERROR) and not isinstance(error, _HeaderError):
            if not self._open_sent:
                # An open must precede a close; send a minimal one.
                self._open_requested = True
                if self.machine.can(Input.SEND_OPEN):
                    self.machine.local(Input.SEND_OPEN)
                    self._open_sent = True
                    self._write_frame(0, Open(container_id=self.container_id))
            if self.machine.can(Input.SEND_CLOSE_FOR_ERROR):
                self.machine.local(Input.SEND_CLOSE_FOR_ERROR)
                self._write_frame(0, Close(error=err))
        self._expect = _NOTHING
        self.transport_done = True
        if not self._closed_reported:
            self._end_all(err, by_peer=False)

    def _end_all(self, error: Error | None, by_peer: bool) -> None:
        self._closed_reported = True
        self.error = error
        for session in list(self.sessions.values()):
            session._lost(error)
        self.sessions.clear()
        self._remote_channels.clear()
        self._dirty_sessions.clear()
        self._events.append(ConnectionClosed(self, error, by_peer))


class _HeaderError(AmqpError):
    """Failure before AMQP frames flow (bad header, SASL): no close frame can be sent."""

    def __init__(self, description: str, condition: Symbol | None = None) -> None:
        # The default is passed on, not set as a class attribute: mypyc drops a class
        # attribute of a compiled subclass of an interpreted exception.
        super().__init__(description, Condition.CONNECTION_FRAMING_ERROR if condition is None else condition)
