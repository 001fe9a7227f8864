"""Bad inputs and faults, systematically, over every public estimator.

Categories (doc/reliability.rst records the counts): values, shapes, dtypes and containers,
parameters, lifecycle, user callables, interrupts. Every case ends in a ValueError or
TypeError that names the argument, or in a documented behaviour checked here; never in NaN,
infinity or garbage returned without a warning.
"""

import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from numbers import Integral

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

import sktaskmet
from sktaskmet import (
    AgreementScorer,
    DFLRegressor,
    GradientSubsetEstimator,
    KernelSurrogate,
    LinearSurrogate,
    SCMLClassifier,
    SCMLRegressor,
    TaskDiscovery,
    TaskMetRegressor,
)
from sktaskmet._validation import check_allocation
from sktaskmet.exceptions import DivergenceWarning
from sktaskmet.surrogate import sample_subsets
from sktaskmet.tasks import CallableTask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Child processes import this checkout's sktaskmet, whatever is installed.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}

# -- the estimators, small and fast ------------------------------------------------------

FACTORIES = {
    "TaskMetRegressor": lambda: TaskMetRegressor(
        max_iter=2,
        inner_steps_first=5,
        inner_steps=2,
        validation_interval=1,
        device="cpu",
        random_state=0,
    ),
    "DFLRegressor": lambda: DFLRegressor(max_iter=3, device="cpu", random_state=0),
    "SCMLRegressor": lambda: SCMLRegressor(
        n_basis=8,
        k_genuine=2,
        k_impostor=3,
        n_neighbors=3,
        max_iter=20,
        output_iter=10,
        device="cpu",
        random_state=0,
    ),
    "SCMLClassifier": lambda: SCMLClassifier(max_iter=20, output_iter=10, random_state=0),
    "KernelSurrogate": lambda: KernelSurrogate(device="cpu"),
    "LinearSurrogate": lambda: LinearSurrogate(device="cpu"),
    "AgreementScorer": lambda: AgreementScorer(
        hidden_layer_sizes=(8,), max_epochs=2, batch_size=16, device="cpu", random_state=0
    ),
    "TaskDiscovery": lambda: TaskDiscovery(
        n_tasks=2,
        hidden_layer_sizes=(4,),
        inner_steps=2,
        max_iter=2,
        batch_size=16,
        agreement_scorer="skip",
        device="cpu",
        random_state=0,
    ),
}
KIND = {
    "TaskMetRegressor": "regression",
    "DFLRegressor": "regression",
    "SCMLRegressor": "regression",
    "SCMLClassifier": "labels",
    "KernelSurrogate": "subsets",
    "LinearSurrogate": "subsets",
    "AgreementScorer": "labels",
    "TaskDiscovery": "unsupervised",
}
NAMES = sorted(FACTORIES)
# The first array argument of fit, as named in error messages.
X_NAME = {"regression": "X", "subsets": "S", "labels": "X", "unsupervised": "X"}
# Parameters that fix the fitted network or model structure.
ARCHITECTURE = {
    "TaskMetRegressor": {"hidden_layer_sizes": (7,), "predictor": "linear"},
    "DFLRegressor": {"hidden_layer_sizes": (7,), "predictor": "linear"},
    "SCMLRegressor": {"head": "mlp", "hidden_layer_sizes": (3,)},
    "AgreementScorer": {"hidden_layer_sizes": (3,), "n_models": 3},
    "TaskDiscovery": {"hidden_layer_sizes": (3,), "n_tasks": 3, "embedding_dim": 5},
}


def test_every_public_estimator_is_covered():
    public = {
        name
        for name in sktaskmet.__all__
        if isinstance(getattr(sktaskmet, name), type) and hasattr(getattr(sktaskmet, name), "fit")
    }
    # GradientSubsetEstimator has its own fit signature; its cases are at the end.
    assert public - {"GradientSubsetEstimator"} == set(FACTORIES)


def make_data(kind, n=30, p=3, seed=0):
    rng = np.random.RandomState(seed)
    if kind == "subsets":
        S = (rng.rand(n, 5) < 0.5).astype(float)
        return S, S @ rng.randn(5)
    X = rng.randn(n, p)
    if kind == "regression":
        return X, X @ np.arange(1.0, p + 1)
    if kind == "labels":
        return X, (X[:, 0] > 0).astype(int)
    return X, None


def fit(est, X, y):
    return est.fit(X) if y is None else est.fit(X, y)


def output(est, X):
    """What the fitted estimator computes on new data."""
    if hasattr(est, "predict"):
        return est.predict(X)
    if hasattr(est, "transform"):
        return est.transform(X)
    return est.predict_members(X)


