"""Task discovery on sklearn digits: agreement, balance and collapse, then adversarial splits.

Part 0 (cost). One outer step of discovery (meta-loss and its backward pass) with all
tasks batched by vmap, against the same loss computed one task at a time.

Part 1 (discovery table). Agreement score (AS) of five task families on the 1797 digits,
all measured with the same protocol as the spec's table (AgreementScorer, "same" data mode,
MLP 64-128-128-2, Adam 1e-3, batch 100, 60 epochs, 1200 train / 597 held-out points):

* human 5-vs-5 class splits and random labelings (the two references),
* tasks of an untrained random task network (``random_network_tasks``),
* tasks discovered by ``TaskDiscovery`` with the uniformity term and without it.

Each row prints AS (mean, min, max), the balance range (fraction of ones per task) and the
largest pairwise task similarity max(agree, 1 - agree).

Part 2 (adversarial splits). For target tasks tau (human 5-vs-5 splits) and splitting tasks
tau_d, ``AdversarialSplit(tau_d)`` trains on {tau = tau_d} and tests on {tau != tau_d}; an
MLPClassifier (128, 128) is trained on tau and its held-out accuracy is compared with that
of a random 50/50 split. Splitting tasks: random labelings, random-network tasks and the
discovered tasks (with uniformity), each printed with its AS so that the ordering of the
accuracy drop by AS can be read off.

Run (about 15 minutes on one loaded CPU core)::

    OMP_NUM_THREADS=1 python benchmarks/bench_discovery_tasks.py --device cpu

``--timing-only`` runs part 0 alone, ``--no-splits`` skips part 2; ``--device cuda`` runs the
torch parts on a GPU.
"""

import argparse
import time
import warnings

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import ShuffleSplit, cross_val_score
from sklearn.neural_network import MLPClassifier

from sktaskmet import AgreementScorer, TaskDiscovery, random_network_tasks
from sktaskmet.datasets import make_class_split_tasks, make_random_labelings
from sktaskmet.discovery._task_discovery import _task_similarity
from sktaskmet.model_selection import AdversarialSplit


def summarise(name, scores, tasks):
    tasks = np.asarray(tasks)
    similarity = _task_similarity(tasks)
    np.fill_diagonal(similarity, 0.0)
    balance = tasks.mean(axis=0)
    print(
        f"{name:<28} AS {np.nanmean(scores):.3f} [{np.nanmin(scores):.3f}, "
        f"{np.nanmax(scores):.3f}]  balance [{balance.min():.2f}, {balance.max():.2f}]  "
        f"max similarity {similarity.max():.3f}",
        flush=True,
    )


