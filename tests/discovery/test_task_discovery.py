"""Tests of TaskDiscovery, random_network_tasks and their torch numerics."""

import io
import pickle
from contextlib import redirect_stdout
from itertools import combinations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktaskmet import AgreementScorer, TaskDiscovery, random_network_tasks
from sktaskmet._backend import seeded
from sktaskmet._nn import make_mlp
from sktaskmet.discovery._meta import (
    LearnerPair,
    TaskEncoder,
    meta_loss,
    orthonormal_heads,
    soft_task_labels,
    uniformity_loss,
)
from sktaskmet.discovery._task_discovery import _task_similarity
from sktaskmet.exceptions import NonFiniteWarning

TINY = dict(
    n_tasks=3,
    hidden_layer_sizes=(8,),
    inner_steps=2,
    max_iter=3,
    batch_size=32,
    agreement_scorer="skip",
    device="cpu",
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(80, 5))
    X[:40, 0] += 3.0  # two clusters: something for tasks to pick up
    return X


@pytest.fixture(scope="module")
def fitted(data):
    return TaskDiscovery(random_state=0, **TINY).fit(data)


# ----------------------------------------------------------------------------- numerics


def test_uniformity_loss_matches_brute_force():
    rng = np.random.RandomState(1)
    h = rng.normal(size=(7, 4))
    z = h / np.linalg.norm(h, axis=1, keepdims=True)
    terms = [np.exp(-2.0 * np.sum((z[i] - z[j]) ** 2)) for i, j in combinations(range(7), 2)]
    expected = np.log(np.mean(terms))
    got = uniformity_loss(torch.from_numpy(h)).item()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_uniformity_loss_prefers_spread_points():
    clustered = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.98, -0.1], [1.0, 0.05]])
    spread = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert uniformity_loss(spread) < uniformity_loss(clustered)


def test_soft_labels_are_a_tempered_sigmoid():
    a = torch.linspace(-2, 2, 9, dtype=torch.float64)
    soft = soft_task_labels(a)
    np.testing.assert_allclose(soft.sum(-1).numpy(), 1.0)
    np.testing.assert_allclose(soft[:, 1].numpy(), torch.sigmoid(10 * a).numpy(), rtol=1e-12)


@pytest.mark.parametrize("embedding_dim, n_tasks", [(4, 4), (6, 3)])
def test_heads_are_orthonormal(data, embedding_dim, n_tasks):
    est = TaskDiscovery(
        **{**TINY, "n_tasks": n_tasks, "embedding_dim": embedding_dim, "max_iter": 0}
    ).fit(data)
    assert est.heads_.shape == (embedding_dim, n_tasks)
    np.testing.assert_allclose(est.heads_.T @ est.heads_, np.eye(n_tasks), atol=1e-12)


def _tiny_meta_problem(uniformity):
    torch.manual_seed(0)
    dtype = torch.float64
    with seeded(0):
        encoder = TaskEncoder(2, (3,), 2).to(dtype)
        learners = LearnerPair([make_mlp(2, (3,), 2).to(dtype) for _ in range(2)])
    heads = orthonormal_heads(2, 2, torch.Generator().manual_seed(0), dtype, "cpu")
    gen = torch.Generator().manual_seed(1)
    x_inner = torch.randn(8, 2, generator=gen, dtype=dtype)
    x_heldout = torch.randn(5, 2, generator=gen, dtype=dtype)

    def loss():
        # inner_lr large enough that the learners move and the inner loop matters
        return meta_loss(encoder, heads, learners, x_inner, x_heldout, 3, 0.5, uniformity)[0]

    return encoder, loss


