"""Set functions for the subset-evaluation tests, importable by worker and child processes.

Each call leaves one empty file in ``calls_dir``, so a test counts how many subsets were
really computed (in any process) by counting files.
"""

import os
import signal
import time
import uuid

import numpy as np

WEIGHTS = np.arange(1.0, 9.0)


def record_call(calls_dir, s):
    name = f"{''.join(str(int(v)) for v in s)}-{os.getpid()}-{uuid.uuid4().hex}"
    open(os.path.join(calls_dir, name), "w").close()


def count_calls(calls_dir):
    return len(os.listdir(calls_dir))


def weighted_sum(s, calls_dir, sleep=0.0, fail_on=None):
    """``s @ WEIGHTS``; raises on the subset equal to ``fail_on``."""
    record_call(calls_dir, s)
    time.sleep(sleep)
    if fail_on is not None and np.array_equal(s, fail_on):
        raise RuntimeError("this subset is broken")
    return float(s @ WEIGHTS[: s.size])


def kill_own_worker_once(s, calls_dir, marker, victim):
    """``s @ WEIGHTS``, but the first call on ``victim`` kills the process it runs in."""
    record_call(calls_dir, s)
    time.sleep(0.05)
    if np.array_equal(s, victim) and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return float(s @ WEIGHTS[: s.size])
