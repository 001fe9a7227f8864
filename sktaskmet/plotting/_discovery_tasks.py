"""Binary tasks shown on the input images: a few samples of each side of every task."""

import math

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted

__all__ = ["DiscoveredTasksDisplay"]


def _image_shape(n_features, image_shape):
    if image_shape is None:
        side = math.isqrt(n_features)
        if side * side != n_features:
            raise ValueError(
                f"X has {n_features} features, not a square number; pass image_shape=(height, "
                "width) (or (height, width, channels))."
            )
        return (side, side)
    image_shape = tuple(int(s) for s in image_shape)
    if math.prod(image_shape) != n_features or len(image_shape) not in (2, 3):
        raise ValueError(
            f"image_shape={image_shape} does not hold the {n_features} features of a sample."
        )
    return image_shape


class DiscoveredTasksDisplay:
    """Binary tasks visualised on their input images.

    Every task is drawn as one row: ``n_images`` samples it labels 0 on the left, a gap, and
    ``n_images`` samples it labels 1 on the right. Reading a row tells what the task
    separates (stroke thickness, slant, a class split, ...).

    Build it with :meth:`from_estimator` (a fitted :class:`~sktaskmet.TaskDiscovery`) or
    :meth:`from_tasks` (any labelings, e.g. from :func:`~sktaskmet.random_network_tasks`).

    Parameters
    ----------
    images : ndarray of shape (n_tasks, 2, n_images, height, width[, channels])
        ``images[t, c]``: samples of class ``c`` under task ``t``; NaN images (a side with
        fewer samples than ``n_images``) are left blank.
    task_names : list of str
        Row titles.
    indices : ndarray of shape (n_tasks, 2, n_images), dtype int
        Rows of ``X`` shown (-1 for a blank slot).

    Attributes
    ----------
    figure_ : matplotlib.figure.Figure
    axes_ : ndarray of matplotlib.axes.Axes
        One axis per task.

    See Also
    --------
    sktaskmet.TaskDiscovery : Discovers the tasks.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import load_digits
    >>> from sktaskmet import random_network_tasks
    >>> from sktaskmet.plotting import DiscoveredTasksDisplay
    >>> X = load_digits().data
    >>> tasks = random_network_tasks(X, n_tasks=3, random_state=0)
    >>> display = DiscoveredTasksDisplay.from_tasks(tasks, X, random_state=0)
    >>> display.axes_.shape
    (3,)
    """

    def __init__(self, images, task_names, indices):
        self.images = images
        self.task_names = task_names
        self.indices = indices

    @classmethod
    def from_tasks(
        cls,
        tasks,
        X,
        *,
        image_shape=None,
        n_images=6,
        task_indices=None,
        task_names=None,
        random_state=None,
        plot=True,
        cmap="gray_r",
        figure=None,
    ):
        """Show labelings ``tasks`` of the images ``X``.

        Parameters
        ----------
        tasks : array-like of shape (n_samples, n_tasks)
            Binary labelings (0/1) of the rows of ``X``.
        X : array-like of shape (n_samples, n_features)
            Flattened images.
        image_shape : tuple of int, default=None
            ``(height, width)`` or ``(height, width, channels)``; ``None`` for square
            grey-scale images.
        n_images : int, default=6
            Samples shown per side of each task.
        task_indices : sequence of int, default=None
            Tasks (columns of ``tasks``) to show; all by default.
        task_names : list of str, default=None
            Row titles; ``"task i (balance b)"`` by default.
        random_state : int, RandomState instance or None, default=None
            Draws the samples shown.
        plot : bool, default=True
            Draw the figure right away.
        cmap : str, default="gray_r"
        figure : matplotlib.figure.Figure, default=None
            Figure to draw in; a new one by default.

        Returns
        -------
        display : DiscoveredTasksDisplay
        """
        X = check_array(X, input_name="X")
        tasks = check_array(tasks, ensure_2d=True, dtype=None, input_name="tasks")
        if tasks.shape[0] != X.shape[0]:
            raise ValueError(
                f"tasks has {tasks.shape[0]} rows but X has {X.shape[0]}; one label per image "
                "is needed."
            )
        if not np.isin(tasks, (0, 1)).all():
            raise ValueError("tasks must hold binary labels 0 and 1.")
        if int(n_images) < 1:
            raise ValueError(f"n_images must be a positive int; got {n_images!r}.")
        n_images = int(n_images)
        shape = _image_shape(X.shape[1], image_shape)
        columns = np.arange(tasks.shape[1]) if task_indices is None else np.asarray(task_indices)
        rng = check_random_state(random_state)

        images = np.full((len(columns), 2, n_images) + shape, np.nan)
        indices = np.full((len(columns), 2, n_images), -1, dtype=np.int64)
        for row, column in enumerate(columns):
            for label in (0, 1):
                members = np.flatnonzero(tasks[:, column] == label)
                chosen = rng.choice(members, size=min(n_images, members.size), replace=False)
                indices[row, label, : chosen.size] = chosen
                images[row, label, : chosen.size] = X[chosen].reshape((-1,) + shape)
        if task_names is None:
            balance = tasks[:, columns].mean(axis=0)
            task_names = [
                f"task {c} (balance {b:.2f})" for c, b in zip(columns, balance, strict=True)
            ]
        display = cls(images, list(task_names), indices)
        if plot:
            display.plot(cmap=cmap, figure=figure)
        return display

    @classmethod
    def from_estimator(
        cls,
        estimator,
        X,
        *,
        image_shape=None,
        n_images=6,
        task_indices=None,
        random_state=None,
        plot=True,
        cmap="gray_r",
        figure=None,
    ):
        """Show the tasks of a fitted :class:`~sktaskmet.TaskDiscovery` on images ``X``.

        Rows are titled with each task's balance on ``X`` and, when the estimator measured
        them, its agreement score.

        Parameters
        ----------
        estimator : TaskDiscovery
            Fitted estimator; ``estimator.transform(X)`` labels the images.
        X : array-like of shape (n_samples, n_features)
            Flattened images (the training set or new ones).
        image_shape : tuple of int, default=None
        n_images : int, default=6
        task_indices : sequence of int, default=None
        random_state : int, RandomState instance or None, default=None
        plot : bool, default=True
        cmap : str, default="gray_r"
        figure : matplotlib.figure.Figure, default=None

        Returns
        -------
        display : DiscoveredTasksDisplay
        """
        check_is_fitted(estimator)
        tasks = estimator.transform(X)
        columns = np.arange(tasks.shape[1]) if task_indices is None else np.asarray(task_indices)
        scores = getattr(estimator, "agreement_scores_", None)
        names = []
        for column in columns:
            name = f"task {column} (balance {tasks[:, column].mean():.2f}"
            if scores is not None and np.isfinite(scores[column]):
                name += f", AS {scores[column]:.3f}"
            names.append(name + ")")
        return cls.from_tasks(
            tasks,
            X,
            image_shape=image_shape,
            n_images=n_images,
            task_indices=columns,
            task_names=names,
            random_state=random_state,
            plot=plot,
            cmap=cmap,
            figure=figure,
        )

    def plot(self, *, cmap="gray_r", figure=None):
        """Draw one row per task: label-0 samples, a gap, label-1 samples.

        Parameters
        ----------
        cmap : str, default="gray_r"
        figure : matplotlib.figure.Figure, default=None

        Returns
        -------
        display : DiscoveredTasksDisplay
        """
        import matplotlib.pyplot as plt

        n_tasks, _, n_images = self.images.shape[:3]
        height, width = self.images.shape[3:5]
        if figure is None:
            figure = plt.figure(figsize=(0.45 * (2 * n_images + 1) + 1, 0.9 * n_tasks + 0.4))
        axes = figure.subplots(n_tasks, 1, squeeze=False)[:, 0]
        gap = max(1, width // 2)
        for row, ax in enumerate(axes):
            sides = []
            for label in (0, 1):
                tiles = [
                    np.pad(
                        image,
                        [(1, 1), (1, 1)] + [(0, 0)] * (image.ndim - 2),
                        constant_values=np.nan,
                    )
                    for image in self.images[row, label]
                ]
                sides.append(np.concatenate(tiles, axis=1))
            spacer = np.full((height + 2, gap) + self.images.shape[5:], np.nan)
            mosaic = np.concatenate([sides[0], spacer, spacer, sides[1]], axis=1)
            ax.imshow(mosaic, cmap=cmap, interpolation="nearest")
            ax.set_xticks(
                [sides[0].shape[1] / 2, sides[0].shape[1] + 2 * gap + sides[1].shape[1] / 2]
            )
            ax.set_xticklabels(["label 0", "label 1"], fontsize=7)
            ax.set_yticks([])
            ax.tick_params(length=0)
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_title(self.task_names[row], fontsize=8, loc="left")
        figure.tight_layout()
        self.figure_ = figure
        self.axes_ = axes
        return self
