"""Histogram of agreement scores, one colour per family of labelings."""

import numpy as np
from sklearn.utils.validation import check_is_fitted

__all__ = ["AgreementScoreDisplay"]


class AgreementScoreDisplay:
    """Histogram of agreement scores by family of labelings (human, random, discovered...).

    Use :meth:`from_estimator` on a fitted :class:`~sktaskmet.AgreementScorer` or
    :meth:`from_scores` on precomputed scores; both plot. Build it directly and call
    :meth:`plot` to draw on an axes of your own.

    Parameters
    ----------
    agreement_scores : array-like of shape (n_tasks,)
        Agreement score of each labeling.
    families : array-like of shape (n_tasks,)
        Family name of each labeling; one histogram is drawn per distinct name, in order of
        first appearance.

    Attributes
    ----------
    ax_ : matplotlib Axes
        Axes with the histograms.
    figure_ : matplotlib Figure
        Figure containing the axes.
    patches_ : dict of str to list of matplotlib patches
        Bars of each family's histogram.

    Examples
    --------
    >>> from sktaskmet.plotting import AgreementScoreDisplay
    >>> display = AgreementScoreDisplay.from_scores(
    ...     {"human": [0.99, 0.98, 0.97], "random": [0.78, 0.80, 0.76]}
    ... )
    >>> sorted(display.patches_)
    ['human', 'random']
    """

    def __init__(self, *, agreement_scores, families):
        self.agreement_scores = agreement_scores
        self.families = families

    def plot(self, ax=None, *, bins=25, score_range=(0.0, 1.0), alpha=0.6, legend=True):
        """Draw the histograms.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure is created when None.
        bins : int or sequence of float, default=25
            Histogram bins over ``score_range``.
        score_range : tuple of float, default=(0.0, 1.0)
            Range of scores covered by the bins.
        alpha : float, default=0.6
            Opacity of the bars, so that overlapping families stay readable.
        legend : bool, default=True
            Show a legend with each family's mean score.

        Returns
        -------
        display : AgreementScoreDisplay
            Object that stores the computed values.
        """
        import matplotlib.pyplot as plt

        scores = np.asarray(self.agreement_scores, dtype=float).reshape(-1)
        families = np.asarray(self.families, dtype=object).reshape(-1)
        if scores.shape != families.shape:
            raise ValueError(
                f"agreement_scores has {scores.size} values but families has {families.size}; "
                "give one family name per labeling."
            )
        if ax is None:
            _, ax = plt.subplots()
        names = list(dict.fromkeys(families.tolist()))
        self.patches_ = {}
        for name in names:
            values = scores[families == name]
            _, _, patches = ax.hist(
                values,
                bins=bins,
                range=score_range,
                alpha=alpha,
                label=f"{name} (mean {values.mean():.3f}, n={values.size})",
            )
            self.patches_[name] = list(patches)
        ax.set_xlabel("agreement score")
        ax.set_ylabel("number of labelings")
        if legend:
            ax.legend(loc="upper left")
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_estimator(cls, scorer, families=None, *, ax=None, **kwargs):
        """Histogram of the agreement scores of a fitted :class:`~sktaskmet.AgreementScorer`.

        Parameters
        ----------
        scorer : AgreementScorer
            Fitted scorer.
        families : array-like of shape (n_tasks,), default=None
            Family of each labeling (column of the ``y`` given to ``fit``); one family named
            "labelings" when None.
        ax : matplotlib Axes, default=None
        **kwargs : dict
            Passed to :meth:`plot`.

        Returns
        -------
        display : AgreementScoreDisplay
        """
        check_is_fitted(scorer, "agreement_scores_")
        scores = scorer.agreement_scores_
        if families is None:
            families = ["labelings"] * scores.size
        return cls(agreement_scores=scores, families=families).plot(ax=ax, **kwargs)

    @classmethod
    def from_scores(cls, scores, *, ax=None, **kwargs):
        """Histogram of precomputed scores given per family.

        Parameters
        ----------
        scores : dict of str to array-like
            Agreement scores of each family.
        ax : matplotlib Axes, default=None
        **kwargs : dict
            Passed to :meth:`plot`.

        Returns
        -------
        display : AgreementScoreDisplay
        """
        values = [np.asarray(v, dtype=float).reshape(-1) for v in scores.values()]
        names = [name for name, v in zip(scores, values, strict=True) for _ in range(v.size)]
        return cls(agreement_scores=np.concatenate(values), families=names).plot(ax=ax, **kwargs)
