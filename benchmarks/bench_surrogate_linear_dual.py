"""Speed of LinearSurrogate's dual ridge solve against the primal one, fewer subsets than tasks.

The primal path (``solver="primal"``, the only one before the dual solve existed) solves the
(n_tasks, n_tasks) normal equations; the dual path (``solver="dual"``, chosen by
``solver="auto"`` when n_subsets < n_tasks) factorises the (n_subsets, n_subsets) Gram
matrix of the centred subsets. Both are timed in this process, one after the other, on the
same data, threads and device, and the script prints both times, their ratio and the
largest difference between the two coefficient matrices (they solve the same problem).
The default shape, 40 subsets of 500 tasks with one target per task, is the authors'
modular-arithmetic data.

Run::

    python benchmarks/bench_surrogate_linear_dual.py
    python benchmarks/bench_surrogate_linear_dual.py --n-subsets 100 --n-tasks 2000
"""

import argparse
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from sktaskmet import LinearSurrogate


def best_time(model, S, y, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(S, y)
        times.append(time.perf_counter() - start)
    return min(times), model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-subsets", type=int, default=40)
    parser.add_argument("--n-tasks", type=int, default=500)
    parser.add_argument("--n-targets", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1, help="BLAS and torch threads")
    parser.add_argument("--repeats", type=int, default=20, help="fits per solver (best)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    S = (rng.random((args.n_subsets, args.n_tasks)) < 0.5).astype(np.float64)
    y = S @ rng.normal(size=(args.n_tasks, args.n_targets)) + rng.normal(
        size=(args.n_subsets, args.n_targets)
    )
    print(
        f"{args.n_subsets} subsets x {args.n_tasks} tasks, {args.n_targets} targets, "
        f"threads={args.threads}, device={args.device}, best of {args.repeats} fits"
    )
    with threadpool_limits(args.threads):
        results = {}
        for solver in ("primal", "dual", "primal", "dual"):  # interleaved: same load on both
            model = LinearSurrogate(solver=solver, device=args.device)
            seconds, model = best_time(model, S, y, args.repeats)
            best = min(seconds, results.get(solver, (np.inf, None))[0])
            results[solver] = (best, model)
    (t_primal, primal), (t_dual, dual) = results["primal"], results["dual"]
    diff = np.abs(primal.coef_ - dual.coef_).max()
    print(f"primal (n_tasks x n_tasks) solve: {1e3 * t_primal:.2f} ms")
    print(f"dual (n_subsets x n_subsets) solve: {1e3 * t_dual:.2f} ms")
    print(f"speed-up: {t_primal / t_dual:.1f}x")
    print(f"max |coef difference|: {diff:.2e}")


if __name__ == "__main__":
    main()
