"""Displays of surrogate task attribution: per-task bar chart and pairwise interaction heatmap."""

import numpy as np

__all__ = ["AttributionDisplay", "InteractionDisplay"]


def _task_names(estimator, n_tasks, task_names):
    if task_names is not None:
        names = [str(name) for name in task_names]
        if len(names) != n_tasks:
            raise ValueError(f"task_names must have {n_tasks} entries; got {len(names)}.")
        return names
    if hasattr(estimator, "feature_names_in_"):
        return [str(name) for name in estimator.feature_names_in_]
    return [f"task {k}" for k in range(n_tasks)]


def _select_target(values, target, ndim):
    """The values of one target of a multi-target surrogate."""
    values = np.asarray(values)
    if values.ndim == ndim:
        if target not in (None, 0):
            raise ValueError(f"target={target!r}, but the surrogate has a single target.")
        return values
    if target is None:
        raise ValueError(
            f"The surrogate has {values.shape[-1]} targets; pass target=<index> to plot one."
        )
    return values[..., target]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Plotting needs matplotlib: pip install 'sktaskmet[plot]' (or matplotlib)."
        ) from exc
    return plt


class AttributionDisplay:
    """Bar chart of one score per task, e.g. a surrogate's leave-one-out attribution.

    Create it with :meth:`from_estimator` (or build it from precomputed scores and call
    :meth:`plot`). An optional reference (e.g. the exact leave-one-out values, when known)
    is drawn as markers over the bars.

    Parameters
    ----------
    attributions : array-like of shape (n_tasks,)
        Score of each task.
    task_names : list of str, default=None
        Tick labels; None gives ``"task 0"``, ``"task 1"``, ...
    estimator_name : str, default=None
        Legend label of the bars.
    reference : array-like of shape (n_tasks,), default=None
        Values drawn as markers for comparison.
    reference_name : str, default="reference"
        Legend label of the markers.

    Attributes
    ----------
    bars_ : matplotlib BarContainer
    reference_line_ : matplotlib Line2D or None
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure

    Examples
    --------
    >>> from sktaskmet import KernelSurrogate
    >>> from sktaskmet.datasets import make_task_interactions
    >>> from sktaskmet.plotting import AttributionDisplay
    >>> S, y, F = make_task_interactions(random_state=0)
    >>> model = KernelSurrogate(device="cpu").fit(S, y)
    >>> display = AttributionDisplay.from_estimator(model, reference=F.loo())
    >>> display.ax_.get_ylabel() != ""
    True
    >>> import matplotlib.pyplot as plt
    >>> plt.close("all")
    """

    def __init__(
        self,
        attributions,
        *,
        task_names=None,
        estimator_name=None,
        reference=None,
        reference_name="reference",
    ):
        self.attributions = np.asarray(attributions, dtype=float)
        if self.attributions.ndim != 1:
            raise ValueError(
                f"attributions must be 1-D (one score per task); got shape "
                f"{self.attributions.shape}."
            )
        n = len(self.attributions)
        self.task_names = _task_names(None, n, task_names)
        self.estimator_name = estimator_name
        self.reference = None if reference is None else np.asarray(reference, dtype=float)
        if self.reference is not None and self.reference.shape != (n,):
            raise ValueError(f"reference must have shape ({n},); got {self.reference.shape}.")
        self.reference_name = reference_name

    @classmethod
    def from_estimator(
        cls,
        estimator,
        *,
        base=None,
        method="loo",
        target=None,
        task_names=None,
        reference=None,
        reference_name="exact",
        ax=None,
        **kwargs,
    ):
        """Plot a fitted surrogate's task attribution.

        Parameters
        ----------
        estimator : fitted KernelSurrogate or LinearSurrogate
        base : array-like of shape (n_tasks,), default=None
            Passed to ``estimator.attribution`` (None: the full set).
        method : {"loo", "gradient"}, default="loo"
            Passed to ``estimator.attribution``.
        target : int, default=None
            Target to plot for a multi-target surrogate.
        task_names : list of str, default=None
            Tick labels; defaults to the estimator's ``feature_names_in_`` when present.
        reference : array-like of shape (n_tasks,), default=None
            Values drawn as markers, e.g. exact leave-one-out values.
        reference_name : str, default="exact"
        ax : matplotlib Axes, default=None
        **kwargs : dict
            Passed to :meth:`matplotlib.axes.Axes.bar`.

        Returns
        -------
        display : AttributionDisplay
        """
        scores = _select_target(estimator.attribution(base, method=method), target, 1)
        display = cls(
            scores,
            task_names=_task_names(estimator, len(scores), task_names),
            estimator_name=type(estimator).__name__,
            reference=reference,
            reference_name=reference_name,
        )
        return display.plot(ax=ax, **kwargs)

    def plot(self, ax=None, *, sort=False, **kwargs):
        """Draw the bar chart.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure when None.
        sort : bool, default=False
            Order the tasks by decreasing score.
        **kwargs : dict
            Passed to :meth:`matplotlib.axes.Axes.bar`.

        Returns
        -------
        display : AttributionDisplay
        """
        plt = _pyplot()
        if ax is None:
            _, ax = plt.subplots()
        order = np.arange(len(self.attributions))
        if sort:
            order = np.argsort(-self.attributions, kind="stable")
        positions = np.arange(len(order))
        kwargs.setdefault("label", self.estimator_name)
        self.bars_ = ax.bar(positions, self.attributions[order], **kwargs)
        self.reference_line_ = None
        if self.reference is not None:
            (self.reference_line_,) = ax.plot(
                positions,
                self.reference[order],
                "k_",
                markersize=14,
                markeredgewidth=2,
                label=self.reference_name,
            )
        ax.axhline(0.0, color="0.5", linewidth=0.8)
        ax.set_xticks(positions)
        ax.set_xticklabels([self.task_names[k] for k in order], rotation=90)
        ax.set_ylabel("attribution")
        if self.estimator_name is not None or self.reference is not None:
            ax.legend()
        self.ax_ = ax
        self.figure_ = ax.figure
        return self


