"""Tests of the downstream decision tasks (sktaskmet.tasks)."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone

from sktaskmet.datasets import (
    make_budget_allocation,
    make_cartpole_distractors,
    make_cubic_topk,
    make_portfolio,
)
from sktaskmet.taskmet._decision_solvers import (
    project_capped_simplex,
    project_simplex,
    soft_topk,
    solve_coverage,
)
from sktaskmet.tasks import BudgetAllocation, CallableTask, Portfolio, StateReward, TopK


def _cubic_batch(n_instances=20, n_items=10, dtype=torch.float64, seed=0):
    X, y, _ = make_cubic_topk(n_instances=n_instances, n_items=n_items, random_state=seed)
    x = torch.as_tensor(X, dtype=dtype).view(n_instances, n_items, 1)
    return x, torch.as_tensor(y, dtype=dtype).view(n_instances, n_items, 1)


# ---------------------------------------------------------------------------------- TopK
@pytest.mark.parametrize("k", [1, 3])
def test_soft_topk_marginals(k):
    gen = torch.Generator().manual_seed(0)
    scores = 10 * torch.randn(6, 12, 1, generator=gen, dtype=torch.float64)
    z = TopK(k=k, epsilon=0.05, n_iter=500).soft_decision(scores)
    assert z.shape == (6, 12)
    assert torch.all(z >= 0) and torch.all(z <= 1 + 1e-9)
    # Anchor marginal: the soft indicator sums to k; item marginals: each item sends 1/m,
    # so its mass on the "top" anchor is at most 1 (checked above) and the mass on the
    # "bottom" anchor is 1 - z.
    np.testing.assert_allclose(z.sum(-1).numpy(), k, rtol=1e-10)


@pytest.mark.parametrize("k", [1, 2])
def test_soft_topk_tends_to_hard_topk(k):
    gen = torch.Generator().manual_seed(1)
    # Distinct scores one unit apart, so that the hard top-k is well defined.
    scores = torch.stack([torch.randperm(8, generator=gen) for _ in range(5)])
    scores = scores.to(torch.float64).unsqueeze(-1) - 3.5
    task = TopK(k=k)
    hard = task.decide(scores)
    errors = []
    for epsilon in [0.1, 0.01, 1e-3]:
        soft = TopK(k=k, epsilon=epsilon, n_iter=2000).soft_decision(scores)
        errors.append(float((soft - hard).abs().max()))
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.02
    assert errors[0] > 0.1


def test_soft_topk_stable_small_epsilon_float32():
    # Scores of scale ~10 and epsilon = 0.01: no overflow thanks to the log domain.
    x, y = _cubic_batch(dtype=torch.float32)
    pred = (3.0 * x).requires_grad_(True)
    loss = TopK(epsilon=0.01).loss(pred, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_topk_loss_prefers_good_predictions():
    x, y = _cubic_batch()
    task = TopK()
    assert task.loss(y, y).mean() < task.loss(-y, y).mean()
    # The loss is minus the soft objective: close to minus the optimum for exact predictions.
    np.testing.assert_allclose(
        (-task.loss(y, y)).mean().item(), task.optimal_quality(y).mean().item(), rtol=0.05
    )


def _sinkhorn_reference(scores, k, epsilon, n_iter):
    """Plain log-domain Sinkhorn iterations on the reference relaxation (Xie et al. 2020).

    The negated scores go onto the anchors (0, 1), the k chosen items to anchor 0; the cost
    is divided by its maximum over the instance, differentiated through by autograd.
    """
    batch, m = scores.shape
    cost = (-scores.unsqueeze(-1) - torch.tensor([0.0, 1.0], dtype=scores.dtype)) ** 2
    cost = cost / cost.amax(dim=(1, 2), keepdim=True)
    log_mu = torch.full((batch, m), -np.log(m), dtype=scores.dtype)
    log_nu = torch.log(torch.tensor([k / m, (m - k) / m], dtype=scores.dtype)).expand(batch, 2)
    f, g = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(n_iter):
        f = epsilon * (log_mu - torch.logsumexp((g.unsqueeze(1) - cost) / epsilon, dim=2))
        g = epsilon * (log_nu - torch.logsumexp((f.unsqueeze(2) - cost) / epsilon, dim=1))
    return m * torch.exp((f + g[:, 0:1] - cost[:, :, 0]) / epsilon)


@pytest.mark.parametrize("k, epsilon", [(1, 0.1), (3, 0.05), (2, 0.02)])
def test_soft_topk_equals_the_sinkhorn_fixed_point_and_its_derivative(k, epsilon):
    gen = torch.Generator().manual_seed(4)
    scores = 3 * torch.randn(4, 9, generator=gen, dtype=torch.float64)
    weights = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    exact = scores.clone().requires_grad_(True)
    unrolled = scores.clone().requires_grad_(True)
    z_exact = soft_topk(exact, k, epsilon, 200)
    z_sinkhorn = _sinkhorn_reference(unrolled, k, epsilon, 3000)
    np.testing.assert_allclose(z_exact.detach().numpy(), z_sinkhorn.detach().numpy(), atol=1e-9)
    # The implicit derivative equals the derivative of the converged iterations.
    (z_exact * weights).sum().backward()
    (z_sinkhorn * weights).sum().backward()
    np.testing.assert_allclose(exact.grad.numpy(), unrolled.grad.numpy(), rtol=1e-6, atol=1e-9)


def test_topk_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(2, 6, generator=gen, dtype=torch.float64).requires_grad_(True)
    y = torch.randn(2, 6, generator=gen, dtype=torch.float64)

    # A fixed cost scale, and the default one (the instance's maximum cost, differentiated:
    # finite differences move it too).
    scale = torch.tensor([[[7.0]], [[9.0]]], dtype=torch.float64)
    for cost_scale in [scale, None]:

        def loss(s, cost_scale=cost_scale):
            return -(soft_topk(s, 2, 0.05, 300, cost_scale=cost_scale) * y).sum(-1)

        assert torch.autograd.gradcheck(loss, (scores,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_topk_relaxation_depends_on_the_level_of_the_predictions():
    # Shifting all predictions of an instance changes the cost normalisation, hence the
    # effective temperature; the gradient has a component along the shift.
    x, y = _cubic_batch(n_instances=8)
    pred = (2.0 * x + 1.5).requires_grad_(True)
    task = TopK(epsilon=0.05)
    loss = task.loss(pred, y)
    assert not torch.allclose(loss, task.loss(pred - 3.0, y))
    loss.sum().backward()
    assert pred.grad.sum(dim=(1, 2)).abs().max() > 1e-3
    # With a fixed scale the relaxation is shift invariant.
    fixed = torch.full((8, 1), 30.0, dtype=torch.float64)
    z1 = soft_topk(pred[..., 0].detach(), 1, 0.05, 200, cost_scale=fixed)
    z2 = soft_topk(pred[..., 0].detach() - 3.0, 1, 0.05, 200, cost_scale=fixed)
    np.testing.assert_allclose(z1.numpy(), z2.numpy(), atol=1e-12)


def test_topk_decision_quality_normalisation():
    x, y = _cubic_batch(n_instances=200, n_items=20)
    task = TopK()
    assert task.normalized_decision_quality(y, y) == pytest.approx(1.0)
    # Predictions unrelated to the targets score about 0 on average.
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(y.shape, generator=gen, dtype=y.dtype)
    assert abs(task.normalized_decision_quality(noise, y)) < 0.15
    # The least-squares line of the cubic (slope about -0.5) picks bad items.
    assert task.normalized_decision_quality(-0.5 * x, y) < -0.6
    np.testing.assert_allclose(
        task.random_quality(y).numpy(), y[..., 0].mean(-1).numpy(), rtol=1e-12
    )


def test_topk_hard_decision():
    task = TopK(k=2)
    pred = torch.tensor([[[0.1], [3.0], [2.0], [-1.0]]])
    np.testing.assert_array_equal(task.decide(pred).numpy(), [[0, 1, 1, 0]])
    y = torch.tensor([[[5.0], [1.0], [2.0], [0.0]]])
    assert task.decision_quality(pred, y).item() == pytest.approx(3.0)
    assert task.optimal_quality(y).item() == pytest.approx(7.0)
    assert task.random_quality(y).item() == pytest.approx(4.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_follows_dtype(device, dtype):
    x, y = _cubic_batch(dtype=dtype)
    x, y = x.to(device), y.to(device)
    task = TopK()
    for out in (
        task.loss(x, y),
        task.decide(x),
        task.decision_quality(x, y),
        task.optimal_quality(y),
        task.random_quality(y),
    ):
        assert out.dtype == dtype and out.device.type == torch.device(device).type
    assert isinstance(task.normalized_decision_quality(x, y), float)


def test_topk_batching_matches_single_instances():
    x, y = _cubic_batch(n_instances=5)
    task = TopK()
    batched = task.loss(3 * x, y)
    single = torch.cat([task.loss(3 * x[i : i + 1], y[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(batched.numpy(), single.numpy(), rtol=1e-12)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"k": 0}, "k must be"),
        ({"k": 10}, "more than k items"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"n_iter": 0}, "n_iter"),
    ],
)
def test_topk_bad_parameters(params, message):
    x, y = _cubic_batch()
    with pytest.raises(ValueError, match=message):
        TopK(**params).loss(x, y)


def test_task_bad_inputs():
    x, y = _cubic_batch()
    task = TopK()
    with pytest.raises(ValueError, match="needs 1 output"):
        task.loss(x.expand(-1, -1, 2), y.expand(-1, -1, 2))
    with pytest.raises(ValueError, match="needs 1 output"):
        task.check_targets(np.zeros((10, 3)))
    task.check_targets(np.zeros(10))
    with pytest.raises(ValueError, match=r"shape \(batch, m, d\)"):
        task.loss(x[..., 0], y[..., 0])
    with pytest.raises(ValueError, match="same shape"):
        task.loss(x[:3], y)
    with pytest.raises(TypeError, match="torch.Tensor"):
        task.loss(x.numpy(), y)


def test_task_params_repr_clone_pickle():
    task = TopK(k=3, epsilon=0.05)
    assert task.get_params() == {"k": 3, "epsilon": 0.05, "n_iter": 200}
    assert repr(task) == "TopK(epsilon=0.05, k=3)"
    assert repr(TopK()) == "TopK()"
    cloned = clone(task)
    assert cloned is not task and cloned.get_params() == task.get_params()
    restored = pickle.loads(pickle.dumps(task))
    assert restored.get_params() == task.get_params()
    assert task.set_params(k=2).k == 2
    with pytest.raises(ValueError, match="Invalid parameter"):
        task.set_params(kk=2)


# ----------------------------------------------------------------------------- Portfolio
def _portfolio_batch(n_days=6, n_assets=8, dtype=torch.float64, seed=0):
    X, y, _, cov = make_portfolio(
        n_days=n_days, n_assets=n_assets, noise=2.0, return_covariance=True, random_state=seed
    )
    return torch.as_tensor(y, dtype=dtype).view(n_days, n_assets, 1), cov


def test_project_simplex_is_the_euclidean_projection():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(50, 7, generator=gen, dtype=torch.float64) * 2
    x = project_simplex(v)
    np.testing.assert_allclose(x.sum(-1).numpy(), 1.0, rtol=1e-12)
    assert torch.all(x >= 0)
    # Optimality of the projection: <v - x, w - x> <= 0 for every feasible w (vertices).
    for j in range(7):
        w = torch.zeros(7, dtype=torch.float64)
        w[j] = 1.0
        assert torch.all(((v - x) * (w - x)).sum(-1) <= 1e-12)


def test_portfolio_solution_satisfies_kkt():
    y, cov = _portfolio_batch()
    task = Portfolio(covariance=cov, risk_aversion=0.1)
    x = task.decide(y)
    np.testing.assert_allclose(x.sum(-1).numpy(), 1.0, rtol=1e-10)
    assert torch.all(x >= -1e-12)
    # Gradient of the objective to maximise; equal on the support, smaller off it.
    grad = y[..., 0] - 0.2 * x @ torch.as_tensor(cov)
    for row_x, row_g in zip(x, grad, strict=True):
        support = row_x > 1e-9
        top = row_g[support]
        assert float(top.max() - top.min()) < 1e-8
        if (~support).any():
            assert float(row_g[~support].max()) <= float(top.mean()) + 1e-8
    # The solution beats random feasible portfolios.
    gen = np.random.RandomState(0)
    for _ in range(20):
        w = torch.as_tensor(gen.dirichlet(np.ones(8), size=6))
        assert torch.all(task.quality(w, y) <= task.quality(x, y) + 1e-10)


def test_portfolio_gradient_matches_finite_differences():
    # Enough risk aversion for interior solutions on several assets.
    y, cov = _portfolio_batch(n_days=3, n_assets=6, seed=1)
    task = Portfolio(covariance=cov, risk_aversion=0.5)
    y_pred = (
        y + torch.randn(y.shape, generator=torch.Generator().manual_seed(0), dtype=y.dtype)
    ).requires_grad_(True)
    assert (task.decide(y_pred) > 1e-6).sum(-1).min() >= 2
    assert torch.autograd.gradcheck(
        lambda p: task.loss(p, y), (y_pred,), eps=1e-6, atol=1e-6, rtol=1e-4
    )


def test_portfolio_normalisation_and_random_reference():
    y, cov = _portfolio_batch(n_days=40, n_assets=10)
    task = Portfolio(covariance=cov)
    assert task.normalized_decision_quality(y, y) == pytest.approx(1.0)
    # The closed-form random reference equals the Monte-Carlo mean over the simplex.
    draws = torch.as_tensor(np.random.RandomState(0).dirichlet(np.ones(10), size=20000))
    y0 = y[:1].expand(20000, -1, -1)
    monte_carlo = task.quality(draws, y0).mean()
    assert float(task.random_quality(y[:1])[0]) == pytest.approx(float(monte_carlo), abs=0.05)
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(0), dtype=y.dtype)
    assert task.normalized_decision_quality(noise, y) < 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_portfolio_follows_dtype(device, dtype):
    y, cov = _portfolio_batch(dtype=dtype)
    y = y.to(device)
    task = Portfolio(covariance=cov)
    pred = (y + 0.5).requires_grad_(True)
    loss = task.loss(pred, y)
    assert loss.dtype == dtype and loss.device.type == torch.device(device).type
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all()
    assert task.decide(y).dtype == dtype
    assert task.random_quality(y).dtype == dtype


def test_portfolio_identity_covariance_and_errors():
    y, cov = _portfolio_batch(n_assets=8)
    task = Portfolio()  # identity risk model: x* is the projection of y / (2 lambda)
    np.testing.assert_allclose(
        task.decide(y).numpy(), project_simplex(y[..., 0] / 0.2).numpy(), atol=1e-9
    )
    with pytest.raises(ValueError, match=r"shape \(m, m\) = \(8, 8\)"):
        Portfolio(covariance=np.eye(5)).decide(y)
    with pytest.raises(ValueError, match="risk_aversion"):
        Portfolio(risk_aversion=-1.0).decide(y)


# ----------------------------------------------------------------------- BudgetAllocation
def _budget_batch(n_instances=4, dtype=torch.float64, seed=0):
    X, y, _ = make_budget_allocation(n_instances=n_instances, random_state=seed)
    return torch.as_tensor(y, dtype=dtype).view(n_instances, 5, 10)


def test_capped_simplex_projection():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(40, 5, generator=gen, dtype=torch.float64) + 0.5
    z, tau = project_capped_simplex(v, 2.0)
    assert torch.all(z >= 0) and torch.all(z <= 1) and torch.all(z.sum(-1) <= 2 + 1e-9)
    # Projection optimality against random feasible points.
    w = torch.rand(40, 5, generator=gen, dtype=torch.float64) * 0.4
    assert torch.all(((v - z) * (w - z)).sum(-1) <= 1e-9)
    active = tau[:, 0] > 0
    np.testing.assert_allclose(z[active].sum(-1).numpy(), 2.0, rtol=1e-9)


def test_budget_decision_is_a_local_maximum():
    y = _budget_batch()
    task = BudgetAllocation(n_iter=300)
    z = task.decide(y)
    assert torch.all(z >= 0) and torch.all(z <= 1) and torch.all(z.sum(-1) <= 2 + 1e-9)
    value = task.quality(z, y)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # small feasible perturbations do not improve it
        step = 0.01 * torch.randn(z.shape, generator=gen, dtype=z.dtype)
        moved, _ = project_capped_simplex(z + step, 2.0)
        assert torch.all(task.quality(moved, y) <= value + 1e-9)
    assert task.normalized_decision_quality(y, y) == pytest.approx(1.0)


def test_budget_gradient_matches_finite_differences():
    y = _budget_batch(n_instances=2, seed=3)
    weights = torch.ones(10, dtype=torch.float64)
    task = BudgetAllocation(smoothing=3.0, lr=0.1, n_iter=300)
    z = solve_coverage(y, weights, 2.0, 0.1, 300, 3.0)
    free = ((z > 1e-6) & (z < 1 - 1e-6)).sum(-1)
    assert free.min() >= 2  # the derivative is non-trivial on these instances
    y_pred = y.clone().requires_grad_(True)
    task.loss(y_pred, y).sum().backward()
    # Central finite differences of the loss through the converged solver, on a few entries
    # of the predictions (every channel, two targets).
    h = 1e-6
    for j in range(5):
        for t in (0, 7):
            step = torch.zeros_like(y)
            step[:, j, t] = h
            numeric = (task.loss(y + step, y) - task.loss(y - step, y)) / (2 * h)
            np.testing.assert_allclose(
                y_pred.grad[:, j, t].numpy(), numeric.numpy(), rtol=1e-4, atol=1e-7
            )
    assert y_pred.grad.abs().max() > 1e-3


def test_budget_random_reference_is_stable_and_below_optimum():
    y = _budget_batch(n_instances=10)
    task = BudgetAllocation()
    first, second = task.random_quality(y), task.random_quality(y)
    np.testing.assert_array_equal(first.numpy(), second.numpy())
    assert torch.all(first < task.optimal_quality(y))
    more = BudgetAllocation(n_random_draws=20000, random_state=1).random_quality(y)
    np.testing.assert_allclose(first.numpy(), more.numpy(), rtol=0.02)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_budget_follows_dtype(device, dtype):
    y = _budget_batch(dtype=dtype).to(device)
    task = BudgetAllocation(n_iter=30)
    pred = (0.8 * y).requires_grad_(True)
    loss = task.loss(pred, y)
    assert loss.dtype == dtype and loss.device.type == torch.device(device).type
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all()
    assert task.random_quality(y).dtype == dtype


def test_budget_weights_and_errors():
    y = _budget_batch()
    weights = np.linspace(0.5, 2.0, 10)
    task = BudgetAllocation(weights=weights)
    z = task.decide(y)
    manual = (weights * (1 - torch.prod(1 - z.unsqueeze(-1) * y, dim=1)).numpy()).sum(-1)
    np.testing.assert_allclose(task.quality(z, y).numpy(), manual, rtol=1e-12)
    with pytest.raises(ValueError, match="3 target weights"):
        BudgetAllocation(weights=[1.0, 1.0, 1.0]).decide(y)
    with pytest.raises(ValueError, match="budget"):
        BudgetAllocation(budget=0).decide(y)


# --------------------------------------------------------------------------- CallableTask
def weighted_squared_error(y_pred, y_true):
    weights = torch.arange(1, y_pred.shape[-1] + 1, dtype=y_pred.dtype, device=y_pred.device)
    return ((y_pred - y_true) ** 2 * weights).sum(dim=(1, 2))


def test_callable_task_defaults():
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(30, 1, 3, generator=gen, dtype=torch.float64)
    task = CallableTask(weighted_squared_error, requires_groups=False, n_outputs=3)
    pred = (y + 1).requires_grad_(True)
    np.testing.assert_allclose(task.loss(pred, y).detach().numpy(), 6.0)
    task.loss(pred, y).sum().backward()
    np.testing.assert_allclose(pred.grad.numpy(), np.broadcast_to([2.0, 4.0, 6.0], y.shape))
    assert task.normalized_decision_quality(y, y) == pytest.approx(1.0)
    # Predicting the targets of other instances scores about 0.
    shuffled = y[torch.randperm(30, generator=gen)]
    assert abs(task.normalized_decision_quality(shuffled, y)) < 0.3
    np.testing.assert_array_equal(task.random_quality(y).numpy(), task.random_quality(y).numpy())
    with pytest.raises(ValueError, match="needs 3 output"):
        task.loss(y[..., :2], y[..., :2])


def test_callable_task_with_decisions_matches_topk():
    def relaxed(y_pred, y_true):
        return TopK().loss(y_pred, y_true)

    def decide(y_pred):
        return TopK().decide(y_pred)

    def quality(decisions, y_true):
        return (decisions * y_true[..., 0]).sum(-1)

    x, y = _cubic_batch()
    task = CallableTask(relaxed, quality_fn=quality, decide_fn=decide)
    np.testing.assert_allclose(
        task.decision_quality(x, y).numpy(), TopK().decision_quality(x, y).numpy()
    )
    assert task.normalized_decision_quality(y, y) == pytest.approx(1.0)
    restored = pickle.loads(pickle.dumps(CallableTask(weighted_squared_error)))
    assert restored.loss_fn is weighted_squared_error
    assert clone(task).decide_fn is decide


def test_callable_task_errors():
    y = torch.zeros(4, 2, 1)
    with pytest.raises(ValueError, match=r"shape \(batch,\) = \(4,\); got shape \(4, 2\)"):
        CallableTask(lambda p, t: (p - t).sum(-1)).loss(y, y)
    with pytest.raises(ValueError, match=r"NaN or inf for instance\(s\) \[0, 1, 2, 3\]"):
        CallableTask(lambda p, t: (p - t).sum((1, 2)) / 0.0).loss(y, y)
    with pytest.raises(TypeError, match="torch.Tensor"):
        CallableTask(lambda p, t: 1.0).loss(y, y)
    with pytest.raises(TypeError, match="callable"):
        CallableTask("not a function").loss(y, y)
    with pytest.raises(ValueError, match="quality_fn is required"):
        CallableTask(weighted_squared_error, decide_fn=lambda p: p).decide(y)


# ---------------------------------------------------------------------------- StateReward
def test_state_reward_only_sees_reward_dimensions():
    X, y = make_cartpole_distractors(n_samples=64, n_distractors=3, random_state=0)
    y = torch.as_tensor(y).unsqueeze(1)  # (batch, 1, 7)
    task = StateReward()
    assert not task.requires_groups
    wrong_elsewhere = y.clone()
    wrong_elsewhere[..., [1, 3, 4, 5, 6]] += 1.0
    np.testing.assert_allclose(task.loss(wrong_elsewhere, y).numpy(), 0.0)
    wrong_angle = y.clone()
    wrong_angle[..., 2] += 0.1
    assert torch.all(task.loss(wrong_angle, y) > 0)
    assert task.normalized_decision_quality(y, y) == pytest.approx(1.0)
    shuffled = y[torch.randperm(64, generator=torch.Generator().manual_seed(0))]
    assert abs(task.normalized_decision_quality(shuffled, y)) < 0.4
    pred = wrong_angle.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: task.loss(p, y), (pred,))
    with pytest.raises(ValueError, match="must index"):
        StateReward(dims=(0, 9)).loss(y, y)
    with pytest.raises(ValueError, match="same length"):
        StateReward(dims=(0, 2), scales=(1.0,)).loss(y, y)


# -------------------------------------------------------------------------- every task
ALL_TASKS = [
    TopK(k=2),
    Portfolio(risk_aversion=0.3),
    BudgetAllocation(n_iter=20),
    CallableTask(weighted_squared_error),
    StateReward(),
]


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: type(t).__name__)
def test_every_task_pickles_and_clones(task):
    for copy in (pickle.loads(pickle.dumps(task)), clone(task)):
        assert type(copy) is type(task)
        assert repr(copy) == repr(task)
        assert set(copy.get_params()) == set(task.get_params())


def _inputs_for(task, dtype):
    gen = torch.Generator().manual_seed(0)
    if isinstance(task, BudgetAllocation):
        y = torch.rand(3, 5, 4, generator=gen, dtype=torch.float64)
    elif isinstance(task, StateReward):
        y = 0.1 * torch.randn(6, 1, 5, generator=gen, dtype=torch.float64)
    else:
        y = torch.randn(3, 6, 1, generator=gen, dtype=torch.float64)
    pred = y + 0.1 * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    return pred.to(dtype), y.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: type(t).__name__)
def test_every_task_follows_dtype_and_device(task, dtype, device):
    pred, y = _inputs_for(task, dtype)
    pred, y = pred.to(device).requires_grad_(True), y.to(device)
    loss = task.loss(pred, y)
    assert loss.shape == (y.shape[0],)
    assert loss.dtype == dtype and loss.device.type == torch.device(device).type
    loss.sum().backward()
    assert pred.grad.dtype == dtype and torch.isfinite(pred.grad).all()
    for values in (
        task.decision_quality(pred, y),
        task.optimal_quality(y),
        task.random_quality(y),
    ):
        assert values.shape == (y.shape[0],) and values.dtype == dtype
    assert np.isfinite(task.normalized_decision_quality(pred.detach(), y))