@pytest.mark.parametrize("uniformity", [0.0, 0.7])
def test_unrolled_gradient_matches_finite_differences(uniformity):
    encoder, loss = _tiny_meta_problem(uniformity)
    params = list(encoder.parameters())
    analytic = torch.autograd.grad(loss(), params)
    eps = 1e-6
    for param, grad in zip(params, analytic, strict=True):
        numeric = torch.zeros_like(param)
        flat = param.data.view(-1)
        for k in range(flat.numel()):
            old = flat[k].item()
            with torch.no_grad():
                flat[k] = old + eps
                up = loss().item()
                flat[k] = old - eps
                down = loss().item()
                flat[k] = old
            numeric.view(-1)[k] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad.numpy(), numeric.numpy(), rtol=1e-5, atol=1e-8)
    # Without the uniformity term the encoder is reached only through the unrolled learners.
    if uniformity == 0.0:
        assert max(g.abs().max().item() for g in analytic) > 1e-6


def test_batched_learners_equal_a_learner_trained_alone():
    dtype = torch.float64
    with seeded(3):
        nets = [make_mlp(4, (5,), 2).to(dtype) for _ in range(2)]
    pair = LearnerPair(nets)
    gen = torch.Generator().manual_seed(0)
    x_halves = torch.randn(2, 6, 4, generator=gen, dtype=dtype)
    targets = torch.softmax(torch.randn(3, 2, 6, 2, generator=gen, dtype=dtype), -1)
    trained = pair.train(x_halves, targets, inner_steps=4, inner_lr=0.3)
    # Task 2, learner 1 by hand with an ordinary module and torch.optim.SGD.
    net = make_mlp(4, (5,), 2).to(dtype)
    net.load_state_dict(nets[1].state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=0.3)
    for _ in range(4):
        opt.zero_grad()
        log_p = torch.log_softmax(net(x_halves[1]), -1)
        (-(targets[2, 1] * log_p).sum(-1).mean()).backward()
        opt.step()
    for name, value in net.named_parameters():
        np.testing.assert_allclose(trained[name][2, 1].detach().numpy(), value.detach().numpy())


def test_task_similarity_definition():
    tasks = np.array([[0, 1, 0], [1, 0, 0], [1, 0, 1], [0, 1, 1]])
    sim = _task_similarity(tasks)
    # task 1 is the complement of task 0: the same task
    assert sim[0, 1] == 1.0
    assert sim[0, 2] == 0.5
    np.testing.assert_allclose(np.diag(sim), 1.0)


# ---------------------------------------------------------------------------- estimator


def test_fitted_attributes(fitted, data):
    n = data.shape[0]
    assert fitted.tasks_.shape == (n, 3)
    assert fitted.tasks_.dtype == np.int64
    assert set(np.unique(fitted.tasks_)) <= {0, 1}
    np.testing.assert_allclose(fitted.balance_, fitted.tasks_.mean(axis=0))
    assert fitted.similarity_.shape == (3, 3)
    np.testing.assert_allclose(fitted.similarity_, fitted.similarity_.T)
    # similarity_ is the pairwise similarity of the returned tasks, not of some other draw
    np.testing.assert_allclose(fitted.similarity_, _task_similarity(fitted.tasks_))
    assert fitted.n_iter_ == 3
    np.testing.assert_array_equal(fitted.history_["iteration"], [1, 2, 3])
    for key in ("train_loss", "train_agreement_loss", "train_uniformity_loss"):
        assert len(fitted.history_[key]) == 3
        assert np.all(np.isfinite(fitted.history_[key]))
    # The loss is the agreement term plus the weighted uniformity term.
    np.testing.assert_allclose(
        fitted.history_["train_loss"],
        fitted.history_["train_agreement_loss"] + fitted.history_["train_uniformity_loss"],
        rtol=1e-6,
    )
    assert fitted.agreement_scores_ is None
    for value in fitted.encoder_state_.values():
        assert isinstance(value, np.ndarray)
    assert list(fitted.get_feature_names_out()) == [f"taskdiscovery{i}" for i in range(3)]


