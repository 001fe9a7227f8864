r"""Real fine-tuning on a subset of tasks: the ground truth that the estimates approximate.

:class:`SubsetFineTuner` is the set function :math:`F(s)` that
:class:`~sktaskmet.GradientSubsetEstimator` estimates without retraining and that
:func:`~sktaskmet.surrogate.evaluate_subsets` evaluates on many subsets: it copies a
pretrained model, fine-tunes it by full-batch L-BFGS on the weighted tasks, and returns the
mean target loss.
"""

import copy

import numpy as np
import torch

from .._backend import resolve_device, to_tensor, torch_dtype
from .._nn import minimise_lbfgs
from ._indicators import check_subset_weights
from ._jacobians import trainable_parameters
from ._losses import loss_targets, make_loss

__all__ = ["SubsetFineTuner"]


class SubsetFineTuner:
    r"""Fine-tune a pretrained model on a subset of tasks and return its target loss.

    A picklable callable ``F(s)``, meant for
    :func:`~sktaskmet.surrogate.evaluate_subsets`: for the task weights ``s`` (one per task,
    0/1 or in [0, 1], columns in the order of ``numpy.unique(tasks)``) it copies the model
    and minimises, over all trainable parameters, by full-batch L-BFGS,

    .. math::

        \frac{\sum_i s_{t_i}\,\ell(f_\theta(x_i), y_i)}{\sum_i s_{t_i}}
        + \frac{\lambda}{2}\lVert \theta - \theta_0 \rVert^2 ,

    starting from the pretrained parameters :math:`\theta_0`. It returns the mean target
    loss of the fine-tuned model: the ground truth that
    :class:`~sktaskmet.GradientSubsetEstimator` estimates with the same ``loss`` and
    ``penalty``. An empty subset returns the pretrained target loss.

    Parameters
    ----------
    model : torch.nn.Module
        The pretrained model (left unchanged).
    X, y, tasks : array-like
        Training inputs, targets and task labels, as in
        :meth:`~sktaskmet.GradientSubsetEstimator.fit`.
    X_target, y_target : array-like
        The target task.
    loss : {"cross_entropy", "squared_error"} or callable, default="cross_entropy"
        As in :class:`~sktaskmet.GradientSubsetEstimator`.
    penalty : float, default=1e-3
        :math:`\lambda`.
    max_iter : int, default=500
        L-BFGS iterations.
    tol : float, default=1e-9
        L-BFGS tolerance on the gradient's largest entry.
    device : str or torch.device, default="cpu"
        Where the fine-tuning runs. The model is run in the dtype of ``X``.

    Examples
    --------
    >>> from sktaskmet.datasets import make_multitask_digits
    >>> from sktaskmet.surrogate import SubsetFineTuner
    >>> data = make_multitask_digits(random_state=0)
    >>> tuner = SubsetFineTuner(data.model, data.X, data.y, data.tasks,
    ...                         data.X_target, data.y_target, penalty=1e-2)
    >>> loss = tuner([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    """

    def __init__(
        self,
        model,
        X,
        y,
        tasks,
        X_target,
        y_target,
        *,
        loss="cross_entropy",
        penalty=1e-3,
        max_iter=500,
        tol=1e-9,
        device="cpu",
    ):
        self.model = model
        self.X = np.asarray(X)
        self.y = np.asarray(y)
        self.X_target = np.asarray(X_target)
        self.y_target = np.asarray(y_target)
        self.tasks_, self.task_index_ = np.unique(np.asarray(tasks), return_inverse=True)
        if self.task_index_.shape[0] != self.X.shape[0]:
            raise ValueError(
                f"tasks has {self.task_index_.shape[0]} entries, but X has {self.X.shape[0]} rows."
            )
        self.loss = loss
        self.penalty = penalty
        self.max_iter = max_iter
        self.tol = tol
        self.device = device

    def __call__(self, subset):
        """Target loss after fine-tuning on ``subset`` (a vector of task weights)."""
        subset = np.asarray(subset, dtype=self.X.dtype).reshape(-1)
        if subset.shape[0] != len(self.tasks_):
            raise ValueError(
                f"subset has {subset.shape[0]} entries, but there are {len(self.tasks_)} tasks."
            )
        check_subset_weights(subset, "subset")
        device = resolve_device(self.device)
        loss = make_loss(self.loss)
        model = copy.deepcopy(self.model).to(device=device, dtype=torch_dtype(self.X.dtype))
        model.eval()
        X_target = to_tensor(self.X_target, device)
        y_target = loss_targets(to_tensor(self.y_target, device), self.loss)

        weights = subset[self.task_index_]
        total = weights.sum()
        if total > 0:
            keep = weights > 0
            X = to_tensor(self.X[keep], device)
            y = loss_targets(to_tensor(self.y[keep], device), self.loss)
            a = to_tensor(weights[keep] / total, device)
            params = list(trainable_parameters(model).values())
            start = [p.detach().clone() for p in params]

            def objective():
                out = model(X).reshape(X.shape[0], -1)
                data = (a * loss.value(out, y)).sum()
                shift = sum(((p - p0) ** 2).sum() for p, p0 in zip(params, start, strict=True))
                return data + 0.5 * self.penalty * shift

            minimise_lbfgs(params, objective, self.max_iter, self.tol)
        with torch.no_grad():
            out = model(X_target).reshape(X_target.shape[0], -1)
            return float(loss.value(out, y_target).mean())
