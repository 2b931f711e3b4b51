"""Test-wide set-up: the hypothesis profile (see profiles.py for the two tiers' strengths)."""

from __future__ import annotations

import os

import profiles
from hypothesis import settings

profiles.register()
settings.load_profile(os.environ.get(profiles.VARIABLE, profiles.FAST))
