"""Router configuration: a TOML file (or nothing: embedded defaults), validated up front.

Every mistake is reported with the key it concerns and what is wrong with it, before
the router opens a socket: ``ConfigError("listeners[0].port: must be 0..65535, got 70000")``.

    [router]
    id = "router-a"                      # default: the host name
    data_dir = "switchboard-data"        # where queues are kept (SQLite); relative to this file

    [[listeners]]
    host = "127.0.0.1"
    port = 5672
    role = "normal"                      # or "inter-router"
    sasl_mechanisms = ["ANONYMOUS"]      # and/or "PLAIN" (needs authentication.credentials_file), "EXTERNAL" (needs tls_ca)
    allow_remote_anonymous = false       # ANONYMOUS on a non-loopback host needs true
    tls_cert = "server.pem"              # optional: TLS on this listener
    tls_key = "server.key"
    tls_ca = "ca.pem"                    # optional: verify client certificates
    require_client_certificate = true    # default: true when tls_ca is set
    tls_min_version = "1.2"              # or "1.3"

    [[addresses]]
    prefix = "multicast/"
    distribution = "multicast"           # balanced | closest | multicast | queue

    [[addresses]]
    prefix = "queue/"
    distribution = "queue"               # hosted durably by this router (docs/queues.md)
    message_ttl = 86400                  # seconds a message may wait (0: no limit)
    expiry = 604800                      # seconds with no consumer and no new message before the queue goes (0: never)
    max_messages = 100000
    max_bytes = "1GiB"
    overflow = "reject-publish"          # or "drop-head"
    max_delivery_attempts = 5            # failed deliveries before dead-lettering (0: no limit)
    dead_letter_address = "queue/dead"   # a queue address of this router; none: dropped, counted
    host = "router-a"                    # the router hosting these queues (default: this one)

    [store]
    backend = "sqlite"                   # or "postgres" (docs/store-postgres.md)
    fsync = "batch"                      # group commit; "always": one sync per message
    dsn = "postgresql://sb@db:5432/sb"   # postgres only

    [limits]
    max_message_size = 16777216          # bytes
    max_connections = 10000
    max_connections_per_host = 1000
    max_sessions_per_connection = 32
    max_links_per_connection = 1000
    max_frame_size = 65536
    idle_timeout = 16.0                  # seconds without a complete frame (0: off)
    handshake_timeout = 10.0             # seconds for a new connection to complete its open
    frame_timeout = 30.0                 # seconds for a frame to arrive once begun
    close_timeout = 5.0                  # seconds a closed peer has to take the close
    min_heartbeat_interval = 0.5         # seconds: heartbeats never come faster
    inter_router_idle_timeout = 3.0      # seconds of silence after which a neighbour router is gone
    shutdown_timeout = 10.0              # seconds
    max_memory = "1GiB"                  # messages held router-wide (default: 1/8 of RAM, 256MiB..4GiB)
    max_address_bytes = "64MiB"          # messages held for one address, multicast copies included
    max_address_messages = 10000
    max_link_unsettled = 1000            # deliveries a consumer holds unsettled before it gets no more
    max_connection_output = "1MiB"       # bytes written to a connection that its peer has not taken
    frames_per_turn = 256                # waiting input shared out among connections per loop turn

    [authentication]                     # for SASL PLAIN; see docs/configuration-auth.md
    credentials_file = "users.creds"     # made with `switchboard user add`; relative to this file

    [policy]                             # who may connect, send and receive; none: everyone
    anonymous_group = "guests"
    [policy.groups.guests]
    receive = ["public/*"]

    [admin]                              # HTTP: JSON views, /metrics, /healthz, /readyz (docs/operations.md)
    host = "127.0.0.1"
    port = 8672                          # 0: a free port (printed as "admin on http://HOST:PORT")
    enabled = true                       # false: no admin listener
    token_file = "admin.token"           # needed beyond loopback: its first line is the bearer token

    [logging]                            # docs/operations.md, "Logs"
    level = "info"
    format = "text"                      # or "json": one object per line
    [logging.levels]                     # per logger (and those below it)
    "switchboard.router.links" = "debug"
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .credentials import RESERVED_NAMES, Credentials, CredentialsError

__all__ = [
    "ConfigError",
    "RouterConfig",
    "ListenerConfig",
    "AddressConfig",
    "ConnectorConfig",
    "Limits",
    "AuthenticationConfig",
    "PolicyConfig",
    "GroupConfig",
    "load_config",
    "parse_config",
    "parse_listen",
    "apply_listen",
    "check_anonymous",
    "is_loopback",
    "DISTRIBUTIONS",
    "DEFAULT_ADDRESSES",
    "NOTIFICATION_QUEUES",
    "QueueSettings",
    "StoreConfig",
    "OVERFLOW_POLICIES",
    "AdminConfig",
    "ADMIN_PORT",
    "MIN_TOKEN_LENGTH",
    "parse_admin_address",
    "apply_admin",
    "check_admin",
]

DISTRIBUTIONS = ("balanced", "closest", "multicast", "queue")
ROLES = ("normal", "inter-router")
MECHANISMS = ("ANONYMOUS", "PLAIN", "EXTERNAL")
TLS_MIN_VERSIONS = ("1.2", "1.3")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
_LOGGER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class ConfigError(ValueError):
    """A configuration mistake; the message names the key."""


@dataclass(frozen=True)
class ListenerConfig:
    host: str = "127.0.0.1"
    port: int = 5672
    role: str = "normal"
    sasl_mechanisms: tuple[str, ...] = ("ANONYMOUS",)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    require_client_certificate: bool = False
    tls_min_version: str = "1.2"
    allow_remote_anonymous: bool = False

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def security(self) -> str:
        """What protects this listener, for the log: ``tls=on tls_min=1.2 ...``."""
        if self.tls:
            if self.tls_ca is None:
                certificates = "not-asked"
            else:
                certificates = "required" if self.require_client_certificate else "optional"
            tls = f"tls=on tls_min={self.tls_min_version} client_certificate={certificates}"
        else:
            tls = "tls=off"
        return f"{tls} sasl={','.join(self.sasl_mechanisms)}"


@dataclass(frozen=True)
class ConnectorConfig:
    """An inter-router connection this router opens to a neighbour (and keeps open)."""

    host: str
    port: int = 5673
    role: str = "inter-router"
    cost: int = 1
    """The link's cost in path computation (both routers use the connector's)."""
    tls: bool = False
    tls_ca: Path | None = None
    """CA to verify the neighbour's certificate against (default: the system's)."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """Our certificate for the neighbour (its listener may require one; SASL EXTERNAL)."""
    server_hostname: str | None = None
    """Name the neighbour's certificate must carry (default: ``host``)."""
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password_file: Path | None = None
    """A file holding the password for PLAIN (its first line), so none is in this file."""

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


