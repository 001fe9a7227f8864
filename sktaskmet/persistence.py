"""Saving fitted estimators in skops' secure format, with the list of types to trust.

:mod:`pickle` runs arbitrary code on load; `skops.io <https://skops.readthedocs.io>`_ loads
only the types the caller trusts. Every fitted sktaskmet estimator keeps its state as numpy
arrays and plain Python values (torch state dicts are stored as numpy), so skops saves it
as it is and loads it once the estimator's own class is trusted::

    import skops.io as sio
    from sktaskmet.persistence import SKOPS_TRUSTED_TYPES

    sio.dump(estimator, "model.skops")
    estimator = sio.load("model.skops", trusted=SKOPS_TRUSTED_TYPES)

Exceptions, which skops refuses to load unless their own types are trusted too:

* user callables in parameters (``predictor=`` a module factory, ``CallableTask`` losses,
  ``KernelSurrogate(kernel=callable)``): functions are code, never trusted by default;
* :class:`~sktaskmet.GradientSubsetEstimator`, whose ``model`` parameter is a
  :class:`torch.nn.Module` that skops cannot serialise: save it with :func:`torch.save`
  of ``model.state_dict()`` and its fitted arrays with :func:`numpy.savez`, or with pickle
  where the file is trusted.
"""

import inspect

__all__ = ["SKOPS_TRUSTED_TYPES", "skops_trusted_types"]


def skops_trusted_types():
    """Fully qualified names of the types a fitted sktaskmet estimator is made of.

    The public estimators, the built-in decision tasks (not :class:`~sktaskmet.tasks.
    CallableTask`, which holds user code) and ``numpy.dtype``; everything else in a fitted
    estimator is a type skops trusts by default (numpy arrays, builtins).

    Returns
    -------
    list of str
        Pass it as ``trusted=`` to :func:`skops.io.load` or :func:`skops.io.loads`.
    """
    import sktaskmet
    from sktaskmet import tasks

    names = {"numpy.dtype"}
    for module in (sktaskmet, tasks):
        for name in module.__all__:
            obj = getattr(module, name)
            if not inspect.isclass(obj) or obj in (tasks.CallableTask, tasks.Task):
                continue
            if obj.__name__ == "GradientSubsetEstimator":
                continue
            names.add(f"{obj.__module__}.{obj.__qualname__}")
    return sorted(names)


#: The list :func:`skops_trusted_types` returns, computed when this module is imported.
SKOPS_TRUSTED_TYPES = skops_trusted_types()
