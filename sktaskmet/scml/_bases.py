r"""Basis sets for SCML: unit vectors :math:`b_i` whose rank-one matrices compose the metric.

The learned metric is :math:`M = \sum_i w_i b_i b_i^\top` with :math:`w \ge 0`, so the basis
set decides which directions the metric can stretch. Four constructions:

* ``"triplet_diffs"``: eigenvectors of
  :math:`S = \sum_{t} (x_a - x_p)(x_a - x_p)^\top - (x_a - x_n)(x_a - x_n)^\top` over random
  groups of ``n_features`` triplets. Directions along which genuine pairs are close and
  impostor pairs far (or the reverse) get a basis vector.
* ``"lda"``: local linear discriminant analysis, as in the paper's supervised variant, on the
  target binned into quantile classes: k-means centres, and at each centre the LDA
  directions of its nearest points of each class, at two neighbourhood sizes.
* ``"random"``: Gaussian directions.
* ``"identity"``: the coordinate axes. Then :math:`M` is diagonal and SCML only re-weights
  (gates) each feature; it cannot rotate or combine features.

All functions return a float tensor of shape ``(n_basis, n_features)`` with unit rows.
"""

import math

import numpy as np
import torch

__all__ = [
    "triplet_diff_basis",
    "lda_basis",
    "local_lda_basis",
    "random_basis",
    "identity_basis",
    "normalize_rows",
    "default_n_basis",
    "quantile_bins",
    "discriminant_subspace",
    "principal_hessian_directions",
    "reduced_lda_basis",
    "HIGH_DIMENSION",
]

# The paper's defaults, capped so that high-dimensional inputs (text embeddings) do not get
# tens of thousands of bases by default.
MAX_DEFAULT_BASIS = 2000
# Quantile classes of the target for the "lda" basis.
N_TARGET_BINS = 5
# Above this many features the "lda" basis is built in a discriminant subspace (see
# reduced_lda_basis): a local LDA needs more points per neighbourhood than features, and
# at d = 384 the full-width construction took 37 s of a 45 s fit and 2.4 GB.
HIGH_DIMENSION = 64
# Quantile classes of the target for the global LDA that spans the discriminant subspace.
N_SUBSPACE_BINS = 10
# Leading eigenvectors of the triplet scatter added to the discriminant subspace (class
# labels; a continuous target gets its principal Hessian directions instead).
N_SCATTER_DIRECTIONS = 8
# Principal Hessian directions of a continuous target added to the discriminant subspace.
# Measured at 3000 x 384 (benchmarks/bench_scml_scale.py, ten draws of the data): RMSE gain
# over Euclidean 5-NN 13.6 % on average with the triplet scatter, 16.4 % with 8 of these
# (12: 16.3 %), and the fit is faster.
N_HESSIAN_DIRECTIONS = 8
# Ridge penalty of the linear fit whose residuals weight the principal Hessian directions,
# in units of n times the mean feature variance (1 halves the coefficients of whitened X):
# a plain least-squares fit on a few thousand points in hundreds of dimensions overfits and
# leaves residuals without the curvature that the directions are read from.
HESSIAN_RIDGE = 1.0
# Rows per block of the principal Hessian directions' passes over X.
HESSIAN_BLOCK = 8192
# Triplets sampled for the triplet scatter: O(sample * d^2) work.
SCATTER_SAMPLE = 20000
# Within-class shrinkage of the global LDA (as a fraction of the mean variance): with a few
# thousand points in hundreds of dimensions the within-class scatter is poorly determined.
SUBSPACE_SHRINKAGE = 0.1


def normalize_rows(basis, name="basis"):
    """Scale each row to unit Euclidean norm; zero rows are an error."""
    norms = torch.linalg.vector_norm(basis, dim=1, keepdim=True)
    if bool((norms <= torch.finfo(basis.dtype).tiny).any()):
        raise ValueError(f"{name} has a row of zeros; every basis vector needs a direction.")
    return basis / norms


