"""
===========================================
Agreement score of human and random labels
===========================================

The agreement score (AS) of a labeling is the fraction of held-out inputs on which two
networks, trained on that labeling from different random initialisations, predict the
same label. It needs no held-out labels. Atanov et al. (NeurIPS 2022) show that labelings
made by humans (here: splits of the ten digit classes into two groups of five) get a high
AS, while random labelings get a low one: each network memorises the random training
labels and then guesses, differently, on new inputs.

This example scores 5-vs-5 digit splits and random labelings on scikit-learn's digits with
:class:`~sktaskmet.AgreementScorer`, compares the ``"same"`` and ``"disjoint"`` data modes,
and shows that the gap widens as the training set grows. All labelings of one fit are
trained together as one batched ensemble of small networks. The settings are reduced so
that the example runs in about 10 seconds on one CPU core;
``benchmarks/bench_discovery_agreement.py`` runs the full
protocol (two hidden layers of 128 units, 60 epochs).
"""

# %%
# Data and labelings
# ------------------
# 8 of the 126 distinct 5-vs-5 splits of the digit classes and 8 balanced random
# labelings of the same 1797 images.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

from sktaskmet import AgreementScorer
from sktaskmet.datasets import make_class_split_tasks, make_random_labelings
from sktaskmet.plotting import AgreementScoreDisplay

X, digit = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)
human, positive_classes = make_class_split_tasks(digit, n_tasks=8, random_state=0)
random = make_random_labelings(len(X), n_tasks=8, random_state=0)
labelings = np.column_stack([human, random])
families = ["human 5-vs-5"] * 8 + ["random"] * 8
print("first human task: digits", positive_classes[0], "vs the others")

# %%
# Agreement score in the "same" data mode
# ---------------------------------------
# Two networks per labeling see the same minibatches; only their initialisation differs.
# 597 images are held out and 1200 used for training, as in the paper's digits setup. A
# single hidden layer and a larger step size than the full protocol keep the example fast.
params = dict(
    hidden_layer_sizes=(64,),
    max_epochs=10,
    batch_size=100,
    learning_rate=1e-2,
    test_size=597,
    random_state=0,
)
same = AgreementScorer(data_mode="same", **params).fit(X, labelings)
print(f"human AS  {same.agreement_scores_[:8].mean():.3f}")
print(f"random AS {same.agreement_scores_[8:].mean():.3f}")
print(
    f"held-out accuracy: human {same.test_accuracies_[:8].mean():.3f}, "
    f"random {same.test_accuracies_[8:].mean():.3f}"
)

# %%
# Disjoint training halves
# ------------------------
# When each network trains on its own half of the data, the two networks share no training
# label. On a random labeling they then agree only by chance (about 0.5), while on a human
# task they still agree: they learn the same rule from different examples.
disjoint = AgreementScorer(data_mode="disjoint", **params).fit(X, labelings)
print(
    f"disjoint: human AS {disjoint.agreement_scores_[:8].mean():.3f}, "
    f"random AS {disjoint.agreement_scores_[8:].mean():.3f}"
)

# %%
# The two data modes side by side: the human tasks stay near 1 in both, while the random
# labelings move from about 0.8 (shared training data) to chance (disjoint halves).
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True, layout="constrained")
for ax, scorer, mode in [(axes[0], same, "same"), (axes[1], disjoint, "disjoint")]:
    AgreementScoreDisplay.from_estimator(scorer, families, ax=ax, bins=30)
    ax.set_title(f'data_mode="{mode}"')
plt.show()

# %%
# More data separates the families further
# ----------------------------------------
# With more training points the networks learn a human task better and agree more, while
# on random labels each network memorises more arbitrary labels and agrees less. Every
# fit holds out 597 images; the 1200-image point is the "same" fit above.
order = np.random.RandomState(0).permutation(len(X))
sizes = [100, 300, 1200]
human_as, random_as = [], []
for size in sizes[:-1]:
    rows = order[: size + 597]
    scorer = AgreementScorer(data_mode="same", **params).fit(X[rows], labelings[rows])
    human_as.append(scorer.agreement_scores_[:8].mean())
    random_as.append(scorer.agreement_scores_[8:].mean())
human_as.append(same.agreement_scores_[:8].mean())
random_as.append(same.agreement_scores_[8:].mean())
for size, h, r in zip(sizes, human_as, random_as, strict=True):
    print(f"{size:5d} training images: human AS {h:.3f}, random AS {r:.3f}")

fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
ax.plot(sizes, human_as, "o-", label="human 5-vs-5")
ax.plot(sizes, random_as, "s-", label="random")
ax.set_xscale("log")
ax.set_xticks(sizes, [str(s) for s in sizes])
ax.set_xlabel("training images")
ax.set_ylabel("mean agreement score")
ax.legend()
plt.show()
