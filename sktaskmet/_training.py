r"""The training core shared by the iterative estimators.

Every iterative estimator in sktaskmet needs the same machinery around its own update
rule: a step loop up to ``max_iter``, a history of the losses, tracking and restoring the
best state on validation data, early stopping, a guard against NaN and infinity that
restores the last good state and warns with :class:`~sktaskmet.exceptions.NonFiniteWarning`,
and progress reporting (``verbose`` prints and scikit-learn >= 1.9 callbacks such as
:class:`sklearn.callback.ProgressBar` and :class:`sklearn.callback.ScoringMonitor`). This
module writes it once; an estimator plugs its step function into :class:`TrainingLoop`.

How an estimator plugs in
-------------------------
1. Derive the estimator from :class:`CallbackSupportMixin` (left of ``BaseEstimator``) and
   decorate ``fit`` with :func:`sklearn.base._fit_context`; on scikit-learn >= 1.9 that
   gives ``set_callbacks`` and tears the callbacks down after ``fit``. On older releases
   the mixin is empty: no ``set_callbacks``, and the loop runs without callbacks.
2. Write the update rule as ``step(iteration) -> dict or None``: it performs iteration
   ``iteration`` (counted from 1) and returns named training values (scalar tensors or
   floats, e.g. ``{"task_loss": ..., "prediction_loss": ...}``), or ``None`` when it met
   a NaN or infinity. The loop then restores the state before that step and stops
   (``guard="snapshot"``), or trusts the step to have checked *before* applying its update
   (``guard="checked"``, cheaper: no snapshot per step).
3. Give ``snapshot() -> state`` and ``restore(state)`` (copies of everything the step
   changes: parameters, optimizer moments), and optionally ``validate() -> dict`` with
   the validation values and ``monitor``, the history key to minimise (best state, early
   stopping).
4. Build the loop, ``run()`` it and store ``result.n_iter``, ``result.best_iteration``
   and ``result.history`` as fitted attributes::

       loop = TrainingLoop(
           step, max_iter=self.max_iter, snapshot=opt.state, restore=opt.restore,
           validate=evaluate, monitor="validation_loss", n_iter_no_change=10,
           name=type(self).__name__, verbose=self.verbose,
           callbacks=FitCallbacks(self, X, y, fitted_attributes=lambda: {...}),
       )
       result = loop.run()

   ``fitted_attributes`` returns the fitted attributes of the current state (what
   ``predict`` needs); it is called lazily, only when a callback such as
   :class:`~sklearn.callback.ScoringMonitor` asks for a fitted estimator, so a fit
   without callbacks does no extra work and gives exactly the same model.

The loop records the history every ``record_interval`` steps and at the last step:
``iteration``, ``train_<key>`` (mean of the step values since the previous record) and
``validation_<key>`` for each value of ``validate()``. Each step is one callback task
(``task_name="iteration"``) below the estimator's ``fit`` task, so progress bars nest
under a :class:`~sklearn.pipeline.Pipeline` or :class:`~sklearn.model_selection.GridSearchCV`.
A callback whose ``on_fit_task_end`` returns True stops the loop after that step.
"""

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .exceptions import NonFiniteWarning

__all__ = [
    "CALLBACKS_AVAILABLE",
    "CallbackSupportMixin",
    "FitCallbacks",
    "TrainingLoop",
    "TrainingResult",
]

try:  # scikit-learn >= 1.9
    from sklearn.callback import CallbackSupportMixin

    CALLBACKS_AVAILABLE = True
except ImportError:  # scikit-learn 1.6 - 1.8: no callbacks, the loop runs without them
    CALLBACKS_AVAILABLE = False

    class CallbackSupportMixin:
        """Stand-in on scikit-learn < 1.9, which has no callbacks: adds nothing."""


# Why a loop ended, as stored in TrainingResult.stop_reason.
STOP_MAX_ITER = "max_iter"
STOP_EARLY = "early_stopping"
STOP_NON_FINITE = "non_finite"
STOP_CALLBACK = "callback"

_GUARDS = ("snapshot", "checked")


class _NoCallbackContext:
    """The callback context of an estimator without callback support: does nothing."""

    def subcontext(self, **kwargs):
        return self

    def call_on_fit_task_begin(self, **kwargs):
        return self

    def call_on_fit_task_end(self, **kwargs):
        return False


