"""The tables of ``switchboard stat``: readable units, one row per line in a pipe."""

from switchboard.cli.tables import connections_table, human_bytes, human_seconds, queues_table


def test_bytes_and_ages_in_units_people_read() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 * 1024 ** 3, None)] == ["0 B", "1023 B", "1.5 KiB", "5.0 GiB", "-"]
    assert [human_seconds(s) for s in (0.25, 59.9, 192.4, 7260, 200_000, None)] == \
        ["0.2s", "59.9s", "3m 12s", "2h 01m", "2d 7h", "-"]


def test_long_rows_are_not_wrapped_when_printed_to_a_pipe() -> None:
    row = {"connection": "127.0.0.1:5000", "role": "normal", "router": None, "user": "u",
           "container": "c" * 150, "tls": {"version": "TLSv1.3"}, "age_seconds": 3.0,
           "bytes_in": 2048, "bytes_out": 10, "links_in": 1, "links_out": 2, "write_paused": False}
    lines = connections_table([row]).splitlines()
    (line,) = [line for line in lines if "c" * 150 in line]
    assert "2.0 KiB" in line and "TLSv1.3" in line
    assert queues_table([]) == "(no queues)"
