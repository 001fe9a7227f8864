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
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from ._decision_solvers import (
    coverage_objective,
    soft_topk,
    solve_coverage,
    solve_simplex_qp,
)

__all__ = ["Task", "TopK", "Portfolio", "BudgetAllocation", "CallableTask", "StateReward"]


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

    See Also
    --------
    TopK, Portfolio, BudgetAllocation, StateReward : The built-in tasks.
    CallableTask : A task from plain functions, without subclassing.
    DecisionQualityScorer : Score any regressor by the decisions its predictions lead to.

    Examples
    --------
    A task that picks the item of largest predicted value, with a softmax relaxation for
    training:

    >>> import torch
    >>> from sktaskmet.tasks import Task
    >>> class PickBest(Task):
    ...     n_outputs = 1
    ...     def loss(self, y_pred, y_true):
    ...         weights = torch.softmax(y_pred[..., 0] / 0.1, dim=-1)
    ...         return -(weights * y_true[..., 0]).sum(-1)
    ...     def decide(self, y_pred):
    ...         best = y_pred[..., 0].argmax(-1)
    ...         return torch.nn.functional.one_hot(best, y_pred.shape[1]).to(y_pred.dtype)
    ...     def quality(self, decisions, y_true):
    ...         return (decisions * y_true[..., 0]).sum(-1)
    ...     def random_quality(self, y_true):
    ...         return y_true[..., 0].mean(-1)
    >>> y_true = torch.tensor([[[1.0], [3.0], [2.0]]])  # one instance of 3 items
    >>> y_pred = torch.tensor([[[0.0], [1.0], [5.0]]])  # ranks item 2 first
    >>> PickBest().decision_quality(y_pred, y_true)
    tensor([2.])
    >>> PickBest().normalized_decision_quality(y_pred, y_true)  # as good as random
    0.0
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
    instance. Training uses the soft top-k of Xie et al. (2020) as the TaskMet reference
    code runs it: an entropic optimal transport plan between the negated predictions and
    the anchors {0, 1}, with item marginals :math:`1/m` and anchor marginals
    :math:`(k/m, (m-k)/m)`, under the squared-distance cost divided by its maximum over the
    instance (differentiated: the relaxation depends on the level of the predictions, not
    only on their differences). The converged plan is computed exactly (two anchors leave
    one scalar potential to find, by bisection) and differentiated implicitly, see
    :func:`~sktaskmet.taskmet._decision_solvers.soft_topk`, so small ``epsilon`` is stable
    and the gradient costs one elementwise pass. The soft indicator
    :math:`\tilde z_j = m \Gamma_{j0}` lies in [0, 1], sums to k and tends to the hard
    indicator as ``epsilon -> 0``; the relaxed loss is :math:`-\sum_j \tilde z_j y_j`.

    Parameters
    ----------
    k : int, default=1
        Number of items to choose in each instance.
    epsilon : float, default=0.01
        Entropic regularisation, relative to the largest cost of the instance.
    n_iter : int, default=200
        Maximum number of bisection steps for the anchor potential; the search stops once
        the bracket reaches the resolution of the dtype (about 60 steps in float64).

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


