"""The existence engine: which entities exist, derived incrementally from the merged view.

Theory of operation
-------------------
Each declared entity is a rule ``e <- F_e`` where ``F_e`` is its compiled constraint (an
undeclared or retracted entity has none: it is absent whatever it required, so a retracted
member of a cycle leaves it). The ``exists`` atoms of the rules form a directed graph
(``e -> d`` when ``F_e`` mentions ``exists(d)``). Its strongly connected components,
ordered so that dependencies come first, are solved one at a time with the statuses of
everything below them fixed:

* a component of one entity that does not mention itself is a Kleene evaluation;
* a cyclic component gets its well-founded model (:mod:`.cycles`): an unsupported positive
  cycle is absent, stratifiable negation gets its stratified answer, and what no
  stratification settles stays undetermined.

The well-founded model is unique and splits along components, so solving them in order
gives the same answer as solving the whole program at once, on every replica. A full
derivation (:mod:`.derivation`) orders the graph with Kahn's algorithm and splits into
components only what cycles block.

Incremental maintenance keeps, besides the graph, reverse indexes from a subject to the
entities whose rules observe it or read its attributes, and a *level* per component that
is greater than the level of every component it depends on (a component that depends on
nothing outside it has none and comes first). A step takes the entities whose inputs
changed (records, observations, deadlines that passed), re-solves their components in
level order, and pushes dependents only when a status really changed. When a rule's
``exists`` atoms change, only the affected region of the graph is re-split into
components (a search pruned by levels finds any new cycle). Levels are an order, not
depths: a full derivation gives depths, but a re-split component takes any level between
its dependencies and its dependents (negative ones too), and only when there is no room
are levels moved, through its dependents or through its dependencies, whichever search
ends first; so a chain declared from its top down costs no more than one declared from
its bottom up. After every step the statuses equal a full recomputation at the same time.
"""

from __future__ import annotations

import heapq
import math
import sys
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from typing import Any, Final

from . import cycles, derivation
from .compiler import Compiled, Malformed, Rule, rule_of
from .formulas import DEFAULT_MAX_SKEW, FALSE, TRUE, UNKNOWN, Evaluator
from .records import MergedView

__all__ = ["ExistenceEngine", "Malformed", "StatusChange"]

INF: Final = math.inf
#: (entity, value before, value after), Kleene values
StatusChange = tuple[str, int, int]


#: A key missing from :attr:`ExistenceEngine.rules` (``None`` is a rule: no requirements).
_MISSING: Final = object()


