"""The sans-IO core: replica, constraint language, existence engine and sync logic.

Imports pycrdt and the standard library only; never aiohttp, sqlite3 or asyncio.

:class:`Replica` and the view types load on first use (PEP 562): a light module of the
core, such as :mod:`.names`, can be imported without loading pycrdt.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .replica import Replica
    from .views import Change, EntityView, Observation, RecordChange, Status

#: The module each lazily loaded name comes from.
_LAZY: Final = {
    "Replica": ".replica",
    **dict.fromkeys(("Change", "EntityView", "Observation", "RecordChange", "Status"), ".views"),
}

__all__ = ["Change", "EntityView", "Observation", "RecordChange", "Replica", "Status"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later lookups find it without calling this again
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
