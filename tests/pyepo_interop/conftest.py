"""The PyEPO interoperability tests need pyepo and OR-Tools, installed in CI's PyEPO job.

Elsewhere they are skipped, unless SKTASKMET_REQUIRE_PYEPO=1 is set (as that CI job does),
in which case a missing pyepo or OR-Tools is an error instead of a silent skip.
"""

from tests._peers import require_or_skip_peer


def pytest_collection_modifyitems(config, items):
    require_or_skip_peer(
        items,
        modules=["ortools", "pyepo"],
        env_var="SKTASKMET_REQUIRE_PYEPO",
        directory="tests/pyepo_interop",
        what="pyepo or OR-Tools",
    )