@pytest.fixture(params=NAMES)
def case(request):
    name = request.param
    X, y = make_data(KIND[name])
    return name, FACTORIES[name](), X, y


# -- values -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_in_features_are_rejected(case, bad):
    name, est, X, y = case
    X = X.copy()
    X[1, 1] = bad
    with pytest.raises(ValueError, match=r"(?i)nan|inf|\[0, 1\]"):
        fit(est, X, y)


def test_nan_in_target_is_rejected(case):
    name, est, X, y = case
    if y is None:
        pytest.skip("unsupervised: no target")
    y = y.astype(float)
    y[2] = np.nan
    with pytest.raises(ValueError, match=r"(?i)nan|finite|label"):
        fit(est, X, y)


def test_masked_entries_are_rejected_not_ignored(case):
    name, est, X, y = case
    masked = np.ma.masked_array(X, mask=np.zeros_like(X, dtype=bool))
    masked[0, 0] = np.ma.masked
    with pytest.raises(ValueError, match=f"{X_NAME[KIND[name]]} is a masked array with 1"):
        fit(est, masked, y)
    if y is not None and name not in ("AgreementScorer",):
        with pytest.raises(ValueError, match="y is a masked array"):
            fit(est, X, np.ma.masked_array(y, mask=np.arange(len(y)) == 0))


def test_masked_array_without_masked_entries_is_a_plain_array(case):
    name, est, X, y = case
    expected = output(fit(clone(est), X, y), X)
    got = output(fit(est, np.ma.masked_array(X), y), X)
    np.testing.assert_allclose(got, expected)


def test_huge_values_give_an_error_a_warning_or_finite_output(case):
    """Data scaled by 1e300: a clear error, a warning, or finite output; never silent NaN."""
    name, est, X, y = case
    if KIND[name] == "subsets":
        X, y = X, y * 1e300  # subsets are bounded; scale the measured performance
    else:
        X = X * 1e300
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            values = output(fit(est, X, y), X)
        except (ValueError, TypeError) as exc:
            assert str(exc)
            return
    assert caught or np.all(np.isfinite(values))


# -- shapes -------------------------------------------------------------------------------


def test_one_dimensional_features_are_rejected(case):
    name, est, X, y = case
    with pytest.raises(ValueError, match="(?i)2D|2-D|reshape"):
        fit(est, X[:, 0], y)


def test_empty_data_is_rejected(case):
    name, est, X, y = case
    with pytest.raises(ValueError, match="(?i)0 sample|empty|minimum"):
        fit(est, X[:0], None if y is None else y[:0])


def test_target_of_the_wrong_length_is_rejected(case):
    name, est, X, y = case
    if y is None:
        pytest.skip("unsupervised: no target")
    with pytest.raises(ValueError, match="(?i)inconsistent|samples|length"):
        fit(est, X, y[:-3])


def test_wrong_number_of_features_after_fit_is_rejected(case):
    name, est, X, y = case
    fit(est, X, y)
    with pytest.raises(ValueError, match="features"):
        output(est, np.hstack([X, X[:, :1]]))


# -- dtypes and containers ----------------------------------------------------------------


def test_string_column_is_named(case):
    name, est, X, y = case
    X_obj = X.astype(object)
    X_obj[3, 1] = "red"
    with pytest.raises(
        ValueError, match=rf"{X_NAME[KIND[name]]} column 1 holds non-numeric .*'red'"
    ):
        fit(est, X_obj, y)


def test_categorical_dataframe_column_is_named(case):
    name, est, X, y = case
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])
    frame["f1"] = frame["f1"].astype("category")
    with pytest.raises(ValueError, match="column 'f1' is categorical"):
        fit(est, frame, y)


def test_numeric_object_array_and_dataframe_fit_like_floats(case):
    name, est, X, y = case
    expected = output(fit(clone(est), X, y), X)
    np.testing.assert_allclose(output(fit(clone(est), X.astype(object), y), X), expected)
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])
    np.testing.assert_allclose(output(fit(est, frame, y), frame), expected)


def test_complex_features_are_rejected(case):
    name, est, X, y = case
    with pytest.raises(ValueError, match="(?i)complex"):
        fit(est, X + 1j, y)


def test_mixed_type_groups_are_named():
    X, y = make_data("regression", n=12)
    groups = np.array([1, "a"] * 6, dtype=object)
    with pytest.raises(TypeError, match="groups must hold labels of one comparable type"):
        DFLRegressor(max_iter=2, device="cpu").fit(X, y, groups=groups)


