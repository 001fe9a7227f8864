"""What every surrogate of subset performance does once it can predict: attribution,
pairwise interactions and subset selection.

A surrogate is a regressor g on indicator vectors s in {0, 1}^n (or task weights in
[0, 1]^n). Subclasses implement ``fit``, ``_predict_values`` (batched predictions on
validated subsets) and ``_gradient_values`` (dg/ds); this base turns them into the task
attribution, interaction and selection methods shared by all surrogates.
"""

import itertools
import math
import warnings
from functools import partial
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.validation import check_is_fitted, validate_data

from ._distance import nearest_distance, training_spread, warn_if_far
from ._indicators import check_subset_weights

__all__ = ["BaseSurrogate"]

# `select` enumerates every candidate subset when there are at most this many of them
# (2**16: all subsets of 16 tasks), and searches greedily otherwise.
_MAX_EXHAUSTIVE = 2**16

# `select(method="exhaustive")` refuses more candidates than this (all subsets of 24
# tasks): at about a microsecond per prediction, more would run for hours.
MAX_EXHAUSTIVE_CANDIDATES = 2**24


class BaseSurrogate(RegressorMixin, BaseEstimator):
    """Shared methods of the surrogates of subset performance (not for direct use)."""

    # ------------------------------------------------------------------ validation
    def _validate_fit_data(self, S, y):
        S, y = validate_data(
            self,
            S,
            y,
            reset=True,
            dtype=[np.float64, np.float32],
            multi_output=True,
            y_numeric=True,
            ensure_min_samples=2,
        )
        check_subset_weights(S, "S")
        y = np.asarray(y, dtype=S.dtype)
        self._single_output = y.ndim == 1
        y = y.reshape(len(y), -1)
        self._n_targets = y.shape[1]
        self._fit_dtype = S.dtype
        # Kept to tell when a query is far from every training subset (ExtrapolationWarning).
        self._S_fit = np.array(S, dtype=np.float64)
        self.training_spread_ = training_spread(self._S_fit)
        return S, y

    def _validate_subsets(self, S, name="S"):
        check_is_fitted(self)
        S = validate_data(self, S, reset=False, dtype=[np.float64, np.float32])
        check_subset_weights(S, name)
        return S

    def _format_output(self, values):
        """(n, n_targets) -> (n,) for a model fitted on a 1-D target."""
        return values[..., 0] if self._single_output else values

    def _check_base(self, base):
        check_is_fitted(self)
        dtype = self._fit_dtype
        if base is None:
            return np.ones(self.n_features_in_, dtype=dtype)
        base = np.asarray(base, dtype=dtype)
        if base.shape != (self.n_features_in_,):
            raise ValueError(
                f"base must be a 1-D array of length n_tasks={self.n_features_in_}; got shape "
                f"{base.shape}."
            )
        if not np.all(np.isfinite(base)):
            raise ValueError("base must be finite.")
        check_subset_weights(base, "base")
        return base

    # ------------------------------------------------------------------ prediction
    def predict(self, S):
        """Predicted performance of each subset.

        Parameters
        ----------
        S : array-like of shape (n_subsets, n_tasks)
            Indicator vectors (0/1) or task weights in [0, 1].

        Returns
        -------
        y_pred : ndarray of shape (n_subsets,) or (n_subsets, n_targets)
        """
        S = self._validate_subsets(S)
        return self._format_output(self._predict_values(S))

    def distance_to_training(self, S):
        """Squared distance of each subset to the nearest training subset.

        On 0/1 indicators this is the Hamming distance: the number of tasks in which the
        subset differs from the closest subset the surrogate was fitted on. Compare it with
        ``training_spread_``, the median distance between neighbouring training subsets:
        :meth:`attribution`, :meth:`interactions` and :meth:`select` raise an
        :class:`~sktaskmet.surrogate.ExtrapolationWarning` when their query is more than
        twice that far.

        Parameters
        ----------
        S : array-like of shape (n_subsets, n_tasks)

        Returns
        -------
        distance : ndarray of shape (n_subsets,)
        """
        S = self._validate_subsets(S)
        return nearest_distance(S, self._S_fit)

    def _warn_if_far(self, subset, what):
        warn_if_far(subset, self._S_fit, self.training_spread_, what, stacklevel=5)

    # ------------------------------------------------------------------ attribution
    @validate_params(
        {"base": ["array-like", None], "method": [StrOptions({"loo", "gradient"})]},
        prefer_skip_nested_validation=True,
    )
    def attribution(self, base=None, method="loo"):
        """Score of every task: how much the surrogate's prediction depends on it.

        Parameters
        ----------
        base : array-like of shape (n_tasks,), default=None
            The subset (or task weights) around which tasks are scored; None means the
            full set :math:`\\mathbf 1`.
        method : {"loo", "gradient"}, default="loo"
            ``"loo"``: the predicted leave-one-out effect
            :math:`A_k = g(b) - g(b^{(-k)})`, where :math:`b^{(-k)}` is ``base`` with
            task ``k`` set to 0 (so :math:`A_k = 0` for a task absent from ``base``).
            Around the full set this is the surrogate's estimate of the leave-one-out
            ground truth :math:`F(\\mathbf 1) - F(\\mathbf 1 - e_k)`.
            ``"gradient"``: the partial derivative :math:`\\partial g / \\partial s_k`
            at ``base``, in closed form (the coefficient itself for a linear surrogate).

        Returns
        -------
        scores : ndarray of shape (n_tasks,) or (n_tasks, n_targets)
            Positive when task ``k`` raises the predicted value (which is good when
            ``greater_is_better`` is True, e.g. accuracy, and bad for a loss).
        """
        base = self._check_base(base)
        _warn_untested_tasks(getattr(self, "X_fit_", None))
        self._warn_if_far(base, "attribution")
        if method == "gradient":
            return self._format_output(self._gradient_values(base[None])[0])
        removed = np.repeat(base[None], self.n_features_in_ + 1, axis=0)
        tasks = np.arange(self.n_features_in_)
        removed[tasks + 1, tasks] = 0.0
        values = self._predict_values(removed)
        return self._format_output(values[0] - values[1:])

    @validate_params({"base": ["array-like", None]}, prefer_skip_nested_validation=True)
    def interactions(self, base=None):
        """Pairwise interaction of tasks: second differences of the surrogate.

        .. math::

            I_{ij} = g(b) - g(b^{(-i)}) - g(b^{(-j)}) + g(b^{(-i,-j)}),

        where :math:`b^{(-i)}` is ``base`` with task ``i`` set to 0. :math:`I_{ij} > 0`
        means synergy (the two tasks together add more than the sum of their separate
        effects), :math:`I_{ij} < 0` antagonism or redundancy. The diagonal is 0. All
        :math:`1 + n + n(n-1)/2` subsets are predicted in one batch.

        Parameters
        ----------
        base : array-like of shape (n_tasks,), default=None
            Subset (or task weights) around which interactions are measured; None means
            the full set.

        Returns
        -------
        interactions : ndarray of shape (n_tasks, n_tasks) or (n_tasks, n_tasks, n_targets)
            Symmetric.
        """
        base = self._check_base(base)
        self._warn_if_far(base, "interactions")
        n = self.n_features_in_
        rows_i, rows_j = np.triu_indices(n, k=1)
        batch = np.repeat(base[None], 1 + n + len(rows_i), axis=0)
        batch[1 + np.arange(n), np.arange(n)] = 0.0
        pair_rows = 1 + n + np.arange(len(rows_i))
        batch[pair_rows, rows_i] = 0.0
        batch[pair_rows, rows_j] = 0.0
        values = self._predict_values(batch)
        full, single, pair = values[0], values[1 : 1 + n], values[1 + n :]
        result = np.zeros((n, n, values.shape[1]), dtype=values.dtype)
        upper = full - single[rows_i] - single[rows_j] + pair
        result[rows_i, rows_j] = upper
        result[rows_j, rows_i] = upper
        return self._format_output(result)

    # ------------------------------------------------------------------ selection
    @validate_params(
        {
            "k": [Interval(Integral, 0, None, closed="left"), None],
            "method": [StrOptions({"auto", "exhaustive", "greedy"})],
            "aggregate": [StrOptions({"mean", "sum"}), "array-like", callable, None],
            "greater_is_better": ["boolean", None],
        },
        prefer_skip_nested_validation=True,
    )
    def select(self, k=None, method="auto", *, aggregate=None, greater_is_better=None):
        """The subset with the best predicted value.

        "Best" is the largest prediction when larger is better (accuracy, reward) and the
        smallest when smaller is better (a loss): say which with ``greater_is_better``.

        Parameters
        ----------
        k : int, default=None
            Number of tasks in the subset; None allows any size (including the empty and
            the full set).
        method : {"auto", "exhaustive", "greedy"}, default="auto"
            ``"exhaustive"`` predicts every candidate subset (in batches) and returns the
            best one: exact for the surrogate, :math:`2^n` (or :math:`\\binom{n}{k}`)
            predictions, refused beyond 2**24 candidates. ``"greedy"`` starts from the
            empty set and adds, one at a time, the task that improves the prediction most
            (all additions are predicted in one batch per step), until ``k`` tasks are
            chosen or, when ``k`` is None, until no addition improves the prediction.
            ``"auto"`` is exhaustive when there are at most 2**16 candidates, greedy
            otherwise.
        aggregate : {"mean", "sum"}, array-like of shape (n_targets,), callable or None, \
                default=None
            How the targets of a surrogate fitted on a multi-output ``y`` (e.g. the loss
            on every test example of the target task) combine into the one value to
            optimise: their mean, their sum, a weighted sum with these weights, or
            ``aggregate(values)`` mapping predictions of shape (n_candidates, n_targets)
            to shape (n_candidates,). Required for a multi-output surrogate; a
            single-output one takes None.
        greater_is_better : bool, default=None
            True to maximise the (aggregated) prediction, False to minimise it; None uses
            the estimator's ``greater_is_better`` parameter (True by default, which is
            wrong for a loss).

        Returns
        -------
        subset : ndarray of shape (n_tasks,)
            0/1 indicator vector of the selected tasks.

        Warns
        -----
        ExtrapolationWarning
            When the selected subset is far from every training subset (see
            :meth:`distance_to_training`): its predicted value is extrapolation.
        """
        check_is_fitted(self)
        score = self._selection_objective(aggregate, greater_is_better)
        n = self.n_features_in_
        if k is not None and k > n:
            raise ValueError(f"k={k} exceeds the number of tasks n_tasks={n}.")
        n_candidates = 2**n if k is None else math.comb(n, k)
        if method == "exhaustive" and n_candidates > MAX_EXHAUSTIVE_CANDIDATES:
            raise ValueError(
                f"select(method='exhaustive') would predict {n_candidates:.3g} candidate "
                f"subsets of {n} tasks, more than the limit of 2**24 = "
                f"{MAX_EXHAUSTIVE_CANDIDATES}; use method='greedy' (or 'auto')."
            )
        if method == "exhaustive" or (method == "auto" and n_candidates <= _MAX_EXHAUSTIVE):
            subset = self._select_exhaustive(k, score)
        else:
            subset = self._select_greedy(k, score)
        self._warn_if_far(subset, "select")
        return subset

    def _selection_objective(self, aggregate, greater_is_better):
        """Function of predicted values (n, n_targets) -> (n,), larger meaning better."""
        t = self._n_targets
        if aggregate is None:
            if not self._single_output:
                raise ValueError(
                    f"this surrogate was fitted on {t} targets: give select an aggregate "
                    "('mean', 'sum', weights of shape (n_targets,) or a callable)."
                )
            combine = _first_column
        elif isinstance(aggregate, str):
            combine = _mean_columns if aggregate == "mean" else _sum_columns
        elif callable(aggregate):
            combine = _checked_callable(aggregate)
        else:
            weights = np.asarray(aggregate, dtype=np.float64)
            if weights.shape != (t,) or not np.all(np.isfinite(weights)):
                raise ValueError(
                    f"aggregate weights must be a finite array of shape (n_targets,) = ({t},); "
                    f"got shape {weights.shape}."
                )
            combine = partial(_weigh_columns, weights=weights)
        if greater_is_better is None:
            greater_is_better = self.greater_is_better
        sign = 1.0 if greater_is_better else -1.0
        return lambda values: sign * combine(values)

    def _select_exhaustive(self, k, score):
        n = self.n_features_in_
        best_value, best_subset = -np.inf, None
        for chunk in _enumerate_subsets(n, k, self._fit_dtype):
            values = score(self._predict_values(chunk))
            i = int(np.argmax(values))
            if values[i] > best_value:
                best_value, best_subset = values[i], chunk[i].copy()
        return best_subset

    def _select_greedy(self, k, score):
        n = self.n_features_in_
        current = np.zeros(n, dtype=self._fit_dtype)
        current_value = score(self._predict_values(current[None]))[0]
        target = n if k is None else k
        while current.sum() < target:
            free = np.flatnonzero(current == 0)
            candidates = np.repeat(current[None], len(free), axis=0)
            candidates[np.arange(len(free)), free] = 1.0
            values = score(self._predict_values(candidates))
            i = int(np.argmax(values))
            if k is None and values[i] <= current_value:
                break
            current, current_value = candidates[i], values[i]
        return current

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.input_tags.positive_only = True
        return tags