class FitCallbacks:
    """The scikit-learn callback hooks of one ``fit``, around the steps of the loop.

    Parameters
    ----------
    estimator : estimator instance
        The estimator being fitted. Callbacks run when it has scikit-learn's
        ``_init_callback_context`` (scikit-learn >= 1.9 and :class:`CallbackSupportMixin`);
        otherwise every hook is a no-op.
    X, y : array-like or None
        The training data given to the hooks (``ScoringMonitor`` scores on them).
    fitted_attributes : callable or None
        ``() -> dict`` of the fitted attributes of the current state; evaluated only when
        a callback asks for a ``fitted_estimator``.
    metadata : dict or None
        Training metadata given to the hooks (e.g. ``{"sample_weight": w}``).
    """

    def __init__(self, estimator, X=None, y=None, *, fitted_attributes=None, metadata=None):
        self.estimator = estimator
        self.X = X
        self.y = y
        self.fitted_attributes = fitted_attributes
        self.metadata = metadata
        self._root = None

    @property
    def enabled(self):
        return CALLBACKS_AVAILABLE and hasattr(self.estimator, "_init_callback_context")

    def _hook_data(self, with_state):
        data = {"estimator": self.estimator, "X": self.X, "y": self.y, "metadata": self.metadata}
        if with_state and self.fitted_attributes is not None:
            data["reconstruction_attributes"] = self.fitted_attributes
        return data

    def begin_fit(self, max_iter):
        """Open the estimator's ``fit`` task with ``max_iter`` step subtasks."""
        if self.enabled:
            self._root = self.estimator._init_callback_context(max_subtasks=max_iter)
        else:
            self._root = _NoCallbackContext()
        self._root.call_on_fit_task_begin(**self._hook_data(with_state=False))

    def begin_step(self):
        """Open the task of the next step; returns its context."""
        context = self._root.subcontext(task_name="iteration")
        context.call_on_fit_task_begin(**self._hook_data(with_state=False))
        return context

    def end_step(self, context, finished):
        """Close a step's task; True when a callback asks to stop.

        ``finished=False`` (a step that failed) closes it as an empty task.
        """
        if not finished:
            return bool(context.call_on_fit_task_end(estimator=self.estimator))
        return bool(context.call_on_fit_task_end(**self._hook_data(with_state=True)))

    def end_fit(self):
        """Close the ``fit`` task, with the final (restored) state."""
        self._root.call_on_fit_task_end(**self._hook_data(with_state=True))

    def stage(self, name, *, fitted_attributes=None):
        """The callbacks of one of several loops that a ``fit`` runs one after the other.

        A fit made of stages (SCML: the global solve, the local solve, the network head)
        opens its own task with ``begin_fit(n_stages)``, gives each stage's
        :class:`TrainingLoop` ``callbacks=callbacks.stage(name, ...)`` and closes its task
        with ``end_fit()`` after the last stage. Each stage is then a task ``name`` below
        the fit task, with its steps below it: a progress bar per stage, and
        ``ScoringMonitor`` scores at every step of every stage.

        Parameters
        ----------
        name : str
            Task name of the stage (e.g. ``"global solve"``).
        fitted_attributes : callable or None
            ``() -> dict or None`` of the fitted attributes of the stage's current state;
            ``None`` (or a callable returning None) when that state cannot predict yet.

        Returns
        -------
        FitCallbacks
        """
        return _StageCallbacks(self, name, fitted_attributes)


class _StageCallbacks(FitCallbacks):
    """The callbacks of one stage: its task is a subtask of the fit task of ``parent``."""

    def __init__(self, parent, name, fitted_attributes):
        super().__init__(
            parent.estimator,
            parent.X,
            parent.y,
            fitted_attributes=fitted_attributes,
            metadata=parent.metadata,
        )
        self._parent = parent
        self.name = name

    def begin_fit(self, max_iter):
        """Open the stage's task, below the fit task, with ``max_iter`` step subtasks."""
        self._root = self._parent._root.subcontext(task_name=self.name, max_subtasks=max_iter)
        self._root.call_on_fit_task_begin(**self._hook_data(with_state=False))


@dataclass
class TrainingResult:
    """What :meth:`TrainingLoop.run` returns.

    Attributes
    ----------
    n_iter : int
        Steps completed (a step that produced NaN or infinity does not count).
    best_iteration : int
        Step of the kept state: the best monitored value, or the last completed step when
        nothing is monitored.
    history : dict of str to ndarray
        ``iteration`` and the recorded ``train_*`` and ``validation_*`` values.
    stop_reason : {"max_iter", "early_stopping", "non_finite", "callback"}
    """

    n_iter: int
    best_iteration: int
    history: dict
    stop_reason: str


def _mean(values):
    """Mean of step values: device tensors are stacked (one host sync), floats averaged."""
    if isinstance(values[0], torch.Tensor):
        return float(torch.stack(values).mean())
    return float(np.mean(values))


class _History:
    """Accumulates step values and records their means with the validation values."""

    def __init__(self):
        self.columns = {"iteration": []}
        self._pending = {}

    def add_step(self, values):
        for key, value in values.items():
            self._pending.setdefault(key, []).append(value)

    def record(self, iteration, validation):
        row = {"iteration": iteration}
        row.update({f"train_{key}": _mean(values) for key, values in self._pending.items()})
        row.update({f"validation_{key}": float(value) for key, value in validation.items()})
        self._pending = {}
        for key, value in row.items():
            self.columns.setdefault(key, []).append(value)
        return row

    def as_arrays(self):
        return {key: np.asarray(values) for key, values in self.columns.items()}


