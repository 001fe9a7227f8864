r"""Reducing the dimension of the Jacobians: random projections, or an exact basis.

A random projection :math:`P` of shape ``(n_params, d)`` with :math:`E[P P^\top] = I` keeps
inner products of gradients in expectation (Johnson-Lindenstrauss); without a projection,
the basis of the span of the training Jacobian rows loses nothing when it is smaller than
the parameter space.
"""

import math

import torch

__all__ = ["SparseProjection", "random_projection", "row_space_basis"]


class SparseProjection:
    """A CountSketch projection: parameter ``j`` goes to bucket ``h(j)`` with sign ``s(j)``.

    As a matrix, ``P[j, h(j)] = s(j)`` and every other entry is 0, so ``E[P P^T] = I`` like
    the dense projections, while ``J @ P`` costs one scatter-add of the columns of ``J``
    (``n_params`` operations per row instead of ``n_params * dim``).
    """

    def __init__(self, buckets, signs, dim):
        self.buckets = buckets
        self.signs = signs
        self.dim = dim
        self.shape = (buckets.shape[0], dim)

    def apply(self, jac):
        """``jac @ P`` for ``jac`` of shape (..., n_params)."""
        out = jac.new_zeros(*jac.shape[:-1], self.dim)
        return out.index_add_(jac.ndim - 1, self.buckets, jac * self.signs)

    def dense(self):
        matrix = torch.zeros(self.shape, dtype=self.signs.dtype, device=self.signs.device)
        matrix[torch.arange(self.shape[0], device=self.signs.device), self.buckets] = self.signs
        return matrix


def random_projection(n_params, dim, kind, generator, dtype, device):
    """A ``(n_params, dim)`` Johnson-Lindenstrauss projection with :math:`E[P P^\\top] = I`.

    ``"rademacher"`` and ``"gaussian"`` are dense with entries of variance ``1/dim``;
    ``"sparse"`` is a :class:`SparseProjection` (CountSketch). In every case inner products
    of projected gradients are unbiased estimates of the inner products of the full
    gradients.
    """
    if kind == "sparse":
        buckets = torch.randint(0, dim, (n_params,), generator=generator, device=device)
        signs = torch.randint(0, 2, (n_params,), generator=generator, device=device)
        return SparseProjection(buckets, signs.to(dtype).mul_(2.0).sub_(1.0), dim)
    if kind == "rademacher":
        signs = torch.randint(0, 2, (n_params, dim), generator=generator, device=device)
        matrix = signs.to(dtype).mul_(2.0).sub_(1.0)
    else:
        matrix = torch.randn(n_params, dim, generator=generator, device=device, dtype=dtype)
    return matrix.div_(math.sqrt(dim))


def row_space_basis(jacobians):
    """Orthonormal basis of the span of the Jacobian rows, when it is smaller than the space.

    The subset problems are linearised fine-tuning with an isotropic penalty: the gradient
    of every objective is a combination of the training Jacobian rows, so each solution lies
    in their span. With ``Q`` of shape ``(n_params, k)`` whose orthonormal columns span the
    rows, ``J w = (J Q)(Q^T w)`` and ``||w|| = ||Q^T w||`` there, and solving in the
    coordinates ``Q^T w`` is exact. Returns None when ``n * C >= n_params`` (no saving).

    Householder QR of the ``(n_params, n * C)`` matrix of rows gives ``Q`` orthonormal to
    working precision even when the rows are (nearly) dependent; ``k = n * C`` then exceeds
    the rank, which costs a little work and changes nothing.
    """
    n, n_outputs, n_params = jacobians.shape
    if n * n_outputs >= n_params:
        return None
    basis, _ = torch.linalg.qr(jacobians.reshape(n * n_outputs, n_params).T)
    return basis
