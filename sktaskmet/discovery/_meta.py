"""Torch numerics of task discovery: the task encoder, the unrolled learners, the meta-loss.

A *task network* is a shared encoder ``x -> h(x)`` in R^d followed by ``d`` fixed orthonormal
heads ``w_1, ..., w_d``; task ``i`` labels ``x`` as 1 when ``h(x) . w_i > 0``. Only the encoder
is trained. Its objective is a differentiable stand-in for the agreement score: two learner
networks, started from a fixed pair of initial weights, take ``inner_steps`` plain SGD steps
on the soft labels of every task (each learner on its own half of the batch), and the
symmetric cross-entropy between their predictions on a held-out batch is differentiated
through the whole unrolled inner loop back into the encoder.

All ``n_tasks x 2`` learners run as one batched computation: the inner loop is written for
one learner with :func:`torch.func.grad` and :func:`torch.func.functional_call`, and
:func:`torch.func.vmap` lifts it over the two learners and over the tasks. The encoder's
parameters are ordinary ``requires_grad`` tensors outside these transforms, so a single
``loss.backward()`` differentiates the unrolled SGD trajectories (second derivatives of the
inner loss included).
"""

import copy
import math

import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from .._nn import make_mlp

__all__ = [
    "TaskEncoder",
    "orthonormal_heads",
    "soft_task_labels",
    "uniformity_loss",
    "LearnerPair",
    "meta_loss",
]

# Temperature of the soft labels softmax(5 [h.w, -h.w]) of the task network.
SOFT_LABEL_SCALE = 5.0
# t in the uniformity loss log mean exp(-t ||z_i - z_j||^2) (Wang and Isola, 2020).
UNIFORMITY_T = 2.0


class TaskEncoder(nn.Module):
    """Encoder of the task network: MLP backbone, bias-free projection, batch normalisation.

    ``h = gamma * (z - mean) / sqrt(var + eps)`` with ``z = P backbone(x)``: a BatchNorm whose
    bias is frozen at zero, so that the origin (where the heads' hyperplanes pass) sits at the
    centre of the embedded batch and every task splits the batch rather than labelling it all
    one way. During the meta-optimisation the statistics are those of the current batch; after
    it, the population statistics of the training set are frozen into ``running_mean`` and
    ``running_var`` so that new inputs are labelled one at a time, independently of their
    batch.

    Parameters
    ----------
    n_features : int
    hidden_layer_sizes : sequence of int
        Widths of the backbone's hidden layers (ReLU after each). Empty gives a linear encoder.
    embedding_dim : int
        Dimension ``d`` of ``h``.
    eps : float, default=1e-5
    backbone : torch.nn.Module, optional
        A backbone of any architecture (a CNN on images, say) mapping a batch to feature
        vectors of ``n_features`` values; when given, ``hidden_layer_sizes`` is ignored.
    """

    def __init__(self, n_features, hidden_layer_sizes, embedding_dim, eps=1e-5, backbone=None):
        super().__init__()
        hidden_layer_sizes = [int(h) for h in hidden_layer_sizes]
        if backbone is not None:
            self.backbone = nn.Sequential(backbone, nn.Flatten())
            width = int(n_features)
        elif hidden_layer_sizes:
            self.backbone = nn.Sequential(
                make_mlp(n_features, hidden_layer_sizes[:-1], hidden_layer_sizes[-1]), nn.ReLU()
            )
            width = hidden_layer_sizes[-1]
        else:
            self.backbone = nn.Identity()
            width = int(n_features)
        self.projection = nn.Linear(width, int(embedding_dim), bias=False)
        self.scale = nn.Parameter(torch.ones(int(embedding_dim)))
        self.register_buffer("running_mean", torch.zeros(int(embedding_dim)))
        self.register_buffer("running_var", torch.ones(int(embedding_dim)))
        self.eps = eps

    def project(self, x):
        """The embedding before normalisation, ``z = P backbone(x)``."""
        return self.projection(self.backbone(x))

    def forward(self, x, batch_statistics=True):
        z = self.project(x)
        if batch_statistics:
            mean = z.mean(dim=0)
            var = z.var(dim=0, unbiased=False)
        else:
            mean, var = self.running_mean, self.running_var
        return self.scale * (z - mean) / torch.sqrt(var + self.eps)

    @torch.no_grad()
    def freeze_statistics(self, x, chunk_size=4096):
        """Store the mean and (biased) variance of ``z`` over all of ``x`` as running statistics."""
        z = torch.cat([self.project(x[i : i + chunk_size]) for i in range(0, len(x), chunk_size)])
        self.running_mean.copy_(z.mean(dim=0))
        self.running_var.copy_(z.var(dim=0, unbiased=False))


def orthonormal_heads(embedding_dim, n_tasks, generator, dtype, device):
    """``n_tasks`` orthonormal vectors of R^d as the columns of a (d, n_tasks) matrix.

    The QR factor of a Gaussian matrix, with the signs fixed by the diagonal of R so that the
    result is a deterministic function of the draw (Haar-distributed on the Stiefel manifold).
    """
    gaussian = torch.randn(
        embedding_dim, n_tasks, generator=generator, dtype=dtype, device=generator.device
    )
    q, r = torch.linalg.qr(gaussian)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1
    return (q * signs).to(device)


def soft_task_labels(task_logits):
    """Soft labels ``softmax(5 [-a, a])`` of task logits ``a = h . w``, shape (..., 2).

    Class 1 (the task's positive class, ``a > 0``) is the last column.
    """
    scaled = SOFT_LABEL_SCALE * task_logits
    return torch.softmax(torch.stack([-scaled, scaled], dim=-1), dim=-1)


