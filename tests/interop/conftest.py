"""The interoperability tests need metric-learn, installed in CI's second environment.

Elsewhere they are skipped, unless SKTASKMET_REQUIRE_METRIC_LEARN=1 is set (as CI's second
job does), in which case a missing metric-learn is an error instead of a silent skip.
"""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    try:
        import metric_learn  # noqa: F401
    except ImportError as exc:
        if os.environ.get("SKTASKMET_REQUIRE_METRIC_LEARN") == "1":
            raise pytest.UsageError(
                f"SKTASKMET_REQUIRE_METRIC_LEARN=1 but metric-learn cannot be imported: {exc}"
            ) from exc
        skip = pytest.mark.skip(reason="metric-learn is not installed (see .ci/run, job 2)")
        for item in items:
            if "tests/interop" in str(item.fspath).replace(os.sep, "/"):
                item.add_marker(skip)
