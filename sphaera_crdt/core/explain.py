"""Explanations: why an entity has its status, as a JSON-serialisable tree and a short reason.

The well-founded model is a fixpoint of Kleene evaluation, so re-evaluating a rule with the
final statuses gives the entity's status; the explanation walks the rule and keeps only
the *deciding* clauses (the false ones of a false ``all``, the true ones of a true ``any``,
the unknown ones of an unknown clause). ``exists`` clauses explain the entity they name,
to a bounded depth; past it, a chain of single causes is followed and summarised by its
length and its last link, so a 100-deep chain reads in a few lines.

The one-line reason names the *atoms* that decided, found by descending only into the
children that decide (:func:`_deciding`): every child of a true ``all`` (each one was
needed) but only the first false one of a false ``all``; the first true child of a true
``any`` but every child of a false one; the first K true children of a true ``at_least K``
and the first n - K + 1 false ones of a false one (enough that K cannot hold); the unknown
children of an unknown clause; and the inner clause of a ``not``, with the opposite value.
The same atoms are listed as data under ``decided_by`` in the tree, so a reader (or a
test) can check that each one, turned round by the ``not`` clauses above it, has the value
of the status.

However deep it is asked to go, a tree nests at most :data:`MAX_NESTING` levels (and says
where it was cut): the values it shows nest at most :data:`~.codec.MAX_DEPTH` levels more,
so every encoder on the way out (orjson stops at 254) can write it, and building it never
recurses far. Fields that could not be read are named under ``"unreadable"``.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any, Final, NamedTuple

from . import codec
from .compiler import Compiled
from .existence import ExistenceEngine, Malformed
from .formulas import FALSE, TRUE, UNKNOWN, Node, Tree, stale_from, usable_from
from .records import Unreadable

__all__ = ["STATUS_NAMES", "explain", "reason"]

STATUS_NAMES: Final = {TRUE: "exists", FALSE: "absent", UNKNOWN: "undetermined"}
VALUE_NAMES: Final = {TRUE: "true", FALSE: "false", UNKNOWN: "unknown"}
#: Deciding children listed per clause before the rest are counted.
MAX_CHILDREN: Final = 8
#: Deciding atoms a one-line reason names before it counts the rest.
MAX_REASON_ATOMS: Final = 3
#: Observations listed per ``observed`` clause.
MAX_OBSERVATIONS: Final = 10
#: Longest chain followed when summarising.
MAX_CHAIN: Final = 100_000
#: Deepest nesting of lists and objects in a tree, not counting the values it shows (which
#: add at most :data:`~.codec.MAX_DEPTH`): together well within the 254 orjson writes.
MAX_NESTING: Final = 100
_NO_CYCLE: Final[frozenset[str]] = frozenset()
#: Clauses explained by nested clauses or entities (the others by flat facts).
_NESTED: Final = frozenset({"all", "any", "at_least", "not", "exists"})


def reason(engine: ExistenceEngine, entity: str) -> str:
    """A one-line reason for the entity's current status: the atoms that decided it."""
    return _decision(engine, entity)[0]


def explain(
    engine: ExistenceEngine, entity: str, *, depth: int = 3, now: float | None = None
) -> dict[str, Any]:
    """The explanation tree of an entity's current status.

    ``now``, when given, is recorded at the root as ``"now"``: the clock reading that the
    tree's absolute instants (``at``, ``stale_since``, ``expires_at``) are read against.
    """
    tree = _explain_entity(engine, entity, depth, (), 1)
    if now is not None:
        tree["now"] = now
    return tree


