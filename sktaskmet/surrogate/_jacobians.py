r"""Per-example output Jacobians of a torch model, optionally projected.

For a model with trainable parameters :math:`\theta` and ``C`` outputs, the Jacobian
:math:`J(x)` of example :math:`x` has one row per output and one column per parameter. When
every trainable parameter belongs to an ``nn.Linear`` layer called once per forward pass, the
Jacobians have a closed form from the layer inputs and the backpropagated output gradients
(:func:`output_jacobians` checks that on the model); other models go through
:func:`torch.func.vmap` over :func:`torch.func.jacrev`.
"""

import math

import torch
from torch.func import functional_call, jacrev, vmap

from ._projection import SparseProjection

__all__ = ["trainable_parameters", "output_jacobians"]


def trainable_parameters(model):
    """Names and tensors of the parameters that fine-tuning updates (``requires_grad``)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


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
            if not math.isfinite(scale):
                return False  # NaN or infinity: nothing to compare; torch.func decides
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


def output_jacobians(model, X, projection=None, batch_size=256, on_batch=None):
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
    on_batch : callable or None
        Called with no argument after each batch (progress reporting).

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
        if on_batch is not None:
            on_batch()
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
