"""SCMLClassifier side by side with metric-learn's SCML_Supervised (scikit-learn 1.7).

Same data, same class triplets, same LDA basis (captured from SCML_Supervised as in
test_scml_metric_learn.py): our triplets are metric-learn's, our objective is at least as
low, and the kNN accuracy in our metric is at least on par.
"""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from sktaskmet import SCMLClassifier
from sktaskmet.scml._solver import rda_global
from sktaskmet.scml._triplets import classification_triplets

from .test_scml_metric_learn import capture_weights, direct_objective

ITERATIONS = dict(max_iter=2000, output_iter=100, batch_size=10)


def wine(seed):
    X, y = load_wine(return_X_y=True)
    order = np.random.RandomState(seed).permutation(len(y))
    X = StandardScaler().fit_transform(X)[order]
    return X[:120], y[order][:120], X[120:], y[order][120:]


def test_class_triplets_are_metric_learns():
    from metric_learn.constraints import Constraints

    X, y, _, _ = wine(0)
    theirs = Constraints(y).generate_knntriplets(X, 3, 10)
    ours = classification_triplets(torch.from_numpy(X), torch.from_numpy(y), 3, 10).numpy()
    assert set(map(tuple, ours)) == set(map(tuple, theirs))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objective_and_accuracy_against_scml_supervised(seed):
    from metric_learn import SCML_Supervised
    from metric_learn.constraints import Constraints

    X, y, X_test, y_test = wine(seed)
    beta = 1e-5
    theirs = SCML_Supervised(beta=beta, n_basis=60, random_state=seed, **ITERATIONS)
    captured = capture_weights(theirs)
    theirs.fit(X, y)
    triplets = Constraints(y).generate_knntriplets(X, 3, 10)
    solved = rda_global(
        torch.from_numpy(X),
        torch.from_numpy(triplets),
        torch.from_numpy(captured["basis"]),
        beta=beta,
        gamma=5e-3,
        generator=torch.Generator().manual_seed(seed),
        **ITERATIONS,
    )
    their_value = direct_objective(X, triplets, captured["basis"], captured["weights"], beta)
    our_value = direct_objective(X, triplets, captured["basis"], solved.coef.numpy(), beta)
    assert our_value <= their_value + 1e-12

    ours = SCMLClassifier(basis=captured["basis"], beta=beta, random_state=seed, device="cpu")
    ours.set_params(**ITERATIONS).fit(X, y)
    their_knn = KNeighborsClassifier(5).fit(theirs.transform(X), y)
    their_accuracy = their_knn.score(theirs.transform(X_test), y_test)
    assert ours.score(X_test, y_test) >= their_accuracy - 0.05
