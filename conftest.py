"""pytest configuration for the docstring examples of the package.

``python -m pytest`` also runs the examples in the docstrings of ``sktaskmet`` (see
``testpaths`` and ``--doctest-modules`` in ``pyproject.toml``), so that they cannot drift
from what the code prints. Those of the plotting module need matplotlib, an optional
dependency: without it they are skipped, as the plotting tests are.
"""

import importlib.util

import pytest

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def pytest_collection_modifyitems(config, items):
    if HAS_MATPLOTLIB:
        return
    skip = pytest.mark.skip(reason="the plotting examples need matplotlib")
    for item in items:
        if isinstance(item, pytest.DoctestItem) and ".plotting." in item.name:
            item.add_marker(skip)
