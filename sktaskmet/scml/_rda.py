r"""The AdaGrad-RDA recursions of global and local SCML, one mini-batch after the other.

Global
------
With the unscaled batch sums :math:`G = \sum_s \sum_{t \in B_s \text{ active}} D_t` and
:math:`Q = \sum_s \big(\sum_{t \in B_s \text{ active}} D_t\big)^2`, the closed form of RDA
with AdaGrad scaling and the non-negative :math:`\ell_1` prox (see :mod:`._solver`) reads
:math:`w = u / \gamma` with

.. math::

    u = \frac{\max(h, 0)}{\delta b + \sqrt{Q}}, \qquad h = -G - \beta b t,

and the hinge of triplet :math:`t` is active when :math:`1 + D_t^\top w > 0`, that is
:math:`D_t^\top u > -\gamma`. The state keeps :math:`h`, :math:`Q`, :math:`u` and the
running sum of :math:`u` (the mean of the iterates, RDA's averaged point).

Every iteration depends on the previous one through which hinges are active, so the
iterations run one after the other; each is a handful of operations on vectors of length
K. Three backends run them, operation for operation the same recursion:

* ``"numpy"`` (the CPU): numpy's per-call cost is a fraction of torch's dispatch cost, and
  it works on views of the same memory (no copy);
* ``"kernel"`` (CUDA with Triton): a whole block of iterations in one fused kernel
  (:mod:`._rda_kernel`), since a dozen kernel launches per iteration would cost far more
  than the arithmetic;
* ``"torch"`` (any other device): torch operations.

Local
-----
:math:`w_i(x) = (\theta_i^\top \tilde z(x))^2`, :math:`\tilde z = [z; 1]`, under the
group-lasso penalty, with one AdaGrad scale per group and the group soft-threshold,
centred on the starting point :math:`\theta^{(0)}`:

.. math::

    u_i = \theta^{(0)}_i - \frac{t+1}{\gamma(\delta + H_{t,i})} \bar g_{t,i}, \qquad
    \theta_i = u_i \max\Big(0, 1 - \frac{(t+1)\beta}{\gamma(\delta + H_{t,i})
        \lVert u_i \rVert}\Big).
"""

import numpy as np
import torch

from . import _rda_kernel
from ._minibatches import BLOCK_ITERATIONS, SPAN_ITERATIONS

__all__ = ["DELTA", "RDA_BACKENDS", "GlobalRDAState", "LocalRDAState", "global_rda_state"]

# AdaGrad's slack: keeps the first steps finite when a coordinate has seen no gradient.
DELTA = 1e-3
RDA_BACKENDS = ("numpy", "kernel", "torch")


class GlobalRDAState:
    """The state of the global RDA recursion, advanced one block of iterations at a time.

    Use :func:`global_rda_state`, which picks the backend; the subclasses differ only in
    how :meth:`_advance` runs the iterations.

    Parameters
    ----------
    n_basis : int
    beta, gamma : float
    batch_size : int
    dtype : torch.dtype
    device : torch.device or str

    Attributes
    ----------
    backend : {"numpy", "kernel", "torch"}
    block_iterations : int
        Iterations per call of :meth:`run` that suit the backend.
    iteration : int
        Iterations run.
    """

    backend = None
    block_iterations = BLOCK_ITERATIONS

    def __init__(self, n_basis, *, beta, gamma, batch_size, dtype, device):
        self.gamma = gamma
        self.iteration = 0
        zeros = lambda: torch.zeros(n_basis, dtype=dtype, device=device)  # noqa: E731
        self.h, self.sq_sum, self.u, self.u_sum = zeros(), zeros(), zeros(), zeros()
        self.rate = beta * batch_size  # the l1 term's growth of -h per iteration
        self.slack = DELTA * batch_size

    def weights(self):
        """The iterate :math:`w_t`."""
        return self.u / self.gamma

    def mean_weights(self):
        r"""The mean of the iterates :math:`\frac{1}{t}\sum_{s \le t} w_s`."""
        return self.u_sum / (self.gamma * max(self.iteration, 1))

    def run(self, diffs):
        """Advance one iteration per mini-batch of ``diffs`` (shape (n_block, batch, K))."""
        self._advance(diffs)
        self.iteration += diffs.shape[0]

    def _advance(self, diffs):
        raise NotImplementedError


