"""Batched, differentiable solvers of the downstream decision problems (torch only).

Every function here works on a batch of independent decision instances at once, follows
the dtype and device of its inputs and never leaves the device inside its loops. The task
classes in :mod:`sktaskmet.taskmet._tasks` wrap them with the scikit-learn-facing API.

* :func:`soft_topk` -- entropic optimal transport between items and the anchors {0, 1}:
  the Sinkhorn fixed point in closed form up to one scalar root, found by bisection and
  differentiated implicitly.
* :func:`project_simplex` and :func:`solve_simplex_qp` -- the Markowitz problem over the
  probability simplex: accelerated projected gradient to find the support, then an exact
  KKT solve on the support whose autograd graph *is* the implicit derivative.
* :func:`project_capped_simplex` and :func:`solve_coverage` -- the budget-allocation
  coverage problem: projected gradient ascent, differentiated at its fixed point with the
  implicit function theorem (:class:`_CoverageFixedPoint`).
"""

import torch

__all__ = [
    "soft_topk",
    "project_simplex",
    "solve_simplex_qp",
    "project_capped_simplex",
    "coverage_objective",
    "coverage_gradient",
    "coverage_hessian",
    "solve_coverage",
]


# --------------------------------------------------------------------------------------
# Soft top-k by entropic optimal transport
# --------------------------------------------------------------------------------------
def soft_topk(scores, k, epsilon, n_iter, cost_scale=None):
    r"""Soft top-k indicator of each row of ``scores`` by entropic optimal transport.

    The relaxation of Xie et al. (2020) in the form the TaskMet reference code runs it: the
    negated scores :math:`-s_i` of the m items of an instance are transported onto the two
    anchors :math:`(0, 1)`, with item marginals :math:`\mu_i = 1/m` and anchor marginals
    :math:`\nu = (k/m, (m-k)/m)`, so that the k largest scores go to anchor 0. The cost is
    the squared distance divided by its maximum over the instance,

    .. math::
        C_{i0} = s_i^2 / c, \quad C_{i1} = (s_i + 1)^2 / c, \quad
        c = \max_i \max\big(s_i^2, (s_i + 1)^2\big),

    so that ``epsilon`` is a relative temperature. The soft indicator is
    :math:`z_i = m \Gamma_{i0} \in [0, 1]`, with :math:`\sum_i z_i = k`, where
    :math:`\Gamma` is the entropic plan (the fixed point of the Sinkhorn iterations). As
    ``epsilon -> 0`` it tends to the hard top-k indicator.

    The normalisation :math:`c` is part of the function and is differentiated, as
    automatic differentiation does in the reference code. It makes the relaxation depend
    on the level of the scores, not only on their differences: shifting every score of an
    instance changes :math:`c`, hence the effective temperature, and the gradient says so.
    On a decision problem whose loss would otherwise be invariant to such shifts (the
    cubic top-1 problem with a linear predictor), this is what makes the learned TaskMet
    metric favour the region of the top items.

    With two anchors the fixed point has a closed form up to one scalar. The row marginals
    give :math:`\Gamma_{i0} = \mu_i\, \sigma((\delta - \Delta_i)/\epsilon)` with
    :math:`\Delta_i = C_{i0} - C_{i1} = -(1 + 2 s_i) / c` and :math:`\delta = g_0 - g_1` the
    difference of the anchor potentials; the column marginal then fixes :math:`\delta` as
    the root of the increasing function

    .. math:: F(\delta, s) = \sum_i \sigma\big((\delta - \Delta_i(s))/\epsilon\big) - k .

    The root is bracketed and found by bisection (no graph is recorded), and one Newton
    step with a detached derivative, :math:`\delta = \delta^* - F(\delta^*, s) / \partial_\delta
    F(\delta^*, s)`, reattaches it to ``scores``: at the root its gradient is exactly the
    implicit derivative :math:`-\partial_s F / \partial_\delta F`. So the result is the
    converged transport plan and its exact derivative, at the cost of a few elementwise
    passes instead of back-propagating through hundreds of Sinkhorn iterations.

    Parameters
    ----------
    scores : Tensor of shape (batch, m)
    k : int
    epsilon : float
    n_iter : int
        Maximum number of bisection steps; the search stops earlier once the bracket is
        below the resolution of the dtype.
    cost_scale : Tensor of shape (batch, 1) or (batch, 1, 1), optional
        Divisor :math:`c` of the cost, used as given (a constant unless it carries a
        graph). Defaults to the maximum cost of each instance, differentiated.

    Returns
    -------
    Tensor of shape (batch, m)

    References
    ----------
    Xie, Dai, Chen, Dai, Zhao, Zha, Wei and Pfister, "Differentiable top-k with optimal
    transport", NeurIPS 2020.
    """
    if cost_scale is None:
        cost_scale = torch.maximum(scores**2, (scores + 1.0) ** 2).amax(dim=1, keepdim=True)
        cost_scale = cost_scale.clamp_min(torch.finfo(scores.dtype).tiny)
    elif cost_scale.dim() > 1:
        cost_scale = cost_scale.reshape(cost_scale.shape[0], 1)
    # Delta_i = C_i0 - C_i1 = (s_i^2 - (s_i + 1)^2) / c = -(1 + 2 s_i) / c.
    delta_cost = -(1.0 + 2.0 * scores) / cost_scale

    with torch.no_grad():
        gaps = delta_cost.detach()
        # sigma(+-40) is 1 (or 0) to within 4e-18: at lo every item is off and the count is
        # below k, at hi every item is on and the count is m > k.
        lo = gaps.amin(dim=1, keepdim=True) - 40 * epsilon
        hi = gaps.amax(dim=1, keepdim=True) + 40 * epsilon
        resolution = torch.finfo(scores.dtype).eps
        for step in range(int(n_iter)):
            mid = (lo + hi) / 2
            count = torch.sigmoid((mid - gaps) / epsilon).sum(dim=1, keepdim=True)
            below = count < k
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
            # Checking every few steps keeps host-device synchronisations rare on a GPU.
            if step % 8 == 7 and bool(((hi - lo) <= resolution * (hi.abs() + epsilon)).all()):
                break
        root = (lo + hi) / 2

    logits = (root - delta_cost) / epsilon
    z = torch.sigmoid(logits)
    residual = z.sum(dim=1, keepdim=True) - k
    slope = (z * (1 - z)).sum(dim=1, keepdim=True).detach() / epsilon
    # Where every item is saturated the count does not move with delta: no Newton step.
    step = torch.where(slope > 0, residual / slope.clamp_min(torch.finfo(scores.dtype).tiny), 0)
    return torch.sigmoid((root - step - delta_cost) / epsilon)


