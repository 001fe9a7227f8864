"""
===========================================
Task discovery with and without uniformity
===========================================

:class:`~sktaskmet.TaskDiscovery` meta-optimises an encoder whose fixed orthonormal heads
define binary tasks, so that two networks trained on a task agree on held-out digits. The
agreement term alone is happiest with easy, *degenerate* tasks: nearly constant labelings and
copies of one another. The uniformity term spreads the embeddings over the sphere, which
keeps the tasks balanced and different from each other.

This example discovers 8 tasks on the digits twice, with ``uniformity=1`` and
``uniformity=0``, and compares their balance (fraction of ones per task) and pairwise
similarity :math:`\\max(a, 1 - a)` (:math:`a` the fraction of equal labels). Settings are
small (two discoveries of 40 meta-steps each and a short agreement-score protocol for their
tasks, about 25 s of CPU time on one core) so that the example runs in well under a minute;
``benchmarks/bench_discovery_tasks.py`` runs the full-size comparison.
"""

# %%
# Discover tasks with and without the uniformity term
# ---------------------------------------------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

from sktaskmet import AgreementScorer, TaskDiscovery
from sktaskmet.plotting import DiscoveredTasksDisplay

X = (load_digits().data / 16.0).astype(np.float32)

# A short agreement-score protocol (the benchmark uses two layers of 128 units, 60 epochs).
scorer = AgreementScorer(hidden_layer_sizes=(64, 64), max_epochs=10, random_state=0)
common = dict(
    n_tasks=8,
    hidden_layer_sizes=(128, 128),
    inner_steps=5,
    max_iter=40,
    batch_size=128,
    learning_rate=3e-3,
    agreement_scorer=scorer,
    random_state=0,
)
uniform = TaskDiscovery(uniformity=1.0, **common).fit(X)
collapsed = TaskDiscovery(uniformity=0.0, **common).fit(X)


def max_similarity(discovery):
    off_diagonal = discovery.similarity_[~np.eye(discovery.n_tasks, dtype=bool)]
    return off_diagonal.max()


for name, est in [("uniformity 1", uniform), ("uniformity 0", collapsed)]:
    print(
        f"{name}: balance {est.balance_.min():.2f}-{est.balance_.max():.2f}, "
        f"max pairwise similarity {max_similarity(est):.2f}, "
        f"agreement scores {np.nanmin(est.agreement_scores_):.3f}-"
        f"{np.nanmax(est.agreement_scores_):.3f}"
    )

# %%
# Balance and similarity of the tasks
# -----------------------------------
# With uniformity every task splits the digits about in half and the tasks are nearly
# unrelated (similarity close to 0.5). Without it the tasks drift towards imbalanced
# labelings and near-copies of one another: the collapse the uniformity term prevents.
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), layout="constrained")
for ax, (name, est) in zip(
    axes[:2], [("uniformity 1", uniform), ("uniformity 0", collapsed)], strict=True
):
    image = ax.imshow(est.similarity_, vmin=0.5, vmax=1.0, cmap="viridis")
    ax.set_title(f"similarity, {name}")
    ax.set_xlabel("task")
    ax.set_ylabel("task")
fig.colorbar(image, ax=axes[:2], shrink=0.8)
positions = np.arange(8)
axes[2].bar(positions - 0.2, uniform.balance_, width=0.4, label="uniformity 1")
axes[2].bar(positions + 0.2, collapsed.balance_, width=0.4, label="uniformity 0")
axes[2].axhline(0.5, color="k", lw=0.8, ls="--")
axes[2].set_ylim(0, 1)
axes[2].set_xlabel("task")
axes[2].set_ylabel("fraction of ones")
axes[2].set_title("balance")
axes[2].legend(fontsize=8)
plt.show()

# %%
# The discovered tasks on the images
# ----------------------------------
# Each row shows digits the task labels 0 (left) and 1 (right), with the task's balance and
# agreement score. Unlike the human 5-vs-5 splits, the discovered tasks cut across the
# classes: a class can fall on both sides of a task.
DiscoveredTasksDisplay.from_estimator(uniform, X, n_images=6, task_indices=range(4), random_state=0)
plt.show()
