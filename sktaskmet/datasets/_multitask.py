"""A small multi-task problem built from scikit-learn's bundled digits, and real fine-tuning."""

import copy
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, validate_params

from .._backend import resolve_device, seeded, to_tensor, torch_dtype
from .._nn import make_mlp
from ..surrogate._base import _check_unit_interval
from ..surrogate._jacobians import trainable_parameters
from ..surrogate._losses import loss_targets, make_loss

__all__ = ["make_multitask_digits", "SubsetFineTuner"]


def _minimise_lbfgs(params, closure_value, max_iter, tol):
    """Full-batch L-BFGS with strong Wolfe line search on ``closure_value()``."""
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        history_size=50,
        tolerance_grad=tol,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        value = closure_value()
        value.backward()
        return value

    optimizer.step(closure)


@validate_params(
    {
        "n_clean": [Interval(Integral, 1, None, closed="left")],
        "n_noisy": [Interval(Integral, 0, None, closed="left")],
        "n_duplicated": [Interval(Integral, 0, None, closed="left")],
        "n_restricted": [Interval(Integral, 0, None, closed="left")],
        "task_size": [Interval(Integral, 3, None, closed="left")],
        "noise": [Interval(Real, 0, 1, closed="both")],
        "n_pretrain": [Interval(Integral, 10, None, closed="left")],
        "n_target": [Interval(Integral, 1, None, closed="left")],
        "hidden_layer_sizes": [tuple, list],
        "pretrain_penalty": [Interval(Real, 0, None, closed="left")],
        "pretrain_max_iter": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_multitask_digits(
    *,
    n_clean=4,
    n_noisy=3,
    n_duplicated=2,
    n_restricted=3,
    task_size=60,
    noise=0.6,
    n_pretrain=200,
    n_target=400,
    hidden_layer_sizes=(128,),
    pretrain_penalty=1e-3,
    pretrain_max_iter=60,
    random_state=None,
):
    """A multi-task classification problem from the digits data, with a pretrained MLP.

    The 1797 digits (8 x 8 images, pixel values scaled to [0, 1]) are shuffled and cut into
    disjoint parts: a pretraining set, a held-out target task, and the examples of the
    training tasks. The training tasks come in four kinds, in this order:

    * ``"clean"`` (``n_clean`` tasks): ``task_size`` random digits with their labels.
    * ``"noisy"`` (``n_noisy`` tasks): ``task_size`` random digits whose labels are replaced,
      each with probability ``noise``, by a label drawn uniformly from the ten classes.
      Fine-tuning on them usually hurts the target task.
    * ``"duplicated"`` (``n_duplicated`` tasks): exact copies of clean tasks 0, 1, ... (in
      turn); they add no new information and interact with their originals.
    * ``"restricted"`` (``n_restricted`` tasks): ``task_size`` digits from three consecutive
      classes only (task ``r`` holds classes ``3r, 3r+1, 3r+2`` modulo 10), which biases
      the model towards those classes.

    The target task is a clean held-out set of ``n_target`` digits of all classes. The
    returned ``model`` is an MLP (tanh activations, float64) trained on the
    ``n_pretrain`` pretraining digits by full-batch L-BFGS for ``pretrain_max_iter``
    iterations with an L2 penalty ``pretrain_penalty / 2 * ||theta||^2``: the pretrained
    weights from which subsets of tasks are fine-tuned.

    Parameters
    ----------
    n_clean : int, default=4
        Number of clean tasks.
    n_noisy : int, default=3
        Number of tasks with noisy labels.
    n_duplicated : int, default=2
        Number of tasks that copy a clean task; at most ``n_clean``.
    n_restricted : int, default=3
        Number of class-restricted tasks.
    task_size : int, default=60
        Examples per task.
    noise : float, default=0.6
        Probability that a label of a noisy task is redrawn uniformly.
    n_pretrain : int, default=200
        Digits used to pretrain the model.
    n_target : int, default=400
        Digits of the target task.
    hidden_layer_sizes : tuple of int, default=(128,)
        Hidden widths of the MLP. Wide layers keep fine-tuning close to its linearisation.
    pretrain_penalty : float, default=1e-3
        L2 penalty of pretraining.
    pretrain_max_iter : int, default=60
        L-BFGS iterations of pretraining (few on purpose: the pretrained model leaves room
        for the tasks to help or hurt).
    random_state : int, RandomState instance or None, default=None
        Seeds the split, the label noise and the model initialisation.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        With the fields

        - ``X`` (n_samples, 64), ``y`` (n_samples,), ``tasks`` (n_samples,): the training
          examples of all tasks with their task index in ``range(n_tasks)``.
        - ``X_target`` (n_target, 64), ``y_target`` (n_target,): the target task.
        - ``X_pretrain``, ``y_pretrain``: the pretraining set.
        - ``model``: the pretrained :class:`torch.nn.Sequential` (float64, CPU).
        - ``task_kinds``: list of ``"clean"``, ``"noisy"``, ``"duplicated"`` or
          ``"restricted"``, one per task.
        - ``task_names``: short descriptions, one per task (e.g. ``"duplicate of clean 0"``).

    Raises
    ------
    ValueError
        If the digits do not suffice for the requested sizes, or ``n_duplicated`` exceeds
        ``n_clean``.

    Examples
    --------
    >>> from sktaskmet.datasets import make_multitask_digits
    >>> data = make_multitask_digits(random_state=0)
    >>> data.X.shape, len(data.task_kinds)
    ((720, 64), 12)
    """
    if n_duplicated > n_clean:
        raise ValueError(
            f"n_duplicated={n_duplicated} exceeds n_clean={n_clean}: each duplicated task "
            "copies a distinct clean task."
        )
    rng = check_random_state(random_state)
    digits = load_digits()
    X_all = digits.data / 16.0
    y_all = digits.target.astype(np.int64)
    order = rng.permutation(len(y_all))
    n_free = n_clean + n_noisy
    needed = n_pretrain + n_target + n_free * task_size
    if needed > len(order):
        raise ValueError(
            f"The digits data has {len(order)} images, but the requested sizes need at least "
            f"{needed} (n_pretrain + n_target + (n_clean + n_noisy) * task_size), plus the "
            "restricted tasks' examples."
        )
    pretrain_idx = order[:n_pretrain]
    target_idx = order[n_pretrain : n_pretrain + n_target]
    pool = list(order[n_pretrain + n_target :])

    def take(count, allowed=None):
        chosen = []
        for position, index in enumerate(pool):
            if allowed is None or y_all[index] in allowed:
                chosen.append(position)
            if len(chosen) == count:
                break
        if len(chosen) < count:
            raise ValueError(
                "The digits data has too few unused images for the requested tasks; lower "
                "task_size, n_pretrain or n_target."
            )
        picked = [pool[p] for p in chosen]
        for p in reversed(chosen):
            del pool[p]
        return np.asarray(picked)

    X_parts, y_parts, kinds, names = [], [], [], []
    clean_parts = []
    for k in range(n_clean):
        idx = take(task_size)
        clean_parts.append(idx)
        X_parts.append(X_all[idx])
        y_parts.append(y_all[idx])
        kinds.append("clean")
        names.append(f"clean {k}")
    for k in range(n_noisy):
        idx = take(task_size)
        labels = y_all[idx].copy()
        flip = rng.uniform(size=task_size) < noise
        labels[flip] = rng.randint(0, 10, size=int(flip.sum()))
        X_parts.append(X_all[idx])
        y_parts.append(labels)
        kinds.append("noisy")
        names.append(f"noisy {k} ({noise:.0%} labels redrawn)")
    for k in range(n_duplicated):
        idx = clean_parts[k]
        X_parts.append(X_all[idx])
        y_parts.append(y_all[idx])
        kinds.append("duplicated")
        names.append(f"duplicate of clean {k}")
    for k in range(n_restricted):
        classes = {(3 * k + j) % 10 for j in range(3)}
        idx = take(task_size, allowed=classes)
        X_parts.append(X_all[idx])
        y_parts.append(y_all[idx])
        kinds.append("restricted")
        names.append(f"restricted to classes {sorted(classes)}")

    X = np.concatenate(X_parts)
    y = np.concatenate(y_parts)
    tasks = np.repeat(np.arange(len(kinds)), [len(part) for part in y_parts])

    with seeded(rng):
        model = make_mlp(64, tuple(hidden_layer_sizes), 10, activation="tanh").double()
    X_pre = torch.from_numpy(X_all[pretrain_idx].copy())
    y_pre = torch.from_numpy(y_all[pretrain_idx].copy())
    params = list(model.parameters())

    def pretrain_objective():
        data = torch.nn.functional.cross_entropy(model(X_pre), y_pre)
        return data + 0.5 * pretrain_penalty * sum((p * p).sum() for p in params)

    _minimise_lbfgs(params, pretrain_objective, pretrain_max_iter, 1e-9)
    model.eval()
    for p in params:
        p.grad = None

    return Bunch(
        X=X,
        y=y,
        tasks=tasks,
        X_target=X_all[target_idx],
        y_target=y_all[target_idx],
        X_pretrain=X_all[pretrain_idx],
        y_pretrain=y_all[pretrain_idx],
        model=model,
        task_kinds=kinds,
        task_names=names,
    )


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
    >>> from sktaskmet.datasets import make_multitask_digits, SubsetFineTuner
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
        _check_unit_interval(subset, "subset")
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

            _minimise_lbfgs(params, objective, self.max_iter, self.tol)
        with torch.no_grad():
            out = model(X_target).reshape(X_target.shape[0], -1)
            return float(loss.value(out, y_target).mean())
