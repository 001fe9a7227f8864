r"""TaskMet's inner problem in closed form for a linear predictor.

For a linear predictor :math:`f(x) = W x + b`, write :math:`\tilde x = (x, 1)` and
:math:`B = [W, b]` of shape :math:`d \times (p + 1)`. The inner problem

.. math::

    B^\star(\Lambda) = \arg\min_B \frac{1}{n} \sum_n (B\tilde x_n - y_n)^\top \Lambda_n
        (B\tilde x_n - y_n) + \delta \lVert B \rVert_F^2

is a weighted least-squares problem whose normal equations are linear in :math:`B`:

.. math::

    \frac{1}{n}\sum_n \Lambda_n B \tilde x_n \tilde x_n^\top + \delta B
        = \frac{1}{n}\sum_n \Lambda_n y_n \tilde x_n^\top .

* Diagonal :math:`\Lambda_n = \operatorname{diag}(\lambda_n)`: the outputs decouple into
  :math:`d` weighted least-squares problems of size :math:`p + 1`,
  :math:`(\tilde X^\top \operatorname{diag}(\lambda_{\cdot k}) \tilde X / n + \delta I)\,
  B_k = \tilde X^\top \operatorname{diag}(\lambda_{\cdot k})\, y_{\cdot k} / n`.
* Full :math:`\Lambda_n`: one system of size :math:`d(p+1)` with matrix
  :math:`M_{(k,j),(l,i)} = \frac{1}{n}\sum_n \Lambda_{n,kl}\, \tilde x_{nj} \tilde x_{ni}
  + \delta\,[k = l][j = i]`.

The solve is written with differentiable torch operations, so back-propagating an outer
loss through it gives the *exact* implicit gradient :math:`dL/d\Lambda` (the adjoint of a
linear solve is one more solve with the same matrix), with no inner iterations, no
conjugate gradient and no approximation.

Note. With a *global* metric (the same :math:`\Lambda` for every sample) and
:math:`\delta = 0`, :math:`B^\star = Y^\top \tilde X (\tilde X^\top \tilde X)^{-1}` whatever
:math:`\Lambda`: every output shares the same features, so a global metric cannot change
the exact minimiser of a linear model, and its hypergradient is zero. The metric acts on a
linear predictor only when it varies with :math:`x` (the conditional metrics), or through
the path of an iterative, unconverged inner solve.
"""

import torch
from torch import nn

from ._bilevel import BilevelSolver, metric_values, normalize_metric

__all__ = [
    "ClosedFormBilevelSolver",
    "design_matrices",
    "is_linear_predictor",
    "weighted_least_squares",
]


def is_linear_predictor(module):
    """Whether ``module`` is one ``Linear`` layer with bias (alone or in a ``Sequential``)."""
    if isinstance(module, nn.Sequential) and len(module) == 1:
        module = module[0]
    return isinstance(module, nn.Linear) and module.bias is not None


def design_matrices(X):
    r"""What the solve needs of the inputs alone: :math:`\tilde X` and its row outer products.

    They do not depend on the metric, so a training loop computes them once per fit.

    Parameters
    ----------
    X : torch.Tensor of shape (n, p)

    Returns
    -------
    Xa : torch.Tensor of shape (n, p + 1)
        :math:`\tilde X = [X, 1]`.
    outer_x : torch.Tensor of shape (n, (p + 1)^2)
        Row ``n`` holds :math:`\tilde x_n \tilde x_n^\top`, flattened.
    """
    ones = torch.ones(X.shape[0], 1, dtype=X.dtype, device=X.device)
    Xa = torch.cat([X, ones], dim=1)
    n, q = Xa.shape
    return Xa, (Xa.unsqueeze(2) * Xa.unsqueeze(1)).reshape(n, q * q)


def _solve_diagonal(Xa, outer_x, Y, values, damping):
    n, q = Xa.shape
    # A_k = sum_n lambda_nk x_n x_n^T / n and r_k = sum_n lambda_nk y_nk x_n / n, written
    # as matrix products (forward and backward several times faster than an einsum).
    gram = (values.T @ outer_x / n).reshape(-1, q, q)
    rhs = (values * Y).T @ Xa / n
    eye = torch.eye(q, dtype=Xa.dtype, device=Xa.device)
    return torch.linalg.solve(gram + damping * eye, rhs.unsqueeze(-1)).squeeze(-1)


