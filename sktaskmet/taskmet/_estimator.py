r"""scikit-learn glue of the task-driven regressors: TaskMetRegressor and the shared base.

The numerics live in :mod:`sktaskmet.taskmet._bilevel`; this module validates inputs, groups
samples into decision instances, splits off the validation instances, runs the outer loop
with early stopping and keeps the fitted state as numpy arrays.
"""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .._backend import (
    RandomStreams,
    load_numpy_state,
    resolve_device,
    state_to_numpy,
    to_numpy,
    to_tensor,
    untouched_global_rng,
)
from .._nn import check_hidden_layer_sizes, make_mlp
from .._training import CallbackSupportMixin, FitCallbacks, TrainingLoop
from .._validation import check_module_output, fit_guard, fitted_params
from ._bilevel import (
    LINEAR_SOLVERS,
    BilevelSolver,
    metric_values,
    task_objective,
)
from ._closed_form import ClosedFormBilevelSolver
from ._metric_params import METRIC_KINDS, make_metric

__all__ = ["TaskMetRegressor"]

# The columns of history_ (see TaskMetRegressor's Attributes).
_HISTORY_KEYS = (
    "iteration",
    "train_task_loss",
    "train_prediction_loss",
    "validation_task_loss",
    "validation_prediction_loss",
)

# --------------------------------------------------------------------------------------
# Instances: samples that share a group form one decision problem
# --------------------------------------------------------------------------------------


def group_instances(groups, n_samples):
    """Order of the samples that stacks them by group, and the group size ``m``.

    Parameters
    ----------
    groups : array-like of shape (n_samples,) or None
        ``None`` makes every sample its own instance (``m = 1``).
    n_samples : int

    Returns
    -------
    order : ndarray of shape (n_samples,)
        ``X[order].reshape(n_instances, m, n_features)`` stacks the instances, in the order
        of their sorted group labels, each instance's samples in their original order.
    m : int
    """
    if groups is None:
        return np.arange(n_samples), 1
    groups = np.asarray(groups)
    if groups.ndim != 1:
        raise ValueError(f"groups must be a 1-d array of group labels; got shape {groups.shape}.")
    if groups.shape[0] != n_samples:
        raise ValueError(
            f"groups has {groups.shape[0]} entries but X has {n_samples} samples; give one "
            "group label (the decision instance) per sample."
        )
    if groups.dtype.kind == "f" and not np.all(np.isfinite(groups)):
        raise ValueError("groups contains NaN or infinity.")
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if counts.min() != counts.max():
        raise ValueError(
            "every decision instance (group) must have the same number of samples; got group "
            f"sizes from {counts.min()} to {counts.max()}. The task decides over the m items of "
            "an instance jointly, so instances are stacked into an (n_instances, m, ...) array."
        )
    return np.argsort(inverse, kind="stable"), int(counts[0])


def _stack_instances(X, Y, groups):
    """Rows of ``X`` (n, p) and ``Y`` (n, d) stacked by instance: (n_inst, m, p), (n_inst, m, d)."""
    order, m = group_instances(groups, X.shape[0])
    n_inst = X.shape[0] // m
    return X[order].reshape(n_inst, m, X.shape[1]), Y[order].reshape(n_inst, m, Y.shape[1])


def _flat_state(model, flat):
    """State dict (numpy) of ``model.module`` with its parameters taken from ``flat``.

    The module itself is left as it is: a training loop can report the current predictor
    (to scikit-learn callbacks) without writing into the parameters it trains.
    """
    state = state_to_numpy(model.module)
    for name, value in zip(model.names, model.unflatten(flat.detach()), strict=True):
        state[name] = to_numpy(value)
    return state


