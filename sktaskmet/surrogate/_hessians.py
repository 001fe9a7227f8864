r"""Hessians of the linearised, projected subset objectives.

With projected Jacobians :math:`G_i` (``C x d``) and output Hessians :math:`\nabla^2 \ell_i`
(``C x C``), the Hessian of a subset's data term is :math:`\sum_i a_i G_i^\top
\nabla^2 \ell_i G_i`. At the pretrained outputs (``w = 0``) it is a weighted sum of the
per-task sums of :func:`task_hessians`, which the preconditioners of the Newton solve reuse.
"""

import torch

__all__ = [
    "task_hessians",
    "pretrained_eigenbasis",
    "exact_subset_hessians",
    "cholesky_with_jitter",
]

# Subsets whose (B, n, C, C) output Hessians are formed at once by exact_subset_hessians:
# bounds that temporary to HESSIAN_CHUNK * n * C * C numbers.
HESSIAN_CHUNK = 8

# cholesky_with_jitter: the first jitter is sqrt(eps) times the mean absolute diagonal (at
# least 1, so that a tiny matrix still gets a jitter that fixes rounding), and each failed
# attempt multiplies it by JITTER_GROWTH, up to JITTER_ATTEMPTS attempts: the last one adds
# sqrt(eps) * 1e14 times that scale (about 1e6 in float64), far more than the rounding
# errors of a positive semi-definite Hessian that it is meant to absorb.
JITTER_ATTEMPTS = 8
JITTER_GROWTH = 100.0
JITTER_MIN_SCALE = 1.0


def task_hessians(jacobians, outputs, y, task_index, n_tasks, loss):
    """Per-task sums of :math:`G_i^\\top \\nabla^2 \\ell_i\\, G_i` at the pretrained outputs.

    Returns a tensor of shape ``(n_tasks, d, d)``: the Hessian of a subset's objective at
    ``w = 0`` is a weighted sum of these plus the penalty.
    """
    curvature = loss.hessian(outputs, y)  # (n, C, C)
    weighted = torch.einsum("icj,ijd->icd", curvature, jacobians)  # (n, C, d)
    d = jacobians.shape[-1]
    result = torch.zeros(n_tasks, d, d, dtype=jacobians.dtype, device=jacobians.device)
    for k in range(n_tasks):
        rows = task_index == k
        g = jacobians[rows].reshape(-1, d)
        h = weighted[rows].reshape(-1, d)
        result[k] = g.T @ h
    return 0.5 * (result + result.transpose(1, 2))


def exact_subset_hessians(jacobians, out, y, example_weights, loss, chunk=HESSIAN_CHUNK):
    """Hessian of the data term for each subset: ``sum_i a_bi G_i^T H_bi G_i`` (B, d, d)."""
    d = jacobians.shape[-1]
    blocks = []
    for start in range(0, out.shape[0], chunk):
        curvature = loss.hessian(out[start : start + chunk], y)  # (b, n, C, C)
        curvature = curvature * example_weights[start : start + chunk, :, None, None]
        weighted = torch.einsum("bicj,ijd->bicd", curvature, jacobians)
        blocks.append(torch.einsum("icd,bice->bde", jacobians, weighted))
    hess = torch.cat(blocks, 0) if blocks else jacobians.new_zeros(0, d, d)
    return 0.5 * (hess + hess.transpose(1, 2))


def cholesky_with_jitter(matrix):
    """Cholesky factors of a batch of symmetric matrices, adding jitter where one fails."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if bool((info > 0).any()):
        d = matrix.shape[-1]
        eye = torch.eye(d, dtype=matrix.dtype, device=matrix.device)
        scale = matrix.diagonal(dim1=-2, dim2=-1).abs().mean(-1).clamp_min(JITTER_MIN_SCALE)
        jitter = torch.finfo(matrix.dtype).eps ** 0.5
        for _ in range(JITTER_ATTEMPTS):
            bad = info > 0
            if not bool(bad.any()):
                break
            fixed = matrix[bad] + (jitter * scale[bad])[:, None, None] * eye
            factor_bad, info_bad = torch.linalg.cholesky_ex(fixed)
            factor[bad] = factor_bad
            info[bad] = info_bad
            jitter *= JITTER_GROWTH
    return factor


def pretrained_eigenbasis(pretrained_hessians):
    """Eigenvectors of the summed task Hessians and each task's diagonal in that basis.

    Returns ``U`` of shape ``(d, d)`` and ``diagonals`` of shape ``(n_tasks, d)`` with
    ``diagonals[t, k] = u_k^T H_t u_k``, so that the diagonal of any weighted sum of the
    task Hessians in the basis ``U`` is the same weighted sum of the rows of ``diagonals``.
    """
    _, basis = torch.linalg.eigh(pretrained_hessians.sum(0))
    diagonals = ((pretrained_hessians @ basis) * basis).sum(-2)
    return basis, diagonals
