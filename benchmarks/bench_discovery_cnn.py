"""Agreement score and task discovery with convolutional networks on digit images.

Three parts (``--part``):

* ``speed``: 64 labelings x 2 small CNNs (:class:`~sktaskmet.discovery.SmallCNN`) on 32x32
  images (the digits upsampled, 3 channels), one vmapped ensemble against the same 128
  networks trained one by one on the same batches (each with its own Adam); the seconds per
  training step of all networks (that a member equals its network trained alone is checked
  in float64 by tests/discovery/test_discovery_modules.py);
* ``agreement``: agreement score of human 5-vs-5 splits and of random labelings of the 8x8
  digit images with two CNNs per labeling (``AgreementScorer(module="cnn")``), next to the
  MLP on the same split;
* ``discovery``: ``TaskDiscovery(encoder="cnn", learner="cnn")`` on the 8x8 digit images with
  and without the uniformity term: balance, largest pairwise similarity and agreement score
  (with CNNs) of the discovered tasks, next to the tasks of an untrained CNN encoder.

Run::

    python benchmarks/bench_discovery_cnn.py --part speed --threads 1
    python benchmarks/bench_discovery_cnn.py --part agreement
    python benchmarks/bench_discovery_cnn.py --part discovery
"""

import argparse
import os
import time

import numpy as np
import torch

from sktaskmet import AgreementScorer, TaskDiscovery, random_network_tasks
from sktaskmet._backend import resolve_device, seeded
from sktaskmet.datasets import load_digits_images, make_class_split_tasks, make_random_labelings
from sktaskmet.discovery._ensemble import ModuleEnsemble, batch_schedule, train_ensemble
from sktaskmet.discovery._networks import module_builder


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ensemble(build, X, targets, seeds, n_models, batches, device):
    """Seconds per step of the vmapped ensemble on the given batches (after one warm-up step)."""
    n_members = len(seeds)
    ensemble = ModuleEnsemble(build, seeds, dtype=X.dtype, device=device, sample_ndim=3)
    task_of_member = torch.arange(n_members, device=device) // n_models
    train_ensemble(ensemble, X, targets, task_of_member, lambda: batches[:1], 1, 1e-3)
    synchronize(device)
    start = time.perf_counter()
    train_ensemble(ensemble, X, targets, task_of_member, lambda: batches[1:], 1, 1e-3)
    synchronize(device)
    return (time.perf_counter() - start) / (len(batches) - 1), ensemble


