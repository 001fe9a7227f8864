r"""Batched damped Newton solve of the linearised, projected subset problems.

Each subset :math:`b` defines the problem (strongly convex for the built-in losses when
``penalty > 0``)

.. math::

    \min_w \mathcal L_b(w) = \sum_i a_{bi}\, \ell\big(f_{\theta_0}(x_i) + G(x_i) w,\ y_i\big)
    + \frac{\lambda}{2} \lVert w \rVert^2 ,

with :math:`a_{bi}` the normalised weight of the task of example :math:`i` in subset
:math:`b` (:class:`~._linearized.LinearizedObjective`). All subsets of a batch are solved
together by Newton's method: at every iteration each unfinished subset

1. computes its Newton direction :math:`p = -H^{-1} \nabla \mathcal L` (conjugate gradients
   preconditioned by the Hessian at ``w = 0``, or a Cholesky solve of the formed Hessian);
2. stops when half its squared Newton decrement :math:`-\nabla \mathcal L^\top p`, the
   decrease that the quadratic model predicts, is below ``tol`` or below what the working
   precision can measure;
3. otherwise takes the longest step :math:`t p`, :math:`t = 1, 1/2, 1/4, \dots`, that
   decreases the objective by at least a fraction of the predicted decrease (Armijo).

Subsets leave the batch as they finish, so the work of an iteration follows the number of
unfinished ones. A subset whose direction is NaN or infinite (a loss whose derivatives fail
where its value does not) stops at its last finite iterate and is reported in
``non_finite``: the batch holds independent problems, so one failure stops only its own.
"""

from typing import NamedTuple

import torch

from ._conjugate_gradient import PRECONDITIONERS, make_preconditioner, preconditioned_cg
from ._hessians import cholesky_with_jitter
from ._linearized import LinearizedObjective, subset_example_weights

__all__ = ["SubsetSolution", "solve_subsets"]

# Armijo's sufficient-decrease fraction: a step t p is accepted when it decreases the
# objective by at least ARMIJO_FRACTION * t times the decrease predicted by the Newton
# model (the usual c1 = 1e-4 of line searches; Newton steps near the optimum pass at t = 1).
ARMIJO_FRACTION = 1e-4
# Each rejected trial halves the step; after MAX_BACKTRACKS halvings (t = 2^-40, about
# 1e-12) a step that still decreases nothing has no measurable effect, and the iterate is
# taken as optimal to working precision.
BACKTRACK_FACTOR = 0.5
MAX_BACKTRACKS = 40
# Inexact Newton: conjugate gradients stop at a relative residual of sqrt(||grad||),
# clipped to [FORCING_MIN, FORCING_MAX]: loose solves far from the optimum, tight ones near
# it, which keeps the superlinear convergence of Newton's method at a fraction of the work.
FORCING_MAX = 0.1
FORCING_MIN = 1e-6
# A predicted decrease below STALL_ULPS units in the last place of the objective cannot be
# measured by comparing objective values: the subset counts as converged.
STALL_ULPS = 4


class SubsetSolution(NamedTuple):
    """What :func:`solve_subsets` returns, one entry per subset.

    Attributes
    ----------
    solution : torch.Tensor of shape (B, d)
        The minimisers (the last finite iterate of a subset that met NaN or infinity; 0
        where no finite iterate exists).
    n_iter : torch.Tensor of shape (B,), int64
        Newton steps taken.
    converged : torch.Tensor of shape (B,), bool
        Whether the stopping rule was met (never for a ``non_finite`` subset).
    non_finite : torch.Tensor of shape (B,), bool
        Subsets whose Newton direction, or solution, was NaN or infinite.
    """

    solution: torch.Tensor
    n_iter: torch.Tensor
    converged: torch.Tensor
    non_finite: torch.Tensor


class _ActiveSubsets:
    """The unfinished subsets of a batch: their rows in it, iterates, values and weights."""

    def __init__(self, rows, w, value, out, weights, precondition):
        self.rows = rows
        self.w = w
        self.value = value
        self.out = out
        self.weights = weights
        self.precondition = precondition

    def select(self, keep):
        """The subsets ``keep`` (a boolean mask), with their preconditioners."""
        precondition = self.precondition
        if precondition is not None:
            precondition = precondition.select(keep)
        return _ActiveSubsets(
            self.rows[keep],
            self.w[keep],
            self.value[keep],
            self.out[keep],
            self.weights[keep],
            precondition,
        )


