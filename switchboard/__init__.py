"""Switchboard: a messaging fabric for cloud control planes over AMQP 1.0."""

__version__ = "0.1.0"

COMPILED = "compiled (mypyc)"
PURE_PYTHON = "pure Python"


def build_kind() -> str:
    """How the hot modules run here: ``"compiled (mypyc)"`` or ``"pure Python"``.

    The install chooses (``docs/building.md``); a compiled module is an extension module
    imported in place of its ``.py``, which is what this looks at.
    """
    from importlib.machinery import EXTENSION_SUFFIXES

    from .amqp import codec

    return COMPILED if codec.__file__.endswith(tuple(EXTENSION_SUFFIXES)) else PURE_PYTHON