class InteractionDisplay:
    """Heatmap of pairwise task interactions (symmetric, diverging colour scale).

    Red cells are synergies (two tasks together are worth more than apart), blue cells
    antagonisms or redundancies, with the colour scale centred at 0.

    Parameters
    ----------
    interactions : array-like of shape (n_tasks, n_tasks)
        Interaction matrix, e.g. from ``estimator.interactions()``.
    task_names : list of str, default=None
        Tick labels; None gives ``"task 0"``, ``"task 1"``, ...
    estimator_name : str, default=None
        Used in the title.

    Attributes
    ----------
    im_ : matplotlib AxesImage
    colorbar_ : matplotlib Colorbar or None
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure

    Examples
    --------
    >>> from sktaskmet import KernelSurrogate
    >>> from sktaskmet.datasets import make_task_interactions
    >>> from sktaskmet.plotting import InteractionDisplay
    >>> S, y, F = make_task_interactions(random_state=0)
    >>> model = KernelSurrogate(device="cpu").fit(S, y)
    >>> display = InteractionDisplay.from_estimator(model)
    >>> display.interactions.shape  # one row and column per task
    (16, 16)
    >>> import matplotlib.pyplot as plt
    >>> plt.close("all")
    """

    def __init__(self, interactions, *, task_names=None, estimator_name=None):
        self.interactions = np.asarray(interactions, dtype=float)
        shape = self.interactions.shape
        if self.interactions.ndim != 2 or shape[0] != shape[1]:
            raise ValueError(f"interactions must be a square 2-D array; got shape {shape}.")
        self.task_names = _task_names(None, shape[0], task_names)
        self.estimator_name = estimator_name

    @classmethod
    def from_estimator(
        cls, estimator, *, base=None, target=None, task_names=None, ax=None, **kwargs
    ):
        """Plot a fitted surrogate's interaction matrix.

        Parameters
        ----------
        estimator : fitted KernelSurrogate or LinearSurrogate
        base : array-like of shape (n_tasks,), default=None
            Passed to ``estimator.interactions`` (None: around the full set).
        target : int, default=None
            Target to plot for a multi-target surrogate.
        task_names : list of str, default=None
            Tick labels; defaults to the estimator's ``feature_names_in_`` when present.
        ax : matplotlib Axes, default=None
        **kwargs : dict
            Passed to :meth:`plot`.

        Returns
        -------
        display : InteractionDisplay
        """
        values = _select_target(estimator.interactions(base), target, 2)
        display = cls(
            values,
            task_names=_task_names(estimator, values.shape[0], task_names),
            estimator_name=type(estimator).__name__,
        )
        return display.plot(ax=ax, **kwargs)

    def plot(self, ax=None, *, cmap="RdBu_r", colorbar=True, vmax=None):
        """Draw the heatmap.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure when None.
        cmap : str or Colormap, default="RdBu_r"
            Diverging colour map (red for positive interactions).
        colorbar : bool, default=True
            Add a colour bar.
        vmax : float, default=None
            Colour scale is [-vmax, vmax]; None uses the largest absolute interaction.

        Returns
        -------
        display : InteractionDisplay
        """
        plt = _pyplot()
        if ax is None:
            _, ax = plt.subplots()
        if vmax is None:
            vmax = float(np.abs(self.interactions).max()) or 1.0
        self.im_ = ax.imshow(self.interactions, cmap=cmap, vmin=-vmax, vmax=vmax)
        ticks = np.arange(len(self.task_names))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xticklabels(self.task_names, rotation=90)
        ax.set_yticklabels(self.task_names)
        if self.estimator_name is not None:
            ax.set_title(f"{self.estimator_name}: pairwise interactions")
        self.colorbar_ = ax.figure.colorbar(self.im_, ax=ax) if colorbar else None
        self.ax_ = ax
        self.figure_ = ax.figure
        return self
