"""Tests of the TaskMet problem generators (sktaskmet.datasets)."""

import numpy as np
import pytest

from sktaskmet.datasets import (
    make_budget_allocation,
    make_cartpole_distractors,
    make_cubic_topk,
    make_portfolio,
)
from sktaskmet.datasets._taskmet import _cartpole_step


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


def test_make_portfolio_shapes_covariance_and_determinism():
    X, y, groups, cov = make_portfolio(
        n_days=30, n_assets=20, return_covariance=True, random_state=0
    )
    assert X.shape == (600, 5) and y.shape == (600,) and groups.shape == (600,)
    np.testing.assert_array_equal(groups, np.repeat(np.arange(30), 20))
    assert cov.shape == (20, 20)
    np.testing.assert_allclose(cov, cov.T)
    assert np.linalg.eigvalsh(cov).min() > 0
    again = make_portfolio(n_days=30, n_assets=20, random_state=0)
    for u, v in zip(again, (X, y, groups), strict=True):
        np.testing.assert_array_equal(u, v)
    # Noise-free returns of degree 1 are an affine function of the features.
    Xn, yn, _ = make_portfolio(n_days=30, n_assets=20, noise=0.0, degree=1, random_state=0)
    design = np.column_stack([Xn, np.ones(len(Xn))])
    coef = np.linalg.lstsq(design, yn, rcond=None)[0]
    np.testing.assert_allclose(design @ coef, yn, atol=1e-9)


def test_make_portfolio_covariance_matches_the_noise():
    # The draws do not depend on the noise scale, so the difference between a noisy and a
    # noise-free data set of the same seed is exactly the unpredictable part of the returns.
    _, y, _, cov = make_portfolio(
        n_days=4000, n_assets=5, noise=1.0, return_covariance=True, random_state=0
    )
    _, signal, _ = make_portfolio(n_days=4000, n_assets=5, noise=0.0, random_state=0)
    unpredictable = (y - signal).reshape(4000, 5)
    np.testing.assert_allclose(np.cov(unpredictable.T), cov, atol=0.1)


def test_make_budget_allocation_shapes_range_determinism():
    X, y, groups = make_budget_allocation(n_instances=6, random_state=0)
    assert X.shape == (30, 10) and y.shape == (30, 10) and groups.shape == (30,)
    assert np.all((y > 0) & (y < 1))
    np.testing.assert_array_equal(groups, np.repeat(np.arange(6), 5))
    again = make_budget_allocation(n_instances=6, random_state=0)
    for u, v in zip(again, (X, y, groups), strict=True):
        np.testing.assert_array_equal(u, v)
    X3, y3, _ = make_budget_allocation(
        n_instances=2, n_channels=3, n_targets=4, n_features=2, random_state=1
    )
    assert X3.shape == (6, 2) and y3.shape == (6, 4)


def test_make_cartpole_distractors_columns_and_dynamics():
    X, y = make_cartpole_distractors(n_samples=200, n_distractors=4, random_state=0)
    assert X.shape == (200, 9) and y.shape == (200, 8)
    assert set(np.unique(X[:, -1])) == {0.0, 1.0}
    np.testing.assert_allclose(y[:, :4], _cartpole_step(X[:, :4], X[:, -1].astype(int)))
    # Position and angle move by tau times their velocities.
    np.testing.assert_allclose(y[:, 0], X[:, 0] + 0.02 * X[:, 1])
    np.testing.assert_allclose(y[:, 2], X[:, 2] + 0.02 * X[:, 3])
    # Pushing right accelerates the cart to the right.
    right = X[:, -1] == 1
    assert np.all((y[right, 1] - X[right, 1]) > (y[~right, 1] - X[~right, 1]).max() - 1.0)
    assert abs(np.corrcoef(X[:, 4], y[:, 4])[0, 1]) < 0.2
    Xc, yc = make_cartpole_distractors(
        n_samples=2000, n_distractors=2, distractor_correlation=0.9, random_state=0
    )
    assert np.corrcoef(Xc[:, 4], yc[:, 4])[0, 1] > 0.85
    again = make_cartpole_distractors(n_samples=200, n_distractors=4, random_state=0)
    np.testing.assert_array_equal(again[0], X)
    np.testing.assert_array_equal(again[1], y)


@pytest.mark.parametrize(
    "func, params",
    [
        (make_portfolio, {"n_assets": 1}),
        (make_portfolio, {"noise": -1}),
        (make_budget_allocation, {"n_channels": 0}),
        (make_cartpole_distractors, {"distractor_correlation": 1.0}),
        (make_cartpole_distractors, {"n_distractors": -1}),
    ],
)
def test_generators_bad_parameters(func, params):
    with pytest.raises(ValueError):
        func(**params)
