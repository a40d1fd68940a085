"""transport_url -> the client's router list."""

from __future__ import annotations

import oslo_messaging
import pytest
from oslo_config import cfg

from switchboard.client import Router
from switchboard.oslo.urls import client_url


def parse(url: str):  # type: ignore[no-untyped-def]
    return client_url(oslo_messaging.TransportURL.parse(cfg.ConfigOpts(), url))


def test_each_host_is_a_router_of_the_list_in_order() -> None:
    url = parse("switchboard://r1.example:5672,r2.example,[fd00::2]:5673/")
    assert url.routers == (Router("r1.example", 5672), Router("r2.example", 5672), Router("fd00::2", 5673))
    assert (url.scheme, url.username, url.password, url.address) == ("amqp", None, None, None)


def test_credentials_and_tls() -> None:
    url = parse("switchboard://nova:s3cret@r1:5671,nova:s3cret@r2?ssl=1")
    assert url.scheme == "amqps"
    assert url.routers == (Router("r1", 5671), Router("r2", 5671))
    assert (url.username, url.password) == ("nova", "s3cret")


def test_no_host_means_the_local_router() -> None:
    assert parse("switchboard://").routers == (Router("127.0.0.1", 5672),)


def test_other_credentials_on_a_later_host_are_refused() -> None:
    with pytest.raises(ValueError, match="host 2 .* other credentials"):
        parse("switchboard://nova:a@r1,glance:b@r2/")
