"""TaskMetRegressor and DFLRegressor: behaviour, scikit-learn use, bad input, state."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from sklearn import config_context
from sklearn.base import clone
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktaskmet import DFLRegressor, TaskMetRegressor
from sktaskmet.exceptions import NonFiniteWarning
from sktaskmet.tasks import DecisionQualityScorer
from tests._axioms import assert_distance_axioms, assert_psd, float_arrays, metric_scale, rtol_for


class SoftTop1:
    """A small top-1 selection task with a softmax relaxation (a test double of a Task)."""

    requires_groups = True
    n_outputs = 1

    def __init__(self, temperature=0.02):
        self.temperature = temperature

    def check_targets(self, y):
        if y.shape[-1] != 1:
            raise ValueError("SoftTop1 needs one output")

    def loss(self, y_pred, y_true):
        # Temperature relative to each instance's spread of predictions: sharp at any scale.
        scores = y_pred[..., 0]
        spread = (scores.max(1, keepdim=True).values - scores.min(1, keepdim=True).values).detach()
        weights = torch.softmax(scores / (self.temperature * spread + 1e-12), dim=1)
        return -(weights * y_true[..., 0]).sum(1)

    def decide(self, y_pred):
        best = y_pred[..., 0].argmax(1)
        return torch.nn.functional.one_hot(best, y_pred.shape[1]).to(y_pred.dtype)

    def quality(self, decisions, y_true):
        return (decisions * y_true[..., 0]).sum(1)

    def normalized_decision_quality(self, y_pred, y_true):
        quality = self.quality(self.decide(y_pred), y_true).mean()
        optimal = y_true[..., 0].max(1).values.mean()
        random = y_true[..., 0].mean(1).mean()
        return float((quality - random) / (optimal - random))


class NaNTask(SoftTop1):
    def loss(self, y_pred, y_true):
        return super().loss(y_pred, y_true) * torch.nan


class SumTask(SoftTop1):
    def loss(self, y_pred, y_true):
        return super().loss(y_pred, y_true).sum()


class InstanceRecorder(SoftTop1):
    """SoftTop1 that records the instances of every training batch it is given.

    The targets of instance i lie in [i, i + 0.4), so rounding the first target of a batch
    row gives its instance. Training batches are told apart from evaluations by their
    graph: only a training step asks for the loss's gradient.
    """

    def __init__(self):
        super().__init__()
        self.batches = []

    def loss(self, y_pred, y_true):
        if y_pred.requires_grad:
            self.batches.append(sorted(y_true[:, 0, 0].round().long().tolist()))
        return super().loss(y_pred, y_true)


def cubic(n_instances, m, seed):
    rng = np.random.RandomState(seed)
    X = rng.uniform(-1, 1, size=(n_instances * m, 1))
    y = 10 * (X[:, 0] ** 3 - 0.65 * X[:, 0])
    return X, y, np.repeat(np.arange(n_instances), m)


FAST = dict(
    inner_steps_first=300,
    inner_steps=20,
    inner_lr=0.1,
    metric_hidden_layer_sizes=(16,),
    learning_rate=1e-2,
    batch_size=20,
    validation_interval=5,
    device="cpu",
    random_state=0,
)


@pytest.fixture(scope="module")
def cubic_data():
    return cubic(40, 20, 0), cubic(40, 20, 1)


@pytest.fixture(scope="module")
def fitted_cubic(cubic_data):
    (X, y, g), _ = cubic_data
    return TaskMetRegressor(SoftTop1(), max_iter=40, **FAST).fit(X, y, groups=g)


def test_taskmet_beats_least_squares_on_the_cubic_task(cubic_data, fitted_cubic):
    (X, y, g), (Xt, yt, gt) = cubic_data
    mse_model = TaskMetRegressor(SoftTop1(), metric="identity", max_iter=1, **FAST)
    mse_model.fit(X, y, groups=g)
    # Least squares fits a negative slope and picks the worst items ...
    assert mse_model.task_score(Xt, yt, gt) < -0.5
    # ... the learned metric turns it into a predictor that picks good ones.
    assert fitted_cubic.task_score(Xt, yt, gt) > 0.7
    assert fitted_cubic.n_iter_ >= fitted_cubic.best_iteration_ >= 1
    history = fitted_cubic.history_
    assert set(history) == {
        "iteration",
        "train_task_loss",
        "train_prediction_loss",
        "validation_task_loss",
        "validation_prediction_loss",
    }
    assert len(history["iteration"]) == len(history["validation_task_loss"]) >= 1
    assert np.all(np.isfinite(history["train_task_loss"]))


def test_metric_values_shape_psd_and_normalisation(cubic_data):
    (X, y, g), _ = cubic_data
    model = TaskMetRegressor(SoftTop1(), max_iter=5, validation_fraction=None, **FAST)
    model.fit(X, y, groups=g)
    values = model.metric_values(X)
    assert values.shape == (X.shape[0], 1, 1)
    assert_psd(values, rtol=rtol_for(np.float64))
    # Normalised to the mean trace of the identity over the training samples.
    np.testing.assert_allclose(np.trace(values, axis1=1, axis2=2).mean(), 1.0, rtol=1e-10)
    with pytest.raises(ValueError, match="pass X"):
        model.get_mahalanobis_matrix()
    np.testing.assert_allclose(model.get_mahalanobis_matrix(X), values.mean(0))


@pytest.mark.parametrize("metric", ["identity", "diagonal", "full", "conditional_diagonal"])
def test_other_metric_kinds_multi_output(metric):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 3))
    y = X @ rng.normal(size=(3, 2))
    model = TaskMetRegressor(metric=metric, max_iter=3, **FAST).fit(X, y)
    assert model.predict(X).shape == (60, 2)
    values = model.metric_values(X[:4])
    assert values.shape == (4, 2, 2)
    assert_psd(values, rtol=rtol_for(np.float64))
    if not metric.startswith("conditional"):
        np.testing.assert_allclose(model.get_mahalanobis_matrix(), values[0])
    if metric in ("identity", "diagonal", "conditional_diagonal"):
        np.testing.assert_array_equal(values[:, 0, 1], 0.0)


@settings(max_examples=25, deadline=None)
@given(
    a=float_arrays(np.float64, (5, 2)),
    b=float_arrays(np.float64, (5, 2)),
    c=float_arrays(np.float64, (5, 2)),
)
def test_learned_metric_satisfies_the_axioms_at_a_fixed_x(fitted_multi, a, b, c):
    # Lambda(x) is a different metric at each x: the axioms hold for one fixed x.
    matrix = fitted_multi.metric_values(np.array([[0.3, -0.2, 0.1]]))[0]

    def distance(u, v):
        diff = u - v
        return np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", diff, matrix, diff), 0.0))

    assert_distance_axioms(
        distance, a, b, c, scale=metric_scale(matrix, a, b, c), rtol=rtol_for(np.float64)
    )


@pytest.fixture(scope="module")
def fitted_multi():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 3))
    y = X @ rng.normal(size=(3, 2)) + 0.1 * rng.normal(size=(60, 2))
    return TaskMetRegressor(max_iter=5, **FAST).fit(X, y)


def test_task_none_is_least_squares_and_task_score_is_r2():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(80, 2))
    y = X @ np.array([1.0, -2.0]) + 0.05 * rng.normal(size=80)
    model = TaskMetRegressor(max_iter=5, **FAST).fit(X, y)
    assert model.score(X, y) > 0.99
    assert model.task_score(X, y) == pytest.approx(model.score(X, y))


def test_dfl_regressor_with_a_task(cubic_data):
    (X, y, g), (Xt, yt, gt) = cubic_data
    model = DFLRegressor(
        SoftTop1(),
        alpha=1.0,
        learning_rate=0.05,
        max_iter=150,
        batch_size=20,
        device="cpu",
        random_state=0,
    ).fit(X, y, groups=g)
    assert model.task_score(Xt, yt, gt) > 0.7
    assert model.n_iter_ >= model.best_iteration_ >= 1
    assert np.isfinite(model.history_["validation_task_loss"]).all()


@pytest.mark.parametrize("Estimator", [TaskMetRegressor, DFLRegressor])
def test_groups_errors(Estimator, cubic_data):
    (X, y, g), _ = cubic_data
    model = Estimator(SoftTop1(), max_iter=1, device="cpu")
    with pytest.raises(ValueError, match="pass groups"):
        model.fit(X, y)
    with pytest.raises(ValueError, match="groups has 799 entries"):
        model.fit(X, y, groups=g[:-1])
    uneven = g.copy()
    uneven[0] = 1
    with pytest.raises(ValueError, match="same number of samples"):
        model.fit(X, y, groups=uneven)
    with pytest.raises(ValueError, match="1-d array"):
        model.fit(X, y, groups=g.reshape(-1, 2))


@pytest.mark.parametrize("Estimator", [TaskMetRegressor, DFLRegressor])
def test_bad_input(Estimator, cubic_data):
    (X, y, g), _ = cubic_data
    model = Estimator(SoftTop1(), max_iter=1, device="cpu")
    bad = X.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(bad, y, groups=g)
    with pytest.raises(ValueError):
        model.fit(X, y[:-1], groups=g)
    with pytest.raises(ValueError, match="expects 1 output"):
        model.fit(X, np.c_[y, y], groups=g)
    with pytest.raises(TypeError, match="task must be"):
        Estimator(task="top1", device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="one value per instance"):
        Estimator(SumTask(), max_iter=2, device="cpu").fit(X, y, groups=g)
    with pytest.raises(ValueError, match="predictor"):
        Estimator(predictor="tree", device="cpu").fit(X, y)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        Estimator(predictor=lambda p, d: "module", device="cpu").fit(X, y)


@pytest.mark.parametrize("Estimator", [TaskMetRegressor, DFLRegressor])
def test_nan_task_loss_warns_and_keeps_the_last_good_state(Estimator, cubic_data):
    (X, y, g), _ = cubic_data
    with pytest.warns(NonFiniteWarning, match="last good state"):
        model = Estimator(NaNTask(), max_iter=3, device="cpu", random_state=0)
        model.fit(X, y, groups=g)
    assert model.n_iter_ == 0
    assert np.all(np.isfinite(model.predict(X)))
    for value in model.predictor_state_.values():
        assert np.all(np.isfinite(value))


def test_determinism_and_float32(cubic_data):
    (X, y, g), _ = cubic_data
    params = dict(FAST, inner_steps_first=50)
    a = TaskMetRegressor(SoftTop1(), max_iter=4, **params).fit(X, y, groups=g)
    b = TaskMetRegressor(SoftTop1(), max_iter=4, **params).fit(X, y, groups=g)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    np.testing.assert_array_equal(a.metric_values(X[:5]), b.metric_values(X[:5]))
    c = TaskMetRegressor(SoftTop1(), max_iter=4, **params).fit(X.astype(np.float32), y, groups=g)
    assert c.predict(X.astype(np.float32)).dtype == np.float32
    assert c.metric_values(X[:3].astype(np.float32)).dtype == np.float32
    assert all(v.dtype == np.float32 for v in c.predictor_state_.values())
    assert all(v.dtype == np.float32 for v in c.metric_state_.values())
    np.testing.assert_allclose(c.predict(X), a.predict(X), rtol=1e-3, atol=1e-3)


def test_pickle_and_device_change_after_fit(fitted_cubic, cubic_data, device):
    (X, y, g), _ = cubic_data
    model = clone(fitted_cubic).set_params(device=device, max_iter=3).fit(X, y, groups=g)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(restored.predict(X), model.predict(X))
    np.testing.assert_allclose(restored.metric_values(X[:4]), model.metric_values(X[:4]))
    restored.set_params(device="cpu")
    np.testing.assert_allclose(restored.predict(X), model.predict(X), rtol=1e-6)
    assert restored.task_score(X, y, g) == pytest.approx(model.task_score(X, y, g))


@pytest.mark.cuda
def test_fit_on_cuda_matches_cpu(cubic_data):
    (X, y, g), _ = cubic_data
    gpu = TaskMetRegressor(SoftTop1(), max_iter=3, **dict(FAST, device="cuda"))
    gpu.fit(X, y, groups=g)
    assert gpu.predict(X).shape == y.shape
    gpu.set_params(device="cpu")
    assert np.isfinite(gpu.predict(X)).all()


def test_pipeline_and_grid_search_with_groups(cubic_data):
    (X, y, g), _ = cubic_data
    pipe = make_pipeline(StandardScaler(), TaskMetRegressor(SoftTop1(), max_iter=2, **FAST))
    pipe.fit(X, y, taskmetregressor__groups=g)
    assert pipe.predict(X).shape == y.shape
    with config_context(enable_metadata_routing=True):
        estimator = DFLRegressor(
            SoftTop1(), max_iter=20, learning_rate=0.05, batch_size=10, device="cpu"
        ).set_fit_request(groups=True)
        search = GridSearchCV(estimator, {"alpha": [0.0, 1.0]}, cv=GroupKFold(n_splits=2))
        search.fit(X, y, groups=g)
    assert search.best_params_["alpha"] in (0.0, 1.0)
    assert len(search.cv_results_["mean_test_score"]) == 2


def test_decision_quality_scorer_in_a_group_search(cubic_data):
    (X, y, g), _ = cubic_data
    # Every fold is scored by the decisions made on its own held-out instances: the groups
    # given to fit reach the splitter, the estimator and the scorer.
    scorer = DecisionQualityScorer()
    with config_context(enable_metadata_routing=True):
        estimator = DFLRegressor(
            SoftTop1(),
            max_iter=40,
            learning_rate=0.05,
            batch_size=10,
            device="cpu",
            random_state=0,
        ).set_fit_request(groups=True)
        cv = GroupKFold(n_splits=2)
        search = GridSearchCV(estimator, {"alpha": [0.0, 1e3]}, cv=cv, scoring=scorer)
        search.fit(X, y, groups=g)
        # The first split's score, recomputed by hand on that fold's instances.
        train, test = next(cv.split(X, y, g))
        best = clone(estimator).set_params(**search.best_params_)
        best.fit(X[train], y[train], groups=g[train])
        by_hand = best.task_score(X[test], y[test], g[test])
    index = search.best_index_
    assert search.cv_results_["split0_test_score"][index] == pytest.approx(by_hand)
    assert scorer(best, X[test], y[test], groups=g[test]) == pytest.approx(by_hand)
    assert search.best_params_["alpha"] == 0.0
    assert search.best_score_ > 0.5
    assert search.cv_results_["mean_test_score"].max() == search.best_score_


def test_decision_quality_scorer_works_on_pipelines_and_baselines(cubic_data, fitted_cubic):
    (X, y, g), _ = cubic_data
    pipe = make_pipeline(StandardScaler(), clone(fitted_cubic).set_params(max_iter=2))
    pipe.fit(X, y, taskmetregressor__groups=g)
    # task=None takes the task of the pipeline's last step.
    expected = pipe[-1].task_score(pipe[0].transform(X), y, g)
    assert DecisionQualityScorer()(pipe, X, y, groups=g) == pytest.approx(expected)
    least_squares = LinearRegression().fit(X, y)
    assert DecisionQualityScorer(SoftTop1())(least_squares, X, y, groups=g) < 0
    with pytest.raises(ValueError, match="no decision task"):
        DecisionQualityScorer()(least_squares, X, y, groups=g)
    with pytest.raises(ValueError, match="metadata routing"):
        DecisionQualityScorer()(fitted_cubic, X, y)
    with pytest.raises(ValueError, match="one group label"):
        DecisionQualityScorer()(fitted_cubic, X, y, groups=g[:-1])
    assert "groups" in str(DecisionQualityScorer().get_metadata_routing())


def test_callable_predictor_and_mlp():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(50, 2))
    y = np.sin(X[:, 0])

    def build(n_features, n_outputs):
        return torch.nn.Sequential(
            torch.nn.Linear(n_features, 8), torch.nn.GELU(), torch.nn.Linear(8, n_outputs)
        )

    for predictor in (build, "mlp"):
        model = TaskMetRegressor(
            predictor=predictor,
            hidden_layer_sizes=(8,),
            implicit_solver="normal_cg",
            max_iter=3,
            **FAST,
        ).fit(X, y)
        assert np.isfinite(model.predict(X)).all()


def test_not_fitted_raises():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        TaskMetRegressor().predict(np.zeros((2, 1)))
    with pytest.raises(NotFittedError):
        TaskMetRegressor().metric_values(np.zeros((2, 1)))


def test_no_warning_on_a_clean_fit(cubic_data):
    (X, y, g), _ = cubic_data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TaskMetRegressor(SoftTop1(), max_iter=2, **FAST).fit(X, y, groups=g)


@pytest.mark.parametrize(
    "make",
    [
        lambda task: DFLRegressor(task, predictor="linear", device="cpu", random_state=0),
        lambda task: TaskMetRegressor(task, inner_solver="closed_form", **FAST),
        lambda task: TaskMetRegressor(task, **{**FAST, "inner_steps_first": 5, "inner_steps": 2}),
    ],
    ids=["dfl", "taskmet-closed-form", "taskmet-adam"],
)
def test_training_batches_visit_every_instance_once_per_epoch(make):
    # Random reshuffling, not independent draws: 30 instances in batches of 8 are two
    # epochs of sizes 8, 8, 8, 6 in 8 steps, each a new permutation of all instances.
    n_instances, m = 30, 4
    rng = np.random.RandomState(0)
    groups = np.repeat(np.arange(n_instances), m)
    X = rng.uniform(-1, 1, size=(n_instances * m, 1))
    y = groups + rng.uniform(0, 0.4, size=groups.size)
    task = InstanceRecorder()
    model = make(task).set_params(batch_size=8, max_iter=8, validation_fraction=None)
    model.fit(X, y, groups=groups)
    assert [len(batch) for batch in task.batches] == [8, 8, 8, 6] * 2
    epochs = task.batches[:4], task.batches[4:]
    for epoch in epochs:
        assert sorted(sum(epoch, [])) == list(range(n_instances))
    assert epochs[0] != epochs[1]
