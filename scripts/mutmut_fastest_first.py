"""pytest plugin for scripts/mutation.sh: run a mutant's tests fastest first.

mutmut hands each mutant its tests in set order and runs them with `-x`, so a mutant that one
quick test kills often waits first for the slow ones. This plugin sorts the collected tests by the
durations mutmut measured in its stats run (`mutmut-stats.json` in the working directory); the
verdicts do not change, only how soon a failing test is reached. Without that file (the stats run
itself) it leaves the order alone. Loaded with `-p mutmut_fastest_first` (scripts/ on the path).
"""
import json
from pathlib import Path

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    try:
        durations = json.loads(Path("mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    # unknown tests (none measured) last; sort is stable, so ties keep pytest's order
    items.sort(key=lambda item: durations.get(item.nodeid, float("inf")))
