r"""Decision-focused learning baseline: the predictor trained on the task loss directly."""

import math
from numbers import Real

import torch
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval

from .._backend import state_to_numpy
from .._validation import fit_guard
from ._bilevel import FlatAdam, FlatModule, ReshuffledBatches, task_objective
from ._estimator import _BaseTaskRegressor, _flat_state

__all__ = ["DFLRegressor"]


class DFLRegressor(_BaseTaskRegressor):
    r"""Predictor trained end to end on the task loss plus a weighted squared error (DFL).

    Decision-focused learning minimises the downstream task loss of the predictions directly:

    .. math::

        \min_\theta\; \frac{1}{N}\sum_i \mathcal{L}_\text{task}\big(f_\theta(x_{i\cdot}),
        y_{i\cdot}\big) + \alpha\, \mathrm{MSE}(\theta),

    with Adam on mini-batches of instances, validation every ``validation_interval`` steps
    and early stopping on the validation task loss. It is the baseline that
    :class:`TaskMetRegressor` is compared with: ``alpha = 0`` can reach good decisions with
    predictions of any scale (and can get stuck), ``alpha > 0`` trades task loss for
    prediction accuracy. It accepts the same tasks, groups and ``task_score``.

    Parameters
    ----------
    task : Task or None, default=None
        Downstream task (see :mod:`sktaskmet.tasks`); ``None`` makes the prediction itself
        the task (plain least squares).
    predictor : {"linear", "mlp"} or callable, default="linear"
        A linear map, an MLP with ``hidden_layer_sizes``, or a callable
        ``(n_features, n_outputs) -> torch.nn.Module``.
    hidden_layer_sizes : tuple of int, default=(100,)
    alpha : float, default=1.0
        Weight of the mean squared error.
    learning_rate : float, default=1e-3
        Adam learning rate.
    batch_size : int, default=50
        Instances per mini-batch. Each epoch walks a new random permutation of the training
        instances, so every instance enters one batch per epoch; the last batch of an epoch
        holds the remainder.
    max_iter : int, default=1000
        Maximum number of Adam steps.
    grad_clip : float or None, default=None
        Maximum gradient norm.
    validation_fraction : float or None, default=0.1
        Fraction of instances held out for early stopping; ``None`` or 0 disables it.
    n_iter_no_change : int or None, default=100
        Stop after this many steps without a better validation task loss.
    validation_interval : int, default=10
        Steps between validations.
    device : str or torch.device, default="auto"
    random_state : int, RandomState instance or None, default=None
    verbose : int, default=0

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` has string feature names.
    n_outputs_ : int
    group_size_ : int
    predictor_state_ : dict of str to ndarray
    n_iter_ : int
    best_iteration_ : int
    history_ : dict of str to ndarray
        Same keys as :attr:`TaskMetRegressor.history_`.

    See Also
    --------
    TaskMetRegressor : Learns a prediction metric from the task instead.

    Examples
    --------
    >>> import numpy as np
    >>> from sktaskmet import DFLRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(-1, 1, size=(60, 1))
    >>> y = 2 * X[:, 0]
    >>> DFLRegressor(max_iter=20, random_state=0, device="cpu").fit(X, y).predict(X[:2]).shape
    (2,)
    """

    _parameter_constraints: dict = {
        **_BaseTaskRegressor._parameter_constraints,
        "grad_clip": [None, Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        task=None,
        *,
        predictor="linear",
        hidden_layer_sizes=(100,),
        alpha=1.0,
        learning_rate=1e-3,
        batch_size=50,
        max_iter=1000,
        grad_clip=None,
        validation_fraction=0.1,
        n_iter_no_change=100,
        validation_interval=10,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.task = task
        self.predictor = predictor
        self.hidden_layer_sizes = hidden_layer_sizes
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.grad_clip = grad_clip
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.validation_interval = validation_interval
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    @fit_guard
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, groups=None):
        """Fit the predictor on the task loss plus ``alpha`` times the squared error.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        groups : array-like of shape (n_samples,), optional
            Decision instance of each sample (equal group sizes); required by tasks with
            ``requires_groups``.

        Returns
        -------
        self : DFLRegressor
        """
        (X_tr, Y_tr, X_val, Y_val), device, generator, streams = self._prepare(X, y, groups)
        n_features, n_outputs = X_tr.shape[-1], Y_tr.shape[-1]
        with streams.seeded("initial_weights"):
            module = self._make_predictor(n_features, n_outputs)
        module = module.to(device=device, dtype=X_tr.dtype)
        model = FlatModule(module)
        theta = model.flatten()
        optimizer = FlatAdam(theta, lr=self.learning_rate, clip=self.grad_clip)
        task_loss = self._task_loss()
        closed_form = getattr(self.task, "has_loss_gradient", lambda: False)()

        batches = ReshuffledBatches(generator)

        def step(iteration):
            batch = batches(X_tr.shape[0], self.batch_size, device)
            if closed_form:
                total, task, mse, grad = _closed_form_objective(
                    model, theta, X_tr[batch], Y_tr[batch], self.task, self.alpha
                )
            else:
                theta_req = theta.detach().requires_grad_(True)
                total, task, mse = task_objective(
                    lambda Z: model(theta_req, Z), X_tr[batch], Y_tr[batch], task_loss, self.alpha
                )
                (grad,) = torch.autograd.grad(total, theta_req)
            # Checked before the update, so a NaN never reaches the parameters or the moments.
            if not _all_finite(total, grad):
                return task, mse, False
            optimizer.step(grad)
            return task, mse, True

        def evaluate():
            return self._evaluate_instances(lambda Z: model(theta.detach(), Z), X_val, Y_val)

        # The step checks for NaN and infinity before updating: no snapshot per step.
        self._train(
            step,
            evaluate,
            optimizer.state,
            optimizer.restore,
            has_validation=X_val.shape[0] > 0,
            guard="checked",
            fitted=lambda: {"predictor_state_": _flat_state(model, theta)},
            data=(X, y),
        )
        model.load(theta.detach())
        self.predictor_state_ = state_to_numpy(module)
        return self


def _all_finite(total, grad):
    """Whether the scalar ``total`` and every entry of ``grad`` are finite.

    ``grad * 0`` is 0 where ``grad`` is finite and NaN elsewhere, so its sum is 0 exactly
    when all of it is finite (no overflow can occur): two tensor operations and one read,
    against seven for ``isfinite(total) & isfinite(grad).all()``, at every step.
    """
    # total carries its graph on the autograd path: read it detached
    total = total.detach() if total.requires_grad else total
    return math.isfinite(float(total)) and float((grad * 0).sum()) == 0


def _closed_form_objective(model, theta, X, Y, task, alpha):
    r""":func:`task_objective` and its gradient in ``theta`` without the task's autograd graph.

    For tasks whose surrogate has a closed-form gradient in the predictions
    (``task.loss_and_gradient``), the gradient of the objective in the predictions is

    .. math::
        \frac{\partial}{\partial \hat y_{ij}} = \frac1b \frac{\partial \ell_i}{\partial
        \hat y_{ij}} + \frac{2\alpha}{b m} (\hat y_{ij} - y_{ij}),

    and the predictor's backward pass (by hand for linear layers and ReLU / tanh chains,
    :meth:`FlatModule.gradient`) turns it into the gradient in ``theta``. Same value as
    the autograd path, up to the rounding of the sums.

    Returns
    -------
    total, task, mse : Tensor
        The objective and its two parts (no graph).
    grad : Tensor of shape (n_params,)
    """
    b, m, p = X.shape
    plain = Y.as_subclass(torch.Tensor)  # operations on the targets' subclass are slow
    parts = {}

    def output_gradient(out):
        pred = out.reshape(b, m, -1)
        losses, grad = task.loss_and_gradient(pred, Y)
        residual = pred - plain
        parts["task"] = losses.mean()
        parts["mse"] = (residual**2).sum(-1).mean()
        grad = grad / b
        if alpha:
            grad = grad + (2 * alpha / (b * m)) * residual
        return grad.reshape(b * m, -1)

    grad = model.gradient(theta, X.reshape(b * m, p), output_gradient)
    task_value, mse = parts["task"], parts["mse"]
    total = task_value + alpha * mse if alpha else task_value
    return total, task_value, mse, grad