# --------------------------------------------------------------------------------------
# Simplex-constrained quadratic programme (Markowitz)
# --------------------------------------------------------------------------------------
def project_simplex(v):
    r"""Euclidean projection of each row of ``v`` onto the probability simplex.

    Exact sort-based algorithm: :math:`x = \max(v - \tau, 0)` with the threshold
    :math:`\tau` chosen so that :math:`\sum_i x_i = 1`.

    Parameters
    ----------
    v : Tensor of shape (batch, m)

    Returns
    -------
    Tensor of shape (batch, m)
    """
    m = v.shape[-1]
    sorted_v, _ = torch.sort(v, dim=-1, descending=True)
    cumulative = sorted_v.cumsum(dim=-1) - 1.0
    ranks = torch.arange(1, m + 1, dtype=v.dtype, device=v.device)
    condition = sorted_v - cumulative / ranks > 0
    # Largest rank satisfying the condition (the condition holds on a prefix).
    rho = condition.to(v.dtype).cumsum(dim=-1).argmax(dim=-1, keepdim=True)
    tau = cumulative.gather(-1, rho) / (rho + 1).to(v.dtype)
    return torch.clamp(v - tau, min=0.0)


def _kkt_on_support(returns, hessian, support):
    """Solve the equality-constrained QP restricted to ``support`` (differentiable).

    Minimises ``0.5 x^T Q x - p^T x`` subject to ``sum x = 1`` and ``x_i = 0`` off the
    support, by solving the KKT system

        [Q_SS  1] [x_S]   [p_S]
        [1^T   0] [nu ] = [ 1 ]

    written for the whole batch at once with identity rows for the inactive coordinates.
    Returns ``x`` (batch, m) and the multiplier ``nu`` (batch,).
    """
    batch, m = returns.shape
    mask = support.to(returns.dtype)
    eye = torch.eye(m, dtype=returns.dtype, device=returns.device)
    outer = mask.unsqueeze(-1) * mask.unsqueeze(-2)
    system = torch.zeros(batch, m + 1, m + 1, dtype=returns.dtype, device=returns.device)
    system[:, :m, :m] = hessian * outer + eye * (1.0 - mask).unsqueeze(-1)
    system[:, :m, m] = mask
    system[:, m, :m] = mask
    rhs = torch.cat(
        [returns * mask, torch.ones(batch, 1, dtype=returns.dtype, device=returns.device)], dim=1
    )
    solution = torch.linalg.solve(system, rhs.unsqueeze(-1)).squeeze(-1)
    return solution[:, :m], solution[:, m]


