"""Torch numerics of gradient-based subset estimation.

The model is linearised at its pretrained parameters :math:`\\theta_0`,

.. math:: f_\\theta(x) \\approx f_{\\theta_0}(x) + J(x)\\,(\\theta - \\theta_0),

where :math:`J(x)` is the Jacobian of the outputs with respect to the trainable parameters
(one row per output, one column per parameter). The Jacobians of every example are computed
once (in closed form from layer inputs and backpropagated output gradients when the trainable
parameters are those of linear layers, otherwise batched with :func:`torch.func.vmap` over
:func:`torch.func.jacrev`), and multiplied by a random projection :math:`P` (``n_params x d``,
entries of variance ``1/d``) so that each example keeps a ``C x d`` matrix
:math:`G(x) = J(x) P`. Fine-tuning on a subset of tasks then becomes the small convex problem

.. math::

    \\min_w \\sum_i a_i\\, \\ell\\big(f_{\\theta_0}(x_i) + G(x_i) w,\\ y_i\\big)
    + \\frac{\\lambda}{2} \\lVert w \\rVert^2 ,

with :math:`a_i` the normalised weight of the task that example :math:`i` belongs to. It is
solved for many subsets at once by a batched damped Newton method (conjugate gradients
preconditioned by the Hessian at ``w = 0``, or Cholesky solves of ``d x d`` systems; Armijo
backtracking per subset; subsets leave the batch as they converge).

This module holds the numerics only; input checking lives in the estimator.
"""

import math
import warnings

import torch
from torch.func import functional_call, jacrev, vmap

from ..exceptions import NonFiniteWarning

__all__ = [
    "make_loss",
    "loss_targets",
    "trainable_parameters",
    "random_projection",
    "output_jacobians",
    "row_space_basis",
    "task_hessians",
    "pretrained_eigenbasis",
    "solve_subsets",
]


# --------------------------------------------------------------------------------------
# Per-example losses with their derivatives with respect to the outputs
# --------------------------------------------------------------------------------------