def _warn_untested_tasks(S_fit):
    """Warn when a task took one value in every fitted subset: its score is extrapolated."""
    if S_fit is None:
        return
    constant = np.flatnonzero(np.ptp(S_fit, axis=0) == 0)
    if constant.size:
        warnings.warn(
            f"task(s) {constant.tolist()} take a single value in every subset the surrogate "
            "was fitted on, so their attribution is the surrogate's extrapolation, not an "
            "estimate from data; sample subsets that include and exclude them.",
            UserWarning,
            stacklevel=3,
        )


def _first_column(values):
    return values[:, 0]


def _mean_columns(values):
    return values.mean(axis=1)


def _sum_columns(values):
    return values.sum(axis=1)


def _weigh_columns(values, weights):
    return values @ weights


def _checked_callable(aggregate):
    """Wrap a user aggregate so that a wrong output shape is a clear error."""

    def combine(values):
        out = np.asarray(aggregate(values), dtype=np.float64)
        if out.shape != (values.shape[0],):
            raise ValueError(
                f"aggregate must map predictions of shape {values.shape} to shape "
                f"({values.shape[0]},); it returned shape {out.shape}."
            )
        if not np.all(np.isfinite(out)):
            raise ValueError("aggregate returned non-finite values.")
        return out

    return combine


def _enumerate_subsets(n, k, dtype, chunk_size=2**14):
    """Yield every subset of n tasks (of size k when k is given) as 0/1 rows, in chunks."""
    if k is None:
        bits = np.arange(n)
        for start in range(0, 2**n, chunk_size):
            codes = np.arange(start, min(start + chunk_size, 2**n))
            yield ((codes[:, None] >> bits) & 1).astype(dtype)
        return
    combos = itertools.combinations(range(n), k)
    while True:
        block = list(itertools.islice(combos, chunk_size))
        if not block:
            return
        chunk = np.zeros((len(block), n), dtype=dtype)
        if k:
            chunk[np.repeat(np.arange(len(block)), k), np.asarray(block).ravel()] = 1.0
        yield chunk
