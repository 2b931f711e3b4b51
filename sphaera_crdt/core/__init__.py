"""The sans-IO core: replica, constraint language, existence engine and sync logic.

Imports pycrdt and the standard library only; never aiohttp, sqlite3 or asyncio.
"""

from .replica import Replica
from .views import Change, EntityView, Observation, RecordChange, Status

__all__ = ["Change", "EntityView", "Observation", "RecordChange", "Replica", "Status"]