OVERFLOW_POLICIES = ("reject-publish", "drop-head")
STORE_BACKENDS = ("sqlite", "postgres")
FSYNC_POLICIES = ("batch", "always")


@dataclass(frozen=True)
class QueueSettings:
    """How the queues under one ``distribution = "queue"`` prefix behave."""

    message_ttl: float | None = None
    """Seconds a message may wait in the queue (a message's own shorter TTL wins); None: no limit."""
    expiry: float | None = None
    """Seconds with no consumer and no new message after which the queue and its messages go."""
    max_messages: int = 100_000
    max_bytes: int = 1024 * 1024 * 1024
    overflow: str = "reject-publish"
    """At a bound: ``reject-publish`` (the sender is told ``amqp:resource-limit-exceeded``)
    or ``drop-head`` (the oldest waiting message goes)."""
    max_delivery_attempts: int = 0
    """Deliveries that fail (``modified``, a consumer lost) before the message is
    dead-lettered; 0: no limit."""
    dead_letter_address: str | None = None
    """A queue address (on this router) for messages rejected or out of attempts; None:
    they are dropped, counted and logged."""
    host: str | None = None
    """The router that hosts these queues; None: this router.  Other routers name it so
    their producers and consumers reach the queue there."""


@dataclass(frozen=True)
class AddressConfig:
    prefix: str
    distribution: str
    queue: QueueSettings | None = None
    """For ``distribution = "queue"``: the queues' settings."""


@dataclass(frozen=True)
class StoreConfig:
    """Where queues are kept (``docs/store.md``)."""

    backend: str = "sqlite"
    fsync: str = "batch"
    """``batch``: group commit, one sync for many messages; ``always``: one sync per message."""
    dsn: str | None = None
    """For ``postgres``: ``postgresql://user@host:5432/database``."""
    lease_seconds: float = 10.0
    """For ``postgres``: how long a router's claim on a queue lasts unless renewed; another
    router may serve the queue this long after its host was lost."""


ADMIN_PORT = 8672
"""The admin listener's default port (beside AMQP's 5672)."""
MIN_TOKEN_LENGTH = 32
"""Characters an admin token needs at least: guessing it must not be a plan."""


