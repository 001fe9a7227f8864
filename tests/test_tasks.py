"""Tests of the downstream decision tasks (sktaskmet.tasks)."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone

from sktaskmet.datasets import make_cubic_topk
from sktaskmet.taskmet._decision_solvers import soft_topk
from sktaskmet.tasks import TopK


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


def test_topk_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(2, 6, generator=gen, dtype=torch.float64).requires_grad_(True)
    y = torch.randn(2, 6, generator=gen, dtype=torch.float64)
    # The cost normalisation is a constant for the gradient; hold it fixed for the
    # finite differences too.
    scale = torch.tensor([[[7.0]], [[9.0]]], dtype=torch.float64)

    def loss(s):
        return -(soft_topk(s, 2, 0.05, 300, cost_scale=scale) * y).sum(-1)

    assert torch.autograd.gradcheck(loss, (scores,), eps=1e-6, atol=1e-7, rtol=1e-5)
    # With the default normalisation, TopK.loss is that function with the scale detached.
    task = TopK(k=2, epsilon=0.05, n_iter=300)
    s3 = scores.detach().unsqueeze(-1).requires_grad_(True)
    task.loss(s3, y.unsqueeze(-1)).sum().backward()
    auto_scale = (
        (scores.detach().unsqueeze(-1) - torch.tensor([0.0, 1.0], dtype=torch.float64)) ** 2
    ).amax(dim=(1, 2), keepdim=True)
    s2 = scores.detach().clone().requires_grad_(True)
    (-(soft_topk(s2, 2, 0.05, 300, cost_scale=auto_scale) * y).sum(-1)).sum().backward()
    np.testing.assert_allclose(s3.grad[..., 0].numpy(), s2.grad.numpy(), rtol=1e-10)


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
