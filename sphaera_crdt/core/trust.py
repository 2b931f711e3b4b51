"""Who may write evidence: the trust list of signed mode (replica id -> Ed25519 public key).

A trust list is plain text, one replica per line: ``ID PUBLIC-KEY``, where the key is
``ed25519:`` and the 32 raw bytes in unpadded URL-safe base64 (what ``sphaera key``
prints). Blank lines and lines starting with ``#`` are ignored. The id is everything
before the last run of spaces, so ids with spaces read back as written.

Every replica applies the same list to the same data, so replicas with equal lists derive
equal views; the list itself is not replicated (each node reads its own file).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator, Mapping
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl.signing import VerifyKey

from ..errors import InvalidIdentifier, InvalidTrust
from .names import check_replica_id

__all__ = ["KEY_PREFIX", "Trust", "parse_public_key", "public_key_text", "raw_key_text"]

KEY_PREFIX: Final = "ed25519:"
#: A trust list longer than this is refused (a list is read whole, and kept).
MAX_TRUST_BYTES: Final = 4 * 1024 * 1024


def public_key_text(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The text form of a public key (of the private key's public half)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return raw_key_text(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def raw_key_text(raw: bytes) -> str:
    """The text form of a public key given as its 32 raw bytes."""
    return KEY_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def parse_public_key(text: str) -> bytes:
    """The 32 raw bytes of a public key written as :func:`public_key_text` writes it.

    Raises:
        InvalidTrust: The text is not such a key.
    """
    if not isinstance(text, str) or not text.startswith(KEY_PREFIX):
        raise InvalidTrust(f"a public key starts with {KEY_PREFIX!r}: {str(text)[:80]!r}")
    body = text[len(KEY_PREFIX) :]
    if len(body) != 43 or not body.isascii():
        raise InvalidTrust(f"a public key has 43 base64 characters after the prefix: {text[:80]!r}")
    try:
        raw = base64.urlsafe_b64decode(body + "=")
    except (binascii.Error, ValueError):
        raise InvalidTrust(f"a public key is URL-safe base64: {text[:80]!r}") from None
    if len(raw) != 32:  # pragma: no cover - 43 characters always decode to 32 bytes
        raise InvalidTrust(f"a public key is 32 bytes: {text[:80]!r}")
    return raw


class Trust(Mapping[str, bytes]):
    """An immutable trust list: replica id -> the raw bytes of its Ed25519 public key.

    Args:
        keys: The list, as ids and raw 32-byte public keys.

    Raises:
        InvalidTrust: An id or a key is not valid.
    """

    __slots__ = ("_keys", "_verifiers", "digest")

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        checked: dict[str, bytes] = {}
        for replica_id, raw in keys.items():
            try:
                check_replica_id(replica_id)
            except InvalidIdentifier as exc:
                raise InvalidTrust(str(exc)) from None
            if type(raw) is not bytes or len(raw) != 32:
                raise InvalidTrust(f"the key of {replica_id!r} is not 32 raw bytes")
            checked[replica_id] = raw
        self._keys: dict[str, bytes] = dict(sorted(checked.items()))
        self._verifiers: dict[str, VerifyKey] = {}
        lines = "".join(f"{replica_id}\n{raw.hex()}\n" for replica_id, raw in self._keys.items())
        #: identifies the list's content (equal lists have equal digests)
        self.digest: Final = hashlib.blake2b(lines.encode(), digest_size=8).hexdigest()

    @classmethod
    def parse(cls, text: str, *, source: str = "trust list") -> Trust:
        """Read a trust list from its text.

        Raises:
            InvalidTrust: A line is not ``ID PUBLIC-KEY``, an id appears twice, or the text
                is too long; the message names the line.
        """
        if len(text) > MAX_TRUST_BYTES:
            raise InvalidTrust(f"{source}: longer than {MAX_TRUST_BYTES} characters")
        keys: dict[str, bytes] = {}
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            replica_id, _, key = stripped.rpartition(" ")
            replica_id = replica_id.rstrip()
            where = f"{source} line {number}"
            if not replica_id:
                raise InvalidTrust(f"{where}: expected 'ID PUBLIC-KEY', got {stripped[:80]!r}")
            try:
                check_replica_id(replica_id)
                raw = parse_public_key(key)
            except (InvalidIdentifier, InvalidTrust) as exc:
                raise InvalidTrust(f"{where}: {exc}") from None
            if replica_id in keys:
                raise InvalidTrust(f"{where}: {replica_id!r} is listed twice")
            keys[replica_id] = raw
        return cls(keys)

    def text(self) -> str:
        """The list in its file form (ids in order)."""
        return "".join(
            f"{replica_id} {raw_key_text(raw)}\n" for replica_id, raw in self._keys.items()
        )

    def verifier(self, replica_id: str) -> VerifyKey | None:
        """The public key of ``replica_id``, ready to verify; ``None`` if it is not listed.

        Keys are made and signatures written with ``cryptography``; they are checked with
        libsodium (PyNaCl), which takes about 60 us where OpenSSL takes 120-130 us here.
        Both implement the same Ed25519; libsodium also refuses small-order keys and
        non-canonical signatures, which no honest signer makes.
        """
        verifier = self._verifiers.get(replica_id)
        if verifier is None:
            raw = self._keys.get(replica_id)
            if raw is None:
                return None
            verifier = self._verifiers[replica_id] = VerifyKey(raw)
        return verifier

    def __getitem__(self, replica_id: str) -> bytes:
        return self._keys[replica_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Trust):
            return self._keys == other._keys
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return f"Trust({len(self._keys)} replicas, digest {self.digest})"