def _decision(engine: ExistenceEngine, entity: str) -> tuple[str, list[_Atom]]:
    """The reason of the entity's status and the atoms it names (none for the reasons
    that are not about a rule: undeclared, retracted, no requirements, malformed)."""
    base = _base_reason(engine, entity)
    if base is not None:
        return base, []
    value = engine.status.get(entity, FALSE)
    rep = engine.comp.get(entity, entity)
    negates = False
    if rep in engine.cyclic:
        members = engine.members.get(rep) or [entity]
        cycle, negates = _cycle_facts(engine, rep, members)
    else:
        members, cycle = [entity], _NO_CYCLE
    rule = engine.rules[entity]
    assert isinstance(rule, Compiled)
    atoms = _deciding(engine, rule.node, value, cycle)
    named = _join(engine, atoms)
    if value == TRUE:
        return ("requirements hold" if not named else f"requirements hold: {named}"), atoms
    if negates and value == UNKNOWN:
        return f"unresolved cycle through negation: {_names(members)}", atoms
    if cycle and value == FALSE and atoms and all(_own_cycle(atom, cycle) for atom in atoms):
        # Nothing but the absence of members of its own cycle: no outside support.
        return f"supported only by a cycle: {_names(members)}", atoms
    if named:
        return named, atoms
    return ("requirements do not hold" if value == FALSE else "requirements undetermined"), atoms


def _own_cycle(atom: _Atom, cycle: AbstractSet[str]) -> bool:
    """Whether ``atom`` is the absence of a member of ``cycle``, read as it is written."""
    return atom.node[0] == "exists" and atom.node[1] in cycle and not atom.negated


def _join(engine: ExistenceEngine, atoms: list[_Atom]) -> str:
    """The first few atoms in words (each once), then how many more there are."""
    texts: list[str] = []
    used = 0
    for atom in atoms:
        if len(texts) == MAX_REASON_ATOMS:
            break
        used += 1
        text = _describe_atom(engine, atom.node, atom.value)
        if text not in texts:
            texts.append(text)
    more = len(atoms) - used
    return "; ".join(texts) + (f"; and {more} more" if more > 0 else "")


def _base_reason(engine: ExistenceEngine, entity: str) -> str | None:
    if type(engine.rules.get(entity)) is Compiled:
        return None  # a compiled rule is only ever kept for a live record
    record = engine.view.records.get(entity)
    if record is None or not record.declared:
        return "undeclared"
    if record.retracted:
        return "retracted"
    rule = engine.rules.get(entity)
    if rule is None:
        return "declared with no requirements"
    if isinstance(rule, Malformed):
        return str(rule)
    return None


def _cycle(engine: ExistenceEngine, entity: str) -> set[str]:
    rep = engine.comp.get(entity, entity)
    return set(engine.members.get(rep) or [entity]) if rep in engine.cyclic else set()


def _cycle_facts(
    engine: ExistenceEngine, rep: str, members: list[str]
) -> tuple[frozenset[str], bool]:
    """A cycle's members as a set, and whether a member's rule names one of them under a
    negation: kept on the engine until a rule or a component changes, since every member
    of a cycle that changes status asks the same (reading the whole cycle each time would
    make a step's events cost the square of its size)."""
    facts = engine.cycle_facts.get(rep)
    if facts is None:
        cycle = frozenset(members)
        facts = engine.cycle_facts[rep] = (cycle, _negates_inside(engine, members, cycle))
    return facts


def _names(members: list[str]) -> str:
    shown = ", ".join(members[:MAX_CHILDREN])
    more = len(members) - MAX_CHILDREN
    return shown + (f" and {more} more" if more > 0 else "")


def _tree(node: Node) -> Tree:
    """``node`` as a tuple: an ``exists`` atom is compiled to the bare entity id."""
    return ("exists", node) if isinstance(node, str) else node


def _value(engine: ExistenceEngine, node: Node) -> int:
    evaluator = engine.evaluator
    saved = evaluator.deadline
    try:
        return evaluator.kleene(node)
    finally:
        evaluator.deadline = saved


