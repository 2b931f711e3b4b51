"""Key files and trust files of signed mode: the I/O around :mod:`.core.trust`.

A replica's signing key is an Ed25519 private key kept in a file of its own, unencrypted
PKCS8 PEM (what ``openssl genpkey -algorithm ed25519`` writes), readable by its owner only.
A node with ``--data DIR`` keeps it in ``DIR/replica.key`` (:data:`KEY_FILE`), made on
first use and kept from then on: the public half is what the trust file lists for the
replica, so a new key would make every other node ignore its writes.

A key file is written once and never replaced: :func:`save_key` writes a temporary file,
created with mode 0600 (never loosened to what the umask allows and tightened after the
key is in it), flushes it to disk and links it under its name, which fails if the name is
taken. Two processes that race to make one key thus end with the same key, the loser's
discarded, and a crash leaves either no key file or a whole one.

A trust file is the text :meth:`.Trust.parse` reads; :class:`TrustFile` re-reads it when
its modification time, size or inode changes (an edit in place, or a new file moved over
it), which is how a running node notices an edited list.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from .core.trust import MAX_TRUST_BYTES, Trust, public_key_text, raw_key_text
from .errors import InvalidTrust

__all__ = [
    "KEY_FILE",
    "TrustChange",
    "TrustFile",
    "check_own_key",
    "generate_key",
    "load_key",
    "load_or_create",
    "load_trust",
    "save_key",
    "trust_change",
]

#: The name of a replica's key file in its data directory.
KEY_FILE: Final = "replica.key"
#: A PEM Ed25519 key is about 120 bytes; anything much larger is not one.
MAX_KEY_BYTES: Final = 64 * 1024
_log = logging.getLogger("sphaera_crdt.keys")


def generate_key() -> Ed25519PrivateKey:
    """A new Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def save_key(key: Ed25519PrivateKey, path: str | os.PathLike[str]) -> None:
    """Write ``key`` to a new file ``path``, mode 0600, atomically (see the module's text).

    Raises:
        InvalidTrust: ``path`` exists already, or cannot be written.
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    try:
        # O_EXCL: never write into a file someone else made (or a link they planted).
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(_pem(key))
                file.flush()
                os.fsync(file.fileno())
            os.link(temporary, target)  # fails if the name is taken: a key is never replaced
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        _sync_directory(target.parent)
    except FileExistsError:
        raise InvalidTrust(f"key file {target} exists already; it is never replaced") from None
    except OSError as exc:
        raise InvalidTrust(f"cannot write key file {target}: {exc.strerror or exc}") from None


def _sync_directory(directory: Path) -> None:
    """Make the new directory entry durable (where the platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms that cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that cannot sync a directory
        pass
    finally:
        os.close(fd)


def load_key(
    path: str | os.PathLike[str], *, logger: logging.Logger | None = None
) -> Ed25519PrivateKey:
    """Read the Ed25519 signing key in ``path`` (unencrypted PEM, PKCS8 or OpenSSL's form).

    A key file that others than its owner may read or write is used, with a warning: the
    key is as secret as the cluster's token, and a copy lets its holder write as the
    replica (replacing it means a new line in every trust file).

    Raises:
        InvalidTrust: The file cannot be read, or does not hold an unencrypted Ed25519
            private key; the message names the file.
    """
    where = Path(path)
    try:
        with open(where, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            data = file.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise InvalidTrust(f"cannot read key file {where}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_BYTES:
        raise InvalidTrust(f"key file {where} is not a key: longer than {MAX_KEY_BYTES} bytes")
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise InvalidTrust(
            f"key file {where} is encrypted; sphaera reads unencrypted PEM keys "
            "(keep the file mode 0600 instead)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidTrust(f"key file {where} does not hold a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "") or "another kind"
        raise InvalidTrust(f"key file {where} holds no Ed25519 key (it holds {kind})")
    if stat.S_ISREG(mode) and mode & 0o077:
        (logger or _log).warning(
            "key file %s has mode %04o: others than its owner may read it (chmod 600 %s)",
            where,
            stat.S_IMODE(mode),
            where,
        )
    return key


def load_or_create(
    path: str | os.PathLike[str], *, logger: logging.Logger | None = None
) -> tuple[Ed25519PrivateKey, bool]:
    """The key in ``path``, made (and saved, mode 0600) if there is no file there yet.

    Returns:
        The key, and whether it was made now.

    Raises:
        InvalidTrust: The file exists but holds no usable key, or cannot be made.
    """
    where = Path(path)
    if not os.path.lexists(where):
        key = generate_key()
        try:
            save_key(key, where)
        except InvalidTrust:
            if not os.path.lexists(where):
                raise
            # Another process made it meanwhile: its key is the one, read it below.
        else:
            (logger or _log).info("made signing key %s (%s)", where, public_key_text(key))
            return key, True
    return load_key(where, logger=logger), False


def load_trust(path: str | os.PathLike[str]) -> Trust:
    """The trust list in file ``path``.

    Raises:
        InvalidTrust: The file cannot be read or is not a trust list; the message names it.
    """
    return TrustFile(path).read()


def check_own_key(
    trust: Trust,
    replica_id: str,
    key: Ed25519PrivateKey,
    *,
    key_source: str,
    trust_source: str,
) -> None:
    """Refuse a trust list that does not give ``replica_id`` the public half of ``key``.

    Raises:
        InvalidTrust: One line naming both keys (or the line to add, when the replica is
            not listed at all).
    """
    own = public_key_text(key)
    listed = trust.get(replica_id)
    if listed is None:
        raise InvalidTrust(
            f"replica {replica_id!r} is not in trust file {trust_source}; add the line "
            f"'{replica_id} {own}' (the key in {key_source})"
        )
    given = raw_key_text(listed)
    if given != own:
        raise InvalidTrust(
            f"the key of replica {replica_id!r} in {key_source} is {own}, but trust file "
            f"{trust_source} gives {given}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustChange:
    """How a trust list differs from the one before it (ids in order)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    rekeyed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.rekeyed)

    def describe(self) -> str:
        """``added a, b; removed c; changed key d`` (``no change`` when empty)."""
        parts = [
            f"{label} {', '.join(ids)}"
            for label, ids in (
                ("added", self.added),
                ("removed", self.removed),
                ("changed key", self.rekeyed),
            )
            if ids
        ]
        return "; ".join(parts) or "no change"


def trust_change(before: Trust | None, after: Trust | None) -> TrustChange:
    """What changed from ``before`` to ``after`` (``None``: no list)."""
    old = dict(before or {})
    new = dict(after or {})
    return TrustChange(
        added=tuple(sorted(new.keys() - old.keys())),
        removed=tuple(sorted(old.keys() - new.keys())),
        rekeyed=tuple(sorted(i for i in old.keys() & new.keys() if old[i] != new[i])),
    )


_Stamp = tuple[int, int, int, int]


class TrustFile:
    """A trust file and what it held when last read: re-read it when it changes.

    Args:
        path: The file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: _Stamp | None = None

    def _current(self) -> _Stamp | None:
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return (found.st_mtime_ns, found.st_size, found.st_ino, found.st_dev)

    def changed(self) -> bool:
        """Whether the file looks different from when it was last read (or tried)."""
        return self._current() != self._stamp

    def read(self) -> Trust:
        """Read and parse the file now (whatever :meth:`changed` says).

        The file's stamp is taken before its text is read, so an edit made while it is
        read shows as a change at the next check. A file that cannot be read or parsed
        is remembered too: it is reported once, not at every check.

        Raises:
            InvalidTrust: The file cannot be read or is not a trust list.
        """
        self._stamp = self._current()
        try:
            with open(self.path, "rb") as file:
                data = file.read(MAX_TRUST_BYTES + 1)
        except OSError as exc:
            raise InvalidTrust(
                f"cannot read trust file {self.path}: {exc.strerror or exc}"
            ) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidTrust(
                f"trust file {self.path} is not UTF-8 text (byte {exc.start})"
            ) from None
        return Trust.parse(text, source=f"trust file {self.path}")
