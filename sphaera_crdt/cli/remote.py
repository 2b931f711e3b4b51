"""The client commands: each one call to a running node's REST API (``--url``,
``--token-file``, ``--timeout``, and ``--tls-ca``, ``--tls-cert``, ``--tls-key`` for https).

Calls go through :class:`~sphaera_crdt.net.blocking_client.BlockingApiClient`, on the
standard library's HTTP client: no client command loads aiohttp or asyncio.
Every command takes ``--json``, and an entity id is checked here, before any request, so a
bad one is a usage error naming the rules rather than a 404 from the node.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click
import orjson

from ..core import names
from ..errors import InputError, InvalidIdentifier, SphaeraError
from ..net.api_calls import DEFAULT_PORT
from .app import TOKEN_ENV, URL_ENV, BadConfig, Fail, read_token

if TYPE_CHECKING:
    from ..net.blocking_client import BlockingApiClient

__all__ = [
    "DEFAULT_URL",
    "Remote",
    "client_options",
    "entity_id_option",
    "id_argument",
    "json_option",
]

DEFAULT_URL: Final = f"http://127.0.0.1:{DEFAULT_PORT}"
_STATUS_STYLES: Final = {"exists": "green", "absent": "red", "undetermined": "yellow"}
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


#: How each kind of id a command takes is checked (the rules of :mod:`~..core.names`).
_ID_CHECKS: Final[dict[str, Callable[[object], str]]] = {
    "entity id": names.check_entity_id,
    "replica id": names.check_replica_id,
}


def _checked_id(kind: str) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """A click callback that refuses a bad ``kind`` id, naming the rules, before any
    request is made (the node would answer a bad one with a 404 or a 400)."""
    check = _ID_CHECKS[kind]

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check(value)
        except InvalidIdentifier as exc:
            raise click.BadParameter(f"{exc}; {names.rules(kind)}") from None

    return callback


def id_argument(
    name: str = "entity_id", *, kind: str = "entity id", metavar: str = "ID"
) -> Callable[[F], F]:
    """The ``ID`` argument of a command, checked as a ``kind`` id."""
    return click.argument(name, metavar=metavar, callback=_checked_id(kind))


def entity_id_option(*flags: str, **kw: Any) -> Callable[[F], F]:
    """An option holding an entity id (``--entity ID``), checked before any request."""
    return click.option(*flags, metavar="ID", callback=_checked_id("entity id"), **kw)


def json_option(text: str = "Print the node's JSON answer.") -> Callable[[F], F]:
    """``--json``, which every client command takes; the command gets ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, help=text)


