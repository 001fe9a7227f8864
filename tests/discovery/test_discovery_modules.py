"""Any torch architecture in the agreement score: CNNs, batch norm, dropout, chunks, workers."""

import numpy as np
import pytest
import torch
from joblib import parallel_backend
from sklearn.datasets import load_digits
from torch import nn

from sktaskmet import AgreementScorer, TaskDiscovery, random_network_tasks
from sktaskmet._backend import seeded
from sktaskmet.datasets import load_digits_images, to_image_arrays
from sktaskmet.discovery._ensemble import ModuleEnsemble, batch_schedule, train_ensemble
from sktaskmet.discovery._memory import member_bytes, plan_chunks
from sktaskmet.discovery._networks import SmallCNN, SmallResNet, module_builder, reinitialise

CPU = torch.device("cpu")


def digit_images(n=150, dtype=np.float32):
    digits = load_digits()
    X = (digits.images[:n, None] / 16).astype(dtype)
    return X, digits.target[:n]


def tiny_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(48, 2)
    )


def batchnorm_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(192, 2),
    )


def dropout_mlp():
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2)
    )


def train_recorded(build, seeds, X, targets, n_models=2, epochs=3, lr=1e-2):
    """Train an ensemble on recorded batches; return it and the batches of every epoch."""
    n_members = len(seeds)
    ensemble = ModuleEnsemble(build, seeds, dtype=X.dtype, sample_ndim=X.dim() - 1)
    schedule = batch_schedule(
        len(X), n_models, n_members, 16, "independent", torch.Generator().manual_seed(3), CPU
    )
    recorded = []

    def next_epoch():
        recorded.append(schedule())
        return recorded[-1]

    task_of_member = torch.arange(n_members) // n_models
    train_ensemble(ensemble, X, targets, task_of_member, next_epoch, epochs, lr)
    return ensemble, recorded


