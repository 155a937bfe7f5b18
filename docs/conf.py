"""Sphinx configuration of the sklearn-ergo documentation.

Build with ``make -C docs html`` (runs every example of the gallery) or
``make -C docs html-quick`` (runs only the quick examples; what CI does).
"""

import os
import sys
from pathlib import Path

import sklearn_ergo

DOCS = Path(__file__).resolve().parent
# The gallery's argv and scraper are named by string (see sphinxext/gallery.py).
sys.path.insert(0, str(DOCS / "sphinxext"))

project = "sklearn-ergo"
author = "sklearn-ergo developers"
copyright = "sklearn-ergo developers, BSD-3-Clause"
release = version = sklearn_ergo.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = [
    "_build",
    # sphinx-gallery writes these next to the generated pages.
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
    "auto_examples/*.json",
    "auto_examples/*.md5",
]
templates_path = ["_templates"]


# -- MyST: the pages are the repository's Markdown files -------------------
myst_enable_extensions = ["dollarmath", "amsmath"]
# GitHub-style anchors, so that links such as ``README.md#use`` resolve.
myst_heading_anchors = 3

# -- API reference ---------------------------------------------------------
autosummary_generate = True
# Own members only: the methods inherited from scikit-learn (get_params,
# set_output, ...) cite labels of scikit-learn's documentation, and so do the
# set_{method}_request methods that it adds to every estimator (skipped below).
autodoc_default_options = {"members": True}
# The class template lists the methods itself; numpydoc's own method tables
# would point at stub pages that autosummary does not generate.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# -- Gallery ---------------------------------------------------------------
# ``plot_ergodic_vs_last.py`` trains 24 operators (3.5 min on 2 cores);
# SKLEARN_ERGO_DOCS_QUICK=1 (``make html-quick``, CI) runs only the examples
# that take seconds and shows the others' code without their output.
QUICK_EXAMPLES = r"/plot_denoise_image\.py$"
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": (
        QUICK_EXAMPLES if os.environ.get("SKLEARN_ERGO_DOCS_QUICK") == "1" else "/plot_"
    ),
    # The examples are scripts that write their figures to files; the gallery
    # passes them an output folder under _build and shows what they wrote.
    "reset_argv": "gallery.reset_argv",
    "image_scrapers": ("gallery.png_scraper",),
    "download_all_examples": False,
    "remove_config_comments": True,
}

# -- HTML ------------------------------------------------------------------
html_theme = "alabaster"
html_title = "sklearn-ergo"
html_theme_options = {
    "description": "Learned analysis operators by unrolled Chambolle-Pock",
    "fixed_sidebar": True,
}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}


def _skip_metadata_requests(app, what, name, obj, skip, options):
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_requests)
