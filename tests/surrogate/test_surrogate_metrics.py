"""Held-out and leave-one-out metrics of surrogates, as functions and scorers."""

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from sktaskmet import KernelSurrogate, LinearSurrogate
from sktaskmet.datasets import make_task_interactions
from sktaskmet.surrogate import (
    LOOCorrelationScorer,
    loo_correlation,
    mean_spearman_score,
    mean_spearman_scorer,
    normalized_error,
    normalized_error_scorer,
)


def test_mean_spearman_by_hand():
    # Column 0: identical order, rho = 1. Column 1: true ranks (3, 1, 2), predicted ranks
    # (1, 2, 3): centred (1, -1, 0) and (-1, 0, 1), rho = (-1 + 0 + 0) / 2 = -0.5.
    y_true = np.array([[1.0, 9.0], [2.0, 1.0], [3.0, 5.0]])
    y_pred = np.array([[0.0, 0.1], [5.0, 0.2], [9.0, 0.3]])
    assert mean_spearman_score(y_true, y_pred) == pytest.approx(0.25)


def test_mean_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, size=(12, 5)).astype(float)  # many ties
    y_pred = rng.normal(size=(12, 5))
    expected = np.mean([spearmanr(y_true[:, j], y_pred[:, j])[0] for j in range(5)])
    assert mean_spearman_score(y_true, y_pred) == pytest.approx(expected)


def test_mean_spearman_one_dimensional_and_filters():
    assert mean_spearman_score([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    # A constant target is left out; a low-variance one only with min_variance.
    y_true = np.array([[1.0, 5.0, 0.0], [2.0, 5.0, 0.1], [3.0, 5.0, 0.2]])
    y_pred = np.array([[1.0, 1.0, 0.2], [2.0, 2.0, 0.1], [3.0, 3.0, 0.0]])
    assert mean_spearman_score(y_true, y_pred) == pytest.approx(0.0)  # (1 - 1) / 2
    assert mean_spearman_score(y_true, y_pred, min_variance=0.5) == pytest.approx(1.0)
    # A constant prediction ranks nothing: 0, not NaN.
    assert mean_spearman_score([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]) == 0.0


def test_normalized_error_by_hand():
    # Column 0: errors (0, 0, 1), MSE 1/3, sample variance of (0, 1, 2) = 1.
    # Column 1: errors (1, 1, 1), MSE 1, sample variance of (0, 2, 4) = 4.
    y_true = np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]])
    y_pred = np.array([[0.0, 1.0], [1.0, 3.0], [3.0, 5.0]])
    assert normalized_error(y_true, y_pred) == pytest.approx((1 / 3 + 1 / 4) / 2)
    assert normalized_error(y_true, y_pred, min_variance=2.0) == pytest.approx(1 / 4)
    assert normalized_error(y_true, y_true) == 0.0


def test_loo_correlation_by_hand_and_scipy():
    scores = np.array([[1.0, 2.0], [2.0, 1.0], [4.0, 0.0], [3.0, 5.0]])
    truth = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 2.0], [4.0, 3.0]])
    pearson = np.mean([pearsonr(scores[:, j], truth[:, j])[0] for j in range(2)])
    spearman = np.mean([spearmanr(scores[:, j], truth[:, j])[0] for j in range(2)])
    assert loo_correlation(scores, truth) == pytest.approx(pearson)
    assert loo_correlation(scores, truth, method="spearman") == pytest.approx(spearman)
    # Column 0 by hand: ranks (1, 2, 4, 3) against (1, 2, 3, 4): 1 - 6 * 2 / (4 * 15) = 0.8.
    assert loo_correlation(scores[:, 0], truth[:, 0], method="spearman") == pytest.approx(0.8)


@pytest.mark.parametrize("metric", [mean_spearman_score, normalized_error, loo_correlation])
def test_metrics_reject_bad_input(metric):
    with pytest.raises(ValueError, match="same shape"):
        metric(np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="at least 2 subsets"):
        metric([1.0], [1.0])
    with pytest.raises(ValueError, match="NaN|infinity|finite"):
        metric([1.0, np.nan, 2.0], [1.0, 2.0, 3.0])


def test_variance_filters_reject_when_nothing_is_left():
    with pytest.raises(ValueError, match="min_variance"):
        mean_spearman_score([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="min_variance"):
        normalized_error([0.0, 0.1, 0.2], [0.0, 0.1, 0.2], min_variance=1.0)
    with pytest.raises(ValueError, match="min_variance"):
        normalized_error([0.0, 1.0], [0.0, 1.0], min_variance=-1.0)
    with pytest.raises(ValueError, match="method"):
        loo_correlation([0.0, 1.0], [0.0, 1.0], method="kendall")


def test_scorers_in_cross_val_score_and_grid_search():
    S, y, _ = make_task_interactions(n_subsets=120, random_state=0)
    Y = np.column_stack([y, 2.0 * y + 1.0])
    folds = KFold(4, shuffle=True, random_state=0)
    model = KernelSurrogate(device="cpu")
    spearman = cross_val_score(model, S, Y, cv=folds, scoring=mean_spearman_scorer)
    error = cross_val_score(model, S, Y, cv=folds, scoring=normalized_error_scorer)
    # The scorers are the metrics on each held-out fold (normalised error negated).
    for k, (train, test) in enumerate(folds.split(S)):
        pred = KernelSurrogate(device="cpu").fit(S[train], Y[train]).predict(S[test])
        assert spearman[k] == pytest.approx(mean_spearman_score(Y[test], pred))
        assert error[k] == pytest.approx(-normalized_error(Y[test], pred))
    assert spearman.min() > 0.6
    grid = {"alpha": [1e-3, 0.1, 10.0]}
    search = GridSearchCV(model, grid, cv=folds, scoring=normalized_error_scorer).fit(S, Y)
    # Its criterion is the mean over folds of the negated held-out normalised error.
    alpha_index = grid["alpha"].index(search.best_params_["alpha"])
    best = cross_val_score(
        KernelSurrogate(alpha=grid["alpha"][alpha_index], device="cpu"),
        S,
        Y,
        cv=folds,
        scoring=normalized_error_scorer,
    )
    assert search.best_score_ == pytest.approx(best.mean())


def test_loo_correlation_scorer():
    S, y, F = make_task_interactions(n_subsets=150, random_state=0)
    loo = F(np.ones(16)) - F(1.0 - np.eye(16))
    scorer = LOOCorrelationScorer(loo)
    kernel = KernelSurrogate(device="cpu").fit(S, y)
    assert scorer(kernel, S, y) == pytest.approx(loo_correlation(kernel.attribution(), loo))
    search = GridSearchCV(
        KernelSurrogate(device="cpu"), {"alpha": [1e-3, 0.1, 100.0]}, cv=3, scoring=scorer
    ).fit(S, y)
    assert search.best_params_["alpha"] != 100.0  # heavy shrinkage flattens attributions
    gradient = LOOCorrelationScorer(loo, attribution="gradient", method="spearman")
    linear = LinearSurrogate(device="cpu").fit(S, y)
    assert gradient(linear, S, y) == pytest.approx(
        loo_correlation(linear.coef_, loo, method="spearman")
    )
    with pytest.raises(TypeError, match="attribution"):
        scorer(object(), S, y)
    with pytest.raises(ValueError, match="inconsistent numbers"):
        LOOCorrelationScorer(loo[:5])(kernel, S, y)
