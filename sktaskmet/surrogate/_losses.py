r"""Per-example losses of linearised fine-tuning, with their derivatives in the outputs.

For outputs ``out`` of shape ``(..., n, C)`` (any leading batch dimensions, e.g. one per
subset) and targets ``y`` with ``n`` rows, a loss object gives the per-example values
:math:`\ell(o_i, y_i)` (``value``, shape ``(..., n)``), their gradients
:math:`\nabla_o \ell` (``grad``, ``(..., n, C)``), their Hessians :math:`\nabla_o^2 \ell`
(``hessian``, ``(..., n, C, C)``) and that Hessian as an operator ``u -> H u``
(``hessian_operator``), which conjugate gradients apply many times without forming it.
"""

import torch
from torch.func import vmap

__all__ = ["CrossEntropyLoss", "SquaredErrorLoss", "CallableLoss", "make_loss", "loss_targets"]


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
