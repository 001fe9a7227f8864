"""Tests of subset sampling and of parallel subset evaluation (joblib, dask.distributed)."""

import functools

import numpy as np
import pytest
from joblib import parallel_backend

from sktaskmet.surrogate import evaluate_subsets, sample_subsets


def test_bernoulli_subsets_are_binary_and_match_p():
    S = sample_subsets(20, 2000, p=0.8, random_state=0)
    assert S.shape == (2000, 20)
    assert S.dtype == np.float64
    assert set(np.unique(S)) <= {0.0, 1.0}
    # 40000 Bernoulli(0.8) draws: the standard error of the mean is 0.002.
    assert abs(S.mean() - 0.8) < 0.01


def test_default_is_uniform_over_subsets():
    S = sample_subsets(10, 4000, random_state=1)
    assert abs(S.mean() - 0.5) < 0.02


def test_fixed_size_subsets_hold_exactly_size_tasks_and_cover_all_tasks():
    S = sample_subsets(8, 500, size=3, random_state=0)
    np.testing.assert_array_equal(S.sum(axis=1), 3.0)
    # Every task is drawn with probability 3/8.
    np.testing.assert_allclose(S.mean(axis=0), 3 / 8, atol=0.08)


def test_sampling_is_deterministic_given_random_state():
    np.testing.assert_array_equal(
        sample_subsets(6, 10, p=0.3, random_state=3), sample_subsets(6, 10, p=0.3, random_state=3)
    )
    assert not np.array_equal(
        sample_subsets(6, 10, size=2, random_state=3), sample_subsets(6, 10, size=2, random_state=4)
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"p": 0.5, "size": 2}, "not both"),
        ({"size": 9}, "exceeds n_tasks"),
        ({"p": 1.5}, "'p' parameter"),
        ({"size": -1}, "'size' parameter"),
    ],
)
def test_sampling_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_subsets(8, 5, **kwargs)


def _weighted_loss(s, weights):
    return float(s @ weights)


def _two_metrics(s):
    return np.array([s.sum(), s[0]])


def test_evaluate_subsets_matches_a_loop_and_keeps_order():
    S = sample_subsets(5, 12, random_state=0)
    w = np.arange(5.0)
    func = functools.partial(_weighted_loss, weights=w)
    expected = np.array([func(s) for s in S])
    np.testing.assert_allclose(evaluate_subsets(func, S), expected)
    np.testing.assert_allclose(evaluate_subsets(func, S, n_jobs=2), expected)


def test_evaluate_subsets_stacks_vector_results():
    S = sample_subsets(4, 6, random_state=0)
    values = evaluate_subsets(_two_metrics, S)
    assert values.shape == (6, 2)
    np.testing.assert_allclose(values[:, 0], S.sum(axis=1))


def test_evaluate_subsets_rejects_bad_input():
    with pytest.raises(TypeError, match="func must be callable"):
        evaluate_subsets(3, np.ones((2, 2)))
    with pytest.raises(ValueError, match="2-D array"):
        evaluate_subsets(np.sum, np.ones(3))
    with pytest.raises(ValueError, match="same length"):
        evaluate_subsets(lambda s: np.ones(int(s.sum())), np.array([[1.0, 0.0], [1.0, 1.0]]))


def _sum_and_worker_flag(s):
    """The subset's size, and 1.0 when the call runs inside a dask worker."""
    import distributed

    try:
        distributed.get_worker()
        on_worker = 1.0
    except ValueError:
        on_worker = 0.0
    return np.array([s.sum(), on_worker])


def test_evaluate_subsets_on_a_dask_distributed_cluster():
    distributed = pytest.importorskip("distributed")
    S = sample_subsets(6, 10, random_state=0)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
        parallel_backend("dask"),
    ):
        values = evaluate_subsets(_sum_and_worker_flag, S, n_jobs=-1)
    np.testing.assert_allclose(values[:, 0], S.sum(axis=1))
    # Every call ran as a task on the cluster's worker, not in the local process.
    np.testing.assert_array_equal(values[:, 1], 1.0)
    assert _sum_and_worker_flag(S[0])[1] == 0.0
