"""Input and lifecycle guards shared by every estimator's ``fit``.

:func:`fit_guard` wraps an estimator's ``fit`` (one decorator line) and makes four promises
that scikit-learn's own validation does not:

* **bools are not integers**: ``max_iter=True`` is rejected although ``bool`` subclasses
  ``int`` and so passes ``Interval(Integral, ...)``;
* **masks are never ignored**: a masked array with masked entries is rejected (``np.asarray``
  would silently drop the mask and train on the hidden values);
* **non-numeric columns are named**: a string or categorical column in a feature matrix
  raises an error that names the array and the column, and groups of mixed types an error
  that names ``groups``;
* **a failed fit leaves nothing behind**: when ``fit`` raises anything, including a
  :class:`KeyboardInterrupt`, the estimator's attributes are restored to what they were
  before the call, so an interrupted first fit leaves an unfitted estimator
  (``check_is_fitted`` and ``predict`` agree) and an interrupted refit leaves the previous
  fit intact;

and, after a fit that returns, warns (:class:`DivergenceWarning`) when the recorded training
loss ended far above where it started, the signature of a learning rate that is too large
yet small enough to keep every number finite.

:func:`check_allocation` refuses a size parameter whose array would not fit in memory before
anything is allocated.
"""

import functools
import inspect
import os
import warnings
from numbers import Integral, Real

import numpy as np
import torch

# torch loads some modules lazily at the first autograd call (torch.fx's symbolic shapes,
# and through them sympy) or the first functorch transform (torch._dynamo). A
# KeyboardInterrupt landing inside such an import leaves a half-initialised module in
# sys.modules ("module 'sympy' has no attribute 'printing'") and breaks every later fit in
# the process, so they are imported here, with the package, and no fit imports them. (An
# interrupt during ``import sktaskmet`` itself can still leave torch half-imported, as it
# can during ``import torch``: restart the interpreter then.)
import torch._dynamo
import torch.fx.experimental.symbolic_shapes
from sklearn.base import is_regressor
from sklearn.utils._param_validation import Interval

from .exceptions import DivergenceWarning

__all__ = ["check_allocation", "fit_guard", "fitted_params"]

# A final training loss this many times the first (and above it by this much in absolute
# terms) is reported as divergence.
DIVERGENCE_RATIO = 1e3
DIVERGENCE_MARGIN = 1.0
# Rows of the training data predicted for the divergence check (bounds its cost).
_DIVERGENCE_ROWS = 2000


# -- parameters ------------------------------------------------------------------------


def _accepts_bool(constraints):
    for constraint in constraints:
        if constraint in ("boolean", "no_validation", bool, object, "array-like"):
            return True
        if isinstance(constraint, type) and issubclass(bool, constraint):
            if constraint not in (int, Integral, Real, float):
                return True
        options = getattr(constraint, "options", None)
        if options is not None and any(isinstance(o, bool | np.bool_) for o in options):
            return True
    return False


def _numeric_intervals(constraints):
    return [c for c in constraints if isinstance(c, Interval)]


def _describe_interval(interval):
    kind = "an int" if interval.type is Integral else "a float"
    left = "-inf" if interval.left is None else interval.left
    right = "inf" if interval.right is None else interval.right
    opening = "[" if interval.closed in ("left", "both") else "("
    closing = "]" if interval.closed in ("right", "both") else ")"
    return f"{kind} in {opening}{left}, {right}{closing}"


def check_no_bool_numbers(estimator):
    """Reject ``True``/``False`` given to a parameter constrained to numbers.

    ``bool`` subclasses ``int``, so scikit-learn's ``Interval(Integral, ...)`` accepts
    ``max_iter=True`` as 1. Parameters whose constraints also allow a boolean are left alone.
    """
    constraints = getattr(type(estimator), "_parameter_constraints", {})
    for name, value in estimator.get_params(deep=False).items():
        if not isinstance(value, bool | np.bool_):
            continue
        allowed = constraints.get(name)
        if allowed is None or allowed == "no_validation" or _accepts_bool(allowed):
            continue
        intervals = _numeric_intervals(allowed)
        if intervals:
            expected = " or ".join(_describe_interval(iv) for iv in intervals)
            raise TypeError(
                f"The {name!r} parameter of {type(estimator).__name__} must be {expected}; "
                f"got {value!r}, a bool (bools are not accepted as numbers here)."
            )


# -- arrays ----------------------------------------------------------------------------


def _check_not_masked(name, value):
    if np.ma.isMaskedArray(value) and np.ma.is_masked(value):
        n_masked = int(np.ma.count_masked(value))
        raise ValueError(
            f"{name} is a masked array with {n_masked} masked entr"
            f"{'y' if n_masked == 1 else 'ies'}; masks are not honoured by sktaskmet "
            "estimators and would be silently ignored. Drop or impute the masked entries "
            "(e.g. with sklearn.impute.SimpleImputer on arr.filled(np.nan)) and pass a plain "
            "array."
        )


