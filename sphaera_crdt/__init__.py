"""sphaera_crdt: replicated state without a coordinator.

Every replica holds entity records and observations as CRDTs, merges whatever it
receives in any order, and derives from its own merged view which entities exist.

The names below load on first use (PEP 562), so that a program importing one module of
the package, such as the ``sphaera`` command answering ``--version``, does not pay for
pycrdt and the whole core.
"""

from typing import TYPE_CHECKING, Final

from .core.lazy import lazy_names
from .errors import (
    InputError,
    InvalidConstraint,
    InvalidIdentifier,
    InvalidUpdate,
    InvalidValue,
    RemoteError,
    SphaeraError,
    UnknownEntity,
)

__version__ = "0.1.0.dev0"

if TYPE_CHECKING:
    from .core import Change, EntityView, Observation, RecordChange, Replica, Status
    from .core.constraints import (
        all_of,
        any_of,
        at_least,
        attr,
        call,
        check_constraint,
        exists,
        not_,
        observed,
    )

#: The module each lazily loaded name comes from.
_LAZY: Final = {
    **dict.fromkeys(
        ("Change", "EntityView", "Observation", "RecordChange", "Replica", "Status"), ".core"
    ),
    **dict.fromkeys(
        (
            "all_of",
            "any_of",
            "at_least",
            "attr",
            "call",
            "check_constraint",
            "exists",
            "not_",
            "observed",
        ),
        ".core.constraints",
    ),
}

__all__ = [
    "Change",
    "EntityView",
    "InputError",
    "InvalidConstraint",
    "InvalidIdentifier",
    "InvalidUpdate",
    "InvalidValue",
    "Observation",
    "RecordChange",
    "RemoteError",
    "Replica",
    "SphaeraError",
    "Status",
    "UnknownEntity",
    "all_of",
    "any_of",
    "at_least",
    "attr",
    "call",
    "check_constraint",
    "exists",
    "not_",
    "observed",
]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