def uniformity_loss(h, t=UNIFORMITY_T):
    """Uniformity ``log mean_{i<j} exp(-t ||z_i - z_j||^2)`` of ``z = h / ||h||``.

    Lower is more uniform on the sphere. Computed from the Gram matrix of the unit vectors
    (``||z_i - z_j||^2 = 2 - 2 z_i . z_j``) with a log-sum-exp over the upper triangle.
    """
    z = nn.functional.normalize(h, dim=-1)
    n = z.shape[0]
    rows, cols = torch.triu_indices(n, n, offset=1, device=z.device)
    squared = (2.0 - 2.0 * (z @ z.T))[rows, cols].clamp_min(0.0)
    return torch.logsumexp(-t * squared, dim=0) - math.log(rows.numel())


class LearnerPair:
    """Two learner networks with fixed initial weights, trained functionally and in batch.

    Parameters
    ----------
    learners : sequence of two torch.nn.Module
        Same architecture, two initialisations; they map ``x`` to two logits.
    """

    def __init__(self, learners):
        learners = list(learners)
        self.initial_params, self.buffers = stack_module_state(learners)
        self.initial_params = {k: v.detach() for k, v in self.initial_params.items()}
        # A parameter-free copy on the meta device serves as the stateless "skeleton" for
        # functional_call; the parameters are always passed in explicitly.
        self._skeleton = copy.deepcopy(learners[0]).to("meta")

    def to(self, device=None, dtype=None):
        self.initial_params = {
            k: v.to(device=device, dtype=dtype) for k, v in self.initial_params.items()
        }
        self.buffers = {k: v.to(device=device) for k, v in self.buffers.items()}
        return self

    def _logits(self, params, x):
        return functional_call(self._skeleton, (params, self.buffers), (x,))

    def _inner_loss(self, params, x, target):
        log_prob = torch.log_softmax(self._logits(params, x), dim=-1)
        return -(target * log_prob).sum(dim=-1).mean()

    def _train_one(self, params, x, target, inner_steps, inner_lr):
        # Plain SGD, unrolled: every step stays in the autograd graph of the encoder.
        step_grad = grad(self._inner_loss)
        for _ in range(inner_steps):
            grads = step_grad(params, x, target)
            params = {k: params[k] - inner_lr * grads[k] for k in params}
        return params

    def train(self, x_halves, targets, inner_steps, inner_lr):
        """Train the pair on every task at once.

        Parameters
        ----------
        x_halves : Tensor of shape (2, m, n_features)
            Learner ``k`` trains on ``x_halves[k]`` ("disjoint" halves of a batch).
        targets : Tensor of shape (n_tasks, 2, m, 2)
            Soft labels of every task on each learner's half.
        inner_steps : int
        inner_lr : float

        Returns
        -------
        dict of str to Tensor of shape (n_tasks, 2, ...)
            Trained parameters of every task's two learners.
        """

        def train_pair(target_pair):
            return vmap(self._train_one, in_dims=(0, 0, 0, None, None))(
                self.initial_params, x_halves, target_pair, inner_steps, inner_lr
            )

        return vmap(train_pair)(targets)

    def log_proba(self, params, x):
        """Log class probabilities of every trained learner on ``x``: (n_tasks, 2, n, 2)."""

        def one(p):
            return torch.log_softmax(self._logits(p, x), dim=-1)

        return vmap(vmap(one))(params)


def symmetric_cross_entropy(log_p, log_q):
    """Mean over samples of ``CE(p, q) + CE(q, p)``; inputs are log-probabilities (..., n, 2)."""
    p, q = log_p.exp(), log_q.exp()
    return -((p * log_q).sum(-1) + (q * log_p).sum(-1)).mean(-1)


def meta_loss(
    encoder,
    heads,
    learners,
    x_inner,
    x_heldout,
    inner_steps,
    inner_lr,
    uniformity,
):
    """Outer objective of task discovery on one batch.

    ``L = mean_i SCE(f_A^i(x_heldout), f_B^i(x_heldout)) + uniformity * U(h(x_inner))``,
    where ``f_A^i`` and ``f_B^i`` are the two learners after ``inner_steps`` SGD steps on
    the soft labels of task ``i`` over the first and the second half of ``x_inner``, and
    ``U`` is :func:`uniformity_loss`.

    Parameters
    ----------
    encoder : TaskEncoder
    heads : Tensor of shape (d, n_tasks)
    learners : LearnerPair
    x_inner : Tensor of shape (2 m, n_features)
    x_heldout : Tensor of shape (n_heldout, n_features)
    inner_steps : int
    inner_lr : float
    uniformity : float

    Returns
    -------
    loss, agreement_loss, uniformity_value : Tensor (scalars)
        The total loss (differentiable in the encoder's parameters) and its two terms.
    """
    h = encoder(x_inner, batch_statistics=True)
    half = x_inner.shape[0] // 2
    soft = soft_task_labels(h @ heads)  # (2m, n_tasks, 2)
    x_halves = torch.stack([x_inner[:half], x_inner[half : 2 * half]])
    targets = torch.stack([soft[:half], soft[half : 2 * half]]).permute(2, 0, 1, 3)
    trained = learners.train(x_halves, targets, inner_steps, inner_lr)
    log_proba = learners.log_proba(trained, x_heldout)  # (n_tasks, 2, n_heldout, 2)
    agreement = symmetric_cross_entropy(log_proba[:, 0], log_proba[:, 1]).mean()
    uniform = uniformity_loss(h)
    return agreement + uniformity * uniform, agreement, uniform
