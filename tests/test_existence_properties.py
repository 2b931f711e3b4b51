"""Property tests of the existence engine.

1. Incremental evaluation equals a from-scratch recomputation after every step of a random
   history (declares, retracts, updates, observations from several replicas, merges and
   the clock moving on), and the events of each step are exactly the status differences.
2. Replicas holding the same state, evaluated at the same time, agree on every status (and
   on every reason).
3. The well-founded answer equals a brute-force reference: the alternating fixpoint
   (Gelfond-Lifschitz reducts) of the whole program, with no decomposition into
   components, written here independently of the engine over a normal program obtained by
   pushing negation down to the atoms and naming every sub-formula.
4. ``next_deadline()`` is never in the past and ticking at it never busy-loops.

Every clock is injected; nothing sleeps. Hypothesis runs derandomized so that the suite is
repeatable; set ``SPHAERA_HYPOTHESIS_RANDOM=1`` to explore fresh examples (profiles.py).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from profiles import examples

from sphaera_crdt import Change, Replica, Status
from sphaera_crdt.core.lib0 import decode_state_vector


def profile(full: int) -> settings:
    """Hypothesis settings for a property of ``full`` examples at full strength (the
    active profile checks its share of them, see profiles.py)."""
    return settings(
        max_examples=examples(full),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


OBSERVERS = ("o1", "o2", "o3")
PATHS = ("port", "port", "role", "meta.zone", "meta.tags", "flag", "meta")
OPS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "contains", "present")
WITHINS = (0, 1, 2.5, 2.5, 4, 10, 10)
SMALL_VALUES = (0, 1, 2, "a")


def _predicates() -> dict[str, Callable[..., Any]]:
    def boom(**_: Any) -> bool:
        raise RuntimeError("predicate failed")

    return {
        "yes": lambda **_: True,
        "no": lambda **_: False,
        "maybe": lambda **_: None,
        "boom": boom,
        "even": lambda n=0, **_: n % 2 == 0,
    }


# -- strategies ------------------------------------------------------------------------------

scalar_values = st.sampled_from([0, 1, 1.0, 2, 2.5, 3, True, False, "a", "b", None])
attr_values = st.one_of(
    scalar_values,
    st.lists(scalar_values, max_size=3),
    st.fixed_dictionaries(
        {},
        optional={
            "zone": st.sampled_from(["a", "b", 1]),
            "tags": st.lists(st.sampled_from(["x", "y", 1]), max_size=2),
        },
    ),
)
# small, often matching values, so that attr clauses flip often
small_attrs = st.dictionaries(
    st.sampled_from(["port", "role"]), st.sampled_from(SMALL_VALUES), min_size=1, max_size=2
)
attrs_strategy = st.one_of(
    st.dictionaries(st.sampled_from(["port", "role", "meta", "flag"]), attr_values, max_size=3),
    small_attrs,
)


def _attr_clause(entity: str, path: str, op: str, value: Any) -> dict[str, Any]:
    if op == "present":
        return {"attr": [entity, path], "op": op}
    if op == "in" and type(value) is not list:
        value = [value]
    return {"attr": [entity, path], "op": op, "value": value}


def subjects(n: int) -> list[str]:
    """The entities that observations are made of (and ``observed`` clauses ask about)."""
    return [f"e{i}" for i in range(min(n, 4))]


def constraint_strategy(
    n: int, *, observations: bool = True, attrs: bool = True, calls: bool = True
) -> st.SearchStrategy[Any]:
    """Random constraint data over entities ``e0 .. e{n-1}`` (plus one never declared).

    Observations are about a few subjects only, so that they often matter to some rule.
    """
    ids = [f"e{i}" for i in range(n)] + ["ghost"]
    watched = subjects(n)
    leaves: list[st.SearchStrategy[Any]] = [
        st.booleans(),
        st.sampled_from(ids).map(lambda e: {"exists": e}),
        st.sampled_from(ids).map(lambda e: {"exists": e}),
    ]
    if observations:
        by = st.one_of(
            st.just("*"),
            st.lists(st.sampled_from([*OBSERVERS, "main"]), min_size=1, max_size=3),
        )
        if calls:  # "self" is as non-deterministic across replicas as a predicate
            by = st.one_of(by, st.just("self"))
        observed_clause = st.fixed_dictionaries(
            {
                "observed": st.sampled_from(watched),
                "within": st.sampled_from(WITHINS),
            },
            optional={
                "by": by,
                "quorum": st.sampled_from([1, 1, 2, 3]),
                "ok": st.sampled_from([True, True, False]),
            },
        )
        leaves += [observed_clause] * 3
    if attrs:
        any_attr = st.builds(
            _attr_clause,
            st.sampled_from(ids),
            st.sampled_from(PATHS),
            st.sampled_from(OPS),
            attr_values,
        )
        # a clause on a watched entity's small attributes flips often under updates
        small_attr = st.builds(
            _attr_clause,
            st.sampled_from(watched),
            st.sampled_from(["port", "role"]),
            st.sampled_from(OPS),
            st.sampled_from(SMALL_VALUES),
        )
        leaves += [any_attr, small_attr, small_attr]
    if calls:
        leaves.append(
            st.builds(
                lambda name, n: {"call": name, "args": {"n": n}},
                st.sampled_from(["yes", "no", "maybe", "boom", "even", "missing"]),
                st.integers(0, 3),
            )
        )
    return formulas(st.one_of(*leaves), depth=3)


def formulas(leaf: st.SearchStrategy[Any], depth: int) -> st.SearchStrategy[Any]:
    """Formulas over ``leaf`` nested at most ``depth`` deep, every connective with 0-3 parts."""
    if depth == 0:
        return leaf
    inner = formulas(leaf, depth - 1)
    parts = st.lists(inner, max_size=3)
    return st.one_of(
        leaf,
        leaf,
        parts.map(lambda cs: {"all": cs}),
        parts.map(lambda cs: {"any": cs}),
        inner.map(lambda c: {"not": c}),
        st.builds(lambda k, cs: {"at_least": k, "of": cs}, st.integers(0, 3), parts),
    )


# -- helpers ---------------------------------------------------------------------------------


def skewed(t: list[float], skew: float) -> Callable[[], float]:
    """A clock that reads the shared time ``t[0]`` plus a fixed skew."""
    return lambda: t[0] + skew


class World:
    """A main replica, a few other replicas (observers and writers) and one shared clock."""

    def __init__(self, n: int, *, skews: dict[str, float] | None = None) -> None:
        # not a round number, so that sums like at + within round
        self.t = [1000.0 + 1 / 7]
        self.ids = [f"e{i}" for i in range(n)] + ["ghost"]
        skews = skews or {}
        predicates = _predicates()
        self.main = Replica("main", clock=lambda: self.t[0], predicates=predicates)
        self.others: dict[str, Replica] = {}
        for name in OBSERVERS:
            skew = skews.get(name, 0.0)
            self.others[name] = Replica(name, clock=skewed(self.t, skew), predicates=predicates)
        self.events: list[Change] = []
        self.main.subscribe(self.events.append)

    def statuses(self, replica: Replica) -> dict[str, Status]:
        names = [*self.ids, *(f"replica:{r}" for r in ["main", *OBSERVERS])]
        return {e: replica.status(e) for e in names}

    def push(self, src: Replica, dst: Replica) -> list[Change]:
        return dst.merge(src.delta(dst.state_vector()))


def nonabsent(statuses: dict[str, Status]) -> dict[str, Status]:
    return {e: s for e, s in statuses.items() if s is not Status.ABSENT}


def exists_deps(replica: Replica, entity: str) -> set[str]:
    """The entities whose ``exists`` the current rule of ``entity`` mentions (none for a
    retracted one)."""
    view = replica.entity(entity)
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "exists" in node and isinstance(node["exists"], str):
                found.add(node["exists"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    # A retracted entity's rule is no edge: it is absent whatever its requires says.
    if view is not None and view.reason != "retracted":
        walk(view.requires)
    return found


def reachable(replica: Replica, ids: list[str]) -> dict[str, set[str]]:
    """For each entity, every entity it depends on through ``exists`` (transitively)."""
    direct = {e: exists_deps(replica, e) for e in ids}
    out: dict[str, set[str]] = {}
    for e in ids:
        seen: set[str] = set()
        stack = list(direct[e])
        while stack:
            d = stack.pop()
            if d in seen:
                continue
            seen.add(d)
            stack.extend(direct.get(d, ()))
        out[e] = seen
    return out


def check_events(
    world: World, before: dict[str, Status], after: dict[str, Status], events: list[Change]
) -> None:
    """The events of one step are exactly the differences, once each, dependencies first."""
    diff = {e: (before[e], after[e]) for e in before if before[e] != after[e]}
    got = [(c.entity, (c.before, c.after)) for c in events]
    assert len({e for e, _ in got}) == len(got), f"an entity changed twice in one step: {got}"
    assert dict(got) == diff, f"events {got} differ from the status changes {diff}"
    deps = reachable(world.main, world.ids)
    order = [c.entity for c in events]
    for i, early in enumerate(order):
        for late in order[i + 1 :]:
            if late in deps.get(early, ()) and early not in deps.get(late, ()):
                raise AssertionError(f"{early} was reported before its dependency {late}")


# -- 1. incremental == full recomputation ------------------------------------------------------


@dataclass
class Step:
    kind: str
    args: tuple[Any, ...] = field(default_factory=tuple)


def steps_strategy(n: int) -> st.SearchStrategy[list[Step]]:
    entity = st.sampled_from([f"e{i}" for i in range(n)])
    constraint = constraint_strategy(n)
    requires = st.one_of(st.none(), constraint, constraint)
    replica = st.sampled_from(OBSERVERS)
    subject = st.sampled_from(subjects(n))
    ttl = st.one_of(st.none(), st.sampled_from([0, 0.5, 2, 6]))
    step = st.one_of(
        st.tuples(st.just("declare"), entity, requires, attrs_strategy),
        st.tuples(st.just("declare"), entity, requires, attrs_strategy),
        st.tuples(st.just("retract"), entity),
        st.tuples(st.just("update"), entity, attrs_strategy),
        st.tuples(st.just("update"), subject, small_attrs),
        st.tuples(st.just("update"), subject, small_attrs),
        st.tuples(st.just("observe"), st.just("main"), subject, st.booleans(), ttl),
        st.tuples(st.just("observe"), st.just("main"), subject, st.just(True), ttl),
        st.tuples(st.just("observe"), replica, subject, st.booleans(), ttl),
        st.tuples(st.just("observe"), replica, subject, st.just(True), ttl),
        st.tuples(st.just("observe"), replica, subject, st.just(True), ttl),
        st.tuples(st.just("advance"), st.sampled_from([0.0, 0.25, 0.5, 1, 1.5, 2.5, 4, 11])),
        st.tuples(st.just("advance"), st.sampled_from([0.1, 0.3, 0.7, 1, 2.5])),
        # to the next deadline, or to the instant just before it (the last one of freshness)
        st.tuples(st.just("deadline"), st.booleans()),
        st.tuples(st.just("deadline"), st.booleans()),
        st.tuples(st.just("remote_declare"), replica, entity, requires, attrs_strategy),
        st.tuples(st.just("remote_retract"), replica, entity),
        st.tuples(st.just("remote_update"), replica, subject, small_attrs),
        st.tuples(st.just("pull"), replica),
    )
    return st.lists(step.map(lambda s: Step(s[0], s[1:])), min_size=4, max_size=25)


def seeded_world() -> st.SearchStrategy[tuple[int, list[Any], list[Step]]]:
    def build(n: int) -> st.SearchStrategy[tuple[int, list[Any], list[Step]]]:
        constraint = constraint_strategy(n)
        initial = st.lists(st.one_of(st.none(), constraint, constraint), min_size=n, max_size=n)
        return st.tuples(st.just(n), initial, steps_strategy(n))

    return st.integers(3, 25).flatmap(build)


def run_step(world: World, step: Step) -> list[Change]:
    """Perform one step; return the events the main replica emitted for it."""
    main = world.main
    mark = len(world.events)
    kind, args = step.kind, step.args
    returned: list[Change] | None = None
    if kind == "declare":
        entity, requires, attrs = args
        main.declare(entity, requires=requires, attrs=attrs)
    elif kind == "retract":
        if main.entity(args[0]) is not None:
            main.retract(args[0])
    elif kind == "update":
        if main.entity(args[0]) is not None:
            main.update(args[0], args[1])
    elif kind == "observe":
        observer, subject, ok, ttl = args
        if observer == "main":
            main.observe(subject, ok=ok, ttl=ttl)
        else:
            world.others[observer].observe(subject, ok=ok, ttl=ttl)
            returned = world.push(world.others[observer], main)
    elif kind == "advance":
        world.t[0] += args[0]
        returned = main.tick(world.t[0])
    elif kind == "deadline":
        deadline = main.next_deadline()
        if deadline is not None:
            world.t[0] = (
                deadline if args[0] else max(world.t[0], math.nextafter(deadline, -math.inf))
            )
        returned = main.tick(world.t[0])
    elif kind == "remote_declare":
        name, entity, requires, attrs = args
        world.others[name].declare(entity, requires=requires, attrs=attrs)
        returned = world.push(world.others[name], main)
    elif kind in ("remote_retract", "remote_update"):
        other = world.others[args[0]]
        world.push(main, other)
        if other.entity(args[1]) is not None:
            if kind == "remote_retract":
                other.retract(args[1])
            else:
                other.update(args[1], args[2])
        returned = world.push(other, main)
    elif kind == "pull":
        other = world.others[args[0]]
        world.push(main, other)
        returned = world.push(other, main)
    else:  # pragma: no cover
        raise AssertionError(kind)
    events = world.events[mark:]
    if returned is not None:
        assert returned == events, "merge()/tick() returned other changes than subscribers got"
    return events


@profile(300)
@given(seeded_world())
def test_incremental_equals_full_recomputation(case: tuple[int, list[Any], list[Step]]) -> None:
    n, initial, steps = case
    world = World(n, skews={"o1": 0.0, "o2": -1.3, "o3": 2.1})
    main = world.main
    for index, requires in enumerate(initial):
        main.declare(f"e{index}", requires=requires)
    assert nonabsent(world.statuses(main)) == main.derive_all(world.t[0])
    for step in steps:
        before = world.statuses(main)
        events = run_step(world, step)
        after = world.statuses(main)
        now = world.t[0]
        assert nonabsent(after) == main.derive_all(now), f"after {step}"
        check_events(world, before, after, events)
        check_levels(main)
        deadline = main.next_deadline()
        assert deadline is None or deadline > now, f"deadline {deadline} is not after {now}"


def check_levels(replica: Replica) -> None:
    """Every component that depends on another outside it has a level above that one's:
    the order in which a step solves them (levels move incrementally, not only by a full
    derivation)."""
    engine = replica._engine
    for entity in engine.rules:
        rep = engine.comp.get(entity, entity)
        for dep in engine._targets(entity):
            dep_rep = engine.comp.get(dep, dep)
            if dep_rep == rep:
                continue
            assert rep in engine.level, f"{entity} depends on {dep} but {rep} has no level"
            dep_level = engine.level.get(dep_rep)
            assert dep_level is None or dep_level < engine.level[rep], (
                f"{entity} (level {engine.level[rep]}) depends on {dep} (level {dep_level})"
            )


# -- 2. same state, same time -> same statuses -----------------------------------------------


@profile(120)
@given(st.data())
def test_synced_replicas_agree(data: st.DataObject) -> None:
    n = data.draw(st.integers(3, 15), label="n")
    count = data.draw(st.integers(2, 4), label="replicas")
    names = ["main", *OBSERVERS][:count]
    t = [500.0]
    skews = data.draw(
        st.lists(st.sampled_from([0.0, -1.0, 0.5, 3.0]), min_size=count, max_size=count)
    )
    replicas = [Replica(name, clock=skewed(t, s)) for name, s in zip(names, skews, strict=True)]
    ids = [f"e{i}" for i in range(n)] + ["ghost"]
    requires = st.one_of(st.none(), constraint_strategy(n, calls=False))
    entity = st.sampled_from(ids[:-1])
    op = st.one_of(
        st.tuples(st.just("declare"), entity, requires, attrs_strategy),
        st.tuples(st.just("retract"), entity),
        st.tuples(st.just("update"), entity, attrs_strategy),
        st.tuples(
            st.just("observe"),
            entity,
            st.booleans(),
            st.one_of(st.none(), st.sampled_from([0, 1, 5])),
        ),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 3.0])),
        st.tuples(st.just("sync"), st.integers(0, count - 1)),
    )
    plan = data.draw(
        st.lists(st.tuples(st.integers(0, count - 1), op), min_size=1, max_size=40), label="plan"
    )
    for who, (kind, *args) in plan:
        replica = replicas[who]
        if kind == "declare":
            replica.declare(args[0], requires=args[1], attrs=args[2])
        elif kind == "retract" and replica.entity(args[0]) is not None:
            replica.retract(args[0])
        elif kind == "update" and replica.entity(args[0]) is not None:
            replica.update(args[0], args[1])
        elif kind == "observe":
            replica.observe(args[0], ok=args[1], ttl=args[2])
        elif kind == "advance":
            t[0] += args[0]
            replica.tick()
        elif kind == "sync":
            other = replicas[args[0]]
            other.merge(replica.delta(other.state_vector()))
    sync_all(replicas)
    later = data.draw(st.sampled_from([0.0, 0.5, 2.0, 6.0]), label="later")
    t[0] += later
    now = t[0]
    everyone = [*ids, *(f"replica:{name}" for name in names)]
    results = []
    reasons = []
    for replica in replicas:
        replica.tick(now)
        results.append({e: replica.status(e) for e in everyone})
        views = replica.entities()
        reasons.append({e: view.reason for e, view in views.items()})
    for name, result, reason in zip(names[1:], results[1:], reasons[1:], strict=True):
        assert result == results[0], f"{name} disagrees with {names[0]}"
        # the explanations are derived from the same state and time, so they agree too
        assert reason == reasons[0], f"{name} explains differently from {names[0]}"
    assert nonabsent(results[0]) == replicas[0].derive_all(now)


def sync_all(replicas: list[Replica]) -> None:
    """Exchange deltas both ways until every state vector is equal."""
    for _ in range(10):
        for a, b in itertools.permutations(replicas, 2):
            b.merge(a.delta(b.state_vector()))
        vectors = [decode_state_vector(r.state_vector()) for r in replicas]
        if all(vector == vectors[0] for vector in vectors):
            return
    raise AssertionError("replicas did not converge")


# -- 3. the well-founded model against a brute-force reference --------------------------------


def negation_normal_form(formula: Any, positive: bool = True) -> Any:
    """Push ``not`` down to the ``exists`` atoms (Kleene: ``not not x`` is ``x``).

    The result uses ``{"exists": x}``, ``{"absent": x}`` (a negative literal), ``all``,
    ``any``, ``at_least`` and the two constants. Nested negation follows Kleene logic, the
    logic of the constraint language: ``{"not": {"not": C}}`` means ``C``, so a rule
    ``e <- not not e`` is a positive loop and ``e`` is absent. (Naming every sub-formula
    with an atom of its own *before* this step would instead make it an even loop through
    negation, undetermined; the language is Kleene, so that reading is not the one.)
    """
    if formula is True or formula is False:
        return formula if positive else not formula
    if "exists" in formula:
        return formula if positive else {"absent": formula["exists"]}
    if "not" in formula:
        return negation_normal_form(formula["not"], not positive)
    if "all" in formula or "any" in formula:
        key = "all" if "all" in formula else "any"
        children = [negation_normal_form(c, positive) for c in formula[key]]
        if not positive:
            key = "any" if key == "all" else "all"
        return {key: children}
    if "at_least" in formula:
        k, children = formula["at_least"], formula["of"]
        if positive:
            return {"at_least": k, "of": [negation_normal_form(c) for c in children]}
        # Fewer than k hold exactly when at least n - k + 1 fail.
        need = max(0, len(children) - k + 1)
        return {"at_least": need, "of": [negation_normal_form(c, False) for c in children]}
    raise AssertionError(formula)  # pragma: no cover


class NormalProgram:
    """A normal logic program: ``head <- pos_1, ..., pos_m, not neg_1, ..., not neg_k``.

    Formulas are first put in negation normal form; then every sub-formula gets an atom of
    its own (Lloyd-Topor). Negation then only ever applies to entity atoms, and naming
    positive sub-formulas keeps the well-founded model of the entity atoms.
    """

    def __init__(self) -> None:
        self.rules: list[tuple[str, frozenset[str], frozenset[str]]] = []
        self._fresh = itertools.count()

    def name(self, formula: Any) -> str:
        """An atom true exactly when ``formula`` (in negation normal form) is."""
        if isinstance(formula, dict) and "exists" in formula:
            return f"ent:{formula['exists']}"
        atom = f"aux:{next(self._fresh)}"
        if formula is True:
            self.rules.append((atom, frozenset(), frozenset()))
        elif formula is False:
            pass
        elif "absent" in formula:
            self.rules.append((atom, frozenset(), frozenset({f"ent:{formula['absent']}"})))
        elif "all" in formula:
            parts = frozenset(self.name(c) for c in formula["all"])
            self.rules.append((atom, parts, frozenset()))
        elif "any" in formula:
            for c in formula["any"]:
                self.rules.append((atom, frozenset({self.name(c)}), frozenset()))
        elif "at_least" in formula:
            named = [self.name(c) for c in formula["of"]]
            for chosen in itertools.combinations(named, formula["at_least"]):
                self.rules.append((atom, frozenset(chosen), frozenset()))
        else:  # pragma: no cover
            raise AssertionError(formula)
        return atom

    def gamma(self, assumed: set[str]) -> set[str]:
        """The least model of the reduct of the program by ``assumed`` (Gelfond-Lifschitz)."""
        reduct = [(h, pos) for h, pos, neg in self.rules if not neg & assumed]
        model: set[str] = set()
        changed = True
        while changed:
            changed = False
            for head, pos in reduct:
                if head not in model and pos <= model:
                    model.add(head)
                    changed = True
        return model

    def well_founded(self) -> tuple[set[str], set[str]]:
        """(true atoms, atoms that are true or undefined): the alternating fixpoint."""
        true: set[str] = set()
        while True:
            possible = self.gamma(true)
            new_true = self.gamma(possible)
            if new_true == true:
                return true, possible
            true = new_true


def reference_statuses(program: dict[str, Any]) -> dict[str, Status]:
    """The well-founded statuses of ``{entity: requires}`` (``None``: no requirements)."""
    normal = NormalProgram()
    for entity, requires in program.items():
        body = normal.name(negation_normal_form(True if requires is None else requires))
        normal.rules.append((f"ent:{entity}", frozenset({body}), frozenset()))
    true, possible = normal.well_founded()
    out = {}
    for entity in program:
        atom = f"ent:{entity}"
        out[entity] = (
            Status.EXISTS
            if atom in true
            else Status.UNDETERMINED
            if atom in possible
            else Status.ABSENT
        )
    return out


def _declare_program(replica: Replica, program: dict[str, Any], order: list[str]) -> None:
    for entity in order:
        replica.declare(entity, requires=program[entity])


@profile(300)
@given(st.data())
def test_well_founded_model_matches_reference(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 8), label="n")
    formula = constraint_strategy(n, observations=False, attrs=False, calls=False)
    program = {f"e{i}": data.draw(st.one_of(st.none(), formula), label=f"e{i}") for i in range(n)}
    expected = reference_statuses(program)
    order = data.draw(st.permutations(list(program)), label="order")
    replica = Replica("wf", clock=lambda: 0.0, declare_self=False)
    # Build the program in a random order: the incremental engine restructures its graph
    # on every declaration, and must land on the same model however it got there.
    _declare_program(replica, program, order)
    got = {entity: replica.status(entity) for entity in program}
    assert got == expected, f"program {program}"
    assert replica.status("ghost") is Status.ABSENT


# -- 4. deadlines ------------------------------------------------------------------------------


def _deadline_loop(replica: Replica, t: list[float], limit: int = 200) -> Iterator[float]:
    """Tick at every deadline until none is left; yield each deadline."""
    last = t[0]
    for _ in range(limit):
        deadline = replica.next_deadline()
        if deadline is None:
            return
        assert deadline > last, f"deadline {deadline} is not after the last tick at {last}"
        t[0] = deadline
        replica.tick(deadline)
        last = deadline
        yield deadline
    raise AssertionError(f"still deadlines after {limit} ticks")


@profile(120)
@given(st.data())
def test_next_deadline_is_never_past_and_never_busy(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 10), label="n")
    t = [100.0]
    replica = Replica("main", clock=lambda: t[0])
    others = {name: Replica(name, clock=lambda: t[0]) for name in OBSERVERS}
    formula = constraint_strategy(n, attrs=False, calls=False)
    for i in range(n):
        replica.declare(f"e{i}", requires=data.draw(st.one_of(st.none(), formula)))
    observations = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(["main", *OBSERVERS]),
                st.integers(0, n - 1),
                st.booleans(),
                st.one_of(st.none(), st.sampled_from([0, 0.5, 3])),
                st.sampled_from([0.0, 0.3, 1.0]),
            ),
            max_size=12,
        ),
        label="observations",
    )
    for who, subject, ok, ttl, wait in observations:
        t[0] += wait
        replica.tick(t[0])
        if who == "main":
            replica.observe(f"e{subject}", ok=ok, ttl=ttl)
        else:
            others[who].observe(f"e{subject}", ok=ok, ttl=ttl)
            replica.merge(others[who].delta(replica.state_vector()))
    ids = [f"e{i}" for i in range(n)]
    for deadline in _deadline_loop(replica, t):
        assert {e: replica.status(e) for e in ids if replica.status(e) is not Status.ABSENT} == {
            e: s for e, s in replica.derive_all(deadline).items() if e in ids
        }
    # Once no deadline is left, time alone changes nothing.
    snapshot = {e: replica.status(e) for e in ids}
    t[0] += 1000.0
    assert replica.tick(t[0]) == []
    assert {e: replica.status(e) for e in ids} == snapshot