def _negates_inside(engine: ExistenceEngine, members: list[str], cycle: AbstractSet[str]) -> bool:
    """Whether some member's rule mentions a member of the cycle under a negation."""

    def walk(node: Node, negated: bool) -> bool:
        node = _tree(node)
        op = node[0]
        if op == "exists":
            return negated and node[1] in cycle
        if op == "not":
            return walk(node[1], not negated)
        if op in ("all", "any"):
            return any(walk(child, negated) for child in node[1])
        if op == "at_least":
            return any(walk(child, negated) for child in node[2])
        return False

    for member in members:
        rule = engine.rules.get(member)
        if isinstance(rule, Compiled) and walk(rule.node, False):
            return True
    return False


class _Atom(NamedTuple):
    """A clause that decided a value: an atom, or a connective that decides by its shape
    alone (an empty ``all``; ``at_least`` 0). Under an odd number of ``not`` (``negated``)
    its own ``value`` is the opposite of the value it decided."""

    node: Tree
    value: int
    negated: bool


def _deciding(
    engine: ExistenceEngine, node: Node, want: int, avoid: AbstractSet[str] = _NO_CYCLE
) -> list[_Atom]:
    """The atoms that decide ``node``'s value ``want``, in order.

    Which children of a connective decide (see :func:`_deciding_children`): every child of
    a true ``all`` and of a false ``any``; the first false child of a false ``all`` and the
    first true child of a true ``any``; the first K true children of a true ``at_least K``,
    the first n - K + 1 false children of a false one; the unknown children of an unknown
    clause. ``not`` hands its inner clause the opposite value. Children that mention no
    member of ``avoid`` (the entity's own cycle) come first.
    """
    found: list[_Atom] = []
    _collect(engine, node, want, avoid, False, found)
    return found


def _collect(
    engine: ExistenceEngine,
    node: Node,
    want: int,
    avoid: AbstractSet[str],
    negated: bool,
    found: list[_Atom],
) -> None:
    """Append to ``found`` the atoms of :func:`_deciding` (a list, not a generator: a
    reason is made for every change, and most rules are an atom or a flat connective)."""
    if isinstance(node, str):
        found.append(_Atom(("exists", node), want, negated))
        return
    op = node[0]
    if op == "not":
        _collect(engine, node[1], TRUE - want, avoid, not negated, found)
        return
    if op == "all" or op == "any" or op == "at_least":
        children = _deciding_children(engine, node, want, avoid)
        if children is None:
            found.append(_Atom(node, want, negated))
            return
        for child in children:
            _collect(engine, child, want, avoid, negated, found)
        return
    found.append(_Atom(node, want, negated))


def _deciding_children(
    engine: ExistenceEngine, node: Tree, want: int, avoid: AbstractSet[str]
) -> list[Node] | None:
    """The children of the connective ``node`` that decide its value ``want``; ``None``
    when its shape alone decides it (no child could: an empty ``all`` or ``any``, an
    ``at_least`` that needs none or more than it has)."""
    op = node[0]
    children: list[Node] = node[2] if op == "at_least" else node[1]
    count = len(children)
    if op == "at_least":
        need: int = node[1]
        if (want == TRUE and need <= 0) or (want == FALSE and need > count):
            return None
        take = need if want == TRUE else count - need + 1 if want == FALSE else count
    elif not children:
        return None
    elif op == "all":
        take = 1 if want == FALSE else count
    else:
        take = 1 if want == TRUE else count
    status = engine.status
    matching = [
        child
        for child in children
        # exists atoms, most of what rules hold, read their status inline
        if (status.get(child, FALSE) if type(child) is str else _value(engine, child)) == want
    ]
    if avoid:
        matching.sort(key=lambda child: _mentions(child, avoid))  # stable: outside first
    return matching[:take]


def _mentions(node: Node, entities: AbstractSet[str]) -> bool:
    """Whether an ``exists`` atom of ``node`` names one of ``entities``."""
    if isinstance(node, str):
        return node in entities
    op = node[0]
    if op in ("all", "any"):
        return any(_mentions(child, entities) for child in node[1])
    if op == "at_least":
        return any(_mentions(child, entities) for child in node[2])
    if op == "not":
        return _mentions(node[1], entities)
    return False


