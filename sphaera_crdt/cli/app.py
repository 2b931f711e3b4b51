"""The ``sphaera`` command group, the errors its commands raise (:class:`Fail`,
:class:`BadConfig`, and :class:`Usage` for a usage error) and what several of them read
(the bearer token).

The group loads a command's module only when that command runs (:data:`COMMANDS`): a
client command, or ``--version``, must not wait for the server, the simulator or
plotting to be imported. Every usage error, from any command, is one line on stderr.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from importlib import import_module
from pathlib import Path
from typing import IO, Any, Final

import click

from .. import __version__

__all__ = [
    "COMMANDS",
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "SUMMARIES",
    "BadConfig",
    "Fail",
    "Usage",
    "cli",
    "main",
    "read_token",
]

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


#: Click's "No such option 'x'. Did you mean 'y'?", which one line puts in parentheses.
_SUGGESTION: Final = re.compile(r"\.\s+\(?Did you mean (.+?)\)?$")


class Usage(click.UsageError):
    """A usage error as one line on stderr, exit status 2, naming the help to read:
    ``sphaera: error: no such option '--bogus' (try 'sphaera put --help')``.

    Click's own usage errors print four lines; :class:`CommandGroup` turns each into one
    of these, whatever command raised it.
    """

    def show(self, file: IO[Any] | None = None) -> None:
        message = _SUGGESTION.sub(r" (did you mean \1)", self.format_message())
        message = message.removesuffix(".")
        if message[1:2].islower():  # "No such option" reads as part of the line; "ID" stays
            message = message[:1].lower() + message[1:]
        hint = f" (try '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"sphaera: error: {message}{hint}", file=file or sys.stderr)


#: Click's error that prints a group's help when it is run without a command: not a
#: mistake to report on one line (absent before click 8.2, which printed the help itself).
_HELP_INSTEAD: Final[tuple[type[click.UsageError], ...]] = tuple(
    kind
    for kind in [getattr(click.exceptions, "NoArgsIsHelpError", None)]
    if isinstance(kind, type) and issubclass(kind, click.UsageError)
)


def _one_line(exc: click.UsageError, ctx: click.Context | None) -> click.UsageError:
    if isinstance(exc, (Usage, *_HELP_INSTEAD)):
        return exc
    return Usage(exc.format_message(), exc.ctx or ctx)


class CommandGroup(click.Group):
    """A click group whose commands load on first use and whose usage errors are one line.

    Args:
        lazy: The commands loaded on first use: name to ``"module:attribute"``, the module
            relative to this package.
        summaries: What ``--help`` lists for a command not loaded yet (its short help, as
            click derives it), so that listing them loads none.
    """

    def __init__(
        self,
        *args: Any,
        lazy: Mapping[str, str] | None = None,
        summaries: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.lazy = dict(lazy or {})
        self.summaries = dict(summaries or {})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(map(len, names))
        rows = []
        for name in names:
            command = self.commands.get(name)
            if command is None and name in self.summaries:
                # shortened as click shortens a loaded command's help
                text = click.Command(name, help=self.summaries[name]).get_short_help_str(limit)
            else:
                command = self.get_command(ctx, name)
                if command is None or command.hidden:
                    continue
                text = command.get_short_help_str(limit)
            rows.append((name, text))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = self.lazy.get(cmd_name)
        if where is not None and cmd_name not in self.commands:
            module, _, name = where.partition(":")
            command = getattr(import_module(module, __package__), name)
            if not isinstance(command, click.Command):
                raise TypeError(f"{where} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc, None) from None

    def invoke(self, ctx: click.Context) -> Any:
        # A subcommand's parsing, and its body, run in here: their usage errors too.
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc, ctx) from None


#: Where each command lives; its module is imported only when the command runs.
COMMANDS: Final = {
    "serve": ".serving:serve",
    "demo": ".serving:demo",
    "key": ".keys:key",
    "bench": ".bench:bench",
    "entities": ".remote:entities",
    "get": ".remote:get",
    "put": ".remote:put",
    "patch": ".remote:patch",
    "delete": ".remote:delete",
    "why": ".remote:why",
    "observe": ".remote:observe",
    "forget": ".remote:forget",
    "replicas": ".remote:replicas",
    "events": ".remote:events",
    "watch": ".watching:watch",
}
#: What ``sphaera --help`` lists for each command: its short help (a test keeps each equal
#: to the command's own).
SUMMARIES: Final = {
    "bench": "Benchmarks on the deterministic simulator.",
    "delete": "Retract an entity: it becomes absent on every replica.",
    "demo": "Run three nodes in this process and watch them converge.",
    "entities": "List every entity the node knows (or those the filters keep), with its status.",
    "events": "Stream status changes as they are derived (until Ctrl-C).",
    "forget": "Forget a departed replica on every replica.",
    "get": "Print one entity as JSON.",
    "key": "Print this replica's line for the trust file of signed mode: ID PUBLIC-KEY.",
    "observe": "Record the node's observation of SUBJECT.",
    "patch": "Merge top-level attributes into an entity.",
    "put": "Declare (or re-declare) an entity, stating its whole record.",
    "replicas": (
        "List the replicas the node knows, with their liveness and clock offsets (and, in "
        "signed mode, whether the trust list names each)."
    ),
    "serve": "Serve one replica over HTTP and gossip with its peers.",
    "watch": "Follow status changes (until Ctrl-C), reconnecting when the stream drops.",
    "why": "Explain an entity's status.",
}


def main(argv: list[str] | None = None) -> None:
    """Run the ``sphaera`` command (the console script and ``python -m sphaera_crdt``)."""
    cli.main(args=argv, prog_name="sphaera")


@click.group(
    cls=CommandGroup,
    lazy=COMMANDS,
    summaries=SUMMARIES,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="sphaera")
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
