"""Attribution workflows: dual ridge, per-target CV, id lists, aggregate selection, warnings."""

import warnings

import numpy as np
import pytest
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import Ridge

from sktaskmet import KernelSurrogate, LinearSurrogate
from sktaskmet.datasets import make_task_interactions
from sktaskmet.surrogate import (
    ExtrapolationWarning,
    ids_to_indicators,
    indicators_to_ids,
    sample_subsets,
)


# ------------------------------------------------------------------ dual ridge
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_dual_and_primal_ridge_agree_with_sklearn(fit_intercept):
    rng = np.random.default_rng(0)
    S = (rng.random((12, 30)) < 0.5).astype(float)
    y = rng.normal(size=(12, 3))
    ref = Ridge(alpha=0.3, fit_intercept=fit_intercept).fit(S, y)
    for solver in ("auto", "dual", "primal"):
        model = LinearSurrogate(alpha=0.3, fit_intercept=fit_intercept, solver=solver)
        model.set_params(device="cpu").fit(S, y)
        np.testing.assert_allclose(model.coef_, ref.coef_, atol=1e-10)
        np.testing.assert_allclose(model.intercept_, ref.intercept_, atol=1e-10)


def test_dual_ridge_with_more_subsets_than_tasks_and_cv():
    S, y, _ = make_task_interactions(n_subsets=60, random_state=0)
    primal = LinearSurrogate(solver="primal", cv=4, device="cpu").fit(S, y)
    dual = LinearSurrogate(solver="dual", cv=4, device="cpu").fit(S, y)
    assert primal.alpha_ == dual.alpha_
    np.testing.assert_allclose(dual.coef_, primal.coef_, atol=1e-10)


def test_attribution_orientation_is_task_first():
    S, y, _ = make_task_interactions(n_subsets=50, random_state=0)
    Y = np.column_stack([y, 3.0 * y, -y])
    model = LinearSurrogate(device="cpu").fit(S, Y)
    assert model.coef_.shape == (3, 16)  # scikit-learn's (n_targets, n_features)
    np.testing.assert_allclose(model.attribution(method="gradient"), model.coef_.T)
    np.testing.assert_allclose(model.attribution(), model.coef_.T, atol=1e-12)
    with pytest.raises(ValueError, match="solver"):
        LinearSurrogate(solver="cholesky").fit(S, y)


# ------------------------------------------------------------------ per-target CV
@pytest.fixture(scope="module")
def scaled_targets():
    S, y, _ = make_task_interactions(n_subsets=80, random_state=0)
    rng = np.random.default_rng(1)
    smooth = 0.01 * np.sin(S @ rng.normal(size=16))
    noisy = 100.0 * y + 30.0 * rng.normal(size=80)
    return S, np.column_stack([y, noisy, smooth])


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("cv", [4, "loo"])
def test_per_target_cv_equals_one_search_per_target(scaled_targets, fit_intercept, cv):
    S, Y = scaled_targets
    params = {"cv": cv, "fit_intercept": fit_intercept, "device": "cpu"}
    joint = KernelSurrogate(per_target_cv=True, **params).fit(S, Y)
    assert joint.alpha_.shape == joint.gamma_.shape == (3,)
    assert joint.cv_results_["mean_test_mse"].shape == (5, 11, 3)
    assert len(set(zip(joint.alpha_, joint.gamma_, strict=True))) > 1  # the targets do differ
    predictions = joint.predict(S[:7])
    gradients = joint.attribution(method="gradient")
    for j in range(3):
        alone = KernelSurrogate(**params).fit(S, Y[:, j])
        assert (alone.alpha_, alone.gamma_) == (joint.alpha_[j], joint.gamma_[j])
        np.testing.assert_allclose(
            joint.cv_results_["mean_test_mse"][..., j], alone.cv_results_["mean_test_mse"]
        )
        scale = np.abs(Y[:, j]).max()
        np.testing.assert_allclose(predictions[:, j], alone.predict(S[:7]), atol=1e-8 * scale)
        np.testing.assert_allclose(
            gradients[:, j], alone.attribution(method="gradient"), atol=1e-8 * scale
        )