def _solve_full(Xa, outer_x, Y, values, damping):
    n, q = Xa.shape
    d = Y.shape[1]
    # M[k, j, l, i] = sum_n Lambda_n[k, l] x_nj x_ni / n, as one (d^2, n) @ (n, q^2) product.
    system = (values.reshape(n, d * d).T @ outer_x / n).reshape(d, d, q, q)
    system = system.permute(0, 2, 1, 3).reshape(d * q, d * q)
    weighted_y = (values @ Y.unsqueeze(-1)).squeeze(-1)  # Lambda_n y_n, (n, d)
    rhs = (weighted_y.T @ Xa / n).reshape(d * q)
    eye = torch.eye(d * q, dtype=Xa.dtype, device=Xa.device)
    return torch.linalg.solve(system + damping * eye, rhs).reshape(d, q)


def weighted_least_squares(X, Y, values, damping=0.0, design=None):
    r"""Minimiser :math:`[W, b]` of the metric-weighted, ridge-damped least squares.

    Differentiable in ``values`` (and in ``X``, ``Y``): back-propagation through it gives
    the exact implicit gradient of the inner problem.

    Parameters
    ----------
    X : torch.Tensor of shape (n, p)
    Y : torch.Tensor of shape (n, d)
    values : torch.Tensor of shape (n, d) or (n, d, d)
        Metric values :math:`\Lambda_n` (diagonal entries, or full symmetric matrices).
    damping : float, default=0.0
        Ridge :math:`\delta` on every entry of :math:`[W, b]`, on the scale of the mean
        (not summed) loss; keeps the system invertible for collinear features.
    design : tuple of torch.Tensor, optional
        :func:`design_matrices` of ``X``, when already computed.

    Returns
    -------
    torch.Tensor of shape (d, p + 1)
        ``[:, :p]`` is the weight matrix :math:`W`, ``[:, p]`` the bias :math:`b`.
    """
    Xa, outer_x = design_matrices(X) if design is None else design
    Y = Y.as_subclass(torch.Tensor) if type(Y) is not torch.Tensor else Y
    if values.dim() == 2:
        return _solve_diagonal(Xa, outer_x, Y, values, damping)
    return _solve_full(Xa, outer_x, Y, values, damping)


class ClosedFormBilevelSolver(BilevelSolver):
    r"""TaskMet's bilevel solver with the inner problem solved exactly (linear predictor).

    Each outer step computes the normalised metric on every training sample, the inner
    minimiser :math:`\theta^\star(\Lambda)` by :func:`weighted_least_squares` (ridge
    ``damping``), the outer loss on a batch of instances at :math:`\theta^\star`, and its
    gradient in the metric parameters by back-propagation through the solve: the exact
    hypergradient of the (damped) bilevel problem. The inner Adam settings and the implicit
    linear solver of :class:`BilevelSolver` are unused.

    Parameters are those of :class:`BilevelSolver`; ``predictor`` must be a single
    ``Linear`` layer with bias (:func:`is_linear_predictor`).
    """

    def __init__(self, predictor, metric, task_loss, **kwargs):
        if not is_linear_predictor(predictor):
            raise ValueError(
                "the closed-form inner solve needs a linear predictor (one torch.nn.Linear "
                f"layer with bias); got {type(predictor).__name__}."
            )
        super().__init__(predictor, metric, task_loss, **kwargs)
        self._design_of = None  # the training inputs whose design matrices are cached
        self._design = None

    def inner_solution(self, X_flat, Y_flat, values):
        """Flat predictor parameters (weight, then bias) minimising the inner loss."""
        if self._design_of is not X_flat:
            self._design_of, self._design = X_flat, design_matrices(X_flat)
        coef = weighted_least_squares(X_flat, Y_flat, values, self.damping, self._design)
        p = X_flat.shape[1]
        return torch.cat([coef[:, :p].reshape(-1), coef[:, p]])

    def outer_step(self, X, Y, X_train_flat, batch_size, n_inner):
        """One step: exact inner solve, then one Adam step on the metric.

        Same contract as :meth:`BilevelSolver.outer_step`; ``n_inner`` is ignored.
        """
        Y_train_flat = Y.reshape(-1, Y.shape[-1])
        learn = self.outer_optimizer is not None
        with torch.set_grad_enabled(learn):
            values, _ = normalize_metric(metric_values(self.metric, X_train_flat))
            theta = self.inner_solution(X_train_flat, Y_train_flat, values)
            batch = self.outer_batches(X.shape[0], batch_size, X.device)
            total, task, mse = self.outer_loss(theta, X[batch], Y[batch])
        checked = [total.detach().reshape(1), theta.detach()]
        if learn:
            grads = torch.autograd.grad(
                total, self.metric_params, allow_unused=True, materialize_grads=True
            )
            metric_grad = torch.cat([g.reshape(-1) for g in grads])
            checked.append(metric_grad)
        if not bool(torch.isfinite(torch.cat(checked)).all()):
            return task, mse, False
        self.theta.copy_(theta.detach())
        if learn:
            self.outer_optimizer.step(metric_grad)
            self.metric_flat.load(self.phi)
        return task, mse, True
