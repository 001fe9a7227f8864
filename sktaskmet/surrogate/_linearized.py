r"""Torch numerics of gradient-based subset estimation.

The model is linearised at its pretrained parameters :math:`\theta_0`,

.. math:: f_\theta(x) \approx f_{\theta_0}(x) + J(x)\,(\theta - \theta_0),

where :math:`J(x)` is the Jacobian of the outputs with respect to the trainable parameters
(one row per output, one column per parameter). The Jacobians of every example are computed
once (in closed form from layer inputs and backpropagated output gradients when the trainable
parameters are those of linear layers, otherwise batched with :func:`torch.func.vmap` over
:func:`torch.func.jacrev`), and multiplied by a random projection :math:`P` (``n_params x d``,
entries of variance ``1/d``) so that each example keeps a ``C x d`` matrix
:math:`G(x) = J(x) P`. Fine-tuning on a subset of tasks then becomes the small convex problem

.. math::

    \min_w \sum_i a_i\, \ell\big(f_{\theta_0}(x_i) + G(x_i) w,\ y_i\big)
    + \frac{\lambda}{2} \lVert w \rVert^2 ,

with :math:`a_i` the normalised weight of the task that example :math:`i` belongs to. It is
solved for many subsets at once by a batched damped Newton method (conjugate gradients
preconditioned by the Hessian at ``w = 0``, or Cholesky solves of ``d x d`` systems; Armijo
backtracking per subset; subsets leave the batch as they converge).

The numerics live in one module per job: :mod:`._losses` (the per-example losses),
:mod:`._jacobians` and :mod:`._projection` (the projected Jacobians), :mod:`._hessians`,
:mod:`._conjugate_gradient` and :mod:`._newton` (the subset solves); this module evaluates
the linearised model. Input checking lives in the estimator.
"""

import torch

from ._hessians import exact_subset_hessians

__all__ = ["LinearizedObjective", "subset_example_weights", "target_losses"]


def subset_example_weights(subset_weights, task_index):
    r"""Normalised weights of the examples in each subset, and each task's share.

    With :math:`s_{bk}` the weight of task :math:`k` in subset :math:`b` and :math:`t_i`
    the task of example :math:`i`, the example weights are
    :math:`a_{bi} = s_{b t_i} / N_b` and the task shares :math:`s_{bk} / N_b`, where
    :math:`N_b = \sum_i s_{b t_i}`. An empty subset (:math:`N_b = 0`) trains on nothing: its
    weights are all 0, so its data term vanishes and ``w = 0`` solves its problem.

    Parameters
    ----------
    subset_weights : torch.Tensor of shape (B, n_tasks)
    task_index : torch.Tensor of shape (n,), int64

    Returns
    -------
    example_weights : torch.Tensor of shape (B, n)
    task_share : torch.Tensor of shape (B, n_tasks)
    """
    # tiny, the smallest positive normal number of the dtype, only keeps the discarded
    # branch of torch.where (an empty subset, total 0) free of 0 / 0.
    tiny = torch.finfo(subset_weights.dtype).tiny
    example_weights = subset_weights[:, task_index]
    totals = example_weights.sum(1, keepdim=True)
    example_weights = torch.where(totals > 0, example_weights / totals.clamp_min(tiny), 0.0)
    task_share = torch.where(totals > 0, subset_weights / totals.clamp_min(tiny), 0.0)
    return example_weights, task_share


class LinearizedObjective:
    r"""The subset objectives of linearised fine-tuning, on shared projected Jacobians.

    For the parameter changes ``w`` of shape ``(b, d)`` (one row per subset) and example
    weights ``a`` of shape ``(b, n)``,

    .. math::

        \mathcal L_b(w_b) = \sum_i a_{bi}\, \ell(o_i + G_i w_b,\ y_i)
        + \frac{\lambda}{2} \lVert w_b \rVert^2 ,

    with :math:`o_i` the pretrained outputs and :math:`G_i` the projected Jacobians.

    Parameters
    ----------
    jacobians : torch.Tensor of shape (n, C, d)
    outputs : torch.Tensor of shape (n, C)
    y : torch.Tensor with n rows
    loss : loss object of :func:`~._losses.make_loss`
    penalty : float
        :math:`\lambda`.
    """

    def __init__(self, jacobians, outputs, y, loss, penalty):
        self.jacobians = jacobians
        self.outputs = outputs
        self.y = y
        self.loss = loss
        self.penalty = penalty
        self.n_samples, self.n_outputs = outputs.shape
        self.dim = jacobians.shape[-1]
        # Plain matrix products on the (n * C, d) matrix: no layout copies of the results.
        self._flat = jacobians.reshape(self.n_samples * self.n_outputs, self.dim)

    def apply_jacobians(self, v):
        """``G_i v_b`` for every example: (b, d) -> (b, n, C)."""
        return (v @ self._flat.T).view(v.shape[0], self.n_samples, self.n_outputs)

    def apply_transposed(self, u):
        """``sum_i G_i^T u_bi``: (b, n, C) -> (b, d)."""
        return u.reshape(u.shape[0], self.n_samples * self.n_outputs) @ self._flat

    def value(self, w, weights):
        """Objective values (b,) and the linearised outputs (b, n, C) at ``w``."""
        out = self.outputs + self.apply_jacobians(w)
        data = (weights * self.loss.value(out, self.y)).sum(1)
        return data + 0.5 * self.penalty * (w * w).sum(1), out

    def gradient(self, w, out, weights):
        """Gradients (b, d) at ``w``, whose linearised outputs are ``out``."""
        grad_out = self.loss.grad(out, self.y) * weights.unsqueeze(-1)
        return self.apply_transposed(grad_out) + self.penalty * w

    def hessian_product(self, out, weights):
        """``hvp(v, rows)``: the Hessians at outputs ``out`` applied to ``v``.

        ``rows`` (an index tensor, or None for all) selects the subsets that ``v`` (shape
        ``(len(rows), d)``) belongs to, as :func:`~._conjugate_gradient.preconditioned_cg`
        asks.
        """
        curvature = self.loss.hessian_operator(out, self.y)

        def hvp(v, rows):
            u = self.apply_jacobians(v)
            selected = weights if rows is None else weights[rows]
            hu = curvature(u, rows) * selected.unsqueeze(-1)
            return self.apply_transposed(hu) + self.penalty * v

        return hvp

    def hessians(self, out, weights):
        """The Hessians (b, d, d) at outputs ``out``, formed."""
        eye = torch.eye(self.dim, dtype=self._flat.dtype, device=self._flat.device)
        hess = exact_subset_hessians(self.jacobians, out, self.y, weights, self.loss)
        return hess + self.penalty * eye


def target_losses(solution, jacobians, outputs, y, loss):
    """Mean target loss of the linearised model for each subset's solution: shape (B,)."""
    out = outputs + torch.einsum("icd,bd->bic", jacobians, solution)
    return loss.value(out, y).mean(1)