def test_transform_is_consistent_with_tasks(fitted, data):
    np.testing.assert_array_equal(fitted.transform(data), fitted.tasks_)
    # labels of a sample do not depend on the batch it comes with
    subset = [5, 17, 60]
    np.testing.assert_array_equal(fitted.transform(data[subset]), fitted.tasks_[subset])
    np.testing.assert_array_equal(fitted.transform(data[:1]), fitted.tasks_[:1])


def test_fit_transform_equals_fit_then_tasks(data):
    est = TaskDiscovery(random_state=2, **TINY)
    np.testing.assert_array_equal(est.fit_transform(data), clone(est).fit(data).tasks_)


def test_determinism_and_seed_dependence(data):
    a = TaskDiscovery(random_state=7, **TINY).fit(data)
    b = TaskDiscovery(random_state=7, **TINY).fit(data)
    c = TaskDiscovery(random_state=8, **TINY).fit(data)
    np.testing.assert_array_equal(a.tasks_, b.tasks_)
    for key, column in a.history_.items():
        np.testing.assert_array_equal(column, b.history_[key])
    for key in a.encoder_state_:
        np.testing.assert_array_equal(a.encoder_state_[key], b.encoder_state_[key])
    assert not np.allclose(a.heads_, c.heads_)


def test_global_torch_rng_untouched(data):
    state = torch.random.get_rng_state()
    TaskDiscovery(random_state=0, **TINY).fit(data)
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_follows_data(data, dtype):
    est = TaskDiscovery(random_state=0, **TINY).fit(data.astype(dtype))
    assert est.encoder_state_["projection.weight"].dtype == dtype
    assert est.heads_.dtype == dtype
    assert est.transform(data.astype(dtype)).dtype == np.int64


def test_meta_optimisation_changes_the_tasks_encoder(data):
    est = TaskDiscovery(random_state=0, **{**TINY, "max_iter": 5}).fit(data)
    initial = TaskDiscovery(random_state=0, **{**TINY, "max_iter": 0}).fit(data)
    changed = [
        not np.allclose(est.encoder_state_[k], initial.encoder_state_[k])
        for k in est.encoder_state_
        if not k.startswith("running")
    ]
    assert all(changed)


def test_random_network_tasks_is_the_untrained_encoder(data):
    tasks = random_network_tasks(data, 3, hidden_layer_sizes=(8,), device="cpu", random_state=4)
    initial = TaskDiscovery(random_state=4, **{**TINY, "max_iter": 0}).fit(data)
    np.testing.assert_array_equal(tasks, initial.tasks_)
    assert tasks.shape == (data.shape[0], 3)
    # the normalisation centres the embedding, so random tasks split the data
    assert np.all((tasks.mean(axis=0) > 0.1) & (tasks.mean(axis=0) < 0.9))


def test_agreement_scores_measured_with_given_scorer(data):
    scorer = AgreementScorer(hidden_layer_sizes=(8,), max_epochs=3, batch_size=16, device="cpu")
    est = TaskDiscovery(random_state=0, **{**TINY, "agreement_scorer": scorer}).fit(data)
    assert est.agreement_scores_.shape == (3,)
    np.testing.assert_allclose(est.agreement_scores_, est.agreement_scorer_.agreement_scores_)
    assert est.agreement_scorer_ is not scorer
    assert not hasattr(scorer, "agreement_scores_")


def test_default_scorer_uses_the_same_architecture_in_same_mode(data):
    est = TaskDiscovery(random_state=0, **{**TINY, "agreement_scorer": None}).fit(data)
    scorer = est.agreement_scorer_
    assert isinstance(scorer, AgreementScorer)
    assert scorer.data_mode == "same"
    assert tuple(scorer.hidden_layer_sizes) == (8,)
    assert scorer.device == "cpu"
    # the scores are those of that scorer refitted on the discovered tasks
    refit = AgreementScorer(**scorer.get_params()).fit(data, est.tasks_)
    np.testing.assert_allclose(est.agreement_scores_, refit.agreement_scores_)


