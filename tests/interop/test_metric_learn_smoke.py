"""sktaskmet and metric-learn side by side (CI's scikit-learn 1.7 environment)."""

import numpy as np
from sklearn.datasets import make_regression
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline

from sktaskmet._mahalanobis import MahalanobisDistance
from tests._mahalanobis_reference import components_from_matrix


def test_metric_learn_fits_and_its_metric_matches_ours():
    from metric_learn import MLKR

    X, y = make_regression(n_samples=80, n_features=4, noise=0.1, random_state=0)
    mlkr = MLKR(max_iter=20, random_state=0).fit(X, y)
    ours = MahalanobisDistance(mlkr.components_)
    theirs = mlkr.get_metric()
    for a, b in [(X[0], X[1]), (X[2], X[3]), (X[5], X[5])]:
        np.testing.assert_allclose(ours(a, b), theirs(a, b), rtol=1e-10, atol=1e-12)
    # Their Mahalanobis matrix, factored by our core, gives the same distances again.
    refactored = MahalanobisDistance(components_from_matrix(mlkr.get_mahalanobis_matrix()))
    np.testing.assert_allclose(refactored(X[0], X[1]), theirs(X[0], X[1]), rtol=1e-8)


def test_metric_learn_transformer_in_a_pipeline_with_our_metric():
    from metric_learn import MLKR

    X, y = make_regression(n_samples=80, n_features=4, noise=0.1, random_state=1)
    pipeline = make_pipeline(
        MLKR(max_iter=20, random_state=0),
        KNeighborsRegressor(n_neighbors=3, metric=MahalanobisDistance(np.eye(4))),
    ).fit(X, y)
    assert pipeline.score(X, y) > 0.5
