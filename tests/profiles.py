"""Hypothesis profiles: the fast tier checks every property on a fifth of its examples.

A count written in a test, ``@settings(max_examples=examples(300))``, is the property's
full strength. The active profile says how much of it a run checks:

* ``fast``, the default (tests/conftest.py loads it): a fifth of every count, so that
  ``pytest -q`` stays quick;
* ``thorough``: every count as written. ``HYPOTHESIS_PROFILE=thorough pytest -q`` (or
  ``--hypothesis-profile=thorough``) runs the fast tier that way, and the slow tier's
  ``test_properties_thorough.py`` reruns every module that holds a property under it, so
  that a full run of both tiers (``.ci/run``) checks every property at full strength.

Both profiles are derandomized and keep no example database: every run, on every machine,
checks the same examples. ``SPHAERA_HYPOTHESIS_RANDOM=1`` draws fresh examples instead,
and ``SPHAERA_EXAMPLES_SCALE`` multiplies every count (e.g. ``20`` for a long hunt).
"""

from __future__ import annotations

import os
from typing import Final

from hypothesis import HealthCheck, settings

#: The environment variable that names the profile to load.
VARIABLE: Final = "HYPOTHESIS_PROFILE"
FAST: Final = "fast"
THOROUGH: Final = "thorough"
#: Examples of a property that sets no count of its own (hypothesis' default), at full
#: strength. A written count is scaled by the active profile's share of this.
FULL: Final = 100
#: The fast profile checks one example in this many.
FAST_SHARE: Final = 5
#: No property is checked on fewer examples than this, whatever the profile.
MINIMUM: Final = 10
SCALE: Final = float(os.environ.get("SPHAERA_EXAMPLES_SCALE", "1"))


def register() -> None:
    """Register the ``fast`` and ``thorough`` profiles (loading neither)."""
    common = settings(
        deadline=None,
        derandomize=not os.environ.get("SPHAERA_HYPOTHESIS_RANDOM"),
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    full = max(1, int(FULL * SCALE))
    settings.register_profile(THOROUGH, common, max_examples=full)
    settings.register_profile(FAST, common, max_examples=max(MINIMUM, full // FAST_SHARE))


def examples(full: int) -> int:
    """How many of a property's ``full`` examples the active profile checks."""
    share = settings().max_examples / FULL
    return max(MINIMUM, int(full * share))
