r"""Parameterisations of TaskMet's metric on the prediction space.

Each module returns a positive definite matrix :math:`\Lambda` (and a factor of it) from
unconstrained parameters, so that gradient descent can never leave the PSD cone:

* :class:`IdentityMetric`: :math:`\Lambda = I`.
* :class:`DiagonalMetric`:
  :math:`\Lambda = \operatorname{diag}(\operatorname{softplus}(r)) + \epsilon I`.
* :class:`FullMetric`: :math:`\Lambda = C C^\top + \epsilon I` with a lower-triangular
  (Cholesky-style) factor :math:`C`.
* :class:`ConditionalMetric`: :math:`\Lambda(x) = L(x) L(x)^\top + \epsilon I`, with
  :math:`L(x)` (or a diagonal) produced by a small network from the conditioning input
  :math:`x`, as in TaskMet. :math:`\epsilon` may be learned as :math:`e^{s}`.

:func:`make_metric` builds one by name (:data:`METRIC_KINDS`).
"""

import math
from numbers import Integral

import torch
from torch import nn
from torch.nn import functional as F

from .._nn import make_mlp

__all__ = [
    "METRIC_KINDS",
    "MetricParameterization",
    "IdentityMetric",
    "DiagonalMetric",
    "FullMetric",
    "ConditionalMetric",
    "make_metric",
]

# softplus^{-1}(1): raw parameters start where the metric is the identity.
_SOFTPLUS_INV_ONE = math.log(math.expm1(1.0))


