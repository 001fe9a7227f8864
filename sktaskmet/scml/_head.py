r"""The network head of :class:`~sktaskmet.SCMLRegressor`: a small MLP on the SCML features.

With ``head="mlp"`` the regressor predicts with a network :math:`f_\theta` on the
standardised SCML features :math:`u = (\phi(x) - \mu_\phi) / \sigma_\phi`, trained by
full-batch Adam on the standardised target :math:`t = (y - \bar y) / \sigma_y`:

.. math::

    \min_\theta \frac{1}{n} \sum_{j=1}^n \big(f_\theta(u_j) - t_j\big)^2
    \qquad\text{and}\qquad \hat y(x) = \sigma_y f_\theta(u(x)) + \bar y .

The steps run on the training core (:class:`~sktaskmet._training.TrainingLoop`), which
records the loss, reports progress and stops at a step whose loss or gradient is not
finite. The fitted head is kept as numpy arrays, so it pickles and moves between devices.
"""

import torch

from .._backend import (
    load_numpy_state,
    seeded,
    state_to_numpy,
    to_numpy,
    to_tensor,
    untouched_global_rng,
)
from .._nn import make_mlp
from .._training import TrainingLoop

__all__ = ["fit_network_head", "predict_network_head"]


def _head_step(network, inputs, target, y_std, optimizer):
    """One full-batch Adam step of the network head, for the training core.

    Returns the step's mean squared error in the units of ``y`` squared (measured before
    the update), or None, without updating, when the loss or a gradient is not finite:
    the core's ``"checked"`` guard, so that no snapshot of the network is needed.
    """
    parameters = list(network.parameters())
    y_variance = y_std * y_std

    def step(iteration):
        optimizer.zero_grad()
        loss = torch.mean((network(inputs).squeeze(1) - target) ** 2)
        loss.backward()
        finite = [torch.isfinite(loss)]
        finite += [torch.isfinite(p.grad).all() for p in parameters if p.grad is not None]
        if not bool(torch.stack(finite).all()):  # one host sync per step
            return None
        optimizer.step()
        return {"loss": loss.detach() * y_variance}

    return step


def fit_network_head(
    features,
    y,
    *,
    hidden_layer_sizes,
    max_iter,
    learning_rate,
    weight_decay,
    seed,
    name,
    verbose,
    callbacks,
):
    r"""Train the network head on ``features`` (the SCML features of the training points).

    Parameters
    ----------
    features : torch.Tensor of shape (n_samples, n_features_out)
    y : torch.Tensor of shape (n_samples,)
        The target, on the device and in the dtype of ``features``.
    hidden_layer_sizes : tuple of int
        Hidden widths (already validated).
    max_iter : int
        Full-batch Adam steps.
    learning_rate, weight_decay : float
        Adam's step size and weight decay :math:`\lambda` (the gradient of
        :math:`\frac{\lambda}{2}\lVert\theta\rVert^2` added to the loss's).
    seed : int
        Seeds the initial weights (drawn inside :func:`~sktaskmet._backend.seeded`, so the
        caller's global random state is untouched).
    name : str
        Prefix of the progress lines and of the non-finite warning.
    verbose : int
        Print the loss at every step when positive.
    callbacks : FitCallbacks
        The fit's callbacks: the head is their stage ``"network head"``, whose current
        model has the fitted attribute ``head_state_``.

    Returns
    -------
    head_state : dict
        ``network`` (state dict as numpy arrays), ``feature_mean``, ``feature_std``,
        ``y_mean`` and ``y_std``: what :func:`predict_network_head` needs.
    result : TrainingResult
        The core's result; ``history["train_loss"]`` is the mean squared error in the
        units of ``y`` squared at each step, before its update.
    """
    mean, std = features.mean(0), features.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature stays 0
    y_mean, y_std = y.mean(), y.std().clamp_min(torch.finfo(y.dtype).tiny)
    inputs, target = (features - mean) / std, (y - y_mean) / y_std
    with seeded(seed):
        network = make_mlp(features.shape[1], hidden_layer_sizes, 1)
    network = network.to(device=features.device, dtype=features.dtype)
    scaling = {
        "feature_mean": to_numpy(mean),
        "feature_std": to_numpy(std),
        "y_mean": float(y_mean),
        "y_std": float(y_std),
    }

    def head_state():
        return {"network": state_to_numpy(network), **scaling}

    optimizer = torch.optim.Adam(
        network.parameters(), lr=float(learning_rate), weight_decay=float(weight_decay)
    )
    result = TrainingLoop(
        _head_step(network, inputs, target, y_std, optimizer),
        max_iter=int(max_iter),
        guard="checked",
        name=name,
        verbose=verbose,
        advice="Lower head_learning_rate.",
        callbacks=callbacks.stage(
            "network head", fitted_attributes=lambda: {"head_state_": head_state()}
        ),
    ).run()
    return head_state(), result


def predict_network_head(head_state, features, hidden_layer_sizes):
    r"""Predictions :math:`\sigma_y f_\theta(u) + \bar y` of a fitted head, as a tensor.

    ``features`` are the SCML features of the queries; the network is rebuilt on their
    device and in their dtype without advancing torch's global random state.
    """
    with untouched_global_rng():
        network = make_mlp(features.shape[1], hidden_layer_sizes, 1)
    network = load_numpy_state(
        network, head_state["network"], features.device, dtype=features.dtype
    )
    mean = to_tensor(head_state["feature_mean"], features.device, features.dtype)
    std = to_tensor(head_state["feature_std"], features.device, features.dtype)
    with torch.no_grad():
        out = network((features - mean) / std).squeeze(1)
    return out * head_state["y_std"] + head_state["y_mean"]
