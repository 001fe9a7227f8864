r"""The global SCML recursion as one fused GPU kernel (Triton).

Why a kernel
------------
An iteration of the global RDA recursion (see :mod:`sktaskmet.scml._rda`) is a handful
of operations on vectors of length :math:`K`, and each depends on the previous iterate
(which hinges of the mini-batch are active). Issued as separate torch operations on a GPU,
every iteration costs a dozen kernel launches of a few microseconds each while the
arithmetic takes nanoseconds: 10000 iterations take over a second, several times longer
than on one CPU core. Here one program runs a whole block of iterations with the state
(:math:`h`, :math:`Q`, :math:`u` and the running sum of :math:`u`) held in registers; per
iteration it reads the mini-batch's rows :math:`D_t` once and does the arithmetic of the
update, so the launch cost is paid once per block.

For iteration :math:`t` with mini-batch rows :math:`D_{t,1}, \dots, D_{t,b}`:

.. math::

    m_j = D_{t,j}^\top u, \qquad
    g = \sum_{j:\, m_j > -\gamma} D_{t,j}, \qquad
    h \leftarrow h - g - \beta b, \qquad Q \leftarrow Q + g^2,

    u \leftarrow \frac{\max(h, 0)}{\delta b + \sqrt{Q}}, \qquad
    \textstyle\sum u \leftarrow \sum u + u,

the same recursion, operation for operation, as the numpy and torch versions of
``GlobalRDAState``. Only the summation order of the reductions differs, so the iterates
agree to round-off.

Triton is imported only when a CUDA solve asks for the kernel (it ships with PyTorch's
CUDA builds on Linux); without it the solver falls back to torch operations. Setting the
environment variable ``TRITON_INTERPRET=1`` runs the kernel in Triton's interpreter on CPU
tensors, which is how its tests run on machines without a GPU.
"""

import functools
import os

import torch

__all__ = ["BLOCK_ENTRIES", "fused_kernel_available", "kernel_constants", "run_rda_block"]

# Entries of D_t per block on the GPU (16 MiB in float64): a whole span of iterations at the
# usual problem sizes, so a span costs one launch and a few gathers.
BLOCK_ENTRIES = 2**21
# Largest register tile of D_t values (batch rows x basis columns, padded to powers of two)
# that one program holds; beyond it the tile would spill and the torch fallback is used.
MAX_TILE = 2**15


def _interpreting():
    """Whether Triton runs kernels in its interpreter (on CPU tensors, for tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=1)
def _triton():
    try:
        import triton
        import triton.language as tl
    except ImportError:  # CPU builds of torch, or platforms without Triton
        return None
    return triton, tl


def _tile_shape(batch_size, n_basis):
    """(rows, columns) of the register tile: each padded to a power of two, as
    ``tl.arange`` requires, and to at least 2 x 16 so that the tile spans whole warps."""
    return (
        max(2, 1 << (int(batch_size) - 1).bit_length()),
        max(16, 1 << (int(n_basis) - 1).bit_length()),
    )


def fused_kernel_available(device, batch_size, n_basis, dtype):
    """Whether :func:`run_rda_block` can run the recursion for this solve.

    True on a CUDA device (or any device under ``TRITON_INTERPRET=1``) when Triton can be
    imported, the dtype is float32 or float64, and the padded mini-batch tile
    fits in registers.
    """
    device = torch.device(device)
    if device.type != "cuda" and not _interpreting():
        return False
    if dtype not in (torch.float32, torch.float64) or _triton() is None:
        return False
    rows, columns = _tile_shape(batch_size, n_basis)
    return rows * columns <= MAX_TILE


@functools.lru_cache(maxsize=1)
def _compiled_kernel():
    triton, tl = _triton()

    # Triton specialises integer arguments equal to 1 or divisible by 16; the number of
    # iterations varies from block to block and gains nothing from it, so it is left out
    # (one compiled kernel per tile shape instead of several).
    @triton.jit(do_not_specialize=["n_iterations"])
    def rda_block_kernel(
        diffs_ptr,
        h_ptr,
        sq_sum_ptr,
        u_ptr,
        u_sum_ptr,
        n_iterations,
        batch_size,
        n_basis,
        constants_ptr,
        ROWS: tl.constexpr,
        COLUMNS: tl.constexpr,
    ):
        rows = tl.arange(0, ROWS)
        columns = tl.arange(0, COLUMNS)
        in_basis = columns < n_basis
        in_tile = (rows[:, None] < batch_size) & in_basis[None, :]
        offsets = rows[:, None] * n_basis + columns[None, :]
        # -gamma, beta * b and delta * b, read from memory so that they keep the dtype of
        # the state (a Python float argument would be rounded to float32).
        threshold = tl.load(constants_ptr)
        rate = tl.load(constants_ptr + 1)
        slack = tl.load(constants_ptr + 2)
        h = tl.load(h_ptr + columns, mask=in_basis, other=0.0)
        sq_sum = tl.load(sq_sum_ptr + columns, mask=in_basis, other=0.0)
        u = tl.load(u_ptr + columns, mask=in_basis, other=0.0)
        u_sum = tl.load(u_sum_ptr + columns, mask=in_basis, other=0.0)
        step = batch_size * n_basis
        for t in range(0, n_iterations):
            # Padded rows and columns load zeros: they add nothing to the margins or to g,
            # and padded columns keep u = 0 (h only decreases there).
            batch = tl.load(diffs_ptr + t * step + offsets, mask=in_tile, other=0.0)
            margins = tl.sum(batch * u[None, :], axis=1)
            active = margins > threshold
            grad = tl.sum(tl.where(active[:, None], batch, 0.0), axis=0)
            h = h - grad - rate
            sq_sum = sq_sum + grad * grad
            u = tl.maximum(h, 0.0) / (tl.sqrt(sq_sum) + slack)
            u_sum = u_sum + u
        tl.store(h_ptr + columns, h, mask=in_basis)
        tl.store(sq_sum_ptr + columns, sq_sum, mask=in_basis)
        tl.store(u_ptr + columns, u, mask=in_basis)
        tl.store(u_sum_ptr + columns, u_sum, mask=in_basis)

    return rda_block_kernel


def kernel_constants(gamma, rate, slack, like):
    r""":math:`(-\gamma, \beta b, \delta b)` as a tensor of the state's dtype and device."""
    return torch.tensor([-gamma, rate, slack], dtype=like.dtype, device=like.device)


def run_rda_block(diffs, h, sq_sum, u, u_sum, constants):
    r"""Advance the recursion over ``diffs`` in place, in one kernel launch.

    Parameters
    ----------
    diffs : torch.Tensor of shape (n_iterations, batch_size, n_basis)
        The mini-batch rows :math:`D_t`, iteration after iteration.
    h, sq_sum, u, u_sum : torch.Tensor of shape (n_basis,)
        The state, updated in place (same device and dtype as ``diffs``, contiguous).
    constants : torch.Tensor of shape (3,)
        From :func:`kernel_constants`.
    """
    n_iterations, batch_size, n_basis = diffs.shape
    if n_iterations == 0:
        return
    rows, columns = _tile_shape(batch_size, n_basis)
    # One program: the iterations are sequential. More warps spread the tile's reductions.
    _compiled_kernel()[(1,)](
        diffs.contiguous(),
        h,
        sq_sum,
        u,
        u_sum,
        n_iterations,
        batch_size,
        n_basis,
        constants,
        ROWS=rows,
        COLUMNS=columns,
        num_warps=8 if rows * columns >= 4096 else 4,
    )
