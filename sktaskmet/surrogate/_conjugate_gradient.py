r"""Preconditioned conjugate gradients for a batch of symmetric positive definite systems.

The Newton directions of many subset problems are solved together: one system
:math:`H_b x_b = r_b` per subset, each with its own preconditioner, each stopping on its own.
"""

import torch

from ._hessians import cholesky_with_jitter, pretrained_eigenbasis

__all__ = [
    "PRECONDITIONERS",
    "InversePreconditioner",
    "EigenbasisPreconditioner",
    "make_preconditioner",
    "preconditioned_cg",
]

PRECONDITIONERS = ("eigenbasis", "cholesky")

# Gather the matrices of the unfinished systems when they are fewer than 1 / GATHER_RATIO
# of the batch; above that, one batched product over all of them is cheaper.
GATHER_RATIO = 3


class InversePreconditioner:
    """Applies the inverses ``(B, d, d)`` of the subsets' preconditioners."""

    def __init__(self, inverse):
        self.inverse = inverse

    def select(self, keep):
        return InversePreconditioner(self.inverse[keep])

    def __call__(self, r, rows):
        if rows is not None and GATHER_RATIO * rows.shape[0] < r.shape[0]:
            # Applying the preconditioner reads all B matrices; gathering the few that
            # are still needed reads and writes only those.
            z = torch.zeros_like(r)
            z[rows] = torch.matmul(self.inverse[rows], r[rows].unsqueeze(-1)).squeeze(-1)
            return z
        return torch.matmul(self.inverse, r.unsqueeze(-1)).squeeze(-1)


class EigenbasisPreconditioner:
    """``r -> U diag(scale_b) U^T r``: one basis for every subset, a diagonal per subset."""

    def __init__(self, basis, scale):
        self.basis = basis
        self.scale = scale

    def select(self, keep):
        return EigenbasisPreconditioner(self.basis, self.scale[keep])

    def __call__(self, r, rows):
        return ((r @ self.basis) * self.scale) @ self.basis.T


def make_preconditioner(kind, task_share, penalty, pretrained_hessians, eigenbasis=None):
    r"""The preconditioner of each subset, built from its Hessian at ``w = 0``.

    The Hessian of subset :math:`b` at the pretrained outputs is
    :math:`H_b = \sum_k s_{bk} H_k + \lambda I`, with :math:`s_{bk}` its share of task
    :math:`k` (``task_share``, shape ``(B, n_tasks)``) and :math:`H_k` the task sums of
    :func:`~._hessians.task_hessians` (``pretrained_hessians``).

    ``"eigenbasis"``: :math:`U\,\mathrm{diag}(U^\top H_b U)^{-1} U^\top` in the
    eigenbasis :math:`U` of :math:`\sum_k H_k` (``eigenbasis = (U, diagonals)`` from
    :func:`~._hessians.pretrained_eigenbasis`, computed when None), where the diagonal is
    the same weighted sum of the task diagonals. ``"cholesky"``: the exact inverse of
    :math:`H_b`, a ``d x d`` factorisation per subset.
    """
    if kind == "eigenbasis":
        if eigenbasis is None:
            eigenbasis = pretrained_eigenbasis(pretrained_hessians)
        basis, diagonals = eigenbasis
        diagonal = task_share @ diagonals + penalty  # (B, d), >= penalty
        # Guard a zero penalty: a direction without curvature gets the largest step that
        # the other directions allow (eps times the largest curvature), not a division by 0.
        tiny = torch.finfo(diagonal.dtype).tiny
        floor = torch.finfo(diagonal.dtype).eps * diagonal.amax(1, keepdim=True).clamp_min(tiny)
        return EigenbasisPreconditioner(basis, 1.0 / diagonal.clamp_min(floor))
    d = pretrained_hessians.shape[-1]
    eye = torch.eye(d, dtype=pretrained_hessians.dtype, device=pretrained_hessians.device)
    pretrained = torch.einsum("bk,kde->bde", task_share, pretrained_hessians)
    return InversePreconditioner(
        torch.cholesky_inverse(cholesky_with_jitter(pretrained + penalty * eye))
    )


def preconditioned_cg(hvp, rhs, precondition, max_iter, rtol):
    """Solve ``H x = rhs`` for a batch of SPD operators by preconditioned conjugate gradients.

    ``hvp(v, rows)`` applies the Hessians of the systems ``rows`` (an index tensor, or None
    for all ``B``) to ``v`` of shape (len(rows), d); ``precondition(r, rows)`` applies the
    preconditioners to ``r`` of shape (B, d) (only the rows ``rows`` are used). Each system
    stops on its own once its residual falls below ``rtol`` times the norm of its right-hand
    side; the Hessian products, the expensive part, are then computed for the unfinished
    systems only.
    """
    # The divisions below are guarded by a floor because torch.where evaluates both of its
    # branches: where a system is finished or has no positive curvature the quotient is
    # discarded, but a 0 / 0 there would still produce NaN (and NaN gradients under
    # autograd). The floor must be a positive number of the working dtype: the smallest
    # normal one, finfo.tiny, changes no quotient that is kept (a kept denominator is a
    # positive curvature or a positive r^T M r far above it). A literal such as 1e-300
    # rounds to 0 in float32 and guards nothing.
    tiny = torch.finfo(rhs.dtype).tiny
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = precondition(r, None)
    p = z.clone()
    rz = (r * z).sum(1)
    target = rtol * rhs.norm(dim=1)
    done = r.norm(dim=1) <= target
    for _ in range(max_iter):
        if bool(done.all()):
            break
        rows = None
        if bool(done.any()):
            rows = torch.nonzero(~done).squeeze(1)
            hp = torch.zeros_like(p)
            hp[rows] = hvp(p[rows], rows)
        else:
            hp = hvp(p, None)
        curvature = (p * hp).sum(1)
        alpha = torch.where(done | (curvature <= 0), 0.0, rz / curvature.clamp_min(tiny))
        x = x + alpha.unsqueeze(1) * p
        r = r - alpha.unsqueeze(1) * hp
        done = done | (r.norm(dim=1) <= target) | (curvature <= 0)
        z = precondition(r, rows)
        rz_new = (r * z).sum(1)
        beta = torch.where(done, 0.0, rz_new / rz.clamp_min(tiny))
        p = z + beta.unsqueeze(1) * p
        rz = rz_new
    return x