@dataclass(frozen=True)
class AdminConfig:
    """The admin listener: JSON views, Prometheus metrics, health (``docs/operations.md``)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = ADMIN_PORT
    token_file: Path | None = None
    """Its first line is the token a request must carry (``Authorization: Bearer``, or as
    the password of HTTP Basic); None: no authentication (loopback only)."""
    token: str | None = field(default=None, compare=False, repr=False)
    """The token, read when the configuration is loaded."""
    port_configured: bool = False
    """The port was chosen (in the file or with ``--admin``): failing to bind it stops
    the router.  The default port in use (another router on this host) is only logged."""

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


MiB = 1024 * 1024


def default_max_memory() -> int:
    """An eighth of the machine's memory, kept between 256 MiB and 4 GiB."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 8 * 1024 * MiB
    return max(256 * MiB, min(4096 * MiB, physical // 8))


@dataclass(frozen=True)
class Limits:
    max_message_size: int = 16 * MiB
    max_connections: int = 10000
    max_connections_per_host: int = 1000
    max_sessions_per_connection: int = 32
    max_links_per_connection: int = 1000
    max_frame_size: int = 65536
    idle_timeout: float = 16.0
    handshake_timeout: float = 10.0
    frame_timeout: float = 30.0
    close_timeout: float = 5.0
    min_heartbeat_interval: float = 0.5
    inter_router_idle_timeout: float = 3.0
    """A neighbour router silent this long is taken for dead (routes recomputed at once)."""
    shutdown_timeout: float = 10.0
    max_memory: int = field(default_factory=default_max_memory)
    """Bytes of messages the router may hold in all (waiting, copied, in flight)."""
    max_address_bytes: int = 64 * MiB
    max_address_messages: int = 10000
    max_link_unsettled: int = 1000
    max_connection_output: int = 1 * MiB
    frames_per_turn: int = 256
    """Frames shared out per loop turn among connections with input waiting: smaller
    favours others' latency under a flood, larger favours throughput (``io/turns.py``)."""


@dataclass(frozen=True)
class AuthenticationConfig:
    credentials_file: Path | None = None
    credentials: Credentials | None = field(default=None, compare=False, repr=False)
    """The file's users, read and checked when the configuration is loaded."""
    verify_threads: int = 2
    max_pending_logins: int = 64
    max_failed_logins: int = 5
    failure_window: float = 60.0
    block_period: float = 60.0
    max_tracked_hosts: int = 10000


@dataclass(frozen=True)
class GroupConfig:
    name: str
    users: tuple[str, ...] = ()
    send: tuple[str, ...] = ()
    receive: tuple[str, ...] = ()
    dynamic: bool = False
    send_multicast: bool = False
    receive_multicast: bool = False
    max_connections: int | None = None
    max_connections_per_user: int | None = None


@dataclass(frozen=True)
class PolicyConfig:
    groups: tuple[GroupConfig, ...] = ()
    anonymous_group: str | None = None
    default_group: str | None = None


NOTIFICATION_QUEUES = QueueSettings(
    message_ttl=86400.0,
    expiry=86400.0,
    max_messages=100_000,
    max_bytes=256 * 1024 * 1024,
    overflow="drop-head",
)
"""The embedded default for ``notify/``: a notification waits a day at most, a queue
nobody consumes or feeds for a day goes, and a full queue drops its oldest (the newest
notifications matter most).  ``docs/rpc.md`` explains the choice."""

DEFAULT_ADDRESSES = (
    AddressConfig("multicast/", "multicast"),
    AddressConfig("closest/", "closest"),
    # switchboard.rpc and the oslo.messaging driver (switchboard/rpc/wire.py).
    AddressConfig("rpc/", "balanced"),
    AddressConfig("rpc-fanout/", "multicast"),
    AddressConfig("notify-pools/", "multicast"),
    AddressConfig("notify/", "queue", NOTIFICATION_QUEUES),
    AddressConfig("", "balanced"),
)


DEFAULT_DATA_DIR = Path("switchboard-data")
"""Where queues are kept when ``router.data_dir`` is not set (relative to the configuration file)."""


@dataclass(frozen=True)
class RouterConfig:
    router_id: str = field(default_factory=socket.gethostname)
    listeners: tuple[ListenerConfig, ...] = (ListenerConfig(),)
    addresses: tuple[AddressConfig, ...] = DEFAULT_ADDRESSES
    limits: Limits = Limits()
    log_level: str = "info"
    authentication: AuthenticationConfig = AuthenticationConfig()
    policy: PolicyConfig | None = None
    """None: no policy, every client may do everything the limits allow."""
    connectors: tuple[ConnectorConfig, ...] = ()
    data_dir: Path = DEFAULT_DATA_DIR
    """Where the router keeps its queues (SQLite); relative paths are to the working directory."""
    store: StoreConfig = StoreConfig()
    admin: AdminConfig = AdminConfig()
    log_format: str = "text"
    """``[logging] format``: "text" or "json"."""
    log_levels: tuple[tuple[str, str], ...] = ()
    """``[logging.levels]``: (logger name, level) pairs overriding ``log_level``."""

    @property
    def has_queues(self) -> bool:
        """Some address prefix is a queue this router hosts (it needs its store)."""
        return any(a.queue is not None and a.queue.host in (None, self.router_id) for a in self.addresses)


def load_config(path: str | Path) -> RouterConfig:
    """Read and validate a TOML configuration file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, base=path.parent)


def parse_config(data: dict[str, Any], base: Path | None = None) -> RouterConfig:
    """Validate a configuration already parsed from TOML (paths relative to ``base``)."""
    if "users" in data:
        raise ConfigError(
            "users: plain-text passwords are not accepted. Hash each one into a credentials file"
            " with `switchboard user add NAME --file users.creds`, set credentials_file = \"users.creds\""
            " under [authentication], and delete [users]"
        )
    _only(data, "", {"router", "listeners", "connectors", "addresses", "limits", "authentication", "policy", "logging", "store", "admin"})
    router = _table(data, "router")
    _only(router, "router.", {"id", "data_dir"})
    router_id = _string(router, "router.", "id", socket.gethostname())
    if not router_id:
        raise ConfigError("router.id: must not be empty")
    data_dir = DEFAULT_DATA_DIR
    if "data_dir" in router:
        text = _string(router, "router.", "data_dir", "")
        if not text:
            raise ConfigError("router.data_dir: must not be empty")
        data_dir = Path(text)
        if base is not None and not data_dir.is_absolute():
            data_dir = base / data_dir
        if data_dir.exists() and not data_dir.is_dir():
            raise ConfigError(f"router.data_dir: {data_dir} exists and is not a directory")
    store = _store(_table(data, "store"))

    listeners = tuple(_listener(item, f"listeners[{i}].", base) for i, item in enumerate(_array(data, "listeners")))
    if "listeners" not in data:
        listeners = (ListenerConfig(),)
    if not listeners:
        raise ConfigError("listeners: at least one listener is needed")
    seen: set[tuple[str, int]] = set()
    for i, listener in enumerate(listeners):
        check_anonymous(listener, f"listeners[{i}]")
        key = (listener.host, listener.port)
        if listener.port and key in seen:
            raise ConfigError(f"listeners[{i}]: {listener.host}:{listener.port} is configured twice")
        seen.add(key)

    connectors = tuple(_connector(item, f"connectors[{i}].", base) for i, item in enumerate(_array(data, "connectors")))
    targets: set[tuple[str, int]] = set()
    for i, connector in enumerate(connectors):
        if (connector.host, connector.port) in targets:
            raise ConfigError(f"connectors[{i}]: {connector.address} is configured twice")
        targets.add((connector.host, connector.port))

    addresses = tuple(_address(item, f"addresses[{i}].") for i, item in enumerate(_array(data, "addresses")))
    prefixes = [a.prefix for a in addresses]
    for i, prefix in enumerate(prefixes):
        if prefix in prefixes[:i]:
            raise ConfigError(f"addresses[{i}].prefix: {prefix!r} is configured twice")
    # Configured prefixes win over the defaults; the defaults fill in the rest.
    merged = addresses + tuple(d for d in DEFAULT_ADDRESSES if d.prefix not in prefixes)
    _check_dead_letters(addresses, merged, router_id)

    limits_table = _table(data, "limits")
    defaults = Limits()
    _only(limits_table, "limits.", set(Limits.__dataclass_fields__))
    limits = Limits(
        max_message_size=_int(limits_table, "limits.", "max_message_size", defaults.max_message_size, 1, 2**32 - 1),
        max_connections=_int(limits_table, "limits.", "max_connections", defaults.max_connections, 1, 10**7),
        max_connections_per_host=_int(limits_table, "limits.", "max_connections_per_host", defaults.max_connections_per_host, 1, 10**7),
        max_sessions_per_connection=_int(limits_table, "limits.", "max_sessions_per_connection", defaults.max_sessions_per_connection, 1, 65536),
        max_links_per_connection=_int(limits_table, "limits.", "max_links_per_connection", defaults.max_links_per_connection, 1, 2**31),
        max_frame_size=_int(limits_table, "limits.", "max_frame_size", defaults.max_frame_size, 512, 2**32 - 1),
        idle_timeout=_seconds(limits_table, "limits.", "idle_timeout", defaults.idle_timeout),
        handshake_timeout=_seconds(limits_table, "limits.", "handshake_timeout", defaults.handshake_timeout),
        frame_timeout=_bounded_seconds(limits_table, "limits.", "frame_timeout", defaults.frame_timeout, 0.01, 3600.0),
        close_timeout=_bounded_seconds(limits_table, "limits.", "close_timeout", defaults.close_timeout, 0.01, 300.0),
        min_heartbeat_interval=_bounded_seconds(
            limits_table, "limits.", "min_heartbeat_interval", defaults.min_heartbeat_interval, 0.01, 3600.0
        ),
        inter_router_idle_timeout=_bounded_seconds(
            limits_table, "limits.", "inter_router_idle_timeout", defaults.inter_router_idle_timeout, 0.1, 3600.0
        ),
        shutdown_timeout=_seconds(limits_table, "limits.", "shutdown_timeout", defaults.shutdown_timeout),
        max_memory=_bytes(limits_table, "limits.", "max_memory", defaults.max_memory, 16 * MiB),
        max_address_bytes=_bytes(limits_table, "limits.", "max_address_bytes", defaults.max_address_bytes, 64 * 1024),
        max_address_messages=_int(limits_table, "limits.", "max_address_messages", defaults.max_address_messages, 1, 10**9),
        max_link_unsettled=_int(limits_table, "limits.", "max_link_unsettled", defaults.max_link_unsettled, 1, 10**7),
        max_connection_output=_bytes(limits_table, "limits.", "max_connection_output", defaults.max_connection_output, 64 * 1024),
        frames_per_turn=_int(limits_table, "limits.", "frames_per_turn", defaults.frames_per_turn, 8, 65536),
    )
    if limits.max_address_bytes > limits.max_memory:
        raise ConfigError(
            f"limits.max_address_bytes: {limits.max_address_bytes} is more than limits.max_memory ({limits.max_memory})"
        )

    authentication = _authentication(_table(data, "authentication"), base)
    for i, listener in enumerate(listeners):
        if "PLAIN" in listener.sasl_mechanisms and authentication.credentials is None:
            raise ConfigError(f"listeners[{i}].sasl_mechanisms: PLAIN needs authentication.credentials_file")
    policy = _policy(data["policy"]) if "policy" in data else None

    level, log_format, log_levels = _logging(_table(data, "logging"))

    admin = _admin(_table(data, "admin"), base)
    for i, listener in enumerate(listeners):
        if admin.enabled and listener.port and admin.port and (listener.host, listener.port) == (admin.host, admin.port):
            raise ConfigError(f"admin.port: {admin.address} is also listeners[{i}]")

    return RouterConfig(router_id, listeners, merged, limits, level, authentication, policy, connectors, data_dir, store, admin,
                        log_format=log_format, log_levels=log_levels)


def _logging(table: dict[str, Any]) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """``[logging]``: the level, the format, and the levels of named loggers."""
    _only(table, "logging.", {"level", "format", "levels"})
    level = _string(table, "logging.", "level", "info").lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"logging.level: must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    log_format = _string(table, "logging.", "format", "text").lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"logging.format: must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    levels = table.get("levels", {})
    if not isinstance(levels, dict):
        raise ConfigError("logging.levels: must be a table of logger names and levels ([logging.levels])")
    pairs = []
    for name, value in levels.items():
        where = f'logging.levels."{name}"'
        if not _LOGGER_NAME.fullmatch(name):
            raise ConfigError(f"{where}: not a logger name (dotted, like switchboard.router.links)")
        if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
            raise ConfigError(f"{where}: must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
        pairs.append((name, value.lower()))
    return level, log_format, tuple(pairs)


def _admin(table: dict[str, Any], base: Path | None) -> AdminConfig:
    where = "admin."
    _only(table, where, {"enabled", "host", "port", "token_file"})
    host = _string(table, where, "host", AdminConfig.host)
    port = _int(table, where, "port", ADMIN_PORT, 0, 65535)
    token_file = _path(table, where, "token_file", base)
    token = _read_token(token_file) if token_file is not None else None
    enabled = _bool(table, where, "enabled", True)
    admin = AdminConfig(enabled, host, port, token_file, token, port_configured="port" in table)
    check_admin(admin, where + "host")
    return admin


def _read_token(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"admin.token_file: cannot read {path}: {exc}") from None
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        raise ConfigError(
            f"admin.token_file: the first line of {path} must be a token of at least {MIN_TOKEN_LENGTH}"
            " characters without spaces (e.g. `openssl rand -hex 32`)"
        )
    return token


def check_admin(admin: AdminConfig, where: str) -> None:
    """An admin listener beyond loopback shows the whole router to whoever reaches it:
    only with a token."""
    if admin.enabled and admin.token is None and not is_loopback(admin.host):
        raise ConfigError(
            f"{where}: the admin listener on {admin.host or 'every interface'}, which is not a loopback"
            " address, needs authentication; set admin.token_file (a file whose first line is a long"
            " random token), or keep it on 127.0.0.1"
        )


def parse_admin_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) from ``--admin``."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"--admin: expected HOST:PORT, got {value!r}")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"--admin: port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--admin: port must be 0..65535, got {port}")
    return host, port


def apply_admin(config: RouterConfig, value: str | None) -> RouterConfig:
    """Move the admin listener to ``--admin HOST:PORT`` (enabling it), keeping its token."""
    if value is None:
        return config
    host, port = parse_admin_address(value)
    admin = dataclasses.replace(config.admin, enabled=True, host=host, port=port, port_configured=True)
    check_admin(admin, f"--admin {value}")
    return dataclasses.replace(config, admin=admin)


def parse_listen(value: str) -> ListenerConfig:
    """Parse ``HOST:PORT`` (``[::1]:PORT`` for IPv6) from ``--listen``."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"--listen: expected HOST:PORT, got {value!r}")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"--listen: port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--listen: port must be 0..65535, got {port}")
    return ListenerConfig(host=host, port=port)


# -- validation helpers ------------------------------------------------------------------
def _only(table: dict[str, Any], where: str, allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where}{key}: unknown key (expected one of: {', '.join(sorted(allowed))})")


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: must be a table ([{key}])")
    return value


def _array(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{key}: must be an array of tables ([[{key}]])")
    return value


def _string(table: dict[str, Any], where: str, key: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}{key}: must be a string, got {type(value).__name__}")
    return value


def _int(table: dict[str, Any], where: str, key: str, default: int, low: int, high: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}{key}: must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{where}{key}: must be {low}..{high}, got {value}")
    return value


def _seconds(table: dict[str, Any], where: str, key: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}{key}: must be a number of seconds, got {value!r}")
    if value < 0:
        raise ConfigError(f"{where}{key}: must not be negative, got {value}")
    return float(value)


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB|)\s*$")
_UNITS = {"": 1, "B": 1, "KiB": 1024, "MiB": MiB, "GiB": 1024 * MiB, "KB": 1000, "MB": 1000**2, "GB": 1000**3}


def _bytes(table: dict[str, Any], where: str, key: str, default: int, low: int) -> int:
    """A size: an integer of bytes or a string such as "64MiB" (B, KiB, MiB, GiB, KB, MB, GB)."""
    value = table.get(key, default)
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match is None:
            raise ConfigError(f"{where}{key}: expected bytes, e.g. 1048576 or \"1MiB\", got {value!r}")
        value = int(match.group(1)) * _UNITS[match.group(2)]
    elif isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}{key}: expected bytes, e.g. 1048576 or \"1MiB\", got {value!r}")
    if not low <= value <= 2**48:
        raise ConfigError(f"{where}{key}: must be at least {low} bytes, got {value}")
    return value


