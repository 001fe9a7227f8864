"""The influence-function baseline of GradientSubsetEstimator."""

import numpy as np
import pytest
import torch

from sktaskmet import GradientSubsetEstimator


def fitted_estimator(loss):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(90, 4))
    tasks = np.repeat([0, 1, 2], 30)
    torch.manual_seed(0)
    if loss == "cross_entropy":
        y = (X[:, 0] + 0.5 * rng.normal(size=90) > 0).astype(int)
        n_out = 2
    else:
        y = X[:, :2] @ np.array([[1.0, -1.0], [0.5, 2.0]]) + 0.3 * rng.normal(size=(90, 2))
        y[tasks == 2] *= -1.0  # a task that contradicts the others
        n_out = 2
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, n_out)
    ).double()
    est = GradientSubsetEstimator(
        model, loss=loss, projection_dim=12, penalty=0.1, random_state=0, tol=1e-14
    )
    return est.fit(X, y, tasks=tasks, X_target=X[:20], y_target=y[:20])


@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_influence_is_the_derivative_of_the_estimate(loss):
    """I_k = b_k dF-hat/ds_k at the base: checked by central finite differences."""
    est = fitted_estimator(loss)
    base = np.array([0.5, 0.7, 0.6])
    eps = 1e-5
    finite = []
    for k in range(3):
        step = np.zeros(3)
        step[k] = eps
        plus, minus = est.estimate([base + step, base - step])
        finite.append(base[k] * (plus - minus) / (2 * eps))
    np.testing.assert_allclose(est.influence(base), finite, rtol=1e-5, atol=1e-10)


def test_influence_tracks_leave_one_out_and_damping_shrinks_it():
    est = fitted_estimator("squared_error")
    full = np.ones(3)
    influence = est.influence()
    loo = np.array([est.estimate([full])[0] - est.estimate([full - e])[0] for e in np.eye(3)])
    assert np.array_equal(np.sign(influence), np.sign(loo))
    assert influence[2] > 0  # the contradicting task raises the target loss
    damped = est.influence(damping=100.0)
    assert np.all(np.abs(damped) < np.abs(influence))
    # A task outside the base set has no influence on it.
    assert est.influence(np.array([1.0, 0.0, 1.0]))[1] == 0.0


def test_influence_rejects_bad_input():
    est = fitted_estimator("cross_entropy")
    with pytest.raises(ValueError, match="columns"):
        est.influence(np.ones(4))
    with pytest.raises(ValueError, match="at least one task"):
        est.influence(np.zeros(3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        est.influence(np.array([1.0, 2.0, 1.0]))
    for damping in (-1.0, "a", np.nan, True):
        with pytest.raises(ValueError, match="damping"):
            est.influence(damping=damping)
    with pytest.raises(Exception, match="not fitted"):
        GradientSubsetEstimator(torch.nn.Linear(2, 2)).influence()