def solve_simplex_qp(returns, hessian, n_iter=200, n_refine=20, tol=None):
    r"""Batched solution of :math:`\min_x \tfrac12 x^\top Q x - p^\top x` on the simplex.

    Used for the Markowitz portfolio with :math:`Q = 2\lambda\Sigma`. Two stages:

    1. *Support identification* (no gradient): accelerated projected gradient (FISTA with
       adaptive restart) with step :math:`1/\|Q\|_2`, followed by primal-dual active-set
       corrections: solve the KKT system on the current support, drop coordinates that
       came out negative and add those whose dual multiplier is negative, until the
       support no longer changes.
    2. *Differentiable polish*: the KKT system on the final support is solved once more
       with autograd enabled. Because the solution on a fixed support is an affine function
       of :math:`p`, the autograd graph of this single linear solve is exactly the implicit
       derivative of the QP solution (KKT conditions on the active set), without unrolling
       the iterations of stage 1.

    Parameters
    ----------
    returns : Tensor of shape (batch, m)
        The linear coefficients :math:`p` (predicted returns); may require grad.
    hessian : Tensor of shape (m, m) or (batch, m, m)
        Symmetric positive definite :math:`Q`.
    n_iter : int, default=200
        Accelerated projected-gradient iterations of stage 1.
    n_refine : int, default=20
        Maximum number of active-set corrections.
    tol : float, optional
        Tolerance on multipliers and on negative weights; defaults to a dtype-dependent value.

    Returns
    -------
    x : Tensor of shape (batch, m)
        Optimal weights, differentiable with respect to ``returns``.
    converged : Tensor of shape (batch,), bool
        Whether the KKT conditions hold at the returned point.
    """
    batch, m = returns.shape
    if hessian.dim() == 2:
        hessian = hessian.expand(batch, m, m)
    if tol is None:
        tol = 1e-9 if returns.dtype == torch.float64 else 1e-5
    p = returns.detach()
    with torch.no_grad():
        lipschitz = torch.linalg.matrix_norm(hessian, ord=2).clamp_min(1e-12)  # (batch,)
        step = (1.0 / lipschitz).unsqueeze(-1)
        x = torch.full_like(p, 1.0 / m)
        y = x.clone()
        t = torch.ones(batch, 1, dtype=p.dtype, device=p.device)
        for _ in range(n_iter):
            grad = torch.einsum("bij,bj->bi", hessian, y) - p
            x_new = project_simplex(y - step * grad)
            # Adaptive restart (O'Donoghue and Candes): drop momentum when it points uphill.
            restart = ((y - x_new) * (x_new - x)).sum(-1, keepdim=True) > 0
            t_new = torch.where(restart, torch.ones_like(t), 0.5 * (1 + torch.sqrt(1 + 4 * t * t)))
            momentum = torch.where(restart, torch.zeros_like(t), (t - 1) / t_new)
            y = x_new + momentum * (x_new - x)
            x, t = x_new, t_new

        support = x > tol
        # Guarantee a non-empty support (the simplex needs at least one coordinate).
        top = torch.nn.functional.one_hot(x.argmax(-1), m).bool()
        support = support | (~support.any(-1, keepdim=True) & top)
        converged = torch.zeros(batch, dtype=torch.bool, device=p.device)
        for _ in range(n_refine):
            x_s, nu = _kkt_on_support(p, hessian, support)
            grad = torch.einsum("bij,bj->bi", hessian, x_s) - p
            multipliers = grad + nu.unsqueeze(-1)  # >= 0 off the support at the optimum
            negative = support & (x_s < -tol)
            violated = ~support & (multipliers < -tol)
            converged = ~(negative.any(-1) | violated.any(-1))
            if bool(converged.all()):
                break
            new_support = (support & ~negative) | violated
            new_support = new_support | (~new_support.any(-1, keepdim=True) & top)
            support = torch.where(converged.unsqueeze(-1), support, new_support)
    x_opt, _ = _kkt_on_support(returns, hessian, support)
    # Rows whose active set did not settle fall back on the projected-gradient iterate
    # (feasible, but without the implicit derivative).
    fallback = ~converged.unsqueeze(-1)
    x_opt = torch.where(fallback, x.to(x_opt.dtype), x_opt)
    return x_opt, converged


