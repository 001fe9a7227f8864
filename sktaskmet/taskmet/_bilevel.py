r"""Numerics of TaskMet's bilevel problem: inner solve, implicit gradient, outer step.

The problem (Bansal et al., NeurIPS 2023) over instances :math:`i` with items :math:`j`:

.. math::

    \theta^\star(\phi) &= \arg\min_\theta\; \ell_\text{pred}(\theta, \phi)
        = \frac{1}{n} \sum_{ij} r_{ij}^\top \bar\Lambda_\phi(x_{ij})\, r_{ij},
        \qquad r_{ij} = f_\theta(x_{ij}) - y_{ij}, \\
    \min_\phi\; & L(\theta^\star(\phi))
        = \text{task loss}(\theta^\star(\phi)) + \alpha\, \text{MSE}(\theta^\star(\phi)).

Implicit gradient. The inner optimum satisfies the optimality condition
:math:`F(\theta, \Lambda) = \nabla_\theta \ell_\text{pred}(\theta, \Lambda) = 0`, written once
(:meth:`BilevelSolver.optimality`) as a function of the predictor's flat parameter vector
and of the metric *values* on a batch. The implicit function theorem gives

.. math::

    \frac{dL}{d\phi} = -\Big(\frac{\partial F}{\partial \phi}\Big)^{\!\top} u,
    \qquad H u = \nabla_\theta L, \qquad H = \frac{\partial F}{\partial \theta}
    = \nabla^2_\theta \ell_\text{pred}.

``H u = v`` is solved by a separate, swappable linear solver (:data:`LINEAR_SOLVERS`):
conjugate gradient on Hessian-vector products (``"cg"``, optionally damped: ``H + \delta
I``), conjugate gradient on the normal equations :math:`H^\top H u = H^\top v`
(``"normal_cg"``, for indefinite ``H``), or a dense solve (``"exact"``). Hessian-vector
products and the cross term both come from vector-Jacobian products (double backward) of
the optimality condition, on one fixed batch of instances.

Metric normalisation. :math:`\Lambda \to c\Lambda` leaves :math:`\theta^\star` unchanged,
so the scale of the metric is not identified; left free it drifts under noisy outer steps
and changes the conditioning of both the inner Adam solve and ``H``. We use
:math:`\bar\Lambda(x) = \Lambda(x) / c`, :math:`c = \frac{1}{n d}\sum_i \operatorname{tr}
\Lambda(x_i)` over the samples in use (the training set in the inner solve, the fixed
batch, differentiated through, in the implicit gradient), so the metric has the mean trace
of the identity.

Speed. The predictor is evaluated as a function of one flat parameter vector (a direct
``F.linear`` chain for ``Sequential`` MLPs, :func:`torch.func.functional_call` otherwise),
the inner Adam is written on that flat vector, the metric values on the training set are
computed once per outer step (they do not depend on :math:`\theta`), and the mini-batch
indices of all inner steps of an outer step are drawn and gathered at once.
"""

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

__all__ = [
    "FlatModule",
    "FlatAdam",
    "BilevelSolver",
    "cg_solve",
    "normal_cg_solve",
    "exact_solve",
    "LINEAR_SOLVERS",
    "metric_values",
    "normalize_metric",
    "ReshuffledBatches",
    "task_objective",
]


# --------------------------------------------------------------------------------------
# A module as a function of one flat parameter vector
# --------------------------------------------------------------------------------------


# Activations whose derivative the hand-written backward pass knows, as a function of the
# activation's *output* a: relu' = [a > 0], tanh' = 1 - a^2, identity' = 1.
_KNOWN_ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Identity)


def _sequential_plan(module):
    """Layers of a ``Sequential`` of ``Linear`` and parameter-free modules, else None."""
    if not isinstance(module, nn.Sequential):
        return None
    plan = []
    for layer in module:
        if isinstance(layer, nn.Linear):
            plan.append(("linear", layer.bias is not None))
        elif next(layer.parameters(), None) is None and next(layer.buffers(), None) is None:
            plan.append(("call", layer))
        else:
            return None
    return plan


