r"""Batched damped Newton solve of the linearised, projected subset problems.

Each subset :math:`b` defines the strongly convex problem (for ``penalty > 0``)

.. math::

    \min_w \sum_i a_{bi}\, \ell\big(f_{\theta_0}(x_i) + G(x_i) w,\ y_i\big)
    + \frac{\lambda}{2} \lVert w \rVert^2 ,

with :math:`a_{bi}` the normalised weight of the task of example :math:`i` in subset
:math:`b`. All subsets of a batch are solved together by Newton's method (conjugate gradients
preconditioned by the Hessian at ``w = 0``, or Cholesky solves of ``d x d`` systems), with
Armijo backtracking per subset; subsets leave the batch as they converge.
"""

import warnings

import torch

from ..exceptions import NonFiniteWarning
from ._conjugate_gradient import (
    EigenbasisPreconditioner,
    InversePreconditioner,
    preconditioned_cg,
)
from ._hessians import cholesky_with_jitter, exact_subset_hessians, pretrained_eigenbasis

__all__ = ["solve_subsets"]


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
        From :func:`task_hessians`; needed for ``solver="newton-cg"``.
    preconditioner : {"eigenbasis", "cholesky"}
        ``"cholesky"``: the inverse of each subset's Hessian at ``w = 0`` (a ``d^3``
        factorisation per subset; each application reads a ``d x d`` matrix per subset).
        ``"eigenbasis"``: that Hessian's diagonal in the eigenbasis ``U`` of the summed
        task Hessians, :math:`U\\,\\mathrm{diag}(U^\\top H_s U + \\lambda)^{-1} U^\\top`,
        where the diagonal is a weighted sum of the per-task diagonals: ``O(d)`` per subset
        to build, two ``d x d`` matrix products for the whole batch to apply. Exact when the
        subset's Hessian shares the eigenvectors (e.g. all tasks with equal weights).
    eigenbasis : tuple of torch.Tensor, optional
        ``(U, diagonals)`` from :func:`pretrained_eigenbasis`, to reuse across batches;
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
    solution : torch.Tensor of shape (B, d)
    n_iter : torch.Tensor of shape (B,), int64
    converged : torch.Tensor of shape (B,), bool
    """
    B = subset_weights.shape[0]
    d = jacobians.shape[-1]
    dtype, device = jacobians.dtype, jacobians.device
    tiny = torch.finfo(dtype).tiny
    example_weights = subset_weights[:, task_index]  # (B, n)
    totals = example_weights.sum(1, keepdim=True)
    # An empty subset trains on nothing: its data term vanishes and w = 0 is the solution.
    example_weights = torch.where(totals > 0, example_weights / totals.clamp_min(tiny), 0.0)
    eye = torch.eye(d, dtype=dtype, device=device)

    n, n_outputs = outputs.shape
    # Plain matrix products on the (n * C, d) matrix: no layout copies of the results.
    flat = jacobians.reshape(n * n_outputs, d)

    def apply_jacobians(v):  # (b, d) -> (b, n, C): G_i v for every example
        return (v @ flat.T).view(v.shape[0], n, n_outputs)

    def apply_transposed(u):  # (b, n, C) -> (b, d): sum_i G_i^T u_i
        return u.reshape(u.shape[0], n * n_outputs) @ flat

    def objective(w, weights):
        out = outputs + apply_jacobians(w)
        data = (weights * loss.value(out, y)).sum(1)
        return data + 0.5 * penalty * (w * w).sum(1), out

    solution = torch.zeros(B, d, dtype=dtype, device=device)
    n_iter = torch.zeros(B, dtype=torch.int64, device=device)
    converged = torch.zeros(B, dtype=torch.bool, device=device)

    if solver == "newton-cg" and preconditioner not in ("eigenbasis", "cholesky"):
        raise ValueError(
            f"preconditioner must be 'eigenbasis' or 'cholesky'; got {preconditioner!r}."
        )
    precondition = None
    if solver == "newton-cg":
        task_share = torch.where(totals > 0, subset_weights / totals.clamp_min(tiny), 0.0)
        if preconditioner == "eigenbasis":
            if eigenbasis is None:
                eigenbasis = pretrained_eigenbasis(pretrained_hessians)
            basis, diagonals = eigenbasis
            diagonal = task_share @ diagonals + penalty  # (B, d), >= penalty
            # Guard a zero penalty: directions without curvature get the largest step.
            floor = torch.finfo(dtype).eps * diagonal.amax(1, keepdim=True).clamp_min(tiny)
            precondition = EigenbasisPreconditioner(basis, 1.0 / diagonal.clamp_min(floor))
        else:
            pretrained = torch.einsum("bk,kde->bde", task_share, pretrained_hessians)
            precondition = InversePreconditioner(
                torch.cholesky_inverse(cholesky_with_jitter(pretrained + penalty * eye))
            )

    # The state of the subsets still being solved; finished ones leave the batch, so that
    # the work of an iteration follows the number of unfinished subsets.
    rows = torch.arange(B, device=device)
    weights = example_weights
    w = torch.zeros(B, d, dtype=dtype, device=device)
    value, out = objective(w, weights)

    for iteration in range(max_iter + 1):
        grad_out = loss.grad(out, y) * weights.unsqueeze(-1)
        grad = apply_transposed(grad_out) + penalty * w
        if solver == "newton":
            hess = exact_subset_hessians(jacobians, out, y, weights, loss) + penalty * eye
            step = -torch.cholesky_solve(grad.unsqueeze(-1), cholesky_with_jitter(hess)).squeeze(-1)
        else:
            curvature = loss.hessian_operator(out, y)

            def hvp(v, rows, curvature=curvature, weights=weights):
                u = apply_jacobians(v)
                if rows is not None:
                    weights = weights[rows]
                hu = curvature(u, rows) * weights.unsqueeze(-1)
                return apply_transposed(hu) + penalty * v

            # Forcing sequence: loose solves far from the optimum, tight ones near it.
            grad_norm = float(grad.norm(dim=1).max())
            rtol = min(0.1, max(grad_norm**0.5, 1e-6))
            step = -preconditioned_cg(hvp, grad, precondition, cg_max_iter, rtol)
        decrement = -(grad * step).sum(1)  # squared Newton decrement, >= 0
        # Below a few ulps of the objective no step can be measured: count that as converged.
        floor = torch.clamp(4 * torch.finfo(dtype).eps * value.abs(), min=tol)
        finished = (0.5 * decrement <= floor) | ~torch.isfinite(decrement)
        if iteration < max_iter:
            # Armijo backtracking, a step length per subset.
            length = torch.ones_like(value)
            accepted = finished.clone()
            new_w, new_value, new_out = w, value, out
            for _ in range(40):
                trial_w = w + length.unsqueeze(1) * step
                trial_value, trial_out = objective(trial_w, weights)
                ok = (
                    torch.isfinite(trial_value)
                    & (trial_value <= value - 1e-4 * length * decrement)
                    & ~accepted
                )
                new_w = torch.where(ok.unsqueeze(1), trial_w, new_w)
                new_value = torch.where(ok, trial_value, new_value)
                new_out = torch.where(ok[:, None, None], trial_out, new_out)
                accepted = accepted | ok
                if bool(accepted.all()):
                    break
                length = torch.where(accepted, length, 0.5 * length)
            # No step decreases the objective: the iterate is optimal to working precision.
            stalled = ~accepted
            n_iter[rows] += (~finished & accepted).to(torch.int64)
            finished = finished | stalled
            converged[rows] = finished
            solution[rows] = torch.where(finished.unsqueeze(1), w, new_w)
            w, value, out = new_w, new_value, new_out
        else:
            converged[rows] = finished
            solution[rows] = w
            break
        if bool(finished.all()):
            break
        if bool(finished.any()):
            keep = ~finished
            rows, w, value, out = rows[keep], w[keep], value[keep], out[keep]
            weights = weights[keep]
            if precondition is not None:
                precondition = precondition.select(keep)
    w = solution

    bad = ~torch.isfinite(w).all(1)
    if bool(bad.any()):
        warnings.warn(
            f"{int(bad.sum())} subset problem(s) produced non-finite parameters; their "
            "solution was reset to the pretrained parameters (w = 0).",
            NonFiniteWarning,
            stacklevel=3,
        )
        w = torch.where(bad.unsqueeze(1), 0.0, w)
    return w, n_iter, converged
