"""Skip or require the interoperability tests of an optional peer library.

Each peer (metric-learn, PyEPO) has its own CI environment and its own test directory. Outside
that environment the directory's tests are skipped; inside it, the job sets an environment
variable and a missing peer is a collection error instead of a silent skip, so the comparison
with the peer can fail but never quietly disappear.
"""

import importlib
import os

import pytest


def require_or_skip_peer(items, *, modules, env_var, directory, what):
    """Skip the tests under ``directory`` when ``modules`` are missing, unless ``env_var=1``.

    Parameters
    ----------
    items : list of pytest.Item
        The collected tests, as given to ``pytest_collection_modifyitems``.
    modules : sequence of str
        The modules the peer's tests import.
    env_var : str
        The variable that a CI job sets to ``"1"`` to turn a missing peer into an error.
    directory : str
        The test directory, relative to the repository root, with forward slashes.
    what : str
        The peer as the messages name it.
    """
    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get(env_var) == "1":
            raise pytest.UsageError(f"{env_var}=1 but {what} cannot be imported: {exc}") from exc
        skip = pytest.mark.skip(reason=f"{what} is not installed (see .ci/run)")
        for item in items:
            if directory in str(item.fspath).replace(os.sep, "/"):
                item.add_marker(skip)
