"""The full derivation: every status from scratch, as a replica starts.

One pass over the records compiles every rule, indexes what it reads, and evaluates at
once the rules that mention no ``exists`` (they depend on no status). Then the rules with
``exists`` atoms are solved in dependency order:

* Kahn's algorithm, in rounds: an entity is ready once each of its dependencies has a
  status; it becomes ready in the round after its last dependency, the one of the highest
  level, so the round is its level.
* When Kahn's algorithm stalls, everything left lies on a cycle or depends on one. A walk
  along unsolved dependencies finds a cycle; Tarjan's algorithm splits the unsolved part
  of the graph above it into components, solved in order (:mod:`.cycles`), and Kahn's
  algorithm resumes below them until it stalls again. The walk goes on from where it was,
  so each entity is walked, split and solved at most once, and Tarjan's algorithm only sees
  what cycles block.

The usual rules (an exists atom, an ``all`` of them) are evaluated inline; the rest by the
evaluator.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .compiler import Compiled, Malformed, compile_rule, rule_of
from .cycles import ROUNDS, negates_member, settle, solve_cycle
from .engine_state import EngineState
from .formulas import FALSE, INF, TRUE, UNKNOWN, Node

__all__ = ["compile_all", "derive_all"]


def compile_all(engine: EngineState) -> dict[str, int]:
    """Compile the rule of every record, index what each one reads, and evaluate the
    rules that mention no ``exists`` (they depend on no status).

    Returns the number of ``exists`` targets of each entity that has some. An undeclared
    or retracted entity has no rule (see :func:`~.compiler.rule_of`), hence no edges.
    """
    rules = engine.rules
    rdeps = engine.rdeps
    status = engine.status
    evaluator = engine.evaluator
    pending: dict[str, int] = {}
    for entity, record in engine.view.records.items():
        fields = record.fields
        winner = fields.get("q")
        retracted = fields.get("x")
        if retracted is None or retracted.value is not False:
            unread = None if retracted is None else rule_of(record)
            rules[entity] = unread
            if unread is not None:  # a retracted flag that cannot be read
                status[entity] = UNKNOWN
            continue
        if winner is None or winner.value is None:
            rules[entity] = None
            status[entity] = TRUE
            continue
        rule = winner.rule
        if rule is None:
            rule = compile_rule(winner)
        rules[entity] = rule
        if type(rule) is Malformed:
            status[entity] = UNKNOWN
            continue
        if rule.observed or rule.attrs or rule.calls:
            engine._index_reads(entity, rule)
        targets = rule.exists
        if targets:
            pending[entity] = len(targets)
            for dep in targets:
                dependents = rdeps.get(dep)
                if dependents is None:
                    rdeps[dep] = [entity]
                else:
                    dependents.append(entity)  # type: ignore[union-attr]
        else:
            value = evaluator.kleene(rule.node)
            if evaluator.deadline != INF:
                engine._set_deadline(entity, evaluator.deadline)
                evaluator.deadline = INF
            if value:
                status[entity] = value
    return pending


def derive_all(engine: EngineState, pending: dict[str, int]) -> int:
    """Evaluate the rules with ``exists`` atoms in dependency order, once those without
    are; returns the number of components solved (``evaluated``).

    ``pending`` holds, for each entity not yet solved, how many of its dependencies are
    not either. Kahn's algorithm solves an entity when that count drops to zero; when
    it stalls, everything left lies on a cycle or depends on one. A walk along unsolved
    dependencies then finds a cycle; Tarjan's algorithm splits the unsolved part of the
    graph above it into components, which are solved in order, and Kahn's algorithm
    resumes below them, until it stalls again. The walk goes on from where it was, so
    each entity is walked, split and solved at most once.
    """
    rules = engine.rules
    rdeps = engine.rdeps
    solved = len(rules) - len(pending)
    # Undeclared dependencies and those with no exists-edges have a status already.
    ready: list[str] = []
    for dep in rdeps.keys() - pending.keys():
        _release(rdeps[dep], pending, ready)
    solved += _kahn(engine, ready, pending, 1)
    if not pending:
        return solved
    starts = list(pending)
    cursor = 0
    # The walk: a path of unsolved entities, each depending on the next.
    path: list[str] = []
    edges: list[Iterator[str]] = []
    on_path: set[str] = set()
    while pending:
        if not path:
            while starts[cursor] not in pending:
                cursor += 1
            start = starts[cursor]
            path.append(start)
            edges.append(iter(rules[start].exists))  # type: ignore[union-attr]
            on_path.add(start)
        # Walk until the path closes a cycle. An unsolved entity has an unsolved
        # dependency, and those its edge iterator passed are solved.
        while True:
            for dep in edges[-1]:
                if dep in pending:
                    break
            else:  # pragma: no cover - an unsolved entity has an unsolved dependency
                raise AssertionError(f"{path[-1]!r} has no unsolved dependency")
            if dep in on_path:
                break
            path.append(dep)
            edges.append(iter(rules[dep].exists))  # type: ignore[union-attr]
            on_path.add(dep)
        # Everything Tarjan's algorithm reaches from the cycle is above it: solve it.
        components = engine._components(pending, (dep,))
        for component in components:
            for entity in component:
                del pending[entity]
            _settle(engine, component)
        solved += len(components)
        ready = []
        for component in components:
            for entity in component:
                _release(rdeps.get(entity, ()), pending, ready)
        solved += _kahn(engine, ready, pending, None)
        # What was solved is a tail of the path (each entity on it waits for the next).
        while path and path[-1] not in pending:
            on_path.discard(path.pop())
            edges.pop()
    return solved


def _release(dependents: Iterable[str], pending: dict[str, int], ready: list[str]) -> None:
    """One of their dependencies is solved: count it off each unsolved dependent, and
    move those left waiting for none to ``ready``. (Kahn's loop does this inline.)"""
    for dependent in dependents:
        waiting = pending.get(dependent)
        if waiting is None:
            continue  # solved already (in the same component)
        if waiting > 1:
            pending[dependent] = waiting - 1
        else:
            del pending[dependent]
            ready.append(dependent)


def _kahn(
    engine: EngineState,
    ready: list[str],
    pending: dict[str, int],
    depth: int | None,
) -> int:
    """Solve ``ready`` and what becomes ready after it (Kahn's algorithm, in rounds);
    returns how many were solved.

    With a ``depth``, everything solved before is below ``ready``, all of whose members
    are at that level: an entity becomes ready in the round after its last dependency,
    the one of the highest level, so the round gives its level. Without one, levels
    are read from the dependencies.
    """
    rdeps = engine.rdeps
    rules = engine.rules
    level = engine.level
    comp = engine.comp
    status = engine.status
    status_get = status.get
    evaluator = engine.evaluator
    kleene = evaluator.kleene
    solved = 0
    while ready:
        batch = ready
        ready = []
        solved += len(batch)
        for entity in batch:
            rule: Compiled = rules[entity]  # type: ignore[assignment]
            if depth is not None:
                level[entity] = depth
            else:
                top = 0
                for dep in rule.exists:
                    dep_level = level.get(dep)
                    if dep_level is None:  # no edges, or a member of a cycle
                        dep_level = level.get(comp.get(dep, dep), 0)
                    if dep_level > top:
                        top = dep_level
                level[entity] = top + 1
            # The engine's _solve for an entity with edges, inline: the usual rules
            # are an exists atom or an all of them.
            node = rule.node
            if type(node) is str:
                value = status_get(node, FALSE)
            elif node[0] == "all":
                value = TRUE
                for child in node[1]:
                    if type(child) is str:
                        child_value = status_get(child, FALSE)
                    else:
                        child_value = kleene(child)
                    if child_value < value:
                        value = child_value
                        if not value:
                            break
            else:
                value = kleene(node)
            if rule.observed and evaluator.deadline != INF:
                engine._set_deadline(entity, evaluator.deadline)
                evaluator.deadline = INF
            if value:
                status[entity] = value
            for dependent in rdeps.get(entity, ()):
                left = pending[dependent] - 1
                if left:
                    pending[dependent] = left
                else:
                    del pending[dependent]
                    ready.append(dependent)
        if depth is not None:
            depth += 1
    return solved


def _settle(engine: EngineState, component: list[str]) -> None:
    """Place and solve a component whose dependencies outside it are solved (full
    derivation)."""
    entity = component[0]
    if len(component) > 1 or entity in engine._targets(entity):
        rep = engine._place(component)
        members = engine.members.get(rep) or [rep]
        if not _settle_small(engine, members):
            for member, value in solve_cycle(engine, members).items():
                if value:
                    engine.status[member] = value
        engine.evaluator.deadline = INF
        return
    engine._place(component)
    evaluator = engine.evaluator
    value = evaluator.kleene(engine.rules[entity].node)  # type: ignore[union-attr]
    if evaluator.deadline != INF:
        engine._set_deadline(entity, evaluator.deadline)
        evaluator.deadline = INF
    if value:
        engine.status[entity] = value


def _settle_small(engine: EngineState, members: list[str]) -> bool:
    """:func:`~.cycles.solve_cycle` for a small cycle of the full derivation, in place: its
    members have no status yet, so the same rounds run on the statuses themselves. Returns
    ``False``, leaving nothing behind, when it does not apply (a larger cycle, or one
    through negation that Fitting's model leaves open)."""
    if len(members) > ROUNDS:
        return False
    rules = engine.rules
    nodes: list[tuple[str, Node]] = []
    negates = False
    for member in members:
        rule: Compiled = rules[member]  # type: ignore[assignment]
        nodes.append((member, rule.node))
        negates = negates or rule.negates
    if negates:
        inside = set(members)
        negates = any(negates_member(node, inside) for _, node in nodes)
    status = engine.status
    evaluator = engine.evaluator
    kleene = evaluator.kleene
    evaluator.deadline = INF
    if negates:
        for member in members:
            status[member] = UNKNOWN
    settle(nodes, status, kleene)
    if negates and any(status.get(member) == UNKNOWN for member in members):
        for member in members:
            status.pop(member, None)
        return False
    if evaluator.deadline != INF:
        for member in members:
            engine._set_deadline(member, evaluator.deadline)
    return True
