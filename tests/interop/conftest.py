"""The interoperability tests need metric-learn, installed in CI's second environment.

Elsewhere they are skipped, unless SKTASKMET_REQUIRE_METRIC_LEARN=1 is set (as CI's second
job does), in which case a missing metric-learn is an error instead of a silent skip.
"""

from tests._peers import require_or_skip_peer


def pytest_collection_modifyitems(config, items):
    require_or_skip_peer(
        items,
        modules=["metric_learn"],
        env_var="SKTASKMET_REQUIRE_METRIC_LEARN",
        directory="tests/interop",
        what="metric-learn",
    )
