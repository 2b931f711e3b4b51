"""Seals: the signatures of signed mode, one per write transaction.

A writer in signed mode ends every transaction that writes entries into its container with
one more entry, a *seal*: an Ed25519 signature over the container's key, the Yrs client
ids that write the container (its entries' and the root writer's), the clock of the
transaction's first entry, and a 16-byte BLAKE2b digest of each entry it wrote, in clock
order (an entry's digest covers its key and its whole text: stamp and payload). The seal
itself takes the clock after the last entry.

Why per transaction and not per entry: verifying an Ed25519 signature costs about 120 us
here, several times what merging an entry costs; a seal is verified once for all the
entries of its transaction, and the per-entry cost is a digest (about 1 us). A rotation
or a restore rewrites the live entries in one transaction, under one seal, so seals
survive both; an entry overwritten later simply leaves its digest unused in an older seal
(the older seal goes with the next rotation).

Binding the clocks is what makes a seal about *these* items: an entry of the right text
placed at another clock, under another key, by another client id, or in another container
does not match any seal. See :mod:`.door` for the checks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from nacl.exceptions import BadSignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from nacl.signing import VerifyKey

__all__ = ["DIGEST_SIZE", "SEAL", "Seal", "digest", "is_seal_key", "make_seal", "parse_seal"]

#: Key prefix of seal entries (no record, observation or tombstone key starts so).
SEAL: Final = "g\x1f"
DIGEST_SIZE: Final = 16
#: Domain separation: a seal's signature can never be taken for another signature.
_CONTEXT: Final = b"sphaera_crdt seal v1\x00"
#: client, root client and first clock in hex, the signature (64 bytes: 86 characters of
#: unpadded base64), the digests (padded base64); only as :func:`make_seal` writes them,
#: so that no two texts read as one seal
_HEX_TEXT: Final = r"(0|[1-9a-f][0-9a-f]{0,15})"
_SEAL_TEXT: Final = re.compile(
    rf"{_HEX_TEXT}\.{_HEX_TEXT}\.{_HEX_TEXT}\.([A-Za-z0-9+/]{{86}})\.([A-Za-z0-9+/=]+)"
)
#: The most entries one seal covers (a rotation of the largest container fits).
MAX_SEALED: Final = 1 << 24


def is_seal_key(key: str) -> bool:
    return key[:2] == SEAL


def digest(key: str, text: str) -> bytes:
    """The digest of one entry: its key (length first, so no split is ambiguous) and text."""
    data = key.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(
        len(data).to_bytes(4, "big") + data + text.encode("utf-8", "surrogatepass"),
        digest_size=DIGEST_SIZE,
    ).digest()


@dataclass(frozen=True, slots=True)
class Seal:
    """A parsed seal (not yet verified)."""

    #: the Yrs client id that wrote the sealed entries
    client: int
    #: the Yrs client id that wrote the container they are in (the root writer)
    root_client: int
    #: the clock of the first sealed entry; the seal entry sits at ``first + len(digests)``
    first: int
    digests: bytes
    signature: bytes

    @property
    def count(self) -> int:
        return len(self.digests) // DIGEST_SIZE

    def covers(self, clock: int) -> bool:
        return self.first <= clock < self.first + self.count

    def digest_at(self, clock: int) -> bytes:
        start = (clock - self.first) * DIGEST_SIZE
        return self.digests[start : start + DIGEST_SIZE]

    def verify(self, container: str, key: VerifyKey) -> bool:
        """Whether the signature holds for ``container`` under ``key``."""
        try:
            key.verify(_message(container, self), self.signature)
        except BadSignatureError:
            return False
        return True


def _message(container: str, seal: Seal | tuple[int, int, int, bytes]) -> bytes:
    if isinstance(seal, Seal):
        client, root_client, first, digests = (
            seal.client,
            seal.root_client,
            seal.first,
            seal.digests,
        )
    else:
        client, root_client, first, digests = seal
    head = f"{client:x}.{root_client:x}.{first:x}".encode("ascii")
    return b"".join(
        (_CONTEXT, container.encode("utf-8", "surrogatepass"), b"\x00", head, b"\x00", digests)
    )


def make_seal(
    container: str,
    client: int,
    root_client: int,
    first: int,
    digests: bytes,
    key: Ed25519PrivateKey,
) -> str:
    """The text of a seal over entries whose digests are ``digests`` (in clock order)."""
    signature = key.sign(_message(container, (client, root_client, first, digests)))
    return ".".join(
        (
            f"{client:x}",
            f"{root_client:x}",
            f"{first:x}",
            base64.b64encode(signature).rstrip(b"=").decode("ascii"),
            base64.b64encode(digests).decode("ascii"),
        )
    )


def parse_seal(text: str) -> Seal | None:
    """Read a seal's text; ``None`` if it is not one."""
    match = _SEAL_TEXT.fullmatch(text)
    if match is None:
        return None
    client_hex, root_hex, first_hex, signature_text, digests_text = match.groups()
    try:
        signature = binascii.a2b_base64(signature_text + "==", strict_mode=True)
        digests = binascii.a2b_base64(digests_text, strict_mode=True)
    except binascii.Error:
        return None
    if len(signature) != 64 or not digests or len(digests) % DIGEST_SIZE:
        return None
    if binascii.b2a_base64(signature, newline=False)[:86] != signature_text.encode() or (
        binascii.b2a_base64(digests, newline=False) != digests_text.encode()
    ):
        return None  # the same bytes written otherwise (unused low bits set)
    if len(digests) // DIGEST_SIZE > MAX_SEALED:
        return None
    return Seal(int(client_hex, 16), int(root_hex, 16), int(first_hex, 16), digests, signature)