def _bounded_seconds(table: dict[str, Any], where: str, key: str, default: float, low: float, high: float) -> float:
    """Seconds for a bound that cannot be turned off: a peer must never escape it."""
    value = _seconds(table, where, key, default)
    if not low <= value <= high:
        raise ConfigError(f"{where}{key}: must be {low:g}..{high:g} seconds, got {value:g}")
    return value


def _bool(table: dict[str, Any], where: str, key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}{key}: must be true or false, got {value!r}")
    return value


def _path(table: dict[str, Any], where: str, key: str, base: Path | None) -> Path | None:
    if key not in table:
        return None
    value = _string(table, where, key, "")
    path = Path(value)
    if base is not None and not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise ConfigError(f"{where}{key}: no such file: {path}")
    return path


def _listener(item: dict[str, Any], where: str, base: Path | None) -> ListenerConfig:
    _only(item, where, {
        "host", "port", "role", "sasl_mechanisms", "allow_remote_anonymous",
        "tls_cert", "tls_key", "tls_ca", "require_client_certificate", "tls_min_version",
    })
    host = _string(item, where, "host", "127.0.0.1")
    port = _int(item, where, "port", 5672, 0, 65535)
    role = _string(item, where, "role", "normal")
    if role not in ROLES:
        raise ConfigError(f"{where}role: must be one of {', '.join(ROLES)}, got {role!r}")
    mechanisms = item.get("sasl_mechanisms", ["ANONYMOUS"])
    if not isinstance(mechanisms, list) or not mechanisms or not all(isinstance(m, str) for m in mechanisms):
        raise ConfigError(f"{where}sasl_mechanisms: must be a non-empty list of strings")
    for mechanism in mechanisms:
        if mechanism.upper() not in MECHANISMS:
            raise ConfigError(f"{where}sasl_mechanisms: unsupported mechanism {mechanism!r} (supported: {', '.join(MECHANISMS)})")
    cert = _path(item, where, "tls_cert", base)
    key = _path(item, where, "tls_key", base)
    ca = _path(item, where, "tls_ca", base)
    if (key or ca) and not cert:
        raise ConfigError(f"{where}tls_cert: needed when tls_key or tls_ca is set")
    # Asking a CA to vouch for clients and then admitting those with no certificate is
    # a mistake more often than a wish: required unless switched off explicitly.
    require = _bool(item, where, "require_client_certificate", ca is not None)
    if require and ca is None:
        raise ConfigError(f"{where}require_client_certificate: needs tls_ca (the CA that signs client certificates)")
    min_version = _string(item, where, "tls_min_version", "1.2")
    if min_version not in TLS_MIN_VERSIONS:
        raise ConfigError(f"{where}tls_min_version: must be one of {', '.join(TLS_MIN_VERSIONS)}, got {min_version!r}")
    mechanisms = tuple(m.upper() for m in mechanisms)
    if "EXTERNAL" in mechanisms and ca is None:
        raise ConfigError(
            f"{where}sasl_mechanisms: EXTERNAL authenticates clients by their TLS certificate;"
            " it needs tls_cert and tls_ca on this listener"
        )
    allow_remote_anonymous = _bool(item, where, "allow_remote_anonymous", False)
    return ListenerConfig(
        host, port, role, mechanisms, cert, key, ca, require, min_version, allow_remote_anonymous,
    )


