"""SASL between two real engines: ANONYMOUS and PLAIN, both roles, failures."""

from __future__ import annotations

import pytest

from helpers import names, of_type, one, pump, serve, split_frames
from switchboard.amqp import events as ev
from switchboard.amqp.connection import Connection
from switchboard.amqp.errors import Condition
from switchboard.amqp.framing import AMQP_HEADER, SASL_HEADER
from switchboard.amqp.sasl import SaslClient, SaslServer
from switchboard.amqp.spec import SaslCode, SaslInit, SaslMechanisms, SaslOutcome

USERS = {"alice": "secret", "bob": "hunter2"}


def _check(user: str, password: str) -> bool:
    return USERS.get(user) == password


def _pair(client_sasl, server_sasl, buffer_size=None, client_kwargs=None):
    client = Connection("client", sasl=client_sasl, **(client_kwargs or {}))
    server = Connection("server", server=True, sasl=server_sasl)
    client.open()
    pump(client, server, buffer_size)
    server_events = server.take_events()
    serve(server, server_events)
    pump(client, server, buffer_size)
    server_events += server.take_events()
    return client, server, client.take_events(), server_events


@pytest.mark.parametrize("buffer_size", [None, 1])
def test_anonymous(buffer_size):
    client, server, client_events, server_events = _pair(SaslClient(), SaslServer(), buffer_size)
    assert names(server_events) == ["Authenticated", "ConnectionOpened"]
    assert server_events[0].mechanism == "ANONYMOUS"
    assert server.user == "anonymous"
    assert names(client_events) == ["Authenticated", "ConnectionOpened"]
    assert client_events[0].mechanism == "ANONYMOUS"
    assert client.state.value == "OPENED" and server.state.value == "OPENED"


@pytest.mark.parametrize("buffer_size", [None, 1, 5])
def test_plain(buffer_size):
    client, server, client_events, server_events = _pair(
        SaslClient("alice", "secret"), SaslServer(["PLAIN"], authenticate=_check), buffer_size)
    authenticated = server_events[0]
    assert isinstance(authenticated, ev.Authenticated)
    assert authenticated.mechanism == "PLAIN" and authenticated.user == "alice"
    assert server.user == "alice"
    client_auth = one(client_events, ev.Authenticated)
    assert client_auth.mechanism == "PLAIN" and client_auth.user == "alice"
    assert client.state.value == "OPENED" and server.state.value == "OPENED"


def test_plain_preferred_when_both_offered_and_credentials_given():
    client, server, client_events, server_events = _pair(
        SaslClient("bob", "hunter2"), SaslServer(["ANONYMOUS", "PLAIN"], authenticate=_check))
    assert one(server_events, ev.Authenticated).mechanism == "PLAIN"
    assert server.user == "bob"


def test_anonymous_chosen_without_credentials():
    client, server, client_events, server_events = _pair(
        SaslClient(), SaslServer(["PLAIN", "ANONYMOUS"], authenticate=_check))
    assert one(server_events, ev.Authenticated).mechanism == "ANONYMOUS"


def test_the_exchange_on_the_wire():
    client = Connection("client", sasl=SaslClient("alice", "secret", mechanism="PLAIN"), hostname="example.org")
    client.open()
    first = b"".join(bytes(c) for c in client.data_to_send())
    assert first == SASL_HEADER  # nothing else until SASL is done
    server = Connection("server", server=True, sasl=SaslServer(["PLAIN"], authenticate=_check))
    server.receive_data(first)
    reply = b"".join(bytes(c) for c in server.data_to_send())
    assert reply.startswith(SASL_HEADER)
    (mechanisms,) = [p for _, _, p, _ in split_frames(reply)]
    assert isinstance(mechanisms, SaslMechanisms)
    assert list(mechanisms.sasl_server_mechanisms) == ["PLAIN"]
    client.receive_data(reply)
    init_bytes = b"".join(bytes(c) for c in client.data_to_send())
    (init,) = [p for _, _, p, _ in split_frames(init_bytes)]
    assert isinstance(init, SaslInit)
    assert init.mechanism == "PLAIN"
    assert init.initial_response == b"\x00alice\x00secret"
    assert init.hostname == "example.org"
    server.receive_data(init_bytes)
    outcome_bytes = b"".join(bytes(c) for c in server.data_to_send())
    outcome = split_frames(outcome_bytes)[0][2]
    assert isinstance(outcome, SaslOutcome) and outcome.code == SaslCode.OK
    client.receive_data(outcome_bytes)
    after = b"".join(bytes(c) for c in client.data_to_send())
    assert after.startswith(AMQP_HEADER)  # then the pipelined open
    assert [type(p).__name__ for _, _, p, _ in split_frames(after)] == ["Open"]


