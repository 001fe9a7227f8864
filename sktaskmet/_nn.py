"""Small torch building blocks shared by the estimators."""

from torch import nn

__all__ = ["make_mlp", "ACTIVATIONS"]

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