def _newton_direction(objective, active, solver, cg_max_iter):
    """Gradients and Newton directions of the active subsets, both (b, d)."""
    grad = objective.gradient(active.w, active.out, active.weights)
    if solver == "newton":
        factor = cholesky_with_jitter(objective.hessians(active.out, active.weights))
        return grad, -torch.cholesky_solve(grad.unsqueeze(-1), factor).squeeze(-1)
    hvp = objective.hessian_product(active.out, active.weights)
    grad_norm = float(grad.norm(dim=1).max())
    rtol = min(FORCING_MAX, max(grad_norm**0.5, FORCING_MIN))
    return grad, -preconditioned_cg(hvp, grad, active.precondition, cg_max_iter, rtol)


def _stopped(decrement, value, tol):
    """Subsets whose predicted decrease is below ``tol`` or unmeasurable, or not finite."""
    floor = torch.clamp(STALL_ULPS * torch.finfo(value.dtype).eps * value.abs(), min=tol)
    return (0.5 * decrement <= floor) | ~torch.isfinite(decrement)


def _backtrack(objective, active, step, decrement, finished):
    """Armijo backtracking, one step length per subset.

    Returns the new iterates, values and outputs (unchanged for finished subsets and for
    those where no trial step was accepted) and the mask of accepted steps. A trial with a
    NaN or infinite objective is never accepted.
    """
    length = torch.ones_like(active.value)
    accepted = finished.clone()
    new_w, new_value, new_out = active.w, active.value, active.out
    for _ in range(MAX_BACKTRACKS):
        trial_w = active.w + length.unsqueeze(1) * step
        trial_value, trial_out = objective.value(trial_w, active.weights)
        ok = (
            torch.isfinite(trial_value)
            & (trial_value <= active.value - ARMIJO_FRACTION * length * decrement)
            & ~accepted
        )
        new_w = torch.where(ok.unsqueeze(1), trial_w, new_w)
        new_value = torch.where(ok, trial_value, new_value)
        new_out = torch.where(ok[:, None, None], trial_out, new_out)
        accepted = accepted | ok
        if bool(accepted.all()):
            break
        length = torch.where(accepted, length, BACKTRACK_FACTOR * length)
    return new_w, new_value, new_out, accepted


def _start(objective, example_weights, precondition):
    """Every subset active at ``w = 0``."""
    B = example_weights.shape[0]
    device = example_weights.device
    w = torch.zeros(B, objective.dim, dtype=example_weights.dtype, device=device)
    value, out = objective.value(w, example_weights)
    rows = torch.arange(B, device=device)
    return _ActiveSubsets(rows, w, value, out, example_weights, precondition)


def _finish(solution, n_iter, converged, non_finite):
    """Reset solutions that are not finite to 0 (the pretrained model) and flag them."""
    bad = ~torch.isfinite(solution).all(1)
    if bool(bad.any()):
        solution = torch.where(bad.unsqueeze(1), 0.0, solution)
        non_finite = non_finite | bad
    return SubsetSolution(solution, n_iter, converged & ~non_finite, non_finite)


