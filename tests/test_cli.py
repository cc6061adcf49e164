"""The command line: fit and report from files, no pickle; help and progress."""

import argparse
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from sklearn_hsae.__main__ import _parser, main
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
    captured = capsys.readouterr()
    out = captured.out
    fvu = float(re.search(r"held-out FVU (\d\.\d+)", out).group(1))
    assert 0 < fvu < 1
    parents, children = map(int, re.search(r"parents (\d+)%, children (\d+)%", out).groups())
    assert 0 <= parents <= 100 and 0 <= children <= 100
    assert out.count("true parent ") == 3 and "flat TopK SAE of the same width (216, k=6)" in out
    # Every stage announced before it runs and timed after; the fits draw bars by default.
    stages = re.findall(r"^== (.+) \.\.\.$", out, re.M)
    assert stages == ["data", "fit", "evaluation", "flat SAE of the same width"]
    timed = re.findall(r"^   (.+): (\d+\.\d) s$", out, re.M)
    assert [name for name, _ in timed] == stages
    assert out.index("== fit ...") < out.index("H-SAE fit:") < out.index("   fit: ")
    assert "fit:" in captured.err and "step/s" in captured.err  # the estimators' tqdm bar


def subcommands():
    [action] = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return action


def test_every_option_says_what_it_does_and_its_default():
    commands = subcommands()
    assert set(commands.choices) == {"demo", "extract", "fit", "report"}
    assert all(choice.help for choice in commands._choices_actions)  # the top-level listing
    for name, parser in commands.choices.items():
        assert len(parser.description) > 60, name
        options = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
        assert {"--verbose", "--quiet"} <= {s for a in options for s in a.option_strings}
        for action in options:
            where = (name, action.dest, action.help)
            assert action.help and len(action.help) > 20, where
            if action.required:
                assert action.help.endswith("(required)"), where
            elif isinstance(action, argparse._StoreTrueAction):
                assert action.help.endswith("(default: off)"), where
            elif action.default is None:
                assert re.search(r"\(default: [^)]+\)$", action.help), where
            else:
                assert action.help.endswith(f"(default: {action.default})"), where


@pytest.mark.parametrize("command", ["demo", "extract", "fit", "report"])
def test_help_of_every_command_runs_and_shows_every_default(command):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}  # this checkout, not another
    run = subprocess.run([sys.executable, "-m", "sklearn_hsae", command, "--help"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    squeezed = "".join(run.stdout.split())  # --help wraps lines anywhere, hyphens included
    parser = subcommands().choices[command]
    assert "".join(parser.description.split()) in squeezed
    for action in parser._actions:
        for flag in action.option_strings:
            assert flag in run.stdout
        assert "".join(action.help.split()) in squeezed, action.dest


def test_progress_by_default_and_quiet_silences_it(activations, tmp_path, capfd):
    model, page = tmp_path / "model", tmp_path / "page.html"
    assert main(["fit", str(activations), "--out", str(model), "--n-parents", "6",
                 "--n-children", "3", "--subspace-dim", "2", "--k", "2", "--max-iter", "2",
                 "--batch-size", "512"]) == 0
    err = capfd.readouterr().err
    assert "fit:" in err and "/12 [" in err  # 2 epochs x 6 steps of 512 rows
    report = ["report", str(model), "--activations", str(activations), "--out", str(page),
              "--n-shown-parents", "2"]
    assert main(report + ["--quiet"]) == 0
    assert capfd.readouterr().err == ""
    assert main(report) == 0
    assert "report:" in capfd.readouterr().err
    with pytest.raises(SystemExit):  # one or the other
        main(report + ["--quiet", "--verbose", "2"])
    assert "argument --verbose: not allowed with argument --quiet" in capfd.readouterr().err
