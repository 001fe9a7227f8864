"""RMSE of kNN regression in SCML's learned metric against Euclidean kNN and MLKR + kNN.

Run (metric-learn's MLKR needs scikit-learn 1.7; without metric-learn its row is skipped)::

    nice -n 10 python benchmarks/bench_scml_regression.py

Datasets:

* ``diabetes``: scikit-learn's load_diabetes (442 x 10).
* ``friedman``: make_friedman1 (1000 points, 10 features of which 5 are used, noise 1.0)
  with 10 more uniform noise features: 20 features, 15 irrelevant.

Every method sees standardised features (a StandardScaler in the pipeline) and predicts
with the same number of neighbours (``--n-neighbors``, 10 by default):

* ``euclidean kNN``: KNeighborsRegressor.
* ``SCML global``, ``SCML local``: SCMLRegressor (default settings: local-LDA basis,
  3 genuine x 10 impostor triplets per point) with ``max_iter`` mini-batches.
* ``MLKR + kNN``: metric-learn's MLKR (metric learning for kernel regression) followed by
  KNeighborsRegressor.

Scores are out-of-fold RMSEs over repeated K-fold cross-validation (5 folds x
``--repeats`` shuffles): mean and standard deviation over folds, and on how many folds
each method beats Euclidean kNN.
"""

import argparse
import os
import sys
import time
import warnings

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_diabetes, make_friedman1  # noqa: E402
from sklearn.model_selection import RepeatedKFold  # noqa: E402
from sklearn.neighbors import KNeighborsRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sktaskmet import SCMLRegressor  # noqa: E402


def datasets():
    X_d, y_d = load_diabetes(return_X_y=True)
    X_f, y_f = make_friedman1(n_samples=1000, n_features=10, noise=1.0, random_state=0)
    noise = np.random.RandomState(0).uniform(size=(1000, 10))
    return {"diabetes": (X_d, y_d), "friedman": (np.hstack([X_f, noise]), y_f)}


def methods(args):
    k = args.n_neighbors
    scml = dict(max_iter=args.max_iter, n_neighbors=k, device=args.device, random_state=0)
    found = {
        "euclidean kNN": lambda: make_pipeline(StandardScaler(), KNeighborsRegressor(k)),
        "SCML global": lambda: make_pipeline(StandardScaler(), SCMLRegressor(**scml)),
        "SCML local": lambda: make_pipeline(StandardScaler(), SCMLRegressor(local=True, **scml)),
    }
    try:
        from metric_learn import MLKR

        found["MLKR + kNN"] = lambda: make_pipeline(
            StandardScaler(), MLKR(random_state=0), KNeighborsRegressor(k)
        )
    except ImportError as exc:
        print(f"metric-learn is not importable ({exc}); the MLKR row is skipped.")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-iter", type=int, default=5000)
    parser.add_argument("--n-neighbors", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)
    print(
        f"5-fold CV x {args.repeats} repeats, k={args.n_neighbors} neighbours for every "
        f"method, SCML max_iter={args.max_iter}, device={args.device}, single-threaded"
    )
    for name, (X, y) in datasets().items():
        folds = list(RepeatedKFold(n_splits=5, n_repeats=args.repeats, random_state=0).split(X))
        scores, times = {}, {}
        for label, build in methods(args).items():
            rmse, seconds = [], []
            for train, test in folds:
                model = build()
                start = time.perf_counter()
                model.fit(X[train], y[train])
                seconds.append(time.perf_counter() - start)
                error = model.predict(X[test]) - y[test]
                rmse.append(float(np.sqrt(np.mean(error**2))))
            scores[label], times[label] = np.array(rmse), np.array(seconds)
        baseline = scores["euclidean kNN"]
        print(f"\n{name}: n={X.shape[0]}, d={X.shape[1]}, {len(folds)} folds")
        print(f"  {'method':15s} {'RMSE mean':>10s} {'std':>7s} {'beats eucl.':>12s} {'fit s':>7s}")
        for label, values in scores.items():
            wins = int(np.sum(values < baseline)) if label != "euclidean kNN" else None
            wins_text = "-" if wins is None else f"{wins}/{len(values)}"
            print(
                f"  {label:15s} {values.mean():10.3f} {values.std():7.3f} {wins_text:>12s} "
                f"{times[label].mean():7.2f}"
            )


if __name__ == "__main__":
    main()
