"""Adversarial train/test splits implied by a labeling."""

import numpy as np
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils import check_array
from sklearn.utils.validation import _num_samples

__all__ = ["AdversarialSplit"]


class AdversarialSplit(BaseCrossValidator):
    r"""Train on the points where two labelings agree, test where they disagree.

    Given the target labeling :math:`\tau` (the ``y`` passed to :meth:`split`) and another
    labeling :math:`\tau_d` of the same points (``task``, e.g. a discovered task of high
    agreement score), the single split is

    .. math::

        \text{train} = \{i : \tau(x_i) = \tau_d(x_i)\}, \qquad
        \text{test} = \{i : \tau(x_i) \neq \tau_d(x_i)\}.

    On the training part a model cannot tell :math:`\tau` from :math:`\tau_d`; when its
    inductive biases favour :math:`\tau_d`, it learns :math:`\tau_d` and fails on the test
    part although inputs and labels are unchanged (Atanov et al., NeurIPS 2022). Compare
    the held-out accuracy with that of a random split of the same sizes.

    Read more in the :ref:`User Guide <discovery>`.

    Parameters
    ----------
    task : array-like of shape (n_samples,)
        The labeling :math:`\tau_d`, with label values comparable to those of ``y``
        (typically both binary in {0, 1}).

    See Also
    --------
    sktaskmet.AgreementScorer : Agreement score of a labeling.

    Examples
    --------
    >>> import numpy as np
    >>> from sktaskmet.model_selection import AdversarialSplit
    >>> y = np.array([0, 0, 1, 1, 0, 1])
    >>> task = np.array([0, 1, 1, 0, 0, 1])
    >>> train, test = next(AdversarialSplit(task).split(np.zeros((6, 1)), y))
    >>> train, test
    (array([0, 2, 4, 5]), array([1, 3]))
    """

    def __init__(self, task):
        self.task = task

    def _check_task(self):
        task = check_array(self.task, ensure_2d=False, dtype=None, input_name="task")
        if task.ndim != 1:
            raise ValueError(f"task must be a 1-d labeling; got an array of shape {task.shape}.")
        return task

    def _iter_test_masks(self, X=None, y=None, groups=None):
        task = self._check_task()
        if y is None:
            raise ValueError(
                "AdversarialSplit.split needs y, the target labeling compared with task."
            )
        y = check_array(y, ensure_2d=False, dtype=None, input_name="y")
        if y.ndim != 1:
            raise ValueError(f"y must be a 1-d labeling; got an array of shape {y.shape}.")
        n_samples = _num_samples(X) if X is not None else y.shape[0]
        if not (y.shape[0] == task.shape[0] == n_samples):
            raise ValueError(
                f"task has {task.shape[0]} labels but X has {n_samples} samples and y has "
                f"{y.shape[0]}; the labeling must cover the points being split."
            )
        test = np.asarray(y != task)
        if test.all():
            raise ValueError(
                "y and task disagree on every sample, so the training side is empty; check "
                "that both use the same label values (e.g. both in {0, 1})."
            )
        if not test.any():
            raise ValueError(
                "y and task agree on every sample, so the test side is empty; the split "
                "needs a task that differs from y."
            )
        yield test

    def split(self, X, y, groups=None):
        """Indices of the training and test points.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Only its length is used.
        y : array-like of shape (n_samples,)
            The target labeling :math:`\\tau`.
        groups : None
            Ignored.

        Yields
        ------
        train : ndarray
            Indices where ``y == task``.
        test : ndarray
            Indices where ``y != task``.
        """
        return super().split(X, y, groups)

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits: always 1.

        Parameters
        ----------
        X, y, groups : object
            Ignored.

        Returns
        -------
        n_splits : int
        """
        return 1
