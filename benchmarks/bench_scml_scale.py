"""SCMLRegressor at embedding scale: fit time, peak memory and RMSE, against Euclidean 5-NN
and (optionally) metric-learn's SCML_Supervised on the same data, in one run.

Run (each fit in a fresh process, one thread)::

    nice -n 10 python benchmarks/bench_scml_scale.py --sizes 3000x384 30000x384
    nice -n 10 python benchmarks/bench_scml_scale.py --sizes 3000x384 --fit-dtype float32 float64
    # side by side with metric-learn 0.7.0 (needs scikit-learn 1.7 in the same environment):
    nice -n 10 python benchmarks/bench_scml_scale.py --sizes 3000x384 --metric-learn
    # our fits on a GPU (the baselines stay on the CPU):
    python benchmarks/bench_scml_scale.py --device cuda --dtype float32 --sizes 30000x384

Data: X ~ N(0, I) of shape (n, d); y = sin(pi z1 / 2) + z2^2 / 2 + z3 z4 + z5 + 0.3 noise
with z = X U for 5 random orthonormal directions U; the last 20 % of rows are held out.
``--dtype`` gives the dtypes X is passed in (float32: as text embeddings usually are);
``--fit-dtype`` the ``dtype`` parameters of our estimators to fit with, side by side (two
of them: their ratios are printed). ``--data-seeds`` draws the data (X, U and the noise)
with each seed in turn and ends with a table of the RMSE gains per draw;
``--device cuda`` fits our estimators on the GPU (the peak of CUDA's allocator during the
fit is printed too; the CPU figures then cover the host side only);
``--subspace scatter`` also fits the regressor with the previous high-dimensional basis,
whose discriminant subspace took the triplet scatter's directions where the default takes
the target's principal Hessian directions (see the user guide)::

    nice -n 10 python benchmarks/bench_scml_scale.py --sizes 3000x384 --dtype float32 \
        --data-seeds 0 1 2 3 4 5 6 7 8 9 --subspace hessian scatter

Measurements, each in a fresh process after the imports, the data and a warm-up fit on 60
points: wall time and CPU time (``time.process_time``) of ``fit``; the peak resident set
during the fit (the kernel's mark is reset through ``/proc/self/clear_refs`` just before
it, then ``VmHWM`` is read), both as the whole process and as the increase over the
resident set before the fit; RMSE on the held-out rows of 5-NN regression in the learned
metric (``SCMLRegressor.predict``; for metric-learn, ``KNeighborsRegressor(5)`` on its
``transform``). With ``--metric-learn``, the class-label metrics are fitted too, all with
default parameters on the target cut into ``--classes`` quantile classes: this package's
``SCMLClassifier`` and metric-learn's ``SCML_Supervised`` (its default basis, local LDA,
and iterations); each is scored by the same ``KNeighborsRegressor(5)`` (RMSE on y) and
``KNeighborsClassifier(5)`` (accuracy on the classes) on its ``transform``, as is the
identity map (Euclidean neighbours). For the regressor, also the share of the 5 true
directions inside the span of its basis (their squared projections on it, summed, over 5;
a random subspace of r dimensions captures r / d).
A process that runs past ``--timeout`` seconds (metric-learn's: ``--ml-timeout``) is
killed and reported unfinished; metric-learn's fit also runs under the address-space limit
``--max-gb`` (which keeps one fit from taking the shared machine's memory), and a fit that
hits it is reported as a MemoryError.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, resource, sys, time, warnings
sys.path.insert(0, {root!r})
warnings.filterwarnings("ignore")
import numpy as np

def status_mb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

n, d, dtype, who, n_classes = {n}, {d}, {dtype!r}, {who!r}, {n_classes}
device = {device!r}
if {subspace!r} == "scatter":
    sys.path.insert(0, {root!r} + "/benchmarks")
    import contextlib
    from bench_scml_scale import previous_subspace
    # Kept referenced, so that the patch holds for the rest of this process.
    held = contextlib.ExitStack()
    held.enter_context(previous_subspace())
# The estimators' own default unless a fit dtype is asked for.
options = {{}} if {fit_dtype!r} == "default" else dict(dtype={fit_dtype!r})
rng = np.random.RandomState({data_seed})
X = rng.standard_normal((n, d))
U, _ = np.linalg.qr(rng.standard_normal((d, 5)))
z = X @ U
y = np.sin(np.pi * z[:, 0] / 2) + 0.5 * z[:, 1] ** 2 + z[:, 2] * z[:, 3] + z[:, 4]
y = y + 0.3 * rng.standard_normal(n)
m = int(0.8 * n)
X = X.astype(dtype)
rmse = lambda p: float(np.sqrt(np.mean((p - y[m:]) ** 2)))
result = dict(n=n, d=d, who=who, dtype=dtype)
classes = np.digitize(y, np.quantile(y[:m], np.linspace(0, 1, n_classes + 1)[1:-1]))
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
if who in ("ours", "ours-classifier"):
    import torch
    torch.set_num_threads(1)
    from sktaskmet import SCMLClassifier, SCMLRegressor
    SCMLRegressor(max_iter=10, device=device).fit(X[:60], y[:60])  # warm-up
    SCMLClassifier(max_iter=10, device=device).fit(X[:60], classes[:60])
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
elif who == "metric-learn":
    from metric_learn import SCML_Supervised
    SCML_Supervised(n_basis=20, max_iter=20, output_iter=10, random_state=0).fit(
        X[:60], classes[:60])  # warm-up
    # The address-space limit applies to the fit only (set after the imports and warm-up).
    limit = int({max_gb} * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
with open("/proc/self/clear_refs", "w") as marks:
    marks.write("5")
before = status_mb("VmRSS")
print("START", flush=True)
start, cpu = time.perf_counter(), time.process_time()
if who == "ours":
    model = SCMLRegressor(device=device, random_state=0, **options).fit(X[:m], y[:m])
elif who == "ours-classifier":
    model = SCMLClassifier(device=device, random_state=0, **options).fit(X[:m], classes[:m])
elif who == "metric-learn":
    model = SCML_Supervised(random_state=0).fit(X[:m], classes[:m])
else:
    model = KNeighborsRegressor(5).fit(X[:m], y[:m])
if who.startswith("ours") and cuda:
    torch.cuda.synchronize()
    result.update(cuda_peak_mb=torch.cuda.max_memory_allocated() / 2**20)
result.update(fit_s=time.perf_counter() - start, cpu_s=time.process_time() - cpu)
peak = status_mb("VmHWM")
result.update(peak_mb=peak, increase_mb=peak - before)
if who == "ours":
    result.update(rmse=rmse(model.predict(X[m:])), active=int((model.weights_ > 0).sum()))
    result.update(n_basis=int(model.basis_.shape[0]))
    # Share of the 5 true directions inside the span of the basis (1: all of them).
    _, sv, vt = np.linalg.svd(np.asarray(model.basis_, dtype=np.float64), full_matrices=False)
    span = vt[sv > 1e-6 * sv[0]]
    result.update(captured=float(np.sum((span @ U) ** 2) / U.shape[1]), span=len(span))
else:
    # The same 5-NN regressor and 5-NN vote for every class-label metric (and, with the
    # identity in place of a learned map, for Euclidean neighbours).
    train, test = (X[:m], X[m:]) if who == "euclidean" else (
        model.transform(X[:m]), model.transform(X[m:]))
    result.update(rmse=rmse(KNeighborsRegressor(5).fit(train, y[:m]).predict(test)))
    vote = KNeighborsClassifier(5).fit(train, classes[:m]).predict(test)
    result.update(accuracy=float(np.mean(vote == classes[m:])))
if who == "ours-classifier":
    result.update(active=int((model.weights_ > 0).sum()), n_basis=int(model.basis_.shape[0]))
print("RESULT " + json.dumps(result), flush=True)
"""


