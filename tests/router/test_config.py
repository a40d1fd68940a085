"""Configuration: defaults, and every mistake named by its key."""

from pathlib import Path

import pytest

from switchboard.router.config import (
    ConfigError,
    ListenerConfig,
    RouterConfig,
    apply_listen,
    is_loopback,
    load_config,
    parse_config,
    parse_listen,
)


def test_defaults_listen_on_loopback_5672_with_standard_prefixes() -> None:
    config = parse_config({})
    assert [(l.host, l.port, l.role) for l in config.listeners] == [("127.0.0.1", 5672, "normal")]
    prefixes = {a.prefix: a.distribution for a in config.addresses}
    assert prefixes == {
        "multicast/": "multicast",
        "closest/": "closest",
        "rpc/": "balanced",
        "rpc-fanout/": "multicast",
        "notify-pools/": "multicast",
        "notify/": "queue",
        "": "balanced",
    }
    notify = next(a.queue for a in config.addresses if a.prefix == "notify/")
    assert notify is not None and notify.overflow == "drop-head" and notify.message_ttl and notify.expiry
    assert config == RouterConfig(router_id=config.router_id)


def test_configured_prefix_overrides_a_default() -> None:
    config = parse_config({"addresses": [{"prefix": "multicast/", "distribution": "balanced"}, {"prefix": "fan/", "distribution": "multicast"}]})
    prefixes = {a.prefix: a.distribution for a in config.addresses}
    assert prefixes["multicast/"] == "balanced"
    assert prefixes["fan/"] == "multicast"
    assert prefixes[""] == "balanced"


