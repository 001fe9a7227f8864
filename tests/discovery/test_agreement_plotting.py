"""Tests of AgreementScoreDisplay."""

import numpy as np
import pytest

from sktaskmet import AgreementScorer
from sktaskmet.plotting import AgreementScoreDisplay

pytest.importorskip("matplotlib")


@pytest.fixture(autouse=True)
def close_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def test_from_scores_draws_one_histogram_per_family():
    display = AgreementScoreDisplay.from_scores(
        {"human": [0.99, 0.98, 0.97, 0.95], "random": [0.78, 0.80]}, bins=10
    )
    assert list(display.patches_) == ["human", "random"]
    heights = {name: sum(p.get_height() for p in bars) for name, bars in display.patches_.items()}
    assert heights == {"human": 4, "random": 2}
    labels = [t.get_text() for t in display.ax_.get_legend().get_texts()]
    assert labels[0].startswith("human (mean 0.972")
    assert display.ax_.get_xlabel() == "agreement score"


def test_from_estimator_and_given_axes():
    import matplotlib.pyplot as plt

    rng = np.random.RandomState(0)
    X = rng.randn(80, 4)
    y = np.column_stack([(X[:, 0] > 0).astype(int), rng.randint(0, 2, 80)])
    scorer = AgreementScorer(hidden_layer_sizes=(8,), max_epochs=2, device="cpu").fit(X, y)
    _, ax = plt.subplots()
    display = AgreementScoreDisplay.from_estimator(scorer, ["human", "random"], ax=ax)
    assert display.ax_ is ax and display.figure_ is ax.figure
    assert AgreementScoreDisplay.from_estimator(scorer).patches_.keys() == {"labelings"}


def test_length_mismatch_and_unfitted():
    with pytest.raises(ValueError, match="one family name per labeling"):
        AgreementScoreDisplay(agreement_scores=[0.5, 0.6], families=["a"]).plot()
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        AgreementScoreDisplay.from_estimator(AgreementScorer())
