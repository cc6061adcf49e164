"""A self-contained HTML page to browse a fitted dictionary, parent by parent.

:func:`hierarchy_report` encodes a set of token activations once and writes one HTML file
with everything inline (CSS, PNG plots as base64 data URIs, no scripts from anywhere), so
it can be mailed or archived as it is, and the two summary plots as PNG files beside it.

The page is built from small sections: the summary (``_summary``: numbers per level and
two plots), the latents (``_latents``: tokens in context, nested children) and every
listed parent's subtree (``_subtree`` lays it out, ``_plots`` draws it).
"""

from ._report import hierarchy_report

__all__ = ["hierarchy_report"]