CONNECTOR_MECHANISMS = ("ANONYMOUS", "PLAIN", "EXTERNAL")


def _connector(item: dict[str, Any], where: str, base: Path | None) -> ConnectorConfig:
    _only(item, where, {
        "host", "port", "role", "cost", "tls", "tls_ca", "tls_cert", "tls_key", "server_hostname",
        "sasl_mechanism", "sasl_username", "sasl_password_file",
    })
    if "host" not in item:
        raise ConfigError(f"{where}host: required (the neighbour to connect to)")
    host = _string(item, where, "host", "")
    if not host:
        raise ConfigError(f"{where}host: must not be empty")
    port = _int(item, where, "port", 5673, 1, 65535)
    role = _string(item, where, "role", "inter-router")
    if role != "inter-router":
        raise ConfigError(f"{where}role: connectors open inter-router connections; must be \"inter-router\", got {role!r}")
    cost = _int(item, where, "cost", 1, 1, 1_000_000)
    ca = _path(item, where, "tls_ca", base)
    cert = _path(item, where, "tls_cert", base)
    key = _path(item, where, "tls_key", base)
    if key and not cert:
        raise ConfigError(f"{where}tls_cert: needed when tls_key is set")
    tls = _bool(item, where, "tls", bool(ca or cert))
    if (ca or cert) and not tls:
        raise ConfigError(f"{where}tls: TLS files are set but tls = false")
    server_hostname = _string(item, where, "server_hostname", "") or None
    mechanism = _string(item, where, "sasl_mechanism", "").upper() or None
    if mechanism is not None and mechanism not in CONNECTOR_MECHANISMS:
        raise ConfigError(f"{where}sasl_mechanism: must be one of {', '.join(CONNECTOR_MECHANISMS)}, got {mechanism!r}")
    username = _string(item, where, "sasl_username", "") or None
    password_file = _path(item, where, "sasl_password_file", base)
    if mechanism == "PLAIN" and (username is None or password_file is None):
        raise ConfigError(f"{where}sasl_mechanism: PLAIN needs sasl_username and sasl_password_file")
    if mechanism == "EXTERNAL" and cert is None:
        raise ConfigError(f"{where}sasl_mechanism: EXTERNAL needs tls_cert (the certificate that names this router)")
    if mechanism is None and username is not None:
        mechanism = "PLAIN"
    return ConnectorConfig(host, port, role, cost, tls, ca, cert, key, server_hostname, mechanism, username, password_file)


