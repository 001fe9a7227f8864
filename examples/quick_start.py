"""Quick start: check the installation and fit two estimators on small problems.

Run after installing: ``python examples/quick_start.py`` (a few seconds on one CPU core).
It prints the versions sktaskmet runs on and the device that ``device="auto"`` resolves to,
then fits

* a :class:`~sktaskmet.TaskMetRegressor` on the cubic top-1 problem of the TaskMet paper,
  where least squares picks nearly the worst item and the learned metric fixes that, and
* a :class:`~sktaskmet.KernelSurrogate` on a synthetic set function with interacting tasks,

so that a broken install fails loudly.
"""

import numpy as np
import scipy
import sklearn
import torch
from sklearn.linear_model import LinearRegression

import sktaskmet
from sktaskmet import KernelSurrogate, TaskMetRegressor
from sktaskmet._backend import resolve_device
from sktaskmet.datasets import make_cubic_topk, make_task_interactions
from sktaskmet.tasks import TopK

print(f"sktaskmet {sktaskmet.__version__}")
print(f"numpy {np.__version__}, scipy {scipy.__version__}, scikit-learn {sklearn.__version__}")
print(f"torch {torch.__version__}; device='auto' resolves to {resolve_device('auto')}")
torch.set_num_threads(1)

# TaskMet: a straight line that must pick the best of 50 items on a cubic.
X, y, groups = make_cubic_topk(n_instances=60, n_items=50, random_state=0)
X_test, y_test, groups_test = make_cubic_topk(n_instances=100, n_items=50, random_state=1)
task = TopK(k=1)
least_squares = LinearRegression().fit(X, y).predict(X_test)
dq_least_squares = task.normalized_decision_quality(
    torch.as_tensor(least_squares.reshape(-1, 50, 1)),
    torch.as_tensor(y_test.reshape(-1, 50, 1)),
)
taskmet = TaskMetRegressor(
    task,
    inner_lr=0.1,
    max_iter=80,
    validation_fraction=0.5,
    n_iter_no_change=40,
    random_state=0,
).fit(X, y, groups=groups)
print(
    "cubic top-1, normalised decision quality (1 = optimal, 0 = random): "
    f"least squares {dq_least_squares:.3f}, "
    f"TaskMet {taskmet.task_score(X_test, y_test, groups_test):.3f}"
)

# Kernel surrogate: attribute a set function with synergy, antagonism and XOR to its tasks.
S, values, F = make_task_interactions(n_tasks=16, n_subsets=100, p=0.5, random_state=0)
surrogate = KernelSurrogate(cv=5).fit(S, values)
estimated, exact = surrogate.attribution(method="loo"), F.loo()
print(
    "kernel surrogate, leave-one-out attribution vs exact: Pearson "
    f"{np.corrcoef(estimated, exact)[0, 1]:.3f}"
)
