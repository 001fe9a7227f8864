"""Tests of KernelSurrogate and LinearSurrogate: numerics, attribution, CV, selection, errors."""

import itertools
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import Lasso, Ridge
from sklearn.model_selection import GridSearchCV, KFold, ShuffleSplit
from sklearn.pipeline import make_pipeline

from sktaskmet import KernelSurrogate, LinearSurrogate
from sktaskmet.datasets import make_task_interactions
from sktaskmet.surrogate import sample_subsets


@pytest.fixture(scope="module")
def data():
    S, y, F = make_task_interactions(n_tasks=10, n_subsets=120, random_state=0)
    return S, y, F


def _weights_base(n, seed=0):
    return np.random.RandomState(seed).uniform(0.2, 0.9, size=n)


# --------------------------------------------------------------------- solver equivalences
@pytest.mark.parametrize("kernel", ["rbf", "poly", "linear"])
def test_matches_sklearn_kernel_ridge_without_intercept(data, kernel):
    S, y, _ = data
    kw = {"alpha": 0.05, "gamma": 0.2, "degree": 2, "coef0": 0.5}
    ours = KernelSurrogate(kernel, fit_intercept=False, device="cpu", **kw).fit(S, y)
    ref = KernelRidge(kernel=kernel, **kw).fit(S, y)
    S_test = sample_subsets(10, 50, p=0.3, random_state=1)
    np.testing.assert_allclose(ours.predict(S_test), ref.predict(S_test), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.dual_coef_, ref.dual_coef_, rtol=1e-6, atol=1e-8)
    assert ours.intercept_ == 0.0


def test_intercept_solves_the_bordered_system(data):
    """g(s) = k(s)^T a + b minimises ||y - K a - b 1||^2 + alpha a^T K a: (K + alpha I) a +
    b 1 = y and 1^T a = 0."""
    S, y, _ = data
    alpha, gamma = 0.1, 0.15
    model = KernelSurrogate(alpha=alpha, gamma=gamma, device="cpu").fit(S, y)
    K = np.exp(-gamma * ((S[:, None] - S[None]) ** 2).sum(-1))
    m = len(S)
    system = np.block(
        [[K + alpha * np.eye(m), np.ones((m, 1))], [np.ones((1, m)), np.zeros((1, 1))]]
    )
    solution = np.linalg.solve(system, np.append(y, 0.0))
    np.testing.assert_allclose(model.dual_coef_, solution[:m], atol=1e-8)
    np.testing.assert_allclose(model.intercept_, solution[m], atol=1e-8)
    S_test = sample_subsets(10, 30, random_state=2)
    K_test = np.exp(-gamma * ((S_test[:, None] - S[None]) ** 2).sum(-1))
    np.testing.assert_allclose(
        model.predict(S_test), K_test @ solution[:m] + solution[m], atol=1e-6
    )


def test_linear_kernel_with_intercept_is_ridge(data):
    S, y, _ = data
    ref = Ridge(alpha=0.3).fit(S, y)
    kernel = KernelSurrogate("linear", alpha=0.3, device="cpu").fit(S, y)
    linear = LinearSurrogate(alpha=0.3, device="cpu").fit(S, y)
    S_test = sample_subsets(10, 40, random_state=3)
    np.testing.assert_allclose(kernel.predict(S_test), ref.predict(S_test), atol=1e-6)
    np.testing.assert_allclose(linear.predict(S_test), ref.predict(S_test), atol=1e-8)
    np.testing.assert_allclose(linear.coef_, ref.coef_, atol=1e-10)
    np.testing.assert_allclose(linear.intercept_, ref.intercept_, atol=1e-10)
    np.testing.assert_allclose(kernel.attribution(method="gradient"), ref.coef_, atol=1e-8)


def test_lasso_penalty_is_sklearn_lasso(data):
    S, y, _ = data
    ours = LinearSurrogate("l1", alpha=0.05, device="cpu").fit(S, y)
    ref = Lasso(alpha=0.05, max_iter=10000, tol=1e-6).fit(S, y)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-10)
    assert ours.n_iter_ == ref.n_iter_
    cv = LinearSurrogate("l1", cv=3, alphas=[1e-3, 1e-2, 1e-1], device="cpu").fit(S, y)
    assert cv.alpha_ in (1e-3, 1e-2, 1e-1)


def _module_level_laplacian(A, B):
    return np.exp(-0.3 * np.abs(A[:, None] - B[None]).sum(-1))


