r"""PyEPO's synthetic predict-then-optimise problems: shortest path and knapsack.

Both draw the same random numbers in the same order as PyEPO's ``genData`` (``pyepo.data.
shortestpath`` and ``pyepo.data.knapsack``, version 2.2.7), so the same integer seed gives
the same arrays: features :math:`x \sim N(0, I_p)`, a fixed Bernoulli(0.5) matrix
:math:`B`, costs :math:`\bigl((B x / \sqrt p + 3)^{\deg} + 1\bigr) / 3.5^{\deg}` times
multiplicative noise :math:`U[1 - \bar\epsilon, 1 + \bar\epsilon]`. The degree controls
how misspecified a linear model is.
"""

import numbers

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["make_shortest_path", "make_knapsack"]


def _check(n_samples, n_features, degree, noise_width):
    for name, value in (("n_samples", n_samples), ("n_features", n_features), ("degree", degree)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")
    if not isinstance(noise_width, numbers.Real) or not 0 <= noise_width < np.inf:
        raise ValueError(f"noise_width must be a finite real >= 0; got {noise_width!r}.")


def _rng(random_state):
    # An int seeds a fresh RandomState exactly as PyEPO's np.random.RandomState(seed).
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return np.random.RandomState(int(random_state))
    return check_random_state(random_state)


def _polynomial_costs(rng, B, n_samples, degree, factor=None):
    # The operations run in PyEPO's order, so that the float64 results agree bit for bit.
    n_features = B.shape[1]
    X = rng.normal(0, 1, (n_samples, n_features))
    costs = (X @ B.T / np.sqrt(n_features) + 3) ** degree + 1
    if factor is not None:
        costs *= factor
    costs /= 3.5**degree
    return X, costs


def make_shortest_path(
    n_samples=1000,
    n_features=5,
    grid=(5, 5),
    degree=1,
    noise_width=0.0,
    random_state=None,
):
    r"""PyEPO's shortest-path data: features and the arc costs of a grid network.

    The costs of the :math:`d = (h-1)w + (w-1)h` arcs of the ``(h, w)`` grid (40 for
    5 x 5, in the order of :class:`~sktaskmet.tasks.ShortestPath`) are

    .. math::
        c_j = \frac{(\frac{1}{\sqrt p} (B x)_j + 3)^{\deg} + 1}{3.5^{\deg}}\,\epsilon_j,
        \qquad x \sim N(0, I_p),\ B_{jk} \sim \mathrm{Bernoulli}(0.5),\
        \epsilon_j \sim U[1 - \bar\epsilon, 1 + \bar\epsilon].

    Parameters
    ----------
    n_samples : int, default=1000
    n_features : int, default=5
    grid : tuple of int, default=(5, 5)
    degree : int, default=1
        Polynomial degree; 1 is linear, higher degrees misspecify a linear model more.
    noise_width : float, default=0.0
        Half-width :math:`\bar\epsilon` of the multiplicative noise (PyEPO's benchmarks
        use 0.5).
    random_state : int, RandomState instance or None, default=None
        An int gives exactly PyEPO's ``genData(..., seed=random_state)`` (PyEPO's default
        seed is 135).

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples, n_arcs)
        Float64 costs; PyEPO returns the same numbers rounded to float32.

    Examples
    --------
    >>> from sktaskmet.datasets import make_shortest_path
    >>> X, y = make_shortest_path(n_samples=100, degree=4, noise_width=0.5, random_state=0)
    >>> X.shape, y.shape
    ((100, 5), (100, 40))
    """
    _check(n_samples, n_features, degree, noise_width)
    h, w = (int(g) for g in grid)
    if h < 1 or w < 1 or h * w < 2:
        raise ValueError(f"grid must be two positive integers (h, w); got {grid!r}.")
    rng = _rng(random_state)
    n_costs = (h - 1) * w + (w - 1) * h
    B = rng.binomial(1, 0.5, (n_costs, n_features))
    X, costs = _polynomial_costs(rng, B, n_samples, degree)
    costs *= rng.uniform(1 - noise_width, 1 + noise_width, (n_samples, n_costs))
    return X, costs


def make_knapsack(
    n_samples=1000,
    n_features=5,
    n_items=32,
    dim=1,
    degree=1,
    noise_width=0.0,
    random_state=None,
):
    r"""PyEPO's knapsack data: features, integer item values and fixed item weights.

    Weights are drawn once, uniformly from {3.00, 3.01, ..., 7.99}; the values are
    :math:`\lceil 5\, c_j \rceil` with :math:`c` as in :func:`make_shortest_path`. PyEPO
    does not draw capacities: its tutorials use 20 per dimension,
    ``Knapsack(weights, capacities=[20] * dim)``.

    Parameters
    ----------
    n_samples : int, default=1000
    n_features : int, default=5
    n_items : int, default=32
    dim : int, default=1
        Number of resources (rows of ``weights``).
    degree : int, default=1
    noise_width : float, default=0.0
    random_state : int, RandomState instance or None, default=None
        An int gives exactly PyEPO's ``genData(..., seed=random_state)``.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples, n_items)
        Item values (integers stored as float64).
    weights : ndarray of shape (dim, n_items)

    Examples
    --------
    >>> from sktaskmet.datasets import make_knapsack
    >>> X, y, weights = make_knapsack(n_samples=100, random_state=0)
    >>> X.shape, y.shape, weights.shape
    ((100, 5), (100, 32), (1, 32))
    """
    _check(n_samples, n_features, degree, noise_width)
    for name, value in (("n_items", n_items), ("dim", dim)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")
    rng = _rng(random_state)
    weights = rng.choice(range(300, 800), size=(dim, n_items)) / 100
    B = rng.binomial(1, 0.5, (n_items, n_features))
    X, values = _polynomial_costs(rng, B, n_samples, degree, factor=5)
    values *= rng.uniform(1 - noise_width, 1 + noise_width, (n_samples, n_items))
    return X, np.ceil(values), weights
