"""Shared by the language-model tests: two small sets of topical texts, the gensim mark.

Tests marked slow load SmolLM2-135M from the installed wheel (~20 s, once per process:
``load_model`` caches it) and run only a few short texts through it.
"""

import importlib.util

import pytest

needs_gensim = pytest.mark.skipif(
    importlib.util.find_spec("gensim") is None, reason="the corpus comes from the gensim wheel"
)
SPACE = ["The shuttle reached orbit.", "Astronauts repaired the telescope.",
         "The rocket launched a satellite.", "NASA plans a mission to Mars.",
         "The probe sent images of Jupiter.", "Engineers tested the booster."]
FAITH = ["Faith needs no proof.", "He prayed in the church.", "The bible tells of God.",
         "Atheists reject belief in gods.", "The priest spoke about sin.",
         "Religion shapes moral values."]