def test_callable_kernel_pickles_when_defined_at_module_level(data):
    S, y, _ = data
    model = KernelSurrogate(_module_level_laplacian, device="cpu").fit(S, y)
    loaded = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(loaded.predict(S[:10]), model.predict(S[:10]))


def test_callable_kernel_equals_builtin(data):
    S, y, _ = data

    def hamming_heat(A, B):
        return np.exp(-0.2 * np.abs(A[:, None] - B[None]).sum(-1))

    # On 0/1 indicators ||s - s'||^2 is the Hamming distance, so both kernels coincide.
    builtin = KernelSurrogate(gamma=0.2, device="cpu").fit(S, y)
    custom = KernelSurrogate(hamming_heat, device="cpu").fit(S, y)
    np.testing.assert_allclose(custom.predict(S[:20]), builtin.predict(S[:20]), atol=1e-8)
    np.testing.assert_allclose(custom.attribution(), builtin.attribution(), atol=1e-8)
    with pytest.raises(ValueError, match="needs a built-in kernel"):
        custom.attribution(method="gradient")


# --------------------------------------------------------------------- attribution
MODELS = [
    KernelSurrogate(alpha=0.05, device="cpu"),
    KernelSurrogate("poly", degree=3, device="cpu"),
    KernelSurrogate("linear", device="cpu"),
    LinearSurrogate(alpha=0.5, device="cpu"),
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: repr(m))
@pytest.mark.parametrize("base_kind", ["full", "weights"])
def test_attribution_and_interactions_equal_differences_of_predict(data, model, base_kind):
    S, y, _ = data
    model = model.fit(S, y)
    n = S.shape[1]
    base = np.ones(n) if base_kind == "full" else _weights_base(n)

    def without(*tasks):
        s = base.copy()
        s[list(tasks)] = 0.0
        return model.predict(s[None])[0]

    g = model.predict(base[None])[0]
    expected_loo = np.array([g - without(k) for k in range(n)])
    np.testing.assert_allclose(model.attribution(base), expected_loo, atol=1e-10)
    if base_kind == "full":
        np.testing.assert_allclose(model.attribution(), expected_loo, atol=1e-10)
    expected = np.zeros((n, n))
    for i, j in itertools.combinations(range(n), 2):
        expected[i, j] = expected[j, i] = g - without(i) - without(j) + without(i, j)
    np.testing.assert_allclose(model.interactions(base), expected, atol=1e-10)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: repr(m))
def test_gradient_attribution_matches_finite_differences(data, model):
    S, y, _ = data
    model = model.fit(S, y)
    base = _weights_base(S.shape[1], seed=1)
    step = 1e-6
    eye = np.eye(S.shape[1])
    numeric = (model.predict(base + step * eye) - model.predict(base - step * eye)) / (2 * step)
    np.testing.assert_allclose(model.attribution(base, method="gradient"), numeric, atol=1e-6)


def test_linear_surrogate_has_no_interactions(data):
    S, y, _ = data
    model = LinearSurrogate(device="cpu").fit(S, y)
    np.testing.assert_allclose(model.interactions(), 0.0, atol=1e-10)
    np.testing.assert_allclose(model.attribution(), model.coef_, atol=1e-10)


def test_additive_function_gives_agreeing_attributions():
    """On F(s) = a^T s + c both surrogates recover a.

    The linear surrogate is exact (tiny ridge bias). The RBF kernel is not additive, so
    its LOO differences carry an approximation error; with 300 noise-free subsets of 8 tasks
    we allow 0.5% of max |a_k| (measured: 0.08%). That is below half the smallest gap
    between two a_k here (1.3% of max |a_k|), so the two rankings of the tasks must agree.
    """
    rng = np.random.RandomState(0)
    a = rng.standard_normal(8)
    S = sample_subsets(8, 300, random_state=1)
    y = S @ a + 2.0
    linear = LinearSurrogate(alpha=1e-6, device="cpu").fit(S, y)
    kernel = KernelSurrogate(alpha=1e-4, device="cpu").fit(S, y)
    np.testing.assert_allclose(linear.attribution(), a, atol=1e-5)
    scale = np.abs(a).max()
    np.testing.assert_allclose(kernel.attribution(), linear.attribution(), atol=0.005 * scale)
    np.testing.assert_array_equal(
        np.argsort(kernel.attribution()), np.argsort(linear.attribution())
    )