def test_per_target_cv_reproduces_kernel_ridge(scaled_targets):
    S, Y = scaled_targets
    model = KernelSurrogate(cv=4, per_target_cv=True, fit_intercept=False, device="cpu")
    model.fit(S, Y)
    for j in range(3):
        ref = KernelRidge(alpha=model.alpha_[j], kernel="rbf", gamma=model.gamma_[j])
        np.testing.assert_allclose(
            model.dual_coef_[:, j], ref.fit(S, Y[:, j]).dual_coef_, rtol=1e-6, atol=1e-9
        )


def test_per_target_cv_is_ignored_for_one_target_and_linear_kernel(scaled_targets):
    S, Y = scaled_targets
    one = KernelSurrogate(cv=4, per_target_cv=True, device="cpu").fit(S, Y[:, 0])
    assert np.ndim(one.alpha_) == 0
    linear = KernelSurrogate(kernel="linear", cv=4, per_target_cv=True, device="cpu").fit(S, Y)
    assert linear.gamma_ is None and linear.alpha_.shape == (3,)
    assert linear.predict(S[:3]).shape == (3, 3)


def shared_setting_targets(n_subsets=30, n_targets=40, seed=0):
    """Many targets that are one function of the subset plus their own noise: no target
    has a setting of its own to find, so a per-target search can only fit noise."""
    S, y, _ = make_task_interactions(n_subsets=n_subsets, random_state=seed)
    rng = np.random.default_rng(seed)
    return S, y[:, None] + 0.5 * y.std() * rng.normal(size=(n_subsets, n_targets))


@pytest.mark.parametrize("cv", [4, "loo"])
def test_auto_per_target_cv_keeps_the_per_target_choice_where_targets_differ(scaled_targets, cv):
    S, Y = scaled_targets
    auto = KernelSurrogate(cv=cv, per_target_cv="auto", device="cpu").fit(S, Y)
    joint_error, per_target_error = auto.cv_results_["nested_normalized_mse"]
    assert per_target_error < joint_error and auto.per_target_cv_
    chosen = KernelSurrogate(cv=cv, per_target_cv=True, device="cpu").fit(S, Y)
    np.testing.assert_array_equal(auto.alpha_, chosen.alpha_)
    np.testing.assert_allclose(auto.predict(S[:5]), chosen.predict(S[:5]))


def test_auto_per_target_cv_falls_back_to_one_setting_when_targets_share_it():
    S, Y = shared_setting_targets()
    auto = KernelSurrogate(cv=5, per_target_cv="auto", device="cpu").fit(S, Y)
    joint_error, per_target_error = auto.cv_results_["nested_normalized_mse"]
    assert joint_error < per_target_error and not auto.per_target_cv_
    assert np.ndim(auto.alpha_) == 0
    chosen = KernelSurrogate(cv=5, device="cpu").fit(S, Y)
    assert (auto.alpha_, auto.gamma_) == (chosen.alpha_, chosen.gamma_)
    np.testing.assert_allclose(auto.predict(S[:5]), chosen.predict(S[:5]))


def test_auto_per_target_cv_decides_alike_on_every_device(scaled_targets, device):
    S, Y = scaled_targets
    here = KernelSurrogate(cv=4, per_target_cv="auto", device=device).fit(S, Y)
    cpu = KernelSurrogate(cv=4, per_target_cv="auto", device="cpu").fit(S, Y)
    assert here.per_target_cv_ == cpu.per_target_cv_
    np.testing.assert_allclose(
        here.cv_results_["nested_normalized_mse"],
        cpu.cv_results_["nested_normalized_mse"],
        rtol=1e-6,
    )
    np.testing.assert_allclose(here.predict(S[:5]), cpu.predict(S[:5]), rtol=1e-6, atol=1e-9)