def quantile_bins(y, n_bins=N_TARGET_BINS):
    """Class labels 0..c-1 from quantile bins of a continuous target (c <= n_bins)."""
    qs = torch.linspace(0, 1, n_bins + 1, dtype=y.dtype, device=y.device)[1:-1]
    edges = torch.unique(torch.quantile(y, qs))
    labels = torch.bucketize(y, edges, right=True)
    # Drop empty bins so the labels are consecutive.
    _, labels = torch.unique(labels, return_inverse=True)
    return labels


def default_n_basis(kind, n_samples, n_features, n_classes=N_TARGET_BINS):
    """The number of bases used when ``n_basis`` is None."""
    if kind == "identity":
        return n_features
    if kind == "lda":
        num_eig = max(min(n_classes - 1, n_features), 1)
        return max(1, min(20 * n_features, 2 * num_eig * n_samples - 1, MAX_DEFAULT_BASIS))
    return min(80 * n_features, MAX_DEFAULT_BASIS)


def identity_basis(n_features, dtype=torch.float64, device="cpu"):
    """The coordinate axes."""
    return torch.eye(n_features, dtype=dtype, device=device)


def random_basis(n_basis, n_features, generator, dtype=torch.float64, device="cpu"):
    """Directions drawn uniformly on the unit sphere."""
    basis = torch.randn(n_basis, n_features, generator=generator, dtype=dtype, device=device)
    return normalize_rows(basis)


def triplet_diff_basis(X, triplets, n_basis, generator, max_rounds=None):
    r"""Eigenvectors of sums of genuine minus impostor outer products of differences.

    Each round draws ``n_features`` triplets, forms
    :math:`S = D_p^\top D_p - D_n^\top D_n` from their genuine and impostor differences and
    keeps the eigenvectors of :math:`S` with a non-negligible eigenvalue. Rounds are
    batched (one batched ``eigh``) until ``n_basis`` vectors are found.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
    triplets : torch.Tensor of shape (n_triplets, 3)
    n_basis : int
    generator : torch.Generator

    Returns
    -------
    torch.Tensor of shape (n_basis, n_features)
    """
    n_triplets = triplets.shape[0]
    d = X.shape[1]
    group = min(d, n_triplets)
    found = []
    n_found = 0
    max_rounds = max_rounds or 20 * math.ceil(n_basis / d) + 20
    rounds_done = 0
    while n_found < n_basis and rounds_done < max_rounds:
        rounds = min(2 * math.ceil((n_basis - n_found) / d) + 1, max_rounds - rounds_done)
        picks = torch.randint(n_triplets, (rounds, group), generator=generator, device=X.device)
        chosen = triplets[picks]  # (rounds, group, 3)
        diff_p = X[chosen[..., 0]] - X[chosen[..., 1]]
        diff_n = X[chosen[..., 0]] - X[chosen[..., 2]]
        scatter = diff_p.transpose(1, 2) @ diff_p - diff_n.transpose(1, 2) @ diff_n
        eigenvalues, eigenvectors = torch.linalg.eigh(scatter)
        magnitude = eigenvalues.abs()
        tol = 1e3 * torch.finfo(X.dtype).eps * magnitude.amax(dim=1, keepdim=True)
        keep = magnitude > tol
        vectors = eigenvectors.transpose(1, 2)[keep]  # rows are eigenvectors
        found.append(vectors)
        n_found += vectors.shape[0]
        rounds_done += rounds
    basis = torch.cat(found, dim=0)[:n_basis] if found else X.new_zeros((0, d))
    if basis.shape[0] < n_basis:
        raise ValueError(
            f"basis='triplet_diffs' found only {basis.shape[0]} of n_basis={n_basis} "
            "directions: the triplet differences span too little. Use basis='random' or "
            "'lda', or a smaller n_basis."
        )
    return normalize_rows(basis)


