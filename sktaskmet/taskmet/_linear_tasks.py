r"""Tasks whose decision solves a linear or integer program: the shared machinery.

A :class:`LinearDecisionTask` predicts the cost vector :math:`c` of a problem
:math:`w^\star(c) = \arg\min_{w \in W} s\, c^\top w` (:math:`s = 1` minimises, :math:`s = -1`
maximises) and is trained with one of the field's surrogate losses
(:mod:`sktaskmet.taskmet._dfl_losses`). The surrogates need the optimal solution
:math:`w^\star(c)` and objective :math:`z^\star(c)` of each *training* cost vector. They are
computed once per fit by :meth:`LinearDecisionTask.prepare_targets`, which returns the
targets as a :class:`DecisionTargets` tensor: indexing it along the instance axis (as the
training loops do to draw a mini-batch) indexes the solutions and objectives with it, so
the loss receives them per instance without re-solving and without a global cache.
"""

import numbers
from collections.abc import Mapping

import numpy as np
import torch
from sklearn.utils import check_random_state

from .._backend import make_generator
from ._dfl_losses import (
    blackbox_loss,
    noise_contrastive_loss,
    perturbed_fenchel_young_loss,
    perturbed_optimizer_loss,
    perturbed_regret_loss,
    spo_plus_loss,
    squared_error_loss,
    without_graph,
)
from ._tasks import Task, _check_positive_float, _check_positive_int

__all__ = ["DecisionTargets", "LinearDecisionTask", "SURROGATE_LOSSES"]

SURROGATE_LOSSES = ("spo+", "pfyl", "dpo", "dpo-regret", "dbb", "nce", "mse")
# Surrogates whose gradient in the predicted costs has a closed form (a difference of
# solutions) or, for the perturbed regret, a direct score-function estimate.
_CLOSED_FORM_GRADIENTS = ("spo+", "pfyl", "dpo-regret", "nce", "mse")


def surrogate_weights(surrogate, owner):
    """``surrogate`` as a tuple of ``(name, weight)`` pairs, checked.

    A name stands for itself with weight 1; a mapping of names to positive weights is a
    mixture, whose loss is the weighted sum of its members' losses.
    """
    if isinstance(surrogate, str):
        pairs = ((surrogate, 1.0),)
    elif isinstance(surrogate, Mapping) and len(surrogate) > 0:
        pairs = tuple(surrogate.items())
    else:
        raise ValueError(
            f"{owner}: surrogate must be one of {', '.join(map(repr, SURROGATE_LOSSES))} or a "
            f"non-empty dict of them to positive weights; got {surrogate!r}."
        )
    for name, weight in pairs:
        if name not in SURROGATE_LOSSES:
            raise ValueError(
                f"{owner}: unknown surrogate {name!r}; choose one of "
                f"{', '.join(repr(known) for known in SURROGATE_LOSSES)}."
            )
        if (
            isinstance(weight, bool)
            or not isinstance(weight, numbers.Real)
            or not np.isfinite(weight)
            or weight <= 0
        ):
            raise ValueError(
                f"{owner}: the weight of surrogate {name!r} must be a positive finite number; "
                f"got {weight!r}."
            )
    return tuple((name, float(weight)) for name, weight in pairs)


class DecisionTargets(torch.Tensor):
    """Targets of decision instances with per-instance side data that follow indexing.

    A plain tensor of shape (n_instances, m, d) for every operation, except that indexing
    along the first (instance) axis -- ``targets[batch]`` with a tensor, array, list or
    slice -- returns a :class:`DecisionTargets` whose ``solutions`` and ``objectives``
    are indexed the same way. ``context`` (the solution pool and the random streams of a
    fit) is shared by all the views.

    Built by :meth:`LinearDecisionTask.prepare_targets`; users do not create it.
    """

    @staticmethod
    def __new__(cls, targets, solutions, objectives, context):
        obj = torch.Tensor._make_subclass(cls, targets)
        obj.solutions = solutions
        obj.objectives = objectives
        obj.context = context
        return obj

    def __init__(self, targets, solutions, objectives, context):
        pass

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **(kwargs or {}))
        if func is torch.Tensor.__getitem__ and isinstance(args[0], DecisionTargets):
            index = args[1]
            if not isinstance(index, (tuple, int, type(None), type(Ellipsis))):
                source = args[0]
                return DecisionTargets(
                    result, source.solutions[index], source.objectives[index], source.context
                )
        return result

    def __reduce_ex__(self, protocol):
        # A pickled copy is a plain tensor: the side data belong to one fit.
        return torch.Tensor(self.detach().clone()).__reduce_ex__(protocol)


