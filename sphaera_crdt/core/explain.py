"""Explanations: why an entity has its status, as a JSON-serialisable tree and a short reason.

The well-founded model is a fixpoint of Kleene evaluation, so re-evaluating a rule with the
final statuses gives the entity's status; the explanation walks the rule and keeps only
the *deciding* clauses (the false ones of a false ``all``, the true ones of a true ``any``,
the unknown ones of an unknown clause). ``exists`` clauses explain the entity they name,
to a bounded depth; past it, a chain of single causes is followed and summarised by its
length and its last link, so a 100-deep chain reads in a few lines.

However deep it is asked to go, a tree nests at most :data:`MAX_NESTING` levels (and says
where it was cut): the values it shows nest at most :data:`~.codec.MAX_DEPTH` levels more,
so every encoder on the way out (orjson stops at 254) can write it, and building it never
recurses far. Fields that could not be read are named under ``"unreadable"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from typing import Any, Final

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
    """A one-line reason for the entity's current status."""
    base = _base_reason(engine, entity)
    if base is not None:
        return base
    value = engine.status.get(entity, FALSE)
    rep = engine.comp.get(entity, entity)
    if rep in engine.cyclic:
        members = engine.members.get(rep) or [entity]
        cycle: AbstractSet[str] = set(members)
    else:
        members, cycle = [entity], _NO_CYCLE
    rule = engine.rules[entity]
    assert isinstance(rule, Compiled)
    leaf = _first_leaf(engine, rule.node, value, cycle)
    if value == TRUE:
        return "requirements hold" if leaf is None else f"requirements hold: {leaf[0]}"
    if cycle and value == UNKNOWN and _negates_inside(engine, members, cycle):
        return f"unresolved cycle through negation: {_names(members)}"
    if cycle and value == FALSE and leaf is not None and leaf[1] in cycle and leaf[2] == FALSE:
        # The deciding fact is the absence of a member of its own cycle.
        return f"supported only by a cycle: {_names(members)}"
    return "requirements do not hold" if leaf is None else leaf[0]


def explain(engine: ExistenceEngine, entity: str, *, depth: int = 3) -> dict[str, Any]:
    """The explanation tree of an entity's current status."""
    return _explain_entity(engine, entity, depth, (), 1)


def _base_reason(engine: ExistenceEngine, entity: str) -> str | None:
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


def _first_leaf(
    engine: ExistenceEngine, node: Node, want: int, avoid: AbstractSet[str] | None = None
) -> tuple[str, str, int] | None:
    """(text, entity, value) of the first atom that decides ``node``'s value ``want``,
    preferring atoms that do not name an entity of ``avoid`` (the entity's own cycle)."""
    # The usual rules, an exists atom or a connective of them, without the general walk
    # (a change event computes this for every entity whose status changed).
    if isinstance(node, str):
        return _describe_exists(engine, node), node, want
    op = node[0]
    if op == "all" or op == "any" or op == "at_least":
        status = engine.status
        fallback = None
        for child in node[2] if op == "at_least" else node[1]:
            if type(child) is not str:
                break  # a clause of its own: the general walk decides
            if status.get(child, FALSE) == want:
                if not avoid or child not in avoid:
                    return _describe_exists(engine, child), child, want
                if fallback is None:
                    fallback = (_describe_exists(engine, child), child, want)
        else:
            return fallback
    return _first_leaf_walk(engine, node, want, avoid)


def _first_leaf_walk(
    engine: ExistenceEngine, node: Node, want: int, avoid: AbstractSet[str] | None = None
) -> tuple[str, str, int] | None:
    """:func:`_first_leaf` by the general walk over the deciding atoms."""
    fallback = None
    for leaf in _leaves(engine, node, want):
        if not avoid or leaf[1] not in avoid:
            return leaf
        if fallback is None:
            fallback = leaf
    return fallback


def _leaves(engine: ExistenceEngine, node: Node, want: int) -> Iterator[tuple[str, str, int]]:
    """The atoms that decide ``node``'s value ``want``, in order."""
    node = _tree(node)
    op = node[0]
    if op in ("all", "any", "at_least"):
        for child in node[2] if op == "at_least" else node[1]:
            if _value(engine, child) == want:
                yield from _leaves(engine, child, want)
        return
    if op == "not":
        yield from _leaves(engine, node[1], TRUE - want)
        return
    entity = node[1] if op in ("exists", "observed") else ""
    yield _describe_atom(engine, node, want), entity, want


