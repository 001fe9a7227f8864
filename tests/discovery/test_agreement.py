"""Tests of AgreementScorer and the vmapped ensembles it trains."""

import io
import pickle
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from joblib import parallel_backend
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from sktaskmet import AgreementScorer
from sktaskmet._backend import seeded
from sktaskmet._nn import make_mlp
from sktaskmet.datasets import make_random_labelings
from sktaskmet.discovery._agreement import _agreement_numpy
from sktaskmet.discovery._ensemble import (
    MLPEnsemble,
    batch_schedule,
    pairwise_agreement,
    train_ensemble,
)
from sktaskmet.exceptions import NonFiniteWarning

FAST = dict(hidden_layer_sizes=(16,), max_epochs=3, batch_size=32, device="cpu")


def blobs(n=120, d=5, seed=0, dtype=np.float64):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, d).astype(dtype)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    return X, y


# --------------------------------------------------------------------------- agreement maths


@settings(max_examples=50)
@given(
    st.integers(1, 3),
    st.integers(2, 4),
    st.integers(1, 30),
    st.integers(2, 4),
    st.integers(0, 2**31 - 1),
)
def test_agreement_in_unit_interval_symmetric_and_one_for_identical(
    n_tasks, n_models, n, n_classes, seed
):
    rng = np.random.RandomState(seed)
    predictions = rng.randint(0, n_classes, size=(n_tasks, n_models, n))
    scores = _agreement_numpy(predictions)
    assert scores.shape == (n_tasks,)
    assert np.all((scores >= 0) & (scores <= 1))
    # Symmetric in the models: any reordering of the networks gives the same score.
    permuted = predictions[:, rng.permutation(n_models)]
    np.testing.assert_allclose(_agreement_numpy(permuted), scores)
    # Identical networks agree everywhere.
    identical = np.repeat(predictions[:, :1], n_models, axis=1)
    np.testing.assert_array_equal(_agreement_numpy(identical), np.ones(n_tasks))
    # The torch version used on device tensors computes the same quantity.
    np.testing.assert_allclose(pairwise_agreement(torch.as_tensor(predictions)).numpy(), scores)


def test_agreement_of_two_models_is_fraction_of_equal_predictions():
    predictions = np.array([[[0, 1, 1, 0], [0, 1, 0, 1]]])
    np.testing.assert_allclose(_agreement_numpy(predictions), [0.5])


# --------------------------------------------------------------------------- ensemble numerics


@pytest.mark.parametrize("data_mode", ["same", "independent", "disjoint"])
def test_ensemble_member_equals_network_trained_alone(data_mode):
    torch.manual_seed(0)
    X = torch.randn(90, 4, dtype=torch.float64)
    targets = torch.randint(0, 2, (90, 3))
    n_models, n_tasks = 2, 3
    seeds = [11, 12] * n_tasks
    ensemble = MLPEnsemble(4, (8, 8), 2, seeds, dtype=torch.float64)
    schedule = batch_schedule(
        90, n_models, 6, 20, data_mode, torch.Generator().manual_seed(3), torch.device("cpu")
    )
    epochs = []

    def recorded():
        epochs.append(schedule())
        return epochs[-1]

    task_of_member = torch.arange(6) // n_models
    train_ensemble(ensemble, X, targets, task_of_member, recorded, 4, 1e-2)

    member = 3  # model 1 of labeling 1
    with seeded(seeds[member]):
        alone = make_mlp(4, (8, 8), 2).double()
    optimizer = torch.optim.Adam(alone.parameters(), lr=1e-2)
    for epoch in epochs:
        for batch in epoch:
            rows = batch[member]
            loss = torch.nn.functional.cross_entropy(alone(X[rows]), targets[rows, 1])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    expected = alone.state_dict()
    got = ensemble.member(member).state_dict()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-10, atol=1e-12)