def split_accuracy(X, target, cv, seed):
    clf = MLPClassifier(hidden_layer_sizes=(128, 128), max_iter=200, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return float(cross_val_score(clf, X, target, cv=cv).mean())


def time_meta_step(X, args, repeats=5):
    """Median seconds of one outer step (meta-loss + backward), all tasks batched vs a loop."""
    from sktaskmet._backend import seeded
    from sktaskmet._nn import make_mlp
    from sktaskmet.discovery._meta import (
        LearnerPair,
        TaskEncoder,
        meta_loss,
        orthonormal_heads,
        uniformity_loss,
    )

    device = torch.device(args.device)
    x = torch.as_tensor(X, device=device)
    with seeded(args.seed):
        encoder = TaskEncoder(X.shape[1], (128, 128), args.n_tasks).to(device)
        learners = LearnerPair([make_mlp(X.shape[1], (128, 128), 2) for _ in range(2)])
    learners.to(device=device)
    generator = torch.Generator().manual_seed(args.seed)
    heads = orthonormal_heads(args.n_tasks, args.n_tasks, generator, x.dtype, device)
    x_inner, x_heldout = x[: args.batch_size], x[args.batch_size : 2 * args.batch_size]
    step = (args.inner_steps, args.inner_lr)

    def batched():
        loss = meta_loss(encoder, heads, learners, x_inner, x_heldout, *step, args.uniformity)[0]
        loss.backward()

    def looped():
        # One task at a time: the same loss, T separate unrolled inner loops.
        loss = 0.0
        for i in range(args.n_tasks):
            one = meta_loss(encoder, heads[:, i : i + 1], learners, x_inner, x_heldout, *step, 0.0)
            loss = loss + one[0] / args.n_tasks
        loss = loss + args.uniformity * uniformity_loss(encoder(x_inner))
        loss.backward()

    def median_time(fn):
        times = []
        for _ in range(repeats):
            encoder.zero_grad()
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    batched()  # warm-up
    looped()
    t_batched, t_looped = median_time(batched), median_time(looped)
    print(
        f"outer step, {args.n_tasks} tasks x 2 learners, {args.inner_steps} inner steps: "
        f"vmapped {1000 * t_batched:.0f} ms, loop over tasks {1000 * t_looped:.0f} ms, "
        f"ratio {t_looped / t_batched:.1f}x (median of {repeats})",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--n-tasks", type=int, default=8)
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--inner-steps", type=int, default=10)
    parser.add_argument("--inner-lr", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--uniformity", type=float, default=1.0)
    parser.add_argument("--n-targets", type=int, default=3, help="human target tasks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-splits", action="store_true", help="part 1 only")
    parser.add_argument("--timing-only", action="store_true", help="only time one outer step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    n, k = len(X), args.n_tasks
    print(f"digits: {X.shape}, device {args.device}, torch threads {args.threads}")
    print("\n== Part 0: cost of one outer step", flush=True)
    time_meta_step(X, args)
    if args.timing_only:
        return

    def agreement(tasks):
        scorer = AgreementScorer(
            hidden_layer_sizes=(128, 128),
            data_mode="same",
            max_epochs=60,
            batch_size=100,
            test_size=597,
            device=args.device,
            random_state=args.seed,
        )
        return scorer.fit(X, tasks).agreement_scores_

    human, _ = make_class_split_tasks(digits.target, k, random_state=args.seed)
    random_labels = make_random_labelings(n, k, random_state=args.seed)
    random_net = random_network_tasks(
        X, k, hidden_layer_sizes=(128, 128), device=args.device, random_state=args.seed
    )

    families = {}
    print("\n== Part 1: agreement score (same mode, 1200 train / 597 held-out)", flush=True)
    for name, tasks in [
        ("human 5-vs-5", human),
        ("random labels", random_labels),
        ("random-network tasks", random_net),
    ]:
        start = time.perf_counter()
        scores = agreement(tasks)
        families[name] = (scores, tasks)
        summarise(name, scores, tasks)
        print(f"{'':<28} ({time.perf_counter() - start:.0f} s to score)")

    discovery_params = dict(
        n_tasks=k,
        hidden_layer_sizes=(128, 128),
        inner_steps=args.inner_steps,
        inner_lr=args.inner_lr,
        max_iter=args.max_iter,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        agreement_scorer="skip",
        device=args.device,
        random_state=args.seed,
    )
    for label, coef in [
        (f"discovered, uniformity {args.uniformity:g}", args.uniformity),
        ("discovered, no uniformity", 0.0),
    ]:
        start = time.perf_counter()
        discovery = TaskDiscovery(uniformity=coef, **discovery_params).fit(X)
        seconds = time.perf_counter() - start
        scores = agreement(discovery.tasks_)
        families[label] = (scores, discovery.tasks_)
        summarise(label, scores, discovery.tasks_)
        history = discovery.history_["train_agreement_loss"]
        print(
            f"{'':<28} ({discovery.n_iter_} iterations in {seconds:.0f} s, "
            f"{1000 * seconds / max(1, discovery.n_iter_):.0f} ms/iteration; agreement loss "
            f"{np.mean(history[:10]):.3f} -> {np.mean(history[-10:]):.3f})",
            flush=True,
        )

    if args.no_splits:
        return
    print("\n== Part 2: adversarial splits, MLPClassifier(128, 128) on human 5-vs-5 targets")
    targets, positive = make_class_split_tasks(
        digits.target, args.n_targets, random_state=args.seed + 1
    )
    random_split = [
        split_accuracy(X, targets[:, t], ShuffleSplit(1, test_size=0.5, random_state=t), t)
        for t in range(args.n_targets)
    ]
    print(
        f"{'random 50/50 split':<34} test accuracy {np.mean(random_split):.3f} "
        f"(per target {np.round(random_split, 3).tolist()})",
        flush=True,
    )
    baseline = np.mean(random_split)
    all_scores, all_accuracies = [], []
    discovered_label = f"discovered, uniformity {args.uniformity:g}"
    for family in ["random labels", "random-network tasks", discovered_label]:
        scores, tasks = families[family]
        for j in np.argsort(-np.nan_to_num(scores, nan=-1)):
            accs = [
                split_accuracy(X, targets[:, t], AdversarialSplit(tasks[:, j]), t)
                for t in range(args.n_targets)
            ]
            all_scores.append(scores[j])
            all_accuracies.append(np.mean(accs))
            print(
                f"{family + f' #{j}':<34} AS {scores[j]:.3f}  test accuracy {np.mean(accs):.3f} "
                f"(drop {baseline - np.mean(accs):+.3f}; per target "
                f"{np.round(accs, 3).tolist()})",
                flush=True,
            )
    print("targets (positive classes):", positive.tolist())
    rho = spearmanr(all_scores, all_accuracies).statistic
    print(f"Spearman correlation of the splitting task's AS with test accuracy: {rho:.3f}")


if __name__ == "__main__":
    main()
