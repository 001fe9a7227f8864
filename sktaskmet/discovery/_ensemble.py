"""Ensembles of small networks trained as one batched computation.

Scoring many labelings means training many small networks of one architecture: ``n_tasks``
labelings times ``n_models`` initialisations. A Python loop over ``torch.nn.Module`` objects
pays the interpreter and kernel-launch overhead once per network and step; here the
parameters of all members are stacked along a leading axis
(:func:`torch.func.stack_module_state`) and one functional forward pass
(:func:`torch.func.functional_call` under :func:`torch.func.vmap`) evaluates every member
on its own minibatch, so a training step of ``M`` networks is a handful of batched matrix
products.

Each member is exactly the network it would be if trained alone:

* the loss is the *sum* over members of each member's mean cross-entropy, so the gradient
  with respect to a member's parameters is the gradient of its own loss;
* Adam is elementwise (its moments, bias corrections and update act on each parameter
  entry separately), so one :class:`torch.optim.Adam` over the stacked tensors performs
  ``M`` independent Adam updates;
* there is no state shared between members (no BatchNorm running statistics, which do
  not work under ``vmap``).

This module holds the torch numerics only; :class:`~sktaskmet.AgreementScorer` is the
scikit-learn side.
"""

import contextlib
import copy

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from .._backend import autocast, seeded, to_numpy, to_tensor
from .._nn import make_mlp
from .._training import TrainingLoop

__all__ = [
    "ModuleEnsemble",
    "MLPEnsemble",
    "batch_schedule",
    "train_ensemble",
    "pairwise_agreement",
]

DATA_MODES = ("same", "independent", "disjoint")

# Layers that draw from torch's generator in training mode.
_RANDOM_LAYERS = (torch.nn.modules.dropout._DropoutNd,)


