"""Tests of the multi-task digits problem and of real subset fine-tuning."""

import pickle

import numpy as np
import pytest
import torch
from joblib import parallel_config

from sktaskmet.datasets import make_multitask_digits
from sktaskmet.surrogate import SubsetFineTuner, evaluate_subsets

SMALL = dict(hidden_layer_sizes=(16,), pretrain_max_iter=20, task_size=30, random_state=0)


@pytest.fixture(scope="module")
def data():
    return make_multitask_digits(**SMALL)


def test_groups_are_as_documented(data):
    assert (
        data.task_kinds == ["clean"] * 4 + ["noisy"] * 3 + ["duplicated"] * 2 + ["restricted"] * 3
    )
    assert len(data.task_names) == 12
    assert data.X.shape == (12 * 30, 64) and data.y.shape == (360,)
    np.testing.assert_array_equal(np.bincount(data.tasks), np.full(12, 30))
    assert data.X.min() >= 0 and data.X.max() <= 1
    # Duplicated tasks copy clean tasks 0 and 1 exactly.
    for dup, orig in [(7, 0), (8, 1)]:
        np.testing.assert_array_equal(data.X[data.tasks == dup], data.X[data.tasks == orig])
        np.testing.assert_array_equal(data.y[data.tasks == dup], data.y[data.tasks == orig])
    # Restricted task r holds only classes 3r, 3r+1, 3r+2 (mod 10).
    for r, task in enumerate([9, 10, 11]):
        allowed = {(3 * r + j) % 10 for j in range(3)}
        assert set(np.unique(data.y[data.tasks == task])) <= allowed
    # Target and pretraining sets are separate, all classes present.
    assert data.X_target.shape == (400, 64) and set(np.unique(data.y_target)) == set(range(10))
    assert data.X_pretrain.shape == (200, 64)


def test_noisy_tasks_have_wrong_labels():
    clean = make_multitask_digits(**{**SMALL, "noise": 0.0})
    noisy = make_multitask_digits(**{**SMALL, "noise": 1.0})
    # The same images (same seed); with noise=1 about 90% of the labels change.
    rows = np.isin(noisy.tasks, [4, 5, 6])
    np.testing.assert_array_equal(noisy.X[rows], clean.X[rows])
    changed = np.mean(noisy.y[rows] != clean.y[rows])
    assert 0.75 < changed < 0.98
    np.testing.assert_array_equal(noisy.y[~rows], clean.y[~rows])


def test_deterministic_with_random_state(data):
    again = make_multitask_digits(**SMALL)
    np.testing.assert_array_equal(again.X, data.X)
    np.testing.assert_array_equal(again.y, data.y)
    for a, b in zip(again.model.parameters(), data.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="n_duplicated"):
        make_multitask_digits(n_clean=1, n_duplicated=2)
    with pytest.raises(ValueError, match="digits data has 1797"):
        make_multitask_digits(task_size=500)
    with pytest.raises(ValueError, match="noise"):
        make_multitask_digits(noise=1.5)


def test_fine_tuner_through_evaluate_subsets(data):
    tuner = SubsetFineTuner(
        data.model,
        data.X,
        data.y,
        data.tasks,
        data.X_target,
        data.y_target,
        penalty=0.1,
        max_iter=50,
    )
    S = np.zeros((3, 12))
    S[1, :4] = 1  # the clean tasks
    S[2, 4:7] = 1  # the noisy tasks
    # Threads keep the test fast; the pickling check below covers process-based backends.
    with parallel_config(backend="threading"):
        F = evaluate_subsets(tuner, S, n_jobs=2)
    direct = np.array([tuner(s) for s in S])
    np.testing.assert_allclose(F, direct, rtol=1e-10)
    # The empty subset keeps the pretrained model; clean data helps the target more than
    # noisy labels do.
    with torch.no_grad():
        logits = data.model(torch.from_numpy(data.X_target))
        pretrained = torch.nn.functional.cross_entropy(
            logits, torch.from_numpy(data.y_target)
        ).item()
    assert F[0] == pytest.approx(pretrained, rel=1e-12)
    assert F[1] < F[2]
    # The pretrained model is untouched and the tuner pickles (for process-based joblib).
    assert pickle.loads(pickle.dumps(tuner))(S[1]) == pytest.approx(F[1], rel=1e-10)


def test_fine_tuner_bad_subset(data):
    tuner = SubsetFineTuner(data.model, data.X, data.y, data.tasks, data.X_target, data.y_target)
    with pytest.raises(ValueError, match="12 tasks"):
        tuner(np.ones(3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tuner(np.full(12, 2.0))


def test_fine_tuner_keeps_its_former_import_path():
    import sktaskmet.datasets
    from sktaskmet.datasets import SubsetFineTuner as former

    assert former is SubsetFineTuner
    # Documented once, in sktaskmet.surrogate.
    assert "SubsetFineTuner" not in sktaskmet.datasets.__all__