# -- parameters ---------------------------------------------------------------------------


def _numeric_parameters(cls):
    """Parameters constrained to numbers only (no boolean alternative)."""
    names = []
    for param, constraints in getattr(cls, "_parameter_constraints", {}).items():
        if constraints == "no_validation":
            continue
        if any(isinstance(c, Interval) for c in constraints) and "boolean" not in constraints:
            names.append(param)
    return names


BOOL_CASES = [
    (name, param)
    for name in NAMES + ["GradientSubsetEstimator"]
    for param in _numeric_parameters(getattr(sktaskmet, name))
]


@pytest.mark.parametrize("name, param", BOOL_CASES, ids=[f"{n}-{p}" for n, p in BOOL_CASES])
def test_bool_is_not_accepted_as_a_number(name, param):
    if name == "GradientSubsetEstimator":
        est, fit_it = _gradient_case()
    else:
        est = FACTORIES[name]()
        X, y = make_data(KIND[name])

        def fit_it(e):
            return fit(e, X, y)

    est.set_params(**{param: True})
    with pytest.raises(TypeError, match=rf"'{param}' parameter .* got True, a bool"):
        fit_it(est)


def _as_numpy_ints(est):
    """Every int parameter of ``est`` (also inside tuples) as a numpy int64."""
    params = {}
    for param, value in est.get_params(deep=False).items():
        if isinstance(value, Integral) and not isinstance(value, bool):
            params[param] = np.int64(value)
        elif isinstance(value, tuple) and value and all(isinstance(v, int) for v in value):
            params[param] = tuple(np.int64(v) for v in value)
    return params


def test_numpy_integers_are_accepted_wherever_an_int_is(case):
    name, est, X, y = case
    expected = output(fit(clone(est), X, y), X)
    params = _as_numpy_ints(est)
    assert params, "the case should exercise integer parameters"
    np.testing.assert_allclose(output(fit(est.set_params(**params), X, y), X), expected)


def test_oversized_sizes_are_refused_before_allocating():
    with pytest.raises(ValueError, match=r"n_subsets and n_tasks is too large: .* TiB"):
        sample_subsets(10**7, 10**7)
    with pytest.raises(ValueError, match=r"projection_dim is too large: .*GiB|TiB|PiB"):
        est, fit_it = _gradient_case(projection_dim=10**12)
        fit_it(est)
    with pytest.raises(ValueError, match="limit is too large"):
        check_allocation("limit", (10, 10), limit=100)


@pytest.mark.parametrize("name", ["AgreementScorer", "TaskDiscovery"])
def test_batch_size_larger_than_the_data_is_clipped(name):
    """Documented: a batch larger than the data is the whole data (no allocation)."""
    X, y = make_data(KIND[name])
    small = output(fit(FACTORIES[name](), X, y), X)
    huge = output(fit(FACTORIES[name]().set_params(batch_size=10**12), X, y), X)
    assert small.shape == huge.shape


# -- lifecycle ----------------------------------------------------------------------------


def test_not_fitted(case):
    name, est, X, y = case
    with pytest.raises(NotFittedError):
        output(est, X)


def test_refit_on_other_data_replaces_the_model(case):
    name, est, X, y = case
    fit(est, X, y)
    X2, y2 = make_data(KIND[name], n=30, p=4 if KIND[name] != "subsets" else 3, seed=1)
    if KIND[name] == "subsets":
        X2, y2 = X[:, :3], y
    fit(est, X2, y2)
    assert est.n_features_in_ == X2.shape[1]
    assert X2.shape[0] in output(est, X2).shape


def test_clone_of_a_fitted_estimator_is_unfitted(case):
    name, est, X, y = case
    fit(est, X, y)
    copy = clone(est)
    assert copy.get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(copy)


@pytest.mark.parametrize(
    "name, param",
    [(n, p) for n in sorted(ARCHITECTURE) for p in ARCHITECTURE[n]],
)
def test_architecture_set_after_fit_takes_effect_at_the_next_fit(name, param):
    est = FACTORIES[name]()
    if name in ("TaskMetRegressor", "DFLRegressor"):
        est.set_params(predictor="mlp", hidden_layer_sizes=(4,))
    X, y = make_data(KIND[name])
    before = output(fit(est, X, y), X)
    est.set_params(**{param: ARCHITECTURE[name][param]})
    np.testing.assert_allclose(output(est, X), before)
    assert est.get_params()[param] == ARCHITECTURE[name][param]


