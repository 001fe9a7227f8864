"""KernelSurrogate: kernel ridge regression on task-subset indicator vectors."""

from functools import partial
from numbers import Real

import numpy as np
import torch
from sklearn.base import _fit_context, clone
from sklearn.utils._param_validation import Interval, StrOptions

from .._backend import resolve_device, to_numpy, to_tensor
from .._validation import fit_guard
from . import _krr
from ._base import BaseSurrogate
from ._cv import check_grid, nested_outer_folds, partition_folds

__all__ = ["KernelSurrogate"]

# Relative grid of `gammas=None`: multiples of the default gamma 1 / n_tasks.
_GAMMA_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _grid_argmin(mse):
    """Indices ``(alpha, gamma)`` of the smallest MSE on a (n_gammas, n_alphas[, t]) grid.

    Arrays of shape (t,), or (1,) without a target axis. Ties resolve to the smallest
    alpha, then the smallest gamma (GridSearchCV's order over a grid {"alpha": alphas,
    "gamma": gammas}): the argmin of the alpha-major flattening.
    """
    n_gammas, n_alphas = mse.shape[:2]
    flat = np.swapaxes(mse, 0, 1).reshape(n_alphas * n_gammas, -1)
    return np.unravel_index(np.argmin(flat, axis=0), (n_alphas, n_gammas))


