r"""Global sparse compositional metric learning from class labels: SCMLClassifier.

The supervised SCML of metric-learn (``SCML_Supervised``), with this package's solver:
triplets from class labels, a local-LDA basis on the classes, and a k-nearest-neighbour
vote in the learned metric for :meth:`SCMLClassifier.predict`.
"""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._backend import make_generator, resolve_device, seed_from_random_state, to_numpy, to_tensor
from .._mahalanobis import MahalanobisMixin
from .._validation import fit_guard
from ._fit import (
    FIT_DTYPES,
    as_fit_dtype,
    check_spread,
    fit_neighbor_counts,
    make_basis,
    prediction_dtype,
    solve_global,
)
from ._solver import metric_factor
from ._triplets import classification_triplets

__all__ = ["SCMLClassifier"]

# Query rows handled at once by the nearest-neighbour vote.
_QUERY_CHUNK = 1024


class SCMLClassifier(
    ClassNamePrefixFeaturesOutMixin,
    ClassifierMixin,
    TransformerMixin,
    MahalanobisMixin,
    BaseEstimator,
):
    r"""Sparse compositional metric learning from class labels (global SCML).

    Learns :math:`M = \sum_i w_i b_i b_i^\top`, :math:`w \ge 0`, from triplets
    :math:`(a, p, n)` in which :math:`p` is one of the ``k_genuine`` nearest neighbours
    of :math:`x_a` in its class and :math:`n` one of its ``k_impostor`` nearest
    neighbours of another class, by solving

    .. math::

        \min_{w \ge 0} \frac{1}{|C|} \sum_{(a, p, n) \in C}
        \big[1 + d_w(x_a, x_p) - d_w(x_a, x_n)\big]_+ + \beta \lVert w\rVert_1

    with the AdaGrad-scaled dual-averaging solver of :class:`SCMLRegressor`. This is
    metric-learn's ``SCML_Supervised`` (which no longer fits with scikit-learn >= 1.8) as
    an estimator: :meth:`transform`, ``components_``, :meth:`get_mahalanobis_matrix`,
    :meth:`get_metric`, :meth:`pair_distance` and :meth:`pair_score` mean what they mean
    there, and :meth:`predict` votes among the ``n_neighbors`` nearest training points in
    the learned metric.

    Read more in the :ref:`User Guide <scml>`.

    Parameters
    ----------
    basis : {"lda", "triplet_diffs", "random", "identity"} or array-like, default="lda"
        The basis set, as in :class:`SCMLRegressor`, with the classes in place of the
        quantile classes of a target: ``"lda"`` is local LDA at k-means centres (above 64
        features, in the discriminant subspace of the classes and the triplets).
    n_basis : int, default=None
        Number of basis vectors; None as in :class:`SCMLRegressor`.
    k_genuine : int, default=3
        Same-class neighbours per anchor.
    k_impostor : int, default=10
        Other-class neighbours per anchor. Both shrink to what the data allow.
    beta : float, default=1e-5
        Strength of the :math:`\ell_1` penalty (metric-learn's default), on ``X / scale_``.
    gamma : float, default=0.5
        Inverse step size, on ``X / scale_`` (see :class:`SCMLRegressor`).
    max_iter : int, default=10000
        Mini-batch iterations.
    batch_size : int, default=10
        Triplets per mini-batch.
    output_iter : int, default=500
        Iterations between evaluations of the full objective (the best is kept).
    n_neighbors : int, default=5
        Neighbours of the vote of :meth:`predict` (at most the training samples).
    dtype : {"auto", "float32", "float64"}, default="auto"
        Floating-point type of the fit and of the fitted arrays. ``"auto"``: float32 above
        64 features (embeddings: measured at 384 features, it halves the time and memory
        of a fit without losing accuracy), the dtype of X otherwise. Predictions and
        transforms follow the dtype of their own input. Use ``"float64"`` for wide data
        whose squared distances need more than float32's range or precision.
    device : str or torch.device, default="auto"
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a :class:`torch.device`.
    random_state : int, RandomState instance or None, default=None
        Seeds the mini-batches and the basis construction.
    verbose : int, default=0
        Print the objective at every evaluation.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    basis_ : ndarray of shape (n_basis, n_features)
    weights_ : ndarray of shape (n_basis,)
    components_ : ndarray of shape (n_components, n_features)
        :math:`L` with :math:`L^\top L = M`, at most ``n_features`` rows.
    scale_ : float
        The solver works on ``X / scale_`` (see :class:`SCMLRegressor`).
    objective_ : float
        Best full objective, on ``X / scale_``.
    loss_curve_ : list of float
    n_iter_ : int
    triplets_ : ndarray of shape (n_triplets, 3)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)

    See Also
    --------
    SCMLRegressor : the same metric from a continuous target.

    References
    ----------
    Y. Shi, A. Bellet and F. Sha. Sparse Compositional Metric Learning. AAAI 2014.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sktaskmet import SCMLClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> model = SCMLClassifier(max_iter=1000, random_state=0, device="cpu").fit(X, y)
    >>> model.transform(X).shape[0], model.score(X, y) > 0.9
    (150, True)
    """

    _parameter_constraints: dict = {
        "basis": [StrOptions({"lda", "triplet_diffs", "random", "identity"}), "array-like"],
        "n_basis": [Interval(Integral, 1, None, closed="left"), None],
        "k_genuine": [Interval(Integral, 1, None, closed="left")],
        "k_impostor": [Interval(Integral, 1, None, closed="left")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "gamma": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "output_iter": [Interval(Integral, 1, None, closed="left")],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "dtype": [StrOptions(set(FIT_DTYPES))],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        basis="lda",
        n_basis=None,
        k_genuine=3,
        k_impostor=10,
        beta=1e-5,
        gamma=0.5,
        max_iter=10000,
        batch_size=10,
        output_iter=500,
        n_neighbors=5,
        dtype="auto",
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.basis = basis
        self.n_basis = n_basis
        self.k_genuine = k_genuine
        self.k_impostor = k_impostor
        self.beta = beta
        self.gamma = gamma
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.output_iter = output_iter
        self.n_neighbors = n_neighbors
        self.dtype = dtype
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    @fit_guard
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Learn the metric from triplets of the classes, and keep X for the vote.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self : SCMLClassifier
        """
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], ensure_min_samples=3)
        X = as_fit_dtype(X, self.dtype)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if self.classes_.shape[0] < 2:
            raise ValueError(
                "y has a single class: SCMLClassifier forms triplets from pairs of points of "
                "different classes, so it needs at least two."
            )
        check_spread(X)
        k_genuine, k_impostor = fit_neighbor_counts(self.k_genuine, self.k_impostor, X.shape[0] - 1)
        device = resolve_device(self.device)
        generator = make_generator(seed_from_random_state(self.random_state), device)
        X_t = to_tensor(X, device)
        labels = torch.as_tensor(encoded, dtype=torch.long, device=device)
        triplets = classification_triplets(X_t, labels, k_genuine, k_impostor)
        basis = make_basis(self.basis, self.n_basis, X_t, triplets, generator, labels, labels)
        options = dict(
            beta=float(self.beta),
            gamma=float(self.gamma),
            max_iter=int(self.max_iter),
            batch_size=int(self.batch_size),
            output_iter=int(self.output_iter),
            generator=generator,
            verbose=self.verbose,
        )
        weights, scale, result = solve_global(X_t, triplets, basis, options)
        self.scale_ = float(scale)
        self.objective_ = result.objective
        self.loss_curve_ = [objective for _, objective in result.history]
        self.n_iter_ = result.n_iter
        self.basis_ = to_numpy(basis)
        self.weights_ = to_numpy(weights)
        self.components_ = to_numpy(metric_factor(basis, weights))
        self._n_features_out = self.components_.shape[0]
        self.triplets_ = to_numpy(triplets)
        self.fit_X_ = X.copy()
        self.fit_labels_ = encoded.astype(np.int64)
        return self

    def _check_input(self, X):
        check_is_fitted(self, "components_")
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32])

    def transform(self, X):
        r"""Embed X as :math:`X L^\top`: Euclidean distances there are the learned ones.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_components)
        """
        X = self._check_input(X)
        return X @ np.asarray(self.components_, dtype=X.dtype).T

    def predict_proba(self, X):
        """Share of each class among the ``n_neighbors`` nearest training points.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        X = self._check_input(X)
        dtype = prediction_dtype(self.fit_X_.dtype, X.dtype)
        device = resolve_device(self.device)
        components = to_tensor(np.asarray(self.components_, dtype=dtype), device)
        train = to_tensor(np.asarray(self.fit_X_, dtype=dtype), device) @ components.T
        labels = torch.as_tensor(self.fit_labels_, device=device)
        k = min(int(self.n_neighbors), train.shape[0])
        n_classes = self.classes_.shape[0]
        blocks = []
        for start in range(0, X.shape[0], _QUERY_CHUNK):
            queries = to_tensor(X[start : start + _QUERY_CHUNK], device, dtype) @ components.T
            nearest = torch.topk(torch.cdist(queries, train), k, dim=1, largest=False).indices
            votes = torch.nn.functional.one_hot(labels[nearest], n_classes).sum(1)
            blocks.append(votes.to(queries.dtype) / k)
        return to_numpy(torch.cat(blocks)).astype(X.dtype, copy=False)

    def predict(self, X):
        """Majority class among the ``n_neighbors`` nearest training points (ties: the
        first class in ``classes_``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        votes = self.predict_proba(X)  # checks that the model is fitted
        return self.classes_[np.argmax(votes, axis=1)]
