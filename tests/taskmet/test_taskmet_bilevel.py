"""Numerics of the TaskMet bilevel solver: implicit gradients, linear solvers, backward pass."""

import numpy as np
import pytest
import torch

from sktaskmet._nn import make_mlp
from sktaskmet.taskmet._bilevel import (
    LINEAR_SOLVERS,
    BilevelSolver,
    FlatAdam,
    FlatModule,
    ReshuffledBatches,
    cg_solve,
    exact_solve,
    metric_values,
    normal_cg_solve,
    normalize_metric,
)
from sktaskmet.taskmet._metric_params import make_metric

from ._losses import soft_top1_loss

DTYPE = torch.float64


def _problem(seed=0, n_inst=6, m=5, p=3, d=2, hidden=(4,)):
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(n_inst, m, p, generator=gen, dtype=DTYPE) * 2 - 1
    Y = torch.randn(n_inst, m, d, generator=gen, dtype=DTYPE)
    torch.manual_seed(seed)
    predictor = make_mlp(p, (), d).to(DTYPE)
    metric = make_metric("conditional_full", d, in_features=p, hidden_layer_sizes=hidden)
    metric = metric.to(DTYPE)
    return X, Y, predictor, metric


def _exact_inner_solution(solver, X_flat, Y_flat, values):
    """theta* of the (quadratic in theta) inner problem by one Newton step from zero."""
    n = solver.predictor.n_params
    theta0 = torch.zeros(n, dtype=DTYPE, requires_grad=True)
    grad = solver.optimality(theta0, X_flat, Y_flat, values)
    hessian = torch.stack(
        [torch.autograd.grad(grad, theta0, e, retain_graph=True)[0] for e in torch.eye(n)]
    )
    return (theta0 - torch.linalg.solve(hessian, grad)).detach()


def _outer_value(solver, metric, X, Y):
    """Outer loss L(theta*(phi)) with the inner problem solved exactly."""
    X_flat, Y_flat = X.reshape(-1, X.shape[-1]), Y.reshape(-1, Y.shape[-1])
    values, _ = normalize_metric(metric_values(metric, X_flat))
    theta = _exact_inner_solution(solver, X_flat, Y_flat, values.detach())
    return solver.outer_loss(theta, X, Y)[0], theta


def _hypergradient(solver, metric, X, Y):
    X_flat, Y_flat = X.reshape(-1, X.shape[-1]), Y.reshape(-1, Y.shape[-1])
    _, theta = _outer_value(solver, metric, X, Y)
    theta_req = theta.clone().requires_grad_(True)
    (outer_grad,) = torch.autograd.grad(solver.outer_loss(theta_req, X, Y)[0], theta_req)
    values, _ = normalize_metric(metric_values(metric, X_flat))
    grad_values = solver.hypergradient(theta, X_flat, Y_flat, values.detach(), outer_grad)
    grads = torch.autograd.grad(values, list(metric.parameters()), grad_values)
    return torch.cat([g.reshape(-1) for g in grads])


def _finite_difference(solver, metric, X, Y, eps=1e-6):
    flat = FlatModule(metric)
    base = flat.flatten()
    fd = torch.zeros_like(base)
    for k in range(base.shape[0]):
        values = []
        for sign in (1.0, -1.0):
            shifted = base.clone()
            shifted[k] += sign * eps
            flat.load(shifted)
            values.append(_outer_value(solver, metric, X, Y)[0].detach())
        fd[k] = (values[0] - values[1]) / (2 * eps)
    flat.load(base)
    return fd


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_hypergradient_matches_finite_differences_and_solvers_agree(alpha):
    X, Y, predictor, metric = _problem()
    results = {}
    for name in LINEAR_SOLVERS:
        solver = BilevelSolver(
            predictor,
            metric,
            soft_top1_loss,
            alpha=alpha,
            implicit_solver=name,
            cg_max_iter=60,
            damping=0.0,
        )
        results[name] = _hypergradient(solver, metric, X, Y)
    fd = _finite_difference(solver, metric, X, Y)
    scale = torch.linalg.vector_norm(fd)
    assert scale > 1e-6  # the test must be able to fail
    for name, grad in results.items():
        error = torch.linalg.vector_norm(grad - fd) / scale
        assert error <= 1e-4, f"{name}: relative error {error:.2e} against finite differences"
    for name in ("cg", "normal_cg"):
        error = torch.linalg.vector_norm(results[name] - results["exact"]) / scale
        assert error <= 1e-6, f"{name} differs from the exact solve by {error:.2e}"