def test_constant_task_gets_nan_agreement(data):
    est = TaskDiscovery(random_state=0, **TINY).fit(data)
    est.balance_ = np.array([0.5, 1.0, 0.4])
    est.tasks_ = est.tasks_.copy()
    est.tasks_[:, 1] = 1
    est.set_params(
        agreement_scorer=AgreementScorer(
            hidden_layer_sizes=(4,), max_epochs=1, batch_size=16, device="cpu"
        )
    )
    est._score_tasks(data)
    assert np.isnan(est.agreement_scores_[1])
    assert np.all(np.isfinite(est.agreement_scores_[[0, 2]]))


def test_pickle_and_device_change(fitted, data):
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.transform(data), fitted.tasks_)
    restored.set_params(device="auto")
    np.testing.assert_array_equal(restored.transform(data), fitted.tasks_)


def test_pipeline_and_grid_search(data):
    y = (data[:, 0] > 1.5).astype(int)
    pipe = make_pipeline(
        StandardScaler(), TaskDiscovery(random_state=0, **TINY), LogisticRegression()
    )
    grid = GridSearchCV(pipe, {"taskdiscovery__n_tasks": [2, 3]}, cv=2).fit(data, y)
    assert grid.best_params_["taskdiscovery__n_tasks"] in (2, 3)
    assert grid.predict(data).shape == y.shape


def test_verbose_reports_progress(data):
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        TaskDiscovery(random_state=0, verbose=1, **TINY).fit(data)
    lines = buffer.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"[TaskDiscovery] iteration {i}" for i in (1, 2, 3)
    ]
    assert all("train agreement loss" in line for line in lines)


def test_non_finite_meta_loss_restores_the_last_good_encoder(data):
    params = {**TINY, "inner_lr": 1e30, "max_iter": 4}
    with pytest.warns(NonFiniteWarning, match="TaskDiscovery: the step at iteration 1"):
        est = TaskDiscovery(random_state=0, **params).fit(data.astype(np.float32))
    assert est.n_iter_ == 0
    initial = TaskDiscovery(random_state=0, **{**TINY, "max_iter": 0}).fit(data.astype(np.float32))
    np.testing.assert_array_equal(est.tasks_, initial.tasks_)


# ---------------------------------------------------------------------------- bad input


def test_nan_in_X_is_rejected(data):
    X = data.copy()
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        TaskDiscovery(**TINY).fit(X)


def test_more_tasks_than_embedding(data):
    with pytest.raises(ValueError, match="more tasks than its embedding can hold"):
        TaskDiscovery(**{**TINY, "n_tasks": 4, "embedding_dim": 3}).fit(data)


def test_too_few_samples(data):
    with pytest.raises(ValueError, match="at least 4 samples.*n_samples = 3"):
        TaskDiscovery(**TINY).fit(data[:3])


def test_transform_checks_features(fitted, data):
    with pytest.raises(ValueError, match="features"):
        fitted.transform(data[:, :4])


@pytest.mark.parametrize(
    "params, match",
    [
        ({"hidden_layer_sizes": (8, -1)}, "positive integers"),
        ({"hidden_layer_sizes": (2.5,)}, "positive integers"),
        ({"inner_lr": 0.0}, "inner_lr"),
        ({"agreement_scorer": "always"}, "agreement_scorer"),
    ],
)
def test_bad_parameters(data, params, match):
    with pytest.raises(ValueError, match=match):
        TaskDiscovery(**{**TINY, **params}).fit(data)


def test_mixed_precision_bf16_on_cpu_runs_the_meta_loss_in_bfloat16(data):
    X = data.astype(np.float32)
    full = TaskDiscovery(random_state=0, **TINY).fit(X)
    half = TaskDiscovery(random_state=0, mixed_precision="bf16", **TINY).fit(X)
    # Same weights and batch at the first step: only the arithmetic differs, and it does.
    for term in ("train_agreement_loss", "train_uniformity_loss"):
        first_full, first_half = full.history_[term][0], half.history_[term][0]
        assert first_half != first_full
        assert abs(first_half - first_full) < 0.03 * abs(first_full)
    assert np.all(np.isfinite(half.history_["train_loss"]))
    # Parameters (and so transform) stay in the dtype of X.
    assert all(v.dtype == np.float32 for v in half.encoder_state_.values() if v.dtype.kind == "f")
    assert half.transform(X).dtype == np.int64