QUEUE_KEYS = {
    "message_ttl", "expiry", "max_messages", "max_bytes", "overflow", "max_delivery_attempts",
    "dead_letter_address", "host",
}


def _address(item: dict[str, Any], where: str) -> AddressConfig:
    _only(item, where, {"prefix", "distribution"} | QUEUE_KEYS)
    if "prefix" not in item:
        raise ConfigError(f"{where}prefix: required")
    prefix = _string(item, where, "prefix", "")
    distribution = _string(item, where, "distribution", "balanced")
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(f"{where}distribution: must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
    if distribution != "queue":
        for key in QUEUE_KEYS:
            if key in item:
                raise ConfigError(f"{where}{key}: only for distribution = \"queue\" (this prefix is {distribution})")
        return AddressConfig(prefix, distribution)
    if not prefix:
        raise ConfigError(f"{where}prefix: a queue prefix must not be empty (every address would be a queue)")
    defaults = QueueSettings()
    ttl = _seconds(item, where, "message_ttl", 0.0)
    expiry = _seconds(item, where, "expiry", 0.0)
    overflow = _string(item, where, "overflow", defaults.overflow)
    if overflow not in OVERFLOW_POLICIES:
        raise ConfigError(f"{where}overflow: must be one of {', '.join(OVERFLOW_POLICIES)}, got {overflow!r}")
    dead_letter = _string(item, where, "dead_letter_address", "") or None
    host = _string(item, where, "host", "") or None
    settings = QueueSettings(
        message_ttl=ttl or None,
        expiry=expiry or None,
        max_messages=_int(item, where, "max_messages", defaults.max_messages, 1, 10**9),
        max_bytes=_bytes(item, where, "max_bytes", defaults.max_bytes, 1024),
        overflow=overflow,
        max_delivery_attempts=_int(item, where, "max_delivery_attempts", defaults.max_delivery_attempts, 0, 10**6),
        dead_letter_address=dead_letter,
        host=host,
    )
    return AddressConfig(prefix, distribution, settings)


def _check_dead_letters(configured: tuple[AddressConfig, ...], merged: tuple[AddressConfig, ...], router_id: str) -> None:
    """A dead-letter address must be a queue this router hosts: messages move there in one
    transaction of the store, so none is lost or doubled on the way."""
    ordered = sorted(merged, key=lambda a: len(a.prefix), reverse=True)
    for i, entry in enumerate(configured):
        settings = entry.queue
        if settings is None or settings.dead_letter_address is None:
            continue
        target = next(a for a in ordered if settings.dead_letter_address.startswith(a.prefix))
        local = target.queue is not None and target.queue.host in (None, router_id)
        here = settings.host in (None, router_id)
        if here and not local:
            raise ConfigError(
                f"addresses[{i}].dead_letter_address: {settings.dead_letter_address!r} must be under a queue"
                " prefix this router hosts (distribution = \"queue\")"
            )


def _store(table: dict[str, Any]) -> StoreConfig:
    where = "store."
    defaults = StoreConfig()
    _only(table, where, set(StoreConfig.__dataclass_fields__))
    backend = _string(table, where, "backend", defaults.backend)
    if backend not in STORE_BACKENDS:
        raise ConfigError(f"{where}backend: must be one of {', '.join(STORE_BACKENDS)}, got {backend!r}")
    fsync = _string(table, where, "fsync", defaults.fsync)
    if fsync not in FSYNC_POLICIES:
        raise ConfigError(f"{where}fsync: must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
    dsn = _string(table, where, "dsn", "") or None
    if backend == "postgres" and dsn is None:
        raise ConfigError(f"{where}dsn: required for backend = \"postgres\" (postgresql://user@host:5432/database)")
    if backend == "sqlite" and dsn is not None:
        raise ConfigError(f"{where}dsn: only for backend = \"postgres\" (SQLite keeps its file under router.data_dir)")
    lease = _bounded_seconds(table, where, "lease_seconds", defaults.lease_seconds, 1.0, 3600.0)
    return StoreConfig(backend, fsync, dsn, lease)


# -- authentication and policy -----------------------------------------------------------
def _authentication(table: dict[str, Any], base: Path | None) -> AuthenticationConfig:
    where = "authentication."
    defaults = AuthenticationConfig()
    _only(table, where, set(AuthenticationConfig.__dataclass_fields__) - {"credentials"})
    path = _path(table, where, "credentials_file", base)
    credentials = None
    if path is not None:
        try:
            credentials = Credentials.load(path)
        except CredentialsError as exc:
            raise ConfigError(f"{where}credentials_file: {exc}") from None
    return AuthenticationConfig(
        credentials_file=path,
        credentials=credentials,
        verify_threads=_int(table, where, "verify_threads", defaults.verify_threads, 1, 64),
        max_pending_logins=_int(table, where, "max_pending_logins", defaults.max_pending_logins, 1, 100_000),
        max_failed_logins=_int(table, where, "max_failed_logins", defaults.max_failed_logins, 1, 1_000_000),
        failure_window=_seconds(table, where, "failure_window", defaults.failure_window),
        block_period=_seconds(table, where, "block_period", defaults.block_period),
        max_tracked_hosts=_int(table, where, "max_tracked_hosts", defaults.max_tracked_hosts, 1, 10**7),
    )


def _policy(table: Any) -> PolicyConfig:
    if not isinstance(table, dict):
        raise ConfigError("policy: must be a table ([policy])")
    _only(table, "policy.", {"groups", "anonymous_group", "default_group"})
    groups_table = table.get("groups", {})
    if not isinstance(groups_table, dict) or not all(isinstance(g, dict) for g in groups_table.values()):
        raise ConfigError("policy.groups: must be tables, one per group ([policy.groups.NAME])")
    groups = tuple(_group(name, item) for name, item in groups_table.items())
    member_of: dict[str, str] = {}
    for group in groups:
        for user in group.users:
            if user in member_of:
                raise ConfigError(
                    f"policy.groups.{group.name}.users: {user!r} is already in group {member_of[user]!r}"
                    " (a user belongs to one group)"
                )
            member_of[user] = group.name
    names = {group.name for group in groups}
    chosen = {}
    for key in ("anonymous_group", "default_group"):
        if key in table:
            value = _string(table, "policy.", key, "")
            if value not in names:
                raise ConfigError(f"policy.{key}: no group {value!r} in [policy.groups]")
            chosen[key] = value
    return PolicyConfig(groups, chosen.get("anonymous_group"), chosen.get("default_group"))


def _group(name: str, item: dict[str, Any]) -> GroupConfig:
    where = f"policy.groups.{name}."
    _only(item, where, set(GroupConfig.__dataclass_fields__) - {"name"})
    users = _strings(item, where, "users")
    for user in users:
        if user in RESERVED_NAMES:
            raise ConfigError(f"{where}users: {user!r} is not a user; put anonymous clients in a group with policy.anonymous_group")
    limits = {}
    for key in ("max_connections", "max_connections_per_user"):
        if key in item:
            limits[key] = _int(item, where, key, 0, 0, 10**7)
    return GroupConfig(
        name=name,
        users=users,
        send=tuple(_pattern(where, "send", p) for p in _strings(item, where, "send")),
        receive=tuple(_pattern(where, "receive", p) for p in _strings(item, where, "receive")),
        dynamic=_bool(item, where, "dynamic", False),
        send_multicast=_bool(item, where, "send_multicast", False),
        receive_multicast=_bool(item, where, "receive_multicast", False),
        **limits,
    )


def _pattern(where: str, key: str, pattern: str) -> str:
    if not pattern:
        raise ConfigError(f"{where}{key}: an empty pattern matches nothing; use \"*\" for every address")
    if "*" in pattern[:-1]:
        raise ConfigError(f"{where}{key}: {pattern!r}: '*' may only end a pattern (a prefix match)")
    return pattern


def _strings(table: dict[str, Any], where: str, key: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}{key}: must be a list of strings")
    return tuple(value)


# -- listener security -------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals; any other name or address (and
    the empty host, every interface) may be reachable from elsewhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_anonymous(listener: ListenerConfig, where: str, flag_hint: bool = False) -> None:
    """ANONYMOUS beyond loopback lets anyone who can reach the port in: only by choice."""
    if "ANONYMOUS" not in listener.sasl_mechanisms or listener.allow_remote_anonymous:
        return
    if is_loopback(listener.host):
        return
    how = "set allow_remote_anonymous = true on that listener"
    if flag_hint:
        how += " or pass --allow-remote-anonymous"
    raise ConfigError(
        f"{where}.sasl_mechanisms: ANONYMOUS on {listener.host or 'every interface'}, which is not"
        f" a loopback address, would admit anyone who can reach it; {how} if that is"
        " intended, or offer PLAIN or EXTERNAL instead"
    )


def apply_listen(config: RouterConfig, values: tuple[str, ...], allow_remote_anonymous: bool = False) -> RouterConfig:
    """Move the configured client listener to the ``--listen`` addresses, keeping its
    security (SASL mechanisms, TLS files and settings).

    There must be exactly one client (``normal``) listener for ``--listen`` to stand for;
    several ``--listen`` give that listener several addresses.  Inter-router listeners
    are kept as configured.  ``allow_remote_anonymous`` (``--allow-remote-anonymous``)
    opts the moved listener in to ANONYMOUS beyond loopback.
    """
    if not values:
        if allow_remote_anonymous:
            raise ConfigError(
                "--allow-remote-anonymous: applies to listeners given with --listen;"
                " in the configuration file, set allow_remote_anonymous = true on the listener"
            )
        return config
    addresses = [parse_listen(value) for value in values]
    clients = [(i, l) for i, l in enumerate(config.listeners) if l.role == "normal"]
    if len(clients) != 1:
        found = ", ".join(f"listeners[{i}] {l.host}:{l.port}" for i, l in clients) or "none"
        raise ConfigError(
            f"--listen: stands for the configuration's one client listener (role = \"normal\"),"
            f" but it has {len(clients)} ({found}); set the addresses in the configuration file"
            " instead of using --listen"
        )
    index, configured = clients[0]
    moved = []
    for value, address in zip(values, addresses, strict=True):
        listener = dataclasses.replace(
            configured,
            host=address.host,
            port=address.port,
            allow_remote_anonymous=configured.allow_remote_anonymous or allow_remote_anonymous,
        )
        check_anonymous(listener, f"--listen {value} (standing for listeners[{index}])", flag_hint=True)
        moved.append(listener)
    listeners = config.listeners[:index] + tuple(moved) + config.listeners[index + 1:]
    return dataclasses.replace(config, listeners=listeners)
