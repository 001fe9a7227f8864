"""scikit-learn's estimator checks on every public estimator, found automatically.

Every class in ``sktaskmet.__all__`` (and in the public subpackages) that derives from
:class:`sklearn.base.BaseEstimator` is checked. ``CHECK_PARAMS`` gives an estimator small
settings so that the checks run quickly; ``EXPECTED_FAILED_CHECKS`` lists the checks an
estimator cannot pass, each with the reason a user would read.
"""

import importlib
import inspect

import pytest
from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks

import sktaskmet

PUBLIC_MODULES = ["sktaskmet", "sktaskmet.model_selection"]

# Small, fast settings per estimator class name (the defaults are tuned for real data).
CHECK_PARAMS = {
    "AgreementScorer": dict(hidden_layer_sizes=(8,), max_epochs=2, batch_size=16, device="cpu"),
    "TaskDiscovery": dict(
        n_tasks=2,
        hidden_layer_sizes=(4,),
        inner_steps=2,
        max_iter=2,
        batch_size=16,
        agreement_scorer="skip",
        device="cpu",
    ),
}

# {class name: {check name: reason}}; reasons are shown to users in the test report.
EXPECTED_FAILED_CHECKS = {}


def public_estimator_classes():
    classes = {}
    for module_name in PUBLIC_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isclass(obj) and issubclass(obj, BaseEstimator):
                classes[name] = obj
    return [classes[name] for name in sorted(classes)]


def build(cls):
    return cls(**CHECK_PARAMS.get(cls.__name__, {}))


ESTIMATORS = [build(cls) for cls in public_estimator_classes()]


def expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


def test_every_public_name_is_importable():
    for name in sktaskmet.__all__:
        assert hasattr(sktaskmet, name), name


@pytest.mark.skipif(not ESTIMATORS, reason="no public estimator yet")
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