def _first_non_numeric(column):
    for item in column:
        if isinstance(item, str | bytes):
            try:
                float(item)
            except ValueError:
                return item
    return None


def _check_numeric_columns(name, value):
    """Name the first string or categorical column of a feature matrix."""
    if hasattr(value, "dtypes") and hasattr(value, "columns"):  # a pandas DataFrame
        for column, dtype in zip(value.columns, value.dtypes, strict=True):
            if str(dtype) == "category":
                raise ValueError(
                    f"{name} column {column!r} is categorical; encode it as numbers first "
                    "(e.g. sklearn.preprocessing.OneHotEncoder or OrdinalEncoder)."
                )
            if dtype.kind == "O" or str(dtype) in ("string", "str"):
                bad = _first_non_numeric(value[column].to_numpy())
                if bad is not None:
                    raise ValueError(
                        f"{name} column {column!r} holds non-numeric values such as {bad!r}; "
                        "encode it as numbers first (e.g. sklearn.preprocessing."
                        "OneHotEncoder or OrdinalEncoder)."
                    )
        return
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "OUS" or value.ndim != 2:
        return
    for j in range(value.shape[1]):
        bad = _first_non_numeric(value[:, j])
        if bad is not None:
            raise ValueError(
                f"{name} column {j} holds non-numeric values such as {bad!r}; encode it as "
                "numbers first (e.g. sklearn.preprocessing.OneHotEncoder or OrdinalEncoder)."
            )


def _check_groups(value):
    if value is None:
        return
    groups = np.asarray(value)
    if groups.dtype == object:
        kinds = {type(g).__name__ for g in groups.ravel()}
        try:
            np.unique(groups)
        except TypeError as exc:
            raise TypeError(
                "groups must hold labels of one comparable type (all ints or all strings); "
                f"got a mix of {sorted(kinds)}."
            ) from exc


def check_fit_arguments(fit, args, kwargs):
    """Masks, non-numeric feature columns and mixed-type groups among ``fit``'s arguments."""
    bound = inspect.signature(fit).bind_partial(None, *args, **kwargs).arguments
    for position, (name, value) in enumerate(bound.items()):
        if position == 0 or name == "fit_params":
            continue
        _check_not_masked(name, value)
        if name == "groups":
            _check_groups(value)
        elif position == 1 or name.startswith("X"):
            _check_numeric_columns(name, value)


# -- after fit -------------------------------------------------------------------------


