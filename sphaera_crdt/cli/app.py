"""The ``sphaera`` command group, the two errors its commands raise (:class:`Fail`,
:class:`BadConfig`) and what several of them read (the bearer token)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO, Any, Final

import click

from ..config import DEFAULT_PORT

__all__ = ["EXIT_CONFIG", "EXIT_FAILURE", "BadConfig", "Fail", "cli", "main", "read_token"]

DEFAULT_URL: Final = f"http://127.0.0.1:{DEFAULT_PORT}"
DEFAULT_DATA: Final = Path("sphaera-data")
TOKEN_ENV: Final = "SPHAERA_TOKEN"
URL_ENV: Final = "SPHAERA_URL"
#: Exit status of a configuration that cannot work (as click's usage errors).
EXIT_CONFIG: Final = 2
#: Exit status of a failure while running.
EXIT_FAILURE: Final = 1


class Fail(click.ClickException):
    """A failure while running: one line on stderr, ``sphaera: error: ...``, exit status 1.

    Not a library error (those all live in :mod:`sphaera_crdt.errors`): it is how a
    command translates one for click, which prints it and exits with its status.
    """

    exit_code = EXIT_FAILURE

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"sphaera: error: {self.format_message()}", file=file or sys.stderr)


class BadConfig(Fail):
    """A configuration that cannot work: one line on stderr, exit status 2."""

    exit_code = EXIT_CONFIG


def main(argv: list[str] | None = None) -> None:
    """Run the ``sphaera`` command (the console script and ``python -m sphaera_crdt``)."""
    cli.main(args=argv, prog_name="sphaera")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="sphaera-crdt", prog_name="sphaera")
def cli() -> None:
    """Replicated state without a coordinator.

    Every node holds entity records and observations as CRDTs, merges what its peers
    gossip in any order, and derives by itself which entities exist.
    """


def read_token(token_file: Path | None) -> str | None:
    """The token from ``--token-file`` (whitespace stripped) or ``$SPHAERA_TOKEN``."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadConfig(f"cannot read token file {token_file}: {exc}") from None
        if not token:
            raise BadConfig(f"token file {token_file} is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None
