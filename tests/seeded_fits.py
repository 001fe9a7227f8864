"""A fixed set of small seeded fits, one or more per public estimator.

``tests/test_seeded_fits.py`` checks that each fit still gives bit-identical outputs to
those stored in ``tests/data/seeded_fits.npz``; ``python -m tests.seeded_fits`` rewrites
that file. Rewrite it only in a commit that changes the random draws on purpose (and say
so in the commit message): every other change to the library must leave these outputs
exactly as they were, so that a refactoring cannot change fitted models unnoticed.
"""

import os
import warnings

import numpy as np
import torch

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "seeded_fits.npz")


def _regression_data(n=60, p=3, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.uniform(-1, 1, size=(n, p))
    y = X[:, 0] ** 3 + 0.5 * X[:, 1] + 0.1 * rng.normal(size=n)
    return X, y


def _taskmet(metric):
    from sktaskmet import TaskMetRegressor

    X, y = _regression_data()
    model = TaskMetRegressor(
        metric=metric,
        metric_hidden_layer_sizes=(8,),
        max_iter=6,
        inner_steps_first=30,
        inner_steps=5,
        inner_lr=0.1,
        validation_interval=2,
        batch_size=20,
        device="cpu",
        random_state=0,
    ).fit(X, y)
    return {"predict": model.predict(X), "metric_values": model.metric_values(X[:5])}


def _taskmet_topk():
    from sktaskmet import TaskMetRegressor
    from sktaskmet.tasks import TopK

    rng = np.random.RandomState(1)
    X = rng.uniform(-1, 1, size=(80, 2))
    y = X[:, 0] ** 3 - X[:, 1]
    groups = np.repeat(np.arange(16), 5)
    model = TaskMetRegressor(
        TopK(k=2, n_iter=20),
        metric="conditional_diagonal",
        metric_hidden_layer_sizes=(8,),
        max_iter=4,
        inner_steps_first=20,
        inner_steps=5,
        inner_lr=0.1,
        validation_interval=2,
        batch_size=8,
        device="cpu",
        random_state=0,
    ).fit(X, y, groups=groups)
    return {"predict": model.predict(X)}


def _dfl(predictor):
    from sktaskmet import DFLRegressor

    X, y = _regression_data()
    model = DFLRegressor(
        predictor=predictor,
        hidden_layer_sizes=(6,),
        max_iter=30,
        learning_rate=0.05,
        validation_interval=5,
        batch_size=20,
        device="cpu",
        random_state=0,
    ).fit(X, y)
    return {"predict": model.predict(X)}


def _scml(head):
    from sktaskmet import SCMLRegressor

    X, y = _regression_data(n=50, p=4)
    model = SCMLRegressor(
        n_basis=8,
        k_genuine=2,
        k_impostor=3,
        n_neighbors=3,
        max_iter=60,
        output_iter=20,
        head=head,
        hidden_layer_sizes=(4,),
        head_max_iter=20,
        device="cpu",
        random_state=0,
    ).fit(X, y)
    return {"predict": model.predict(X), "transform": model.transform(X[:5])}


def _surrogates():
    from sktaskmet import KernelSurrogate, LinearSurrogate
    from sktaskmet.datasets import make_task_interactions

    S, y, _ = make_task_interactions(n_subsets=60, random_state=0)
    kernel = KernelSurrogate(cv=3, device="cpu").fit(S, y)
    linear = LinearSurrogate(cv=3, device="cpu").fit(S, y)
    return {"kernel_predict": kernel.predict(S), "linear_predict": linear.predict(S)}


def _gradient_estimator():
    from sktaskmet import GradientSubsetEstimator

    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] > 0).astype(int)
    tasks = np.repeat([0, 1, 2], 20)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2).double()
    est = GradientSubsetEstimator(model, projection_dim=8, penalty=0.1, random_state=0)
    est.fit(X, y, tasks=tasks, X_target=X[:10], y_target=y[:10])
    return {"estimate": np.asarray(est.estimate([[1, 1, 1], [1, 0, 0], [0, 1, 1]]))}


def _agreement():
    from sktaskmet import AgreementScorer

    rng = np.random.RandomState(0)
    X = rng.normal(size=(64, 4)).astype(np.float32)
    labels = np.column_stack([(X[:, 0] > 0), rng.randint(0, 2, 64)]).astype(int)
    scorer = AgreementScorer(
        hidden_layer_sizes=(8,), max_epochs=2, batch_size=16, device="cpu", random_state=0
    ).fit(X, labels)
    return {"agreement_scores": scorer.agreement_scores_}


def _task_discovery():
    from sktaskmet import TaskDiscovery

    rng = np.random.RandomState(0)
    X = rng.normal(size=(64, 4))
    discovery = TaskDiscovery(
        n_tasks=2,
        hidden_layer_sizes=(4,),
        inner_steps=2,
        max_iter=2,
        batch_size=16,
        agreement_scorer="skip",
        device="cpu",
        random_state=0,
    ).fit(X)
    return {"tasks": discovery.tasks_, "transform": discovery.transform(X[:5])}


FITS = {
    "taskmet_conditional_full": lambda: _taskmet("conditional_full"),
    "taskmet_diagonal": lambda: _taskmet("diagonal"),
    "taskmet_topk": _taskmet_topk,
    "dfl_linear": lambda: _dfl("linear"),
    "dfl_mlp": lambda: _dfl("mlp"),
    "scml_knn": lambda: _scml("knn"),
    "scml_mlp": lambda: _scml("mlp"),
    "surrogates": _surrogates,
    "gradient_subset_estimator": _gradient_estimator,
    "agreement_scorer": _agreement,
    "task_discovery": _task_discovery,
}


def run_fit(name):
    """Outputs of the fit ``name`` as a flat dict ``{"name/output": ndarray}``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outputs = FITS[name]()
    return {f"{name}/{key}": np.asarray(value) for key, value in outputs.items()}


def main():
    torch.set_num_threads(1)
    arrays = {}
    for name in FITS:
        arrays.update(run_fit(name))
    os.makedirs(os.path.dirname(REFERENCE), exist_ok=True)
    np.savez_compressed(REFERENCE, **arrays)
    print(f"wrote {len(arrays)} arrays to {REFERENCE}")


if __name__ == "__main__":
    main()
