"""
=====================================================
TaskMet on the cubic top-1 problem: learning a metric
=====================================================

Each decision instance has 50 items with one feature :math:`x \\sim U[-1, 1]` and value
:math:`y = 10(x^3 - 0.65x)`; the task picks the item with the largest *predicted* value.
The predictor is a straight line, which cannot follow the cubic.

* Least squares fits a line with a negative slope: it ranks the items backwards and picks
  nearly the worst one.
* :class:`~sktaskmet.TaskMetRegressor` keeps fitting a line with a squared error, but
  learns a metric :math:`\\Lambda(x)` that weights the errors. Implicit gradients of the
  task loss move the weight to where the fit decides which item is chosen, and the line
  gets a positive slope: near-optimal choices.

This example uses a smaller problem and fewer steps than the paper so that it runs in
seconds; ``benchmarks/bench_taskmet_cubic.py`` runs the full-size table.
"""

# %%
# Data: instances of 50 items, one group id per instance
# ------------------------------------------------------
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.linear_model import LinearRegression

from sktaskmet import TaskMetRegressor
from sktaskmet.datasets import make_cubic_topk
from sktaskmet.plotting import MetricCurveDisplay
from sktaskmet.tasks import DecisionQualityScorer, TopK

# The tensors here are small (50 items per instance): one thread avoids the overhead of
# torch's intra-op parallelism, which only pays off on large tensors.
torch.set_num_threads(1)

X, y, groups = make_cubic_topk(n_instances=100, n_items=50, random_state=0)
X_test, y_test, groups_test = make_cubic_topk(n_instances=200, n_items=50, random_state=1)
task = TopK(k=1)

# %%
# Least squares, then decide
# --------------------------
# :class:`~sktaskmet.tasks.DecisionQualityScorer` scores any regressor by the decisions
# that its predictions lead to on each test instance.
least_squares = LinearRegression().fit(X, y)
dq_mse = DecisionQualityScorer(task)(least_squares, X_test, y_test, groups=groups_test)
print(f"least squares: slope {least_squares.coef_[0]:.2f}, decision quality {dq_mse:.3f}")

# %%
# TaskMet
# -------
# Inner problem: the line is fitted with the metric-weighted squared error by warm-started
# Adam (lr 0.1 as in the paper). Outer problem: the metric network is updated with
# implicit gradients of the soft top-1 task loss. Half of the instances are held out to
# pick the best iteration.
model = TaskMetRegressor(
    task,
    inner_lr=0.1,
    max_iter=150,
    validation_fraction=0.5,
    n_iter_no_change=60,
    device="cpu",
    random_state=0,
)
model.fit(X, y, groups=groups)
print(
    f"TaskMet: {model.n_iter_} outer steps (best {model.best_iteration_}), "
    f"normalised decision quality {model.task_score(X_test, y_test, groups_test):.3f}"
)
values = model.metric_values(np.array([[-1.0], [0.0], [1.0]]))[:, 0, 0]
print("learned Lambda at x = -1, 0, 1:", np.round(values, 2))

# %%
# Predictions and the learned metric
# ----------------------------------
# The dashed curve is :math:`\Lambda(x)` (right axis). The metric grows towards
# :math:`x = 1`, where the chosen items are, as in the paper's figure: the steep end of the
# cubic then sets the slope of the line, which becomes positive and ranks the items
# correctly. The cubic is odd, so the other steep end (:math:`x = -1`) would give a positive
# slope as well; what tips the balance is the soft top-k's cost normalisation, which makes
# the relaxed task loss prefer the level of predictions that the :math:`x = 1` end gives
# (see the user guide on decision tasks).
fig, ax = plt.subplots(figsize=(7, 4))
display = MetricCurveDisplay.from_estimator(model, X_test, y_test, ax=ax)
(least_squares_line,) = ax.plot(
    display.x,
    least_squares.predict(display.x[:, None]),
    color="0.3",
    ls=":",
    lw=2,
    label="least squares",
)
handles = [*display.lines_.values(), least_squares_line]
ax.legend(handles, [h.get_label() for h in handles], loc="upper left")
ax.set_title("TaskMet on the cubic top-1 problem")
plt.tight_layout()
plt.show()