class ModuleEnsemble:
    """``n_members`` networks of one architecture with their parameters stacked.

    Member ``m`` is initialised exactly as ``build()`` called inside ``seeded(seeds[m])``,
    so any member can be rebuilt alone (see :meth:`member`).

    Buffers (BatchNorm running statistics) are stacked like the parameters and passed to
    every member batched, so each member updates its own statistics in training mode and
    uses them in evaluation mode. Random layers (dropout) draw independently for every
    member (``vmap(..., randomness="different")``), from torch's generator of the device;
    the training loop seeds it (see :func:`train_ensemble`).

    Parameters
    ----------
    build : callable
        Zero-argument builder of one network (see :mod:`._networks`).
    seeds : sequence of int
        One initialisation seed per member.
    dtype : torch.dtype, default=torch.float32
    device : torch.device, default="cpu"
    autocast : torch.dtype or None, default=None
        ``torch.bfloat16`` or ``torch.float16``: forward passes run under
        :func:`torch.autocast` (mixed precision); parameters stay in ``dtype``.
    sample_ndim : int, default=1
        Dimensions of one sample (1 for feature vectors, 3 for images of shape (C, H, W)).
    """

    def __init__(
        self, build, seeds, dtype=torch.float32, device="cpu", autocast=None, sample_ndim=1
    ):
        self.seeds = [int(s) for s in seeds]
        self.sample_ndim = int(sample_ndim)
        self._build = build
        self.autocast = autocast
        modules = []
        for seed in self.seeds:
            with seeded(seed):
                modules.append(build())
        params, buffers = stack_module_state(modules)
        self.params = {
            name: value.detach().to(device=device, dtype=dtype).requires_grad_(True)
            for name, value in params.items()
        }
        self.buffers = {
            name: value.detach().to(
                device=device, dtype=dtype if value.is_floating_point() else value.dtype
            )
            for name, value in buffers.items()
        }
        # A parameter-free copy on the meta device: functional_call only needs its structure.
        self._skeleton = copy.deepcopy(modules[0]).to("meta")
        self._vmapped = {}

    @property
    def n_members(self):
        return len(self.seeds)

    @property
    def dtype(self):
        return next(iter(self.params.values())).dtype

    @property
    def device(self):
        return next(iter(self.params.values())).device

    def _call_one(self, params, buffers, x):
        return functional_call(self._skeleton, (params, buffers), (x,))

    def forward(self, X, training=True):
        """Logits of every member.

        Parameters
        ----------
        X : torch.Tensor of shape (n_members, n, *input_shape) or (n, *input_shape)
            Either one minibatch per member, or one input shared by every member.
        training : bool, default=True
            Training mode (batch statistics, dropout) or evaluation mode.

        Returns
        -------
        torch.Tensor of shape (n_members, n, out_features)
        """
        shared = X.dim() == self.sample_ndim + 1
        key = (shared, training)
        if key not in self._vmapped:
            self._vmapped[key] = vmap(
                self._call_one,
                in_dims=(0, 0, None if shared else 0),
                randomness="different" if training else "error",
            )
        self._skeleton.train(training)
        with autocast(self.device, self.autocast):
            logits = self._vmapped[key](self.params, self.buffers, X)
        return logits.to(self.dtype)

    __call__ = forward

    def predict(self, X, logit_mask=None, chunk_size=1024):
        """Argmax predictions of every member on a shared input, in evaluation mode.

        Parameters
        ----------
        X : torch.Tensor of shape (n, *input_shape)
        logit_mask : torch.Tensor of shape (n_members, 1, out_features), optional
            Added to the logits (``-inf`` on classes a member's labeling does not have).
        chunk_size : int, default=1024
            Points per forward pass, to bound memory.

        Returns
        -------
        torch.Tensor of shape (n_members, n), int64
        """
        parts = []
        with torch.no_grad():
            for start in range(0, len(X), chunk_size):
                logits = self.forward(X[start : start + chunk_size], training=False)
                if logit_mask is not None:
                    logits = logits + logit_mask
                parts.append(logits.argmax(-1))
        if not parts:
            return torch.empty((self.n_members, 0), dtype=torch.int64, device=X.device)
        return torch.cat(parts, dim=1)

    def state_numpy(self):
        """Stacked parameters and buffers as numpy arrays (name -> (n_members, ...) array)."""
        state = {name: to_numpy(value) for name, value in self.params.items()}
        state.update({name: to_numpy(value) for name, value in self.buffers.items()})
        return state

    def load_state_numpy(self, state, device="cpu", dtype=None):
        """Load parameters and buffers saved by :meth:`state_numpy` onto ``device``."""
        for name in self.params:
            self.params[name] = to_tensor(state[name], device, dtype).requires_grad_(True)
        for name, value in self.buffers.items():
            floating = value.is_floating_point() and dtype is not None
            self.buffers[name] = to_tensor(state[name], device, dtype if floating else None)
        return self

    def member(self, index):
        """Member ``index`` as a standalone module (a copy, in training mode)."""
        with seeded(0):  # the initial values are overwritten; keep the global RNG untouched
            module = self._build().to(device=self.device, dtype=self.dtype)
        state = {name: value[index].detach().clone() for name, value in self.params.items()}
        state.update({name: value[index].clone() for name, value in self.buffers.items()})
        module.load_state_dict(state)
        return module


class MLPEnsemble(ModuleEnsemble):
    """``n_members`` MLPs ``make_mlp(in_features, hidden_layer_sizes, out_features)``.

    Parameters
    ----------
    in_features : int
    hidden_layer_sizes : sequence of int
    out_features : int
    seeds : sequence of int
    activation : str, default="relu"
    dtype : torch.dtype, default=torch.float32
    device : torch.device, default="cpu"
    """

    def __init__(
        self,
        in_features,
        hidden_layer_sizes,
        out_features,
        seeds,
        activation="relu",
        dtype=torch.float32,
        device="cpu",
    ):
        hidden = tuple(int(h) for h in hidden_layer_sizes)

        def build():
            return make_mlp(int(in_features), hidden, int(out_features), activation)

        super().__init__(build, seeds, dtype=dtype, device=device)