@settings(max_examples=10, deadline=None)
@given(perm_seed=st.integers(0, 2**16), model_index=st.sampled_from([0, 1, 3]))
def test_permuting_tasks_permutes_attributions(perm_seed, model_index):
    S, y, _ = make_task_interactions(n_tasks=9, n_subsets=60, random_state=3)
    perm = np.random.RandomState(perm_seed).permutation(9)
    model = MODELS[model_index]
    ref = model.fit(S, y)
    ref_loo, ref_inter = ref.attribution(), ref.interactions()
    permuted = type(model)(**model.get_params()).fit(S[:, perm], y)
    np.testing.assert_allclose(permuted.attribution(), ref_loo[perm], atol=1e-8)
    np.testing.assert_allclose(
        permuted.attribution(method="gradient"), ref.attribution(method="gradient")[perm], atol=1e-8
    )
    np.testing.assert_allclose(permuted.interactions(), ref_inter[np.ix_(perm, perm)], atol=1e-8)


def test_kernel_surrogate_finds_the_planted_interactions():
    S, y, F = make_task_interactions(n_subsets=300, random_state=0)
    model = KernelSurrogate(cv=5, device="cpu").fit(S, y)
    inter = model.interactions()
    # Around the full set: synergy +3, antagonism -3, XOR -6 (3 XOR(1,1) - 3 XOR(1,0)
    # - 3 XOR(0,1) + 3 XOR(0,0)), and -2 for each pair of the triple.
    assert inter[0, 1] > 1.5 and inter[2, 3] < -1.5 and inter[4, 5] < -3.0
    assert np.corrcoef(model.attribution(), F.loo())[0, 1] > 0.95


# --------------------------------------------------------------------- cross-validation
def _brute_force_cv(S, y, make, alphas, gammas, splitter):
    mse = np.empty((len(gammas), len(alphas)))
    for g, gamma in enumerate(gammas):
        for a, alpha in enumerate(alphas):
            errors = []
            for train, test in splitter.split(S):
                model = make(alpha, gamma).fit(S[train], y[train])
                errors.append(np.mean((model.predict(S[test]) - y[test]) ** 2))
            mse[g, a] = np.mean(errors)
    return mse


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("cv", [4, "loo"])
def test_kernel_cv_equals_brute_force(fit_intercept, cv):
    S, y, _ = make_task_interactions(n_tasks=9, n_subsets=40, random_state=1)
    alphas, gammas = [1e-3, 1e-2, 0.1, 1.0], [0.05, 0.1, 0.3]
    model = KernelSurrogate(
        cv=cv, alphas=alphas, gammas=gammas, fit_intercept=fit_intercept, device="cpu"
    ).fit(S, y)
    splitter = KFold(len(S) if cv == "loo" else cv)
    expected = _brute_force_cv(
        S,
        y,
        lambda a, g: KernelSurrogate(alpha=a, gamma=g, fit_intercept=fit_intercept, device="cpu"),
        alphas,
        gammas,
        splitter,
    )
    np.testing.assert_allclose(model.cv_results_["mean_test_mse"], expected, rtol=1e-6)
    g_best, a_best = np.unravel_index(np.argmin(expected), expected.shape)
    assert (model.alpha_, model.gamma_) == (alphas[a_best], gammas[g_best])
    refit = KernelSurrogate(alpha=model.alpha_, gamma=model.gamma_, fit_intercept=fit_intercept)
    np.testing.assert_allclose(
        model.predict(S), refit.set_params(device="cpu").fit(S, y).predict(S)
    )


