"""A small labelled English corpus from the gensim wheel's test data, read without gensim.

Three sources, each with honest labels that come with the data:

* ``lee_background.cor``: 299 ABC news articles (latin-1, one per line) -> source "news".
* ``mini_newsgroup``: 200 20-Newsgroups posts, alt.atheism / sci.space 100 each, a zlib-
  compressed Python 2 pickle of an sklearn Bunch -> source "usenet", topic "atheism"/"space".
  Headers (which name the newsgroup), quoted lines, attributions, signatures and e-mail
  addresses are stripped, as ``fetch_20newsgroups(remove=...)`` does.
* ``enwiki-...-shortened.bz2`` (only with ``wikipedia=True``): the English Wikipedia
  articles of the sample (namespace 0, redirects skipped), markup removed by gensim's own
  ``filter_wiki`` (gensim is imported for this source only) -> source "wikipedia",
  topic the article title. Headings, table rows, list markers and infobox fields are
  dropped with the markup.
* ``pang_lee_polarity.cor``: 200 movie-review sentences, ``__label__pos``/``__label__neg``,
  cp1252 -> source "review", sentiment "pos"/"neg". Lower-cased and pre-tokenised
  (" , "), so the source is trivially visible in these texts.

Documents are split into sentences, and long sentences into chunks of at most
``_MAX_WORDS`` words, so no text needs truncating.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import pickle
import re
import unicodedata
import zlib
from pathlib import Path

import numpy as np

CORPUS_REVISION = 1  # keys the cache: bump it when texts, labels or the extraction recipe change
_MAX_WORDS = 48
_MIN_WORDS = 4  # shorter fragments (signatures, "Thanks,") are dropped from news and usenet
SOURCES = ("news", "usenet", "review", "wikipedia")
WIKIPEDIA_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_WIKI_HEADING = re.compile(r"^\s*={2,}.*={2,}\s*$", re.MULTILINE)
_WIKI_EMPHASIS = re.compile(r"'{2,}")  # bold / italic quotes filter_wiki leaves
_WIKI_RESIDUE = re.compile(r"^\s*([|!*#:;]|thumb\||\w+\s*=)", re.MULTILINE)  # table rows, lists, infobox fields

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_PARAGRAPH = re.compile(r"\n\s*\n")
_EMAIL = re.compile(r"\S+@\S+")
_ATTRIBUTION = re.compile(r"(writes|wrote|says)\s*:\s*$|^\s*In article\b", re.IGNORECASE)
_QUOTE = re.compile(r"^\s*(>|\||:|[A-Za-z]{1,3}>)")
_HEADER_LINE = re.compile(  # forwarded headers inside a body would leak the newsgroup too
    r"^\s*(from|to|subject|newsgroups|date|message-id|organization|lines|path|references|"
    r"sender|reply-to|distribution|nntp-posting-host|followup-to|keywords|summary|x-[\w-]+):",
    re.IGNORECASE,
)
_RULE = re.compile(r"^[\W_]+$")  # lines of only dashes, stars, equals...


def gensim_test_data() -> Path:
    """The ``gensim/test/test_data`` folder of the installed gensim wheel (not imported)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            'The text corpus is read from the gensim wheel\'s test data: pip install "sklearn-hsae[llm]".'
        )
    return Path(spec.submodule_search_locations[0]) / "test" / "test_data"


def corpus_version() -> str:
    """Names the texts: the gensim release that ships them and our own revision."""
    return f"gensim{importlib.metadata.version('gensim')}-r{CORPUS_REVISION}"


def split_sentences(text: str) -> list[str]:
    """Sentences of every paragraph of ``text`` (whitespace collapsed), long ones cut into
    chunks of at most ``_MAX_WORDS`` words. Paragraphs are separated by empty lines."""
    out = []
    for paragraph in _PARAGRAPH.split(text):
        for sentence in _SENTENCE_END.split(" ".join(paragraph.split())):
            words = sentence.split()
            for start in range(0, len(words), _MAX_WORDS):
                out.append(" ".join(words[start : start + _MAX_WORDS]))
    return [s for s in out if s]


def strip_usenet(post: str) -> str:
    """The body of a Usenet post without header, quotes, attributions, signature, e-mails.

    The RFC 822 header ends at the first empty line; header lines of forwarded posts
    inside the body go too. The signature starts at a line that is ``--`` alone.
    Paragraphs stay apart by an empty line.
    """
    _, _, body = post.partition("\n\n")
    kept = []
    for line in body.splitlines():
        if line.rstrip() == "--":
            break
        stripped = line.strip()
        if (
            _QUOTE.match(line)
            or _ATTRIBUTION.search(line)
            or _HEADER_LINE.match(line)
            or (stripped and _RULE.match(stripped))
        ):
            continue
        kept.append(_EMAIL.sub("", line))
    return "\n".join(kept)