def _spd(n, seed, shift=0.5):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=gen, dtype=DTYPE)
    return A @ A.T + shift * torch.eye(n, dtype=DTYPE), torch.randn(n, generator=gen, dtype=DTYPE)


def test_linear_solvers_on_known_systems():
    H, b = _spd(6, 0)
    expected = torch.linalg.solve(H, b)
    for solve in (cg_solve, normal_cg_solve, exact_solve):
        got = solve(lambda u: H @ u, b, max_iter=60)
        torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)
    # Damping solves (H + delta I) u = b (normal CG: (H^2 + delta I) u = H b).
    damped = cg_solve(lambda u: H @ u, b, max_iter=60, damping=0.3)
    torch.testing.assert_close(damped, torch.linalg.solve(H + 0.3 * torch.eye(6, dtype=DTYPE), b))


def test_normal_cg_handles_an_indefinite_hessian():
    gen = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, generator=gen, dtype=DTYPE))
    H = Q @ torch.diag(torch.tensor([3.0, 1.0, -0.7, 2.0, -1.5], dtype=DTYPE)) @ Q.T
    b = torch.randn(5, generator=gen, dtype=DTYPE)
    expected = torch.linalg.solve(H, b)
    got = normal_cg_solve(lambda u: H @ u, b, max_iter=40)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8)


def test_cg_stays_finite_after_exact_convergence():
    # A 2-d system converges in two iterations; later iterations divide 0 by 0 unless guarded.
    H = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=DTYPE)
    b = torch.tensor([1.0, -1.0], dtype=DTYPE)
    got = cg_solve(lambda u: H @ u, b, max_iter=20)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, torch.linalg.solve(H, b))


@pytest.mark.parametrize("activation", ["relu", "tanh", "identity"])
def test_manual_backward_matches_autograd(activation):
    torch.manual_seed(0)
    module = make_mlp(3, (7, 5), 2, activation=activation).to(DTYPE)
    flat_module = FlatModule(module)
    assert flat_module.has_manual_backward
    theta = flat_module.flatten()
    X = torch.randn(11, 3, dtype=DTYPE)
    target = torch.randn(11, 2, dtype=DTYPE)

    def output_gradient(out):
        return 2 * (out - target) / out.shape[0]

    manual = flat_module.gradient(theta, X, output_gradient)
    theta_req = theta.clone().requires_grad_(True)
    loss = ((flat_module(theta_req, X) - target) ** 2).sum() / X.shape[0]
    (expected,) = torch.autograd.grad(loss, theta_req)
    torch.testing.assert_close(manual, expected, rtol=1e-10, atol=1e-12)
    # The functional forward equals the module's own forward.
    torch.testing.assert_close(flat_module(theta, X), module(X))


def test_generic_modules_use_autograd_path():
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.tensor([[1.5, -0.5]], dtype=DTYPE))

        def forward(self, x):
            return torch.sin(x @ self.weight.T)

    flat_module = FlatModule(Scaled())
    assert not flat_module.has_manual_backward
    theta = flat_module.flatten()
    X = torch.randn(4, 2, dtype=DTYPE)
    grad = flat_module.gradient(theta, X, lambda out: torch.ones_like(out))
    expected = (torch.cos(X @ theta.view(1, 2).T) * X).sum(0)
    torch.testing.assert_close(grad, expected)


def test_normalisation_removes_the_metric_scale():
    X, _, _, metric = _problem()
    X_flat = X.reshape(-1, X.shape[-1])
    raw = metric_values(metric, X_flat).detach()
    normalized, scale = normalize_metric(raw)
    normalized_scaled, scale_scaled = normalize_metric(7.5 * raw)
    torch.testing.assert_close(normalized, normalized_scaled)
    torch.testing.assert_close(scale_scaled, 7.5 * scale)
    trace = torch.diagonal(normalized, 0, -2, -1).sum(-1).mean()
    torch.testing.assert_close(trace, torch.tensor(2.0, dtype=DTYPE))


