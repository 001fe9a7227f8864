"""The metric-learn vocabulary of sktaskmet._mahalanobis.MahalanobisMixin.

The mixin is exercised through a minimal learner whose metric is given, so these tests pin
the shared behaviour that every fitted global metric learner inherits.
"""

import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import KNeighborsRegressor
from sklearn.utils.validation import validate_data

from sktaskmet._mahalanobis import MahalanobisDistance, MahalanobisMixin
from tests._axioms import assert_distance_axioms, assert_psd, float_arrays, metric_scale, rtol_for


class GivenMetric(MahalanobisMixin, TransformerMixin, BaseEstimator):
    """A 'learner' whose components are a parameter: the mixin and nothing else."""

    def __init__(self, components=None):
        self.components = components

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        self.components_ = np.asarray(self.components, dtype=X.dtype)
        return self


def fitted(components, n_features=None):
    components = np.asarray(components, dtype=float)
    n_features = components.shape[1] if n_features is None else n_features
    return GivenMetric(components).fit(np.zeros((2, n_features)))


def test_vocabulary_matches_the_definition():
    rng = np.random.RandomState(0)
    L = rng.randn(2, 3)
    learner = fitted(L)
    X = rng.randn(6, 3)
    np.testing.assert_allclose(learner.get_mahalanobis_matrix(), L.T @ L)
    np.testing.assert_allclose(learner.transform(X), X @ L.T)
    pairs = np.stack([X[:3], X[3:]], axis=1)
    expected = np.linalg.norm((X[:3] - X[3:]) @ L.T, axis=1)
    np.testing.assert_allclose(learner.pair_distance(pairs), expected)
    np.testing.assert_allclose(learner.pair_score(pairs), -expected)
    metric = learner.get_metric()
    np.testing.assert_allclose([metric(a, b) for a, b in pairs], expected)


def test_transform_follows_the_input_dtype():
    learner = fitted(np.eye(2))
    assert learner.transform(np.ones((3, 2), dtype=np.float32)).dtype == np.float32
    assert learner.transform(np.ones((3, 2))).dtype == np.float64


def test_get_metric_plugs_into_kneighbors_and_matches_transformed_euclidean():
    rng = np.random.RandomState(1)
    X, y = rng.randn(40, 3), rng.randn(40)
    learner = fitted(np.diag([3.0, 0.1, 1.0]))
    knn_metric = KNeighborsRegressor(n_neighbors=3, metric=learner.get_metric()).fit(X, y)
    knn_embedded = KNeighborsRegressor(n_neighbors=3).fit(learner.transform(X), y)
    X_new = rng.randn(7, 3)
    np.testing.assert_allclose(
        knn_metric.predict(X_new), knn_embedded.predict(learner.transform(X_new))
    )


def test_get_metric_is_picklable_and_independent_of_later_fits():
    learner = fitted(np.eye(2))
    metric = learner.get_metric()
    learner.set_params(components=2 * np.eye(2)).fit(np.zeros((2, 2)))
    restored = pickle.loads(pickle.dumps(metric))
    assert restored([0.0, 0.0], [3.0, 4.0]) == pytest.approx(5.0)
    assert "n_components=2" in repr(restored)
    with pytest.raises(ValueError, match="expects 2"):
        restored([0.0], [1.0])


def test_bad_pairs_and_unfitted_learner():
    learner = fitted(np.eye(2))
    with pytest.raises(ValueError, match=r"shape \(n_pairs, 2, n_features\)"):
        learner.pair_distance(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="fitted with 2 features"):
        learner.pair_distance(np.zeros((3, 2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        learner.pair_distance(np.full((1, 2, 2), np.nan))
    with pytest.raises(ValueError, match="features"):
        learner.transform(np.zeros((3, 5)))
    with pytest.raises(NotFittedError):
        GivenMetric(np.eye(2)).get_mahalanobis_matrix()
    with pytest.raises(NotFittedError):
        GivenMetric(np.eye(2)).get_metric()


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@given(data=st.data())
def test_learned_metric_axioms_through_the_vocabulary(dtype, data):
    dim = data.draw(st.integers(1, 4))
    n = data.draw(st.integers(1, 5))
    L = data.draw(float_arrays(dtype, (data.draw(st.integers(1, 4)), dim), bound=3.0))
    learner = GivenMetric(L).fit(np.zeros((2, dim), dtype=dtype))
    x, y, z = data.draw(float_arrays(dtype, (3, n, dim)))
    rtol = rtol_for(dtype)
    M = learner.get_mahalanobis_matrix()
    assert_psd(M, rtol=rtol)

    def distance(a, b):
        return learner.pair_distance(np.stack([a, b], axis=1))

    assert_distance_axioms(distance, x, y, z, scale=metric_scale(M, x, y, z), rtol=rtol)


def test_mahalanobis_distance_copies_its_components():
    components = np.eye(2)
    metric = MahalanobisDistance(components)
    components[0, 0] = 10.0
    assert metric([0.0, 0.0], [1.0, 0.0]) == pytest.approx(1.0)
