"""Torch numerics of the surrogates: kernels, ridge solves and spectral cross-validation.

Everything here takes and returns tensors on one device and in one dtype; the estimators in
``_kernel.py`` and ``_linear.py`` do the scikit-learn side (validation, fitted attributes).

Ridge with an unpenalised intercept
-----------------------------------
Both surrogates solve

.. math::

    \\min_{f \\in \\mathcal{H},\\, b \\in \\mathbb{R}}
    \\sum_{i=1}^m (y_i - f(s_i) - b)^2 + \\alpha \\|f\\|_{\\mathcal{H}}^2,

with :math:`\\mathcal{H}` the RKHS of the kernel (the linear surrogate is the linear kernel,
solved in the primal). Eliminating :math:`b` centres the targets and the features in
feature space: with :math:`C = I - \\tfrac1m \\mathbf{1}\\mathbf{1}^\\top` and
:math:`K_c = C K C`, the dual coefficients are :math:`a = (K_c + \\alpha I)^{-1} C y`, which
sum to zero, so

.. math::

    g(s) = k(s)^\\top a + b, \\qquad b = \\bar y - \\tfrac1m \\mathbf{1}^\\top K a .

Without the intercept, :math:`K_c = K`, :math:`C = I` and :math:`b = 0` (scikit-learn's
``KernelRidge``).

Cross-validation from one eigendecomposition
--------------------------------------------
The fitted values are :math:`\\hat y = H y` with hat matrix
:math:`H = J + U \\operatorname{diag}(\\lambda / (\\lambda + \\alpha)) U^\\top`, where
:math:`K_c = U \\operatorname{diag}(\\lambda) U^\\top` and :math:`J = \\tfrac1m \\mathbf 1
\\mathbf 1^\\top` when the intercept is fitted (:math:`J = 0` otherwise). For any penalised
least-squares problem, refitting without the samples of a fold :math:`F` gives held-out
residuals in closed form,

.. math::

    e_F = \\left[(I - H)_{FF}\\right]^{-1} \\left[(I - H) y\\right]_F ,

exactly (leave-one-out is the case :math:`|F| = 1`: :math:`e_i = r_i / (1 - H_{ii})`). One
eigendecomposition per kernel (per ``gamma``) therefore serves every ``alpha``: each
``alpha`` costs :math:`O(m\\,r)` for leave-one-out and :math:`O(\\sum_F |F|^2 r)` for k-fold
instead of a new factorisation per fold.
"""

import torch

# Upper bound on the number of entries of a kernel block formed at once when predicting
# many subsets (e.g. all 2**16 subsets in `select`): 2**23 float64 entries is 64 MiB.
_MAX_BLOCK_ENTRIES = 2**23


def kernel_matrix(X, Y, kernel, gamma, degree, coef0):
    """Gram matrix k(X_i, Y_j) of a built-in kernel.

    Parameters
    ----------
    X : Tensor of shape (n, d)
    Y : Tensor of shape (p, d)
    kernel : {"rbf", "poly", "linear"}
    gamma, degree, coef0 : float
        ``rbf``: exp(-gamma ||x - y||^2); ``poly``: (gamma <x, y> + coef0) ** degree;
        ``linear``: <x, y>. As in :func:`sklearn.metrics.pairwise.pairwise_kernels`.

    Returns
    -------
    Tensor of shape (n, p)
    """
    inner = X @ Y.T
    if kernel == "linear":
        return inner
    if kernel == "poly":
        return (gamma * inner + coef0) ** degree
    # ||x - y||^2 through the inner products: one matrix product instead of an (n, p, d)
    # tensor of differences; clamped because cancellation can make it slightly negative.
    sq_dist = (X * X).sum(1)[:, None] + (Y * Y).sum(1)[None, :] - 2.0 * inner
    return torch.exp(-gamma * sq_dist.clamp_min_(0.0))


