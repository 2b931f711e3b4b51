"""The ``sphaera`` command: serve a node, talk to a running one, watch a demo, or benchmark.

A thin layer over the library: ``serve`` builds a :class:`~sphaera_crdt.node.NodeConfig`
from its flags and runs a :class:`~sphaera_crdt.node.Node` until SIGINT or SIGTERM; the
client commands are one :class:`~sphaera_crdt.net.client.ApiClient` call each. Errors the
library raises (bad configuration, an unreachable node, a refused request) become one line
on stderr, ``sphaera: error: ...``, and a non-zero exit status: 2 for a configuration that
cannot work, 1 for a failure while running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import click
import orjson
from rich.console import Console
from rich.table import Table

from .core import names
from .errors import SphaeraError
from .net.client import ApiClient
from .node import DEFAULT_MAX_BODY, DEFAULT_PORT, ConfigError, Node, NodeConfig

__all__ = ["cli", "main"]

DEFAULT_URL: Final = f"http://127.0.0.1:{DEFAULT_PORT}"
DEFAULT_DATA: Final = Path("sphaera-data")
TOKEN_ENV: Final = "SPHAERA_TOKEN"
URL_ENV: Final = "SPHAERA_URL"
#: Exit status of a configuration that cannot work (as click's usage errors).
EXIT_CONFIG: Final = 2
#: Exit status of a failure while running.
EXIT_FAILURE: Final = 1
_STATUS_STYLES: Final = {"exists": "green", "absent": "red", "undetermined": "yellow"}
T = TypeVar("T")


class Fail(click.ClickException):
    """A failure while running: one line on stderr, ``sphaera: error: ...``, exit status 1."""

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


# -- helpers -------------------------------------------------------------------------------


def _read_token(token_file: Path | None) -> str | None:
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Remote:
    """Where the client commands connect."""

    url: str
    token: str | None
    timeout: float

    def call(self, action: Callable[[ApiClient], Awaitable[T]]) -> T:
        """Run ``action`` with a client of the node; library errors become one line."""

        async def go() -> T:
            async with ApiClient(self.url, token=self.token, timeout=self.timeout) as api:
                return await action(api)

        try:
            return asyncio.run(go())
        except SphaeraError as exc:
            raise Fail(str(exc)) from None


def client_options(function: Callable[..., None]) -> Callable[..., None]:
    """Add ``--url``, ``--token-file`` and ``--timeout``; the command gets ``remote``."""

    @functools.wraps(function)
    def command(*args: Any, url: str, token_file: Path | None, timeout: float, **kw: Any) -> None:
        if not url.startswith(("http://", "https://")):
            raise BadConfig(f"--url must start with http:// or https://, not {url!r}")
        remote = Remote(url=url, token=_read_token(token_file), timeout=timeout)
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
    ]
    for option in reversed(options):
        command = option(command)
    return command


# -- serve ---------------------------------------------------------------------------------


@cli.command()
@click.option("--id", "replica_id", required=True, help="This replica's id (stable per node).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on (0: any free port, printed at startup).",
)
@click.option("--memory", is_flag=True, help="Keep the state in memory only.")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the persistent state (SQLite)  [default: ./sphaera-data/ID].",
)
@click.option(
    "--durability",
    type=click.Choice(["full", "normal"]),
    default="full",
    show_default=True,
    help="full: an acknowledged write survives power loss; normal: a process crash.",
)
@click.option(
    "--peer", "peers", multiple=True, metavar="URL", help="A seed peer to gossip with (repeat)."
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"File holding the bearer token that clients and peers must send (or ${TOKEN_ENV}).",
)
@click.option(
    "--gossip-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Seconds between gossip rounds.",
)
@click.option(
    "--fanout",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Peers contacted per gossip round.",
)
@click.option(
    "--max-body",
    type=click.IntRange(min=1024),
    default=DEFAULT_MAX_BODY,
    show_default=True,
    help="Largest request body accepted, in bytes.",
)
@click.option("--insecure", is_flag=True, help="Allow a non-loopback address without a token.")
@click.option(
    "--tls-cert", type=click.Path(dir_okay=False), help="Serve HTTPS with this certificate."
)
@click.option("--tls-key", type=click.Path(dir_okay=False), help="The private key of --tls-cert.")
@click.option("--public-url", metavar="URL", help="The URL peers reach this node at.")
@click.option(
    "--liveness",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a replica stays alive without fresh observations [default: 10 intervals].",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="warning",
    show_default=True,
    help="Least severe log messages written to stderr.",
)
def serve(
    replica_id: str,
    host: str,
    port: int,
    memory: bool,
    data: Path | None,
    durability: str,
    peers: tuple[str, ...],
    token_file: Path | None,
    gossip_interval: float,
    fanout: int,
    max_body: int,
    insecure: bool,
    tls_cert: str | None,
    tls_key: str | None,
    public_url: str | None,
    liveness: float | None,
    log_level: str,
) -> None:
    """Serve one replica over HTTP and gossip with its peers.

    Prints one line with the URL it listens on (the real port when --port is 0) and runs
    until SIGINT or SIGTERM, then closes its connections and exits with status 0.
    """
    if memory and data is not None:
        raise BadConfig("give either --memory or --data, not both")
    data_dir = None if memory else str(data if data is not None else DEFAULT_DATA / replica_id)
    for url in (*peers, *([public_url] if public_url else [])):
        if not url.startswith(("http://", "https://")):
            raise BadConfig(f"a URL must start with http:// or https://, not {url!r}")
    try:
        names.check_replica_id(replica_id)
        config = NodeConfig(
            replica_id=replica_id,
            host=host,
            port=port,
            peers=peers,
            token=_read_token(token_file),
            gossip_interval=gossip_interval,
            fanout=fanout,
            max_body=max_body,
            insecure=insecure,
            tls_cert=tls_cert,
            tls_key=tls_key,
            public_url=public_url.rstrip("/") if public_url else None,
            liveness=liveness,
            data_dir=data_dir,
            durability=durability,
        )
    except SphaeraError as exc:
        raise BadConfig(str(exc)) from None
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(_serve(config))
    except KeyboardInterrupt:  # before the signal handlers were installed
        pass
    except ConfigError as exc:
        raise BadConfig(str(exc)) from None
    except SphaeraError as exc:
        raise Fail(str(exc)) from None
    except OSError as exc:
        raise Fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def _serve(config: NodeConfig) -> None:
    node = Node(config)  # opens (or refuses) the store
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with node:
            where = node.url
            if config.public_url:
                where += f" (bound to {config.host}:{config.port})"
            kept = f"data in {config.data_dir}" if config.data_dir else "memory"
            click.echo(f"sphaera: replica {config.replica_id} listening on {where} ({kept})")
            await stop.wait()
    finally:
        await node.close()  # idempotent; also cleans up after a failed start
        for signum in signals:
            loop.remove_signal_handler(signum)
    click.echo(f"sphaera: replica {config.replica_id} stopped")


# -- client commands -----------------------------------------------------------------------


@cli.command()
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print the JSON answer.")
def entities(remote: Remote, as_json: bool) -> None:
    """List every entity the node knows, with its derived status."""
    found = remote.call(lambda api: api.entities())
    if as_json:
        _echo_json({"entities": found})
        return
    table = Table("id", "kind", "status", "owner", "reason", box=None, header_style="bold")
    for entity_id, entity in sorted(found.items()):
        table.add_row(
            entity_id,
            str(entity.get("kind") or ""),
            _status_cell(entity.get("status")),
            str(entity.get("owner") or ""),
            str(entity.get("reason") or ""),
        )
    Console().print(table)


@cli.command()
@client_options
@click.argument("entity_id", metavar="ID")
def get(remote: Remote, entity_id: str) -> None:
    """Print one entity as JSON."""
    _echo_json(remote.call(lambda api: api.get(entity_id)))


@cli.command()
@client_options
@click.argument("entity_id", metavar="ID")
@click.option("--kind", help="The entity's kind.")
@click.option(
    "--attrs", metavar="JSON", callback=_json_value, help="Attributes, a JSON object (or @FILE)."
)
@click.option(
    "--requires", metavar="JSON", callback=_json_value, help="The constraint, as JSON (or @FILE)."
)
def put(
    remote: Remote,
    entity_id: str,
    kind: str | None,
    attrs: Any,
    requires: Any,
) -> None:
    """Declare (or re-declare) an entity, stating its whole record."""
    attributes = _object(attrs, "--attrs")
    _echo_json(
        remote.call(lambda api: api.put(entity_id, kind=kind, attrs=attributes, requires=requires))
    )


@cli.command()
@client_options
@click.argument("entity_id", metavar="ID")
@click.option(
    "--attrs",
    metavar="JSON",
    callback=_json_value,
    required=True,
    help="Attributes to set, a JSON object.",
)
def patch(remote: Remote, entity_id: str, attrs: Any) -> None:
    """Merge top-level attributes into an entity."""
    attributes = _object(attrs, "--attrs") or {}
    _echo_json(remote.call(lambda api: api.patch(entity_id, attributes)))


@cli.command()
@client_options
@click.argument("entity_id", metavar="ID")
def delete(remote: Remote, entity_id: str) -> None:
    """Retract an entity: it becomes absent on every replica."""
    answer = remote.call(lambda api: api.delete(entity_id))
    if answer is not None:
        _echo_json(answer)


@cli.command()
@client_options
@click.argument("entity_id", metavar="ID")
def why(remote: Remote, entity_id: str) -> None:
    """Explain an entity's status.

    Prints the tree of the clauses and facts that decided it, as JSON.
    """
    _echo_json(remote.call(lambda api: api.why(entity_id)))


@cli.command()
@client_options
@click.argument("subject", metavar="SUBJECT")
@click.option("--ok/--not-ok", default=True, show_default=True, help="What was observed.")
@click.option(
    "--value", metavar="JSON", callback=_json_value, help="A JSON value observed along (or @FILE)."
)
@click.option(
    "--ttl", type=click.FloatRange(min=0), help="Seconds after which the observation expires."
)
def observe(
    remote: Remote,
    subject: str,
    ok: bool,
    value: Any,
    ttl: float | None,
) -> None:
    """Record the node's observation of SUBJECT."""
    _echo_json(remote.call(lambda api: api.observe(subject, ok=ok, value=value, ttl=ttl)))


