"""Tests of the attribution bar chart and interaction heatmap Displays."""

import subprocess
import sys

import numpy as np
import pytest

from sktaskmet import KernelSurrogate, LinearSurrogate
from sktaskmet.datasets import make_task_interactions
from sktaskmet.plotting import AttributionDisplay, InteractionDisplay

plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(scope="module")
def fitted():
    S, y, F = make_task_interactions(n_tasks=10, n_subsets=80, random_state=0)
    return KernelSurrogate(device="cpu").fit(S, y), F


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_attribution_display_draws_the_scores(fitted):
    model, F = fitted
    display = AttributionDisplay.from_estimator(model, reference=F.loo())
    heights = [bar.get_height() for bar in display.bars_]
    np.testing.assert_allclose(heights, model.attribution())
    np.testing.assert_allclose(display.reference_line_.get_ydata(), F.loo())
    assert [t.get_text() for t in display.ax_.get_xticklabels()][:2] == ["task 0", "task 1"]
    assert display.figure_ is display.ax_.figure


def test_attribution_display_sorts_and_uses_given_axes(fitted):
    model, _ = fitted
    fig, ax = plt.subplots()
    names = [f"t{k}" for k in range(10)]
    display = AttributionDisplay(model.attribution(), task_names=names).plot(ax=ax, sort=True)
    assert display.ax_ is ax
    heights = np.array([bar.get_height() for bar in display.bars_])
    assert np.all(np.diff(heights) <= 0)
    order = np.argsort(-model.attribution(), kind="stable")
    assert [t.get_text() for t in ax.get_xticklabels()] == [names[k] for k in order]


def test_interaction_display_draws_the_matrix(fitted):
    model, _ = fitted
    display = InteractionDisplay.from_estimator(model)
    np.testing.assert_allclose(display.im_.get_array(), model.interactions())
    vmin, vmax = display.im_.get_clim()
    assert vmin == -vmax == -np.abs(model.interactions()).max()
    assert display.colorbar_ is not None
    assert "KernelSurrogate" in display.ax_.get_title()


def test_displays_pick_a_target_and_check_shapes(fitted):
    model, _ = fitted
    S, y, _ = make_task_interactions(n_tasks=10, n_subsets=40, random_state=1)
    multi = LinearSurrogate(device="cpu").fit(S, np.column_stack([y, 2 * y]))
    with pytest.raises(ValueError, match="pass target"):
        AttributionDisplay.from_estimator(multi)
    display = AttributionDisplay.from_estimator(multi, target=1)
    np.testing.assert_allclose([b.get_height() for b in display.bars_], multi.coef_[1])
    with pytest.raises(ValueError, match="square"):
        InteractionDisplay(np.ones((2, 3)))
    with pytest.raises(ValueError, match="task_names must have 10 entries"):
        AttributionDisplay.from_estimator(model, task_names=["a"])


def test_matplotlib_is_not_imported_with_the_package():
    code = "import sys, sktaskmet.plotting; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
