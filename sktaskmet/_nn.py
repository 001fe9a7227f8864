"""Small torch building blocks shared by the estimators, the check of their widths, and the
full-batch L-BFGS that pretrains and fine-tunes the task-attribution models."""

from numbers import Integral

import torch
from torch import nn

__all__ = ["make_mlp", "check_hidden_layer_sizes", "minimise_lbfgs", "ACTIVATIONS"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "identity": nn.Identity}


def make_mlp(in_features, hidden_layer_sizes, out_features, activation="relu", bias=True):
    """A multi-layer perceptron ``Linear -> act -> ... -> Linear``.

    Parameters
    ----------
    in_features : int
    hidden_layer_sizes : sequence of int
        Widths of the hidden layers; empty gives a single linear map.
    out_features : int
    activation : {"relu", "tanh", "gelu", "identity"}, default="relu"
    bias : bool, default=True
        Bias in every linear layer.

    Returns
    -------
    torch.nn.Sequential
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {activation!r}.")
    layers = []
    width = int(in_features)
    for hidden in hidden_layer_sizes:
        layers += [nn.Linear(width, int(hidden), bias=bias), ACTIVATIONS[activation]()]
        width = int(hidden)
    layers.append(nn.Linear(width, int(out_features), bias=bias))
    return nn.Sequential(*layers)


def check_hidden_layer_sizes(hidden_layer_sizes, name="hidden_layer_sizes"):
    """Validate hidden-layer widths: a tuple or list of positive integers.

    Python and numpy integers are accepted; booleans, floats (even ``4.0``), zero,
    negative widths, strings, scalars and nested sequences are rejected. An empty tuple
    (no hidden layer) is valid.

    Parameters
    ----------
    hidden_layer_sizes : object
        The estimator parameter to check.
    name : str, default="hidden_layer_sizes"
        Name of the parameter, for the error message.

    Returns
    -------
    tuple of int

    Raises
    ------
    ValueError
        If ``hidden_layer_sizes`` is not a tuple or list of positive integers.

    Examples
    --------
    >>> import numpy as np
    >>> from sktaskmet._nn import check_hidden_layer_sizes
    >>> check_hidden_layer_sizes([np.int64(8), 4])
    (8, 4)
    """
    valid = isinstance(hidden_layer_sizes, (tuple, list)) and all(
        isinstance(width, Integral) and not isinstance(width, bool) and width > 0
        for width in hidden_layer_sizes
    )
    if not valid:
        raise ValueError(
            f"{name} must be a tuple or list of positive integers (the widths of the hidden "
            f"layers); got {hidden_layer_sizes!r}."
        )
    return tuple(int(width) for width in hidden_layer_sizes)


# L-BFGS settings of every fine-tuning and pretraining: curvature pairs kept, and the
# relative change of the objective below which it stops (at float64 resolution).
LBFGS_HISTORY = 50
LBFGS_TOLERANCE_CHANGE = 1e-14


def minimise_lbfgs(params, closure_value, max_iter, tol):
    """Minimise ``closure_value()`` over ``params`` by full-batch L-BFGS (strong Wolfe search).

    Parameters
    ----------
    params : list of torch.Tensor
        The tensors to optimise, in place.
    closure_value : callable
        ``() -> scalar tensor``: the objective at the current ``params``.
    max_iter : int
        L-BFGS iterations.
    tol : float
        Stop when the largest entry of the gradient is below ``tol``.
    """
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        history_size=LBFGS_HISTORY,
        tolerance_grad=tol,
        tolerance_change=LBFGS_TOLERANCE_CHANGE,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        value = closure_value()
        value.backward()
        return value

    optimizer.step(closure)