class TrainingLoop:
    """Step loop with history, best-state restore, early stopping and a non-finite guard.

    See the module docstring for how an estimator plugs its step function in.

    Parameters
    ----------
    step : callable
        ``step(iteration) -> dict or None``; ``None`` signals a NaN or infinity.
    max_iter : int
        Maximum number of steps.
    snapshot, restore : callable or None
        ``snapshot() -> state`` copies what the steps change; ``restore(state)`` puts it
        back. Required when ``monitor`` is set or ``guard="snapshot"``.
    validate : callable or None
        ``validate() -> dict`` of validation values, called at every record.
    monitor : str or None
        History key (e.g. ``"validation_task_loss"``) to minimise: the state with its
        lowest value is restored at the end, and training stops after
        ``n_iter_no_change`` steps without improvement. A NaN counts as no improvement.
        ``None`` keeps the last state.
    record_interval : int, default=1
        Steps between records (validation, history, verbose line); the last step is
        always recorded.
    n_iter_no_change : int or None
        Patience of early stopping, in steps; ``None`` disables it.
    guard : {"snapshot", "checked"}, default="snapshot"
        ``"snapshot"`` copies the state before every step and restores it when the step
        returns ``None``; ``"checked"`` trusts the step to leave the state untouched then.
    name : str
        Prefix of the messages (the estimator's class name).
    verbose : int, default=0
        Print the record values (and early stopping) when positive.
    advice : str
        Appended to the non-finite warning: what the user can change.
    callbacks : FitCallbacks or None
        The scikit-learn callbacks of the fit.
    """

    def __init__(
        self,
        step,
        *,
        max_iter,
        snapshot=None,
        restore=None,
        validate=None,
        monitor=None,
        record_interval=1,
        n_iter_no_change=None,
        guard="snapshot",
        name="",
        verbose=0,
        advice="",
        callbacks=None,
    ):
        if guard not in _GUARDS:
            raise ValueError(f"guard must be one of {_GUARDS}; got {guard!r}.")
        if (monitor is not None or guard == "snapshot") and (snapshot is None or restore is None):
            raise ValueError("snapshot and restore are required to monitor or guard by snapshot.")
        self.step = step
        self.max_iter = int(max_iter)
        self.snapshot = snapshot
        self.restore = restore
        self.validate = validate
        self.monitor = monitor
        self.record_interval = int(record_interval)
        self.n_iter_no_change = n_iter_no_change
        self.guard = guard
        self.name = name
        self.verbose = verbose
        self.advice = advice
        self.callbacks = callbacks if callbacks is not None else FitCallbacks(None)

    def run(self):
        """Run the steps; restore the best state; return a :class:`TrainingResult`."""
        history = _History()
        self._best = (np.inf, 0, None)  # (value, iteration, state)
        self._start = time.perf_counter()
        n_done, reason = 0, STOP_MAX_ITER
        self.callbacks.begin_fit(self.max_iter)
        for iteration in range(1, self.max_iter + 1):
            context = self.callbacks.begin_step()
            before = self.snapshot() if self.guard == "snapshot" else None
            values = self.step(iteration)
            if values is None:
                self._non_finite(iteration, before)
                self.callbacks.end_step(context, finished=False)
                reason = STOP_NON_FINITE
                break
            n_done = iteration
            history.add_step(values)
            stop = None
            if iteration % self.record_interval == 0 or iteration == self.max_iter:
                stop = self._record(history, iteration)
            if self.callbacks.end_step(context, finished=True) and stop is None:
                stop = STOP_CALLBACK
            if stop is not None:
                reason = stop
                break
        best_value, best_iteration, best_state = self._best
        if best_state is not None:
            self.restore(best_state)
        else:
            best_iteration = n_done
        self.callbacks.end_fit()
        return TrainingResult(n_done, best_iteration, history.as_arrays(), reason)

    def _record(self, history, iteration):
        """Validate, record, report; returns STOP_EARLY when patience ran out."""
        validation = self.validate() if self.validate is not None else {}
        row = history.record(iteration, validation)
        self._print_row(row)
        if self.monitor is None:
            return None
        value = row[self.monitor]
        value = value if np.isfinite(value) else np.inf
        best_value, best_iteration, _ = self._best
        if value < best_value:
            self._best = (value, iteration, self.snapshot())
        elif self.n_iter_no_change is not None and (
            iteration - best_iteration >= self.n_iter_no_change
        ):
            if self.verbose:
                print(
                    f"[{self.name}] early stopping: no {self.monitor.replace('_', ' ')} "
                    f"improvement for {iteration - best_iteration} iterations."
                )
            return STOP_EARLY
        return None

    def _print_row(self, row):
        if not self.verbose:
            return
        values = ", ".join(
            f"{key.replace('_', ' ')} {value:.4g}"
            for key, value in row.items()
            if key != "iteration"
        )
        elapsed = time.perf_counter() - self._start
        print(f"[{self.name}] iteration {row['iteration']}: {values} ({elapsed:.1f} s)")

    def _non_finite(self, iteration, before):
        if before is not None:
            self.restore(before)
        warnings.warn(
            f"{self.name}: the step at iteration {iteration} produced NaN or infinity; the "
            f"last good state was restored and training stopped there. {self.advice}".rstrip(),
            NonFiniteWarning,
            stacklevel=4,
        )
