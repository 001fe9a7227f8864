r"""Global sparse compositional metric learning from class labels: SCMLClassifier.

The supervised SCML of metric-learn (``SCML_Supervised``), with this package's solver:
triplets from class labels, a local-LDA basis on the classes, and a k-nearest-neighbour
vote in the learned metric for :meth:`SCMLClassifier.predict`.
"""

import numpy as np
import torch
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from .._backend import make_generator, resolve_device, seed_from_random_state, to_numpy, to_tensor
from .._validation import fit_guard
from ._base import BaseSCML, fill_doc
from ._fit import (
    as_fit_dtype,
    check_spread,
    fit_neighbor_counts,
    global_components,
    make_basis,
    prediction_dtype,
)
from ._triplets import classification_triplets

__all__ = ["SCMLClassifier"]


@fill_doc
class SCMLClassifier(ClassifierMixin, BaseSCML):
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

    %(callbacks)s

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
    %(batch_size)s
    %(output_iter)s
    n_neighbors : int, default=5
        Neighbours of the vote of :meth:`predict` (at most the training samples).
    %(dtype)s
    %(device)s
    random_state : int, RandomState instance or None, default=None
        Seeds the mini-batches and the basis construction.
    %(verbose)s

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels seen during ``fit``.
    weights_ : ndarray of shape (n_basis,)
        The learned sparse weights :math:`w`.
    components_ : ndarray of shape (n_components, n_features)
        :math:`L` with :math:`L^\top L = M`, at most ``n_features`` rows.
    objective_ : float
        Best full objective, on ``X / scale_``.
    n_iter_ : int
        Solver iterations run.
    %(fitted_metric)s

    See Also
    --------
    SCMLRegressor : the same metric from a continuous target.

    References
    ----------
    %(references)s

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sktaskmet import SCMLClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> model = SCMLClassifier(max_iter=1000, random_state=0, device="cpu").fit(X, y)
    >>> model.transform(X).shape[0], model.score(X, y) > 0.9
    (150, True)
    """

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
        super().__init__(
            basis=basis,
            n_basis=n_basis,
            k_genuine=k_genuine,
            k_impostor=k_impostor,
            beta=beta,
            gamma=gamma,
            max_iter=max_iter,
            batch_size=batch_size,
            output_iter=output_iter,
            n_neighbors=n_neighbors,
            dtype=dtype,
            device=device,
            random_state=random_state,
            verbose=verbose,
        )

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
        data = X, y  # as given: what callbacks such as ScoringMonitor score
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
        fit_labels = encoded.astype(np.int64)

        def candidate(weights):  # the model of candidate weights, for the callbacks
            components = global_components(basis, weights)
            return {"components_": components, "fit_X_": X, "fit_labels_": fit_labels}

        callbacks = self._fit_callbacks(*data, n_stages=1)
        weights = self._solve_metric(X_t, triplets, basis, generator, callbacks, candidate)
        self.weights_ = to_numpy(weights)
        self.components_ = global_components(basis, weights)
        self._n_features_out = self.components_.shape[0]
        self.fit_X_ = X.copy()
        self.fit_labels_ = fit_labels
        callbacks.end_fit()
        return self

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
        nearest = self._nearest_training_points(
            to_tensor(X, device, dtype), lambda block: torch.cdist(block @ components.T, train)
        )
        votes = torch.nn.functional.one_hot(labels[nearest], self.classes_.shape[0]).sum(1)
        return to_numpy(votes.to(train.dtype) / nearest.shape[1]).astype(X.dtype, copy=False)

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
