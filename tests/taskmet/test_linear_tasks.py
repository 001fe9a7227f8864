"""Tests of the linear decision tasks: exact solvers, surrogate losses, regret, bad input."""

import itertools
import pickle

import numpy as np
import pytest
import torch
from joblib import parallel_backend
from sklearn.base import clone

from sktaskmet.datasets import make_knapsack, make_shortest_path
from sktaskmet.taskmet._linear_tasks import DecisionTargets
from sktaskmet.taskmet._lp_solvers import (
    grid_arcs,
    grid_paths,
    integer_scale,
    knapsack_rows,
    knapsack_solver,
    knapsack_split_plan,
    solve_grid_shortest_path,
    solve_knapsack_dp,
    solve_knapsack_split,
)
from sktaskmet.tasks import (
    Knapsack,
    LinearProgram,
    ShortestPath,
)

SURROGATES = ["spo+", "pfyl", "dpo", "dpo-regret", "dbb", "nce", "mse"]


def _all_paths(grid):
    """Every monotone north-west to south-east path of the grid, as arc indicators."""
    h, w = grid
    index = {arc: k for k, arc in enumerate(grid_arcs(grid))}
    paths = set()
    for moves in itertools.permutations("E" * (w - 1) + "S" * (h - 1)):
        node, path = 0, np.zeros(len(index))
        for move in moves:
            nxt = node + 1 if move == "E" else node + w
            path[index[(node, nxt)]] = 1
            node = nxt
        paths.add(tuple(path))
    return np.array(sorted(paths))


def _feasible_subsets(weights, capacities):
    subsets = np.array(list(itertools.product([0, 1], repeat=weights.shape[1])), dtype=float)
    return subsets[(subsets @ weights.T <= capacities + 1e-12).all(axis=1)]


def _batch(costs, dtype=torch.float64):
    return torch.as_tensor(np.asarray(costs), dtype=dtype).unsqueeze(1)


# ------------------------------------------------------------------------- exact solvers
@pytest.mark.parametrize("method", ["enumerate", "dp"])
@pytest.mark.parametrize("grid", [(2, 2), (3, 4), (4, 3), (1, 5), (5, 5)])
def test_shortest_path_matches_brute_force(grid, method, device):
    paths = _all_paths(grid)
    gen = torch.Generator().manual_seed(0)
    costs = torch.randn(64, paths.shape[1], generator=gen, dtype=torch.float64).to(device)
    solutions = solve_grid_shortest_path(costs, grid, method=method).cpu().numpy()
    brute = (costs.cpu().numpy() @ paths.T).min(axis=1)
    np.testing.assert_allclose((solutions * costs.cpu().numpy()).sum(1), brute, rtol=1e-12)
    # every solution is a path (a row of the enumeration)
    assert all((paths == row).all(axis=1).any() for row in solutions)
    np.testing.assert_array_equal(np.array(sorted(map(tuple, grid_paths(grid)))), paths)


def test_shortest_path_arcs_follow_pyepo_order():
    # PyEPO's _get_grid_arcs for (3, 3): east arcs of a row, then its south arcs
    assert grid_arcs((3, 3)) == [
        (0, 1), (1, 2), (0, 3), (1, 4), (2, 5),
        (3, 4), (4, 5), (3, 6), (4, 7), (5, 8),
        (6, 7), (7, 8),
    ]  # fmt: skip
    assert ShortestPath(grid=(5, 5)).n_costs == 40


def test_knapsack_dp_matches_brute_force(device):
    rng = np.random.RandomState(0)
    weights = rng.randint(1, 9, size=(1, 10))
    subsets = _feasible_subsets(weights, np.array([15]))
    values = torch.as_tensor(rng.normal(size=(50, 10))).to(device)
    solutions = solve_knapsack_dp(values, weights[0], 15, chunk_size=7).cpu().numpy()
    assert np.all(solutions @ weights[0] <= 15)
    np.testing.assert_allclose(
        (solutions * values.cpu().numpy()).sum(1), (values.cpu().numpy() @ subsets.T).max(1)
    )


