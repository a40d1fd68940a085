"""TLS helpers on their own: who a client certificate names, and context settings."""

from __future__ import annotations

import ssl

import pytest

from switchboard.io.tls import TLS_VERSIONS, certificate_user, client_context, server_context


def _subject(*pairs: tuple[str, str]) -> dict:
    return {"subject": tuple(((key, value),) for key, value in pairs)}


@pytest.mark.parametrize(
    "peercert, user",
    [
        (_subject(("organizationName", "Example"), ("commonName", "alice")), "alice"),
        (_subject(("commonName", "nova-compute-17"),), "nova-compute-17"),
        (_subject(("organizationName", "Example")), None),  # no CN: nobody
        (_subject(("commonName", "alice"), ("commonName", "root")), None),  # two: ambiguous
        (_subject(("commonName", ""),), None),
        ({}, None),  # no certificate presented (what ssl reports)
        (None, None),  # not TLS at all
    ],
)
def test_certificate_user_is_the_subject_cn(peercert, user) -> None:
    assert certificate_user(peercert) == user


def test_required_client_certificates_need_a_ca(tmp_path) -> None:
    with pytest.raises(ValueError, match="cafile"):
        server_context(tmp_path / "cert.pem", require_client_cert=True)


def test_nothing_older_than_tls_1_2() -> None:
    assert min(TLS_VERSIONS.values()) == ssl.TLSVersion.TLSv1_2
    assert client_context().minimum_version == ssl.TLSVersion.TLSv1_2
