"""Sphinx configuration of gpuact's documentation site.

Build (CI runs both, with -W: a warning fails the build):

    sphinx-build -W --keep-going -b html docs docs/_build/html
    sphinx-build -W --keep-going -b doctest docs docs/_build/doctest

Nothing is fetched at build time or when a page is read: no intersphinx, formulas written as
MathML by ``_ext/mathml.py``, the theme's assets copied into the site.
"""

from __future__ import annotations

import doctest
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# the checkout's gpuact (an editable install finds the same tree), and the local extension
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE / "_ext"))

import gpuact  # noqa: E402  (from the checkout, put on the path just above)

project = "gpuact"
author = "the gpuact developers"
copyright = "the gpuact developers"
release = gpuact.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "numpydoc",
    "mathml",  # _ext/mathml.py
    "mdtable",  # _ext/mdtable.py
]

exclude_patterns = ["_build"]
templates_path = ["_templates"]
default_role = "code"

# ---- API reference -------------------------------------------------------------------------------
autosummary_generate = True
autosummary_generate_overwrite = True
autodoc_member_order = "bysource"
# Signatures without types (the types are in each "Parameters" section); the annotations are for
# type checkers (gpuact/_typing.py, py.typed).
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = False

# ---- formulas --------------------------------------------------------------------------------------
html_math_renderer = "mathml"

# ---- doctest (sphinx-build -b doctest) ---------------------------------------------------------------
# As tests/test_api.py::test_doctests runs the docstrings: 5 significant digits (the last ulp of
# exp or tanh differs between CPUs' SIMD paths) and whitespace-insensitive comparisons.
doctest_global_setup = """
import numpy as np
np.set_printoptions(precision=5)
try:
    import dask.array
    have_dask = True
except ImportError:
    have_dask = False
"""
doctest_default_flags = (
    doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL | doctest.DONT_ACCEPT_TRUE_FOR_1 | doctest.NORMALIZE_WHITESPACE
)

# ---- HTML ----------------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"gpuact {release}"
html_static_path = ["_static"]
html_css_files = ["gpuact.css"]
html_show_sourcelink = False
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# the section navigation only where a section has pages (the API reference); the other pages
# get the width
html_sidebars = {page: [] for page in ("index", "getting-started", "contract", "backends", "benchmarks", "development")}
