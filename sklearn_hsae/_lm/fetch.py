"""fetch_text_activations: the labelled gensim corpus through SmolLM2, cached on disk.

The cache holds only safe formats (npy, npz, json; never a pickle), in one folder per
model, layer, corpus version and subset, written to a temporary folder first and renamed
into place when complete, so an interrupted run never leaves a half cache behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch
from sklearn.utils._param_validation import Interval, validate_params

from .. import __version__
from . import corpus
from .activations import extract_activations
from .language_model import SMOLLM2

logger = logging.getLogger(__name__)

_DESCR = """\
Residual-stream activations of a causal LM on a small labelled English corpus.

Texts: sentences (long ones cut into chunks of <= 48 words) from three sources shipped in
the gensim wheel's test data: 299 ABC news articles (lee_background), 200 20-Newsgroups
posts from alt.atheism and sci.space (mini_newsgroup; headers, quotes, attributions,
signatures and e-mail addresses stripped) and 200 movie-review sentences (Pang & Lee
polarity; lower-cased and pre-tokenised, so their source is easy to spot); with
wikipedia=True also the 106 English Wikipedia articles of the wheel's sample (source
"wikipedia", topic = article title).

Rows: one per token, BOS and massive-norm tokens (norm > 1000) left out.
Per-text labels: source, topic (usenet; Wikipedia: the title), sentiment (reviews only), group (the
original document, for grouped cross-validation). Index them with doc_index for tokens.
Per-token labels, read off the token strings: word_start, capitalized, has_digit, punct.
"""


def get_data_home(data_home=None) -> str:
    """The folder where sklearn_hsae caches data, created if missing.

    Like :func:`sklearn.datasets.get_data_home`: ``data_home`` when given, else the
    environment variable ``SKLEARN_HSAE_DATA``, else ``~/sklearn_hsae_data``.

    Parameters
    ----------
    data_home : str, os.PathLike or None, default=None
        The folder to use; ``~`` is expanded.

    Returns
    -------
    data_home : str
        The path of the folder.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from sklearn_hsae.datasets import get_data_home
    >>> home = get_data_home(Path(tempfile.mkdtemp()) / "cache")
    >>> Path(home).is_dir()
    True
    """
    if data_home is None:
        data_home = os.environ.get("SKLEARN_HSAE_DATA", os.path.join("~", "sklearn_hsae_data"))
    path = Path(data_home).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _cache_name(model: str, layer: int, n_texts: int | None, wikipedia: bool = False) -> str:
    if model == SMOLLM2:
        slug = model
    else:  # a local directory: its name, and a hash of where it is
        path = str(Path(model).resolve())
        slug = f"{Path(path).name}-{hashlib.sha1(path.encode()).hexdigest()[:10]}"
    subset = "" if n_texts is None else f"-first{n_texts}"
    wiki = "-wiki" if wikipedia else ""
    return f"{slug}-L{layer}-{corpus.corpus_version()}{wiki}{subset}"


def _write_cache(folder: Path, model, layer: int, n_texts, batch_size: int, verbose,
                 wikipedia: bool = False) -> None:
    columns = corpus.read_corpus(n_texts, wikipedia)
    start = time.perf_counter()
    acts = extract_activations(columns["texts"], model, layer, batch_size=batch_size,
                               verbose=verbose)
    seconds = time.perf_counter() - start
    logger.info("Extracted %d tokens in %.1f s into %s", len(acts.X), seconds, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        np.save(tmp / "X.npy", acts.X)
        np.savez(tmp / "rows.npz", doc_index=acts.doc_index, position=acts.position)
        (tmp / "tokens.json").write_text(json.dumps(acts.tokens.tolist(), ensure_ascii=False), "utf-8")
        (tmp / "texts.json").write_text(json.dumps(columns, ensure_ascii=False), "utf-8")
        meta = {
            "model": str(model),
            "layer": layer,
            "corpus_version": corpus.corpus_version(),
            "n_texts": n_texts,
            "wikipedia": wikipedia,
            "n_tokens": len(acts.X),
            "n_dropped": acts.n_dropped,
            "max_norm": 1000.0,
            "extraction_seconds": round(seconds, 1),
            "sklearn_hsae_version": __version__,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), "utf-8")  # written last
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: its cache is as good as ours
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_cache(folder: Path) -> Bunch:
    meta = json.loads((folder / "meta.json").read_text("utf-8"))
    columns = json.loads((folder / "texts.json").read_text("utf-8"))
    rows = np.load(folder / "rows.npz")
    tokens = np.asarray(json.loads((folder / "tokens.json").read_text("utf-8")), dtype=object)
    position = rows["position"]
    X = np.load(folder / "X.npy")
    if not len(X) == len(tokens) == len(position) == meta["n_tokens"]:
        raise OSError(f"The cache at {folder} is inconsistent; delete that folder to rebuild it.")
    return Bunch(
        X=X,
        tokens=tokens,
        doc_index=rows["doc_index"],
        position=position,
        texts=columns["texts"],
        source=np.asarray(columns["source"], dtype=object),
        topic=np.asarray(columns["topic"], dtype=object),
        sentiment=np.asarray(columns["sentiment"], dtype=object),
        group=np.asarray(columns["group"], dtype=np.int64),
        **corpus.token_labels(tokens, position),
        n_dropped=meta["n_dropped"],
        model=meta["model"],
        layer=meta["layer"],
        corpus_version=meta["corpus_version"],
        DESCR=_DESCR,
    )


@validate_params(
    {
        "data_home": [str, os.PathLike, None],
        "model": [str, os.PathLike],
        "layer": [Interval(Integral, 1, None, closed="left")],
        "n_texts": [Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "download_if_missing": ["boolean"],
        "verbose": ["verbose"],
        "wikipedia": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def fetch_text_activations(
    data_home=None,
    *,
    model="smollm2-135m",
    layer=15,
    n_texts=None,
    batch_size=32,
    download_if_missing=True,
    verbose=0,
    wikipedia=False,
):
    """Token activations of a labelled English corpus (news, Usenet, reviews), cached.

    The corpus is built from files shipped in the installed gensim wheel (read without
    importing gensim): 4,909 sentences or chunks, about 130k tokens for SmolLM2. The
    first call extracts the activations with :func:`extract_activations` (about two
    minutes for the full corpus on two CPU cores) and writes them under
    ``data_home/text_activations/<model>-L<layer>-<corpus version>``; later calls only
    read that folder (npy, npz and json, no pickle). Nothing is downloaded.

    Parameters
    ----------
    data_home : str, os.PathLike or None, default=None
        Cache folder; see :func:`get_data_home`.
    model : str or os.PathLike, default="smollm2-135m"
        ``"smollm2-135m"`` or a local directory holding a Hugging Face causal LM.
    layer : int, default=15
        Block after which the residual stream is read.
    n_texts : int or None, default=None
        Keep only the first ``n_texts`` texts of every source (cached separately), for
        tests and quick looks; None keeps the whole corpus.
    batch_size : int, default=32
        Texts per forward pass while extracting.
    download_if_missing : bool, default=True
        Named after scikit-learn's fetchers. There is no download: when the cache is
        missing, True extracts it from the installed wheels and False raises OSError.
    verbose : int, default=0
        0 prints nothing; 1 or more draws a progress bar (tokens per second and time
        left) on stderr while the first call extracts, and transformers' own bars when
        the model is loaded. A call that reads the cache draws nothing.
    wikipedia : bool, default=False
        Also take the 106 English Wikipedia articles of the gensim wheel's sample
        (``enwiki-...-shortened.bz2``, markup removed by gensim's ``filter_wiki``; gensim
        is imported for this only): 19,645 more texts, about 420k words, source
        ``"wikipedia"`` with the article title as ``topic``. Cached in its own folder
        (``...-wiki``); the first extraction takes several times longer than the
        default corpus. For training sets where wide dictionaries need more tokens.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Per row (token): ``X`` (n_tokens, d_model) float32, ``tokens``, ``doc_index``
        (into ``texts``), ``position`` (BOS = 0) and the boolean labels
        ``word_start``, ``capitalized``, ``has_digit``, ``punct``. Per text:
        ``texts``, ``source`` ("news", "usenet", "review", "wikipedia"), ``topic`` ("atheism",
        "space", the article title for wikipedia, else None), ``sentiment`` ("pos", "neg", or None outside
        reviews) and ``group`` (the original document). Also ``n_dropped`` (massive-norm
        rows left out), ``model``, ``layer``, ``corpus_version`` and ``DESCR``.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_hsae.datasets import fetch_text_activations
    >>> data = fetch_text_activations(tempfile.mkdtemp(), layer=6, n_texts=2)
    >>> data.X.shape[1], len(data.texts), sorted(set(data.source))
    (576, 6, ['news', 'review', 'usenet'])
    >>> data.topic[data.source == "usenet"].tolist()
    ['atheism', 'space']
    """
    folder = Path(get_data_home(data_home)) / "text_activations" / _cache_name(str(model), layer, n_texts,
                                                                              wikipedia)
    if not (folder / "meta.json").is_file():
        if not download_if_missing:
            raise OSError(f"No cached activations at {folder}, and download_if_missing=False.")
        _write_cache(folder, str(model), layer, n_texts, batch_size, verbose, wikipedia)
    return _read_cache(folder)