# --------------------------------------------------------------------------------------
# Budget allocation: coverage objective on a capped simplex
# --------------------------------------------------------------------------------------
def project_capped_simplex(v, budget):
    r"""Projection of each row of ``v`` onto :math:`\{0 \le z \le 1, \sum_i z_i \le B\}`.

    The projection is :math:`z = \mathrm{clip}(v - \tau, 0, 1)` with :math:`\tau = 0` when
    that point already meets the budget, and otherwise the :math:`\tau > 0` that makes
    :math:`\sum_i z_i = B`. The sum is piecewise linear and decreasing in :math:`\tau` with
    breakpoints :math:`v_i` and :math:`v_i - 1`, so :math:`\tau` is found exactly by
    sorting the breakpoints and interpolating on the segment where the sum crosses B.

    Parameters
    ----------
    v : Tensor of shape (batch, m)
    budget : float

    Returns
    -------
    z : Tensor of shape (batch, m)
    tau : Tensor of shape (batch, 1)
        The multiplier of the budget constraint (0 where it is inactive).
    """
    needs_threshold = v.clamp(0.0, 1.0).sum(-1, keepdim=True) > budget
    breakpoints, _ = torch.sort(torch.cat([v - 1.0, v], dim=-1), dim=-1)  # (batch, 2m)
    sums = (v.unsqueeze(1) - breakpoints.unsqueeze(-1)).clamp(0.0, 1.0).sum(-1)  # decreasing
    # Last breakpoint whose sum is still >= budget; the crossing is on the next segment.
    k = ((sums >= budget).sum(-1, keepdim=True) - 1).clamp(0, breakpoints.shape[-1] - 2)
    left, right = breakpoints.gather(-1, k), breakpoints.gather(-1, k + 1)
    s_left, s_right = sums.gather(-1, k), sums.gather(-1, k + 1)
    drop = (s_left - s_right).clamp_min(torch.finfo(v.dtype).tiny)
    tau = left + (s_left - budget) * (right - left) / drop
    tau = torch.where(needs_threshold, tau.clamp_min(0.0), torch.zeros_like(tau))
    return (v - tau).clamp(0.0, 1.0), tau


