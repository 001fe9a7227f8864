"""A small multi-task problem built from scikit-learn's bundled digits, with a pretrained MLP."""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, validate_params

from .._backend import seeded
from .._nn import make_mlp, minimise_lbfgs

__all__ = ["make_multitask_digits"]


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
    pretrain_idx, target_idx, pool = _split_digits(
        rng, len(y_all), n_pretrain, n_target, (n_clean + n_noisy) * task_size
    )
    X, y, tasks, kinds, names = _training_tasks(
        _DigitPool(pool, y_all),
        rng,
        X_all,
        y_all,
        n_clean=n_clean,
        n_noisy=n_noisy,
        n_duplicated=n_duplicated,
        n_restricted=n_restricted,
        task_size=task_size,
        noise=noise,
    )
    model = _pretrained_mlp(
        rng,
        X_all[pretrain_idx],
        y_all[pretrain_idx],
        hidden_layer_sizes,
        pretrain_penalty,
        pretrain_max_iter,
    )
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


# -- the steps of make_multitask_digits, in the order they draw from the random state --


def _split_digits(rng, n_digits, n_pretrain, n_target, n_task_examples):
    """Shuffle the digits and cut off the pretraining set and the target task.

    Returns the indices of the pretraining digits, of the target digits and the list of
    the remaining ones (the pool the training tasks draw from), in shuffled order.
    """
    order = rng.permutation(n_digits)
    needed = n_pretrain + n_target + n_task_examples
    if needed > len(order):
        raise ValueError(
            f"The digits data has {len(order)} images, but the requested sizes need at least "
            f"{needed} (n_pretrain + n_target + (n_clean + n_noisy) * task_size), plus the "
            "restricted tasks' examples."
        )
    pretrain_idx = order[:n_pretrain]
    target_idx = order[n_pretrain : n_pretrain + n_target]
    return pretrain_idx, target_idx, list(order[n_pretrain + n_target :])


class _DigitPool:
    """The unused digits, handed out in shuffled order so that tasks are disjoint."""

    def __init__(self, indices, labels):
        self.indices = indices
        self.labels = labels

    def take(self, count, allowed=None):
        """Remove and return the first ``count`` unused digits (of the ``allowed`` classes)."""
        chosen = []
        for position, index in enumerate(self.indices):
            if allowed is None or self.labels[index] in allowed:
                chosen.append(position)
            if len(chosen) == count:
                break
        if len(chosen) < count:
            raise ValueError(
                "The digits data has too few unused images for the requested tasks; lower "
                "task_size, n_pretrain or n_target."
            )
        picked = [self.indices[p] for p in chosen]
        for p in reversed(chosen):
            del self.indices[p]
        return np.asarray(picked)


def _training_tasks(
    pool, rng, X_all, y_all, *, n_clean, n_noisy, n_duplicated, n_restricted, task_size, noise
):
    """The training tasks, clean, noisy, duplicated and restricted in this order.

    Returns ``X``, ``y`` and ``tasks`` of all their examples, and the kind and the name
    of each task.
    """
    parts = []  # (indices, labels, kind, name) of each task

    for k in range(n_clean):
        idx = pool.take(task_size)
        parts.append((idx, y_all[idx], "clean", f"clean {k}"))
    for k in range(n_noisy):
        idx = pool.take(task_size)
        labels = y_all[idx].copy()
        flip = rng.uniform(size=task_size) < noise
        labels[flip] = rng.randint(0, 10, size=int(flip.sum()))
        parts.append((idx, labels, "noisy", f"noisy {k} ({noise:.0%} labels redrawn)"))
    for k in range(n_duplicated):
        idx = parts[k][0]  # clean task k
        parts.append((idx, y_all[idx], "duplicated", f"duplicate of clean {k}"))
    for k in range(n_restricted):
        classes = {(3 * k + j) % 10 for j in range(3)}
        idx = pool.take(task_size, allowed=classes)
        parts.append((idx, y_all[idx], "restricted", f"restricted to classes {sorted(classes)}"))

    X = np.concatenate([X_all[idx] for idx, _, _, _ in parts])
    y = np.concatenate([labels for _, labels, _, _ in parts])
    tasks = np.repeat(np.arange(len(parts)), [len(labels) for _, labels, _, _ in parts])
    return X, y, tasks, [kind for *_, kind, _ in parts], [name for *_, name in parts]


def _pretrained_mlp(rng, X_pretrain, y_pretrain, hidden_layer_sizes, penalty, max_iter):
    r"""A tanh MLP (float64) initialised from ``rng`` and pretrained by full-batch L-BFGS.

    It minimises the cross-entropy on the pretraining digits plus
    :math:`\frac{\lambda}{2} \|\theta\|^2`, with :math:`\lambda` = ``penalty``.
    """
    with seeded(rng):
        model = make_mlp(64, tuple(hidden_layer_sizes), 10, activation="tanh").double()
    X_pre = torch.from_numpy(X_pretrain.copy())
    y_pre = torch.from_numpy(y_pretrain.copy())
    params = list(model.parameters())

    def pretrain_objective():
        data = torch.nn.functional.cross_entropy(model(X_pre), y_pre)
        return data + 0.5 * penalty * sum((p * p).sum() for p in params)

    minimise_lbfgs(params, pretrain_objective, max_iter, 1e-9)
    model.eval()
    for p in params:
        p.grad = None
    return model
