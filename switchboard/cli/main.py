"""The ``switchboard`` command: ``router``, ``send``, ``receive``, ``user``, ``stat``, ``network``,
``queues``, ``reload``."""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from collections import Counter
from typing import Any

import click

from .. import build_kind
from ..amqp.message import Message
from ..amqp.spec import Accepted, Modified, Rejected, Released
from ..client import (
    Client,
    ClientError,
    ClientEvent,
    ConnectAttemptFailed,
    Connected,
    ConnectionLost,
    GaveUp,
    OutcomeUnknown,
    Reconnect,
    RoundFailed,
    parse_url,
)
from ..io.loop import run
from ..io.tls import client_context

OUTCOME_NAMES = {Accepted: "accepted", Rejected: "rejected", Released: "released", Modified: "modified"}


@click.group()
@click.version_option(package_name="switchboard", message=f"%(prog)s, version %(version)s, {build_kind()}")
def main() -> None:
    """Switchboard: AMQP 1.0 routers, durable queues and RPC for cloud control planes."""


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML configuration file.")
@click.option(
    "--listen", "listens", multiple=True, metavar="HOST:PORT",
    help="Move the configured client listener here, keeping its SASL and TLS (repeatable: several addresses).",
)
@click.option(
    "--allow-remote-anonymous", is_flag=True,
    help="Let a --listen listener that offers ANONYMOUS listen on a non-loopback address.",
)
@click.option(
    "--data-dir", type=click.Path(file_okay=False), help="Where queues are kept (overrides [router] data_dir).",
)
@click.option(
    "--admin", "admin", metavar="HOST:PORT",
    help="The admin listener (JSON views, /metrics, /healthz, /readyz) here; overrides [admin] host and port.",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Overrides [logging] level.")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Overrides [logging] format.")
def router(config_path: str | None, listens: tuple[str, ...], allow_remote_anonymous: bool, data_dir: str | None,
           admin: str | None, log_level: str | None, log_format: str | None) -> None:
    """Run a router (127.0.0.1:5672 with the embedded defaults).

    SIGHUP reloads the configuration file (and TLS files): see `switchboard reload`."""
    import dataclasses
    from pathlib import Path

    from ..router.config import ConfigError, RouterConfig, apply_admin, apply_listen, load_config
    from ..router.logs import configure_logging
    from ..router.server import run_router

    def load() -> RouterConfig:
        """The file, with this command line's overrides (read again at each reload)."""
        config = load_config(config_path) if config_path else RouterConfig()
        config = apply_listen(config, listens, allow_remote_anonymous)
        config = apply_admin(config, admin)
        if data_dir is not None:
            config = dataclasses.replace(config, data_dir=Path(data_dir))
        if log_level is not None:
            config = dataclasses.replace(config, log_level=log_level)
        if log_format is not None:
            config = dataclasses.replace(config, log_format=log_format)
        return config

    try:
        config = load()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    configure_logging(config.log_level, config.log_format, config.log_levels, config.router_id)
    try:
        run(lambda: run_router(config, load if config_path else None))
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None


def _address_of(url: str) -> str:
    try:
        target = parse_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None
    if not target.address:
        raise click.BadParameter("the URL must end with /ADDRESS", param_hint="URL")
    return target.address


def _failover_options(command: Any) -> Any:
    """--reconnect/--no-reconnect and --reconnect-timeout, shared by send and receive."""
    command = click.option(
        "--reconnect-timeout", default=60.0, show_default=True, type=click.FloatRange(min=0),
        help="Seconds to keep trying the routers after a connection is lost (0: for ever).",
    )(command)
    return click.option(
        "--reconnect/--no-reconnect", default=None,
        help="Fail over to the next router (and back) when the connection is lost."
        "  [default: on when the URL lists several routers]",
    )(command)


def _reconnect_policy(reconnect: bool | None, url: str, timeout: float) -> Reconnect | None:
    if reconnect is None:
        reconnect = len(parse_url(url).routers) > 1
    return Reconnect(timeout=timeout or None) if reconnect else None


def _report_failover(event: ClientEvent) -> None:
    """Say on stderr what the client does about lost routers (the first connect is quiet)."""
    if isinstance(event, ConnectAttemptFailed):
        click.echo(f"cannot connect to {event.router}: {event.error}", err=True)
    elif isinstance(event, RoundFailed):
        click.echo(f"no router answered; trying again in {event.delay:.1f} s", err=True)
    elif isinstance(event, ConnectionLost):
        condition = f"{event.error.condition}: {event.error.description}" if event.error is not None else "lost"
        click.echo(
            f"connection to {event.router} lost ({condition}); {event.outcome_unknown} outcomes unknown,"
            f" {event.resending} messages to resend",
            err=True,
        )
    elif isinstance(event, Connected) and event.reconnected:
        click.echo(f"failed over to {event.router}", err=True)
    elif isinstance(event, GaveUp):
        click.echo(f"giving up: {event.error}", err=True)


