"""Tests of GradientSubsetEstimator and its torch numerics."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from sktaskmet import GradientSubsetEstimator
from sktaskmet._training import CALLBACKS_AVAILABLE
from sktaskmet.exceptions import NonFiniteWarning
from sktaskmet.surrogate import SubsetFineTuner, evaluate_subsets
from sktaskmet.surrogate._conjugate_gradient import EigenbasisPreconditioner
from sktaskmet.surrogate._hessians import pretrained_eigenbasis, task_hessians
from sktaskmet.surrogate._jacobians import (
    _linear_layers,
    _vmap_jacobians,
    output_jacobians,
    trainable_parameters,
)
from sktaskmet.surrogate._losses import make_loss
from sktaskmet.surrogate._newton import solve_subsets
from sktaskmet.surrogate._projection import random_projection, row_space_basis


def make_problem(n_per_task=15, n_tasks=3, n_features=4, n_classes=3, seed=0):
    rng = np.random.RandomState(seed)
    n = n_per_task * n_tasks
    X = rng.normal(size=(n, n_features))
    W = rng.normal(size=(n_features, n_classes))
    y = np.argmax(X @ W + 0.5 * rng.normal(size=(n, n_classes)), axis=1)
    tasks = np.repeat(np.arange(n_tasks), n_per_task)
    X_target = rng.normal(size=(20, n_features))
    y_target = np.argmax(X_target @ W, axis=1)
    return X, y, tasks, X_target, y_target


def make_model(n_features=4, n_classes=3, hidden=8, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(n_features, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, n_classes)
    ).double()


def fit_estimator(model=None, data=None, **params):
    X, y, tasks, X_target, y_target = data if data is not None else make_problem()
    params = {"device": "cpu", "penalty": 0.1, "random_state": 0, **params}
    est = GradientSubsetEstimator(model if model is not None else make_model(), **params)
    return est.fit(X, y, tasks=tasks, X_target=X_target, y_target=y_target)


# ---------------------------------------------------------------- numerics


def test_per_example_jacobians_equal_autograd_loop():
    model = make_model()
    X = torch.from_numpy(np.random.RandomState(1).normal(size=(7, 4)))
    outputs, jac = output_jacobians(model, X, projection=None, batch_size=3)
    params = list(model.parameters())
    for i in range(X.shape[0]):
        out = model(X[i : i + 1]).reshape(-1)
        rows = []
        for c in range(out.shape[0]):
            grads = torch.autograd.grad(out[c], params, retain_graph=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
        torch.testing.assert_close(jac[i], torch.stack(rows))
        torch.testing.assert_close(outputs[i], out.detach())


class TwiceApplied(torch.nn.Module):
    """One linear layer used twice: its Jacobian is a sum of two outer products."""

    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.inner(torch.tanh(self.inner(x)))))


class Scaled(torch.nn.Module):
    """An MLP with a parameter that belongs to no linear layer."""

    def __init__(self):
        super().__init__()
        self.mlp = make_model()
        self.scale = torch.nn.Parameter(torch.tensor(1.5, dtype=torch.float64))

    def forward(self, x):
        return self.scale * self.mlp(x)


class Tied(torch.nn.Module):
    """A linear layer whose weight is also used, transposed, outside its own call."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.layer(x))
        return torch.nn.functional.linear(h, self.layer.weight.T)[:, :3]


class PerPosition(torch.nn.Module):
    """A linear layer applied to every position of a (batch, 2, features) input."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 3)

    def forward(self, x):
        return self.layer(x.reshape(x.shape[0], 2, 2)).sum(1)


def autograd_jacobians(model, X):
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(X.shape[0]):
        out = model(X[i : i + 1]).reshape(-1)
        grads = []
        for c in range(out.shape[0]):
            g = torch.autograd.grad(out[c], params, retain_graph=True, allow_unused=True)
            grads.append(
                torch.cat(
                    [
                        (z if z is not None else torch.zeros_like(p)).reshape(-1)
                        for z, p in zip(g, params, strict=True)
                    ]
                )
            )
        rows.append(torch.stack(grads))
    return torch.stack(rows)


@pytest.mark.parametrize("kind", [None, "rademacher", "gaussian", "sparse"])
@pytest.mark.parametrize("frozen", [None, "0.weight", "2.bias"])
def test_linear_layer_jacobians_equal_vmap(kind, frozen):
    """The closed-form Jacobians of linear layers equal torch.func's, projected or not."""
    model = make_model(hidden=6)
    if frozen is not None:
        model.get_parameter(frozen).requires_grad_(False)
    params = {k: p.detach() for k, p in trainable_parameters(model).items()}
    assert _linear_layers(model, trainable_parameters(model)) is not None
    X = torch.from_numpy(np.random.RandomState(2).normal(size=(9, 4)))
    n_params = sum(p.numel() for p in params.values())
    projection = None
    if kind is not None:
        generator = torch.Generator().manual_seed(0)
        projection = random_projection(n_params, 7, kind, generator, torch.float64, "cpu")
    outputs, jac = output_jacobians(model, X, projection, batch_size=4)
    expected_out, expected = _vmap_jacobians(model, params, X, projection)
    torch.testing.assert_close(outputs, expected_out)
    torch.testing.assert_close(jac, expected)
    if kind is None:
        torch.testing.assert_close(jac, autograd_jacobians(model, X))


