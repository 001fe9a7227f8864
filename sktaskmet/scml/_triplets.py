r"""Triplet constraints from continuous targets.

SCML learns from triplets :math:`(a, p, n)` that say "the anchor :math:`x_a` should be
closer to :math:`x_p` than to :math:`x_n`". With class labels, :math:`p` is a same-class
neighbour and :math:`n` an other-class neighbour (an impostor). With a continuous target
there are no classes, so closeness of the *targets* decides: among the Euclidean
neighbours of each anchor, the genuine neighbours are those whose targets are closest to
:math:`y_a` and the impostors those whose targets are farthest from it. A triplet is kept
only when its ordering is strict, :math:`|y_a - y_p| < |y_a - y_n|`, so ties in the target
(a discrete or coarsely rounded target) never produce a contradictory constraint.
"""

import numpy as np
import torch

__all__ = ["regression_triplets", "classification_triplets", "euclidean_neighbors"]

# Size of the pool of Euclidean neighbours, as a multiple of k_genuine + k_impostor: a pool
# larger than the number of points used lets the target choose the extremes of the pool.
CANDIDATE_FACTOR = 2
# Entries of a block of squared distances on the CPU (1 MiB in float64): small enough that
# the selection of the nearest reads the block back from the core's cache rather than from
# memory (measured at n=3000: 32 to 64 rows per block take 28 ms, 256 rows 36 ms).
CPU_BLOCK_ENTRIES = 2**17
# Above this many features the product that fills a block dominates, and it reads all of X
# once per block: blocks of at least MIN_WIDE_ROWS rows (or WIDE_BLOCK_ENTRIES entries) keep
# that traffic small (n = 24000, d = 384: 16-row blocks spent 138 s in the product).
WIDE_FEATURES = 64
MIN_WIDE_ROWS = 1024
WIDE_BLOCK_ENTRIES = 2**26