def time_one_by_one(build, X, targets, seeds, n_models, batches, device):
    """Seconds per step of all networks trained one after the other on the same batches."""
    elapsed, networks = 0.0, []
    for member, seed in enumerate(seeds):
        with seeded(seed):
            net = build().to(device=device, dtype=X.dtype)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        labels = targets[:, member // n_models]
        for step, batch in enumerate(batches):
            if step == 1:
                synchronize(device)
                start = time.perf_counter()
            rows = batch[member]
            loss = torch.nn.functional.cross_entropy(net(X[rows]), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(device)
        elapsed += time.perf_counter() - start
        networks.append(net)
    return elapsed / (len(batches) - 1), networks


def part_speed(args, device):
    X, _ = load_digits_images(size=32, n_channels=3)
    X = torch.as_tensor(X[: args.n_train], device=device)
    n_members = args.n_labelings * 2
    targets = torch.as_tensor(
        make_random_labelings(len(X), args.n_labelings, random_state=0), device=device
    )
    seeds = list(range(2)) * args.n_labelings
    build = module_builder("cnn", (3, 32, 32), 2)
    schedule = batch_schedule(
        len(X),
        2,
        n_members,
        args.batch_size,
        "same",
        torch.Generator(device).manual_seed(0),
        device,
    )
    batches = schedule()[: args.steps + 1]
    vmapped, ensemble = time_ensemble(build, X, targets, seeds, 2, batches, device)
    looped, networks = time_one_by_one(build, X, targets, seeds, 2, batches, device)
    # Same networks: their predictions on the training images after the same steps.
    with torch.no_grad():
        alone = torch.stack([networks[m](X).argmax(-1) for m in (0, n_members - 1)])
    together = ensemble.predict(X)[[0, n_members - 1]]
    same = float((alone == together).float().mean())
    print(
        f"{args.n_labelings} labelings x 2 SmallCNN (32x32x3, batch {args.batch_size}), "
        f"{torch.get_num_threads()} thread(s), {device}: vmapped {vmapped:.3f} s/step, "
        f"one by one {looped:.3f} s/step, speed-up {looped / vmapped:.2f}x; "
        f"predictions of two members equal to their networks alone on {same:.1%} of the images"
    )


def scorer(module, device, **extra):
    return AgreementScorer(
        module=module,
        hidden_layer_sizes=(128, 128),
        max_epochs=extra.pop("max_epochs", 30),
        batch_size=100,
        test_size=597,
        device=device,
        random_state=0,
        **extra,
    )


def summary(values):
    return f"{np.mean(values):.3f} +- {np.std(values):.3f} (min {np.min(values):.3f})"


def part_agreement(args, device):
    X, y = load_digits_images()
    human, _ = make_class_split_tasks(y, args.n_tasks, random_state=0)
    random = make_random_labelings(len(y), args.n_tasks, random_state=0)
    labelings = np.column_stack([human, random])
    for module in ("cnn", "mlp"):
        start = time.perf_counter()
        fitted = scorer(module, device, max_epochs=args.epochs).fit(X, labelings)
        scores = fitted.agreement_scores_
        accuracy = fitted.test_accuracies_.mean(axis=1)
        k = args.n_tasks
        print(
            f"[{module}, same, {args.epochs} epochs] human AS {summary(scores[:k])} "
            f"(held-out accuracy {accuracy[:k].mean():.3f}); random AS {summary(scores[k:])} "
            f"(held-out accuracy {accuracy[k:].mean():.3f}); {time.perf_counter() - start:.0f} s"
        )


def part_discovery(args, device):
    X, _ = load_digits_images()
    common = dict(
        n_tasks=args.n_tasks,
        encoder="cnn",
        learner="cnn",
        inner_steps=args.inner_steps,
        inner_lr=args.inner_lr,
        max_iter=args.max_iter,
        batch_size=args.batch_size,
        learning_rate=3e-3,
        agreement_scorer="skip",
        device=device,
        random_state=0,
    )
    as_scorer = scorer("cnn", device, max_epochs=args.epochs)

    def describe(name, tasks, seconds):
        balance = tasks.mean(axis=0)
        signed = 2.0 * tasks - 1.0
        agree = 0.5 * (1 + signed.T @ signed / len(tasks))
        similarity = np.maximum(agree, 1 - agree)[np.triu_indices(tasks.shape[1], 1)]
        varied = (balance > 0) & (balance < 1)
        scores = as_scorer.fit(X, tasks[:, varied]).agreement_scores_ if varied.any() else []
        print(
            f"[{name}] AS {np.round(scores, 3).tolist()}  balance {np.round(balance, 2).tolist()}"
            f"  max pairwise similarity {similarity.max():.2f}  ({seconds:.0f} s)"
        )

    start = time.perf_counter()
    baseline = random_network_tasks(X, args.n_tasks, encoder="cnn", device=device, random_state=0)
    describe("untrained CNN encoder", baseline, time.perf_counter() - start)
    for coef in (1.0, 0.0):
        start = time.perf_counter()
        discovery = TaskDiscovery(uniformity=coef, **common).fit(X)
        describe(f"discovered, uniformity {coef:g}", discovery.tasks_, time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["speed", "agreement", "discovery"], required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--n-labelings", type=int, default=64, help="speed: labelings")
    parser.add_argument("--n-train", type=int, default=512, help="speed: images")
    parser.add_argument("--steps", type=int, default=3, help="speed: timed steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-tasks", type=int, default=8, help="agreement/discovery: tasks")
    parser.add_argument("--epochs", type=int, default=30, help="agreement score epochs")
    parser.add_argument("--max-iter", type=int, default=100, help="discovery: outer steps")
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--inner-lr", type=float, default=0.5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")
    {"speed": part_speed, "agreement": part_agreement, "discovery": part_discovery}[args.part](
        args, device
    )


if __name__ == "__main__":
    main()
