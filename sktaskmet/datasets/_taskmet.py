"""Synthetic decision-focused learning problems: cubic top-k, portfolio, budget, CartPole."""

import numbers

import numpy as np
from sklearn.utils import check_random_state

from ..taskmet._tasks import _check_positive_int

__all__ = [
    "make_cubic_topk",
    "make_portfolio",
    "make_budget_allocation",
    "make_cartpole_distractors",
]


def _check_unit_interval(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a real number in [0, 1); got {value!r}.")
    return float(value)


def _check_nonnegative(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name} must be a real number >= 0; got {value!r}.")
    return float(value)


def make_cubic_topk(n_instances=400, n_items=50, noise=0.0, random_state=None):
    r"""The cubic top-1 problem of the TaskMet and LODL papers.

    Each decision instance has ``n_items`` items with one feature
    :math:`x \sim U[-1, 1]` and value :math:`y = 10 (x^3 - 0.65 x)` (plus Gaussian noise of
    standard deviation ``noise``). The downstream task picks the item with the largest
    predicted value (:class:`sktaskmet.tasks.TopK` with ``k=1``). The best item sits near
    :math:`x = 1`, but a least-squares line through the cubic has a negative slope
    (about -0.5) and picks the worst one.

    Parameters
    ----------
    n_instances : int, default=400
        Number of decision instances.
    n_items : int, default=50
        Items per instance.
    noise : float, default=0.0
        Standard deviation of Gaussian noise added to ``y``.
    random_state : int, RandomState instance or None, default=None
        Seed of the draws.

    Returns
    -------
    X : ndarray of shape (n_instances * n_items, 1)
        The feature x of each item, instance after instance.
    y : ndarray of shape (n_instances * n_items,)
        The item values.
    groups : ndarray of shape (n_instances * n_items,)
        The instance id (0 to ``n_instances - 1``) of each row.

    Examples
    --------
    >>> from sktaskmet.datasets import make_cubic_topk
    >>> X, y, groups = make_cubic_topk(n_instances=4, n_items=5, random_state=0)
    >>> X.shape, y.shape, groups[:7]
    ((20, 1), (20,), array([0, 0, 0, 0, 0, 1, 1]))
    """
    n_instances = _check_positive_int(n_instances, "n_instances", 1)
    n_items = _check_positive_int(n_items, "n_items", 2)
    noise = _check_nonnegative(noise, "noise")
    rng = check_random_state(random_state)
    x = rng.uniform(-1.0, 1.0, size=n_instances * n_items)
    y = 10.0 * (x**3 - 0.65 * x)
    if noise > 0:
        y = y + noise * rng.standard_normal(y.shape)
    groups = np.repeat(np.arange(n_instances), n_items)
    return x.reshape(-1, 1), y, groups


def make_portfolio(
    n_days=200,
    n_assets=50,
    n_features=5,
    n_factors=4,
    degree=4,
    noise=1.0,
    return_covariance=False,
    random_state=None,
):
    r"""Synthetic daily asset returns from a factor model with a nonlinear signal.

    The construction follows the portfolio benchmark of the decision-focused learning
    literature (Elmachtoub and Grigas, "Smart predict, then optimize"; the PyEPO
    generator), with one feature vector per asset and day so that one predictor serves
    all assets. For day i and asset j, with features :math:`x_{ij} \sim N(0, I_p)`, a
    fixed random 0/1 loading vector :math:`b`, factor loadings
    :math:`L \in [-0.0025\tau, 0.0025\tau]^{m \times F}`, day factors
    :math:`f_i \sim N(0, I_F)` and idiosyncratic noise :math:`\varepsilon_{ij} \sim N(0, 1)`,
    the return in percent is

    .. math::
        y_{ij} = 100 \Bigl[\Bigl(\frac{0.05}{\sqrt p} b^\top x_{ij}
                 + 0.1^{1/\mathrm{deg}}\Bigr)^{\mathrm{deg}}
                 + L_j^\top f_i + 0.01\,\tau\,\varepsilon_{ij}\Bigr],

    with :math:`\tau` = ``noise``. The expected return is a polynomial of degree ``degree``
    in the features (misspecified for a linear model when ``degree > 1``); the factor and
    idiosyncratic terms are unpredictable and their covariance,
    :math:`\Sigma = 10^4 (L L^\top + (0.01\tau)^2 I)` in percent squared, is the risk
    model of :class:`sktaskmet.tasks.Portfolio`.

    Parameters
    ----------
    n_days : int, default=200
        Number of decision instances (days).
    n_assets : int, default=50
        Assets per day (items per instance).
    n_features : int, default=5
        Features per asset and day.
    n_factors : int, default=4
        Number of common risk factors.
    degree : int, default=4
        Degree of the polynomial signal.
    noise : float, default=1.0
        Noise scale :math:`\tau` of the factor and idiosyncratic terms (0 gives noiseless
        returns and a zero covariance).
    return_covariance : bool, default=False
        Also return the covariance :math:`\Sigma` of the unpredictable part.
    random_state : int, RandomState instance or None, default=None
        Seed of the draws (loadings included).

    Returns
    -------
    X : ndarray of shape (n_days * n_assets, n_features)
        Features, day after day (the assets of one day are consecutive rows).
    y : ndarray of shape (n_days * n_assets,)
        Next-day returns in percent.
    groups : ndarray of shape (n_days * n_assets,)
        The day (instance) id of each row.
    covariance : ndarray of shape (n_assets, n_assets)
        Only when ``return_covariance=True``.

    Examples
    --------
    >>> from sktaskmet.datasets import make_portfolio
    >>> X, y, groups, cov = make_portfolio(n_days=3, return_covariance=True, random_state=0)
    >>> X.shape, y.shape, groups.shape, cov.shape
    ((150, 5), (150,), (150,), (50, 50))
    """
    n_days = _check_positive_int(n_days, "n_days", 1)
    n_assets = _check_positive_int(n_assets, "n_assets", 2)
    n_features = _check_positive_int(n_features, "n_features", 1)
    n_factors = _check_positive_int(n_factors, "n_factors", 0)
    degree = _check_positive_int(degree, "degree", 1)
    noise = _check_nonnegative(noise, "noise")
    rng = check_random_state(random_state)

    loading = rng.binomial(1, 0.5, size=n_features).astype(float)
    if not loading.any():  # keep the signal non-degenerate
        loading[rng.randint(n_features)] = 1.0
    factor_loadings = rng.uniform(-0.0025 * noise, 0.0025 * noise, size=(n_assets, n_factors))
    X = rng.standard_normal((n_days, n_assets, n_features))
    signal = (0.05 / np.sqrt(n_features) * X @ loading + 0.1 ** (1.0 / degree)) ** degree
    factors = rng.standard_normal((n_days, n_factors))
    idiosyncratic = rng.standard_normal((n_days, n_assets))
    returns = signal + factors @ factor_loadings.T + 0.01 * noise * idiosyncratic
    y = 100.0 * returns.reshape(-1)
    groups = np.repeat(np.arange(n_days), n_assets)
    X = X.reshape(-1, n_features)
    if not return_covariance:
        return X, y, groups
    covariance = 1e4 * (
        factor_loadings @ factor_loadings.T + (0.01 * noise) ** 2 * np.eye(n_assets)
    )
    return X, y, groups, covariance


def make_budget_allocation(
    n_instances=200,
    n_channels=5,
    n_targets=10,
    n_features=10,
    n_hidden=16,
    noise=0.1,
    random_state=None,
):
    r"""Synthetic budget-allocation instances: channels reaching targets with probabilities.

    Each instance has ``n_channels`` channels (items); channel j has features
    :math:`x_j \sim N(0, I_p)` and reaches target t with probability
    :math:`y_{jt} \in (0, 1)`, given by a fixed random one-hidden-layer network (the
    nonlinear feature map) with Gaussian noise on the logits:

    .. math::
        y_{jt} = \sigma\bigl(W_2 \tanh(W_1 x_j / \sqrt p) / \sqrt h + c
                 + \nu\,\varepsilon_{jt}\bigr)_t,

    with :math:`W_1 \in \mathbb{R}^{h \times p}` and :math:`W_2 \in \mathbb{R}^{d \times h}`
    standard normal (scaled so that the logits have unit variance), target offsets
    :math:`c_t \sim N(-1, 0.5^2)` (most channels reach a target with small probability,
    as in advertising data), :math:`\nu` = ``noise`` and :math:`\sigma` the logistic
    function. Use with :class:`sktaskmet.tasks.BudgetAllocation` (d = ``n_targets``
    outputs per item).

    Parameters
    ----------
    n_instances : int, default=200
    n_channels : int, default=5
        Items per instance (m).
    n_targets : int, default=10
        Outputs per item (d).
    n_features : int, default=10
        Features per channel (p).
    n_hidden : int, default=16
        Width h of the hidden layer of the generating network.
    noise : float, default=0.1
        Standard deviation of the logit noise.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    X : ndarray of shape (n_instances * n_channels, n_features)
    y : ndarray of shape (n_instances * n_channels, n_targets)
        Probabilities in (0, 1).
    groups : ndarray of shape (n_instances * n_channels,)
        The instance id of each row.

    Examples
    --------
    >>> from sktaskmet.datasets import make_budget_allocation
    >>> X, y, groups = make_budget_allocation(n_instances=4, random_state=0)
    >>> X.shape, y.shape, groups.shape
    ((20, 10), (20, 10), (20,))
    """
    n_instances = _check_positive_int(n_instances, "n_instances", 1)
    n_channels = _check_positive_int(n_channels, "n_channels", 1)
    n_targets = _check_positive_int(n_targets, "n_targets", 1)
    n_features = _check_positive_int(n_features, "n_features", 1)
    n_hidden = _check_positive_int(n_hidden, "n_hidden", 1)
    noise = _check_nonnegative(noise, "noise")
    rng = check_random_state(random_state)
    w1 = rng.standard_normal((n_hidden, n_features))
    w2 = rng.standard_normal((n_targets, n_hidden))
    offsets = rng.normal(-1.0, 0.5, size=n_targets)
    n_rows = n_instances * n_channels
    X = rng.standard_normal((n_rows, n_features))
    hidden = np.tanh(X @ w1.T / np.sqrt(n_features))
    # tanh of a unit-variance input has variance about 0.39; rescale the logits to unit variance.
    logits = hidden @ w2.T / np.sqrt(0.39 * n_hidden) + offsets
    logits = logits + noise * rng.standard_normal(logits.shape)
    y = 1.0 / (1.0 + np.exp(-logits))
    groups = np.repeat(np.arange(n_instances), n_channels)
    return X, y, groups


# Standard CartPole constants (Barto, Sutton and Anderson 1983; as in Gymnasium).
_GRAVITY = 9.8
_MASS_CART = 1.0
_MASS_POLE = 0.1
_HALF_LENGTH = 0.5
_FORCE = 10.0
_TAU = 0.02
_STATE_LIMITS = np.array([2.4, 2.0, 0.2095, 2.0])


def _cartpole_step(state, action):
    """One Euler step of the CartPole dynamics for arrays of states (n, 4) and actions (n,)."""
    x, x_dot, theta, theta_dot = state.T
    force = np.where(action == 1, _FORCE, -_FORCE)
    total_mass = _MASS_CART + _MASS_POLE
    pole_mass_length = _MASS_POLE * _HALF_LENGTH
    cos, sin = np.cos(theta), np.sin(theta)
    temp = (force + pole_mass_length * theta_dot**2 * sin) / total_mass
    theta_acc = (_GRAVITY * sin - cos * temp) / (
        _HALF_LENGTH * (4.0 / 3.0 - _MASS_POLE * cos**2 / total_mass)
    )
    x_acc = temp - pole_mass_length * theta_acc * cos / total_mass
    return np.column_stack(
        [
            x + _TAU * x_dot,
            x_dot + _TAU * x_acc,
            theta + _TAU * theta_dot,
            theta_dot + _TAU * theta_acc,
        ]
    )


def make_cartpole_distractors(
    n_samples=1000, n_distractors=10, distractor_correlation=0.0, random_state=None
):
    r"""CartPole transitions with extra distracting state dimensions.

    States are drawn uniformly from the box where an episode is still running
    (:math:`|x| \le 2.4`, :math:`|\dot x| \le 2`, :math:`|\theta| \le 0.2095` rad,
    :math:`|\dot\theta| \le 2`), actions uniformly from {0 (push left), 1 (push right)},
    and the next state follows one Euler step (0.02 s) of the standard CartPole dynamics
    (the equations of Gymnasium's ``CartPole-v1``, simulated in numpy; Gymnasium is not
    needed). Each state is extended with ``n_distractors`` dimensions that have nothing to
    do with the cart: they are N(0, 1) in the current and in the next state, with
    correlation ``distractor_correlation`` between the two (0: pure noise, unpredictable;
    closer to 1: predictable, so that a model spends capacity on them).

    Columns of ``X``: 0 cart position, 1 cart velocity, 2 pole angle, 3 pole angular
    velocity, ``4 .. 3 + n_distractors`` the distractors, last column the action.
    Columns of ``y``: the same state columns (first ``4 + n_distractors`` columns of
    ``X``) at the next step. The reward-relevant ones, used by
    :class:`sktaskmet.tasks.StateReward`, are 0 (position) and 2 (angle).

    Parameters
    ----------
    n_samples : int, default=1000
        Number of transitions.
    n_distractors : int, default=10
        Number of distracting dimensions.
    distractor_correlation : float in [0, 1), default=0.0
        Correlation between a distractor and its next value.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    X : ndarray of shape (n_samples, 5 + n_distractors)
        Current state, distractors and action.
    y : ndarray of shape (n_samples, 4 + n_distractors)
        Next state and next distractors.

    Examples
    --------
    >>> from sktaskmet.datasets import make_cartpole_distractors
    >>> X, y = make_cartpole_distractors(n_samples=8, n_distractors=3, random_state=0)
    >>> X.shape, y.shape
    ((8, 8), (8, 7))
    """
    n_samples = _check_positive_int(n_samples, "n_samples", 1)
    n_distractors = _check_positive_int(n_distractors, "n_distractors", 0)
    rho = _check_unit_interval(distractor_correlation, "distractor_correlation")
    rng = check_random_state(random_state)
    state = rng.uniform(-1.0, 1.0, size=(n_samples, 4)) * _STATE_LIMITS
    action = rng.randint(0, 2, size=n_samples)
    distractors = rng.standard_normal((n_samples, n_distractors))
    next_distractors = rho * distractors + np.sqrt(1.0 - rho**2) * rng.standard_normal(
        (n_samples, n_distractors)
    )
    next_state = _cartpole_step(state, action)
    X = np.column_stack([state, distractors, action.astype(float)])
    y = np.column_stack([next_state, next_distractors])
    return X, y
