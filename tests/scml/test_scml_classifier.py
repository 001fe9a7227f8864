"""Tests of SCMLClassifier: class triplets, the learned metric, prediction and errors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from sklearn.datasets import load_iris
from sklearn.neighbors import KNeighborsClassifier

from sktaskmet import SCMLClassifier
from sktaskmet._training import CALLBACKS_AVAILABLE
from sktaskmet.scml._triplets import classification_triplets
from tests._axioms import assert_distance_axioms, assert_psd, float_arrays, metric_scale, rtol_for

FAST = dict(max_iter=1000, output_iter=100, device="cpu", random_state=0)


def noisy_classes(n_samples=240, n_noise=6, seed=0):
    """Three classes separated along the first two features; the others are wide noise."""
    rng = np.random.RandomState(seed)
    y = rng.randint(3, size=n_samples)
    centres = np.array([[0.0, 0.0], [1.5, 0.0], [0.0, 1.5]])
    X = np.hstack([centres[y] + 0.4 * rng.randn(n_samples, 2), 2.0 * rng.randn(n_samples, n_noise)])
    return X, y


@pytest.fixture(scope="module")
def fitted():
    X, y = noisy_classes()
    return SCMLClassifier(**FAST).fit(X[:160], y[:160]), X, y


def test_class_triplets_are_the_nearest_same_and_other_class_points():
    X, y = noisy_classes(n_samples=60)
    triplets = classification_triplets(torch.from_numpy(X), torch.from_numpy(y), 2, 3).numpy()
    distances = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    for anchor in range(len(X)):
        same = np.where(y == y[anchor], distances[anchor], np.inf)
        other = np.where(y != y[anchor], distances[anchor], np.inf)
        expected = {(anchor, p, n) for p in np.argsort(same)[:2] for n in np.argsort(other)[:3]}
        assert set(map(tuple, triplets[triplets[:, 0] == anchor])) == expected


def test_class_triplets_skip_anchors_without_a_same_class_neighbour():
    X = np.arange(8, dtype=np.float64)[:, None]
    y = np.array([0, 0, 0, 1, 1, 1, 1, 2])  # class 2 has one member
    triplets = classification_triplets(torch.from_numpy(X), torch.from_numpy(y), 2, 2).numpy()
    assert 7 not in triplets[:, 0]
    assert np.all(y[triplets[:, 0]] == y[triplets[:, 1]])
    assert np.all(y[triplets[:, 0]] != y[triplets[:, 2]])


def test_learned_metric_ignores_noise_and_beats_euclidean_knn(fitted):
    model, X, y = fitted
    M = model.get_mahalanobis_matrix()
    assert np.trace(M[:2, :2]) > 5 * np.trace(M[2:, 2:])
    euclidean = KNeighborsClassifier(5).fit(X[:160], y[:160]).score(X[160:], y[160:])
    assert model.score(X[160:], y[160:]) > euclidean + 0.05
    assert model.objective_ < model.loss_curve_[0]


def test_predict_is_the_vote_of_sklearn_knn_in_the_learned_metric(fitted):
    model, X, y = fitted
    knn = KNeighborsClassifier(5).fit(model.transform(X[:160]), y[:160])
    np.testing.assert_allclose(
        model.predict_proba(X[160:]), knn.predict_proba(model.transform(X[160:]))
    )


def test_metric_axioms(fitted):
    model = fitted[0]

    @settings(max_examples=30)
    @given(points=float_arrays(np.float64, (3, 4, 8)))
    def check(points):
        x, y, z = points
        distance = lambda a, b: model.pair_distance(np.stack([a, b], axis=1))  # noqa: E731
        M = model.get_mahalanobis_matrix()
        assert_psd(M, rtol=rtol_for(np.float64))
        assert_distance_axioms(
            distance, x, y, z, scale=metric_scale(M, x, y, z), rtol=rtol_for(np.float64)
        )

    check()


def test_string_labels_float32_and_the_high_dimensional_basis():
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = SCMLClassifier(**FAST).fit(X.astype(np.float32), names)
    assert model.transform(X.astype(np.float32)).dtype == np.float32
    assert set(model.predict(X)) <= set(names)
    wide = np.hstack([X, np.random.RandomState(0).randn(150, 70)])
    model = SCMLClassifier(**FAST).fit(wide, y)
    assert model.basis_.shape[0] <= 21 * (2 + 8)
    # The learned metric spends most of its expected squared distance on the 4 iris
    # features (about 6% of the total variance under the Euclidean metric), not on the noise.
    M = model.get_mahalanobis_matrix()
    spread = np.diag(M) * wide.var(axis=0)
    assert spread[:4].sum() / spread.sum() > 0.5


@pytest.mark.parametrize(
    "change, match",
    [("one class", "single class"), ("zeros", "identical rows"), ("continuous", "Unknown label")],
)
def test_bad_input_gets_a_clear_error(change, match):
    X, y = noisy_classes(n_samples=40)
    X, y = X.copy(), y.copy()
    if change == "one class":
        y[:] = 1
    if change == "zeros":
        X[:] = 0.0
    if change == "continuous":
        y = y + np.linspace(0, 0.5, len(y))
    with pytest.raises(ValueError, match=match):
        SCMLClassifier(**FAST).fit(X, y)


@pytest.mark.skipif(not CALLBACKS_AVAILABLE, reason="scikit-learn < 1.9 has no sklearn.callback")
def test_scoring_monitor_scores_the_vote_of_every_evaluation():
    pytest.importorskip("pandas")
    from sklearn.callback import ScoringMonitor

    X, y = noisy_classes(n_samples=120)
    monitor = ScoringMonitor(scoring="accuracy")
    model = SCMLClassifier(**FAST).set_callbacks(monitor).fit(X, y)
    log = monitor.get_logs().data_as_pandas
    assert list(log[log["parent_task_id_path"] == (0,)]["task_name"]) == ["global solve"]
    steps = log[log["parent_task_id_path"] == (0, 0)].sort_values("task_id")
    assert len(steps) == len(model.loss_curve_) == 1 + FAST["max_iter"] // FAST["output_iter"]
    # The start (w = 0: every distance is 0) votes arbitrarily; the learned metric well.
    assert steps["accuracy"].iloc[0] < 0.6 < steps["accuracy"].iloc[-1]
    kept = int(np.argmin(model.loss_curve_))
    final = log[log["task_name"] == "fit"]["accuracy"].iloc[0]
    assert steps["accuracy"].iloc[kept] == final == model.score(X, y)
    np.testing.assert_array_equal(SCMLClassifier(**FAST).fit(X, y).predict(X), model.predict(X))
