"""Key files and trust files of signed mode (:mod:`sphaera_crdt.keys`) and ``sphaera key``:
keys are made with mode 0600 from the start and never replaced, anything but an Ed25519
key is refused naming the file, the printed line is a trust-file line, and an edited
trust file is noticed by its stamp."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from sphaera_crdt import keys
from sphaera_crdt.cli import cli
from sphaera_crdt.core.trust import Trust, public_key_text
from sphaera_crdt.errors import InvalidTrust
from sphaera_crdt.keys import (
    KEY_FILE,
    TrustChange,
    TrustFile,
    check_own_key,
    generate_key,
    load_key,
    load_or_create,
    load_trust,
    save_key,
    trust_change,
)
from sphaera_crdt.store import SQLiteStore


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- key files -----------------------------------------------------------------------------


def test_a_key_file_is_made_0600_from_the_start_even_under_a_lax_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy_open(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        opened.append((str(path), flags, mode))
        return real_open(path, flags, mode, **kw)

    def no_chmod(*args: Any, **kw: Any) -> None:
        raise AssertionError("the mode is set when the file is created, never after")

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(os, "fchmod", no_chmod)
    old_umask = os.umask(0)
    try:
        key, made = load_or_create(tmp_path / KEY_FILE)
    finally:
        os.umask(old_umask)
    assert made
    assert mode_of(tmp_path / KEY_FILE) == 0o600
    created = [(flags, mode) for _, flags, mode in opened if flags & os.O_CREAT]
    assert created == [(os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)]
    # only the key file remains (the temporary name is gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]
    assert public_key_text(load_key(tmp_path / KEY_FILE)) == public_key_text(key)


def test_a_key_is_kept_across_restarts(tmp_path: Path) -> None:
    first, made = load_or_create(tmp_path / KEY_FILE)
    again, made_again = load_or_create(tmp_path / KEY_FILE)
    assert made and not made_again
    assert public_key_text(again) == public_key_text(first)


def test_a_key_file_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    save_key(generate_key(), path)
    before = path.read_bytes()
    with pytest.raises(InvalidTrust, match=r"exists already; it is never replaced"):
        save_key(generate_key(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]


def test_a_key_file_that_cannot_be_written_names_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidTrust, match=r"cannot write key file .*missing/replica.key"):
        save_key(generate_key(), tmp_path / "missing" / KEY_FILE)


def _pem(private: Any, encryption: Any = None) -> bytes:
    return bytes(
        private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption or NoEncryption())
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"hello\n", "does not hold a PEM private key"),
        (b"", "does not hold a PEM private key"),
        (b"x" * (keys.MAX_KEY_BYTES + 1), "longer than"),
        (
            _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
            r"holds no Ed25519 key \(it holds RSA\)",
        ),
        (_pem(ec.generate_private_key(ec.SECP256R1())), "holds no Ed25519 key"),
        (
            _pem(generate_key(), BestAvailableEncryption(b"secret")),
            "is encrypted; sphaera reads unencrypted PEM keys",
        ),
    ],
)
def test_anything_but_an_ed25519_key_is_refused_naming_the_file(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "odd.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(InvalidTrust, match=rf"key file {path} .*{problem}"):
        load_key(path)
    with pytest.raises(InvalidTrust, match=problem):  # nor is it replaced by a new key
        load_or_create(path)
    assert path.read_bytes() == content


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidTrust, match=rf"cannot read key file {tmp_path}/none.key"):
        load_key(tmp_path / "none.key")


def test_a_key_file_others_may_read_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / KEY_FILE
    key, _ = load_or_create(path)
    with caplog.at_level(logging.WARNING, logger="sphaera_crdt.keys"):
        assert public_key_text(load_key(path)) == public_key_text(key)
    assert not caplog.records
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="sphaera_crdt.keys"):
        assert public_key_text(load_key(path)) == public_key_text(key)
    assert [r.getMessage() for r in caplog.records] == [
        f"key file {path} has mode 0644: others than its owner may read it (chmod 600 {path})"
    ]


def test_a_key_made_by_openssl_s_form_is_read(tmp_path: Path) -> None:
    # `openssl genpkey -algorithm ed25519` writes PKCS8 PEM, as save_key does.
    key = generate_key()
    path = tmp_path / "openssl.pem"
    path.write_bytes(_pem(key))
    assert public_key_text(load_key(path)) == public_key_text(key)


# -- trust files ---------------------------------------------------------------------------


def line(replica_id: str, key: Any) -> str:
    return f"{replica_id} {public_key_text(key)}\n"


def test_a_trust_file_is_read_and_its_errors_name_it(tmp_path: Path) -> None:
    a, b = generate_key(), generate_key()
    path = tmp_path / "trust"
    path.write_text("# the cluster\n" + line("a", a) + "\n" + line("node b", b))
    trust = load_trust(path)
    assert trust == Trust.parse(line("a", a) + line("node b", b))
    path.write_text(line("a", a) + "b not-a-key\n")
    with pytest.raises(InvalidTrust, match=rf"trust file {path} line 2: a public key starts"):
        load_trust(path)
    path.write_bytes(b"a \xff\n")
    with pytest.raises(InvalidTrust, match=rf"trust file {path} is not UTF-8"):
        load_trust(path)
    with pytest.raises(InvalidTrust, match=rf"cannot read trust file {tmp_path}/none"):
        load_trust(tmp_path / "none")


def test_a_trust_file_shows_edits_in_place_and_replacements(tmp_path: Path) -> None:
    a, b = generate_key(), generate_key()
    path = tmp_path / "trust"
    path.write_text(line("a", a))
    watched = TrustFile(path)
    assert watched.changed()  # never read
    assert set(watched.read()) == {"a"}
    assert not watched.changed()
    # an edit that keeps the size, in the same nanosecond as far as the clock shows:
    # the stamp still differs by the time set below
    stamp = path.stat().st_mtime_ns
    path.write_text(line("b", b))
    os.utime(path, ns=(stamp + 1_000, stamp + 1_000))
    assert watched.changed()
    assert set(watched.read()) == {"b"}
    assert not watched.changed()
    # a new file moved over it (the way most editors and config tools save)
    new = tmp_path / "trust.new"
    new.write_text(line("a", a))
    os.utime(new, ns=(stamp + 1_000, stamp + 1_000))
    new.replace(path)
    assert watched.changed()
    assert set(watched.read()) == {"a"}
    # a removed file is a change, and stays read as one failure until it changes again
    path.unlink()
    assert watched.changed()
    with pytest.raises(InvalidTrust, match="cannot read trust file"):
        watched.read()
    assert not watched.changed()


def test_the_own_key_check_names_both_keys(tmp_path: Path) -> None:
    mine, other = generate_key(), generate_key()
    check_own_key(
        Trust.parse(line("a", mine)), "a", mine, key_source="k", trust_source="t"
    )  # no error
    with pytest.raises(InvalidTrust) as wrong:
        check_own_key(
            Trust.parse(line("a", other)), "a", mine, key_source="/d/replica.key", trust_source="/t"
        )
    assert str(wrong.value) == (
        f"the key of replica 'a' in /d/replica.key is {public_key_text(mine)}, but trust file "
        f"/t gives {public_key_text(other)}"
    )
    with pytest.raises(InvalidTrust) as missing:
        check_own_key(Trust.parse(line("b", other)), "a", mine, key_source="k", trust_source="t")
    assert str(missing.value) == (
        f"replica 'a' is not in trust file t; add the line 'a {public_key_text(mine)}' "
        "(the key in k)"
    )


def test_a_trust_change_names_what_changed() -> None:
    a, b, c, d = (generate_key() for _ in range(4))
    before = Trust.parse(line("a", a) + line("b", b) + line("c", c))
    after = Trust.parse(line("a", a) + line("b", d) + line("e", d))
    change = trust_change(before, after)
    assert change == TrustChange(added=("e",), removed=("c",), rekeyed=("b",))
    assert change.describe() == "added e; removed c; changed key b"
    assert not trust_change(before, before)
    assert trust_change(before, before).describe() == "no change"
    assert trust_change(None, before).added == ("a", "b", "c")


# -- sphaera key ---------------------------------------------------------------------------


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="sphaera")


def one_error(result: Result, status: int) -> str:
    assert result.exit_code == status, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_key_makes_the_data_dir_s_key_and_prints_a_trust_line(tmp_path: Path) -> None:
    data = tmp_path / "node-a"
    made = run("key", "--data", str(data), "--id", "a")
    assert made.exit_code == 0, made.output
    assert made.stderr == f"sphaera: made signing key {data / KEY_FILE} (mode 0600)\n"
    assert mode_of(data / KEY_FILE) == 0o600
    again = run("key", "--data", str(data), "--id", "a")
    assert again.stdout == made.stdout and again.stderr == ""
    # the line is what a trust file holds: it reads back to the key in the file
    trust = Trust.parse(made.stdout)
    assert list(trust) == ["a"]
    assert trust.text() == made.stdout
    check_own_key(trust, "a", load_key(data / KEY_FILE), key_source="k", trust_source="t")
    # --key reads the same file
    assert run("key", "--key", str(data / KEY_FILE), "--id", "a").stdout == made.stdout


def test_key_reads_the_id_the_store_was_made_for(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    try:
        store.initialise("node one", b"\x00\x00")
        result = run("key", "--data", str(tmp_path))  # while the store is open (a node runs)
    finally:
        store.close()
    assert result.exit_code == 0, result.output
    assert list(Trust.parse(result.stdout)) == ["node one"]
    assert run("key", "--data", str(tmp_path), "--id", "node one").stdout == result.stdout
    line = one_error(run("key", "--data", str(tmp_path), "--id", "b"), 2)
    assert line == f"sphaera: error: {tmp_path} holds replica 'node one', not 'b'"


def test_key_json(tmp_path: Path) -> None:
    result = run("key", "--key", str(tmp_path / "k"), "--create", "--id", "a", "--json")
    assert result.exit_code == 0, result.output
    answer = orjson.loads(result.stdout)
    key = load_key(tmp_path / "k")
    assert answer == {
        "id": "a",
        "public_key": public_key_text(key),
        "key_file": str(tmp_path / "k"),
        "created": True,
    }
    again = run("key", "--key", str(tmp_path / "k"), "--id", "a", "--json")
    assert orjson.loads(again.stdout)["created"] is False


def test_key_defaults_to_serve_s_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("key", "--id", "a")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sphaera-data" / "a" / KEY_FILE).exists()


@pytest.mark.parametrize(
    ("args", "status", "expected"),
    [
        ((), 2, "give --data DIR or --key FILE (or --id ID for ./sphaera-data/ID)"),
        (("--data", "{tmp}/new"), 2, "{tmp}/new holds no replica yet: give --id ID"),
        (("--key", "{tmp}/k", "--create"), 2, "give --id ID: the replica whose key {tmp}/k is"),
        (("--key", "{tmp}/none", "--id", "a"), 1, "cannot read key file {tmp}/none"),
        (("--key", "{tmp}/junk", "--id", "a"), 1, "key file {tmp}/junk does not hold a PEM"),
        (("--data", "{tmp}/d", "--id", "a", "--create"), 2, "--create makes a --key file"),
        (("--data", "{tmp}/junk/d", "--id", "a"), 1, "cannot make {tmp}/junk/d: Not a directory"),
    ],
)
def test_key_errors_are_one_line(
    tmp_path: Path, args: tuple[str, ...], status: int, expected: str
) -> None:
    (tmp_path / "junk").write_text("not a key\n")
    line = one_error(run("key", *(a.format(tmp=tmp_path) for a in args)), status)
    assert line.startswith(f"sphaera: error: {expected.format(tmp=tmp_path)}"), line


def test_key_warns_about_a_key_others_may_read(tmp_path: Path) -> None:
    path = tmp_path / "k"
    save_key(generate_key(), path)
    path.chmod(0o640)
    result = run("key", "--key", str(path), "--id", "a")
    assert result.exit_code == 0
    assert result.stderr == (
        f"sphaera: warning: key file {path} has mode 0640: others than its owner may read it "
        f"(chmod 600 {path})\n"
    )
