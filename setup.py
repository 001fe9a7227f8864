"""Packaging for sktaskmet.

Install for development with the constraints file, which keeps pip on the local CPU
build of torch where one is available (see README.rst):

    python -m pip install -c constraints.txt -e ".[dev]"

``torch`` itself is not pinned here, so users elsewhere get whichever build suits them.
"""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.abspath(os.path.dirname(__file__))


def read_version():
    with open(os.path.join(HERE, "sktaskmet", "__init__.py"), encoding="utf-8") as fh:
        match = re.search(r'^__version__ = "([^"]+)"', fh.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError("__version__ not found in sktaskmet/__init__.py")
    return match.group(1)


with open(os.path.join(HERE, "README.rst"), encoding="utf-8") as fh:
    LONG_DESCRIPTION = fh.read()

TEST_REQUIRES = [
    "pytest>=7",
    "pytest-xdist>=3",
    "hypothesis>=6.80",
    "pandas>=1.5",
    "matplotlib>=3.6",
    "dask[distributed]>=2023.1",
    # scikit-learn's ProgressBar callback draws with rich (tests of the callbacks).
    "rich>=13",
    "skops>=0.10",
]
DOC_REQUIRES = [
    "sphinx>=7",
    "numpydoc>=1.6",
    "sphinx-gallery>=0.15",
    "pydata-sphinx-theme>=0.15",
    "matplotlib>=3.6",
    # MathJax 3's files, served with the docs instead of from a CDN (no Django needed).
    "django-static-mathjax>=3.2",
]
PLOT_REQUIRES = ["matplotlib>=3.6"]
DISTRIBUTED_REQUIRES = ["dask[distributed]>=2023.1"]
# metric-learn 0.7.0, the newest release, fails in every ``fit`` on scikit-learn >= 1.8
# (it passes ``force_all_finite`` to check_X_y); the bound goes once a fixed release exists.
METRIC_LEARN_REQUIRES = ["metric-learn>=0.7.0", "scikit-learn>=1.6,<1.8"]
LINT_REQUIRES = ["ruff>=0.5"]
# The SCML solver's fused GPU kernel. Its tests also run on the CPU in Triton's interpreter
# (TRITON_INTERPRET=1), as in .ci/run. Kept out of ``dev``: the wheel is about 290 MB.
TRITON_REQUIRES = ["triton>=3.0"]

setup(
    name="sktaskmet",
    version=read_version(),
    description=(
        "scikit-learn compatible task-driven metric and model learning: TaskMet, "
        "sparse compositional metric learning, kernel surrogates for task "
        "attribution and task discovery, on PyTorch"
    ),
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/x-rst",
    author="The sktaskmet developers",
    license="BSD-3-Clause",
    license_files=["LICENSE"],
    packages=find_packages(include=["sktaskmet", "sktaskmet.*"]),
    include_package_data=True,
    package_data={"sktaskmet.datasets": ["data/*.npz", "data/*.txt"]},
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.23",
        "scipy>=1.9",
        "scikit-learn>=1.6",
        "torch>=2.1",
        "joblib>=1.2",
    ],
    extras_require={
        "test": TEST_REQUIRES,
        "doc": DOC_REQUIRES,
        "plot": PLOT_REQUIRES,
        "distributed": DISTRIBUTED_REQUIRES,
        "metric-learn": METRIC_LEARN_REQUIRES,
        "lint": LINT_REQUIRES,
        "triton": TRITON_REQUIRES,
        "pyepo": ["pyepo>=2.2", "ortools>=9.8"],
        "dev": sorted(
            set(TEST_REQUIRES + DOC_REQUIRES + PLOT_REQUIRES + DISTRIBUTED_REQUIRES + LINT_REQUIRES)
        ),
    },
    classifiers=[
        "Intended Audience :: Science/Research",
        "License :: OSI Approved :: BSD License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
