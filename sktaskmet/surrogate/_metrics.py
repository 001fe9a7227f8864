"""Metrics of the task-attribution literature, as functions and as scikit-learn scorers.

Surrogates are judged in two ways. On held-out subsets: how well the predicted performance
of the models trained on them ranks (mean Spearman across target examples) and how large the
error is relative to the spread of the targets (normalised error), the two figures Zhang,
Duan and Zhang (2026) report. Against leave-one-out retraining: how well the predicted task
attributions correlate with :math:`F(\\mathbf 1) - F(\\mathbf 1 - e_k)`, the paper's headline
comparison. ``score`` of a surrogate stays scikit-learn's :math:`R^2`; these are the
alternatives for ``scoring=`` in :func:`~sklearn.model_selection.cross_val_score` and
:class:`~sklearn.model_selection.GridSearchCV`.
"""

from numbers import Real

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import make_scorer
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.validation import check_array, check_consistent_length

__all__ = [
    "mean_spearman_score",
    "normalized_error",
    "loo_correlation",
    "mean_spearman_scorer",
    "normalized_error_scorer",
    "LOOCorrelationScorer",
]


def _check_pair(y_true, y_pred):
    """Both arrays as float (n_subsets, n_targets) of one shape, finite, >= 2 subsets."""
    y_true = check_array(y_true, ensure_2d=False, dtype=np.float64, input_name="y_true")
    y_pred = check_array(y_pred, ensure_2d=False, dtype=np.float64, input_name="y_pred")
    check_consistent_length(y_true, y_pred)
    if y_true.ndim > 2 or y_true.shape != y_pred.shape:
        raise ValueError(
            "y_true and y_pred must have the same shape (n_subsets,) or (n_subsets, "
            f"n_targets); got {y_true.shape} and {y_pred.shape}."
        )
    if len(y_true) < 2:
        raise ValueError(f"at least 2 subsets are needed to compare rankings; got {len(y_true)}.")
    return y_true.reshape(len(y_true), -1), y_pred.reshape(len(y_pred), -1)


def _kept_targets(y_true, min_variance):
    """Targets whose sample variance (ddof=1) is positive and at least ``min_variance``."""
    variance = y_true.var(axis=0, ddof=1)
    keep = (variance > 0) & (variance >= min_variance)
    if not keep.any():
        raise ValueError(
            f"no target has a sample variance >= min_variance={min_variance} (and > 0) over "
            "these subsets; lower min_variance or score on more subsets."
        )
    return keep, variance


