"""A synthetic set function with known task interactions, for task-attribution studies."""

from numbers import Integral, Real

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params

from ..surrogate import sample_subsets

__all__ = ["make_task_interactions", "TaskInteractionFunction"]


class TaskInteractionFunction:
    """The exact set function of :func:`make_task_interactions`.

    .. math::

        F(s) = \\sum_k a_k s_k + 3 s_0 s_1 - 3 s_2 s_3
        + 3\\,(s_4 + s_5 - 2 s_4 s_5) - 2 s_6 s_7 s_8 ,

    the multilinear extension of the set function (it equals the set function on 0/1
    indicators and interpolates it on task weights in [0, 1]; the third term is
    :math:`3\\,\\mathrm{XOR}(s_4, s_5)` on indicators).

    Parameters
    ----------
    weights : ndarray of shape (n_tasks,)
        The additive effects :math:`a_k`.

    Attributes
    ----------
    weights : ndarray of shape (n_tasks,)
        The additive effects :math:`a_k`.
    """

    def __init__(self, weights):
        self.weights = np.asarray(weights, dtype=np.float64)

    def __call__(self, S):
        """Exact value of F on each subset.

        Parameters
        ----------
        S : array-like of shape (n_subsets, n_tasks) or (n_tasks,)

        Returns
        -------
        values : ndarray of shape (n_subsets,), or float for a single subset
        """
        S = np.asarray(S, dtype=np.float64)
        single = S.ndim == 1
        S = np.atleast_2d(S)
        if S.shape[1] != self.weights.shape[0]:
            raise ValueError(
                f"S must have n_tasks={self.weights.shape[0]} columns; got {S.shape[1]}."
            )
        s = S.T
        values = (
            S @ self.weights
            + 3.0 * s[0] * s[1]
            - 3.0 * s[2] * s[3]
            + 3.0 * (s[4] + s[5] - 2.0 * s[4] * s[5])
            - 2.0 * s[6] * s[7] * s[8]
        )
        return float(values[0]) if single else values

    def loo(self):
        """Exact leave-one-out values :math:`F(\\mathbf 1) - F(\\mathbf 1 - e_k)`.

        Returns
        -------
        loo : ndarray of shape (n_tasks,)
        """
        n = self.weights.shape[0]
        removed = np.ones((n, n)) - np.eye(n)
        return self(np.ones(n)) - self(removed)

    def __repr__(self):
        return f"TaskInteractionFunction(n_tasks={self.weights.shape[0]})"


@validate_params(
    {
        "n_tasks": [Interval(Integral, 9, None, closed="left")],
        "n_subsets": [Interval(Integral, 1, None, closed="left")],
        "p": [Interval(Real, 0, 1, closed="both")],
        "noise": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_task_interactions(n_tasks=16, n_subsets=100, p=0.5, noise=0.1, random_state=None):
    """Subsets and noisy values of a set function with synergy, antagonism and XOR.

    The set function over ``n_tasks`` training tasks is

    .. math::

        F(s) = \\sum_k a_k s_k \\;+\\; 3 s_0 s_1 \\;-\\; 3 s_2 s_3
        \\;+\\; 3\\,\\mathrm{XOR}(s_4, s_5) \\;-\\; 2 s_6 s_7 s_8,
        \\qquad a_k \\sim \\mathcal N(0, 1):

    tasks 0 and 1 are synergistic (each is worth more with the other), tasks 2 and 3 are
    antagonistic, tasks 4 and 5 help only alone (XOR), and tasks 6, 7, 8 interact in a
    third-order term. A linear surrogate cannot represent any of these, so its leave-one-out
    estimates are biased for exactly these tasks; a kernel surrogate can.

    Parameters
    ----------
    n_tasks : int, default=16
        Number of tasks; at least 9 (the interactions use tasks 0 to 8).
    n_subsets : int, default=100
        Number of sampled subsets.
    p : float in [0, 1], default=0.5
        Bernoulli inclusion probability of each task in each subset
        (:func:`~sktaskmet.surrogate.sample_subsets`).
    noise : float >= 0, default=0.1
        Standard deviation of the Gaussian noise added to the targets ``y`` (not to ``F``).
    random_state : int, RandomState instance or None, default=None
        Seed of the weights :math:`a_k`, the subsets and the noise.

    Returns
    -------
    S : ndarray of shape (n_subsets, n_tasks)
        0/1 indicator vectors of the sampled subsets.
    y : ndarray of shape (n_subsets,)
        :math:`F(s) + \\varepsilon`, :math:`\\varepsilon \\sim \\mathcal N(0, \\mathrm{noise}^2)`.
    F : TaskInteractionFunction
        The exact, noise-free set function: ``F(S)`` evaluates it on any subsets and
        ``F.loo()`` gives the exact leave-one-out values
        :math:`F(\\mathbf 1) - F(\\mathbf 1 - e_k)`.

    Examples
    --------
    >>> from sktaskmet.datasets import make_task_interactions
    >>> S, y, F = make_task_interactions(random_state=0)
    >>> S.shape, y.shape, F.loo().shape
    ((100, 16), (100,), (16,))
    """
    rng = check_random_state(random_state)
    F = TaskInteractionFunction(rng.standard_normal(n_tasks))
    S = sample_subsets(n_tasks, n_subsets, p=p, random_state=rng)
    y = F(S) + noise * rng.standard_normal(n_subsets)
    return S, y, F