class Portfolio(Task):
    r"""Markowitz portfolio on the simplex: :math:`g(x, y) = y^\top x - \lambda x^\top \Sigma x`.

    Each instance is one day with m assets whose returns are predicted. The decision is

    .. math::
        x^\star(\hat y) = \arg\max_{x \ge 0,\ \sum_i x_i = 1}
            \hat y^\top x - \lambda\, x^\top \Sigma x ,

    and its quality is measured with the realised returns :math:`y`. The batched solver
    runs on the device: accelerated projected gradient with exact simplex projection
    finds the support, primal-dual active-set corrections make it exact, and the KKT
    system on the support is solved once more with autograd enabled. The solution on a
    fixed support is affine in :math:`\hat y`, so the gradient of that single linear solve
    is the implicit derivative of the QP (KKT conditions on the active set); the
    iterations are never unrolled. The hard decision is the QP solution itself, and the
    relaxed loss is the exact :math:`-g(x^\star(\hat y), y)`: it is piecewise smooth and
    needs no further smoothing.

    Parameters
    ----------
    risk_aversion : float, default=0.1
        :math:`\lambda`.
    covariance : array-like of shape (m, m) or None, default=None
        The risk model :math:`\Sigma`, symmetric positive definite, shared by all
        instances; :func:`sktaskmet.datasets.make_portfolio` returns the one of its factor
        model with ``return_covariance=True``. None uses the identity (uncorrelated assets
        of unit variance).
    n_iter : int, default=50
        Accelerated projected-gradient iterations before the active-set corrections (they
        only need to find the support roughly: the corrections make the solution exact).
    n_refine : int, default=20
        Maximum number of active-set corrections.

    Notes
    -----
    The random reference is the expected quality of a portfolio drawn uniformly from the
    simplex (a flat Dirichlet distribution), in closed form:
    :math:`\bar y - \lambda (\mathrm{tr}\,\Sigma + 1^\top \Sigma 1) / (m (m + 1))`.

    See Also
    --------
    sktaskmet.datasets.make_portfolio : Returns and risk model of the benchmark problem.

    Examples
    --------
    One day of three uncorrelated assets of unit variance: with little risk aversion the
    portfolio goes to the asset of largest predicted return.

    >>> import torch
    >>> from sktaskmet.tasks import Portfolio
    >>> task = Portfolio(risk_aversion=0.1)
    >>> y_true = torch.tensor([[[1.0], [3.0], [2.0]]])
    >>> task.decide(y_true)
    tensor([[0., 1., 0.]])
    >>> y_pred = torch.tensor([[[0.0], [1.0], [5.0]]])  # puts the third asset first
    >>> task.decide(y_pred)
    tensor([[0., 0., 1.]])
    >>> round(task.normalized_decision_quality(y_pred, y_true), 3)  # worse than random
    -0.053
    """

    requires_groups = True
    n_outputs = 1

    def __init__(self, risk_aversion=0.1, covariance=None, n_iter=50, n_refine=20):
        self.risk_aversion = risk_aversion
        self.covariance = covariance
        self.n_iter = n_iter
        self.n_refine = n_refine

    def _covariance(self, like):
        m = like.shape[1]
        if self.covariance is None:
            return torch.eye(m, dtype=like.dtype, device=like.device)
        cov = _as_tensor(self.covariance, like=like)
        if cov.shape != (m, m):
            raise ValueError(
                f"Portfolio: covariance must have shape (m, m) = ({m}, {m}) for instances "
                f"of {m} assets; got {tuple(cov.shape)}."
            )
        if not bool(torch.isfinite(cov).all()):
            raise ValueError("Portfolio: covariance contains NaN or inf.")
        return cov

    def _solve(self, returns):
        lam = _check_positive_float(self.risk_aversion, "risk_aversion")
        n_iter = _check_positive_int(self.n_iter, "n_iter")
        n_refine = _check_positive_int(self.n_refine, "n_refine", minimum=0)
        cov = self._covariance(returns.unsqueeze(-1))
        weights, converged = solve_simplex_qp(
            returns, 2.0 * lam * cov, n_iter=n_iter, n_refine=n_refine
        )
        if not bool(converged.all()):
            warnings.warn(
                f"Portfolio: the active set of {int((~converged).sum())} instance(s) did not "
                f"settle in n_refine={n_refine} corrections; their projected-gradient "
                "solution is used without a gradient. Increase n_iter or n_refine.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return weights

    def loss(self, y_pred, y_true):
        self._check_pair(y_pred, y_true)
        return -self.quality(self._solve(y_pred[..., 0]), y_true)

    def decide(self, y_pred):
        self._check_batch(y_pred, "y_pred")
        with torch.no_grad():
            return self._solve(y_pred[..., 0].detach())

    def quality(self, decisions, y_true):
        lam = _check_positive_float(self.risk_aversion, "risk_aversion")
        cov = self._covariance(y_true)
        risk = torch.einsum("bi,ij,bj->b", decisions, cov, decisions)
        return (decisions * y_true[..., 0]).sum(-1) - lam * risk

    def random_quality(self, y_true):
        self._check_batch(y_true, "y_true")
        lam = _check_positive_float(self.risk_aversion, "risk_aversion")
        m = y_true.shape[1]
        cov = self._covariance(y_true)
        # E[x] = 1/m and E[x x^T] = (I + 1 1^T) / (m (m + 1)) for x ~ Dirichlet(1, ..., 1).
        risk = (torch.trace(cov) + cov.sum()) / (m * (m + 1))
        return y_true[..., 0].detach().mean(-1) - lam * risk


class BudgetAllocation(Task):
    r"""Budget allocation over channels with a coverage objective (Wilder et al., 2019).

    Each instance has m channels (items) and d targets (outputs): :math:`y_{jt} \in [0, 1]`
    is the probability that channel j reaches target t. The decision spends a budget
    :math:`z \in [0, 1]^m`, :math:`\sum_j z_j \le B`, to maximise the expected weighted
    number of targets reached

    .. math::
        g(z, y) = \sum_t w_t \Bigl(1 - \prod_j (1 - z_j y_{jt})\Bigr).

    The hard decision runs ``n_iter`` steps of projected gradient ascent from the uniform
    allocation (a local maximiser of this DR-submodular objective). The maximisers of the
    multilinear objective sit at vertices, where the decision does not move with
    :math:`\hat y`; the relaxed loss therefore solves the problem with a quadratic
    regulariser :math:`-\tfrac{\gamma}{2}\|z\|^2` (``smoothing``) and differentiates its
    solution at the fixed point of the projected-gradient map
    :math:`T(z) = P(z + \eta \nabla_z g_\gamma(z, \hat y))` by the implicit function
    theorem: with :math:`J = \partial_z T`, :math:`dz^\star = (I - J)^{-1}
    \partial_{\hat y} T\, d\hat y`, an m-by-m dense solve per instance. The loss is
    :math:`-g(z^\star_\gamma(\hat y), y)`. Predictions are clipped to [0, 1].

    Parameters
    ----------
    budget : float, default=2.0
        :math:`B`.
    n_iter : int, default=100
        Projected-gradient steps.
    lr : float, default=0.1
        Step size :math:`\eta`.
    weights : array-like of shape (d,) or None, default=None
        Target weights :math:`w_t`; None gives 1 to every target.
    smoothing : float, default=1.0
        Quadratic regularisation :math:`\gamma` of the relaxed problem used by
        :meth:`loss` (the hard decision uses none).
    n_random_draws : int, default=2000
        Number of seeded uniform draws from the feasible set used by
        :meth:`random_quality` (there is no closed form).
    random_state : int, default=0
        Seed of those draws, so that the random reference is the same on every call.

    See Also
    --------
    sktaskmet.datasets.make_budget_allocation : The benchmark problem.

    Examples
    --------
    Three channels and two targets, a budget of one channel: channel 0 mostly reaches
    target 0, channel 1 target 1, channel 2 neither. The budget is split between the first
    two.

    >>> import torch
    >>> from sktaskmet.tasks import BudgetAllocation
    >>> task = BudgetAllocation(budget=1.0)
    >>> y = torch.tensor([[[0.9, 0.1], [0.2, 0.8], [0.1, 0.1]]])
    >>> task.decide(y)
    tensor([[0.5000, 0.5000, 0.0000]])
    >>> task.quality(task.decide(y), y)  # expected number of targets reached
    tensor([0.9350])
    """

    requires_groups = True
    n_outputs = None

    def __init__(
        self,
        budget=2.0,
        n_iter=100,
        lr=0.1,
        weights=None,
        smoothing=1.0,
        n_random_draws=2000,
        random_state=0,
    ):
        self.budget = budget
        self.n_iter = n_iter
        self.lr = lr
        self.weights = weights
        self.smoothing = smoothing
        self.n_random_draws = n_random_draws
        self.random_state = random_state

    def check_targets(self, y):
        super().check_targets(y)
        if self.weights is not None:
            shape = tuple(y.shape) if hasattr(y, "shape") else np.shape(y)
            d = 1 if len(shape) == 1 else shape[-1]
            n_weights = len(np.ravel(np.asarray(self.weights)))
            if d != n_weights:
                raise ValueError(
                    f"BudgetAllocation has {n_weights} target weights, but the targets have "
                    f"{d} output(s) (shape {shape})."
                )

    def _weights(self, like):
        d = like.shape[-1]
        if self.weights is None:
            return torch.ones(d, dtype=like.dtype, device=like.device)
        return _as_tensor(np.ravel(np.asarray(self.weights, dtype=float)), like=like)

    def _settings(self):
        budget = _check_positive_float(self.budget, "budget")
        n_iter = _check_positive_int(self.n_iter, "n_iter")
        lr = _check_positive_float(self.lr, "lr")
        smoothing = _check_positive_float(self.smoothing, "smoothing", allow_zero=True)
        return budget, n_iter, lr, smoothing

    def loss(self, y_pred, y_true):
        self._check_pair(y_pred, y_true)
        budget, n_iter, lr, smoothing = self._settings()
        weights = self._weights(y_pred)
        z = solve_coverage(y_pred.clamp(0.0, 1.0), weights, budget, lr, n_iter, smoothing)
        return -coverage_objective(z, y_true, weights)

    def decide(self, y_pred):
        self._check_batch(y_pred, "y_pred")
        budget, n_iter, lr, _ = self._settings()
        with torch.no_grad():
            y = y_pred.detach().clamp(0.0, 1.0)
            return solve_coverage(y, self._weights(y), budget, lr, n_iter, 0.0)

    def quality(self, decisions, y_true):
        return coverage_objective(decisions, y_true, self._weights(y_true))

    def _random_allocations(self, m, like):
        """Seeded uniform draws from {0 <= z <= 1, sum z <= budget}, shape (n, m)."""
        budget = _check_positive_float(self.budget, "budget")
        n_draws = _check_positive_int(self.n_random_draws, "n_random_draws")
        rng = np.random.RandomState(self.random_state)
        if budget >= m:
            draws = rng.uniform(size=(n_draws, m))
        else:
            # Uniform on the scaled simplex {z >= 0, sum z <= B} (a flat Dirichlet on m + 1
            # coordinates, the last one being the slack), keeping the draws inside the cube.
            kept, total = [], 0
            for _ in range(1000):
                batch = budget * rng.dirichlet(np.ones(m + 1), size=2 * n_draws)[:, :m]
                batch = batch[(batch <= 1.0).all(axis=1)]
                kept.append(batch)
                total += len(batch)
                if total >= n_draws:
                    break
            draws = np.concatenate(kept)[:n_draws]
            if len(draws) < n_draws:
                raise ValueError(
                    f"BudgetAllocation: could not draw uniform allocations for budget={budget} "
                    f"and {m} channels."
                )
        return torch.as_tensor(draws).to(device=like.device, dtype=like.dtype)

    def random_quality(self, y_true):
        self._check_batch(y_true, "y_true")
        y = y_true.detach()
        draws = self._random_allocations(y.shape[1], y)  # (n, m)
        weights = self._weights(y)
        total = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
        # Chunks of draws bound the (batch, chunk, m, d) intermediate.
        for chunk in torch.split(draws, 256):
            miss = 1.0 - chunk.view(1, -1, y.shape[1], 1) * y.unsqueeze(1)
            total = total + ((1.0 - miss.prod(dim=2)) * weights).sum(-1).sum(-1)
        return total / draws.shape[0]


def _check_per_instance(values, batch, name):
    if not isinstance(values, torch.Tensor):
        raise TypeError(
            f"{name} must return a torch.Tensor of shape (batch,); got {type(values).__name__}."
        )
    if tuple(values.shape) != (batch,):
        raise ValueError(
            f"{name} must return one value per decision instance, shape (batch,) = ({batch},); "
            f"got shape {tuple(values.shape)}."
        )
    if not bool(torch.isfinite(values.detach()).all()):
        bad = torch.nonzero(~torch.isfinite(values.detach())).flatten()[:5].tolist()
        raise ValueError(f"{name} returned NaN or inf for instance(s) {bad}.")
    return values


class CallableTask(Task):
    r"""A task defined by the user's own differentiable loss function.

    ``loss_fn(y_pred, y_true)`` receives tensors of shape (batch, m, d) and must return a
    differentiable tensor of shape (batch,): the task loss of each decision instance,
    lower is better. It should be written with torch operations only, so that it runs on
    the device and dtype of its inputs.

    Evaluation needs decisions and their quality. By default the decision *is* the
    prediction (``decide`` returns ``y_pred`` unchanged) and its quality is
    ``-loss_fn(decisions, y_true)``. Give ``decide_fn`` and ``quality_fn`` for a task with
    hard decisions, e.g. a relaxed loss for training and an exact solver for evaluation.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(y_pred, y_true) -> Tensor (batch,)``.
    quality_fn : callable or None, default=None
        ``quality_fn(decisions, y_true) -> Tensor (batch,)``, higher is better. Required
        when ``decide_fn`` is given.
    decide_fn : callable or None, default=None
        ``decide_fn(y_pred) -> Tensor (batch, ...)``.
    optimal_fn : callable or None, default=None
        ``optimal_fn(y_true) -> Tensor (batch,)``, the best attainable quality; defaults to
        the quality of the decisions taken from the true targets.
    requires_groups : bool, default=True
        Whether a decision involves several items (rows sharing a group).
    n_outputs : int or None, default=None
        The number d of outputs per item the loss needs (None: any).
    n_random_draws : int, default=20
        Number of seeded permutations used by :meth:`random_quality`.
    random_state : int, default=0
        Seed of those permutations.

    Notes
    -----
    The random reference is the mean quality of decisions taken from *uninformed*
    predictions: the true targets of the batch with their item rows shuffled across all
    instances (predictions drawn from the marginal distribution of the targets), averaged
    over ``n_random_draws`` seeded permutations. Tasks are estimator parameters: to pickle
    a fitted estimator, define the functions at module level (not as lambdas).

    Examples
    --------
    >>> import torch
    >>> from sktaskmet.tasks import CallableTask
    >>> def weighted_error(y_pred, y_true):
    ...     weights = torch.tensor([10.0, 1.0], dtype=y_pred.dtype, device=y_pred.device)
    ...     return ((y_pred - y_true) ** 2 * weights).sum(dim=(1, 2))
    >>> task = CallableTask(weighted_error, requires_groups=False, n_outputs=2)
    >>> y = torch.zeros(4, 1, 2)
    >>> task.loss(y + 1, y)
    tensor([11., 11., 11., 11.])
    """

    def __init__(
        self,
        loss_fn,
        quality_fn=None,
        decide_fn=None,
        optimal_fn=None,
        requires_groups=True,
        n_outputs=None,
        n_random_draws=20,
        random_state=0,
    ):
        self.loss_fn = loss_fn
        self.quality_fn = quality_fn
        self.decide_fn = decide_fn
        self.optimal_fn = optimal_fn
        self.requires_groups = requires_groups
        self.n_outputs = n_outputs
        self.n_random_draws = n_random_draws
        self.random_state = random_state

    def _check_callables(self):
        for name in ("loss_fn", "quality_fn", "decide_fn", "optimal_fn"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise TypeError(f"CallableTask: {name} must be callable; got {value!r}.")
        if self.loss_fn is None:
            raise TypeError("CallableTask: loss_fn is required.")
        if self.decide_fn is not None and self.quality_fn is None:
            raise ValueError(
                "CallableTask: quality_fn is required when decide_fn is given (the quality "
                "of custom decisions cannot be derived from the loss)."
            )

    def loss(self, y_pred, y_true):
        self._check_callables()
        self._check_pair(y_pred, y_true)
        return _check_per_instance(self.loss_fn(y_pred, y_true), y_pred.shape[0], "loss_fn")

    def decide(self, y_pred):
        self._check_callables()
        self._check_batch(y_pred, "y_pred")
        if self.decide_fn is None:
            return y_pred.detach()
        with torch.no_grad():
            return self.decide_fn(y_pred.detach())

    def quality(self, decisions, y_true):
        self._check_callables()
        if self.quality_fn is None:
            values = -self.loss_fn(decisions, y_true)
            return _check_per_instance(values, y_true.shape[0], "loss_fn")
        return _check_per_instance(
            self.quality_fn(decisions, y_true), y_true.shape[0], "quality_fn"
        )

    def optimal_quality(self, y_true):
        if self.optimal_fn is None:
            return super().optimal_quality(y_true)
        self._check_callables()
        self._check_batch(y_true, "y_true")
        with torch.no_grad():
            values = self.optimal_fn(y_true)
        return _check_per_instance(values, y_true.shape[0], "optimal_fn")

    def random_quality(self, y_true):
        self._check_callables()
        self._check_batch(y_true, "y_true")
        n_draws = _check_positive_int(self.n_random_draws, "n_random_draws")
        y = y_true.detach()
        rows = y.reshape(-1, y.shape[-1])
        rng = np.random.RandomState(self.random_state)
        total = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
        with torch.no_grad():
            for _ in range(n_draws):
                order = torch.as_tensor(rng.permutation(rows.shape[0]), device=y.device)
                uninformed = rows[order].reshape(y.shape)
                total = total + self.quality(self.decide(uninformed), y)
        return total / n_draws


class StateReward(Task):
    r"""Reward prediction from a predicted next state (model-based RL with distractors).

    Each sample is one transition; the prediction is the next state (d outputs, m = 1, no
    groups). A smooth reward depends only on some state dimensions,

    .. math::
        r(s) = \exp\Bigl(-\tfrac12 \sum_k (s_{i_k} / c_k)^2\Bigr),

    by default the CartPole cart position (column 0, scale 2.4, the track half-length)
    and pole angle (column 2, scale 0.2095 rad, the 12 degree failure angle). The task loss
    is the squared reward prediction error :math:`(r(\hat s) - r(s))^2`: errors in the
    other dimensions (velocities, distractors) cost nothing. The "decision" is the
    predicted reward and its quality is the negative squared reward error (0 is optimal).

    Parameters
    ----------
    dims : sequence of int, default=(0, 2)
        The reward-relevant output columns :math:`i_k`.
    scales : sequence of float, default=(2.4, 0.2095)
        Their length scales :math:`c_k`.
    n_outputs : int or None, default=None
        The state dimension d the task expects (None: any with ``max(dims) < d``).

    Notes
    -----
    The random reference predicts, for each sample, the reward of another sample of the
    batch drawn at random: its expected quality is
    :math:`-(r_i - \bar r)^2 - \mathrm{Var}(r)` in closed form.

    See Also
    --------
    sktaskmet.datasets.make_cartpole_distractors : CartPole transitions with distractors.

    Examples
    --------
    Two CartPole states (x, x_dot, theta, theta_dot): the reward is 1 at the centre with
    the pole upright. An error in a velocity costs nothing, an error in the angle does.

    >>> import torch
    >>> from sktaskmet.tasks import StateReward
    >>> task = StateReward()
    >>> states = torch.tensor([[[0.0, 1.0, 0.0, 1.0]], [[1.2, 0.0, 0.1, 0.0]]])
    >>> task.reward(states)
    tensor([[1.0000],
            [0.7875]])
    >>> wrong_velocity = states + torch.tensor([0.0, 5.0, 0.0, 0.0])
    >>> task.loss(wrong_velocity, states)
    tensor([0., 0.])
    >>> wrong_angle = states + torch.tensor([0.0, 0.0, 0.1, 0.0])
    >>> task.loss(wrong_angle, states)
    tensor([0.0116, 0.0520])
    """

    requires_groups = False

    def __init__(self, dims=(0, 2), scales=(2.4, 0.2095), n_outputs=None):
        self.dims = dims
        self.scales = scales
        self.n_outputs = n_outputs

    def _dims_scales(self, d):
        dims = [int(i) for i in np.ravel(self.dims)]
        scales = [float(c) for c in np.ravel(self.scales)]
        if not dims or len(dims) != len(scales):
            raise ValueError(
                f"StateReward: dims and scales must be non-empty and of the same length; got "
                f"{len(dims)} dims and {len(scales)} scales."
            )
        if min(dims) < 0 or max(dims) >= d:
            raise ValueError(
                f"StateReward: dims {dims} must index the {d} output column(s) of the targets."
            )
        if not all(c > 0 and math.isfinite(c) for c in scales):
            raise ValueError(f"StateReward: scales must be finite and > 0; got {scales}.")
        return dims, scales

    def reward(self, states):
        """Smooth reward of states of shape (batch, m, d); returns (batch, m)."""
        dims, scales = self._dims_scales(states.shape[-1])
        idx = torch.as_tensor(dims, device=states.device)
        c = torch.as_tensor(scales, dtype=states.dtype, device=states.device)
        return torch.exp(-0.5 * ((states.index_select(-1, idx) / c) ** 2).sum(-1))

    def loss(self, y_pred, y_true):
        self._check_pair(y_pred, y_true)
        return ((self.reward(y_pred) - self.reward(y_true)) ** 2).sum(-1)

    def decide(self, y_pred):
        self._check_batch(y_pred, "y_pred")
        return self.reward(y_pred.detach())

    def quality(self, decisions, y_true):
        return -((decisions - self.reward(y_true)) ** 2).sum(-1)

    def random_quality(self, y_true):
        self._check_batch(y_true, "y_true")
        r = self.reward(y_true.detach())  # (batch, m)
        mean = r.mean(0, keepdim=True)
        var = r.var(0, unbiased=False, keepdim=True)
        return -((r - mean) ** 2 + var).sum(-1)
