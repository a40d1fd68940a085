"""``[admin]`` and ``--admin``: defaults, the token file, and the loopback rule, each
mistake named by its key."""

from pathlib import Path

import pytest

from switchboard.router.config import ADMIN_PORT, ConfigError, apply_admin, load_config, parse_config

TOKEN = "f" * 40


def test_by_default_the_admin_listener_is_on_loopback_port_8672_without_a_token() -> None:
    admin = parse_config({}).admin
    assert (admin.enabled, admin.host, admin.port, admin.token) == (True, "127.0.0.1", ADMIN_PORT, None)
    assert ADMIN_PORT == 8672
    assert not admin.port_configured  # the default port in use is only logged


def test_a_token_file_is_read_relative_to_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "admin.token").write_text(TOKEN + "\nignored second line\n")
    (tmp_path / "router.toml").write_text('[admin]\nhost = "0.0.0.0"\nport = 9000\ntoken_file = "admin.token"\n')
    admin = load_config(tmp_path / "router.toml").admin
    assert (admin.host, admin.port, admin.token, admin.port_configured) == ("0.0.0.0", 9000, TOKEN, True)
    assert TOKEN not in repr(admin)


@pytest.mark.parametrize(
    "table, key, what",
    [
        ({"host": "0.0.0.0"}, "admin.host", "needs authentication; set admin.token_file"),
        ({"host": ""}, "admin.host", "every interface"),
        ({"host": "10.1.2.3"}, "admin.host", "not a loopback address"),
        ({"port": 70000}, "admin.port", "0..65535"),
        ({"enabled": "yes"}, "admin.enabled", "true or false"),
        ({"token_file": "missing.token"}, "admin.token_file", "no such file"),
        ({"tls": True}, "admin.tls", "unknown key"),
    ],
)
def test_mistakes_name_the_key(table: dict, key: str, what: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"admin": table})
    assert str(raised.value).startswith(f"{key}:")
    assert what in str(raised.value)


@pytest.mark.parametrize("content", ["", "short\n", "has a space in it and is long enough to pass the length\n"])
def test_a_weak_or_empty_token_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / "admin.token").write_text(content)
    with pytest.raises(ConfigError, match=r"^admin.token_file: the first line of .* at least 32 characters"):
        parse_config({"admin": {"token_file": "admin.token"}}, base=tmp_path)


def test_a_disabled_admin_listener_may_name_any_host() -> None:
    assert parse_config({"admin": {"host": "0.0.0.0", "enabled": False}}).admin.enabled is False


def test_the_admin_port_may_not_be_a_listener_port() -> None:
    with pytest.raises(ConfigError, match=r"^admin.port: 127.0.0.1:5672 is also listeners\[0\]"):
        parse_config({"admin": {"port": 5672}})


def test_admin_option_moves_the_listener_and_keeps_the_loopback_rule(tmp_path: Path) -> None:
    config = apply_admin(parse_config({"admin": {"enabled": False}}), "[::1]:0")
    assert (config.admin.enabled, config.admin.host, config.admin.port, config.admin.port_configured) == (True, "::1", 0, True)
    with pytest.raises(ConfigError, match=r"^--admin 0.0.0.0:8080: the admin listener on 0.0.0.0, .* needs authentication"):
        apply_admin(parse_config({}), "0.0.0.0:8080")
    (tmp_path / "admin.token").write_text(TOKEN)
    with_token = parse_config({"admin": {"token_file": "admin.token"}}, base=tmp_path)
    assert apply_admin(with_token, "0.0.0.0:8080").admin.token == TOKEN
    for bad, what in (("8080", "expected HOST:PORT"), ("host:http", "must be a number"), ("host:99999", "0..65535")):
        with pytest.raises(ConfigError, match=f"^--admin: .*{what}"):
            apply_admin(parse_config({}), bad)
    assert apply_admin(parse_config({}), None) == parse_config({})
