"""Fit time and peak memory of SCMLRegressor against metric-learn's SCML_Supervised.

Run with the environment that has metric-learn (scikit-learn 1.7)::

    nice -n 10 python benchmarks/bench_scml_vs_metric_learn.py

Problem: n=3000 points, d=20 features (make_friedman1: 5 relevant features, 15 noise),
the same number of solver iterations (10000 mini-batches of 10 triplets, full objective
every 500) and the same kind of basis (local LDA, 400 bases) for both. metric-learn's
SCML_Supervised needs class labels, so it gets the target cut into 4 quantile classes;
SCMLRegressor takes the continuous target (its triplets come from target closeness).

Two comparisons:

* ``estimator``: the whole ``fit`` of each estimator (triplets, basis, solver).
* ``solver``: given the same triplets and the same basis (metric-learn's own, captured from
  its fit), metric-learn's solver (``SCML._fit``) against ours (``rda_global``), with the
  objective each reaches, computed with the same formula.

Peak memory: every measurement runs in a fresh Python process. After imports, data
creation and a warm-up
fit of both estimators on 60 points (so that code pages and thread pools that the first
call of a library loads are not counted), the process resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``), notes its resident set, runs the fit once, and reports the
peak resident set (``VmHWM``) minus the resident set before: the extra memory the fit
needed at its peak, whatever allocated it (numpy, torch's CPU allocator, BLAS). One more
process per estimator reports
tracemalloc's peak, which sees numpy and Python allocations but not torch's (tracemalloc
is off in the timed and RSS runs: its own bookkeeping costs time and memory).
Timings are the best of ``--repeats`` fresh processes, the two libraries alternating (the
speed-up of each pair of runs is printed too); both libraries run single-threaded
(the benchmark machine is shared), which the script enforces before numpy/torch load.
"""

import argparse
import json
import os
import subprocess
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def make_problem(n_samples, n_features, seed=0):
    import numpy as np
    from sklearn.datasets import make_friedman1

    X, y = make_friedman1(n_samples=n_samples, n_features=n_features, noise=1.0, random_state=seed)
    classes = np.digitize(y, np.quantile(y, [0.25, 0.5, 0.75]))
    return X, y, classes


def capture_weights(estimator):
    import numpy as np

    captured = {}
    original = estimator._components_from_basis_weights

    def wrapped(basis, weights):
        captured["basis"] = np.array(basis, copy=True)
        captured["weights"] = np.ravel(weights).copy()
        return original(basis, weights)

    estimator._components_from_basis_weights = wrapped
    return captured


def direct_objective(X, triplets, basis, weights, beta, chunk=20000):
    import numpy as np

    projected = X @ basis.T
    total = 0.0
    for start in range(0, len(triplets), chunk):
        a, p, n = np.asarray(triplets[start : start + chunk]).T
        diffs = (projected[a] - projected[p]) ** 2 - (projected[a] - projected[n]) ** 2
        total += np.maximum(1 + diffs @ weights, 0).sum()
    return total / len(triplets) + beta * np.sum(weights)


