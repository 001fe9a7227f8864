r"""The decision-focused surrogate losses of linear decision problems (torch only).

A linear decision problem takes the decision :math:`w^\star(c) = \arg\min_{w \in W}
s\,c^\top w` (sense :math:`s = 1` minimises, :math:`s = -1` maximises) and has regret
:math:`s\,(c^\top w^\star(\hat c) - z^\star(c))` with :math:`z^\star(c) = c^\top
w^\star(c)`. The decision is piecewise constant in the predicted costs :math:`\hat c`, so
its derivative is zero almost everywhere; each loss below replaces it with a surrogate
that has informative gradients. All take batches of cost vectors of shape (batch, d), a
``solve`` callable returning optimal solutions (batch, d) without a graph, and return one
loss per instance, shape (batch,). SPO+, PFYL, the perturbed regret, NCE and MSE also
give, with ``with_gradient=True``, the gradient of each instance's loss in its predicted
costs from the closed form (for the perturbed regret, its score-function estimate), shape
(batch, d): training steps then need no autograd graph. The formulas and their signs for
maximisation follow PyEPO (Tang and Khalil, 2022), so values and gradients agree with it
number for number.
"""

import torch

__all__ = [
    "spo_plus_loss",
    "perturbed_fenchel_young_loss",
    "perturbed_optimizer_loss",
    "perturbed_regret_loss",
    "blackbox_loss",
    "noise_contrastive_loss",
    "squared_error_loss",
]

# PyEPO's guard against division by zero in its gradient estimators.
_EPS = 1e-8


def _dot(a, b):
    return (a * b).sum(-1)


def without_graph(tensor):
    """``tensor.detach()`` when it carries a graph, else ``tensor`` itself.

    Closed-form training steps call the surrogates and solvers with tensors that have no
    graph; skipping the detach there saves a dispatched operation per call.
    """
    return tensor.detach() if tensor.requires_grad else tensor


def _signed(sense, value):
    # sense is +1 or -1: a multiplication by +1 would be an operation for nothing
    return value if sense == 1 else -value


def spo_plus_loss(pred, true, true_solution, solve, sense, with_gradient=False):
    r"""SPO+ (Elmachtoub and Grigas, 2022), a convex upper bound of the regret.

    .. math::
        \ell(\hat c, c) = s\,\bigl(2 \hat c^\top w^\star(c) - z^\star(c)
            - (2\hat c - c)^\top w^\star(2\hat c - c)\bigr)
        = s\,(2\hat c - c)^\top \bigl(w^\star(c) - w^\star(2\hat c - c)\bigr),

    .. math::
        \nabla_{\hat c}\,\ell = 2 s\,\bigl(w^\star(c) - w^\star(2\hat c - c)\bigr).

    The second form, from :math:`z^\star(c) = c^\top w^\star(c)`, is the one computed: it
    shares the difference of the two solutions with the gradient, five tensor operations
    fewer per call than the first (which a closed-form training step of a linear model
    feels). One solve per instance, of the perturbed cost :math:`2\hat c - c`.
    """
    shifted = 2 * pred - true
    solution = solve(without_graph(shifted))
    difference = true_solution - solution
    # Danskin: the solution is constant in pred, so the graph gives 2 s (w*(c) - w*(2p - c))
    value = _signed(sense, _dot(shifted, difference))
    if not with_gradient:
        return value
    return value, (2 * sense) * difference


def perturbed_fenchel_young_loss(
    pred, true_solution, noise, sigma, solve, sense, with_gradient=False
):
    r"""Perturbed Fenchel-Young loss (Berthet et al., 2020), additive Gaussian noise.

    With :math:`\xi_1, \dots, \xi_n \sim N(0, I)` and :math:`w_k = w^\star(\hat c + \sigma
    \xi_k)`, :math:`F(\hat c) = \frac1n\sum_k (\hat c + \sigma\xi_k)^\top w_k` estimates the
    smoothed optimal value and :math:`\bar w = \frac1n\sum_k w_k` its gradient:

    .. math::
        \ell = s\,\bigl(\hat c^\top w^\star(c) - F(\hat c)\bigr), \qquad
        \nabla_{\hat c}\,\ell = s\,\bigl(w^\star(c) - \bar w\bigr).

    ``noise`` has shape (batch, n, d); n solves per instance.
    """
    solutions = _perturbed_solutions(pred, noise, sigma, solve)
    mean_solution = solutions.mean(dim=1)
    noise_term = sigma * torch.einsum("bnd,bnd->bn", noise, solutions).mean(dim=1)
    # F = pred . mean_solution + noise_term; the graph carries only pred . (w* - mean_sol).
    difference = true_solution - mean_solution
    value = _signed(sense, _dot(pred, difference) - noise_term)
    return (value, _signed(sense, difference)) if with_gradient else value