@pytest.mark.parametrize("user,password", [("alice", "wrong"), ("mallory", "secret"), ("", "")])
def test_wrong_password(user, password):
    client, server, client_events, server_events = _pair(
        SaslClient(user, password), SaslServer(["PLAIN"], authenticate=_check))
    assert of_type(client_events, ev.Authenticated) == []
    closed = one(client_events, ev.ConnectionClosed)
    assert closed.error.condition == Condition.UNAUTHORIZED_ACCESS
    assert of_type(server_events, ev.Authenticated) == []
    assert one(server_events, ev.ConnectionClosed).error.condition == Condition.UNAUTHORIZED_ACCESS
    assert server.user is None
    assert client.transport_done and server.transport_done
    assert of_type(server_events, ev.ConnectionOpened) == []


def test_credentials_never_fall_back_to_anonymous():
    """A client given a user and password is refused rather than let in as nobody."""
    client, server, client_events, server_events = _pair(SaslClient("bob", "hunter2"), SaslServer(["ANONYMOUS"]))
    closed = one(client_events, ev.ConnectionClosed)
    assert closed.error.condition == Condition.UNAUTHORIZED_ACCESS
    assert "ANONYMOUS" in closed.error.description
    assert of_type(server_events, ev.Authenticated) == []


def test_no_common_mechanism():
    client, server, client_events, server_events = _pair(
        SaslClient(mechanism="PLAIN", username="a", password="b"), SaslServer(["ANONYMOUS"]))
    closed = one(client_events, ev.ConnectionClosed)
    assert closed.error.condition == Condition.UNAUTHORIZED_ACCESS
    assert client.transport_done
    assert of_type(client_events, ev.Authenticated) == []


def test_client_asking_for_an_unoffered_mechanism_is_refused():
    """A client that sends a mechanism the server did not offer gets code auth."""
    server = Connection("server", server=True, sasl=SaslServer(["ANONYMOUS"]))
    from helpers import frame

    server.receive_data(SASL_HEADER + frame(SaslInit(mechanism="PLAIN", initial_response=b"\x00a\x00b"), frame_type=1))
    closed = one(server.take_events(), ev.ConnectionClosed)
    assert closed.error.condition == Condition.UNAUTHORIZED_ACCESS
    outcome = split_frames(b"".join(bytes(c) for c in server.data_to_send()))[-1][2]
    assert isinstance(outcome, SaslOutcome) and outcome.code == SaslCode.AUTH


def test_server_requiring_sasl_refuses_a_plain_amqp_header():
    client = Connection("client")  # no SASL
    server = Connection("server", server=True, sasl=SaslServer(["PLAIN"], authenticate=_check))
    client.open()
    pump(client, server)
    server_events = server.take_events()
    assert names(server_events) == ["ConnectionClosed"]
    assert server.transport_done
    assert of_type(server_events, ev.ConnectionOpened) == []
    closed = one(client.take_events(), ev.ConnectionClosed)
    assert closed.error is not None
    assert client.transport_done


def test_server_allowing_anonymous_accepts_a_plain_amqp_header():
    client = Connection("client")
    server = Connection("server", server=True, sasl=SaslServer(["ANONYMOUS"]))
    client.open()
    pump(client, server)
    serve(server, server.take_events())
    pump(client, server)
    assert client.state.value == "OPENED" and server.state.value == "OPENED"
    assert server.user is None


def test_client_wanting_sasl_from_a_server_without_it():
    client = Connection("client", sasl=SaslClient())
    server = Connection("server", server=True)
    client.open()
    pump(client, server)
    assert one(client.take_events(), ev.ConnectionClosed).error is not None
    assert one(server.take_events(), ev.ConnectionClosed).error is not None
    assert client.transport_done and server.transport_done


def test_sessions_started_during_sasl_wait_for_the_open():
    client = Connection("client", sasl=SaslClient("alice", "secret"))
    server = Connection("server", server=True, sasl=SaslServer(["PLAIN"], authenticate=_check))
    client.open()
    session = client.begin_session()
    session.sender("early")
    pump(client, server)
    events = server.take_events()
    assert names(events) == ["Authenticated", "ConnectionOpened", "SessionBegun", "LinkAttached"]


