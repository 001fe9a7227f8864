"""
=========================================================
Learning which state dimensions matter for the reward
=========================================================

In model-based reinforcement learning, a dynamics model predicts the next state of the
system; the planner only cares about the dimensions that drive the reward. Here a small
network learns CartPole dynamics (next state from state and action) from transitions in
which the state is padded with 10 distracting N(0, 1) dimensions
(:func:`~sktaskmet.datasets.make_cartpole_distractors`). The task,
:class:`~sktaskmet.tasks.StateReward`, is the error of the reward computed from the
predicted next state; the reward depends only on the cart position ``x`` and the pole
angle ``theta``.

:class:`~sktaskmet.TaskMetRegressor` with a diagonal metric learns one weight per
predicted dimension: the predictor is trained by weighted least squares and the weights
by implicit gradients of the reward error. The learned weights should single out the
reward-relevant dimensions, as in the TaskMet paper's CartPole experiment. The pole angle
varies over a small range (a few hundredths of a radian from one step to the next), so
least squares barely looks at it, although the reward is most sensitive to it.
The settings are small so that the example runs quickly;
``benchmarks/bench_taskmet_problems.py`` repeats the experiment over several seeds.
"""

# %%
# Transitions with distractors
# ----------------------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.neural_network import MLPRegressor

from sktaskmet import TaskMetRegressor
from sktaskmet.datasets import make_cartpole_distractors
from sktaskmet.plotting import MetricWeightsDisplay
from sktaskmet.tasks import DecisionQualityScorer, StateReward

n_distractors = 10
X, y = make_cartpole_distractors(n_samples=1500, n_distractors=n_distractors, random_state=0)
X_train, y_train, X_test, y_test = X[:1000], y[:1000], X[1000:], y[1000:]
names = ["x", "x_dot", "theta", "theta_dot"] + [f"d{i}" for i in range(n_distractors)]
task = StateReward(dims=(0, 2), scales=(2.4, 0.2095))

# %%
# TaskMet with a diagonal metric
# ------------------------------
model = TaskMetRegressor(
    task,
    predictor="mlp",
    hidden_layer_sizes=(32,),
    metric="diagonal",
    inner_lr=1e-2,
    inner_steps_first=200,
    inner_steps=20,
    implicit_solver="normal_cg",
    learning_rate=5e-2,
    batch_size=100,
    inner_batch_size=50,
    max_iter=60,
    validation_fraction=0.2,
    n_iter_no_change=None,
    random_state=0,
    device="cpu",
).fit(X_train, y_train)

weights = np.diag(model.get_mahalanobis_matrix())
print("learned weight of each predicted dimension:")
for name, weight in zip(names, weights, strict=True):
    print(f"  {name:10s} {weight:.3f}")

# %%
# The learned weights
# -------------------
# The pole angle ``theta`` gets by far the largest weight and the cart position ``x`` the
# second largest among the state dimensions: the two the reward depends on. The velocities
# and the ten distractors stay near the weight that the normalisation gives on average.
fig, ax = plt.subplots(figsize=(9, 3.5), layout="constrained")
MetricWeightsDisplay.from_estimator(model, X_test, output_names=names, ax=ax)
ax.set_title("learned diagonal of the metric (reward-relevant: x and theta)")
plt.show()

# %%
# Effect on the reward prediction
# -------------------------------
# The baseline is the same network (one hidden layer of 32 units) trained by plain least
# squares, scikit-learn's :class:`~sklearn.neural_network.MLPRegressor`. Both are scored by
# the reward computed from their predicted next states, and by their squared error on the
# two reward dimensions.
least_squares = MLPRegressor(
    hidden_layer_sizes=(32,), max_iter=500, early_stopping=True, random_state=0
).fit(X_train, y_train)

reward_dq = DecisionQualityScorer(task)
for name, regressor in [("least squares", least_squares), ("TaskMet", model)]:
    errors = (regressor.predict(X_test) - y_test) ** 2
    print(
        f"{name:13s} normalised reward quality {reward_dq(regressor, X_test, y_test):.3f}, "
        f"test MSE on x {errors[:, 0].mean():.2e}, on theta {errors[:, 2].mean():.2e}, "
        f"on the other dimensions {errors[:, [1, 3, *range(4, 14)]].mean():.2e}"
    )

# %%
# Least squares spreads its capacity over all 14 outputs, most of which are noise it
# cannot predict: its errors on ``x`` and ``theta`` are about 1.6 times those of TaskMet,
# whose metric tells the network where the reward is sensitive. TaskMet pays for it with a
# slightly larger error on the dimensions the reward ignores.
