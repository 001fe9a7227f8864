#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one run: the CUDA tests, then the GPU benchmarks.
#
#     OUT=/tmp/gpu bash benchmarks/gpu_checks.sh
#
# Each step has its own time limit, so that one slow step cannot take the others' time;
# every step's output is kept in $OUT (default ./gpu_checks_out). ONLY="name ...", when set,
# runs the named steps alone (say, ONLY="environment cuda_tests"). A wheel folder .whl/ in the
# repository root, when present, is installed first (to run the scikit-learn version of the
# CPU figures); the package itself is used from the checkout.
set -u
OUT=${OUT:-gpu_checks_out}
ONLY=${ONLY:-}
mkdir -p "$OUT"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then
        return
    fi
    echo "== $name ($(date -u +%H:%M:%S), limit ${limit} s): $*"
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    echo "== $name: exit $? at $(date -u +%H:%M:%S)"
    tail -n 25 "$OUT/$name.txt"
}

step environment 60 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv; python3 -c "import torch, sklearn, numpy; print(torch.__version__, \
    torch.version.cuda, torch.cuda.get_device_name(), sklearn.__version__, numpy.__version__)"'
step cuda_tests 150 python3 -m pytest -q -m cuda -p no:cacheprovider tests
step discovery_cnn_speed_cuda 90 python3 benchmarks/bench_discovery_cnn.py --part speed \
    --device cuda --steps 5 --batch-size 32
# Our fits on the GPU; the Euclidean baseline's brute-force search on all host cores.
step scml_scale_cuda 240 env OMP_NUM_THREADS=16 python3 benchmarks/bench_scml_scale.py \
    --device cuda --dtype float32 --sizes 3000x384 30000x384 100000x768 --timeout 150
# Decision-focused fits on PyEPO's problems: one CPU thread against the GPU, same process.
step decision_device 150 python3 benchmarks/bench_decision_device.py --n-train 1000 --repeats 3
step decision_device_10k 150 python3 benchmarks/bench_decision_device.py --n-train 10000 \
    --repeats 1
step decision_device_sp800 180 python3 benchmarks/bench_decision_device.py \
    --problems shortest_path --methods taskmet --taskmet-max-iter 800 --n-train 1000 10000 \
    --repeats 2