def test_mixed_precision_fp16_refused_off_cuda_and_passed_to_the_scorer(data):
    with pytest.raises(ValueError, match="mixed_precision='fp16' needs a CUDA device"):
        TaskDiscovery(mixed_precision="fp16", **TINY).fit(data)
    params = {**TINY, "agreement_scorer": None, "mixed_precision": "bf16", "max_iter": 1}
    est = TaskDiscovery(random_state=0, **params).fit(data.astype(np.float32))
    assert est.agreement_scorer_.get_params()["mixed_precision"] == "bf16"


@pytest.mark.cuda
@pytest.mark.parametrize("mixed_precision", ["bf16", "fp16"])
def test_cuda_mixed_precision_fit_is_finite_and_close(data, mixed_precision):
    params = {**TINY, "device": "cuda", "max_iter": 10}
    full = TaskDiscovery(random_state=0, **params).fit(data)
    half = TaskDiscovery(random_state=0, mixed_precision=mixed_precision, **params).fit(data)
    assert np.all(np.isfinite(half.history_["train_loss"]))
    for term in ("train_agreement_loss", "train_uniformity_loss"):
        first_full, first_half = full.history_[term][0], half.history_[term][0]
        assert abs(first_half - first_full) < 0.03 * abs(first_full)


@pytest.mark.cuda
def test_cuda_fit_matches_shapes_and_loads_on_cpu(data):
    est = TaskDiscovery(random_state=0, **{**TINY, "device": "cuda"}).fit(data)
    restored = pickle.loads(pickle.dumps(est)).set_params(device="cpu")
    agree = np.mean(restored.transform(data) == est.tasks_)
    assert agree > 0.99  # float rounding may flip points on a hyperplane


# ----------------------------------------------------------------------------- plotting


def test_discovered_tasks_display(fitted):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sktaskmet.plotting import DiscoveredTasksDisplay

    rng = np.random.RandomState(0)
    images = rng.uniform(size=(80, 16))  # 4 x 4 "images"
    tasks = np.column_stack([np.arange(80) % 2, (np.arange(80) < 3).astype(int)])
    display = DiscoveredTasksDisplay.from_tasks(tasks, images, n_images=4, random_state=0)
    assert display.axes_.shape == (2,)
    assert display.images.shape == (2, 2, 4, 4, 4)
    for row in range(2):
        for label in (0, 1):
            shown = display.indices[row, label]
            shown = shown[shown >= 0]
            assert np.all(tasks[shown, row] == label)
            np.testing.assert_array_equal(
                display.images[row, label, : shown.size].reshape(shown.size, -1), images[shown]
            )
    # task 1 has only 3 ones: the fourth slot stays blank
    assert display.indices[1, 1, 3] == -1 and np.isnan(display.images[1, 1, 3]).all()
    plt.close(display.figure_)

    # from_estimator labels X with transform and titles rows with balance (and AS)
    X = rng.normal(size=(80, 5))
    with pytest.raises(ValueError, match="image_shape"):
        DiscoveredTasksDisplay.from_estimator(fitted, X)
    est = TaskDiscovery(random_state=0, **{**TINY, "max_iter": 1}).fit(images)
    display = DiscoveredTasksDisplay.from_estimator(est, images, n_images=2, task_indices=[2, 0])
    assert display.task_names[0].startswith("task 2 (balance")
    assert display.axes_.shape == (2,)
    plt.close(display.figure_)
    with pytest.raises(ValueError, match="binary"):
        DiscoveredTasksDisplay.from_tasks(tasks + 1, images)