def test_nested_error_is_the_mean_normalised_error_of_the_outer_folds():
    S, Y = shared_setting_targets(n_subsets=24, n_targets=6, seed=3)
    Y[:, 0] = 1.0  # a target without variance is left out
    auto = KernelSurrogate(cv=4, per_target_cv="auto", device="cpu").fit(S, Y)
    expected = []
    for per_target in (False, True):
        total = 0.0
        for test in np.array_split(np.arange(24), 4):  # KFold(4) without shuffling
            train = np.setdiff1d(np.arange(24), test)
            inner = KernelSurrogate(cv=4, per_target_cv=per_target, device="cpu")
            pred = inner.fit(S[train], Y[train]).predict(S[test])
            total += np.sum((pred[:, 1:] - Y[test, 1:]) ** 2 / Y[:, 1:].var(axis=0))
        expected.append(total / (24 * 5))
    np.testing.assert_allclose(auto.cv_results_["nested_normalized_mse"], expected, rtol=1e-10)


def test_auto_per_target_cv_without_several_targets_or_enough_subsets(scaled_targets):
    S, Y = scaled_targets
    one = KernelSurrogate(cv=4, per_target_cv="auto", device="cpu").fit(S, Y[:, 0])
    assert not one.per_target_cv_ and "nested_normalized_mse" not in one.cv_results_
    plain = KernelSurrogate(per_target_cv="auto", device="cpu").fit(S, Y)  # no cv: no search
    assert not plain.per_target_cv_ and plain.cv_results_ is None
    with pytest.raises(ValueError, match="nests the cross-validation"):
        KernelSurrogate(cv=5, per_target_cv="auto", device="cpu").fit(S[:6], Y[:6])
    with pytest.raises(ValueError, match="per_target_cv"):
        KernelSurrogate(cv=5, per_target_cv="yes", device="cpu").fit(S, Y)


# ------------------------------------------------------------------ id lists
def test_ids_to_indicators_and_back():
    ids = [[40, 7, 1, 47], [3], []]
    S = ids_to_indicators(ids, n_tasks=50)
    assert S.shape == (3, 50) and S.sum() == 5 and S[0, 47] == 1 and S[1, 3] == 1
    back = indicators_to_ids(S)
    assert [b.tolist() for b in back] == [[1, 7, 40, 47], [3], []]
    assert ids_to_indicators(np.array([[0, 2], [1, 2]])).shape == (2, 3)  # n_tasks inferred
    np.testing.assert_array_equal(indicators_to_ids(S[0]), [1, 7, 40, 47])


@pytest.mark.parametrize(
    "ids, n_tasks, error, match",
    [
        ([[0, 5]], 4, ValueError, "out of range"),
        ([[0, -1]], None, ValueError, "negative"),
        ([[1, 1]], None, ValueError, "repeats"),
        ([[0.5, 1]], None, TypeError, "integer"),
        ([[[0, 1]]], None, ValueError, "flat"),
        ([[], []], None, ValueError, "n_tasks"),
        ([], 3, ValueError, "at least one"),
        ([[0]], 0, ValueError, "n_tasks"),
    ],
)
def test_ids_to_indicators_rejects_bad_input(ids, n_tasks, error, match):
    with pytest.raises(error, match=match):
        ids_to_indicators(ids, n_tasks=n_tasks)


def test_indicators_to_ids_rejects_weights_and_bad_shapes():
    with pytest.raises(ValueError, match="0/1"):
        indicators_to_ids([[0.5, 1.0]])
    with pytest.raises(ValueError, match="1-D or 2-D"):
        indicators_to_ids(np.zeros((2, 2, 2)))


# ------------------------------------------------------------------ selection
@pytest.fixture(scope="module")
def two_losses():
    """Two loss targets whose weighted sum has a known best subset."""
    S = sample_subsets(8, 120, random_state=0)
    w1 = np.array([-1.0, -1.0, 1.0, 1.0, -0.5, 0.5, -0.2, 0.2])
    w2 = np.array([-0.5, 1.2, -0.6, 1.0, -0.4, 0.5, -0.2, 0.2])
    return S, np.column_stack([S @ w1, S @ w2]), w1, w2


