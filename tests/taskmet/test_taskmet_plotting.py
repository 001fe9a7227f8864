"""Displays of a fitted TaskMetRegressor."""

import numpy as np
import pytest

from sktaskmet import TaskMetRegressor
from sktaskmet.plotting import MetricCurveDisplay, MetricWeightsDisplay

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(scope="module")
def model_and_data():
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, size=(60, 1))
    y = np.c_[X[:, 0] ** 3, X[:, 0], -X[:, 0]]
    model = TaskMetRegressor(
        metric="conditional_diagonal",
        max_iter=2,
        inner_steps_first=50,
        inner_steps=5,
        inner_lr=0.1,
        metric_hidden_layer_sizes=(8,),
        device="cpu",
        random_state=0,
    ).fit(X, y)
    return model, X, y


def test_metric_curve_display(model_and_data):
    model, X, y = model_and_data
    display = MetricCurveDisplay.from_estimator(model, X, y, output=1, n_points=50)
    assert display.x.shape == (50,) and np.all(np.diff(display.x) >= 0)
    np.testing.assert_allclose(display.metric, model.metric_values(display.x[:, None])[:, 1, 1])
    np.testing.assert_allclose(display.y_pred, model.predict(display.x[:, None])[:, 1])
    assert display.figure_ is display.ax_.figure
    assert set(display.lines_) == {"data", "prediction", "metric"}
    _, ax = plt.subplots()
    assert MetricCurveDisplay.from_estimator(model, X, ax=ax).ax_ is ax
    with pytest.raises(ValueError, match="output"):
        MetricCurveDisplay.from_estimator(model, X, output=3)
    plt.close("all")


def test_metric_weights_display(model_and_data):
    model, X, _ = model_and_data
    display = MetricWeightsDisplay.from_estimator(model, X, output_names=["a", "b", "c"])
    expected = np.diagonal(model.metric_values(X), axis1=1, axis2=2).mean(0)
    np.testing.assert_allclose(display.weights, expected)
    assert len(display.bars_) == 3
    display.plot(sort=True)
    heights = [bar.get_height() for bar in display.bars_]
    assert heights == sorted(heights, reverse=True)
    with pytest.raises(ValueError, match="output_names"):
        MetricWeightsDisplay.from_estimator(model, X, output_names=["a"])
    plt.close("all")


def test_displays_need_a_metric_model(model_and_data):
    from sklearn.linear_model import LinearRegression

    _, X, y = model_and_data
    with pytest.raises(TypeError, match="no learned metric"):
        MetricWeightsDisplay.from_estimator(LinearRegression().fit(X, y), X)
