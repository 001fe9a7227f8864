"""
============================================================
Estimating subset performance from gradients, not retraining
============================================================

How well would a model do on a target task if it were fine-tuned on a given subset of the
training tasks? Answering by fine-tuning once per subset is what makes task attribution
expensive. :class:`~sktaskmet.GradientSubsetEstimator` answers from gradients instead: it
linearises the pretrained model, computes every example's gradient once, projects the
gradients to a few hundred dimensions, and solves one small penalised logistic
regression per subset.

Here the tasks are groups of handwritten digits
(:func:`~sktaskmet.datasets.make_multitask_digits`): clean groups, groups with noisy labels,
duplicated groups and groups restricted to three classes; the target is a held-out set of
digits. We fine-tune a pretrained MLP for real on a few random subsets
(:class:`~sktaskmet.surrogate.SubsetFineTuner` through
:func:`~sktaskmet.surrogate.evaluate_subsets`) and compare the measured target loss with
the estimate, and the time each takes. The full-size comparison is in
``benchmarks/bench_surrogate_gradient.py``.
"""

import time

import matplotlib.pyplot as plt
import numpy as np

from sktaskmet import GradientSubsetEstimator
from sktaskmet.datasets import make_multitask_digits
from sktaskmet.surrogate import SubsetFineTuner, evaluate_subsets, sample_subsets

data = make_multitask_digits(random_state=0)
n_tasks = len(data.task_kinds)
for k, name in enumerate(data.task_names):
    print(k, name)

# %%
# Real fine-tuning on a few subsets
# ---------------------------------
# Fine-tuning minimises the mean cross-entropy of the chosen tasks plus
# ``penalty / 2 * ||theta - theta_0||^2``, starting from the pretrained weights.
penalty = 0.3
S = sample_subsets(n_tasks, 6, p=0.5, random_state=1)
tuner = SubsetFineTuner(
    data.model, data.X, data.y, data.tasks, data.X_target, data.y_target, penalty=penalty
)
start = time.perf_counter()
F = evaluate_subsets(tuner, S)
retrain_time = time.perf_counter() - start

# %%
# Gradient-based estimates of the same subsets
# --------------------------------------------
# The estimator uses the same penalty; a mismatched one shows how much that matters.
start = time.perf_counter()
est = GradientSubsetEstimator(data.model, projection_dim=400, penalty=penalty, random_state=0)
est.fit(data.X, data.y, tasks=data.tasks, X_target=data.X_target, y_target=data.y_target)
F_hat = est.estimate(S)
estimate_time = time.perf_counter() - start

# The gradients do not depend on the penalty: change it after fitting to see the effect of
# a mismatch.
F_wrong = est.set_params(penalty=penalty / 10).estimate(S)

error = np.mean(np.abs(F_hat - F) / F)
error_wrong = np.mean(np.abs(F_wrong - F) / F)
print(f"relative error, matched penalty: {100 * error:.2f}%")
print(f"relative error, penalty / 10:    {100 * error_wrong:.2f}%")
print(f"fine-tuning: {retrain_time:.1f} s, estimation: {estimate_time:.1f} s")

# %%
# On a problem this small, full-batch L-BFGS fine-tuning is itself cheap, and the
# estimate's time is mostly the one-off gradient computation; each further subset costs
# the estimator only a small solve whose size does not depend on the network. The
# benchmark page records the comparison on more subsets and a smaller penalty, where
# fine-tuning takes longer.

# %%
# Estimated vs real target loss
# -----------------------------
fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 4))
lims = [min(F.min(), F_hat.min(), F_wrong.min()), max(F.max(), F_hat.max(), F_wrong.max())]
ax.plot(lims, lims, color="grey", lw=1)
ax.scatter(F, F_hat, label=f"penalty matched ({100 * error:.1f}% error)")
ax.scatter(F, F_wrong, marker="x", label=f"penalty / 10 ({100 * error_wrong:.1f}% error)")
ax.axhline(est.pretrained_target_loss_, color="k", ls=":", lw=1, label="pretrained")
ax.set_xlabel("target loss after real fine-tuning")
ax.set_ylabel("estimated target loss")
ax.legend(fontsize=8)
bx.bar(["fine-tuning", "gradient estimate"], [retrain_time, estimate_time])
bx.set_ylabel(f"seconds for {len(S)} subsets")
fig.tight_layout()
plt.show()
