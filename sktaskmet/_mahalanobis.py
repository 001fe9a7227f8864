r"""Mahalanobis distances and metric-learn's vocabulary for the metric learners.

A Mahalanobis (pseudo-)metric is given by a positive semi-definite matrix :math:`M`:

.. math::

    d_M(u, v) = \sqrt{(u - v)^\top M (u - v)} = \lVert L (u - v) \rVert_2,
    \qquad M = L^\top L .

* :func:`pairwise_mahalanobis` forms the differences :math:`u_i - v_j` explicitly instead
  of expanding :math:`\lVert u\rVert^2 + \lVert v\rVert^2 - 2 u^\top v` as fast ``cdist``
  code paths do: the expansion loses :math:`d(x, x) = 0` and symmetry to cancellation,
  which breaks the metric axioms that users (and our property tests) rely on.
* :class:`MahalanobisMixin` gives a fitted global metric learner metric-learn's vocabulary
  (``components_``, ``get_mahalanobis_matrix``, ``get_metric``, ``pair_distance``,
  ``pair_score``, ``transform``); :class:`MahalanobisDistance` is the picklable callable
  that ``get_metric`` returns for ``metric=`` arguments, and :func:`check_pairs` validates
  the ``pairs`` argument.

TaskMet's metric on the prediction space is parameterised in
:mod:`sktaskmet.taskmet._metric_params`.

SCML's nearest-neighbour searches (the regressor's kNN head, the classifier's votes) rank
training points with ``torch.cdist`` on the embedded points on purpose: forming the
differences explicitly costs :math:`n_{query} \times n_{train} \times k` memory per block
(about 90 GB for a block of 1,024 queries against 30,000 training points at
:math:`k = 384`), while the expansion is one matrix product. A ranking needs neither exact
zeros nor exact symmetry; the two differ by rounding only (about 1e-13 relative in float64
at 50 x 60 points), which can reorder exact near-ties. Every distance SCML returns to the
user (``pair_distance``, ``get_metric``, ``transform``) goes through this module.
"""

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = [
    "pairwise_mahalanobis",
    "check_pairs",
    "MahalanobisDistance",
    "MahalanobisMixin",
]


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