def _tls_options(command: Any) -> Any:
    """--ca-file, --cert-file and --key-file, shared by send and receive."""
    file = click.Path(exists=True, dir_okay=False)
    command = click.option("--key-file", type=file, help="Private key of --cert-file (if not in it).")(command)
    command = click.option("--cert-file", type=file, help="Client certificate to present (amqps://); SASL EXTERNAL unless the URL has a password.")(command)
    return click.option("--ca-file", type=file, help="CA certificates to trust (amqps://).")(command)


@main.command()
@click.argument("url")
@click.option("--count", "-c", default=1, show_default=True, type=click.IntRange(min=1), help="Messages to send.")
@click.option("--size", type=click.IntRange(min=0), help="Body of SIZE bytes (instead of --body).")
@click.option("--body", default="Hello, Switchboard", show_default=True, help="Body text.")
@click.option("--presettled", is_flag=True, help="Send presettled (at most once, no outcomes).")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for credit and outcomes.")
@_failover_options
@_tls_options
def send(
    url: str, count: int, size: int | None, body: str, presettled: bool, timeout: float,
    reconnect: bool | None, reconnect_timeout: float,
    ca_file: str | None, cert_file: str | None, key_file: str | None,
) -> None:
    """Send messages to amqp[s]://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/ADDRESS and print
    their outcomes.

    With several routers the client fails over to the next when its router is lost.
    Messages written to a lost router before it settled them are counted as "outcome
    unknown" (they may have been delivered) and are not sent again; the exit status is
    then non-zero, as for any outcome other than accepted.

    With --cert-file and no PASSWORD in the URL, the client authenticates with SASL
    EXTERNAL as the user its certificate names (a USER alone must be that user)."""
    address = _address_of(url)
    tls = _ssl_context(url, ca_file, cert_file, key_file)
    payload = b"x" * size if size is not None else body.encode()
    policy = _reconnect_policy(reconnect, url, reconnect_timeout)
    try:
        outcomes, elapsed = run(lambda: _send(url, address, count, payload, presettled, timeout, tls, cert_file is not None, policy))
    except TimeoutError:
        raise click.ClickException(
            f"timed out after {timeout:g} s waiting for credit or outcomes:"
            f" is anything consuming {address!r}?"
        ) from None
    except (ClientError, OSError) as exc:
        raise click.ClickException(_failure(exc)) from None
    rate = count / elapsed if elapsed > 0 else float("inf")
    summary = ", ".join(f"{outcomes.get(name, 0)} {name}" for name in ("accepted", "rejected", "released", "modified"))
    if outcomes.get("unknown"):
        summary += f", {outcomes['unknown']} outcome unknown (connection lost in flight: maybe delivered)"
    if outcomes.get("failed"):
        summary += f", {outcomes['failed']} failed (not delivered)"
    if presettled:
        summary = f"{count} sent presettled (no outcomes)"
    click.echo(f"{summary}; {count} messages in {elapsed:.3f} s ({rate:,.0f} msg/s)")
    if not presettled and outcomes.get("accepted", 0) != count:
        sys.exit(1)


async def _send(
    url: str, address: str, count: int, payload: bytes, presettled: bool, timeout: float,
    tls: ssl.SSLContext | None, has_certificate: bool, policy: Reconnect | None,
) -> tuple[Counter, float]:
    message = Message(payload).encode()
    outcomes: Counter = Counter()
    mechanism = _mechanism(url, has_certificate)
    async with await Client.connect(
        url, timeout=timeout, ssl_context=tls, sasl_mechanism=mechanism, reconnect=policy, on_event=_report_failover,
    ) as client:
        sender = await client.sender(address, presettled=presettled)
        started = time.perf_counter()
        pending: list[Any] = []
        async with asyncio.timeout(timeout + count / 1000):
            for _ in range(count):
                future = await sender.send(message, wait=False)
                if future is not None:
                    pending.append(future)
            for state in await asyncio.gather(*pending, return_exceptions=True):
                if isinstance(state, OutcomeUnknown):
                    outcomes["unknown"] += 1
                elif isinstance(state, BaseException):
                    outcomes["failed"] += 1
                else:
                    outcomes[OUTCOME_NAMES.get(type(state), "unknown")] += 1
        elapsed = time.perf_counter() - started
    return outcomes, elapsed


