"""Filters of the entity list and the event stream: :class:`EntityFilter`.

``GET /v1/entities?prefix=&kind=&status=`` and ``GET /v1/events?entity=&prefix=&kind=``
take the same filter; the stream applies it to the snapshot it sends first and to every
change after it, so a filtered stream is the unfiltered one with the other entities left
out. The event hub (:mod:`.events`) matches a change on the entity id and kind it was
published with, never on its serialised bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ..core.views import EntityView, Status
from ..errors import ApiError

__all__ = ["ENTITY_PARAMETERS", "EVENT_PARAMETERS", "EntityFilter"]

#: Query parameters of ``GET /v1/entities``.
ENTITY_PARAMETERS: Final = frozenset({"prefix", "kind", "status"})
#: Query parameters of ``GET /v1/events``.
EVENT_PARAMETERS: Final = frozenset({"entity", "prefix", "kind"})


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityFilter:
    """Which entities a read or a stream keeps (every one when no field is set).

    Attributes:
        entity: Only the entity with this id.
        prefix: Only entities whose id starts with this.
        kind: Only entities of this kind.
        status: Only entities with this derived status (a read only: a stream reports
            changes of status, which a status filter would cut in half).
    """

    entity: str | None = None
    prefix: str | None = None
    kind: str | None = None
    status: Status | None = None

    @property
    def everything(self) -> bool:
        """Whether the filter keeps every entity."""
        return self == _EVERYTHING

    def matches(self, entity_id: str, kind: str | None) -> bool:
        """Whether an entity with this id and kind is kept (its status not looked at)."""
        if self.entity is not None and entity_id != self.entity:
            return False
        if self.prefix is not None and not entity_id.startswith(self.prefix):
            return False
        return self.kind is None or kind == self.kind

    def keeps(self, view: EntityView) -> bool:
        """Whether ``view`` is kept."""
        if self.status is not None and view.status is not self.status:
            return False
        return self.matches(view.id, view.kind)

    @classmethod
    def from_query(cls, query: Mapping[str, str], allowed: frozenset[str]) -> EntityFilter:
        """The filter a request's query asks for; an :class:`ApiError` (400) for an
        unknown parameter, a repeated one, an empty value or an unknown status."""
        values: dict[str, str] = {}
        for name, value in query.items():
            if name not in allowed:
                known = ", ".join(sorted(allowed))
                raise ApiError(400, "invalid_filter", f"unknown filter {name!r} (known: {known})")
            if name in values:
                raise ApiError(400, "invalid_filter", f"filter {name!r} given twice")
            if not value:
                raise ApiError(400, "invalid_filter", f"filter {name!r} is empty")
            values[name] = value
        status = values.get("status")
        if status is not None and status not in _STATUSES:
            choices = ", ".join(_STATUSES)
            raise ApiError(
                400, "invalid_filter", f"status must be one of {choices}, not {status!r}"
            )
        return cls(
            entity=values.get("entity"),
            prefix=values.get("prefix"),
            kind=values.get("kind"),
            status=None if status is None else Status(status),
        )


_EVERYTHING: Final = EntityFilter()
_STATUSES: Final = tuple(status.value for status in Status)
