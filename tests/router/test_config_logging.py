"""``[logging]``: level, format and per-logger levels; each mistake refused with its key named."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from switchboard.router.config import ConfigError, parse_config
from switchboard.router.logs import JsonFormatter, configure_logging, fields


def test_format_and_levels_per_logger_are_read() -> None:
    config = parse_config({"logging": {
        "level": "WARNING", "format": "json",
        "levels": {"switchboard.router.links": "debug", "switchboard.router.queues": "Error"},
    }})
    assert config.log_level == "warning"
    assert config.log_format == "json"
    assert config.log_levels == (("switchboard.router.links", "debug"), ("switchboard.router.queues", "error"))


def test_the_defaults_are_text_at_info() -> None:
    config = parse_config({})
    assert (config.log_level, config.log_format, config.log_levels) == ("info", "text", ())


@pytest.mark.parametrize(
    "table, key, what",
    [
        ({"format": "xml"}, "logging.format", "text, json"),
        ({"format": 1}, "logging.format", "string"),
        ({"levels": {"switchboard.router.links": "loud"}}, 'logging.levels."switchboard.router.links"', "debug"),
        ({"levels": {"switchboard.router.links": 10}}, 'logging.levels."switchboard.router.links"', "debug"),
        ({"levels": {"switchboard..links": "debug"}}, 'logging.levels."switchboard..links"', "not a logger name"),
        ({"levels": "debug"}, "logging.levels", "table"),
        ({"file": "router.log"}, "logging.file", "unknown key"),
    ],
)
def test_each_logging_mistake_names_its_key(table: dict, key: str, what: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"logging": table})
    assert str(caught.value).startswith(f"{key}:")
    assert what in str(caught.value)


def test_a_json_line_carries_time_level_logger_message_router_and_the_event_fields() -> None:
    record = logging.LogRecord("switchboard.router.connections", logging.INFO, __file__, 1,
                               "connection %s opened", ("c7",), None)
    record.__dict__.update(fields(conn="c7", peer="127.0.0.1:5000", tls=None))
    line = json.loads(JsonFormatter("r1").format(record))
    assert line["level"] == "info" and line["logger"] == "switchboard.router.connections"
    assert line["message"] == "connection c7 opened" and line["router"] == "r1"
    assert line["conn"] == "c7" and line["peer"] == "127.0.0.1:5000" and line["tls"] is None
    assert line["time"].endswith("Z") and "T" in line["time"]


def test_configuring_again_replaces_the_levels_per_logger() -> None:
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    try:
        configure_logging("info", "text", [("switchboard.router.links", "debug")])
        assert logging.getLogger("switchboard.router.links").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("switchboard.router.connections").isEnabledFor(logging.DEBUG)
        configure_logging("warning", "json", [("switchboard.router.queues", "debug")])
        assert not logging.getLogger("switchboard.router.links").isEnabledFor(logging.INFO)
        assert logging.getLogger("switchboard.router.queues").isEnabledFor(logging.DEBUG)
        ours = [h for h in root.handlers if h not in saved[1]]
        assert len(ours) == 1 and isinstance(ours[0].formatter, JsonFormatter) and ours[0].stream is sys.stderr
    finally:
        configure_logging("info", "text", [])
        for handler in [h for h in root.handlers if h not in saved[1]]:
            root.removeHandler(handler)
        root.setLevel(saved[0])
