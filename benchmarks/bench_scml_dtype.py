"""SCML fits in float32 and float64 on wide data: CPU time and test quality over seeds.

Run (one thread)::

    nice -n 10 python benchmarks/bench_scml_dtype.py --size 3000x384 --data-seeds 0 1 2

Data as in bench_scml_scale.py: X ~ N(0, I) of shape (n, d); y = sin(pi z1 / 2) + z2^2 / 2
+ z3 z4 + z5 + 0.3 noise with z = X U for 5 random orthonormal directions U (one draw per
data seed); the last 20 % of rows are held out; X is float64. For every data seed and
``random_state`` (0 and 1), ``SCMLRegressor(dtype=...)`` and ``SCMLClassifier(dtype=...)``
(on y cut into 4 quantile classes) are fitted with ``dtype="float32"`` and
``dtype="float64"``, default parameters otherwise. Printed: CPU time of each fit
(``time.process_time``), the regressor's RMSE gain over Euclidean 5-NN, the classifier's
5-NN accuracy, both objectives, and per dtype the means over all fits.
"""

import argparse
import os
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# The package of this checkout, not an installed one.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.neighbors import KNeighborsRegressor  # noqa: E402

from sktaskmet import SCMLClassifier, SCMLRegressor  # noqa: E402

DTYPES = ("float32", "float64")


def make_data(n, d, seed):
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((n, d))
    U, _ = np.linalg.qr(rng.standard_normal((d, 5)))
    z = X @ U
    y = np.sin(np.pi * z[:, 0] / 2) + 0.5 * z[:, 1] ** 2 + z[:, 2] * z[:, 3] + z[:, 4]
    return X, y + 0.3 * rng.standard_normal(n)


def timed_fit(model, X, y):
    start = time.process_time()
    model.fit(X, y)
    return model, time.process_time() - start


def measure(X, y, m, dtype, random_state):
    """One regressor and one classifier fit in ``dtype``; a dict of their figures."""
    rmse = lambda p: float(np.sqrt(np.mean((p - y[m:]) ** 2)))  # noqa: E731
    euclidean = rmse(KNeighborsRegressor(5).fit(X[:m], y[:m]).predict(X[m:]))
    classes = np.digitize(y, np.quantile(y[:m], [0.25, 0.5, 0.75]))
    options = dict(dtype=dtype, device="cpu", random_state=random_state)
    regressor, regressor_s = timed_fit(SCMLRegressor(**options), X[:m], y[:m])
    classifier, classifier_s = timed_fit(SCMLClassifier(**options), X[:m], classes[:m])
    return dict(
        regressor_s=regressor_s,
        gain=1 - rmse(regressor.predict(X[m:])) / euclidean,
        regressor_objective=regressor.objective_,
        classifier_s=classifier_s,
        accuracy=float(np.mean(classifier.predict(X[m:]) == classes[m:])),
        classifier_objective=classifier.objective_,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="3000x384")
    parser.add_argument("--data-seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    n, d = (int(v) for v in args.size.split("x"))
    m = int(0.8 * n)
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{n}x{d}, torch {torch.__version__}, one thread, {now}")
    # Warm-up: the first fit of a process pays for lazy initialisation.
    SCMLRegressor(max_iter=10, device="cpu").fit(*make_data(60, d, 0))
    results = {dtype: [] for dtype in DTYPES}
    for data_seed in args.data_seeds:
        X, y = make_data(n, d, data_seed)
        for random_state in (0, 1):
            for dtype in DTYPES:
                r = measure(X, y, m, dtype, random_state)
                results[dtype].append(r)
                print(
                    f"data {data_seed} random_state {random_state} {dtype}: regressor "
                    f"{r['regressor_s']:5.1f} s CPU, RMSE {100 * r['gain']:5.1f} % below "
                    f"Euclidean 5-NN, objective {r['regressor_objective']:.4f} | classifier "
                    f"{r['classifier_s']:5.1f} s CPU, accuracy {r['accuracy']:.3f}, objective "
                    f"{r['classifier_objective']:.4f}",
                    flush=True,
                )
    for dtype, rows in results.items():
        mean = {key: np.mean([r[key] for r in rows]) for key in rows[0]}
        gains = [100 * r["gain"] for r in rows]
        print(
            f"mean {dtype}: regressor {mean['regressor_s']:.2f} s CPU, RMSE "
            f"{100 * mean['gain']:.1f} % below Euclidean 5-NN (range {min(gains):.1f} to "
            f"{max(gains):.1f}); classifier {mean['classifier_s']:.2f} s CPU, accuracy "
            f"{mean['accuracy']:.3f}"
        )


if __name__ == "__main__":
    main()
