"""evaluate_subsets as a run that loses nothing: store, resume, failures, result checks.

The crash tests kill a real dask.distributed worker and a real calling process in the
middle of a run, then check that a rerun computes exactly the subsets whose results were
not stored.
"""

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from joblib import Memory, parallel_backend

from sktaskmet.surrogate import (
    SubsetEvaluationError,
    SubsetFailure,
    evaluate_subsets,
)

from ._subset_helpers import WEIGHTS, count_calls, kill_own_worker_once, weighted_sum

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def all_subsets(n_tasks):
    """Every subset of n_tasks tasks, once (distinct rows, so one stored file each)."""
    grid = np.array(np.meshgrid(*[[0.0, 1.0]] * n_tasks, indexing="ij"))
    return grid.reshape(n_tasks, -1).T


def n_stored(store):
    return len([f for f in os.listdir(store) if f.endswith(".npy")])


@pytest.fixture
def calls(tmp_path):
    path = tmp_path / "calls"
    path.mkdir()
    return str(path)


def test_rerun_with_a_directory_store_computes_nothing_again(tmp_path, calls):
    S = all_subsets(3)
    func = functools.partial(weighted_sum, calls_dir=calls)
    first = evaluate_subsets(func, S, store=tmp_path / "store")
    assert count_calls(calls) == len(S)
    assert n_stored(tmp_path / "store") == len(S)
    second = evaluate_subsets(func, S, store=tmp_path / "store")
    assert count_calls(calls) == len(S)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, S @ WEIGHTS[:3])


def test_joblib_memory_store(tmp_path, calls):
    S = all_subsets(2)
    memory = Memory(tmp_path / "cache", verbose=0)
    func = functools.partial(weighted_sum, calls_dir=calls)
    np.testing.assert_allclose(evaluate_subsets(func, S, store=memory), S @ WEIGHTS[:2])
    np.testing.assert_allclose(evaluate_subsets(func, S, store=memory), S @ WEIGHTS[:2])
    assert count_calls(calls) == len(S)


def test_failures_are_reported_together_after_the_other_subsets(tmp_path, calls):
    S = all_subsets(3)
    broken = S[5]
    func = functools.partial(weighted_sum, calls_dir=calls, fail_on=broken)
    with pytest.raises(SubsetEvaluationError, match="failed on 1 of 8") as info:
        with parallel_backend("threading"):
            evaluate_subsets(func, S, store=tmp_path / "store", n_jobs=2)
    error = info.value
    assert [f.index for f in error.failures] == [5]
    assert "subset 5" in str(error) and "this subset is broken" in str(error)
    assert "Traceback" in error.failures[0].traceback
    expected = S @ WEIGHTS[:3]
    np.testing.assert_allclose(np.delete(error.values, 5), np.delete(expected, 5))
    assert np.isnan(error.values[5])
    # Every other result was stored; the rerun (function fixed) computes only subset 5.
    assert n_stored(tmp_path / "store") == len(S) - 1
    fixed = functools.partial(weighted_sum, calls_dir=calls)
    np.testing.assert_allclose(evaluate_subsets(fixed, S, store=tmp_path / "store"), expected)
    assert count_calls(calls) == len(S) + 1


def test_errors_collect_returns_failures_with_index_and_traceback(calls):
    S = all_subsets(2)
    func = functools.partial(weighted_sum, calls_dir=calls, fail_on=S[2])
    values, failures = evaluate_subsets(func, S, errors="collect")
    assert len(failures) == 1 and isinstance(failures[0], SubsetFailure)
    assert failures[0].index == 2
    np.testing.assert_array_equal(failures[0].subset, S[2])
    assert "RuntimeError" in failures[0].error
    assert np.isnan(values[2]) and np.isfinite(np.delete(values, 2)).all()
    assert evaluate_subsets(np.sum, S, errors="collect")[1] == []


@pytest.mark.parametrize("result", [None, "abc", {"loss": 1.0}, np.ones((2, 2))])
def test_non_numeric_results_fail_their_subset(result):
    S = np.array([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(SubsetEvaluationError, match="func returned") as info:
        evaluate_subsets(lambda s: result if s[0] else 1.0, S)
    assert [f.index for f in info.value.failures] == [0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_results_are_kept_and_warned_about(bad):
    S = np.array([[1.0, 0.0], [0.0, 1.0]])
    with pytest.warns(RuntimeWarning, match=r"NaN or infinity on 1 subset\(s\), rows \[1\]"):
        values = evaluate_subsets(lambda s: bad if s[1] else 1.0, S)
    assert values[0] == 1.0 and not np.isfinite(values[1])


@pytest.mark.parametrize(
    "subsets, match",
    [
        (np.array([[2.0, 0.0]]), r"in \[0, 1\]; subsets\[0, 0\] = 2.0"),
        (np.array([[0.0, -0.5]]), r"subsets\[0, 1\] = -0.5"),
        (np.array([[np.nan, 1.0]]), r"subsets\[0, 0\] = nan"),
        (np.ones(3), "2-D array"),
        (np.ones((1, 2, 2)), "2-D array"),
    ],
)
def test_subsets_are_validated(subsets, match):
    with pytest.raises(ValueError, match=match):
        evaluate_subsets(np.sum, subsets)


def test_bad_store_and_errors_arguments():
    with pytest.raises(TypeError, match="store must be None, a directory path or a joblib"):
        evaluate_subsets(np.sum, np.ones((1, 2)), store=3)
    with pytest.raises(ValueError, match="errors must be 'raise' or 'collect'"):
        evaluate_subsets(np.sum, np.ones((1, 2)), errors="ignore")
    with pytest.raises(TypeError, match="numeric array"):
        evaluate_subsets(np.sum, [["a", "b"]])


def test_killed_dask_worker_loses_no_result(tmp_path, calls):
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    S = all_subsets(4)
    store = tmp_path / "store"
    func = functools.partial(
        kill_own_worker_once, calls_dir=calls, marker=str(tmp_path / "killed"), victim=S[6]
    )
    # The worker running subset 6 dies (SIGKILL) mid-run; dask reschedules its tasks on the
    # restarted worker. (With allowed-failures=0 joblib's dask backend waits forever on the
    # failed task instead of raising, so the retry is what keeps such a run alive.)
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 3}),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
        parallel_backend("dask"),
    ):
        values = evaluate_subsets(func, S, n_jobs=-1, store=store)
    assert os.path.exists(tmp_path / "killed")
    np.testing.assert_allclose(values, S @ WEIGHTS[:4])
    assert n_stored(store) == len(S)
    victim_calls = [name for name in os.listdir(calls) if name.startswith("0110-")]
    assert len(victim_calls) == 2  # killed once, then recomputed
    # A rerun finds every result in the store and computes nothing.
    calls_before = count_calls(calls)
    np.testing.assert_allclose(evaluate_subsets(func, S, store=store), values)
    assert count_calls(calls) == calls_before