def train_alone(build, seed, X, labels, batches_of_epochs, member, lr=1e-2):
    with seeded(seed):
        alone = build().to(X.dtype)
    optimizer = torch.optim.Adam(alone.parameters(), lr=lr)
    for epoch in batches_of_epochs:
        for batch in epoch:
            rows = batch[member]
            loss = nn.functional.cross_entropy(alone(X[rows]), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return alone


def assert_same_state(got, expected):
    # float64 tolerance: batched and single-network kernels reduce in different orders (batch
    # norm's statistics most), and Adam's normalised steps carry those 1e-16 differences.
    for name, value in expected.state_dict().items():
        torch.testing.assert_close(got.state_dict()[name], value, rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------- members equal networks alone


@pytest.mark.parametrize("build", [module_builder("cnn", (1, 8, 8), 2), batchnorm_cnn])
def test_cnn_member_equals_the_cnn_trained_alone(build):
    X = torch.as_tensor(digit_images(64, np.float64)[0])
    targets = torch.randint(0, 2, (64, 2), generator=torch.Generator().manual_seed(0))
    seeds = [5, 6, 5, 6]
    ensemble, batches = train_recorded(build, seeds, X, targets)
    member = 3  # model 1 of labeling 1
    alone = train_alone(build, seeds[member], X, targets[:, 1], batches, member)
    # Parameters and, for batch norm, the running statistics of this member only.
    assert_same_state(ensemble.member(member), alone)
    # Evaluation mode (running statistics) predicts as the network alone does.
    expected = alone.eval()(X).argmax(-1)
    torch.testing.assert_close(ensemble.predict(X)[member], expected)


def test_batchnorm_statistics_are_kept_per_member():
    X = torch.as_tensor(digit_images(64, np.float64)[0])
    targets = torch.randint(0, 2, (64, 2), generator=torch.Generator().manual_seed(1))
    ensemble, _ = train_recorded(batchnorm_cnn, [1, 2, 1, 2], X, targets)
    running_mean = ensemble.buffers["1.running_mean"]
    assert running_mean.shape == (4, 3)
    assert not torch.allclose(running_mean[0], running_mean[1])
    assert ensemble.buffers["1.num_batches_tracked"].tolist() == [12] * 4


def test_dropout_draws_independently_per_member_and_is_reproducible():
    X = torch.as_tensor(digit_images(64)[0])
    targets = torch.zeros((64, 1), dtype=torch.int64)
    targets[::2] = 1
    # Two members with the same initial weights and the same batches: only dropout differs.
    ensemble = ModuleEnsemble(dropout_mlp, [7, 7], sample_ndim=3)
    with seeded(0):
        logits = ensemble(X[:8], training=True)
    assert not torch.allclose(logits[0], logits[1])
    with seeded(0):
        again = ensemble(X[:8], training=True)
    torch.testing.assert_close(logits, again)
    # Evaluation mode switches dropout off: identical members predict identically.
    evaluated = ensemble(X[:8], training=False)
    torch.testing.assert_close(evaluated[0], evaluated[1])

    Xi, y = digit_images(120)
    scorer = AgreementScorer(
        module=dropout_mlp, max_epochs=2, batch_size=32, device="cpu", random_state=0
    )
    first = scorer.fit(Xi, y % 2).ensemble_state_
    second = AgreementScorer(**scorer.get_params()).fit(Xi, y % 2).ensemble_state_
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


# ---------------------------------------------------------------------------- module choices


@pytest.mark.parametrize("module", ["mlp", "cnn", "resnet"])
def test_agreement_scorer_takes_images_and_builtin_modules(module):
    X, y = digit_images(80)
    if module == "resnet":  # the ResNet is built for 32x32 inputs; any size works
        X = np.repeat(np.repeat(X, 2, axis=2), 2, axis=3)
    scorer = AgreementScorer(
        module=module, max_epochs=1, batch_size=32, device="cpu", random_state=0
    ).fit(X, np.column_stack([y % 2, y % 3]))
    assert scorer.input_shape_ == X.shape[1:]
    assert scorer.agreement_scores_.shape == (2,)
    members = scorer.predict_members(X[:5])
    assert members.shape == (2, 2, 5)
    assert set(np.unique(members[1])) <= {0, 1, 2}
    with pytest.raises(ValueError, match="samples of shape"):
        scorer.predict_members(X[:5, :, :4])


def test_builtin_image_modules_refuse_feature_vectors():
    X, y = load_digits(return_X_y=True)
    with pytest.raises(ValueError, match="module='cnn' needs images"):
        AgreementScorer(module="cnn", max_epochs=1, device="cpu").fit(X[:60], y[:60] % 2)


def test_builtin_networks_output_the_requested_logits():
    assert SmallCNN(3, 5, 32)(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    assert SmallCNN(1, 2, 8)(torch.zeros(2, 1, 8, 8)).shape == (2, 2)
    assert SmallResNet(3, 4)(torch.zeros(2, 3, 32, 32)).shape == (2, 4)


def test_module_instance_is_reinitialised_per_network():
    template = tiny_cnn()
    X, y = digit_images(80)
    scorer = AgreementScorer(
        module=template, max_epochs=1, batch_size=32, device="cpu", random_state=0
    ).fit(X, y % 2)
    weights = scorer.ensemble_state_["0.weight"]
    assert not np.allclose(weights[0], weights[1])
    # The user's module is left untouched.
    before = template[0].weight.detach().clone()
    reinitialise(template)
    torch.testing.assert_close(template[0].weight, before)


def test_layer_without_reset_parameters_is_refused_by_name():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return self.gain * x

    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 2), Scale())
    X, y = digit_images(40)
    with pytest.raises(ValueError, match="layer '2' \\(Scale\\)"):
        AgreementScorer(module=module, max_epochs=1, device="cpu").fit(X, y % 2)


def test_module_with_wrong_number_of_outputs_is_refused():
    X, y = digit_images(40)
    with pytest.raises(ValueError, match="to 2 outputs; the labelings need 3"):
        AgreementScorer(module=tiny_cnn, max_epochs=1, device="cpu").fit(X, y % 3)
    with pytest.raises(TypeError, match="must return a torch.nn.Module"):
        AgreementScorer(module=lambda: "net", max_epochs=1, device="cpu").fit(X, y % 2)


def test_mixed_precision_bf16_on_cpu_and_fp16_refused():
    X, y = digit_images(80)
    scorer = AgreementScorer(
        module="cnn", mixed_precision="bf16", max_epochs=1, batch_size=32, device="cpu"
    ).fit(X, y % 2)
    assert np.all(np.isfinite(scorer.loss_curve_))
    assert scorer.ensemble_state_["head.weight"].dtype == np.float32
    with pytest.raises(ValueError, match="mixed_precision='fp16' needs a CUDA device"):
        AgreementScorer(mixed_precision="fp16", max_epochs=1, device="cpu").fit(X, y % 2)


# ---------------------------------------------------------------------- chunks and workers


def test_plan_chunks_fits_memory_and_feeds_every_worker():
    assert plan_chunks(10, 2, 100, 10_000) == [range(0, 10)]
    chunks = plan_chunks(10, 2, 100, 450)  # two labelings (4 networks) fit
    assert [len(c) for c in chunks] == [2, 2, 2, 2, 2]
    assert [len(c) for c in plan_chunks(5, 2, 100, 10_000, n_workers=2)] == [3, 2]
    with pytest.raises(MemoryError, match="networks of one labeling need"):
        plan_chunks(10, 2, 100, 150)


def test_member_bytes_grows_with_batch_and_architecture():
    small = member_bytes(module_builder("cnn", (1, 8, 8), 2), (1, 8, 8), 16, torch.float32)
    big_batch = member_bytes(module_builder("cnn", (1, 8, 8), 2), (1, 8, 8), 64, torch.float32)
    resnet = member_bytes(module_builder("resnet", (3, 32, 32), 2), (3, 32, 32), 16, torch.float32)
    assert 0 < small < big_batch < resnet
    doubled = member_bytes(module_builder("cnn", (1, 8, 8), 2), (1, 8, 8), 16, torch.float64)
    assert doubled == 2 * small


def test_chunks_and_workers_give_the_scores_of_one_ensemble():
    # Threads here: the loky backend gives the same result (its builders are pickled by
    # cloudpickle) but starting processes that import torch costs tens of seconds.
    backend = "threading"
    X, y = digit_images(90)
    labelings = np.column_stack([y % 2, y % 3, (y > 4).astype(int)])
    params = dict(module="cnn", max_epochs=2, batch_size=32, device="cpu", random_state=0)
    one = AgreementScorer(**params).fit(X, labelings)
    per_member = member_bytes(module_builder("cnn", (1, 8, 8), 3), (1, 8, 8), 32, torch.float32)
    chunked = AgreementScorer(memory_limit=2 * per_member + 1, **params).fit(X, labelings)
    with parallel_backend(backend):
        parallel = AgreementScorer(n_jobs=2, **params).fit(X, labelings)
    for other in (chunked, parallel):
        np.testing.assert_array_equal(other.agreement_scores_, one.agreement_scores_)
        for name, value in one.ensemble_state_.items():
            np.testing.assert_allclose(other.ensemble_state_[name], value, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(other.predict_members(X), one.predict_members(X))
    with pytest.raises(MemoryError, match="memory_limit"):
        AgreementScorer(memory_limit=per_member, **params).fit(X, labelings)


# ------------------------------------------------------------------------- task discovery


def tiny_cnn_features():
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.AvgPool2d(4), nn.Flatten())


def tiny_cnn_learner():
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.AvgPool2d(4), nn.Flatten(), nn.Linear(8, 2)
    )


