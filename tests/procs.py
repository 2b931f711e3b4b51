"""Real ``python -m sphaera_crdt serve`` processes for the network tests.

Processes keep their state in memory unless ``--data`` is among their arguments.

Each process listens on 127.0.0.1; with ``--port 0`` the port is learnt from the line the
command prints at startup. :class:`Processes` kills whatever it started when it closes,
whatever happened in between.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Final

LISTENING: Final = re.compile(r"^sphaera: replica (\S+) listening on (\S+)")
#: With --public-url, the line also names the address the node is bound to.
BOUND: Final = re.compile(r"\(bound to (\S+):(\d+)\)")
START_TIMEOUT: Final = 20.0


class NodeProcess:
    """One ``sphaera serve`` process."""

    def __init__(self, name: str, popen: subprocess.Popen[str], stderr: IO[str]) -> None:
        self.name = name
        self.popen = popen
        self._stderr = stderr
        self.url = ""
        #: where the process itself listens (``url`` unless --public-url names another)
        self.bound_url = ""

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def wait_listening(self, timeout: float = START_TIMEOUT) -> str:
        """Read the startup line; return the URL it names."""
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.popen.stdout], [], [], 0.1)
            if ready:
                line = self.popen.stdout.readline()
                match = LISTENING.match(line)
                if match:
                    self.url = match.group(2)
                    bound = BOUND.search(line)
                    self.bound_url = (
                        f"http://{bound.group(1)}:{bound.group(2)}" if bound else self.url
                    )
                    return self.url
                if not line:
                    break
            if self.popen.poll() is not None:
                break
        raise AssertionError(f"{self.name} did not start: {self.stderr()}")

    def stderr(self) -> str:
        self._stderr.flush()
        return Path(self._stderr.name).read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait; returns the exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"{self.name} did not stop on SIGTERM") from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._stderr.close()


class Processes:
    """Starts node processes and kills them all on :meth:`close`."""

    def __init__(self) -> None:
        self.started: list[NodeProcess] = []
        self._dir = tempfile.TemporaryDirectory(prefix="sphaera-procs-")

    def start(
        self,
        name: str,
        *,
        port: int = 0,
        peers: Iterable[str] = (),
        args: Iterable[str] = (),
        wait: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> NodeProcess:
        """Start ``sphaera serve --id name``; ``env`` adds to an environment without the
        caller's ``SPHAERA_*`` variables."""
        args = list(args)
        command = [
            sys.executable,
            "-m",
            "sphaera_crdt",
            "serve",
            "--id",
            name,
            *([] if "--data" in args else ["--memory"]),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *[arg for url in peers for arg in ("--peer", url)],
            *args,
        ]
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("SPHAERA_")
        }
        environment.update(env or {})
        stderr = open(  # closed by NodeProcess.kill
            Path(self._dir.name) / f"{name}-{len(self.started)}.log", "w+", encoding="utf-8"
        )
        popen = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=environment
        )
        process = NodeProcess(name, popen, stderr)
        self.started.append(process)
        if wait:
            process.wait_listening()
        return process

    def close(self) -> None:
        for process in self.started:
            process.kill()
        self._dir.cleanup()