def test_batch_schedules_follow_the_data_mode():
    device = torch.device("cpu")
    n, n_models, n_members = 41, 2, 4

    def epoch_orders(mode):
        schedule = batch_schedule(
            n, n_models, n_members, 10, mode, torch.Generator().manual_seed(0), device
        )
        return [torch.cat(schedule(), dim=1) for _ in range(2)]

    same = epoch_orders("same")
    for order in same:
        assert all(torch.equal(order[0], order[m]) for m in range(n_members))
        assert sorted(order[0].tolist()) == list(range(n))
    assert not torch.equal(same[0][0], same[1][0])  # reshuffled every epoch

    independent = epoch_orders("independent")[0]
    assert not torch.equal(independent[0], independent[1])
    assert torch.equal(independent[0], independent[2])  # model 0 of both labelings
    assert all(sorted(row.tolist()) == list(range(n)) for row in independent)

    first, second = epoch_orders("disjoint")
    part0, part1 = set(first[0].tolist()), set(first[1].tolist())
    assert not part0 & part1 and len(part0) == len(part1) == n // n_models
    assert set(second[0].tolist()) == part0  # the parts are fixed, the order is not
    schedule = batch_schedule(
        n, n_models, n_members, 10, "disjoint", torch.Generator().manual_seed(0), device
    )
    assert all(batch.shape[1] <= 10 // n_models for batch in schedule())


def test_identical_networks_agree_everywhere():
    X, y = blobs()
    # LogisticRegression with lbfgs ignores its seed: every clone is the same model.
    scorer = AgreementScorer(estimator=LogisticRegression(), random_state=0).fit(X, y)
    np.testing.assert_array_equal(scorer.agreement_scores_, [1.0])
    # Networks built from the same seed and fed the same batches are identical too.
    ensemble = MLPEnsemble(5, (8,), 2, [4, 4], dtype=torch.float64)
    X_t = torch.as_tensor(X)
    schedule = batch_schedule(120, 1, 2, 32, "same", torch.Generator().manual_seed(0), "cpu")
    targets = torch.as_tensor(y)[:, None]
    train_ensemble(ensemble, X_t, targets, torch.zeros(2, dtype=torch.int64), schedule, 3, 1e-2)
    predictions = ensemble.predict(X_t)
    assert pairwise_agreement(predictions[None]).item() == 1.0


# --------------------------------------------------------------------------- estimator behaviour


def test_fit_attributes_shapes_and_ranges():
    X, y = blobs()
    labelings = np.column_stack([y, np.random.RandomState(1).randint(0, 2, len(y))])
    scorer = AgreementScorer(n_models=3, test_size=0.25, random_state=0, **FAST)
    scorer.fit(X, labelings)
    assert scorer.n_tasks_ == 2
    assert scorer.agreement_scores_.shape == (2,)
    assert scorer.train_accuracies_.shape == scorer.test_accuracies_.shape == (2, 3)
    assert scorer.agreement_score_ == pytest.approx(scorer.agreement_scores_.mean())
    assert scorer.test_indices_.size == 30 and scorer.train_indices_.size == 90
    assert not set(scorer.test_indices_) & set(scorer.train_indices_)
    assert scorer.n_iter_ == len(scorer.loss_curve_) == 3
    assert scorer.ensemble_state_["0.weight"].shape == (6, 16, 5)
    # The agreement on the held-out rows, recomputed through the public scoring method.
    np.testing.assert_allclose(scorer.agreement(X[scorer.test_indices_]), scorer.agreement_scores_)
    members = scorer.predict_members(X)
    assert members.shape == (2, 3, len(X))
    assert scorer.score(X) == pytest.approx(_agreement_numpy(members).mean())


def test_learnable_labeling_scores_above_random_labeling():
    rng = np.random.RandomState(0)
    X = rng.randn(400, 10)
    learnable = (X[:, 0] > 0).astype(int)
    random = rng.randint(0, 2, 400)
    scorer = AgreementScorer(
        hidden_layer_sizes=(64,), max_epochs=40, batch_size=50, device="cpu", random_state=0
    ).fit(X, np.column_stack([learnable, random]))
    human_as, random_as = scorer.agreement_scores_
    assert human_as > 0.9
    assert random_as < human_as - 0.1
    assert scorer.test_accuracies_[0].min() > 0.85


def test_data_modes_on_random_labels():
    # Disjoint halves share no training label: a random labeling scores about chance. The
    # same minibatches make the networks memorise the same labels: they agree more.
    X = np.random.RandomState(0).randn(400, 10)
    random = make_random_labelings(400, 8, random_state=0)
    params = dict(hidden_layer_sizes=(64,), max_epochs=40, batch_size=50, device="cpu")
    same = AgreementScorer(data_mode="same", random_state=0, **params).fit(X, random)
    disjoint = AgreementScorer(data_mode="disjoint", random_state=0, **params).fit(X, random)
    # 8 labelings x 100 held-out points: the mean of chance agreement is within +-0.1.
    assert abs(disjoint.agreement_score_ - 0.5) < 0.1
    assert same.agreement_score_ > disjoint.agreement_score_ + 0.2


def test_labelings_are_scored_independently_of_each_other():
    X, y = blobs()
    other = np.random.RandomState(2).randint(0, 2, len(y))
    together = AgreementScorer(random_state=0, **FAST).fit(X, np.column_stack([y, other]))
    alone = [AgreementScorer(random_state=0, **FAST).fit(X, lab) for lab in (y, other)]
    np.testing.assert_allclose(together.agreement_scores_, [a.agreement_scores_[0] for a in alone])
    for name, value in alone[1].ensemble_state_.items():
        np.testing.assert_allclose(together.ensemble_state_[name][2:], value, rtol=1e-9)


def test_determinism_and_seed_dependence():
    X, y = blobs()
    a = AgreementScorer(random_state=3, **FAST).fit(X, y)
    b = AgreementScorer(random_state=3, **FAST).fit(X, y)
    c = AgreementScorer(random_state=4, **FAST).fit(X, y)
    for name in a.ensemble_state_:
        np.testing.assert_array_equal(a.ensemble_state_[name], b.ensemble_state_[name])
    assert not np.array_equal(a.ensemble_state_["0.weight"], c.ensemble_state_["0.weight"])
    np.testing.assert_array_equal(a.test_indices_, b.test_indices_)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_follows_the_data(dtype):
    X, y = blobs(dtype=dtype)
    scorer = AgreementScorer(random_state=0, **FAST).fit(X, y)
    assert all(v.dtype == dtype for v in scorer.ensemble_state_.values())


def test_string_and_multiclass_labelings():
    X, y = blobs(n=150)
    three = np.digitize(X[:, 0], [-0.5, 0.5])  # 3 classes
    names = np.where(y == 1, "yes", "no")
    scorer = AgreementScorer(random_state=0, **FAST).fit(X, np.column_stack([names, three]))
    predictions = scorer.predict_members(X)
    assert set(np.unique(predictions[0])) <= {"yes", "no"}
    assert set(np.unique(predictions[1]).astype(int)) <= {0, 1, 2}
    # A binary labeling in a 3-output ensemble never predicts the missing third class.
    binary_only = AgreementScorer(random_state=0, **FAST).fit(X, np.column_stack([y, three]))
    assert set(np.unique(binary_only.predict_members(X)[0])) <= {0, 1}


def test_pickle_and_device_change_after_fit(tmp_path):
    X, y = blobs()
    scorer = AgreementScorer(random_state=0, **FAST).fit(X, y)
    restored = pickle.loads(pickle.dumps(scorer))
    assert restored.score(X) == scorer.score(X)
    restored.set_params(device="auto")
    assert restored.score(X) == scorer.score(X)


@pytest.mark.cuda
def test_cuda_fit_scores_on_cpu_after_pickling():
    X, y = blobs(dtype=np.float32)
    scorer = AgreementScorer(random_state=0, **{**FAST, "device": "cuda"}).fit(X, y)
    assert all(isinstance(v, np.ndarray) for v in scorer.ensemble_state_.values())
    restored = pickle.loads(pickle.dumps(scorer)).set_params(device="cpu")
    assert restored.score(X) == pytest.approx(scorer.score(X), abs=0.02)


def test_pipeline_and_grid_search():
    X, y = blobs(n=160)
    pipe = make_pipeline(StandardScaler(), AgreementScorer(random_state=0, **FAST))
    # The pipeline scores the scaled data with the fitted scorer.
    scaled = StandardScaler().fit_transform(X)
    alone = AgreementScorer(random_state=0, **FAST).fit(scaled, y)
    assert pipe.fit(X, y).score(X) == pytest.approx(alone.score(scaled))
    grid = GridSearchCV(
        AgreementScorer(random_state=0, **FAST), {"hidden_layer_sizes": [(4,), (16,)]}, cv=2
    ).fit(X, y)
    assert grid.best_params_["hidden_layer_sizes"] in [(4,), (16,)]
    # The refitted best scorer is the one a direct fit with those parameters gives.
    direct = AgreementScorer(random_state=0, **{**FAST, **grid.best_params_}).fit(X, y)
    assert grid.best_estimator_.score(X) == pytest.approx(direct.score(X))


def test_verbose_reports_epochs():
    X, y = blobs()
    out = io.StringIO()
    with redirect_stdout(out):
        AgreementScorer(random_state=0, verbose=1, **FAST).fit(X, y)
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"[AgreementScorer] iteration {epoch}" for epoch in (1, 2, 3)
    ]
    assert all("train loss" in line for line in lines)


