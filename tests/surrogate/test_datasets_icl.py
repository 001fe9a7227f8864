"""The bundled in-context-learning coin-flip data of the kernel-surrogate authors."""

import fnmatch
import pathlib
import re

import numpy as np
import pytest

from sktaskmet.datasets import load_icl_coin_flip
from sktaskmet.surrogate import ids_to_indicators

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_load_icl_coin_flip():
    data = load_icl_coin_flip()
    assert data.S.shape == (200, 50) and data.y.shape == (200, 869)
    assert data.y.dtype == np.float64 and np.isfinite(data.y).all() and data.y.min() > 0
    np.testing.assert_array_equal(data.S.sum(axis=1), 4)
    np.testing.assert_array_equal(data.S, ids_to_indicators(data.demonstration_ids, 50))
    assert data.demonstration_ids[0].tolist() == [40, 7, 1, 47]  # the authors' first prompt
    assert "MIT" in data.DESCR and "arXiv:2602.03783" in data.DESCR
    S, y = load_icl_coin_flip(return_S_y=True)
    np.testing.assert_array_equal(S, data.S)
    np.testing.assert_array_equal(y, data.y)
    with pytest.raises(ValueError, match="return_S_y"):
        load_icl_coin_flip(return_S_y="yes")


def test_data_files_are_declared_as_package_data():
    """An installed package has the files only if setup.py's package_data covers them."""
    setup = (ROOT / "setup.py").read_text()
    block = re.search(r'"sktaskmet\.datasets": \[([^\]]*)\]', setup)
    assert block is not None
    patterns = re.findall(r'"([^"]+)"', block.group(1))
    data_dir = ROOT / "sktaskmet" / "datasets" / "data"
    files = [f"data/{path.name}" for path in data_dir.iterdir() if path.is_file()]
    assert files
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name
