"""The linear decision tasks inside DFLRegressor, TaskMetRegressor and model selection."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import cross_val_score

from sktaskmet import DFLRegressor, TaskMetRegressor
from sktaskmet.datasets import make_knapsack, make_shortest_path
from sktaskmet.exceptions import NonFiniteWarning
from sktaskmet.tasks import (
    DecisionQualityScorer,
    Knapsack,
    RegretScorer,
    ShortestPath,
    TopK,
    normalized_regret,
)

# The outer losses with a closed-form gradient, and a mixture of two of them.
SURROGATES = [
    "spo+",
    "pfyl",
    "dpo-regret",
    pytest.param({"pfyl": 0.8, "spo+": 0.2}, id="pfyl0.8+spo+0.2"),
]


@pytest.fixture(scope="module")
def paths_data():
    X, y = make_shortest_path(n_samples=300, degree=4, noise_width=0.5, random_state=0)
    return X[:200], y[:200], X[200:], y[200:]


def _dfl(task, max_iter, **params):
    return DFLRegressor(
        task,
        alpha=0.0,
        learning_rate=1e-2,
        batch_size=32,
        max_iter=max_iter,
        validation_fraction=None,
        device="cpu",
        random_state=0,
        **params,
    )


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_dfl_learns_shortest_paths_from_cost_vectors(paths_data, surrogate):
    # the natural usage: X (n, p), y (n, 40) costs, no groups
    X, y, X_test, y_test = paths_data
    task = ShortestPath(surrogate=surrogate, n_samples=3)
    untrained = _dfl(task, 1).fit(X, y)
    trained = _dfl(task, 150).fit(X, y)
    assert trained.predict(X_test).shape == (100, 40)
    before = normalized_regret(y_test, untrained.predict(X_test), task)
    after = normalized_regret(y_test, trained.predict(X_test), task)
    assert after < 0.5 * before
    assert after < 0.2
    assert trained.task_score(X_test, y_test) > 0.5


class _AutogradOnlyPath(ShortestPath):
    """ShortestPath whose training gradients go through autograd (no closed form)."""

    def has_loss_gradient(self):
        return False


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_dfl_closed_form_steps_match_autograd_steps(paths_data, surrogate):
    # the closed-form training step is a faster route to the same fit (with the MSE term)
    alpha = 0.5
    X, y, X_test, _ = paths_data
    fits = [
        _dfl(cls(surrogate=surrogate, n_samples=3), 40, predictor=predictor)
        .set_params(alpha=alpha, hidden_layer_sizes=(8,))
        .fit(X, y)
        for cls in (ShortestPath, _AutogradOnlyPath)
        for predictor in ("linear", "mlp")
    ]
    for fast, slow in ((fits[0], fits[2]), (fits[1], fits[3])):
        np.testing.assert_allclose(fast.predict(X_test), slow.predict(X_test), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(
            fast.history_["train_task_loss"], slow.history_["train_task_loss"], rtol=1e-9
        )


class _GradientTurnsInfinite(ShortestPath):
    """ShortestPath whose closed-form gradient is infinite from the third step on."""

    def loss_and_gradient(self, y_pred, y_true):
        self.calls_ = getattr(self, "calls_", 0) + 1
        value, gradient = super().loss_and_gradient(y_pred, y_true)
        if self.calls_ >= 3:
            gradient[0, 0, 0] = torch.inf
        return value, gradient


def test_dfl_closed_form_step_with_infinite_gradient_stops_and_warns(paths_data):
    # the closed-form step checks the objective and the gradient before updating: the
    # fit keeps the state of the last good step instead of taking a step to NaN
    X, y, X_test, _ = paths_data
    with pytest.warns(NonFiniteWarning, match="iteration 3"):
        model = _dfl(_GradientTurnsInfinite(), 10).fit(X, y)
    assert model.n_iter_ == 2
    reference = _dfl(ShortestPath(), 2).fit(X, y)
    np.testing.assert_array_equal(model.predict(X_test), reference.predict(X_test))


def test_taskmet_accepts_linear_tasks(paths_data):
    X, y, X_test, y_test = paths_data
    model = TaskMetRegressor(
        ShortestPath(),
        metric="diagonal",
        max_iter=3,
        inner_steps_first=20,
        inner_steps=5,
        batch_size=16,
        validation_fraction=0.2,
        validation_interval=1,
        device="cpu",
        random_state=0,
    ).fit(X, y)
    assert model.predict(X_test).shape == (100, 40)
    assert np.isfinite(model.history_["validation_task_loss"]).all()
    assert model.metric_values(X_test[:2]).shape == (2, 40, 40)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(restored.predict(X_test), model.predict(X_test))


def test_instances_spanning_groups_of_rows():
    # a knapsack instance as 8 rows (one per item, d = 1) sharing a group id
    X, y, weights = make_knapsack(n_samples=40, n_items=8, random_state=0)
    task = Knapsack(weights[0], 12.0)
    rows_X = np.repeat(X, 8, axis=0)
    rows_X = np.hstack([rows_X, np.tile(np.eye(8), (40, 1))])
    rows_y = y.reshape(-1)
    groups = np.repeat(np.arange(40), 8)
    model = _dfl(task, 5).fit(rows_X, rows_y, groups=groups)
    assert model.predict(rows_X).shape == (320,)
    regret_rows = normalized_regret(rows_y, model.predict(rows_X), task, groups=groups)
    regret_vectors = normalized_regret(y, model.predict(rows_X).reshape(40, 8), task)
    assert regret_rows == pytest.approx(regret_vectors)


def test_fit_rejects_costs_of_the_wrong_length():
    X, y = make_shortest_path(n_samples=20, random_state=0)
    with pytest.raises(ValueError, match="40 costs per instance"):
        _dfl(ShortestPath(), 2).fit(X, y[:, :30])


def test_regret_function_and_scorer(paths_data):
    X, y, X_test, y_test = paths_data
    task = ShortestPath()
    model = LinearRegression().fit(X, y)
    pred = model.predict(X_test)
    # PyEPO's definition, computed here by hand from the solutions
    solutions, objectives = task.solve(torch.as_tensor(y_test))
    decisions, _ = task.solve(torch.as_tensor(pred))
    by_hand = float(((decisions * torch.as_tensor(y_test)).sum(1) - objectives).sum())
    by_hand /= float(objectives.abs().sum()) + 1e-8
    assert normalized_regret(y_test, pred, task) == pytest.approx(by_hand, rel=1e-12)
    assert RegretScorer(task)(model, X_test, y_test) == pytest.approx(-by_hand, rel=1e-12)
    assert normalized_regret(y_test, y_test, task) == 0.0
    with pytest.raises(TypeError, match="linear program"):
        normalized_regret(y_test, pred, TopK())


def test_regret_scorer_in_cross_validation(paths_data):
    X, y, _, _ = paths_data
    # one instance per row: no groups to route
    scores = cross_val_score(LinearRegression(), X, y, scoring=RegretScorer(ShortestPath()), cv=2)
    assert scores.shape == (2,) and np.all((scores < 0) & (scores > -1))
    # the estimator's own task is used when none is given
    model = _dfl(ShortestPath(), 2).fit(X, y)
    assert RegretScorer()(model, X, y) == pytest.approx(
        -normalized_regret(y, model.predict(X), ShortestPath())
    )
    quality = DecisionQualityScorer()(model, X, y)
    assert np.isfinite(quality)
