"""Configuration of authentication and policy: the keys, their defaults, each mistake."""

from pathlib import Path

import pytest

from switchboard.router.config import AuthenticationConfig, ConfigError, load_config, parse_config
from switchboard.router.credentials import Credentials

FAST = {"n": 2**4, "r": 1, "p": 1}  # unit tests need the file's format, not its cost


def _credentials_file(path: Path, **users: str) -> Path:
    credentials = Credentials()
    for name, password in users.items():
        credentials.set_password(name, password, **FAST)
    credentials.save(path)
    return path


def test_plain_text_passwords_are_refused_with_the_way_out() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"users": {"alice": "secret"}})
    message = str(caught.value)
    assert message.startswith("users:")
    assert "plain-text passwords are not accepted" in message
    assert "switchboard user add NAME --file" in message
    assert "credentials_file" in message and "[authentication]" in message


def test_authentication_defaults() -> None:
    config = parse_config({})
    assert config.authentication == AuthenticationConfig()
    assert config.authentication.credentials is None
    assert config.policy is None  # no policy: everything allowed


def test_credentials_file_is_relative_to_the_config_and_read_at_load(tmp_path: Path) -> None:
    _credentials_file(tmp_path / "users.creds", alice="s3cret")
    (tmp_path / "router.toml").write_text(
        '[[listeners]]\nport = 0\nsasl_mechanisms = ["PLAIN"]\n'
        '[authentication]\ncredentials_file = "users.creds"\nmax_failed_logins = 3\nblock_period = 0.5\n'
    )
    config = load_config(tmp_path / "router.toml")
    auth = config.authentication
    assert auth.credentials_file == tmp_path / "users.creds"
    assert auth.credentials is not None and auth.credentials.names() == ["alice"]
    assert (auth.max_failed_logins, auth.block_period) == (3, 0.5)


def test_a_damaged_credentials_file_names_the_key_and_the_line(tmp_path: Path) -> None:
    path = _credentials_file(tmp_path / "users.creds", alice="s3cret")
    path.write_text(path.read_text() + "bob:alice-password-in-clear\n")
    with pytest.raises(ConfigError) as caught:
        parse_config({"authentication": {"credentials_file": str(path)}})
    assert str(caught.value).startswith("authentication.credentials_file:")
    assert "line 3" in str(caught.value)


POLICY_GROUP = {"users": ["alice"], "send": ["rpc/*"], "receive": ["*"], "dynamic": True, "max_connections": 4}


def test_policy_groups_are_read() -> None:
    config = parse_config({"policy": {"anonymous_group": "guests", "default_group": "ops", "groups": {
        "ops": POLICY_GROUP, "guests": {"receive": ["public/*"], "max_connections_per_user": 2}}}})
    policy = config.policy
    assert policy is not None
    assert (policy.anonymous_group, policy.default_group) == ("guests", "ops")
    ops, guests = policy.groups
    assert (ops.name, ops.users, ops.send, ops.receive, ops.dynamic) == ("ops", ("alice",), ("rpc/*",), ("*",), True)
    assert (ops.max_connections, ops.max_connections_per_user) == (4, None)
    assert (guests.send, guests.dynamic, guests.send_multicast, guests.receive_multicast) == ((), False, False, False)
    assert guests.max_connections_per_user == 2


@pytest.mark.parametrize(
    "data, key, what",
    [
        ({"authentication": {"credentials_file": "/nonexistent.creds"}}, "authentication.credentials_file", "no such file"),
        ({"authentication": {"verify_threads": 0}}, "authentication.verify_threads", "1.."),
        ({"authentication": {"max_pending_logins": "10"}}, "authentication.max_pending_logins", "integer"),
        ({"authentication": {"block_period": -1}}, "authentication.block_period", "negative"),
        ({"authentication": {"lockout": 5}}, "authentication.lockout", "unknown key"),
        ({"policy": {"groups": {"g": {"send": ["a*b"]}}}}, "policy.groups.g.send", "may only end"),
        ({"policy": {"groups": {"g": {"receive": [""]}}}}, "policy.groups.g.receive", "empty pattern"),
        ({"policy": {"groups": {"g": {"send": "rpc/*"}}}}, "policy.groups.g.send", "list of strings"),
        ({"policy": {"groups": {"g": {"dynamic": "yes"}}}}, "policy.groups.g.dynamic", "true or false"),
        ({"policy": {"groups": {"g": {"max_connections": -1}}}}, "policy.groups.g.max_connections", "0.."),
        ({"policy": {"groups": {"g": {"users": ["anonymous"]}}}}, "policy.groups.g.users", "anonymous_group"),
        ({"policy": {"groups": {"g": {"sendd": []}}}}, "policy.groups.g.sendd", "unknown key"),
        ({"policy": {"groups": {"a": {"users": ["x"]}, "b": {"users": ["x"]}}}}, "policy.groups.b.users", "already in group 'a'"),
        ({"policy": {"anonymous_group": "nobody"}}, "policy.anonymous_group", "no group 'nobody'"),
        ({"policy": {"default_group": "nobody", "groups": {"g": {}}}}, "policy.default_group", "no group 'nobody'"),
        ({"policy": {"group": {}}}, "policy.group", "unknown key"),
        ({"policy": {"groups": {"g": 5}}}, "policy.groups", "one per group"),
    ],
)
def test_each_mistake_names_its_key(data: dict, key: str, what: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    message = str(caught.value)
    assert message.startswith(key), message
    assert what in message, message


def test_the_documented_secure_example_is_a_valid_configuration(tmp_path: Path) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "configuration-auth.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "tls").mkdir()
    for name in ("router.pem", "router.key"):
        (tmp_path / "tls" / name).write_text("placeholder: the configuration checks only that it exists")
    _credentials_file(tmp_path / "users.creds", admin="pw", nova="pw")
    (tmp_path / "router.toml").write_text(example)
    config = load_config(tmp_path / "router.toml")
    assert [listener.sasl_mechanisms for listener in config.listeners] == [("PLAIN",), ("PLAIN", "ANONYMOUS")]
    assert config.authentication.block_period == 300.0
    assert config.policy is not None
    assert [group.name for group in config.policy.groups] == ["operators", "services", "agents", "local"]
    assert config.policy.anonymous_group == "local" and config.policy.default_group is None