def test_linear_layer_jacobians_with_in_place_activations():
    """An in-place activation after a linear layer does not corrupt its output gradients."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(inplace=True), torch.nn.Linear(8, 3)
    ).double()
    assert _linear_layers(model, trainable_parameters(model)) is not None
    X = torch.from_numpy(np.random.RandomState(0).normal(size=(6, 4)))
    outputs, jac = output_jacobians(model, X, None, batch_size=4)
    torch.testing.assert_close(jac, autograd_jacobians(model, X))
    torch.testing.assert_close(outputs, model(X).detach())


@pytest.mark.parametrize("model_class", [TwiceApplied, Scaled, PerPosition, Tied])
def test_other_models_fall_back_to_vmap(model_class):
    torch.manual_seed(0)
    model = model_class().double()
    X = torch.from_numpy(np.random.RandomState(2).normal(size=(5, 4)))
    outputs, jac = output_jacobians(model, X, None, batch_size=2)
    torch.testing.assert_close(jac, autograd_jacobians(model, X))
    torch.testing.assert_close(outputs, model(X).detach())


@pytest.mark.cuda
def test_linear_layer_jacobians_on_cuda():
    model = make_model(hidden=6)
    X = torch.from_numpy(np.random.RandomState(2).normal(size=(9, 4)))
    generator = torch.Generator().manual_seed(0)
    projection = random_projection(
        sum(p.numel() for p in model.parameters()), 7, "rademacher", generator, torch.float64, "cpu"
    )
    expected = output_jacobians(model, X, projection, batch_size=4)
    result = output_jacobians(model.cuda(), X.cuda(), projection.cuda(), batch_size=4)
    for got, want in zip(result, expected, strict=True):
        assert got.device.type == "cuda"
        torch.testing.assert_close(got.cpu(), want)


def test_frozen_parameters_are_left_out():
    model = make_model()
    model[0].weight.requires_grad_(False)
    est = fit_estimator(model, projection_dim=None)
    assert est.n_params_ == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian", "sparse"])
def test_projection_preserves_inner_products_in_expectation(kind):
    n_params, dim, draws = 12, 30, 400
    generator = torch.Generator().manual_seed(0)
    mean = torch.zeros(n_params, n_params, dtype=torch.float64)
    for _ in range(draws):
        P = random_projection(n_params, dim, kind, generator, torch.float64, "cpu")
        if kind == "sparse":
            jac = torch.randn(2, 3, n_params, dtype=torch.float64, generator=generator)
            torch.testing.assert_close(P.apply(jac), jac @ P.dense())
            P = P.dense()
        assert P.shape == (n_params, dim)
        mean += P @ P.T / draws
    # E[P P^T] = I: every entry of the average is within a few standard errors.
    torch.testing.assert_close(mean, torch.eye(n_params, dtype=torch.float64), atol=0.05, rtol=0)
    if kind == "rademacher":
        assert torch.allclose(P.abs(), torch.full_like(P, dim**-0.5))


def test_projected_gradient_shapes():
    est = fit_estimator(projection_dim=5)
    assert est.train_gradients_.shape == (45, 3, 5)
    assert est.target_gradients_.shape == (20, 3, 5)
    assert est.train_outputs_.shape == (45, 3)
    assert est.task_hessians_.shape == (3, 5, 5)
    assert est.projection_dim_ == 5 and est.n_outputs_ == 3 and est.n_tasks_ == 3


@pytest.mark.parametrize("n_per_task", [15, 4])
def test_squared_error_without_projection_matches_closed_form(n_per_task):
    # 4 examples per task: 24 output rows for 58 parameters, solved in the span of the rows.
    X, _, tasks, X_target, _ = make_problem(n_per_task=n_per_task)
    rng = np.random.RandomState(3)
    y = rng.normal(size=(X.shape[0], 2))
    y_target = rng.normal(size=(20, 2))
    model = make_model(n_classes=2)
    penalty = 0.3
    est = fit_estimator(
        model,
        (X, y, tasks, X_target, y_target),
        loss="squared_error",
        projection_dim=None,
        penalty=penalty,
        tol=1e-15,
    )
    n_params = sum(p.numel() for p in model.parameters())
    assert est.projection_dim_ == min(X.shape[0] * 2, n_params)
    s = np.array([1.0, 0.0, 1.0])
    a = s[tasks] / s[tasks].sum()
    # The closed form in the full parameter space, from independently computed Jacobians.
    f0, J = (t.numpy() for t in output_jacobians(model, torch.from_numpy(X)))
    ft, Jt = (t.numpy() for t in output_jacobians(model, torch.from_numpy(X_target)))
    assert J.shape[2] == n_params
    # minimise sum_i a_i ||f0_i + J_i w - y_i||^2 + penalty/2 ||w||^2
    H = 2 * np.einsum("i,icd,ice->de", a, J, J) + penalty * np.eye(n_params)
    b = 2 * np.einsum("i,icd,ic->d", a, J, y - f0)
    w = np.linalg.solve(H, b)
    pred = ft + Jt @ w
    expected = ((pred - y_target) ** 2).sum(1).mean()
    np.testing.assert_allclose(est.estimate(s[None]), [expected], rtol=1e-10)


def test_row_space_basis_is_orthonormal_and_spans_the_rows():
    generator = torch.Generator().manual_seed(0)
    J = torch.randn(6, 2, 30, generator=generator, dtype=torch.float64)
    J[5] = J[4]  # dependent rows: the basis may exceed the rank, never miss a direction
    Q = row_space_basis(J)
    assert Q.shape == (30, 12)
    torch.testing.assert_close(Q.T @ Q, torch.eye(12, dtype=torch.float64))
    rows = J.reshape(12, 30)
    torch.testing.assert_close(rows @ Q @ Q.T, rows)
    assert row_space_basis(torch.randn(20, 2, 30, generator=generator)) is None


@pytest.mark.parametrize("n_per_task", [15, 4])
def test_full_set_equals_direct_linearised_fine_tuning(n_per_task):
    """F-hat of the full set equals fine-tuning the linearised model itself (torch.func.jvp)."""
    X, y, tasks, X_target, y_target = make_problem(n_per_task=n_per_task)
    model = make_model()
    penalty = 0.05
    est = fit_estimator(
        model, (X, y, tasks, X_target, y_target), projection_dim=None, penalty=penalty, tol=1e-14
    )
    assert est.projection_dim_ == min(X.shape[0] * 3, est.n_params_)

    theta0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    delta = {k: torch.zeros_like(v, requires_grad=True) for k, v in theta0.items()}

    def linearised(x):
        def f(params):
            return torch.func.functional_call(model, params, (x,))

        out0, tangent = torch.func.jvp(f, (theta0,), (delta,))
        return out0 + tangent

    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    optimizer = torch.optim.LBFGS(
        list(delta.values()),
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        value = torch.nn.functional.cross_entropy(linearised(Xt), yt) + 0.5 * penalty * sum(
            (d**2).sum() for d in delta.values()
        )
        value.backward()
        return value

    optimizer.step(closure)
    with torch.no_grad():
        direct = torch.nn.functional.cross_entropy(
            linearised(torch.from_numpy(X_target)), torch.from_numpy(y_target)
        ).item()
    np.testing.assert_allclose(est.estimate(np.ones((1, 3))), [direct], rtol=1e-6)


@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_newton_and_newton_cg_agree(loss):
    X, y, tasks, X_target, y_target = make_problem()
    if loss == "squared_error":
        y, y_target = np.eye(3)[y], np.eye(3)[y_target]
    S = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 1], [0.3, 1, 0.0]])
    a = fit_estimator(data=(X, y, tasks, X_target, y_target), loss=loss, projection_dim=12)
    b = (
        clone(a)
        .set_params(solver="newton")
        .fit(X, y, tasks=tasks, X_target=X_target, y_target=y_target)
    )
    # Both stop at an objective within tol=1e-12 of the optimum: F-hat agrees to ~1e-7.
    np.testing.assert_allclose(a.estimate(S), b.estimate(S), rtol=1e-6)
    # So does Newton-CG with the per-subset Cholesky preconditioner (set after fit).
    c = a.set_params(preconditioner="cholesky")
    np.testing.assert_allclose(c.estimate(S), b.estimate(S), rtol=1e-6)


def test_subset_weights_behave_as_documented():
    est = fit_estimator(projection_dim=10)
    F_hat = est.estimate([[1, 1, 1], [0.5, 0.5, 0.5], [0, 0, 0], [1, 0, 0], [1, 1e-12, 0]])
    # Weights are normalised: scaling all of them changes nothing.
    np.testing.assert_allclose(F_hat[0], F_hat[1], rtol=1e-8)
    # The empty subset keeps the pretrained model.
    np.testing.assert_allclose(F_hat[2], est.pretrained_target_loss_, rtol=1e-12)
    # A vanishing weight is (continuously) no weight.
    np.testing.assert_allclose(F_hat[3], F_hat[4], rtol=1e-8)


def test_callable_loss_matches_builtin():
    X, y, tasks, X_target, y_target = make_problem()
    Y, Y_target = np.eye(3)[y], np.eye(3)[y_target]

    def squared(outputs, targets):
        return ((outputs - targets) ** 2).sum(1)

    S = np.array([[1, 0, 1], [1, 1, 1]])
    builtin = fit_estimator(data=(X, Y, tasks, X_target, Y_target), loss="squared_error")
    custom = fit_estimator(data=(X, Y, tasks, X_target, Y_target), loss=squared)
    np.testing.assert_allclose(custom.estimate(S), builtin.estimate(S), rtol=1e-8)


def test_iterates_stay_finite_with_a_tiny_penalty():
    # A tiny penalty on nearly separable data drives the logits far; the line search keeps
    # every iterate finite (at worst the solve stops at max_iter with a ConvergenceWarning).
    est = fit_estimator(penalty=1e-8, projection_dim=6, max_iter=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        F_hat = est.estimate(np.ones((2, 3)))
    assert np.all(np.isfinite(F_hat))
    assert np.all(F_hat > 0)


def _squared_error_with_nan_derivatives_beyond(threshold):
    """Squared error whose derivatives are NaN for outputs above ``threshold``.

    The added term is 0 everywhere, but torch.where differentiates its discarded branch
    too, and the derivative of ``sqrt`` of a negative number is NaN: a loss that stays
    finite where its derivatives do not.
    """

    def loss(outputs, y):
        data = ((outputs - y) ** 2).sum(-1)
        total = outputs.sum(-1)
        return data + torch.where(total < threshold, 0.0 * torch.sqrt(threshold - total), 0.0)

    return loss


def test_a_non_finite_newton_direction_keeps_the_last_finite_iterate_and_warns():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(30, 3))
    Y = 5.0 + 0.1 * rng.normal(size=(30, 1))
    tasks = np.repeat([0, 1, 2], 10)
    model = torch.nn.Linear(3, 1).double()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()  # pretrained outputs 0: finite derivatives; after a step, ~5: NaN
    data = (X, Y, tasks, X[:5], Y[:5])
    S = [[1, 1, 1], [1, 0, 0]]
    failing = fit_estimator(
        model, data=data, projection_dim=None, loss=_squared_error_with_nan_derivatives_beyond(2.5)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # no "did not converge" as well
        with pytest.warns(
            NonFiniteWarning,
            match="GradientSubsetEstimator: the Newton direction of 2 of 2 subset problems "
            "was NaN or infinite; each kept its last finite iterate",
        ):
            F_hat, n_iter = failing.estimate(S, return_n_iter=True)
    # One step, then the direction at the new iterate failed: the estimate is that of the
    # first iterate, which the same solve with the plain loss stopped at max_iter=1 gives.
    assert n_iter.tolist() == [1, 1]
    one_step = fit_estimator(
        model, data=data, projection_dim=None, loss="squared_error", max_iter=1
    )
    with pytest.warns(ConvergenceWarning, match="of 2 subset problems did not converge"):
        expected = one_step.estimate(S)
    np.testing.assert_allclose(F_hat, expected, rtol=1e-10)
    assert np.all(np.abs(F_hat - failing.pretrained_target_loss_) > 1.0)


@pytest.mark.parametrize(
    "solver, preconditioner",
    [("newton", None), ("newton-cg", "eigenbasis"), ("newton-cg", "cholesky")],
)
def test_solve_subsets_batched_equals_one_by_one(solver, preconditioner):
    generator = torch.Generator().manual_seed(0)
    G = torch.randn(30, 3, 6, generator=generator, dtype=torch.float64)
    f0 = torch.randn(30, 3, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=generator)
    task = torch.arange(30) % 4
    # Rows converge after different numbers of iterations (the empty one at once), so the
    # batch shrinks while the others are still being solved.
    W = torch.tensor(
        [[1, 0, 1, 1], [0, 1, 0, 0], [1, 1, 1, 1.0], [0, 0, 0, 0], [0.2, 1, 0, 0.5]],
        dtype=torch.float64,
    )
    loss = make_loss("cross_entropy")
    hessians = task_hessians(G, f0, y, task, 4, loss)
    kwargs = dict(loss=loss, penalty=0.2, solver=solver, tol=1e-14, pretrained_hessians=hessians)
    if preconditioner is not None:
        kwargs["preconditioner"] = preconditioner
    batched, n_iter, converged, _ = solve_subsets(G, f0, y, task, W, **kwargs)
    assert bool(converged.all())
    assert n_iter[3] == 0 and len(set(n_iter.tolist())) > 1
    for b in range(W.shape[0]):
        single, single_iter, _, _ = solve_subsets(G, f0, y, task, W[b : b + 1], **kwargs)
        # The solves stop when the objective is within a few ulps of its minimum, which
        # pins w down to about sqrt(ulp / penalty) ~ 1e-7.
        torch.testing.assert_close(batched[b], single[0], rtol=1e-5, atol=1e-6)
        # The optimality condition holds for every subset of the batch.
        a = W[b, task] / W[b, task].sum() if W[b].sum() > 0 else torch.zeros(30)
        out = f0 + torch.einsum("icd,d->ic", G, batched[b])
        grad = torch.einsum("icd,ic->d", G, loss.grad(out, y) * a[:, None]) + 0.2 * batched[b]
        assert float(grad.abs().max()) < 1e-6


def test_eigenbasis_preconditioner():
    generator = torch.Generator().manual_seed(1)
    G = torch.randn(40, 3, 5, generator=generator, dtype=torch.float64)
    f0 = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=generator)
    task = torch.arange(40) % 4  # equal task sizes
    loss = make_loss("cross_entropy")
    H = task_hessians(G, f0, y, task, 4, loss)
    basis, diagonals = pretrained_eigenbasis(H)
    torch.testing.assert_close(basis.T @ basis, torch.eye(5, dtype=torch.float64))
    for t in range(4):
        torch.testing.assert_close(diagonals[t], torch.diagonal(basis.T @ H[t] @ basis))
    # With every task at the same weight the subset's Hessian is diagonal in the basis: the
    # preconditioner is its exact inverse, and one conjugate-gradient step is the Newton step.
    penalty = 0.3
    share = torch.full((1, 4), 0.25, dtype=torch.float64)
    precondition = EigenbasisPreconditioner(basis, 1.0 / (share @ diagonals + penalty))
    exact = torch.linalg.inv(0.25 * H.sum(0) + penalty * torch.eye(5, dtype=torch.float64))
    r = torch.randn(1, 5, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(precondition(r, None), r @ exact)


@pytest.mark.parametrize("preconditioner", ["eigenbasis", "cholesky"])
def test_preconditioner_parameter_selects_the_preconditioner(monkeypatch, preconditioner):
    import sktaskmet.surrogate._conjugate_gradient as numerics

    used = []
    for name in ["EigenbasisPreconditioner", "InversePreconditioner"]:
        original = getattr(numerics, name)
        spy = type(
            name,
            (original,),
            {
                "__call__": lambda self, r, rows, _n=name, _o=original: (
                    used.append(_n),
                    _o.__call__(self, r, rows),
                )[1]
            },
        )
        monkeypatch.setattr(numerics, name, spy)
    est = fit_estimator(projection_dim=6, preconditioner=preconditioner)
    est.estimate([[1, 0, 1], [1, 1, 1]])
    expected = {"eigenbasis": "EigenbasisPreconditioner", "cholesky": "InversePreconditioner"}
    assert used and set(used) == {expected[preconditioner]}
    with pytest.raises(ValueError, match="preconditioner"):
        solve_subsets(
            torch.zeros(2, 3, 4, dtype=torch.float64),
            torch.zeros(2, 3, dtype=torch.float64),
            torch.zeros(2, dtype=torch.int64),
            torch.zeros(2, dtype=torch.int64),
            torch.ones(1, 1, dtype=torch.float64),
            loss=make_loss("cross_entropy"),
            penalty=0.1,
            preconditioner="jacobi",
        )


# ---------------------------------------------------------------- accuracy


def test_estimate_is_close_to_real_fine_tuning():
    rng = np.random.RandomState(0)
    n_tasks, n_per_task = 4, 25
    X = rng.normal(size=(n_tasks * n_per_task, 5))
    W = rng.normal(size=(5, 3))
    y = np.argmax(X @ W, axis=1)
    y[:n_per_task] = rng.randint(0, 3, n_per_task)  # task 0 has random labels
    tasks = np.repeat(np.arange(n_tasks), n_per_task)
    X_target = rng.normal(size=(60, 5))
    y_target = np.argmax(X_target @ W, axis=1)
    # A wide network stays close to its linearisation (the neural tangent kernel regime).
    model = make_model(n_features=5, hidden=256, seed=1)
    penalty = 0.3
    S = np.array([[1, 1, 1, 1], [0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 1, 0], [1, 1, 0, 0]])
    tuner = SubsetFineTuner(model, X, y, tasks, X_target, y_target, penalty=penalty)
    F = evaluate_subsets(tuner, S)
    est = fit_estimator(
        model, (X, y, tasks, X_target, y_target), penalty=penalty, projection_dim=None
    )
    assert est.relative_error(S, F) < 0.02
    # The estimate tracks the differences between subsets, not just the level.
    F_hat = est.estimate(S)
    assert np.corrcoef(F_hat, F)[0, 1] > 0.95
    # A mismatched penalty is visibly worse.
    wrong = (
        clone(est)
        .set_params(penalty=penalty / 10)
        .fit(X, y, tasks=tasks, X_target=X_target, y_target=y_target)
    )
    assert wrong.relative_error(S, F) > 2 * est.relative_error(S, F)


# ---------------------------------------------------------------- estimator behaviour


def test_determinism_with_random_state():
    S = np.array([[1, 0, 1], [1, 1, 1]])
    a = fit_estimator(projection_dim=6, random_state=3)
    b = fit_estimator(projection_dim=6, random_state=3)
    c = fit_estimator(projection_dim=6, random_state=4)
    np.testing.assert_array_equal(a.train_gradients_, b.train_gradients_)
    np.testing.assert_array_equal(a.estimate(S), b.estimate(S))
    assert not np.allclose(a.train_gradients_, c.train_gradients_)


def test_model_is_not_modified():
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit_estimator(model, projection_dim=4).estimate(np.ones((1, 3)))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) and v.dtype == torch.float64


def test_float32_follows_data():
    X, y, tasks, X_target, y_target = make_problem()
    data = (X.astype(np.float32), y, tasks, X_target.astype(np.float32), y_target)
    est = fit_estimator(make_model(), data, projection_dim=6, tol=1e-8)
    assert est.train_gradients_.dtype == np.float32
    F32 = est.estimate(np.ones((1, 3)))
    F64 = fit_estimator(make_model(), projection_dim=6).estimate(np.ones((1, 3)))
    assert F32.dtype == np.float32
    np.testing.assert_allclose(F32, F64, rtol=1e-4)


def test_pickle_clone_and_device_change():
    S = np.array([[1, 0, 1], [0, 1, 0]])
    est = fit_estimator(projection_dim=6)
    expected = est.estimate(S)
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(loaded.estimate(S), expected)
    loaded.set_params(device="cpu", solver="newton")
    np.testing.assert_allclose(loaded.estimate(S), expected, rtol=1e-6)
    assert clone(est).get_params()["projection_dim"] == 6


def test_n_jobs_path_equals_sequential():
    S = np.random.RandomState(0).randint(0, 2, size=(9, 3))
    est = fit_estimator(projection_dim=6, subset_batch_size=2)
    sequential = est.estimate(S)
    est.set_params(n_jobs=2)
    np.testing.assert_allclose(est.estimate(S), sequential, rtol=1e-12)


def test_relative_error_definition():
    est = fit_estimator(projection_dim=6)
    S = np.array([[1, 0, 1], [0, 1, 1]])
    F_hat = est.estimate(S)
    F_true = F_hat * np.array([1.1, 0.8])
    expected = np.mean(np.abs(F_hat - F_true) / F_true)
    assert est.relative_error(S, F_true) == pytest.approx(expected)


def test_squared_error_with_one_output():
    X, _, tasks, X_target, _ = make_problem()
    rng = np.random.RandomState(0)
    y, y_target = rng.normal(size=45), rng.normal(size=20)
    est = fit_estimator(
        make_model(n_classes=1),
        (X, y, tasks, X_target, y_target),
        loss="squared_error",
        projection_dim=5,
    )
    assert est.estimate([[1, 1, 0]]).shape == (1,)


def test_verbose_reports_progress(capsys):
    fit_estimator(projection_dim=4, verbose=1).estimate(np.ones((2, 3)))
    out = capsys.readouterr().out
    assert "gradients of 45 training" in out and "2/2 subsets solved" in out


def test_estimate_progress_bar_counts_the_subsets_batch_by_batch():
    rich = pytest.importorskip("rich")
    est = fit_estimator(projection_dim=4, subset_batch_size=3)
    S = np.ones((7, 3))
    with rich.get_console().capture() as capture:
        with_bar = est.estimate(S, progress=True)
    out = capture.get()
    assert "GradientSubsetEstimator" in out and "7/7" in out and "100%" in out
    np.testing.assert_array_equal(with_bar, est.estimate(S))


def test_verbose_reports_each_batch_of_subsets_with_threads_too(capsys):
    est = fit_estimator(projection_dim=4, subset_batch_size=2, n_jobs=2, verbose=1)
    capsys.readouterr()
    est.estimate(np.ones((5, 3)))
    lines = [line for line in capsys.readouterr().out.splitlines() if "subsets solved" in line]
    assert [line.split()[1] for line in lines] == ["2/5", "4/5", "5/5"]


needs_callbacks = pytest.mark.skipif(
    not CALLBACKS_AVAILABLE, reason="scikit-learn < 1.9 has no sklearn.callback"
)


class _CountSteps:
    """A callback that counts the step tasks of a fit and what they carry."""

    def __init__(self):
        self.steps = 0
        self.fitted = []

    def setup(self, estimator, context):
        pass

    def teardown(self, estimator, context):
        pass

    def on_fit_task_begin(self, estimator, context):
        pass

    def on_fit_task_end(self, estimator, context, *, fitted_estimator=None):
        if context.task_name == "iteration":
            self.steps += 1
            self.fitted.append(fitted_estimator)


@needs_callbacks
def test_callbacks_follow_the_batches_of_examples_and_change_nothing():
    counter = _CountSteps()
    X, y, tasks, X_target, y_target = make_problem()  # 45 training, 20 target examples
    est = GradientSubsetEstimator(
        make_model(), projection_dim=6, batch_size=10, penalty=0.1, device="cpu", random_state=0
    )
    est.set_callbacks(counter).fit(X, y, tasks=tasks, X_target=X_target, y_target=y_target)
    assert counter.steps == 5 + 2  # ceil(45 / 10) + ceil(20 / 10)
    assert counter.fitted == [None] * 7  # a batch of gradients is no fitted model
    plain = fit_estimator(projection_dim=6, batch_size=10)
    S = np.array([[1, 1, 1], [1, 0, 1.0]])
    np.testing.assert_array_equal(est.estimate(S), plain.estimate(S))


@needs_callbacks
def test_progress_bar_nests_under_a_pipeline(capsys):
    pytest.importorskip("rich")
    from sklearn.callback import ProgressBar
    from sklearn.pipeline import Pipeline

    X, y, tasks, X_target, y_target = make_problem()
    est = GradientSubsetEstimator(make_model(), projection_dim=6, batch_size=10, random_state=0)
    pipe = Pipeline([("gradients", est)])
    pipe.set_callbacks(ProgressBar(max_propagation_depth=None))
    pipe.fit(
        X, y, gradients__tasks=tasks, gradients__X_target=X_target, gradients__y_target=y_target
    )
    out = capsys.readouterr().out
    bars = [line for line in out.splitlines() if "GradientSubsetEstimator - fit" in line]
    assert len(bars) == 1
    assert "Pipeline - fit-final-estimator | GradientSubsetEstimator - fit" in bars[0]
    assert "100%" in bars[0]
    assert pipe[-1].estimate([[1, 1, 1]]).shape == (1,)


def test_non_finite_model_outputs_raise_in_fit():
    X, y, tasks, X_target, y_target = make_problem()
    model = make_model()
    with torch.no_grad():
        model[2].weight[0, 0] = torch.nan  # e.g. a pretraining that diverged
    est = GradientSubsetEstimator(model, projection_dim=4, device="cpu")
    with pytest.raises(ValueError, match="Jacobians on X contain NaN or infinity"):
        est.fit(X, y, tasks=tasks, X_target=X_target, y_target=y_target)
    assert not hasattr(est, "train_gradients_")


# ---------------------------------------------------------------- bad input


def test_bad_subsets_raise():
    est = fit_estimator(projection_dim=4)
    with pytest.raises(ValueError, match="S has 2 columns.*n_tasks_=3"):
        est.estimate([[1, 0]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        est.estimate([[1, 0, 2]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        est.estimate([[1, -0.5, 0]])
    with pytest.raises(ValueError):
        est.estimate([[1, np.nan, 0]])
    with pytest.raises(ValueError, match="F_true has 1 values"):
        est.relative_error([[1, 0, 1], [1, 1, 1]], [0.3])
    with pytest.raises(ValueError, match="zeros"):
        est.relative_error([[1, 0, 1]], [0.0])


def test_model_data_mismatch_raises():
    X, y, tasks, X_target, y_target = make_problem()
    with pytest.raises(ValueError, match="model could not be applied"):
        fit_estimator(make_model(n_features=5))
    with pytest.raises(ValueError, match="classes must lie in"):
        fit_estimator(make_model(n_classes=2))
    with pytest.raises(ValueError, match="tasks has 44 entries"):
        fit_estimator(data=(X, y, tasks[:-1], X_target, y_target))
    with pytest.raises(ValueError, match="features"):
        fit_estimator(data=(X, y, tasks, X_target[:, :3], y_target))
    with pytest.raises(ValueError, match="y_target has 19 rows"):
        fit_estimator(data=(X, y, tasks, X_target, y_target[:-1]))
    with pytest.raises(ValueError, match="integer class indices"):
        fit_estimator(data=(X, y + 0.5, tasks, X_target, y_target))
    with pytest.raises(ValueError, match="2 column"):
        fit_estimator(
            make_model(n_classes=3),
            (X, np.ones((45, 2)), tasks, X_target, np.ones((20, 2))),
            loss="squared_error",
        )


def test_invalid_parameters_raise():
    with pytest.raises(ValueError, match="model"):
        fit_estimator(model="not a model")
    with pytest.raises(ValueError, match="projection_dim"):
        fit_estimator(projection_dim=0)
    with pytest.raises(ValueError, match="penalty"):
        fit_estimator(penalty=-1.0)
    with pytest.raises(ValueError, match="preconditioner"):
        fit_estimator(preconditioner="jacobi")
    with pytest.raises(NotFittedError):
        GradientSubsetEstimator(make_model()).estimate(np.ones((1, 3)))


@pytest.mark.cuda
@pytest.mark.parametrize("n_per_task", [15, 4])
def test_cuda_matches_cpu(n_per_task):
    S = np.array([[1, 0, 1], [1, 1, 1]])
    data = make_problem(n_per_task=n_per_task)  # 4: solved in the span of the Jacobian rows
    # Without projection (the CUDA and CPU generators draw different projections).
    cpu = fit_estimator(data=data, projection_dim=None)
    gpu = fit_estimator(data=data, projection_dim=None, device="cuda")
    np.testing.assert_allclose(gpu.estimate(S), cpu.estimate(S), rtol=1e-6)
    # Fitted state is numpy: a GPU-fitted estimator estimates on the CPU after set_params.
    gpu.set_params(device="cpu")
    np.testing.assert_allclose(gpu.estimate(S), cpu.estimate(S), rtol=1e-6)


def test_penalty_change_after_fit_equals_refit():
    S = np.array([[1, 0, 1], [1, 1, 1]])
    est = fit_estimator(projection_dim=6, penalty=0.1)
    refit = fit_estimator(projection_dim=6, penalty=0.01)
    np.testing.assert_allclose(
        est.set_params(penalty=0.01).estimate(S), refit.estimate(S), rtol=1e-10
    )