def _status_kb(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_baseline():
    """Reset the kernel's peak-RSS mark and return the RSS now (kB).

    Writing 5 to /proc/self/clear_refs resets VmHWM (Linux >= 4.0), so the peak read after
    the fit is the peak *during* the fit, not one left by the data preparation.
    """
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return _status_kb("VmRSS")


def memory_peak():
    return _status_kb("VmHWM")


def warm_up_fused_kernel(args, device):
    """Compile the fused GPU kernel of the recursion for this problem's tile shape.

    Triton compiles a kernel on its first use for each tile shape (and caches it on disk,
    so a machine pays this once); the warm-up fit above has a smaller basis, hence a
    different shape. The compile time is printed, not counted in the fit.
    """
    import time

    import torch

    from sktaskmet.scml import _rda_kernel

    if not _rda_kernel.fused_kernel_available(device, 10, args.n_basis, torch.float64):
        print("fused kernel not available: the solver runs torch operations")
        return
    state = [torch.zeros(args.n_basis, dtype=torch.float64, device=device) for _ in range(4)]
    diffs = torch.zeros((1, 10, args.n_basis), dtype=torch.float64, device=device)
    start = time.perf_counter()
    constants = _rda_kernel.kernel_constants(5e-3, 1e-4, 1e-2, state[0])
    _rda_kernel.run_rda_block(diffs, *state, constants)
    torch.cuda.synchronize(device)
    print(f"fused kernel ready in {time.perf_counter() - start:.2f} s (compiled or loaded)")


def worker(task, args):
    """Runs in a fresh process: one fit, its time and its memory high-water mark."""
    import time
    import tracemalloc
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    sys.path.insert(0, ROOT)
    from metric_learn import SCML, SCML_Supervised
    from metric_learn.constraints import Constraints

    from sktaskmet import SCMLRegressor
    from sktaskmet.scml._solver import rda_global

    X, y, classes = make_problem(args.n_samples, args.n_features)
    common = dict(max_iter=args.max_iter, output_iter=500, batch_size=10, beta=1e-5)
    result = {}
    if task.startswith("solver"):
        # The triplets and basis metric-learn builds, computed outside the measurement.
        # metric-learn's own LDA basis, built without fitting (a fit would raise the memory
        # high-water mark before the measurement starts).
        builder = SCML_Supervised(n_basis=args.n_basis, random_state=0)
        basis, _ = builder._generate_bases_LDA(X, classes)
        triplets = Constraints(classes).generate_knntriplets(X, 3, 10)
        triplet_points = X[triplets]
    device = torch.device(args.device)
    # Warm-up on a tiny problem, outside the measurement: the first calls of a library page
    # in its code and set up thread pools and caches, which is not memory the fit needs.
    X_small, y_small, classes_small = make_problem(60, args.n_features, seed=1)
    SCML_Supervised(n_basis=20, random_state=0, max_iter=20, output_iter=10).fit(
        X_small, classes_small
    )
    SCMLRegressor(
        basis="lda",
        n_basis=20,
        max_iter=20,
        output_iter=10,
        random_state=0,
        device=args.device,
    ).fit(X_small, y_small)
    if device.type == "cuda":
        warm_up_fused_kernel(args, device)
        torch.cuda.reset_peak_memory_stats(device)
    baseline = memory_baseline()
    if args.tracemalloc:
        tracemalloc.start()
    start = time.perf_counter()
    if task == "estimator-metric-learn":
        model = SCML_Supervised(n_basis=args.n_basis, random_state=0, **common)
        model.fit(X, classes)
    elif task == "estimator-ours":
        model = SCMLRegressor(
            basis="lda",
            n_basis=args.n_basis,
            random_state=0,
            device=args.device,
            gamma=5e-3,
            **common,
        )
        model.fit(X, y)
    elif task == "solver-metric-learn":
        model = SCML(gamma=5e-3, random_state=0, **common)
        captured = capture_weights(model)
        model._fit(triplet_points, basis.copy(), basis.shape[0])
        weights = captured["weights"]
    elif task == "solver-ours":
        out = rda_global(
            torch.as_tensor(X, device=device),
            torch.as_tensor(triplets, device=device),
            torch.as_tensor(basis, device=device),
            gamma=5e-3,
            generator=torch.Generator(device=device).manual_seed(0),
            **{k: v for k, v in common.items()},
        )
        weights = out.coef.cpu().numpy()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else float("nan")
    peak = memory_peak()
    result.update(
        seconds=elapsed,
        rss_peak_increase_mb=(peak - baseline) / 1024.0,
        tracemalloc_peak_mb=traced_peak / 2**20,
    )
    if device.type == "cuda" and task.endswith("ours"):
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if task.startswith("solver"):
        result["objective"] = float(direct_objective(X, triplets, basis, weights, 1e-5))
        result["n_triplets"] = int(len(triplets))
    print("RESULT " + json.dumps(result))


def run_in_fresh_process(task, args, traced=False):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        task,
        "--n-samples",
        str(args.n_samples),
        "--n-features",
        str(args.n_features),
        "--max-iter",
        str(args.max_iter),
        "--n-basis",
        str(args.n_basis),
        "--device",
        args.device,
    ] + (["--tracemalloc"] if traced else [])
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = [row for row in out.splitlines() if row.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-samples", type=int, default=3000)
    parser.add_argument("--n-features", type=int, default=20)
    parser.add_argument("--max-iter", type=int, default=10000)
    parser.add_argument("--n-basis", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--levels", default="estimator,solver")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args)
        return

    import metric_learn
    import sklearn
    import torch

    print(
        f"n={args.n_samples} d={args.n_features} max_iter={args.max_iter} batch_size=10 "
        f"n_basis={args.n_basis} device={args.device}; scikit-learn {sklearn.__version__}, "
        f"metric-learn {metric_learn.__version__}, torch {torch.__version__}; "
        f"best of {args.repeats} fresh processes, single-threaded"
    )
    for level in args.levels.split(","):
        rows = {}
        # The two libraries alternate, so that a change of load on the (shared) machine hits
        # both alike; each repeat gives one paired ratio.
        all_runs = {"metric-learn": [], "ours": []}
        for _ in range(args.repeats):
            for who in all_runs:
                all_runs[who].append(run_in_fresh_process(f"{level}-{who}", args))
        for who, runs in all_runs.items():
            best = min(runs, key=lambda r: r["seconds"])
            best["rss_peak_increase_mb"] = min(r["rss_peak_increase_mb"] for r in runs)
            traced = run_in_fresh_process(f"{level}-{who}", args, traced=True)
            best["tracemalloc_peak_mb"] = traced["tracemalloc_peak_mb"]
            rows[who] = best
            extra = f"  objective {best['objective']:.5f}" if "objective" in best else ""
            cuda = f"  cuda peak {best['cuda_peak_mb']:.1f} MB" if "cuda_peak_mb" in best else ""
            print(
                f"{level:9s} {who:12s} fit {best['seconds']:7.3f} s  "
                f"peak RSS increase {best['rss_peak_increase_mb']:8.1f} MB  "
                f"tracemalloc peak {best['tracemalloc_peak_mb']:8.1f} MB{extra}{cuda}"
            )
        theirs, ours = rows["metric-learn"], rows["ours"]
        speedup = theirs["seconds"] / ours["seconds"]
        paired = [
            other["seconds"] / mine["seconds"]
            for other, mine in zip(all_runs["metric-learn"], all_runs["ours"], strict=True)
        ]
        memory = ours["rss_peak_increase_mb"] / max(theirs["rss_peak_increase_mb"], 1e-9)
        print(
            f"{level:9s} speed-up {speedup:.1f}x (target >= 10x: "
            f"{'met' if speedup >= 10 else 'MISSED'}); peak memory ratio ours/theirs "
            f"{memory:.3f} (target <= 0.1: {'met' if memory <= 0.1 else 'MISSED'})"
        )
        print(
            f"{level:9s} paired speed-ups (metric-learn / ours, run by run): "
            + ", ".join(f"{ratio:.1f}x" for ratio in paired)
        )
        if "objective" in ours:
            print(
                f"{level:9s} objective ours {ours['objective']:.5f} vs metric-learn "
                f"{theirs['objective']:.5f} on {ours['n_triplets']} triplets "
                f"({'at least as low' if ours['objective'] <= theirs['objective'] else 'HIGHER'})"
            )


if __name__ == "__main__":
    main()
