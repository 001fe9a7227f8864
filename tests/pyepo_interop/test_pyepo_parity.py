"""sktaskmet's decision tasks against PyEPO itself: data, solutions, losses, gradients, regret.

PyEPO solves with OR-Tools here (the free backend CI installs).
"""

import numpy as np
import pytest
import torch

pyepo = pytest.importorskip("pyepo")
pytest.importorskip("ortools")

from pyepo.model.ort import knapsackModel, shortestPathModel  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from sktaskmet.datasets import make_knapsack, make_shortest_path  # noqa: E402
from sktaskmet.taskmet._dfl_losses import (  # noqa: E402
    perturbed_fenchel_young_loss,
    perturbed_optimizer_loss,
    perturbed_regret_loss,
)
from sktaskmet.tasks import Knapsack, PyEPOTask, ShortestPath, normalized_regret  # noqa: E402


@pytest.mark.parametrize("degree", [1, 4])
def test_generators_reproduce_pyepo(degree):
    x, c = pyepo.data.shortestpath.genData(50, 5, (5, 5), deg=degree, noise_width=0.5, seed=3)
    X, y = make_shortest_path(50, 5, (5, 5), degree, 0.5, random_state=3)
    np.testing.assert_array_equal(X, x)
    np.testing.assert_array_equal(y.astype(np.float32), c)
    w, x, c = pyepo.data.knapsack.genData(50, 5, 16, dim=2, deg=degree, noise_width=0.5, seed=4)
    X, y, weights = make_knapsack(50, 5, 16, 2, degree, 0.5, random_state=4)
    np.testing.assert_array_equal(X, x)
    np.testing.assert_array_equal(y.astype(np.float32), c)
    np.testing.assert_array_equal(weights, w)


def _pyepo_solve(model, costs):
    rows, objectives = [], []
    for cost in costs:
        model.setObj(cost)
        solution, objective = model.solve()
        rows.append(solution)
        objectives.append(objective)
    return np.array(rows, dtype=float), np.array(objectives, dtype=float)


def test_solvers_agree_with_pyepo_models():
    _, y = make_shortest_path(30, 5, (5, 5), 2, 0.5, random_state=0)
    _, z_pyepo = _pyepo_solve(shortestPathModel((5, 5)), y)
    _, z_ours = ShortestPath().solve(torch.as_tensor(y))
    np.testing.assert_allclose(z_ours.numpy(), z_pyepo, rtol=1e-6)  # PyEPO: float32
    _, values, weights = make_knapsack(30, 5, 20, 1, 2, 0.5, random_state=0)
    _, z_pyepo = _pyepo_solve(knapsackModel(weights, [15.0]), values)
    _, z_ours = Knapsack(weights[0], 15.0).solve(torch.as_tensor(values))
    np.testing.assert_allclose(z_ours.numpy(), z_pyepo, rtol=1e-6)  # PyEPO: float32


def test_pyepo_task_adapter_matches_native_task():
    _, values, weights = make_knapsack(10, 5, 12, 2, 1, 0.5, random_state=1)
    adapter = PyEPOTask(knapsackModel(weights, [10.0, 12.0]))
    native = Knapsack(weights, [10.0, 12.0])
    costs = torch.as_tensor(values).unsqueeze(1)
    assert adapter.n_costs == 12 and adapter._sign == -1
    torch.testing.assert_close(adapter.optimal_quality(costs), native.optimal_quality(costs))
    pred = costs + torch.randn(
        costs.shape, generator=torch.Generator().manual_seed(0), dtype=costs.dtype
    )
    torch.testing.assert_close(adapter.regret(pred, costs), native.regret(pred, costs))


def _batch_and_dataset(problem, n=16, seed=0):
    if problem == "path":
        x, c = pyepo.data.shortestpath.genData(n, 5, (5, 5), deg=4, noise_width=0.5, seed=seed)
        model, task = shortestPathModel((5, 5)), ShortestPath()
    else:
        w, x, c = pyepo.data.knapsack.genData(n, 5, 12, dim=1, deg=2, noise_width=0.5, seed=seed)
        model, task = knapsackModel(w, [15.0]), Knapsack(w[0], 15.0)
    dataset = pyepo.data.dataset.optDataset(model, x, c)
    c, w_true, z_true = (
        torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (c, dataset.sols, dataset.objs)
    )
    gen = torch.Generator().manual_seed(seed + 1)
    pred = c + 2 * torch.randn(c.shape, generator=gen)
    return model, task, dataset, c, w_true, z_true.reshape(-1), pred


def _grad(loss, pred):
    (grad,) = torch.autograd.grad(loss.sum(), pred)
    return grad


