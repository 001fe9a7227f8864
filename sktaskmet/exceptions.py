"""Warnings raised by sktaskmet estimators.

The one event they share, a training or solver step that produces NaN or infinity, is
reported with :class:`NonFiniteWarning` by every estimator; a fit that ends with finite but
runaway losses (a learning rate far too high) with :class:`DivergenceWarning`. A user
filters or escalates either with one line::

    import warnings
    from sktaskmet.exceptions import NonFiniteWarning

    warnings.simplefilter("error", NonFiniteWarning)  # fail fast instead of restoring
"""

from sklearn.exceptions import ConvergenceWarning

__all__ = ["DivergenceWarning", "NonFiniteWarning"]


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


class DivergenceWarning(ConvergenceWarning, RuntimeWarning):
    """A fit ended with a training loss far above where it started.

    Raised after ``fit`` returns when the recorded training loss grew by a factor of more
    than 1000 (and by more than 1 in absolute terms), or, for estimators that record no
    loss curve, when the training MSE is over 1000 times that of predicting the mean of
    ``y``. Every value was finite, so no :class:`NonFiniteWarning` fired, but the model is
    unreliable; the usual cause is a learning rate far too high.

    Examples
    --------
    >>> from sklearn.exceptions import ConvergenceWarning
    >>> from sktaskmet.exceptions import DivergenceWarning
    >>> issubclass(DivergenceWarning, ConvergenceWarning)
    True
    """
