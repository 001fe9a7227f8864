r"""Mini-batches of triplets for the RDA solvers, and their distance differences :math:`D_t`.

The hinge term of triplet :math:`t = (a, p, n)` is linear in the weights through

.. math::

    D_{ti} = \big(b_i^\top(x_a - x_p)\big)^2 - \big(b_i^\top(x_a - x_n)\big)^2 .

:math:`D_t` is never stored for all triplets (that matrix has :math:`|C| \times K`
entries): the mini-batch indices of a span of iterations are drawn up front (they do not
depend on the iterate), and each block of a few iterations gathers the rows of
:math:`X B^\top` its triplets need and forms their :math:`D_t` in buffers that stay in
cache.
"""

import torch

__all__ = [
    "BLOCK_ITERATIONS",
    "SPAN_ITERATIONS",
    "BlockDifferences",
    "Projector",
    "distance_differences",
    "index_stream",
    "span_blocks",
    "spans",
]

# Iterations whose mini-batches are gathered and projected in one go: the block of D_t
# (BLOCK_ITERATIONS * batch_size rows of n_basis values) and its three gathered inputs stay
# in cache, and the block is large enough to amortise the per-call cost of the vectorised
# operations that build it (measured: 8 to 24 are alike, 16 marginally the fastest).
BLOCK_ITERATIONS = 16
# Iterations whose mini-batch indices are drawn (and split into the triplets' three columns)
# in one go; a span also ends at each evaluation of the full objective.
SPAN_ITERATIONS = 512
# X B^T is kept for the whole solve when it has at most this many entries; larger problems
# project the rows each block needs instead (same result, more matrix products).
MAX_PROJECTION_ENTRIES = 2**24


def index_stream(n_triplets, generator, device):
    """Endless mini-batch indices: ``take(count)`` returns the next ``count`` of them.

    The indices run through successive random permutations of the triplets (sampling
    without replacement inside an epoch has less variance than independent draws). How the
    draws are split into calls does not change them: the permutations are concatenated.
    """
    buffer = torch.empty(0, dtype=torch.long, device=device)

    def take(count):
        nonlocal buffer
        while buffer.shape[0] < count:
            perm = torch.randperm(n_triplets, generator=generator, device=device)
            buffer = torch.cat([buffer, perm])
        out, buffer = buffer[:count], buffer[count:]
        return out

    return take


class Projector:
    r"""Rows of :math:`X B^\top` on demand: stored when small enough, computed otherwise.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
    basis : torch.Tensor of shape (K, n_features)
    """

    def __init__(self, X, basis):
        self.X, self.basis = X, basis
        small = X.shape[0] * basis.shape[0] <= MAX_PROJECTION_ENTRIES
        self.projected = X @ basis.T if small else None

    def __call__(self, rows, out=None):
        if self.projected is not None:
            if out is None:
                return self.projected[rows]
            return torch.index_select(self.projected, 0, rows, out=out)
        if out is None:
            return self.X[rows] @ self.basis.T
        return torch.mm(torch.index_select(self.X, 0, rows), self.basis.T, out=out)


def distance_differences(project, triplets):
    r""":math:`D_{ti}` for the given triplets, shape ``triplets.shape[:-1] + (K,)``."""
    projected = project(triplets)  # one gather for the three points of every triplet
    proj_a, proj_p, proj_n = projected.unbind(-2)
    # (a - p)^2 - (a - n)^2 = (n - p)(2a - p - n): one product instead of two squares.
    return (proj_n - proj_p) * (2 * proj_a - proj_p - proj_n)


class BlockDifferences:
    r""":math:`D_t` of the mini-batches of a block of iterations, in reused buffers.

    The solvers need the rows :math:`D_t` of the triplets they draw, a block of iterations
    at a time. Each call gathers the three projected points of every triplet of the block
    into preallocated buffers and combines them in place,
    :math:`D_t = (p - n) \odot (p + n - 2a)` with :math:`a, p, n` the projections
    :math:`B x`: no allocation per block, and the buffers (a few hundred rows) stay in
    cache. The returned tensor is a view of a buffer that the next call overwrites.

    Parameters
    ----------
    project : Projector
    max_rows : int
        Largest number of triplets per call.
    """

    def __init__(self, project, max_rows):
        self.project = project
        X, basis = project.X, project.basis
        self._gathered = X.new_empty((3 * max_rows, basis.shape[0]))
        self._out = X.new_empty((max_rows, basis.shape[0]))
        # The views of the buffers for each block length met (two or three per solve):
        # building them costs more than some of the arithmetic on a block.
        self._views = {}

    def _views_for(self, rows):
        views = self._views.get(rows)
        if views is None:
            gathered = self._gathered[: 3 * rows]
            anchor, positive, negative = gathered.view(3, rows, -1).unbind(0)
            views = (gathered, anchor, positive, negative, self._out[:rows])
            self._views[rows] = views
        return views

    def __call__(self, columns):
        """D of the triplets ``columns`` (shape (3, rows): anchors, positives, negatives).

        Returns shape (rows, K).
        """
        gathered, anchor, positive, negative, out = self._views_for(columns.shape[1])
        indices = columns.reshape(-1)
        self.project(indices, out=gathered)  # the three points, in one gather
        torch.add(positive, negative, out=out)
        torch.sub(positive, negative, out=positive)
        torch.sub(out, anchor, alpha=2, out=out)
        torch.mul(out, positive, out=out)  # (p - n)(p + n - 2a) = (a - p)^2 - (a - n)^2
        return out


def spans(start, stop):
    """(first, last) iterations of the spans that cover ``start`` to ``stop``.

    Each span has at most ``SPAN_ITERATIONS`` iterations; the solvers call this between
    two evaluations of the full objective, so a span never crosses one.
    """
    while start < stop:
        end = min(stop, start + SPAN_ITERATIONS)
        yield start, end
        start = end


def span_blocks(triplets, take, n_iterations, batch_size, block_iterations):
    """Draw the mini-batches of a span; yield (n_block, columns) per block of iterations.

    ``columns`` (shape (3, n_block * batch_size)) are the anchors, positives and negatives
    of the block's triplets, iteration after iteration.
    """
    columns = torch.index_select(triplets, 0, take(n_iterations * batch_size)).T.contiguous()
    # One split into views (slicing them one by one costs more than the draw itself).
    for block in columns.split(block_iterations * batch_size, dim=1):
        yield block.shape[1] // batch_size, block