def _first_exists(engine: ExistenceEngine, node: Node, want: int) -> str | None:
    """The entity named by the first deciding atom of ``node``, when it is an ``exists``."""
    atoms = _deciding(engine, node, want)
    return atoms[0].node[1] if atoms and atoms[0].node[0] == "exists" else None


def _describe_atom(engine: ExistenceEngine, node: Node, value: int) -> str:
    node = _tree(node)
    op = node[0]
    if op == "const":
        return f"constant {VALUE_NAMES[node[1]]}"
    if op == "exists":
        return _describe_exists(engine, node[1])
    if op == "observed":
        return _describe_observed(_observed_facts(engine, node, detail=False))
    if op == "attr":
        return f"attr {node[1]}.{'.'.join(node[2])} {node[3]} {node[4]!r} is {VALUE_NAMES[value]}"
    if op in ("all", "any"):
        return f"an empty {op} {'holds' if value == TRUE else 'does not hold'}"
    if op == "at_least":
        have = len(node[2])
        if value == TRUE:
            return f"no clause needed (at_least {node[1]})"
        return f"{node[1]} clauses needed, {f'only {have}' if have else 'none'} given"
    name = node[1]
    if name not in engine.evaluator.predicates:
        return f"unknown predicate {name!r}"
    return f"predicate {name!r} is {VALUE_NAMES[value]}"


def _describe_observed(facts: dict[str, Any]) -> str:
    """An ``observed`` clause in words: how many fresh observations, how many needed (a
    count never reads "k of n" with k above n)."""
    fresh = facts["fresh"]
    plural = "" if fresh == 1 else "s"
    kind = "" if facts["ok"] else " not-ok"
    by = facts["by"]
    observers = "" if by == "*" else f" by {by}" if by == "self" else f" by {', '.join(by)}"
    text = (
        f"{fresh} fresh{kind} observation{plural} of {facts['subject']}{observers}"
        f" within {facts['within']:g}s, {facts['quorum']} needed"
    )
    if "unreadable" in facts:
        text += f", {facts['unreadable']} unreadable"
    future = facts.get("dated_in_future")
    if future:
        # No "by how much" here: that changes with every read, and replicas holding the
        # same state would give different reasons a moment apart (why() has it).
        text += (
            f", {future['count']} dated in the future"
            f" (more than the {future['max_skew']:g}s allowed)"
        )
    return text


def _describe_exists(engine: ExistenceEngine, entity: str) -> str:
    status = engine.status.get(entity, FALSE)
    return f"{entity} exists" if status == TRUE else f"{entity} is {STATUS_NAMES[status]}"


def _explain_entity(
    engine: ExistenceEngine, entity: str, depth: int, path: tuple[str, ...], level: int
) -> dict[str, Any]:
    """The explanation of ``entity``, an object at nesting ``level`` of the tree."""
    value = engine.status.get(entity, FALSE)
    text, atoms = _decision(engine, entity)
    out: dict[str, Any] = {"entity": entity, "status": STATUS_NAMES[value], "reason": text}
    if atoms and level + 2 <= MAX_NESTING:  # its list, the atoms, then the values they show
        out["decided_by"] = [_atom_json(engine, atom) for atom in atoms[:MAX_CHILDREN]]
        if len(atoms) > MAX_CHILDREN:
            out["decided_by_more"] = len(atoms) - MAX_CHILDREN
    record = engine.view.records.get(entity)
    unreadable = {} if record is None else record.unreadable()
    table = engine.view.observations.get(entity, {})
    unread = sorted(observer for observer, winner in table.items() if winner.observation is None)
    for observer in unread[:MAX_OBSERVATIONS]:
        unreadable[f"observation by {observer}"] = table[observer].unreadable
    if unreadable:
        out["unreadable"] = unreadable
    cycle = _cycle(engine, entity)
    if cycle:
        out["cycle"] = sorted(cycle)
    rule = engine.rules.get(entity)
    if _base_reason(engine, entity) is not None or not isinstance(rule, Compiled):
        return out
    if entity in path:
        out["see"] = "above (cycle)"
        return out
    cut = level + 2 > MAX_NESTING  # no room for its clause and the clause's dependency
    if depth <= 0 or cut:
        if cut:
            out["truncated"] = f"the tree is cut at {MAX_NESTING} levels of nesting"
        chain = _chain(engine, entity, set(path))
        if chain:
            out["chain"] = chain
        return out
    out["because"] = _explain_node(engine, rule.node, depth - 1, (*path, entity), level + 1)
    return out


