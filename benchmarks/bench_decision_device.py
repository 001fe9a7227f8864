"""Decision-focused fits on PyEPO's problems: one CPU thread against a GPU, in one run.

The same fits as the claim protocol of ``bench_decision_pyepo.py taskmet`` (PyEPO's 5 x 5
shortest path and 32-item knapsack, 5 features, noise half-width 0.5, polynomial degree 6 by
default), each run with ``device="cpu"`` (one torch thread) and with ``device="cuda"`` in the
same process, interleaved:

``dfl``
    ``DFLRegressor`` with SPO+, linear model, PyEPO's tutorial settings (Adam 1e-2, batch 32,
    20 epochs, no validation split): 625 optimiser steps at n = 1000.
``taskmet``
    ``TaskMetRegressor`` in the settings the user guide recommends for these problems
    (closed-form inner solve, conditional diagonal metric from a 64-unit network,
    ``validation_fraction=None``; SPO+ and alpha = 0.03 on the shortest path, PFYL with 10
    samples and alpha = 0.01 on the knapsack), with ``max_iter=300`` unless
    ``--taskmet-max-iter`` says otherwise (the shortest path's recommendation is 800).

Printed per (problem, n, method, device): the median and best wall time of the fit over
``--repeats`` fits (one untimed fit first on each device: CUDA's start-up and kernel caches),
the test regret (%) and MSE of the last fit, and the ratio of the CPU's median to the GPU's.
Every fit ends by copying its parameters to numpy, which waits for the GPU, so wall time is
the fit's whole time.

Run on a machine with an NVIDIA GPU::

    python benchmarks/bench_decision_device.py --n-train 1000 10000
"""

import argparse
import functools
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_taskmet_linear_decisions import METHODS, problem_data
from bench_taskmet_linear_decisions import normalized_regret as regret

# The builders of the study script, by the name of the configuration they make.
BUILDERS = {
    "shortest_path": {"dfl": "dfl", "taskmet": "cf-diag-h64-a0.03-noval300"},
    "knapsack": {"dfl": "dfl", "taskmet": "cf-diag-h64-a0.01-pfyl-s10-noval300"},
}


def fit_once(problem, method, device, seed, data, make_task, taskmet_max_iter):
    """One fit of ``method`` on ``device``: wall seconds, test regret (%) and test MSE."""
    X_tr, y_tr, X_te, y_te = data
    model = METHODS[BUILDERS[problem][method]](seed, X_tr.shape[0], make_task)
    model.set_params(device=device)
    if method == "taskmet":
        model.set_params(max_iter=taskmet_max_iter)
    start = time.perf_counter()
    model.fit(X_tr, y_tr)
    wall = time.perf_counter() - start
    pred = model.predict(X_te)
    return wall, regret(make_task(), pred, y_te), float(((pred - y_te) ** 2).mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--problems", nargs="+", default=["shortest_path", "knapsack"], choices=list(BUILDERS)
    )
    parser.add_argument("--methods", nargs="+", default=["dfl", "taskmet"])
    parser.add_argument("--n-train", type=int, nargs="+", default=[1000])
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--degree", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--taskmet-max-iter", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread, GPU: {gpu}; "
        f"degree {args.degree}, seed {args.seed}, {args.repeats} timed fits per device, "
        f"TaskMet max_iter={args.taskmet_max_iter}"
    )
    print(
        f"{'problem':<14}{'n':>7}  {'method':<8}{'device':<7}"
        f"{'median s':>10}{'best s':>9}{'regret %':>10}{'MSE':>8}"
    )
    for problem in args.problems:
        for n_train in args.n_train:
            X, y, make_task, _ = problem_data(
                problem, n_train + args.n_test, args.degree, args.seed
            )
            data = (X[:n_train], y[:n_train], X[n_train:], y[n_train:])
            for method in args.methods:
                fit = functools.partial(  # fit(device)
                    fit_once,
                    problem,
                    method,
                    seed=args.seed,
                    data=data,
                    make_task=make_task,
                    taskmet_max_iter=args.taskmet_max_iter,
                )
                for device in args.devices:  # untimed: CUDA context, kernels, solver caches
                    fit(device)
                runs = {device: [] for device in args.devices}
                for _ in range(args.repeats):
                    for device in args.devices:
                        runs[device].append(fit(device))
                for device, results in runs.items():
                    walls = [r[0] for r in results]
                    print(
                        f"{problem:<14}{n_train:>7}  {method:<8}{device:<7}"
                        f"{np.median(walls):>10.2f}{min(walls):>9.2f}"
                        f"{results[-1][1]:>10.2f}{results[-1][2]:>8.3f}",
                        flush=True,
                    )
                if len(args.devices) == 2:
                    first, second = (np.median([r[0] for r in runs[d]]) for d in args.devices)
                    print(
                        f"{'':<29}median {args.devices[0]} / {args.devices[1]}: "
                        f"{first / second:.2f}x",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
