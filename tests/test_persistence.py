"""Every fitted estimator round-trips through skops' secure format with the documented types."""

import numpy as np
import pytest

from sktaskmet.persistence import SKOPS_TRUSTED_TYPES, skops_trusted_types
from sktaskmet.tasks import TopK

from .test_reliability import FACTORIES, KIND, NAMES, fit, make_data, output

sio = pytest.importorskip("skops.io")


@pytest.mark.parametrize("name", NAMES)
def test_fitted_estimator_round_trips_through_skops(name, tmp_path):
    X, y = make_data(KIND[name])
    est = fit(FACTORIES[name](), X, y)
    path = tmp_path / "model.skops"
    sio.dump(est, path)
    # Nothing beyond the documented list needs trusting ...
    assert set(sio.get_untrusted_types(file=path)) <= set(SKOPS_TRUSTED_TYPES)
    loaded = sio.load(path, trusted=SKOPS_TRUSTED_TYPES)
    np.testing.assert_array_equal(output(loaded, X), output(est, X))
    # ... and without trusting it, skops refuses to load.
    with pytest.raises(Exception, match="(?i)untrusted"):
        sio.load(path)


def test_estimator_with_a_builtin_task_round_trips():
    rng = np.random.RandomState(0)
    X = rng.randn(24, 3)
    y = X @ np.arange(1.0, 4.0)
    groups = np.repeat(np.arange(6), 4)
    from sktaskmet import DFLRegressor

    est = DFLRegressor(task=TopK(k=2), max_iter=3, device="cpu", random_state=0)
    est.fit(X, y, groups=groups)
    loaded = sio.loads(sio.dumps(est), trusted=SKOPS_TRUSTED_TYPES)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    assert loaded.task_score(X, y, groups) == est.task_score(X, y, groups)


def test_trusted_types_are_public_names_and_exclude_user_code():
    assert skops_trusted_types() == SKOPS_TRUSTED_TYPES
    assert "numpy.dtype" in SKOPS_TRUSTED_TYPES
    assert not any(
        "CallableTask" in t or "GradientSubsetEstimator" in t for t in SKOPS_TRUSTED_TYPES
    )
