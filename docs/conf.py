"""Sphinx configuration: numpydoc API pages, a sphinx-gallery of examples, no network.

Build with ``make docs`` (warnings are errors). Nothing here fetches anything: no
intersphinx inventories, and math is drawn by matplotlib's mathtext at build time.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document this checkout, whatever else is installed
sys.path.insert(0, str(ROOT / "docs" / "sphinxext"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # the gallery trains in this process

import sklearn_hsae  # noqa: E402

project = "sklearn_hsae"
author = "the sklearn_hsae developers"
copyright = "the sklearn_hsae developers"
release = sklearn_hsae.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "matplotlib.sphinxext.mathmpl",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "gen_modules/backreferences", "**/sg_execution_times.rst",
                    "sg_execution_times.rst"]
root_doc = "index"
default_role = "literal"  # `x` in prose is code, not a cross-reference attempt
nitpicky = False

# --- API pages -----------------------------------------------------------------------
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": True}
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
numpydoc_show_class_members = False  # autosummary lists them; avoids duplicate entries
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
add_module_names = False

# --- Gallery -------------------------------------------------------------------------
# Only the cheap synthetic examples run during the build; the real-activation ones need
# sklearn_hsae.datasets.fetch_text_activations and a language model, and are shown as
# code. Add a name to EXECUTED once an example is cheap and its API is on this branch.
EXECUTED = ("plot_quickstart", "plot_tree_posthoc")
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/(%s)\.py$" % "|".join(EXECUTED),
    "within_subsection_order": "gallery_order.example_order",
    "doc_module": ("sklearn_hsae",),
    "backreferences_dir": "gen_modules/backreferences",
    "reference_url": {"sklearn_hsae": None},  # local links only; no remote inventories
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 1,
    "matplotlib_animations": False,
    "write_computation_times": False,
}

# --- HTML ----------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sklearn_hsae {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
# Equations are PNGs drawn in black: keep the light theme.
html_context = {"default_mode": "light"}
mathmpl_fontsize = 14.0
mathmpl_srcset = ["2x"]