def test_fitted_models_predict_the_same_in_another_process(tmp_path):
    """Pickles load in a fresh process and predict bit for bit; devices: cpu only here."""
    blobs, expected = {}, {}
    for name in NAMES:
        X, y = make_data(KIND[name])
        est = fit(FACTORIES[name](), X, y)
        blobs[name] = pickle.dumps((est, X))
        expected[name] = output(est, X)
    (tmp_path / "models.pkl").write_bytes(pickle.dumps(blobs))
    script = textwrap.dedent(
        f"""
        import pickle, sys
        import numpy as np
        import sktaskmet
        # torch's lazily loaded modules came with the package (see test_interrupts below)
        assert "torch._dynamo" in sys.modules and "sympy.printing" in sys.modules
        sys.path.insert(0, {str(tmp_path)!r})
        blobs = pickle.loads(open({str(tmp_path / "models.pkl")!r}, "rb").read())
        out = {{}}
        for name, blob in blobs.items():
            est, X = pickle.loads(blob)
            est.set_params(device="cpu")
            if hasattr(est, "predict"):
                out[name] = est.predict(X)
            elif hasattr(est, "transform"):
                out[name] = est.transform(X)
            else:
                out[name] = est.predict_members(X)
        np.savez({str(tmp_path / "out.npz")!r}, **out)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, env=ENV)
    got = np.load(tmp_path / "out.npz")
    for name in NAMES:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


# -- user callables -----------------------------------------------------------------------


class _WrongWidth(torch.nn.Module):
    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.linear = torch.nn.Linear(n_features, n_outputs + 2)

    def forward(self, x):
        return self.linear(x)


@pytest.mark.parametrize("cls", [DFLRegressor, TaskMetRegressor])
def test_predictor_callable_of_the_wrong_shape(cls):
    X, y = make_data("regression")
    est = cls(predictor=_WrongWidth, max_iter=2, device="cpu")
    with pytest.raises(ValueError, match=r"predictor must map .* returned shape \(2, 3\)"):
        est.fit(X, y)


def _grouped_data():
    X, y = make_data("regression", n=24)
    return X, y, np.repeat(np.arange(6), 4)


def test_detached_callable_task_loss_is_refused_by_dfl():
    X, y, groups = _grouped_data()
    task = CallableTask(lambda y_pred, y_true: ((y_pred.detach() - y_true) ** 2).sum((-2, -1)))
    est = DFLRegressor(task=task, alpha=1.0, max_iter=2, device="cpu")
    with pytest.raises(ValueError, match="task loss is detached from the predictions"):
        est.fit(X, y, groups=groups)


def test_callable_task_loss_returning_nan_is_named():
    X, y, groups = _grouped_data()
    task = CallableTask(lambda y_pred, y_true: (y_pred * np.nan).sum((-2, -1)))
    est = DFLRegressor(task=task, max_iter=3, device="cpu")
    with pytest.raises(ValueError, match=r"loss_fn returned NaN or inf for instance\(s\)"):
        est.fit(X, y, groups=groups)


def test_callable_task_loss_returning_none_is_a_type_error():
    X, y, groups = _grouped_data()
    est = DFLRegressor(task=CallableTask(lambda y_pred, y_true: None), max_iter=2, device="cpu")
    with pytest.raises(TypeError, match="loss_fn must return a torch.Tensor"):
        est.fit(X, y, groups=groups)


@pytest.mark.parametrize(
    "params",
    [
        {"kernel": lambda A, B: np.full((len(A), len(B)), np.nan)},
        {"kernel": "poly", "gamma": 1e200},
        {"kernel": "poly", "degree": 50, "coef0": 1e10},
    ],
    ids=["callable-nan", "poly-gamma", "poly-degree"],
)
def test_kernel_producing_non_finite_values_is_refused(params):
    S, y = make_data("subsets")
    with pytest.raises(ValueError, match="gives NaN or infinite values on S"):
        KernelSurrogate(device="cpu", **params).fit(S, y)


def test_attribution_of_a_task_that_never_varies_warns():
    S, y = make_data("subsets")
    S[:, 2] = 0.0
    est = KernelSurrogate(device="cpu").fit(S, y)
    with pytest.warns(UserWarning, match=r"task\(s\) \[2\] take a single value"):
        est.attribution()


@pytest.mark.parametrize("cls", [DFLRegressor, TaskMetRegressor])
def test_huge_learning_rate_warns_about_divergence(cls):
    X, y = make_data("regression")
    params = {"learning_rate": 1e6, "max_iter": 20, "validation_interval": 1}
    if cls is TaskMetRegressor:
        params.update(inner_lr=1e6, inner_steps_first=10, inner_steps=2, max_iter=3)
    with pytest.warns(DivergenceWarning, match="training diverged"):
        cls(device="cpu", random_state=0, **params).fit(X, y)


# -- interrupts ---------------------------------------------------------------------------


class _InterruptAfterValidation:
    """A tracer raising KeyboardInterrupt inside fit, a few calls after input validation."""

    def __init__(self, est, after_calls=3):
        self.est, self.after_calls, self.fired = est, after_calls, False

    def __call__(self, frame, event, arg):
        if self.fired or event != "call" or "sktaskmet" not in frame.f_code.co_filename:
            return None
        if "n_features_in_" in vars(self.est):
            self.after_calls -= 1
            if self.after_calls <= 0:
                self.fired = True
                raise KeyboardInterrupt
        return None


def _interrupted_fit(est, X, y):
    tracer = _InterruptAfterValidation(est)
    sys.settrace(tracer)
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(est, X, y)
    finally:
        sys.settrace(None)
    assert tracer.fired


def test_interrupted_first_fit_leaves_an_unfitted_estimator(case):
    name, est, X, y = case
    params = est.get_params()
    _interrupted_fit(est, X, y)
    assert not [a for a in vars(est) if a.endswith("_") and not a.startswith("__")]
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    with pytest.raises(NotFittedError):
        output(est, X)
    assert est.get_params() == params
    # The process and the estimator stay usable.
    assert np.all(np.isfinite(output(fit(est, X, y), X)))


def test_interrupted_refit_keeps_the_previous_fit(case):
    name, est, X, y = case
    before = output(fit(est, X, y), X)
    X2, y2 = make_data(KIND[name], seed=3)
    _interrupted_fit(est, X2, y2)
    np.testing.assert_array_equal(output(est, X), before)


def test_failed_fit_leaves_nothing_behind(case):
    name, est, X, y = case
    X = X.copy()
    X[0, 0] = np.nan
    with pytest.raises(ValueError):
        fit(est, X, y)
    assert "n_features_in_" not in vars(est)


def test_fits_import_nothing_so_an_interrupt_cannot_land_in_an_import():
    """torch's lazily imported modules (sympy, torch._dynamo) come with ``import sktaskmet``.

    A KeyboardInterrupt inside such a lazy import left a half-initialised sympy that broke
    every later fit of the process; with nothing imported during fit, that cannot happen.
    """
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import sktaskmet
        before = set(sys.modules)
        X = np.random.RandomState(0).randn(20, 2)
        sktaskmet.TaskMetRegressor(max_iter=1, inner_steps_first=2, inner_steps=1,
                                   device="cpu").fit(X, X[:, 0])
        sktaskmet.AgreementScorer(hidden_layer_sizes=(4,), max_epochs=1,
                                  device="cpu").fit(X, (X[:, 0] > 0).astype(int))
        heavy = ("sympy", "mpmath", "torch._dynamo", "torch.fx", "torch._functorch")
        new = sorted(m for m in set(sys.modules) - before if m.startswith(heavy))
        assert not new, new[:20]
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=ENV
    )
    assert result.returncode == 0, result.stderr[-2000:]


# -- GradientSubsetEstimator ---------------------------------------------------------------


def _gradient_case(**params):
    rng = np.random.RandomState(0)
    X = rng.randn(24, 3).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    tasks = np.repeat(np.arange(3), 8)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    est = GradientSubsetEstimator(model, projection_dim=4, device="cpu", random_state=0)
    est.set_params(**params)

    def fit_it(e):
        return e.fit(X, y, tasks=tasks, X_target=X[:6], y_target=y[:6])

    return est, fit_it


def test_gradient_estimator_masked_interrupt_and_not_fitted():
    est, fit_it = _gradient_case()
    with pytest.raises(NotFittedError):
        est.estimate(np.ones((1, 3)))
    rng = np.random.RandomState(0)
    X = np.ma.masked_array(rng.randn(24, 3), mask=np.eye(24, 3, dtype=bool))
    with pytest.raises(ValueError, match="X is a masked array with 3 masked entries"):
        est.fit(X, np.zeros(24, int), tasks=np.repeat(np.arange(3), 8), X_target=X, y_target=0)
    tracer = _InterruptAfterValidation(est)
    sys.settrace(tracer)
    try:
        with pytest.raises(KeyboardInterrupt):
            fit_it(est)
    finally:
        sys.settrace(None)
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    assert np.isfinite(fit_it(est).estimate(np.ones((2, 3)))).all()
