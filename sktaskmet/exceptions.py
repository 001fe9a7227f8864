"""Warnings raised by sktaskmet estimators.

The one event they share, a training or solver step that produces NaN or infinity, is
reported with :class:`NonFiniteWarning` by every estimator, so a user filters or escalates
it with one line::

    import warnings
    from sktaskmet.exceptions import NonFiniteWarning

    warnings.simplefilter("error", NonFiniteWarning)  # fail fast instead of restoring
"""

from sklearn.exceptions import ConvergenceWarning

__all__ = ["NonFiniteWarning"]


class NonFiniteWarning(ConvergenceWarning, RuntimeWarning):
    """A step of an iterative fit or solve produced NaN or infinity.

    The estimator did not keep the non-finite values: it restored its last good state
    (parameters, optimizer moments), stopped that loop and carried on from there, so the
    fitted model is the one from before the failure. The message names the estimator, the
    iteration and what to change (usually a smaller learning rate or scaled inputs).

    It subclasses :class:`sklearn.exceptions.ConvergenceWarning`, so filters on
    scikit-learn's convergence warnings catch it too, and :class:`RuntimeWarning`, the
    category numpy uses for invalid floating-point results.

    Examples
    --------
    >>> import warnings
    >>> from sklearn.exceptions import ConvergenceWarning
    >>> from sktaskmet.exceptions import NonFiniteWarning
    >>> issubclass(NonFiniteWarning, ConvergenceWarning)
    True
    """
