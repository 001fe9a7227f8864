"""Inference never touches global random state.

After ``fit``, ``predict``, ``transform``, ``score`` and the other read-only methods of
every public estimator must leave torch's and numpy's global generators exactly as they
were: a user's own seeded code around a prediction must not change with it.
"""

import numpy as np
import pytest
import torch

from sktaskmet import (
    AgreementScorer,
    DFLRegressor,
    GradientSubsetEstimator,
    KernelSurrogate,
    LinearSurrogate,
    SCMLRegressor,
    TaskDiscovery,
    TaskMetRegressor,
)
from sktaskmet.datasets import make_task_interactions


def _regression():
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, size=(40, 3))
    return X, X[:, 0] ** 3 + 0.5 * X[:, 1]


def _taskmet():
    X, y = _regression()
    model = TaskMetRegressor(
        max_iter=2,
        inner_steps_first=5,
        inner_steps=2,
        metric_hidden_layer_sizes=(4,),
        device="cpu",
        random_state=0,
    ).fit(X, y)
    calls = {
        "predict": (X,),
        "score": (X, y),
        "metric_values": (X,),
        "task_score": (X, y),
        "get_mahalanobis_matrix": (X,),
    }
    return model, calls


def _dfl():
    X, y = _regression()
    model = DFLRegressor(
        predictor="mlp", hidden_layer_sizes=(4,), max_iter=5, device="cpu", random_state=0
    ).fit(X, y)
    return model, {"predict": (X,), "score": (X, y), "task_score": (X, y)}


def _scml(head):
    X, y = _regression()
    model = SCMLRegressor(
        n_basis=8,
        k_genuine=2,
        k_impostor=3,
        n_neighbors=3,
        max_iter=40,
        output_iter=20,
        head=head,
        hidden_layer_sizes=(4,),
        head_max_iter=5,
        device="cpu",
        random_state=0,
    ).fit(X, y)
    pairs = np.stack([X[:5], X[5:10]], axis=1)
    calls = {"predict": (X,), "transform": (X,), "score": (X, y), "pair_distance": (pairs,)}
    return model, calls


def _surrogate(Estimator):
    S, y, _ = make_task_interactions(n_subsets=40, random_state=0)
    model = Estimator(cv=3, device="cpu").fit(S, y)
    return model, {"predict": (S,), "score": (S, y), "attribution": (), "interactions": ()}


def _gradient():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(30, 4))
    y = (X[:, 0] > 0).astype(int)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = torch.nn.Linear(4, 2).double()
    model = GradientSubsetEstimator(network, projection_dim=4, random_state=0)
    model.fit(X, y, tasks=np.repeat([0, 1, 2], 10), X_target=X[:6], y_target=y[:6])
    return model, {"estimate": ([[1, 1, 1], [1, 0, 1]],)}


def _agreement():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(48, 4)).astype(np.float32)
    labels = np.column_stack([X[:, 0] > 0, rng.randint(0, 2, 48)]).astype(int)
    model = AgreementScorer(
        hidden_layer_sizes=(4,), max_epochs=1, batch_size=16, device="cpu", random_state=0
    ).fit(X, labels)
    return model, {"score": (X,), "agreement": (X,)}


def _discovery():
    X = np.random.RandomState(0).normal(size=(48, 4))
    model = TaskDiscovery(
        n_tasks=2,
        hidden_layer_sizes=(4,),
        inner_steps=1,
        max_iter=1,
        batch_size=16,
        agreement_scorer="skip",
        device="cpu",
        random_state=0,
    ).fit(X)
    return model, {"transform": (X,)}


FITS = {
    "TaskMetRegressor": _taskmet,
    "DFLRegressor": _dfl,
    "SCMLRegressor-knn": lambda: _scml("knn"),
    "SCMLRegressor-mlp": lambda: _scml("mlp"),
    "KernelSurrogate": lambda: _surrogate(KernelSurrogate),
    "LinearSurrogate": lambda: _surrogate(LinearSurrogate),
    "GradientSubsetEstimator": _gradient,
    "AgreementScorer": _agreement,
    "TaskDiscovery": _discovery,
}


@pytest.mark.parametrize("name", sorted(FITS))
def test_inference_leaves_global_random_state_unchanged(name):
    model, calls = FITS[name]()
    for method, args in calls.items():
        torch.manual_seed(12345)
        np.random.seed(12345)  # noqa: NPY002 (the global state is what is checked)
        torch_before = torch.random.get_rng_state()
        numpy_before = np.random.get_state()  # noqa: NPY002
        getattr(model, method)(*args)
        assert torch.equal(torch.random.get_rng_state(), torch_before), (
            f"{name}.{method} advanced torch's global generator"
        )
        numpy_after = np.random.get_state()  # noqa: NPY002
        assert numpy_after[0] == numpy_before[0]
        np.testing.assert_array_equal(
            numpy_after[1], numpy_before[1], err_msg=f"{name}.{method} advanced numpy's"
        )
        assert numpy_after[2:] == numpy_before[2:], f"{name}.{method} advanced numpy's"
