"""Agreement score of human and random labelings of sklearn digits.

Reproduces the agreement-score table of the task discovery spec: two MLPs 64-128-128-2 per
labeling, Adam (lr 1e-3), batch 100, 60 epochs, 1200 training / 597 held-out digits.

* human tasks: 5-vs-5 splits of the ten digit classes (a sample of the 126, or all of them
  with ``--n-tasks 126``);
* random labelings: balanced random 0/1 labels;

in the ``"same"`` data mode (both networks see the same minibatches) and the ``"disjoint"``
mode (each network trains on its own half of the training points), then the data-size
effect: human and random AS at 100, 300 and 1200 training points (597 held out each time).

Run::

    python benchmarks/bench_discovery_agreement.py [--n-tasks 32] [--device cpu]

All labelings of one condition are trained as one vmapped ensemble.
"""

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from sktaskmet import AgreementScorer
from sktaskmet.datasets import make_class_split_tasks, make_random_labelings


def score(X, labelings, data_mode, device, test_size=597, train_size=None, seed=0):
    if train_size is not None:
        # A random subset of train_size + test_size points, of which test_size are held out.
        rows = np.random.RandomState(seed).permutation(len(X))[: train_size + test_size]
        X, labelings = X[rows], labelings[rows]
    scorer = AgreementScorer(
        hidden_layer_sizes=(128, 128),
        n_models=2,
        data_mode=data_mode,
        max_epochs=60,
        batch_size=100,
        learning_rate=1e-3,
        test_size=test_size,
        device=device,
        random_state=seed,
    )
    start = time.perf_counter()
    scorer.fit(X, labelings)
    return scorer, time.perf_counter() - start


def summary(values):
    spread = f"min {np.min(values):.3f}, max {np.max(values):.3f}"
    return f"{np.mean(values):.3f} +- {np.std(values):.3f} ({spread})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-tasks", type=int, default=32, help="human and random labelings each")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--modes", nargs="*", default=["same", "disjoint"])
    parser.add_argument("--size-tasks", type=int, default=16, help="labelings per family")
    parser.add_argument("--skip-size", action="store_true", help="skip the data-size study")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    X, digit = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    n_tasks = args.n_tasks
    human, _ = make_class_split_tasks(digit, None if n_tasks >= 126 else n_tasks, random_state=0)
    random = make_random_labelings(len(X), n_tasks, random_state=0)
    labelings = np.column_stack([human, random])
    n_human = human.shape[1]
    print(
        f"digits: {len(X)} points, 1200 train / 597 held-out, {n_human} human and "
        f"{n_tasks} random labelings, MLP 64-128-128-2, Adam 1e-3, batch 100, 60 epochs, "
        f"device={args.device}, torch threads={torch.get_num_threads()}"
    )
    results = {}
    for mode in args.modes:
        scorer, seconds = score(X, labelings, mode, args.device)
        h, r = scorer.agreement_scores_[:n_human], scorer.agreement_scores_[n_human:]
        acc = scorer.test_accuracies_.mean(axis=1)
        results[mode] = (h.mean(), r.mean())
        print(f"[{mode}] human AS  {summary(h)}   held-out accuracy {acc[:n_human].mean():.3f}")
        print(f"[{mode}] random AS {summary(r)}   held-out accuracy {acc[n_human:].mean():.3f}")
        print(f"[{mode}] {2 * labelings.shape[1]} networks in one ensemble: {seconds:.1f} s")
    if "same" in results:
        human_as, random_as = results["same"]
        print(
            f"target human AS >= 0.97 (same): {human_as:.3f} -> "
            f"{'met' if human_as >= 0.97 else 'MISSED'}"
        )
        print(
            f"target random AS <= 0.82 (same): {random_as:.3f} -> "
            f"{'met' if random_as <= 0.82 else 'MISSED'}"
        )
    if "disjoint" in results:
        random_as = results["disjoint"][1]
        print(
            f"target random AS about 0.5 (disjoint, |AS - 0.5| <= 0.05): {random_as:.3f}"
            f" -> {'met' if abs(random_as - 0.5) <= 0.05 else 'MISSED'}"
        )

    if args.skip_size:
        return
    n_size = min(args.size_tasks, n_tasks)
    size_labelings = np.column_stack([human[:, :n_size], random[:, :n_size]])
    print(f"data-size effect ({n_size} human and {n_size} random labelings, same mode):")
    for train_size in (100, 300, 1200):
        scorer, seconds = score(X, size_labelings, "same", args.device, train_size=train_size)
        h, r = scorer.agreement_scores_[:n_size], scorer.agreement_scores_[n_size:]
        print(
            f"  train size {train_size:5d}: human AS {h.mean():.3f} +- {h.std():.3f}, "
            f"random AS {r.mean():.3f} +- {r.std():.3f}  ({seconds:.1f} s)"
        )


if __name__ == "__main__":
    main()