def _json_value(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Parse a JSON option; ``@FILE`` reads the JSON from a file."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"cannot read {value[1:]}: {exc.strerror or exc}") from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None


def _object(value: Any, flag: str) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object", param_hint=flag)
    return value


def _status_cell(status: Any) -> str:
    """A status as rich markup, coloured by what it says."""
    text = str(status)
    style = _STATUS_STYLES.get(text)
    return f"[{style}]{text}[/]" if style else text


def _echo_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    # rich is imported here: only the human form of a listing needs it.
    from rich.console import Console
    from rich.table import Table

    table = Table(*header, box=None, header_style="bold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@dataclass(frozen=True, slots=True, kw_only=True)
class Remote:
    """Where the client commands connect."""

    url: str
    token: str | None
    timeout: float
    #: How to verify an https node (and the certificate to present); system trust if None.
    ssl: ssl.SSLContext | None = None

    def ask(self, action: Callable[[BlockingApiClient], T]) -> T:
        """Run ``action`` with a blocking client of the node; library errors become one
        line."""
        from ..net.blocking_client import BlockingApiClient

        try:
            api = BlockingApiClient(self.url, token=self.token, timeout=self.timeout, ssl=self.ssl)
        except InputError as exc:
            raise BadConfig(f"--url: {exc}") from None
        try:
            return action(api)
        except SphaeraError as exc:
            raise Fail(str(exc)) from None


def _client_tls(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The TLS context of ``--tls-ca``, ``--tls-cert`` and ``--tls-key`` (``None``: none
    given, the system's trust store)."""
    if (cert is None) != (key is None):
        raise BadConfig("--tls-cert and --tls-key go together")
    if ca is None and cert is None:
        return None
    try:
        context = ssl.create_default_context(cafile=ca)
        if cert is not None:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise BadConfig(f"cannot load the TLS files: {exc}") from None
    return context


def client_options(function: Callable[..., None]) -> Callable[..., None]:
    """Add ``--url``, ``--token-file``, ``--timeout`` and the TLS options; the command
    gets ``remote``."""

    @functools.wraps(function)
    def command(
        *args: Any,
        url: str,
        token_file: Path | None,
        timeout: float,
        tls_ca: str | None,
        tls_cert: str | None,
        tls_key: str | None,
        **kw: Any,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise BadConfig(f"--url must start with http:// or https://, not {url!r}")
        context = _client_tls(tls_ca, tls_cert, tls_key)
        remote = Remote(url=url, token=read_token(token_file), timeout=timeout, ssl=context)
        function(*args, remote=remote, **kw)

    options = [
        click.option(
            "--url",
            envvar=URL_ENV,
            default=DEFAULT_URL,
            show_default=True,
            help=f"The node to talk to (or ${URL_ENV}).",
        ),
        click.option(
            "--token-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help=f"File holding the bearer token (or ${TOKEN_ENV}).",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=10.0,
            show_default=True,
            help="Seconds to wait for an answer.",
        ),
        click.option(
            "--tls-ca",
            type=click.Path(dir_okay=False),
            help="CA the node's certificate must verify under (default: the system's).",
        ),
        click.option(
            "--tls-cert",
            type=click.Path(dir_okay=False),
            help="Client certificate to present (a node with --tls-require-client-cert).",
        ),
        click.option("--tls-key", type=click.Path(dir_okay=False), help="The key of --tls-cert."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


# -- client commands -----------------------------------------------------------------------


@click.command()
@client_options
@json_option()
@click.option("--prefix", metavar="P", help="Only entities whose id starts with P.")
@click.option("--kind", metavar="K", help="Only entities of kind K.")
@click.option(
    "--status",
    type=click.Choice(["exists", "absent", "undetermined"]),
    help="Only entities with this status.",
)
def entities(
    remote: Remote, as_json: bool, prefix: str | None, kind: str | None, status: str | None
) -> None:
    """List every entity the node knows (or those the filters keep), with its status."""
    found = remote.ask(lambda api: api.entities(prefix=prefix, kind=kind, status=status))
    if as_json:
        _echo_json({"entities": found})
        return
    _print_table(
        ("id", "kind", "status", "owner", "reason"),
        [
            (
                entity_id,
                str(entity.get("kind") or ""),
                _status_cell(entity.get("status")),
                str(entity.get("owner") or ""),
                str(entity.get("reason") or ""),
            )
            for entity_id, entity in sorted(found.items())
        ],
    )


@click.command()
@client_options
@id_argument()
@json_option("Print the node's JSON answer (the default form too).")
def get(remote: Remote, entity_id: str, as_json: bool) -> None:
    """Print one entity as JSON."""
    _echo_json(remote.ask(lambda api: api.get(entity_id)))


@click.command()
@client_options
@id_argument()
@click.option("--kind", help="The entity's kind.")
@click.option(
    "--attrs", metavar="JSON", callback=_json_value, help="Attributes, a JSON object (or @FILE)."
)
@click.option(
    "--requires", metavar="JSON", callback=_json_value, help="The constraint, as JSON (or @FILE)."
)
@click.option(
    "--probe",
    metavar="JSON",
    callback=_json_value,
    help='A check nodes run and observe the entity by, e.g. {"http": URL, "every": 5}.',
)
@json_option("Print the node's JSON answer, the entity (the default form too).")
def put(
    remote: Remote,
    entity_id: str,
    kind: str | None,
    attrs: Any,
    requires: Any,
    probe: Any,
    as_json: bool,
) -> None:
    """Declare (or re-declare) an entity, stating its whole record."""
    attributes = _object(attrs, "--attrs")
    checked = None if probe is None else _object(probe, "--probe")
    _echo_json(
        remote.ask(
            lambda api: api.put(
                entity_id, kind=kind, attrs=attributes, requires=requires, probe=checked
            )
        )
    )


@click.command()
@client_options
@id_argument()
@click.option(
    "--attrs",
    metavar="JSON",
    callback=_json_value,
    required=True,
    help="Attributes to set, a JSON object.",
)
@json_option("Print the node's JSON answer, the entity (the default form too).")
def patch(remote: Remote, entity_id: str, attrs: Any, as_json: bool) -> None:
    """Merge top-level attributes into an entity."""
    attributes = _object(attrs, "--attrs") or {}
    _echo_json(remote.ask(lambda api: api.patch(entity_id, attributes)))


@click.command()
@client_options
@id_argument()
@json_option("Print the node's JSON answer (null when it sends none).")
def delete(remote: Remote, entity_id: str, as_json: bool) -> None:
    """Retract an entity: it becomes absent on every replica."""
    answer = remote.ask(lambda api: api.delete(entity_id))
    if answer is not None or as_json:
        _echo_json(answer)


@click.command()
@client_options
@id_argument()
@json_option("Print the explanation tree as the node's JSON answer.")
def why(remote: Remote, entity_id: str, as_json: bool) -> None:
    """Explain an entity's status.

    Prints the tree of the clauses and facts that decided it, indented, with the times of
    observations relative to the node's clock ("fresh, 3 s old, expires in 7 s", "stale
    for 12 s"); --json prints the tree as JSON.
    """
    tree = remote.ask(lambda api: api.why(entity_id))
    if as_json:
        _echo_json(tree)
        return
    from ..why_text import render_why  # only this command needs it

    click.echo(render_why(tree))


@click.command()
@client_options
@id_argument("subject", metavar="SUBJECT")
@click.option("--ok/--not-ok", default=True, show_default=True, help="What was observed.")
@click.option(
    "--value", metavar="JSON", callback=_json_value, help="A JSON value observed along (or @FILE)."
)
@click.option(
    "--ttl", type=click.FloatRange(min=0), help="Seconds after which the observation expires."
)
@json_option("Print the node's JSON answer, the observation (the default form too).")
def observe(
    remote: Remote,
    subject: str,
    ok: bool,
    value: Any,
    ttl: float | None,
    as_json: bool,
) -> None:
    """Record the node's observation of SUBJECT."""
    _echo_json(remote.ask(lambda api: api.observe(subject, ok=ok, value=value, ttl=ttl)))


@click.command()
@client_options
@id_argument("replica_id", kind="replica id")
@json_option("Print the node's JSON answer (the default form too).")
def forget(remote: Remote, replica_id: str, as_json: bool) -> None:
    """Forget a departed replica on every replica.

    Its records and observations stop counting and its data is dropped; if it comes
    back, it starts afresh. A node refuses to forget itself.
    """
    _echo_json(remote.ask(lambda api: api.forget(replica_id)))


@click.command()
@client_options
@json_option()
def replicas(remote: Remote, as_json: bool) -> None:
    """List the replicas the node knows, with their liveness and clock offsets (and, in
    signed mode, whether the trust list names each)."""
    answer = remote.ask(lambda api: api.replicas())
    if as_json:
        _echo_json(answer)
        return
    me = answer.get("self")
    signed = answer.get("signed") is True  # signed mode: whether each replica is listed
    rows: list[tuple[str, ...]] = []
    for replica_id, info in sorted(answer.get("replicas", {}).items()):
        offset = info.get("clock_offset")
        row: tuple[str, ...] = (
            f"{replica_id} (self)" if replica_id == me else replica_id,
            str(info.get("url") or ""),
            _status_cell(info.get("status")),
            f"{offset:+.3f}s" if type(offset) in (int, float) and replica_id != me else "",
        )
        if signed:
            row += ("yes" if info.get("trusted") else "[red]no[/]",)
        rows.append(row)
    header = ("replica", "url", "status", "clock offset")
    _print_table((*header, "trusted") if signed else header, rows)


@click.command()
@client_options
@json_option("Print each event as one JSON line.")
@entity_id_option("--entity", "only", help="Only this entity.")
@click.option("--prefix", metavar="P", help="Only entities whose id starts with P.")
@click.option("--kind", metavar="K", help="Only entities of kind K.")
def events(
    remote: Remote,
    as_json: bool,
    only: str | None,
    prefix: str | None,
    kind: str | None,
) -> None:
    """Stream status changes as they are derived (until Ctrl-C).

    Starts with the current status of every entity (that the filters keep), then prints
    one line per change. See also ``sphaera watch``, which reconnects and can act.
    """

    def stream(api: BlockingApiClient) -> None:
        for name, data in api.events(entity=only, prefix=prefix, kind=kind):
            if as_json:
                click.echo(orjson.dumps({"event": name, "data": data}).decode())
            elif name == "change" and isinstance(data, dict):
                click.echo(
                    f"{data.get('entity')}: {data.get('before')} -> {data.get('after')}"
                    f" ({data.get('reason')})"
                )
            elif name == "snapshot" and isinstance(data, dict):
                for entity_id, entity in sorted(data.get("entities", {}).items()):
                    click.echo(f"{entity_id}: {entity.get('status')} ({entity.get('reason')})")
            else:
                click.echo(f"{name}: {orjson.dumps(data).decode()}")

    with contextlib.suppress(KeyboardInterrupt):
        remote.ask(stream)