def test_verbose_reports_progress_over_chunks_of_labelings():
    X, _ = blobs(n=160)
    labelings = make_random_labelings(len(X), 6, random_state=0)
    out = io.StringIO()
    # Threads: three chunks of two labelings, without starting processes.
    with redirect_stdout(out), parallel_backend("threading"):
        AgreementScorer(random_state=0, verbose=1, n_jobs=3, **FAST).fit(X, labelings)
    progress = [line for line in out.getvalue().splitlines() if "labelings trained" in line]
    assert [line.split(" (")[0] for line in progress] == [
        f"[AgreementScorer] {done}/6 labelings trained" for done in (2, 4, 6)
    ]
    # Each chunk's epochs are named by its labelings.
    assert "[AgreementScorer, labelings 2-3] iteration 3" in out.getvalue()


def test_non_finite_loss_restores_and_warns():
    X, y = blobs()
    X[0, 0] = 1e30  # overflows the logits of float32 networks after a few huge steps
    with pytest.warns(NonFiniteWarning, match="AgreementScorer: the step at iteration"):
        scorer = AgreementScorer(
            random_state=0, learning_rate=1e30, **{**FAST, "max_epochs": 5}
        ).fit(X.astype(np.float32), y)
    assert all(np.isfinite(v).all() for v in scorer.ensemble_state_.values())
    assert scorer.n_iter_ < 5


