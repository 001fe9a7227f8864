"""LinearSurrogate: ridge or lasso regression on task-subset indicator vectors."""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.linear_model import Lasso, LassoCV
from sklearn.model_selection import check_cv
from sklearn.utils._param_validation import Interval, StrOptions

from .._backend import resolve_device, to_numpy, to_tensor
from .._validation import fit_guard
from . import _krr
from ._base import BaseSurrogate
from ._cv import check_grid, partition_folds

__all__ = ["LinearSurrogate"]


class LinearSurrogate(BaseSurrogate):
    """Linear surrogate of subset performance: the baseline of every attribution study.

    .. math::

        g(s) = \\beta^\\top s + b,

    fitted by ridge (``penalty="l2"``) or lasso (``penalty="l1"``) on subsets
    :math:`s \\in \\{0,1\\}^n` (or task weights in :math:`[0,1]^n`) and their measured
    performance. This is the datamodels-style surrogate: :math:`\\beta_k` is the
    attribution of task :math:`k` everywhere, and a linear surrogate has no interactions
    (:meth:`interactions` is identically 0). Under Bernoulli(:math:`p`) sampling of the
    subsets, :math:`\\beta` estimates the gradient of :math:`F` at the full set plus a bias
    :math:`(p - 1) H \\mathbf 1 + \\tfrac{1 - 2p}{2} \\operatorname{diag} H` from the task
    interaction matrix :math:`H`; see the :ref:`User Guide <surrogate>`.

    The intercept :math:`b` is unpenalised and fitted by default: without it the task
    coefficients must also carry the mean level of :math:`F`, which distorts them.

    Parameters
    ----------
    penalty : {"l2", "l1"}, default="l2"
        ``"l2"``: ridge, :math:`\\|y - S\\beta - b\\|^2 + \\alpha \\|\\beta\\|^2`, solved in
        torch on ``device``. ``"l1"``: lasso,
        :math:`\\tfrac{1}{2m}\\|y - S\\beta - b\\|^2 + \\alpha \\|\\beta\\|_1` (scikit-learn's
        scaling), solved by scikit-learn's coordinate descent on the CPU (the problem has
        only ``n_tasks`` coefficients).
    alpha : float > 0, default=1.0
        Penalty strength. Ignored when ``cv`` is set.
    fit_intercept : bool, default=True
        Fit the unpenalised intercept :math:`b`.
    solver : {"auto", "primal", "dual"}, default="auto"
        How ridge is solved (``penalty="l2"`` only; both give the same coefficients).
        ``"primal"``: the (n_tasks, n_tasks) normal equations, :math:`O(m n^2 + n^3)`;
        ``"dual"``: the (n_subsets, n_subsets) system
        :math:`\\beta = S_c^\\top (S_c S_c^\\top + \\alpha I)^{-1} y_c`,
        :math:`O(m^2 n + m^3)`; ``"auto"``: dual when there are fewer subsets than tasks
        (the usual case in attribution studies: 40 subsets of 500 tasks), primal otherwise.
    cv : int, "loo", cross-validation splitter or None, default=None
        Choose ``alpha`` from ``alphas`` by cross-validated mean squared error. For ridge
        the held-out residuals of every fold and every alpha come in closed form from one
        SVD of the centred design (``"loo"`` is leave-one-out); for lasso
        :class:`~sklearn.linear_model.LassoCV` refits along the path (``"loo"`` is not
        available).
    alphas : array-like of float > 0, default=(1e-3, 1e-2, ..., 1e3)
        Penalties searched when ``cv`` is set.
    max_iter : int, default=10000
        Maximum number of coordinate-descent passes (lasso only).
    tol : float, default=1e-6
        Tolerance of coordinate descent (lasso only).
    greater_is_better : bool, default=True
        Orientation of the target for :meth:`select`: True for accuracy or reward, False
        for a loss.
    device : {"auto", "cpu", "cuda"}, str or torch.device, default="auto"
        Device of the ridge computations and predictions.

    Attributes
    ----------
    coef_ : ndarray of shape (n_tasks,) or (n_targets, n_tasks)
        Task coefficients :math:`\\beta`, in scikit-learn's (n_targets, n_features)
        layout for a multi-output ``y``. Every attribution-like output of the surrogates
        (:meth:`attribution`, :meth:`interactions`, the influence scores) is laid out
        task-first instead, (n_tasks, n_targets), so ``attribution(method="gradient")``
        equals ``coef_.T``.
    intercept_ : float or ndarray of shape (n_targets,)
        Intercept :math:`b`.
    alpha_ : float or ndarray of shape (n_targets,)
        Penalty used (one per target for a cross-validated multi-target lasso).
    cv_results_ : dict or None
        With ``cv`` set and ridge: ``"alphas"`` and ``"mean_test_mse"``. None otherwise.
    n_iter_ : int or ndarray
        Coordinate-descent passes (lasso only; ridge is solved in closed form).
    n_features_in_ : int
        Number of tasks.
    feature_names_in_ : ndarray of shape (n_tasks,)
        Task names, when ``S`` is a DataFrame with string column names.

    See Also
    --------
    KernelSurrogate : Kernel ridge surrogate, which also captures task interactions.

    Examples
    --------
    >>> from sktaskmet import LinearSurrogate
    >>> from sktaskmet.datasets import make_task_interactions
    >>> S, y, F = make_task_interactions(n_subsets=200, random_state=0)
    >>> LinearSurrogate(cv=5, device="cpu").fit(S, y).attribution().shape
    (16,)
    """

    _parameter_constraints = {
        "penalty": [StrOptions({"l2", "l1"})],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "fit_intercept": ["boolean"],
        "solver": [StrOptions({"auto", "primal", "dual"})],
        "cv": [StrOptions({"loo"}), "cv_object"],
        "alphas": ["array-like"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "greater_is_better": ["boolean"],
        "device": [str, torch.device],
    }

    def __init__(
        self,
        penalty="l2",
        *,
        alpha=1.0,
        fit_intercept=True,
        solver="auto",
        cv=None,
        alphas=(1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3),
        max_iter=10000,
        tol=1e-6,
        greater_is_better=True,
        device="auto",
    ):
        self.penalty = penalty
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.cv = cv
        self.alphas = alphas
        self.max_iter = max_iter
        self.tol = tol
        self.greater_is_better = greater_is_better
        self.device = device

    @fit_guard
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, S, y):
        """Fit the surrogate on subsets and their measured performance.

        Parameters
        ----------
        S : array-like of shape (n_subsets, n_tasks)
            Indicator vectors (0/1) or task weights in [0, 1]; at least 2 subsets.
        y : array-like of shape (n_subsets,) or (n_subsets, n_targets)
            Performance of the model trained on each subset.

        Returns
        -------
        self : LinearSurrogate
        """
        S, y = self._validate_fit_data(S, y)
        self.cv_results_ = None
        if hasattr(self, "n_iter_"):  # only lasso iterates; a refit as ridge drops it
            del self.n_iter_
        if self.penalty == "l1":
            coef, intercept = self._fit_lasso(S, y)
        else:
            coef, intercept = self._fit_ridge(S, y)
        self.coef_ = coef[0] if self._single_output else coef
        self.intercept_ = float(intercept[0]) if self._single_output else intercept
        return self

    def _fit_ridge(self, S, y):
        device = resolve_device(self.device)
        X, Y = to_tensor(S, device), to_tensor(y, device)
        alpha = float(self.alpha)
        if self.cv is not None:
            alphas = check_grid(self.alphas, "alphas")
            folds = None if isinstance(self.cv, str) else partition_folds(self.cv, S, y, device)
            U, eigvals = _krr.design_spectrum(X, self.fit_intercept)
            mse = to_numpy(
                _krr.spectral_cv_mse(
                    U, eigvals, Y, to_tensor(alphas, device, S.dtype), folds, self.fit_intercept
                )
            )
            alpha = float(alphas[int(np.argmin(mse))])
            self.cv_results_ = {"alphas": alphas, "mean_test_mse": mse}
        dual = self.solver == "dual" or (self.solver == "auto" and S.shape[0] < S.shape[1])
        solve = _krr.ridge_dual if dual else _krr.ridge_primal
        coef, intercept = solve(X, Y, alpha, self.fit_intercept)
        self.alpha_ = alpha
        return to_numpy(coef).T, to_numpy(intercept)

    def _fit_lasso(self, S, y):
        common = {"fit_intercept": self.fit_intercept, "max_iter": self.max_iter, "tol": self.tol}
        if self.cv is None:
            model = Lasso(alpha=self.alpha, **common).fit(S, y)
            self.alpha_ = float(self.alpha)
            self.n_iter_ = model.n_iter_
            coef = np.asarray(model.coef_, dtype=S.dtype).reshape(y.shape[1], -1)
            return coef, np.atleast_1d(model.intercept_).astype(S.dtype)
        if isinstance(self.cv, str):
            raise ValueError("cv='loo' is available for penalty='l2' only; use cv=int.")
        alphas = check_grid(self.alphas, "alphas")
        splitter = check_cv(self.cv, classifier=False)
        # LassoCV is single-target: one path per target, each with its own alpha.
        models = [
            LassoCV(alphas=alphas, cv=splitter, **common).fit(S, y[:, t]) for t in range(y.shape[1])
        ]
        alpha = np.array([m.alpha_ for m in models])
        self.alpha_ = float(alpha[0]) if self._single_output else alpha
        self.n_iter_ = np.array([m.n_iter_ for m in models])
        coef = np.stack([m.coef_ for m in models]).astype(S.dtype)
        intercept = np.array([m.intercept_ for m in models], dtype=S.dtype)
        return coef, intercept

    def _predict_values(self, S):
        coef = np.asarray(self.coef_).reshape(-1, self.n_features_in_)
        device = resolve_device(self.device)
        X = to_tensor(S, device)
        values = X @ to_tensor(coef, device, S.dtype).T
        return to_numpy(values + to_tensor(np.atleast_1d(self.intercept_), device, S.dtype))

    def _gradient_values(self, S):
        coef = np.asarray(self.coef_, dtype=S.dtype).reshape(-1, self.n_features_in_)
        return np.broadcast_to(coef.T, (S.shape[0], *coef.T.shape)).copy()
