"""The command line: fit and report from files, no pickle."""

import numpy as np
import pytest

from sklearn_hsae.__main__ import main
from sklearn_hsae.datasets import make_hierarchical_activations
from sklearn_hsae.io import load


@pytest.fixture
def activations(tmp_path):
    X, *_ = make_hierarchical_activations(n_samples=3000, n_features=16, n_parents=6, n_children=3,
                                          subspace_dim=2, n_active=2, random_state=0)
    out = tmp_path / "acts"
    out.mkdir()
    np.save(out / "X.npy", X.astype(np.float32))
    np.save(out / "tokens.npy", np.array([f"<t{i % 50}>&" for i in range(3000)]))
    np.save(out / "doc_index.npy", np.arange(3000) // 30)
    np.save(out / "position.npy", np.arange(3000) % 30)
    return out


def test_fit_then_report(activations, tmp_path, capsys):
    model = tmp_path / "model"
    assert main(["fit", str(activations), "--out", str(model), "--n-parents", "6", "--n-children",
                 "3", "--subspace-dim", "2", "--k", "2", "--max-iter", "3", "--batch-size", "256",
                 "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert "model saved to" in out and "FVU" in out
    est = load(model)
    assert est.n_parents == 6 and est.n_steps_ == 3 * 12
    X = np.load(activations / "X.npy")
    fvu = float(out.split("FVU ")[1].split(",")[0])
    assert fvu == pytest.approx(1 - est.score(X), abs=1e-4)
    page = tmp_path / "report.html"
    assert main(["report", str(model), "--activations", str(activations), "--out", str(page),
                 "--n-shown-parents", "3"]) == 0
    html = page.read_text()
    assert "&lt;t" in html and "<t1>" not in html  # tokens escaped
    assert (tmp_path / "report_density.png").exists()


def test_cli_errors(tmp_path):
    with pytest.raises(SystemExit, match="expected a .npy file"):
        main(["fit", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "m")])
    (tmp_path / "acts").mkdir()
    np.save(tmp_path / "acts" / "X.npy", np.zeros((4, 3)))
    with pytest.raises(SystemExit, match="lacks tokens.npy"):
        main(["report", str(tmp_path), "--activations", str(tmp_path / "acts")])


def test_synthetic_demo_prints_fvu_and_recovery(capsys):
    import re

    assert main(["demo", "--synthetic", "--max-iter", "2"]) == 0
    out = capsys.readouterr().out
    fvu = float(re.search(r"held-out FVU (\d\.\d+)", out).group(1))
    assert 0 < fvu < 1
    parents, children = map(int, re.search(r"parents (\d+)%, children (\d+)%", out).groups())
    assert 0 <= parents <= 100 and 0 <= children <= 100
    assert out.count("true parent ") == 3 and "flat TopK SAE of the same width (216, k=6)" in out
