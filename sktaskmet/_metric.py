r"""Mahalanobis machinery shared by the metric learners (TaskMet and SCML).

A Mahalanobis (pseudo-)metric is given by a positive semi-definite matrix :math:`\Lambda`:

.. math::

    d_\Lambda(u, v) = \sqrt{(u - v)^\top \Lambda (u - v)} = \lVert L (u - v) \rVert_2,
    \qquad \Lambda = L^\top L .

This module has three parts.

1. **Parameterisations** (torch modules). Each returns :math:`\Lambda` (and a factor of it)
   from unconstrained parameters, so that gradient descent can never leave the PSD cone:

   * :class:`IdentityMetric`: :math:`\Lambda = I`.
   * :class:`DiagonalMetric`:
     :math:`\Lambda = \operatorname{diag}(\operatorname{softplus}(r)) + \epsilon I`.
   * :class:`FullMetric`: :math:`\Lambda = C C^\top + \epsilon I` with a lower-triangular
     (Cholesky-style) factor :math:`C`.
   * :class:`ConditionalMetric`: :math:`\Lambda(x) = L(x) L(x)^\top + \epsilon I`, with
     :math:`L(x)` (or a diagonal) produced by a small network from the conditioning input
     :math:`x`, as in TaskMet. :math:`\epsilon` may be learned as :math:`e^{s}`.

2. **Distances** computed from differences. :func:`pairwise_mahalanobis` forms
   :math:`u_i - v_j` explicitly instead of expanding
   :math:`\lVert u\rVert^2 + \lVert v\rVert^2 - 2 u^\top v` as fast ``cdist`` code paths do:
   the expansion loses :math:`d(x, x) = 0` and symmetry to cancellation, which breaks the
   metric axioms that users (and our property tests) rely on.

3. **The scikit-learn side**: :class:`MahalanobisMixin` gives a fitted global metric learner
   metric-learn's vocabulary (``components_``, ``get_mahalanobis_matrix``, ``get_metric``,
   ``pair_distance``, ``pair_score``, ``transform``), and :class:`MahalanobisDistance` is the
   picklable callable that ``get_metric`` returns for ``metric=`` arguments.
"""

import math
from numbers import Integral

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn
from torch.nn import functional as F

from ._nn import make_mlp

__all__ = [
    "MetricParameterization",
    "IdentityMetric",
    "DiagonalMetric",
    "FullMetric",
    "ConditionalMetric",
    "make_metric",
    "squared_mahalanobis",
    "pairwise_mahalanobis",
    "components_from_matrix",
    "MahalanobisDistance",
    "MahalanobisMixin",
]

# softplus^{-1}(1): raw parameters start where the metric is the identity.
_SOFTPLUS_INV_ONE = math.log(math.expm1(1.0))


# --------------------------------------------------------------------------------------
# 1. PSD parameterisations
# --------------------------------------------------------------------------------------