def test_sasl_server_constructor_checks():
    with pytest.raises(ValueError):
        SaslServer(["PLAIN"])  # no authenticate callable, and not deciding later
    with pytest.raises(ValueError):
        SaslServer(["PLAIN"], authenticate=_check, decide_later=True)
    with pytest.raises(ValueError):
        SaslServer(["SCRAM-SHA-256"])


# ------------------------------------------------------------------------------------
# A decision the owner makes later (a slow password hash off the event loop)
# ------------------------------------------------------------------------------------
def _deferred_pair(user="alice", password="secret", buffer_size=None):
    client = Connection("client", sasl=SaslClient(user, password))
    server = Connection("server", server=True, sasl=SaslServer(["PLAIN", "ANONYMOUS"], decide_later=True))
    client.open()
    pump(client, server, buffer_size)
    return client, server


def _outcomes(data: bytes) -> list:
    return [p for _, _, p, _ in split_frames(data) if isinstance(p, SaslOutcome)]


@pytest.mark.parametrize("buffer_size", [None, 1])
def test_deferred_decision_reports_the_credentials_and_waits(buffer_size):
    client, server = _deferred_pair(buffer_size=buffer_size)
    (received,) = server.take_events()
    assert isinstance(received, ev.CredentialsReceived)
    assert (received.mechanism, received.user, received.password) == ("PLAIN", "alice", "secret")
    assert "secret" not in repr(received)
    # Nothing is decided yet: no outcome on the wire, the client still waits.
    assert server.data_to_send() == []
    assert of_type(client.take_events(), ev.Authenticated) == []
    assert server.user is None

    server.sasl_decided(SaslCode.OK)
    server_events = server.take_events()
    assert names(server_events) == ["Authenticated"]
    assert server_events[0].user == "alice" and server.user == "alice"
    pump(client, server, buffer_size)
    serve(server, server.take_events())
    pump(client, server, buffer_size)
    assert client.state.value == "OPENED" and server.state.value == "OPENED"


@pytest.mark.parametrize("code", [SaslCode.AUTH, SaslCode.SYS_TEMP])
def test_deferred_refusal_reaches_the_client_with_its_code(code):
    client, server = _deferred_pair(password="wrong")
    server.take_events()
    server.sasl_decided(code)
    assert one(server.take_events(), ev.ConnectionClosed).error.condition == Condition.UNAUTHORIZED_ACCESS
    assert server.transport_done and server.user is None
    pump(client, server)
    closed = one(client.take_events(), ev.ConnectionClosed)
    assert closed.error.condition == Condition.UNAUTHORIZED_ACCESS
    assert f"code {code}:" in closed.error.description


def test_input_pipelined_behind_the_credentials_is_read_after_the_decision():
    """A client that sends its AMQP header and open right after sasl-init: they wait,
    unread, and are processed once the owner lets the client in."""
    from helpers import frame
    from switchboard.amqp.spec import Open

    server = Connection("server", server=True, sasl=SaslServer(["PLAIN"], decide_later=True))
    server.receive_data(
        SASL_HEADER
        + frame(SaslInit(mechanism="PLAIN", initial_response=b"\x00bob\x00pw"), frame_type=1)
        + AMQP_HEADER
        + frame(Open(container_id="eager"))
    )
    assert names(server.take_events()) == ["CredentialsReceived"]
    server.sasl_decided(SaslCode.OK)
    assert names(server.take_events()) == ["Authenticated", "ConnectionOpened"]
    assert server.remote_open.container_id == "eager"


def test_input_waiting_for_a_decision_is_bounded():
    from helpers import frame

    server = Connection("server", server=True, max_frame_size=512,
                        sasl=SaslServer(["PLAIN"], decide_later=True))
    server.receive_data(SASL_HEADER + frame(SaslInit(mechanism="PLAIN", initial_response=b"\x00bob\x00pw"), frame_type=1))
    assert names(server.take_events()) == ["CredentialsReceived"]
    server.receive_data(b"\x00" * 600)
    closed = one(server.take_events(), ev.ConnectionClosed)
    assert closed.error.condition == Condition.RESOURCE_LIMIT_EXCEEDED
    assert server.transport_done
    server.sasl_decided(SaslCode.OK)  # too late: nothing happens
    assert server.take_events() == [] and server.user is None


def test_a_decision_after_the_handshake_timeout_is_ignored():
    client, server = _deferred_pair()
    server.take_events()
    server.tick(0.0)
    server.tick(server.handshake_timeout + 1)
    assert one(server.take_events(), ev.ConnectionClosed) is not None
    server.sasl_decided(SaslCode.OK)
    assert server.take_events() == [] and server.user is None
    assert _outcomes(b"".join(bytes(c) for c in server.data_to_send())) == []


