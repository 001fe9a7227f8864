"""The PyEPO interoperability tests need pyepo and OR-Tools, installed in CI's PyEPO job.

Elsewhere they are skipped, unless SKTASKMET_REQUIRE_PYEPO=1 is set (as that CI job does),
in which case a missing pyepo or OR-Tools is an error instead of a silent skip.
"""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    try:
        import ortools  # noqa: F401
        import pyepo  # noqa: F401
    except ImportError as exc:
        if os.environ.get("SKTASKMET_REQUIRE_PYEPO") == "1":
            raise pytest.UsageError(
                f"SKTASKMET_REQUIRE_PYEPO=1 but pyepo or OR-Tools cannot be imported: {exc}"
            ) from exc
        skip = pytest.mark.skip(reason="pyepo and OR-Tools are not installed (see .ci/run)")
        for item in items:
            if "tests/pyepo_interop" in str(item.fspath).replace(os.sep, "/"):
                item.add_marker(skip)