class _BunchUnpickler(pickle.Unpickler):
    """Only what the py2 pickle of a Bunch of lists and ndarrays needs; nothing else."""

    def find_class(self, module, name):
        import copyreg

        allowed = {
            ("copy_reg", "_reconstructor"): copyreg._reconstructor,
            ("__builtin__", "dict"): dict,
            ("sklearn.datasets.base", "Bunch"): dict,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): np.zeros(0).__reduce__()[0],
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"mini_newsgroup refers to {module}.{name}, not allowed.")
        return allowed[(module, name)]


def _newsgroup_posts(folder: Path) -> list[tuple[str, str]]:
    """(post, "atheism" | "space") for the 200 posts of ``mini_newsgroup``."""
    raw = zlib.decompress((folder / "mini_newsgroup").read_bytes())
    bunch = _BunchUnpickler(io.BytesIO(raw), encoding="latin1").load()
    names = [str(n).split(".")[-1] for n in bunch["target_names"]]  # alt.atheism -> atheism
    return [(post, names[t]) for post, t in zip(bunch["data"], bunch["target"])]


def wikipedia_articles(folder: Path) -> list[tuple[str, str]]:
    """(title, plain text) of every article of the wheel's Wikipedia sample."""
    import bz2

    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    out = []
    with bz2.open(folder / WIKIPEDIA_FILE) as f:
        for title, text, _ in extract_pages(f, filter_namespaces=("0",)):
            if not text or text.lstrip().lower().startswith("#redirect"):
                continue
            plain = _WIKI_EMPHASIS.sub("", filter_wiki(text))
            plain = _WIKI_HEADING.sub("\n", plain)
            lines = [line for line in plain.splitlines() if not _WIKI_RESIDUE.match(line)]
            plain = "\n".join(lines).strip()
            if plain:
                out.append((title, plain))
    return out


def _documents(folder: Path, wikipedia: bool = False) -> list[tuple[str, str, str | None, str | None]]:
    """(text, source, topic, sentiment) for every document of the sources."""
    docs = []
    with open(folder / "lee_background.cor", encoding="latin-1") as f:
        docs += [(line, "news", None, None) for line in f if line.strip()]
    docs += [(strip_usenet(p), "usenet", topic, None) for p, topic in _newsgroup_posts(folder)]
    with open(folder / "pang_lee_polarity.cor", encoding="cp1252") as f:
        for line in f:
            label, _, sentence = line.strip().partition(" ")
            if sentence:
                docs.append((sentence, "review", None, label.removeprefix("__label__")))
    if wikipedia:
        docs += [(text, "wikipedia", title, None) for title, text in wikipedia_articles(folder)]
    return docs


def read_corpus(n_texts: int | None = None, wikipedia: bool = False) -> dict:
    """Texts (sentences or chunks) with their labels, in a fixed order; ``wikipedia``
    appends the Wikipedia sample's articles (source "wikipedia", topic = title).

    ``n_texts`` keeps the first ``n_texts`` texts of every source (for tests and quick
    looks). Returns a dict of equally long lists: ``texts``, ``source``, ``topic`` and
    ``sentiment`` (None where not applicable) and ``group``, the index of the original
    document (article, post, review) each text was cut from.
    """
    columns = {key: [] for key in ("texts", "source", "topic", "sentiment", "group")}
    taken = dict.fromkeys(SOURCES, 0)
    for group, (text, source, topic, sentiment) in enumerate(_documents(gensim_test_data(), wikipedia)):
        pieces = [text.strip()] if source == "review" else split_sentences(text)
        for piece in pieces:
            if source != "review" and len(piece.split()) < _MIN_WORDS:
                continue
            if n_texts is not None and taken[source] >= n_texts:
                break
            taken[source] += 1
            for key, value in zip(columns, (piece, source, topic, sentiment, group)):
                columns[key].append(value)
    return columns


def token_labels(tokens, position) -> dict[str, np.ndarray]:
    """Labels read off each token string (exact, no tagger involved).

    * ``word_start``: the token begins a word: whitespace then a letter or digit, or a
      letter or digit at the text's first position (1, after BOS).
    * ``capitalized``: its first non-space character is an upper-case letter.
    * ``has_digit``: it contains a digit.
    * ``punct``: it has visible characters and all of them are Unicode punctuation (P*).
    """
    n = len(tokens)
    out = {key: np.zeros(n, dtype=bool) for key in ("word_start", "capitalized", "has_digit", "punct")}
    for i, (token, pos) in enumerate(zip(tokens, position)):
        body = token.lstrip()
        led = len(body) < len(token) or pos == 1
        out["word_start"][i] = led and body[:1].isalnum()
        out["capitalized"][i] = body[:1].isupper()
        out["has_digit"][i] = any(c.isdigit() for c in token)
        out["punct"][i] = bool(body) and all(unicodedata.category(c).startswith("P") for c in body.strip())
    return out
