"""Finding the endpoint method for a request (oslo.messaging's rules), and describing
what it raised for the caller."""

from __future__ import annotations

import json
import traceback as tb
from typing import Any, Callable, Sequence

from .errors import NoSuchMethod, UnsupportedVersion
from .target import Target
from .wire import Failure

__all__ = ["version_is_compatible", "find_method", "failure_from"]

DEFAULT_VERSION = "1.0"


def _parse(version: str) -> tuple[int, int, int]:
    parts = version.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"a version is MAJOR.MINOR[.REVISION], not {version!r}")
    numbers = [int(p) for p in parts] + [0] * (3 - len(parts))
    return numbers[0], numbers[1], numbers[2]


def version_is_compatible(served: str, requested: str) -> bool:
    """An endpoint at ``served`` can answer a request for ``requested``: the same major
    version, and a minor (then revision) at least the request's."""
    try:
        have, want = _parse(served), _parse(requested)
    except ValueError:
        return False
    return have[0] == want[0] and have[1:] >= want[1:]


def find_method(endpoints: Sequence[Any], method: str, namespace: str | None,
                version: str | None) -> Callable[..., Any]:
    """The bound method that serves the request, or ``NoSuchMethod`` /
    ``UnsupportedVersion`` saying why none does."""
    requested = version or DEFAULT_VERSION
    namespaces: set[str | None] = set()
    versions: list[str] = []
    compatible = False
    for endpoint in endpoints:
        target = getattr(endpoint, "target", None)
        served_namespace = target.namespace if isinstance(target, Target) else None
        served_version = (target.version if isinstance(target, Target) else None) or DEFAULT_VERSION
        namespaces.add(served_namespace)
        if served_namespace != namespace:
            continue
        versions.append(served_version)
        if not version_is_compatible(served_version, requested):
            continue
        compatible = True
        if not method.startswith("_"):
            function = getattr(endpoint, method, None)
            if callable(function):
                return function
    if compatible:
        raise NoSuchMethod(method)
    if not versions:
        served = ", ".join(sorted(repr(n) for n in namespaces)) or "none"
        raise UnsupportedVersion(version, method, f"no endpoint serves namespace {namespace!r} (served: {served})")
    raise UnsupportedVersion(version, method, f"namespace {namespace!r} is served at version(s) {', '.join(versions)}")


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def failure_from(exc: BaseException) -> Failure:
    """What the caller is told of an exception the method raised."""
    cls = type(exc)
    lines = tb.format_exception(cls, exc, exc.__traceback__)
    return Failure(
        exc_type=cls.__name__,
        module=cls.__module__,
        message=str(exc),
        args=[_json_safe(arg) for arg in exc.args],
        traceback=[line.rstrip("\n") for line in lines],
    )
