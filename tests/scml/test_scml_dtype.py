"""The floating-point type of SCML fits: float32 above 64 features under ``dtype="auto"``."""

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsRegressor

from sktaskmet import SCMLClassifier, SCMLRegressor

FAST = dict(max_iter=400, output_iter=100, device="cpu", random_state=0)


def embedding_problem(n_samples=300, n_features=80, seed=0):
    """Wide Gaussian inputs; the target depends on 3 of their directions."""
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((n_samples, n_features))
    directions, _ = np.linalg.qr(rng.standard_normal((n_features, 3)))
    z = X @ directions
    y = np.sin(z[:, 0]) + 0.5 * z[:, 1] ** 2 + z[:, 2] + 0.1 * rng.standard_normal(n_samples)
    return X, y


def fit(estimator_class, X, y, **params):
    if estimator_class is SCMLClassifier:
        y = (y > np.median(y)).astype(int)
    return estimator_class(**FAST, **params).fit(X, y)


FITTED_ARRAYS = ("basis_", "weights_", "components_", "fit_X_")


@pytest.mark.parametrize("estimator_class", [SCMLRegressor, SCMLClassifier])
def test_wide_float64_input_fits_in_float32_by_default(estimator_class):
    X, y = embedding_problem()
    model = fit(estimator_class, X, y)
    assert all(getattr(model, name).dtype == np.float32 for name in FITTED_ARRAYS)
    # Outputs follow the dtype of their own input, not that of the fit.
    assert model.transform(X[:5]).dtype == np.float64
    assert model.transform(X[:5].astype(np.float32)).dtype == np.float32
    if estimator_class is SCMLRegressor:
        assert model.predict(X[:5]).dtype == np.float64
    # "auto" on wide data is the float32 fit, from float64 or float32 inputs alike.
    explicit = fit(estimator_class, X, y, dtype="float32")
    from_float32 = fit(estimator_class, X.astype(np.float32), y)
    np.testing.assert_array_equal(model.weights_, explicit.weights_)
    np.testing.assert_array_equal(model.weights_, from_float32.weights_)


@pytest.mark.parametrize("estimator_class", [SCMLRegressor, SCMLClassifier])
def test_float64_on_request_and_narrow_inputs_keep_their_dtype(estimator_class):
    X, y = embedding_problem()
    wide64 = fit(estimator_class, X, y, dtype="float64")
    assert all(getattr(wide64, name).dtype == np.float64 for name in FITTED_ARRAYS)
    narrow = X[:, :12]
    auto = fit(estimator_class, narrow, y)
    assert all(getattr(auto, name).dtype == np.float64 for name in FITTED_ARRAYS)
    # At 64 features and below "auto" is the input's own precision, bit for bit.
    np.testing.assert_array_equal(
        auto.weights_, fit(estimator_class, narrow, y, dtype="float64").weights_
    )
    narrow32 = fit(estimator_class, narrow.astype(np.float32), y)
    assert narrow32.weights_.dtype == np.float32


def test_float32_fit_keeps_the_error_of_the_float64_fit():
    X, y = embedding_problem(n_samples=900, n_features=96)
    train, test = slice(0, 700), slice(700, None)

    def rmse(model):
        return float(np.sqrt(np.mean((model.predict(X[test]) - y[test]) ** 2)))

    params = dict(max_iter=2000, n_neighbors=10, device="cpu")
    errors = {
        dtype: [
            rmse(SCMLRegressor(dtype=dtype, random_state=seed, **params).fit(X[train], y[train]))
            for seed in (0, 1)
        ]
        for dtype in ("float32", "float64")
    }
    euclidean = rmse(KNeighborsRegressor(10).fit(X[train], y[train]))
    assert np.mean(errors["float32"]) <= 1.05 * np.mean(errors["float64"]), (errors, euclidean)
    assert max(errors["float32"]) < euclidean, (errors, euclidean)


@pytest.mark.parametrize("estimator_class", [SCMLRegressor, SCMLClassifier])
def test_float32_fit_predicts_float64_queries_in_float32(estimator_class):
    # Without this, a float64 query would copy the training rows and the distance blocks
    # into float64 and double the memory of a prediction (and of the divergence check at
    # the end of fit); the result comes back in the query's dtype.
    X, y = embedding_problem()
    model = fit(estimator_class, X, y)
    queries = X[:40] + 0.01
    method = "predict" if estimator_class is SCMLRegressor else "predict_proba"
    from_float64 = getattr(model, method)(queries)
    from_float32 = getattr(model, method)(queries.astype(np.float32))
    assert from_float64.dtype == np.float64 and from_float32.dtype == np.float32
    np.testing.assert_array_equal(from_float64, from_float32.astype(np.float64))