def _score_function_gradient(noise, reward, sigma):
    r"""Gaussian score-function estimate of :math:`\nabla_{\hat c} E_\xi[r(\hat c + \sigma\xi)]`.

    :math:`\frac{1}{n\sigma}\sum_k \xi_k\,(r_k - b_k)` from the rewards :math:`r_k` of the
    n perturbations (shape (batch, n)), with the leave-one-out baseline :math:`b_k`, the
    mean of the other rewards: unbiased (:math:`b_k` does not depend on :math:`\xi_k`) and
    of lower variance than no baseline, as PyEPO's ``perturbedOpt``.
    """
    n = reward.shape[1]
    if n > 1:
        # r_k - mean of the others = n / (n - 1) (r_k - mean of all)
        reward = (reward - reward.mean(dim=1, keepdim=True)) * (n / (n - 1))
    return torch.einsum("bnd,bn->bd", noise, reward) / (n * sigma + _EPS)


def _perturbed_solutions(pred, noise, sigma, solve):
    r"""Solutions :math:`w^\star(\hat c + \sigma\xi_k)`, shape (batch, n, d): n solves each."""
    perturbed = without_graph(pred).unsqueeze(1) + sigma * noise
    return solve(perturbed.reshape(-1, pred.shape[-1])).reshape(perturbed.shape)


class _PerturbedMean(torch.autograd.Function):
    """Mean perturbed solution with the score-function gradient of Berthet et al."""

    @staticmethod
    def forward(ctx, pred, noise, solutions, sigma):
        ctx.save_for_backward(noise, solutions)
        ctx.sigma = sigma
        return solutions.mean(dim=1)

    @staticmethod
    def backward(ctx, grad_output):
        noise, solutions = ctx.saved_tensors
        reward = torch.einsum("bnd,bd->bn", solutions, grad_output)
        return _score_function_gradient(noise, reward, ctx.sigma), None, None, None


def perturbed_optimizer_loss(pred, true_solution, noise, sigma, solve):
    r"""Differentiable perturbed optimiser (DPO, Berthet et al., 2020) with a squared loss.

    The expected perturbed solution :math:`\bar w(\hat c) = E_\xi[w^\star(\hat c +
    \sigma\xi)]` is smooth in :math:`\hat c`; its Jacobian-vector products are estimated
    by :math:`J^\top g \approx \frac{1}{n\sigma}\sum_k \xi_k\, (w_k^\top g - b)` with the
    leave-one-out baseline :math:`b` (as PyEPO's ``perturbedOpt``). The loss is the mean
    squared distance to the true solution, :math:`\frac1d \lVert \bar w - w^\star(c)
    \rVert^2`, the pairing of PyEPO's tutorials.
    """
    solutions = _perturbed_solutions(pred, noise, sigma, solve)
    mean_solution = _PerturbedMean.apply(pred, noise, solutions, sigma)
    return ((mean_solution - true_solution) ** 2).mean(-1)