class FlatModule:
    """A torch module seen as a function ``f(flat_parameters, X)``.

    Writing the inner solver on one flat vector keeps an Adam step at a handful of tensor
    operations, and makes the Hessian of the inner loss a plain matrix. ``Sequential``
    stacks of ``Linear`` and parameter-free layers (what ``"linear"`` and ``"mlp"`` build)
    run as a direct ``F.linear`` chain; any other module goes through
    :func:`torch.func.functional_call`.

    Parameters
    ----------
    module : torch.nn.Module
    """

    def __init__(self, module):
        self.module = module
        named = list(module.named_parameters())
        self.names = [name for name, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.n_params = int(sum(self.numels))
        self._plan = _sequential_plan(module)
        self._views = None  # (flat vector, its views) of the last manual gradient

    def flatten(self):
        """The module's current parameters as one detached flat vector (a copy)."""
        params = [p.detach().reshape(-1) for p in self.module.parameters()]
        return torch.cat(params).clone()

    def unflatten(self, flat):
        """Views of ``flat`` shaped as the module's parameters."""
        return [
            chunk.view(shape)
            for chunk, shape in zip(torch.split(flat, self.numels), self.shapes, strict=True)
        ]

    def load(self, flat):
        """Write ``flat`` into the module's parameters."""
        with torch.no_grad():
            for param, value in zip(self.module.parameters(), self.unflatten(flat), strict=True):
                param.copy_(value)

    @property
    def has_manual_backward(self):
        """Whether :meth:`gradient` runs a hand-written backward pass (no autograd graph)."""
        return self._plan is not None and all(
            kind == "linear" or isinstance(extra, _KNOWN_ACTIVATIONS) for kind, extra in self._plan
        )

    def gradient(self, flat, X, output_gradient):
        r"""Gradient in ``flat`` of a loss whose gradient in the output is known.

        The inner Adam step needs only :math:`\nabla_\theta \ell`; for a chain of linear
        layers and ReLU / tanh activations, back-propagating by hand costs a few matrix
        products, far less than recording and replaying an autograd graph at every one of
        the hundreds of inner steps. Other modules use autograd.

        Parameters
        ----------
        flat : torch.Tensor of shape (n_params,)
        X : torch.Tensor of shape (n, p)
        output_gradient : callable
            ``output -> d loss / d output`` (same shape as the output).

        Returns
        -------
        torch.Tensor of shape (n_params,)
        """
        if not self.has_manual_backward:
            flat = flat.detach().requires_grad_(True)
            out = self(flat, X)
            (grad,) = torch.autograd.grad(out, flat, output_gradient(out.detach()))
            return grad
        tensors = self._views_of(flat)
        saved = []
        grad = output_gradient(self._chain(tensors, X, saved))
        grads = [None] * len(tensors)
        for position, (index, extra, stored) in enumerate(reversed(saved)):
            if index is None:
                if isinstance(extra, nn.ReLU):
                    grad = grad * (stored > 0)
                elif isinstance(extra, nn.Tanh):
                    grad = grad * (1 - stored * stored)
                continue
            grads[index] = grad.T @ stored
            if extra:
                grads[index + 1] = grad.sum(0)
            if position < len(saved) - 1:
                grad = grad @ tensors[index]
        return torch.cat([g.reshape(-1) for g in grads])

    def _views_of(self, flat):
        # A training loop updates one flat vector in place at every step, so its views
        # stay valid: made once for that vector instead of three calls per step.
        if self._views is None or self._views[0] is not flat:
            self._views = (flat, self.unflatten(flat))
        return self._views[1]

    def _chain(self, tensors, X, saved=None):
        """Forward pass of the ``Sequential`` plan on parameter ``tensors``.

        With ``saved`` (a list), appends what the hand-written backward pass needs: the
        input of each linear layer with its parameter index and bias flag, and the output
        of each activation.
        """
        out, k = X, 0
        for kind, extra in self._plan:
            if kind == "linear":
                if saved is not None:
                    saved.append((k, extra, out))
                bias = tensors[k + 1] if extra else None
                out = F.linear(out, tensors[k], bias)
                k += 2 if extra else 1
            else:
                out = extra(out)
                if saved is not None:
                    saved.append((None, extra, out))
        return out

    def __call__(self, flat, X):
        tensors = self.unflatten(flat)
        if self._plan is None:
            return functional_call(self.module, dict(zip(self.names, tensors, strict=True)), (X,))
        return self._chain(tensors, X)


# --------------------------------------------------------------------------------------
# Metric values and their normalisation
# --------------------------------------------------------------------------------------


_CHUNK_ROWS = 1024


def metric_values(metric, X):
    r"""Raw metric values at the rows of ``X``: shape (n, d) for diagonal metrics, else (n, d, d).

    Conditional metrics are evaluated in chunks of rows: the hidden activations of a chunk
    stay in cache, which on a CPU is several times faster than one pass over a large set.
    """
    evaluate = metric.diagonal_values if metric.diagonal else metric
    if not metric.conditional:
        values = evaluate()
        return values.expand(X.shape[0], *values.shape)
    if X.shape[0] <= _CHUNK_ROWS:
        return evaluate(X)
    return torch.cat([evaluate(chunk) for chunk in torch.split(X, _CHUNK_ROWS)])


def _trace(values):
    return values.sum(-1) if values.dim() == 2 else torch.diagonal(values, 0, -2, -1).sum(-1)


def normalize_metric(values):
    r"""Divide metric values by :math:`c = \operatorname{mean}_i \operatorname{tr}\Lambda(x_i) / d`.

    Returns
    -------
    normalized : torch.Tensor
        Same shape as ``values``; their mean trace is :math:`d`.
    scale : torch.Tensor
        The scalar :math:`c`.
    """
    dim = values.shape[-1]
    scale = _trace(values).mean() / dim
    return values / scale, scale


def _quadratic(residual, values):
    """``r^T Lambda r`` per sample for diagonal (n, d) or full (n, d, d) metric values."""
    if values.dim() == 2:
        return (residual * residual * values).sum(-1)
    return torch.einsum("ni,nij,nj->n", residual, values, residual)


# --------------------------------------------------------------------------------------
# Linear solvers for H u = v
# --------------------------------------------------------------------------------------


def _safe_divide(num, den):
    # Once CG has converged exactly the residual is 0 and so is the curvature; keep the
    # iterate instead of producing 0 / 0.
    tiny = torch.finfo(num.dtype).tiny
    return torch.where(den.abs() > tiny, num / torch.where(den.abs() > tiny, den, 1.0), 0.0)


def cg_solve(matvec, b, max_iter=10, damping=0.0, tol=None):
    r"""Conjugate gradient for :math:`(H + \delta I) u = b`, :math:`H` symmetric.

    Right when :math:`H` is positive definite (a linear predictor with a PD metric); the
    damping :math:`\delta` makes it usable for mildly non-convex predictors.

    Parameters
    ----------
    matvec : callable
        ``u -> H u``.
    b : torch.Tensor of shape (n,)
    max_iter : int, default=10
    damping : float, default=0.0
    tol : float, optional
        Stop when :math:`\lVert r\rVert \le \text{tol}\,\lVert b\rVert`; defaults to
        ``100 * eps`` of the dtype. Checking costs one host sync per iteration, negligible
        next to a Hessian-vector product, and saves the products that a small predictor
        (which CG solves exactly in ``n_params`` iterations) does not need.

    Returns
    -------
    torch.Tensor of shape (n,)
    """

    def apply(u):
        return matvec(u) + damping * u if damping else matvec(u)

    tol = 100 * torch.finfo(b.dtype).eps if tol is None else tol
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = r @ r
    threshold = float(rs) * tol**2
    for _ in range(max_iter):
        if float(rs) <= threshold:
            break
        Ap = apply(p)
        step = _safe_divide(rs, p @ Ap)
        x = x + step * p
        r = r - step * Ap
        rs_new = r @ r
        p = r + _safe_divide(rs_new, rs) * p
        rs = rs_new
    return x


def normal_cg_solve(matvec, b, max_iter=10, damping=0.0):
    r"""Conjugate gradient on the normal equations :math:`(H^\top H + \delta I) u = H^\top b`.

    :math:`H^\top H` is positive semi-definite whatever the sign of :math:`H`'s eigenvalues,
    so this converges for non-convex predictors (at the price of squaring the condition
    number). :math:`H` is a Hessian, hence symmetric: :math:`H^\top w = H w`.

    Parameters
    ----------
    matvec : callable
        ``u -> H u``.
    b : torch.Tensor of shape (n,)
    max_iter : int, default=10
    damping : float, default=0.0

    Returns
    -------
    torch.Tensor of shape (n,)
    """
    return cg_solve(lambda u: matvec(matvec(u)), matvec(b), max_iter=max_iter, damping=damping)


def exact_solve(matvec, b, max_iter=None, damping=0.0):
    r"""Dense solve of :math:`(H + \delta I) u = b`, building :math:`H` column by column.

    Costs :math:`n` Hessian-vector products and an :math:`O(n^3)` least-squares solve (which
    also handles a singular :math:`H`): for small predictors only.
    ``max_iter`` is accepted for a uniform signature and ignored.

    Parameters
    ----------
    matvec : callable
        ``u -> H u``.
    b : torch.Tensor of shape (n,)
    max_iter : ignored
    damping : float, default=0.0

    Returns
    -------
    torch.Tensor of shape (n,)
    """
    n = b.shape[0]
    eye = torch.eye(n, dtype=b.dtype, device=b.device)
    columns = torch.stack([matvec(e) for e in eye], dim=1)
    hessian = (columns + columns.T) / 2 + damping * eye
    return torch.linalg.lstsq(hessian, b.unsqueeze(1)).solution.squeeze(1)


LINEAR_SOLVERS = {"cg": cg_solve, "normal_cg": normal_cg_solve, "exact": exact_solve}


# --------------------------------------------------------------------------------------
# Inner optimiser: Adam on a flat vector, state kept across outer steps
# --------------------------------------------------------------------------------------


class FlatAdam:
    """Adam with gradient-norm clipping on one flat parameter vector.

    Its moments and step count persist between calls, so the inner problem is
    warm-started across outer steps with its optimiser state, as in TaskMet. It is also
    the outer optimiser of the metric. (``torch.optim`` is avoided on purpose: creating its
    first optimiser imports ``torch._dynamo``, several seconds of one-off start-up.)

    Parameters
    ----------
    params : torch.Tensor of shape (n,)
        Updated in place.
    lr : float
    clip : float or None
        Maximum gradient norm (``torch.nn.utils.clip_grad_norm_`` semantics).
    betas : tuple of float, default=(0.9, 0.999)
    eps : float, default=1e-8
    """

    def __init__(self, params, lr, clip=1.0, betas=(0.9, 0.999), eps=1e-8):
        self.params = params
        self.lr = float(lr)
        self.clip = clip
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.exp_avg = torch.zeros_like(params)
        self.exp_avg_sq = torch.zeros_like(params)
        self.step_count = 0

    def step(self, grad):
        if self.clip is not None:
            norm = torch.linalg.vector_norm(grad)
            grad = grad * torch.clamp(self.clip / (norm + 1e-6), max=1.0)
        self.step_count += 1
        self.exp_avg.mul_(self.beta1).add_(grad, alpha=1 - self.beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        bias1 = 1 - self.beta1**self.step_count
        bias2 = 1 - self.beta2**self.step_count
        denom = (self.exp_avg_sq / bias2).sqrt_().add_(self.eps)
        self.params.addcdiv_(self.exp_avg, denom, value=-self.lr / bias1)

    def state(self):
        return (self.params.clone(), self.exp_avg.clone(), self.exp_avg_sq.clone(), self.step_count)

    def restore(self, state):
        params, exp_avg, exp_avg_sq, step_count = state
        self.params.copy_(params)
        self.exp_avg.copy_(exp_avg)
        self.exp_avg_sq.copy_(exp_avg_sq)
        self.step_count = step_count


# --------------------------------------------------------------------------------------
# The bilevel solver
# --------------------------------------------------------------------------------------


class BilevelSolver:
    r"""TaskMet's alternating bilevel solver on tensors grouped by decision instance.

    Data tensors are shaped by instance: ``X`` (n_instances, m, p), ``Y`` (n_instances,
    m, d). The predictor ``f_theta`` and the metric ``Lambda_phi`` act on single samples.

    Parameters
    ----------
    predictor : torch.nn.Module
        Maps (n, p) to (n, d). Its parameters are :math:`\theta`.
    metric : sktaskmet.taskmet._metric_params.MetricParameterization
        :math:`\Lambda_\phi`; its parameters are :math:`\phi`.
    task_loss : callable
        ``task_loss(y_pred, y_true) -> (batch,)`` on (batch, m, d) tensors, differentiable
        in ``y_pred``; lower is better.
    alpha : float
        Weight of the mean squared error in the outer objective.
    inner_lr, inner_batch_size, inner_clip : float, int, float
        Settings of the inner Adam.
    learning_rate : float
        Outer Adam learning rate.
    implicit_solver : {"cg", "normal_cg", "exact"}
    cg_max_iter : int
    damping : float
    generator : torch.Generator
        Source of every random batch.
    """

    def __init__(
        self,
        predictor,
        metric,
        task_loss,
        *,
        alpha=0.0,
        inner_lr=0.1,
        inner_batch_size=10,
        inner_clip=1.0,
        learning_rate=1e-3,
        implicit_solver="cg",
        cg_max_iter=10,
        damping=1e-5,
        generator=None,
    ):
        self.predictor = FlatModule(predictor)
        self.metric = metric
        self.task_loss = task_loss
        self.alpha = float(alpha)
        self.inner_batch_size = int(inner_batch_size)
        self.linear_solver = LINEAR_SOLVERS[implicit_solver]
        self.cg_max_iter = int(cg_max_iter)
        self.damping = float(damping)
        self.generator = generator
        self.outer_batches = ReshuffledBatches(generator)  # the next outer batch's indices
        self.theta = self.predictor.flatten()
        self.inner_optimizer = FlatAdam(self.theta, lr=inner_lr, clip=inner_clip)
        self.metric_params = list(metric.parameters())
        self.metric_flat = FlatModule(metric)
        if self.metric_params:
            self.phi = self.metric_flat.flatten()
            self.outer_optimizer = FlatAdam(self.phi, lr=learning_rate, clip=None)
        else:  # the identity metric: nothing to learn, the solver is plain least squares
            self.phi = None
            self.outer_optimizer = None

    # -- the two objectives ------------------------------------------------------------

    def predict(self, theta, X):
        """Predictions for samples ``X`` of shape (n, p) -> (n, d)."""
        return self.predictor(theta, X)

    def prediction_loss(self, theta, X, Y, values):
        r"""Inner loss :math:`\operatorname{mean}_n r_n^\top \Lambda_n r_n` on flat samples."""
        residual = self.predictor(theta, X) - Y
        return _quadratic(residual, values).mean()

    def optimality(self, theta, X, Y, values):
        r"""Inner optimality condition :math:`F(\theta, \Lambda) = \nabla_\theta \ell_\text{pred}`.

        Returned with its autograd graph (``create_graph=True``), so that vector-Jacobian
        products of ``F`` give both Hessian-vector products (:math:`H^\top w = H w`, ``H``
        being symmetric) and the cross term :math:`(\partial F / \partial \Lambda)^\top u`.
        ``theta`` and ``values`` must require gradients.
        """
        loss = self.prediction_loss(theta, X, Y, values)
        (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
        return grad

    def outer_loss(self, theta, X, Y):
        """Mean task loss + alpha * MSE on instances X (b, m, p), Y (b, m, d); also parts."""
        return task_objective(lambda Z: self.predictor(theta, Z), X, Y, self.task_loss, self.alpha)

    # -- implicit gradient ---------------------------------------------------------------

    def hypergradient(self, theta, X, Y, values, outer_grad):
        r"""Implicit gradient :math:`-(\partial F/\partial\Lambda)^\top H^{-1} v`.

        Parameters
        ----------
        theta : torch.Tensor of shape (n_params,)
            Inner solution (detached).
        X, Y : torch.Tensor of shapes (n, p), (n, d)
            The fixed batch, flattened over items.
        values : torch.Tensor of shape (n, d) or (n, d, d)
            Metric values on the batch (detached).
        outer_grad : torch.Tensor of shape (n_params,)
            :math:`v = \nabla_\theta L`.

        Returns
        -------
        torch.Tensor, same shape as ``values``
            :math:`dL/d\Lambda`: back-propagate it through the metric network.
        """
        theta = theta.detach().requires_grad_(True)
        values = values.detach().requires_grad_(True)
        condition = self.optimality(theta, X, Y, values)

        def hvp(w):
            (product,) = torch.autograd.grad(condition, theta, w, retain_graph=True)
            return product

        u = self.linear_solver(hvp, outer_grad, max_iter=self.cg_max_iter, damping=self.damping)
        (cross,) = torch.autograd.grad(condition, values, u)
        return -cross

    # -- the loop pieces -----------------------------------------------------------------

    def train_metric_values(self, X_flat):
        """Normalised metric values on the training samples (no gradient) and their scale."""
        with torch.no_grad():
            return normalize_metric(metric_values(self.metric, X_flat))

    def inner_solve(self, X, Y, values, n_steps):
        """``n_steps`` warm-started Adam steps on the metric-weighted prediction loss.

        ``X`` (n_instances, m, p), ``Y`` (n_instances, m, d), ``values`` (n_instances, m,
        ...). Mini-batches of ``inner_batch_size`` instances (without replacement within a
        step) are drawn for all steps at once.
        """
        n_inst, m = X.shape[:2]
        size = min(self.inner_batch_size, n_inst)
        keys = torch.rand(n_steps, n_inst, generator=self.generator, device=X.device)
        index = keys.argsort(dim=1)[:, :size]
        Xb = X[index].reshape(n_steps, size * m, X.shape[-1])
        Yb = Y[index].reshape(n_steps, size * m, Y.shape[-1])
        Vb = values[index].reshape(n_steps, size * m, *values.shape[2:])
        n_rows = size * m
        for k in range(n_steps):
            targets, weights = Yb[k], Vb[k]

            def output_gradient(out, targets=targets, weights=weights):
                # d/d out of mean_n r_n^T Lambda_n r_n with Lambda_n symmetric: 2 Lambda r / n.
                residual = out - targets
                if weights.dim() == 2:
                    return (2.0 / n_rows) * weights * residual
                return (2.0 / n_rows) * (weights @ residual.unsqueeze(-1)).squeeze(-1)

            grad = self.predictor.gradient(self.theta, Xb[k], output_gradient)
            self.inner_optimizer.step(grad)

    def outer_step(self, X, Y, X_train_flat, batch_size, n_inner):
        """One alternating step: inner solve, then one Adam step on the metric.

        Returns
        -------
        task_loss, mse : torch.Tensor
            On the outer batch, before the metric update (scalars, on the device).
        ok : bool
            False when a NaN or infinity appeared (in the outer loss, the inner solution or
            the metric gradient); the metric is then left unchanged, but the inner solve has
            moved the predictor: the caller restores :meth:`state` from before the step.
        """
        values_train, _ = self.train_metric_values(X_train_flat)
        values_train = values_train.reshape(*X.shape[:2], *values_train.shape[1:])
        self.inner_solve(X, Y, values_train, n_inner)

        batch = self.outer_batches(X.shape[0], batch_size, X.device)
        Xb, Yb = X[batch], Y[batch]
        theta = self.theta.detach()
        theta_req = theta.clone().requires_grad_(True)
        total, task, mse = self.outer_loss(theta_req, Xb, Yb)
        (outer_grad,) = torch.autograd.grad(total, theta_req)

        X_flat = Xb.reshape(-1, Xb.shape[-1])
        Y_flat = Yb.reshape(-1, Yb.shape[-1])
        if self.outer_optimizer is not None:
            # Normalised metric on the fixed batch, differentiated through its scale.
            values, _ = normalize_metric(metric_values(self.metric, X_flat))
            grad_values = self.hypergradient(theta, X_flat, Y_flat, values.detach(), outer_grad)
            grads = torch.autograd.grad(
                values, self.metric_params, grad_values, allow_unused=True, materialize_grads=True
            )
            metric_grad = torch.cat([g.reshape(-1) for g in grads])
            finite = [torch.isfinite(metric_grad).all()]
        else:
            finite = []
        ok = bool(torch.stack([torch.isfinite(total), torch.isfinite(theta).all(), *finite]).all())
        if not ok:
            return task, mse, False
        if self.outer_optimizer is not None:
            self.outer_optimizer.step(metric_grad)
            self.metric_flat.load(self.phi)
        return task, mse, True

    # -- state -------------------------------------------------------------------------

    def state(self):
        """A snapshot of everything that the loop changes (for restores and best models)."""
        return {
            "inner": self.inner_optimizer.state(),
            "metric": [p.detach().clone() for p in self.metric.parameters()],
            "outer": self.outer_optimizer.state() if self.outer_optimizer is not None else None,
        }

    def restore(self, state):
        self.inner_optimizer.restore(state["inner"])
        if state["outer"] is not None:
            self.outer_optimizer.restore(state["outer"])
        with torch.no_grad():
            for param, value in zip(self.metric.parameters(), state["metric"], strict=True):
                param.copy_(value)

    def write_back(self):
        """Load the flat predictor parameters into the predictor module."""
        self.predictor.load(self.theta)


class ReshuffledBatches:
    r"""Mini-batches of instances by random reshuffling: each epoch walks a new permutation.

    Called as ``batches(n_inst, size, device)``, it returns the next ``size`` indices of a
    random permutation of ``range(n_inst)`` drawn with ``generator``, and draws a new
    permutation when the current one is used up. Every instance so enters exactly one batch
    per epoch; the last batch of an epoch is the remainder, shorter when ``size`` does not
    divide ``n_inst`` (a shuffled data loader without ``drop_last``).

    Why not an independent draw at every step: after ``k`` epochs each instance has then
    been seen a binomial number of times, with variance about ``k``, instead of exactly
    ``k``; reshuffling removes that part of the stochastic gradient's error, which
    accumulates over an epoch. On PyEPO's shortest path it brings
    :class:`~sktaskmet.DFLRegressor` level with PyEPO's own training loop, which shuffles
    the same way (figures in the decision-tasks benchmark page). A permutation costs one
    ``randperm`` per epoch; a batch is then a slice of it.
    """

    def __init__(self, generator):
        self.generator = generator
        self._order = None
        self._position = 0

    def __call__(self, n_inst, size, device):
        if self._order is None or self._order.numel() != n_inst or self._position >= n_inst:
            self._order = torch.randperm(n_inst, generator=self.generator, device=device)
            self._position = 0
        batch = self._order[self._position : self._position + size]
        self._position += size
        return batch


def task_objective(predict, X, Y, task_loss, alpha):
    """Mean task loss + ``alpha`` * MSE of a per-sample predictor on instances.

    Parameters
    ----------
    predict : callable
        ``(n, p) -> (n, d)``, applied to the samples of all instances at once.
    X, Y : torch.Tensor of shapes (b, m, p), (b, m, d)
    task_loss : callable
        ``task_loss(y_pred, y_true) -> (b,)``.
    alpha : float

    Returns
    -------
    total : torch.Tensor
        The objective, with its graph.
    task, mse : torch.Tensor
        Its two parts, detached.
    """
    b, m, _ = X.shape
    pred = predict(X.reshape(b * m, -1)).reshape(b, m, -1)
    task = task_loss(pred, Y)
    _check_task_loss(task, b)
    if pred.requires_grad and not task.requires_grad:
        raise ValueError(
            "the task loss is detached from the predictions: its value has no gradient with "
            "respect to y_pred (e.g. .detach(), .item() or numpy inside the loss), so training "
            "would silently ignore the task. Write the loss with differentiable torch operations."
        )
    task = task.mean()
    mse = ((pred - Y) ** 2).sum(-1).mean()
    total = task + alpha * mse if alpha else task
    return total, task.detach(), mse.detach()


def _check_task_loss(values, batch):
    if not isinstance(values, torch.Tensor):
        raise TypeError(
            f"the task loss must return a torch.Tensor of shape ({batch},); got "
            f"{type(values).__name__}."
        )
    if values.shape != (batch,):
        raise ValueError(
            f"the task loss must return one value per instance, shape ({batch},); got shape "
            f"{tuple(values.shape)}."
        )
