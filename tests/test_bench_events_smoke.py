"""Smoke test: the event fan-out benchmark runs end to end at a small scale and prints
every figure, sane (whether its goal is met is the benchmark's to say).

It starts a node and a stream reader as processes, and pauses after each measured write.
"""

from __future__ import annotations

import re

import pytest
from figures import positive, run_benchmark

pytestmark = pytest.mark.slow

STREAMS = 5
DEPENDENTS = 10
WRITES = 3


def test_bench_events_small_prints_every_figure() -> None:
    printed = run_benchmark(
        "bench_events.py",
        *("--streams", str(STREAMS), "--dependents", str(DEPENDENTS), "--writes", str(WRITES)),
        timeout=120,
    )
    assert f"write changing {DEPENDENTS + 1} statuses, median of {WRITES}:" in printed
    alone = re.search(r"^  no streams +(\S+) ms$", printed, re.MULTILINE)
    streamed = re.search(rf"^ +{STREAMS} streams +(\S+) ms$", printed, re.MULTILINE)
    ratio = re.search(r"^  ratio +(\S+) +\(goal <= 3: (PASS|MISS)\)$", printed, re.MULTILINE)
    assert alone and streamed and ratio, printed
    alone_ms = positive(float(alone.group(1)), "no streams, ms")
    streamed_ms = positive(float(streamed.group(1)), "streams, ms")
    value = positive(float(ratio.group(1)), "ratio")
    # The printed ratio is streamed / alone, up to the rounding of the printed figures.
    low = (streamed_ms - 0.05) / (alone_ms + 0.05) - 0.005
    high = (streamed_ms + 0.05) / max(alone_ms - 0.05, 1e-9) + 0.005
    assert low <= value <= high, printed
    # The verdict is the one the ratio gives (printed to two decimals, compared unrounded).
    assert value <= 3 if ratio.group(2) == "PASS" else value >= 3, printed
