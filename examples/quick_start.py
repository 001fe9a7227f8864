"""Quick start: check the installation and run the README's first example.

Run after installing: ``python examples/quick_start.py``. It prints the versions sktaskmet
runs on and the device that ``device="auto"`` picks, then fits a
:class:`~sktaskmet.TaskMetRegressor` on the cubic top-1 problem of the TaskMet paper, where
least squares picks nearly the worst item and the learned metric fixes that (the first
example of README.rst, with the same settings), so that a broken install fails loudly.
It takes about 10 seconds on one CPU core, half of them importing torch and scikit-learn.
"""

import numpy as np
import scipy
import sklearn
import torch

import sktaskmet

print(f"sktaskmet {sktaskmet.__version__}")
print(f"numpy {np.__version__}, scipy {scipy.__version__}, scikit-learn {sklearn.__version__}")
gpu = torch.cuda.is_available()
print(f"torch {torch.__version__}; device='auto' picks {'cuda' if gpu else 'cpu'}")
# The problem is small: one torch thread avoids the overhead of intra-op parallelism.
torch.set_num_threads(1)

# The first example of README.rst, verbatim (tests/test_readme.py checks that it is).
from sklearn.linear_model import LinearRegression

from sktaskmet import TaskMetRegressor
from sktaskmet.datasets import make_cubic_topk
from sktaskmet.tasks import DecisionQualityScorer, TopK

# Decision instances of 50 items; the task picks the item of largest predicted value.
X, y, groups = make_cubic_topk(n_instances=60, n_items=50, random_state=0)
X_test, y_test, groups_test = make_cubic_topk(n_instances=100, random_state=1)
task = TopK(k=1)
score = DecisionQualityScorer(task)  # 1: optimal decisions, 0: random ones

least_squares = LinearRegression().fit(X, y)
taskmet = TaskMetRegressor(task, inner_lr=0.1, max_iter=40, random_state=0)
taskmet.fit(X, y, groups=groups)  # device="auto": a CUDA GPU when torch sees one
for name, model in [("least squares", least_squares), ("TaskMet", taskmet)]:
    quality = score(model, X_test, y_test, groups=groups_test)
    print(f"{name}: decision quality {quality:.2f}")