def test_select_aggregates_and_minimises_a_loss(two_losses):
    S, Y, w1, w2 = two_losses
    model = LinearSurrogate(alpha=1e-8, device="cpu").fit(S, Y)
    for aggregate, weights in [("mean", (w1 + w2) / 2), ("sum", w1 + w2), ([1.0, 0.0], w1)]:
        chosen = model.select(aggregate=aggregate, greater_is_better=False)
        np.testing.assert_array_equal(chosen, (weights < 0).astype(float))
        chosen = model.select(aggregate=aggregate, greater_is_better=True)
        np.testing.assert_array_equal(chosen, (weights > 0).astype(float))

    def second(values):
        return values[:, 1]

    chosen = model.select(k=2, aggregate=second, greater_is_better=False, method="greedy")
    np.testing.assert_array_equal(np.flatnonzero(chosen), [0, 2])
    # None falls back to the estimator's own orientation.
    loss_model = LinearSurrogate(alpha=1e-8, greater_is_better=False, device="cpu").fit(S, Y)
    np.testing.assert_array_equal(
        loss_model.select(aggregate="mean"), ((w1 + w2) / 2 < 0).astype(float)
    )


def test_select_rejects_bad_aggregates(two_losses):
    S, Y, _, _ = two_losses
    model = LinearSurrogate(device="cpu").fit(S, Y)
    with pytest.raises(ValueError, match="give select an aggregate"):
        model.select()
    with pytest.raises(ValueError, match="shape \\(n_targets,\\)"):
        model.select(aggregate=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="it returned shape"):
        model.select(aggregate=lambda values: values)
    with pytest.raises(ValueError, match="non-finite"):
        model.select(aggregate=lambda values: values[:, 0] * np.nan)
    with pytest.raises(ValueError, match="aggregate"):
        model.select(aggregate="median")
    with pytest.raises(ValueError, match="greater_is_better"):
        model.select(aggregate="mean", greater_is_better="yes")


def test_exhaustive_selection_refuses_before_enumerating():
    S = sample_subsets(30, 40, random_state=0)
    model = LinearSurrogate(device="cpu").fit(S, S @ np.linspace(-1, 1, 30))
    with pytest.raises(ValueError, match="use method='greedy'"):
        model.select(method="exhaustive")
    with pytest.raises(ValueError, match="use method='greedy'"):
        model.select(k=15, method="exhaustive")  # C(30, 15) = 1.55e8 candidates
    assert model.select(k=2, method="exhaustive").sum() == 2  # C(30, 2) is small


# ------------------------------------------------------------------ extrapolation warning
def test_extrapolation_warning_far_from_small_subsets():
    # Every training subset holds 4 of 50 tasks, as the in-context-learning prompts do.
    rng = np.random.default_rng(0)
    ids = [rng.choice(50, size=4, replace=False) for _ in range(80)]
    S = ids_to_indicators(ids, n_tasks=50)
    y = S @ rng.normal(size=50)
    model = KernelSurrogate(device="cpu").fit(S, y)
    assert 0 < model.training_spread_ <= 8  # two 4-subsets differ in at most 8 tasks
    distance = model.distance_to_training(np.ones((1, 50)))
    assert distance[0] == 46.0  # the full set differs from a 4-subset in 46 tasks
    with pytest.warns(ExtrapolationWarning, match="squared distance 46"):
        model.attribution()
    with pytest.warns(ExtrapolationWarning, match="interactions"):
        LinearSurrogate(device="cpu").fit(S, y).interactions()
    with pytest.warns(ExtrapolationWarning, match="select"):
        model.select(k=20, method="greedy")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExtrapolationWarning)
        model.attribution(base=S[0])  # around a training subset: no warning
        model.select(k=4, method="greedy")


def test_no_extrapolation_warning_around_the_full_set_with_dense_sampling():
    S, y, _ = make_task_interactions(n_subsets=100, p=0.5, random_state=0)
    model = KernelSurrogate(device="cpu").fit(S, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExtrapolationWarning)
        model.attribution()
        model.interactions()
        model.select()
    with pytest.raises(ValueError, match="n_features|features"):
        model.distance_to_training(np.ones((1, 5)))
