"""Tests of AdversarialSplit and of the labeling generators used with it."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from sktaskmet.datasets import make_class_split_tasks, make_random_labelings
from sktaskmet.model_selection import AdversarialSplit


def test_split_is_agreement_and_disagreement_of_the_labelings():
    rng = np.random.RandomState(0)
    y = rng.randint(0, 2, 50)
    task = rng.randint(0, 2, 50)
    splitter = AdversarialSplit(task)
    assert splitter.get_n_splits() == 1
    splits = list(splitter.split(np.zeros((50, 2)), y))
    assert len(splits) == 1
    train, test = splits[0]
    np.testing.assert_array_equal(train, np.flatnonzero(y == task))
    np.testing.assert_array_equal(test, np.flatnonzero(y != task))
    assert np.all(y[train] == task[train]) and np.all(y[test] != task[test])


def test_string_labels():
    y = np.array(["a", "b", "b", "a"])
    train, test = next(AdversarialSplit(np.array(["a", "a", "b", "b"])).split(np.ones((4, 1)), y))
    np.testing.assert_array_equal(train, [0, 2])
    np.testing.assert_array_equal(test, [1, 3])


def test_adversarial_split_fools_a_model_that_prefers_the_other_task():
    # The model sees only the first feature, which defines task; y is defined by the second.
    # On the training side the two coincide, so the model learns task and fails at test time.
    rng = np.random.RandomState(0)
    X = rng.randn(400, 2)
    y = (X[:, 1] > 0).astype(int)
    task = (X[:, 0] > 0).astype(int)
    first_feature = X[:, :1]
    adversarial = cross_val_score(LogisticRegression(), first_feature, y, cv=AdversarialSplit(task))
    assert adversarial[0] < 0.1
    random_task = rng.randint(0, 2, 400)
    baseline = cross_val_score(LogisticRegression(), X, y, cv=AdversarialSplit(random_task))
    assert baseline[0] > 0.9  # a split by an unrelated labeling is harmless


def test_errors():
    y = np.array([0, 1, 0, 1])
    X = np.zeros((4, 1))
    with pytest.raises(ValueError, match="task has 3 labels"):
        next(AdversarialSplit([0, 1, 0]).split(X, y))
    with pytest.raises(ValueError, match="task has 4 labels but X has 5"):
        next(AdversarialSplit(y).split(np.zeros((5, 1)), np.r_[y, 0]))
    with pytest.raises(ValueError, match="test side is empty"):
        next(AdversarialSplit(y.copy()).split(X, y))
    with pytest.raises(ValueError, match="training side is empty"):
        next(AdversarialSplit(1 - y).split(X, y))
    with pytest.raises(ValueError, match="needs y"):
        next(AdversarialSplit(y).split(X, None))
    with pytest.raises(ValueError, match="1-d labeling"):
        next(AdversarialSplit(np.zeros((4, 2))).split(X, y))


def test_class_split_tasks_are_the_126_distinct_five_vs_five_splits():
    y = np.repeat(np.arange(10), 3)
    tasks, positive = make_class_split_tasks(y)
    assert tasks.shape == (30, 126) and positive.shape == (126, 5)
    assert np.all(tasks.sum(axis=0) == 15)  # balanced: five classes of three points
    # No split appears twice, not even as its complement.
    keys = {frozenset(p) for p in positive} | {frozenset(set(range(10)) - set(p)) for p in positive}
    assert len(keys) == 252
    for t in range(126):
        np.testing.assert_array_equal(tasks[:, t], np.isin(y, positive[t]))


def test_class_split_task_sample_and_errors():
    y = np.arange(10)
    tasks, positive = make_class_split_tasks(y, 5, random_state=0)
    again, positive_again = make_class_split_tasks(y, 5, random_state=0)
    assert tasks.shape == (10, 5)
    np.testing.assert_array_equal(positive, positive_again)
    with pytest.raises(ValueError, match="exceeds the 126 distinct splits"):
        make_class_split_tasks(y, 127)
    with pytest.raises(ValueError, match="two classes"):
        make_class_split_tasks(np.zeros(5))
    odd_tasks, odd_positive = make_class_split_tasks(np.arange(5))
    assert odd_positive.shape == (10, 2)


def test_random_labelings():
    balanced = make_random_labelings(101, 4, random_state=0)
    assert balanced.shape == (101, 4)
    assert set(balanced.sum(axis=0)) == {50}
    assert not np.array_equal(balanced[:, 0], balanced[:, 1])
    np.testing.assert_array_equal(balanced, make_random_labelings(101, 4, random_state=0))
    three = make_random_labelings(30, 1, n_classes=3, balanced=False, random_state=0)
    assert set(np.unique(three)) <= {0, 1, 2}
    with pytest.raises(ValueError, match="n_classes"):
        make_random_labelings(10, 1, n_classes=1)