def solve_subsets(
    jacobians,
    outputs,
    y,
    task_index,
    subset_weights,
    *,
    loss,
    penalty,
    solver="newton-cg",
    pretrained_hessians=None,
    preconditioner="eigenbasis",
    eigenbasis=None,
    max_iter=100,
    tol=1e-12,
    cg_max_iter=50,
):
    """Minimise the linearised, projected fine-tuning objective of many subsets at once.

    Parameters
    ----------
    jacobians : torch.Tensor of shape (n, C, d)
        Projected output Jacobians of the training examples.
    outputs : torch.Tensor of shape (n, C)
        Pretrained outputs (the offsets).
    y : torch.Tensor with n rows
        Training targets.
    task_index : torch.Tensor of shape (n,), int64
        Task of each training example, in ``range(n_tasks)``.
    subset_weights : torch.Tensor of shape (B, n_tasks)
        Task weights in [0, 1], one row per subset.
    loss : loss object from :func:`make_loss`
    penalty : float
        :math:`\\lambda` of the L2 penalty on ``w``.
    solver : {"newton-cg", "newton"}
        How the Newton direction is computed. ``"newton-cg"``: preconditioned conjugate
        gradients on Hessian-vector products (``2 n C d`` work each), preconditioned with
        the Hessian at ``w = 0``, a weighted sum of the ``n_tasks`` matrices in
        ``pretrained_hessians`` (see ``preconditioner``). ``"newton"``: the Hessian is
        formed and factored at every iteration (``n C d^2`` work per subset and iteration).
    pretrained_hessians : torch.Tensor of shape (n_tasks, d, d)
        From :func:`~._hessians.task_hessians`; needed for ``solver="newton-cg"``.
    preconditioner : {"eigenbasis", "cholesky"}
        ``"cholesky"``: the inverse of each subset's Hessian at ``w = 0`` (a ``d^3``
        factorisation per subset; each application reads a ``d x d`` matrix per subset).
        ``"eigenbasis"``: that Hessian's diagonal in the eigenbasis ``U`` of the summed
        task Hessians, :math:`U\\,\\mathrm{diag}(U^\\top H_s U + \\lambda)^{-1} U^\\top`,
        where the diagonal is a weighted sum of the per-task diagonals: ``O(d)`` per subset
        to build, two ``d x d`` matrix products for the whole batch to apply. Exact when the
        subset's Hessian shares the eigenvectors (e.g. all tasks with equal weights).
    eigenbasis : tuple of torch.Tensor, optional
        ``(U, diagonals)`` from :func:`~._hessians.pretrained_eigenbasis`, to reuse across batches;
        computed from ``pretrained_hessians`` when None.
    max_iter : int
        Newton iterations.
    tol : float
        A subset stops when half its squared Newton decrement (the predicted decrease of
        the objective) falls below ``tol`` (or a few ulps of the objective, whichever is
        larger).
    cg_max_iter : int
        Conjugate-gradient iterations per Newton step.

    Returns
    -------
    SubsetSolution
        ``(solution, n_iter, converged, non_finite)``, one entry per subset.
    """
    if solver == "newton-cg" and preconditioner not in PRECONDITIONERS:
        raise ValueError(
            f"preconditioner must be 'eigenbasis' or 'cholesky'; got {preconditioner!r}."
        )
    B = subset_weights.shape[0]
    example_weights, task_share = subset_example_weights(subset_weights, task_index)
    objective = LinearizedObjective(jacobians, outputs, y, loss, penalty)
    precondition = None
    if solver == "newton-cg":
        precondition = make_preconditioner(
            preconditioner, task_share, penalty, pretrained_hessians, eigenbasis
        )
    active = _start(objective, example_weights, precondition)
    solution = torch.zeros_like(active.w)
    n_iter = torch.zeros(B, dtype=torch.int64, device=solution.device)
    converged = torch.zeros(B, dtype=torch.bool, device=solution.device)
    non_finite = torch.zeros_like(converged)

    for iteration in range(max_iter + 1):
        grad, step = _newton_direction(objective, active, solver, cg_max_iter)
        decrement = -(grad * step).sum(1)  # squared Newton decrement, >= 0
        finished = _stopped(decrement, active.value, tol)
        non_finite[active.rows] = ~torch.isfinite(decrement)
        if iteration == max_iter:
            converged[active.rows] = finished
            solution[active.rows] = active.w
            break
        new_w, new_value, new_out, accepted = _backtrack(
            objective, active, step, decrement, finished
        )
        n_iter[active.rows] += (~finished & accepted).to(torch.int64)
        # No step decreases the objective: the iterate is optimal to working precision.
        finished = finished | ~accepted
        converged[active.rows] = finished
        solution[active.rows] = torch.where(finished.unsqueeze(1), active.w, new_w)
        active.w, active.value, active.out = new_w, new_value, new_out
        if bool(finished.all()):
            break
        if bool(finished.any()):
            active = active.select(~finished)
    return _finish(solution, n_iter, converged, non_finite)
