r"""What :class:`SCMLRegressor` and :class:`SCMLClassifier` share.

The parameters of the global metric and of the neighbour search, their validation, the
global solve on the training core with its fitted attributes, the chunked search of the
nearest training points that both predict from, the dtype tags, and the docstring
fragments the two classes would otherwise repeat (``%(name)s`` in a class docstring is
replaced by :func:`fill_doc`).
"""

import re
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .._backend import to_numpy
from .._mahalanobis import MahalanobisMixin
from .._training import CallbackSupportMixin, FitCallbacks
from ._fit import FIT_DTYPES, solve_global

__all__ = ["BaseSCML", "fill_doc"]

BASIS_KINDS = ("triplet_diffs", "lda", "random", "identity")
# Query rows handled at once by the nearest-neighbour search: bounds its memory at
# QUERY_CHUNK * n_train distances.
QUERY_CHUNK = 1024

_DOCS = {
    "batch_size": """batch_size : int, default=10
        Triplets per mini-batch.""",
    "output_iter": """output_iter : int, default=500
        Iterations between evaluations of the full objective; the best iterate among the
        evaluated ones is kept, and progress is reported at each evaluation.""",
    "dtype": """dtype : {"auto", "float32", "float64"}, default="auto"
        Floating-point type of the fit and of the fitted arrays. ``"auto"``: float32 above
        64 features (embeddings: measured at 384 features, it halves the time and memory
        of a fit without losing accuracy), the dtype of X otherwise. Predictions and
        transforms follow the dtype of their own input. Use ``"float64"`` for wide data
        whose squared distances need more than float32's range or precision.""",
    "device": """device : str or torch.device, default="auto"
        Where to compute: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or a :class:`torch.device`.""",
    "verbose": """verbose : int, default=0
        Print the full objective at every evaluation of each solve (the first line of a
        solve is its starting point, iteration 1 of the training core).""",
    "fitted_metric": r"""basis_ : ndarray of shape (n_basis, n_features)
        Unit basis vectors :math:`b_i` (rows).
    scale_ : float
        Root of the median squared anchor-impostor distance. The solver runs on
        ``X / scale_`` so that the hinge margin of 1 is in the units of the data; the
        reported weights and metric are for X itself (``w = w' / scale_**2``).
    loss_curve_ : list of float
        Full global objective at iteration 0 and at every evaluation.
    triplets_ : ndarray of shape (n_triplets, 3)
        Training triplets (anchor, genuine, impostor) as row indices.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of the features seen during ``fit``; only when X has feature names that are
        all strings.""",
    "callbacks": """On scikit-learn >= 1.9 the estimator takes scikit-learn's callbacks
    (``set_callbacks``, also when set on an enclosing :class:`~sklearn.pipeline.Pipeline`
    or :class:`~sklearn.model_selection.GridSearchCV`): each solve is a task of the fit,
    with one step per evaluation, so :class:`~sklearn.callback.ProgressBar` shows a bar per
    solve and :class:`~sklearn.callback.ScoringMonitor` scores the model of every
    evaluation. See :ref:`progress`.""",
    "references": "Y. Shi, A. Bellet and F. Sha. Sparse Compositional Metric Learning. AAAI 2014.",
}


def fill_doc(cls):
    """Replace each ``%(name)s`` of the class docstring by the shared fragment ``name``."""
    cls.__doc__ = re.sub(r"%\((\w+)\)s", lambda match: _DOCS[match.group(1)], cls.__doc__)
    return cls


class BaseSCML(
    CallbackSupportMixin,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    MahalanobisMixin,
    BaseEstimator,
):
    """The global SCML metric and the neighbour search, for a regressor or a classifier.

    A subclass forms its triplets and basis from its target, then calls
    :meth:`_solve_metric`, which runs the global solve as a stage of the fit's callbacks
    and sets the fitted attributes of the metric; it predicts from the training points
    that :meth:`_nearest_training_points` finds.
    """

    _parameter_constraints: dict = {
        "basis": [StrOptions(set(BASIS_KINDS)), "array-like"],
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
        basis,
        n_basis,
        k_genuine,
        k_impostor,
        beta,
        gamma,
        max_iter,
        batch_size,
        output_iter,
        n_neighbors,
        dtype,
        device,
        random_state,
        verbose,
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

    def _check_input(self, X):
        check_is_fitted(self, "components_")
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32])

    def _nearest_training_points(self, queries, distances):
        """Indices of the ``n_neighbors`` training points nearest each query, nearest first.

        Parameters
        ----------
        queries : torch.Tensor of shape (n_queries, n_features)
        distances : callable
            ``distances(block) -> (n_block, n_train)`` tensor of the learned distances (or
            any increasing function of them) from a block of query rows to every training
            point; called on blocks of at most ``QUERY_CHUNK`` rows.

        Returns
        -------
        torch.Tensor of shape (n_queries, min(n_neighbors, n_train))
        """
        k = min(int(self.n_neighbors), self.fit_X_.shape[0])
        blocks = []
        for start in range(0, queries.shape[0], QUERY_CHUNK):
            block = distances(queries[start : start + QUERY_CHUNK])
            blocks.append(torch.topk(block, k, dim=1, largest=False, sorted=True).indices)
        return torch.cat(blocks)

    def _solver_options(self, generator, **overrides):
        """Keyword arguments of the RDA solvers, from the parameters."""
        options = dict(
            beta=float(self.beta),
            gamma=float(self.gamma),
            max_iter=int(self.max_iter),
            batch_size=int(self.batch_size),
            output_iter=int(self.output_iter),
            generator=generator,
            verbose=self.verbose,
            name=type(self).__name__,
        )
        options.update(overrides)
        return options

    def _fit_callbacks(self, X, y, n_stages):
        """Open the fit's callback task with ``n_stages`` stages (the solves, the head).

        ``X`` and ``y`` are the data as given to ``fit`` (what ``ScoringMonitor`` scores).
        The fit task's end is reported once every fitted attribute is set on the
        estimator itself: an empty reconstruction then means the estimator as it is.
        """
        callbacks = FitCallbacks(self, X, y, fitted_attributes=dict)
        callbacks.begin_fit(n_stages)
        return callbacks

    def _solve_metric(self, X, triplets, basis, generator, callbacks, fitted_attributes):
        """Solve the global problem and set the metric's fitted attributes.

        ``fitted_attributes(weights) -> dict or None`` gives the estimator's fitted
        attributes for candidate weights (for X); see :func:`._fit.solve_global`.

        Returns
        -------
        weights : torch.Tensor of shape (n_basis,)
        """
        options = self._solver_options(
            generator, callbacks=callbacks, fitted_attributes=fitted_attributes
        )
        weights, scale, result = solve_global(X, triplets, basis, options)
        self.scale_ = float(scale)
        self.objective_ = result.objective
        self.loss_curve_ = [objective for _, objective in result.history]
        self.n_iter_ = result.n_iter
        self.basis_ = to_numpy(basis)
        self.triplets_ = to_numpy(triplets)
        return weights
