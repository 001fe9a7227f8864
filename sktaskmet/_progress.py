"""Progress of long loops that are not fits: a rich progress bar, printed lines, or nothing.

A fit reports its progress through the training core (:mod:`sktaskmet._training`:
``verbose`` records and scikit-learn callbacks such as ``ProgressBar``). Long work outside
``fit`` has no callback context (scikit-learn's callbacks follow fits only): evaluating a set
function on many subsets, estimating many subsets from fitted gradients. It reports through
:class:`LoopProgress`, as a rich progress bar (the package scikit-learn's ``ProgressBar``
draws with) when asked for one, and as one printed line per update with ``verbose``::

    with LoopProgress(len(items), "evaluate_subsets", bar=True) as progress:
        for item in items:
            work(item)
            progress.advance()
"""

import time

from joblib import Parallel

__all__ = ["LoopProgress", "streaming_parallel"]


def _rich_progress():
    """rich's Progress class, or an ImportError saying what needs it."""
    try:
        from rich import progress
    except ImportError as exc:  # pragma: no cover - rich is installed with the test extras
        raise ImportError(
            "progress=True draws a progress bar with the rich package, which is not "
            "installed: pip install rich (or leave progress=False)."
        ) from exc
    return progress


class LoopProgress:
    """Progress of a loop over ``total`` items, as a rich bar and/or printed lines.

    Parameters
    ----------
    total : int
        Number of items.
    description : str
        What runs, e.g. ``"evaluate_subsets"``; the label of the bar and the prefix of the
        lines (``[description] 40/100 subsets evaluated (12.3 s)``).
    bar : bool, default=False
        Draw a rich progress bar on rich's console (an ImportError when rich is missing).
        In a terminal the bar updates live; elsewhere (a log file, captured output) its
        final state is written once, when the loop ends.
    verbose : int, default=0
        Print a line at every update when positive.
    unit : str, default="items done"
        What the count counts, in the printed lines.
    completed : int, default=0
        Items already done before the loop starts (e.g. results loaded from a store).
    """

    def __init__(self, total, description, *, bar=False, verbose=0, unit="items done", completed=0):
        self.total = int(total)
        self.description = description
        self.bar = bool(bar)
        self.verbose = verbose
        self.unit = unit
        self.completed = int(completed)
        self._progress = None
        self._task = None
        self._start = None

    def __enter__(self):
        self._start = time.perf_counter()
        if self.bar:
            progress = _rich_progress()
            self._progress = progress.Progress(
                progress.TextColumn("{task.description}"),
                progress.BarColumn(),
                progress.MofNCompleteColumn(),
                progress.TaskProgressColumn(),
                progress.TimeElapsedColumn(),
                progress.TimeRemainingColumn(),
            )
            self._progress.start()
            self._task = self._progress.add_task(
                self.description, total=self.total, completed=self.completed
            )
        return self

    def advance(self, count=1, detail=""):
        """Count ``count`` more items as done; ``detail`` is appended to a printed line."""
        self.completed += count
        if self._progress is not None:
            self._progress.update(self._task, advance=count)
        if self.verbose:
            elapsed = time.perf_counter() - self._start
            print(
                f"[{self.description}] {self.completed}/{self.total} {self.unit}{detail} "
                f"({elapsed:.1f} s)"
            )

    def __exit__(self, *exc_info):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        return False


def streaming_parallel(**parallel_params):
    """A :class:`joblib.Parallel` that yields results in order as they finish, where it can.

    Progress can then follow each result. Streaming needs joblib >= 1.3 and a backend that
    supports it (not every process-pool or distributed backend does); elsewhere the returned
    Parallel gives all results together at the end, and progress jumps there.
    """
    try:
        return Parallel(return_as="generator", **parallel_params)
    except (TypeError, ValueError):
        return Parallel(**parallel_params)
