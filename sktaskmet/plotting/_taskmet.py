r"""Displays of a fitted TaskMet model: the learned metric along x, and per-output weights.

matplotlib is imported inside ``plot``, so this module imports without it.
"""

import numpy as np
from sklearn.utils.validation import check_array, check_is_fitted

__all__ = ["MetricCurveDisplay", "MetricWeightsDisplay"]


def _check_metric_estimator(estimator):
    check_is_fitted(estimator)
    if not hasattr(estimator, "metric_values"):
        raise TypeError(
            f"{type(estimator).__name__} has no learned metric (metric_values); pass a fitted "
            "TaskMetRegressor."
        )


def _axes(ax):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    return ax


class MetricCurveDisplay:
    r"""Predictions and the learned metric :math:`\Lambda(x)` along one input feature.

    The figure of the TaskMet paper's cubic experiment: the data and the predictor's
    output against x on the left axis, the learned (normalised) metric weight
    :math:`\Lambda(x)_{kk}` of one output on a right axis. Where the metric is large the
    predictor is made accurate; TaskMet puts that weight where errors change decisions.

    Create it with :meth:`from_estimator`, or from precomputed values.

    Parameters
    ----------
    x : ndarray of shape (n_points,)
        Values of the plotted feature, sorted.
    y_pred : ndarray of shape (n_points,)
        Predictions of the plotted output at those points.
    metric : ndarray of shape (n_points,)
        :math:`\Lambda(x)_{kk}` at those points.
    X_data, y_data : ndarray of shape (n_samples,), optional
        Data shown as a scatter plot.
    feature_name : str, default="x"
    output_name : str, default="y"

    Attributes
    ----------
    ax_ : matplotlib Axes
        Axes of the data and predictions.
    metric_ax_ : matplotlib Axes
        Twin axes of the metric.
    figure_ : matplotlib Figure
    lines_ : dict of str to matplotlib artists
        ``"data"``, ``"prediction"`` and ``"metric"``.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> from sktaskmet import TaskMetRegressor
    >>> from sktaskmet.datasets import make_cubic_topk
    >>> from sktaskmet.plotting import MetricCurveDisplay
    >>> from sktaskmet.tasks import TopK
    >>> X, y, groups = make_cubic_topk(n_instances=20, n_items=50, random_state=0)
    >>> model = TaskMetRegressor(TopK(k=1), inner_lr=0.1, max_iter=3, random_state=0,
    ...                          device="cpu").fit(X, y, groups=groups)
    >>> display = MetricCurveDisplay.from_estimator(model, X, y)
    >>> sorted(display.lines_)
    ['data', 'metric', 'prediction']
    >>> plt.close("all")
    """

    def __init__(
        self, x, y_pred, metric, *, X_data=None, y_data=None, feature_name="x", output_name="y"
    ):
        self.x = x
        self.y_pred = y_pred
        self.metric = metric
        self.X_data = X_data
        self.y_data = y_data
        self.feature_name = feature_name
        self.output_name = output_name

    @classmethod
    def from_estimator(
        cls, estimator, X, y=None, *, feature=0, output=0, n_points=200, ax=None, **plot_kwargs
    ):
        """Plot the predictions and the metric of a fitted TaskMetRegressor.

        With one input feature the curves are drawn on a grid of ``n_points`` over the
        range of X; with several, at the rows of X sorted by ``feature`` (the other
        features as they are in the data).

        Parameters
        ----------
        estimator : TaskMetRegressor
            Fitted.
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs), optional
            Shown as a scatter plot.
        feature : int, default=0
            Column of X on the horizontal axis.
        output : int, default=0
            Output whose prediction and metric weight are drawn.
        n_points : int, default=200
        ax : matplotlib Axes, optional
        **plot_kwargs
            Passed to :meth:`plot`.

        Returns
        -------
        MetricCurveDisplay
        """
        _check_metric_estimator(estimator)
        X = check_array(X, dtype=[np.float64, np.float32])
        if not 0 <= feature < X.shape[1]:
            raise ValueError(f"feature must be in [0, {X.shape[1]}); got {feature}.")
        if not 0 <= output < estimator.n_outputs_:
            raise ValueError(f"output must be in [0, {estimator.n_outputs_}); got {output}.")
        if X.shape[1] == 1:
            points = np.linspace(X[:, 0].min(), X[:, 0].max(), n_points, dtype=X.dtype)[:, None]
        else:
            points = X[np.argsort(X[:, feature], kind="stable")]
        y_pred = np.asarray(estimator.predict(points)).reshape(points.shape[0], -1)[:, output]
        metric = estimator.metric_values(points)[:, output, output]
        y_data = None
        if y is not None:
            y_data = np.asarray(y).reshape(X.shape[0], -1)[:, output]
        names = getattr(estimator, "feature_names_in_", None)
        display = cls(
            points[:, feature],
            y_pred,
            metric,
            X_data=X[:, feature] if y is not None else None,
            y_data=y_data,
            feature_name=str(names[feature]) if names is not None else "x",
            output_name="y" if estimator.n_outputs_ == 1 else f"y[{output}]",
        )
        return display.plot(ax=ax, **plot_kwargs)

    def plot(self, ax=None, *, metric_color="tab:red", prediction_color="tab:blue"):
        """Draw the display.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            New axes when None.
        metric_color, prediction_color : str

        Returns
        -------
        self : MetricCurveDisplay
        """
        ax = _axes(ax)
        lines = {}
        if self.X_data is not None and self.y_data is not None:
            lines["data"] = ax.scatter(
                self.X_data, self.y_data, s=6, color="0.6", alpha=0.5, label="data"
            )
        (lines["prediction"],) = ax.plot(
            self.x, self.y_pred, color=prediction_color, lw=2, label="prediction"
        )
        ax.set_xlabel(self.feature_name)
        ax.set_ylabel(self.output_name)
        metric_ax = ax.twinx()
        (lines["metric"],) = metric_ax.plot(
            self.x, self.metric, color=metric_color, lw=2, ls="--", label=r"$\Lambda(x)$"
        )
        metric_ax.set_ylabel(r"learned metric $\Lambda(x)$", color=metric_color)
        metric_ax.tick_params(axis="y", colors=metric_color)
        metric_ax.set_ylim(bottom=0)
        handles = [lines[k] for k in ("data", "prediction", "metric") if k in lines]
        ax.legend(handles, [h.get_label() for h in handles], loc="upper left")
        self.ax_ = ax
        self.metric_ax_ = metric_ax
        self.figure_ = ax.figure
        self.lines_ = lines
        return self


