"""The existence engine as its helpers see it.

:mod:`.derivation` (deriving every status) and :mod:`.cycles` (settling cyclic
components) are the engine's algorithms, kept in modules of their own for their size.
They work on the engine's tables through this protocol, which
:class:`~.existence.ExistenceEngine` satisfies, so that the dependency runs one way:
``existence`` imports them, never the reverse.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Protocol

from .compiler import Compiled, Rule
from .formulas import Evaluator
from .records import MergedView

__all__ = ["EngineState"]


class EngineState(Protocol):
    """The tables and steps of the existence engine that derivation and cycles use."""

    view: MergedView
    status: dict[str, int]
    rules: dict[str, Rule]
    rdeps: dict[str, set[str] | list[str]]
    comp: dict[str, str]
    members: dict[str, list[str]]
    level: dict[str, int]
    deadline: dict[str, float]
    evaluator: Evaluator

    def _components(self, region: Container[str], roots: Iterable[str]) -> list[list[str]]: ...

    def _place(self, component: list[str]) -> str: ...

    def _set_deadline(self, entity: str, at: float) -> None: ...

    def _index_reads(self, entity: str, rule: Compiled) -> None: ...

    def _targets(self, entity: str) -> tuple[str, ...]: ...