def test_a_decision_nobody_asked_for_is_ignored_and_a_bad_code_is_misuse():
    from switchboard.amqp.errors import LocalProtocolError

    client, server = _deferred_pair()
    with pytest.raises(LocalProtocolError):
        server.sasl_decided(7)
    server.sasl_decided(SaslCode.OK)
    server.sasl_decided(SaslCode.AUTH)  # the first answer stands
    assert server.user == "alice"
    idle = Connection("idle", server=True, sasl=SaslServer(["PLAIN"], decide_later=True))
    idle.sasl_decided(SaslCode.OK)
    assert idle.take_events() == [] and idle.user is None


def test_anonymous_is_decided_at_once_even_when_plain_is_deferred():
    client, server, client_events, server_events = _pair(
        SaslClient(), SaslServer(["PLAIN", "ANONYMOUS"], decide_later=True))
    assert one(server_events, ev.Authenticated).mechanism == "ANONYMOUS"
    assert of_type(server_events, ev.CredentialsReceived) == []


# -- EXTERNAL: the identity comes from the transport (the client's TLS certificate) ------
def _external_server(certificate_user, mechanisms=("EXTERNAL",)):
    sasl = SaslServer(list(mechanisms), authenticate=_check)
    sasl.certificate_user = certificate_user
    return sasl


@pytest.mark.parametrize("buffer_size", [None, 1])
def test_external(buffer_size):
    client, server, client_events, server_events = _pair(
        SaslClient(mechanism="EXTERNAL"), _external_server("alice"), buffer_size)
    authenticated = one(server_events, ev.Authenticated)
    assert authenticated.mechanism == "EXTERNAL" and authenticated.user == "alice"
    assert server.user == "alice"
    assert one(client_events, ev.Authenticated).mechanism == "EXTERNAL"
    assert client.state.value == "OPENED" and server.state.value == "OPENED"


def test_external_sends_the_identity_asked_for():
    client = Connection("client", sasl=SaslClient("alice", mechanism="EXTERNAL"))
    client.open()
    server = Connection("server", server=True, sasl=_external_server("alice"))
    server.receive_data(b"".join(bytes(c) for c in client.data_to_send()))
    client.receive_data(b"".join(bytes(c) for c in server.data_to_send()))
    (init,) = [p for _, _, p, _ in split_frames(b"".join(bytes(c) for c in client.data_to_send()))]
    assert init.mechanism == "EXTERNAL" and init.initial_response == b"alice"


def test_external_as_the_certificate_user_is_accepted():
    client, server, _, server_events = _pair(SaslClient("alice", mechanism="EXTERNAL"), _external_server("alice"))
    assert one(server_events, ev.Authenticated).user == "alice"


def test_external_as_someone_else_is_refused():
    client, server, client_events, server_events = _pair(SaslClient("root", mechanism="EXTERNAL"), _external_server("alice"))
    assert one(client_events, ev.ConnectionClosed).error.condition == Condition.UNAUTHORIZED_ACCESS
    assert of_type(server_events, ev.Authenticated) == []
    assert server.user is None


def test_external_is_not_offered_without_a_certificate():
    client, server, client_events, server_events = _pair(
        SaslClient(mechanism="EXTERNAL"), _external_server(None, ("EXTERNAL", "PLAIN")))
    closed = one(client_events, ev.ConnectionClosed)
    assert closed.error.condition == Condition.UNAUTHORIZED_ACCESS
    assert "among: PLAIN" in closed.error.description
    assert of_type(server_events, ev.Authenticated) == []


def test_external_only_listener_refuses_a_client_without_a_certificate():
    """The offer cannot be empty: EXTERNAL is offered, and the attempt refused."""
    client, server, client_events, server_events = _pair(SaslClient(mechanism="EXTERNAL"), _external_server(None))
    assert one(client_events, ev.ConnectionClosed).error.condition == Condition.UNAUTHORIZED_ACCESS
    assert one(server_events, ev.ConnectionClosed).error.condition == Condition.UNAUTHORIZED_ACCESS
    assert server.user is None


def test_external_offered_with_a_certificate():
    server = Connection("server", server=True, sasl=_external_server("alice", ("PLAIN", "EXTERNAL")))
    server.receive_data(SASL_HEADER)
    (mechanisms,) = [p for _, _, p, _ in split_frames(b"".join(bytes(c) for c in server.data_to_send()))]
    assert list(mechanisms.sasl_server_mechanisms) == ["PLAIN", "EXTERNAL"]
