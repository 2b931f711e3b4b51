"""``sphaera watch``: follow a node's status changes and act on each one.

Without ``--exec`` it prints one line per change (``--json``: one JSON object per line).
With ``--exec CMD ARGS...`` it runs the command once per change, one at a time and in
order, with the change in its environment (:data:`ENVIRONMENT`). The stream is opened again
after a bounded delay whenever it drops; changes made meanwhile are reported from the new
stream's snapshot (:mod:`sphaera_crdt.net.watch`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Final

import click
import orjson

from ..net.watch import StatusChange
from .app import Fail
from .remote import Remote, client_options, entity_id_option, json_option

if TYPE_CHECKING:
    from ..net.blocking_client import BlockingApiClient

__all__ = ["ENVIRONMENT", "environment"]

#: What a command run by ``--exec`` finds in its environment.
ENVIRONMENT: Final = (
    "SPHAERA_ENTITY",
    "SPHAERA_BEFORE",
    "SPHAERA_AFTER",
    "SPHAERA_REASON",
    "SPHAERA_AT",
)


def environment(change: StatusChange) -> dict[str, str]:
    """The environment variables that describe ``change`` to a command."""
    values = (
        change.entity,
        change.before.value,
        change.after.value,
        change.reason,
        "" if change.at is None else repr(change.at),
    )
    return dict(zip(ENVIRONMENT, values, strict=True))


def _line(change: StatusChange) -> str:
    late = " [while disconnected]" if change.resumed else ""
    return f"{change.entity}: {change.before.value} -> {change.after.value} ({change.reason}){late}"


def _run(command: tuple[str, ...], change: StatusChange) -> None:
    """Run ``command`` for one change and wait for it; a failure is reported, not fatal."""
    try:
        done = subprocess.run(command, env={**os.environ, **environment(change)}, check=False)
    except OSError as exc:
        raise Fail(f"cannot run {command[0]}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        click.echo(
            f"sphaera: {command[0]} exited with status {done.returncode} for {change.entity}",
            file=sys.stderr,
        )


def _dropped(why: str, delay: float) -> None:
    click.echo(f"sphaera: {why}; connecting again in {delay:.1f}s", file=sys.stderr)


@click.command(context_settings={"allow_interspersed_args": False})
@client_options
@entity_id_option("--entity", "entity_id", help="Only this entity.")
@click.option("--prefix", metavar="P", help="Only entities whose id starts with P.")
@click.option("--kind", metavar="K", help="Only entities of kind K.")
@json_option("Print each change as one JSON line.")
@click.option(
    "--exec",
    "run",
    is_flag=True,
    help="Run the command given after the options once per change (CMD ARGS...).",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[CMD ARGS...]")
def watch(
    remote: Remote,
    entity_id: str | None,
    prefix: str | None,
    kind: str | None,
    as_json: bool,
    run: bool,
    command: tuple[str, ...],
) -> None:
    """Follow status changes (until Ctrl-C), reconnecting when the stream drops.

    With --exec CMD ARGS..., runs CMD once per change, one at a time and in order, with
    SPHAERA_ENTITY, SPHAERA_BEFORE, SPHAERA_AFTER, SPHAERA_REASON and SPHAERA_AT in its
    environment; otherwise prints one line per change. The current statuses are the
    starting point: only changes from then on are reported.
    """
    ctx = click.get_current_context()
    if run and not command:
        raise click.UsageError("--exec needs a command", ctx)
    if command and not run:
        raise click.UsageError(
            f"unexpected argument {command[0]!r} (a command goes after --exec)", ctx
        )

    def follow(api: BlockingApiClient) -> None:
        changes = api.watch(entity=entity_id, prefix=prefix, kind=kind, on_drop=_dropped)
        for change in changes:
            if run:
                _run(command, change)
            elif as_json:
                click.echo(orjson.dumps(change.to_json()).decode())
            else:
                click.echo(_line(change))

    with contextlib.suppress(KeyboardInterrupt):
        remote.ask(follow)
