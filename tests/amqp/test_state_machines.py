"""The state tables of ``switchboard/amqp/states.py``, checked over every (state, input)
pair, and two real engines driven through random sequences of API calls.

Rule 2 of ``states.py``: an input absent from a table is illegal; ours raises
``LocalProtocolError``, the peer's makes ``remote()`` return False; either way the state
is unchanged.  After h2's ``tests/test_state_machines.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from helpers import serve
from switchboard.amqp import events as ev
from switchboard.amqp.connection import Connection
from switchboard.amqp.errors import Condition, LocalProtocolError
from switchboard.amqp.spec import Accepted, Error, Modified, Rejected, Released, Source, Target
from switchboard.amqp.states import (
    CONNECTION_TRANSITIONS,
    LINK_TRANSITIONS,
    SESSION_TRANSITIONS,
    ConnectionState,
    Input,
    LinkState,
    SessionState,
    StateMachine,
)
from switchboard.amqp.types import Symbol

ROOT = Path(__file__).resolve().parents[2]

MACHINES = {
    "connection": (CONNECTION_TRANSITIONS, ConnectionState, ConnectionState.START, ConnectionState.END),
    "session": (SESSION_TRANSITIONS, SessionState, SessionState.UNMAPPED, SessionState.UNMAPPED),
    "link": (LINK_TRANSITIONS, LinkState, LinkState.DETACHED, LinkState.DETACHED),
}
# The inputs each machine may take at all; the others are illegal in every state.
INPUTS = {
    "connection": {Input.SEND_HEADER, Input.RECV_HEADER, Input.SEND_OPEN, Input.RECV_OPEN, Input.SEND_CLOSE,
                   Input.RECV_CLOSE, Input.SEND_CLOSE_FOR_ERROR, Input.TRANSPORT_LOST},
    "session": {Input.SEND_BEGIN, Input.RECV_BEGIN, Input.SEND_END, Input.RECV_END, Input.SEND_END_FOR_ERROR,
                Input.TRANSPORT_LOST},
    "link": {Input.SEND_ATTACH, Input.RECV_ATTACH, Input.SEND_DETACH, Input.RECV_DETACH, Input.TRANSPORT_LOST},
}


def _is_local(event: Input) -> bool:
    return event.name.startswith("SEND_")


ALL_PAIRS = [
    (name, state, event)
    for name, (_, states, _, _) in MACHINES.items()
    for state, event in itertools.product(states, Input)
]


# ------------------------------------------------------------------------------------
# Every pair
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,state,event", ALL_PAIRS, ids=lambda x: getattr(x, "name", x))
def test_every_pair_is_in_the_table_or_rejected(name, state, event):
    table = MACHINES[name][0]
    for method in ("local", "remote"):
        machine = StateMachine(table, state)
        expected = table.get((state, event))
        assert machine.can(event) is (expected is not None)
        if expected is not None:
            result = getattr(machine, method)(event)
            assert machine.state is expected
            if method == "remote":
                assert result is True
        elif method == "local":
            with pytest.raises(LocalProtocolError):
                machine.local(event)
            assert machine.state is state
        else:
            assert machine.remote(event) is False
            assert machine.state is state


@settings(max_examples=300)
@given(name=st.sampled_from(sorted(MACHINES)), events=st.lists(st.sampled_from(list(Input)), max_size=30))
def test_random_walks_follow_the_table(name, events):
    table, states, initial, terminal = MACHINES[name]
    machine = StateMachine(table, initial)
    for event in events:
        before = machine.state
        expected = table.get((before, event))
        if _is_local(event):
            if expected is None:
                with pytest.raises(LocalProtocolError):
                    machine.local(event)
            else:
                machine.local(event)
        else:
            assert machine.remote(event) is (expected is not None)
        assert machine.state is (before if expected is None else expected)
        assert isinstance(machine.state, states)


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_tables_are_well_formed(name):
    table, states, initial, terminal = MACHINES[name]
    for (state, event), target in table.items():
        assert isinstance(state, states) and isinstance(target, states)
        assert event in INPUTS[name], f"{name} table takes {event}"
    # Every state is reachable from the initial one...
    reachable, frontier = {initial}, [initial]
    while frontier:
        state = frontier.pop()
        for (source, _), target in table.items():
            if source is state and target not in reachable:
                reachable.add(target)
                frontier.append(target)
    assert reachable == set(states)
    # ...and a lost transport ends every state.
    for state in states:
        assert table[(state, Input.TRANSPORT_LOST)] is terminal


def _walk(table, initial, events):
    machine = StateMachine(table, initial)
    for event in events:
        if _is_local(event):
            machine.local(event)
        else:
            assert machine.remote(event), (machine.state, event)
    return machine.state


@pytest.mark.parametrize(
    "events",
    [
        # client, pipelined open
        [Input.SEND_HEADER, Input.SEND_OPEN, Input.RECV_HEADER, Input.RECV_OPEN, Input.SEND_CLOSE, Input.RECV_CLOSE],
        # server
        [Input.RECV_HEADER, Input.SEND_HEADER, Input.RECV_OPEN, Input.SEND_OPEN, Input.RECV_CLOSE, Input.SEND_CLOSE],
        # pipelined open and close
        [Input.SEND_HEADER, Input.SEND_OPEN, Input.SEND_CLOSE, Input.RECV_HEADER, Input.RECV_OPEN, Input.RECV_CLOSE],
        # close for an error
        [Input.RECV_HEADER, Input.SEND_HEADER, Input.RECV_OPEN, Input.SEND_CLOSE_FOR_ERROR, Input.RECV_CLOSE],
    ],
    ids=["client", "server", "oc-pipe", "error"],
)
def test_connection_lifecycles_reach_end(events):
    assert _walk(CONNECTION_TRANSITIONS, ConnectionState.START, events) is ConnectionState.END


@pytest.mark.parametrize(
    "table,initial,events,final",
    [
        (SESSION_TRANSITIONS, SessionState.UNMAPPED,
         [Input.SEND_BEGIN, Input.RECV_BEGIN, Input.SEND_END, Input.RECV_END], SessionState.UNMAPPED),
        (SESSION_TRANSITIONS, SessionState.UNMAPPED,
         [Input.RECV_BEGIN, Input.SEND_BEGIN, Input.RECV_END, Input.SEND_END], SessionState.UNMAPPED),
        (SESSION_TRANSITIONS, SessionState.UNMAPPED,
         [Input.RECV_BEGIN, Input.SEND_BEGIN, Input.SEND_END_FOR_ERROR, Input.RECV_END], SessionState.UNMAPPED),
        (LINK_TRANSITIONS, LinkState.DETACHED,
         [Input.SEND_ATTACH, Input.RECV_ATTACH, Input.SEND_DETACH, Input.RECV_DETACH], LinkState.DETACHED),
        (LINK_TRANSITIONS, LinkState.DETACHED,
         [Input.RECV_ATTACH, Input.SEND_ATTACH, Input.RECV_DETACH, Input.SEND_DETACH], LinkState.DETACHED),
        # refused by the peer: its attach, then its detach
        (LINK_TRANSITIONS, LinkState.DETACHED,
         [Input.SEND_ATTACH, Input.RECV_ATTACH, Input.RECV_DETACH, Input.SEND_DETACH], LinkState.DETACHED),
        # we give up before the peer answers
        (LINK_TRANSITIONS, LinkState.DETACHED,
         [Input.SEND_ATTACH, Input.SEND_DETACH, Input.RECV_ATTACH, Input.RECV_DETACH], LinkState.DETACHED),
    ],
    ids=["session-ours", "session-theirs", "session-error", "link-ours", "link-theirs", "link-refused",
         "link-abandoned"],
)
def test_session_and_link_lifecycles(table, initial, events, final):
    assert _walk(table, initial, events) is final


# ------------------------------------------------------------------------------------
# Only the tables move states
# ------------------------------------------------------------------------------------
def test_no_engine_module_assigns_a_machine_state():
    for path in (ROOT / "switchboard" / "amqp").glob("*.py"):
        if path.name == "states.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "state":
                    owner = target.value
                    assert not (isinstance(owner, ast.Attribute) and owner.attr == "machine"), (
                        f"{path.name}:{node.lineno} assigns a machine state outside states.py")


# ------------------------------------------------------------------------------------
# The rendered doc
# ------------------------------------------------------------------------------------
def _renderer():
    spec = importlib.util.spec_from_file_location("render_states", ROOT / "tools" / "render_states.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rendered_doc_is_up_to_date():
    renderer = _renderer()
    doc = ROOT / "docs" / "state-machines.md"
    assert doc.read_text() == renderer.render(), "run: python tools/render_states.py"


def test_rendered_doc_has_every_transition():
    text = _renderer().render()
    for name, (table, states, _, _) in MACHINES.items():
        for state in states:
            assert f"| **{state.value}** |" in text
    # Spot checks of cells: row OPENED, column RECV_CLOSE; row ATTACH_SENT, RECV_DETACH.
    connection_rows = [line for line in text.splitlines() if line.startswith("| **OPENED** |")]
    assert "CLOSE_RCVD" in connection_rows[0]
    link_rows = [line for line in text.splitlines() if line.startswith("| **ATTACH_SENT** |")]
    assert "DETACH_RCVD" in link_rows[0]


# ------------------------------------------------------------------------------------
# Two real engines under random API use
# ------------------------------------------------------------------------------------
OURS = Symbol("test:by-the-owner")
# resource-limit-exceeded: both sides began more sessions than one of them can number.
ALLOWED = {OURS, Condition.CONNECTION_FORCED, Condition.RESOURCE_LIMIT_EXCEEDED}
OUTCOMES = [Accepted(), Released(), Rejected(error=Error(condition=OURS)), Modified(delivery_failed=True)]


class EnginePair(RuleBasedStateMachine):
    """Two real engines, one API call at a time, bytes pumped in random chunk sizes.

    Misuse must raise ``LocalProtocolError`` and nothing else.  Both engines are correct
    peers of each other, so neither may ever detect a protocol violation: every error
    either of them reports is one the test supplied, or a lost transport.
    """

    def __init__(self) -> None:
        super().__init__()
        self.client = Connection("client", max_frame_size=512, channel_max=3, handle_max=3)
        self.server = Connection("server", server=True, max_frame_size=1024, channel_max=2, handle_max=4)
        self.sides = [self.client, self.server]
        self.sessions: list = []
        self.links: list = []
        self.deliveries: list = []
        self.closed: set[int] = set()
        self.seen_ended: set[int] = set()
        self.seen_detached: set[int] = set()

    def _try(self, action, *args, **kwargs):
        try:
            return action(*args, **kwargs)
        except LocalProtocolError:
            return None

    def _events(self, conn: Connection) -> None:
        events = conn.take_events()
        for event in events:
            assert id(conn) not in self.closed, f"{event} after ConnectionClosed"
            error = getattr(event, "error", None)
            if error is not None:
                assert error.condition in ALLOWED, f"{type(event).__name__}: {error}"
            if isinstance(event, ev.ConnectionClosed):
                self.closed.add(id(conn))
            elif isinstance(event, ev.SessionEnded):
                assert id(event.session) not in self.seen_ended
                self.seen_ended.add(id(event.session))
            elif isinstance(event, ev.LinkDetached):
                assert id(event.link) not in self.seen_detached
                self.seen_detached.add(id(event.link))
            elif isinstance(event, ev.SessionBegun):
                self.sessions.append(event.session)
            elif isinstance(event, ev.LinkAttached) and event.link.remote_initiated:
                self.links.append(event.link)
            elif isinstance(event, ev.DeliveryReceived):
                self.deliveries.append(event.delivery)
        serve(conn, events, credit=5)

    @initialize(how=st.sampled_from(["opened", "opened", "opened", "client-open", "nothing"]))
    def start(self, how):
        """Most runs start opened (with a session each way), so that the rules that
        need sessions and links get to run; some start from nothing."""
        if how != "nothing":
            self.client.open()
        if how == "opened":
            self.pump(None)
            self.begin(0, None)
            self.begin(1, None)
            for session in (self.client.sessions[0], self.server.sessions[0]):
                self.links.append(session.sender("out", target=Target(address="t")))
                self.links.append(session.receiver("in", source=Source(address="s"), credit=3))
            self.pump(None)

    # Most actions are followed by a pump (``then``: 0 none, else the chunk size), some
    # are left to pile up so that frames cross on the wire.
    THEN = st.sampled_from([0, None, None, 1, 7, 100])

    def _then(self, then):
        if then != 0:
            self.pump(then)

    @rule(side=st.integers(0, 1), then=THEN)
    def open(self, side, then):
        self.sides[side].open()
        self._then(then)

    # The endings are drawn rarely (one time in ten) so that runs last.
    @rule(side=st.integers(0, 1), with_error=st.booleans(), dice=st.integers(0, 9), then=THEN)
    def close(self, side, with_error, dice, then):
        if dice == 0:
            self.sides[side].close(Error(condition=OURS, description="bye") if with_error else None)
            self._then(then)

    @rule(side=st.integers(0, 1), then=THEN)
    def begin(self, side, then):
        conn = self.sides[side]
        if conn.remote_open is None and conn.sessions:
            return  # see test_sessions_begun_before_the_peers_open_respect_its_channel_max
        session = self._try(conn.begin_session)
        if session is not None:
            self.sessions.append(session)
        self._then(then)

    @precondition(lambda self: self.sessions)
    @rule(data=st.data(), with_error=st.booleans(), dice=st.integers(0, 4), then=THEN)
    def end(self, data, with_error, dice, then):
        if dice:
            return
        session = data.draw(st.sampled_from(self.sessions))
        self._try(session.end, Error(condition=OURS) if with_error else None)
        self._then(then)

    @precondition(lambda self: any(s.active for s in self.sessions))
    @rule(data=st.data(), sender=st.booleans(), credit=st.integers(0, 5),
          mode=st.sampled_from([0, 1, 2]), dynamic=st.booleans(), then=THEN)
    def attach(self, data, sender, credit, mode, dynamic, then):
        session = data.draw(st.sampled_from([s for s in self.sessions if s.active]))
        name = f"link-{len(self.links)}"
        if sender:
            link = self._try(session.sender, name, target=Target(address="t"), snd_settle_mode=mode)
        else:
            link = self._try(session.receiver, name, source=Source(dynamic=dynamic), credit=credit)
        if link is not None:
            self.links.append(link)
        self._then(then)

    @precondition(lambda self: self.links)
    @rule(data=st.data(), with_error=st.booleans(), closed=st.booleans(), dice=st.integers(0, 2), then=THEN)
    def detach(self, data, with_error, closed, dice, then):
        if dice:
            return
        link = data.draw(st.sampled_from(self.links))
        self._try(link.detach, Error(condition=OURS) if with_error else None, closed)
        self._then(then)

    @precondition(lambda self: any(not l.is_sender for l in self.links))
    @rule(data=st.data(), credit=st.integers(0, 8), drain=st.booleans(), then=THEN)
    def flow(self, data, credit, drain, then):
        link = data.draw(st.sampled_from([l for l in self.links if not l.is_sender]))
        self._try(link.flow, credit, drain)
        self._then(then)

    @precondition(lambda self: any(l.is_sender and l.active and l.credit for l in self.links))
    @rule(data=st.data(), size=st.sampled_from([0, 10, 500, 3000]), settled=st.sampled_from([None, True, False]),
          count=st.integers(1, 4), then=THEN)
    def send(self, data, size, settled, count, then):
        link = data.draw(st.sampled_from([l for l in self.links if l.is_sender and l.active and l.credit]))
        for _ in range(count):
            self._try(link.send, b"m" * size, settled=settled)
        self._then(then)

    @precondition(lambda self: any(l.is_sender and l.drain for l in self.links))
    @rule(data=st.data(), then=THEN)
    def drained(self, data, then):
        link = data.draw(st.sampled_from([l for l in self.links if l.is_sender and l.drain]))
        link.drained()
        self._then(then)

    @precondition(lambda self: any(not d.settled for d in self.deliveries))
    @rule(data=st.data(), outcome=st.sampled_from(OUTCOMES), update_only=st.booleans(), then=THEN)
    def settle(self, data, outcome, update_only, then):
        delivery = data.draw(st.sampled_from([d for d in self.deliveries if not d.settled]))
        if update_only:
            self._try(delivery.update, outcome)
        else:
            delivery.settle(outcome)
        self._then(then)

    @precondition(lambda self: any(l.is_sender and l.unsettled for l in self.links))
    @rule(data=st.data(), dice=st.integers(0, 3))
    def sender_settles(self, data, dice):
        """The sending side settles one of its deliveries (after or before the receiver)."""
        senders = [l for l in self.links if l.is_sender and l.unsettled]
        if senders and not dice:
            link = data.draw(st.sampled_from(senders))
            data.draw(st.sampled_from(list(link.unsettled.values()))).settle(Accepted())

    @rule(buffer_size=st.sampled_from([None, 1, 7, 100]))
    def pump(self, buffer_size):
        for _ in range(50):
            moved = False
            for a, b in ((self.client, self.server), (self.server, self.client)):
                data = b"".join(bytes(c) for c in a.data_to_send())
                if data:
                    moved = True
                    step = buffer_size or len(data)
                    for start in range(0, len(data), step):
                        b.receive_data(data[start : start + step])
            self._events(self.client)
            self._events(self.server)
            if not moved:
                self._check_agreement()
                return
        raise AssertionError("no quiescence")

    def _check_agreement(self):
        """Quiescent: both ends of every attached link agree on delivery-count and credit."""
        for a, b in ((self.client, self.server), (self.server, self.client)):
            for session in a.sessions.values():
                peer_session = b._remote_channels.get(session.channel)
                if peer_session is None or not (session.active and peer_session.active):
                    continue
                for link in session.links.values():
                    peer = peer_session._remote_handles.get(link.handle)
                    if peer is None or not (link.active and peer.active) or not link.is_sender:
                        continue
                    assert peer.name == link.name and not peer.is_sender
                    assert link.delivery_count == peer.delivery_count, (link, peer)
                    assert link.credit == peer.credit, (link.credit, peer.credit)

    @rule(dice=st.integers(0, 19))
    def lose_transport(self, dice):
        if dice:
            return
        for conn in self.sides:
            conn.connection_lost()
            self._events(conn)

    @invariant()
    def states_are_states(self):
        assert isinstance(self.client.state, ConnectionState) and isinstance(self.server.state, ConnectionState)
        for session in self.sessions:
            assert isinstance(session.state, SessionState)
        for link in self.links:
            assert isinstance(link.state, LinkState)
            assert link.credit >= 0
            for delivery_id, delivery in link.unsettled.items():
                assert delivery.delivery_id == delivery_id and delivery.link is link
                assert not delivery.settled and not delivery.remote_settled
        for session in self.sessions:
            for table in (session._outgoing_unsettled, session._incoming_unsettled):
                for delivery in table.values():
                    assert delivery.link.unsettled.get(delivery.delivery_id) is delivery


EnginePair.TestCase.settings = settings(
    max_examples=int(__import__("os").environ.get("SB_EXAMPLES", "150")), stateful_step_count=int(__import__("os").environ.get("SB_STEPS", "30")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_engine_pair = EnginePair.TestCase