def _assert_optimal_knapsack(solutions, values, weights, capacity):
    """0/1 solutions of ``values``' dtype and shape, feasible, and as good as brute force."""
    assert solutions.dtype == values.dtype and solutions.shape == values.shape
    chosen = solutions.double().numpy()
    assert np.all(chosen @ weights <= capacity) and set(np.unique(chosen)) <= {0.0, 1.0}
    subsets = _feasible_subsets(weights[None, :], np.array([capacity]))
    best = (values.double().numpy() @ subsets.T).max(1)
    np.testing.assert_allclose((chosen * values.double().numpy()).sum(1), best, atol=1e-5)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_knapsack_dp_backends_match_brute_force_on_random_instances(backend):
    # zero weights, items heavier than the capacity, common divisors, integer values
    # (ties), float32 and float64, batches of one
    rng = np.random.RandomState(5)
    for trial in range(120):
        n_items = rng.randint(1, 10)
        capacity = int(rng.randint(0, 30))
        weights = rng.randint(0, 14, size=n_items) * (1 + trial % 3)
        capacity *= 1 + trial % 3
        values = rng.normal(size=(rng.randint(1, 9), n_items))
        if trial % 2:
            values = np.round(values)  # ties between solutions
        dtype = torch.float32 if trial % 4 == 3 else torch.float64
        values = torch.as_tensor(values, dtype=dtype)
        solutions = solve_knapsack_dp(values, weights, capacity, chunk_size=4, backend=backend)
        _assert_optimal_knapsack(solutions, values, weights, capacity)


def test_knapsack_dp_backends_agree_and_break_ties_alike():
    # the numpy (CPU) and torch (accelerator) tables take the same items, ties included
    rng = np.random.RandomState(6)
    weights = rng.randint(300, 800, size=24)
    values = torch.as_tensor(np.round(rng.normal(size=(40, 24)) * 2), dtype=torch.float32)
    by_numpy = solve_knapsack_dp(values, weights, 2000, backend="numpy")
    by_torch = solve_knapsack_dp(values, weights, 2000, backend="torch")
    torch.testing.assert_close(by_numpy, by_torch)
    assert solve_knapsack_dp(values[:0], weights, 2000).shape == (0, 24)
    with pytest.raises(ValueError, match="backend"):
        solve_knapsack_dp(values, weights, 2000, backend="gpu")


def test_knapsack_split_matches_brute_force_on_random_instances():
    # zero weights, items heavier than the capacity, negative values, integer values
    # (ties), float32 and float64, batches of one, halves of zero or one item
    rng = np.random.RandomState(8)
    for trial in range(120):
        n_items = rng.randint(1, 11)
        capacity = int(rng.randint(0, 30))
        weights = rng.randint(0, 14, size=n_items)
        values = rng.normal(size=(rng.randint(1, 9), n_items))
        if trial % 2:
            values = np.round(values)
        dtype = torch.float32 if trial % 4 == 3 else torch.float64
        values = torch.as_tensor(values, dtype=dtype)
        plan = knapsack_split_plan(weights, capacity, max_subsets=2**n_items)
        solutions = solve_knapsack_split(values, plan)
        _assert_optimal_knapsack(solutions, values, weights, capacity)


def test_knapsack_solver_splits_when_few_subsets_fit():
    # PyEPO's knapsack (32 items of 3 to 8, capacity 20): few subsets fit, the split is
    # chosen and reaches the table's optimum; light items under a large capacity: the table
    _, values, weights = make_knapsack(n_samples=64, n_items=32, random_state=3)
    integer = np.round(weights[0] * 100).astype(np.int64)
    assert knapsack_split_plan(integer, 2000) is not None
    costs = torch.as_tensor(values, dtype=torch.float32) - 2.0  # some values negative
    by_split = knapsack_solver(integer, 2000)(costs)
    by_table = solve_knapsack_dp(costs, integer, 2000)
    assert np.all(by_split.numpy() @ integer <= 2000)
    torch.testing.assert_close((by_split * costs).sum(1), (by_table * costs).sum(1))
    light = np.arange(1, 21)
    assert knapsack_split_plan(light, 150) is None
    assert knapsack_split_plan(light, 150, max_subsets=2**10) is not None
    small = torch.as_tensor(np.random.RandomState(9).normal(size=(5, 20)))
    torch.testing.assert_close(
        knapsack_solver(light, 150)(small), solve_knapsack_dp(small, light, 150)
    )


def test_solvers_take_costs_with_a_graph_and_return_none():
    # the batch solvers detach what carries a graph instead of entering no_grad
    costs = torch.rand(4, 40, dtype=torch.float64, requires_grad=True)
    for method in ("enumerate", "dp"):
        solution = solve_grid_shortest_path(costs, (5, 5), method=method)
        assert not solution.requires_grad and solution.grad_fn is None
    values = torch.randn(4, 6, requires_grad=True)
    plan = knapsack_split_plan([3, 4, 5, 2, 6, 1], 9, max_subsets=64)
    for solve in (knapsack_solver([3, 4, 5, 2, 6, 1], 9), lambda v: solve_knapsack_split(v, plan)):
        assert solve(values).grad_fn is None
    assert solve_knapsack_dp(values, [3, 4, 5, 2, 6, 1], 9).grad_fn is None


