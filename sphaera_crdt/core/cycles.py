"""Solving a cyclic component: the well-founded model of its members.

Everything a component depends on outside it is solved first (the existence engine goes
in dependency order), so its members' rules only leave the members themselves open:

* with no member under a negation (counting ``not`` parity), Kleene evaluation is monotone
  in the members, and iterating it from all false reaches the least fixpoint, which is the
  well-founded model (an unsupported positive cycle stays false);
* otherwise iterating it from all unknown reaches Fitting's model, which the well-founded
  model extends: when it decides every member, that is the answer; when it does not, Van
  Gelder's alternating fixpoint of lower and upper bounds settles it, leaving undetermined
  what no stratification resolves.

Small components are iterated in rounds, larger ones with a worklist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from .compiler import Compiled
from .engine_state import EngineState
from .formulas import FALSE, INF, TRUE, UNKNOWN, Node

__all__ = ["ROUNDS", "negates_member", "settle", "solve_cycle"]

#: Components with at most this many rules are iterated in rounds rather than a worklist.
ROUNDS: Final = 8


def settle(
    nodes: Iterable[tuple[str, Node]], status: dict[str, int], kleene: Callable[[Node], int]
) -> None:
    """Evaluate every ``(member, node)`` in turn, writing ``status`` (FALSE by absence),
    until a whole pass changes nothing."""
    changed = True
    while changed:
        changed = False
        for member, node in nodes:
            value = kleene(node)
            if value != status.get(member, FALSE):
                if value:
                    status[member] = value
                else:
                    del status[member]
                changed = True


def solve_cycle(engine: EngineState, members: list[str]) -> dict[str, int]:
    """The well-founded model of one cyclic component (statuses below it are final)."""
    evaluator = engine.evaluator
    evaluator.deadline = INF
    inside = set(members)
    facts: dict[str, int] = {}
    rules: dict[str, Node] = {}
    negates = False
    records = engine.view.records
    engine_rules = engine.rules
    for member in members:
        # _base, inline; a compiled rule is only ever kept for a live record.
        rule = engine_rules.get(member)
        if type(rule) is Compiled:
            rules[member] = rule.node
            negates = negates or rule.negates
            continue
        record = records.get(member)
        if record is None or record.retracted:
            facts[member] = FALSE
        elif rule is None:
            facts[member] = TRUE
        else:
            facts[member] = UNKNOWN
    # Small components are iterated in rounds; larger ones keep a worklist.
    local_rdeps = None if len(rules) <= ROUNDS else _local_rdeps(engine, rules, inside)
    if negates and any(negates_member(node, inside, False) for node in rules.values()):
        # Kleene iteration from all unknown gives Fitting's model, which the
        # well-founded one extends: when it decides every member, they agree.
        values = _iterate(engine, members, facts, rules, local_rdeps, UNKNOWN)
        if any(values[member] == UNKNOWN for member in rules):
            if local_rdeps is None:
                local_rdeps = _local_rdeps(engine, rules, inside)
            values = _alternating_fixpoint(engine, members, inside, facts, rules, local_rdeps)
    else:
        values = _iterate(engine, members, facts, rules, local_rdeps, FALSE)
    deadline = evaluator.deadline
    if deadline == INF:
        for member in members:
            engine.deadline.pop(member, None)
    else:
        for member in members:
            engine._set_deadline(member, deadline)
    return values


def _local_rdeps(
    engine: EngineState, rules: dict[str, Node], inside: set[str]
) -> dict[str, list[str]]:
    """Dependents inside a component, for each member."""
    local_rdeps: dict[str, list[str]] = {member: [] for member in inside}
    targets = engine._targets
    for member in rules:
        for dep in targets(member):
            if dep in inside:
                local_rdeps[dep].append(member)
    return local_rdeps


def _iterate(
    engine: EngineState,
    members: list[str],
    facts: dict[str, int],
    rules: dict[str, Node],
    local_rdeps: dict[str, list[str]] | None,
    start: int,
) -> dict[str, int]:
    """Kleene iteration over a component from every rule at ``start``.

    From ``FALSE``, for a component whose rules mention none of its members under a
    negation: Kleene evaluation is then monotone in the members (false < unknown <
    true), and the iteration reaches its least fixpoint, which is the well-founded
    model: true where the lower bounds derive it, unknown where only the upper bounds
    do, false where neither does (an unsupported positive cycle). From ``UNKNOWN``:
    evaluation is monotone in knowledge (unknown below true and false) whatever the
    negations, and the iteration reaches Fitting's model.

    In rounds over every rule until one changes nothing, or, given ``local_rdeps``, a
    worklist: a member is re-evaluated when one of its dependencies inside changed.
    The members' statuses are set while iterating and restored after.
    """
    status = engine.status
    kleene = engine.evaluator.kleene
    saved = {member: status.pop(member, FALSE) for member in members}
    try:
        for member, value in facts.items():
            if value:
                status[member] = value
        if start:
            for member in rules:
                status[member] = start
        if local_rdeps is None:
            settle(rules.items(), status, kleene)
            return {member: status.get(member, FALSE) for member in members}
        work = list(rules)
        queued = set(work)
        while work:
            member = work.pop()
            queued.discard(member)
            value = kleene(rules[member])
            if value != status.get(member, FALSE):
                if value:
                    status[member] = value
                else:
                    del status[member]
                for dependent in local_rdeps[member]:
                    if dependent in rules and dependent not in queued:
                        queued.add(dependent)
                        work.append(dependent)
        return {member: status.get(member, FALSE) for member in members}
    finally:
        for member, value in saved.items():
            if value:
                status[member] = value
            else:
                status.pop(member, None)


def _alternating_fixpoint(
    engine: EngineState,
    members: list[str],
    inside: set[str],
    facts: dict[str, int],
    rules: dict[str, Node],
    local_rdeps: dict[str, list[str]],
) -> dict[str, int]:
    """Van Gelder's alternating fixpoint over a component with a negated member."""
    evaluator = engine.evaluator
    facts_true = {member for member, value in facts.items() if value == TRUE}
    facts_maybe = {member for member, value in facts.items() if value == UNKNOWN}

    def least(lower: bool, start: set[str], fixed: set[str]) -> set[str]:
        # Least fixpoint of the bound operator, semi-naive: when a member joins, only
        # its dependents inside the component can change.
        built = set(start)
        pending = list(rules)
        while pending:
            member = pending.pop()
            if member in built:
                continue
            low, up = (built, fixed) if lower else (fixed, built)
            if evaluator.bound(rules[member], lower, inside, low, up):
                built.add(member)
                pending.extend(m for m in local_rdeps[member] if m in rules)
        return built

    true: set[str] = set(facts_true)
    while True:
        possible = least(False, facts_true | facts_maybe, true)
        new_true = least(True, facts_true, possible)
        if new_true == true:
            break
        true = new_true
    return {
        member: TRUE if member in true else UNKNOWN if member in possible else FALSE
        for member in members
    }


def negates_member(node: Node, inside: set[str], negated: bool = False) -> bool:
    """Whether ``node`` mentions a member of ``inside`` under an odd number of ``not``."""
    if type(node) is str:
        return negated and node in inside
    op = node[0]
    if op == "all" or op == "any":
        return any(negates_member(child, inside, negated) for child in node[1])
    if op == "not":
        return negates_member(node[1], inside, not negated)
    if op == "at_least":
        return any(negates_member(child, inside, negated) for child in node[2])
    return False