class KernelSurrogate(BaseSurrogate):
    """Kernel ridge surrogate of the performance of a model trained on a subset of tasks.

    Fitted on pairs :math:`(s, F(s))`, where :math:`s \\in \\{0, 1\\}^n` indicates the
    training tasks of a model (or :math:`s \\in [0, 1]^n` weights them) and :math:`F(s)` is
    that model's performance on a target task, it predicts :math:`F` on any other subset
    without retraining, and reads off task attributions, pairwise task interactions
    (synergy, antagonism, XOR-like effects that a linear surrogate cannot represent) and the
    best subset. This is the kernel surrogate of Zhang, Duan and Zhang (2026); with
    ``fit_intercept=False`` it reproduces :class:`sklearn.kernel_ridge.KernelRidge`.

    The model is

    .. math::

        g(s) = \\sum_{i=1}^m a_i\\, k(s, s_i) + b,

    the minimiser of :math:`\\sum_i (y_i - g(s_i))^2 + \\alpha \\|g - b\\|_{\\mathcal H}^2`
    with an **unpenalised intercept** :math:`b`: the targets and the kernel are centred in
    feature space (:math:`K_c = C K C`, :math:`C = I - \\mathbf 1 \\mathbf 1^\\top / m`),
    :math:`a = (K_c + \\alpha I)^{-1}(y - \\bar y)` and
    :math:`b = \\bar y - \\tfrac1m \\mathbf 1^\\top K a`. Without the intercept the kernel
    must also carry the mean level of :math:`F`, which biases every prediction towards 0
    away from the training subsets.

    Read more in the :ref:`User Guide <surrogate>`.

    Parameters
    ----------
    kernel : {"rbf", "poly", "linear"} or callable, default="rbf"
        ``"rbf"``: :math:`\\exp(-\\gamma \\|s - s'\\|^2)`, on indicator vectors a heat
        kernel of the Hamming distance (the paper's choice); ``"poly"``:
        :math:`(\\gamma \\langle s, s' \\rangle + c_0)^{d}`; ``"linear"``:
        :math:`\\langle s, s'\\rangle` (ridge regression in the dual). A callable
        ``kernel(A, B)`` receives two 2-D numpy arrays and returns their
        ``(len(A), len(B))`` Gram matrix; it must be positive semi-definite, and
        ``attribution(method="gradient")`` is not available for it. The fitted estimator
        keeps the callable, so it pickles only if the callable does: use a function
        defined at module level, not a lambda or a local function.
    alpha : float > 0, default=0.1
        Ridge penalty. Ignored when ``cv`` is set (``alphas`` is searched instead).
    gamma : float > 0, default=None
        Kernel width of ``"rbf"`` and scale of ``"poly"``; None means ``1 / n_tasks``.
        Ignored when ``cv`` is set.
    degree : float, default=3
        Degree of the polynomial kernel.
    coef0 : float, default=1
        Constant term of the polynomial kernel.
    fit_intercept : bool, default=True
        Fit the unpenalised intercept :math:`b` described above. The authors' code has
        none: ``fit_intercept=False`` with ``alpha=1e-2`` (modular arithmetic) or
        ``alpha=0.1`` (in-context learning) and the default ``gamma`` reproduces their
        kernel ridge regression exactly; the :ref:`User Guide <surrogate>` says why the
        defaults differ and what it changes on their data.
    cv : int, "loo", cross-validation splitter or None, default=None
        When set, ``alpha`` and ``gamma`` are chosen from ``alphas`` x ``gammas`` by the
        cross-validated mean squared error (mean over folds of the fold MSE, the criterion
        of ``GridSearchCV(scoring="neg_mean_squared_error")``). An int is the number of
        folds of :class:`~sklearn.model_selection.KFold` (no shuffling, as in
        scikit-learn); a splitter must partition the subsets into held-out folds (KFold,
        GroupKFold, ...). ``"loo"`` is leave-one-out. All folds and every ``alpha`` are
        computed from **one eigendecomposition of the (centred) kernel per gamma**, with
        closed-form held-out residuals, so the search costs about one eigendecomposition
        per gamma instead of one fit per fold and grid point.
    per_target_cv : bool or "auto", default=False
        With ``cv`` set and a multi-output ``y`` (e.g. one column per test example of the
        target task, whose scales differ by orders of magnitude), choose ``alpha`` and
        ``gamma`` for each target separately by its own cross-validated MSE, instead of
        one pair for all targets by the MSE averaged over them. It costs the same: the
        one eigendecomposition per gamma serves every target and every alpha, and the
        final coefficients come from those same spectra. With few subsets a per-target
        choice can fit the noise of its own folds; ``"auto"`` measures that by **nested
        cross-validation** and keeps the per-target choice only where it pays: each outer
        fold of ``cv`` (5 folds for ``"loo"``) is predicted by the joint and by the
        per-target search run on the other subsets, and the variant with the smaller
        held-out error, each target's squared error divided by its variance (so that every
        target counts alike), is fitted on all subsets. It costs about one search per
        outer fold (whose per-target errors also give the joint choice), plus the final
        one.
    alphas : array-like of float > 0, default=(1e-4, 3e-4, ..., 3, 10)
        Penalties searched when ``cv`` is set.
    gammas : array-like of float > 0, default=None
        Kernel widths searched when ``cv`` is set (``"rbf"`` and ``"poly"`` only); None
        means ``(0.25, 0.5, 1, 2, 4) / n_tasks``.
    greater_is_better : bool, default=True
        Orientation of the target for :meth:`select`: True for accuracy or reward (pick
        the largest prediction), False for a loss (pick the smallest).
    device : {"auto", "cpu", "cuda"}, str or torch.device, default="auto"
        Where the kernel matrices, their factorisations and the predictions are computed.
        Fitted state is kept in numpy, so the model pickles anywhere.

    Attributes
    ----------
    X_fit_ : ndarray of shape (n_subsets, n_tasks)
        The training subsets (the kernel's support points).
    dual_coef_ : ndarray of shape (n_subsets,) or (n_subsets, n_targets)
        Dual coefficients :math:`a`.
    intercept_ : float or ndarray of shape (n_targets,)
        The intercept :math:`b` (0 when ``fit_intercept=False``).
    alpha_ : float or ndarray of shape (n_targets,)
        The penalty used (chosen by cross-validation when ``cv`` is set; one per target
        with ``per_target_cv``).
    gamma_ : float, ndarray of shape (n_targets,) or None
        The kernel width used (one per target with ``per_target_cv``; None for
        ``"linear"`` and callable kernels).
    cv_results_ : dict or None
        With ``cv`` set: ``"alphas"``, ``"gammas"`` and ``"mean_test_mse"`` of shape
        (n_gammas, n_alphas), or (n_gammas, n_alphas, n_targets) for a per-target search.
        With ``per_target_cv="auto"`` and several targets, also
        ``"nested_normalized_mse"``: the nested held-out error of the joint and of the
        per-target search, in that order. None otherwise.
    per_target_cv_ : bool
        Whether ``alpha_`` and ``gamma_`` were chosen per target (``per_target_cv`` when it
        is a bool and ``y`` has several targets; the outcome of the nested comparison with
        ``"auto"``; False without ``cv``).
    n_features_in_ : int
        Number of tasks.
    feature_names_in_ : ndarray of shape (n_tasks,)
        Task names, when ``S`` is a DataFrame with string column names.

    See Also
    --------
    LinearSurrogate : The linear baseline, :math:`g(s) = \\beta^\\top s + b`.
    sktaskmet.surrogate.sample_subsets : Draw training subsets.
    sktaskmet.surrogate.evaluate_subsets : Compute :math:`F` on them in parallel.

    References
    ----------
    Zhang, Duan and Zhang, "Efficient Estimation of Kernel Surrogate Models for Task
    Attribution", ICLR 2026, arXiv:2602.03783.

    Examples
    --------
    >>> from sktaskmet import KernelSurrogate
    >>> from sktaskmet.datasets import make_task_interactions
    >>> S, y, F = make_task_interactions(n_subsets=200, random_state=0)
    >>> model = KernelSurrogate(cv=5, device="cpu").fit(S, y)
    >>> model.interactions().shape
    (16, 16)
    """

    _parameter_constraints = {
        "kernel": [StrOptions({"rbf", "poly", "linear"}), callable],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "gamma": [Interval(Real, 0, None, closed="neither"), None],
        "degree": [Interval(Real, 0, None, closed="left")],
        "coef0": [Real],
        "fit_intercept": ["boolean"],
        "cv": [StrOptions({"loo"}), "cv_object"],
        "per_target_cv": ["boolean", StrOptions({"auto"})],
        "alphas": ["array-like"],
        "gammas": ["array-like", None],
        "greater_is_better": ["boolean"],
        "device": [str, torch.device],
    }

    def __init__(
        self,
        kernel="rbf",
        *,
        alpha=0.1,
        gamma=None,
        degree=3,
        coef0=1.0,
        fit_intercept=True,
        cv=None,
        per_target_cv=False,
        alphas=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0),
        gammas=None,
        greater_is_better=True,
        device="auto",
    ):
        self.kernel = kernel
        self.alpha = alpha
        self.gamma = gamma
        self.degree = degree
        self.coef0 = coef0
        self.fit_intercept = fit_intercept
        self.cv = cv
        self.per_target_cv = per_target_cv
        self.alphas = alphas
        self.gammas = gammas
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
        self : KernelSurrogate
        """
        S, y = self._validate_fit_data(S, y)
        device = resolve_device(self.device)
        X = to_tensor(S, device)
        Y = to_tensor(y, device)
        uses_gamma = isinstance(self.kernel, str) and self.kernel in ("rbf", "poly")
        default_gamma = 1.0 / S.shape[1]

        self.cv_results_ = None
        nested = None
        per_target = bool(self.per_target_cv) and self.cv is not None and Y.shape[1] > 1
        if per_target and self.per_target_cv == "auto":
            nested = self._nested_normalized_mse(S, y)
            per_target = bool(nested[1] < nested[0])
        if self.cv is None:
            alpha = float(self.alpha)
            gamma = (
                (default_gamma if self.gamma is None else float(self.gamma)) if uses_gamma else None
            )
            dual_coef, intercept = _krr.solve_dual(
                self._training_gram(X, gamma), Y, alpha, self.fit_intercept
            )
        elif per_target:
            alpha, gamma, dual_coef, intercept = self._fit_cv_per_target(
                S, y, X, Y, uses_gamma, default_gamma
            )
        else:
            alpha, gamma = self._search(S, y, X, Y, uses_gamma, default_gamma)[:2]
            dual_coef, intercept = _krr.solve_dual(
                self._training_gram(X, gamma), Y, alpha, self.fit_intercept
            )
        if nested is not None:
            self.cv_results_["nested_normalized_mse"] = nested
        self.per_target_cv_ = per_target
        self.alpha_ = alpha
        self.gamma_ = gamma
        self.X_fit_ = S.copy()
        self.dual_coef_ = self._format_output(to_numpy(dual_coef))
        intercept = to_numpy(intercept)
        self.intercept_ = float(intercept[0]) if self._single_output else intercept
        return self

    def _search(self, S, y, X, Y, uses_gamma, default_gamma, per_target=False):
        """Cross-validated MSE over alphas x gammas, one eigendecomposition per gamma.

        Returns the selected ``alpha`` and ``gamma`` (arrays of shape (n_targets,) with
        ``per_target``) and, with ``per_target``, the spectrum of every gamma's kernel so
        that the final fit reuses it.
        """
        device = X.device
        alphas = check_grid(self.alphas, "alphas")
        if not uses_gamma:
            gammas = np.array([np.nan])
        elif self.gammas is None:
            gammas = default_gamma * np.asarray(_GAMMA_FACTORS)
        else:
            gammas = check_grid(self.gammas, "gammas")
        folds = None if isinstance(self.cv, str) else partition_folds(self.cv, S, y, device)
        mse = np.empty((len(gammas), len(alphas)) + ((Y.shape[1],) if per_target else ()))
        alphas_t = to_tensor(alphas, device, dtype=S.dtype)
        spectra = []
        for g, gamma in enumerate(gammas):
            K = self._training_gram(X, None if np.isnan(gamma) else float(gamma))
            eigvals, eigvecs = torch.linalg.eigh(_krr.center_gram(K) if self.fit_intercept else K)
            mse[g] = to_numpy(
                _krr.spectral_cv_mse(
                    eigvecs, eigvals, Y, alphas_t, folds, self.fit_intercept, per_target
                )
            )
            if per_target:
                spectra.append((K, eigvals, eigvecs))
        self.cv_results_ = {
            "alphas": alphas,
            "gammas": gammas if uses_gamma else None,
            "mean_test_mse": mse,
        }
        a_best, g_best = _grid_argmin(mse)
        if not per_target:
            gamma = float(gammas[g_best[0]]) if uses_gamma else None
            return float(alphas[a_best[0]]), gamma, None, None
        gamma = gammas[g_best] if uses_gamma else None
        return alphas[a_best], gamma, g_best, spectra

    def _fit_cv_per_target(self, S, y, X, Y, uses_gamma, default_gamma):
        """Per-target alpha and gamma, each target solved from its gamma's spectrum."""
        alphas, gammas, g_best, spectra = self._search(
            S, y, X, Y, uses_gamma, default_gamma, per_target=True
        )
        dual_coef = torch.empty_like(Y)
        intercept = torch.empty_like(Y[0])
        for g in np.unique(g_best):
            cols = torch.as_tensor(np.flatnonzero(g_best == g), device=X.device)
            K, eigvals, eigvecs = spectra[g]
            alphas_t = to_tensor(alphas[cols.cpu().numpy()], X.device, dtype=S.dtype)
            dual_coef[:, cols], intercept[cols] = _krr.solve_dual_spectral(
                K, eigvecs, eigvals, Y[:, cols], alphas_t, self.fit_intercept
            )
        return alphas, gammas, dual_coef, intercept

    def _nested_normalized_mse(self, S, y):
        """Held-out error of the joint and of the per-target search, by nested CV.

        Each outer fold is predicted by both searches fitted on the other subsets (with
        this estimator's ``cv`` inside); a target's squared errors are divided by its
        variance over ``y`` (targets without variance are left out), and the result is the
        mean over folds, subsets and targets: shape (2,), joint first.

        One per-target search serves both: the joint search's criterion, the MSE averaged
        over targets, is the target mean of the per-target errors it records, so the joint
        setting is read from them and only its final solve is added.
        """
        outer = nested_outer_folds(self.cv, S, y)
        variance = np.var(y, axis=0)
        varied = variance > 0
        errors = np.zeros(2)
        for held_out in outer:
            kept = np.setdiff1d(np.arange(len(S)), held_out)
            per_target = clone(self).set_params(per_target_cv=True).fit(S[kept], y[kept])
            results = per_target.cv_results_
            (a_best,), (g_best,) = _grid_argmin(results["mean_test_mse"].mean(axis=-1))
            gammas = results["gammas"]
            joint = clone(self).set_params(
                cv=None,
                per_target_cv=False,
                alpha=float(results["alphas"][a_best]),
                gamma=None if gammas is None else float(gammas[g_best]),
            )
            joint.fit(S[kept], y[kept])
            for index, model in enumerate((joint, per_target)):
                pred = model.predict(S[held_out])
                squared = (pred[:, varied] - y[held_out][:, varied]) ** 2 / variance[varied]
                errors[index] += squared.sum()
        return errors / (len(S) * max(1, int(varied.sum())))

    def _training_gram(self, X, gamma):
        """Gram matrix of the training subsets, refused when the kernel overflows to NaN/inf."""
        K = self._gram(X, X, gamma)
        if not bool(torch.isfinite(K).all()):
            raise ValueError(
                f"The kernel {self.kernel!r} (gamma={gamma}, degree={self.degree}, "
                f"coef0={self.coef0}) gives NaN or infinite values on S, so every prediction "
                "would be NaN; use a smaller gamma, degree or coef0, or a kernel callable "
                "that returns finite values."
            )
        return K

    def _gram(self, A, B, gamma):
        if callable(self.kernel):
            gram = np.asarray(self.kernel(to_numpy(A), to_numpy(B)))
            if gram.shape != (A.shape[0], B.shape[0]):
                raise ValueError(
                    f"kernel callable returned shape {gram.shape}; expected "
                    f"({A.shape[0]}, {B.shape[0]})."
                )
            return to_tensor(gram, A.device, dtype=A.dtype)
        return _krr.kernel_matrix(A, B, self.kernel, gamma, self.degree, self.coef0)

    def _fitted_tensors(self, dtype):
        device = resolve_device(self.device)
        X_fit = to_tensor(self.X_fit_, device, dtype=dtype)
        dual = to_tensor(np.asarray(self.dual_coef_).reshape(len(self.X_fit_), -1), device, dtype)
        intercept = to_tensor(np.atleast_1d(self.intercept_), device, dtype=dtype)
        return device, X_fit, dual, intercept

    def _target_groups(self):
        """(gamma, target columns or None) pairs: one per distinct per-target gamma."""
        gamma = self.gamma_
        if gamma is None or np.ndim(gamma) == 0:
            return [(gamma, None)]
        gamma = np.asarray(gamma)
        return [(float(g), np.flatnonzero(gamma == g)) for g in np.unique(gamma)]

    def _predict_values(self, S):
        device, X_fit, dual, intercept = self._fitted_tensors(S.dtype)
        X = to_tensor(S, device)
        values = torch.empty((X.shape[0], dual.shape[1]), dtype=X.dtype, device=device)
        for gamma, cols in self._target_groups():
            cols = slice(None) if cols is None else torch.as_tensor(cols, device=device)
            values[:, cols] = _krr.predict_dual(
                X, X_fit, dual[:, cols], intercept[cols], partial(self._gram, gamma=gamma)
            )
        return to_numpy(values)

    def _gradient_values(self, S):
        if callable(self.kernel):
            raise ValueError(
                "attribution(method='gradient') needs a built-in kernel ('rbf', 'poly' or "
                "'linear'); use method='loo' with a callable kernel."
            )
        device, X_fit, dual, _ = self._fitted_tensors(S.dtype)
        X = to_tensor(S, device)
        grad = torch.empty((*X.shape, dual.shape[1]), dtype=X.dtype, device=device)
        for gamma, cols in self._target_groups():
            cols = slice(None) if cols is None else torch.as_tensor(cols, device=device)
            grad[:, :, cols] = _krr.kernel_gradient(
                X, X_fit, dual[:, cols], self.kernel, gamma, self.degree, self.coef0
            )
        return to_numpy(grad)
