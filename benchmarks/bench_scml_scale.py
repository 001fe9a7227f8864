"""SCMLRegressor at embedding scale: fit time, peak memory and RMSE against Euclidean 5-NN.

Run (each fit in a fresh process, one thread)::

    nice -n 10 python benchmarks/bench_scml_scale.py --sizes 3000x384 30000x384 100000x768

Data: X ~ N(0, I) of shape (n, d); y = sin(pi z1 / 2) + z2^2 / 2 + z3 z4 + z5 + 0.3 noise
with z = X U for 5 random orthonormal directions U; the last 20 % of rows are held out.
``--float32`` fits on float32 inputs (as text embeddings usually are). Peak memory is the
process's peak resident set (resource.getrusage maxrss) during the fit minus the resident
set before it.
"""

import argparse
import json
import os
import subprocess
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np, torch
torch.set_num_threads(1)
from sklearn.neighbors import KNeighborsRegressor
from sktaskmet import SCMLRegressor

def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024

n, d, float32 = {n}, {d}, {float32}
rng = np.random.RandomState(0)
X = rng.standard_normal((n, d))
U, _ = np.linalg.qr(rng.standard_normal((d, 5)))
z = X @ U
y = np.sin(np.pi * z[:, 0] / 2) + 0.5 * z[:, 1] ** 2 + z[:, 2] * z[:, 3] + z[:, 4]
y = y + 0.3 * rng.standard_normal(n)
m = int(0.8 * n)
if float32:
    X = X.astype(np.float32)
rmse = lambda p: float(np.sqrt(np.mean((p - y[m:]) ** 2)))
euclidean = rmse(KNeighborsRegressor(5).fit(X[:m], y[:m]).predict(X[m:]))
SCMLRegressor(max_iter=10, device="cpu").fit(X[:60], y[:60])  # warm-up
before = rss_mb()
start = time.perf_counter()
model = SCMLRegressor(device="cpu", random_state=0).fit(X[:m], y[:m])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
result = dict(n=n, d=d, fit_s=seconds, peak_mb=peak - before, euclidean=euclidean)
result.update(rmse=rmse(model.predict(X[m:])), active=int((model.weights_ > 0).sum()))
print(json.dumps(dict(result, n_basis=int(model.basis_.shape[0]))))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["3000x384", "30000x384"])
    parser.add_argument("--float32", action="store_true")
    args = parser.parse_args()
    for size in args.sizes:
        n, d = (int(v) for v in size.split("x"))
        code = CHILD.format(root=ROOT, n=n, d=d, float32=args.float32)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{size}: failed\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        gain = 1 - r["rmse"] / r["euclidean"]
        print(
            f"n={n:6d} d={d:4d} fit {r['fit_s']:7.1f} s  peak RSS increase {r['peak_mb']:7.0f} MB  "
            f"RMSE {r['rmse']:.3f} vs Euclidean 5-NN {r['euclidean']:.3f} "
            f"({100 * gain:.1f} % lower)"
            f"  active bases {r['active']}/{r['n_basis']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