def _others_product(factors, exclude):
    """Products over the item axis of ``factors`` (batch, m, d) leaving out some items.

    ``exclude`` is a boolean (..., m) mask broadcast against the item axis; computing the
    product with the excluded factors set to 1 avoids dividing by factors that may be 0.
    """
    return torch.where(exclude, torch.ones_like(factors), factors).prod(dim=-2)


def coverage_objective(z, y, weights):
    r"""Coverage :math:`f(z, y) = \sum_t w_t \bigl(1 - \prod_j (1 - z_j y_{jt})\bigr)`.

    Parameters
    ----------
    z : Tensor of shape (batch, m)
    y : Tensor of shape (batch, m, d)
    weights : Tensor of shape (d,)

    Returns
    -------
    Tensor of shape (batch,)
    """
    miss = 1.0 - z.unsqueeze(-1) * y
    return ((1.0 - miss.prod(dim=1)) * weights).sum(-1)


def coverage_gradient(z, y, weights):
    r""":math:`\partial f / \partial z_k = \sum_t w_t y_{kt} \prod_{j \ne k} (1 - z_j y_{jt})`.

    Returns a tensor of shape (batch, m).
    """
    m = z.shape[-1]
    miss = 1.0 - z.unsqueeze(-1) * y  # (batch, m, d)
    eye = torch.eye(m, dtype=torch.bool, device=z.device)  # row k excludes item k
    others = _others_product(miss.unsqueeze(1), eye.view(1, m, m, 1))  # (batch, m, d)
    return (weights * y * others).sum(-1)


def coverage_hessian(z, y, weights):
    r"""Hessian in z: :math:`-\sum_t w_t y_{kt} y_{lt} \prod_{j \ne k,l}(1 - z_j y_{jt})`.

    Zero on the diagonal (the objective is multilinear). Returns (batch, m, m).
    """
    m = z.shape[-1]
    miss = 1.0 - z.unsqueeze(-1) * y  # (batch, m, d)
    eye = torch.eye(m, dtype=torch.bool, device=z.device)
    exclude = eye.view(m, 1, m) | eye.view(1, m, m)  # (k, l, j)
    others = _others_product(miss.view(-1, 1, 1, m, y.shape[-1]), exclude.unsqueeze(-1))
    hess = -(weights * y.unsqueeze(2) * y.unsqueeze(1) * others).sum(-1)
    return hess * (~eye).to(hess.dtype)


def _regularised_gradient(z, y, weights, smoothing):
    grad = coverage_gradient(z, y, weights)
    return grad - smoothing * z if smoothing else grad


def _coverage_pga(y, weights, budget, lr, n_iter, smoothing):
    """Projected gradient ascent on the (regularised) coverage objective, no autograd."""
    batch, m, _ = y.shape
    z = torch.full((batch, m), min(1.0, budget / m), dtype=y.dtype, device=y.device)
    for _ in range(n_iter):
        step = z + lr * _regularised_gradient(z, y, weights, smoothing)
        z, _ = project_capped_simplex(step, budget)
    return z


def _projection_jacobian(z, tau, tol):
    r"""Jacobian of the capped-simplex projection at the point that maps to ``z``.

    With F the set of coordinates strictly inside (0, 1): :math:`D = \mathrm{diag}(1_F)`
    when the budget is inactive, and :math:`D - D 1 1^\top D / |F|` when it is active
    (:math:`\tau > 0`): moving along the face must keep the sum fixed.
    """
    free = ((z > tol) & (z < 1.0 - tol)).to(z.dtype)
    jac = torch.diag_embed(free)
    active = (tau.squeeze(-1) > 0).to(z.dtype)
    n_free = free.sum(-1).clamp_min(1.0)
    correction = free.unsqueeze(-1) * free.unsqueeze(-2) / n_free.view(-1, 1, 1)
    return jac - active.view(-1, 1, 1) * correction


