"""The sans-IO core: replica, constraint language, existence engine and sync logic.

Imports pycrdt and the standard library only; never aiohttp, sqlite3 or asyncio.

:class:`Replica` and the view types load on first use (PEP 562): a light module of the
core, such as :mod:`.names`, can be imported without loading pycrdt.
"""

from typing import TYPE_CHECKING, Final

from .lazy import lazy_names

if TYPE_CHECKING:
    from .replica import Replica
    from .views import Change, EntityView, Observation, RecordChange, Status

#: The module each lazily loaded name comes from.
_LAZY: Final = {
    "Replica": ".replica",
    **dict.fromkeys(("Change", "EntityView", "Observation", "RecordChange", "Status"), ".views"),
}

__all__ = ["Change", "EntityView", "Observation", "RecordChange", "Replica", "Status"]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
