r"""The SCML solvers in torch: AdaGrad-scaled regularised dual averaging (RDA).

Global SCML
-----------
With basis vectors :math:`b_1, \dots, b_K` and triplets :math:`C`, the problem is

.. math::

    \min_{w \ge 0}\; F(w) = \frac{1}{|C|} \sum_{(a,p,n) \in C}
        \big[1 + d_w(x_a, x_p) - d_w(x_a, x_n)\big]_+ + \beta \lVert w \rVert_1,
    \qquad d_w(u, v) = \sum_i w_i \big(b_i^\top (u - v)\big)^2 .

The hinge term of triplet :math:`t` is linear in :math:`w`: :math:`1 + w^\top D_t` with
:math:`D_{ti} = (b_i^\top(x_a - x_p))^2 - (b_i^\top(x_a - x_n))^2`. A mini-batch
subgradient is :math:`g = \frac{1}{|B|}\sum_{t \in B,\, 1 + w^\top D_t > 0} D_t`.
RDA keeps the running mean :math:`\bar g_t` of the subgradients and AdaGrad the
accumulator :math:`H_t = \sqrt{\sum_{s \le t} g_s^2}` (per coordinate); the next iterate
solves :math:`\min_{w \ge 0} \langle \bar g_t, w\rangle + \beta\lVert w\rVert_1 +
\frac{\gamma(\delta + H_t)}{2(t+1)} \lVert w \rVert^2` in closed form:

.. math::

    w_{t+1} = \frac{t + 1}{\gamma (\delta + H_t)} \max\big(-(\bar g_t + \beta), 0\big).

:math:`D_t` is never stored for all triplets (that matrix has
:math:`|C| \times K` entries): the mini-batch indices of a span of iterations are drawn
up front (they do not depend on the iterate), and each block of a few iterations gathers
the rows of :math:`X B^\top` its triplets need and forms their :math:`D_t` in buffers
that stay in cache. What must run one iteration after the other (which hinges of the
batch are active depends on the previous iterate) is then a handful of operations on
vectors of length :math:`K`; on the CPU they run in numpy, whose per-call cost is a
fraction of torch's dispatch cost, on views of the same memory.

Every ``output_iter`` iterations two candidates are evaluated, the iterate and the
running mean of the iterates (the point RDA's convergence guarantee is about), each with
its overall scale tuned by an exact line search (:math:`F(\alpha w)` is convex and
piecewise linear in :math:`\alpha`; its minimiser comes from one sort of the margins),
and the best point seen is kept; the iterations themselves continue from the untouched
iterate. The full objective is computed through the metric itself:
:math:`d_w(u, v) = \lVert L(u - v)\rVert^2` with :math:`L^\top L = \sum_i w_i b_i
b_i^\top`, once per distinct (anchor, other) pair and in chunks, which costs
:math:`O(|C| d)` instead of :math:`O(|C| K)`.

Local SCML
----------
The weights depend on the point through an embedding :math:`z(x) \in \mathbb{R}^m`
(kernel PCA): :math:`w_i(x) = (\theta_i^\top \tilde z(x))^2` with
:math:`\tilde z = [z; 1]` and :math:`\theta_i = [a_i; c_i]`, evaluated at the anchor of
each triplet, and a group-lasso penalty :math:`\beta \sum_i \lVert\theta_i\rVert_2`.
The same RDA scheme with one AdaGrad scale per group and the group soft-threshold gives

.. math::

    u_i = \theta^{(0)}_i - \frac{t+1}{\gamma(\delta + H_{t,i})} \bar g_{t,i}, \qquad
    \theta_i = u_i \max\Big(0, 1 - \frac{(t+1)\beta}{\gamma(\delta + H_{t,i})
        \lVert u_i \rVert}\Big),

centred on the initial point :math:`\theta^{(0)}` (the global solution:
:math:`a_i = 0`, :math:`c_i = \sqrt{w_i}`), so the local model starts where the global one
ended. The problem is not convex; the best full objective seen is kept.
"""

import math
import time
import warnings

import numpy as np
import torch

from ..exceptions import NonFiniteWarning
from . import _rda_kernel

__all__ = [
    "rda_global",
    "rda_local",
    "global_objective",
    "local_objective",
    "metric_factor",
    "local_weights",
    "KernelPCAEmbedding",
    "SolverResult",
]

# AdaGrad's slack: keeps the first steps finite when a coordinate has seen no gradient.
DELTA = 1e-3
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
# Triplets (or pairs) per chunk of the full objective: bounds its temporaries.
OBJECTIVE_CHUNK = 8192


class SolverResult:
    """What a solve returns: the best iterate, its objective and the history.

    Attributes
    ----------
    coef : torch.Tensor
        Best iterate (``w`` of shape (K,) for the global solver, ``theta`` of shape
        (K, m + 1) for the local one).
    objective : float
        Full objective of ``coef``.
    history : list of (int, float)
        (iteration, full objective) at every evaluation, iteration 0 being the start.
    n_iter : int
        Iterations run.
    failed : bool
        Whether the solve stopped on a non-finite value.
    """

    def __init__(self, coef, objective, history, n_iter, failed):
        self.coef = coef
        self.objective = objective
        self.history = history
        self.n_iter = n_iter
        self.failed = failed


