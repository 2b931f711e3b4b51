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
import sys
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from typing import Any, Final

from ..errors import InvalidConstraint
from .formulas import FALSE, TRUE, UNKNOWN, Compiled, Evaluator, Node, compile_constraint
from .records import MergedView

__all__ = ["ExistenceEngine", "Malformed", "StatusChange"]

INF: Final = math.inf
#: Components with at most this many rules are iterated in rounds rather than a worklist.
_ROUNDS: Final = 8
#: (entity, value before, value after), Kleene values
StatusChange = tuple[str, int, int]


#: A key missing from :attr:`ExistenceEngine.rules` (``None`` is a rule: no requirements).
_MISSING: Final = object()


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

        Rebuilds the rules, the graph, its components and levels; used at start-up and to
        check the incremental results. One pass compiles the rules; entities with no
        ``exists`` atom are evaluated at once; Kahn's algorithm then orders and evaluates
        everything that does not depend on a cycle, and Tarjan's algorithm splits only what
        is left (the cycles and what depends on them) into components, which are solved as
        they come out, dependencies first.
        """
        for table in (self.rules, self.rdeps):
            table.clear()
        for index in (self.observers_of, self.attr_readers):
            index.clear()
        self.volatile.clear()
        self.comp.clear()
        self.members.clear()
        self.cyclic.clear()
        self.level.clear()
        self.deadline.clear()
        self._deadlines.clear()
        self._dirty.clear()
        self.status.clear()
        self.evaluator.now = now
        self.evaluator.deadline = INF
        pending, dead = self._compile_all()
        self.evaluated = self._derive_all(pending, dead)
        return dict(self.status)

    def _compile_all(self) -> tuple[dict[str, int], set[str]]:
        """Compile the rule of every record, index what each one reads, and evaluate the
        rules that mention no ``exists`` (they depend on no status).

        Returns the number of ``exists`` targets of each entity that has some, and those of
        them that are retracted (undeclared or withdrawn).
        """
        rules = self.rules
        rdeps = self.rdeps
        status = self.status
        evaluator = self.evaluator
        pending: dict[str, int] = {}
        dead: set[str] = set()
        for entity, record in self.view.records.items():
            fields = record.fields
            winner = fields.get("q")
            retracted = fields.get("x")
            live = retracted is not None and retracted.value is False
            if winner is None or winner.value is None:
                rules[entity] = None
                if live:
                    status[entity] = TRUE
                continue
            try:
                rule = compile_constraint(winner.value)
            except InvalidConstraint as exc:
                rules[entity] = Malformed(f"malformed requires: {exc}")
                if live:
                    status[entity] = UNKNOWN
                continue
            rules[entity] = rule
            if rule.observed or rule.attrs or rule.calls:
                self._index_reads(entity, rule)
            targets = rule.exists
            if targets:
                pending[entity] = len(targets)
                if not live:
                    dead.add(entity)
                for dep in targets:
                    dependents = rdeps.get(dep)
                    if dependents is None:
                        rdeps[dep] = [entity]
                    else:
                        dependents.append(entity)  # type: ignore[union-attr]
            elif live:
                value = evaluator.kleene(rule.node)
                if evaluator.deadline != INF:
                    self._set_deadline(entity, evaluator.deadline)
                    evaluator.deadline = INF
                if value:
                    status[entity] = value
        return pending, dead

    def _derive_all(self, pending: dict[str, int], dead: set[str]) -> int:
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
        rules = self.rules
        rdeps = self.rdeps
        solved = len(rules) - len(pending)
        # Undeclared dependencies and those with no exists-edges have a status already.
        ready: list[str] = []
        for dep in rdeps.keys() - pending.keys():
            for entity in rdeps[dep]:
                left = pending[entity] - 1
                if left:
                    pending[entity] = left
                else:
                    del pending[entity]
                    ready.append(entity)
        solved += self._kahn(ready, pending, dead, 1)
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
            components = self._components(pending, (dep,))
            for component in components:
                for entity in component:
                    del pending[entity]
                self._settle(component, dead)
            solved += len(components)
            ready = []
            for component in components:
                for entity in component:
                    for dependent in rdeps.get(entity, ()):
                        waiting = pending.get(dependent)
                        if waiting is None:
                            continue
                        if waiting > 1:
                            pending[dependent] = waiting - 1
                        else:
                            del pending[dependent]
                            ready.append(dependent)
            solved += self._kahn(ready, pending, dead, None)
            # What was solved is a tail of the path (each entity on it waits for the next).
            while path and path[-1] not in pending:
                on_path.discard(path.pop())
                edges.pop()
        return solved

    def _kahn(
        self, ready: list[str], pending: dict[str, int], dead: set[str], depth: int | None
    ) -> int:
        """Solve ``ready`` and what becomes ready after it (Kahn's algorithm, in rounds);
        returns how many were solved.

        With a ``depth``, everything solved before is below ``ready``, all of whose members
        are at that level: an entity becomes ready in the round after its last dependency,
        the one of the highest level, so the round gives its level. Without one, levels
        are read from the dependencies.
        """
        rdeps = self.rdeps
        rules = self.rules
        level = self.level
        comp = self.comp
        status = self.status
        evaluator = self.evaluator
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
                if entity not in dead:
                    # _solve for an entity with edges, inline: the usual rules are an exists
                    # atom or an all of them.
                    node = rule.node
                    if type(node) is str:
                        value = status.get(node, FALSE)
                    elif node[0] == "all":
                        value = TRUE
                        for child in node[1]:
                            if type(child) is str:
                                child_value = status.get(child, FALSE)
                            else:
                                child_value = kleene(child)
                            if child_value < value:
                                value = child_value
                                if not value:
                                    break
                    else:
                        value = kleene(node)
                    if evaluator.deadline != INF:
                        self._set_deadline(entity, evaluator.deadline)
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

    def _settle(self, component: list[str], dead: set[str]) -> None:
        """Place and solve a component whose dependencies outside it are solved (full
        derivation; ``dead`` are the retracted entities with edges)."""
        entity = component[0]
        if len(component) > 1 or entity in self._targets(entity):
            rep = self._place(component)
            members = self.members.get(rep) or [rep]
            if not self._settle_small(members, dead):
                for member, value in self._solve_cycle(members).items():
                    if value:
                        self.status[member] = value
            self.evaluator.deadline = INF
            return
        self._place(component)
        if entity in dead:
            return
        evaluator = self.evaluator
        value = evaluator.kleene(self.rules[entity].node)  # type: ignore[union-attr]
        if evaluator.deadline != INF:
            self._set_deadline(entity, evaluator.deadline)
            evaluator.deadline = INF
        if value:
            self.status[entity] = value

    def _settle_small(self, members: list[str], dead: set[str]) -> bool:
        """:meth:`_solve_cycle` for a small cycle of the full derivation, in place: its
        members have no status yet, so the rounds of :meth:`_iterate` run on the statuses
        themselves. Returns ``False``, leaving nothing behind, when it does not apply (a
        retracted member, or a cycle through negation that Fitting's model leaves open)."""
        if len(members) > _ROUNDS or (dead and not dead.isdisjoint(members)):
            return False
        rules = self.rules
        nodes: list[tuple[str, Node]] = []
        negates = False
        for member in members:
            rule: Compiled = rules[member]  # type: ignore[assignment]
            nodes.append((member, rule.node))
            negates = negates or rule.negates
        if negates:
            inside = set(members)
            negates = any(_negates(node, inside, False) for _, node in nodes)
        status = self.status
        evaluator = self.evaluator
        kleene = evaluator.kleene
        evaluator.deadline = INF
        if negates:
            for member in members:
                status[member] = UNKNOWN
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
        if negates and any(status.get(member) == UNKNOWN for member in members):
            for member in members:
                status.pop(member, None)
            return False
        if evaluator.deadline != INF:
            for member in members:
                self._set_deadline(member, evaluator.deadline)
        return True

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
        """Record a component found by :meth:`_components` and its level; returns its
        representative. Every dependency outside it must already have its level."""
        rep = min(component) if len(component) > 1 else component[0]
        targets = self._targets
        if len(component) > 1:
            self.members[rep] = sorted(component)
            for member in component:
                self.comp[member] = rep
            self.cyclic.add(rep)
            members = set(component)
        else:
            members = {rep}
            if rep in targets(rep):
                self.cyclic.add(rep)
        levels = self.level
        comp = self.comp
        level = 0
        for member in component:
            for dep in targets(member):
                if dep not in members:
                    dep_level = levels.get(comp.get(dep, dep), 0) + 1
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
        """The well-founded model of one cyclic component (statuses below it are final)."""
        evaluator = self.evaluator
        evaluator.deadline = INF
        inside = set(members)
        facts: dict[str, int] = {}
        rules: dict[str, Node] = {}
        negates = False
        records = self.view.records
        for member in members:
            # _base, inline
            record = records.get(member)
            rule = self.rules.get(member)
            if record is None or record.retracted:
                facts[member] = FALSE
            elif rule is None:
                facts[member] = TRUE
            elif isinstance(rule, Compiled):
                rules[member] = rule.node
                negates = negates or rule.negates
            else:
                facts[member] = UNKNOWN
        # Small components are iterated in rounds; larger ones keep a worklist.
        local_rdeps = None if len(rules) <= _ROUNDS else self._local_rdeps(rules, inside)
        if negates and any(_negates(node, inside, False) for node in rules.values()):
            # Kleene iteration from all unknown gives Fitting's model, which the
            # well-founded one extends: when it decides every member, they agree.
            values = self._iterate(members, facts, rules, local_rdeps, UNKNOWN)
            if any(values[member] == UNKNOWN for member in rules):
                if local_rdeps is None:
                    local_rdeps = self._local_rdeps(rules, inside)
                values = self._alternating_fixpoint(members, inside, facts, rules, local_rdeps)
        else:
            values = self._iterate(members, facts, rules, local_rdeps, FALSE)
        deadline = evaluator.deadline
        if deadline == INF:
            for member in members:
                self.deadline.pop(member, None)
        else:
            for member in members:
                self._set_deadline(member, deadline)
        return values

    def _local_rdeps(self, rules: dict[str, Node], inside: set[str]) -> dict[str, list[str]]:
        """Dependents inside a component, for each member."""
        local_rdeps: dict[str, list[str]] = {member: [] for member in inside}
        targets = self._targets
        for member in rules:
            for dep in targets(member):
                if dep in inside:
                    local_rdeps[dep].append(member)
        return local_rdeps

    def _iterate(
        self,
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
        status = self.status
        kleene = self.evaluator.kleene
        saved = {member: status.pop(member, FALSE) for member in members}
        try:
            for member, value in facts.items():
                if value:
                    status[member] = value
            if start:
                for member in rules:
                    status[member] = start
            if local_rdeps is None:
                changed = True
                while changed:
                    changed = False
                    for member, node in rules.items():
                        value = kleene(node)
                        if value != status.get(member, FALSE):
                            if value:
                                status[member] = value
                            else:
                                del status[member]
                            changed = True
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
        self,
        members: list[str],
        inside: set[str],
        facts: dict[str, int],
        rules: dict[str, Node],
        local_rdeps: dict[str, list[str]],
    ) -> dict[str, int]:
        """Van Gelder's alternating fixpoint over a component with a negated member."""
        evaluator = self.evaluator
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
        record = self.view.records.get(entity)
        winner = None if record is None else record.fields.get("q")
        current = self.rules.get(entity, _MISSING)
        if winner is None or winner.value is None:
            if current is None:
                return
        elif isinstance(current, Compiled) and current.data is winner.value:
            return  # compiled from this very winner: its requires did not change
        self._forget(entity)
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

    def _level_of(self, entity: str) -> int:
        return self.level.get(self.comp.get(entity, entity), 0)

    def _restructure(self, x: str, old: tuple[str, ...], new: tuple[str, ...]) -> None:
        """Re-split the region of the graph that ``x``'s new edges may have changed."""
        rep = self.comp.get(x, x)
        region: set[str] = set(self.members.get(rep, (x,))) if rep in self.cyclic else {x}
        floor = self.level.get(rep, 0)
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
        for node in region:
            old = self.comp.pop(node, node)
            self.members.pop(old, None)
            self.cyclic.discard(old)
            self.level.pop(old, None)
        raised: list[str] = []
        for component in self._components(region, region):  # dependencies come first
            self._place(component)
            raised.extend(component)
        self._raise_levels(raised)
        self._dirty.update(region)

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


def _negates(node: Node, inside: set[str], negated: bool) -> bool:
    """Whether ``node`` mentions a member of ``inside`` under an odd number of ``not``."""
    if type(node) is str:
        return negated and node in inside
    op = node[0]
    if op == "all" or op == "any":
        return any(_negates(child, inside, negated) for child in node[1])
    if op == "not":
        return _negates(node[1], inside, not negated)
    if op == "at_least":
        return any(_negates(child, inside, negated) for child in node[2])
    return False


def _discard(table: dict[str, set[str]], key: str, value: str) -> None:
    values = table.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del table[key]
