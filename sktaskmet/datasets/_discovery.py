"""Labelings of a data set (class splits, random labelings) and image data for the networks."""

from itertools import combinations
from math import comb
from numbers import Integral

import numpy as np
from sklearn.datasets import load_digits
from sklearn.utils import check_random_state
from sklearn.utils.validation import column_or_1d

__all__ = [
    "make_class_split_tasks",
    "make_random_labelings",
    "load_digits_images",
    "to_image_arrays",
]


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


def load_digits_images(*, size=8, n_channels=1):
    """scikit-learn's bundled 8x8 digits as images of shape (n, C, size, size), in [0, 1].

    Nothing is downloaded: the 1797 digits ship with scikit-learn. Upsampling repeats every
    pixel ``size // 8`` times along both axes (nearest neighbour), so ``size=32`` gives
    CIFAR-sized inputs for the 32x32 networks; ``n_channels=3`` repeats the grey channel.

    Parameters
    ----------
    size : {8, 16, 24, 32, ...}, default=8
        Side of the images, a positive multiple of 8.
    n_channels : {1, 3}, default=1

    Returns
    -------
    X : ndarray of shape (1797, n_channels, size, size), dtype float32
    y : ndarray of shape (1797,), dtype int64
        The digit of every image.

    Examples
    --------
    >>> from sktaskmet.datasets import load_digits_images
    >>> X, y = load_digits_images(size=32, n_channels=3)
    >>> X.shape, float(X.max())
    ((1797, 3, 32, 32), 1.0)
    """
    if not isinstance(size, Integral) or isinstance(size, bool) or size < 8 or size % 8:
        raise ValueError(f"size must be a positive multiple of 8; got {size!r}.")
    if n_channels not in (1, 3):
        raise ValueError(f"n_channels must be 1 or 3; got {n_channels!r}.")
    digits = load_digits()
    factor = int(size) // 8
    images = (digits.images / 16.0).astype(np.float32)
    images = np.repeat(np.repeat(images, factor, axis=1), factor, axis=2)
    X = np.repeat(images[:, None], n_channels, axis=1)
    return np.ascontiguousarray(X), digits.target.astype(np.int64)


def to_image_arrays(dataset, *, channels_last=None):
    """Images and labels of an in-memory data set as numpy arrays ``(X, y)``.

    Accepts what image libraries hand out, without importing them:

    * an object with ``.data`` and ``.targets`` (torchvision's MNIST and CIFAR data sets
      once loaded: a uint8 tensor of shape (n, H, W) or an array of shape (n, H, W, C));
    * a sequence of ``(image, label)`` pairs (any indexable data set), the images being
      tensors of shape (C, H, W) (what ``ToTensor`` gives), arrays, or PIL images;
    * a tuple ``(images, labels)`` of arrays.

    Parameters
    ----------
    dataset : object with .data and .targets, sequence of (image, label), or tuple of arrays
    channels_last : bool or None, default=None
        Whether images of three dimensions store channels last, (H, W, C). ``None``
        decides from the shape: the last axis is the channel axis when it has 1, 3 or 4
        entries and the first does not.

    Returns
    -------
    X : ndarray of shape (n, C, H, W), dtype float32
        Integer images (uint8) are scaled to [0, 1]; floating ones are kept as they are.
    y : ndarray of shape (n,)

    Examples
    --------
    >>> import numpy as np
    >>> from sktaskmet.datasets import to_image_arrays
    >>> pairs = [(np.zeros((32, 32, 3), dtype=np.uint8), 1), (np.ones((32, 32, 3)), 0)]
    >>> X, y = to_image_arrays(pairs)
    >>> X.shape, y.tolist()
    ((2, 3, 32, 32), [1, 0])
    """
    if hasattr(dataset, "data") and hasattr(dataset, "targets"):
        images, labels = _as_numpy(dataset.data), _as_numpy(dataset.targets)
    elif isinstance(dataset, tuple) and len(dataset) == 2 and hasattr(dataset[0], "shape"):
        images, labels = _as_numpy(dataset[0]), _as_numpy(dataset[1])
    else:
        try:
            pairs = [dataset[i] for i in range(len(dataset))]
            images = np.stack([_as_numpy(image) for image, _ in pairs])
            labels = np.asarray([_as_numpy(label) for _, label in pairs])
        except (TypeError, ValueError) as exc:
            raise TypeError(
                "dataset must have .data and .targets, be a sequence of (image, label) "
                f"pairs of equal-shaped images, or a tuple of arrays; got "
                f"{type(dataset).__name__} ({exc})."
            ) from exc
    if images.ndim == 3:  # (n, H, W): one channel
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(
            f"dataset: expected images of 2 or 3 dimensions; got an array of shape {images.shape}."
        )
    if channels_last is None:
        channels_last = images.shape[-1] in (1, 3, 4) and images.shape[1] not in (1, 3, 4)
    if channels_last:
        images = images.transpose(0, 3, 1, 2)
    if np.issubdtype(images.dtype, np.integer):
        images = images / 255.0
    labels = labels.reshape(-1)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"dataset: {images.shape[0]} images but {labels.shape[0]} labels.")
    return np.ascontiguousarray(images, dtype=np.float32), labels


def _as_numpy(value):
    """A numpy array from a tensor (any device), a PIL image, a list or an array."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value)
