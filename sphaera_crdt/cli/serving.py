"""``sphaera serve``: build a :class:`~sphaera_crdt.node.NodeConfig` from the flags and
run a :class:`~sphaera_crdt.node.Node` until SIGINT or SIGTERM; ``sphaera demo``: three
nodes in this process."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import click

from ..config import DEFAULT_FORGET_AFTER, DEFAULT_MAX_BODY, DEFAULT_PORT, NodeConfig
from ..core import names
from ..core.formulas import DEFAULT_MAX_SKEW
from ..errors import ConfigError, SphaeraError
from ..node import Node
from .app import DEFAULT_DATA, TOKEN_ENV, BadConfig, Fail, read_token

__all__ = ["CLOCK_OFFSET_ENV", "demo", "serve"]

#: Seconds added to the node's clock: the fault tests run nodes whose clocks are off with it.
CLOCK_OFFSET_ENV: Final = "SPHAERA_CLOCK_OFFSET"


# -- serve ---------------------------------------------------------------------------------


@click.command()
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
@click.option(
    "--max-held-bytes",
    type=click.IntRange(min=0),
    help="Bytes of updates held for missing predecessors at most; the oldest are dropped "
    "first [default: 4x --max-body].",
)
@click.option("--insecure", is_flag=True, help="Allow a non-loopback address without a token.")
@click.option(
    "--tls-cert", type=click.Path(dir_okay=False), help="Serve HTTPS with this certificate."
)
@click.option("--tls-key", type=click.Path(dir_okay=False), help="The private key of --tls-cert.")
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False),
    help="CA that https peers' certificates must verify under (default: the system's).",
)
@click.option(
    "--tls-require-client-cert",
    is_flag=True,
    help="Callers must present a certificate under --tls-ca (mutual TLS).",
)
@click.option(
    "--allow-peer",
    "allow_peers",
    multiple=True,
    metavar="HOST|CIDR",
    help="Also send the token to peers at this host or network (repeat); "
    "seeds' hosts and loopback always are.",
)
@click.option("--public-url", metavar="URL", help="The URL peers reach this node at.")
@click.option(
    "--run-probes", is_flag=True, help="Run the probes replicated records ask this node to run."
)
@click.option("--allow-exec", is_flag=True, help="Run exec probes too (needs --run-probes).")
@click.option(
    "--probe-allow",
    multiple=True,
    metavar="HOST|CIDR",
    help="A host or network http and tcp probes may contact (repeat) [default: loopback].",
)
@click.option(
    "--liveness",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a replica stays alive without fresh observations [default: 10 intervals].",
)
@click.option(
    "--max-clock-skew",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_MAX_SKEW,
    show_default=True,
    help="Seconds clocks may differ: observations dated further ahead do not count, and a "
    "node this far from most of its live peers refuses observations.",
)
@click.option(
    "--forget-after",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_FORGET_AFTER,
    show_default=True,
    help="Seconds of silence after which a replica is forgotten by every replica.",
)
@click.option(
    "--trust",
    "trust_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Turn on signed mode: only writers this file lists (ID PUBLIC-KEY lines, see "
    "sphaera key) count and are peers; re-read on SIGHUP and when it changes.",
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="This replica's signing key file [default with --data: DIR/replica.key, made on "
    "first start]; needed with --memory in signed mode.",
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
    max_held_bytes: int | None,
    insecure: bool,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    tls_require_client_cert: bool,
    allow_peers: tuple[str, ...],
    public_url: str | None,
    run_probes: bool,
    allow_exec: bool,
    probe_allow: tuple[str, ...],
    liveness: float | None,
    max_clock_skew: float,
    forget_after: float,
    trust_file: Path | None,
    key_file: Path | None,
    log_level: str,
) -> None:
    """Serve one replica over HTTP and gossip with its peers.

    Prints one line with the URL it listens on (the real port when --port is 0) and runs
    until SIGINT or SIGTERM, then closes its connections and exits with status 0. With
    --trust it runs in signed mode, and SIGHUP makes it read the trust file again.
    """
    if memory and data is not None:
        raise BadConfig("give either --memory or --data, not both")
    if memory and trust_file is not None and key_file is None:
        raise BadConfig("--trust with --memory needs --key FILE (the replica's signing key)")
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
            token=read_token(token_file),
            gossip_interval=gossip_interval,
            fanout=fanout,
            max_body=max_body,
            max_held_bytes=max_held_bytes,
            insecure=insecure,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_ca=tls_ca,
            tls_require_client_cert=tls_require_client_cert,
            allow_peers=allow_peers,
            public_url=public_url.rstrip("/") if public_url else None,
            liveness=liveness,
            max_clock_skew=max_clock_skew,
            forget_after=forget_after,
            data_dir=data_dir,
            durability=durability,
            run_probes=run_probes,
            allow_exec=allow_exec,
            probe_allow=probe_allow,
            trust_file=None if trust_file is None else str(trust_file),
            key_file=None if key_file is None else str(key_file),
        )
    except SphaeraError as exc:
        raise BadConfig(str(exc)) from None
    # Checked here, so that a bad value stops the command before anything starts.
    clock = node_clock(os.environ.get(CLOCK_OFFSET_ENV))
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if clock is not time.time:
        logging.getLogger("sphaera_crdt.node").warning(
            "the clock is shifted by %s=%s s", CLOCK_OFFSET_ENV, os.environ[CLOCK_OFFSET_ENV]
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


def node_clock(offset: str | None) -> Callable[[], float]:
    """The node's clock: ``time.time``, shifted by ``offset`` seconds if one is given.

    Every time the node reads (observation dates, freshness, deadlines) comes from this
    clock, so a shifted node behaves as one on a machine whose clock is off; the fault
    tests set :data:`CLOCK_OFFSET_ENV` to run one.

    Raises:
        BadConfig: ``offset`` is not a finite number.
    """
    if offset is None or not offset.strip():
        return time.time
    try:
        seconds = float(offset)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise BadConfig(f"{CLOCK_OFFSET_ENV} must be a number of seconds, not {offset!r}")
    return lambda: time.time() + seconds


async def _serve(config: NodeConfig) -> None:
    clock = node_clock(os.environ.get(CLOCK_OFFSET_ENV))
    node = Node(config, clock=clock)  # opens (or refuses) the store
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    # SIGHUP re-reads the trust file (without one, the node says so rather than stopping).
    reload = (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()
    for signum in reload:
        loop.add_signal_handler(signum, node.reload_trust)
    try:
        async with node:
            where = node.url
            if config.public_url:
                where += f" (bound to {config.host}:{node.port})"
            kept = f"data in {config.data_dir}" if config.data_dir else "memory"
            if node.trust_digest is not None:
                kept += f", signed mode, trust {node.trust_digest}"
            click.echo(f"sphaera: replica {config.replica_id} listening on {where} ({kept})")
            await stop.wait()
    finally:
        await node.close()  # idempotent; also cleans up after a failed start
        for signum in (*signals, *reload):
            loop.remove_signal_handler(signum)
    click.echo(f"sphaera: replica {config.replica_id} stopped")


@click.command()
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
    from ..demo import run_demo

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
