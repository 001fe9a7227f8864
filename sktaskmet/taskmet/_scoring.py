"""Scikit-learn scorers of decisions (normalised decision quality, normalised regret).

scikit-learn scorers see ``(estimator, X, y)`` only, but a decision task needs to know which
samples form one decision instance. :class:`DecisionQualityScorer` asks for ``groups``
through scikit-learn's metadata routing, so that ``GridSearchCV(..., scoring=scorer,
cv=GroupKFold(...)).fit(X, y, groups=groups)`` scores every held-out fold by the decisions
made on its own instances.
"""

import numpy as np
import torch
from sklearn.pipeline import Pipeline
from sklearn.utils.metadata_routing import MetadataRequest

from ._estimator import group_instances


def _final_estimator(estimator):
    return estimator[-1] if isinstance(estimator, Pipeline) else estimator


def _instance_tensors(task, y_true, y_pred, groups):
    """Predictions and targets stacked by decision instance: two (n_inst, m, d) tensors."""
    y = np.asarray(y_true, dtype=np.float64)
    n_samples = y.shape[0]
    if groups is None and getattr(task, "requires_groups", False):
        raise ValueError(
            f"task {type(task).__name__} decides over groups of samples, and the scorer "
            "received no groups. Pass groups=..., and inside GridSearchCV or "
            "cross_validate enable metadata routing "
            "(sklearn.set_config(enable_metadata_routing=True)) so that the groups given "
            "to fit reach the scorer."
        )
    order, m = group_instances(groups, n_samples)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_pred.shape[0] != n_samples:
        raise ValueError(f"y has {n_samples} samples but the estimator predicted {len(y_pred)}.")
    Y = y.reshape(n_samples, -1)[order]
    P = y_pred.reshape(n_samples, -1)[order]
    if P.shape[1] != Y.shape[1]:
        raise ValueError(f"y has {Y.shape[1]} outputs; the estimator predicts {P.shape[1]}.")
    shape = (n_samples // m, m, Y.shape[1])
    return torch.from_numpy(P.reshape(shape)), torch.from_numpy(Y.reshape(shape))


class DecisionQualityScorer:
    r"""Scorer: normalised decision quality of an estimator's predictions.

    Called as ``scorer(estimator, X, y, groups=groups)``, it predicts ``X``, stacks the
    predictions and the true targets by decision instance (one instance per group label),
    lets the task decide on the predictions and returns

    .. math:: \frac{q - q_\text{rand}}{q_\text{opt} - q_\text{rand}},

    the mean quality :math:`q` of those decisions evaluated with the true targets, relative
    to random (0) and optimal (1) decisions, see :meth:`Task.normalized_decision_quality
    <sktaskmet.tasks.Task.normalized_decision_quality>`. Higher is better, as scikit-learn
    expects of a score. Any regressor works, a :class:`~sklearn.pipeline.Pipeline` or a
    least-squares baseline as well as :class:`~sktaskmet.TaskMetRegressor`, so one scorer
    compares them all on the task.

    ``groups`` reaches a scorer inside :class:`~sklearn.model_selection.GridSearchCV` or
    :func:`~sklearn.model_selection.cross_validate` only through metadata routing: enable it
    with ``sklearn.set_config(enable_metadata_routing=True)`` (or ``config_context``), and
    let the estimator ask for groups in ``fit`` too (``set_fit_request(groups=True)``).
    This scorer always requests ``groups`` for scoring.

    Parameters
    ----------
    task : Task or None, default=None
        The decision task. ``None`` uses the ``task`` parameter of the estimator scored (of
        the last step of a pipeline).

    Examples
    --------
    >>> import sklearn
    >>> from sklearn.linear_model import LinearRegression
    >>> from sklearn.model_selection import GroupKFold, cross_val_score
    >>> from sktaskmet.datasets import make_cubic_topk
    >>> from sktaskmet.tasks import DecisionQualityScorer, TopK
    >>> X, y, groups = make_cubic_topk(n_instances=40, n_items=20, random_state=0)
    >>> scorer = DecisionQualityScorer(TopK(k=1))
    >>> with sklearn.config_context(enable_metadata_routing=True):
    ...     scores = cross_val_score(LinearRegression(), X, y, params={"groups": groups},
    ...                              scoring=scorer, cv=GroupKFold(n_splits=2))
    >>> bool((scores < 0).all())  # least squares picks bad items on this problem
    True
    """

    def __init__(self, task=None):
        self.task = task

    def _resolve_task(self, estimator):
        if self.task is not None:
            return self.task
        task = getattr(_final_estimator(estimator), "task", None)
        if task is None:
            raise ValueError(
                f"{type(estimator).__name__} has no decision task to score with; give "
                "DecisionQualityScorer(task=...)."
            )
        return task

    def __call__(self, estimator, X, y, groups=None):
        """Normalised decision quality of ``estimator.predict(X)`` on ``(y, groups)``.

        Parameters
        ----------
        estimator : fitted regressor
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        groups : array-like of shape (n_samples,), optional
            Decision instance of each sample; required by tasks with ``requires_groups``.

        Returns
        -------
        float
        """
        task = self._resolve_task(estimator)
        y_pred = estimator.predict(X)
        return float(task.normalized_decision_quality(*_instance_tensors(task, y, y_pred, groups)))

    def get_metadata_routing(self):
        """The metadata this scorer requests: ``groups`` when scoring.

        Returns
        -------
        MetadataRequest
        """
        request = MetadataRequest(owner=type(self).__name__)
        request.score.add_request(param="groups", alias=True)
        return request

    def __repr__(self):
        return f"{type(self).__name__}(task={self.task!r})"


def _check_regret_task(task):
    if not callable(getattr(task, "normalized_regret", None)):
        raise TypeError(
            f"regret needs a task whose decisions solve a linear program (ShortestPath, "
            f"Knapsack, LinearProgram, PyEPOTask); got {type(task).__name__}. Use "
            "DecisionQualityScorer for the other tasks."
        )
    return task


def normalized_regret(y_true, y_pred, task, groups=None):
    r"""Normalised regret of the decisions taken from predicted costs, as PyEPO defines it.

    .. math::
        \frac{\sum_i s\,\bigl(c_i^\top w^\star(\hat c_i) - z^\star(c_i)\bigr)}
             {\sum_i |z^\star(c_i)| + 10^{-8}},

    with :math:`s = 1` for a minimisation and :math:`s = -1` for a maximisation: 0 for
    optimal decisions, lower is better (PyEPO's ``pyepo.metric.regret``).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples, d)
        True and predicted cost vectors, one instance per row (or per group of rows).
    task : LinearDecisionTask
        :class:`~sktaskmet.tasks.ShortestPath`, :class:`~sktaskmet.tasks.Knapsack`,
        :class:`~sktaskmet.tasks.LinearProgram` or :class:`~sktaskmet.tasks.PyEPOTask`.
    groups : array-like of shape (n_samples,), optional
        Instance of each row, when an instance spans several rows.

    Returns
    -------
    float

    Examples
    --------
    >>> from sktaskmet.tasks import ShortestPath, normalized_regret
    >>> task = ShortestPath(grid=(2, 2))  # arcs 0->1, 0->2, 1->3, 2->3
    >>> normalized_regret([[1.0, 2.0, 1.0, 2.0]], [[5.0, 1.0, 5.0, 1.0]], task)
    0.999999995
    """
    task = _check_regret_task(task)
    return float(task.normalized_regret(*_instance_tensors(task, y_true, y_pred, groups)))


class RegretScorer(DecisionQualityScorer):
    r"""Scorer: minus the normalised regret of an estimator's predicted costs.

    ``scorer(estimator, X, y)`` returns :math:`-`:func:`normalized_regret` of
    ``estimator.predict(X)``, so that higher is better as scikit-learn's model selection
    expects (as ``neg_mean_squared_error`` does). Use it for tasks whose decisions solve a
    linear program; :class:`DecisionQualityScorer` normalises by random decisions instead
    and works for every task. ``groups`` are routed as for
    :class:`DecisionQualityScorer` (only needed when an instance spans several rows).

    Parameters
    ----------
    task : LinearDecisionTask or None, default=None
        ``None`` uses the ``task`` parameter of the estimator scored.

    Examples
    --------
    >>> from sklearn.linear_model import LinearRegression
    >>> from sktaskmet.datasets import make_shortest_path
    >>> from sktaskmet.tasks import RegretScorer, ShortestPath
    >>> X, y = make_shortest_path(n_samples=200, degree=4, noise_width=0.5, random_state=0)
    >>> model = LinearRegression().fit(X[:100], y[:100])
    >>> score = RegretScorer(ShortestPath())(model, X[100:], y[100:])
    >>> bool(-1 < score < 0)
    True
    """

    def __call__(self, estimator, X, y, groups=None):
        """Minus the normalised regret of ``estimator.predict(X)`` on ``(y, groups)``.

        Parameters
        ----------
        estimator : fitted regressor
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples, d)
        groups : array-like of shape (n_samples,), optional

        Returns
        -------
        float
        """
        task = _check_regret_task(self._resolve_task(estimator))
        return -normalized_regret(y, estimator.predict(X), task, groups=groups)
