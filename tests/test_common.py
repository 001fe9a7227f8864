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
    "TaskMetRegressor": dict(
        max_iter=3,
        inner_steps_first=200,
        inner_steps=5,
        inner_lr=0.1,
        metric_hidden_layer_sizes=(8,),
        validation_interval=1,
        device="cpu",
        random_state=0,
    ),
    "DFLRegressor": dict(max_iter=100, learning_rate=0.1, device="cpu", random_state=0),
    # SCMLRegressor: default parameters (its neighbour counts shrink to the checks' data).
    "KernelSurrogate": {"device": "cpu"},
    "LinearSurrogate": {"device": "cpu"},
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

# The surrogates model subset performance: their inputs are task indicators or weights in
# [0, 1] and they raise a ValueError on anything else, while these checks feed unbounded
# features. tests/test_surrogate_estimators.py runs the same checks on
# make_pipeline(MinMaxScaler(clip=True), surrogate), which maps the checks' data into [0, 1].
_SURROGATE_RANGE_REASON = (
    "inputs must be task indicators or weights in [0, 1]; this check feeds features outside "
    "[0, 1], which the surrogate rejects with a ValueError"
)
_SURROGATE_RANGE_CHECKS = [
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_estimators_dtypes",
    "check_estimators_fit_returns_self",
    "check_estimators_overwrite_params",
    "check_estimators_pickle",
    "check_estimators_pickle(readonly_memmap=True)",
    "check_f_contiguous_array_estimator",
    "check_fit2d_1feature",
    "check_fit2d_predict1d",
    "check_fit_check_is_fitted",
    "check_fit_idempotent",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_n_features_in",
    "check_n_features_in_after_fitting",
    "check_pipeline_consistency",
    "check_positive_only_tag_during_fit",
    "check_readonly_memmap_input",
    "check_regressor_data_not_an_array",
    "check_regressor_multioutput",
    "check_regressors_int",
    "check_regressors_no_decision_function",
    "check_regressors_train",
    "check_regressors_train(readonly_memmap=True)",
    "check_regressors_train(readonly_memmap=True,X_dtype=float32)",
]
for _name in ("KernelSurrogate", "LinearSurrogate"):
    EXPECTED_FAILED_CHECKS[_name] = dict.fromkeys(_SURROGATE_RANGE_CHECKS, _SURROGATE_RANGE_REASON)
EXPECTED_FAILED_CHECKS["LinearSurrogate"]["check_non_transformer_estimators_n_iter"] = (
    _SURROGATE_RANGE_REASON
)


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
