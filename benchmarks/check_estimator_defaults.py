"""scikit-learn's ``check_estimator`` on the slow-default estimators, with default parameters.

``tests/test_common.py`` gives ``TaskMetRegressor``, ``AgreementScorer`` and ``TaskDiscovery``
small settings so that the suite stays fast; this script runs every check on
``Est()`` exactly as a user would construct it and prints, per estimator, the checks that
passed, failed or were skipped and the CPU time. Run with one thread::

    OMP_NUM_THREADS=1 python benchmarks/check_estimator_defaults.py [ClassName ...]
"""

import platform
import sys
import time
from collections import Counter

import torch
from sklearn.utils.estimator_checks import check_estimator

import sktaskmet

DEFAULT_ESTIMATORS = ["TaskMetRegressor", "AgreementScorer", "TaskDiscovery"]


def run(name):
    estimator = getattr(sktaskmet, name)()
    start = time.process_time()
    wall = time.perf_counter()
    results = check_estimator(estimator, on_fail=None, on_skip=None)
    cpu = time.process_time() - start
    counts = Counter(result["status"] for result in results)
    print(f"{name}(): {dict(counts)} in {cpu:.0f} s CPU, {time.perf_counter() - wall:.0f} s wall")
    for result in results:
        if result["status"] == "failed":
            print(f"  failed {result['check_name']}: {result['exception']!r}"[:300])
    return counts.get("failed", 0)


def main(names):
    torch.set_num_threads(1)
    print(f"sktaskmet {sktaskmet.__version__}, torch {torch.__version__}, {platform.processor()}")
    failures = sum(run(name) for name in names or DEFAULT_ESTIMATORS)
    print(f"total failed checks: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
