"""Property tests of the Mahalanobis distances and TaskMet's metric parameterisations.

Every parameterisation, in float32 and float64, with random parameters: the matrix is
symmetric PSD, the distance satisfies the metric axioms (scoped to one fixed matrix for the
conditional metrics, whose matrix depends on the point), and the different ways of
computing the same quantity agree.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sktaskmet._backend import seeded, to_numpy, to_tensor
from sktaskmet._mahalanobis import pairwise_mahalanobis
from sktaskmet.taskmet._metric_params import make_metric
from tests._axioms import (
    assert_distance_axioms,
    assert_psd,
    float_arrays,
    metric_scale,
    rtol_for,
)
from tests._mahalanobis_reference import components_from_matrix, squared_mahalanobis

KINDS = ["identity", "diagonal", "full", "conditional_diagonal", "conditional_full"]
DTYPES = [np.float64, np.float32]


def build_random_metric(kind, dim, in_features, seed, dtype):
    """A parameterisation with random (not identity) parameters."""
    with seeded(seed):
        metric = make_metric(
            kind,
            dim,
            in_features=in_features,
            **({"hidden_layer_sizes": (8,)} if kind.startswith("conditional") else {}),
        )
        for parameter in metric.parameters():
            # Large enough to make the metric anisotropic and ill-conditioned at times.
            parameter.data.normal_(0, 2.0)
    return metric.to(torch.float64 if dtype == np.float64 else torch.float32)


@st.composite
def metric_problems(draw, kind, dtype):
    dim = draw(st.integers(1, 5))
    in_features = draw(st.integers(1, 3))
    n = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    points = draw(float_arrays(dtype, (3, n, dim)))
    condition = draw(float_arrays(dtype, (1, in_features), bound=3.0))
    return build_random_metric(kind, dim, in_features, seed, dtype), points, condition


def fixed_matrix(metric, condition):
    """One fixed matrix: the global one, or Lambda(c) at one conditioning input c."""
    with torch.no_grad():
        if metric.conditional:
            return metric(to_tensor(condition))[0]
        return metric()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_distance_axioms_and_psd(kind, dtype, data):
    metric, points, condition = data.draw(metric_problems(kind, dtype))
    matrix = fixed_matrix(metric, condition)
    assert matrix.dtype == (torch.float64 if dtype == np.float64 else torch.float32)
    rtol = rtol_for(dtype)
    assert_psd(to_numpy(matrix), rtol=rtol)

    def distance(a, b):
        diff = to_tensor(a) - to_tensor(b)
        return to_numpy(torch.sqrt(squared_mahalanobis(diff, matrix)))

    x, y, z = points
    scale = metric_scale(to_numpy(matrix), x, y, z)
    assert_distance_axioms(distance, x, y, z, scale=scale, rtol=rtol)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_quadratic_form_and_diagonal_match_the_matrix(kind, dtype, data):
    metric, points, _ = data.draw(metric_problems(kind, dtype))
    x, y, _ = points
    diff = to_tensor(x - y)
    condition = None
    if metric.conditional:
        # One conditioning row per residual, drawn from the points' own scale.
        condition = to_tensor(np.resize(x[:, :1], (x.shape[0], metric.in_features)))
    with torch.no_grad():
        matrix = metric(condition)
        expected = squared_mahalanobis(diff, matrix)
        quadratic = metric.quadratic_form(diff, condition)
        diagonal = metric.diagonal_values(condition)
    rtol = rtol_for(dtype) ** 2 * 10
    scale = float(matrix.abs().max()) * float((diff * diff).sum(-1).max()) + 1e-30
    np.testing.assert_allclose(
        to_numpy(quadratic), to_numpy(expected), rtol=rtol, atol=rtol * scale
    )
    np.testing.assert_allclose(
        to_numpy(diagonal), to_numpy(torch.diagonal(matrix, dim1=-2, dim2=-1)), rtol=rtol
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@given(data=st.data())
def test_pairwise_distances_exact_zero_diagonal_and_symmetry(dtype, data):
    n, dim = data.draw(st.integers(1, 7)), data.draw(st.integers(1, 4))
    X = data.draw(float_arrays(dtype, (n, dim), bound=1e3))
    components = data.draw(float_arrays(dtype, (data.draw(st.integers(1, 4)), dim), bound=3.0))
    distances = to_numpy(pairwise_mahalanobis(to_tensor(X), components=to_tensor(components)))
    np.testing.assert_array_equal(np.diag(distances), 0.0)
    np.testing.assert_array_equal(distances, distances.T)
    assert np.all(distances >= 0)


def test_pairwise_distances_match_brute_force_in_chunks():
    rng = np.random.RandomState(0)
    X, Y, L = rng.randn(11, 3), rng.randn(5, 3), rng.randn(2, 3)
    expected = np.array([[np.linalg.norm(L @ (a - b)) for b in Y] for a in X])
    got = pairwise_mahalanobis(to_tensor(X), to_tensor(Y), components=to_tensor(L), chunk_size=4)
    np.testing.assert_allclose(to_numpy(got), expected, rtol=1e-12)
    squared = pairwise_mahalanobis(to_tensor(X), to_tensor(Y), squared=True)
    np.testing.assert_allclose(to_numpy(squared), ((X[:, None] - Y[None]) ** 2).sum(-1), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@given(data=st.data())
def test_components_from_matrix_round_trip(dtype, data):
    dim = data.draw(st.integers(1, 5))
    A = data.draw(float_arrays(dtype, (dim + 1, dim), bound=3.0))
    matrix = A.T @ A
    components = components_from_matrix(matrix)
    assert components.dtype == dtype
    scale = np.abs(matrix).max() + 1e-30
    np.testing.assert_allclose(
        components.T @ components, matrix, atol=rtol_for(dtype) ** 2 * 10 * scale
    )


def test_components_from_matrix_rejects_bad_matrices():
    with pytest.raises(ValueError, match="square"):
        components_from_matrix(np.ones((2, 3)))
    with pytest.raises(ValueError, match="positive semi-definite"):
        components_from_matrix(np.diag([1.0, -1.0]))


def test_parameterisations_start_at_the_identity():
    for kind in ["identity", "diagonal"]:
        matrix = make_metric(kind, 3)().detach()
        np.testing.assert_allclose(to_numpy(matrix), np.eye(3), atol=1e-5)
    full = make_metric("full", 3, eps=0.0)().detach()
    np.testing.assert_allclose(to_numpy(full), np.eye(3), atol=1e-6)


def test_conditional_metric_shapes_gradients_and_learned_ridge():
    with seeded(0):
        metric = make_metric("conditional_full", 2, in_features=3, hidden_layer_sizes=(5,))
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    matrices = metric(x)
    assert matrices.shape == (4, 2, 2)
    matrices.sum().backward()
    assert metric.log_ridge.grad is not None
    assert all(p.grad is not None for p in metric.network.parameters())
    fixed = make_metric("conditional_diagonal", 2, in_features=3, learn_ridge=False)
    assert "log_ridge" not in dict(fixed.named_parameters())
    assert fixed(x).shape == (4, 2, 2)


def test_make_metric_errors():
    with pytest.raises(ValueError, match="metric must be one of"):
        make_metric("cosine", 2)
    with pytest.raises(ValueError, match="in_features"):
        make_metric("conditional_full", 2)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        make_metric("full", 0)
    with pytest.raises(ValueError, match="conditional"):
        make_metric("conditional_full", 2, in_features=1)()
    with pytest.raises(ValueError, match="ridge must be positive"):
        make_metric("conditional_full", 2, in_features=1, ridge=0.0)
