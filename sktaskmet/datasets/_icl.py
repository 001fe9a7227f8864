"""The authors' in-context learning coin-flip data, bundled with the package."""

from importlib import resources

import numpy as np
from sklearn.utils import Bunch
from sklearn.utils._param_validation import validate_params

from ..surrogate import ids_to_indicators

__all__ = ["load_icl_coin_flip"]

_DATA_FILE = "icl_coin_flip.npz"
_README_FILE = "README_icl_coin_flip.txt"
N_DEMONSTRATIONS = 50


@validate_params({"return_S_y": ["boolean"]}, prefer_skip_nested_validation=True)
def load_icl_coin_flip(*, return_S_y=False):
    """Demonstration subsets and losses of an in-context-learning coin-flip task.

    Released with the kernel-surrogate paper (Zhang, Duan and Zhang, ICLR 2026) under the
    MIT licence and bundled unchanged (the float32 values of the authors' JSON files, in a
    compressed ``.npz`` of 0.6 MB). A language model is prompted with 4 demonstrations
    chosen among 50, for 200 random prompts, and its loss is recorded on each of 869 test
    queries of the coin-flip task. The indicator matrix of the prompts and the losses are
    what a surrogate is fitted on; the authors' protocol (5 random permutations, the first
    80 prompts to fit, the other 120 to test, mean Spearman and normalised error over the
    test queries whose loss varies by at least 0.1) is reproduced in
    ``benchmarks/bench_surrogate_authors_data.py``.

    Every prompt holds only 4 of the 50 demonstrations, so a surrogate fitted on these
    subsets knows nothing of subsets near the full set: attribution around the full set
    is extrapolation (the surrogates raise an
    :class:`~sktaskmet.surrogate.ExtrapolationWarning`); choose among small subsets, e.g.
    ``select(k=4, ...)``.

    Parameters
    ----------
    return_S_y : bool, default=False
        Return ``(S, y)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``S``: ndarray of shape (200, 50), the 0/1 indicator of each prompt's
        demonstrations. ``y``: ndarray of shape (200, 869), float64, the loss on each test
        query (lower is better). ``demonstration_ids``: ndarray of shape (200, 4), the
        demonstrations of each prompt in the order logged. ``DESCR``: the provenance,
        citation and licence.
    (S, y) : tuple of ndarray
        With ``return_S_y=True``.

    Examples
    --------
    >>> from sktaskmet.datasets import load_icl_coin_flip
    >>> data = load_icl_coin_flip()
    >>> data.S.shape, data.y.shape, int(data.S.sum(axis=1).max())
    ((200, 50), (200, 869), 4)
    """
    folder = resources.files("sktaskmet.datasets") / "data"
    with (folder / _DATA_FILE).open("rb") as fh, np.load(fh) as arrays:
        losses = arrays["losses"].astype(np.float64)
        ids = arrays["demonstration_ids"].astype(np.int64)
    S = ids_to_indicators(ids, n_tasks=N_DEMONSTRATIONS)
    if return_S_y:
        return S, losses
    descr = (folder / _README_FILE).read_text(encoding="utf-8")
    return Bunch(S=S, y=losses, demonstration_ids=ids, DESCR=descr)
