"""Progress bars for the long steps: extraction and CE loss recovered.

``verbose`` means the same everywhere, as in scikit-learn: 0 prints nothing, 1 or more
draws a tqdm bar on stderr with the rate (tokens per second) and the time left.
"""

from __future__ import annotations

from tqdm.auto import tqdm


def progress_bar(verbose, total: int, desc: str, unit: str = "token"):
    """A bar over ``total`` units, silent (but still countable) when ``verbose`` is 0."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        disable=not verbose,
        mininterval=0.5,  # redraws cost nothing next to a forward pass, but logs stay short
        dynamic_ncols=True,
    )
