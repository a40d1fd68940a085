"""The credentials file: hashing, verification, the file's format and how it is written."""

import base64
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.router.credentials import (
    DEFAULT_N,
    Credentials,
    CredentialsError,
    ScryptHash,
)

FAST = {"n": 2**4, "r": 1, "p": 1}  # the format and logic, not the cost, are under test here

names = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters=":"),
    min_size=1, max_size=30,
).filter(lambda n: n != "anonymous" and not n.startswith("#") and n.isprintable() and not any(c.isspace() for c in n))
passwords = st.text(min_size=1, max_size=40).filter(lambda p: "\x00" not in p)


@settings(max_examples=40, deadline=None)
@given(users=st.dictionaries(names, passwords, max_size=4))
def test_what_is_written_reads_back_and_verifies(tmp_path_factory, users: dict[str, str]) -> None:
    path = tmp_path_factory.mktemp("creds") / "users.creds"
    credentials = Credentials()
    for name, password in users.items():
        credentials.set_password(name, password, **FAST)
    credentials.save(path)
    loaded = Credentials.load(path)
    assert loaded.names() == sorted(users)
    for name, password in users.items():
        assert loaded.verify(name, password)
        assert not loaded.verify(name, password + "x")
    # Each line holds a name, the scheme, three numbers and two base64 fields: there is
    # no room for the password itself.
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert len(lines) == len(users)
    for line in lines:
        name, scheme, n, r, p, salt, digest = line.split(":")
        assert name in users and scheme == "scrypt" and (n, r, p) == ("16", "1", "1")
        assert users[name].encode() not in (base64.b64decode(salt), base64.b64decode(digest))


@settings(max_examples=60, deadline=None)
@given(password=passwords, other=passwords)
def test_only_the_same_password_matches(password: str, other: str) -> None:
    hashed = ScryptHash.of(password, **FAST)
    assert hashed.matches(password)
    assert hashed.matches(other) == (other == password)
    assert ScryptHash.from_text(hashed.to_text()) == hashed


def test_the_same_password_gets_a_different_salt_each_time() -> None:
    first, second = ScryptHash.of("pw", **FAST), ScryptHash.of("pw", **FAST)
    assert first.salt != second.salt and first.digest != second.digest


def test_parameters_are_stored_with_each_entry_so_they_can_be_raised(tmp_path: Path) -> None:
    credentials = Credentials()
    credentials.set_password("old", "pw-old", n=2**4, r=1, p=1)
    credentials.set_password("new", "pw-new", n=2**6, r=2, p=1)
    credentials.save(tmp_path / "c")
    loaded = Credentials.load(tmp_path / "c")
    assert (loaded.entry("old").n, loaded.entry("old").r) == (2**4, 1)
    assert (loaded.entry("new").n, loaded.entry("new").r) == (2**6, 2)
    assert loaded.verify("old", "pw-old") and loaded.verify("new", "pw-new")
    assert "scrypt:16:1:1:" in (tmp_path / "c").read_text()


def test_default_parameters() -> None:
    credentials = Credentials()
    credentials.set_password("alice", "pw")
    entry = credentials.entry("alice")
    assert (entry.n, entry.r, entry.p) == (DEFAULT_N, 8, 1)
    assert len(entry.salt) == 16 and len(entry.digest) == 32


def test_unknown_users_cost_a_hash_too() -> None:
    """An unknown name is checked against a decoy with the file's usual parameters."""
    credentials = Credentials()
    credentials.set_password("alice", "pw", n=2**5, r=2, p=1)
    assert not credentials.verify("mallory", "pw")
    decoy = credentials.decoy()
    assert (decoy.n, decoy.r, decoy.p) == (2**5, 2, 1)
    assert not Credentials().verify("anyone", "")


def test_saving_is_atomic_and_private(tmp_path: Path) -> None:
    path = tmp_path / "users.creds"
    path.write_text("# an older file, world-readable\n")
    os.chmod(path, 0o644)
    credentials = Credentials()
    credentials.set_password("alice", "pw", **FAST)
    credentials.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.creds"]  # no temporary left


@pytest.mark.parametrize(
    "line, what",
    [
        ("alice", "expected NAME:scrypt"),
        ("alice:md5:16:1:1:AAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAA==", "expected scrypt"),
        ("alice:scrypt:15:1:1:AAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAA==", "power of two"),
        ("alice:scrypt:16:x:1:AAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAA==", "integers"),
        ("alice:scrypt:1048576:64:1:AAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAA==", "MiB"),
        ("alice:scrypt:16:1:1:!!!:AAAAAAAAAAAAAAAAAAAAAA==", "base64"),
        ("alice:scrypt:16:1:1:AAAA:AAAAAAAAAAAAAAAAAAAAAA==", "too short"),
        ("anonymous:scrypt:16:1:1:AAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAA==", "reserved"),
        ("alice:secret", "expected scrypt"),
    ],
)
def test_damaged_lines_are_named(line: str, what: str) -> None:
    with pytest.raises(CredentialsError) as caught:
        Credentials.parse(f"# header\n{line}\n", "users.creds")
    assert str(caught.value).startswith("users.creds line 2:")
    assert what in str(caught.value)


def test_a_user_twice_is_an_error() -> None:
    line = "alice:" + ScryptHash.of("pw", **FAST).to_text()
    with pytest.raises(CredentialsError, match="line 2: user 'alice' appears twice"):
        Credentials.parse(f"{line}\n{line}\n")


@pytest.mark.parametrize("name", ["", "anonymous", "a:b", "a b", "tab\there", "#alice", "x" * 256])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(CredentialsError):
        Credentials().set_password(name, "pw", **FAST)


@pytest.mark.parametrize("password", ["", "a\x00b"])
def test_bad_passwords_are_refused(password: str) -> None:
    with pytest.raises(CredentialsError):
        Credentials().set_password("alice", password, **FAST)


def test_remove() -> None:
    credentials = Credentials()
    credentials.set_password("alice", "pw", **FAST)
    credentials.remove("alice")
    assert credentials.names() == [] and not credentials.verify("alice", "pw")
    with pytest.raises(CredentialsError, match="no user 'alice'"):
        credentials.remove("alice")
