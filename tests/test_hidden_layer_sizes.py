"""One check of hidden-layer widths, used by TaskMet, DFL, SCML and discovery."""

import numpy as np
import pytest

from sktaskmet import AgreementScorer, DFLRegressor, SCMLRegressor, TaskDiscovery, TaskMetRegressor
from sktaskmet._nn import check_hidden_layer_sizes

BAD = [(0,), (4.5,), (4.0,), (True,), (8, -1), "8", 8, ((4,),), np.array([4]), None]


@pytest.mark.parametrize("good, expected", [((8,), (8,)), ([np.int64(3), 2], (3, 2)), ((), ())])
def test_valid_widths_become_a_tuple_of_ints(good, expected):
    checked = check_hidden_layer_sizes(good)
    assert checked == expected
    assert all(type(width) is int for width in checked)


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_anything_but_positive_integers_is_rejected_with_the_parameter_name(bad):
    with pytest.raises(ValueError, match="metric_hidden_layer_sizes must be a tuple or list"):
        check_hidden_layer_sizes(bad, "metric_hidden_layer_sizes")


def _data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 3))
    return X, X[:, 0]


@pytest.mark.parametrize("bad", [(0,), (4.5,)], ids=repr)
@pytest.mark.parametrize(
    "make, param",
    [
        (lambda h: TaskMetRegressor(predictor="mlp", hidden_layer_sizes=h), "hidden_layer_sizes"),
        (lambda h: TaskMetRegressor(metric_hidden_layer_sizes=h), "metric_hidden_layer_sizes"),
        (lambda h: DFLRegressor(predictor="mlp", hidden_layer_sizes=h), "hidden_layer_sizes"),
        (lambda h: SCMLRegressor(head="mlp", hidden_layer_sizes=h), "hidden_layer_sizes"),
        (lambda h: AgreementScorer(hidden_layer_sizes=h), "hidden_layer_sizes"),
        (lambda h: TaskDiscovery(hidden_layer_sizes=h), "hidden_layer_sizes"),
    ],
    ids=["taskmet", "taskmet-metric", "dfl", "scml", "agreement", "discovery"],
)
def test_estimators_reject_bad_widths_in_fit(make, param, bad):
    X, y = _data()
    model = make(bad).set_params(device="cpu")
    labels = np.column_stack([y > 0, y > 0.5]).astype(int)
    target = None if isinstance(model, TaskDiscovery) else y
    target = labels if isinstance(model, AgreementScorer) else target
    with pytest.raises(ValueError, match=rf"^{param} must be a tuple or list of positive"):
        model.fit(X, target)