class _FitContext:
    """What a fit shares across steps: random streams, the optional solution pool, and the
    task's checked settings and exact solver (checked once per fit, not at every step)."""

    def __init__(self, random_state, device, settings, pool, solve_exact, n_costs):
        rng = check_random_state(random_state)
        self.branch_rng = np.random.RandomState(rng.randint(0, 2**31 - 1))
        self.generator = make_generator(rng, device)
        self.settings = settings
        self.solve_ratio = settings["solve_ratio"]
        self.pool = pool
        self.solve_exact = solve_exact
        self.n_costs = n_costs

    def add_to_pool(self, solutions):
        if self.pool is None:
            return
        new = torch.unique(solutions.to(self.pool.dtype), dim=0)
        distance = torch.cdist(new, self.pool, p=1.0)
        fresh = (distance > 0.5).all(dim=1)
        if bool(fresh.any()):
            self.pool = torch.cat([self.pool, new[fresh]])

    def best_in_pool(self, costs, sense):
        values = sense * (costs @ self.pool.to(costs.dtype).T)
        return self.pool.to(costs.dtype)[values.argmin(dim=1)]


class LinearDecisionTask(Task):
    r"""Base class of the tasks that decide by solving a linear or integer program.

    An instance is one cost vector :math:`c \in \mathbb{R}^d` (``y`` of shape (n, d),
    no groups needed; with ``groups`` the m rows of d outputs of an instance are read as
    one cost vector of length :math:`m d`, row by row). The decision is
    :math:`w^\star(c) = \arg\min_{w \in W} s\,c^\top w` and its quality, higher is better,
    is :math:`-s\,c^\top w`. Subclasses give the feasible set and an exact solver
    (:meth:`_solve_exact`), the number of costs and the sense.

    Notes
    -----
    The surrogate parameters shared by all subclasses:

    surrogate : {"spo+", "pfyl", "dpo", "dpo-regret", "dbb", "nce", "mse"} or dict
        The training surrogate, see :ref:`linear_decision_tasks`; a dict of those names to
        positive weights trains on the weighted sum of their losses.
    n_samples, sigma : int, float
        Perturbations per instance and their standard deviation (PFYL, DPO, DPO regret).
    dbb_lambda : float
        Interpolation step :math:`\lambda` of DBB.
    solve_ratio : float in (0, 1]
        Probability that a surrogate's solve is exact; otherwise the best solution of the
        pool (seeded with the training solutions, grown with every exact solve) is used,
        as PyEPO's ``solve_ratio``. For NCE, the probability of adding the solutions of
        the predicted costs to the pool at a step.
    random_state : int, RandomState or None
        Seed of the perturbations and of the pool draws within one fit.
    """

    requires_groups = False
    n_outputs = None
    _sign = 1

    # -- what subclasses provide --------------------------------------------------------
    @property
    def n_costs(self):
        """Length d of the cost vector."""
        raise NotImplementedError

    def _solve_exact(self, costs):
        """Optimal solutions (batch, d) of cost vectors (batch, d), no graph."""
        raise NotImplementedError

    def _exact_solver(self):
        """``_solve_exact`` with the task's parameters checked and converted once.

        A fit calls the solver at every step; subclasses whose parameters take work to
        check or convert (weights to integers, a grid to a plan) return a closure here.
        """
        return self._solve_exact

    # -- checks -------------------------------------------------------------------------
    def _settings(self):
        surrogates = surrogate_weights(self.surrogate, type(self).__name__)
        ratio = _check_positive_float(self.solve_ratio, "solve_ratio")
        if ratio > 1:
            raise ValueError(f"solve_ratio must be in (0, 1]; got {self.solve_ratio!r}.")
        return {
            "surrogates": surrogates,
            "n_samples": _check_positive_int(self.n_samples, "n_samples"),
            "sigma": _check_positive_float(self.sigma, "sigma"),
            "dbb_lambda": _check_positive_float(self.dbb_lambda, "dbb_lambda"),
            "solve_ratio": ratio,
        }

    def check_targets(self, y):
        """Check that targets hold cost vectors of length ``n_costs``.

        ``(n_instances, m, d)`` needs :math:`m d` = ``n_costs``; flat targets
        ``(n_samples, d)`` need d to divide ``n_costs`` (d = ``n_costs`` without groups).
        """
        super().check_targets(y)
        shape = tuple(y.shape) if hasattr(y, "shape") else np.shape(y)
        if len(shape) == 3:
            ok = shape[1] * shape[2] == self.n_costs
        else:
            ok = self.n_costs % (1 if len(shape) == 1 else shape[1]) == 0
        if not ok:
            raise ValueError(
                f"{type(self).__name__} has {self.n_costs} costs per instance, but the targets "
                f"have shape {shape}: give y of shape (n_instances, {self.n_costs}), or groups "
                "of rows that together hold one cost vector."
            )

    def _costs(self, y, name):
        """(batch, m, d) -> (batch, m * d), checked."""
        if not isinstance(y, torch.Tensor) or y.dim() != 3:
            self._check_batch(y, name)
        costs = y.reshape(y.shape[0], y.shape[1] * y.shape[2])
        if costs.shape[1] != self.n_costs:
            raise ValueError(
                f"{type(self).__name__}: {name} holds cost vectors of length {costs.shape[1]}, "
                f"expected {self.n_costs} (shape {tuple(y.shape)})."
            )
        if not costs.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor; got {costs.dtype}.")
        return costs

    def _check_finite(self, costs, name):
        if not bool(torch.isfinite(costs).all()):
            raise ValueError(f"{type(self).__name__}: {name} contains NaN or infinity.")

    # -- solving ------------------------------------------------------------------------
    def solve(self, costs):
        """Optimal solutions of a batch of cost vectors.

        Parameters
        ----------
        costs : array-like or Tensor of shape (batch, d)

        Returns
        -------
        solutions : Tensor of shape (batch, d)
        objectives : Tensor of shape (batch,)
            :math:`c^\\top w^\\star(c)`.
        """
        costs = costs if isinstance(costs, torch.Tensor) else torch.as_tensor(np.asarray(costs))
        if costs.dim() != 2:
            raise ValueError(f"costs must have shape (batch, d); got shape {tuple(costs.shape)}.")
        costs = self._costs(costs.unsqueeze(1), "costs").detach()
        self._check_finite(costs, "costs")
        solutions = self._solve_exact(costs)
        return solutions, (solutions * costs).sum(-1)

    def prepare_targets(self, y, like=None):
        """Training targets with their optimal solutions and objectives, solved once.

        Parameters
        ----------
        y : Tensor of shape (n_instances, m, d)
        like : DecisionTargets, optional
            Targets of the same fit whose pool and random streams are shared (the
            validation instances share those of the training instances).

        Returns
        -------
        DecisionTargets
        """
        settings = self._settings()
        costs = self._costs(y, "y").detach()
        self._check_finite(costs, "y")
        if isinstance(like, DecisionTargets):
            context = like.context
            solutions = context.solve_exact(costs)
        else:
            solve_exact = self._exact_solver()
            solutions = solve_exact(costs)
            wants_pool = settings["solve_ratio"] < 1 or any(
                name == "nce" for name, _ in settings["surrogates"]
            )
            pool = torch.unique(solutions, dim=0) if wants_pool else None
            context = _FitContext(
                self.random_state, y.device, settings, pool, solve_exact, costs.shape[1]
            )
        objectives = (solutions * costs).sum(-1)
        return DecisionTargets(y.detach(), solutions, objectives, context)

    def _solver(self, context):
        if context.pool is None:
            return context.solve_exact

        def solve(costs):
            if context.branch_rng.uniform() <= context.solve_ratio:
                solutions = context.solve_exact(costs)
                context.add_to_pool(solutions)
                return solutions
            return context.best_in_pool(costs, self._sign)

        return solve

    # -- the task interface -------------------------------------------------------------
    def loss(self, y_pred, y_true):
        """Surrogate training loss per instance (lower is better), selected by ``surrogate``.

        ``y_true`` from :meth:`prepare_targets` brings the optimal solutions of its cost
        vectors; a plain tensor gets them solved on the spot (and a fresh, seeded pool
        and random stream for this call).

        Parameters
        ----------
        y_pred, y_true : Tensor of shape (batch, m, d)

        Returns
        -------
        Tensor of shape (batch,)
        """
        inputs = self._loss_inputs(y_pred, y_true)
        if inputs is None:
            # NaN predictions give NaN losses: the training loop restores and warns.
            return torch.full_like(y_pred[:, 0, 0], torch.nan)
        return self._surrogate(*inputs)

    def has_loss_gradient(self):
        """Whether :meth:`loss_and_gradient` has a closed form for the chosen surrogate.

        True for SPO+, PFYL, NCE and MSE, whose gradients are differences of solutions
        (see :mod:`sktaskmet.taskmet._dfl_losses`), and for the perturbed regret, whose
        score-function estimate needs no graph; DPO and DBB need their backward pass. A
        mixture has one when every member has.
        """
        surrogates = surrogate_weights(self.surrogate, type(self).__name__)
        return all(name in _CLOSED_FORM_GRADIENTS for name, _ in surrogates)

    def loss_and_gradient(self, y_pred, y_true):
        r"""Surrogate losses per instance and their gradients, without autograd.

        The same values, random draws and solves as :meth:`loss`; the gradient
        :math:`\partial \ell_i / \partial \hat c_i` of each instance's loss comes from its
        closed form (e.g. :math:`2 s (w^\star(c) - w^\star(2\hat c - c))` for SPO+) instead
        of recording and replaying a graph: a training step of a linear model then costs
        a handful of tensor operations. Only when :meth:`has_loss_gradient`.

        Parameters
        ----------
        y_pred, y_true : Tensor of shape (batch, m, d)

        Returns
        -------
        loss : Tensor of shape (batch,)
        gradient : Tensor of shape (batch, m, d)
            NaN where the predictions are not finite.
        """
        if not self.has_loss_gradient():
            raise ValueError(
                f"{type(self).__name__}: surrogate {self.surrogate!r} has no closed-form "
                "gradient; use loss() with autograd."
            )
        inputs = self._loss_inputs(without_graph(y_pred), y_true)
        if inputs is None:
            return torch.full_like(y_pred[:, 0, 0], torch.nan), torch.full_like(y_pred, torch.nan)
        value, gradient = self._surrogate(*inputs, with_gradient=True)
        return value, gradient.reshape(y_pred.shape)

    def _loss_inputs(self, y_pred, y_true):
        """What the surrogates take, checked; None when the predictions are not finite."""
        if not isinstance(y_true, DecisionTargets):
            self._check_batch(y_true, "y_true")
            y_true = self.prepare_targets(y_true)
        context = y_true.context
        # One plain view: every operation on the subclass goes through __torch_function__.
        pred, true = self._pair_costs(y_pred, y_true.as_subclass(torch.Tensor), context.n_costs)
        # pred * 0 is 0 where pred is finite and NaN elsewhere, so the sum is 0 exactly when
        # every prediction is finite: two operations instead of isfinite's five.
        if not float((without_graph(pred) * 0).sum()) == 0:
            return None
        solutions, objectives = y_true.solutions, y_true.objectives
        if solutions.dtype != pred.dtype:  # a call fewer per step when they agree
            solutions, objectives = solutions.to(pred.dtype), objectives.to(pred.dtype)
        return pred, true, solutions, objectives, context, self._solver(context)

    def _pair_costs(self, y_pred, y_true, n_costs):
        """Checked (batch, m, d) predictions and targets as (batch, m * d) cost vectors."""
        for name, y in (("y_pred", y_pred), ("y_true", y_true)):
            if not isinstance(y, torch.Tensor) or y.dim() != 3 or not y.is_floating_point():
                self._check_batch(y, name)  # raises the detailed error
        if y_pred.shape != y_true.shape:
            raise ValueError(
                f"y_pred and y_true must have the same shape; got {tuple(y_pred.shape)} and "
                f"{tuple(y_true.shape)}."
            )
        batch, m, d = y_pred.shape
        if m * d != n_costs:
            raise ValueError(
                f"{type(self).__name__}: y_pred holds cost vectors of length {m * d}, "
                f"expected {n_costs} (shape {tuple(y_pred.shape)})."
            )
        true = y_true.reshape(batch, m * d)
        if true.dtype != y_pred.dtype:
            true = true.to(y_pred.dtype)
        return y_pred.reshape(batch, m * d), true

    def _noise(self, pred, context, n_samples):
        shape = (pred.shape[0], n_samples, pred.shape[1])
        generator = context.generator
        if generator.device != pred.device:
            generator = context.generator = make_generator(
                context.branch_rng.randint(0, 2**31 - 1), pred.device
            )
        return torch.randn(shape, generator=generator, dtype=pred.dtype, device=pred.device)

    def _surrogate(self, pred, true, solutions, objectives, context, solve, with_gradient=False):
        r"""The chosen surrogate's losses, and with ``with_gradient`` their gradients.

        A mixture :math:`\sum_k a_k \ell_k` sums its members' losses (and gradients) with
        their weights; each member draws its own perturbations and solves.
        """
        inputs = pred, true, solutions, objectives, context, solve, with_gradient
        parts = [
            (weight, self._one_surrogate(name, *inputs))
            for name, weight in context.settings["surrogates"]
        ]
        if len(parts) == 1 and parts[0][0] == 1.0:
            return parts[0][1]  # a single surrogate: no weighting on the training step
        if with_gradient:
            return tuple(sum(weight * part[k] for weight, part in parts) for k in (0, 1))
        return sum(weight * part for weight, part in parts)

    def _one_surrogate(
        self, name, pred, true, solutions, objectives, context, solve, with_gradient=False
    ):
        """The losses of surrogate ``name``, and with ``with_gradient`` their gradients."""
        sense, settings = self._sign, context.settings
        grad = {"with_gradient": with_gradient}
        if name == "spo+":
            return spo_plus_loss(pred, true, solutions, solve, sense, **grad)
        if name in ("pfyl", "dpo", "dpo-regret"):
            noise, sigma = self._noise(pred, context, settings["n_samples"]), settings["sigma"]
            if name == "pfyl":
                return perturbed_fenchel_young_loss(
                    pred, solutions, noise, sigma, solve, sense, **grad
                )
            if name == "dpo-regret":
                return perturbed_regret_loss(
                    pred, true, objectives, noise, sigma, solve, sense, **grad
                )
            return perturbed_optimizer_loss(pred, solutions, noise, sigma, solve)
        if name == "dbb":
            return blackbox_loss(pred, true, objectives, settings["dbb_lambda"], solve, sense)
        if name == "nce":
            if context.branch_rng.uniform() <= context.solve_ratio:
                context.add_to_pool(context.solve_exact(pred.detach()))
            pool = context.pool.to(pred.dtype)
            return noise_contrastive_loss(pred, solutions, pool, sense, **grad)
        return squared_error_loss(pred, true, **grad)

    def decide(self, y_pred):
        """Optimal solutions of the predicted cost vectors, shape (batch, d)."""
        costs = self._costs(y_pred, "y_pred").detach()
        self._check_finite(costs, "y_pred")
        return self._solve_exact(costs)

    def quality(self, decisions, y_true):
        """:math:`-s\\, c^\\top w`: minus the cost (minimisation) or the value (maximisation)."""
        true = y_true.reshape(y_true.shape[0], y_true.shape[1] * y_true.shape[2])
        return -self._sign * (decisions.to(true.dtype) * true).sum(-1)

    def optimal_quality(self, y_true):
        costs = self._costs(y_true, "y_true").detach()
        return -self._sign * self.solve(costs)[1]

    def random_quality(self, y_true):
        r"""Mean quality of the decisions that the *other* instances' costs would take.

        :math:`-\frac{s}{b}\sum_j c_i^\top w^\star(c_j)`: the decisions of uninformed
        predictions drawn from the distribution of the costs, exact over the batch (no
        random draws).
        """
        costs = self._costs(y_true, "y_true").detach()
        solutions = self.solve(costs)[0]
        return -self._sign * (costs @ solutions.T).mean(dim=1)

    def regret(self, y_pred, y_true):
        """Regret per instance, :math:`s\\,(c^\\top w^\\star(\\hat c) - z^\\star(c)) \\ge 0`.

        Parameters
        ----------
        y_pred, y_true : Tensor of shape (batch, m, d)

        Returns
        -------
        Tensor of shape (batch,)
        """
        self._check_pair(y_pred, y_true)
        with torch.no_grad():
            return self.optimal_quality(y_true) - self.quality(self.decide(y_pred), y_true)

    def normalized_regret(self, y_pred, y_true):
        r"""PyEPO's normalised regret, :math:`\sum_i \mathrm{regret}_i / \sum_i |z^\star(c_i)|`.

        Parameters
        ----------
        y_pred, y_true : Tensor of shape (batch, m, d)

        Returns
        -------
        float
            0 for optimal decisions; PyEPO adds 1e-8 to the denominator, and so do we.
        """
        regret = self.regret(y_pred, y_true)
        optimum = self.optimal_quality(y_true).abs()
        return float(regret.sum()) / (float(optimum.sum()) + 1e-8)