def _index_stream(n_triplets, generator, device):
    """Endless mini-batch indices: successive random permutations (sampling without
    replacement inside an epoch has less variance than independent draws)."""
    buffer = torch.empty(0, dtype=torch.long, device=device)

    def take(count):
        nonlocal buffer
        while buffer.shape[0] < count:
            perm = torch.randperm(n_triplets, generator=generator, device=device)
            buffer = torch.cat([buffer, perm])
        out, buffer = buffer[:count], buffer[count:]
        return out

    return take


class _Projector:
    """Rows of :math:`X B^\top` on demand: stored when small enough, computed otherwise."""

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


def _distance_differences(project, triplets):
    r""":math:`D_{ti}` for the given triplets, shape ``triplets.shape[:-1] + (K,)``."""
    projected = project(triplets)  # one gather for the three points of every triplet
    proj_a, proj_p, proj_n = projected.unbind(-2)
    # (a - p)^2 - (a - n)^2 = (n - p)(2a - p - n): one product instead of two squares.
    return (proj_n - proj_p) * (2 * proj_a - proj_p - proj_n)


class _BlockDifferences:
    r""":math:`D_t` of the mini-batches of a block of iterations, in reused buffers.

    The solvers need the rows :math:`D_t` of the triplets they draw, a block of iterations
    at a time. Each call gathers the three projected points of every triplet of the block
    into preallocated buffers and combines them in place,
    :math:`D_t = (p - n) \odot (p + n - 2a)` with :math:`a, p, n` the projections
    :math:`B x`: no allocation per block, and the buffers (a few hundred rows) stay in
    cache. The returned tensor is a view of a buffer that the next call overwrites.

    Parameters
    ----------
    project : _Projector
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


def _spans(max_iter, output_iter):
    """(start, stop) of the spans of iterations: each ends at an evaluation or earlier."""
    start = 0
    while start < max_iter:
        next_output = (start // output_iter + 1) * output_iter
        stop = min(max_iter, next_output, start + SPAN_ITERATIONS)
        yield start, stop
        start = stop


def _span_blocks(triplets, take, n_iterations, batch_size, block_iterations):
    """Draw the mini-batches of a span; yield (n_block, columns) per block of iterations.

    ``columns`` (shape (3, n_block * batch_size)) are the anchors, positives and negatives
    of the block's triplets, iteration after iteration.
    """
    columns = torch.index_select(triplets, 0, take(n_iterations * batch_size)).T.contiguous()
    # One split into views (slicing them one by one costs more than the draw itself).
    for block in columns.split(block_iterations * batch_size, dim=1):
        yield block.shape[1] // batch_size, block


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


class _TripletPairs:
    """The distinct (anchor, other) pairs of a triplet set, and where each triplet's lie.

    Triplets share pairs (each genuine pair appears with every impostor of its anchor), so
    the full objective computes each pair distance once and gathers scalars per triplet.
    The pair differences are formed a chunk at a time in buffers kept between calls (the
    objective is evaluated many times per solve).

    The pairs are sorted by anchor. When every anchor has the same number ``c`` of pairs
    (the triplets of :func:`regression_triplets` when every ordering is strict), they are
    also kept as an (anchors, c) table: a chunk then gathers each anchor's embedding once
    and subtracts it from its ``c`` partners by broadcasting, instead of gathering it
    ``c`` times.
    """

    def __init__(self, triplets, n_samples):
        # Pair keys anchor * n + other; in int32 when they fit (the sort behind unique runs
        # about a third faster on them than on int64).
        if n_samples * n_samples <= torch.iinfo(torch.int32).max:
            triplets = triplets.to(torch.int32)
        keys = torch.cat(
            [
                triplets[:, 0] * n_samples + triplets[:, 1],
                triplets[:, 0] * n_samples + triplets[:, 2],
            ]
        )
        unique, inverse = torch.unique(keys, return_inverse=True)
        unique, inverse = unique.long(), inverse.long()
        self.first = torch.div(unique, n_samples, rounding_mode="floor")
        self.second = unique - self.first * n_samples
        self.genuine, self.impostor = inverse.split(keys.shape[0] // 2)
        self.n_triplets = triplets.shape[0]
        self.group_size, self.anchors = self._uniform_groups(self.first)
        self._buffers = None

    @staticmethod
    def _uniform_groups(first):
        """(c, the anchors) if the sorted anchors each occur c times, else (None, None)."""
        anchors, counts = torch.unique_consecutive(first, return_counts=True)
        if anchors.shape[0] == 0 or not bool((counts == counts[0]).all()):
            return None, None
        return int(counts[0]), anchors

    def _buffer(self, name, size, like):
        if self._buffers is None or self._buffers["dtype"] != like.dtype:
            self._buffers = {"dtype": like.dtype}
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size:
            # With room to grow: the width of the embeddings varies from one evaluation
            # to the next, and each new buffer costs page faults when first written.
            grown = size if buffer is None else max(size, 3 * buffer.numel() // 2)
            buffer = self._buffers[name] = like.new_empty(grown)
        return buffer[:size]

    def margins(self, *embeddings, chunk_size=OBJECTIVE_CHUNK // 2, reuse=False):
        r""":math:`\Delta_t = d(a, p) - d(a, n)` for every triplet, from embeddings.

        Each embedding (shape (n_samples, r)) defines one metric; several are handled in
        one pass over the pairs. Returns shape (n_triplets,) for one embedding, else
        (n_embeddings, n_triplets). With ``reuse=True`` the result is a view of a buffer
        that the next such call overwrites (no allocation per evaluation of the objective).
        """
        widths = [embedding.shape[1] for embedding in embeddings]
        if len(embeddings) > 1:
            embedded = self._buffer("embedded", embeddings[0].shape[0] * sum(widths), embeddings[0])
            embedded = torch.cat(embeddings, dim=1, out=embedded.view(-1, sum(widths)))
        else:
            embedded = embeddings[0]
        n_pairs, width = self.first.shape[0], embedded.shape[1]
        # Chunks of whole anchor groups when the pairs form a table.
        group = self.group_size or 1
        chunk_size = min(max(chunk_size // group, 1) * group, n_pairs)
        other = self._buffer("other", chunk_size * width, embedded)
        anchor = self._buffer("anchor", chunk_size * width, embedded)
        distances = self._buffer("distances", len(widths) * n_pairs, embedded)
        distances = distances.view(len(widths), n_pairs)
        for start in range(0, n_pairs, chunk_size):
            stop = min(start + chunk_size, n_pairs)
            diff = other[: (stop - start) * width].view(stop - start, width)
            torch.index_select(embedded, 0, self.second[start:stop], out=diff)
            if self.group_size is None:
                first = anchor[: (stop - start) * width].view(stop - start, width)
                torch.index_select(embedded, 0, self.first[start:stop], out=first)
                torch.sub(first, diff, out=diff)
            else:
                rows = (stop - start) // group
                first = anchor[: rows * width].view(rows, 1, width)
                anchors = self.anchors[start // group : stop // group]
                torch.index_select(embedded, 0, anchors, out=first.view(rows, width))
                torch.sub(first, diff.view(rows, group, width), out=diff.view(rows, group, width))
            # Squares in one pass, then the sum of each metric's columns: the values of
            # torch.linalg.vecdot(part, part) (which multiplies, then sums), with one
            # multiplication pass instead of one per metric.
            diff.mul_(diff)
            for index, part in enumerate(diff.split(widths, dim=1)):
                torch.sum(part, 1, out=distances[index, start:stop])
        if reuse:
            margins = self._buffer("margins", len(widths) * self.n_triplets, embedded)
            margins = margins.view(len(widths), self.n_triplets)
        else:
            margins = embedded.new_empty((len(widths), self.n_triplets))
        impostor = self._buffer("impostor", self.n_triplets, embedded)
        for index in range(len(widths)):  # 1-d gathers: far faster than along dim 1
            torch.index_select(distances[index], 0, self.genuine, out=margins[index])
            torch.index_select(distances[index], 0, self.impostor, out=impostor)
            margins[index].sub_(impostor)
        return margins[0] if len(embeddings) == 1 else margins


@torch.inference_mode()
def global_objective(X, triplets, basis, weights, beta, pairs=None):
    """Full global SCML objective :math:`F(w)` (see the module docstring).

    ``pairs`` (a ``_TripletPairs`` of ``triplets``) is built when not given.
    """
    pairs = pairs if pairs is not None else _TripletPairs(triplets, X.shape[0])
    embedded = X @ metric_factor(basis, weights).T
    hinge = torch.relu(1 + pairs.margins(embedded)).mean()
    return hinge + beta * weights.sum()


# Target size of the strided sample that locates the kink of the line search (see
# _kink_by_selection): sorting it costs a few microseconds, and its estimate of the kink's
# rank is then good to a few per cent of the negatives.
KINK_SAMPLE = 2048
_UNDECIDED = object()


def _best_scale(margins, l1, beta, scratch=None):
    r"""The minimiser :math:`\alpha^\star > 0` of :math:`F(\alpha w)`, exactly.

    With :math:`\Delta_t = d_w(a, p) - d_w(a, n)`,
    :math:`F(\alpha w) = \frac{1}{N}\sum_t [1 + \alpha\Delta_t]_+ + \alpha\beta\lVert w\rVert_1`
    is convex and piecewise linear in :math:`\alpha`. For :math:`\alpha > 0` the active
    hinges are those with :math:`\Delta_t > -1/\alpha`: with :math:`\Delta` sorted
    ascending, a suffix :math:`\{t \ge k\}` of it, and the slope there is
    :math:`R_k / N + \beta\lVert w\rVert_1` with :math:`R_k = \sum_{j \ge k}\Delta_{(j)}`.
    The slope grows with :math:`\alpha`, so the minimum is at the kink
    :math:`\alpha = -1/\Delta_{(k-1)}` where it turns non-negative. Written with the
    total :math:`S = \sum_t \Delta_t + N\beta\lVert w\rVert_1` and the prefix sums
    :math:`P_k = \sum_{j < k}\Delta_{(j)}` of the negative margins, ascending, :math:`k` is
    the first index with :math:`S - P_k \ge 0`: one sort and one cumulative sum
    (:func:`_kink_by_sorting`). On the CPU, :func:`_kink_by_selection` finds the same
    :math:`k` from a partial sort, and leaves the rare cases it cannot certify to the
    sort.

    Parameters
    ----------
    margins : torch.Tensor of shape (N,)
        :math:`\Delta_t` of every triplet.
    l1 : float
        :math:`\lVert w\rVert_1`.
    beta : float
    scratch : torch.Tensor of shape (N,), optional
        Work space for the partial sort on the CPU (else one is allocated).

    Returns
    -------
    float or None
        :math:`\alpha^\star`, or None when :math:`F` grows from :math:`\alpha = 0` on (no
        scale of ``w`` beats :math:`w = 0`).
    """
    total = margins.sum() + margins.shape[0] * beta * l1
    if margins.device.type == "cpu":
        work = None if scratch is None else scratch.numpy()
        scale = _kink_by_selection(margins.numpy(), total.numpy(), work)
        if scale is not _UNDECIDED:
            return scale
    return _kink_by_sorting(margins, total)


def _kink_by_sorting(margins, total):
    """:func:`_best_scale` by a full sort of the negative margins."""
    ordered = _sorted_negatives(margins)  # only the negative margins have kinks
    n_negative = ordered.shape[0]
    if n_negative == 0:
        return None
    # slopes[k] = N * (slope of F while the suffix k is active) = S - P_k, for
    # k = 0 .. n_negative; increasing in k, and slopes[n_negative] >= 0.
    prefix = torch.cat([ordered.new_zeros(1), ordered.cumsum(0)])
    slopes = total - prefix
    if bool(slopes[0] >= 0):
        return None
    k = int(torch.searchsorted(slopes, slopes.new_zeros(())))  # first k with slope >= 0
    k = min(max(k, 1), n_negative)
    return float(-1.0 / ordered[k - 1])


def _kink_by_selection(values, total, scratch=None):
    r""":func:`_best_scale` from a partial sort, or ``_UNDECIDED``.

    The kink's rank :math:`k` is where the prefix sums :math:`P_k` of the sorted negatives
    pass :math:`S`; only the negatives of rank near :math:`k` need sorting. A sorted
    strided sample estimates :math:`k`; two selections (``np.partition``, linear time)
    split off the values below a bracket of ranks around it and those inside it, and
    only the bracket is sorted: :math:`P_k` is then the sum of the values below plus a
    cumulative sum over the bracket.

    Those sums add in another order than the sort's cumulative sum, so they may differ from
    it by rounding: at most :math:`\gamma_k (|S| + |P_k|)` with
    :math:`\gamma_k \approx k\,\epsilon` for either. The slope :math:`S - P_k` is
    increasing in exact arithmetic, so where the slopes just before and at the crossing
    are farther from 0 than twice that bound, both computations put the crossing at the
    same :math:`k`, and the kink, a value of the data, is the same number. Otherwise
    (the bracket missed the crossing, the margin is too thin, or a value is not finite)
    this returns ``_UNDECIDED`` and the caller sorts.

    Parameters
    ----------
    values : numpy.ndarray of shape (N,)
        The margins :math:`\Delta_t`.
    total : numpy.ndarray of shape ()
        :math:`S`, in the dtype of ``values`` (the arithmetic below stays in that dtype,
        as the sort's does).
    scratch : numpy.ndarray of shape (N,), optional
        Where the values are copied and partially sorted in place (else a new array).
    """
    n = values.shape[0]
    if not np.isfinite(total):
        return _UNDECIDED
    n_negative = int(np.count_nonzero(values < 0))
    if n_negative == 0 or total >= 0:  # no kink, or F grows from alpha = 0 on
        return None
    stride = max(1, n // KINK_SAMPLE)
    sample = np.sort(values[::stride])
    estimate = np.cumsum(sample[: np.searchsorted(sample, 0)])
    estimate *= stride
    # Estimated rank of the crossing, in sample units, and a bracket of a few standard
    # deviations of that estimate around it.
    guess = int(np.searchsorted(-estimate, -total))
    width = 4 * math.sqrt(guess + 1) + 8
    low = int(max(0.0, guess - width) * stride)
    high = min(n_negative, int((guess + 1 + width) * stride))
    if high <= low:
        return _UNDECIDED
    work = np.empty_like(values) if scratch is None else scratch[:n]
    np.copyto(work, values)
    if low > 0:
        work.partition(low)  # in place: the `low` smallest first
    below = work[:low].sum() if low > 0 else values.dtype.type(0)
    rest = work[low:]
    if high - low < rest.shape[0]:
        rest.partition(high - low - 1)
    bracket = rest[: high - low]
    bracket.sort()
    prefix = np.cumsum(bracket)  # P_k for k = low + 1 .. high
    prefix += below
    slopes = total - prefix
    start = total - below  # the slope at k = low
    crossing = slopes >= 0
    j = int(np.argmax(crossing))
    if start >= 0 or not crossing[j]:
        return _UNDECIDED  # the crossing lies outside the bracket
    before = slopes[j - 1] if j > 0 else start
    k = low + 1 + j
    bound = 4 * (k + 2) * np.finfo(values.dtype).eps * (abs(float(total)) + abs(float(prefix[j])))
    if not (before < -bound and slopes[j] >= bound):
        return _UNDECIDED
    return float(-1.0 / bracket[j])  # the k-th smallest margin


def _sorted_negatives(values):
    """The negative entries, ascending; with numpy on the CPU (several times faster there)."""
    if values.device.type == "cpu":
        ordered = torch.from_numpy(np.sort(values.numpy()))
    else:
        ordered = torch.sort(values).values
    return ordered[: int(torch.searchsorted(ordered, ordered.new_zeros(())))]


def _evaluate(X, pairs, basis, candidates, beta):
    r"""Each candidate weight vector with its scale tuned, and its full objective.

    The overall scale of a stochastic iterate is only roughly right when the RDA steps are
    large; :func:`_best_scale` corrects it exactly (it does not touch the sparsity
    pattern). The margins of all candidates come from one pass over the triplet pairs.

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
    hinges = pairs._buffer("hinges", margins.shape[1], margins)

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
        scale = _best_scale(delta, l1, beta, scratch=hinges)  # free until `tuned`
        if scale is None or not math.isfinite(scale):
            continue
        tuned = mean_hinge(delta, scale) + beta * scale * l1
        if tuned < at_one:
            results[i] = (weights * scale, tuned)
    return results


class _Checkpoints:
    """The evaluations of an RDA solve: history, best iterate, progress, non-finite guard.

    Both solvers evaluate the full objective every ``output_iter`` iterations and keep the
    best iterate seen (RDA's iterates are not monotone); this is that bookkeeping, once.

    Parameters
    ----------
    stage : {"global", "local"}
        Named in the progress lines and in the warning.
    coef : torch.Tensor
        The starting iterate.
    objective : float
        Its full objective.
    verbose : int
    advice : str
        What the warning suggests when a value becomes non-finite.
    """

    def __init__(self, stage, coef, objective, verbose, advice):
        self.stage, self.verbose, self.advice = stage, verbose, advice
        self.start = time.perf_counter()
        self.best, self.best_coef = objective, coef.clone()
        self.history = [(0, objective)]
        self._report(0, objective)

    def _report(self, iteration, objective):
        if self.verbose:
            print(
                f"[SCMLRegressor] {self.stage} iter {iteration:6d}  objective {objective:.6f}  "
                f"best {self.best:.6f}  ({time.perf_counter() - self.start:.2f} s)"
            )

    def record(self, iteration, coef, objective):
        """Record one evaluation; return False (after a warning) if it is not finite."""
        if not math.isfinite(objective) or not bool(torch.isfinite(coef).all()):
            warnings.warn(
                f"the {self.stage} SCML solve produced a non-finite value at iteration "
                f"{iteration}; the best weights found before it are kept. {self.advice}",
                NonFiniteWarning,
                stacklevel=4,
            )
            return False
        self.history.append((iteration, objective))
        if objective < self.best:
            self.best, self.best_coef = objective, coef.clone()
        self._report(iteration, objective)
        return True

    def result(self, n_iter, failed):
        return SolverResult(self.best_coef, self.best, self.history, n_iter, failed)


class _GlobalState:
    r"""The state of the global RDA recursion, advanced one block of iterations at a time.

    With the unscaled batch sums :math:`G = \sum_s \sum_{t \in B_s \text{ active}} D_t` and
    :math:`Q = \sum_s \big(\sum_{t \in B_s \text{ active}} D_t\big)^2`, the closed form of
    the module docstring reads :math:`w = u / \gamma` with

    .. math::

        u = \frac{\max(h, 0)}{\delta b + \sqrt{Q}}, \qquad h = -G - \beta b t,

    and the hinge of triplet :math:`t` is active when :math:`1 + D_t^\top w > 0`, that is
    :math:`D_t^\top u > -\gamma`. The state keeps :math:`h`, :math:`Q`, :math:`u` and the
    running sum of :math:`u` (the mean of the iterates, RDA's averaged point).

    Every iteration depends on the previous one through which hinges are active, so the
    iterations run one after the other; each is a handful of operations on vectors of
    length K. On the CPU they run in numpy, whose per-call cost is a fraction of torch's
    dispatch cost, on views of the same memory (no copy). On a CUDA device a whole block
    of iterations runs in one fused kernel (:mod:`._rda_kernel`) when Triton is
    available, since a dozen kernel launches per iteration would cost far more than the
    arithmetic; otherwise in torch operations on the device.

    Parameters
    ----------
    n_basis : int
    beta, gamma : float
    batch_size : int
    dtype : torch.dtype
    device : torch.device or str
    backend : {"numpy", "kernel", "torch"}, optional
        How the iterations run; by default numpy on the CPU, else the fused kernel when
        it can run, else torch.

    Attributes
    ----------
    block_iterations : int
        Iterations per call of :meth:`run` that suit the backend.
    """

    def __init__(self, n_basis, *, beta, gamma, batch_size, dtype, device, backend=None):
        self.gamma = gamma
        self.iteration = 0
        if backend is None:
            if torch.device(device).type == "cpu":
                backend = "numpy"
            elif _rda_kernel.fused_kernel_available(device, batch_size, n_basis, dtype):
                backend = "kernel"
            else:
                backend = "torch"
        self.backend = backend
        if backend == "kernel":
            # The fused kernel pays one launch per block: blocks as long as a span, memory
            # permitting, instead of the cache-sized blocks of the CPU.
            budget = _rda_kernel.BLOCK_ENTRIES // (batch_size * n_basis)
            self.block_iterations = max(1, min(SPAN_ITERATIONS, budget))
        else:
            self.block_iterations = BLOCK_ITERATIONS
        zeros = lambda: torch.zeros(n_basis, dtype=dtype, device=device)  # noqa: E731
        self.h, self.sq_sum, self.u, self.u_sum = zeros(), zeros(), zeros(), zeros()
        self.rate = beta * batch_size  # the l1 term's growth of -h per iteration
        self.slack = DELTA * batch_size
        if backend == "numpy":
            # numpy views of the tensors above, and constants as arrays of the same dtype
            # (a Python scalar operand costs a conversion on every call).
            names = ("h", "sq_sum", "u", "u_sum")
            self._np = {name: getattr(self, name).numpy() for name in names}
            numpy_dtype = self._np["h"].dtype
            self._rate = np.full(n_basis, self.rate, dtype=numpy_dtype)
            self._slack = np.full(n_basis, self.slack, dtype=numpy_dtype)
            self._zero = np.zeros(n_basis, dtype=numpy_dtype)
            self._threshold = np.full(batch_size, -gamma, dtype=numpy_dtype)
            self._margins = np.empty(batch_size, dtype=numpy_dtype)
            self._active = np.empty(batch_size, dtype=numpy_dtype)
            self._active_mask = np.empty(batch_size, dtype=bool)
            self._grad = np.empty(n_basis, dtype=numpy_dtype)
            self._grad_sq = np.empty(n_basis, dtype=numpy_dtype)
            self._denominator = np.empty(n_basis, dtype=numpy_dtype)
        elif backend == "kernel":
            self._constants = _rda_kernel.kernel_constants(gamma, self.rate, self.slack, self.h)

    def weights(self):
        """The iterate :math:`w_t`."""
        return self.u / self.gamma

    def mean_weights(self):
        r"""The mean of the iterates :math:`\frac{1}{t}\sum_{s \le t} w_s`."""
        return self.u_sum / (self.gamma * max(self.iteration, 1))

    def run(self, diffs):
        """Advance one iteration per mini-batch of ``diffs`` (shape (n_block, batch, K))."""
        if self.backend == "numpy":
            self._run_numpy(diffs.numpy())
        elif self.backend == "kernel":
            _rda_kernel.run_rda_block(
                diffs, self.h, self.sq_sum, self.u, self.u_sum, self._constants
            )
        else:
            self._run_torch(diffs)
        self.iteration += diffs.shape[0]

    def _run_numpy(self, diffs):
        h, sq_sum, u, u_sum = (self._np[name] for name in ("h", "sq_sum", "u", "u_sum"))
        margins, active, active_mask, grad = (
            self._margins,
            self._active,
            self._active_mask,
            self._grad,
        )
        grad_sq, denominator = self._grad_sq, self._denominator
        rate, slack, zero, threshold = self._rate, self._slack, self._zero, self._threshold
        greater, subtract, multiply, add = np.greater, np.subtract, np.multiply, np.add
        sqrt, maximum, divide = np.sqrt, np.maximum, np.divide
        # A dozen calls per iteration, each a fraction of a microsecond. (ndarray.dot skips
        # np.dot's dispatch layer; sqrt of a sum of squares is several times faster than
        # np.hypot, which guards against overflow element by element.)
        for batch in diffs:
            batch.dot(u, out=margins)
            # 1 + D_t w > 0, as 0/1 (a boolean result then a copy beats a casting compare)
            greater(margins, threshold, out=active_mask)
            active[...] = active_mask
            active.dot(batch, out=grad)
            subtract(h, grad, out=h)
            subtract(h, rate, out=h)
            multiply(grad, grad, out=grad_sq)
            add(sq_sum, grad_sq, out=sq_sum)
            sqrt(sq_sum, out=denominator)
            add(denominator, slack, out=denominator)
            maximum(h, zero, out=u)
            divide(u, denominator, out=u)
            add(u_sum, u, out=u_sum)

    def _run_torch(self, diffs):
        h, sq_sum, u, u_sum = self.h, self.sq_sum, self.u, self.u_sum
        for batch in diffs:
            active = (torch.mv(batch, u) > -self.gamma).to(batch.dtype)
            grad = torch.mv(batch.T, active)
            h.sub_(grad).sub_(self.rate)
            sq_sum.addcmul_(grad, grad)
            torch.div(h.clamp_min(0), sq_sum.sqrt().add_(self.slack), out=u)
            u_sum.add_(u)


@torch.inference_mode()
def rda_global(
    X,
    triplets,
    basis,
    *,
    beta,
    gamma,
    max_iter,
    batch_size,
    output_iter,
    generator,
    verbose=0,
):
    r"""Global SCML by AdaGrad-RDA with the non-negative :math:`\ell_1` prox.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
    triplets : torch.Tensor of shape (n_triplets, 3), int64
    basis : torch.Tensor of shape (K, n_features)
    beta, gamma : float
        :math:`\ell_1` strength and the inverse step size.
    max_iter, batch_size, output_iter : int
    generator : torch.Generator
        On the device of X; draws the mini-batches.
    verbose : int

    Returns
    -------
    SolverResult
        ``coef`` is the best weight vector :math:`w` (shape (K,)).
    """
    device, dtype = X.device, X.dtype
    n_basis = basis.shape[0]
    state = _GlobalState(
        n_basis, beta=beta, gamma=gamma, batch_size=batch_size, dtype=dtype, device=device
    )
    take = _index_stream(triplets.shape[0], generator, device)
    block_diffs = _BlockDifferences(_Projector(X, basis), state.block_iterations * batch_size)
    pairs = _TripletPairs(triplets, X.shape[0])
    weights = state.weights()
    checkpoints = _Checkpoints(
        "global",
        weights,
        1.0,  # F(0): every hinge is 1, no penalty
        verbose,
        "Scale the features or increase gamma.",
    )
    failed = False
    for start, stop in _spans(max_iter, output_iter):
        for n_block, columns in _span_blocks(
            triplets, take, stop - start, batch_size, state.block_iterations
        ):
            state.run(block_diffs(columns).view(n_block, batch_size, n_basis))
        if stop % output_iter == 0 or stop == max_iter:
            # The iterate and the running mean of the iterates (RDA's convergence guarantee
            # is for the mean, which is far steadier than the last iterate when the steps
            # are large), each with its scale tuned.
            (candidate, objective), (averaged, averaged_objective) = _evaluate(
                X, pairs, basis, [state.weights(), state.mean_weights()], beta
            )
            if averaged_objective < objective:
                objective, candidate = averaged_objective, averaged
            if not checkpoints.record(stop, candidate, objective):
                failed = True
                break
    return checkpoints.result(state.iteration, failed)


def local_weights(embedding, theta):
    r""":math:`w_i(x) = (\theta_i^\top [z(x); 1])^2` for rows of the embedding, shape (n, K)."""
    return (embedding @ theta[:, :-1].T + theta[:, -1]) ** 2


@torch.inference_mode()
def local_objective(X, embedding, triplets, basis, theta, beta, chunk_size=OBJECTIVE_CHUNK):
    """Full local SCML objective, in chunks of triplets."""
    return _local_objective(_Projector(X, basis), embedding, triplets, theta, beta, chunk_size)


def _local_objective(project, embedding, triplets, theta, beta, chunk_size=OBJECTIVE_CHUNK):
    total = theta.new_zeros(())
    # Each chunk holds (chunk, K) blocks: scale the chunk so that it stays ~chunk_size * 16.
    chunk_size = max(1, chunk_size * 16 // max(theta.shape[0], 16))
    for start in range(0, triplets.shape[0], chunk_size):
        chunk = triplets[start : start + chunk_size]
        weights = local_weights(embedding[chunk[:, 0]], theta)
        margin = 1 + (weights * _distance_differences(project, chunk)).sum(1)
        total = total + torch.relu(margin).sum()
    penalty = torch.linalg.vector_norm(theta, dim=1).sum()
    return total / triplets.shape[0] + beta * penalty


@torch.inference_mode()
def rda_local(
    X,
    embedding,
    triplets,
    basis,
    theta0,
    *,
    beta,
    gamma,
    max_iter,
    batch_size,
    output_iter,
    generator,
    verbose=0,
):
    r"""Local SCML by AdaGrad-RDA with the group-lasso prox, centred on ``theta0``.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
    embedding : torch.Tensor of shape (n_samples, m)
        :math:`z(x)` of every training point.
    triplets : torch.Tensor of shape (n_triplets, 3)
    basis : torch.Tensor of shape (K, n_features)
    theta0 : torch.Tensor of shape (K, m + 1)
        Starting point, rows :math:`[a_i; c_i]`.

    Returns
    -------
    SolverResult
        ``coef`` is the best :math:`\theta` (shape (K, m + 1)).
    """
    device, dtype = X.device, X.dtype
    n_basis, width = theta0.shape
    theta = theta0.clone()
    grad_sum = torch.zeros_like(theta)
    grad_sq = torch.zeros(n_basis, dtype=dtype, device=device)  # per group, mean over coords
    slack = DELTA * batch_size
    ones = torch.ones(X.shape[0], 1, dtype=dtype, device=device)
    augmented = torch.cat([embedding, ones], dim=1)  # [z; 1]
    tiny = torch.finfo(dtype).tiny
    take = _index_stream(triplets.shape[0], generator, device)
    project = _Projector(X, basis)
    block_diffs = _BlockDifferences(project, BLOCK_ITERATIONS * batch_size)
    checkpoints = _Checkpoints(
        "local",
        theta,
        float(_local_objective(project, embedding, triplets, theta, beta)),
        verbose,
        "Increase gamma.",
    )
    failed = False
    iteration = 0
    for start, stop in _spans(max_iter, output_iter):
        for n_block, columns in _span_blocks(
            triplets, take, stop - start, batch_size, BLOCK_ITERATIONS
        ):
            diffs = block_diffs(columns).view(n_block, batch_size, n_basis)
            anchors = augmented[columns[0]].view(n_block, batch_size, width)  # [z; 1]
            for batch, z in zip(diffs, anchors, strict=True):
                root = z @ theta.T  # sqrt of w_i(x_a), signed: (batch_size, K)
                hinge_active = ((root * root * batch).sum(1) > -1).to(dtype)
                coefficient = 2 * root * batch * hinge_active[:, None]
                grad = coefficient.T @ z  # (K, m + 1)
                grad_sum.add_(grad)
                grad_sq.add_((grad * grad).mean(1))
                iteration += 1
                # (t+1) / (gamma (delta + H)), with the batch mean folded in: / ((t+1) b)
                scale = 1.0 / (gamma * (grad_sq.sqrt() + slack))
                centre = theta0 - grad_sum * scale[:, None]
                norms = torch.linalg.vector_norm(centre, dim=1)
                threshold = beta * iteration * batch_size * scale
                shrink = torch.clamp(1 - threshold / norms.clamp_min(tiny), min=0)
                theta = centre * shrink[:, None]
        if stop % output_iter == 0 or stop == max_iter:
            objective = float(_local_objective(project, embedding, triplets, theta, beta))
            if not checkpoints.record(stop, theta, objective):
                failed = True
                break
    return checkpoints.result(iteration, failed)


class KernelPCAEmbedding:
    r"""RBF kernel-PCA embedding :math:`z(x)` of SCML-Local, whitened.

    The kernel is :math:`k(u, v) = \exp(-\lVert u - v\rVert^2 / (2\sigma^2))` with
    :math:`\sigma` the median pairwise distance of the landmarks. Kernel PCA is solved on
    at most ``max_landmarks`` training points (all of them when there are fewer; a random
    subset otherwise, so the cost stays :math:`O(\text{landmarks}^2)`), and every point is
    embedded by the centred kernel against the landmarks. Each component is scaled to unit
    variance on the training data so that the local weights see comparable inputs.

    The fitted state is a dict of tensors (``state``), stored by the estimator as numpy.
    """

    max_landmarks = 2000

    @staticmethod
    def fit(X, n_components, generator):
        n = X.shape[0]
        if n > KernelPCAEmbedding.max_landmarks:
            rows = torch.randperm(n, generator=generator, device=X.device)
            landmarks = X[rows[: KernelPCAEmbedding.max_landmarks]]
        else:
            landmarks = X
        sq = torch.cdist(landmarks, landmarks) ** 2
        off_diagonal = ~torch.eye(landmarks.shape[0], dtype=torch.bool, device=X.device)
        sigma = torch.sqrt(torch.median(sq[off_diagonal])) if landmarks.shape[0] > 1 else None
        if sigma is None or not bool(sigma > 0):
            sigma = torch.ones((), dtype=X.dtype, device=X.device)
        gram = torch.exp(-sq / (2 * sigma**2))
        col_mean = gram.mean(0)
        total_mean = col_mean.mean()
        centred = gram - col_mean[None, :] - col_mean[:, None] + total_mean
        eigenvalues, eigenvectors = torch.linalg.eigh((centred + centred.T) / 2)
        k = min(n_components, landmarks.shape[0])
        eigenvalues, eigenvectors = eigenvalues.flip(0)[:k], eigenvectors.flip(1)[:, :k]
        keep = eigenvalues > 1e3 * torch.finfo(X.dtype).eps * eigenvalues[0].clamp_min(1e-300)
        if not bool(keep.any()):
            keep[0] = True
        eigenvalues = eigenvalues[keep].clamp_min(torch.finfo(X.dtype).tiny)
        alphas = eigenvectors[:, keep] / torch.sqrt(eigenvalues)
        state = {
            "landmarks": landmarks,
            "sigma": sigma.reshape(()),
            "alphas": alphas,
            "col_mean": col_mean,
            "total_mean": total_mean.reshape(()),
            "scale": torch.ones(alphas.shape[1], dtype=X.dtype, device=X.device),
        }
        embedded = KernelPCAEmbedding.transform(state, X)
        std = embedded.std(0)
        state["scale"] = torch.where(std > 0, std, torch.ones_like(std))
        return state

    @staticmethod
    def transform(state, X, chunk_size=4096):
        blocks = []
        for start in range(0, X.shape[0], chunk_size):
            rows = X[start : start + chunk_size]
            sq = torch.cdist(rows, state["landmarks"]) ** 2
            gram = torch.exp(-sq / (2 * state["sigma"] ** 2))
            centred = (
                gram - state["col_mean"][None, :] - gram.mean(1, keepdim=True) + state["total_mean"]
            )
            blocks.append((centred @ state["alphas"]) / state["scale"])
        return torch.cat(blocks, dim=0)