def test_knapsack_rows_skip_only_unread_capacities():
    # item 0: above its weight the table is constant; item 1: rows below 10 - 5 are never
    # read again, above 3 + 4 constant; the last item: only the capacity itself is read
    assert knapsack_rows([3, 4, 5], 10) == [(3, 3), (5, 7), (10, 10)]
    assert knapsack_rows([2, 2], 3) == [(2, 2), (3, 3)]


def test_knapsack_without_integer_weights_uses_highs():
    # weights without a power-of-ten scale take the MILP path; same optimum as brute force
    weights = np.array([[1 / 3, 2 / 7, 0.55, 1 / 9, 0.8]])
    assert integer_scale(weights[0], 1.0) is None
    task = Knapsack(weights[0], 1.0)
    values = np.random.RandomState(7).normal(size=(6, 5))
    solutions = task.decide(_batch(values)).numpy()
    subsets = _feasible_subsets(weights, np.array([1.0]))
    np.testing.assert_allclose((solutions * values).sum(1), (values @ subsets.T).max(1))


@pytest.mark.parametrize("dim", [1, 2])
def test_knapsack_task_matches_brute_force(dim):
    # PyEPO's two-decimal weights: the one-dimensional case is solved exactly in torch,
    # dim 2 takes the MILP
    _, values, weights = make_knapsack(n_samples=10, n_items=9, dim=dim, random_state=0)
    capacities = [14.5] * dim
    subsets = _feasible_subsets(weights, np.array(capacities))
    task = Knapsack(weights if dim > 1 else weights[0], capacities)
    solutions = task.decide(_batch(values)).numpy()
    np.testing.assert_allclose((solutions * values).sum(1), (values @ subsets.T).max(1))
    assert integer_scale(weights[0], 14.5) == 100


def test_linear_program_integer_matches_brute_force():
    # a small assignment-like integer program: pick 2 of 5 items, at most one of {0, 1}
    A_ub = [[1, 1, 0, 0, 0]]
    A_eq = [[1, 1, 1, 1, 1]]
    task = LinearProgram(
        A_ub=A_ub, b_ub=[1], A_eq=A_eq, b_eq=[2], bounds=(0, 1), integrality=[1] * 5
    )
    subsets = np.array(list(itertools.product([0, 1], repeat=5)), dtype=float)
    subsets = subsets[(subsets.sum(1) == 2) & (subsets[:, :2].sum(1) <= 1)]
    costs = np.random.RandomState(1).normal(size=(8, 5))
    solutions = task.decide(_batch(costs)).numpy()
    np.testing.assert_allclose((solutions * costs).sum(1), (costs @ subsets.T).min(1), atol=1e-9)
    maximise = clone(task).set_params(sense="max")
    solutions = maximise.decide(_batch(costs)).numpy()
    np.testing.assert_allclose((solutions * costs).sum(1), (costs @ subsets.T).max(1), atol=1e-9)


def test_linear_program_shortest_path_agrees_with_dp():
    # the grid shortest path as a flow LP solved by HiGHS gives the DP's optimum
    grid = (3, 3)
    arcs = grid_arcs(grid)
    A_eq = np.zeros((9, len(arcs)))
    for k, (tail, head) in enumerate(arcs):
        A_eq[tail, k] -= 1
        A_eq[head, k] += 1
    b_eq = np.zeros(9)
    b_eq[0], b_eq[-1] = -1, 1
    lp = LinearProgram(A_eq=A_eq, b_eq=b_eq, bounds=(0, 1), n_jobs=2)
    costs = _batch(np.random.RandomState(2).uniform(size=(6, len(arcs))))
    with parallel_backend("threading"):  # the joblib path, without process start-up
        z_lp = lp.optimal_quality(costs)
    z_dp = ShortestPath(grid=grid).optimal_quality(costs)
    torch.testing.assert_close(z_lp, z_dp)


# --------------------------------------------------------------------------- bad input
def test_infeasible_and_unbounded_programs_raise():
    infeasible = LinearProgram(A_ub=[[1.0, 1.0]], b_ub=[-1.0], bounds=(0, None))
    with pytest.raises(ValueError, match="infeasible"):
        infeasible.decide(_batch([[1.0, 1.0]]))
    unbounded = LinearProgram(A_ub=[[1.0, -1.0]], b_ub=[1.0], bounds=(0, None))
    with pytest.raises(ValueError, match="unbounded"):
        unbounded.decide(_batch([[-1.0, -1.0]]))