def kernel_gradient(X, X_fit, dual_coef, kernel, gamma, degree, coef0):
    """Gradient of g(x) = sum_i a_i k(x, x_i) with respect to x, at every row of X.

    Parameters
    ----------
    X : Tensor of shape (n, d)
    X_fit : Tensor of shape (m, d)
    dual_coef : Tensor of shape (m, t)
    kernel, gamma, degree, coef0 : see :func:`kernel_matrix`

    Returns
    -------
    Tensor of shape (n, d, t)
        ``grad[j, k, l] = d g_l / d x_k`` at ``X[j]``:

        * rbf: :math:`-2\\gamma \\sum_i a_i k(x, x_i) (x - x_i)`,
        * poly: :math:`\\gamma\\,\\mathrm{degree} \\sum_i a_i
          (\\gamma \\langle x, x_i\\rangle + c_0)^{\\mathrm{degree} - 1} x_i`,
        * linear: :math:`\\sum_i a_i x_i`.
    """
    if kernel == "linear":
        return (X_fit.T @ dual_coef).expand(X.shape[0], -1, -1)
    if kernel == "poly":
        weights = degree * gamma * (gamma * (X @ X_fit.T) + coef0) ** (degree - 1)
        # weights[j, i] * a[i, l] * x_i[k] summed over i.
        return torch.einsum("ji,il,ik->jkl", weights, dual_coef, X_fit)
    K = kernel_matrix(X, X_fit, "rbf", gamma, degree, coef0)
    weighted = K @ dual_coef  # (n, t): sum_i a_i k(x, x_i)
    moment = torch.einsum("ji,il,ik->jkl", K, dual_coef, X_fit)  # sum_i a_i k x_i
    return -2.0 * gamma * (X[:, :, None] * weighted[:, None, :] - moment)


def center_gram(K):
    """C K C with C = I - 11^T / m: the Gram matrix of the features centred in feature space."""
    row_mean = K.mean(dim=1, keepdim=True)
    return K - row_mean - row_mean.T + K.mean()


def solve_dual(K, y, alpha, fit_intercept):
    """Dual coefficients and intercept of kernel ridge regression.

    Parameters
    ----------
    K : Tensor of shape (m, m)
        Uncentred Gram matrix of the training subsets.
    y : Tensor of shape (m, t)
    alpha : float > 0
    fit_intercept : bool

    Returns
    -------
    dual_coef : Tensor of shape (m, t)
    intercept : Tensor of shape (t,)
        Zero when ``fit_intercept`` is False.
    """
    if fit_intercept:
        y_mean = y.mean(dim=0)
        A = center_gram(K)
        rhs = y - y_mean
    else:
        y_mean = torch.zeros(y.shape[1], dtype=y.dtype, device=y.device)
        A = K
        rhs = y
    A = A + alpha * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    factor, info = torch.linalg.cholesky_ex(A)
    if int(info) == 0:
        dual_coef = torch.cholesky_solve(rhs, factor)
    else:
        # An indefinite user kernel (or one that is PSD only up to rounding): fall back to a
        # symmetric eigendecomposition, which solves the same system for any symmetric A.
        eigvals, eigvecs = torch.linalg.eigh(A)
        dual_coef = eigvecs @ ((eigvecs.T @ rhs) / eigvals[:, None])
    intercept = y_mean - (K @ dual_coef).mean(dim=0) if fit_intercept else y_mean
    return dual_coef, intercept