def _batched_lda_directions(points, labels, n_classes, num_eig, shrinkage=1e-3):
    r"""Top ``num_eig`` LDA directions of many small labelled sets at once.

    Solves :math:`S_b v = \lambda S_w v` per set through the Cholesky factor of the
    (slightly shrunk) within-class scatter, so that one batched ``eigh`` handles every set.

    Parameters
    ----------
    points : torch.Tensor of shape (n_sets, set_size, d)
    labels : torch.Tensor of shape (set_size,)
        The same class pattern for every set.

    Returns
    -------
    torch.Tensor of shape (n_sets, num_eig, d), unit rows
    """
    d = points.shape[-1]
    onehot = torch.nn.functional.one_hot(labels, n_classes).to(points.dtype)  # (s, c)
    counts = onehot.sum(0)  # (c,)
    means = torch.einsum("sc,nsd->ncd", onehot, points) / counts[None, :, None]
    grand = (means * counts[None, :, None]).sum(1) / counts.sum()  # (n, d)
    centred = points - means[:, labels, :]
    within = centred.transpose(1, 2) @ centred
    spread = means - grand[:, None, :]
    between = torch.einsum("c,ncd,nce->nde", counts, spread, spread)
    trace = torch.diagonal(within, dim1=1, dim2=2).sum(-1).clamp_min(torch.finfo(points.dtype).tiny)
    eye = torch.eye(d, dtype=points.dtype, device=points.device)
    within = within + (shrinkage * trace / d)[:, None, None] * eye
    chol = torch.linalg.cholesky(within)
    # A = L^{-1} S_b L^{-T}
    left = torch.linalg.solve_triangular(chol, between, upper=False)
    whitened = torch.linalg.solve_triangular(chol, left.transpose(1, 2), upper=False)
    whitened = (whitened + whitened.transpose(1, 2)) / 2
    _, vectors = torch.linalg.eigh(whitened)
    top = vectors[:, :, -num_eig:].flip(-1)  # (n, d, num_eig), largest first
    directions = torch.linalg.solve_triangular(chol.transpose(1, 2), top, upper=True)
    directions = directions.transpose(1, 2)
    return directions / torch.linalg.vector_norm(directions, dim=2, keepdim=True)


def _argmin_rows(values):
    """Column of the smallest entry of each row (the first one on ties).

    On the CPU numpy's vectorised argmin is several times faster than torch's along short
    rows (3000 x 67: 0.03 ms against 0.24 ms); both return the first minimum.
    """
    if values.device.type == "cpu":
        return torch.from_numpy(values.detach().numpy().argmin(1))
    return values.argmin(1)


def kmeans_centres(X, n_clusters, generator, n_iter=20):
    """k-means++ seeding and Lloyd iterations, in torch on the device of X.

    The centres only anchor neighbourhoods for the local LDAs, so one seeding and a few
    Lloyd steps suffice; doing it in torch keeps the basis construction on the device.
    """
    n = X.shape[0]
    sq_norms = (X * X).sum(1)
    first = torch.randint(n, (1,), generator=generator, device=X.device)
    centres = [X[first]]
    closest = ((X - centres[0]) ** 2).sum(1)
    for _ in range(1, n_clusters):
        cumulative = closest.cumsum(0)
        total = cumulative[-1]
        if not bool(total > 0):
            pick = torch.randint(n, (1,), generator=generator, device=X.device)
        else:
            # Draw proportionally to the squared distance by inverting the cumulative sum
            # (torch.multinomial costs many times more for a single draw); right=True skips
            # points at distance 0.
            draw = torch.rand(1, generator=generator, dtype=X.dtype, device=X.device) * total
            pick = torch.searchsorted(cumulative, draw, right=True).clamp_max_(n - 1)
        centre = X[pick]
        centres.append(centre)
        # |x - c|^2 = |x|^2 - 2 <x, c> + |c|^2, one fused product (clamped against rounding).
        squared = torch.addmv(sq_norms + sq_norms[pick], X, centre[0], alpha=-2).clamp_min_(0)
        closest = torch.minimum(closest, squared)
    centres = torch.cat(centres, dim=0)
    scores = X.new_empty((n, centres.shape[0]))  # reused by every step: no fresh block each
    for _ in range(n_iter):
        # Nearest centre: argmin of |c|^2 - 2 <x, c> (|x|^2 is the same for every centre).
        torch.addmm((centres * centres).sum(1)[None, :], X, centres.T, alpha=-2, out=scores)
        assignment = _argmin_rows(scores)
        counts = torch.bincount(assignment, minlength=n_clusters).to(X.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assignment, X)
        filled = counts > 0
        centres = torch.where(filled[:, None], sums / counts.clamp_min(1)[:, None], centres)
    return centres


