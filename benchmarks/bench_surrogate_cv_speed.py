"""Speed of KernelSurrogate's alpha x gamma search against GridSearchCV over KernelRidge.

Both searches use the same folds (a shuffled, seeded KFold), the same grid and the same
criterion (mean over folds of the held-out mean squared error; GridSearchCV with
``scoring="neg_mean_squared_error"``), both without intercept (KernelRidge has none) and
both refit the best model on all subsets. GridSearchCV fits ``n_folds`` kernel ridge models
per grid point (one Cholesky factorisation each). KernelSurrogate computes one
eigendecomposition of the kernel per gamma and gets the held-out residuals of every fold and
every alpha from it in closed form (``e_F = [(I - H)_FF]^{-1} [(I - H) y]_F``).

The script prints both selections (they must be identical), the largest relative difference
between the two grids of cross-validated errors, both wall times and their ratio. Both run
in this process, one after the other, on the same number of threads.

Run::

    python benchmarks/bench_surrogate_cv_speed.py --folds 10 --n-alphas 26
    python benchmarks/bench_surrogate_cv_speed.py --folds 5 --n-alphas 10
"""

import argparse
import time

import numpy as np
import torch
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, KFold
from threadpoolctl import threadpool_limits

from sktaskmet import KernelSurrogate
from sktaskmet.datasets import make_task_interactions


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-subsets", type=int, default=2000)
    parser.add_argument("--n-tasks", type=int, default=16)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--n-alphas", type=int, default=26, help="log-spaced in [1e-4, 10]")
    parser.add_argument(
        "--gamma-factors", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="x 1/n_tasks"
    )
    parser.add_argument("--threads", type=int, default=1, help="BLAS and torch threads")
    parser.add_argument("--repeats", type=int, default=2, help="KernelSurrogate runs (best)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    S, y, _ = make_task_interactions(
        n_tasks=args.n_tasks, n_subsets=args.n_subsets, p=0.5, random_state=0
    )
    alphas = np.logspace(-4, 1, args.n_alphas)
    gammas = np.array(args.gamma_factors) / args.n_tasks
    folds = KFold(args.folds, shuffle=True, random_state=0)
    print(
        f"m={args.n_subsets} subsets, {args.n_tasks} tasks, {args.folds}-fold CV, "
        f"{len(alphas)} alphas x {len(gammas)} gammas = {len(alphas) * len(gammas)} grid points, "
        f"threads={args.threads}, device={args.device}"
    )

    with threadpool_limits(args.threads):
        ours_times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ours = KernelSurrogate(
                cv=folds, alphas=alphas, gammas=gammas, fit_intercept=False, device=args.device
            ).fit(S, y)
            if args.device != "cpu":
                torch.cuda.synchronize()
            ours_times.append(time.perf_counter() - start)
        t_ours = min(ours_times)

        start = time.perf_counter()
        search = GridSearchCV(
            KernelRidge(kernel="rbf"),
            {"alpha": alphas, "gamma": gammas},
            cv=folds,
            scoring="neg_mean_squared_error",
        ).fit(S, y)
        t_grid = time.perf_counter() - start

    ours_choice = {"alpha": ours.alpha_, "gamma": ours.gamma_}
    grid_choice = {k: float(v) for k, v in search.best_params_.items()}
    # GridSearchCV orders its grid alpha-major: transpose ours (gammas x alphas) to match.
    ours_mse = ours.cv_results_["mean_test_mse"].T.ravel()
    grid_mse = -search.cv_results_["mean_test_score"]
    rel = np.max(np.abs(ours_mse - grid_mse) / grid_mse)
    print(f"KernelSurrogate selects {ours_choice}")
    print(f"GridSearchCV    selects {grid_choice}")
    print(f"identical selection: {ours_choice == grid_choice}")
    print(f"max relative difference of the CV MSE grids: {rel:.2e}")
    print(f"KernelSurrogate search + refit: {t_ours:.2f} s (best of {args.repeats})")
    print(f"GridSearchCV(KernelRidge) + refit: {t_grid:.2f} s")
    print(f"speed-up: {t_grid / t_ours:.1f}x")
    pred_diff = np.abs(ours.predict(S) - search.predict(S)).max()
    print(f"max |prediction difference| of the refitted models: {pred_diff:.2e}")


if __name__ == "__main__":
    main()
