"""The goals a convergence sweep is judged against, computed from its own summary.

Each goal is checked wherever the sweep has the runs it needs, and each check is one
JSON object: the goal, the group of runs (strategy, sizes, loss, ...), the measured value,
the limit, whether it passed (``None``: not measured, never counted as a pass) and a note:
for a miss, one line on why (which bound the measurement broke, and what the other
figures of the run say about the cause); for a check not measured, what was missing.

rounds
    Mean rounds to identical state at most 1.25x the ideal push-pull epidemic's mean at
    the same N, fanout and loss, and p99 at most the ideal p99 + 2 (runs without
    partitions or crashes).
bytes per change
    Update bytes delivered until identical state, per change and receiving replica, at most
    1.10x the raw Yrs diff of the changes (``pycrdt.merge_updates`` of every transaction
    the writers committed); the rest of each message is its envelope (framing and state
    vectors), reported per message. The goal is judged on what arrived: with loss ``p``
    the bytes sent cannot go below ``1 / (1 - p)`` of the bytes delivered (a lost copy was
    sent and has to be sent again), so the bytes sent (lost ones included) are reported
    beside, as context, with that floor.
vs full state
    For 1% of 10,000 or more entities changed, the project's gossip sends at least 20x
    fewer bytes than full-state push-pull, both until identical state and over the whole
    episode (until the idle rounds).
vs naive
    From N = 10 on, fewer bytes than naive forwarding (both measures), wherever naive
    forwarding converged (it never repairs a partition or a replica that restarted empty).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

__all__ = ["GOALS", "evaluate_goals"]

GOSSIP: Final = ("gossip", "gossip-rounds")
ROUNDS_FACTOR: Final = 1.25
P99_SLACK: Final = 2
PAYLOAD_FACTOR: Final = 1.10
FULL_STATE_FACTOR: Final = 20.0
GOALS: Final = ("rounds", "bytes per change", "vs full state", "vs naive")
_WHERE: Final = (
    "strategy",
    "replicas",
    "fanout",
    "loss",
    "partition",
    "crashes",
    "entities",
    "changes",
)


def _label(row: dict[str, Any]) -> str:
    text = f"{row['strategy']} N={row['replicas']} f={row['fanout']} loss={row['loss']:g}"
    if row["partition"]:
        text += f" part={row['partition']}"
    if row["crashes"]:
        text += f" crash={row['crashes']}"
    return text + f" E={row['entities']} C={row['changes']}"


def _check(
    goal: str,
    row: dict[str, Any],
    measured: Any,
    limit: Any,
    passed: bool | None,
    *,
    measured_text: str,
    limit_text: str,
    note: str = "",
) -> dict[str, Any]:
    return {
        "goal": goal,
        "where": {name: row[name] for name in _WHERE},
        "label": _label(row),
        "measured": measured,
        "limit": limit,
        "passed": passed,
        "measured_text": measured_text,
        "limit_text": limit_text,
        "note": note,
    }


def _plain(row: dict[str, Any]) -> bool:
    return not row["partition"] and not row["crashes"]


def _rounds(summary: list[dict[str, Any]], ideal: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    baseline = {
        (item["replicas"], item["fanout"], item["loss"], item["rumors"]): item["push-pull"][
            "rounds"
        ]
        for item in ideal
    }
    for row in summary:
        if row["strategy"] not in GOSSIP or not _plain(row):
            continue
        key = (row["replicas"], row["fanout"], row["loss"], max(1, row["changes"]))
        reference = baseline.get(key)
        rounds = row["state_rounds"]
        if reference is None or rounds["mean"] is None:
            yield _check(
                "rounds",
                row,
                None,
                None,
                None,
                measured_text="-",
                limit_text="-",
                note="not measured",
            )
            continue
        mean_limit = round(ROUNDS_FACTOR * reference["mean"], 3)
        p99_limit = reference["p99"] + P99_SLACK
        passed = rounds["mean"] <= mean_limit and rounds["p99"] <= p99_limit
        incomplete = row["converged"] < row["trials"]
        yield _check(
            "rounds",
            row,
            {"mean": rounds["mean"], "p99": rounds["p99"], "trials": rounds["count"]},
            {
                "mean": mean_limit,
                "p99": p99_limit,
                "ideal_mean": reference["mean"],
                "ideal_p99": reference["p99"],
            },
            passed and not incomplete,
            measured_text=f"mean {rounds['mean']:.2f}, p99 {rounds['p99']:g} "
            f"({rounds['count']} runs)",
            limit_text=f"mean <= {mean_limit:.2f}, p99 <= {p99_limit:g} "
            f"(ideal {reference['mean']:.2f}, {reference['p99']:g})",
            note=_rounds_note(row, rounds, mean_limit, p99_limit, reference, incomplete=incomplete),
        )


def _rounds_note(
    row: dict[str, Any],
    rounds: dict[str, Any],
    mean_limit: float,
    p99_limit: float,
    reference: dict[str, Any],
    *,
    incomplete: bool,
) -> str:
    """Why a rounds check missed: the bounds it broke ("" when it passed)."""
    reasons = []
    if incomplete:
        reasons.append(
            f"{row['trials'] - row['converged']} of {row['trials']} trials did not converge"
        )
    if rounds["mean"] > mean_limit:
        reasons.append(
            f"mean {rounds['mean']:.2f} > {mean_limit:.2f} "
            f"({ROUNDS_FACTOR:g}x the ideal's {reference['mean']:.2f})"
        )
    if rounds["p99"] > p99_limit:
        reasons.append(f"p99 {rounds['p99']:g} > ideal p99 {reference['p99']:g} + {P99_SLACK}")
    # The first reason was the note before misses were explained; keep its wording.
    return (
        "some trials did not converge" if incomplete and len(reasons) == 1 else "; ".join(reasons)
    )


def _bytes_per_change(summary: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for row in summary:
        if row["strategy"] not in GOSSIP or not _plain(row) or not row["changes"]:
            continue
        sent = row["payload_ratio_to_state"]
        delivered = row["delivered_ratio_to_state"]
        measured = {
            "payload_ratio_to_state": sent,
            "payload_ratio_episode": row["payload_ratio"],
            "delivered_ratio_to_state": delivered,
            "envelope_per_message": row["envelope_per_message"],
            "raw_diff_per_change": row["raw_diff_per_change"],
        }
        text = "-" if delivered is None else f"delivered {delivered:.2f}x raw"
        if sent is not None:
            text += f" (sent {sent:.2f}x"
            if row["payload_ratio"] is not None:
                text += f", episode {row['payload_ratio']:.2f}x"
            text += ")"
        if row["envelope_per_message"] is not None:
            text += f", envelope {row['envelope_per_message']:.0f} B/msg"
        # Bytes lost on the way are bytes sent: with loss p, every receiver's copy costs
        # 1 / (1 - p) copies sent at the very least, so the goal is judged on what arrived.
        floor = 1 / (1 - row["loss"])
        passed = None if delivered is None else delivered <= PAYLOAD_FACTOR
        if passed is False:
            # Without duplicates the updates carried sum to the raw diff plus 1-2% (the
            # diff merges what the updates carry one by one): the rest arrived twice.
            note = (
                f"delivered {delivered:.2f}x > {PAYLOAD_FACTOR:.2f}x raw: duplicates "
                "(two peers sent one change within a round trip)"
            )
        elif row["loss"]:
            note = f"lost messages count as sent: {floor:.2f}x raw is the floor of bytes sent"
        else:
            note = ""
        yield _check(
            "bytes per change",
            row,
            measured,
            {
                "payload_ratio": PAYLOAD_FACTOR,
                "loss_floor": round(floor, 3),
                "judged_on": "delivered_ratio_to_state",
            },
            passed,
            measured_text=text,
            limit_text=f"delivered <= {PAYLOAD_FACTOR:.2f}x raw + envelope",
            note=note,
        )


def _against(
    summary: list[dict[str, Any]],
    other: str,
    goal: str,
    applies: Callable[[dict[str, Any]], bool],
    factor: float,
    *,
    strict: bool = False,
) -> Iterable[dict[str, Any]]:
    """``other``'s bytes over the gossip's: at least ``factor`` (more than, if ``strict``)."""
    index = {
        _peer_key(row, with_fanout=other != "naive"): row
        for row in summary
        if row["strategy"] == other
    }
    limit_text = f"{'>' if strict else '>='} {factor:g}x"
    for row in summary:
        if row["strategy"] not in GOSSIP or not applies(row):
            continue
        peer = index.get(_peer_key(row, with_fanout=other != "naive"))
        if peer is None or peer["converged"] < peer["trials"]:
            # Bytes of a strategy that never converges (naive forwarding cannot repair a
            # partition or a replica that restarted empty) are no yardstick.
            note = (
                f"no {other} runs to compare with"
                if peer is None
                else f"{other} did not converge in every trial"
            )
            yield _check(
                goal, row, None, None, None, measured_text="-", limit_text=limit_text, note=note
            )
            continue
        ratios = {
            measure: _ratio(peer[measure], row[measure])
            for measure in ("bytes_to_state", "bytes_episode")
        }
        present = [value for value in ratios.values() if value is not None]
        passed = bool(present) and all(
            value > factor if strict else value >= factor for value in present
        )
        text = ", ".join(
            f"{name.removeprefix('bytes_').replace('_', ' ')} {value:.2f}x"
            for name, value in ratios.items()
            if value is not None
        )
        low = [
            f"{value:.2f}x {row['strategy']}'s bytes "
            + ("until identical state" if name == "bytes_to_state" else "over the episode")
            for name, value in ratios.items()
            if value is not None and not (value > factor if strict else value >= factor)
        ]
        note = "" if passed else f"{other} sent only {' and '.join(low) or 'nothing measured'}"
        yield _check(
            goal,
            row,
            ratios,
            {"ratio": factor, "strict": strict},
            passed,
            measured_text=f"{other}/{row['strategy']}: {text or '-'}",
            limit_text=limit_text,
            note=note,
        )


def _peer_key(row: dict[str, Any], *, with_fanout: bool) -> tuple[Any, ...]:
    names = ["replicas", "loss", "partition", "crashes", "entities", "changes"]
    if with_fanout:
        names.append("fanout")
    return tuple(row[name] for name in names)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def evaluate_goals(
    summary: list[dict[str, Any]], ideal: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every check of every goal the summary has runs for."""
    checks = [*_rounds(summary, ideal), *_bytes_per_change(summary)]
    checks.extend(
        _against(
            summary,
            "full-state",
            "vs full state",
            lambda row: row["entities"] >= 10_000 and row["changes"] * 100 == row["entities"],
            FULL_STATE_FACTOR,
        )
    )
    checks.extend(
        _against(summary, "naive", "vs naive", lambda row: row["replicas"] >= 10, 1.0, strict=True)
    )
    return checks
