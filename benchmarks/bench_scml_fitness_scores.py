"""SCMLRegressor on the fitness-score data of the gallery example, over draws of the data.

The gallery example ``examples/scml/plot_scml_fitness_scores.py`` generates its data with
``make_fitness_scores`` (criterion embedding + response embedding, 128 features, skewed
0-10 integer scores), once per variant: the main one, whose score depends on a few
response traits and on the criterion's strictness, and the "flip" one, where each
criterion rewards a different trait with a different sign. This script loads that
generator from the example file itself (its imports and function definitions only, so
that both always use the same data) and fits, for each draw (``random_state`` of the
generator) and variant, on 1,500 rows, scored on the other 500:

* Euclidean 10-NN (``KNeighborsRegressor(10)``);
* ``SCMLRegressor(n_neighbors=10, random_state=0)``, the default basis;
* with ``--subspace scatter`` too, the previous high-dimensional basis, whose discriminant
  subspace took the triplet scatter's directions where the default takes the target's
  principal Hessian directions.

Printed: RMSE per fit, then the RMSE gain over Euclidean 10-NN in % per draw, with the
mean. One thread.

Run::

    nice -n 10 python benchmarks/bench_scml_fitness_scores.py --data-seeds 0 1 2 3 4 \\
        --subspace hessian scatter
"""

import argparse
import ast
import contextlib
import os
import pathlib
import statistics
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_scml_scale import previous_subspace  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neighbors import KNeighborsRegressor  # noqa: E402

from sktaskmet import SCMLRegressor  # noqa: E402

EXAMPLE = (
    pathlib.Path(__file__).resolve().parents[1]
    / "examples"
    / "scml"
    / "plot_scml_fitness_scores.py"
)
FLIP_SIGNS = np.array([1, -1, 1, -1, 1, -1, 1, -1])  # the example's second variant


def load_generator():
    """``make_fitness_scores`` of the gallery example (its imports and functions, not its run)."""
    tree = ast.parse(EXAMPLE.read_text())
    kept = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef))]
    namespace = {}
    exec(compile(ast.Module(body=kept, type_ignores=[]), str(EXAMPLE), "exec"), namespace)
    return namespace["make_fitness_scores"]


def fit_scml(subspace, X_train, y_train):
    """A default ``SCMLRegressor(n_neighbors=10)`` with the named high-dimensional basis."""
    model = SCMLRegressor(n_neighbors=10, random_state=0, device="cpu")
    basis = previous_subspace() if subspace == "scatter" else contextlib.nullcontext()
    with basis:
        return model.fit(X_train, y_train)


def rmse(y_true, y_pred):
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--subspace", nargs="+", default=["hessian"], choices=["hessian", "scatter"]
    )
    parser.add_argument("--n-samples", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    make_fitness_scores = load_generator()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(
        f"fitness scores, {args.n_samples} rows (25 % held out), torch {torch.__version__}, "
        f"one thread; {date}"
    )
    gains = {}
    for variant, signs in (("main", None), ("flip", FLIP_SIGNS)):
        for seed in args.data_seeds:
            X, score, _ = make_fitness_scores(
                args.n_samples, criterion_sign=signs, random_state=seed
            )
            X_train, X_test, y_train, y_test = train_test_split(
                X, score, test_size=0.25, random_state=0
            )
            knn = KNeighborsRegressor(n_neighbors=10).fit(X_train, y_train)
            euclidean = rmse(y_test, knn.predict(X_test))
            line = f"  {variant} data seed {seed}: Euclidean 10-NN RMSE {euclidean:.3f}"
            for subspace in args.subspace:
                cpu = time.process_time()
                model = fit_scml(subspace, X_train, y_train)
                cpu = time.process_time() - cpu
                error = rmse(y_test, model.predict(X_test))
                gains.setdefault((variant, subspace), []).append(100 * (1 - error / euclidean))
                line += f" | SCML {subspace} subspace {error:.3f} ({cpu:.1f} s CPU)"
            print(line, flush=True)
    print("\nRMSE gain over Euclidean 10-NN (%) per data seed")
    print(f"{'':28s}" + "".join(f"{s:>6d}" for s in args.data_seeds) + "  mean")
    for (variant, subspace), values in gains.items():
        row = "".join(f"{v:6.1f}" for v in values)
        print(f"{variant + ', ' + subspace + ' subspace':28s}{row}{statistics.mean(values):6.1f}")


if __name__ == "__main__":
    main()