def lda_basis(X, y, n_basis, generator, n_bins=N_TARGET_BINS):
    r"""Local LDA directions on quantile classes of the target.

    The target is cut into ``n_bins`` quantile classes. ``ceil(n_basis / (2 q))`` k-means
    centres (k-means++ seeding, 20 Lloyd steps) are placed in feature space
    (:math:`q = \min(c - 1, d)` directions per LDA); around each centre, the nearest
    points of every class at two neighbourhood sizes (10 and 20 per class, or 20 and 50
    when :math:`d > 50`) give one LDA each, and its :math:`q` leading discriminant
    directions become basis vectors.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
    y : torch.Tensor of shape (n_samples,)
    n_basis : int or None
    generator : torch.Generator
        Seeds k-means.

    Returns
    -------
    torch.Tensor of shape (n_basis, n_features)
    """
    return local_lda_basis(X, quantile_bins(y, n_bins), n_basis, generator)


def local_lda_basis(X, labels, n_basis, generator):
    """:func:`lda_basis` on given class labels 0..c-1 (the classes of SCMLClassifier)."""
    n_classes = int(labels.max()) + 1
    if n_classes < 2:
        raise ValueError(
            "basis='lda' needs at least two classes (or a target with at least two "
            "distinct values)."
        )
    n, d = X.shape
    num_eig = min(n_classes - 1, d)
    if n_basis is None:
        n_basis = default_n_basis("lda", n, d, n_classes)
    n_clusters = min(math.ceil(n_basis / (2 * num_eig)), n)
    centres = kmeans_centres(X, n_clusters, generator)
    scales = (20, 50) if d > 50 else (10, 20)
    directions = []
    for scale in scales:
        members, member_labels = [], []
        for c in range(n_classes):
            rows = torch.nonzero(labels == c).squeeze(1)
            k = min(scale, rows.shape[0])
            dist = torch.cdist(centres, X[rows])
            nearest = torch.topk(dist, k, dim=1, largest=False).indices
            members.append(rows[nearest])
            member_labels.append(torch.full((k,), c, device=X.device, dtype=torch.long))
        index = torch.cat(members, dim=1)  # (n_clusters, set_size)
        set_labels = torch.cat(member_labels)
        found = _batched_lda_directions(X[index], set_labels, n_classes, num_eig)
        directions.append(found.reshape(-1, d))
    basis = torch.cat(directions, dim=0)
    if basis.shape[0] < n_basis:
        # Few samples: repeat the LDA directions rather than fail; duplicates are harmless
        # for the solver (their weights simply add up).
        reps = math.ceil(n_basis / basis.shape[0])
        basis = basis.repeat(reps, 1)
    return normalize_rows(basis[:n_basis])


def _triplet_scatter_directions(X, triplets, n_directions, generator):
    r"""Leading eigenvectors of :math:`S = D_n^\top D_n - D_p^\top D_p` over sampled triplets.

    :math:`-S` is (up to a factor) the gradient of the mean hinge with respect to
    :math:`M` at :math:`M = 0`: its leading eigenvectors are the rank-one directions the
    objective wants first, those along which impostors differ more than genuine pairs.
    """
    count = triplets.shape[0]
    if count > SCATTER_SAMPLE:
        rows = torch.randperm(count, generator=generator, device=X.device)[:SCATTER_SAMPLE]
        triplets = triplets[rows]
    diff_p = X[triplets[:, 0]] - X[triplets[:, 1]]
    diff_n = X[triplets[:, 0]] - X[triplets[:, 2]]
    scatter = diff_n.T @ diff_n - diff_p.T @ diff_p
    _, vectors = torch.linalg.eigh((scatter + scatter.T) / 2)
    return vectors[:, -n_directions:].flip(1).T