@cli.command()
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print the JSON answer.")
def replicas(remote: Remote, as_json: bool) -> None:
    """List the replicas the node knows, with their liveness."""
    answer = remote.call(lambda api: api.replicas())
    if as_json:
        _echo_json(answer)
        return
    me = answer.get("self")
    table = Table("replica", "url", "status", box=None, header_style="bold")
    for replica_id, info in sorted(answer.get("replicas", {}).items()):
        table.add_row(
            f"{replica_id} (self)" if replica_id == me else replica_id,
            str(info.get("url") or ""),
            _status_cell(info.get("status")),
        )
    Console().print(table)


@cli.command()
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print each event as one JSON line.")
def events(remote: Remote, as_json: bool) -> None:
    """Stream status changes as they are derived (until Ctrl-C).

    Starts with the current status of every entity, then prints one line per change.
    """

    async def stream(api: ApiClient) -> None:
        async for name, data in api.events():
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
        remote.call(stream)


@cli.command()
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=0.1,
    show_default=True,
    help="Gossip interval of the demo nodes.",
)
def demo(interval: float) -> None:
    """Run three nodes in this process and watch them converge.

    The nodes listen on free loopback ports and gossip over HTTP; the demo narrates
    what each replica derives by itself, then stops them.
    """
    from .demo import run_demo

    # The narration says what happens; a stopped node's failing peers need no warnings.
    logger = logging.getLogger("sphaera_crdt")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        asyncio.run(run_demo(interval=interval, echo=click.echo))
    except KeyboardInterrupt:
        pass
    except SphaeraError as exc:
        raise Fail(str(exc)) from None
    finally:
        logger.setLevel(level)


