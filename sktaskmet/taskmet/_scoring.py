"""A scikit-learn scorer of decision quality, for model selection by the downstream task.

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
        y = np.asarray(y, dtype=np.float64)
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
        y_pred = np.asarray(estimator.predict(X), dtype=np.float64)
        if y_pred.shape[0] != n_samples:
            raise ValueError(
                f"y has {n_samples} samples but the estimator predicted {len(y_pred)}."
            )
        Y = y.reshape(n_samples, -1)[order]
        P = y_pred.reshape(n_samples, -1)[order]
        if P.shape[1] != Y.shape[1]:
            raise ValueError(f"y has {Y.shape[1]} outputs; the estimator predicts {P.shape[1]}.")
        n_instances = n_samples // m
        shape = (n_instances, m, Y.shape[1])
        return float(
            task.normalized_decision_quality(
                torch.from_numpy(P.reshape(shape)), torch.from_numpy(Y.reshape(shape))
            )
        )

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
