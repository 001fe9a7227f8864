r"""The full SCML objectives, and the metric a weight vector defines.

Global: :math:`F(w) = \frac{1}{|C|}\sum_{(a,p,n) \in C}[1 + d_w(x_a, x_p) - d_w(x_a, x_n)]_+
+ \beta\lVert w\rVert_1`, computed through the metric itself: :math:`d_w(u, v) =
\lVert L(u - v)\rVert^2` with :math:`L^\top L = \sum_i w_i b_i b_i^\top`
(:func:`metric_factor`), once per distinct (anchor, other) pair and in chunks, which costs
:math:`O(|C| d)` instead of :math:`O(|C| K)`.

Local: the weights :math:`w_i(x) = (\theta_i^\top [z(x); 1])^2` (:func:`local_weights`)
are evaluated at the anchor of each triplet, under the group-lasso penalty
:math:`\beta\sum_i\lVert\theta_i\rVert_2`.
"""

import math

import torch

from ._line_search import best_scale
from ._minibatches import Projector, distance_differences
from ._pairs import TripletPairs

__all__ = [
    "OBJECTIVE_CHUNK",
    "global_objective",
    "local_objective",
    "local_objective_projected",
    "local_weights",
    "metric_factor",
    "tuned_candidates",
]

# Triplets per chunk of the local objective, for 16 bases: bounds its (chunk, K) blocks.
OBJECTIVE_CHUNK = 8192
# The number of bases OBJECTIVE_CHUNK is sized for; more bases shrink the chunk in
# proportion, so that its blocks keep about OBJECTIVE_CHUNK * CHUNK_BASES entries.
CHUNK_BASES = 16


def metric_factor(basis, weights):
    r"""A factor :math:`L` with :math:`L^\top L = \sum_i w_i b_i b_i^\top`.

    With at most ``n_features`` active bases this is :math:`\operatorname{diag}(\sqrt{w})B`
    restricted to them; with more, the eigen-factor of the :math:`d \times d` matrix, so
    that :math:`L` never has more rows than features.

    Returns
    -------
    torch.Tensor of shape (r, n_features), r <= n_features (r >= 1)
    """
    active = weights > 0
    d = basis.shape[1]
    if not bool(active.any()):
        return basis.new_zeros((1, d))
    w = weights[active]
    rows = basis[active]
    if rows.shape[0] <= d:
        return torch.sqrt(w)[:, None] * rows
    matrix = rows.T @ (w[:, None] * rows)
    eigenvalues, eigenvectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return torch.sqrt(eigenvalues.clamp_min(0))[:, None] * eigenvectors.T


def local_weights(embedding, theta):
    r""":math:`w_i(x) = (\theta_i^\top [z(x); 1])^2` for rows of the embedding, shape (n, K)."""
    return (embedding @ theta[:, :-1].T + theta[:, -1]) ** 2


@torch.inference_mode()
def global_objective(X, triplets, basis, weights, beta, pairs=None):
    """Full global SCML objective :math:`F(w)`.

    ``pairs`` (a :class:`TripletPairs` of ``triplets``) is built when not given.
    """
    pairs = pairs if pairs is not None else TripletPairs(triplets, X.shape[0])
    embedded = X @ metric_factor(basis, weights).T
    hinge = torch.relu(1 + pairs.margins(embedded)).mean()
    return hinge + beta * weights.sum()


@torch.inference_mode()
def local_objective(X, embedding, triplets, basis, theta, beta, chunk_size=OBJECTIVE_CHUNK):
    """Full local SCML objective, in chunks of triplets."""
    return local_objective_projected(
        Projector(X, basis), embedding, triplets, theta, beta, chunk_size
    )


def local_objective_projected(
    project, embedding, triplets, theta, beta, chunk_size=OBJECTIVE_CHUNK
):
    """:func:`local_objective` with the rows of :math:`X B^\\top` from ``project``."""
    total = theta.new_zeros(())
    chunk_size = max(1, chunk_size * CHUNK_BASES // max(theta.shape[0], CHUNK_BASES))
    for start in range(0, triplets.shape[0], chunk_size):
        chunk = triplets[start : start + chunk_size]
        weights = local_weights(embedding[chunk[:, 0]], theta)
        margin = 1 + (weights * distance_differences(project, chunk)).sum(1)
        total = total + torch.relu(margin).sum()
    penalty = torch.linalg.vector_norm(theta, dim=1).sum()
    return total / triplets.shape[0] + beta * penalty


def tuned_candidates(X, pairs, basis, candidates, beta):
    r"""Each candidate weight vector with its scale tuned, and its full objective.

    The overall scale of a stochastic iterate is only roughly right when the RDA steps are
    large; :func:`~._line_search.best_scale` corrects it exactly (it does not touch the
    sparsity pattern). The margins of all candidates come from one pass over the triplet
    pairs.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
    pairs : TripletPairs
    basis : torch.Tensor of shape (K, n_features)
    candidates : list of torch.Tensor of shape (K,)
    beta : float

    Returns
    -------
    list of (weights, objective)
    """
    results = [None] * len(candidates)
    active = [i for i, weights in enumerate(candidates) if bool((weights > 0).any())]
    for i in range(len(candidates)):
        if i not in active:
            results[i] = (candidates[i], 1.0)  # every hinge is 1, no penalty
    if not active:
        return results
    embeddings = [X @ metric_factor(basis, candidates[i]).T for i in active]
    margins = pairs.margins(*embeddings, reuse=True)
    margins = margins[None] if len(active) == 1 else margins
    # The hinge terms are formed in one scratch vector kept by `pairs`: the same operations
    # as torch.relu(1 + scale * delta), without allocating vectors of n_triplets entries at
    # every evaluation (fresh ones of this size cost page faults).
    hinges = pairs.scratch("hinges", margins.shape[1], margins)

    def mean_hinge(delta, scale=None):
        if scale is None:
            torch.add(delta, 1, out=hinges)
        else:
            torch.mul(delta, scale, out=hinges).add_(1)
        return float(hinges.relu_().mean())

    for i, delta in zip(active, margins, strict=True):
        weights = candidates[i]
        l1 = float(weights.sum())
        at_one = mean_hinge(delta) + beta * l1
        results[i] = (weights, at_one)
        scale = best_scale(delta, l1, beta, scratch=hinges)  # free until `tuned`
        if scale is None or not math.isfinite(scale):
            continue
        tuned = mean_hinge(delta, scale) + beta * scale * l1
        if tuned < at_one:
            results[i] = (weights * scale, tuned)
    return results