@contextlib.contextmanager
def previous_subspace():
    """``SCMLRegressor``'s previous high-dimensional basis while the context lasts.

    Its discriminant subspace is then built as the classifier's is, without the continuous
    target: the triplet scatter's directions in place of the principal Hessian directions.
    """
    import sktaskmet.scml._estimator as estimator

    with_target = estimator.make_basis
    estimator.make_basis = lambda *args, target=None, **kwargs: with_target(*args, **kwargs)
    try:
        yield
    finally:
        estimator.make_basis = with_target


def run_child(
    n, d, dtype, who, args, timeout, fit_dtype="default", data_seed=0, subspace="hessian"
):
    """One fit in a fresh process; a dict of figures, or of why there are none."""
    code = CHILD.format(
        device=args.device,
        data_seed=data_seed,
        subspace=subspace,
        root=ROOT,
        n=n,
        d=d,
        dtype=dtype,
        who=who,
        fit_dtype=fit_dtype,
        n_classes=args.classes,
        max_gb=args.max_gb,
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return dict(failed=f"killed at the {timeout:g} s time limit (whole process), unfinished")
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    fit_started = "START" in out.splitlines()
    reason = "MemoryError" if "MemoryError" in err else f"exit code {process.returncode}"
    if fit_started and "MemoryError" in err:
        reason += f" at the {args.max_gb:g} GB address-space limit"
    return dict(failed=f"{reason}: {err.strip().splitlines()[-1][:200] if err.strip() else ''}")


def describe(r):
    if "failed" in r:
        return r["failed"]
    text = (
        f"fit {r['fit_s']:7.1f} s (CPU {r['cpu_s']:7.1f} s)  peak RSS {r['peak_mb']:6.0f} MB "
        f"(+{r['increase_mb']:5.0f} MB)  RMSE {r['rmse']:.3f}"
    )
    if "cuda_peak_mb" in r:
        text += f"  CUDA peak {r['cuda_peak_mb']:.0f} MB"
    if "accuracy" in r:
        text += f"  5-NN class accuracy {r['accuracy']:.3f}"
    if "n_basis" in r:
        text += f"  active bases {r['active']}/{r['n_basis']}"
    if "captured" in r:
        text += f"  true directions in the basis span {r['captured']:.2f} ({r['span']} dims)"
    return text


def compare(label, ours, theirs):
    """Print metric-learn's cost over ours and the quality ratios, when both finished."""
    if "failed" in ours or "failed" in theirs:
        return
    print(
        f"{label} vs SCML_Supervised: speed-up {theirs['fit_s'] / ours['fit_s']:.1f}x wall, "
        f"{theirs['cpu_s'] / ours['cpu_s']:.1f}x CPU; peak RSS ours/theirs "
        f"{ours['peak_mb'] / theirs['peak_mb']:.3f} (increase "
        f"{ours['increase_mb'] / theirs['increase_mb']:.3f}); RMSE ours/theirs "
        f"{ours['rmse'] / theirs['rmse']:.3f}",
        flush=True,
    )


def run_size(n, d, dtype, args, data_seed, gains):
    """Euclidean 5-NN, SCMLRegressor and, with --metric-learn, the class-label fits.

    ``gains[(fit_dtype, subspace)]`` collects the RMSE gains over Euclidean 5-NN.
    """
    label = f"{n}x{d} {dtype}" + (f" data seed {data_seed}" if len(args.data_seeds) > 1 else "")
    euclidean = run_child(n, d, dtype, "euclidean", args, args.timeout, data_seed=data_seed)
    print(f"{label} Euclidean 5-NN: {describe(euclidean)}", flush=True)
    fits = {}
    for fit_dtype in args.fit_dtype:
        for subspace in args.subspace:
            ours = run_child(
                n, d, dtype, "ours", args, args.timeout, fit_dtype, data_seed, subspace
            )
            name = f"SCMLRegressor(dtype={fit_dtype})" + (
                "" if subspace == "hessian" else f" with the {subspace} subspace"
            )
            print(f"{label} {name}: {describe(ours)}", flush=True)
            if subspace == args.subspace[0]:
                fits[fit_dtype] = ours
            if "rmse" in ours and "rmse" in euclidean:
                gain = 1 - ours["rmse"] / euclidean["rmse"]
                gains.setdefault((fit_dtype, subspace), []).append(100 * gain)
                print(f"{label}   RMSE {100 * gain:.1f} % below Euclidean 5-NN", flush=True)
    if len(fits) == 2 and not any("failed" in r for r in fits.values()):
        first, second = (fits[k] for k in args.fit_dtype)
        ratio = {
            key: first[key] / second[key] for key in ("cpu_s", "peak_mb", "increase_mb", "rmse")
        }
        print(
            f"{label}   dtype={args.fit_dtype[0]} over dtype={args.fit_dtype[1]}: CPU time "
            f"{ratio['cpu_s']:.2f}, peak RSS {ratio['peak_mb']:.2f} (increase "
            f"{ratio['increase_mb']:.2f}), RMSE {ratio['rmse']:.3f}",
            flush=True,
        )
    if not args.metric_learn:
        return
    ours = fits[args.fit_dtype[0]]
    classifier = run_child(
        n, d, dtype, "ours-classifier", args, args.timeout, args.fit_dtype[0], data_seed
    )
    print(f"{label} SCMLClassifier: {describe(classifier)}", flush=True)
    theirs = run_child(n, d, dtype, "metric-learn", args, args.ml_timeout, data_seed=data_seed)
    print(f"{label} SCML_Supervised: {describe(theirs)}", flush=True)
    compare(f"{label}   SCMLRegressor", ours, theirs)
    compare(f"{label}   SCMLClassifier", classifier, theirs)


def print_gains(label, seeds, gains):
    """RMSE gain over Euclidean 5-NN per data seed, with the mean and the worst draw."""
    print(f"{label}: RMSE gain over Euclidean 5-NN (%) per data seed")
    print(f"{'':34s}" + "".join(f"{s:>6d}" for s in seeds) + "  mean  worst  >=15%")
    for (fit_dtype, subspace), values in gains.items():
        name = f"dtype={fit_dtype}, {subspace} subspace"
        row = "".join(f"{v:6.1f}" for v in values)
        met = sum(v >= 15 for v in values)
        print(
            f"{name:34s}{row}{statistics.mean(values):6.1f}{min(values):7.1f}  {met}/{len(values)}",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["3000x384", "30000x384"])
    parser.add_argument("--dtype", nargs="+", default=["float64"], choices=["float64", "float32"])
    parser.add_argument(
        "--fit-dtype",
        nargs="+",
        default=["default"],
        choices=["default", "auto", "float32", "float64"],
        help="the dtype parameter of our estimators (default: leave it at its default)",
    )
    parser.add_argument("--data-seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--subspace",
        nargs="+",
        default=["hessian"],
        choices=["hessian", "scatter"],
        help="discriminant subspace of the regressor's basis above 64 features",
    )
    parser.add_argument("--device", default="cpu", help="device of our estimators")
    parser.add_argument("--metric-learn", action="store_true", help="also fit SCML_Supervised")
    parser.add_argument("--classes", type=int, default=4, help="quantile classes of y")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per process")
    parser.add_argument("--ml-timeout", type=float, default=420.0, help="metric-learn's seconds")
    parser.add_argument("--max-gb", type=float, default=12.0, help="metric-learn address space")
    args = parser.parse_args()
    import sklearn
    import torch

    versions = f"scikit-learn {sklearn.__version__}, torch {torch.__version__}"
    if args.metric_learn:
        import metric_learn

        versions += f", metric-learn {metric_learn.__version__}"
    if args.device != "cpu":
        versions += f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""
        versions += f"; our fits on {args.device}"
    print(f"{versions}; one thread; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for size in args.sizes:
        n, d = (int(v) for v in size.split("x"))
        for dtype in args.dtype:
            gains = {}
            for data_seed in args.data_seeds:
                run_size(n, d, dtype, args, data_seed, gains)
            if len(args.data_seeds) > 1:
                print_gains(f"{size} {dtype}", args.data_seeds, gains)


if __name__ == "__main__":
    main()
