"""Tests of the TaskMet problem generators (sktaskmet.datasets)."""

import numpy as np
import pytest

from sktaskmet.datasets import make_cubic_topk


def test_make_cubic_topk_shapes_and_values():
    X, y, groups = make_cubic_topk(n_instances=7, n_items=5, random_state=0)
    assert X.shape == (35, 1) and y.shape == (35,) and groups.shape == (35,)
    assert X.dtype == np.float64 and y.dtype == np.float64
    np.testing.assert_array_equal(groups, np.repeat(np.arange(7), 5))
    assert np.all(np.abs(X) <= 1)
    np.testing.assert_allclose(y, 10 * (X[:, 0] ** 3 - 0.65 * X[:, 0]))


def test_make_cubic_topk_deterministic_and_noise():
    a = make_cubic_topk(n_instances=3, random_state=1)
    b = make_cubic_topk(n_instances=3, random_state=1)
    c = make_cubic_topk(n_instances=3, random_state=2)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])
    X, y, _ = make_cubic_topk(n_instances=50, noise=0.5, random_state=0)
    resid = y - 10 * (X[:, 0] ** 3 - 0.65 * X[:, 0])
    assert 0.4 < resid.std() < 0.6


@pytest.mark.parametrize(
    "params", [{"n_instances": 0}, {"n_items": 1}, {"noise": -1.0}, {"n_items": 2.5}]
)
def test_make_cubic_topk_bad_parameters(params):
    with pytest.raises(ValueError):
        make_cubic_topk(**params)
