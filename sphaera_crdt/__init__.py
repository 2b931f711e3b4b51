"""sphaera_crdt: replicated state without a coordinator.

Every replica holds entity records and observations as CRDTs, merges whatever it
receives in any order, and derives from its own merged view which entities exist.
"""

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