class CrossEntropyLoss:
    """Multinomial cross-entropy on logits; ``y`` holds class indices (int64)."""

    def value(self, out, y):
        # out: (..., n, C); y: (n,) -> (..., n)
        picked = torch.gather(out, -1, y.expand(out.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        return torch.logsumexp(out, dim=-1) - picked

    def grad(self, out, y):
        prob = torch.softmax(out, dim=-1)
        onehot = torch.nn.functional.one_hot(y, out.shape[-1]).to(out.dtype)
        return prob - onehot

    def hessian(self, out, y):
        prob = torch.softmax(out, dim=-1)
        return torch.diag_embed(prob) - prob.unsqueeze(-1) * prob.unsqueeze(-2)

    def hessian_operator(self, out, y):
        # u -> (diag(p) - p p^T) u without forming the C x C matrices; the probabilities are
        # computed once for the many products of a conjugate-gradient solve.
        prob = torch.softmax(out, dim=-1)

        def apply(u, rows=None):
            p = prob if rows is None else prob[rows]
            return p * (u - (p * u).sum(-1, keepdim=True))

        return apply


class SquaredErrorLoss:
    """Squared error summed over the outputs; ``y`` has the shape of the outputs."""

    def value(self, out, y):
        return ((out - y) ** 2).sum(dim=-1)

    def grad(self, out, y):
        return 2.0 * (out - y)

    def hessian(self, out, y):
        eye = torch.eye(out.shape[-1], dtype=out.dtype, device=out.device)
        return (2.0 * eye).expand(*out.shape, out.shape[-1])

    def hessian_operator(self, out, y):
        return lambda u, rows=None: 2.0 * u


class CallableLoss:
    """A user loss ``fn(outputs, y) -> per-example losses``, differentiated by torch.func.

    ``fn`` receives ``outputs`` of shape ``(n, C)`` and targets with ``n`` rows, and returns a
    tensor of shape ``(n,)``. It must be written with differentiable torch operations.
    """

    def __init__(self, fn):
        self.fn = fn

        def single(o, t):
            return fn(o.unsqueeze(0), t.unsqueeze(0)).reshape(())

        self._grad = vmap(torch.func.grad(single))
        self._hessian = vmap(torch.func.hessian(single))

    def _flatten(self, out, y):
        lead = out.shape[:-2]
        n, c = out.shape[-2:]
        flat_y = y.expand(*lead, *y.shape).reshape(-1, *y.shape[1:])
        return out.reshape(-1, c), flat_y, lead, n, c

    def value(self, out, y):
        flat_out, flat_y, lead, n, _ = self._flatten(out, y)
        return self.fn(flat_out, flat_y).reshape(*lead, n)

    def grad(self, out, y):
        flat_out, flat_y, lead, n, c = self._flatten(out, y)
        return self._grad(flat_out, flat_y).reshape(*lead, n, c)

    def hessian(self, out, y):
        flat_out, flat_y, lead, n, c = self._flatten(out, y)
        return self._hessian(flat_out, flat_y).reshape(*lead, n, c, c)

    def hessian_operator(self, out, y):
        hess = self.hessian(out, y)

        def apply(u, rows=None):
            h = hess if rows is None else hess[rows]
            return torch.einsum("...cj,...j->...c", h, u)

        return apply


def make_loss(loss):
    """The loss object for the estimator's ``loss`` parameter."""
    if loss == "cross_entropy":
        return CrossEntropyLoss()
    if loss == "squared_error":
        return SquaredErrorLoss()
    return CallableLoss(loss)


def loss_targets(y, loss):
    """Targets ``y`` (a tensor) shaped for the ``loss`` parameter.

    ``"squared_error"`` compares outputs of shape ``(n, C)`` with targets of the same shape,
    so a 1-D target vector becomes one column; other losses take ``y`` as it is.
    """
    if isinstance(loss, str) and loss == "squared_error" and y.ndim == 1:
        return y.unsqueeze(1)
    return y


# --------------------------------------------------------------------------------------
# Per-example Jacobians and their random projection
# --------------------------------------------------------------------------------------


def trainable_parameters(model):
    """Names and tensors of the parameters that fine-tuning updates (``requires_grad``)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


class SparseProjection:
    """A CountSketch projection: parameter ``j`` goes to bucket ``h(j)`` with sign ``s(j)``.

    As a matrix, ``P[j, h(j)] = s(j)`` and every other entry is 0, so ``E[P P^T] = I`` like
    the dense projections, while ``J @ P`` costs one scatter-add of the columns of ``J``
    (``n_params`` operations per row instead of ``n_params * dim``).
    """

    def __init__(self, buckets, signs, dim):
        self.buckets = buckets
        self.signs = signs
        self.dim = dim
        self.shape = (buckets.shape[0], dim)

    def apply(self, jac):
        """``jac @ P`` for ``jac`` of shape (..., n_params)."""
        out = jac.new_zeros(*jac.shape[:-1], self.dim)
        return out.index_add_(jac.ndim - 1, self.buckets, jac * self.signs)

    def dense(self):
        matrix = torch.zeros(self.shape, dtype=self.signs.dtype, device=self.signs.device)
        matrix[torch.arange(self.shape[0], device=self.signs.device), self.buckets] = self.signs
        return matrix


def random_projection(n_params, dim, kind, generator, dtype, device):
    """A ``(n_params, dim)`` Johnson-Lindenstrauss projection with :math:`E[P P^\\top] = I`.

    ``"rademacher"`` and ``"gaussian"`` are dense with entries of variance ``1/dim``;
    ``"sparse"`` is a :class:`SparseProjection` (CountSketch). In every case inner products
    of projected gradients are unbiased estimates of the inner products of the full
    gradients.
    """
    if kind == "sparse":
        buckets = torch.randint(0, dim, (n_params,), generator=generator, device=device)
        signs = torch.randint(0, 2, (n_params,), generator=generator, device=device)
        return SparseProjection(buckets, signs.to(dtype).mul_(2.0).sub_(1.0), dim)
    if kind == "rademacher":
        signs = torch.randint(0, 2, (n_params, dim), generator=generator, device=device)
        matrix = signs.to(dtype).mul_(2.0).sub_(1.0)
    else:
        matrix = torch.randn(n_params, dim, generator=generator, device=device, dtype=dtype)
    return matrix.div_(math.sqrt(dim))


def _linear_layers(model, params):
    """The ``nn.Linear`` modules that own every trainable parameter, or None.

    Returns a list of ``(module, weight_name, bias_name)`` (a name is None when that
    parameter is frozen) when each trainable parameter is the ``weight`` or ``bias`` of an
    :class:`torch.nn.Linear`; their per-example Jacobians then have the closed form used by
    :func:`output_jacobians`. Any other parameter (convolutions, embeddings,
    parametrisations, ...) returns None.
    """
    layers = {}
    for name, param in params.items():
        prefix, _, attr = name.rpartition(".")
        try:
            module = model.get_submodule(prefix)
        except AttributeError:
            return None
        if type(module) is not torch.nn.Linear or getattr(module, attr, None) is not param:
            return None
        entry = layers.setdefault(prefix, [module, None, None])
        entry[1 if attr == "weight" else 2] = name
    return [tuple(entry) for entry in layers.values()]


def _layer_activations(model, layers, xb, verify=True):
    r"""Outputs, layer inputs and output gradients of one batch, by one forward pass.

    For a linear layer :math:`z = W a + b` the Jacobian of output :math:`c` of example
    :math:`i` with respect to :math:`W` is the outer product :math:`\delta_{ic} a_i^\top`,
    with :math:`\delta_{ic} = \partial f_c(x_i) / \partial z_i`, and :math:`\delta_{ic}`
    with respect to :math:`b`. One batched forward pass records every :math:`a_i` and
    :math:`z_i`; one backward pass per output gives :math:`\delta_{ic}` for all examples at
    once (the examples of a batch do not interact in evaluation mode).

    Returns None when a layer is called more than once per forward pass or on inputs that
    are not ``(batch, features)`` matrices (its Jacobian is then a sum of outer products),
    or, with ``verify``, when a weight is also used outside its layer (see
    :func:`_closed_form_holds`; that is a property of the model, so one batch suffices).
    """
    inputs, pre_activations, valid = {}, {}, [True]

    def record(key):
        def hook(module, args, output):
            if key in inputs or args[0].ndim != 2 or args[0].shape[0] != xb.shape[0]:
                valid[0] = False
            # Copies: a later in-place operation (ReLU(inplace=True)) must change neither
            # the recorded input nor the tensor whose gradient is taken; the rest of the
            # network runs on the returned copy of the output.
            inputs[key] = args[0].detach().clone()
            pre_activations[key] = output
            return output.clone()

        return hook

    handles = [
        module.register_forward_hook(record(index)) for index, (module, _, _) in enumerate(layers)
    ]
    try:
        with torch.enable_grad():
            out = model(xb).reshape(xb.shape[0], -1)
            if not valid[0] or len(inputs) != len(layers):
                return None
            zs = [pre_activations[index] for index in range(len(layers))]
            if verify and not _closed_form_holds(layers, inputs, zs, out):
                return None
            deltas = [[] for _ in layers]
            for c in range(out.shape[1]):
                grads = torch.autograd.grad(
                    out[:, c].sum(), zs, retain_graph=c + 1 < out.shape[1], allow_unused=True
                )
                for index, grad in enumerate(grads):
                    deltas[index].append(torch.zeros_like(zs[index]) if grad is None else grad)
    finally:
        for handle in handles:
            handle.remove()
    activations = [inputs[index] for index in range(len(layers))]
    deltas = [torch.stack(delta, 1) for delta in deltas]  # (b, C, out) each
    return out.detach(), activations, deltas


def _closed_form_holds(layers, inputs, zs, out):
    r"""Whether the parameter gradients of ``out.sum()`` are the outer-product sums.

    The closed form sees a parameter only through its layer's call. A weight that is also
    used elsewhere (tied to another layer, or read directly by ``F.linear``) has further
    Jacobian terms; then the gradient of the summed outputs differs from
    :math:`\sum_i \delta_i a_i^\top` (:math:`\delta_i` the gradient with respect to the
    layer output), and the caller falls back to ``torch.func``. One extra backward pass.
    """
    params = []
    for module, weight_name, bias_name in layers:
        params.append(module.weight if weight_name is not None else None)
        params.append(module.bias if bias_name is not None else None)
    used = [p for p in params if p is not None]
    grads = torch.autograd.grad(out.sum(), zs + used, retain_graph=True, allow_unused=True)
    z_grads, param_grads = grads[: len(zs)], iter(grads[len(zs) :])
    tol = torch.finfo(out.dtype).eps ** 0.5
    for index, z_grad in enumerate(z_grads):
        delta = torch.zeros_like(zs[index]) if z_grad is None else z_grad
        expected = [delta.T @ inputs[index], delta.sum(0)]
        for param, value in zip(params[2 * index : 2 * index + 2], expected, strict=True):
            if param is None:
                continue
            grad = next(param_grads)
            grad = torch.zeros_like(param) if grad is None else grad
            scale = float(grad.abs().max()) + float(value.abs().max())
            if not torch.allclose(grad, value, rtol=tol, atol=tol * scale):
                return False
    return True


def _structured_jacobians(model, layers, params, xb, projection, verify=True):
    r"""(Projected) Jacobians of one batch from layer inputs and output gradients.

    With a dense projection the flattened outer products are never formed: the block of
    ``P`` that belongs to a weight of shape ``(out, in)``, viewed as ``(out, in, d)``, is
    contracted with :math:`a_i` first (``b * in * out * d`` work) and then with each
    :math:`\delta_{ic}` (``b * C * out * d``), instead of ``b * C * out * in * d`` for the
    product of the full Jacobian with ``P``.
    """
    recorded = _layer_activations(model, layers, xb, verify)
    if recorded is None:
        return None
    out, activations, deltas = recorded
    by_name = {}
    for (_, weight_name, bias_name), a, delta in zip(layers, activations, deltas, strict=True):
        if weight_name is not None:
            by_name[weight_name] = ("weight", a, delta)
        if bias_name is not None:
            by_name[bias_name] = ("bias", a, delta)
    b, n_out = out.shape
    if projection is None or isinstance(projection, SparseProjection):
        pieces = []
        for name in params:
            kind, a, delta = by_name[name]
            if kind == "weight":
                pieces.append((delta.unsqueeze(-1) * a[:, None, None, :]).reshape(b, n_out, -1))
            else:
                pieces.append(delta)
        flat = torch.cat(pieces, 2)
        if projection is not None:
            flat = projection.apply(flat)
        return out, flat
    d = projection.shape[1]
    result = out.new_zeros(b, n_out, d)
    for name, block in projection.blocks.items():
        kind, a, delta = by_name[name]
        if kind == "weight":
            n_rows = delta.shape[-1]
            contracted = (a @ block).reshape(b, n_rows, d)  # sum_j a_j P[(o, j), :]
            result.baddbmm_(delta, contracted)
        else:
            result += (delta.reshape(b * n_out, -1) @ block).reshape(b, n_out, d)
    return out, result


class _BlockedProjection:
    """The rows of a dense projection cut into per-parameter blocks, arranged for
    :func:`_structured_jacobians`: a weight's block ``(out * in, d)`` becomes
    ``(in, out * d)`` (one copy per :func:`output_jacobians` call, not per batch)."""

    def __init__(self, projection, params):
        self.shape = projection.shape
        d = projection.shape[1]
        self.blocks = {}
        offset = 0
        for name, param in params.items():
            block = projection[offset : offset + param.numel()]
            offset += param.numel()
            if param.ndim == 2:
                n_rows, n_cols = param.shape
                block = block.reshape(n_rows, n_cols, d).transpose(0, 1).reshape(n_cols, -1)
            self.blocks[name] = block


def output_jacobians(model, X, projection=None, batch_size=256):
    """Outputs and (projected) output Jacobians of every example at the current parameters.

    When every trainable parameter is the weight or bias of an ``nn.Linear`` layer called
    once per forward pass on ``(batch, features)`` inputs (multi-layer perceptrons, linear
    heads on a frozen body), the Jacobians come in closed form from one batched forward
    pass and one backward pass per output (see :func:`_layer_activations`). Other models use
    ``torch.func.vmap`` over ``jacrev``. Both give the same numbers.

    Parameters
    ----------
    model : torch.nn.Module
        In evaluation mode, on the device and dtype of ``X``.
    X : torch.Tensor of shape (n, ...)
    projection : torch.Tensor of shape (n_params, d), SparseProjection or None
        ``None`` keeps the full Jacobians (``d = n_params``).
    batch_size : int
        Examples per batch; bounds memory at about ``batch_size * C * n_params`` numbers
        (``batch_size * max(C, out) * d`` for linear layers with a dense projection).

    Returns
    -------
    outputs : torch.Tensor of shape (n, C)
    jacobians : torch.Tensor of shape (n, C, d)
    """
    trainable = trainable_parameters(model)
    params = {name: p.detach() for name, p in trainable.items()}
    layers = _linear_layers(model, trainable)
    blocked = projection
    if layers is not None and isinstance(projection, torch.Tensor):
        blocked = _BlockedProjection(projection, params)
    outputs, jacobians = [], []
    for start in range(0, X.shape[0], batch_size):
        xb = X[start : start + batch_size]
        result = None
        if layers is not None:
            # Whether a weight is also used outside its layer is checked on the first batch.
            verify = start == 0
            result = _structured_jacobians(model, layers, params, xb, blocked, verify)
            if result is None:  # a layer is reused or sees non-matrix inputs
                layers = None
        if result is None:
            result = _vmap_jacobians(model, params, xb, projection)
        outputs.append(result[0])
        jacobians.append(result[1])
    return torch.cat(outputs, 0), torch.cat(jacobians, 0)


def _vmap_jacobians(model, params, xb, projection):
    """(Projected) Jacobians of one batch by ``torch.func.vmap`` over ``jacrev``."""
    names = list(params)
    # Frozen parameters and buffers enter the call as constants.
    constants = {name: p.detach() for name, p in model.named_parameters() if name not in params}
    constants.update({name: b.detach() for name, b in model.named_buffers()})

    def single_output(p, x):
        out = functional_call(model, {**p, **constants}, (x.unsqueeze(0),))
        return out.reshape(-1)

    with torch.no_grad():
        out = model(xb).reshape(xb.shape[0], -1)
        jac = vmap(jacrev(single_output), in_dims=(None, 0))(params, xb)
        pieces = [jac[name].reshape(xb.shape[0], out.shape[1], -1) for name in names]
        flat = torch.cat(pieces, 2)
        if isinstance(projection, SparseProjection):
            flat = projection.apply(flat)
        elif projection is not None:
            flat = flat @ projection
    return out, flat


def row_space_basis(jacobians):
    """Orthonormal basis of the span of the Jacobian rows, when it is smaller than the space.

    The subset problems are linearised fine-tuning with an isotropic penalty: the gradient
    of every objective is a combination of the training Jacobian rows, so each solution lies
    in their span. With ``Q`` of shape ``(n_params, k)`` whose orthonormal columns span the
    rows, ``J w = (J Q)(Q^T w)`` and ``||w|| = ||Q^T w||`` there, and solving in the
    coordinates ``Q^T w`` is exact. Returns None when ``n * C >= n_params`` (no saving).

    Householder QR of the ``(n_params, n * C)`` matrix of rows gives ``Q`` orthonormal to
    working precision even when the rows are (nearly) dependent; ``k = n * C`` then exceeds
    the rank, which costs a little work and changes nothing.
    """
    n, n_outputs, n_params = jacobians.shape
    if n * n_outputs >= n_params:
        return None
    basis, _ = torch.linalg.qr(jacobians.reshape(n * n_outputs, n_params).T)
    return basis


def task_hessians(jacobians, outputs, y, task_index, n_tasks, loss):
    """Per-task sums of :math:`G_i^\\top \\nabla^2 \\ell_i\\, G_i` at the pretrained outputs.

    Returns a tensor of shape ``(n_tasks, d, d)``: the Hessian of a subset's objective at
    ``w = 0`` is a weighted sum of these plus the penalty.
    """
    curvature = loss.hessian(outputs, y)  # (n, C, C)
    weighted = torch.einsum("icj,ijd->icd", curvature, jacobians)  # (n, C, d)
    d = jacobians.shape[-1]
    result = torch.zeros(n_tasks, d, d, dtype=jacobians.dtype, device=jacobians.device)
    for k in range(n_tasks):
        rows = task_index == k
        g = jacobians[rows].reshape(-1, d)
        h = weighted[rows].reshape(-1, d)
        result[k] = g.T @ h
    return 0.5 * (result + result.transpose(1, 2))


# --------------------------------------------------------------------------------------
# Batched damped Newton solve of the subset problems
# --------------------------------------------------------------------------------------


def _exact_hessians(jacobians, out, y, example_weights, loss, chunk=8):
    """Hessian of the data term for each subset: ``sum_i a_bi G_i^T H_bi G_i`` (B, d, d)."""
    d = jacobians.shape[-1]
    blocks = []
    for start in range(0, out.shape[0], chunk):
        curvature = loss.hessian(out[start : start + chunk], y)  # (b, n, C, C)
        curvature = curvature * example_weights[start : start + chunk, :, None, None]
        weighted = torch.einsum("bicj,ijd->bicd", curvature, jacobians)
        blocks.append(torch.einsum("icd,bice->bde", jacobians, weighted))
    hess = torch.cat(blocks, 0) if blocks else jacobians.new_zeros(0, d, d)
    return 0.5 * (hess + hess.transpose(1, 2))


def _cholesky_with_jitter(matrix):
    """Cholesky factors of a batch of symmetric matrices, adding jitter where one fails."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if bool((info > 0).any()):
        d = matrix.shape[-1]
        eye = torch.eye(d, dtype=matrix.dtype, device=matrix.device)
        scale = matrix.diagonal(dim1=-2, dim2=-1).abs().mean(-1).clamp_min(1.0)
        jitter = torch.finfo(matrix.dtype).eps ** 0.5
        for _ in range(8):
            bad = info > 0
            if not bool(bad.any()):
                break
            fixed = matrix[bad] + (jitter * scale[bad])[:, None, None] * eye
            factor_bad, info_bad = torch.linalg.cholesky_ex(fixed)
            factor[bad] = factor_bad
            info[bad] = info_bad
            jitter *= 100.0
    return factor


class _InversePreconditioner:
    """Applies the inverses ``(B, d, d)`` of the subsets' preconditioners."""

    def __init__(self, inverse):
        self.inverse = inverse

    def select(self, keep):
        return _InversePreconditioner(self.inverse[keep])

    def __call__(self, r, rows):
        if rows is not None and 3 * rows.shape[0] < r.shape[0]:
            # Applying the preconditioner reads all B matrices; gathering the few that
            # are still needed reads and writes only those.
            z = torch.zeros_like(r)
            z[rows] = torch.matmul(self.inverse[rows], r[rows].unsqueeze(-1)).squeeze(-1)
            return z
        return torch.matmul(self.inverse, r.unsqueeze(-1)).squeeze(-1)


class _EigenbasisPreconditioner:
    """``r -> U diag(scale_b) U^T r``: one basis for every subset, a diagonal per subset."""

    def __init__(self, basis, scale):
        self.basis = basis
        self.scale = scale

    def select(self, keep):
        return _EigenbasisPreconditioner(self.basis, self.scale[keep])

    def __call__(self, r, rows):
        return ((r @ self.basis) * self.scale) @ self.basis.T


def pretrained_eigenbasis(pretrained_hessians):
    """Eigenvectors of the summed task Hessians and each task's diagonal in that basis.

    Returns ``U`` of shape ``(d, d)`` and ``diagonals`` of shape ``(n_tasks, d)`` with
    ``diagonals[t, k] = u_k^T H_t u_k``, so that the diagonal of any weighted sum of the
    task Hessians in the basis ``U`` is the same weighted sum of the rows of ``diagonals``.
    """
    _, basis = torch.linalg.eigh(pretrained_hessians.sum(0))
    diagonals = ((pretrained_hessians @ basis) * basis).sum(-2)
    return basis, diagonals


def _preconditioned_cg(hvp, rhs, precondition, max_iter, rtol):
    """Solve ``H x = rhs`` for a batch of SPD operators by preconditioned conjugate gradients.

    ``hvp(v, rows)`` applies the Hessians of the systems ``rows`` (an index tensor, or None
    for all ``B``) to ``v`` of shape (len(rows), d); ``precondition(r, rows)`` applies the
    preconditioners to ``r`` of shape (B, d) (only the rows ``rows`` are used). Each system
    stops on its own once its residual falls below ``rtol`` times the norm of its right-hand
    side; the Hessian products, the expensive part, are then computed for the unfinished
    systems only.
    """
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = precondition(r, None)
    p = z.clone()
    rz = (r * z).sum(1)
    target = rtol * rhs.norm(dim=1)
    done = r.norm(dim=1) <= target
    for _ in range(max_iter):
        if bool(done.all()):
            break
        rows = None
        if bool(done.any()):
            rows = torch.nonzero(~done).squeeze(1)
            hp = torch.zeros_like(p)
            hp[rows] = hvp(p[rows], rows)
        else:
            hp = hvp(p, None)
        curvature = (p * hp).sum(1)
        alpha = torch.where(done | (curvature <= 0), 0.0, rz / curvature.clamp_min(1e-300))
        x = x + alpha.unsqueeze(1) * p
        r = r - alpha.unsqueeze(1) * hp
        done = done | (r.norm(dim=1) <= target) | (curvature <= 0)
        z = precondition(r, rows)
        rz_new = (r * z).sum(1)
        beta = torch.where(done, 0.0, rz_new / rz.clamp_min(1e-300))
        p = z + beta.unsqueeze(1) * p
        rz = rz_new
    return x


def solve_subsets(
    jacobians,
    outputs,
    y,
    task_index,
    subset_weights,
    *,
    loss,
    penalty,
    solver="newton-cg",
    pretrained_hessians=None,
    preconditioner="eigenbasis",
    eigenbasis=None,
    max_iter=100,
    tol=1e-12,
    cg_max_iter=50,
):
    """Minimise the linearised, projected fine-tuning objective of many subsets at once.

    Parameters
    ----------
    jacobians : torch.Tensor of shape (n, C, d)
        Projected output Jacobians of the training examples.
    outputs : torch.Tensor of shape (n, C)
        Pretrained outputs (the offsets).
    y : torch.Tensor with n rows
        Training targets.
    task_index : torch.Tensor of shape (n,), int64
        Task of each training example, in ``range(n_tasks)``.
    subset_weights : torch.Tensor of shape (B, n_tasks)
        Task weights in [0, 1], one row per subset.
    loss : loss object from :func:`make_loss`
    penalty : float
        :math:`\\lambda` of the L2 penalty on ``w``.
    solver : {"newton-cg", "newton"}
        How the Newton direction is computed. ``"newton-cg"``: preconditioned conjugate
        gradients on Hessian-vector products (``2 n C d`` work each), preconditioned with
        the Hessian at ``w = 0``, a weighted sum of the ``n_tasks`` matrices in
        ``pretrained_hessians`` (see ``preconditioner``). ``"newton"``: the Hessian is
        formed and factored at every iteration (``n C d^2`` work per subset and iteration).
    pretrained_hessians : torch.Tensor of shape (n_tasks, d, d)
        From :func:`task_hessians`; needed for ``solver="newton-cg"``.
    preconditioner : {"eigenbasis", "cholesky"}
        ``"cholesky"``: the inverse of each subset's Hessian at ``w = 0`` (a ``d^3``
        factorisation per subset; each application reads a ``d x d`` matrix per subset).
        ``"eigenbasis"``: that Hessian's diagonal in the eigenbasis ``U`` of the summed
        task Hessians, :math:`U\\,\\mathrm{diag}(U^\\top H_s U + \\lambda)^{-1} U^\\top`,
        where the diagonal is a weighted sum of the per-task diagonals: ``O(d)`` per subset
        to build, two ``d x d`` matrix products for the whole batch to apply. Exact when the
        subset's Hessian shares the eigenvectors (e.g. all tasks with equal weights).
    eigenbasis : tuple of torch.Tensor, optional
        ``(U, diagonals)`` from :func:`pretrained_eigenbasis`, to reuse across batches;
        computed from ``pretrained_hessians`` when None.
    max_iter : int
        Newton iterations.
    tol : float
        A subset stops when half its squared Newton decrement (the predicted decrease of
        the objective) falls below ``tol`` (or a few ulps of the objective, whichever is
        larger).
    cg_max_iter : int
        Conjugate-gradient iterations per Newton step.

    Returns
    -------
    solution : torch.Tensor of shape (B, d)
    n_iter : torch.Tensor of shape (B,), int64
    converged : torch.Tensor of shape (B,), bool
    """
    B = subset_weights.shape[0]
    d = jacobians.shape[-1]
    dtype, device = jacobians.dtype, jacobians.device
    tiny = torch.finfo(dtype).tiny
    example_weights = subset_weights[:, task_index]  # (B, n)
    totals = example_weights.sum(1, keepdim=True)
    # An empty subset trains on nothing: its data term vanishes and w = 0 is the solution.
    example_weights = torch.where(totals > 0, example_weights / totals.clamp_min(tiny), 0.0)
    eye = torch.eye(d, dtype=dtype, device=device)

    n, n_outputs = outputs.shape
    # Plain matrix products on the (n * C, d) matrix: no layout copies of the results.
    flat = jacobians.reshape(n * n_outputs, d)

    def apply_jacobians(v):  # (b, d) -> (b, n, C): G_i v for every example
        return (v @ flat.T).view(v.shape[0], n, n_outputs)

    def apply_transposed(u):  # (b, n, C) -> (b, d): sum_i G_i^T u_i
        return u.reshape(u.shape[0], n * n_outputs) @ flat

    def objective(w, weights):
        out = outputs + apply_jacobians(w)
        data = (weights * loss.value(out, y)).sum(1)
        return data + 0.5 * penalty * (w * w).sum(1), out

    solution = torch.zeros(B, d, dtype=dtype, device=device)
    n_iter = torch.zeros(B, dtype=torch.int64, device=device)
    converged = torch.zeros(B, dtype=torch.bool, device=device)

    if solver == "newton-cg" and preconditioner not in ("eigenbasis", "cholesky"):
        raise ValueError(
            f"preconditioner must be 'eigenbasis' or 'cholesky'; got {preconditioner!r}."
        )
    precondition = None
    if solver == "newton-cg":
        task_share = torch.where(totals > 0, subset_weights / totals.clamp_min(tiny), 0.0)
        if preconditioner == "eigenbasis":
            if eigenbasis is None:
                eigenbasis = pretrained_eigenbasis(pretrained_hessians)
            basis, diagonals = eigenbasis
            diagonal = task_share @ diagonals + penalty  # (B, d), >= penalty
            # Guard a zero penalty: directions without curvature get the largest step.
            floor = torch.finfo(dtype).eps * diagonal.amax(1, keepdim=True).clamp_min(tiny)
            precondition = _EigenbasisPreconditioner(basis, 1.0 / diagonal.clamp_min(floor))
        else:
            pretrained = torch.einsum("bk,kde->bde", task_share, pretrained_hessians)
            precondition = _InversePreconditioner(
                torch.cholesky_inverse(_cholesky_with_jitter(pretrained + penalty * eye))
            )

    # The state of the subsets still being solved; finished ones leave the batch, so that
    # the work of an iteration follows the number of unfinished subsets.
    rows = torch.arange(B, device=device)
    weights = example_weights
    w = torch.zeros(B, d, dtype=dtype, device=device)
    value, out = objective(w, weights)

    for iteration in range(max_iter + 1):
        grad_out = loss.grad(out, y) * weights.unsqueeze(-1)
        grad = apply_transposed(grad_out) + penalty * w
        if solver == "newton":
            hess = _exact_hessians(jacobians, out, y, weights, loss) + penalty * eye
            step = -torch.cholesky_solve(grad.unsqueeze(-1), _cholesky_with_jitter(hess)).squeeze(
                -1
            )
        else:
            curvature = loss.hessian_operator(out, y)

            def hvp(v, rows, curvature=curvature, weights=weights):
                u = apply_jacobians(v)
                if rows is not None:
                    weights = weights[rows]
                hu = curvature(u, rows) * weights.unsqueeze(-1)
                return apply_transposed(hu) + penalty * v

            # Forcing sequence: loose solves far from the optimum, tight ones near it.
            grad_norm = float(grad.norm(dim=1).max())
            rtol = min(0.1, max(grad_norm**0.5, 1e-6))
            step = -_preconditioned_cg(hvp, grad, precondition, cg_max_iter, rtol)
        decrement = -(grad * step).sum(1)  # squared Newton decrement, >= 0
        # Below a few ulps of the objective no step can be measured: count that as converged.
        floor = torch.clamp(4 * torch.finfo(dtype).eps * value.abs(), min=tol)
        finished = (0.5 * decrement <= floor) | ~torch.isfinite(decrement)
        if iteration < max_iter:
            # Armijo backtracking, a step length per subset.
            length = torch.ones_like(value)
            accepted = finished.clone()
            new_w, new_value, new_out = w, value, out
            for _ in range(40):
                trial_w = w + length.unsqueeze(1) * step
                trial_value, trial_out = objective(trial_w, weights)
                ok = (
                    torch.isfinite(trial_value)
                    & (trial_value <= value - 1e-4 * length * decrement)
                    & ~accepted
                )
                new_w = torch.where(ok.unsqueeze(1), trial_w, new_w)
                new_value = torch.where(ok, trial_value, new_value)
                new_out = torch.where(ok[:, None, None], trial_out, new_out)
                accepted = accepted | ok
                if bool(accepted.all()):
                    break
                length = torch.where(accepted, length, 0.5 * length)
            # No step decreases the objective: the iterate is optimal to working precision.
            stalled = ~accepted
            n_iter[rows] += (~finished & accepted).to(torch.int64)
            finished = finished | stalled
            converged[rows] = finished
            solution[rows] = torch.where(finished.unsqueeze(1), w, new_w)
            w, value, out = new_w, new_value, new_out
        else:
            converged[rows] = finished
            solution[rows] = w
            break
        if bool(finished.all()):
            break
        if bool(finished.any()):
            keep = ~finished
            rows, w, value, out = rows[keep], w[keep], value[keep], out[keep]
            weights = weights[keep]
            if precondition is not None:
                precondition = precondition.select(keep)
    w = solution

    bad = ~torch.isfinite(w).all(1)
    if bool(bad.any()):
        warnings.warn(
            f"{int(bad.sum())} subset problem(s) produced non-finite parameters; their "
            "solution was reset to the pretrained parameters (w = 0).",
            NonFiniteWarning,
            stacklevel=3,
        )
        w = torch.where(bad.unsqueeze(1), 0.0, w)
    return w, n_iter, converged


def target_losses(solution, jacobians, outputs, y, loss):
    """Mean target loss of the linearised model for each subset's solution: shape (B,)."""
    out = outputs + torch.einsum("icd,bd->bic", jacobians, solution)
    return loss.value(out, y).mean(1)
