"""``switchboard user add / del / list`` run as real processes on real files."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from system_support import HOST, run_async, switchboard_command
from switchboard.client.connection import Client, ClientError
from switchboard.router.credentials import Credentials

COMMAND_TIMEOUT = 60.0


def user(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # A new session has no controlling terminal, so the hidden prompt reads stdin.
    return subprocess.run(
        [*switchboard_command(), "user", *args],
        input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, cwd=cwd, start_new_session=True,
    )


def test_add_list_change_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "users.creds"
    added = user("add", "alice", "--file", str(path), "--password-stdin", stdin="correct horse\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"added alice in {path}"
    assert user("add", "bob", "-f", str(path), "--password-stdin", "--scrypt-n", "32768", stdin="battery staple\n").returncode == 0

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "correct horse" not in text and "battery staple" not in text
    credentials = Credentials.load(path)
    assert credentials.verify("alice", "correct horse") and credentials.verify("bob", "battery staple")

    listed = user("list", "--file", str(path))
    assert listed.returncode == 0
    assert listed.stdout.splitlines() == ["alice\tscrypt N=16384 R=8 P=1", "bob\tscrypt N=32768 R=8 P=1"]
    for entry in (credentials.entry("alice"), credentials.entry("bob")):
        assert entry.to_text().split(":")[-1] not in listed.stdout  # never the hash

    changed = user("add", "alice", "--file", str(path), "--password-stdin", stdin="new pass\n")
    assert changed.returncode == 0 and changed.stdout.strip() == f"changed the password of alice in {path}"
    credentials = Credentials.load(path)
    assert credentials.verify("alice", "new pass") and not credentials.verify("alice", "correct horse")

    deleted = user("del", "bob", "--file", str(path))
    assert deleted.returncode == 0 and deleted.stdout.strip() == f"removed bob from {path}"
    assert user("list", "--file", str(path)).stdout.splitlines() == ["alice\tscrypt N=16384 R=8 P=1"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.creds"]  # no temporary files left


def test_the_hidden_prompt_asks_twice(tmp_path: Path) -> None:
    path = tmp_path / "users.creds"
    result = user("add", "carol", "--file", str(path), stdin="s3cret\ns3cret\n")
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr  # nothing echoed
    assert Credentials.load(path).verify("carol", "s3cret")

    mismatch = user("add", "dave", "--file", str(path), stdin="one\ntwo\n")
    assert mismatch.returncode != 0
    assert "do not match" in mismatch.stdout + mismatch.stderr
    assert Credentials.load(path).names() == ["carol"]


def test_errors_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "users.creds"
    missing = user("list", "--file", str(path))
    assert missing.returncode == 1
    assert f"no credentials file {path}" in missing.stderr and "switchboard user add" in missing.stderr

    assert user("add", "alice", "--file", str(path), "--password-stdin", stdin="pw\n").returncode == 0
    cases = [
        (("del", "mallory", "--file", str(path)), "", f"no user 'mallory' in {path}"),
        (("add", "anonymous", "--file", str(path), "--password-stdin"), "pw\n", "reserved"),
        (("add", "a:b", "--file", str(path), "--password-stdin"), "pw\n", "may not contain ':'"),
        (("add", "bob", "--file", str(path), "--password-stdin"), "", "nothing on standard input"),
        (("add", "bob", "--file", str(path), "--password-stdin"), "\n", "must not be empty"),
        (("add", "bob", "--file", str(path), "--password-stdin", "--scrypt-n", "1000"), "pw\n", "power of two"),
        (("add", "bob", "--file", str(tmp_path / "no" / "dir" / "x.creds"), "--password-stdin"), "pw\n", "cannot write"),
    ]
    for args, stdin, message in cases:
        result = user(*args, stdin=stdin)
        assert result.returncode == 1, (args, result.stdout)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert Credentials.load(path).names() == ["alice"]  # failed commands changed nothing

    path.write_text(path.read_text() + "bob:plain-text\n")
    damaged = user("list", "--file", str(path))
    assert damaged.returncode == 1 and "line 3" in damaged.stderr


def test_a_router_uses_the_file_the_command_wrote(router, tmp_path: Path) -> None:
    assert user("add", "alice", "--file", "users.creds", "--password-stdin", stdin="s3cret\n", cwd=tmp_path).returncode == 0
    r = router(
        f'[[listeners]]\nhost = "{HOST}"\nport = 0\nsasl_mechanisms = ["PLAIN"]\n'
        '[authentication]\ncredentials_file = "users.creds"\n',
        listen=False,
    )

    async def scenario():
        async with await Client.connect(f"amqp://alice:s3cret@{HOST}:{r.port}", timeout=20) as client:
            await client.receiver("cli/check")
        try:
            await Client.connect(f"amqp://alice:wrong@{HOST}:{r.port}", timeout=20)
        except ClientError as exc:
            return exc
        return None

    refused = run_async(scenario, timeout=60)
    assert isinstance(refused, ClientError) and refused.condition == "amqp:unauthorized-access"
    assert r.wait_log(r"credentials file .*users\.creds: 1 user$", 10)
