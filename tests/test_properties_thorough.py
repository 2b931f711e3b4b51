"""Every hypothesis property at full strength, in the slow tier.

The fast tier checks each property on a share of its examples (the ``fast`` profile of
profiles.py). Here every module that holds a property runs its properties again in a fresh
interpreter under the ``thorough`` profile (a profile is fixed when a module is imported,
hence the interpreter), so that wherever the slow tier runs, CI included, every property is
checked on every example its test asks for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from profiles import THOROUGH, VARIABLE

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
#: Modules that import hypothesis; each is checked to hold at least one property below.
MODULES = sorted(
    path.name
    for path in TESTS.glob("test_*.py")
    if path.name != Path(__file__).name and "from hypothesis" in path.read_text()
)


def test_the_property_modules_are_found() -> None:
    assert "test_existence_properties.py" in MODULES
    assert "test_convergence_stateful.py" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_every_property_holds_at_full_strength(module: str) -> None:
    env = {**os.environ, VARIABLE: THOROUGH}
    # Only the properties (hypothesis marks them); -p no:cacheprovider leaves the outer
    # run's cache alone.
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-m", "hypothesis", str(TESTS / module)]
    done = subprocess.run(
        command, cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    # Exit code 5 would mean that no property was collected: the module lost its properties.
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1]
