"""Shared pytest configuration.

Hypothesis profiles: ``ci`` (the default) is derandomised with a bounded deadline so that CI
is reproducible; ``thorough`` draws many more random examples for local runs::

    HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_metric_axioms.py
"""

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=2000,
    max_examples=200,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    derandomize=False,
    deadline=None,
    max_examples=2000,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Two cores on CI: one torch thread per test process keeps timings predictable and avoids
# oversubscription when pytest-xdist runs several processes.
torch.set_num_threads(1)

CUDA_AVAILABLE = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if CUDA_AVAILABLE:
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device; torch.cuda.is_available() is False")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    """Every device this machine can run: the CPU always, CUDA when present."""
    return request.param


@pytest.fixture(params=[np.float64, np.float32], ids=["float64", "float32"])
def float_dtype(request):
    return request.param