def batch_schedule(n_samples, n_models, n_members, batch_size, data_mode, generator, device):
    """Minibatch indices of every member for the epochs to come.

    Member ``m`` is model ``m % n_models`` of labeling ``m // n_models``. The data order
    depends on the model index only, so every labeling is trained with the same orders and
    the score of a labeling does not depend on which other labelings share the ensemble.

    Parameters
    ----------
    n_samples : int
        Number of training points.
    n_models, n_members : int
    batch_size : int
    data_mode : {"same", "independent", "disjoint"}
        ``"same"``: every model sees the same minibatches (one permutation per epoch).
        ``"independent"``: each model draws its own permutation every epoch.
        ``"disjoint"``: the training points are split once into ``n_models`` equal parts
        (up to ``n_models - 1`` points are left out so that the parts have equal size);
        model ``k`` trains on part ``k`` only, with minibatches of
        ``max(1, batch_size // n_models)`` points, i.e. its share of every batch.
    generator : torch.Generator
    device : torch.device

    Returns
    -------
    next_epoch : callable
        ``next_epoch()`` returns the list of index tensors of shape (n_members, b) of one
        epoch (the last batch may be smaller).
    """
    if data_mode not in DATA_MODES:
        raise ValueError(f"data_mode must be one of {DATA_MODES}; got {data_mode!r}.")
    model_of_member = torch.arange(n_members, device=device) % n_models

    def random_orders(n_orders, length):
        keys = torch.rand((n_orders, length), generator=generator, device=device)
        return torch.argsort(keys, dim=1)

    if data_mode == "disjoint":
        part_size = n_samples // n_models
        if part_size < 1:
            raise ValueError(
                f"data_mode='disjoint' needs at least n_models={n_models} training points; "
                f"got {n_samples}."
            )
        first = random_orders(1, n_samples)[0]
        parts = first[: part_size * n_models].reshape(n_models, part_size)
        step = max(1, batch_size // n_models)
    else:
        step = batch_size

    def next_epoch():
        if data_mode == "same":
            order = random_orders(1, n_samples).expand(n_members, n_samples)
        elif data_mode == "independent":
            order = random_orders(n_models, n_samples)[model_of_member]
        else:
            within = random_orders(n_models, part_size)
            order = torch.gather(parts, 1, within)[model_of_member]
        return list(torch.split(order, step, dim=1))

    return next_epoch


def train_ensemble(
    ensemble,
    X,
    targets,
    task_of_member,
    next_epoch,
    max_epochs,
    learning_rate,
    verbose=0,
    logit_mask=None,
    seed=0,
    *,
    name="ensemble",
    callbacks=None,
):
    """Train every member with Adam on the cross-entropy of its own labeling.

    The epochs run on the shared training core (:class:`~sktaskmet._training.TrainingLoop`,
    one epoch per iteration): a history, ``verbose`` lines, scikit-learn callbacks and the
    non-finite guard, which restores the members (parameters and buffers) to the end of the
    previous epoch and warns with :class:`~sktaskmet.exceptions.NonFiniteWarning`.

    Parameters
    ----------
    ensemble : ModuleEnsemble
    X : torch.Tensor of shape (n_samples, *input_shape)
        Training inputs shared by all members.
    targets : torch.Tensor of shape (n_samples, n_tasks), int64
        Encoded labelings.
    task_of_member : torch.Tensor of shape (n_members,), int64
        Column of ``targets`` that each member learns.
    next_epoch : callable
        From :func:`batch_schedule`.
    max_epochs : int
    learning_rate : float
    verbose : int, default=0
        Prints the mean training loss every epoch when positive.
    logit_mask : torch.Tensor of shape (n_members, 1, out_features), optional
        Added to the logits: ``-inf`` on the classes that a member's labeling does not
        have, so that labelings with fewer classes than the output layer train as networks
        with that many outputs would.
    seed : int, default=0
        Seeds torch's generator of the ensemble's device for the random layers (dropout)
        inside the loop; the caller's global random state is restored afterwards.
    name : str, default="ensemble"
        Prefix of the ``verbose`` lines and of the warning.
    callbacks : FitCallbacks or None, default=None
        The scikit-learn callbacks of the estimator's ``fit`` (one task per epoch).

    Returns
    -------
    loss_curve : ndarray of shape (n_epochs_run, n_members)
        Mean training loss of each member in each epoch.
    """
    # Only random layers draw from torch's global generator during training; seeding it
    # (a process-wide lock) is skipped otherwise so that threads train concurrently.
    random_layers = any(isinstance(m, _RANDOM_LAYERS) for m in ensemble._skeleton.modules())
    context = seeded(seed, device=ensemble.device) if random_layers else contextlib.nullcontext()
    epoch = _EpochStep(ensemble, X, targets, task_of_member, next_epoch, learning_rate, logit_mask)
    loop = TrainingLoop(
        epoch,
        max_iter=max_epochs,
        snapshot=epoch.snapshot,
        restore=epoch.restore,
        guard="snapshot",
        name=name,
        verbose=verbose,
        advice="Lower learning_rate or scale X.",
        callbacks=callbacks,
    )
    with context:
        loop.run()
    if not epoch.curve:
        return np.empty((0, ensemble.n_members))
    return np.stack(epoch.curve)


class _EpochStep:
    """One epoch of Adam on every member: the step function of the training loop.

    Calling it runs the minibatches of one epoch and returns ``{"loss": mean over the
    members}``, or ``None`` when a member's epoch loss is NaN or infinite (checked once per
    epoch: one host synchronisation per epoch, not per minibatch). The per-member epoch
    losses are kept in ``curve``.
    """

    def __init__(self, ensemble, X, targets, task_of_member, next_epoch, learning_rate, mask):
        self.ensemble = ensemble
        self.X = X
        self.targets = targets
        self.task_of_member = task_of_member
        self.next_epoch = next_epoch
        self.logit_mask = mask
        self.optimizer = torch.optim.Adam(list(ensemble.params.values()), lr=learning_rate)
        # float16 autocast needs loss scaling (its gradients underflow); a disabled scaler
        # is a no-op, so bfloat16 and full precision take the same path.
        self.scaler = torch.amp.GradScaler(
            ensemble.device.type, enabled=ensemble.autocast == torch.float16
        )
        self.curve = []

    def _tensors(self):
        return list(self.ensemble.params.values()) + list(self.ensemble.buffers.values())

    def snapshot(self):
        return [t.detach().clone() for t in self._tensors()]

    @torch.no_grad()
    def restore(self, state):
        for tensor, good in zip(self._tensors(), state, strict=True):
            tensor.copy_(good)

    def __call__(self, iteration):
        ensemble, optimizer, scaler = self.ensemble, self.optimizer, self.scaler
        epoch_loss = torch.zeros(ensemble.n_members, dtype=self.X.dtype, device=self.X.device)
        n_seen = 0
        for batch in self.next_epoch():
            logits = ensemble(self.X[batch])  # (M, b, C)
            if self.logit_mask is not None:
                logits = logits + self.logit_mask
            labels = self.targets[batch, self.task_of_member[:, None].expand_as(batch)]
            # Per-member mean cross-entropy; summing over members keeps gradients separate.
            log_probs = torch.log_softmax(logits, dim=-1)
            member_loss = -log_probs.gather(-1, labels[..., None])[..., 0].mean(dim=1)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(member_loss.sum()).backward()
            scaler.step(optimizer)
            scaler.update()
            epoch_loss += member_loss.detach() * batch.shape[1]
            n_seen += batch.shape[1]
        epoch_loss /= n_seen
        if not bool(torch.isfinite(epoch_loss).all()):
            return None
        self.curve.append(to_numpy(epoch_loss))
        return {"loss": epoch_loss.mean()}


def pairwise_agreement(predictions):
    """Agreement of argmax predictions averaged over model pairs.

    Parameters
    ----------
    predictions : torch.Tensor of shape (n_tasks, n_models, n)

    Returns
    -------
    torch.Tensor of shape (n_tasks,)
        For each labeling, the fraction of points on which two models agree, averaged over
        the ``n_models * (n_models - 1) / 2`` pairs.
    """
    n_models = predictions.shape[1]
    i, j = torch.triu_indices(n_models, n_models, offset=1, device=predictions.device)
    same = (predictions[:, i, :] == predictions[:, j, :]).to(torch.float64)
    return same.mean(dim=(1, 2))