def test_unrolled_discovery_gradient_of_a_cnn_matches_finite_differences():
    from sktaskmet.discovery._meta import LearnerPair, TaskEncoder, meta_loss, orthonormal_heads

    dtype = torch.float64
    with seeded(0):
        encoder = TaskEncoder(8, (), 2, backbone=tiny_cnn_features()).to(dtype)
        learners = LearnerPair([tiny_cnn_learner().to(dtype) for _ in range(2)])
    heads = orthonormal_heads(2, 2, torch.Generator().manual_seed(0), dtype, "cpu")
    X = torch.as_tensor(digit_images(14, np.float64)[0])
    x_inner, x_heldout = X[:8], X[8:]

    def loss():
        return meta_loss(encoder, heads, learners, x_inner, x_heldout, 3, 0.5, 0.3)[0]

    params = list(encoder.parameters())
    analytic = torch.autograd.grad(loss(), params)
    # Directional derivatives along random directions (every parameter moves at once).
    generator = torch.Generator().manual_seed(2)
    eps = 1e-6
    for _ in range(3):
        directions = [torch.randn(p.shape, generator=generator, dtype=dtype) for p in params]
        with torch.no_grad():
            for p, d in zip(params, directions, strict=True):
                p += eps * d
            up = loss().item()
            for p, d in zip(params, directions, strict=True):
                p -= 2 * eps * d
            down = loss().item()
            for p, d in zip(params, directions, strict=True):
                p += eps * d
        numeric = (up - down) / (2 * eps)
        exact = sum(float((g * d).sum()) for g, d in zip(analytic, directions, strict=True))
        np.testing.assert_allclose(exact, numeric, rtol=1e-6, atol=1e-9)
    # The convolution weights are reached through the unrolled learners.
    assert float(analytic[0].abs().max()) > 1e-6


def test_task_discovery_on_images_with_cnn_encoder_and_learners():
    X, _ = digit_images(120)
    discovery = TaskDiscovery(
        n_tasks=2,
        encoder="cnn",
        learner=tiny_cnn_learner,
        inner_steps=2,
        max_iter=2,
        batch_size=32,
        agreement_scorer=AgreementScorer(max_epochs=1, batch_size=32, device="cpu"),
        device="cpu",
        random_state=0,
    ).fit(X)
    assert discovery.tasks_.shape == (120, 2)
    assert discovery.input_shape_ == (1, 8, 8)
    np.testing.assert_array_equal(discovery.transform(X), discovery.tasks_)
    assert discovery.n_iter_ == 2
    with pytest.raises(ValueError, match="samples of shape"):
        discovery.transform(X[:, :, :4])
    tasks = random_network_tasks(X, n_tasks=2, encoder="cnn", device="cpu", random_state=0)
    assert tasks.shape == (120, 2)