class MetricParameterization(nn.Module):
    r"""Base class of the PSD parameterisations.

    Subclasses implement :meth:`factor`, returning ``(C, ridge)`` with
    :math:`\Lambda = C C^\top + \text{ridge}\, I`; for diagonal metrics ``C`` is the vector
    of diagonal entries of :math:`C C^\top` instead (``diagonal = True``), so nothing of size
    :math:`d^2` is formed.

    Attributes
    ----------
    dim : int
        Size :math:`d` of the space the metric acts on.
    conditional : bool
        Whether :math:`\Lambda` depends on a conditioning input ``x``.
    diagonal : bool
        Whether :math:`\Lambda` is diagonal.
    """

    conditional = False
    diagonal = False

    def __init__(self, dim):
        super().__init__()
        if not isinstance(dim, Integral) or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim!r}.")
        self.dim = int(dim)

    def factor(self, x=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_x(self, x):
        if self.conditional and x is None:
            raise ValueError(f"{type(self).__name__} is conditional: pass the input x.")

    def forward(self, x=None):
        r"""The metric matrix :math:`\Lambda` (or :math:`\Lambda(x)` per row of ``x``).

        Parameters
        ----------
        x : torch.Tensor of shape (n, in_features), optional
            Conditioning input, required by conditional metrics and ignored otherwise.

        Returns
        -------
        torch.Tensor of shape (dim, dim), or (n, dim, dim) for a conditional metric
        """
        self._check_x(x)
        factor, ridge = self.factor(x)
        eye = torch.eye(self.dim, dtype=factor.dtype, device=factor.device)
        if self.diagonal:
            return torch.diag_embed(factor + ridge)
        return factor @ factor.transpose(-1, -2) + ridge * eye

    def diagonal_values(self, x=None):
        r"""The diagonal of :math:`\Lambda` without forming the full matrix.

        Returns
        -------
        torch.Tensor of shape (dim,), or (n, dim) for a conditional metric
        """
        self._check_x(x)
        factor, ridge = self.factor(x)
        if self.diagonal:
            return factor + ridge
        return (factor * factor).sum(-1) + ridge

    def quadratic_form(self, diff, x=None):
        r"""Squared distances :math:`r^\top \Lambda r` for residual vectors ``diff``.

        This is the inner objective of TaskMet. It never forms :math:`\Lambda` for the
        full case: :math:`r^\top (C C^\top + \epsilon I) r = \lVert C^\top r\rVert^2 +
        \epsilon \lVert r\rVert^2`.

        Parameters
        ----------
        diff : torch.Tensor of shape (n, dim)
        x : torch.Tensor of shape (n, in_features), optional
            Conditioning input for conditional metrics (one row per residual).

        Returns
        -------
        torch.Tensor of shape (n,)
        """
        self._check_x(x)
        factor, ridge = self.factor(x)
        sq = diff * diff
        if self.diagonal:
            return (sq * (factor + ridge)).sum(-1)
        projected = (diff.unsqueeze(-2) @ factor).squeeze(-2)
        return (projected * projected).sum(-1) + ridge * sq.sum(-1)


class IdentityMetric(MetricParameterization):
    r"""The Euclidean metric :math:`\Lambda = I` (no parameters).

    Parameters
    ----------
    dim : int
    """

    diagonal = True

    def __init__(self, dim):
        super().__init__(dim)
        # A buffer, so that .to(dtype/device) moves the identity with the module.
        self.register_buffer("unit", torch.ones(self.dim))

    def factor(self, x=None):
        values = self.unit if x is None else self.unit.to(x.dtype).expand(x.shape[0], self.dim)
        return values, 0.0


class DiagonalMetric(MetricParameterization):
    r"""A global diagonal metric :math:`\mathrm{diag}(\mathrm{softplus}(r)) + \epsilon I`.

    Parameters
    ----------
    dim : int
    eps : float, default=1e-6
        Ridge that keeps :math:`\Lambda` positive definite.
    """

    diagonal = True

    def __init__(self, dim, eps=1e-6):
        super().__init__(dim)
        self.eps = float(eps)
        self.raw = nn.Parameter(torch.full((self.dim,), _SOFTPLUS_INV_ONE))

    def factor(self, x=None):
        values = F.softplus(self.raw)
        if x is not None:
            values = values.expand(x.shape[0], self.dim)
        return values, self.eps


class FullMetric(MetricParameterization):
    r"""A global full metric :math:`\Lambda = C C^\top + \epsilon I`, :math:`C` lower triangular.

    Only the lower triangle of the parameter matrix is used, so :math:`C` is a
    Cholesky-style factor with :math:`d(d+1)/2` free entries; it starts at the identity.

    Parameters
    ----------
    dim : int
    eps : float, default=1e-6
        Ridge that keeps :math:`\Lambda` positive definite.
    """

    def __init__(self, dim, eps=1e-6):
        super().__init__(dim)
        self.eps = float(eps)
        self.raw = nn.Parameter(torch.eye(self.dim))

    def factor(self, x=None):
        lower = torch.tril(self.raw)
        if x is not None:
            lower = lower.expand(x.shape[0], self.dim, self.dim)
        return lower, self.eps


class ConditionalMetric(MetricParameterization):
    r"""An input-dependent metric :math:`\Lambda(x)` produced by a small network.

    Full version (TaskMet's metric):

    .. math::

        \Lambda(x) = L(x) L(x)^\top + e^{s} I, \qquad
        L(x) = \operatorname{reshape}(\mathrm{MLP}(x), d \times d),

    with :math:`s` a learned scalar starting at :math:`\log(\text{ridge})` when
    ``learn_ridge`` is True, and a fixed ridge otherwise. Diagonal version:
    :math:`\Lambda(x) = \operatorname{diag}(\operatorname{softplus}(\mathrm{MLP}(x))) + e^{s} I`.

    Parameters
    ----------
    in_features : int
        Dimension of the conditioning input ``x``.
    dim : int
        Dimension :math:`d` of the space the metric acts on.
    hidden_layer_sizes : tuple of int, default=(200,)
        Hidden widths of the MLP (ReLU activations).
    diagonal : bool, default=False
        Produce a diagonal metric (:math:`d` outputs) instead of a full factor (:math:`d^2`).
    ridge : float, default=1.0
        Initial (or fixed) value of the ridge :math:`e^{s}`.
    learn_ridge : bool, default=True
        Learn :math:`s` with the network.
    """

    conditional = True

    def __init__(
        self,
        in_features,
        dim,
        hidden_layer_sizes=(200,),
        diagonal=False,
        ridge=1.0,
        learn_ridge=True,
    ):
        super().__init__(dim)
        if ridge <= 0:
            raise ValueError(f"ridge must be positive; got {ridge!r}.")
        self.in_features = int(in_features)
        self.diagonal = bool(diagonal)
        out = self.dim if self.diagonal else self.dim * self.dim
        self.network = make_mlp(self.in_features, tuple(hidden_layer_sizes), out)
        log_ridge = torch.tensor(math.log(ridge))
        if learn_ridge:
            self.log_ridge = nn.Parameter(log_ridge)
        else:
            self.register_buffer("log_ridge", log_ridge)

    def factor(self, x=None):
        self._check_x(x)
        out = self.network(x)
        ridge = torch.exp(self.log_ridge).to(out.dtype)
        if self.diagonal:
            return F.softplus(out), ridge
        return out.reshape(x.shape[0], self.dim, self.dim), ridge


# The parameterisations by name, as TaskMetRegressor's ``metric`` parameter takes them.
METRIC_KINDS = ("identity", "diagonal", "full", "conditional_diagonal", "conditional_full")


def make_metric(kind, dim, in_features=None, **kwargs):
    """Build a parameterisation by name.

    Parameters
    ----------
    kind : {"identity", "diagonal", "full", "conditional_diagonal", "conditional_full"}
    dim : int
        Dimension of the space the metric acts on.
    in_features : int, optional
        Dimension of the conditioning input; required by the conditional kinds.
    **kwargs
        Passed to the parameterisation's constructor.

    Returns
    -------
    MetricParameterization
    """
    if kind == "identity":
        return IdentityMetric(dim)
    if kind == "diagonal":
        return DiagonalMetric(dim, **kwargs)
    if kind == "full":
        return FullMetric(dim, **kwargs)
    if kind in ("conditional_diagonal", "conditional_full"):
        if in_features is None:
            raise ValueError(f"metric={kind!r} needs in_features, the width of its input x.")
        return ConditionalMetric(
            in_features, dim, diagonal=kind == "conditional_diagonal", **kwargs
        )
    raise ValueError(f"metric must be one of {METRIC_KINDS}; got {kind!r}.")
