"""Sphinx configuration for sktaskmet.

The API reference (api.rst) is generated here from the public names (``__all__``) of the
package and its public subpackages, so a new estimator appears in the docs as soon as it
is exported.
"""

import importlib
import os
import re
import shutil
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..")))

import torch

import sktaskmet

project = "sktaskmet"
author = "The sktaskmet developers"
copyright = "2026, The sktaskmet developers"
release = sktaskmet.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/*.ipynb"]
html_theme = "pydata_sphinx_theme"
html_title = "sktaskmet"
html_theme_options = {
    "navigation_with_keys": False,
    # The version label next to the project name on every page.
    "navbar_start": ["navbar-logo", "version-label"],
}
html_static_path = ["_static"]
html_css_files = ["sktaskmet.css"]
templates_path = ["_templates"]

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": True}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

intersphinx_mapping = {}

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"quick_start\.py",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "plot_gallery": "True",
    "remove_config_comments": True,
    # "Examples using X" on every API page.
    "backreferences_dir": "generated/backreferences",
    "doc_module": ("sktaskmet",),
    "reference_url": {"sktaskmet": None},
    "show_memory": False,
    "min_reported_time": 1,
}

# --------------------------------------------------------------------------------------
# MathJax served with the documentation, not from a CDN, so that formulas render offline.
# The doc extra installs django-static-mathjax, a plain copy of MathJax 3's files (it needs
# no Django); the parts the pages use are copied next to the HTML after the build.
# --------------------------------------------------------------------------------------

_MATHJAX_PARTS = ["tex-chtml.js", "input", "output", "ui", "adaptors", "a11y"]
mathjax_path = "mathjax/tex-chtml.js"  # relative to _static


def _mathjax_source():
    try:
        import mathjax
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "The documentation serves MathJax itself: install the doc extra "
            '(python -m pip install -e ".[doc]"), which provides django-static-mathjax.'
        ) from exc
    return os.path.join(os.path.dirname(mathjax.__file__), "static", "mathjax", "es5")


def _copy_mathjax(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    source, target = _mathjax_source(), os.path.join(app.outdir, "_static", "mathjax")
    for part in _MATHJAX_PARTS:
        src, dst = os.path.join(source, part), os.path.join(target, part)
        if os.path.isdir(src):
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            os.makedirs(target, exist_ok=True)
            shutil.copy2(src, dst)


# The gallery runs in this process. Its problems are small, so torch's intra-op threads
# only add overhead, and on a shared or small CI machine they oversubscribe the cores: the
# discovery examples ran 5-20x slower with torch's default threads on a loaded 2-core box
# than with one thread. The examples' stated run times are for one thread.
torch.set_num_threads(1)

# Non-interactive backend for the gallery; matplotlib warns otherwise on headless machines.
os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", message="Matplotlib is currently using agg")

# Inherited scikit-learn methods (score, set_output, the metadata-routing setters) carry
# cross-references into scikit-learn's own documentation. The build has no network, so no
# intersphinx inventory: render those references as literals instead of leaving dangling
# labels, while references in sktaskmet's own docstrings stay checked by -W.
_SKLEARN_XREF = re.compile(r":(?:ref|term|func|class|meth|mod|attr):`~?([^`<]*?)\s*(?:<[^>]*>)?`")


def _literal_sklearn_references(app, what, name, obj, options, lines):
    module = getattr(obj, "__module__", None) or ""
    if not module.startswith("sklearn"):
        return
    lines[:] = [_SKLEARN_XREF.sub(lambda m: f"``{m.group(1).strip()}``", line) for line in lines]


def _plain_literal_blocks_in_benchmarks(app, docname, source):
    # Benchmark pages quote console output in literal blocks (``::``): show it as plain
    # text, not highlighted as Python.
    if docname.startswith("benchmarks/"):
        source[0] = ".. highlight:: text\n\n" + source[0]


def _skip_torch_members(app, what, name, obj, skip, options):
    # Networks subclass torch.nn.Module: its inherited methods belong to torch's docs.
    return True if (getattr(obj, "__module__", None) or "").startswith("torch") else None


def setup(app):
    app.connect("autodoc-process-docstring", _literal_sklearn_references)
    app.connect("source-read", _plain_literal_blocks_in_benchmarks)
    _mathjax_source()  # fail early, before the build, when MathJax is missing
    app.connect("build-finished", _copy_mathjax)
    app.connect("autodoc-skip-member", _skip_torch_members)


# --------------------------------------------------------------------------------------
# API reference, generated from the public names
# --------------------------------------------------------------------------------------

API_SECTIONS = [
    ("sktaskmet", "Estimators", "The estimators, re-exported at the top level."),
    ("sktaskmet.tasks", "Tasks", "Downstream decision tasks for TaskMet and DFL."),
    ("sktaskmet.surrogate", "Subset sampling and evaluation", "Helpers of the surrogates."),
    ("sktaskmet.scml", "Sparse compositional metric learning", "Helpers of SCMLRegressor."),
    ("sktaskmet.discovery", "Task discovery networks", "Built-in networks of AgreementScorer."),
    ("sktaskmet.model_selection", "Model selection", "Cross-validation splitters."),
    ("sktaskmet.datasets", "Datasets", "Generators of the reproduction problems."),
    ("sktaskmet.plotting", "Plotting", "Display classes in scikit-learn's style."),
    ("sktaskmet.exceptions", "Exceptions and warnings", "Warnings raised by the estimators."),
    ("sktaskmet.persistence", "Persistence", "Saving fitted estimators with skops."),
]


def _write_api_page():
    lines = [
        ".. This file is generated by doc/conf.py from the public names; do not edit.",
        "",
        "API reference",
        "=============",
        "",
    ]
    seen = set()
    for module_name, title, blurb in API_SECTIONS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        names = [n for n in getattr(module, "__all__", []) if not n.startswith("__")]
        names = [n for n in names if (module_name, n) not in seen]
        if module_name != "sktaskmet":
            # A name re-exported at the top level is documented once, there.
            names = [n for n in names if getattr(sktaskmet, n, None) is not getattr(module, n)]
        if not names:
            continue
        lines += [title, "-" * len(title), "", blurb, ""]
        lines += [f".. currentmodule:: {module_name}", "", ".. autosummary::"]
        lines += ["   :toctree: generated/", "   :nosignatures:", ""]
        lines += [f"   {name}" for name in sorted(names)]
        lines.append("")
        seen.update((module_name, n) for n in names)
    if len(lines) == 5:
        lines += ["The package exports no estimator yet.", ""]
    text = "\n".join(lines)
    path = os.path.join(HERE, "api.rst")
    old = open(path, encoding="utf-8").read() if os.path.exists(path) else None
    if old != text:  # unchanged file keeps Sphinx's incremental build cache valid
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)


_write_api_page()