# --------------------------------------------------------------------------- bad input


def test_single_class_labeling_is_rejected():
    X, y = blobs()
    labelings = np.column_stack([y, np.ones_like(y)])
    with pytest.raises(ValueError, match="Labeling 1 .* single class"):
        AgreementScorer(**FAST).fit(X, labelings)


def test_wrong_length_nan_and_continuous_targets_are_rejected():
    X, y = blobs()
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        AgreementScorer(**FAST).fit(X, y[:-1])
    X_nan = X.copy()
    X_nan[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        AgreementScorer(**FAST).fit(X_nan, y)
    with pytest.raises(ValueError, match="class labels"):
        AgreementScorer(**FAST).fit(X, X[:, 0])


def test_test_size_leaving_no_held_out_or_training_point():
    X, y = blobs(n=20)
    with pytest.raises(ValueError, match="leaves no held-out point"):
        AgreementScorer(test_size=0.01, **FAST).fit(X, y)
    with pytest.raises(ValueError, match="training point"):
        AgreementScorer(test_size=19, **FAST).fit(X, y)


def test_bad_parameters():
    X, y = blobs()
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        AgreementScorer(hidden_layer_sizes=(8, 0), device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="n_models"):
        AgreementScorer(n_models=1, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="data_mode"):
        AgreementScorer(data_mode="halves", device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="random_state parameter"):
        AgreementScorer(estimator=_NoSeedClassifier()).fit(X, y)


class _NoSeedClassifier(LogisticRegression):
    def get_params(self, deep=True):
        params = super().get_params(deep)
        params.pop("random_state")
        return params


# --------------------------------------------------------------------------- estimator path


def test_estimator_path_sequential_and_disjoint():
    X, y = blobs(n=200)
    tree = DecisionTreeClassifier(max_features=1, max_depth=3)
    scorer = AgreementScorer(estimator=tree, n_models=3, random_state=0).fit(X, y)
    assert len(scorer.estimators_) == 1 and len(scorer.estimators_[0]) == 3
    seeds = {est.random_state for est in scorer.estimators_[0]}
    assert len(seeds) == 3
    assert scorer.ensemble_state_ is None
    shuffled = np.random.RandomState(0).permutation(y)
    random_labels = AgreementScorer(estimator=tree, n_models=3, random_state=0).fit(X, shuffled)
    assert scorer.agreement_score_ > random_labels.agreement_score_ + 0.1
    assert scorer.score(X) == pytest.approx(_agreement_numpy(scorer.predict_members(X)).mean())
    disjoint = AgreementScorer(estimator=tree, data_mode="disjoint", random_state=0).fit(X, y)
    n_train = disjoint.train_indices_.size
    assert all(est.tree_.n_node_samples[0] == n_train // 2 for est in disjoint.estimators_[0])


def test_estimator_path_through_dask_distributed():
    distributed = pytest.importorskip("distributed")
    from joblib import parallel_config

    X, y = blobs(n=150)
    labelings = np.column_stack([y, 1 - y, np.random.RandomState(0).randint(0, 2, 150)])
    tree = DecisionTreeClassifier(max_features=1, max_depth=4)
    expected = AgreementScorer(estimator=tree, random_state=0).fit(X, labelings)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        with parallel_config(backend="dask"):
            got = AgreementScorer(estimator=tree, n_jobs=-1, random_state=0).fit(X, labelings)
    np.testing.assert_array_equal(got.agreement_scores_, expected.agreement_scores_)
    np.testing.assert_array_equal(got.test_accuracies_, expected.test_accuracies_)
