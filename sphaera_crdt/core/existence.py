"""The existence engine: which entities exist, derived incrementally from the merged view.

Theory of operation
-------------------
Each declared entity is a rule ``e <- F_e`` where ``F_e`` is its compiled constraint. The
``exists`` atoms of the rules form a directed graph (``e -> d`` when ``F_e`` mentions
``exists(d)``). Its strongly connected components, ordered so that dependencies come first,
are solved one at a time with the statuses of everything below them fixed:

* a component of one entity that does not mention itself is a Kleene evaluation;
* a cyclic component is solved by the alternating fixpoint of Van Gelder, which yields the
  well-founded model: an unsupported positive cycle is absent, stratifiable negation gets
  its stratified answer, and what no stratification settles stays undetermined.

The well-founded model is unique and splits along components, so solving them in order
gives the same answer as solving the whole program at once, on every replica.

Incremental maintenance keeps, besides the graph, reverse indexes from a subject to the
entities whose rules observe it or read its attributes, and a *level* per component that
is greater than the level of every component it depends on. A step takes the entities
whose inputs changed (records, observations, deadlines that passed), re-solves their
components in level order, and pushes dependents only when a status really changed. When
a rule's ``exists`` atoms change, only the affected region of the graph is re-split into
components (a search pruned by levels finds any new cycle), and levels are raised where
needed. After every step the statuses equal a full recomputation at the same time.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from ..errors import InvalidConstraint
from .formulas import FALSE, TRUE, UNKNOWN, Compiled, Evaluator, compile_constraint
from .records import MergedView

__all__ = ["ExistenceEngine", "Malformed", "StatusChange"]

INF: Final = math.inf
#: (entity, value before, value after), Kleene values
StatusChange = tuple[str, int, int]


class Malformed(str):
    """The message of a ``requires`` that did not compile; its entity is undetermined."""

    __slots__ = ()


Rule = Compiled | Malformed | None


class ExistenceEngine:
    """Derives statuses from a :class:`MergedView` and keeps them current.

    Args:
        view: The merged view the rules and facts come from (read only).
        replica_id: This replica, for ``"by": "self"``.
        predicates: Named predicates for ``call`` clauses.
    """

    def __init__(
        self, view: MergedView, replica_id: str, predicates: Mapping[str, Callable[..., Any]]
    ) -> None:
        self.view = view
        #: Kleene value of every entity that is not FALSE
        self.status: dict[str, int] = {}
        self.rules: dict[str, Rule] = {}
        self._compiled_from: dict[str, str] = {}
        self.deps: dict[str, frozenset[str]] = {}
        self.rdeps: dict[str, set[str]] = {}
        self.observers_of: dict[str, set[str]] = {}
        self.attr_readers: dict[str, set[str]] = {}
        self.volatile: set[str] = set()
        #: node -> representative of its component (absent: a component of its own)
        self.comp: dict[str, str] = {}
        #: representative -> members, for components of more than one node
        self.members: dict[str, list[str]] = {}
        #: representatives of components with a cycle (several nodes or a self-loop)
        self.cyclic: set[str] = set()
        self.level: dict[str, int] = {}
        self.deadline: dict[str, float] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._dirty: set[str] = set()
        self.evaluator = Evaluator(view, self.status, replica_id, predicates)
        #: entities evaluated by the last step (a measure of incremental work)
        self.evaluated = 0

    # -- inputs ----------------------------------------------------------------------------

    def record_changed(self, entity: str, field: str = "") -> None:
        """A field of an entity's record changed: ``x`` (retracted), ``q`` (requires),
        ``a`` (an attribute), ``k`` or ``o`` (kind, owner); ``""`` when unknown."""
        readers = self.attr_readers.get(entity)
        if readers and field in ("a", "x", ""):
            self._dirty.update(readers)
        if field in ("x", "q", ""):
            # Only whether it is declared and its rule decide an entity's own status.
            self._dirty.add(entity)
            self._update_rule(entity)

    def observation_changed(self, subject: str) -> None:
        """Some observer's observation of ``subject`` changed."""
        watchers = self.observers_of.get(subject)
        if watchers:
            self._dirty.update(watchers)

    def touch(self, entities: Iterable[str]) -> None:
        """Re-evaluate these entities at the next step."""
        self._dirty.update(entities)

    # -- steps -----------------------------------------------------------------------------

    def step(self, now: float, *, volatile: bool = False) -> list[StatusChange]:
        """Re-evaluate what changed (and what time made stale) at ``now``.

        Returns the entities whose status changed, dependencies first.
        """
        heap = self._deadlines
        if not self._dirty and not volatile and (not heap or heap[0][0] > now):
            self.evaluated = 0
            return []
        self.evaluator.now = now
        dirty = self._dirty
        self._dirty = set()
        while heap and heap[0][0] <= now:
            at, entity = heapq.heappop(heap)
            if self.deadline.get(entity) == at:
                del self.deadline[entity]
                dirty.add(entity)
        if volatile:
            dirty |= self.volatile
        before: dict[str, int] = {}
        queue: list[tuple[int, str]] = []
        queued: set[str] = set()
        for entity in dirty:
            self._enqueue(entity, queue, queued)
        evaluated = 0
        status = self.status
        while queue:
            _, rep = heapq.heappop(queue)
            queued.discard(rep)
            results = self._solve(rep)
            evaluated += len(results)
            for entity, value in results.items():
                old = status.get(entity, FALSE)
                if value == old:
                    continue
                if entity not in before:
                    before[entity] = old
                if value == FALSE:
                    del status[entity]
                else:
                    status[entity] = value
                for dependent in self.rdeps.get(entity, ()):
                    self._enqueue(dependent, queue, queued)
        self.evaluated = evaluated
        changes = [
            (entity, old, status.get(entity, FALSE))
            for entity, old in before.items()
            if status.get(entity, FALSE) != old
        ]
        changes.sort(key=lambda change: (self._level_of(change[0]), change[0]))
        return changes

    def recompute(self, now: float) -> dict[str, int]:
        """Derive every status from scratch at ``now``; returns them (non-FALSE only).

        Rebuilds the graph, its components and levels; used at start-up and to check the
        incremental results.
        """
        for entity in list(self.rules):
            self._forget(entity)
        self.rules.clear()
        self._compiled_from.clear()
        self.comp.clear()
        self.members.clear()
        self.cyclic.clear()
        self.level.clear()
        self.deadline.clear()
        self._deadlines.clear()
        self._dirty.clear()
        for entity in self.view.records:
            self._set_rule(entity)
        with_edges = self._split(set(self.deps), incremental=False)
        self.status.clear()
        self.evaluator.now = now
        # Entities with no exists-edges depend on no status: they go first, then the
        # components in the order Tarjan found them (dependencies first).
        order = [entity for entity in self.rules if entity not in self.deps]
        order.extend(with_edges)
        for rep in order:
            for entity, value in self._solve(rep).items():
                if value != FALSE:
                    self.status[entity] = value
        self.evaluated = len(order)
        return dict(self.status)

    def next_deadline(self) -> float | None:
        """The earliest instant at which some status may change with time alone."""
        heap = self._deadlines
        while heap and self.deadline.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    # -- solving ---------------------------------------------------------------------------

    def _enqueue(self, entity: str, queue: list[tuple[int, str]], queued: set[str]) -> None:
        rep = self.comp.get(entity, entity)
        if rep not in queued:
            queued.add(rep)
            heapq.heappush(queue, (self.level.get(rep, 0), rep))

    def _solve(self, rep: str) -> dict[str, int]:
        if rep in self.cyclic:
            return self._solve_cycle(self.members.get(rep) or [rep])
        evaluator = self.evaluator
        evaluator.deadline = INF
        value = self._base(rep)
        if value is None:
            rule = self.rules[rep]
            assert isinstance(rule, Compiled)
            value = evaluator.kleene(rule.node)
        self._set_deadline(rep, evaluator.deadline)
        return {rep: value}

    def _base(self, entity: str) -> int | None:
        """The value of an entity that needs no evaluation, or ``None``."""
        record = self.view.records.get(entity)
        if record is None or record.retracted:
            return FALSE
        rule = self.rules.get(entity)
        if rule is None:
            return TRUE
        if isinstance(rule, Malformed):
            return UNKNOWN
        return None

    def _solve_cycle(self, members: list[str]) -> dict[str, int]:
        """The alternating fixpoint over one cyclic component."""
        evaluator = self.evaluator
        evaluator.deadline = INF
        inside = set(members)
        facts_true: set[str] = set()
        facts_maybe: set[str] = set()
        rules: dict[str, Any] = {}
        for member in members:
            base = self._base(member)
            if base is None:
                rule = self.rules[member]
                assert isinstance(rule, Compiled)
                rules[member] = rule.node
            elif base == TRUE:
                facts_true.add(member)
            elif base == UNKNOWN:
                facts_maybe.add(member)
        local_rdeps: dict[str, list[str]] = {member: [] for member in members}
        for member in rules:
            for dep in self.deps.get(member, ()):
                if dep in inside:
                    local_rdeps[dep].append(member)

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
        deadline = evaluator.deadline
        for member in members:
            self._set_deadline(member, deadline)
        return {
            member: TRUE if member in true else UNKNOWN if member in possible else FALSE
            for member in members
        }

    def _set_deadline(self, entity: str, at: float) -> None:
        if at == INF:
            self.deadline.pop(entity, None)
            return
        if self.deadline.get(entity) != at:
            self.deadline[entity] = at
            heapq.heappush(self._deadlines, (at, entity))

    # -- rules and the graph ---------------------------------------------------------------

    def _update_rule(self, entity: str) -> None:
        old_deps = self.deps.get(entity, frozenset())
        self._set_rule(entity)
        new_deps = self.deps.get(entity, frozenset())
        if new_deps != old_deps:
            self._restructure(entity, old_deps, new_deps)

    def _set_rule(self, entity: str) -> None:
        record = self.view.records.get(entity)
        winner = None if record is None else record.fields.get("q")
        source = "" if winner is None else winner.payload
        if entity in self.rules and self._compiled_from.get(entity) == source:
            return
        self._forget(entity)
        self._compiled_from[entity] = source
        rule: Rule
        if winner is None or winner.value is None:
            rule = None
        else:
            try:
                rule = compile_constraint(winner.value)
            except InvalidConstraint as exc:
                rule = Malformed(f"malformed requires: {exc}")
        self.rules[entity] = rule
        if isinstance(rule, Compiled):
            if rule.exists:
                self.deps[entity] = rule.exists
                for dep in rule.exists:
                    self.rdeps.setdefault(dep, set()).add(entity)
            for subject in rule.observed:
                self.observers_of.setdefault(subject, set()).add(entity)
            for subject in rule.attrs:
                self.attr_readers.setdefault(subject, set()).add(entity)
            if rule.calls:
                self.volatile.add(entity)

    def _forget(self, entity: str) -> None:
        rule = self.rules.get(entity)
        if not isinstance(rule, Compiled):
            return
        for dep in rule.exists:
            _discard(self.rdeps, dep, entity)
        self.deps.pop(entity, None)
        for subject in rule.observed:
            _discard(self.observers_of, subject, entity)
        for subject in rule.attrs:
            _discard(self.attr_readers, subject, entity)
        self.volatile.discard(entity)

    def _level_of(self, entity: str) -> int:
        return self.level.get(self.comp.get(entity, entity), 0)

    def _restructure(self, x: str, old: frozenset[str], new: frozenset[str]) -> None:
        """Re-split the region of the graph that ``x``'s new edges may have changed."""
        rep = self.comp.get(x, x)
        region: set[str] = set(self.members.get(rep, (x,))) if rep in self.cyclic else {x}
        floor = self.level.get(rep, 0)
        reach: set[str] = set()
        # A new cycle must come back to x: with no dependents, nothing can.
        stack = [y for y in new - old if y != x] if self.rdeps.get(x) else []
        while stack:
            node = stack.pop()
            if node in reach or self._level_of(node) < floor:
                continue
            reach.add(node)
            stack.extend(self.deps.get(node, ()))
        if x in reach or region & reach:
            back: set[str] = set()
            stack = list(region)
            while stack:
                node = stack.pop()
                if node in back:
                    continue
                back.add(node)
                stack.extend(d for d in self.rdeps.get(node, ()) if d in reach)
            region |= back & reach
        self._split(region, incremental=True)

    def _split(self, region: set[str], *, incremental: bool) -> list[str]:
        """Tarjan's algorithm (iterative) on the subgraph induced by ``region``.

        Returns the representatives of the components found, dependencies first.
        """
        for node in region:
            old = self.comp.pop(node, node)
            self.members.pop(old, None)
            self.cyclic.discard(old)
            self.level.pop(old, None)
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        on_stack: set[str] = set()
        stack: list[str] = []
        order: list[list[str]] = []
        counter = 0
        for root in region:
            if root in index:
                continue
            work: list[tuple[str, Iterable[str]]] = [(root, iter(self._local(root, region)))]
            index[root] = low[root] = counter
            counter += 1
            stack.append(root)
            on_stack.add(root)
            while work:
                node, edges = work[-1]
                advanced = False
                for dep in edges:
                    if dep not in index:
                        index[dep] = low[dep] = counter
                        counter += 1
                        stack.append(dep)
                        on_stack.add(dep)
                        work.append((dep, iter(self._local(dep, region))))
                        advanced = True
                        break
                    if dep in on_stack and index[dep] < low[node]:
                        low[node] = index[dep]
                if advanced:
                    continue
                work.pop()
                if work:
                    parent = work[-1][0]
                    if low[node] < low[parent]:
                        low[parent] = low[node]
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    order.append(component)
        raised: list[str] = []
        reps: list[str] = []
        for component in order:  # dependencies come out first
            rep = min(component)
            if len(component) > 1:
                self.members[rep] = sorted(component)
                for member in component:
                    self.comp[member] = rep
                self.cyclic.add(rep)
            elif rep in self.deps.get(rep, ()):
                self.cyclic.add(rep)
            members = set(component)
            level = 0
            for member in component:
                for dep in self.deps.get(member, ()):
                    if dep not in members:
                        level = max(level, self._level_of(dep) + 1)
            if level:
                self.level[rep] = level
            raised.extend(component)
            reps.append(rep)
        if incremental:
            self._raise_levels(raised)
            self._dirty.update(region)
        return reps

    def _local(self, node: str, region: set[str]) -> list[str]:
        return [dep for dep in self.deps.get(node, ()) if dep in region]

    def _raise_levels(self, nodes: list[str]) -> None:
        """Keep every dependent's level above the levels of what it depends on."""
        stack = list(nodes)
        while stack:
            node = stack.pop()
            rep = self.comp.get(node, node)
            level = self.level.get(rep, 0)
            for dependent in self.rdeps.get(node, ()):
                dep_rep = self.comp.get(dependent, dependent)
                if dep_rep != rep and self.level.get(dep_rep, 0) <= level:
                    self.level[dep_rep] = level + 1
                    stack.extend(self.members.get(dep_rep, (dependent,)))


def _discard(table: dict[str, set[str]], key: str, value: str) -> None:
    values = table.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del table[key]