def test_bad_costs_and_surrogate_names_raise():
    task = ShortestPath(grid=(3, 3))
    with pytest.raises(ValueError, match="length 5, expected 12"):
        task.decide(torch.zeros(2, 1, 5))
    bad = torch.zeros(2, 1, 12)
    bad[1, 0, 3] = torch.nan
    with pytest.raises(ValueError, match="NaN"):
        task.decide(bad)
    with pytest.raises(ValueError, match="NaN"):
        task.prepare_targets(bad)
    with pytest.raises(ValueError, match="unknown surrogate 'spo'"):
        ShortestPath(surrogate="spo").loss(torch.zeros(2, 1, 40), torch.ones(2, 1, 40))
    with pytest.raises(ValueError, match="solve_ratio"):
        ShortestPath(solve_ratio=1.5).prepare_targets(torch.ones(2, 1, 40))
    with pytest.raises(ValueError, match="grid"):
        _ = ShortestPath(grid=(0, 3)).n_costs
    with pytest.raises(ValueError, match="capacities"):
        _ = Knapsack(weights=[[1, 2], [3, 4]], capacities=[1.0]).n_costs
    with pytest.raises(ValueError, match="40 costs per instance"):
        task = ShortestPath()
        task.check_targets(np.zeros((10, 1, 7)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_predictions_give_nan_losses(bad, dtype):
    # the training loop's non-finite guard then restores the last good state and warns
    y = torch.rand(3, 1, 40, dtype=dtype)
    pred = y.clone()
    pred[2, 0, 7] = bad
    assert torch.isnan(ShortestPath().loss(pred, y)).all()
    value, gradient = ShortestPath().loss_and_gradient(pred, y)
    assert torch.isnan(value).all() and torch.isnan(gradient).all()
    # huge but finite predictions are not mistaken for non-finite ones
    pred[2, 0, 7] = 1e30
    value, gradient = ShortestPath().loss_and_gradient(pred, y)
    assert torch.isfinite(value).all() and torch.isfinite(gradient).all()


# ---------------------------------------------------------------------- surrogate losses
def _paths_problem(seed=0, n=6):
    grid = (3, 3)
    paths = torch.as_tensor(_all_paths(grid))
    gen = torch.Generator().manual_seed(seed)
    true = torch.rand(n, 12, generator=gen, dtype=torch.float64) + 0.1
    pred = torch.randn(n, 12, generator=gen, dtype=torch.float64)
    return grid, paths, true, pred


def _argmin_paths(costs, paths):
    return paths[(costs @ paths.T).argmin(dim=1)]


def test_spo_plus_value_and_gradient():
    grid, paths, true, pred = _paths_problem()
    task = ShortestPath(grid=grid, surrogate="spo+")
    pred_req = pred.clone().requires_grad_(True)
    loss = task.loss(pred_req.unsqueeze(1), true.unsqueeze(1))
    (grad,) = torch.autograd.grad(loss.sum(), pred_req)
    w_true = _argmin_paths(true, paths)
    w_shift = _argmin_paths(2 * pred - true, paths)
    z_true = (true * w_true).sum(1)
    # Elmachtoub and Grigas: -min_w (2p - c)w + 2 p w*(c) - z*(c)
    expected = -((2 * pred - true) * w_shift).sum(1) + 2 * (pred * w_true).sum(1) - z_true
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, 2 * (w_true - w_shift))
    # SPO+ upper-bounds the regret
    assert torch.all(loss >= task.regret(pred.unsqueeze(1), true.unsqueeze(1)) - 1e-12)


def test_spo_plus_maximisation_signs():
    # knapsack: max; SPO+ = max_w (2p - c)w - 2 p w*(c) + z*(c), gradient 2 (w_q - w*)
    weights = np.array([[2.0, 3.0, 4.0, 5.0]])
    subsets = torch.as_tensor(_feasible_subsets(weights, np.array([7.0])))
    task = Knapsack(weights[0], 7.0, surrogate="spo+")
    gen = torch.Generator().manual_seed(3)
    true = torch.rand(5, 4, generator=gen, dtype=torch.float64)
    pred = torch.randn(5, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    loss = task.loss(pred.unsqueeze(1), true.unsqueeze(1))
    (grad,) = torch.autograd.grad(loss.sum(), pred)
    w_true = subsets[(true @ subsets.T).argmax(1)]
    shifted = (2 * pred - true).detach()
    w_q = subsets[(shifted @ subsets.T).argmax(1)]
    expected = (shifted * w_q).sum(1) - 2 * (pred.detach() * w_true).sum(1) + (true * w_true).sum(1)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, 2 * (w_q - w_true))


def _same_noise(task, shape, dtype=torch.float64):
    """The perturbations a freshly prepared target draws for its first loss call."""
    from sklearn.utils import check_random_state

    from sktaskmet._backend import make_generator

    rng = check_random_state(task.random_state)
    rng.randint(0, 2**31 - 1)  # the pool-branch stream is drawn first
    return torch.randn(shape, generator=make_generator(rng, "cpu"), dtype=dtype)


def test_pfyl_value_and_gradient():
    grid, paths, true, pred = _paths_problem(seed=1)
    task = ShortestPath(grid=grid, surrogate="pfyl", n_samples=7, sigma=0.5, random_state=3)
    noise = _same_noise(task, (6, 7, 12))
    pred_req = pred.clone().requires_grad_(True)
    loss = task.loss(pred_req.unsqueeze(1), true.unsqueeze(1))
    (grad,) = torch.autograd.grad(loss.sum(), pred_req)
    perturbed = pred.unsqueeze(1) + 0.5 * noise
    solutions = _argmin_paths(perturbed.reshape(-1, 12), paths).reshape(6, 7, 12)
    w_true = _argmin_paths(true, paths)
    # Berthet et al.: F(p) = E[min_w (p + sigma xi) w]; loss p w*(c) - F(p) (minimisation)
    F = (perturbed * solutions).sum(-1).mean(1)
    torch.testing.assert_close(loss, (pred * w_true).sum(1) - F)
    torch.testing.assert_close(grad, w_true - solutions.mean(1))


def _perturbed_paths_loss(surrogate, seed):
    """A perturbed surrogate's loss and autograd gradient on small grid paths, with the
    noise it drew, its perturbed solutions and the true costs and solutions."""
    grid, paths, true, pred = _paths_problem(seed=seed)
    task = ShortestPath(grid=grid, surrogate=surrogate, n_samples=5, sigma=1.0, random_state=0)
    noise = _same_noise(task, (6, 5, 12))
    pred_req = pred.clone().requires_grad_(True)
    loss = task.loss(pred_req.unsqueeze(1), true.unsqueeze(1))
    (grad,) = torch.autograd.grad(loss.sum(), pred_req)
    solutions = _argmin_paths((pred.unsqueeze(1) + noise).reshape(-1, 12), paths).reshape(6, 5, 12)
    return loss, grad, noise, solutions, true, _argmin_paths(true, paths)


def _score_function_estimate(noise, solutions, upstream):
    """The score-function estimator of J^T upstream, leave-one-out baseline, 5 samples."""
    reward = (solutions * upstream.unsqueeze(1)).sum(-1)
    reward = (reward - reward.mean(1, keepdim=True)) * 5 / 4
    return (noise * reward.unsqueeze(-1)).sum(1) / (5 * 1.0 + 1e-8)


def test_dpo_value_and_gradient():
    loss, grad, noise, solutions, _, w_true = _perturbed_paths_loss("dpo", seed=2)
    mean = solutions.mean(1)
    torch.testing.assert_close(loss, ((mean - w_true) ** 2).mean(1))
    upstream = 2 * (mean - w_true) / 12  # the squared loss's gradient in the mean solution
    torch.testing.assert_close(grad, _score_function_estimate(noise, solutions, upstream))


def test_dpo_regret_value_and_gradient():
    # the regret of the mean perturbed path, and the score-function gradient of c . w_k
    loss, grad, noise, solutions, true, w_true = _perturbed_paths_loss("dpo-regret", seed=4)
    regret = (solutions.mean(1) * true).sum(1) - (w_true * true).sum(1)
    torch.testing.assert_close(loss, regret)
    assert (loss >= 0).all()
    torch.testing.assert_close(grad, _score_function_estimate(noise, solutions, true))


@pytest.mark.parametrize("sense", [1, -1])
def test_dpo_regret_estimates_the_smoothed_regret_and_its_gradient(sense):
    # Choosing one of two items, w*(c) = e_1 if s c_1 < s c_2: the perturbed decision picks
    # item 2 with probability P = Phi(s (p_1 - p_2) / (sigma sqrt 2)), so the expected
    # regret is P |c_1 - c_2| and its gradient in p_1 is s phi(.) / (sigma sqrt 2) |c_1 - c_2|
    # (and the opposite in p_2). Many draws of the estimator must agree with both.
    from sktaskmet.taskmet._dfl_losses import perturbed_regret_loss

    sigma, n = 0.5, 200_000
    true = torch.tensor([[1.0, 2.0]], dtype=torch.float64) * sense
    pred = torch.tensor([[0.3, 0.5]], dtype=torch.float64) * sense
    true_solution = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    true_objective = (true * true_solution).sum(-1)

    def solve(costs):
        first = (sense * costs[:, 0] <= sense * costs[:, 1]).to(costs.dtype)
        return torch.stack([first, 1 - first], dim=1)

    noise = torch.randn((1, n, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    value, gradient = perturbed_regret_loss(
        pred, true, true_objective, noise, sigma, solve, sense, with_gradient=True
    )
    normal = torch.distributions.Normal(0.0, 1.0)
    # s (p_1 - p_2) is 0.3 - 0.5 for either sense (the costs are multiplied by s)
    z = torch.tensor((0.3 - 0.5) / (sigma * 2**0.5), dtype=torch.float64)
    gap = 1.0  # |c_1 - c_2|, the regret of the wrong item
    assert value.item() == pytest.approx(normal.cdf(z).item() * gap, abs=0.005)
    slope = sense * normal.log_prob(z).exp().item() / (sigma * 2**0.5) * gap
    torch.testing.assert_close(
        gradient, torch.tensor([[slope, -slope]], dtype=torch.float64), atol=0.02, rtol=0
    )


def test_dbb_value_and_gradient():
    grid, paths, true, pred = _paths_problem(seed=3)
    task = ShortestPath(grid=grid, surrogate="dbb", dbb_lambda=15.0)
    pred_req = pred.clone().requires_grad_(True)
    loss = task.loss(pred_req.unsqueeze(1), true.unsqueeze(1))
    (grad,) = torch.autograd.grad(loss.sum(), pred_req)
    w_pred = _argmin_paths(pred, paths)
    z_true = (true * _argmin_paths(true, paths)).sum(1)
    gap = (true * w_pred).sum(1) - z_true
    torch.testing.assert_close(loss, gap.abs())
    # Vlastelica et al.: (w*(p + lambda g) - w*(p)) / lambda with g = dL/dw = sign(gap) c
    g = torch.sign(gap).unsqueeze(1) * true
    expected = (_argmin_paths(pred + 15.0 * g, paths) - w_pred) / (15.0 + 1e-8)
    torch.testing.assert_close(grad, expected)


def test_nce_value_and_gradient_and_pool():
    grid, paths, true, pred = _paths_problem(seed=4)
    task = ShortestPath(grid=grid, surrogate="nce", solve_ratio=1.0)
    targets = task.prepare_targets(true.unsqueeze(1))
    pool_before = targets.context.pool.clone()
    torch.testing.assert_close(pool_before, torch.unique(_argmin_paths(true, paths), dim=0))
    pred_req = pred.clone().requires_grad_(True)
    loss = task.loss(pred_req.unsqueeze(1), targets)
    (grad,) = torch.autograd.grad(loss.sum(), pred_req)
    pool = targets.context.pool  # grown with the solutions of the predictions
    assert pool.shape[0] >= pool_before.shape[0]
    assert all((pool == row).all(1).any() for row in _argmin_paths(pred, paths))
    w_true = _argmin_paths(true, paths)
    expected = (pred * w_true).sum(1) - (pred @ pool.T).mean(1)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, w_true - pool.mean(0).expand_as(w_true))


@pytest.mark.parametrize("problem", ["path", "knapsack"])
@pytest.mark.parametrize(
    "surrogate",
    [
        "spo+",
        "pfyl",
        "dpo-regret",
        "nce",
        "mse",
        pytest.param({"pfyl": 0.7, "nce": 0.2, "spo+": 0.5}, id="mixture"),
    ],
)
def test_closed_form_gradients_match_autograd(surrogate, problem):
    # same values, same random draws and pool updates, same gradients as loss + autograd
    if problem == "path":
        _, y = make_shortest_path(n_samples=12, degree=2, noise_width=0.5, random_state=0)
        make_task = lambda: ShortestPath(surrogate=surrogate, n_samples=4, solve_ratio=0.7)  # noqa: E731
    else:
        _, y, weights = make_knapsack(n_samples=12, n_items=10, random_state=0)
        make_task = lambda: Knapsack(weights[0], 9.0, surrogate=surrogate, n_samples=4)  # noqa: E731
    true = torch.as_tensor(y).unsqueeze(1)
    pred = true + torch.randn(
        true.shape, generator=torch.Generator().manual_seed(1), dtype=true.dtype
    )
    by_autograd, by_formula = make_task(), make_task()
    targets_a, targets_f = by_autograd.prepare_targets(true), by_formula.prepare_targets(true)
    assert by_formula.has_loss_gradient()
    for _ in range(2):  # the second call sees the grown pool and the next random draws
        pred_req = pred.clone().requires_grad_(True)
        loss = by_autograd.loss(pred_req, targets_a)
        (grad,) = torch.autograd.grad(loss.sum(), pred_req)
        value, gradient = by_formula.loss_and_gradient(pred, targets_f)
        torch.testing.assert_close(value, loss.detach())
        torch.testing.assert_close(gradient, grad)
        pred = pred + 0.5


def test_closed_form_gradient_only_where_it_exists():
    y = torch.rand(3, 1, 40, dtype=torch.float64)
    for surrogate in ("dpo", "dbb", {"spo+": 1.0, "dbb": 0.5}):
        task = ShortestPath(surrogate=surrogate)
        assert not task.has_loss_gradient()
        with pytest.raises(ValueError, match="no closed-form gradient"):
            task.loss_and_gradient(y, y)
    pred = y.clone()
    pred[1, 0, 5] = torch.inf
    value, gradient = ShortestPath().loss_and_gradient(pred, y)
    assert torch.isnan(value).all() and torch.isnan(gradient).all()


@pytest.mark.parametrize("problem", ["path", "knapsack"])
def test_surrogate_mixture_is_the_weighted_sum_of_its_members(problem):
    # each member sees the same predictions and, in the mixture's order, the same draws
    # of the fit's random stream as a task of that member alone would
    if problem == "path":
        _, y = make_shortest_path(n_samples=8, degree=2, noise_width=0.5, random_state=3)
        make_task = lambda s: ShortestPath(surrogate=s, n_samples=5, random_state=7)  # noqa: E731
    else:
        _, y, weights = make_knapsack(n_samples=8, n_items=10, random_state=3)
        make_task = lambda s: Knapsack(weights[0], 9.0, surrogate=s, n_samples=5, random_state=7)  # noqa: E731
    true = torch.as_tensor(y).unsqueeze(1)
    pred = true + torch.randn(
        true.shape, generator=torch.Generator().manual_seed(2), dtype=true.dtype
    )
    mixture = make_task({"pfyl": 0.8, "spo+": 0.25})
    value, gradient = mixture.loss_and_gradient(pred, true)
    pfyl_value, pfyl_gradient = make_task("pfyl").loss_and_gradient(pred, true)
    spo_value, spo_gradient = make_task("spo+").loss_and_gradient(pred, true)
    torch.testing.assert_close(value, 0.8 * pfyl_value + 0.25 * spo_value)
    torch.testing.assert_close(gradient, 0.8 * pfyl_gradient + 0.25 * spo_gradient)
    torch.testing.assert_close(mixture.loss(pred, true), value)
    # a one-member mixture of weight 1 is that surrogate
    torch.testing.assert_close(make_task({"pfyl": 1}).loss(pred, true), pfyl_value)
    # SPO+ draws nothing from the random stream, so these two members commute
    swapped = make_task({"spo+": 0.25, "pfyl": 0.8}).loss(pred, true)
    torch.testing.assert_close(swapped, value)


@pytest.mark.parametrize(
    "surrogate, message",
    [
        ({}, "non-empty dict"),
        (["spo+", "pfyl"], "non-empty dict"),
        (None, "non-empty dict"),
        ({"spo+": 1.0, "spo": 1.0}, "unknown surrogate 'spo'"),
        ({"spo+": 0.0}, "weight of surrogate 'spo\\+' must be a positive"),
        ({"pfyl": -1.0}, "weight of surrogate 'pfyl' must be a positive"),
        ({"pfyl": np.nan}, "must be a positive finite"),
        ({"pfyl": np.inf}, "must be a positive finite"),
        ({"pfyl": True}, "must be a positive finite"),
        ({"pfyl": "1"}, "must be a positive finite"),
    ],
)
def test_bad_surrogate_mixtures_raise(surrogate, message):
    y = torch.rand(2, 1, 40, dtype=torch.float64)
    task = ShortestPath(surrogate=surrogate)
    with pytest.raises(ValueError, match=message):
        task.loss(y, y)
    with pytest.raises(ValueError, match=message):
        task.has_loss_gradient()


def test_mse_surrogate():
    _, _, true, pred = _paths_problem(seed=5)
    loss = ShortestPath(grid=(3, 3), surrogate="mse").loss(pred.unsqueeze(1), true.unsqueeze(1))
    torch.testing.assert_close(loss, ((pred - true) ** 2).mean(1))


def test_solution_pool_replaces_solves():
    # solve_ratio -> 0: the surrogate's solves come from the pool of training solutions
    grid, paths, true, pred = _paths_problem(seed=6)
    task = ShortestPath(grid=grid, surrogate="spo+", solve_ratio=1e-9)
    targets = task.prepare_targets(true.unsqueeze(1))
    pool = targets.context.pool.clone()
    loss = task.loss(pred.unsqueeze(1), targets)
    shifted = 2 * pred - true
    w_pool = pool[(shifted @ pool.T).argmin(1)]
    w_true = _argmin_paths(true, paths)
    expected = -(shifted * w_pool).sum(1) + 2 * (pred * w_true).sum(1) - (true * w_true).sum(1)
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_surrogates_run_on_device_and_dtype(surrogate, device, float_dtype):
    dtype = torch.float64 if float_dtype is np.float64 else torch.float32
    _, y = make_shortest_path(n_samples=8, degree=2, noise_width=0.5, random_state=0)
    true = torch.as_tensor(y, dtype=dtype, device=device).unsqueeze(1)
    pred = (true + 0.3).requires_grad_(True)
    task = ShortestPath(surrogate=surrogate)
    loss = task.loss(pred, task.prepare_targets(true))
    loss.sum().backward()
    assert loss.shape == (8,) and loss.dtype == dtype and loss.device.type == device
    assert torch.isfinite(pred.grad).all()


# --------------------------------------------------------------------- per-instance data
def test_decision_targets_follow_instance_indexing():
    _, y = make_shortest_path(n_samples=10, random_state=0)
    task = ShortestPath()
    targets = task.prepare_targets(torch.as_tensor(y).unsqueeze(1))
    solutions, objectives = task.solve(torch.as_tensor(y))
    batch = torch.tensor([7, 2, 2])
    picked = targets[batch]
    assert isinstance(picked, DecisionTargets)
    torch.testing.assert_close(picked.solutions, solutions[batch])
    torch.testing.assert_close(picked.objectives, objectives[batch])
    assert picked.context is targets.context
    # every other operation gives a plain tensor
    assert type(targets - 1) is torch.Tensor
    assert type(targets[..., 0]) is torch.Tensor
    assert type(targets.reshape(10, 40)) is torch.Tensor
    assert type(pickle.loads(pickle.dumps(targets))) is torch.Tensor


def test_loss_uses_prepared_solutions_without_resolving():
    # the prepared solutions are what the loss uses: corrupt them and the loss changes
    _, y = make_shortest_path(n_samples=6, random_state=1)
    true = torch.as_tensor(y).unsqueeze(1)
    task = ShortestPath(surrogate="spo+")
    targets = task.prepare_targets(true)
    honest = task.loss(true + 0.1, targets)
    torch.testing.assert_close(honest, task.loss(true + 0.1, true))
    # other instances' optimal paths in place of each instance's own: SPO+ is then
    # (2 p - c) . (w_given - w*(2 p - c)), with the given paths, not re-solved ones
    targets.solutions = targets.solutions.flip(0)
    shifted = (2 * (true + 0.1) - true)[:, 0]
    expected = (shifted * (targets.solutions - task.decide(shifted[:, None]))).sum(-1)
    torch.testing.assert_close(task.loss(true + 0.1, targets), expected)
    assert not torch.allclose(expected, honest)


# --------------------------------------------------------------------------------- regret
def test_regret_by_hand():
    # 2x2 grid: arcs 0->1, 0->2, 1->3, 2->3; two paths: {0, 2} (top) and {1, 3} (left)
    task = ShortestPath(grid=(2, 2))
    true = _batch([[1.0, 2.0, 1.0, 2.0], [3.0, 1.0, 3.0, 1.0]])
    pred = _batch([[5.0, 1.0, 5.0, 1.0], [0.0, 9.0, 0.0, 9.0]])
    # instance 1: optimum 2 (top path), decision left path costs 4 -> regret 2
    # instance 2: optimum 2 (left path), decision top path costs 6 -> regret 4
    torch.testing.assert_close(
        task.regret(pred, true), torch.tensor([2.0, 4.0], dtype=torch.float64)
    )
    assert task.normalized_regret(pred, true) == pytest.approx(6.0 / (4.0 + 1e-8))
    assert task.normalized_regret(true, true) == 0.0
    # maximisation: regret = z* - c w(p)
    knapsack = Knapsack([1.0, 1.0], 1.0)
    values = _batch([[3.0, 1.0]])
    torch.testing.assert_close(
        knapsack.regret(_batch([[0.0, 1.0]]), values), torch.tensor([2.0], dtype=torch.float64)
    )
    assert knapsack.normalized_regret(_batch([[0.0, 1.0]]), values) == pytest.approx(2 / 3)


def test_tasks_clone_and_pickle():
    for task in [
        ShortestPath(surrogate="pfyl"),
        ShortestPath(surrogate={"pfyl": 0.8, "spo+": 0.2}),
        Knapsack([1.0, 2.0], 2.0),
        LinearProgram(A_ub=[[1.0]], b_ub=[1.0]),
    ]:
        assert repr(clone(task)) == repr(task)
        assert repr(pickle.loads(pickle.dumps(task))) == repr(task)