@main.command()
@click.argument("url")
@click.option("--count", "-c", default=0, show_default=True, type=click.IntRange(min=0), help="Stop after N messages (0: never).")
@click.option("--credit", default=100, show_default=True, type=click.IntRange(min=1), help="Prefetch window.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the count and rate.")
@click.option("--timeout", default=0.0, show_default=True, help="Stop after this many idle seconds (0: never).")
@_failover_options
@_tls_options
def receive(
    url: str, count: int, credit: int, quiet: bool, timeout: float,
    reconnect: bool | None, reconnect_timeout: float,
    ca_file: str | None, cert_file: str | None, key_file: str | None,
) -> None:
    """Receive messages from amqp[s]://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/ADDRESS,
    accepting each.

    With several routers the receiver fails over to the next when its router is lost,
    and goes on receiving there.

    With --cert-file and no PASSWORD in the URL, the client authenticates with SASL
    EXTERNAL as the user its certificate names (a USER alone must be that user)."""
    address = _address_of(url)
    tls = _ssl_context(url, ca_file, cert_file, key_file)
    mechanism = _mechanism(url, cert_file is not None)
    policy = _reconnect_policy(reconnect, url, reconnect_timeout)
    try:
        received, elapsed = run(lambda: _receive(url, address, count, credit, quiet, timeout or None, tls, mechanism, policy))
    except (ClientError, OSError) as exc:
        raise click.ClickException(_failure(exc)) from None
    rate = received / elapsed if elapsed > 0 else 0.0
    click.echo(f"received {received} messages in {elapsed:.3f} s ({rate:,.0f} msg/s)", err=not quiet)


async def _receive(
    url: str, address: str, count: int, credit: int, quiet: bool, idle: float | None,
    tls: ssl.SSLContext | None, mechanism: str | None, policy: Reconnect | None,
) -> tuple[int, float]:
    received = 0
    started: float | None = None
    async with await Client.connect(
        url, ssl_context=tls, sasl_mechanism=mechanism, reconnect=policy, on_event=_report_failover,
    ) as client:
        receiver = await client.receiver(address, credit=credit)
        while count == 0 or received < count:
            try:
                item = await receiver.receive(timeout=idle)
            except TimeoutError:
                break
            if started is None:
                started = time.perf_counter()
            try:
                item.accept()
            except ClientError as exc:
                # Taken from a router that is gone: it returns the message to its sender
                # (or a queue delivers it again), so it is not counted here.
                click.echo(f"not accepted: {exc}", err=True)
                continue
            received += 1
            if not quiet:
                try:
                    body = item.message().body
                except Exception:
                    body = item.payload
                if isinstance(body, (bytes, bytearray)):
                    body = bytes(body).decode("utf-8", "replace")
                click.echo(body)
    elapsed = time.perf_counter() - started if started is not None else 0.0
    return received, elapsed


def _ssl_context(url: str, ca_file: str | None, cert_file: str | None = None, key_file: str | None = None) -> ssl.SSLContext | None:
    """For amqps://, trust --ca-file (or the system's CAs) and present --cert-file."""
    if not url.startswith("amqps:"):
        if cert_file or key_file:
            raise click.BadParameter("a client certificate needs an amqps:// URL", param_hint="--cert-file")
        return None
    if key_file and not cert_file:
        raise click.BadParameter("--key-file needs --cert-file", param_hint="--key-file")
    if ca_file is None and cert_file is None:
        return None
    try:
        return client_context(cafile=ca_file, certfile=cert_file, keyfile=key_file)
    except (ssl.SSLError, OSError) as exc:
        raise click.ClickException(f"cannot use the TLS files: {exc}") from None


def _mechanism(url: str, has_certificate: bool) -> str | None:
    """EXTERNAL when the client has a certificate and no password; else the default."""
    if has_certificate and parse_url(url).password is None:
        return "EXTERNAL"
    return None