class _BaseTaskRegressor(CallbackSupportMixin, RegressorMixin, BaseEstimator):
    """Shared glue of the regressors trained for a downstream task.

    A subclass's ``fit`` gets its tensors from :meth:`_prepare`, runs :meth:`_run_loop` with
    its own step, and stores the fitted predictor state.
    """

    _parameter_constraints: dict = {
        "task": "no_validation",
        "predictor": [StrOptions({"linear", "mlp"}), callable],
        "hidden_layer_sizes": ["array-like"],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [None, Interval(Real, 0, 1, closed="left")],
        "n_iter_no_change": [None, Interval(Integral, 1, None, closed="left")],
        "validation_interval": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # -- inputs ------------------------------------------------------------------------

    def _task_requires_groups(self):
        return bool(getattr(self.task, "requires_groups", False))

    def _validate_task(self):
        task = self.task
        if task is None:
            return
        if not callable(getattr(task, "loss", None)):
            raise TypeError(
                "task must be a sktaskmet.tasks.Task (an object with loss(y_pred, y_true), "
                f"decide, quality, ...) or None; got {type(task).__name__}."
            )

    def _validate_fit_inputs(self, X, y, groups):
        self._validate_task()
        check_hidden_layer_sizes(self.hidden_layer_sizes)
        X, y = validate_data(
            self,
            X,
            y,
            reset=True,
            dtype=[np.float64, np.float32],
            multi_output=True,
            y_numeric=True,
        )
        y = np.asarray(y, dtype=X.dtype)
        self._y_ndim = y.ndim
        Y = y.reshape(y.shape[0], -1)
        if groups is None and self._task_requires_groups():
            raise ValueError(
                f"task {type(self.task).__name__} decides over groups of samples (instances): "
                "pass groups=..., one label per sample, to fit."
            )
        Xg, Yg = _stack_instances(X, Y, groups)
        n_outputs = Y.shape[1]
        task_outputs = getattr(self.task, "n_outputs", None)
        if task_outputs is not None and task_outputs != n_outputs:
            raise ValueError(
                f"task {type(self.task).__name__} expects {task_outputs} output(s) per sample; "
                f"y has {n_outputs}."
            )
        self.n_outputs_ = n_outputs
        self.group_size_ = Xg.shape[1]
        if self.task is not None and hasattr(self.task, "check_targets"):
            self.task.check_targets(Yg)
        return Xg, Yg

    def _grouped_inputs(self, X, y, groups):
        """Validate (X, y, groups) after fit and stack them by instance."""
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        y = np.asarray(y, dtype=X.dtype)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"y has {y.shape[0]} samples but X has {X.shape[0]}.")
        if not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or infinity.")
        Y = y.reshape(y.shape[0], -1)
        if Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} outputs; the model predicts {self.n_outputs_}.")
        if groups is None and self._task_requires_groups():
            raise ValueError(
                f"task {type(self.task).__name__} decides over groups of samples: pass groups."
            )
        return _stack_instances(X, Y, groups)

    def _split_validation(self, n_inst, random_state):
        """Indices of the training and validation instances."""
        fraction = self.validation_fraction
        if not fraction or n_inst < 2:
            return np.arange(n_inst), np.arange(0)
        n_val = min(max(1, int(round(fraction * n_inst))), n_inst - 1)
        perm = random_state.permutation(n_inst)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    # -- modules -----------------------------------------------------------------------

    def _make_predictor(self, n_features, n_outputs):
        if self.predictor == "linear":
            return make_mlp(n_features, (), n_outputs)
        if self.predictor == "mlp":
            return make_mlp(
                n_features, check_hidden_layer_sizes(self.hidden_layer_sizes), n_outputs
            )
        module = self.predictor(n_features, n_outputs)
        if not isinstance(module, torch.nn.Module):
            raise TypeError(
                "predictor must be 'linear', 'mlp' or a callable (n_features, n_outputs) -> "
                f"torch.nn.Module; the callable returned {type(module).__name__}."
            )
        check_module_output(module, n_features, n_outputs, "predictor")
        return module

    @fitted_params("predictor", "hidden_layer_sizes")
    def _predictor_module(self, device, dtype):
        with untouched_global_rng():
            module = self._make_predictor(self.n_features_in_, self.n_outputs_)
        return load_numpy_state(module, self.predictor_state_, device=device, dtype=dtype)

    def _task_loss(self):
        """The training loss per instance: the task's relaxed loss, or squared error."""
        if self.task is None:
            return lambda y_pred, y_true: ((y_pred - y_true) ** 2).sum(-1).mean(-1)
        return self.task.loss

    # -- fit loop shared by the subclasses ---------------------------------------------

    def _train(self, step, evaluate, snapshot, restore, *, has_validation, guard, fitted, data):
        """Run the shared training core: steps, validation, early stopping, best state.

        ``step(iteration) -> (task_loss, prediction_loss, ok)`` (device scalars, bool);
        ``evaluate() -> (task_loss, prediction_loss)`` floats on the validation instances;
        ``fitted() -> dict`` of the fitted attributes of the current state and ``data``, the
        ``(X, y)`` given to ``fit``, are what scikit-learn callbacks (``ScoringMonitor``)
        score.
        """

        def loop_step(iteration):
            task, mse, ok = step(iteration)
            return {"task_loss": task, "prediction_loss": mse} if ok else None

        def validate():
            task, mse = evaluate() if has_validation else (np.nan, np.nan)
            return {"task_loss": task, "prediction_loss": mse}

        loop = TrainingLoop(
            loop_step,
            max_iter=self.max_iter,
            snapshot=snapshot,
            restore=restore,
            validate=validate,
            monitor="validation_task_loss" if has_validation else None,
            record_interval=self.validation_interval,
            n_iter_no_change=self.n_iter_no_change,
            guard=guard,
            name=type(self).__name__,
            verbose=self.verbose,
            advice="Check the task loss or lower the learning rates.",
            callbacks=FitCallbacks(self, *data, fitted_attributes=fitted),
        )
        result = loop.run()
        self.n_iter_ = result.n_iter
        self.best_iteration_ = result.best_iteration
        # Every column, even when no step was recorded (a first step that failed).
        self.history_ = {key: result.history.get(key, np.asarray([])) for key in _HISTORY_KEYS}

    @torch.no_grad()
    def _evaluate_instances(self, predict, X, Y):
        """(mean task loss, MSE) of ``predict`` on instances X (b, m, p), Y (b, m, d)."""
        _, task, mse = task_objective(predict, X, Y, self._task_loss(), 0.0)
        return float(task), float(mse)

    def _prepare(self, X, y, groups):
        """Validate, group, split; tensors on the device. Returns what ``fit`` needs."""
        Xg, Yg = self._validate_fit_inputs(X, y, groups)
        device = resolve_device(self.device)
        # Independent streams: the split, the initial weights and the mini-batches.
        streams = RandomStreams(self.random_state)
        train, val = self._split_validation(Xg.shape[0], streams.numpy("validation_split"))
        generator = streams.torch("batches", device)
        tensors = [to_tensor(a, device) for a in (Xg[train], Yg[train], Xg[val], Yg[val])]
        tensors[1], tensors[3] = self._prepare_targets(tensors[1], tensors[3])
        return tensors, device, generator, streams

    def _prepare_targets(self, Y_train, Y_val):
        """Let the task attach what it computes once per target (optimal solutions)."""
        prepare = getattr(self.task, "prepare_targets", None)
        if prepare is None:
            return Y_train, Y_val
        Y_train = prepare(Y_train)
        return Y_train, prepare(Y_val, like=Y_train)

    # -- public methods ----------------------------------------------------------------

    def predict(self, X):
        """Predict targets with the fitted predictor.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Same number of dimensions as the ``y`` seen in ``fit``; dtype of ``X``.
        """
        check_is_fitted(self, "predictor_state_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        device = resolve_device(self.device)
        module = self._predictor_module(device, X.dtype)
        with torch.no_grad():
            pred = to_numpy(module(to_tensor(X, device)))
        return pred.ravel() if self._y_ndim == 1 else pred

    def score(self, X, y, sample_weight=None):
        """Coefficient of determination :math:`R^2` of the predictions.

        The prediction-accuracy score used by scikit-learn's model selection; see
        :meth:`task_score` for the quality of the decisions.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        float
        """
        return super().score(X, y, sample_weight=sample_weight)

    def task_score(self, X, y, groups=None):
        """Normalised decision quality of hard decisions made from the predictions.

        :math:`(q - q_\\text{rand}) / (q_\\text{opt} - q_\\text{rand})`, where :math:`q` is
        the mean quality of the task's decisions on the predicted targets, evaluated with the
        true targets: 1 means optimal decisions, 0 those of random decisions, negative worse
        than random. With ``task=None`` the task is the prediction itself and this is
        :math:`R^2`, whose reference is the constant mean prediction.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        groups : array-like of shape (n_samples,), optional
            Decision instance of each sample; required by tasks with ``requires_groups``.

        Returns
        -------
        float
        """
        check_is_fitted(self, "predictor_state_")
        if self.task is None:
            return float(r2_score(y, self.predict(X)))
        Xg, Yg = self._grouped_inputs(X, y, groups)
        device = resolve_device(self.device)
        module = self._predictor_module(device, Xg.dtype)
        b, m, p = Xg.shape
        with torch.no_grad():
            X_t = to_tensor(Xg.reshape(b * m, p), device)
            pred = module(X_t).reshape(b, m, -1)
            return float(self.task.normalized_decision_quality(pred, to_tensor(Yg, device)))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.non_deterministic = False
        return tags


# --------------------------------------------------------------------------------------
# TaskMetRegressor
# --------------------------------------------------------------------------------------


class TaskMetRegressor(_BaseTaskRegressor):
    r"""Predictor trained with a task-driven Mahalanobis prediction loss (TaskMet).

    TaskMet (Bansal, Chen, Mukadam and Amos, NeurIPS 2023) learns a metric
    :math:`\Lambda_\phi(x)` on the prediction space so that the predictor trained with the
    metric-weighted squared error makes good downstream decisions:

    .. math::

        \theta^\star(\phi) = \arg\min_\theta \frac{1}{n}\sum_{ij}
            (f_\theta(x_{ij}) - y_{ij})^\top \Lambda_\phi(x_{ij}) (f_\theta(x_{ij}) - y_{ij}),
        \qquad
        \min_\phi\; \mathcal{L}_\text{task}(\theta^\star(\phi))
            + \alpha\,\mathrm{MSE}(\theta^\star(\phi)).

    The predictor is trained on a prediction loss (so it stays a good predictor), while the
    metric is trained with implicit gradients of the task loss. The inner problem is solved
    by warm-started Adam; the implicit gradient solves :math:`H u = \nabla_\theta L` with
    conjugate gradient on Hessian-vector products (or an exact solve). The metric scale is
    normalised to the mean trace of the identity. See the :ref:`user guide <taskmet>`.

    Parameters
    ----------
    task : Task or None, default=None
        Downstream task (see :mod:`sktaskmet.tasks`): its relaxed ``loss(y_pred, y_true)``
        on (n_instances, m, n_outputs) tensors is the outer objective, and ``task_score``
        uses its hard decisions. ``None`` makes the prediction itself the task (outer loss =
        squared error, ``task_score`` = :math:`R^2`): TaskMet then reduces to least-squares
        regression, which is useful as a baseline and for pipelines that only need a
        regressor, not for task-driven learning.
    predictor : {"linear", "mlp"} or callable, default="linear"
        The model :math:`f_\theta`: a linear map, an MLP with ``hidden_layer_sizes`` (ReLU),
        or a callable ``(n_features, n_outputs) -> torch.nn.Module`` (built under the
        estimator's seed).
    hidden_layer_sizes : tuple of int, default=(100,)
        Hidden widths when ``predictor="mlp"``.
    metric : str, default="conditional_full"
        Parameterisation of :math:`\Lambda`: one of ``"conditional_full"``,
        ``"conditional_diagonal"``, ``"full"``, ``"diagonal"``, ``"identity"``. The
        paper's ``conditional_full`` is :math:`L(x)L(x)^\top + e^s I` with :math:`L(x)`
        from an MLP of the features; ``identity`` gives plain least squares (no metric
        learning).
    metric_hidden_layer_sizes : tuple of int, default=(200,)
        Hidden widths of the conditional metric's network.
    alpha : float, default=0.0
        Weight of the mean squared error in the outer objective (0 in the paper's TaskMet).
    inner_solver : {"adam", "closed_form"}, default="adam"
        How the inner problem is solved. ``"adam"``: warm-started Adam steps (any
        predictor). ``"closed_form"``: for ``predictor="linear"`` only, the exact
        metric-weighted (ridge ``damping``) least-squares solution at every outer step, and
        the exact hypergradient by back-propagation through that solve; the inner Adam
        settings, ``implicit_solver`` and ``cg_max_iter`` are then unused. A global metric
        (``"diagonal"``, ``"full"``) cannot change the exact minimiser of a linear model
        (all outputs share the features), so use a conditional metric with it.
    inner_steps_first : int, default=500
        Inner Adam steps at the first outer step.
    inner_steps : int, default=100
        Inner Adam steps at each later outer step (warm-started).
    inner_lr : float, default=0.01
        Learning rate of the inner Adam (the paper uses 0.1 for its linear cubic model).
    inner_batch_size : int, default=10
        Instances per inner mini-batch.
    inner_grad_clip : float or None, default=1.0
        Maximum norm of the inner gradient.
    implicit_solver : {"cg", "normal_cg", "exact"}, default="cg"
        Solver of :math:`H u = \nabla_\theta L`: conjugate gradient (for a positive
        definite Hessian; use ``damping`` for mildly non-convex predictors), conjugate
        gradient on the normal equations :math:`H^\top H u = H^\top v` (indefinite Hessians,
        e.g. MLP predictors), or a dense solve (small predictors).
    cg_max_iter : int, default=10
        Iterations of the (normal) conjugate gradient.
    damping : float, default=1e-5
        Ridge :math:`\delta` added to :math:`H` (``cg``, ``exact``) or :math:`H^\top H`
        (``normal_cg``).
    learning_rate : float, default=1e-3
        Learning rate of the outer Adam on the metric parameters.
    batch_size : int, default=50
        Instances in the outer batch; the same fixed batch gives the task-loss gradient, the
        Hessian and the cross term of the implicit gradient. Each epoch walks a new random
        permutation of the training instances (the last batch of an epoch holds the
        remainder).
    max_iter : int, default=1000
        Maximum number of outer steps.
    validation_fraction : float or None, default=0.1
        Fraction of the instances held out to monitor the validation task loss (early
        stopping and choice of the best iteration). ``None`` or 0 trains on all instances and
        keeps the last state.
    n_iter_no_change : int or None, default=100
        Stop after this many outer steps without a better validation loss.
    validation_loss : {"task_loss", "decision_loss"}, default="task_loss"
        What picks the best iteration and stops early: the task's relaxed training loss on
        the validation instances, or the loss of its hard decisions, minus the mean
        ``task.quality`` of ``task.decide`` on the predictions (for a linear program, the
        mean cost of the decisions: the regret up to a constant). Recorded in
        ``history_["validation_task_loss"]``.
    validation_interval : int, default=10
        Outer steps between validations (and history records).
    device : str or torch.device, default="auto"
        Where the computation runs; ``"auto"`` is CUDA when available. Resolved in ``fit``
        and ``predict``; the fitted state is kept in numpy, so ``set_params(device=...)``
        after ``fit`` works.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial modules, the validation split and all mini-batches.
    verbose : int, default=0
        Print the losses at every validation.

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` has string feature names.
    n_outputs_ : int
    group_size_ : int
        Items per decision instance ``m`` seen in ``fit``.
    predictor_state_ : dict of str to ndarray
        Fitted predictor parameters.
    metric_state_ : dict of str to ndarray
        Fitted metric parameters.
    metric_scale_ : float
        Normalisation constant :math:`c` of the metric at the end of training (mean trace
        of the raw :math:`\Lambda` over the training samples divided by ``n_outputs``);
        :meth:`metric_values` returns :math:`\Lambda / c`.
    n_iter_ : int
        Outer steps run.
    best_iteration_ : int
        Outer step of the kept state (best validation task loss).
    history_ : dict of str to ndarray
        ``iteration``, ``train_task_loss``, ``train_prediction_loss`` (means over the outer
        batches since the previous record), ``validation_task_loss`` and
        ``validation_prediction_loss``, recorded every ``validation_interval`` steps.
        Prediction losses are unweighted mean squared errors summed over outputs.

    See Also
    --------
    DFLRegressor : Trains the predictor on the task loss directly.
    sktaskmet.tasks.DecisionQualityScorer : Scores any regressor by its decisions.
    sktaskmet.plotting.MetricCurveDisplay : Plots the learned metric against the input.

    References
    ----------
    D. Bansal, R. T. Q. Chen, M. Mukadam and B. Amos. "TaskMet: Task-Driven Metric Learning
    for Model Learning". NeurIPS 2023.

    Examples
    --------
    The cubic top-1 problem: 50 items per instance, pick the one of largest value. A
    least-squares line picks nearly the worst item (decision quality about -0.97).

    >>> from sktaskmet import TaskMetRegressor
    >>> from sktaskmet.datasets import make_cubic_topk
    >>> from sktaskmet.tasks import TopK
    >>> X, y, groups = make_cubic_topk(n_instances=60, n_items=50, random_state=0)
    >>> model = TaskMetRegressor(TopK(k=1), inner_lr=0.1, max_iter=40, random_state=0,
    ...                          device="cpu").fit(X, y, groups=groups)
    >>> model.metric_values(X[:2]).shape  # the learned Lambda(x), one 1x1 matrix per row
    (2, 1, 1)
    >>> X_test, y_test, groups_test = make_cubic_topk(n_instances=100, random_state=1)
    >>> round(model.task_score(X_test, y_test, groups_test), 2)  # 1: optimal, 0: random
    0.96
    """

    _parameter_constraints: dict = {
        **_BaseTaskRegressor._parameter_constraints,
        "metric": [StrOptions(set(METRIC_KINDS))],
        "metric_hidden_layer_sizes": ["array-like"],
        "inner_steps_first": [Interval(Integral, 0, None, closed="left")],
        "inner_steps": [Interval(Integral, 0, None, closed="left")],
        "inner_lr": [Interval(Real, 0, None, closed="neither")],
        "inner_batch_size": [Interval(Integral, 1, None, closed="left")],
        "inner_grad_clip": [None, Interval(Real, 0, None, closed="neither")],
        "implicit_solver": [StrOptions(set(LINEAR_SOLVERS))],
        "cg_max_iter": [Interval(Integral, 1, None, closed="left")],
        "damping": [Interval(Real, 0, None, closed="left")],
        "inner_solver": [StrOptions({"adam", "closed_form"})],
        "validation_loss": [StrOptions({"task_loss", "decision_loss"})],
    }

    def __init__(
        self,
        task=None,
        *,
        predictor="linear",
        hidden_layer_sizes=(100,),
        metric="conditional_full",
        metric_hidden_layer_sizes=(200,),
        alpha=0.0,
        inner_solver="adam",
        inner_steps_first=500,
        inner_steps=100,
        inner_lr=0.01,
        inner_batch_size=10,
        inner_grad_clip=1.0,
        implicit_solver="cg",
        cg_max_iter=10,
        damping=1e-5,
        learning_rate=1e-3,
        batch_size=50,
        max_iter=1000,
        validation_fraction=0.1,
        n_iter_no_change=100,
        validation_loss="task_loss",
        validation_interval=10,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.task = task
        self.predictor = predictor
        self.hidden_layer_sizes = hidden_layer_sizes
        self.metric = metric
        self.metric_hidden_layer_sizes = metric_hidden_layer_sizes
        self.alpha = alpha
        self.inner_solver = inner_solver
        self.inner_steps_first = inner_steps_first
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.inner_batch_size = inner_batch_size
        self.inner_grad_clip = inner_grad_clip
        self.implicit_solver = implicit_solver
        self.cg_max_iter = cg_max_iter
        self.damping = damping
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.validation_loss = validation_loss
        self.validation_interval = validation_interval
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _make_metric(self, n_features, n_outputs):
        kwargs = {}
        if self.metric.startswith("conditional"):
            kwargs["hidden_layer_sizes"] = check_hidden_layer_sizes(
                self.metric_hidden_layer_sizes, "metric_hidden_layer_sizes"
            )
        return make_metric(self.metric, n_outputs, in_features=n_features, **kwargs)

    @fit_guard
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, groups=None):
        """Fit the predictor and the metric by alternating inner and implicit outer steps.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        groups : array-like of shape (n_samples,), optional
            Decision instance of each sample: the samples of one instance (the m items of a
            top-k problem, the assets of one day) share a label, and every instance has the
            same number of samples. Required when the task has ``requires_groups``; without
            it every sample is its own instance.

        Returns
        -------
        self : TaskMetRegressor
        """
        self._check_solver_options()
        (X_tr, Y_tr, X_val, Y_val), device, generator, streams = self._prepare(X, y, groups)
        dtype = X_tr.dtype
        n_features, n_outputs = X_tr.shape[-1], Y_tr.shape[-1]
        with streams.seeded("initial_weights"):
            predictor = self._make_predictor(n_features, n_outputs)
            metric = self._make_metric(n_features, n_outputs)
        predictor = predictor.to(device=device, dtype=dtype)
        metric = metric.to(device=device, dtype=dtype)
        solver_class = (
            ClosedFormBilevelSolver if self.inner_solver == "closed_form" else BilevelSolver
        )
        solver = solver_class(
            predictor,
            metric,
            self._task_loss(),
            alpha=self.alpha,
            inner_lr=self.inner_lr,
            inner_batch_size=self.inner_batch_size,
            inner_clip=self.inner_grad_clip,
            learning_rate=self.learning_rate,
            implicit_solver=self.implicit_solver,
            cg_max_iter=self.cg_max_iter,
            damping=self.damping,
            generator=generator,
        )
        X_train_flat = X_tr.reshape(-1, n_features)

        def step(iteration):
            n_inner = self.inner_steps_first if iteration == 1 else self.inner_steps
            return solver.outer_step(X_tr, Y_tr, X_train_flat, self.batch_size, n_inner)

        def evaluate():
            predict = lambda X: solver.predict(solver.theta, X)  # noqa: E731
            task, mse = self._evaluate_instances(predict, X_val, Y_val)
            if self.validation_loss == "decision_loss":
                task = self._decision_loss(predict, X_val, Y_val)
            return task, mse

        def fitted():
            return {
                "predictor_state_": _flat_state(solver.predictor, solver.theta),
                "metric_state_": state_to_numpy(metric),
                "metric_scale_": float(solver.train_metric_values(X_train_flat)[1]),
            }

        # The inner solve moves the predictor before the step's non-finite check: the
        # loop snapshots the solver state before every step to restore it.
        self._train(
            step,
            evaluate,
            solver.state,
            solver.restore,
            has_validation=X_val.shape[0] > 0,
            guard="snapshot",
            fitted=fitted,
            data=(X, y),
        )
        solver.write_back()
        _, scale = solver.train_metric_values(X_train_flat)
        self.predictor_state_ = state_to_numpy(predictor)
        self.metric_state_ = state_to_numpy(metric)
        self.metric_scale_ = float(scale)
        return self

    def _check_solver_options(self):
        """Combinations of parameters that no single constraint can express."""
        if self.inner_solver == "closed_form" and self.predictor != "linear":
            raise ValueError(
                "inner_solver='closed_form' solves the inner problem of a linear predictor; "
                f"got predictor={self.predictor!r}. Use predictor='linear' or "
                "inner_solver='adam'."
            )
        if self.validation_loss == "decision_loss" and self.task is None:
            raise ValueError(
                "validation_loss='decision_loss' scores the task's decisions, but task is "
                "None; pass a task or use validation_loss='task_loss'."
            )

    @torch.no_grad()
    def _decision_loss(self, predict, X, Y):
        """Minus the mean quality of the task's hard decisions on instances X, Y."""
        b, m, _ = X.shape
        pred = predict(X.reshape(b * m, -1)).reshape(b, m, -1)
        Y = Y.as_subclass(torch.Tensor)
        return -float(self.task.quality(self.task.decide(pred), Y).mean())

    # -- the learned metric --------------------------------------------------------------

    def _metric_module(self, device, dtype):
        with untouched_global_rng():
            module = self._make_metric(self.n_features_in_, self.n_outputs_)
        return load_numpy_state(module, self.metric_state_, device=device, dtype=dtype)

    def metric_values(self, X):
        r"""The learned, normalised metric :math:`\Lambda(x) / c` at each row of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_outputs, n_outputs)
            Symmetric positive definite matrices. For the non-conditional metrics every
            row holds the same matrix.
        """
        check_is_fitted(self, "metric_state_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self._metric_values(X)

    def _metric_values(self, X):
        device = resolve_device(self.device)
        module = self._metric_module(device, X.dtype)
        with torch.no_grad():
            values = metric_values(module, to_tensor(X, device)) / self.metric_scale_
            if values.dim() == 2:
                values = torch.diag_embed(values)
        return to_numpy(values)

    def get_mahalanobis_matrix(self, X=None):
        r"""The learned Mahalanobis matrix on the prediction space.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), optional
            For a conditional metric, the matrix averaged over these inputs,
            :math:`\frac{1}{n}\sum_i \Lambda(x_i) / c`; required then. Ignored by the
            global metrics.

        Returns
        -------
        ndarray of shape (n_outputs, n_outputs)
        """
        check_is_fitted(self, "metric_state_")
        if X is None:
            if self.metric.startswith("conditional"):
                raise ValueError(
                    f"metric={self.metric!r} depends on x: pass X to get_mahalanobis_matrix "
                    "(the matrix averaged over X is returned), or use metric_values(X)."
                )
            dtype = next(iter(self.metric_state_.values()), np.zeros(0)).dtype
            return self._metric_values(np.zeros((1, self.n_features_in_), dtype=dtype))[0]
        return self.metric_values(X).mean(axis=0)
