"""Tests of make_task_interactions, the synthetic set function with planted interactions."""

import itertools

import numpy as np
import pytest

from sktaskmet.datasets import make_task_interactions


def test_exact_function_has_the_planted_terms():
    S, y, F = make_task_interactions(n_tasks=12, n_subsets=50, noise=0.0, random_state=0)
    a = F.weights
    assert S.shape == (50, 12) and y.shape == (50,)
    np.testing.assert_allclose(y, F(S))

    def f(*tasks):
        s = np.zeros(12)
        s[list(tasks)] = 1.0
        return F(s)

    # Every pair's second difference at the empty set isolates its interaction term.
    assert f(0, 1) - f(0) - f(1) + f() == pytest.approx(3.0)
    assert f(2, 3) - f(2) - f(3) + f() == pytest.approx(-3.0)
    assert f(4, 5) - f(4) - f(5) + f() == pytest.approx(-6.0)  # XOR: 0 - 3 - 3 + 0
    assert f(4) - f() == pytest.approx(a[4] + 3.0)
    assert f(6, 7, 8) - f(6, 7) == pytest.approx(a[8] - 2.0)
    for i, j in itertools.combinations([0, 9, 10, 11], 2):
        assert f(i, j) - f(i) - f(j) + f() == pytest.approx(0.0)


def test_loo_is_the_exact_leave_one_out():
    _, _, F = make_task_interactions(random_state=1)
    full = F(np.ones(16))
    expected = [full - F(np.ones(16) - np.eye(16)[k]) for k in range(16)]
    np.testing.assert_allclose(F.loo(), expected)
    a = F.weights
    np.testing.assert_allclose(F.loo()[[0, 4, 6, 9]], [a[0] + 3, a[4] - 3, a[6] - 2, a[9]])


def test_noise_and_determinism():
    S, y, F = make_task_interactions(n_subsets=4000, noise=0.5, random_state=0)
    assert np.std(y - F(S)) == pytest.approx(0.5, rel=0.05)
    S2, y2, F2 = make_task_interactions(n_subsets=4000, noise=0.5, random_state=0)
    np.testing.assert_array_equal(S, S2)
    np.testing.assert_array_equal(y, y2)
    S3, _, _ = make_task_interactions(n_subsets=2000, p=0.8, random_state=0)
    assert S3.mean() == pytest.approx(0.8, abs=0.01)


def test_bad_parameters():
    with pytest.raises(ValueError, match="'n_tasks' parameter"):
        make_task_interactions(n_tasks=5)
    _, _, F = make_task_interactions(random_state=0)
    with pytest.raises(ValueError, match="n_tasks=16 columns"):
        F(np.ones((2, 3)))
