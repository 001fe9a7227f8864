"""Cost and quality of AgreementScorer() and TaskDiscovery() with default parameters.

Fits each estimator with its default parameters (only ``device`` and ``random_state`` set)
on the first ``n`` digits (8 x 8 images flattened, scaled to [0, 1]) for every ``n`` of
``--sizes``, and prints the CPU time of each fit (``time.process_time``, one torch thread),
the iterations run and what was found: the agreement score of a human labeling (digit < 5)
and of a random one for AgreementScorer, the agreement scores and balance of the discovered
tasks for TaskDiscovery.

Run::

    OMP_NUM_THREADS=1 python benchmarks/bench_discovery_defaults.py --sizes 30 300
"""

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from sktaskmet import AgreementScorer, TaskDiscovery


def timed(model, *data):
    start = time.process_time()
    model.fit(*data)
    return model, time.process_time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[30, 300])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip", choices=["agreement", "discovery"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    X_all, y_all = load_digits(return_X_y=True)
    X_all = X_all / 16.0
    for n in args.sizes:
        X, y = X_all[:n], y_all[:n]
        human = (y < 5).astype(int)
        random = np.random.RandomState(0).randint(0, 2, n)
        if args.skip != "agreement":
            scorer, seconds = timed(
                AgreementScorer(device=args.device, random_state=0),
                X,
                np.column_stack([human, random]),
            )
            human_as, random_as = scorer.agreement_scores_
            print(
                f"n={n:5d} AgreementScorer()  {seconds:7.2f} s CPU  epochs {scorer.n_iter_:4d}  "
                f"AS human {human_as:.3f} random {random_as:.3f}",
                flush=True,
            )
        if args.skip != "discovery":
            discovery, seconds = timed(TaskDiscovery(device=args.device, random_state=0), X)
            scores = discovery.agreement_scores_
            print(
                f"n={n:5d} TaskDiscovery()    {seconds:7.2f} s CPU  iterations "
                f"{discovery.n_iter_:4d}  AS mean {np.nanmean(scores):.3f} "
                f"[{np.nanmin(scores):.3f}, {np.nanmax(scores):.3f}]  balance "
                f"[{discovery.balance_.min():.2f}, {discovery.balance_.max():.2f}]",
                flush=True,
            )


if __name__ == "__main__":
    main()
