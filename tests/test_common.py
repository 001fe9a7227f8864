"""scikit-learn's estimator checks on every public estimator, found automatically.

Every class in ``sktaskmet.__all__`` (and in the public subpackages) that derives from
:class:`sklearn.base.BaseEstimator` is checked. ``CHECK_PARAMS`` gives an estimator small
settings so that the checks run quickly; ``EXPECTED_FAILED_CHECKS`` lists the checks an
estimator cannot pass, each with the reason a user would read (strict: a listed check that
passes fails the run). The array-API check runs only with ``SCIPY_ARRAY_API=1``, which the
array-API step of ``.ci/run`` sets.
"""

import importlib
import inspect

import pytest
from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks

import sktaskmet

PUBLIC_MODULES = ["sktaskmet", "sktaskmet.model_selection"]

# Small, fast settings per estimator class name. DFLRegressor, KernelSurrogate,
# LinearSurrogate and the SCML estimators are checked with their default parameters.
# TaskMetRegressor and TaskDiscovery also pass every check with defaults, but about 50
# default fits take 5-7 CPU minutes each (benchmarks/check_estimator_defaults.py runs them,
# doc/reliability.rst records the result); here they run the same code with fewer
# iterations, and AgreementScorer with a smaller network.
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
    # SCMLRegressor: default parameters (its neighbour counts shrink to the checks' data).
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
# features. tests/surrogate/test_surrogate_estimators.py runs the same checks on
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
    # runs only with SCIPY_ARRAY_API=1 (the array-API step of .ci/run)
    "check_array_api_input",
]
for _name in ("KernelSurrogate", "LinearSurrogate"):
    EXPECTED_FAILED_CHECKS[_name] = dict.fromkeys(_SURROGATE_RANGE_CHECKS, _SURROGATE_RANGE_REASON)
EXPECTED_FAILED_CHECKS["LinearSurrogate"]["check_non_transformer_estimators_n_iter"] = (
    _SURROGATE_RANGE_REASON
)

# GradientSubsetEstimator.fit(X, y, *, tasks, X_target, y_target) needs a torch model shaped
# for the data, a task label per row and a target set. The checks below call fit(X, y) on
# generic arrays and fail on the missing arguments; the checks that need no fit (cloning,
# get/set_params, repr, tags, parameter validation in __init__) run.
# tests/surrogate/test_gradient_estimator.py covers what these checks would: pickling, determinism,
# dtypes, bad input, n_features_in_, fit returning self.
_GRADIENT_FIT_REASON = (
    "fit needs a torch model, the task of each row and a target set (tasks, X_target, "
    "y_target), which this generic check cannot supply"
)
EXPECTED_FAILED_CHECKS["GradientSubsetEstimator"] = dict.fromkeys(
    [
        "check_array_api_input",
        "check_complex_data",
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_dtype_object",
        "check_estimator_sparse_array",
        "check_estimator_sparse_matrix",
        "check_estimator_sparse_tag",
        "check_estimators_dtypes",
        "check_estimators_empty_data_messages",
        "check_estimators_fit_returns_self",
        "check_estimators_nan_inf",
        "check_estimators_overwrite_params",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1feature",
        "check_fit2d_1sample",
        "check_fit2d_predict1d",
        "check_fit_check_is_fitted",
        "check_fit_idempotent",
        "check_fit_score_takes_y",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_n_features_in",
        "check_n_features_in_after_fitting",
        "check_pipeline_consistency",
        "check_positive_only_tag_during_fit",
        "check_readonly_memmap_input",
    ],
    _GRADIENT_FIT_REASON,
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


# Strict where scikit-learn supports it (1.8 and newer): a check listed as an expected
# failure that passes fails the run, so that the list (and the reasons users read) cannot
# go stale.
_STRICT = (
    {"xfail_strict": True}
    if "xfail_strict" in inspect.signature(parametrize_with_checks).parameters
    else {}
)


@pytest.mark.skipif(not ESTIMATORS, reason="no public estimator yet")
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks, **_STRICT)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