@pytest.mark.parametrize("problem", ["path", "knapsack"])
def test_spo_plus_matches_pyepo(problem):
    model, task, _, c, w, z, pred = _batch_and_dataset(problem)
    theirs_pred = pred.clone().requires_grad_(True)
    theirs = pyepo.func.SPOPlus(model, reduction="none")(theirs_pred, c, w, z.unsqueeze(1))
    ours_pred = pred.clone().requires_grad_(True)
    targets = task.set_params(surrogate="spo+").prepare_targets(c.unsqueeze(1))
    # knapsack values are integers, so optima tie: use PyEPO's choice of w*(c)
    targets.solutions = w
    ours = task.loss(ours_pred.unsqueeze(1), targets)
    torch.testing.assert_close(ours, theirs.reshape(-1), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(_grad(ours, ours_pred), _grad(theirs, theirs_pred))


@pytest.mark.parametrize("problem", ["path", "knapsack"])
def test_pfyl_matches_pyepo_with_the_same_noise(problem):
    model, task, _, c, w, _, pred = _batch_and_dataset(problem)
    pfy = pyepo.func.perturbedFenchelYoung(model, n_samples=4, sigma=0.7, seed=11, reduction="none")
    theirs_pred = pred.clone().requires_grad_(True)
    theirs = pfy(theirs_pred, w)
    noise = torch.randn((16, 4, c.shape[1]), generator=torch.Generator().manual_seed(11))
    ours_pred = pred.clone().requires_grad_(True)
    ours = perturbed_fenchel_young_loss(ours_pred, w, noise, 0.7, task._solve_exact, task._sign)
    torch.testing.assert_close(ours, theirs.reshape(-1), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(_grad(ours, ours_pred), _grad(theirs, theirs_pred))


def test_dpo_matches_pyepo_with_the_same_noise():
    model, task, _, c, w, _, pred = _batch_and_dataset("path")
    dpo = pyepo.func.perturbedOpt(model, n_samples=5, sigma=1.0, seed=7)
    theirs_pred = pred.clone().requires_grad_(True)
    theirs = ((dpo(theirs_pred) - w) ** 2).mean(1)
    noise = torch.randn((16, 5, c.shape[1]), generator=torch.Generator().manual_seed(7))
    ours_pred = pred.clone().requires_grad_(True)
    ours = perturbed_optimizer_loss(ours_pred, w, noise, 1.0, task._solve_exact)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(_grad(ours, ours_pred), _grad(theirs, theirs_pred))


@pytest.mark.parametrize("problem", ["path", "knapsack"])
def test_dpo_regret_matches_pyepo_perturbed_optimizer_with_the_same_noise(problem):
    # PyEPO's perturbedOpt followed by the regret of its mean decision, sense included
    model, task, _, c, w, z, pred = _batch_and_dataset(problem)
    dpo = pyepo.func.perturbedOpt(model, n_samples=5, sigma=0.8, seed=3)
    theirs_pred = pred.clone().requires_grad_(True)
    theirs = task._sign * ((dpo(theirs_pred) * c).sum(1) - z)
    noise = torch.randn((16, 5, c.shape[1]), generator=torch.Generator().manual_seed(3))
    ours_pred = pred.clone().requires_grad_(True)
    args = (c, z, noise, 0.8, task._solve_exact, task._sign)
    ours = perturbed_regret_loss(ours_pred, *args)
    theirs_grad = _grad(theirs, theirs_pred)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(_grad(ours, ours_pred), theirs_grad)
    value, gradient = perturbed_regret_loss(pred, *args, with_gradient=True)
    torch.testing.assert_close(value, theirs.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gradient, theirs_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("problem", ["path", "knapsack"])
def test_dbb_matches_pyepo(problem):
    model, task, _, c, w, z, pred = _batch_and_dataset(problem)
    dbb = pyepo.func.blackboxOpt(model, lambd=20)
    theirs_pred = pred.clone().requires_grad_(True)
    theirs = ((dbb(theirs_pred) * c).sum(1) - z).abs()
    ours_pred = pred.clone().requires_grad_(True)
    task.set_params(surrogate="dbb", dbb_lambda=20.0)
    ours = task.loss(ours_pred.unsqueeze(1), c.unsqueeze(1))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(_grad(ours, ours_pred), _grad(theirs, theirs_pred))


def test_nce_matches_pyepo():
    model, task, dataset, c, w, _, pred = _batch_and_dataset("path", n=24)
    nce = pyepo.func.NCE(model, solve_ratio=1.0, dataset=dataset, reduction="none")
    theirs_pred = pred.clone().requires_grad_(True)
    theirs = nce(theirs_pred, w)
    task.set_params(surrogate="nce", solve_ratio=1.0)
    targets = task.prepare_targets(c.unsqueeze(1))
    ours_pred = pred.clone().requires_grad_(True)
    ours = task.loss(ours_pred.unsqueeze(1), targets)
    assert targets.context.pool.shape == nce.solpool.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(_grad(ours, ours_pred), _grad(theirs, theirs_pred))


@pytest.mark.parametrize("problem", ["path", "knapsack"])
def test_regret_matches_pyepo_metric(problem):
    model, task, dataset, c, _, _, pred = _batch_and_dataset(problem, n=40)
    predictor = torch.nn.Linear(5, c.shape[1])
    with torch.no_grad():
        pred = predictor(torch.as_tensor(dataset.feats, dtype=torch.float32))
    theirs = pyepo.metric.regret(predictor, model, DataLoader(dataset, batch_size=16))
    ours = normalized_regret(c.numpy(), pred.numpy(), task)
    assert ours == pytest.approx(theirs, rel=1e-5)
