"""``sphaera key``: print a replica's trust-file line, ``ID PUBLIC-KEY``, making its signing
key first if it has none.

Loads neither the node nor pycrdt, aiohttp or asyncio: it runs where a node will run,
before the node's first start, so that the trust file can be written first. ``sqlite3`` is
loaded only to read the replica id a data directory's store was claimed for.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
import orjson

from ..core import names
from ..core.trust import public_key_text
from ..errors import InvalidIdentifier, SphaeraError
from ..keys import KEY_FILE, load_key, load_or_create
from .app import DEFAULT_DATA, BadConfig, Fail

__all__ = ["key"]


def _replica_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return names.check_replica_id(value)
    except InvalidIdentifier as exc:
        raise click.BadParameter(f"{exc}; {names.rules('replica id')}") from None


@click.command()
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    help=f"The node's data directory: its key is DIR/{KEY_FILE}, made if missing "
    "[default with --id: ./sphaera-data/ID].",
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The key file to read instead (as serve --key takes it).",
)
@click.option("--create", is_flag=True, help="Make the --key file if it does not exist.")
@click.option(
    "--id",
    "replica_id",
    callback=_replica_id,
    help="The replica's id [default: the one the --data store was made for].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the line's parts as JSON.")
def key(
    data: Path | None,
    key_file: Path | None,
    create: bool,
    replica_id: str | None,
    as_json: bool,
) -> None:
    """Print this replica's line for the trust file of signed mode: ID PUBLIC-KEY.

    With --data, the key is DIR/replica.key, made (mode 0600) if the node has none yet,
    and the id is the one the directory's store was made for (or --id before the first
    start). Collect every node's line into one file and start each node with
    --trust FILE. The private key never leaves its file.
    """
    _warnings_to_stderr()
    if data is None and key_file is None:
        if replica_id is None:
            raise BadConfig("give --data DIR or --key FILE (or --id ID for ./sphaera-data/ID)")
        data = DEFAULT_DATA / replica_id
    if create and key_file is None:
        raise BadConfig("--create makes a --key file; with --data the key is made anyway")
    if data is not None:
        replica_id = _recorded_id(data, replica_id)
    if replica_id is None:
        raise BadConfig(f"give --id ID: the replica whose key {key_file} is")
    try:
        if key_file is not None:
            if create:
                signing, made = load_or_create(key_file)
            else:
                signing, made = load_key(key_file), False
            where = key_file
        else:
            assert data is not None
            data.mkdir(parents=True, exist_ok=True, mode=0o700)
            where = data / KEY_FILE
            signing, made = load_or_create(where)
    except OSError as exc:
        raise Fail(f"cannot make {data}: {exc.strerror or exc}") from None
    except SphaeraError as exc:
        raise Fail(str(exc)) from None
    public = public_key_text(signing)
    if as_json:
        answer = {"id": replica_id, "public_key": public, "key_file": str(where), "created": made}
        click.echo(orjson.dumps(answer, option=orjson.OPT_SORT_KEYS).decode())
    else:
        click.echo(f"{replica_id} {public}")
    if made:
        click.echo(f"sphaera: made signing key {where} (mode 0600)", err=True)


def _recorded_id(data: Path, given: str | None) -> str:
    """The id the store in ``data`` was made for, checked against ``--id``."""
    # Imported here: only reading a store's id needs sqlite3.
    from ..store.sqlite import recorded_replica_id

    try:
        recorded = recorded_replica_id(data)
    except SphaeraError as exc:
        raise Fail(str(exc)) from None
    if recorded is None:
        if given is None:
            raise BadConfig(f"{data} holds no replica yet: give --id ID (the id it will serve)")
        return given
    if given is not None and given != recorded:
        raise BadConfig(f"{data} holds replica {recorded!r}, not {given!r}")
    return recorded


class _Warnings(logging.Handler):
    """Warnings about the key file (its mode) as ``sphaera: warning:`` lines on stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"sphaera: warning: {record.getMessage()}", err=True)


def _warnings_to_stderr() -> None:
    logger = logging.getLogger("sphaera_crdt.keys")
    if not any(isinstance(handler, _Warnings) for handler in logger.handlers):
        logger.addHandler(_Warnings())
