"""First-order influence of removing a task, on the gradient estimator's projected gradients.

The influence-function baseline of task attribution (Koh and Liang, 2017, applied to the
examples of a task), in the linearised, projected model that
:class:`~sktaskmet.GradientSubsetEstimator` fits. With task weights :math:`s`, the
fine-tuned change :math:`\\hat w_s` minimises

.. math::

    \\mathcal L_s(w) = \\frac{1}{N_s} \\sum_i s_{t_i}\\, \\ell_i(w)
    + \\frac{\\lambda}{2} \\|w\\|^2, \\qquad N_s = \\sum_i s_{t_i},

with :math:`\\ell_i(w) = \\ell(f_{\\theta_0}(x_i) + G_i w, y_i)`. Differentiating the
optimality condition :math:`\\nabla \\mathcal L_s(\\hat w_s) = 0` in :math:`s_k` at the base
set :math:`b` (where the mean data gradient equals :math:`-\\lambda \\hat w_b`) gives

.. math::

    \\frac{\\partial \\hat w}{\\partial s_k} = -H^{-1}\\,
    \\frac{g_k + n_k \\lambda \\hat w_b}{N_b}, \\qquad
    g_k = \\sum_{i \\in k} \\nabla \\ell_i(\\hat w_b),

with :math:`n_k` the number of examples of task :math:`k` and :math:`H = \\nabla^2
\\mathcal L_b(\\hat w_b) + \\delta I` the (damped, :math:`\\delta \\ge 0`) Hessian, exact in
the projected space: :math:`\\frac{1}{N_b} \\sum_i b_{t_i} G_i^\\top \\nabla^2 \\ell_i G_i
+ \\lambda I`. The target loss :math:`F(w)` then changes by
:math:`\\partial F / \\partial s_k = \\nabla F(\\hat w_b)^\\top \\partial \\hat w / \\partial s_k`,
and the first-order leave-one-out effect of task :math:`k` is

.. math::

    I_k = b_k\\, \\frac{\\partial F}{\\partial s_k}
    \\approx F(b) - F(b - b_k e_k),

the same orientation as a surrogate's ``attribution``: positive when task :math:`k` raises
the target loss (a harmful task), 0 for a task absent from the base set.
"""

import torch

__all__ = ["task_influence"]


def task_influence(fitted, solution, base, loss, penalty, damping):
    """First-order leave-one-out influence of every task on the mean target loss.

    Parameters
    ----------
    fitted : dict of Tensor
        The estimator's tensors (``jacobians`` (n, C, d), ``outputs`` (n, C), ``y``,
        ``task_index`` (n,), ``target_jacobians``, ``target_outputs``, ``y_target``).
    solution : Tensor of shape (d,)
        :math:`\\hat w_b`, the solution of the base set's problem.
    base : Tensor of shape (n_tasks,)
        Task weights of the base set (not all zero).
    loss : loss object of ``_losses.make_loss``
    penalty : float
        :math:`\\lambda`.
    damping : float
        :math:`\\delta`, added to the Hessian's diagonal.

    Returns
    -------
    influence : Tensor of shape (n_tasks,)
    """
    jac, task_index = fitted["jacobians"], fitted["task_index"]
    n_tasks, d = base.shape[0], jac.shape[-1]
    example_weights = base[task_index]
    total = example_weights.sum()
    out = fitted["outputs"] + torch.einsum("icd,d->ic", jac, solution)
    per_example = torch.einsum("ic,icd->id", loss.grad(out, fitted["y"]), jac)  # grad l_i
    task_grads = torch.zeros(n_tasks, d, dtype=jac.dtype, device=jac.device)
    task_grads.index_add_(0, task_index, per_example)
    task_sizes = torch.bincount(task_index, minlength=n_tasks).to(jac.dtype)

    # Hessian of the base objective at its solution: sum_i w_i G_i^T (d2 l_i) G_i + lambda I.
    curvature = loss.hessian(out, fitted["y"])  # (n, C, C)
    weighted = (
        torch.einsum("icj,ijd->icd", curvature, jac) * (example_weights / total)[:, None, None]
    )
    flat = jac.reshape(-1, d)
    hessian = flat.T @ weighted.reshape(-1, d)
    hessian = 0.5 * (hessian + hessian.T)
    hessian = hessian + (penalty + damping) * torch.eye(d, dtype=jac.dtype, device=jac.device)

    target_out = fitted["target_outputs"] + torch.einsum(
        "icd,d->ic", fitted["target_jacobians"], solution
    )
    target_grad = (
        torch.einsum(
            "ic,icd->d", loss.grad(target_out, fitted["y_target"]), fitted["target_jacobians"]
        )
        / target_out.shape[0]
    )
    direction = torch.linalg.solve(hessian, target_grad)  # H^{-1} grad F
    moved = (task_grads + task_sizes[:, None] * penalty * solution[None, :]) / total
    return -base * (moved @ direction)