def _failure(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the peer"
    return f"cannot connect: {exc}"


# ======================================================================================
# switchboard user: the credentials file
# ======================================================================================
_credentials_file = click.option(
    "--file", "-f", "path", required=True, type=click.Path(dir_okay=False),
    help="The credentials file (the router's authentication.credentials_file).",
)


@main.group()
def user() -> None:
    """Manage SASL PLAIN users: a credentials file of salted scrypt hashes (mode 0600)."""


@user.command("add")
@click.argument("name")
@_credentials_file
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input (for scripts).")
@click.option("--scrypt-n", type=int, default=None, help="scrypt cost N, a power of two (default 16384); raise it as machines get faster.")
def user_add(name: str, path: str, password_stdin: bool, scrypt_n: int | None) -> None:
    """Add user NAME, or give it a new password (the file is created if missing)."""
    from ..router.credentials import DEFAULT_N, CredentialsError, check_name

    try:
        check_name(name)
    except CredentialsError as exc:
        raise click.ClickException(str(exc)) from None
    credentials = _load_credentials(path, missing_ok=True)
    if password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise click.ClickException("--password-stdin: nothing on standard input")
        password = line.rstrip("\r\n")
    else:
        password = click.prompt(f"Password for {name}", hide_input=True, confirmation_prompt="Repeat the password")
    try:
        existed = credentials.set_password(name, password, n=scrypt_n or DEFAULT_N)
        credentials.save(path)
    except CredentialsError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None
    click.echo(f"{'changed the password of' if existed else 'added'} {name} in {path}")


@user.command("del")
@click.argument("name")
@_credentials_file
def user_del(name: str, path: str) -> None:
    """Remove user NAME."""
    from ..router.credentials import CredentialsError

    credentials = _load_credentials(path, missing_ok=False)
    try:
        credentials.remove(name)
        credentials.save(path)
    except CredentialsError as exc:
        raise click.ClickException(f"{exc} in {path}") from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None
    click.echo(f"removed {name} from {path}")


@user.command("list")
@_credentials_file
def user_list(path: str) -> None:
    """List the users and the hash parameters of each (never the hashes)."""
    credentials = _load_credentials(path, missing_ok=False)
    for name in credentials.names():
        entry = credentials.entry(name)
        assert entry is not None
        click.echo(f"{name}\t{entry.parameters}")


def _load_credentials(path: str, missing_ok: bool) -> Any:
    from pathlib import Path

    from ..router.credentials import Credentials, CredentialsError

    if not Path(path).exists():
        if missing_ok:
            return Credentials()
        raise click.ClickException(f"no credentials file {path} (`switchboard user add NAME --file {path}` creates it)")
    try:
        return Credentials.load(path)
    except CredentialsError as exc:
        raise click.ClickException(str(exc)) from None


_router_option = click.option("--router", "url", default="amqp://127.0.0.1:5672", show_default=True,
                              help="The router to connect to (amqp[s]://[USER:PASSWORD@]HOST:PORT).")
_at_option = click.option("--at", "at", metavar="ROUTER_ID",
                          help="Ask router ROUTER_ID of the network, through the router connected to.")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print the router's answer as JSON (raw values).")
_timeout_option = click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the answer.")


@main.command()
@_router_option
@_at_option
@_json_option
@_timeout_option
@_tls_options
def network(url: str, at: str | None, as_json: bool, timeout: float, ca_file: str | None, cert_file: str | None,
            key_file: str | None) -> None:
    """Show the router network as one router sees it: routers, links, costs, next hops."""
    _print_view("network", _management_request(url, at, timeout, ca_file, cert_file, key_file, "QUERY", "network"),
                as_json)


@main.group()
def stat() -> None:
    """What a router is doing: its connections, links, addresses, queues, network.

    Any router of the network can be asked through the one connected to (--at).
    Tables are for people (bytes and ages in readable units); --json prints the
    router's answer as it is, for scripts.
    """


def _stat_command(what: str, summary: str) -> None:
    @stat.command(what, help=summary)
    @_router_option
    @_at_option
    @_json_option
    @_timeout_option
    @_tls_options
    def command(url: str, at: str | None, as_json: bool, timeout: float, ca_file: str | None,
                cert_file: str | None, key_file: str | None) -> None:
        _print_view(what, _management_request(url, at, timeout, ca_file, cert_file, key_file, "QUERY", what), as_json)


for _what, _summary in (
    ("connections", "Connections: peer, role, user, container (or router), TLS, age, bytes in and out, links."),
    ("links", "Links: connection, direction, address, credit, unsettled, delivered, backlog, blocked senders."),
    ("addresses", "Addresses in use: distribution, consumers, senders, routers with consumers, messages held."),
    ("queues", "Queues hosted: depth, bytes, unacked, consumers, senders, age of the oldest message, state."),
    ("network", "The network as the router sees it: routers, reachability, costs, next hops, neighbours."),
):
    _stat_command(_what, _summary)


def _print_view(what: str, view: Any, as_json: bool) -> None:
    import json

    if as_json:
        click.echo(json.dumps(view, indent=2, sort_keys=True, default=str))
        return
    from .tables import TABLES

    click.echo(TABLES[what](view))


async def _management(url: str, timeout: float, tls: ssl.SSLContext | None, mechanism: str | None,
                      operation: str, what: str, name: str | None = None, at: str | None = None) -> Any:
    """Send one request to the router's ``$management`` (router ``at``'s, with ``at``) and
    return the answer's body."""
    from ..router.management import management_address, query

    async with asyncio.timeout(timeout):
        async with await Client.connect(url, ssl_context=tls, sasl_mechanism=mechanism) as client:
            replies = await client.receiver(None, dynamic=True, credit=1)
            requests = await client.sender(management_address(at))
            reply_to = replies.address
            outcome = await requests.send(query(operation, what, reply_to=reply_to, message_id=f"{what}-1", name=name,
                                                router=at))
            if isinstance(outcome, Rejected):
                error = outcome.error
                raise ClientError(error.description if error is not None and error.description else "request rejected")
            if not isinstance(outcome, Accepted):
                raise ClientError(f"the router did not take the request ({OUTCOME_NAMES.get(type(outcome), outcome)})")
            answer = await replies.receive()
            answer.accept()
            message = answer.message()
    status = (message.application_properties or {}).get("status-code")
    if status != 200:
        description = (message.application_properties or {}).get("status-description")
        raise ClientError(f"the router answered {status}: {description}")
    return message.body


def _management_request(url: str, at: str | None, timeout: float, ca_file: str | None, cert_file: str | None,
                        key_file: str | None, operation: str, what: str, name: str | None = None) -> Any:
    """``_management`` for a command: its failures as messages for the operator."""
    tls = _ssl_context(url, ca_file, cert_file, key_file)
    try:
        return run(lambda: _management(url, timeout, tls, _mechanism(url, cert_file is not None), operation, what,
                                       name, at))
    except TimeoutError:
        asked = f"router {at!r} (through {url})" if at is not None else url
        raise click.ClickException(f"no answer from {asked} within {timeout:g} s") from None
    except (ClientError, OSError) as exc:
        raise click.ClickException(_failure(exc)) from None


@main.group()
def queues() -> None:
    """See and manage the queues a router hosts: list, purge, delete."""


@queues.command("list")
@_router_option
@_at_option
@_json_option
@_timeout_option
@_tls_options
def queues_list(url: str, at: str | None, as_json: bool, timeout: float, ca_file: str | None, cert_file: str | None,
                key_file: str | None) -> None:
    """The router's queues: depth, bytes, consumers, age of the oldest message (as `stat queues`)."""
    _print_view("queues", _management_request(url, at, timeout, ca_file, cert_file, key_file, "QUERY", "queues"),
                as_json)


@queues.command("purge")
@click.argument("name")
@_router_option
@_at_option
@_timeout_option
@_tls_options
def queues_purge(name: str, url: str, at: str | None, timeout: float, ca_file: str | None, cert_file: str | None,
                 key_file: str | None) -> None:
    """Remove every message of queue NAME (the queue stays)."""
    answer = _management_request(url, at, timeout, ca_file, cert_file, key_file, "PURGE", "queue", name)
    click.echo(f"queue {name}: {answer['removed']} messages removed")


@queues.command("delete")
@click.argument("name")
@_router_option
@_at_option
@_timeout_option
@_tls_options
def queues_delete(name: str, url: str, at: str | None, timeout: float, ca_file: str | None, cert_file: str | None,
                  key_file: str | None) -> None:
    """Remove queue NAME and its messages."""
    answer = _management_request(url, at, timeout, ca_file, cert_file, key_file, "DELETE", "queue", name)
    click.echo(f"queue {name} deleted ({answer['removed']} messages)")


@main.command()
@_router_option
@_at_option
@_timeout_option
@_tls_options
def reload(url: str, at: str | None, timeout: float, ca_file: str | None, cert_file: str | None,
           key_file: str | None) -> None:
    """Make a router read its configuration file again (as SIGHUP does).

    The file is applied entirely or not at all: a change that needs a restart, or a
    mistake, is refused with its key and the running configuration kept.  Each router of a
    network reads its own file: reload each."""
    answer = _management_request(url, at, timeout, ca_file, cert_file, key_file, "RELOAD", "config")
    changes = answer.get("changes") or []
    for line in changes:
        click.echo(f"changed: {line}")
    for line in answer.get("kept") or []:
        click.echo(f"kept: {line}")
    for line in answer.get("tls") or []:
        click.echo(f"tls: {line}")
    if answer.get("note"):
        click.echo(answer["note"])
    elif not changes:
        click.echo("no changes")

