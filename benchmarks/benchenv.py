"""What every benchmark records about where it ran: versions, platform and commit."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def git(*args: str) -> str | None:
    """Output of a git command in this checkout, or ``None`` if git is not available."""
    try:
        done = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment(**extra: Any) -> dict[str, Any]:
    """Python, pycrdt, platform and commit (and whether the package has local changes)."""
    changes = git("status", "--porcelain", "--", "sphaera_crdt")
    return {
        "python": platform.python_version(),
        "pycrdt": metadata.version("pycrdt"),
        "platform": platform.platform(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "package_modified": None if changes is None else bool(changes),
        **extra,
    }