def predict_dual(X, X_fit, dual_coef, intercept, gram):
    """k(X, X_fit) @ dual_coef + intercept, in row blocks so that memory stays bounded.

    Parameters
    ----------
    X : Tensor of shape (n, d)
    X_fit : Tensor of shape (m, d)
    dual_coef : Tensor of shape (m, t)
    intercept : Tensor of shape (t,)
    gram : callable
        ``gram(A, B)`` returns the kernel matrix between the rows of A and B.

    Returns
    -------
    Tensor of shape (n, t)
    """
    block = max(1, _MAX_BLOCK_ENTRIES // max(1, X_fit.shape[0]))
    parts = [gram(X[i : i + block], X_fit) @ dual_coef for i in range(0, X.shape[0], block)]
    return torch.cat(parts, dim=0) + intercept


def spectral_cv_mse(eigvecs, eigvals, y, alphas, folds, fit_intercept, per_target=False):
    """Cross-validated mean squared error of ridge for every alpha, from one spectrum.

    Parameters
    ----------
    eigvecs : Tensor of shape (m, r)
        Orthonormal columns U with centred Gram matrix K_c = U diag(eigvals) U^T (all
        eigenvectors for a kernel, the left singular vectors of the centred design for the
        linear surrogate).
    eigvals : Tensor of shape (r,)
        Non-negative eigenvalues.
    y : Tensor of shape (m, t)
    alphas : Tensor of shape (n_alphas,)
    folds : list of LongTensor or None
        Held-out index sets that partition the samples; None for leave-one-out.
    fit_intercept : bool
    per_target : bool, default=False
        Keep the targets apart instead of averaging over them.

    Returns
    -------
    Tensor of shape (n_alphas,), or (n_alphas, t) with ``per_target``
        Mean over folds of the fold's mean squared error (averaged over targets unless
        ``per_target``): the criterion of ``GridSearchCV(scoring="neg_mean_squared_error")``,
        sign flipped.
    """
    dims = (1,) if per_target else (1, 2)
    m = y.shape[0]
    eigvals = eigvals.clamp_min(0.0)
    shrink = eigvals[None, :] / (eigvals[None, :] + alphas[:, None])  # (A, r)
    proj = eigvecs.T @ y  # (r, t)
    # Residuals of the fit on all samples, r = (I - H) y, for every alpha: (A, m, t), as
    # one batched product U @ (shrink * U^T y) rather than an (A, m, r) intermediate.
    fitted = torch.matmul(eigvecs, shrink[:, :, None] * proj[None])
    if fit_intercept:
        fitted = fitted + y.mean(dim=0)
    residuals = y[None] - fitted
    offset = 1.0 / m if fit_intercept else 0.0
    if folds is None:
        diag = 1.0 - offset - (eigvecs * eigvecs) @ shrink.T  # (m, A): 1 - H_ii
        held_out = residuals / diag.T[:, :, None]
        return (held_out**2).mean(dim=dims)
    fold_mse = []
    n_alphas, rank = shrink.shape
    for fold in folds:
        U_F = eigvecs[fold]  # (f, r)
        f = U_F.shape[0]
        eye = torch.eye(f, dtype=y.dtype, device=y.device)
        # (I - H)_FF for a chunk of alphas at a time keeps the (chunk, f, r) product small.
        chunk = max(1, _MAX_BLOCK_ENTRIES // max(1, f * rank))
        errors = []
        for start in range(0, n_alphas, chunk):
            s = shrink[start : start + chunk]
            M_FF = eye - offset - (U_F[None] * s[:, None, :]) @ U_F.T
            e_F = torch.linalg.solve(M_FF, residuals[start : start + chunk, fold])
            errors.append((e_F**2).mean(dim=dims))
        fold_mse.append(torch.cat(errors))
    return torch.stack(fold_mse).mean(dim=0)


def solve_dual_spectral(K, eigvecs, eigvals, y, alphas, fit_intercept):
    """Kernel ridge with one penalty per target, from the spectrum of the (centred) kernel.

    With :math:`K_c = U \\operatorname{diag}(\\lambda) U^\\top` (``K`` itself without
    intercept), target :math:`j` gets :math:`a_j = U \\operatorname{diag}(1 / (\\lambda +
    \\alpha_j)) U^\\top (y_j - \\bar y_j)`: the same solution as :func:`solve_dual` with
    penalty :math:`\\alpha_j`, for all targets from the one eigendecomposition that the
    cross-validation already computed.

    Parameters
    ----------
    K : Tensor of shape (m, m)
        Uncentred Gram matrix (for the intercept).
    eigvecs : Tensor of shape (m, m)
    eigvals : Tensor of shape (m,)
    y : Tensor of shape (m, t)
    alphas : Tensor of shape (t,)
    fit_intercept : bool

    Returns
    -------
    dual_coef : Tensor of shape (m, t)
    intercept : Tensor of shape (t,)
    """
    y_mean = y.mean(dim=0) if fit_intercept else torch.zeros_like(y[0])
    proj = eigvecs.T @ (y - y_mean)
    dual_coef = eigvecs @ (proj / (eigvals.clamp_min(0.0)[:, None] + alphas[None, :]))
    intercept = y_mean - (K @ dual_coef).mean(dim=0) if fit_intercept else y_mean
    return dual_coef, intercept


def ridge_primal(X, y, alpha, fit_intercept):
    """Ridge regression in the primal: coefficients and intercept.

    Solves :math:`\\min_{\\beta, b} \\|y - X\\beta - b\\mathbf 1\\|^2 + \\alpha\\|\\beta\\|^2`
    (``b = 0`` without intercept) through the normal equations of the centred design,
    an (n_tasks, n_tasks) system: :math:`O(m d^2 + d^3)`.

    Parameters
    ----------
    X : Tensor of shape (m, d)
    y : Tensor of shape (m, t)
    alpha : float > 0
    fit_intercept : bool

    Returns
    -------
    coef : Tensor of shape (d, t)
    intercept : Tensor of shape (t,)
    """
    X, y, x_mean, y_mean = _centre(X, y, fit_intercept)
    gram = X.T @ X + alpha * torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
    coef = torch.linalg.solve(gram, X.T @ y)
    return coef, _intercept(coef, x_mean, y_mean, fit_intercept)


def ridge_dual(X, y, alpha, fit_intercept):
    """The same ridge solution through the (n_subsets, n_subsets) dual system.

    The push-through identity :math:`(X^\\top X + \\alpha I_d)^{-1} X^\\top =
    X^\\top (X X^\\top + \\alpha I_m)^{-1}` gives
    :math:`\\beta = X_c^\\top (X_c X_c^\\top + \\alpha I_m)^{-1} y_c` with the centred
    design :math:`X_c` and targets :math:`y_c`: one Cholesky factorisation of an
    :math:`m \\times m` matrix, :math:`O(m^2 d + m^3)`, which is much cheaper than the primal
    :math:`O(m d^2 + d^3)` when there are fewer subsets than tasks (40 subsets of 500
    tasks). Arguments and returns as :func:`ridge_primal`.
    """
    X, y, x_mean, y_mean = _centre(X, y, fit_intercept)
    gram = X @ X.T + alpha * torch.eye(X.shape[0], dtype=X.dtype, device=X.device)
    factor, info = torch.linalg.cholesky_ex(gram)
    if int(info) == 0:
        dual = torch.cholesky_solve(y, factor)
    else:  # positive definite in exact arithmetic; rounding can break the factorisation
        dual = torch.linalg.solve(gram, y)
    coef = X.T @ dual
    return coef, _intercept(coef, x_mean, y_mean, fit_intercept)


def _centre(X, y, fit_intercept):
    """Centred design and targets with their means (untouched, zero means, without intercept)."""
    if not fit_intercept:
        zeros = torch.zeros(y.shape[1], dtype=y.dtype, device=y.device)
        return X, y, None, zeros
    x_mean, y_mean = X.mean(dim=0), y.mean(dim=0)
    return X - x_mean, y - y_mean, x_mean, y_mean


def _intercept(coef, x_mean, y_mean, fit_intercept):
    return y_mean - x_mean @ coef if fit_intercept else y_mean


def design_spectrum(X, fit_intercept):
    """Left singular vectors and squared singular values of the (centred) design.

    They diagonalise the linear Gram matrix :math:`X_c X_c^\\top`, which is what
    :func:`spectral_cv_mse` needs for ridge; the thin SVD costs :math:`O(m d^2)`.
    """
    if fit_intercept:
        X = X - X.mean(dim=0)
    U, sing, _ = torch.linalg.svd(X, full_matrices=False)
    return U, sing**2