def test_kernel_cv_selects_what_gridsearchcv_selects():
    S, y, _ = make_task_interactions(n_tasks=9, n_subsets=60, random_state=2)
    alphas, gammas = [1e-3, 1e-2, 0.1, 1.0], [0.05, 0.1, 0.3]
    folds = KFold(5, shuffle=True, random_state=0)
    search = GridSearchCV(
        KernelRidge(kernel="rbf"),
        {"alpha": alphas, "gamma": gammas},
        cv=folds,
        scoring="neg_mean_squared_error",
    ).fit(S, y)
    ours = KernelSurrogate(
        cv=folds, alphas=alphas, gammas=gammas, fit_intercept=False, device="cpu"
    ).fit(S, y)
    assert {"alpha": ours.alpha_, "gamma": ours.gamma_} == search.best_params_
    np.testing.assert_allclose(
        -ours.cv_results_["mean_test_mse"].T.ravel(),
        search.cv_results_["mean_test_score"],
        rtol=1e-6,
    )


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_linear_cv_equals_brute_force(fit_intercept):
    S, y, _ = make_task_interactions(n_tasks=9, n_subsets=40, random_state=4)
    alphas = [1e-2, 0.1, 1.0, 10.0, 100.0]
    for cv in (3, "loo"):
        model = LinearSurrogate(cv=cv, alphas=alphas, fit_intercept=fit_intercept, device="cpu")
        model.fit(S, y)
        expected = _brute_force_cv(
            S,
            y,
            lambda a, g: LinearSurrogate(alpha=a, fit_intercept=fit_intercept, device="cpu"),
            alphas,
            [None],
            KFold(len(S) if cv == "loo" else cv),
        )[0]
        np.testing.assert_allclose(model.cv_results_["mean_test_mse"], expected, rtol=1e-6)
        assert model.alpha_ == alphas[int(np.argmin(expected))]


def test_cv_rejects_splitters_that_do_not_partition(data):
    S, y, _ = data
    with pytest.raises(ValueError, match="partition"):
        KernelSurrogate(cv=ShuffleSplit(3, random_state=0), device="cpu").fit(S, y)


# --------------------------------------------------------------------- selection
def test_exhaustive_select_is_the_best_subset(data):
    S, y, _ = data
    model = KernelSurrogate(device="cpu").fit(S, y)
    every = np.array(list(itertools.product([0.0, 1.0], repeat=S.shape[1])))
    values = model.predict(every)
    np.testing.assert_array_equal(model.select(), every[np.argmax(values)])
    loss_model = KernelSurrogate(greater_is_better=False, device="cpu").fit(S, y)
    np.testing.assert_array_equal(loss_model.select(), every[np.argmin(values)])
    of_size_3 = every[every.sum(1) == 3]
    best_3 = of_size_3[np.argmax(model.predict(of_size_3))]
    np.testing.assert_array_equal(model.select(k=3), best_3)
    np.testing.assert_array_equal(model.select(k=0), np.zeros(S.shape[1]))


def test_greedy_select_is_optimal_for_a_linear_surrogate(data):
    S, y, _ = data
    model = LinearSurrogate(device="cpu").fit(S, y)
    np.testing.assert_array_equal(model.select(method="greedy"), (model.coef_ > 0).astype(float))
    top = np.zeros(S.shape[1])
    top[np.argsort(model.coef_)[-4:]] = 1.0
    np.testing.assert_array_equal(model.select(k=4, method="greedy"), top)
    np.testing.assert_array_equal(model.select(k=4, method="exhaustive"), top)


def test_select_uses_greedy_beyond_the_exhaustive_limit():
    S = sample_subsets(40, 80, random_state=0)
    y = S @ np.linspace(-1, 1, 40)
    model = LinearSurrogate(alpha=1e-6, device="cpu").fit(S, y)
    np.testing.assert_array_equal(model.select(), (np.linspace(-1, 1, 40) > 0).astype(float))


# --------------------------------------------------------------------- shapes, dtypes, state
def test_multi_target_shapes(data):
    S, y, _ = data
    Y = np.column_stack([y, -2 * y])
    for model in (KernelSurrogate(device="cpu"), LinearSurrogate(device="cpu")):
        model.fit(S, Y)
        n = S.shape[1]
        assert model.predict(S[:5]).shape == (5, 2)
        assert model.attribution().shape == (n, 2)
        assert model.attribution(method="gradient").shape == (n, 2)
        assert model.interactions().shape == (n, n, 2)
        np.testing.assert_allclose(model.attribution()[:, 1], -2 * model.attribution()[:, 0])
        with pytest.raises(ValueError, match="give select an aggregate"):
            model.select()
    cv_model = KernelSurrogate(cv=3, device="cpu").fit(S, Y)
    assert cv_model.intercept_.shape == (2,)


@pytest.mark.parametrize("cls", [KernelSurrogate, LinearSurrogate])
def test_dtype_follows_the_data(data, cls):
    S, y, _ = data
    model = cls(device="cpu").fit(S.astype(np.float32), y.astype(np.float32))
    assert model.predict(S[:3].astype(np.float32)).dtype == np.float32
    assert model.attribution().dtype == np.float32
    ref = cls(device="cpu").fit(S, y)
    np.testing.assert_allclose(model.predict(S[:10]), ref.predict(S[:10]), atol=1e-3)


