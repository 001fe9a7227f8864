"""scikit-learn's estimator checks for the surrogates, on inputs mapped into [0, 1].

The surrogates accept only task indicators or weights in [0, 1], so the checks that feed
unbounded features are expected failures in tests/test_common.py. Here the same checks run
on ``make_pipeline(MinMaxScaler(clip=True), surrogate)``, which maps every check's data into
[0, 1] and leaves the surrogate's behaviour (fit, predict, pickling, dtypes, sample order
and subset invariance, multi-output...) under test.
"""

from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from sktaskmet import KernelSurrogate, LinearSurrogate

_PIPELINE_REASON = (
    "a Pipeline fits its steps in place, so its 'steps' parameter changes during fit; "
    "tests/surrogate/test_surrogate.py checks the surrogates themselves for this"
)
_EXPECTED = {
    "check_dont_overwrite_parameters": _PIPELINE_REASON,
    "check_estimators_overwrite_params": _PIPELINE_REASON,
}


@parametrize_with_checks(
    [
        make_pipeline(MinMaxScaler(clip=True), KernelSurrogate(device="cpu")),
        make_pipeline(MinMaxScaler(clip=True), KernelSurrogate("poly", cv=3, device="cpu")),
        make_pipeline(MinMaxScaler(clip=True), LinearSurrogate(device="cpu")),
        make_pipeline(MinMaxScaler(clip=True), LinearSurrogate("l1", alpha=0.01, device="cpu")),
    ],
    expected_failed_checks=lambda estimator: _EXPECTED,
)
def test_surrogate_in_unit_interval_pipeline(estimator, check):
    check(estimator)