class _CoverageFixedPoint(torch.autograd.Function):
    r"""z*(y): fixed point of :math:`T(z, y) = P(z + \eta \nabla_z f_\gamma(z, y))`.

    :math:`f_\gamma(z, y) = f(z, y) - \tfrac{\gamma}{2}\|z\|^2` (``smoothing`` = gamma).

    Backward (implicit function theorem): with :math:`J = \partial_z T = D(I + \eta H)` and
    :math:`\partial_y T = \eta D \, \partial_y \nabla_z f`,
    :math:`\bar y = (\partial_y T)^\top u` where :math:`(I - J)^\top u = \bar z`; the
    m-by-m system is solved densely (m is the number of channels).
    """

    @staticmethod
    def forward(ctx, y, weights, budget, lr, n_iter, smoothing, tol):
        z = _coverage_pga(y, weights, budget, lr, n_iter, smoothing)
        step = z + lr * _regularised_gradient(z, y, weights, smoothing)
        _, tau = project_capped_simplex(step, budget)
        ctx.save_for_backward(y, weights, z, tau)
        ctx.lr, ctx.tol, ctx.smoothing = lr, tol, smoothing
        return z

    @staticmethod
    def backward(ctx, grad_z):
        y, weights, z, tau = ctx.saved_tensors
        lr, tol, smoothing = ctx.lr, ctx.tol, ctx.smoothing
        m = z.shape[-1]
        proj_jac = _projection_jacobian(z, tau, tol)
        eye = torch.eye(m, dtype=z.dtype, device=z.device)
        hessian = coverage_hessian(z, y, weights) - smoothing * eye
        jac_z = proj_jac @ (eye + lr * hessian)
        system = (eye - jac_z).transpose(-1, -2)
        u, info = torch.linalg.solve_ex(system, grad_z.unsqueeze(-1))
        if bool((info != 0).any()):
            # A singular system (degenerate face): least squares keeps the gradient finite.
            u = torch.linalg.lstsq(system, grad_z.unsqueeze(-1)).solution
        v = lr * (proj_jac.transpose(-1, -2) @ u).squeeze(-1)  # = lr * D^T u
        with torch.enable_grad():
            y_local = y.detach().requires_grad_(True)
            grad_f = coverage_gradient(z, y_local, weights)
            (grad_y,) = torch.autograd.grad(grad_f, y_local, grad_outputs=v)
        return grad_y, None, None, None, None, None, None


def solve_coverage(y, weights, budget, lr, n_iter, smoothing=0.0, tol=None):
    r"""Maximise the coverage objective over the capped simplex, differentiably in ``y``.

    Solves :math:`\max_z f(z, y) - \tfrac{\gamma}{2}\|z\|^2` subject to
    :math:`0 \le z \le 1, \sum_j z_j \le B`. With :math:`\gamma = 0` the maximisers of
    the multilinear coverage objective sit at vertices, where the derivative in ``y`` is 0;
    :math:`\gamma > 0` makes the problem strongly concave on the faces and the solution a
    smooth function of ``y``.

    Parameters
    ----------
    y : Tensor of shape (batch, m, d)
        Coverage probabilities (may require grad).
    weights : Tensor of shape (d,)
    budget : float
    lr : float
        Step size of projected gradient ascent.
    n_iter : int
    smoothing : float, default=0.0
        The quadratic regularisation :math:`\gamma`.
    tol : float, optional
        Tolerance that decides which coordinates are strictly inside (0, 1).

    Returns
    -------
    Tensor of shape (batch, m)
    """
    if tol is None:
        tol = 1e-9 if y.dtype == torch.float64 else 1e-5
    return _CoverageFixedPoint.apply(
        y, weights, float(budget), float(lr), int(n_iter), float(smoothing), tol
    )
