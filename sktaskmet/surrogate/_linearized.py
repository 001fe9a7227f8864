"""Torch numerics of gradient-based subset estimation.

The model is linearised at its pretrained parameters :math:`\\theta_0`,

.. math:: f_\\theta(x) \\approx f_{\\theta_0}(x) + J(x)\\,(\\theta - \\theta_0),

where :math:`J(x)` is the Jacobian of the outputs with respect to the trainable parameters
(one row per output, one column per parameter). The Jacobians of every example are computed
once (in closed form from layer inputs and backpropagated output gradients when the trainable
parameters are those of linear layers, otherwise batched with :func:`torch.func.vmap` over
:func:`torch.func.jacrev`), and multiplied by a random projection :math:`P` (``n_params x d``,
entries of variance ``1/d``) so that each example keeps a ``C x d`` matrix
:math:`G(x) = J(x) P`. Fine-tuning on a subset of tasks then becomes the small convex problem

.. math::

    \\min_w \\sum_i a_i\\, \\ell\\big(f_{\\theta_0}(x_i) + G(x_i) w,\\ y_i\\big)
    + \\frac{\\lambda}{2} \\lVert w \\rVert^2 ,

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

__all__ = ["target_losses"]


def target_losses(solution, jacobians, outputs, y, loss):
    """Mean target loss of the linearised model for each subset's solution: shape (B,)."""
    out = outputs + torch.einsum("icd,bd->bic", jacobians, solution)
    return loss.value(out, y).mean(1)