def euclidean_neighbors(X, n_neighbors, chunk_size=None):
    """Indices of the ``n_neighbors`` nearest other rows of X (itself excluded).

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
    n_neighbors : int
        At most ``n_samples - 1``.
    chunk_size : int, optional
        Rows of X handled at once; bounds the memory at ``chunk_size * n_samples``. By
        default, on the CPU, as many rows as keep a block of distances within
        ``CPU_BLOCK_ENTRIES`` (the selection then reads it from cache), and 256 elsewhere;
        with more than ``WIDE_FEATURES`` features, up to ``MIN_WIDE_ROWS`` rows.

    Returns
    -------
    torch.Tensor of shape (n_samples, n_neighbors), int64
        Nearest first.
    """
    n = X.shape[0]
    if chunk_size is None:
        chunk_size = max(16, CPU_BLOCK_ENTRIES // n) if X.device.type == "cpu" else 256
        if X.shape[1] > WIDE_FEATURES:
            chunk_size = max(chunk_size, min(MIN_WIDE_ROWS, WIDE_BLOCK_ENTRIES // n), 16)
    chunk_size = min(chunk_size, n)
    sq_norms = (X * X).sum(1)
    X_T = X.T.contiguous()
    # One block of distances and one result, filled chunk by chunk: a fresh multi-megabyte
    # allocation per chunk would be mapped and unmapped by the C allocator each time, and
    # the page faults of touching it again cost more than the selection itself.
    block = X.new_empty((chunk_size, n))
    neighbors = torch.empty((n, n_neighbors), dtype=torch.long, device=X.device)
    for start in range(0, n, chunk_size):
        rows = X[start : start + chunk_size]
        count = rows.shape[0]
        # |x_j|^2 - 2 <x_i, x_j>: the squared distance less |x_i|^2, which is constant along
        # the row and so leaves the ranking of row i unchanged. One fused matrix product.
        sq = torch.addmm(sq_norms[None, :], rows, X_T, alpha=-2, out=block[:count])
        own = torch.arange(start, start + count, device=X.device)
        sq[torch.arange(count, device=X.device), own] = float("inf")
        neighbors[start : start + count] = _smallest(sq, n_neighbors)
    return neighbors


def _smallest(values, k):
    """Column indices of the k smallest entries of each row, smallest first.

    On the CPU, numpy's introselect (argpartition) then a sort of the k selected is a
    good deal faster than torch.topk; elsewhere torch.topk.
    """
    if values.device.type != "cpu":
        return torch.topk(values, k, dim=1, largest=False, sorted=True).indices
    array = values.detach().numpy()
    selected = np.argpartition(array, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(array, selected, axis=1), axis=1, kind="stable")
    return torch.from_numpy(np.take_along_axis(selected, order, axis=1))


def regression_triplets(X, y, k_genuine=3, k_impostor=10, n_candidates=None):
    r"""Triplets :math:`(a, p, n)` for a continuous target, with strict target orderings.

    For each anchor :math:`a`, take its ``n_candidates`` nearest Euclidean neighbours and
    sort them by :math:`|y_j - y_a|`. The ``k_genuine`` closest in target are the genuine
    neighbours :math:`p`, the ``k_impostor`` farthest are the impostors :math:`n`; every
    pair (genuine, impostor) gives a triplet, kept only if
    :math:`|y_a - y_p| < |y_a - y_n|`.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
    y : torch.Tensor of shape (n_samples,)
    k_genuine : int, default=3
    k_impostor : int, default=10
    n_candidates : int, optional
        Size of the Euclidean neighbourhood; defaults to
        ``min(n_samples - 1, 2 * (k_genuine + k_impostor))``. Must be at least
        ``k_genuine + k_impostor``. If no neighbourhood of this size has a strict
        ordering (the target is constant inside each), the pool is doubled until one has.

    Returns
    -------
    torch.Tensor of shape (n_triplets, 3), int64
        Rows ``(anchor, genuine, impostor)``, on the device of X; at most
        ``n_samples * k_genuine * k_impostor`` of them.

    Raises
    ------
    ValueError
        If there are fewer than ``k_genuine + k_impostor + 1`` samples, or if no triplet
        has a strict ordering (a constant target).
    """
    n = X.shape[0]
    needed = k_genuine + k_impostor
    if n - 1 < needed:
        raise ValueError(
            f"k_genuine + k_impostor = {needed} neighbours are asked for each point, but X has "
            f"only {n} samples ({n - 1} neighbours per point). Lower k_genuine or k_impostor, "
            "or pass more samples."
        )
    if n_candidates is None:
        n_candidates = min(n - 1, CANDIDATE_FACTOR * needed)
    n_candidates = max(int(n_candidates), needed)
    triplets = _triplets_in_pool(X, y, k_genuine, k_impostor, n_candidates)
    # Where the target is constant inside every neighbourhood (well-separated clusters of
    # equal targets), widen the pool until some ordering is strict.
    while triplets.shape[0] == 0 and n_candidates < n - 1:
        n_candidates = min(n - 1, 2 * n_candidates)
        triplets = _triplets_in_pool(X, y, k_genuine, k_impostor, n_candidates)
    if triplets.shape[0] == 0:
        raise ValueError(
            "no triplet (anchor, genuine, impostor) with |y_a - y_genuine| < |y_a - y_impostor| "
            "could be formed: the target y is constant (or constant within every "
            "neighbourhood). SCMLRegressor needs a target that varies."
        )
    return triplets


def _triplets_in_pool(X, y, k_genuine, k_impostor, n_candidates):
    n = X.shape[0]
    neighbors = euclidean_neighbors(X, n_candidates)
    gaps = (y[neighbors] - y[:, None]).abs()
    # A stable sort keeps the Euclidean order among equal target gaps: reproducible. (On
    # the CPU numpy's stable argsort of these short rows is faster than torch's.)
    if gaps.device.type == "cpu":
        order = torch.from_numpy(np.argsort(gaps.numpy(), axis=1, kind="stable"))
    else:
        order = torch.sort(gaps, dim=1, stable=True).indices
    genuine_pos = order[:, :k_genuine]
    impostor_pos = order[:, n_candidates - k_impostor :]
    genuine = torch.gather(neighbors, 1, genuine_pos)
    impostor = torch.gather(neighbors, 1, impostor_pos)
    genuine_gap = torch.gather(gaps, 1, genuine_pos)
    impostor_gap = torch.gather(gaps, 1, impostor_pos)
    strict = genuine_gap[:, :, None] < impostor_gap[:, None, :]
    # Every (anchor, genuine, impostor) combination, written by broadcasting into one
    # (n, k_genuine, k_impostor, 3) table, then the strict ones (row-major order).
    table = torch.empty(strict.shape + (3,), dtype=torch.long, device=X.device)
    table[..., 0] = torch.arange(n, device=X.device)[:, None, None]
    table[..., 1] = genuine[:, :, None]
    table[..., 2] = impostor[:, None, :]
    table = table.view(-1, 3)
    if bool(strict.all()):
        return table
    return table[strict.view(-1)]


def classification_triplets(X, labels, k_genuine=3, k_impostor=10, chunk_size=256):
    r"""Triplets :math:`(a, p, n)` from class labels, as metric-learn's SCML_Supervised forms.

    For each anchor :math:`a`, its ``k_genuine`` nearest Euclidean neighbours of the same
    class are the genuine neighbours and its ``k_impostor`` nearest neighbours of another
    class the impostors; every (genuine, impostor) pair gives a triplet. Anchors whose
    class has fewer members, or which have fewer other-class points, give fewer triplets.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
    labels : torch.Tensor of shape (n_samples,), int64
    k_genuine, k_impostor : int
    chunk_size : int
        Anchors handled at once (bounds the memory at ``chunk_size * n_samples``).

    Returns
    -------
    torch.Tensor of shape (n_triplets, 3), int64
        Rows ``(anchor, genuine, impostor)``, anchors ascending, nearest first.

    Raises
    ------
    ValueError
        If no anchor has both a same-class neighbour and an other-class point.
    """
    n = X.shape[0]
    sq_norms = (X * X).sum(1)
    k_genuine, k_impostor = min(k_genuine, n - 1), min(k_impostor, n - 1)
    found = []
    for start in range(0, n, chunk_size):
        rows = X[start : start + chunk_size]
        count = rows.shape[0]
        sq = torch.addmm(sq_norms[None, :], rows, X.T, alpha=-2)
        own = torch.arange(start, start + count, device=X.device)
        same = labels[start : start + count, None] == labels[None, :]
        genuine_sq = sq.masked_fill(~same, float("inf"))
        genuine_sq[torch.arange(count, device=X.device), own] = float("inf")
        impostor_sq = sq.masked_fill(same, float("inf"))
        genuine = _smallest(genuine_sq, k_genuine)
        impostor = _smallest(impostor_sq, k_impostor)
        valid_g = torch.isfinite(torch.gather(genuine_sq, 1, genuine))
        valid_n = torch.isfinite(torch.gather(impostor_sq, 1, impostor))
        table = torch.empty((count, k_genuine, k_impostor, 3), dtype=torch.long, device=X.device)
        table[..., 0] = own[:, None, None]
        table[..., 1] = genuine[:, :, None]
        table[..., 2] = impostor[:, None, :]
        valid = valid_g[:, :, None] & valid_n[:, None, :]
        found.append(table[valid])
    triplets = torch.cat(found)
    if triplets.shape[0] == 0:
        raise ValueError(
            "no triplet (anchor, same-class neighbour, other-class point) could be formed: "
            "every class has a single member, or there is only one class."
        )
    return triplets