class MetricWeightsDisplay:
    r"""Learned weight of each output: the diagonal of :math:`\Lambda(x)` averaged over X.

    A bar per output dimension. With distracting outputs (state dimensions that do not
    affect the task), TaskMet's weights single out the ones that matter.

    Parameters
    ----------
    weights : ndarray of shape (n_outputs,)
        :math:`\frac{1}{n}\sum_i \Lambda(x_i)_{kk}`.
    output_names : list of str, optional

    Attributes
    ----------
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure
    bars_ : matplotlib BarContainer

    Examples
    --------
    A diagonal metric on three outputs, of which the task uses the first:

    >>> import matplotlib.pyplot as plt
    >>> import numpy as np
    >>> from sktaskmet import TaskMetRegressor
    >>> from sktaskmet.plotting import MetricWeightsDisplay
    >>> from sktaskmet.tasks import StateReward
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(100, 3))
    >>> Y = X + 0.1 * rng.normal(size=(100, 3))
    >>> model = TaskMetRegressor(StateReward(dims=(0,), scales=(1.0,)), metric="diagonal",
    ...                          max_iter=3, random_state=0, device="cpu").fit(X, Y)
    >>> display = MetricWeightsDisplay.from_estimator(model, X, output_names=["x", "v", "angle"])
    >>> len(display.bars_)
    3
    >>> plt.close("all")
    """

    def __init__(self, weights, *, output_names=None):
        self.weights = weights
        self.output_names = output_names

    @classmethod
    def from_estimator(cls, estimator, X, *, output_names=None, ax=None, **plot_kwargs):
        """Compute the mean diagonal of the learned metric over X and plot it.

        Parameters
        ----------
        estimator : TaskMetRegressor
            Fitted.
        X : array-like of shape (n_samples, n_features)
        output_names : list of str, optional
            One name per output.
        ax : matplotlib Axes, optional
        **plot_kwargs
            Passed to :meth:`plot`.

        Returns
        -------
        MetricWeightsDisplay
        """
        _check_metric_estimator(estimator)
        values = estimator.metric_values(X)
        weights = np.diagonal(values, axis1=1, axis2=2).mean(axis=0)
        if output_names is not None and len(output_names) != weights.shape[0]:
            raise ValueError(
                f"output_names has {len(output_names)} names; the model has "
                f"{weights.shape[0]} outputs."
            )
        return cls(weights, output_names=output_names).plot(ax=ax, **plot_kwargs)

    def plot(self, ax=None, *, sort=False, color="tab:red"):
        """Draw the bars.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        sort : bool, default=False
            Largest weight first.
        color : str

        Returns
        -------
        self : MetricWeightsDisplay
        """
        ax = _axes(ax)
        weights = np.asarray(self.weights)
        names = (
            list(self.output_names)
            if self.output_names is not None
            else [f"y[{k}]" for k in range(weights.shape[0])]
        )
        order = np.argsort(-weights, kind="stable") if sort else np.arange(weights.shape[0])
        self.bars_ = ax.bar([names[k] for k in order], weights[order], color=color)
        ax.set_ylabel(r"mean learned weight $\Lambda(x)_{kk}$")
        ax.set_xlabel("output")
        self.ax_ = ax
        self.figure_ = ax.figure
        return self