def test_killed_calling_process_then_resume_computes_only_the_missing(tmp_path, calls):
    S = all_subsets(4)
    store = tmp_path / "store"
    np.save(tmp_path / "subsets.npy", S)
    script = textwrap.dedent(
        f"""
        import functools, sys
        import numpy as np
        sys.path.insert(0, {ROOT!r})
        from sktaskmet.surrogate import evaluate_subsets
        from tests.surrogate._subset_helpers import weighted_sum
        S = np.load({str(tmp_path / "subsets.npy")!r})
        func = functools.partial(weighted_sum, calls_dir={calls!r}, sleep=0.2)
        evaluate_subsets(func, S, store={str(store)!r})
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not (os.path.isdir(store) and n_stored(store) >= 3):
            assert child.poll() is None, "the child process ended before it was killed"
            assert time.monotonic() < deadline, "the child process stored nothing in time"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    stored = n_stored(store)
    assert 3 <= stored < len(S)
    calls_before = count_calls(calls)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = evaluate_subsets(functools.partial(weighted_sum, calls_dir=calls), S, store=store)
    np.testing.assert_allclose(values, S @ WEIGHTS[:4])
    assert count_calls(calls) - calls_before == len(S) - stored


@settings(max_examples=40)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, max_side=4),
        elements=st.floats(-2.0, 2.0) | st.sampled_from([np.nan, np.inf, 0.0, 1.0]),
    )
)
def test_any_subsets_array_is_evaluated_or_refused_by_name(subsets):
    """Property: in-range rows are evaluated exactly; anything else names its entry."""
    in_range = np.all((subsets >= 0.0) & (subsets <= 1.0))
    if in_range:
        np.testing.assert_array_equal(evaluate_subsets(np.sum, subsets), subsets.sum(axis=1))
    else:
        with pytest.raises(ValueError, match=r"subsets\[\d+, \d+\] = "):
            evaluate_subsets(np.sum, subsets)


# -- progress --------------------------------------------------------------------------


def test_progress_bar_counts_every_subset_from_the_stored_ones(tmp_path, calls):
    rich = pytest.importorskip("rich")
    S = all_subsets(3)
    func = functools.partial(weighted_sum, calls_dir=calls)
    evaluate_subsets(func, S[:3], store=tmp_path / "store")
    with rich.get_console().capture() as capture:
        values = evaluate_subsets(func, S, store=tmp_path / "store", progress=True)
    out = capture.get()
    assert "evaluate_subsets (3 loaded from the store)" in out
    assert "8/8" in out and "100%" in out
    assert count_calls(calls) == len(S)
    np.testing.assert_allclose(values, S @ WEIGHTS[:3])
    with rich.get_console().capture() as capture:
        evaluate_subsets(func, S, store=tmp_path / "store")
    assert capture.get() == ""  # no bar unless asked for


def test_progress_advances_as_each_result_arrives(monkeypatch):
    pytest.importorskip("rich")
    from sktaskmet._progress import LoopProgress

    done, seen = [], []

    def func(s):
        done.append(1)
        return float(s.sum())

    advance = LoopProgress.advance

    def spy(self, count=1, detail=""):
        seen.append(len(done))
        advance(self, count, detail)

    monkeypatch.setattr(LoopProgress, "advance", spy)
    evaluate_subsets(func, all_subsets(3), progress=True)
    # Each result is counted when it is computed, not all of them at the end.
    assert seen == list(range(1, 9))


def test_progress_with_a_backend_that_cannot_stream_results(calls):
    rich = pytest.importorskip("rich")
    S = all_subsets(3)
    func = functools.partial(weighted_sum, calls_dir=calls)
    with rich.get_console().capture() as capture:
        with parallel_backend("multiprocessing", n_jobs=2):
            values = evaluate_subsets(func, S, n_jobs=2, progress=True)
    np.testing.assert_allclose(values, S @ WEIGHTS[:3])
    assert "8/8" in capture.get()