def _recorded_losses(estimator):
    """The training loss curve a fitted estimator recorded, as floats, or None."""
    curve = getattr(estimator, "loss_curve_", None)
    if curve is None:
        history = getattr(estimator, "history_", None)
        if isinstance(history, dict):
            for key in ("train_task_loss", "loss"):
                if key in history:
                    curve = history[key]
                    break
    if curve is None:
        return None
    try:
        curve = np.asarray(curve, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return None
    curve = curve[np.isfinite(curve)]
    return curve if curve.size >= 2 else None


def _training_mse_ratio(estimator, X, y):
    """Training MSE of a fitted regressor over that of the constant mean prediction."""
    if not is_regressor(estimator) or X is None or y is None:
        return None
    try:
        X, y = X[:_DIVERGENCE_ROWS], np.asarray(y, dtype=np.float64)[:_DIVERGENCE_ROWS]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = np.asarray(estimator.predict(X), dtype=np.float64).reshape(y.shape)
    except Exception:  # a predict that cannot run here is not this check's business
        return None
    with np.errstate(all="ignore"):
        baseline = float(np.mean((y - y.mean(axis=0)) ** 2))
        ratio = float(np.mean((pred - y) ** 2)) / max(baseline, np.finfo(np.float64).tiny)
    return ratio if np.isfinite(ratio) else None


def warn_if_diverged(estimator, X=None, y=None):
    """Warn when training ended far worse than it started, or than a constant prediction.

    Two signs of a learning rate too large to train yet small enough to keep every number
    finite: the recorded training loss ends :data:`DIVERGENCE_RATIO` times above its first
    value, or a regressor's training MSE is that many times the MSE of predicting the mean.
    """
    curve = _recorded_losses(estimator)
    name = type(estimator).__name__
    message = None
    if curve is not None:
        first, last = abs(curve[0]), curve[-1]
        if last > DIVERGENCE_RATIO * max(first, 1e-12) and last - first > DIVERGENCE_MARGIN:
            message = f"the training loss grew from {curve[0]:.4g} to {last:.4g} during fit"
    if message is None:
        ratio = _training_mse_ratio(estimator, X, y)
        if ratio is not None and ratio > DIVERGENCE_RATIO:
            message = f"its training MSE is {ratio:.3g} times that of predicting the mean of y"
    if message is not None:
        warnings.warn(
            f"{name}: {message}; training diverged and the fitted model is unreliable. "
            "Lower the learning rate(s).",
            DivergenceWarning,
            stacklevel=3,
        )


def fit_guard(fit):
    """Decorate an estimator's ``fit``: input guards, no half-fitted state, divergence check.

    See the module docstring for the promises. On any exception (``BaseException``, so
    ``KeyboardInterrupt`` too) the instance's ``__dict__`` is restored to its content before
    the call and the exception propagates unchanged.
    """

    @functools.wraps(fit)
    def guarded_fit(self, *args, **kwargs):
        check_no_bool_numbers(self)
        check_fit_arguments(fit, args, kwargs)
        before = dict(self.__dict__)
        self.__dict__.pop("_fit_params", None)  # fit itself sees the current parameters
        try:
            result = fit(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise
        self._fit_params = self.get_params(deep=False)
        data = inspect.signature(fit).bind_partial(None, *args, **kwargs).arguments
        X, y = (list(data.values())[1:3] + [None, None])[:2]
        warn_if_diverged(self, X, y)
        return result

    return guarded_fit


def _same(a, b):
    if a is b:
        return True
    try:
        return bool(np.array_equal(a, b)) if np.ndim(a) or np.ndim(b) else bool(a == b)
    except (TypeError, ValueError):
        return False


def fitted_params(*names):
    """Decorate a method that rebuilds the fitted model so it uses fit-time ``names``.

    Changing an architecture parameter (``hidden_layer_sizes``, ``predictor``, ...) with
    ``set_params`` after ``fit`` takes effect at the next ``fit``, as in scikit-learn: until
    then the decorated method (``predict``, ``transform``) sees the values the fitted state
    was built with, recorded by :func:`fit_guard`, instead of failing to load that state.
    """

    def decorate(method):
        @functools.wraps(method)
        def with_fitted_params(self, *args, **kwargs):
            fitted = getattr(self, "_fit_params", None) or {}
            current = {name: getattr(self, name) for name in names if name in fitted}
            changed = {n: fitted[n] for n, v in current.items() if not _same(v, fitted[n])}
            if not changed:
                return method(self, *args, **kwargs)
            self.__dict__.update(changed)
            try:
                return method(self, *args, **kwargs)
            finally:
                self.__dict__.update({name: current[name] for name in changed})

        return with_fitted_params

    return decorate


def check_module_output(module, n_features, n_outputs, name):
    """Check that a user-built torch module maps (n, n_features) to (n, n_outputs).

    The probe runs in eval mode on two zero rows without gradients, so it changes no state
    (batch-norm statistics, dropout).
    """
    dtype = next((p.dtype for p in module.parameters()), torch.get_default_dtype())
    training = module.training
    try:
        module.eval()
        with torch.no_grad():
            out = module(torch.zeros(2, n_features, dtype=dtype))
    except Exception as exc:
        raise ValueError(
            f"The module built by {name} fails on an input of shape (2, {n_features}) "
            f"(n_samples, n_features): {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        module.train(training)
    shape = tuple(getattr(out, "shape", ()))
    if shape != (2, n_outputs):
        raise ValueError(
            f"The module built by {name} must map an input of shape (n_samples, {n_features}) "
            f"to (n_samples, {n_outputs}) (n_outputs = number of target columns); on 2 samples "
            f"it returned shape {shape}."
        )


# -- sizes -----------------------------------------------------------------------------


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: assume a large machine
        return 1 << 40


def _format_bytes(n_bytes):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n_bytes < 1024 or unit == "PiB":
            return f"{n_bytes:.3g} {unit}"
        n_bytes /= 1024


def check_allocation(name, shape, itemsize=8, limit=None):
    """Raise before allocating an array of ``shape`` that would exceed the machine's memory.

    Parameters
    ----------
    name : str
        The parameter (or parameters) that set the size, named in the error.
    shape : tuple of int
        Shape of the array the parameter would make the estimator allocate.
    itemsize : int, default=8
        Bytes per element.
    limit : int, default=None
        Largest allowed size in bytes; None means the machine's physical memory.

    Raises
    ------
    ValueError
        When ``prod(shape) * itemsize`` exceeds ``limit``; the message gives the size needed.
    """
    n_bytes = float(np.prod([float(s) for s in shape])) * itemsize
    limit = _physical_memory() if limit is None else limit
    if n_bytes > limit:
        raise ValueError(
            f"{name} is too large: it would allocate an array of shape {tuple(shape)}, "
            f"{_format_bytes(n_bytes)}, more than the {_format_bytes(limit)} of memory "
            "available. Lower it."
        )