def perturbed_regret_loss(
    pred, true, true_objective, noise, sigma, solve, sense, with_gradient=False
):
    r"""Regret of the differentiable perturbed optimiser's decision (Berthet et al., 2020).

    The regret itself, smoothed by the perturbations: with :math:`w_k = w^\star(\hat c +
    \sigma\xi_k)`, :math:`\xi_k \sim N(0, I)`,

    .. math::
        \ell = s\,\bigl(c^\top \bar w(\hat c) - z^\star(c)\bigr), \qquad
        \bar w(\hat c) = \frac1n \sum_k w_k,

    an unbiased estimate of the expected regret of the randomised decision
    :math:`w^\star(\hat c + \sigma\xi)`, which is smooth in :math:`\hat c` (its
    derivative does not vanish where the decision is piecewise constant). Its gradient is
    the score-function estimate with the rewards :math:`r_k = s\,c^\top w_k`,

    .. math::
        \nabla_{\hat c}\,\ell \approx \frac{1}{n\sigma}\sum_k \xi_k\,(r_k - b_k),

    :math:`b_k` the mean of the other rewards (leave-one-out baseline). Unlike SPO+ and
    PFYL this is the decision's own regret, not a bound or a proxy of it, at the price of
    a noisier gradient (its variance grows with d / (n sigma^2)). ``noise`` has shape
    (batch, n, d); n solves per instance. The autograd path (``_PerturbedMean``) and
    ``with_gradient`` give the same gradient for the same draws.
    """
    solutions = _perturbed_solutions(pred, noise, sigma, solve)
    if not with_gradient:
        mean_solution = _PerturbedMean.apply(pred, noise, solutions, sigma)
        return _signed(sense, _dot(mean_solution, true) - true_objective)
    rewards = _signed(sense, torch.einsum("bnd,bd->bn", solutions, true))
    value = rewards.mean(dim=1) - _signed(sense, true_objective)
    return value, _score_function_gradient(noise, rewards, sigma)


class _BlackboxSolution(torch.autograd.Function):
    """Solution of the predicted costs with the interpolation gradient of Vlastelica et al."""

    @staticmethod
    def forward(ctx, pred, solution, solve, step, sense):
        ctx.save_for_backward(pred.detach(), solution)
        ctx.solve, ctx.step, ctx.sense = solve, step, sense
        return solution.clone()

    @staticmethod
    def backward(ctx, grad_output):
        pred, solution = ctx.saved_tensors
        moved = pred + ctx.sense * ctx.step * grad_output
        grad = ctx.sense * (ctx.solve(moved) - solution) / (ctx.step + _EPS)
        return grad, None, None, None, None


def blackbox_loss(pred, true, true_objective, step, solve, sense):
    r"""Differentiable black-box solver (DBB, Vlastelica et al., 2020) with the L1 regret.

    The forward pass is the exact solution :math:`w^\star(\hat c)`; the backward pass
    replaces the zero Jacobian by the finite difference of the solver along the incoming
    gradient :math:`g`,
    :math:`\nabla_{\hat c} \approx s\,(w^\star(\hat c + s\lambda g) - w^\star(\hat c)) /
    \lambda`. The loss is :math:`|c^\top w^\star(\hat c) - z^\star(c)|`, the objective
    value pairing of PyEPO's tutorials. Two solves per instance.
    """
    solution = solve(pred.detach())
    decision = _BlackboxSolution.apply(pred, solution, solve, step, sense)
    return (_dot(decision, true) - true_objective).abs()


def noise_contrastive_loss(pred, true_solution, pool, sense, with_gradient=False):
    r"""Noise-contrastive estimation (Mulamba et al., 2021) against a solution pool.

    .. math::
        \ell = \frac{s}{|\Gamma|} \sum_{w \in \Gamma} \bigl(\hat c^\top w^\star(c) -
            \hat c^\top w\bigr)

    over the pool :math:`\Gamma` of known feasible solutions (the optimal solutions of the
    training costs, grown with solutions of predicted costs). No solve in the loss itself.
    Gradient: :math:`s\,(w^\star(c) - \bar w_\Gamma)`, :math:`\bar w_\Gamma` the pool's mean.
    """
    value = _signed(sense, _dot(pred, true_solution) - (pred @ pool.T).mean(dim=-1))
    if not with_gradient:
        return value
    return value, _signed(sense, true_solution - pool.mean(dim=0))


def squared_error_loss(pred, true, with_gradient=False):
    """Mean squared error of the costs, :math:`\\frac1d \\lVert \\hat c - c \\rVert^2`.

    Gradient: :math:`\\frac2d (\\hat c - c)`.
    """
    value = ((pred - true) ** 2).mean(-1)
    return (value, (2.0 / pred.shape[-1]) * (pred - true)) if with_gradient else value
