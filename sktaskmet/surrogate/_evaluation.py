"""Evaluating a set function on many task subsets without losing any finished result.

:func:`evaluate_subsets` dispatches ``func(s)`` for every subset through
:class:`joblib.Parallel`. Three things make a long run safe to interrupt:

* a **store** (a directory or a :class:`joblib.Memory`): each result is written by the
  worker that computed it, as soon as it is computed, so after a crash, a killed worker or
  a killed calling process a rerun loads what is stored and computes only what is missing;
* **per-subset failures** are caught in the worker and returned with the subset's index and
  traceback; the other subsets run to the end, and the failures are reported together;
* results are **checked**: a result that is not a number (``None``, a string) counts as a
  failure of its subset, and a NaN or infinite result is kept but reported with a warning.

With ``progress=True`` a rich progress bar counts the subsets as their results arrive
(:class:`~sktaskmet._progress.LoopProgress`, the progress of long loops outside ``fit``).
"""

import hashlib
import os
import tempfile
import traceback
import warnings
from dataclasses import dataclass

import numpy as np
from joblib import Memory, Parallel, delayed

from .._progress import LoopProgress, streaming_parallel

__all__ = ["SubsetEvaluationError", "SubsetFailure", "evaluate_subsets"]


@dataclass(frozen=True)
class SubsetFailure:
    """A subset on which ``func`` failed: its row index, the subset, the error and traceback."""

    index: int
    subset: np.ndarray
    error: str
    traceback: str


class SubsetEvaluationError(RuntimeError):
    """``func`` failed on some subsets; raised after every other subset was evaluated.

    Attributes
    ----------
    failures : list of SubsetFailure
        One entry per failed subset, in row order.
    values : ndarray
        The results of the whole run, NaN in the rows of the failed subsets.
    """

    def __init__(self, failures, values):
        self.failures = failures
        self.values = values
        lines = [
            f"func failed on {len(failures)} of {len(values)} subsets; the other results are "
            "in this error's .values (and in the store, if one was given):"
        ]
        for failure in failures:
            lines.append(f"--- subset {failure.index} ({failure.subset.tolist()}): {failure.error}")
            lines.append(failure.traceback.rstrip())
        super().__init__("\n".join(lines))


# -- the store -------------------------------------------------------------------------


def _subset_key(row):
    """File name of a subset's result: a digest of its float64 bytes."""
    return hashlib.sha256(np.ascontiguousarray(row, dtype=np.float64).tobytes()).hexdigest()