class MetricParameterization(nn.Module):
    r"""Base class of the PSD parameterisations.

    Subclasses implement :meth:`factor`, returning ``(C, ridge)`` with
    :math:`\Lambda = C C^\top + \text{ridge}\, I`; for diagonal metrics ``C`` is the vector
    of diagonal entries of :math:`C C^\top` instead (``diagonal = True``), so nothing of size
    :math:`d^2` is formed.

    Attributes
    ----------
    dim : int
        Size :math:`d` of the space the metric acts on.
    conditional : bool
        Whether :math:`\Lambda` depends on a conditioning input ``x``.
    diagonal : bool
        Whether :math:`\Lambda` is diagonal.
    """

    conditional = False
    diagonal = False

    def __init__(self, dim):
        super().__init__()
        if not isinstance(dim, Integral) or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim!r}.")
        self.dim = int(dim)

    def factor(self, x=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_x(self, x):
        if self.conditional and x is None:
            raise ValueError(f"{type(self).__name__} is conditional: pass the input x.")

    def forward(self, x=None):
        r"""The metric matrix :math:`\Lambda` (or :math:`\Lambda(x)` per row of ``x``).

        Parameters
        ----------
        x : torch.Tensor of shape (n, in_features), optional
            Conditioning input, required by conditional metrics and ignored otherwise.

        Returns
        -------
        torch.Tensor of shape (dim, dim), or (n, dim, dim) for a conditional metric
        """
        self._check_x(x)
        factor, ridge = self.factor(x)
        eye = torch.eye(self.dim, dtype=factor.dtype, device=factor.device)
        if self.diagonal:
            return torch.diag_embed(factor + ridge)
        return factor @ factor.transpose(-1, -2) + ridge * eye

    def diagonal_values(self, x=None):
        r"""The diagonal of :math:`\Lambda` without forming the full matrix.

        Returns
        -------
        torch.Tensor of shape (dim,), or (n, dim) for a conditional metric
        """
        self._check_x(x)
        factor, ridge = self.factor(x)
        if self.diagonal:
            return factor + ridge
        return (factor * factor).sum(-1) + ridge

    def quadratic_form(self, diff, x=None):
        r"""Squared distances :math:`r^\top \Lambda r` for residual vectors ``diff``.

        This is the inner objective of TaskMet. It never forms :math:`\Lambda` for the
        full case: :math:`r^\top (C C^\top + \epsilon I) r = \lVert C^\top r\rVert^2 +
        \epsilon \lVert r\rVert^2`.

        Parameters
        ----------
        diff : torch.Tensor of shape (n, dim)
        x : torch.Tensor of shape (n, in_features), optional
            Conditioning input for conditional metrics (one row per residual).

        Returns
        -------
        torch.Tensor of shape (n,)
        """
        self._check_x(x)
        factor, ridge = self.factor(x)
        sq = diff * diff
        if self.diagonal:
            return (sq * (factor + ridge)).sum(-1)
        projected = (diff.unsqueeze(-2) @ factor).squeeze(-2)
        return (projected * projected).sum(-1) + ridge * sq.sum(-1)


class IdentityMetric(MetricParameterization):
    r"""The Euclidean metric :math:`\Lambda = I` (no parameters).

    Parameters
    ----------
    dim : int
    """

    diagonal = True

    def __init__(self, dim):
        super().__init__(dim)
        # A buffer, so that .to(dtype/device) moves the identity with the module.
        self.register_buffer("unit", torch.ones(self.dim))

    def factor(self, x=None):
        values = self.unit if x is None else self.unit.to(x.dtype).expand(x.shape[0], self.dim)
        return values, 0.0


class DiagonalMetric(MetricParameterization):
    r"""A global diagonal metric :math:`\mathrm{diag}(\mathrm{softplus}(r)) + \epsilon I`.

    Parameters
    ----------
    dim : int
    eps : float, default=1e-6
        Ridge that keeps :math:`\Lambda` positive definite.
    """

    diagonal = True

    def __init__(self, dim, eps=1e-6):
        super().__init__(dim)
        self.eps = float(eps)
        self.raw = nn.Parameter(torch.full((self.dim,), _SOFTPLUS_INV_ONE))

    def factor(self, x=None):
        values = F.softplus(self.raw)
        if x is not None:
            values = values.expand(x.shape[0], self.dim)
        return values, self.eps


class FullMetric(MetricParameterization):
    r"""A global full metric :math:`\Lambda = C C^\top + \epsilon I`, :math:`C` lower triangular.

    Only the lower triangle of the parameter matrix is used, so :math:`C` is a
    Cholesky-style factor with :math:`d(d+1)/2` free entries; it starts at the identity.

    Parameters
    ----------
    dim : int
    eps : float, default=1e-6
        Ridge that keeps :math:`\Lambda` positive definite.
    """

    def __init__(self, dim, eps=1e-6):
        super().__init__(dim)
        self.eps = float(eps)
        self.raw = nn.Parameter(torch.eye(self.dim))

    def factor(self, x=None):
        lower = torch.tril(self.raw)
        if x is not None:
            lower = lower.expand(x.shape[0], self.dim, self.dim)
        return lower, self.eps


class ConditionalMetric(MetricParameterization):
    r"""An input-dependent metric :math:`\Lambda(x)` produced by a small network.

    Full version (TaskMet's metric):

    .. math::

        \Lambda(x) = L(x) L(x)^\top + e^{s} I, \qquad
        L(x) = \operatorname{reshape}(\mathrm{MLP}(x), d \times d),

    with :math:`s` a learned scalar starting at :math:`\log(\text{ridge})` when
    ``learn_ridge`` is True, and a fixed ridge otherwise. Diagonal version:
    :math:`\Lambda(x) = \operatorname{diag}(\operatorname{softplus}(\mathrm{MLP}(x))) + e^{s} I`.

    Parameters
    ----------
    in_features : int
        Dimension of the conditioning input ``x``.
    dim : int
        Dimension :math:`d` of the space the metric acts on.
    hidden_layer_sizes : tuple of int, default=(200,)
        Hidden widths of the MLP (ReLU activations).
    diagonal : bool, default=False
        Produce a diagonal metric (:math:`d` outputs) instead of a full factor (:math:`d^2`).
    ridge : float, default=1.0
        Initial (or fixed) value of the ridge :math:`e^{s}`.
    learn_ridge : bool, default=True
        Learn :math:`s` with the network.
    """

    conditional = True

    def __init__(
        self,
        in_features,
        dim,
        hidden_layer_sizes=(200,),
        diagonal=False,
        ridge=1.0,
        learn_ridge=True,
    ):
        super().__init__(dim)
        if ridge <= 0:
            raise ValueError(f"ridge must be positive; got {ridge!r}.")
        self.in_features = int(in_features)
        self.diagonal = bool(diagonal)
        out = self.dim if self.diagonal else self.dim * self.dim
        self.network = make_mlp(self.in_features, tuple(hidden_layer_sizes), out)
        log_ridge = torch.tensor(math.log(ridge))
        if learn_ridge:
            self.log_ridge = nn.Parameter(log_ridge)
        else:
            self.register_buffer("log_ridge", log_ridge)

    def factor(self, x=None):
        self._check_x(x)
        out = self.network(x)
        ridge = torch.exp(self.log_ridge).to(out.dtype)
        if self.diagonal:
            return F.softplus(out), ridge
        return out.reshape(x.shape[0], self.dim, self.dim), ridge


_METRIC_KINDS = ("identity", "diagonal", "full", "conditional_diagonal", "conditional_full")


def make_metric(kind, dim, in_features=None, **kwargs):
    """Build a parameterisation by name.

    Parameters
    ----------
    kind : {"identity", "diagonal", "full", "conditional_diagonal", "conditional_full"}
    dim : int
        Dimension of the space the metric acts on.
    in_features : int, optional
        Dimension of the conditioning input; required by the conditional kinds.
    **kwargs
        Passed to the parameterisation's constructor.

    Returns
    -------
    MetricParameterization
    """
    if kind == "identity":
        return IdentityMetric(dim)
    if kind == "diagonal":
        return DiagonalMetric(dim, **kwargs)
    if kind == "full":
        return FullMetric(dim, **kwargs)
    if kind in ("conditional_diagonal", "conditional_full"):
        if in_features is None:
            raise ValueError(f"metric={kind!r} needs in_features, the width of its input x.")
        return ConditionalMetric(
            in_features, dim, diagonal=kind == "conditional_diagonal", **kwargs
        )
    raise ValueError(f"metric must be one of {_METRIC_KINDS}; got {kind!r}.")


# --------------------------------------------------------------------------------------
# 2. Distances from differences
# --------------------------------------------------------------------------------------


def squared_mahalanobis(diff, matrix):
    r"""Squared distances :math:`r^\top \Lambda r` for a batch of differences.

    Parameters
    ----------
    diff : torch.Tensor of shape (..., d)
    matrix : torch.Tensor of shape (d, d) or (..., d, d)
        A PSD matrix, shared or one per difference.

    Returns
    -------
    torch.Tensor of shape (...)
        Clamped at zero: rounding can make a PSD quadratic form slightly negative.
    """
    values = torch.einsum("...i,...ij,...j->...", diff, matrix, diff)
    return values.clamp_min(0)


def pairwise_mahalanobis(X, Y=None, components=None, squared=False, chunk_size=1024):
    r"""Distances :math:`\lVert L(x_i - y_j)\rVert` between all rows of X and Y.

    Differences are formed explicitly (in chunks of ``chunk_size`` rows of X to bound the
    memory at ``chunk_size * n_Y * d``), so :math:`d(x, x) = 0` and
    :math:`d(x, y) = d(y, x)` hold exactly, which the expansion used by fast ``cdist``
    code paths does not guarantee.

    Parameters
    ----------
    X : torch.Tensor of shape (n_X, d)
    Y : torch.Tensor of shape (n_Y, d), optional
        Defaults to X.
    components : torch.Tensor of shape (k, d), optional
        The factor :math:`L` with :math:`\Lambda = L^\top L`; the identity when None.
    squared : bool, default=False
        Return squared distances.
    chunk_size : int, default=1024

    Returns
    -------
    torch.Tensor of shape (n_X, n_Y)
    """
    Y = X if Y is None else Y
    blocks = []
    for start in range(0, X.shape[0], chunk_size):
        diff = X[start : start + chunk_size, None, :] - Y[None, :, :]
        if components is not None:
            diff = diff @ components.T
        blocks.append((diff * diff).sum(-1))
    sq = torch.cat(blocks, dim=0) if blocks else X.new_zeros((0, Y.shape[0]))
    return sq if squared else torch.sqrt(sq)


def components_from_matrix(matrix, tol=None):
    r"""A factor :math:`L` with :math:`L^\top L = M` for a symmetric PSD matrix :math:`M`.

    Uses the eigendecomposition :math:`M = V \operatorname{diag}(w) V^\top`,
    :math:`L = \operatorname{diag}(\sqrt{\max(w, 0)}) V^\top`; eigenvalues below
    ``-tol`` mean the matrix is not PSD.

    Parameters
    ----------
    matrix : ndarray of shape (d, d)
    tol : float, optional
        Tolerance for negative eigenvalues, relative to the largest magnitude; defaults to
        ``d * eps`` of the dtype times 10.

    Returns
    -------
    ndarray of shape (d, d)
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"the metric matrix must be square; got shape {matrix.shape}.")
    sym = (matrix + matrix.T) / 2
    w, V = np.linalg.eigh(sym)
    scale = max(float(np.max(np.abs(w), initial=0.0)), np.finfo(w.dtype).tiny)
    tol = 10 * matrix.shape[0] * np.finfo(w.dtype).eps if tol is None else tol
    if w.min(initial=0.0) < -tol * scale:
        raise ValueError(
            f"the metric matrix is not positive semi-definite (smallest eigenvalue {w.min():.3g})."
        )
    return (np.sqrt(np.clip(w, 0, None))[:, None] * V.T).astype(matrix.dtype, copy=False)


# --------------------------------------------------------------------------------------
# 3. scikit-learn side: metric-learn's vocabulary
# --------------------------------------------------------------------------------------


class MahalanobisDistance:
    r"""Picklable callable :math:`(u, v) \mapsto \lVert L(u - v)\rVert_2`.

    What :meth:`MahalanobisMixin.get_metric` returns: usable wherever scikit-learn takes a
    callable ``metric=`` (``KNeighborsRegressor``, ``pairwise_distances``, ...). It holds a
    copy of the components, so refitting the estimator does not change it.

    Parameters
    ----------
    components : ndarray of shape (n_components, n_features)
    """

    def __init__(self, components):
        self.components = np.array(components, dtype=np.float64, copy=True)

    def __call__(self, u, v):
        diff = np.asarray(u, dtype=np.float64).ravel() - np.asarray(v, dtype=np.float64).ravel()
        if diff.shape[0] != self.components.shape[1]:
            raise ValueError(
                f"points have {diff.shape[0]} features; this metric expects "
                f"{self.components.shape[1]}."
            )
        projected = self.components @ diff
        return float(np.sqrt(projected @ projected))

    def __repr__(self):
        n_components, n_features = self.components.shape
        return f"MahalanobisDistance(n_components={n_components}, n_features={n_features})"


def check_pairs(pairs, n_features, dtype=(np.float64, np.float32)):
    """Validate an array of pairs of shape (n_pairs, 2, n_features).

    Parameters
    ----------
    pairs : array-like of shape (n_pairs, 2, n_features)
    n_features : int
        The width the estimator was fitted on.
    dtype : dtype or tuple of dtypes
        Accepted dtypes; other inputs are converted to the first.

    Returns
    -------
    ndarray of shape (n_pairs, 2, n_features)
    """
    pairs = np.asarray(pairs)
    if pairs.ndim != 3 or pairs.shape[1] != 2:
        raise ValueError(
            "pairs must be an array of shape (n_pairs, 2, n_features) holding the two points "
            f"of each pair; got shape {pairs.shape}."
        )
    if pairs.shape[2] != n_features:
        raise ValueError(
            f"pairs have {pairs.shape[2]} features, but the estimator was fitted with "
            f"{n_features} features."
        )
    dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
    if pairs.dtype not in [np.dtype(d) for d in dtypes]:
        pairs = pairs.astype(dtypes[0])
    if not np.all(np.isfinite(pairs)):
        raise ValueError("pairs contains NaN or infinity.")
    return pairs


class MahalanobisMixin:
    r"""metric-learn's vocabulary for a fitted global Mahalanobis metric learner.

    The estimator sets ``components_`` (the factor :math:`L`, shape
    ``(n_components, n_features_in_)``) during ``fit``. The learned metric is

    .. math:: d(u, v) = \lVert L(u - v) \rVert_2, \qquad M = L^\top L .

    Local metric learners, whose matrix depends on the point, override
    :meth:`get_mahalanobis_matrix` and document what ``components_`` means for them.
    """

    def _components_for(self, dtype):
        check_is_fitted(self, "components_")
        return np.asarray(self.components_, dtype=dtype)

    def get_mahalanobis_matrix(self):
        """The learned Mahalanobis matrix :math:`M = L^\\top L`.

        Returns
        -------
        ndarray of shape (n_features, n_features)
        """
        check_is_fitted(self, "components_")
        components = np.asarray(self.components_)
        return components.T @ components

    def get_metric(self):
        """A callable distance for scikit-learn's ``metric=`` parameters.

        Returns
        -------
        MahalanobisDistance
            ``metric(u, v)`` for two 1-d points; picklable.

        Examples
        --------
        ``KNeighborsRegressor(metric=estimator.get_metric())`` runs k-nearest neighbours in
        the learned metric.
        """
        return MahalanobisDistance(self._components_for(np.float64))

    def pair_distance(self, pairs):
        """Distances between the two points of each pair.

        Parameters
        ----------
        pairs : array-like of shape (n_pairs, 2, n_features)

        Returns
        -------
        ndarray of shape (n_pairs,)
        """
        check_is_fitted(self, "components_")
        pairs = check_pairs(pairs, self.n_features_in_)
        components = self._components_for(pairs.dtype)
        projected = (pairs[:, 0, :] - pairs[:, 1, :]) @ components.T
        return np.sqrt(np.einsum("ij,ij->i", projected, projected))

    def pair_score(self, pairs):
        """Similarity of the two points of each pair: the negated :meth:`pair_distance`.

        Parameters
        ----------
        pairs : array-like of shape (n_pairs, 2, n_features)

        Returns
        -------
        ndarray of shape (n_pairs,)
            Higher means more similar.
        """
        return -self.pair_distance(pairs)

    def transform(self, X):
        """Embed X in the space where the learned metric is Euclidean: :math:`X L^\\top`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_components)
        """
        check_is_fitted(self, "components_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return X @ self._components_for(X.dtype).T