def _column_correlation(a, b):
    """Pearson correlation of matching columns; 0 where a column is constant."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    norm = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    corr = np.zeros(a.shape[1])
    ok = norm > 0
    corr[ok] = (a * b).sum(axis=0)[ok] / norm[ok]
    return corr


_METRIC_PARAMS = {
    "y_true": ["array-like"],
    "y_pred": ["array-like"],
    "min_variance": [Interval(Real, 0, None, closed="left")],
}


@validate_params(_METRIC_PARAMS, prefer_skip_nested_validation=True)
def mean_spearman_score(y_true, y_pred, *, min_variance=0.0):
    """Mean over targets of the Spearman correlation between true and predicted values.

    For every target :math:`j` (a column: one test example of the target task),

    .. math::

        \\rho_j = \\operatorname{corr}\\big(\\operatorname{rank}(y_{\\cdot j}),
        \\operatorname{rank}(\\hat y_{\\cdot j})\\big)

    over the subsets (rows), ties ranked by their average as in
    :func:`scipy.stats.spearmanr`; the score is the mean of :math:`\\rho_j` over the targets
    kept. This is the held-out figure of Zhang, Duan and Zhang (2026): fit the surrogate on
    some subsets, predict the others, average the per-example Spearman. Higher is better.

    Parameters
    ----------
    y_true : array-like of shape (n_subsets,) or (n_subsets, n_targets)
        Measured performance; at least 2 subsets.
    y_pred : array-like of the same shape
        Predicted performance.
    min_variance : float >= 0, default=0.0
        Targets whose sample variance (``ddof=1``) over the subsets is below this are left
        out, as are constant targets (their ranking is undefined). The authors' in-context
        learning protocol uses 0.1.

    Returns
    -------
    score : float
        In [-1, 1]. A constant prediction of a target counts as correlation 0 (it ranks
        nothing), not NaN.

    Examples
    --------
    >>> from sktaskmet.surrogate import mean_spearman_score
    >>> y_true = [[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]
    >>> y_pred = [[0.1, 0.2], [0.2, 0.3], [0.3, 0.1]]
    >>> float(mean_spearman_score(y_true, y_pred))  # (1 + 0.5) / 2
    0.75
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    keep, _ = _kept_targets(y_true, min_variance)
    ranks_true = rankdata(y_true[:, keep], axis=0)
    ranks_pred = rankdata(y_pred[:, keep], axis=0)
    return float(_column_correlation(ranks_true, ranks_pred).mean())


@validate_params(_METRIC_PARAMS, prefer_skip_nested_validation=True)
def normalized_error(y_true, y_pred, *, min_variance=0.0):
    """Mean over targets of the squared error relative to the target's variance.

    .. math::

        E = \\frac{1}{|J|} \\sum_{j \\in J}
        \\frac{\\tfrac1m \\sum_i (y_{ij} - \\hat y_{ij})^2}{\\operatorname{Var}(y_{\\cdot j})},

    with the sample variance (``ddof=1``, as the authors' code computes it) over the
    :math:`m` subsets and :math:`J` the targets kept. 0 is a perfect prediction and a
    prediction by the held-out mean scores about :math:`(m-1)/m`; lower is better (use
    :data:`normalized_error_scorer`, which negates it, for model selection).

    Parameters
    ----------
    y_true : array-like of shape (n_subsets,) or (n_subsets, n_targets)
        Measured performance; at least 2 subsets.
    y_pred : array-like of the same shape
        Predicted performance.
    min_variance : float >= 0, default=0.0
        Targets whose sample variance is below this (or zero) are left out: dividing by a
        vanishing variance would let one flat example dominate the mean. The authors'
        in-context learning protocol uses 0.1.

    Returns
    -------
    error : float

    Examples
    --------
    >>> from sktaskmet.surrogate import normalized_error
    >>> float(normalized_error([0.0, 1.0, 2.0], [0.0, 1.0, 3.0]))  # (1/3) / 1
    0.3333333333333333
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    keep, variance = _kept_targets(y_true, min_variance)
    mse = ((y_true - y_pred) ** 2).mean(axis=0)
    return float((mse[keep] / variance[keep]).mean())


@validate_params(
    {
        "scores": ["array-like"],
        "loo_true": ["array-like"],
        "method": [StrOptions({"pearson", "spearman"})],
    },
    prefer_skip_nested_validation=True,
)
def loo_correlation(scores, loo_true, *, method="pearson"):
    """Correlation of task attributions with leave-one-out retraining, averaged over targets.

    The paper's headline comparison: for every task :math:`k`, the attribution
    :math:`A_k` (e.g. ``surrogate.attribution()``, the predicted
    :math:`g(\\mathbf 1) - g(\\mathbf 1 - e_k)`) against the measured
    :math:`F(\\mathbf 1) - F(\\mathbf 1 - e_k)` of models retrained without task
    :math:`k`; the correlation is over tasks, per target, then averaged over targets.

    Parameters
    ----------
    scores : array-like of shape (n_tasks,) or (n_tasks, n_targets)
        Attributions, task-first as every attribution of sktaskmet returns them.
    loo_true : array-like of the same shape
        Measured leave-one-out effects.
    method : {"pearson", "spearman"}, default="pearson"
        Pearson correlation of the values or of their ranks.

    Returns
    -------
    correlation : float
        In [-1, 1]; a constant column (of either array) counts as 0.

    Examples
    --------
    >>> from sktaskmet.surrogate import loo_correlation
    >>> float(loo_correlation([0.1, 0.5, 0.2], [1.0, 3.0, 2.0], method="spearman"))
    1.0
    """
    scores, loo_true = _check_pair(scores, loo_true)
    if not (np.isfinite(scores).all() and np.isfinite(loo_true).all()):
        raise ValueError("scores and loo_true must be finite.")
    if method == "spearman":
        scores, loo_true = rankdata(scores, axis=0), rankdata(loo_true, axis=0)
    return float(_column_correlation(scores, loo_true).mean())


mean_spearman_scorer = make_scorer(mean_spearman_score)
mean_spearman_scorer.__doc__ = """Scorer of :func:`mean_spearman_score` (higher is better)."""

normalized_error_scorer = make_scorer(normalized_error, greater_is_better=False)
normalized_error_scorer.__doc__ = (
    """Scorer of :func:`normalized_error`, negated so that higher is better."""
)


class LOOCorrelationScorer:
    """Scorer: correlation of a fitted surrogate's attributions with leave-one-out truth.

    Called as ``scorer(estimator, S, y)`` it ignores the held-out ``S`` and ``y`` (the
    leave-one-out truth does not depend on the split) and returns
    ``loo_correlation(estimator.attribution(base, method=attribution), loo_true)``, so
    ``GridSearchCV(KernelSurrogate(), grid, scoring=LOOCorrelationScorer(loo))`` picks the
    hyper-parameters whose attributions, each fitted on a training fold, agree best with
    retraining. Measuring ``loo_true`` costs one retraining per task; use it to compare
    surrogates or to validate a protocol, not as a routine model-selection criterion.

    Parameters
    ----------
    loo_true : array-like of shape (n_tasks,) or (n_tasks, n_targets)
        Measured :math:`F(\\mathbf 1) - F(\\mathbf 1 - e_k)`.
    base : array-like of shape (n_tasks,), default=None
        Base set of the attribution; None is the full set.
    attribution : {"loo", "gradient"}, default="loo"
        ``method`` of the surrogate's :meth:`attribution`.
    method : {"pearson", "spearman"}, default="pearson"
        Correlation, see :func:`loo_correlation`.

    Examples
    --------
    >>> from sklearn.model_selection import cross_val_score
    >>> from sktaskmet import KernelSurrogate
    >>> from sktaskmet.datasets import make_task_interactions
    >>> from sktaskmet.surrogate import LOOCorrelationScorer
    >>> import numpy as np
    >>> S, y, F = make_task_interactions(n_subsets=100, random_state=0)
    >>> full = F(np.ones(16))
    >>> loo = full - F(1.0 - np.eye(16))
    >>> scores = cross_val_score(KernelSurrogate(device="cpu"), S, y, cv=3,
    ...                          scoring=LOOCorrelationScorer(loo))
    >>> bool(scores.min() > 0.8)
    True
    """

    def __init__(self, loo_true, *, base=None, attribution="loo", method="pearson"):
        self.loo_true = loo_true
        self.base = base
        self.attribution = attribution
        self.method = method

    def __call__(self, estimator, S=None, y=None):
        if not hasattr(estimator, "attribution"):
            raise TypeError(
                f"LOOCorrelationScorer scores surrogates with an attribution method; got "
                f"{type(estimator).__name__}."
            )
        scores = estimator.attribution(self.base, method=self.attribution)
        return loo_correlation(scores, self.loo_true, method=self.method)

    def __repr__(self):
        return f"LOOCorrelationScorer(method={self.method!r}, attribution={self.attribution!r})"
