"""The shared training core (sktaskmet._training) and scikit-learn callbacks through it."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sktaskmet import DFLRegressor, TaskMetRegressor
from sktaskmet._training import (
    CALLBACKS_AVAILABLE,
    FitCallbacks,
    TrainingLoop,
)
from sktaskmet.exceptions import NonFiniteWarning

needs_callbacks = pytest.mark.skipif(
    not CALLBACKS_AVAILABLE, reason="scikit-learn < 1.9 has no sklearn.callback"
)


class Counter:
    """A toy trained state: one tensor; each step adds 1 and reports the new value."""

    def __init__(self, fail_at=None, corrupt=True):
        self.value = torch.zeros(())
        self.fail_at = fail_at
        self.corrupt = corrupt

    def step(self, iteration):
        if iteration == self.fail_at:
            if self.corrupt:
                self.value += torch.nan  # a step that damages the state before noticing
            return None
        self.value += 1
        return {"loss": self.value.clone()}

    def snapshot(self):
        return self.value.clone()

    def restore(self, state):
        self.value.copy_(state)


def test_history_records_means_between_records_and_the_last_step():
    counter = Counter()
    result = TrainingLoop(
        counter.step,
        max_iter=5,
        snapshot=counter.snapshot,
        restore=counter.restore,
        record_interval=2,
    ).run()
    assert result.n_iter == result.best_iteration == 5
    assert result.stop_reason == "max_iter"
    np.testing.assert_array_equal(result.history["iteration"], [2, 4, 5])
    # Means of the step values since the previous record: (1+2)/2, (3+4)/2, 5.
    np.testing.assert_array_equal(result.history["train_loss"], [1.5, 3.5, 5.0])


def test_non_finite_step_restores_the_state_before_it_and_warns():
    counter = Counter(fail_at=4)
    with pytest.warns(NonFiniteWarning, match="iteration 4 .*last good state.*Lower it"):
        result = TrainingLoop(
            counter.step,
            max_iter=10,
            snapshot=counter.snapshot,
            restore=counter.restore,
            name="Toy",
            advice="Lower it.",
        ).run()
    assert float(counter.value) == 3.0
    assert result.n_iter == 3
    assert result.stop_reason == "non_finite"
    np.testing.assert_array_equal(result.history["iteration"], [1, 2, 3])


def test_checked_guard_trusts_the_step_and_takes_no_snapshot():
    counter = Counter(fail_at=3, corrupt=False)
    snapshots = []

    def snapshot():
        snapshots.append(1)
        return counter.snapshot()

    with pytest.warns(NonFiniteWarning):
        result = TrainingLoop(
            counter.step, max_iter=5, snapshot=snapshot, restore=counter.restore, guard="checked"
        ).run()
    assert snapshots == []
    assert float(counter.value) == 2.0 and result.n_iter == 2


def test_early_stopping_restores_the_best_state():
    counter = Counter()
    # Validation loss (value - 3)^2 is best at step 3, then grows.
    validations = []

    def validate():
        validations.append(float(counter.value))
        return {"loss": (float(counter.value) - 3.0) ** 2}

    result = TrainingLoop(
        counter.step,
        max_iter=50,
        snapshot=counter.snapshot,
        restore=counter.restore,
        validate=validate,
        monitor="validation_loss",
        n_iter_no_change=4,
    ).run()
    assert result.stop_reason == "early_stopping"
    assert result.n_iter == 7  # 4 steps without improvement after step 3
    assert result.best_iteration == 3
    assert float(counter.value) == 3.0
    np.testing.assert_array_equal(result.history["validation_loss"], [4, 1, 0, 1, 4, 9, 16])


def test_nan_validation_counts_as_no_improvement():
    counter = Counter()
    result = TrainingLoop(
        counter.step,
        max_iter=10,
        snapshot=counter.snapshot,
        restore=counter.restore,
        validate=lambda: {"loss": 1.0 if float(counter.value) == 1 else np.nan},
        monitor="validation_loss",
        n_iter_no_change=2,
    ).run()
    assert result.best_iteration == 1 and result.n_iter == 3
    assert float(counter.value) == 1.0


def test_verbose_prints_records_and_early_stopping(capsys):
    counter = Counter()
    TrainingLoop(
        counter.step,
        max_iter=20,
        snapshot=counter.snapshot,
        restore=counter.restore,
        validate=lambda: {"loss": float(counter.value)},
        monitor="validation_loss",
        n_iter_no_change=2,
        name="Toy",
        verbose=1,
    ).run()
    out = capsys.readouterr().out
    assert "[Toy] iteration 1: train loss 1, validation loss 1 (" in out
    assert "[Toy] early stopping: no validation loss improvement for 2 iterations." in out


def test_silent_without_verbose(capsys):
    counter = Counter()
    TrainingLoop(counter.step, max_iter=3, snapshot=counter.snapshot, restore=counter.restore).run()
    assert capsys.readouterr().out == ""


def test_loop_rejects_a_guard_without_snapshot():
    with pytest.raises(ValueError, match="snapshot and restore"):
        TrainingLoop(lambda i: {}, max_iter=1)
    with pytest.raises(ValueError, match="guard must be"):
        TrainingLoop(lambda i: {}, max_iter=1, guard="none")


def test_estimator_without_callback_support_runs_the_hooks_as_no_ops():
    counter = Counter()
    callbacks = FitCallbacks(object(), fitted_attributes=lambda: pytest.fail("not called"))
    result = TrainingLoop(
        counter.step,
        max_iter=3,
        snapshot=counter.snapshot,
        restore=counter.restore,
        callbacks=callbacks,
    ).run()
    assert result.n_iter == 3


# --------------------------------------------------------------------------------------
# scikit-learn callbacks through the core
# --------------------------------------------------------------------------------------


def _data():
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, size=(60, 2))
    return X, X[:, 0] ** 3 + 0.1 * rng.normal(size=60)


TASKMET_FAST = dict(
    max_iter=4,
    inner_steps_first=20,
    inner_steps=5,
    inner_lr=0.1,
    metric_hidden_layer_sizes=(4,),
    validation_interval=2,
    device="cpu",
    random_state=0,
)
DFL_FAST = dict(max_iter=12, learning_rate=0.1, validation_interval=4, device="cpu", random_state=0)


class _NaNTask:
    """A task whose loss is NaN: the first step of TaskMet and DFL fails."""

    def loss(self, y_pred, y_true):
        return ((y_pred - y_true) ** 2).sum(-1).mean(-1) * torch.nan


@pytest.mark.parametrize(
    "Estimator, params", [(TaskMetRegressor, TASKMET_FAST), (DFLRegressor, DFL_FAST)]
)
def test_a_failed_first_step_keeps_the_initial_model_and_every_history_column(Estimator, params):
    X, y = _data()
    with pytest.warns(NonFiniteWarning, match=f"{Estimator.__name__}: the step at iteration 1"):
        model = Estimator(_NaNTask(), **params).fit(X, y)
    assert model.n_iter_ == model.best_iteration_ == 0
    assert set(model.history_) == {
        "iteration",
        "train_task_loss",
        "train_prediction_loss",
        "validation_task_loss",
        "validation_prediction_loss",
    }
    assert all(len(column) == 0 for column in model.history_.values())
    assert np.isfinite(model.predict(X)).all()


@needs_callbacks
def test_progress_bars_nest_under_grid_search_and_pipeline(capsys):
    pytest.importorskip("rich")
    from sklearn.callback import ProgressBar

    X, y = _data()
    pipe = Pipeline([("scale", StandardScaler()), ("model", TaskMetRegressor(**TASKMET_FAST))])
    search = GridSearchCV(pipe, {"model__alpha": [0.0, 1.0]}, cv=2)
    search.set_callbacks(ProgressBar(max_propagation_depth=None))
    search.fit(X, y)
    out = capsys.readouterr().out
    assert "GridSearchCV - fit" in out
    # One bar per TaskMet fit: 2 candidates x 2 splits, and the refit.
    bars = [line for line in out.splitlines() if "TaskMetRegressor - fit" in line]
    assert len(bars) == 5
    for line in bars:
        assert "Pipeline - fit-final-estimator | TaskMetRegressor - fit" in line
        assert "100%" in line
    # The TaskMet bars sit one level below their Pipeline bar.
    indent = [len(line) - len(line.lstrip()) for line in out.splitlines()]
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if "TaskMetRegressor - fit" in line:
            parent = max(j for j in range(i) if "| Pipeline - fit" in lines[j])
            assert indent[i] == indent[parent] + 2


@needs_callbacks
@pytest.mark.parametrize(
    "Estimator, params", [(TaskMetRegressor, TASKMET_FAST), (DFLRegressor, DFL_FAST)]
)
def test_scoring_monitor_records_a_score_per_iteration(Estimator, params):
    pytest.importorskip("pandas")
    from sklearn.callback import ScoringMonitor

    X, y = _data()
    monitor = ScoringMonitor(scoring="r2")
    model = Estimator(**params).set_callbacks(monitor).fit(X, y)
    log = monitor.get_logs().data_as_pandas
    iterations = log[log["task_name"] == "iteration"]
    assert len(iterations) == model.n_iter_ == params["max_iter"]
    assert iterations["r2"].nunique() == len(iterations)  # the predictor moves every step
    # The fit task's score is the final model's.
    final = log[log["task_name"] == "fit"]["r2"]
    assert final.iloc[0] == pytest.approx(model.score(X, y))


@needs_callbacks
def test_a_callback_can_stop_the_loop():
    class StopAfterTwo:
        def __init__(self):
            self.ended = 0

        def setup(self, estimator, context):
            pass

        def teardown(self, estimator, context):
            pass

        def on_fit_task_begin(self, estimator, context):
            pass

        def on_fit_task_end(self, estimator, context):
            if context.task_name == "iteration":
                self.ended += 1
            return self.ended >= 2

    X, y = _data()
    model = DFLRegressor(**DFL_FAST).set_callbacks(StopAfterTwo()).fit(X, y)
    assert model.n_iter_ == 2


@needs_callbacks
def test_callbacks_leave_the_fitted_model_unchanged():
    pytest.importorskip("pandas")
    from sklearn.callback import ScoringMonitor

    X, y = _data()
    plain = TaskMetRegressor(**TASKMET_FAST).fit(X, y)
    monitored = clone(plain).set_callbacks(ScoringMonitor(scoring="r2")).fit(X, y)
    np.testing.assert_array_equal(plain.predict(X), monitored.predict(X))
    np.testing.assert_array_equal(plain.metric_values(X[:3]), monitored.metric_values(X[:3]))


_NO_CALLBACKS_SCRIPT = textwrap.dedent(
    """
    import sys, types
    import numpy as np
    # Import everything once so that scikit-learn's own modules stay loaded, then hide
    # sklearn.callback the way scikit-learn < 1.9 lacks it and import sktaskmet afresh.
    import sktaskmet  # noqa: F401
    for name in [name for name in sys.modules if name.split(".")[0] == "sktaskmet"]:
        del sys.modules[name]
    sys.modules["sklearn.callback"] = types.ModuleType("sklearn.callback")
    from sktaskmet import DFLRegressor, TaskMetRegressor
    from sktaskmet._training import CALLBACKS_AVAILABLE
    assert not CALLBACKS_AVAILABLE
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, size=(40, 2)); y = X[:, 0]
    for model in (TaskMetRegressor(max_iter=2, inner_steps_first=5, inner_steps=2,
                                   metric_hidden_layer_sizes=(4,), device="cpu"),
                  DFLRegressor(max_iter=5, device="cpu")):
        assert not hasattr(model, "set_callbacks")
        assert np.isfinite(model.fit(X, y).predict(X)).all()
    print("ok")
    """
)


def test_without_sklearn_callback_estimators_fit_with_no_callbacks():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", _NO_CALLBACKS_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


class _NotIterative(RegressorMixin, BaseEstimator):
    pass


def test_fit_callbacks_of_a_plain_estimator_are_disabled():
    assert not FitCallbacks(_NotIterative()).enabled


# --------------------------------------------------------------------------------------
# The discovery estimators on the core
# --------------------------------------------------------------------------------------

AGREEMENT_FAST = dict(hidden_layer_sizes=(8,), max_epochs=3, batch_size=16, device="cpu")
DISCOVERY_FAST = dict(
    n_tasks=2,
    hidden_layer_sizes=(4,),
    inner_steps=2,
    max_iter=3,
    batch_size=16,
    agreement_scorer="skip",
    device="cpu",
    random_state=0,
)


def _labels():
    X, y = _data()
    return X, (y > np.median(y)).astype(int)


@needs_callbacks
def test_discovery_progress_bars_nest_under_grid_search_and_pipeline(capsys):
    pytest.importorskip("rich")
    from sklearn.callback import ProgressBar
    from sklearn.linear_model import LogisticRegression

    from sktaskmet import TaskDiscovery

    X, y = _labels()
    pipe = Pipeline([("discover", TaskDiscovery(**DISCOVERY_FAST)), ("clf", LogisticRegression())])
    search = GridSearchCV(pipe, {"discover__n_tasks": [1, 2]}, cv=2)
    search.set_callbacks(ProgressBar(max_propagation_depth=None))
    search.fit(X, y)
    out = capsys.readouterr().out
    bars = [line for line in out.splitlines() if "TaskDiscovery - fit" in line]
    assert len(bars) == 5  # 2 candidates x 2 splits, and the refit
    assert all("Pipeline - fit" in line and "100%" in line for line in bars)


@needs_callbacks
def test_agreement_scorer_progress_bar_and_scores_per_epoch(capsys):
    pytest.importorskip("rich")
    pytest.importorskip("pandas")
    from sklearn.callback import ProgressBar, ScoringMonitor

    from sktaskmet import AgreementScorer

    X, y = _labels()
    monitor = ScoringMonitor(scoring={"agreement": lambda model, X, y: model.score(X)})
    scorer = AgreementScorer(random_state=0, **AGREEMENT_FAST)
    scorer.set_callbacks(ProgressBar(), monitor).fit(X, y)
    assert "AgreementScorer - fit" in capsys.readouterr().out
    log = monitor.get_logs().data_as_pandas
    epochs = log[log["task_name"] == "iteration"]
    assert len(epochs) == scorer.n_iter_ == 3
    final = log[log["task_name"] == "fit"]["agreement"]
    assert final.iloc[0] == pytest.approx(scorer.score(X))
    # Monitoring does not change the fitted networks.
    plain = AgreementScorer(random_state=0, **AGREEMENT_FAST).fit(X, y)
    for name, value in plain.ensemble_state_.items():
        np.testing.assert_array_equal(scorer.ensemble_state_[name], value)


@needs_callbacks
def test_agreement_scorer_reports_one_task_per_chunk_of_labelings():
    from joblib import parallel_backend

    from sktaskmet import AgreementScorer

    class Count:
        def __init__(self):
            self.ended = []

        def setup(self, estimator, context):
            pass

        def teardown(self, estimator, context):
            pass

        def on_fit_task_begin(self, estimator, context):
            pass

        def on_fit_task_end(self, estimator, context):
            self.ended.append(context.task_name)

    X, y = _labels()
    labelings = np.column_stack([y, 1 - y, X[:, 1] > 0, X[:, 0] > 0.5]).astype(int)
    count = Count()
    scorer = AgreementScorer(n_jobs=2, random_state=0, **AGREEMENT_FAST).set_callbacks(count)
    with parallel_backend("threading"):
        scorer.fit(X, labelings)
    assert count.ended == ["iteration", "iteration", "fit"]


@needs_callbacks
def test_task_discovery_scoring_monitor_sees_the_tasks_of_every_iteration():
    pytest.importorskip("pandas")
    from sklearn.callback import ScoringMonitor

    from sktaskmet import TaskDiscovery

    X, y = _labels()

    def balance(model, X, y):
        return float(model.transform(X).mean())

    monitor = ScoringMonitor(scoring={"balance": balance})
    monitored = TaskDiscovery(**DISCOVERY_FAST).set_callbacks(monitor).fit(X, y)
    log = monitor.get_logs().data_as_pandas
    iterations = log[log["task_name"] == "iteration"]
    assert len(iterations) == monitored.n_iter_ == 3
    final = log[log["task_name"] == "fit"]["balance"]
    assert final.iloc[0] == pytest.approx(monitored.tasks_.mean())
    plain = TaskDiscovery(**DISCOVERY_FAST).fit(X)
    np.testing.assert_array_equal(plain.tasks_, monitored.tasks_)
    for key, value in plain.encoder_state_.items():
        np.testing.assert_array_equal(monitored.encoder_state_[key], value)


# --------------------------------------------------------------------------------------
# Task attribution: GradientSubsetEstimator reports its batches of examples through the core
# --------------------------------------------------------------------------------------

_NO_CALLBACKS_GRADIENT_SCRIPT = textwrap.dedent(
    """
    import sys, types
    import numpy as np, torch
    import sktaskmet  # noqa: F401
    for name in [name for name in sys.modules if name.split(".")[0] == "sktaskmet"]:
        del sys.modules[name]
    sys.modules["sklearn.callback"] = types.ModuleType("sklearn.callback")
    from sktaskmet import GradientSubsetEstimator
    rng = np.random.RandomState(0)
    X = rng.normal(size=(30, 4)); y = (X[:, 0] > 0).astype(int)
    est = GradientSubsetEstimator(torch.nn.Linear(4, 2).double(), projection_dim=4,
                                  device="cpu", random_state=0)
    assert not hasattr(est, "set_callbacks")
    est.fit(X, y, tasks=np.repeat([0, 1, 2], 10), X_target=X[:5], y_target=y[:5])
    assert np.isfinite(est.estimate([[1, 1, 1], [1, 0, 0]])).all()
    print("ok")
    """
)


def test_without_sklearn_callback_the_gradient_estimator_fits_with_no_callbacks():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", _NO_CALLBACKS_GRADIENT_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