@pytest.mark.parametrize(
    "learner, match",
    [
        (batchnorm_cnn, "layer '1' \\(BatchNorm2d\\) tracks running statistics"),
        (dropout_mlp, "layer '3' \\(Dropout\\) is random"),
        (tiny_cnn, None),  # a 2-logit CNN is fine
    ],
)
def test_discovery_learners_refuse_running_statistics_and_dropout(learner, match):
    X, _ = digit_images(40)
    discovery = TaskDiscovery(
        n_tasks=2, learner=learner, max_iter=1, inner_steps=1, agreement_scorer="skip"
    )
    if match is None:
        discovery.set_params(device="cpu").fit(X)
    else:
        with pytest.raises(ValueError, match=match):
            discovery.set_params(device="cpu").fit(X)


def test_discovery_encoder_with_batchnorm_is_trained_and_frozen():
    def bn_backbone():
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(6))

    X, _ = digit_images(60)
    discovery = TaskDiscovery(
        n_tasks=2, encoder=bn_backbone, max_iter=2, inner_steps=1, agreement_scorer="skip"
    ).set_params(device="cpu", random_state=0)
    discovery.fit(X)
    # Labels of a sample do not depend on the batch it comes with (eval-mode statistics).
    np.testing.assert_array_equal(discovery.transform(X[:7]), discovery.tasks_[:7])


def test_default_max_iter_scales_with_the_data():
    discovery = TaskDiscovery()
    assert discovery._max_iter(30, 20) == 30
    assert discovery._max_iter(300, 128) == 47
    assert discovery._max_iter(100_000, 128) == 300
    assert discovery.set_params(max_iter=5)._max_iter(300, 128) == 5


# ------------------------------------------------------------------------------ image data


def test_load_digits_images_upsamples_without_download():
    X8, y = load_digits_images()
    X32, y32 = load_digits_images(size=32, n_channels=3)
    assert X8.shape == (1797, 1, 8, 8) and X8.dtype == np.float32
    assert X32.shape == (1797, 3, 32, 32)
    np.testing.assert_array_equal(y, y32)
    # Every pixel is repeated 4 x 4 times and in every channel.
    np.testing.assert_array_equal(X32[:, 2, ::4, ::4], X8[:, 0])
    np.testing.assert_array_equal(X32[:, :, 3, 1], X32[:, :, 0, 0])
    with pytest.raises(ValueError, match="multiple of 8"):
        load_digits_images(size=12)
    with pytest.raises(ValueError, match="n_channels"):
        load_digits_images(n_channels=2)


class TorchvisionLike:
    """What torchvision's CIFAR10 exposes once loaded: uint8 (n, H, W, C) data and targets."""

    def __init__(self, images, targets):
        self.data, self.targets = images, targets


class PairDataset:
    """An indexable data set of (image tensor (C, H, W), label) pairs."""

    def __init__(self, images, targets):
        self.images, self.targets = images, targets

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return torch.as_tensor(self.images[index]), int(self.targets[index])


def test_to_image_arrays_reads_torchvision_style_datasets():
    rng = np.random.RandomState(0)
    hwc = rng.randint(0, 256, size=(5, 32, 32, 3)).astype(np.uint8)
    X, y = to_image_arrays(TorchvisionLike(hwc, list(range(5))))
    assert X.shape == (5, 3, 32, 32) and X.dtype == np.float32
    np.testing.assert_allclose(X[2, 1], hwc[2, :, :, 1] / 255.0, rtol=1e-6)
    assert y.tolist() == [0, 1, 2, 3, 4]
    # MNIST-like uint8 tensor (n, H, W): one channel.
    X, _ = to_image_arrays(TorchvisionLike(torch.as_tensor(hwc[..., 0]), torch.arange(5)))
    assert X.shape == (5, 1, 32, 32)
    # (image, label) pairs of float tensors (C, H, W) stay as they are.
    chw = rng.rand(4, 3, 8, 8).astype(np.float32)
    X, y = to_image_arrays(PairDataset(chw, [1, 0, 1, 0]))
    np.testing.assert_array_equal(X, chw)
    assert y.tolist() == [1, 0, 1, 0]
    X, _ = to_image_arrays((chw, np.zeros(4)))
    np.testing.assert_array_equal(X, chw)
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        to_image_arrays((chw, np.zeros(3)))
    with pytest.raises(TypeError, match="dataset must have .data and .targets"):
        to_image_arrays(42)
    # The arrays go straight into the estimators.
    scorer = AgreementScorer(module="cnn", max_epochs=1, batch_size=2, test_size=1, device="cpu")
    assert scorer.fit(X, np.array([0, 1, 0, 1])).input_shape_ == (3, 8, 8)
