"""
=====================================================
Portfolio optimisation with task-driven metrics
=====================================================

Each day, a predictor estimates the next-day returns of 50 assets from per-asset
features, and a Markowitz portfolio is built from the predictions:

.. math::
    x^\\star(\\hat y) = \\arg\\max_{x \\ge 0,\\ 1^\\top x = 1}
        \\hat y^\\top x - \\lambda\\, x^\\top \\Sigma x .

We compare three ways of training the same linear predictor on the synthetic
factor-model returns of :func:`~sktaskmet.datasets.make_portfolio`:

* least squares (the two-stage "MSE" baseline),
* decision-focused learning (:class:`~sktaskmet.DFLRegressor`: task loss plus the
  squared error),
* TaskMet (:class:`~sktaskmet.TaskMetRegressor`: least squares under a learned
  conditional metric, the metric trained with implicit gradients of the task loss).

The task, :class:`~sktaskmet.tasks.Portfolio`, solves the quadratic programme on the
simplex in batch and differentiates its solution through the KKT conditions on the
active set. Decisions are scored by the normalised decision quality: 1 for the
portfolio built from the true returns, 0 for a random portfolio. The settings here are
small so that the example runs in seconds; ``benchmarks/bench_taskmet_problems.py``
runs the full comparison over several seeds.
"""

# %%
# Data and task
# -------------
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.linear_model import LinearRegression

from sktaskmet import DFLRegressor, TaskMetRegressor
from sktaskmet.datasets import make_portfolio
from sktaskmet.tasks import DecisionQualityScorer, Portfolio

n_assets, n_train = 50, 60
X, y, groups, covariance = make_portfolio(
    n_days=2 * n_train, n_assets=n_assets, return_covariance=True, random_state=0
)
train = groups < n_train
X_train, y_train, groups_train = X[train], y[train], groups[train]
X_test, y_test, groups_test = X[~train], y[~train], groups[~train]
task = Portfolio(risk_aversion=0.1, covariance=covariance)
decision_quality = DecisionQualityScorer(task)


def by_day(values):
    return torch.as_tensor(values).reshape(-1, n_assets, 1)


# %%
# Three predictors
# ----------------
common = dict(validation_fraction=0.2, random_state=0, device="cpu")
models = {
    "MSE": LinearRegression(),
    "DFL": DFLRegressor(task, alpha=1.0, learning_rate=0.1, max_iter=100, **common),
    "TaskMet": TaskMetRegressor(
        task,
        inner_lr=0.1,
        inner_steps_first=200,
        inner_steps=10,
        metric_hidden_layer_sizes=(32,),
        learning_rate=1e-2,
        max_iter=20,
        **common,
    ),
}
scores = {}
for name, model in models.items():
    if name == "MSE":
        model.fit(X_train, y_train)
    else:
        model.fit(X_train, y_train, groups=groups_train)
    scores[name] = (
        decision_quality(model, X_test, y_test, groups=groups_test),
        float(np.mean((model.predict(X_test) - y_test) ** 2)),
    )
    print(f"{name:8s} normalised DQ {scores[name][0]:.3f}   test MSE {scores[name][1]:.3f}")

# %%
# Decision quality and prediction error
# -------------------------------------
# TaskMet keeps the prediction error of least squares (it is still a least-squares
# fit, under another metric) while its decisions are at least as good as those of the
# end-to-end trained DFL predictor.
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
names = list(scores)
axes[0].bar(names, [scores[n][0] for n in names], color=["grey", "tab:orange", "tab:blue"])
axes[0].set_ylabel("normalised decision quality")
axes[0].set_ylim(min(0.0, min(s[0] for s in scores.values())), 1.0)
axes[1].bar(names, [scores[n][1] for n in names], color=["grey", "tab:orange", "tab:blue"])
axes[1].set_ylabel("test MSE (percent$^2$)")
fig.tight_layout()

# %%
# The portfolios of one test day
# ------------------------------
day = slice(0, n_assets)
fig, ax = plt.subplots(figsize=(9, 3.5))
best = task.decide(by_day(y_test[day]))[0].numpy()
order = np.argsort(-best)[:10]
width = 0.2
ax.bar(np.arange(10) - 1.5 * width, best[order], width, label="true returns", color="k")
for offset, name in zip((-0.5, 0.5, 1.5), names, strict=True):
    weights = task.decide(by_day(models[name].predict(X_test[day])))[0].numpy()
    ax.bar(np.arange(10) + offset * width, weights[order], width, label=name)
ax.set_xlabel("asset (the 10 largest weights of the optimal portfolio)")
ax.set_ylabel("portfolio weight")
ax.legend()
fig.tight_layout()
plt.show()
