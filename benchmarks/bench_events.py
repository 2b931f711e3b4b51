"""Event fan-out benchmark: how long a write that changes many statuses takes to answer
with and without open ``/v1/events`` streams.

Run it from the repository root::

    python benchmarks/bench_events.py                 # 150 streams, 300 dependents
    python benchmarks/bench_events.py --streams 50 --dependents 100 --writes 5

A ``sphaera serve --memory`` process holds ``root`` and N entities that require it. Each
measured write retracts or re-declares ``root`` (alternately), which changes N + 1
statuses; the figure is the median time from sending the write until its answer, each
write alone (a pause after each lets the streams send its events first). It is
taken with no stream open, then with S streams open and drained by a separate reader
process (so that reading them costs this process nothing), and the ratio is printed.
Goal: the ratio is at most 3.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Final

import aiohttp

LISTENING: Final = re.compile(r"listening on (\S+)")
JSON: Final = {"Content-Type": "application/json"}
#: Seconds between measured writes.
PAUSE: Final = 0.25


def start_node() -> tuple[subprocess.Popen[str], str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SPHAERA_")}
    command = [sys.executable, "-m", "sphaera_crdt", "serve", "--id", "bench", "--memory"]
    command += ["--host", "127.0.0.1", "--port", "0", "--gossip-interval", "3600"]
    popen = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert popen.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ready, _, _ = select.select([popen.stdout], [], [], 0.1)
        if ready:
            match = LISTENING.search(popen.stdout.readline())
            if match:
                return popen, match.group(1)
        if popen.poll() is not None:
            break
    popen.kill()
    raise SystemExit("the node did not start")


async def drain(url: str, streams: int) -> None:
    """Reader mode: open ``streams`` event streams and read them until killed."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        responses = [await session.get(url + "/v1/events") for _ in range(streams)]
        print("open", flush=True)

        async def read(response: aiohttp.ClientResponse) -> None:
            while await response.content.readany():
                pass

        await asyncio.gather(*(read(response) for response in responses))


async def timed_writes(session: aiohttp.ClientSession, url: str, writes: int) -> list[float]:
    """Seconds each write took to be answered; each changes every dependent's status."""
    seconds = []
    for index in range(writes):
        started = time.perf_counter()
        if index % 2 == 0:
            response = await session.delete(url + "/v1/entities/root")
        else:
            response = await session.put(url + "/v1/entities/root", data=b"{}", headers=JSON)
        await response.read()
        seconds.append(time.perf_counter() - started)
        assert response.status in (200, 201), response.status
        # Each write is measured alone: the streams send the last one's events meanwhile.
        await asyncio.sleep(PAUSE)
    return seconds


async def prepare(url: str, dependents: int) -> None:
    async with aiohttp.ClientSession() as session:
        await session.put(url + "/v1/entities/root", data=b"{}", headers=JSON)
        body = b'{"requires": {"exists": "root"}}'
        for index in range(dependents):
            await session.put(url + f"/v1/entities/dep{index}", data=body, headers=JSON)


async def measure(url: str, writes: int) -> float:
    """The median time to answer a write (after two writes to warm up)."""
    async with aiohttp.ClientSession() as session:
        await timed_writes(session, url, 2)
        return statistics.median(await timed_writes(session, url, writes))


def open_streams(url: str, streams: int) -> subprocess.Popen[str]:
    """A reader process holding ``streams`` open streams and draining them."""
    reader = subprocess.Popen(
        [sys.executable, __file__, "--drain", url, "--streams", str(streams)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert reader.stdout is not None
    if reader.stdout.readline().strip() != "open":
        reader.kill()
        raise SystemExit("the reader did not open its streams")
    return reader


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=150)
    parser.add_argument("--dependents", type=int, default=300)
    parser.add_argument("--writes", type=int, default=9)
    parser.add_argument("--drain", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drain:
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            asyncio.run(drain(args.drain, args.streams))
        return 0
    popen, url = start_node()
    try:
        asyncio.run(prepare(url, args.dependents))
        alone = asyncio.run(measure(url, args.writes))
        reader = open_streams(url, args.streams)
        try:
            streamed = asyncio.run(measure(url, args.writes))
        finally:
            reader.send_signal(signal.SIGTERM)
            reader.wait()
    finally:
        popen.send_signal(signal.SIGTERM)
        popen.wait()
    ratio = streamed / alone
    changes = args.dependents + 1
    print(f"write changing {changes} statuses, median of {args.writes}:")
    print(f"  no streams         {alone * 1000:8.1f} ms")
    print(f"  {args.streams:3d} streams        {streamed * 1000:8.1f} ms")
    verdict = "PASS" if ratio <= 3 else "MISS"
    print(f"  ratio              {ratio:8.2f}   (goal <= 3: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
