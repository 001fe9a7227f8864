"""Labelings of a data set: class splits ("human" tasks) and random labelings."""

from itertools import combinations
from math import comb
from numbers import Integral

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import column_or_1d

__all__ = ["make_class_split_tasks", "make_random_labelings"]


def make_class_split_tasks(y, n_tasks=None, *, random_state=None):
    """Binary labelings that split the classes of ``y`` into two halves.

    With 10 classes these are the "human" 5-vs-5 tasks of Atanov et al. (NeurIPS 2022):
    each task labels a point 1 when its class is in a chosen set of five classes and 0
    otherwise. A split and its complement are the same task up to renaming, so the
    distinct tasks are the sets of ``n_classes // 2`` classes that leave out the first
    class when ``n_classes`` is even (126 for 10 classes), and all sets of
    ``n_classes // 2`` classes when it is odd.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels, at least two distinct classes.
    n_tasks : int or None, default=None
        Number of tasks: all distinct splits when None, else a sample without
        replacement of that many (at most the number of distinct splits).
    random_state : int, RandomState instance or None, default=None
        Draws the sample when ``n_tasks`` is given.

    Returns
    -------
    tasks : ndarray of shape (n_samples, n_tasks), dtype int64
        ``tasks[i, t] = 1`` when the class of point ``i`` is in ``positive_classes[t]``.
    positive_classes : ndarray of shape (n_tasks, n_classes // 2)
        The classes labelled 1 by each task, in the order of the columns of ``tasks``.

    Examples
    --------
    >>> import numpy as np
    >>> from sktaskmet.datasets import make_class_split_tasks
    >>> tasks, positive = make_class_split_tasks(np.arange(10))
    >>> tasks.shape, positive.shape
    ((10, 126), (126, 5))
    """
    y = column_or_1d(y, warn=True)
    classes = np.unique(y)
    n_classes = classes.size
    if n_classes < 2:
        raise ValueError(f"y needs at least two classes to split; got {n_classes}.")
    half = n_classes // 2
    # Even: fix the first class on the 0 side so that a split and its complement count once.
    pool = classes[1:] if n_classes % 2 == 0 else classes
    n_distinct = comb(pool.size, half)
    if n_tasks is None:
        chosen = np.arange(n_distinct)
    else:
        if not isinstance(n_tasks, Integral) or isinstance(n_tasks, bool) or n_tasks < 1:
            raise ValueError(f"n_tasks must be a positive int or None; got {n_tasks!r}.")
        if n_tasks > n_distinct:
            raise ValueError(
                f"n_tasks={n_tasks} exceeds the {n_distinct} distinct splits of "
                f"{n_classes} classes into {half} and {n_classes - half}."
            )
        rng = check_random_state(random_state)
        chosen = np.sort(rng.choice(n_distinct, size=n_tasks, replace=False))
    wanted = set(chosen.tolist())
    positive = [np.array(c) for i, c in enumerate(combinations(pool, half)) if i in wanted]
    positive_classes = np.stack(positive)
    tasks = np.column_stack([np.isin(y, p) for p in positive_classes]).astype(np.int64)
    return tasks, positive_classes


def make_random_labelings(n_samples, n_tasks=1, *, n_classes=2, balanced=True, random_state=None):
    """Labelings drawn at random, independently of the inputs.

    They are the low-agreement reference: a network memorises them on its training points
    and guesses elsewhere.

    Parameters
    ----------
    n_samples : int
        Number of points.
    n_tasks : int, default=1
        Number of labelings (columns).
    n_classes : int, default=2
        Classes per labeling.
    balanced : bool, default=True
        When True every labeling is a random permutation of a sequence with (almost) equal
        class counts; when False each label is drawn uniformly and independently.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    labelings : ndarray of shape (n_samples, n_tasks), dtype int64

    Examples
    --------
    >>> from sktaskmet.datasets import make_random_labelings
    >>> make_random_labelings(6, 2, random_state=0).sum(axis=0)
    array([3, 3])
    """
    for name, value, low in (
        ("n_samples", n_samples, 1),
        ("n_tasks", n_tasks, 1),
        ("n_classes", n_classes, 2),
    ):
        if not isinstance(value, Integral) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}; got {value!r}.")
    rng = check_random_state(random_state)
    if balanced:
        base = np.arange(n_samples) % n_classes
        return np.column_stack([rng.permutation(base) for _ in range(n_tasks)]).astype(np.int64)
    return rng.randint(0, n_classes, size=(n_samples, n_tasks)).astype(np.int64)