def _explain_node(
    engine: ExistenceEngine, node: Node, depth: int, path: tuple[str, ...], level: int
) -> dict[str, Any]:
    """The explanation of a clause, an object at nesting ``level`` of the tree."""
    value = _value(engine, node)
    node = _tree(node)
    op = node[0]
    out: dict[str, Any] = {"clause": op, "value": VALUE_NAMES[value]}
    if level + (1 if op == "exists" else 2) > MAX_NESTING and op in _NESTED:
        out["truncated"] = f"the tree is cut at {MAX_NESTING} levels of nesting"
        atoms = _deciding(engine, node, value)
        if atoms:
            out["first_cause"] = _describe_atom(engine, atoms[0].node, atoms[0].value)
        return out
    if op in ("all", "any", "at_least"):
        children = node[2] if op == "at_least" else node[1]
        if op == "at_least":
            out["need"] = node[1]
        deciding = [child for child in children if _value(engine, child) == value]
        out["deciding"] = [
            _explain_node(engine, child, depth, path, level + 2)
            for child in deciding[:MAX_CHILDREN]
        ]
        if len(deciding) > MAX_CHILDREN:
            out["more"] = len(deciding) - MAX_CHILDREN
        return out
    if op == "not":
        out["deciding"] = [_explain_node(engine, node[1], depth, path, level + 2)]
        return out
    if op == "exists":
        out["entity"] = node[1]
        out["dependency"] = _explain_entity(engine, node[1], depth, path, level + 1)
        return out
    if op == "observed":
        out.update(_observed_facts(engine, node))
        return out
    if op == "attr":
        out.update(_attr_facts(engine, node))
        return out
    if op == "call":
        out["name"] = node[1]
        out["args"] = codec.copy(node[2])  # the rule's own dict must stay untouched
        if node[1] not in engine.evaluator.predicates:
            out["error"] = f"unknown predicate {node[1]!r}"
        return out
    out["constant"] = node[1] == TRUE
    return out


def _atom_json(engine: ExistenceEngine, atom: _Atom) -> dict[str, Any]:
    """A deciding atom as data: its clause, its own value, whether a ``not`` turns it round,
    the words the reason uses for it, and what identifies it."""
    node = atom.node
    op = node[0]
    out: dict[str, Any] = {
        "clause": op,
        "value": VALUE_NAMES[atom.value],
        "negated": atom.negated,
        "text": _describe_atom(engine, node, atom.value),
    }
    if op == "exists":
        out["entity"] = node[1]
    elif op == "observed":
        facts = _observed_facts(engine, node, detail=False)
        for key in ("subject", "within", "by", "quorum", "ok", "fresh"):
            out[key] = facts[key]
    elif op == "attr":
        out.update(entity=node[1], path=".".join(node[2]), op=node[3])
        if node[3] != "present":
            out["expected"] = codec.copy(node[4])  # the rule's own value must stay untouched
    elif op == "call":
        out["name"] = node[1]
        out["args"] = codec.copy(node[2])
    elif op == "const":
        out["constant"] = node[1] == TRUE
    else:  # a connective decided by its shape alone
        out["of"] = len(node[2] if op == "at_least" else node[1])
        if op == "at_least":
            out["need"] = node[1]
    return out