class _NumpyRDAState(GlobalRDAState):
    """The recursion in numpy, on views of the state tensors (CPU)."""

    backend = "numpy"

    def __init__(self, n_basis, *, beta, gamma, batch_size, dtype, device):
        super().__init__(
            n_basis, beta=beta, gamma=gamma, batch_size=batch_size, dtype=dtype, device=device
        )
        # numpy views of the state, and constants as arrays of the same dtype (a Python
        # scalar operand costs a conversion on every call).
        self._np = {name: getattr(self, name).numpy() for name in ("h", "sq_sum", "u", "u_sum")}
        numpy_dtype = self._np["h"].dtype
        full = lambda size, value: np.full(size, value, dtype=numpy_dtype)  # noqa: E731
        self._rate = full(n_basis, self.rate)
        self._slack = full(n_basis, self.slack)
        self._zero = full(n_basis, 0)
        self._threshold = full(batch_size, -gamma)
        self._margins = np.empty(batch_size, dtype=numpy_dtype)
        self._active = np.empty(batch_size, dtype=numpy_dtype)
        self._active_mask = np.empty(batch_size, dtype=bool)
        self._grad = np.empty(n_basis, dtype=numpy_dtype)
        self._grad_sq = np.empty(n_basis, dtype=numpy_dtype)
        self._denominator = np.empty(n_basis, dtype=numpy_dtype)

    def _advance(self, diffs):
        h, sq_sum, u, u_sum = (self._np[name] for name in ("h", "sq_sum", "u", "u_sum"))
        margins, active, active_mask = self._margins, self._active, self._active_mask
        grad, grad_sq, denominator = self._grad, self._grad_sq, self._denominator
        rate, slack, zero, threshold = self._rate, self._slack, self._zero, self._threshold
        greater, subtract, multiply, add = np.greater, np.subtract, np.multiply, np.add
        sqrt, maximum, divide = np.sqrt, np.maximum, np.divide
        # A dozen calls per iteration, each a fraction of a microsecond. (ndarray.dot skips
        # np.dot's dispatch layer; sqrt of a sum of squares is several times faster than
        # np.hypot, which guards against overflow element by element.)
        for batch in diffs.numpy():
            batch.dot(u, out=margins)
            # 1 + D_t w > 0, as 0/1 (a boolean result then a copy beats a casting compare)
            greater(margins, threshold, out=active_mask)
            active[...] = active_mask
            active.dot(batch, out=grad)
            subtract(h, grad, out=h)
            subtract(h, rate, out=h)
            multiply(grad, grad, out=grad_sq)
            add(sq_sum, grad_sq, out=sq_sum)
            sqrt(sq_sum, out=denominator)
            add(denominator, slack, out=denominator)
            maximum(h, zero, out=u)
            divide(u, denominator, out=u)
            add(u_sum, u, out=u_sum)


class _KernelRDAState(GlobalRDAState):
    """The recursion as one fused Triton kernel per block (CUDA)."""

    backend = "kernel"

    def __init__(self, n_basis, *, beta, gamma, batch_size, dtype, device):
        super().__init__(
            n_basis, beta=beta, gamma=gamma, batch_size=batch_size, dtype=dtype, device=device
        )
        # The fused kernel pays one launch per block: blocks as long as a span, memory
        # permitting, instead of the cache-sized blocks of the CPU.
        budget = _rda_kernel.BLOCK_ENTRIES // (batch_size * n_basis)
        self.block_iterations = max(1, min(SPAN_ITERATIONS, budget))
        self._constants = _rda_kernel.kernel_constants(gamma, self.rate, self.slack, self.h)

    def _advance(self, diffs):
        _rda_kernel.run_rda_block(diffs, self.h, self.sq_sum, self.u, self.u_sum, self._constants)