@pytest.mark.parametrize(
    "data, key, what",
    [
        ({"listner": []}, "listner", "unknown key"),
        ({"listeners": [{"port": 70000}]}, "listeners[0].port", "0..65535"),
        ({"listeners": [{"port": "5672"}]}, "listeners[0].port", "integer"),
        ({"listeners": [{"role": "edge"}]}, "listeners[0].role", "normal, inter-router"),
        ({"listeners": [{"sasl_mechanisms": ["GSSAPI"]}]}, "listeners[0].sasl_mechanisms", "GSSAPI"),
        ({"listeners": [{"sasl_mechanisms": ["PLAIN"]}]}, "listeners[0].sasl_mechanisms", "authentication.credentials_file"),
        ({"listeners": [{"tls_cert": "/nonexistent.pem"}]}, "listeners[0].tls_cert", "no such file"),
        ({"listeners": [{"port": 5000}, {"port": 5000}]}, "listeners[1]", "twice"),
        ({"listeners": []}, "listeners", "at least one"),
        ({"addresses": [{"prefix": "a/", "distribution": "anycast"}]}, "addresses[0].distribution", "balanced, closest, multicast"),
        ({"addresses": [{"prefix": "", "distribution": "queue"}]}, "addresses[0].prefix", "every address would be a queue"),
        ({"addresses": [{"prefix": "q/", "distribution": "queue", "overflow": "drop-tail"}]}, "addresses[0].overflow", "reject-publish"),
        ({"addresses": [{"prefix": "q/", "distribution": "balanced", "max_messages": 5}]}, "addresses[0].max_messages", "only for distribution"),
        ({"addresses": [{"prefix": "q/", "distribution": "queue", "dead_letter_address": "dlq"}]},
         "addresses[0].dead_letter_address", "queue prefix this router hosts"),
        ({"addresses": [{"prefix": "q/", "distribution": "queue", "max_messages": 0}]}, "addresses[0].max_messages", "1.."),
        ({"store": {"backend": "mysql"}}, "store.backend", "sqlite, postgres"),
        ({"store": {"backend": "postgres"}}, "store.dsn", "required"),
        ({"store": {"fsync": "never"}}, "store.fsync", "batch, always"),
        ({"store": {"dsn": "postgresql://x"}}, "store.dsn", "only for backend"),
        ({"router": {"data_dir": ""}}, "router.data_dir", "must not be empty"),
        ({"addresses": [{"distribution": "balanced"}]}, "addresses[0].prefix", "required"),
        ({"addresses": [{"prefix": "a/"}, {"prefix": "a/"}]}, "addresses[1].prefix", "twice"),
        ({"limits": {"max_message_size": 0}}, "limits.max_message_size", "1.."),
        ({"limits": {"idle_timeout": -1}}, "limits.idle_timeout", "negative"),
        ({"limits": {"max_frame_size": 100}}, "limits.max_frame_size", "512.."),
        ({"limits": {"max_conections": 5}}, "limits.max_conections", "unknown key"),
        ({"users": {"alice": "secret"}}, "users", "switchboard user add"),
        ({"logging": {"level": "loud"}}, "logging.level", "debug"),
        ({"router": {"id": ""}}, "router.id", "empty"),
        ({"listeners": [{"host": "0.0.0.0"}]}, "listeners[0].sasl_mechanisms", "allow_remote_anonymous = true"),
        ({"listeners": [{"host": "", "sasl_mechanisms": ["ANONYMOUS"]}]},
         "listeners[0].sasl_mechanisms", "every interface"),
        ({"listeners": [{"allow_remote_anonymous": "yes"}]}, "listeners[0].allow_remote_anonymous", "true or false"),
        ({"listeners": [{"require_client_certificate": True}]}, "listeners[0].require_client_certificate", "tls_ca"),
        ({"listeners": [{"sasl_mechanisms": ["EXTERNAL"]}]}, "listeners[0].sasl_mechanisms", "tls_ca"),
        ({"listeners": [{"tls_min_version": "1.1"}]}, "listeners[0].tls_min_version", "1.2, 1.3"),
    ],
)
def test_each_mistake_names_its_key(data: dict, key: str, what: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    message = str(caught.value)
    assert message.startswith(key), message
    assert what in message, message


def test_toml_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not really a certificate")
    (tmp_path / "router.toml").write_text(
        '[router]\nid = "r1"\n[[listeners]]\nport = 0\ntls_cert = "cert.pem"\n[limits]\nidle_timeout = 2.5\n'
    )
    config = load_config(tmp_path / "router.toml")
    assert config.router_id == "r1"
    assert config.listeners[0].tls_cert == tmp_path / "cert.pem"
    assert config.limits.idle_timeout == 2.5


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[limits\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


@pytest.mark.parametrize("text, host, port", [("127.0.0.1:0", "127.0.0.1", 0), ("[::1]:5672", "::1", 5672), ("localhost:99", "localhost", 99)])
def test_listen_option(text: str, host: str, port: int) -> None:
    listener = parse_listen(text)
    assert (listener.host, listener.port) == (host, port)


@pytest.mark.parametrize("text", ["5672", "host:", "host:abc", "host:70000"])
def test_listen_option_mistakes(text: str) -> None:
    with pytest.raises(ConfigError, match="--listen"):
        parse_listen(text)


def test_liveness_and_closing_limits_have_defaults_and_take_values() -> None:
    defaults = parse_config({}).limits
    assert (defaults.frame_timeout, defaults.close_timeout, defaults.min_heartbeat_interval) == (30.0, 5.0, 0.5)
    limits = parse_config({"limits": {"frame_timeout": 2, "close_timeout": 0.25, "min_heartbeat_interval": 1.5}}).limits
    assert (limits.frame_timeout, limits.close_timeout, limits.min_heartbeat_interval) == (2.0, 0.25, 1.5)


@pytest.mark.parametrize(
    "key, value, what",
    [
        ("frame_timeout", 0, "0.01..3600 seconds, got 0"),  # a trickling peer must always be bounded
        ("close_timeout", 0, "0.01..300 seconds, got 0"),
        ("close_timeout", 301, "0.01..300 seconds, got 301"),
        ("min_heartbeat_interval", 0, "0.01..3600 seconds, got 0"),
        ("min_heartbeat_interval", -1, "must not be negative"),
        ("frame_timeout", "30", "must be a number of seconds"),
    ],
)
def test_liveness_and_closing_limits_out_of_range_name_their_key(key: str, value: object, what: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"limits": {key: value}})
    assert str(error.value).startswith(f"limits.{key}: ")
    assert what in str(error.value)


@pytest.mark.parametrize(
    "host, loopback",
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.1", False), ("router.example.org", False)],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_remote_anonymous_by_opt_in() -> None:
    config = parse_config({"listeners": [{"host": "0.0.0.0", "allow_remote_anonymous": True}]})
    assert config.listeners[0].allow_remote_anonymous


def _tls_files(tmp_path: Path) -> dict:
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_text("checked when the router starts, not here")
    return {"tls_cert": str(tmp_path / "cert.pem"), "tls_key": str(tmp_path / "key.pem"), "tls_ca": str(tmp_path / "ca.pem")}


def test_client_certificates_required_by_default_with_tls_ca(tmp_path: Path) -> None:
    files = _tls_files(tmp_path)
    required, optional = parse_config({"listeners": [
        {"port": 1, **files},
        {"port": 2, **files, "require_client_certificate": False, "sasl_mechanisms": ["EXTERNAL"]},
    ]}).listeners
    assert required.require_client_certificate and not optional.require_client_certificate
    assert required.security() == "tls=on tls_min=1.2 client_certificate=required sasl=ANONYMOUS"
    assert optional.security() == "tls=on tls_min=1.2 client_certificate=optional sasl=EXTERNAL"
    files.pop("tls_ca")
    (no_ca,) = parse_config({"listeners": [{**files, "tls_min_version": "1.3"}]}).listeners
    assert not no_ca.require_client_certificate
    assert no_ca.security() == "tls=on tls_min=1.3 client_certificate=not-asked sasl=ANONYMOUS"
    assert ListenerConfig().security() == "tls=off sasl=ANONYMOUS"


def test_listen_moves_the_client_listener_and_keeps_its_security(tmp_path: Path) -> None:
    config = parse_config({
        "listeners": [
            {"port": 5671, "sasl_mechanisms": ["EXTERNAL"], **_tls_files(tmp_path)},
            {"port": 5673, "role": "inter-router", "sasl_mechanisms": ["EXTERNAL"], **_tls_files(tmp_path)},
        ],
    })
    moved = apply_listen(config, ("0.0.0.0:5672", "[::]:5672"))
    first, second, inter_router = moved.listeners
    assert (first.host, first.port, second.host, second.port) == ("0.0.0.0", 5672, "::", 5672)
    for listener in (first, second):
        assert listener.sasl_mechanisms == ("EXTERNAL",)
        assert listener.tls_cert == config.listeners[0].tls_cert
        assert listener.tls_ca == config.listeners[0].tls_ca
        assert listener.require_client_certificate
    assert inter_router == config.listeners[1]


def test_listen_without_options_changes_nothing() -> None:
    config = parse_config({})
    assert apply_listen(config, ()) is config


def test_listen_with_the_opt_in_flag() -> None:
    with pytest.raises(ConfigError, match=r"--listen 0\.0\.0\.0:5672 \(standing for listeners\[0\]\)\.sasl_mechanisms.*--allow-remote-anonymous"):
        apply_listen(RouterConfig(), ("0.0.0.0:5672",))
    (listener,) = apply_listen(RouterConfig(), ("0.0.0.0:5672",), allow_remote_anonymous=True).listeners
    assert listener.allow_remote_anonymous and listener.host == "0.0.0.0"
    with pytest.raises(ConfigError, match="--allow-remote-anonymous: applies to listeners given with --listen"):
        apply_listen(RouterConfig(), (), allow_remote_anonymous=True)


@pytest.mark.parametrize("listeners, count", [
    ([{"port": 1}, {"port": 2}], 2),
    ([{"port": 1, "role": "inter-router"}], 0),
])
def test_listen_refused_unless_one_client_listener(listeners: list, count: int) -> None:
    config = parse_config({"listeners": listeners})
    with pytest.raises(ConfigError, match=f"--listen: .* it has {count} "):
        apply_listen(config, ("127.0.0.1:0",))


def test_the_reference_secure_example_is_a_valid_configuration(tmp_path: Path) -> None:
    from switchboard.router.config import MiB, load_config
    from switchboard.router.credentials import Credentials

    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    example = doc.split("## A complete secure example", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "tls").mkdir()
    for name in ("router.pem", "router.key", "ca.pem"):
        (tmp_path / "tls" / name).write_text("placeholder: the configuration checks only that it exists")
    credentials = Credentials()
    credentials.set_password("admin", "pw", n=2**10)
    credentials.save(tmp_path / "users.creds")
    (tmp_path / "router.toml").write_text(example)
    config = load_config(tmp_path / "router.toml")
    assert [listener.sasl_mechanisms for listener in config.listeners] == [("EXTERNAL",), ("PLAIN",), ("ANONYMOUS",)]
    assert config.listeners[0].require_client_certificate
    assert config.limits.max_memory == 2048 * MiB and config.limits.max_address_bytes == 128 * MiB
    assert [group.name for group in config.policy.groups] == ["services", "agents", "operators", "local"]


@pytest.mark.parametrize(
    "value, expected",
    [(1048576, 1048576), ("1MiB", 1048576), ("512KiB", 524288), ("2GiB", 2 * 1024**3), ("3MB", 3_000_000), (" 70000 B ", 70000)],
)
def test_sizes_take_bytes_or_units(value: object, expected: int) -> None:
    assert parse_config({"limits": {"max_connection_output": value}}).limits.max_connection_output == expected


@pytest.mark.parametrize(
    "limits, key, what",
    [
        ({"max_memory": "one GB"}, "limits.max_memory", "expected bytes"),
        ({"max_memory": "1TiB"}, "limits.max_memory", "expected bytes"),
        ({"max_memory": 1024}, "limits.max_memory", "at least 16777216 bytes"),
        ({"max_address_bytes": True}, "limits.max_address_bytes", "expected bytes"),
        ({"max_memory": "64MiB", "max_address_bytes": "128MiB"}, "limits.max_address_bytes", "more than limits.max_memory"),
        ({"max_link_unsettled": 0}, "limits.max_link_unsettled", "1.."),
    ],
)
def test_memory_limits_out_of_range_name_their_key(limits: dict, key: str, what: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"limits": limits})
    assert str(error.value).startswith(f"{key}: "), str(error.value)
    assert what in str(error.value)


def test_max_memory_defaults_to_a_share_of_the_machine() -> None:
    from switchboard.router.config import MiB

    default = parse_config({}).limits.max_memory
    assert 256 * MiB <= default <= 4096 * MiB
