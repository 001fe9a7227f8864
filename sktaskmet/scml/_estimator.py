r"""scikit-learn glue of sparse compositional metric learning as a regressor.

The numerics live in :mod:`sktaskmet.scml._solver` (the RDA solves) and the modules it
names, :mod:`sktaskmet.scml._bases`, :mod:`sktaskmet.scml._triplets` and
:mod:`sktaskmet.scml._head` (the network head); what the regressor shares with the
classifier is in :mod:`sktaskmet.scml._base`. This module validates the regressor's inputs,
runs the stages of its fit (global solve, local solve, head), keeps the fitted state as
numpy arrays and implements prediction and the metric-learn vocabulary.
"""

import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .._backend import (
    make_generator,
    resolve_device,
    seed_from_random_state,
    to_numpy,
    to_tensor,
)
from .._mahalanobis import MahalanobisDistance, MahalanobisMixin, check_pairs
from .._nn import check_hidden_layer_sizes
from .._validation import fit_guard, fitted_params
from ._base import BaseSCML, fill_doc
from ._bases import N_SUBSPACE_BINS, N_TARGET_BINS, quantile_bins
from ._fit import (
    as_fit_dtype,
    check_spread,
    fit_neighbor_counts,
    global_components,
    make_basis,
    prediction_dtype,
)
from ._head import fit_network_head, predict_network_head
from ._kernel_pca import KernelPCAEmbedding
from ._objective import local_weights
from ._solver import rda_local
from ._triplets import regression_triplets

__all__ = ["SCMLRegressor", "LocalSCMLDissimilarity"]


class LocalSCMLDissimilarity:
    r"""Picklable callable :math:`(u, v) \mapsto \sqrt{(u - v)^\top M(u) (u - v)}`.

    The dissimilarity of SCML-Local: the metric is the one of the *first* argument, so it
    is not symmetric. It suits ``pairwise_distances(X_query, X_train, metric=...)`` and
    brute-force neighbour searches (``algorithm="brute"``), not tree-based ones, which
    assume a true metric. Returned by :meth:`SCMLRegressor.get_metric` when ``local=True``.

    Parameters
    ----------
    estimator : SCMLRegressor
        A fitted local model; its state is copied to numpy on the CPU.

    See Also
    --------
    SCMLRegressor.get_metric : Returns this dissimilarity for a local model.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.metrics import pairwise_distances
    >>> from sktaskmet import SCMLRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(-1, 1, size=(80, 3))
    >>> y = np.where(X[:, 2] > 0, X[:, 0], X[:, 1])  # which feature matters depends on x
    >>> model = SCMLRegressor(local=True, n_basis=12, max_iter=200, random_state=0,
    ...                       device="cpu").fit(X, y)
    >>> dissimilarity = model.get_metric()
    >>> D = pairwise_distances(X[:2], X[:4], metric=dissimilarity)
    >>> D.shape
    (2, 4)
    >>> float(D[0, 0])
    0.0
    >>> bool(np.isclose(dissimilarity(X[0], X[1]), dissimilarity(X[1], X[0])))  # not symmetric
    False
    """

    def __init__(self, estimator):
        self.basis = np.array(estimator._local_basis(), dtype=np.float64)
        self.theta = np.array(estimator._local_theta(), dtype=np.float64)
        self.kernel_pca = {
            k: np.array(v, dtype=np.float64) for k, v in estimator.kernel_pca_.items()
        }

    def __call__(self, u, v):
        u = np.asarray(u, dtype=np.float64).reshape(1, -1)
        v = np.asarray(v, dtype=np.float64).reshape(1, -1)
        state = {k: torch.from_numpy(a) for k, a in self.kernel_pca.items()}
        z = KernelPCAEmbedding.transform(state, torch.from_numpy(u))
        weights = local_weights(z, torch.from_numpy(self.theta)).numpy()[0]
        projected = (u - v) @ self.basis.T
        return float(np.sqrt(np.sum(weights * projected[0] ** 2)))

    def __repr__(self):
        return f"LocalSCMLDissimilarity(n_basis={self.basis.shape[0]})"


