r"""Preconditioned conjugate gradients for a batch of symmetric positive definite systems.

The Newton directions of many subset problems are solved together: one system
:math:`H_b x_b = r_b` per subset, each with its own preconditioner, each stopping on its own.
"""

import torch

__all__ = ["InversePreconditioner", "EigenbasisPreconditioner", "preconditioned_cg"]


class InversePreconditioner:
    """Applies the inverses ``(B, d, d)`` of the subsets' preconditioners."""

    def __init__(self, inverse):
        self.inverse = inverse

    def select(self, keep):
        return InversePreconditioner(self.inverse[keep])

    def __call__(self, r, rows):
        if rows is not None and 3 * rows.shape[0] < r.shape[0]:
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


def preconditioned_cg(hvp, rhs, precondition, max_iter, rtol):
    """Solve ``H x = rhs`` for a batch of SPD operators by preconditioned conjugate gradients.

    ``hvp(v, rows)`` applies the Hessians of the systems ``rows`` (an index tensor, or None
    for all ``B``) to ``v`` of shape (len(rows), d); ``precondition(r, rows)`` applies the
    preconditioners to ``r`` of shape (B, d) (only the rows ``rows`` are used). Each system
    stops on its own once its residual falls below ``rtol`` times the norm of its right-hand
    side; the Hessian products, the expensive part, are then computed for the unfinished
    systems only.
    """
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
        alpha = torch.where(done | (curvature <= 0), 0.0, rz / curvature.clamp_min(1e-300))
        x = x + alpha.unsqueeze(1) * p
        r = r - alpha.unsqueeze(1) * hp
        done = done | (r.norm(dim=1) <= target) | (curvature <= 0)
        z = precondition(r, rows)
        rz_new = (r * z).sum(1)
        beta = torch.where(done, 0.0, rz_new / rz.clamp_min(1e-300))
        p = z + beta.unsqueeze(1) * p
        rz = rz_new
    return x