class _DirectoryStore:
    """One ``.npy`` file per subset, written atomically (temporary file, then rename)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)

    def _file(self, row):
        return os.path.join(self.path, _subset_key(row) + ".npy")

    def load(self, row):
        try:
            return np.load(self._file(row), allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError):  # missing or torn by a kill
            return None

    def save(self, row, value):
        handle, tmp = tempfile.mkstemp(dir=self.path, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as fh:
                np.save(fh, value, allow_pickle=False)
            os.replace(tmp, self._file(row))
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise


def _result_array(value):
    """``value`` as a float64 array of at most one dimension, or a reason why not."""
    if value is None:
        return None, "func returned None, not a number or a 1-D array of numbers"
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None, f"func returned a non-numeric {type(value).__name__}: {value!r:.80}"
    if array.ndim > 1:
        return None, f"func returned an array of shape {array.shape}; expected a number or 1-D"
    return array, None


def _evaluate_one(func, row, index, store):
    """Worker side: ``func(row)``, checked, stored; a failure is returned, not raised."""
    try:
        value = func(row)
    except Exception as exc:
        return SubsetFailure(index, row, f"{type(exc).__name__}: {exc}", traceback.format_exc())
    array, reason = _result_array(value)
    if reason is not None:
        return SubsetFailure(index, row, f"TypeError: {reason}", "")
    if store is not None:
        store.save(row, array)
    return array


# -- checks ----------------------------------------------------------------------------


def _check_subsets(subsets):
    try:
        subsets = np.asarray(subsets, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            "subsets must be a numeric array of task indicators or weights in [0, 1]."
        ) from exc
    if subsets.ndim != 2:
        raise ValueError(
            f"subsets must be a 2-D array of shape (n_subsets, n_tasks); got shape {subsets.shape}."
        )
    bad = ~((subsets >= 0.0) & (subsets <= 1.0))  # NaN fails both comparisons
    if bad.any():
        i, k = np.argwhere(bad)[0]
        raise ValueError(
            "subsets must hold task indicators or weights in [0, 1]; "
            f"subsets[{i}, {k}] = {float(subsets[i, k])!r}."
        )
    return subsets


def _make_store(store):
    if store is None or isinstance(store, Memory):
        return None
    if isinstance(store, str | os.PathLike):
        return _DirectoryStore(store)
    raise TypeError(
        f"store must be None, a directory path or a joblib.Memory; got {type(store).__name__}."
    )


def _stack(results, n_subsets):
    """Stack per-subset arrays; failed rows (None) become NaN of the common shape."""
    shapes = {r.shape for r in results if r is not None}
    if len(shapes) > 1:
        raise ValueError(
            "func must return a number or a 1-D array of the same length for every subset; "
            f"got results of shapes {sorted(shapes)}."
        )
    shape = shapes.pop() if shapes else ()
    values = np.full((n_subsets, *shape), np.nan)
    for i, result in enumerate(results):
        if result is not None:
            values[i] = result
    return values


def _warn_non_finite(values, failures):
    non_finite = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    non_finite[[f.index for f in failures]] = False  # failed rows are NaN by construction
    rows = np.flatnonzero(non_finite)
    if rows.size:
        warnings.warn(
            f"func returned NaN or infinity on {rows.size} subset(s), rows {rows[:10].tolist()}"
            f"{' ...' if rows.size > 10 else ''}; the values are kept as returned.",
            RuntimeWarning,
            stacklevel=3,
        )


# -- running the missing subsets -------------------------------------------------------


def _compute(call, subsets, missing, directory, n_jobs, verbose, progress):
    """``_evaluate_one`` on the rows ``missing``; results in their order.

    With ``progress``, a bar over all subsets starts at the number loaded from the store
    and advances as each result arrives.
    """
    jobs = (delayed(_evaluate_one)(call, subsets[i], i, directory) for i in missing)
    if not progress:
        return Parallel(n_jobs=n_jobs, verbose=verbose)(jobs)
    loaded = len(subsets) - len(missing)
    description = "evaluate_subsets" + (f" ({loaded} loaded from the store)" if loaded else "")
    computed = []
    with LoopProgress(len(subsets), description, bar=True, completed=loaded) as bar:
        for result in streaming_parallel(n_jobs=n_jobs, verbose=verbose)(jobs):
            computed.append(result)
            bar.advance()
    return computed


# -- the public function ---------------------------------------------------------------


def evaluate_subsets(
    func, subsets, n_jobs=None, verbose=0, *, store=None, errors="raise", progress=False
):
    """Evaluate a set function on every subset, in parallel, losing no finished result.

    ``func`` is typically "train a model on the tasks in ``s`` and return its loss on the
    target task". The calls are independent, so they are dispatched with
    :class:`joblib.Parallel`; switching joblib's backend scales the same code out to a
    cluster::

        from dask.distributed import Client
        from joblib import parallel_backend

        client = Client("scheduler-address:8786")
        with parallel_backend("dask"):
            y = evaluate_subsets(train_and_score, S, n_jobs=-1, store="results/")

    With a ``store``, every result is saved by the worker that computed it as soon as it is
    computed; calling the function again after a crash, a killed worker, a killed calling
    process or failed subsets loads the stored results and computes only the missing ones.

    Parameters
    ----------
    func : callable
        ``func(s)`` receives one row of ``subsets`` (a 1-D float ndarray of length
        ``n_tasks``) and returns a number or a 1-D array of a fixed length (several target
        metrics). It must be picklable for process-based or distributed backends (a module
        level function or a :func:`functools.partial` of one).
    subsets : array-like of shape (n_subsets, n_tasks)
        Indicator vectors (or task weights) in [0, 1], e.g. from :func:`sample_subsets`.
    n_jobs : int, default=None
        Number of parallel jobs, as in scikit-learn: None means 1 unless inside a
        :func:`joblib.parallel_backend` context, -1 means all workers of the backend.
    verbose : int, default=0
        joblib's verbosity: progress messages of the dispatched calls when positive.
    store : str, path-like, joblib.Memory or None, default=None
        Where results are kept as they are computed. A directory (created if needed) holds
        one ``.npy`` file per subset, named by a digest of the subset, so it serves one
        ``func``: use a new directory for another function or after changing it. It must be
        reachable from the workers (a shared file system on a cluster). A
        :class:`joblib.Memory` caches ``func`` itself (keyed by its code and the subset).
        Identical rows share one stored result.
    errors : {"raise", "collect"}, default="raise"
        What to do when ``func`` raises, or returns something that is not a number or 1-D
        array of numbers, on some subsets. Either way every other subset is evaluated first
        (and stored). ``"raise"``: raise a :class:`SubsetEvaluationError` listing each failed
        subset with its index and traceback (its ``values`` attribute holds the other
        results). ``"collect"``: return ``(values, failures)``, NaN in the failed rows.
    progress : bool, default=False
        Show a progress bar of the subsets evaluated (it needs the rich package). It starts
        at the number of results loaded from ``store`` and advances as results arrive, in
        the order of ``subsets`` (with joblib >= 1.3 and a backend that streams results;
        otherwise it fills at the end). In a terminal it updates live; in a log or a
        notebook's captured output its final state is written once.

    Returns
    -------
    values : ndarray of shape (n_subsets,) or (n_subsets, n_targets)
        ``values[i] = func(subsets[i])``, in the order of ``subsets``.
    failures : list of SubsetFailure
        Only with ``errors="collect"``: the failed subsets, in row order (empty if none).

    Raises
    ------
    SubsetEvaluationError
        With ``errors="raise"``, when ``func`` failed on at least one subset.

    Warns
    -----
    RuntimeWarning
        When ``func`` returned NaN or infinity for some subsets (the rows are listed; the
        values are returned as they are).

    Examples
    --------
    >>> import numpy as np
    >>> from sktaskmet.surrogate import evaluate_subsets
    >>> evaluate_subsets(np.sum, np.array([[1.0, 0.0], [1.0, 1.0]]))
    array([1., 2.])
    """
    if not callable(func):
        raise TypeError(f"func must be callable; got {type(func).__name__}.")
    if errors not in ("raise", "collect"):
        raise ValueError(f"errors must be 'raise' or 'collect'; got {errors!r}.")
    subsets = _check_subsets(subsets)
    directory = _make_store(store)
    call = store.cache(func) if isinstance(store, Memory) else func
    results = [None] * len(subsets)
    if directory is not None:
        results = [directory.load(row) for row in subsets]
    missing = [i for i, result in enumerate(results) if result is None]
    if verbose and directory is not None:
        print(f"[evaluate_subsets] {len(subsets) - len(missing)} results loaded from {store}.")
    computed = _compute(call, subsets, missing, directory, n_jobs, verbose, progress)
    failures = [r for r in computed if isinstance(r, SubsetFailure)]
    for i, result in zip(missing, computed, strict=True):
        results[i] = None if isinstance(result, SubsetFailure) else result
    values = _stack(results, len(subsets))
    _warn_non_finite(values, failures)
    if errors == "collect":
        return values, failures
    if failures:
        raise SubsetEvaluationError(failures, values)
    return values