def principal_hessian_directions(X, target, n_directions, ridge=HESSIAN_RIDGE):
    r"""Residual-based principal Hessian directions of a continuous target.

    With :math:`r` the residuals of a ridge fit of the target on :math:`X`,

    .. math:: S = \frac{1}{n} \sum_i r_i (x_i - \bar x)(x_i - \bar x)^\top ,

    and the eigenvectors of :math:`S` with the largest :math:`|\lambda|` are returned. For
    :math:`y = f(U^\top x) + \varepsilon` with Gaussian :math:`x`, Stein's lemma gives
    :math:`\mathbb{E}[S] = \Sigma\, \mathbb{E}[\nabla^2 f]\, \Sigma`, whose range lies in
    the span of :math:`U`: these are the directions along which the target curves (squares,
    interactions such as :math:`z_3 z_4`), which the LDA of target bins misses because the
    conditional mean of :math:`x` moves little along them. Removing the linear trend first
    (Cook, 1998) takes its share out of the noise of :math:`S` without changing
    :math:`\mathbb{E}[S]`. Cost :math:`O(n d^2 + d^3)`. (Li, K.-C., 1992, "On principal
    Hessian directions for data visualization and dimension reduction", JASA 87.)

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
    target : torch.Tensor of shape (n_samples,)
    n_directions : int
    ridge : float
        Penalty of the linear fit, in units of ``n_samples`` times the mean feature variance.

    Returns
    -------
    torch.Tensor of shape (min(n_directions, n_features), n_features), orthonormal rows
    """
    n, d = X.shape
    mean = X.mean(0)
    target = target.to(X.dtype)
    target = target - target.mean()
    # Two passes over row blocks keep the extra memory at one block (no centred copy of X).
    gram = X.new_zeros((d, d))
    cross = X.new_zeros(d)
    blocks = [slice(start, start + HESSIAN_BLOCK) for start in range(0, n, HESSIAN_BLOCK)]
    for rows in blocks:
        centred = X[rows] - mean
        gram += centred.T @ centred
        cross += centred.T @ target[rows]
    penalty = (ridge * torch.diagonal(gram).sum() / d).clamp_min(torch.finfo(X.dtype).tiny)
    coef = torch.linalg.solve(gram + penalty * torch.eye(d, dtype=X.dtype, device=X.device), cross)
    hessian = X.new_zeros((d, d))
    for rows in blocks:
        centred = X[rows] - mean
        residual = target[rows] - centred @ coef
        hessian += (centred * residual[:, None]).T @ centred
    hessian /= n
    values, vectors = torch.linalg.eigh((hessian + hessian.T) / 2)
    order = torch.argsort(values.abs(), descending=True)[: min(n_directions, d)]
    return vectors[:, order].T