class _TorchRDAState(GlobalRDAState):
    """The recursion in torch operations (devices without the fused kernel)."""

    backend = "torch"

    def _advance(self, diffs):
        h, sq_sum, u, u_sum = self.h, self.sq_sum, self.u, self.u_sum
        for batch in diffs:
            active = (torch.mv(batch, u) > -self.gamma).to(batch.dtype)
            grad = torch.mv(batch.T, active)
            h.sub_(grad).sub_(self.rate)
            sq_sum.addcmul_(grad, grad)
            torch.div(h.clamp_min(0), sq_sum.sqrt().add_(self.slack), out=u)
            u_sum.add_(u)


_STATES = {"numpy": _NumpyRDAState, "kernel": _KernelRDAState, "torch": _TorchRDAState}


def global_rda_state(n_basis, *, beta, gamma, batch_size, dtype, device, backend=None):
    """A :class:`GlobalRDAState` on the backend that suits the device.

    Parameters
    ----------
    n_basis : int
    beta, gamma : float
    batch_size : int
    dtype : torch.dtype
    device : torch.device or str
    backend : {"numpy", "kernel", "torch"}, optional
        By default numpy on the CPU, else the fused kernel when it can run, else torch.

    Returns
    -------
    GlobalRDAState
    """
    if backend is None:
        if torch.device(device).type == "cpu":
            backend = "numpy"
        elif _rda_kernel.fused_kernel_available(device, batch_size, n_basis, dtype):
            backend = "kernel"
        else:
            backend = "torch"
    if backend not in _STATES:
        raise ValueError(f"backend must be one of {RDA_BACKENDS}; got {backend!r}.")
    return _STATES[backend](
        n_basis, beta=beta, gamma=gamma, batch_size=batch_size, dtype=dtype, device=device
    )


class LocalRDAState:
    r"""The state of the local RDA recursion (group lasso, centred on ``theta0``).

    Parameters
    ----------
    theta0 : torch.Tensor of shape (K, m + 1)
        The starting point, rows :math:`[a_i; c_i]`; the prox is centred on it.
    beta, gamma : float
    batch_size : int

    Attributes
    ----------
    theta : torch.Tensor of shape (K, m + 1)
        The iterate.
    iteration : int
        Iterations run.
    """

    def __init__(self, theta0, *, beta, gamma, batch_size):
        self.theta0, self.theta = theta0, theta0.clone()
        self.beta, self.gamma, self.batch_size = beta, gamma, batch_size
        self.grad_sum = torch.zeros_like(theta0)
        # AdaGrad's accumulator, one per group: the mean over the group's coordinates.
        self.grad_sq = theta0.new_zeros(theta0.shape[0])
        self.slack = DELTA * batch_size
        self.tiny = torch.finfo(theta0.dtype).tiny
        self.iteration = 0

    def run(self, diffs, anchors):
        r"""Advance one iteration per mini-batch.

        Parameters
        ----------
        diffs : torch.Tensor of shape (n_block, batch_size, K)
            :math:`D_t` of the block's triplets.
        anchors : torch.Tensor of shape (n_block, batch_size, m + 1)
            :math:`[z(x_a); 1]` of their anchors.
        """
        theta, dtype = self.theta, diffs.dtype
        for batch, z in zip(diffs, anchors, strict=True):
            root = z @ theta.T  # sqrt of w_i(x_a), signed: (batch_size, K)
            hinge_active = ((root * root * batch).sum(1) > -1).to(dtype)
            coefficient = 2 * root * batch * hinge_active[:, None]
            grad = coefficient.T @ z  # (K, m + 1)
            self.grad_sum.add_(grad)
            self.grad_sq.add_((grad * grad).mean(1))
            self.iteration += 1
            # (t+1) / (gamma (delta + H)), with the batch mean folded in: / ((t+1) b)
            scale = 1.0 / (self.gamma * (self.grad_sq.sqrt() + self.slack))
            centre = self.theta0 - self.grad_sum * scale[:, None]
            norms = torch.linalg.vector_norm(centre, dim=1)
            threshold = self.beta * self.iteration * self.batch_size * scale
            shrink = torch.clamp(1 - threshold / norms.clamp_min(self.tiny), min=0)
            theta = centre * shrink[:, None]
        self.theta = theta