def _chain(engine: ExistenceEngine, entity: str, seen: set[str]) -> dict[str, Any] | None:
    """Follow the first deciding ``exists`` dependency down to where the cause lies."""
    links = 0
    current = entity
    visited = set(seen)
    while links < MAX_CHAIN:
        visited.add(current)
        rule = engine.rules.get(current)
        if _base_reason(engine, current) is not None or not isinstance(rule, Compiled):
            break
        cause = _first_exists(engine, rule.node, engine.status.get(current, FALSE))
        if cause is None or cause in visited:
            break
        current = cause
        links += 1
    if links == 0:
        return None
    return {
        "links": links,
        "ends_at": current,
        "status": STATUS_NAMES[engine.status.get(current, FALSE)],
        "reason": reason(engine, current),
    }


def _observed_facts(engine: ExistenceEngine, node: Tree, *, detail: bool = True) -> dict[str, Any]:
    """What an ``observed`` clause counted; with ``detail``, the first few observations
    too, with their instants (a reason needs only the counts: it is made for every change)."""
    _, subject, within, by, quorum, want_ok = node
    now = engine.evaluator.now
    table = engine.view.observations.get(subject, {})
    max_skew = engine.evaluator.max_skew
    listed: list[dict[str, Any]] = []
    fresh = unreadable = 0
    future = 0
    ahead_most = 0.0
    for observer in sorted(table) if detail else table:
        if by == "self" and observer != engine.evaluator.replica_id:
            continue
        if by not in ("*", "self") and observer not in by:
            continue
        observation = table[observer].observation
        show = detail and len(listed) < MAX_OBSERVATIONS
        if observation is None:
            unreadable += 1
            if show:
                listed.append({"observer": observer, "unreadable": table[observer].unreadable})
            continue
        limit = within if observation.ttl is None else min(within, observation.ttl)
        ahead = observation.at - now
        early = ahead > max_skew
        is_fresh = not early and now - observation.at <= limit
        fresh += is_fresh and observation.ok is want_ok
        if early and observation.ok is want_ok:
            future += 1
            ahead_most = max(ahead_most, ahead)
        if not show:
            continue
        item: dict[str, Any] = {
            "observer": observer,
            "ok": observation.ok,
            "at": observation.at,
            "age": now - observation.at,
            "fresh": is_fresh,
        }
        if early:
            # Its observer's clock runs ahead of this replica's (or the date is forged).
            item["dated_in_future"] = ahead
            item["usable_from"] = usable_from(observation.at, max_skew)
        elif is_fresh:
            item["expires_at"] = stale_from(observation.at, limit)
        else:
            item["stale_since"] = stale_from(observation.at, limit)
        listed.append(item)
    facts: dict[str, Any] = {
        "subject": subject,
        "within": within,
        "by": by if by in ("*", "self") else sorted(by),
        "quorum": quorum,
        "ok": want_ok,
        "fresh": fresh,
        "observations": listed,
    }
    if future:
        facts["dated_in_future"] = {
            "count": future,
            "ahead": round(ahead_most, 3),
            "max_skew": max_skew,
        }
    if unreadable:
        facts["unreadable"] = unreadable
    return facts


def _attr_facts(engine: ExistenceEngine, node: Tree) -> dict[str, Any]:
    _, entity, path, op, expected = node
    out: dict[str, Any] = {"entity": entity, "path": ".".join(path), "op": op}
    if op != "present":
        out["expected"] = codec.copy(expected)  # the rule's own value must stay untouched
    record = engine.view.records.get(entity)
    if record is None or record.retracted:
        out["actual"] = None
        out["missing"] = "undeclared" if record is None or not record.declared else "retracted"
        return out
    winner = record.attrs.get(path[0])
    if winner is not None and type(winner.value) is Unreadable:
        out["unreadable"] = winner.value.reason
        return out
    attrs = record.attrs_copy()
    value: Any = attrs
    for part in path:
        if type(value) is not dict or part not in value:
            out["missing"] = f"no attribute {'.'.join(path)}"
            return out
        value = value[part]
    out["actual"] = value
    return out