class ExistenceEngine:
    """Derives statuses from a :class:`MergedView` and keeps them current.

    Args:
        view: The merged view the rules and facts come from (read only).
        replica_id: This replica, for ``"by": "self"``.
        predicates: Named predicates for ``call`` clauses.
        max_skew: Seconds an observation may be dated ahead of the clock and still count.
    """

    def __init__(
        self,
        view: MergedView,
        replica_id: str,
        predicates: Mapping[str, Callable[..., Any]],
        max_skew: float = DEFAULT_MAX_SKEW,
    ) -> None:
        self.view = view
        #: Kleene value of every entity that is not FALSE
        self.status: dict[str, int] = {}
        self.rules: dict[str, Rule] = {}
        #: entity -> the entities whose rules name it in an exists atom (a full derivation
        #: lists them; a list becomes a set when first edited)
        self.rdeps: dict[str, set[str] | list[str]] = {}
        self.observers_of: dict[str, set[str]] = {}
        self.attr_readers: dict[str, set[str]] = {}
        self.volatile: set[str] = set()
        #: node -> representative of its component (absent: a component of its own)
        self.comp: dict[str, str] = {}
        #: representative -> members, for components of more than one node
        self.members: dict[str, list[str]] = {}
        #: representatives of components with a cycle (several nodes or a self-loop)
        self.cyclic: set[str] = set()
        #: representative -> level, above the levels of everything it depends on; a
        #: component that depends on nothing outside it has none (it comes first)
        self.level: dict[str, int] = {}
        #: representative of a cycle -> its members as a set, and whether a member's rule
        #: names a member under a negation (filled by the explanations, emptied when a
        #: rule or a component changes)
        self.cycle_facts: dict[str, tuple[frozenset[str], bool]] = {}
        self.deadline: dict[str, float] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._dirty: set[str] = set()
        self.evaluator = Evaluator(view, self.status, replica_id, predicates, max_skew)
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
        if now < self.evaluator.now:
            # Time went back (a clock set back, or an earlier ``now`` given): a stale
            # observation may be fresh again, which no deadline announces.
            for watchers in self.observers_of.values():
                self._dirty.update(watchers)
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
        queue: list[tuple[float, str]] = []
        queued: set[str] = set()
        for entity in dirty:
            self._enqueue(entity, queue, queued)
        evaluated = 0
        status = self.status
        comp = self.comp
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
                    # A member of the same component was solved with it.
                    if comp.get(dependent, dependent) != rep:
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

        Rebuilds the rules, the graph, its components and levels (see :mod:`.derivation`);
        used at start-up and to check the incremental results.
        """
        self.rules.clear()
        self.rdeps.clear()
        self.observers_of.clear()
        self.attr_readers.clear()
        self.volatile.clear()
        self.comp.clear()
        self.members.clear()
        self.cyclic.clear()
        self.level.clear()
        self.cycle_facts.clear()
        self.deadline.clear()
        self._deadlines.clear()
        self._dirty.clear()
        self.status.clear()
        self.evaluator.now = now
        self.evaluator.deadline = INF
        pending = derivation.compile_all(self)
        self.evaluated = derivation.derive_all(self, pending)
        return dict(self.status)

    def _components(self, region: Container[str], roots: Iterable[str]) -> list[list[str]]:
        """Tarjan's algorithm (iterative) on the subgraph induced by ``region``, from
        ``roots`` (members of it).

        Returns the strongly connected components reached, dependencies first.
        """
        targets = self._targets
        placed = sys.maxsize  # the index of a node already placed in a component
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        found: list[list[str]] = []
        counter = 0
        for root in roots:
            if root in index:
                continue
            index[root] = low[root] = counter
            counter += 1
            stack.append(root)
            work: list[tuple[str, Iterator[str]]] = [(root, iter(targets(root)))]
            while work:
                node, edges = work[-1]
                for dep in edges:
                    if dep not in region:
                        continue
                    seen = index.get(dep)
                    if seen is None:
                        index[dep] = low[dep] = counter
                        counter += 1
                        stack.append(dep)
                        work.append((dep, iter(targets(dep))))
                        break
                    if seen < low[node]:  # on the stack (placed nodes have index placed)
                        low[node] = seen
                else:
                    work.pop()
                    node_low = low[node]
                    if work:
                        parent = work[-1][0]
                        if node_low < low[parent]:
                            low[parent] = node_low
                    if node_low == index[node]:
                        member = stack.pop()
                        index[member] = placed
                        component = [member]
                        while member != node:
                            member = stack.pop()
                            index[member] = placed
                            component.append(member)
                        found.append(component)
        return found

    def _place(self, component: list[str]) -> str:
        """Record a component found by :meth:`_components` and its level (one more than its
        highest dependency), as a full derivation does; returns its representative. Every
        dependency outside it must already have its level."""
        rep = self._register(component)
        members = self.members.get(rep) or (rep,)
        targets = self._targets
        levels = self.level
        comp = self.comp
        level = 0
        for member in members:
            for dep in targets(member):
                dep_rep = comp.get(dep, dep)
                if dep_rep != rep:
                    dep_level = levels.get(dep_rep, 0) + 1
                    if dep_level > level:
                        level = dep_level
        if level:
            levels[rep] = level
        return rep

    def next_deadline(self) -> float | None:
        """The earliest instant at which some status may change with time alone."""
        heap = self._deadlines
        while heap and self.deadline.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    # -- solving ---------------------------------------------------------------------------

    def _enqueue(self, entity: str, queue: list[tuple[float, str]], queued: set[str]) -> None:
        rep = self.comp.get(entity, entity)
        if rep not in queued:
            queued.add(rep)
            heapq.heappush(queue, (self.level.get(rep, -INF), rep))

    def _solve(self, rep: str) -> dict[str, int]:
        if rep in self.cyclic:
            return cycles.solve_cycle(self, self.members.get(rep) or [rep])
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
        if type(self.rules.get(entity)) is Compiled:
            return None  # a compiled rule is only ever kept for a live record
        record = self.view.records.get(entity)
        if record is None or record.retracted:
            return FALSE
        rule = self.rules.get(entity)
        if rule is None:
            return TRUE
        if isinstance(rule, Malformed):
            return UNKNOWN
        return None

    def _set_deadline(self, entity: str, at: float) -> None:
        if at == INF:
            self.deadline.pop(entity, None)
            return
        if self.deadline.get(entity) != at:
            self.deadline[entity] = at
            heapq.heappush(self._deadlines, (at, entity))

    # -- rules and the graph ---------------------------------------------------------------

    def _update_rule(self, entity: str) -> None:
        old_deps = self._targets(entity)
        self._set_rule(entity)
        new_deps = self._targets(entity)
        if new_deps != old_deps:
            self._restructure(entity, old_deps, new_deps)

    def _set_rule(self, entity: str) -> None:
        rule = rule_of(self.view.records.get(entity))
        if rule is self.rules.get(entity, _MISSING):
            return  # no rule still, or compiled from the same winner (kept on it)
        self._forget(entity)
        self.rules[entity] = rule
        self.cycle_facts.clear()
        if isinstance(rule, Compiled):
            if rule.exists:
                for dep in rule.exists:
                    self._add_dependent(dep, entity)
            self._index_reads(entity, rule)

    def _add_dependent(self, dep: str, entity: str) -> None:
        dependents = self.rdeps.get(dep)
        if dependents is None:
            self.rdeps[dep] = {entity}
        elif isinstance(dependents, list):
            self.rdeps[dep] = {*dependents, entity}
        else:
            dependents.add(entity)

    def _drop_dependent(self, dep: str, entity: str) -> None:
        dependents = self.rdeps.get(dep)
        if dependents is None:
            return
        if isinstance(dependents, list):
            dependents = self.rdeps[dep] = set(dependents)
        dependents.discard(entity)
        if not dependents:
            del self.rdeps[dep]

    def _index_reads(self, entity: str, rule: Compiled) -> None:
        """Index the observations, attributes and predicates a rule reads."""
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
            self._drop_dependent(dep, entity)
        for subject in rule.observed:
            _discard(self.observers_of, subject, entity)
        for subject in rule.attrs:
            _discard(self.attr_readers, subject, entity)
        self.volatile.discard(entity)

    def _targets(self, entity: str) -> tuple[str, ...]:
        """The entities ``entity``'s rule names in exists atoms (its edges)."""
        rule = self.rules.get(entity)
        return rule.exists if type(rule) is Compiled else ()

    def _level_of(self, entity: str) -> float:
        """The level of an entity's component; one that depends on nothing outside it has
        none and comes before every other."""
        return self.level.get(self.comp.get(entity, entity), -INF)

    def _restructure(self, x: str, old: tuple[str, ...], new: tuple[str, ...]) -> None:
        """Re-split the region of the graph that ``x``'s new edges may have changed."""
        rep = self.comp.get(x, x)
        region: set[str] = set(self.members.get(rep, (x,))) if rep in self.cyclic else {x}
        floor = self.level.get(rep, -INF)
        reach: set[str] = set()
        # A new cycle must come back to x: with no dependents, nothing can.
        stack = [y for y in set(new).difference(old) if y != x] if self.rdeps.get(x) else []
        while stack:
            node = stack.pop()
            if node in reach or self._level_of(node) < floor:
                continue
            reach.add(node)
            stack.extend(self._targets(node))
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
        self._split(region)

    def _split(self, region: set[str]) -> None:
        """Re-split ``region`` into components after a rule's edges changed."""
        self.cycle_facts.clear()
        was: dict[str, int] = {}
        for node in region:
            old = self.comp.pop(node, node)
            self.members.pop(old, None)
            self.cyclic.discard(old)
            level = self.level.pop(old, None)
            if level is not None:
                was[node] = level
        for component in self._components(region, region):  # dependencies come first
            rep = self._register(component)
            self._level_between(rep, component, was.get(rep))
        self._dirty.update(region)

    def _register(self, component: list[str]) -> str:
        """Record a component's members; returns its representative (no level yet)."""
        rep = min(component) if len(component) > 1 else component[0]
        if len(component) > 1:
            self.members[rep] = sorted(component)
            for member in component:
                self.comp[member] = rep
            self.cyclic.add(rep)
        elif rep in self._targets(rep):
            self.cyclic.add(rep)
        return rep

    def _level_between(self, rep: str, component: list[str], hint: int | None) -> None:
        """Give a component just registered a level above every dependency and below every
        dependent that has one (those of the region not placed yet come after it).

        Any level between them will do, not only one more than the highest dependency, so
        a component first looks for room (its old level, above its dependencies, below
        its dependents); only when there is none are levels moved, on the side that moves
        fewer: up through the dependents, or down through the dependencies.
        """
        levels = self.level
        comp = self.comp
        targets = self._targets
        low: float = -INF
        external = False
        for member in component:
            for dep in targets(member):
                dep_rep = comp.get(dep, dep)
                if dep_rep != rep:
                    external = True
                    dep_level = levels.get(dep_rep)
                    if dep_level is not None and dep_level > low:
                        low = dep_level
        if not external:
            return  # depends on nothing outside itself: below everything
        high: float = INF
        for member in component:
            for dependent in self.rdeps.get(member, ()):
                dep_rep = comp.get(dependent, dependent)
                if dep_rep != rep:
                    dep_level = levels.get(dep_rep)
                    if dep_level is not None and dep_level < high:
                        high = dep_level
        if hint is not None and low < hint < high:
            levels[rep] = hint
            return
        if high - low >= 2:
            levels[rep] = int(low + 1 if low != -INF else high - 1 if high != INF else 0)
            return
        # No room: raise from one more than the dependencies, or lower from one less than
        # the dependents, whichever search ends first (both are dry runs until then).
        up = self._shifted(rep, int(low) + 1, raising=True)
        down = self._shifted(rep, int(high) - 1, raising=False)
        while True:
            moved = next(up)
            if moved is None:
                moved = next(down)
            if moved is not None:
                levels.update(moved)
                return

    def _shifted(self, rep: str, level: int, *, raising: bool) -> Iterator[dict[str, int] | None]:
        """The levels that put ``rep`` at ``level`` and move what must move with it, all
        the way up (``raising``) through its dependents or down through its dependencies.

        A generator that yields ``None`` after each component it settles and the new
        levels at the end, so that two of them can run in turns. Components are settled in
        the order of their old levels (upwards when raising), so each is settled once: what
        pushes one moves before it.
        """
        levels = self.level
        comp = self.comp
        members = self.members
        sign = 1 if raising else -1
        moved: dict[str, int] = {rep: level}
        heap: list[tuple[float, str]] = [(-INF, rep)]
        queued = {rep}
        while heap:
            _, node = heapq.heappop(heap)
            value = moved[node]
            for member in members.get(node, (node,)):
                for other in self.rdeps.get(member, ()) if raising else self._targets(member):
                    other_rep = comp.get(other, other)
                    if other_rep == node:
                        continue
                    old = levels.get(other_rep)
                    if old is None:
                        continue  # below everything, or in the region and placed later
                    current = moved.get(other_rep, old)
                    if (current - value) * sign <= 0:
                        moved[other_rep] = value + sign
                        if other_rep not in queued:
                            queued.add(other_rep)
                            heapq.heappush(heap, (old * sign, other_rep))
            yield None
        yield moved


def _discard(table: dict[str, set[str]], key: str, value: str) -> None:
    values = table.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del table[key]