def test_inner_adam_matches_torch_adam_with_clipping():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(4, generator=gen, dtype=DTYPE) * 5
    ours = torch.zeros(4, dtype=DTYPE)
    adam = FlatAdam(ours, lr=0.05, clip=1.0)
    reference = torch.zeros(4, dtype=DTYPE, requires_grad=True)
    torch_adam = torch.optim.Adam([reference], lr=0.05)
    for _ in range(30):
        adam.step(2 * (ours - target))
        torch_adam.zero_grad()
        ((reference - target) ** 2).sum().backward()
        torch.nn.utils.clip_grad_norm_([reference], 1.0)
        torch_adam.step()
    torch.testing.assert_close(ours, reference.detach(), rtol=1e-5, atol=1e-6)


def test_outer_step_reports_non_finite_task_loss_and_leaves_the_metric_unchanged():
    X, Y, predictor, metric = _problem()

    def nan_loss(y_pred, y_true):
        return soft_top1_loss(y_pred, y_true) * torch.nan

    solver = BilevelSolver(predictor, metric, nan_loss, generator=torch.Generator())
    before = solver.state()
    X_flat = X.reshape(-1, X.shape[-1])
    _, _, ok = solver.outer_step(X, Y, X_flat, batch_size=3, n_inner=5)
    assert not ok
    for a, b in zip(solver.state()["metric"], before["metric"], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # The inner solve moved the predictor; the training loop restores the pre-step state.
    assert not torch.equal(solver.state()["inner"][0], before["inner"][0])
    solver.restore(before)
    after = solver.state()
    torch.testing.assert_close(after["inner"][0], before["inner"][0])
    for a, b in zip(after["metric"], before["metric"], strict=True):
        torch.testing.assert_close(a, b)


def test_task_loss_of_wrong_shape_is_rejected():
    X, Y, predictor, metric = _problem()
    solver = BilevelSolver(
        predictor, metric, lambda p, y: soft_top1_loss(p, y).sum(), generator=torch.Generator()
    )
    X_flat = X.reshape(-1, X.shape[-1])
    with pytest.raises(ValueError, match="one value per instance"):
        solver.outer_step(X, Y, X_flat, batch_size=3, n_inner=2)
    solver = BilevelSolver(predictor, metric, lambda p, y: 1.0, generator=torch.Generator())
    with pytest.raises(TypeError, match="torch.Tensor"):
        solver.outer_step(X, Y, X_flat, batch_size=3, n_inner=2)


def test_float32_state_stays_float32():
    X, Y, predictor, metric = _problem()
    solver = BilevelSolver(
        predictor.float(), metric.float(), soft_top1_loss, generator=torch.Generator()
    )
    X32, Y32 = X.float(), Y.float()
    _, _, ok = solver.outer_step(X32, Y32, X32.reshape(-1, 3), batch_size=3, n_inner=3)
    assert ok
    assert solver.theta.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in metric.parameters())
    assert np.isfinite(solver.theta.numpy()).all()


@pytest.mark.parametrize(
    "n_inst, size, sizes", [(10, 4, [4, 4, 2]), (12, 4, [4, 4, 4]), (3, 5, [3])]
)
def test_reshuffled_batches_cover_every_instance_once_per_epoch(n_inst, size, sizes):
    batches = ReshuffledBatches(torch.Generator().manual_seed(0))
    epochs = [[batches(n_inst, size, "cpu") for _ in sizes] for _ in range(3)]
    for epoch in epochs:
        assert [len(batch) for batch in epoch] == sizes
        assert sorted(torch.cat(epoch).tolist()) == list(range(n_inst))
    if n_inst > 3:  # a new permutation each epoch
        orders = {tuple(torch.cat(epoch).tolist()) for epoch in epochs}
        assert len(orders) == 3


def test_reshuffled_batches_are_seeded_and_restart_for_a_new_instance_count():
    first = ReshuffledBatches(torch.Generator().manual_seed(3))
    second = ReshuffledBatches(torch.Generator().manual_seed(3))
    draws = [(first(9, 4, "cpu"), second(9, 4, "cpu")) for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in draws)
    # A different number of instances starts a new permutation of the new range.
    assert sorted(torch.cat([first(6, 3, "cpu"), first(6, 3, "cpu")]).tolist()) == list(range(6))
