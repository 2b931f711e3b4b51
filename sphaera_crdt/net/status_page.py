"""The live status page served on ``GET /``: one static HTML file with inline script.

The page holds no data: its script reads ``/healthz`` (a banner says when this node's
clock is the outlier), ``/v1/replicas``, ``/v1/entities`` and ``/v1/observations``, follows
``/v1/events`` (with ``fetch``, which, unlike ``EventSource``, can send the
``Authorization`` header), and shows ``/v1/entities/{id}/why`` as a tree in a side panel
when an entity is clicked. Ages are read on the node's clock (the ``at`` it answers with),
never the browser's, and tick between reads; a filter box leaves out the entities (and
their graph rows and observations) that do not match an id substring, a kind or a status.
Bursts of events are drawn once, and each table draws at most its first 500 rows.
It loads nothing from other origins, and the Content-Security-Policy it is served with
allows exactly its own inline script and style (by hash) and requests to its own origin.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Final

__all__ = ["StatusPage", "load_status_page"]

PAGE_FILE: Final = "status_page.html"


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusPage:
    """The page's bytes and the Content-Security-Policy to serve them with."""

    html: bytes
    csp: str

    def __post_init__(self) -> None:
        if not self.html.startswith(b"<!doctype html>"):
            raise ValueError("the status page must be an HTML document")


def _hashes(text: str, tag: str) -> str:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() + "'"
        for block in blocks
    )


@functools.cache
def load_status_page() -> StatusPage:
    """Read the page shipped in this package and derive its Content-Security-Policy."""
    text = resources.files(__package__).joinpath(PAGE_FILE).read_text(encoding="utf-8")
    csp = "; ".join(
        (
            "default-src 'none'",
            f"script-src {_hashes(text, 'script')}",
            f"style-src {_hashes(text, 'style')}",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    return StatusPage(html=text.encode(), csp=csp)