@fill_doc
class SCMLRegressor(RegressorMixin, BaseSCML):
    r"""Sparse compositional metric learning (SCML), global or local, as a regressor.

    Learns a Mahalanobis metric :math:`M = \sum_i w_i b_i b_i^\top` as a sparse
    non-negative combination of rank-one matrices built from unit basis vectors
    :math:`b_i` (Shi, Bellet and Sha, AAAI 2014), from triplets formed by target
    closeness, then predicts by k-nearest-neighbour regression in the learned metric (or
    a small network on the SCML features). The global problem is

    .. math::

        \min_{w \ge 0} \frac{1}{|C|} \sum_{(a, p, n) \in C}
        \big[1 + d_w(x_a, x_p) - d_w(x_a, x_n)\big]_+ + \beta \lVert w\rVert_1,
        \qquad d_w(u, v) = \sum_i w_i \big(b_i^\top (u - v)\big)^2,

    solved by AdaGrad-scaled regularised dual averaging on mini-batches of triplets.
    With ``local=True`` the weights depend on the point,
    :math:`w_i(x) = (a_i^\top z(x) + c_i)^2` with :math:`z(x)` an RBF kernel-PCA
    embedding, under a group-lasso penalty :math:`\beta\sum_i\lVert[a_i; c_i]\rVert_2`,
    starting from the global solution.

    Triplets come from the target: among the Euclidean neighbours of each anchor, the
    ``k_genuine`` points with the closest targets are genuine neighbours and the
    ``k_impostor`` points with the farthest targets are impostors; a triplet is kept only
    when :math:`|y_a - y_p| < |y_a - y_n|` strictly.

    %(callbacks)s With ``head="mlp"`` the network head is one more task, with one step
    per Adam step.

    Read more in the :ref:`User Guide <scml>`.

    Parameters
    ----------
    basis : {"triplet_diffs", "lda", "random", "identity"} or array-like, default="lda"
        The basis set. ``"triplet_diffs"``: eigenvectors of sums of genuine minus impostor
        outer products of triplet differences. ``"lda"``: local linear discriminant
        directions at k-means centres, on the target cut into quantile classes; above
        64 features (text embeddings) built in a discriminant subspace of a few dozen
        dimensions (the global LDA directions of 10 quantile classes and the target's
        principal Hessian directions, which find where it curves), plus that subspace's
        axes.
        ``"random"``: random unit directions. ``"identity"``: the coordinate axes (the
        metric is then diagonal: SCML only gates features). An array gives the basis
        vectors as rows, shape ``(n_basis, n_features)`` (normalised to unit length).
    n_basis : int, default=None
        Number of basis vectors. None: ``min(80 * n_features, 2000)`` for
        ``"triplet_diffs"`` and ``"random"``, ``min(20 * n_features, 2 q n_samples - 1,
        2000)`` for ``"lda"`` (``q`` discriminant directions per LDA); above 64
        features, ``21 r`` for ``"lda"`` (``r`` <= 17 the subspace's dimension). Ignored by
        ``"identity"`` and by an array basis.
    local : bool, default=False
        Learn point-dependent weights (SCML-Local) after the global solution.
    k_genuine : int, default=3
        Genuine neighbours per anchor (closest targets).
    k_impostor : int, default=10
        Impostors per anchor (farthest targets). When ``k_genuine + k_impostor`` exceeds
        the ``n_samples - 1`` neighbours a point has, both shrink in proportion (each to
        at least 1), so that small data sets still fit.
    beta : float, default=1e-3
        Strength of the sparsity penalty (:math:`\ell_1` on ``w``; group lasso on the
        local coefficients), for the problem on ``X / scale_``. It also keeps the local
        model from overfitting its triplets.
    gamma : float, default=0.5
        Inverse step size of the dual-averaging solver: larger is more cautious. The
        solver works on ``X / scale_``, so the default suits data in any units
        (metric-learn's 5e-3 oscillates on most regression data).
    max_iter : int, default=10000
        Mini-batch iterations of the global solve, and again of the local solve.
    %(batch_size)s
    %(output_iter)s
    n_kernel_components : int, default=40
        Components of the kernel-PCA embedding :math:`z(x)` (local only).
    local_gamma : float, default=50.0
        Inverse step size of the local solve (local only). The local problem is not
        convex and its parameters enter the weights squared, so it needs more cautious
        steps than the global one: with ``gamma`` its iterates typically overshoot and
        never improve on the global starting point.
    head : {"knn", "mlp"}, default="knn"
        Prediction rule. ``"knn"``: mean target of the ``n_neighbors`` nearest training
        points in the learned metric (the local metric of the query when ``local``).
        ``"mlp"``: a small network trained on the SCML features
        :math:`\phi_i(x) = \sqrt{w_i(x)}\, b_i^\top x` (the output of :meth:`transform`).
    n_neighbors : int, default=5
        Neighbours of the ``"knn"`` head (at most the number of training samples).
    hidden_layer_sizes : tuple of int, default=(64,)
        Hidden widths of the ``"mlp"`` head.
    head_max_iter : int, default=500
        Full-batch Adam steps of the ``"mlp"`` head. A step whose loss or gradient is
        not finite is not applied: the head keeps its last good state and warns with
        :class:`~sktaskmet.exceptions.NonFiniteWarning`.
    head_learning_rate : float, default=0.01
        Learning rate of the head's Adam, on standardised features and target.
    head_weight_decay : float, default=1e-4
        Adam's weight decay of the head: :math:`\lambda\theta` added to the gradient of
        every parameter, an L2 penalty :math:`\frac{\lambda}{2}\lVert\theta\rVert^2` on
        the mean squared error of the standardised target.
    %(dtype)s
    %(device)s
    random_state : int, RandomState instance or None, default=None
        Seeds the triplet mini-batches, the basis construction, the kernel-PCA landmarks
        and the network head.
    %(verbose)s With ``head="mlp"``, also the head's training loss at every step.

    Attributes
    ----------
    weights_ : ndarray of shape (n_basis,)
        Global model: the learned sparse weights :math:`w`. Local model: the weights
        averaged over the training points, :math:`\bar w_i = \frac{1}{n}\sum_j w_i(x_j)`
        (zero for every basis the group lasso switched off).
    global_weights_ : ndarray of shape (n_basis,)
        The global solution (the starting point of the local one).
    local_coef_ : ndarray of shape (n_basis, n_kernel_components + 1)
        Local model only: rows :math:`[a_i; c_i]`.
    kernel_pca_ : dict of ndarray
        Local model only: the fitted kernel-PCA embedding.
    components_ : ndarray of shape (n_components, n_features)
        A factor :math:`L` with :math:`L^\top L = M` (global), or of the average local
        metric :math:`\bar M = \frac{1}{n}\sum_j M(x_j)` (local). At most ``n_features``
        rows.
    n_iter_ : int
        Solver iterations run (global plus local).
    local_loss_curve_ : list of float
        Full local objective at the start and at every evaluation (local model only;
        empty otherwise).
    objective_ : float
        Best full objective reached (of the local problem when ``local``), on the
        rescaled data ``X / scale_``.
    head_loss_curve_ : list of float
        ``"mlp"`` head only (empty otherwise): the training mean squared error, in the
        units of ``y`` squared, at each Adam step (before the step's update).
    head_n_iter_ : int
        Adam steps of the ``"mlp"`` head (0 for ``"knn"``).
    %(fitted_metric)s

    See Also
    --------
    sklearn.neighbors.KNeighborsRegressor : k-nearest neighbours in a fixed metric.

    Notes
    -----
    Meaning of the metric-learn vocabulary for each model:

    * global: :meth:`transform` returns :math:`X L^\top`, so Euclidean distances after the
      transform are the learned distances; :meth:`get_mahalanobis_matrix` returns
      :math:`M` (or, given ``X``, one copy per row).
    * local: :meth:`transform` returns the SCML features
      :math:`\phi_i(x) = \sqrt{w_i(x)}\, b_i^\top x` of the bases the model kept; near
      :math:`x`, :math:`\lVert\phi(x) - \phi(x')\rVert^2 \approx (x - x')^\top M(x) (x - x')`.
      :meth:`get_mahalanobis_matrix` with ``X`` returns :math:`M(x)` per row and
      without it :math:`\bar M`; :meth:`pair_distance` uses the metric of the first point
      of each pair, so it is not symmetric.

    References
    ----------
    %(references)s

    Examples
    --------
    >>> from sklearn.datasets import make_friedman1
    >>> from sktaskmet import SCMLRegressor
    >>> X, y = make_friedman1(n_samples=300, n_features=8, random_state=0)
    >>> model = SCMLRegressor(n_basis=40, max_iter=500, random_state=0, device="cpu")
    >>> model.fit(X, y).predict(X[:2]).shape
    (2,)
    """

    _parameter_constraints: dict = {
        **BaseSCML._parameter_constraints,
        "local": ["boolean"],
        "n_kernel_components": [Interval(Integral, 1, None, closed="left")],
        "local_gamma": [Interval(Real, 0, None, closed="neither")],
        "head": [StrOptions({"knn", "mlp"})],
        "hidden_layer_sizes": ["array-like"],
        "head_max_iter": [Interval(Integral, 1, None, closed="left")],
        "head_learning_rate": [Interval(Real, 0, None, closed="neither")],
        "head_weight_decay": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        basis="lda",
        n_basis=None,
        local=False,
        k_genuine=3,
        k_impostor=10,
        beta=1e-3,
        gamma=0.5,
        max_iter=10000,
        batch_size=10,
        output_iter=500,
        n_kernel_components=40,
        local_gamma=50.0,
        head="knn",
        n_neighbors=5,
        hidden_layer_sizes=(64,),
        head_max_iter=500,
        head_learning_rate=1e-2,
        head_weight_decay=1e-4,
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
        self.local = local
        self.n_kernel_components = n_kernel_components
        self.local_gamma = local_gamma
        self.head = head
        self.hidden_layer_sizes = hidden_layer_sizes
        self.head_max_iter = head_max_iter
        self.head_learning_rate = head_learning_rate
        self.head_weight_decay = head_weight_decay

    # ------------------------------------------------------------------ fit

    def _build_basis(self, X, y, triplets, generator):
        subspace_labels = local_labels = None
        if isinstance(self.basis, str) and self.basis == "lda":
            subspace_labels = quantile_bins(y, N_SUBSPACE_BINS)
            local_labels = quantile_bins(y, N_TARGET_BINS)
        return make_basis(
            self.basis,
            self.n_basis,
            X,
            triplets,
            generator,
            subspace_labels,
            local_labels,
            target=y,
        )

    @fit_guard
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Learn the metric from triplets of ``(X, y)`` and fit the prediction head.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,)
            Continuous targets.

        Returns
        -------
        self : SCMLRegressor
            The fitted estimator.
        """
        data = X, y  # as given: what callbacks such as ScoringMonitor score
        X, y = self._validate_fit_data(X, y)
        k_genuine, k_impostor = fit_neighbor_counts(self.k_genuine, self.k_impostor, X.shape[0] - 1)
        device = resolve_device(self.device)
        seed = seed_from_random_state(self.random_state)
        generator = make_generator(seed, device)
        X_t = to_tensor(X, device)
        y_t = to_tensor(y, device)
        triplets = regression_triplets(X_t, y_t, k_genuine, k_impostor)
        basis = self._build_basis(X_t, y_t, triplets, generator)

        n_stages = 1 + bool(self.local) + (self.head == "mlp")
        callbacks = self._fit_callbacks(*data, n_stages=n_stages)
        global_model = self._knn_model(X, y, basis, local=False)
        weights = self._solve_metric(X_t, triplets, basis, generator, callbacks, global_model)
        self.global_weights_ = to_numpy(weights)
        self.local_loss_curve_ = []
        if self.local and bool((weights > 0).any()):
            self._fit_local(X_t, y, triplets, basis, weights, generator, callbacks)
        else:
            if self.local:
                warnings.warn(
                    "local=True but the global solution has no active basis; the model "
                    "stays global.",
                    ConvergenceWarning,
                    stacklevel=2,
                )
            self.local_coef_ = None
            self.kernel_pca_ = None
            self.weights_ = self.global_weights_.copy()
            self.components_ = global_components(basis, weights)

        self._n_features_out = self._transform_width()
        self.fit_X_ = X.copy()
        self.fit_y_ = y.copy()
        self.head_state_ = None
        self.head_loss_curve_ = []
        self.head_n_iter_ = 0
        if self.head == "mlp":
            self._fit_mlp_head(X_t, y_t, seed, callbacks)
        callbacks.end_fit()
        return self

    def _validate_fit_data(self, X, y):
        """Validated X and y (in the dtype of X), with SCML's own checks."""
        X, y = validate_data(
            self, X, y, dtype=[np.float64, np.float32], y_numeric=True, ensure_min_samples=3
        )
        X = as_fit_dtype(X, self.dtype)
        check_spread(X)
        if np.ptp(y) == 0:
            raise ValueError(
                "y is constant: SCMLRegressor forms triplets from differences of the target, "
                "so it needs a target with at least two distinct values."
            )
        return X, np.asarray(y, dtype=X.dtype)

    def _knn_model(self, X, y, basis, local, kernel_pca=None, active=None, scale=None):
        """``coef -> dict``: the fitted attributes of the kNN model of a solve's candidate.

        What callbacks such as ``ScoringMonitor`` score at each evaluation. ``coef`` is the
        global weights for X, or (``local=True``) the local coefficients of the ``active``
        bases on ``X / scale``. None with the ``"mlp"`` head, which is trained after the
        metric: a metric alone does not predict then.
        """
        if self.head != "knn":
            return None
        common = {"fit_X_": X, "fit_y_": y, "basis_": to_numpy(basis)}
        if not local:
            return lambda weights: {
                **common,
                "components_": global_components(basis, weights),
                "local_coef_": None,
                "kernel_pca_": None,
            }
        embedding = KernelPCAEmbedding.transform(kernel_pca, to_tensor(X, basis.device))

        def local_model(coef):
            theta = coef.new_zeros((basis.shape[0], coef.shape[1]))
            theta[active] = coef / scale
            mean_weights = local_weights(embedding, theta).mean(0)
            return {
                **common,
                "components_": global_components(basis, mean_weights),
                "local_coef_": to_numpy(theta),
                "kernel_pca_": {name: to_numpy(value) for name, value in kernel_pca.items()},
            }

        return local_model

    def _fit_local(self, X, y, triplets, basis, weights, generator, callbacks):
        """SCML-Local from the global ``weights``: the local stage of the fit."""
        active = weights > 0
        basis_active = basis[active]
        state = KernelPCAEmbedding.fit(X, int(self.n_kernel_components), generator)
        embedding = KernelPCAEmbedding.transform(state, X)
        scale = self.scale_
        # The global solution in local coefficients (a = 0, c = sqrt(w)), on X / scale.
        theta0 = X.new_zeros((basis_active.shape[0], embedding.shape[1] + 1))
        theta0[:, -1] = torch.sqrt(weights[active]) * scale
        model = self._knn_model(
            to_numpy(X), y, basis, local=True, kernel_pca=state, active=active, scale=scale
        )
        options = self._solver_options(
            generator,
            gamma=float(self.local_gamma),
            callbacks=callbacks,
            fitted_attributes=model,
        )
        result = rda_local(X / scale, embedding, triplets, basis_active, theta0, **options)
        theta = X.new_zeros((basis.shape[0], embedding.shape[1] + 1))
        theta[active] = result.coef / scale
        mean_weights = local_weights(embedding, theta).mean(0)
        self.local_coef_ = to_numpy(theta)
        self.kernel_pca_ = {name: to_numpy(value) for name, value in state.items()}
        self.local_loss_curve_ = [objective for _, objective in result.history]
        self.objective_ = result.objective
        self.n_iter_ += result.n_iter
        self.weights_ = to_numpy(mean_weights)
        self.components_ = global_components(basis, mean_weights)

    def _fit_mlp_head(self, X, y, seed, callbacks):
        """Train the network head on the SCML features of X: the head's stage."""
        head_state, result = fit_network_head(
            self._features(X),
            y,
            hidden_layer_sizes=check_hidden_layer_sizes(self.hidden_layer_sizes),
            max_iter=self.head_max_iter,
            learning_rate=self.head_learning_rate,
            weight_decay=self.head_weight_decay,
            seed=seed,
            name=f"{type(self).__name__} network head",
            verbose=self.verbose,
            callbacks=callbacks,
        )
        self.head_state_ = head_state
        self.head_loss_curve_ = result.history.get("train_loss", np.zeros(0)).tolist()
        self.head_n_iter_ = result.n_iter

    # ------------------------------------------------------------------ helpers

    def _is_local(self):
        return getattr(self, "local_coef_", None) is not None

    def _local_rows(self):
        """Bases kept by the local model (non-zero coefficient group)."""
        return np.linalg.norm(self.local_coef_, axis=1) > 0

    def _local_basis(self):
        return self.basis_[self._local_rows()]

    def _local_theta(self):
        return self.local_coef_[self._local_rows()]

    def _transform_width(self):
        if self._is_local():
            return max(int(self._local_rows().sum()), 1)
        return self.components_.shape[0]

    def _device_state(self, dtype):
        """Fitted state as tensors on the device, in the dtype of the data."""
        device = resolve_device(self.device)
        as_tensor = lambda a: to_tensor(np.asarray(a, dtype=dtype), device)  # noqa: E731
        state = {"device": device, "components": as_tensor(self.components_)}
        if self._is_local():
            state["basis"] = as_tensor(self._local_basis())
            state["theta"] = as_tensor(self._local_theta())
            state["kernel_pca"] = {k: as_tensor(v) for k, v in self.kernel_pca_.items()}
        return state

    def _local_weights_at(self, X, state):
        z = KernelPCAEmbedding.transform(state["kernel_pca"], X)
        return local_weights(z, state["theta"])

    def _features(self, X, state=None):
        """:meth:`transform` on a tensor: X L^T (global) or the SCML features (local)."""
        state = state or self._device_state(to_numpy(X[:0]).dtype)
        if not self._is_local():
            return X @ state["components"].T
        if state["basis"].shape[0] == 0:
            return X.new_zeros((X.shape[0], 1))
        weights = self._local_weights_at(X, state)
        return torch.sqrt(weights) * (X @ state["basis"].T)

    # ------------------------------------------------------------------ public API

    def transform(self, X):
        r"""Embed X with the learned metric.

        Global model: :math:`X L^\top` (Euclidean distances there are the learned
        distances). Local model: the SCML features
        :math:`\phi_i(x) = \sqrt{w_i(x)}\, b_i^\top x` of the bases the model kept.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_features_out)
        """
        X = self._check_input(X)
        if not self._is_local():
            return X @ np.asarray(self.components_, dtype=X.dtype).T
        state = self._device_state(X.dtype)
        return to_numpy(self._features(to_tensor(X, state["device"]), state))

    @fitted_params("head", "hidden_layer_sizes", "local")
    def predict(self, X):
        """Predict targets: kNN regression in the learned metric, or the network head.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        X = self._check_input(X)
        dtype = prediction_dtype(self.fit_X_.dtype, X.dtype)
        state = self._device_state(dtype)
        X_t = to_tensor(X, state["device"], dtype)
        if self.head == "mlp":
            return self._predict_mlp(X_t, state).astype(X.dtype, copy=False)
        return self._predict_knn(X_t, state).astype(X.dtype, copy=False)

    def _predict_mlp(self, X, state):
        hidden_layer_sizes = check_hidden_layer_sizes(self.hidden_layer_sizes)
        features = self._features(X, state)
        return to_numpy(predict_network_head(self.head_state_, features, hidden_layer_sizes))

    def _neighbor_distances(self, queries, train, state):
        """Squared learned distances from each query row to every training row."""
        if not self._is_local():
            zq = queries @ state["components"].T
            zt = train @ state["components"].T
            return torch.cdist(zq, zt) ** 2
        if state["basis"].shape[0] == 0:
            return queries.new_zeros((queries.shape[0], train.shape[0]))
        weights = self._local_weights_at(queries, state)  # metric of each query
        pq = queries @ state["basis"].T
        pt = train @ state["basis"].T
        sq = (
            (weights * pq * pq).sum(1, keepdim=True)
            - 2 * (weights * pq) @ pt.T
            + weights @ (pt * pt).T
        )
        return sq.clamp_min(0)

    def _predict_knn(self, X, state):
        train = to_tensor(self.fit_X_, state["device"], X.dtype)
        targets = to_tensor(self.fit_y_, state["device"], X.dtype)
        nearest = self._nearest_training_points(
            X, lambda block: self._neighbor_distances(block, train, state)
        )
        return to_numpy(targets[nearest].mean(1))

    def get_mahalanobis_matrix(self, X=None):
        r"""The learned Mahalanobis matrix.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), default=None
            Points at which to evaluate a local metric.

        Returns
        -------
        ndarray of shape (n_features, n_features) or (n_samples, n_features, n_features)
            Without ``X``: :math:`M` (global) or the training average :math:`\bar M`
            (local). With ``X``: :math:`M(x)` for each row (the same :math:`M` repeated
            for a global model).
        """
        check_is_fitted(self, "components_")
        if X is None:
            return MahalanobisMixin.get_mahalanobis_matrix(self)
        X = self._check_input(X)
        if not self._is_local():
            matrix = np.asarray(MahalanobisMixin.get_mahalanobis_matrix(self), dtype=X.dtype)
            return np.broadcast_to(matrix, (X.shape[0],) + matrix.shape).copy()
        state = self._device_state(X.dtype)
        weights = self._local_weights_at(to_tensor(X, state["device"]), state)
        basis = state["basis"]
        return to_numpy(torch.einsum("ni,id,ie->nde", weights, basis, basis))

    def get_metric(self):
        """A callable distance for ``metric=`` parameters.

        Returns
        -------
        MahalanobisDistance or LocalSCMLDissimilarity
            The learned metric (global), or the local dissimilarity that uses the metric of
            its first argument (local; not symmetric, use with brute-force searches).
        """
        check_is_fitted(self, "components_")
        if self._is_local():
            return LocalSCMLDissimilarity(self)
        return MahalanobisDistance(self.components_)

    def pair_distance(self, pairs):
        """Learned distances between the two points of each pair.

        Parameters
        ----------
        pairs : array-like of shape (n_pairs, 2, n_features)

        Returns
        -------
        ndarray of shape (n_pairs,)
            For a local model, measured with the metric :math:`M(u)` of the first point.
        """
        check_is_fitted(self, "components_")
        if not self._is_local():
            return MahalanobisMixin.pair_distance(self, pairs)
        pairs = check_pairs(pairs, self.n_features_in_)
        state = self._device_state(pairs.dtype)
        first = to_tensor(np.ascontiguousarray(pairs[:, 0, :]), state["device"])
        second = to_tensor(np.ascontiguousarray(pairs[:, 1, :]), state["device"])
        weights = self._local_weights_at(first, state)
        projected = (first - second) @ state["basis"].T
        return to_numpy(torch.sqrt((weights * projected * projected).sum(1)))