@pytest.mark.parametrize("cls", [KernelSurrogate, LinearSurrogate])
def test_pickle_determinism_and_device_change(data, cls):
    S, y, _ = data
    model = cls(cv=3, device="cpu").fit(S, y)
    again = cls(cv=3, device="cpu").fit(S, y)
    np.testing.assert_array_equal(model.predict(S), again.predict(S))
    loaded = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(loaded.predict(S), model.predict(S))
    moved = loaded.set_params(device=torch.device("cpu"))
    np.testing.assert_array_equal(moved.attribution(), model.attribution())


def test_pipeline_and_gridsearch(data):
    S, y, _ = data
    pipe = make_pipeline(KernelSurrogate(device="cpu")).fit(S, y)
    assert pipe.score(S, y) > 0.9
    search = GridSearchCV(
        KernelSurrogate(device="cpu"), {"alpha": [0.01, 1.0], "kernel": ["rbf", "linear"]}, cv=3
    ).fit(S, y)
    assert search.best_estimator_.attribution().shape == (S.shape[1],)


@pytest.mark.cuda
@pytest.mark.parametrize("cls", [KernelSurrogate, LinearSurrogate])
def test_cuda_matches_cpu(data, cls):
    S, y, _ = data
    gpu = cls(cv=3, device="cuda").fit(S, y)
    cpu = cls(cv=3, device="cpu").fit(S, y)
    np.testing.assert_allclose(gpu.predict(S), cpu.predict(S), atol=1e-8)
    np.testing.assert_allclose(gpu.interactions(), cpu.interactions(), atol=1e-8)
    loaded = pickle.loads(pickle.dumps(gpu)).set_params(device="cpu")
    np.testing.assert_allclose(loaded.predict(S), cpu.predict(S), atol=1e-8)


# --------------------------------------------------------------------- bad input
@pytest.mark.parametrize("cls", [KernelSurrogate, LinearSurrogate])
def test_bad_input_gets_clear_errors(data, cls):
    S, y, _ = data
    model = cls(device="cpu")
    with pytest.raises(ValueError, match=r"S must hold task indicators .* in \[0, 1\]"):
        model.fit(S * 2.0, y)
    with pytest.raises(ValueError, match="minimum of 2 is required"):
        model.fit(S[:1], y[:1])
    y_nan = y.copy()
    y_nan[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(S, y_nan)
    model.fit(S, y)
    with pytest.raises(ValueError, match="features"):
        model.predict(S[:, :-1])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        model.predict(S - 0.5)
    with pytest.raises(ValueError, match="base must be a 1-D array of length"):
        model.attribution(np.ones(3))
    with pytest.raises(ValueError, match=r"base must hold .* in \[0, 1\]"):
        model.interactions(np.full(S.shape[1], 2.0))
    with pytest.raises(ValueError, match="'method' parameter"):
        model.attribution(method="shapley")
    with pytest.raises(ValueError, match="exceeds the number of tasks"):
        model.select(k=S.shape[1] + 1)


def test_bad_parameters_get_clear_errors(data):
    S, y, _ = data
    with pytest.raises(ValueError, match="'kernel' parameter"):
        KernelSurrogate("sigmoid").fit(S, y)
    with pytest.raises(ValueError, match="'alpha' parameter"):
        KernelSurrogate(alpha=0.0).fit(S, y)
    with pytest.raises(ValueError, match="alphas must be a non-empty sequence of positive"):
        KernelSurrogate(cv=3, alphas=[0.1, -1.0], device="cpu").fit(S, y)
    with pytest.raises(ValueError, match="cv='loo' is available for penalty='l2' only"):
        LinearSurrogate("l1", cv="loo", device="cpu").fit(S, y)
    with pytest.raises(ValueError, match="kernel callable returned shape"):
        KernelSurrogate(lambda A, B: np.ones(3), device="cpu").fit(S, y)


def test_fit_changes_no_parameter_and_adds_only_fitted_attributes(data):
    S, y, _ = data
    for model in (KernelSurrogate(cv=3, device="cpu"), LinearSurrogate("l1", device="cpu")):
        params = pickle.dumps(model.get_params())
        before = set(vars(model))
        model.fit(S, y)
        assert pickle.dumps(model.get_params()) == params
        added = set(vars(model)) - before
        assert all(name.endswith("_") or name.startswith("_") for name in added), added
