"""Client URLs: one router or a list, credentials, IPv6 literals, and the errors people see."""

from __future__ import annotations

import ipaddress
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.client import Router, UrlError, parse_url


def test_one_router_stays_the_common_case() -> None:
    url = parse_url("amqp://broker.example:5673/orders")
    assert url.routers == (Router("broker.example", 5673),)
    assert (url.host, url.port, url.address, url.tls) == ("broker.example", 5673, "orders", False)
    assert url.username is None and url.password is None


def test_a_list_of_routers_shares_credentials_tls_and_address() -> None:
    url = parse_url("amqps://alice:s3cret@r1:5671,r2,10.0.0.3:6000/rpc/topic")
    assert url.routers == (Router("r1", 5671), Router("r2", 5671), Router("10.0.0.3", 6000))
    assert url.tls
    assert (url.username, url.password, url.address) == ("alice", "s3cret", "rpc/topic")


def test_default_ports_follow_the_scheme() -> None:
    assert parse_url("amqp://h").port == 5672
    assert parse_url("amqps://h").port == 5671
    assert parse_url("AMQP://h").scheme == "amqp"


def test_ipv6_literals_in_brackets() -> None:
    url = parse_url("amqp://[::1]:5672,[fe80::1%25eth0],r3:1/a")
    assert url.routers == (Router("::1", 5672), Router("fe80::1%eth0", 5672), Router("r3", 1))
    assert str(url.routers[0]) == "[::1]:5672"
    assert str(url.routers[2]) == "r3:1"


def test_percent_encoded_credentials_and_address() -> None:
    url = parse_url("amqp://us%40er:p%3Aa%2Fss@h/a%3Fb")
    assert (url.username, url.password, url.address) == ("us@er", "p:a/ss", "a?b")


def test_no_address_and_user_without_password() -> None:
    url = parse_url("amqp://bob@h1,h2/")
    assert url.address is None
    assert (url.username, url.password) == ("bob", None)


@pytest.mark.parametrize(
    "text, says",
    [
        ("http://h/a", "must start with amqp:// or amqps://"),
        ("h:5672/a", "must start with amqp:// or amqps://"),
        ("amqp:///a", "no host"),
        ("amqp://r1:5672,,r3:5672/a", "router 2 is empty"),
        ("amqp://r1:5672,/a", "router 2 is empty"),
        ("amqp://r1:notaport/a", "router 1 ('r1:notaport'): port must be a number"),
        ("amqp://r1:1,r2:70000/a", "router 2 ('r2:70000'): port 70000 is out of range"),
        ("amqp://r1:0/a", "port 0 is out of range"),
        ("amqp://r1:/a", "port must be a number"),
        ("amqp://::1:5672/a", "IPv6 address must be written in brackets"),
        ("amqp://[::1/a", "'[' without ']'"),
        ("amqp://[not-v6]:1/a", "not an IPv6 address in brackets"),
        ("amqp://[::1]5672/a", "expected ':PORT' after ']'"),
        ("amqp://bad host/a", "not a host name or address"),
        ("amqp://r1,r1:5672/a", "router 2 (r1:5672) is listed twice"),
        ("amqp://:pw@h/a", "no user before it"),
        ("amqp://h/a?x=1", "query or fragment"),
    ],
)
def test_bad_urls_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(UrlError) as failure:
        parse_url(text)
    assert says in str(failure.value)
    assert isinstance(failure.value, ValueError)


# -- properties ------------------------------------------------------------------------
_labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_hostnames = st.lists(_labels, min_size=1, max_size=3).map(".".join)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(lambda address: str(ipaddress.IPv6Address(address)))
_routers = st.builds(Router, st.one_of(_hostnames, _ipv4, _ipv6), st.integers(1, 65535))
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


def _render(router: Router, with_port: bool) -> str:
    host = f"[{router.host}]" if ":" in router.host else router.host
    return f"{host}:{router.port}" if with_port else host


@given(
    scheme=st.sampled_from(["amqp", "amqps"]),
    routers=st.lists(_routers, min_size=1, max_size=5, unique=True),
    user=st.none() | _text.filter(bool),
    password=st.none() | _text,
    address=st.none() | _text.filter(bool),
)
def test_every_list_round_trips(scheme: str, routers: list[Router], user: str | None, password: str | None, address: str | None) -> None:
    """Whatever the routers and (percent-encoded) parts, parsing gives them back in order."""
    userinfo = ""
    if user is not None:
        userinfo = quote(user, safe="")
        if password is not None:
            userinfo += ":" + quote(password, safe="")
        userinfo += "@"
    hosts = ",".join(_render(router, with_port=True) for router in routers)
    text = f"{scheme}://{userinfo}{hosts}" + (f"/{quote(address, safe='')}" if address is not None else "")
    url = parse_url(text)
    assert url.routers == tuple(routers)
    assert url.scheme == scheme
    assert url.address == address
    assert url.username == user
    assert url.password == (password if user is not None else None)


@given(routers=st.lists(_routers, min_size=1, max_size=4, unique_by=lambda r: r.host))
def test_a_missing_port_is_the_schemes_default(routers: list[Router]) -> None:
    url = parse_url("amqps://" + ",".join(_render(router, with_port=False) for router in routers))
    assert [router.port for router in url.routers] == [5671] * len(routers)
    assert [router.host for router in url.routers] == [router.host for router in routers]


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_url_error(text: str) -> None:
    """No input makes the parser fail with anything but UrlError."""
    try:
        url = parse_url("amqp://" + text)
    except UrlError:
        return
    assert url.routers and all(1 <= router.port <= 65535 for router in url.routers)