# -- benchmarks ----------------------------------------------------------------------------


def _list_of(
    kind: Callable[[str], T],
) -> Callable[[click.Context, click.Parameter, str], tuple[T, ...]]:
    """A click callback that reads a comma-separated list."""

    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[T, ...]:
        try:
            items = tuple(kind(item.strip()) for item in value.split(",") if item.strip())
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list, not {value!r}") from None
        if not items:
            raise click.BadParameter("expected at least one value")
        return items

    return parse


@cli.group()
def bench() -> None:
    """Benchmarks on the deterministic simulator (see benchmarks/README.md)."""


@bench.command("convergence")
@click.option(
    "--replicas",
    default="10,100",
    show_default=True,
    callback=_list_of(int),
    help="Replica counts N, comma-separated.",
)
@click.option(
    "--fanout",
    default="1,2,3",
    show_default=True,
    callback=_list_of(int),
    help="Gossip fanouts, comma-separated.",
)
@click.option(
    "--loss",
    default="0,0.1",
    show_default=True,
    callback=_list_of(float),
    help="Message loss probabilities, comma-separated.",
)
@click.option(
    "--partition",
    default="0",
    show_default=True,
    callback=_list_of(int),
    help="Partition group counts during the changes (0: none), comma-separated.",
)
@click.option(
    "--crashes",
    default="0",
    show_default=True,
    callback=_list_of(int),
    help="Replicas that crash during the changes (half keep a store), comma-separated.",
)
@click.option(
    "--entities",
    default="20",
    show_default=True,
    callback=_list_of(int),
    help="Entities in the base state, comma-separated.",
)
@click.option(
    "--changes",
    default="10",
    show_default=True,
    callback=_list_of(int),
    help="Changes made in the burst, comma-separated.",
)
@click.option(
    "--strategies",
    default="gossip,gossip-rounds,full-state,naive",
    show_default=True,
    callback=_list_of(str),
    help="Strategies to compare (the ideal epidemic always runs).",
)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Runs per combination (different draws, same sizes).",
)
@click.option(
    "--ideal-trials",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Runs of the ideal epidemic per N, fanout and loss.",
)
@click.option(
    "--duplicate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Probability that a message arrives twice.",
)
@click.option(
    "--reorder",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Probability that a message is held back and overtaken.",
)
@click.option(
    "--naive-max",
    type=click.IntRange(min=2),
    default=200,
    show_default=True,
    help="Skip naive forwarding above this N (it sends O(N^2) messages).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every draw.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=min(2, os.cpu_count() or 1),
    show_default=True,
    help="Worker processes.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for the JSON files and the PNG plots.",
)
@click.option("--no-plots", is_flag=True, help="Write JSON only.")
@click.option(
    "--profile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Run in this process under cProfile and write the stats to this file.",
)
def convergence(
    replicas: tuple[int, ...],
    fanout: tuple[int, ...],
    loss: tuple[float, ...],
    partition: tuple[int, ...],
    crashes: tuple[int, ...],
    entities: tuple[int, ...],
    changes: tuple[int, ...],
    strategies: tuple[str, ...],
    trials: int,
    ideal_trials: int,
    duplicate: float,
    reorder: float,
    naive_max: int,
    seed: int,
    jobs: int,
    out: Path,
    no_plots: bool,
    profile: Path | None,
) -> None:
    """Compare the gossip with full-state push-pull, naive forwarding and the ideal
    epidemic on simulated replicas: rounds and time to identical state and to status
    agreement, bytes, messages, status flips, the window after a partition heals.

    Writes OUT/convergence.json (every figure of every run; identical for one seed),
    OUT/summary.json (the same without the runs), OUT/timings.json (wall-clock run times)
    and PNG plots, and prints the tables and the goals.
    """
    from .sim import bench

    try:
        sweep = bench.Sweep(
            replicas=replicas,
            fanouts=fanout,
            losses=loss,
            partitions=partition,
            crashes=crashes,
            entities=entities,
            changes=changes,
            strategies=strategies,
            trials=trials,
            seed=seed,
            duplicate=duplicate,
            reorder=reorder,
            ideal_trials=ideal_trials,
            naive_max=naive_max,
        )
    except ValueError as exc:
        raise BadConfig(str(exc)) from None
    try:
        bench.run_convergence(
            sweep, out=out, jobs=jobs, plots=not no_plots, profile=profile, console=Console()
        )
    except OSError as exc:
        raise Fail(f"cannot write results: {exc}") from None
