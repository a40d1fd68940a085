"""Build: the hot modules compiled with mypyc, or the pure-Python package.

The metadata lives in pyproject.toml; this file only chooses the extension modules.
``docs/building.md`` explains the two builds and the switch between them.

- Set ``SWITCHBOARD_PURE_PYTHON=1`` at install time for the pure-Python build.
- Without a C compiler, or when mypyc or the compiler fails, the install goes on with the
  pure-Python build and says so: the compiled modules are the same source, only faster.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import sysconfig

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The modules on the per-message path: the engine's state machines and codec, and the
# router's forwarding core.  Everything else stays interpreted.
COMPILED_MODULES = [
    "switchboard/amqp/codec.py",
    "switchboard/amqp/framing.py",
    "switchboard/amqp/fastpath.py",
    "switchboard/amqp/delivery.py",
    "switchboard/amqp/link.py",
    "switchboard/amqp/session.py",
    "switchboard/amqp/connection.py",
    "switchboard/amqp/message.py",
    "switchboard/amqp/events.py",
    "switchboard/router/core.py",
    "switchboard/router/forwarders.py",
    "switchboard/router/credit.py",
    "switchboard/router/links.py",
    "switchboard/router/addresses.py",
    "switchboard/router/traffic.py",
    "switchboard/router/memory.py",
    "switchboard/router/interrouter.py",
]

PURE_ENV = "SWITCHBOARD_PURE_PYTHON"
# mypyc puts the compiled code in one shared library, a top-level module of this name;
# each compiled module is a small extension module beside its .py that loads it.
GROUP_NAME = "switchboard"
HERE = os.path.dirname(os.path.abspath(__file__))


def _say(text: str) -> None:
    # pip shows a build's output only with -v or on failure; stderr is the best we can do.
    print(f"switchboard: {text}", file=sys.stderr)


def _compiler_found() -> bool:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shutil.which(cc.split()[0]) is not None


def _remove_compiled_artefacts() -> None:
    """Remove extension modules an earlier compiled build left in the source tree (where an
    editable install imports them from) or in build/ (which a wheel is made from): an
    extension module beside its .py is imported in its place."""
    roots = [HERE, *glob.glob(os.path.join(HERE, "build", "lib*"))]
    for root in roots:
        stale = glob.glob(os.path.join(root, f"{GROUP_NAME}__mypyc.*"))
        for module in COMPILED_MODULES:
            stale += glob.glob(os.path.join(root, module[: -len(".py")] + ".*.so"))
            stale += glob.glob(os.path.join(root, module[: -len(".py")] + ".*.pyd"))
        for path in stale:
            os.remove(path)


def _pure_python(reason: str) -> list:
    _say(f"{reason}: building the pure-Python package (slower, same behaviour)")
    _remove_compiled_artefacts()
    return []


def _extension_modules() -> list:
    if os.environ.get(PURE_ENV, "").strip() not in ("", "0"):
        return _pure_python(f"{PURE_ENV} is set")
    if not _compiler_found():
        return _pure_python("no C compiler found")
    try:
        from mypyc.build import mypycify
    except ImportError as error:
        return _pure_python(f"mypyc is not available ({error})")
    try:
        return mypycify(COMPILED_MODULES, opt_level="3", group_name=GROUP_NAME)
    except (Exception, SystemExit) as error:  # mypyc exits on a type error
        return _pure_python(f"mypyc could not compile the hot modules ({error!r})")


class OptionalBuildExt(build_ext):
    """Build the compiled modules if the C compiler can; otherwise keep the pure-Python ones."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:
            _say(f"compiling the hot modules failed ({error}): building the pure-Python package")
            _remove_compiled_artefacts()
            self.extensions = []

    def get_outputs(self) -> list:
        return super().get_outputs() if self.extensions else []


setup(ext_modules=_extension_modules(), cmdclass={"build_ext": OptionalBuildExt})