def discriminant_subspace(
    X,
    labels,
    triplets,
    generator,
    n_scatter=N_SCATTER_DIRECTIONS,
    target=None,
    n_hessian=N_HESSIAN_DIRECTIONS,
):
    r"""An orthonormal basis of a low-dimensional subspace where the labels are separable.

    Spanned by the (shrunk) global LDA directions of the classes (at most
    ``n_classes - 1``) and, for class labels, the ``n_scatter`` leading directions of the
    triplet scatter (:func:`_triplet_scatter_directions`) or, for a continuous ``target``,
    its ``n_hessian`` principal Hessian directions
    (:func:`principal_hessian_directions`); orthonormalised by a QR factorisation. The LDA
    sees where the target's conditional mean moves; the other part, where it curves.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
    labels : torch.Tensor of shape (n_samples,)
        Classes 0..c-1 (class labels, or quantile bins of a continuous target).
    triplets : torch.Tensor of shape (n_triplets, 3)
    generator : torch.Generator
        Samples the triplets of the scatter.
    n_scatter : int
        Triplet-scatter directions (used when ``target`` is None).
    target : torch.Tensor of shape (n_samples,) or None
        The continuous target that ``labels`` bin, if any.
    n_hessian : int
        Principal Hessian directions of ``target`` (used when it is given).

    Returns
    -------
    torch.Tensor of shape (n_features, r)
        Orthonormal columns, ``r <= min(n_features, n_classes - 1 + n_scatter)`` (or
        ``+ n_hessian`` with a target).
    """
    n_classes = int(labels.max()) + 1
    d = X.shape[1]
    parts = []
    if n_classes > 1:
        num_eig = min(n_classes - 1, d)
        lda = _batched_lda_directions(
            X[None], labels, n_classes, num_eig, shrinkage=SUBSPACE_SHRINKAGE
        )[0]
        parts.append(lda)
    if target is not None:
        if n_hessian > 0:
            parts.append(principal_hessian_directions(X, target, n_hessian))
    elif n_scatter > 0 and triplets.shape[0] > 0:
        parts.append(_triplet_scatter_directions(X, triplets, min(n_scatter, d), generator))
    spanning = torch.cat(parts, dim=0).T
    q, r = torch.linalg.qr(spanning)
    # Drop directions that the others already span (a zero pivot of the QR).
    diagonal = torch.diagonal(r).abs()
    keep = diagonal > 1e3 * torch.finfo(X.dtype).eps * diagonal.max()
    return q[:, keep]


def reduced_lda_basis(X, subspace_labels, local_labels, triplets, n_basis, generator, target=None):
    r"""Local LDA bases built in a discriminant subspace, for high-dimensional inputs.

    The subspace :math:`V` (:func:`discriminant_subspace`, ``r`` columns) is found from
    all points at once; the local LDAs of :func:`lda_basis` then run on :math:`XV`, where a
    neighbourhood of a few dozen points per class does determine the within-class scatter,
    and their directions are mapped back, :math:`b = V b_r`. The columns of :math:`V`
    themselves are added, so that the solver can weight each subspace axis alone. Cost:
    :math:`O(n d^2)` for the subspace instead of :math:`O(n_\text{clusters} d^3)`.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
    subspace_labels, local_labels : torch.Tensor of shape (n_samples,)
        Classes 0..c-1 of the global LDA that spans the subspace and of the local LDAs
        (for a continuous target, quantile bins: finer ones for the global LDA, which
        sees every point).
    triplets : torch.Tensor of shape (n_triplets, 3)
    n_basis : int or None
        None: ``20 r`` local LDA directions plus the ``r`` axes.
    generator : torch.Generator
    target : torch.Tensor of shape (n_samples,) or None
        The continuous target, if any (see :func:`discriminant_subspace`).

    Returns
    -------
    torch.Tensor of shape (n_basis, n_features), unit rows
    """
    subspace = discriminant_subspace(X, subspace_labels, triplets, generator, target=target)
    rank = subspace.shape[1]
    local_count = 20 * rank if n_basis is None else max(n_basis - rank, 1)
    reduced = X @ subspace
    local = local_lda_basis(reduced, local_labels, local_count, generator) @ subspace.T
    basis = torch.cat([subspace.T, local], dim=0)
    if n_basis is not None:
        basis = basis[:n_basis]
    return normalize_rows(basis)


def check_basis_array(basis, n_features, dtype):
    """Validate a user-given basis array: 2-d, finite, width n_features, no zero rows."""
    array = np.asarray(basis)
    if array.ndim != 2:
        raise ValueError(
            f"basis must be a 2-d array of shape (n_basis, n_features); got an array of "
            f"shape {array.shape}."
        )
    if array.shape[1] != n_features:
        raise ValueError(
            f"basis has {array.shape[1]} columns, but X has {n_features} features; a basis "
            "array must have shape (n_basis, n_features)."
        )
    if array.shape[0] < 1:
        raise ValueError("basis must have at least one row.")
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
        raise ValueError("basis must be a finite numeric array.")
    return np.array(array, dtype=dtype, copy=True)
