"""Downstream decision tasks: relaxed task losses for training, hard decisions for scoring.

A task turns the predictions of one *decision instance* (the m items that share a group:
the 50 candidates of a top-k choice, the 50 assets of a day's portfolio) into a decision
and scores that decision with the true targets. All methods take tensors batched by
instance, ``(batch, m, d)``, and follow their dtype and device.

The numerics of the decision problems live in :mod:`sktaskmet.taskmet._decision_solvers`;
this module holds the user-facing classes.
"""

import inspect
import math
import numbers

import numpy as np
import torch

from ._decision_solvers import soft_topk

__all__ = ["Task", "TopK"]


def _check_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _check_positive_float(value, name, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}.")
    ok = value >= 0 if allow_zero else value > 0
    if not (ok and math.isfinite(value)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}; got {value!r}.")
    return float(value)


def _as_tensor(values, like=None):
    """Tensor view of ``values``; numpy arrays keep their dtype (floats become float64)."""
    if isinstance(values, torch.Tensor):
        return values
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    tensor = torch.as_tensor(np.array(array, copy=True))
    if like is not None:
        tensor = tensor.to(device=like.device, dtype=like.dtype)
    return tensor


_VARIADIC = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)


class Task:
    r"""Base class of the downstream decision tasks used by TaskMet and DFL.

    A task scores predictions :math:`\hat y` of the m items of a decision instance by the
    quality :math:`g(z^\star(\hat y), y)` of the decision :math:`z^\star(\hat y)` it takes
    from them, measured with the true targets :math:`y`. Training needs a differentiable
    surrogate of :math:`-g(z^\star(\hat y), y)`: :meth:`loss`. Evaluation uses hard
    decisions: :meth:`decide`, :meth:`quality` and the normalised score
    :meth:`normalized_decision_quality`.

    All tensors are batched by decision instance: ``y_pred`` and ``y_true`` have shape
    ``(batch, m, d)`` (m items of d outputs each; ``m = 1`` for tasks without groups). The
    methods follow the dtype and device of their inputs.

    Subclasses implement :meth:`loss`, :meth:`decide`, :meth:`quality` and
    :meth:`random_quality` (and :meth:`optimal_quality` when the optimum is not the
    decision taken from the true targets). Their constructor parameters are stored
    unchanged as attributes of the same name, which gives :meth:`get_params`,
    :meth:`set_params`, ``repr``, pickling and :func:`sklearn.base.clone` for free.

    Attributes
    ----------
    requires_groups : bool
        Whether a decision involves several items (rows sharing a group id).
    n_outputs : int or None
        The number d of outputs per item the task needs, or None for any.
    """

    requires_groups = True
    n_outputs = None

    # -- parameters -------------------------------------------------------------------
    @classmethod
    def _get_param_names(cls):
        signature = inspect.signature(cls.__init__)
        return sorted(
            name
            for name, parameter in signature.parameters.items()
            if name != "self" and parameter.kind not in _VARIADIC
        )

    def get_params(self, deep=True):
        """Constructor parameters of the task, as in scikit-learn.

        Parameters
        ----------
        deep : bool, default=True
            Ignored (tasks hold no nested estimators); kept for scikit-learn compatibility.

        Returns
        -------
        dict
        """
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set constructor parameters, as in scikit-learn.

        Returns
        -------
        self
        """
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for task {type(self).__name__}; valid "
                    f"parameters are {valid}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {
            name: parameter.default
            for name, parameter in inspect.signature(type(self).__init__).parameters.items()
        }
        parts = []
        for name in self._get_param_names():
            value = getattr(self, name)
            default = defaults.get(name, inspect.Parameter.empty)
            try:
                unchanged = value is default or (
                    not isinstance(value, (np.ndarray, torch.Tensor)) and bool(value == default)
                )
            except Exception:  # objects whose == is not a bool (e.g. arrays of arrays)
                unchanged = False
            if not unchanged:
                text = repr(value)
                if len(text) > 60:
                    text = text[:57] + "..."
                parts.append(f"{name}={text}")
        return f"{type(self).__name__}({', '.join(parts)})"

    # -- input checks -----------------------------------------------------------------
    def check_targets(self, y):
        """Check that targets have the shape this task needs.

        Parameters
        ----------
        y : array-like or Tensor of shape (batch, m, d), (n_samples, d) or (n_samples,)
            Batched targets, or the flat targets of an estimator (one row per item).

        Raises
        ------
        ValueError
            If ``y`` has more than three axes, or its last axis is not ``n_outputs``.
        """
        shape = tuple(y.shape) if hasattr(y, "shape") else np.shape(y)
        if len(shape) == 0 or len(shape) > 3:
            raise ValueError(
                f"{type(self).__name__}: targets must have shape (batch, m, d), "
                f"(n_samples, d) or (n_samples,); got shape {shape}."
            )
        d = 1 if len(shape) == 1 else shape[-1]
        if self.n_outputs is not None and d != self.n_outputs:
            raise ValueError(
                f"{type(self).__name__} needs {self.n_outputs} output(s) per item, but the "
                f"targets have {d} (shape {shape})."
            )

    def _check_batch(self, y, name):
        if not isinstance(y, torch.Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor of shape (batch, m, d); got {type(y).__name__}."
            )
        if y.dim() != 3:
            raise ValueError(f"{name} must have shape (batch, m, d); got shape {tuple(y.shape)}.")
        if not y.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor; got {y.dtype}.")
        self.check_targets(y)

    def _check_pair(self, y_pred, y_true):
        self._check_batch(y_pred, "y_pred")
        self._check_batch(y_true, "y_true")
        if y_pred.shape != y_true.shape:
            raise ValueError(
                f"y_pred and y_true must have the same shape; got {tuple(y_pred.shape)} and "
                f"{tuple(y_true.shape)}."
            )

    # -- the task interface -------------------------------------------------------------
    def loss(self, y_pred, y_true):
        """Differentiable relaxed task loss per instance (lower is better).

        Parameters
        ----------
        y_pred, y_true : Tensor of shape (batch, m, d)

        Returns
        -------
        Tensor of shape (batch,)
        """
        raise NotImplementedError

    def decide(self, y_pred):
        """Hard decisions taken from predictions.

        Parameters
        ----------
        y_pred : Tensor of shape (batch, m, d)

        Returns
        -------
        Tensor of shape (batch, ...)
        """
        raise NotImplementedError

    def quality(self, decisions, y_true):
        """Objective :math:`g(z, y)` of decisions under the true targets (higher is better).

        Parameters
        ----------
        decisions : Tensor of shape (batch, ...)
        y_true : Tensor of shape (batch, m, d)

        Returns
        -------
        Tensor of shape (batch,)
        """
        raise NotImplementedError

    def decision_quality(self, y_pred, y_true):
        """Quality of the hard decisions taken from ``y_pred``: ``quality(decide(y_pred))``.

        Returns
        -------
        Tensor of shape (batch,)
        """
        self._check_pair(y_pred, y_true)
        with torch.no_grad():
            return self.quality(self.decide(y_pred), y_true)

    def optimal_quality(self, y_true):
        """Quality of the decisions taken with perfect predictions.

        Returns
        -------
        Tensor of shape (batch,)
        """
        self._check_batch(y_true, "y_true")
        with torch.no_grad():
            return self.quality(self.decide(y_true), y_true)

    def random_quality(self, y_true):
        """Expected quality of a uniformly random feasible decision.

        Returns
        -------
        Tensor of shape (batch,)
        """
        raise NotImplementedError

    def normalized_decision_quality(self, y_pred, y_true):
        r"""Normalised decision quality: 1 for optimal decisions, 0 for random ones.

        .. math::
            \mathrm{DQ} = \frac{\overline{g(z^\star(\hat y), y)} - \overline{g_{rand}(y)}}
                               {\overline{g(z^\star(y), y)} - \overline{g_{rand}(y)}}

        with means over the instances of the batch.

        Parameters
        ----------
        y_pred, y_true : Tensor of shape (batch, m, d)

        Returns
        -------
        float
        """
        achieved = self.decision_quality(y_pred, y_true).mean()
        optimum = self.optimal_quality(y_true).mean()
        baseline = self.random_quality(y_true).mean()
        span = float(optimum - baseline)
        if not math.isfinite(span) or abs(span) <= 1e-12 * max(1.0, abs(float(optimum))):
            raise ValueError(
                "normalized_decision_quality is undefined: optimal and random decisions have "
                f"the same mean quality ({float(optimum)!r}) on these targets."
            )
        return float(achieved - baseline) / span


class TopK(Task):
    r"""Choose the k items with the largest values: :math:`g(z, y) = \sum_j z_j y_j`.

    The decision is the indicator of the k largest predictions of the m items of an
    instance. Training uses the soft top-k of Xie et al. (2020): an entropic optimal
    transport plan between the items and the anchors {0, 1} with item marginals
    :math:`1/m` and anchor marginals :math:`((m-k)/m, k/m)`, computed by ``n_iter``
    log-domain Sinkhorn iterations (stable for small ``epsilon``) on the squared-distance
    cost divided by its maximum over the instance. The soft indicator
    :math:`\tilde z_j = m \Gamma_{j1}` lies in [0, 1], sums to k and tends to the hard
    indicator as ``epsilon -> 0``; the relaxed loss is :math:`-\sum_j \tilde z_j y_j`.

    Parameters
    ----------
    k : int, default=1
        Number of items to choose in each instance.
    epsilon : float, default=0.01
        Entropic regularisation, relative to the largest cost of the instance.
    n_iter : int, default=200
        Sinkhorn iterations (differentiated by automatic differentiation).

    Notes
    -----
    The expected quality of a uniformly random choice of k items is
    :math:`k \bar y` (the instance mean times k).

    References
    ----------
    Xie, Dai, Chen, Dai, Zhao, Zha, Wei and Pfister, "Differentiable top-k with optimal
    transport", NeurIPS 2020.

    Examples
    --------
    >>> import torch
    >>> from sktaskmet.tasks import TopK
    >>> task = TopK(k=1)
    >>> y_true = torch.tensor([[[1.0], [3.0], [2.0]]])
    >>> task.decide(torch.tensor([[[0.0], [1.0], [5.0]]]))
    tensor([[0., 0., 1.]])
    >>> task.normalized_decision_quality(y_true, y_true)
    1.0
    """

    requires_groups = True
    n_outputs = 1

    def __init__(self, k=1, epsilon=0.01, n_iter=200):
        self.k = k
        self.epsilon = epsilon
        self.n_iter = n_iter

    def _validate(self, m):
        k = _check_positive_int(self.k, "k")
        if k >= m:
            raise ValueError(
                f"TopK(k={k}) needs more than k items per instance; the instances have {m}."
            )
        return (
            k,
            _check_positive_float(self.epsilon, "epsilon"),
            _check_positive_int(self.n_iter, "n_iter"),
        )

    def soft_decision(self, y_pred):
        """The soft top-k indicator, shape (batch, m), differentiable in ``y_pred``."""
        self._check_batch(y_pred, "y_pred")
        k, epsilon, n_iter = self._validate(y_pred.shape[1])
        return soft_topk(y_pred[..., 0], k, epsilon, n_iter)

    def loss(self, y_pred, y_true):
        self._check_pair(y_pred, y_true)
        return -(self.soft_decision(y_pred) * y_true[..., 0]).sum(-1)

    def decide(self, y_pred):
        self._check_batch(y_pred, "y_pred")
        k, _, _ = self._validate(y_pred.shape[1])
        scores = y_pred[..., 0].detach()
        top = torch.topk(scores, k, dim=-1).indices
        return torch.zeros_like(scores).scatter_(-1, top, 1.0)

    def quality(self, decisions, y_true):
        return (decisions * y_true[..., 0]).sum(-1)

    def optimal_quality(self, y_true):
        self._check_batch(y_true, "y_true")
        k, _, _ = self._validate(y_true.shape[1])
        return torch.topk(y_true[..., 0].detach(), k, dim=-1).values.sum(-1)

    def random_quality(self, y_true):
        self._check_batch(y_true, "y_true")
        k, _, _ = self._validate(y_true.shape[1])
        return k * y_true[..., 0].detach().mean(-1)