def _describe_atom(engine: ExistenceEngine, node: Node, value: int) -> str:
    node = _tree(node)
    op = node[0]
    if op == "const":
        return f"constant {VALUE_NAMES[node[1]]}"
    if op == "exists":
        return _describe_exists(engine, node[1])
    if op == "observed":
        facts = _observed_facts(engine, node)
        unreadable = f" ({facts['unreadable']} unreadable)" if "unreadable" in facts else ""
        text = (
            f"{facts['fresh']} of {facts['quorum']} needed fresh observations of {node[1]}"
            f" within {node[2]:g}s{unreadable}"
        )
        future = facts.get("dated_in_future")
        if future:
            # No "by how much" here: that changes with every read, and replicas holding the
            # same state would give different reasons a moment apart (why() has it).
            text += (
                f"; {future['count']} dated in the future"
                f" (more than the {future['max_skew']:g}s allowed)"
            )
        return text
    if op == "attr":
        return f"attr {node[1]}.{'.'.join(node[2])} {node[3]} {node[4]!r} is {VALUE_NAMES[value]}"
    name = node[1]
    if name not in engine.evaluator.predicates:
        return f"unknown predicate {name!r}"
    return f"predicate {name!r} is {VALUE_NAMES[value]}"


def _describe_exists(engine: ExistenceEngine, entity: str) -> str:
    status = engine.status.get(entity, FALSE)
    return f"{entity} exists" if status == TRUE else f"{entity} is {STATUS_NAMES[status]}"


def _explain_entity(
    engine: ExistenceEngine, entity: str, depth: int, path: tuple[str, ...], level: int
) -> dict[str, Any]:
    """The explanation of ``entity``, an object at nesting ``level`` of the tree."""
    value = engine.status.get(entity, FALSE)
    out: dict[str, Any] = {
        "entity": entity,
        "status": STATUS_NAMES[value],
        "reason": reason(engine, entity),
    }
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
        leaf = _first_leaf(engine, node if op != "exists" else node[1], value)
        if leaf is not None:
            out["first_cause"] = leaf[0]
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
        leaf = _first_leaf(engine, rule.node, engine.status.get(current, FALSE))
        if leaf is None or not leaf[0] or leaf[1] in visited or not _is_exists_leaf(rule, leaf[1]):
            break
        current = leaf[1]
        links += 1
    if links == 0:
        return None
    return {
        "links": links,
        "ends_at": current,
        "status": STATUS_NAMES[engine.status.get(current, FALSE)],
        "reason": reason(engine, current),
    }


def _is_exists_leaf(rule: Compiled, entity: str) -> bool:
    return entity in rule.exists


def _observed_facts(engine: ExistenceEngine, node: Tree) -> dict[str, Any]:
    _, subject, within, by, quorum, want_ok = node
    now = engine.evaluator.now
    table = engine.view.observations.get(subject, {})
    max_skew = engine.evaluator.max_skew
    listed: list[dict[str, Any]] = []
    fresh = unreadable = 0
    future = 0
    ahead_most = 0.0
    for observer in sorted(table):
        if by == "self" and observer != engine.evaluator.replica_id:
            continue
        if by not in ("*", "self") and observer not in by:
            continue
        observation = table[observer].observation
        if observation is None:
            unreadable += 1
            if len(listed) < MAX_OBSERVATIONS:
                listed.append({"observer": observer, "unreadable": table[observer].unreadable})
            continue
        limit = within if observation.ttl is None else min(within, observation.ttl)
        ahead = observation.at - now
        early = ahead > max_skew
        is_fresh = not early and now - observation.at <= limit
        counts = is_fresh and observation.ok is want_ok
        fresh += counts
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
            if observation.ok is want_ok:
                future += 1
                ahead_most = max(ahead_most, ahead)
        elif not is_fresh:
            item["stale_since"] = stale_from(observation.at, limit)
        if len(listed) < MAX_OBSERVATIONS:
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
