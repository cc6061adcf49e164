"""Checkpoints, exact resume, Ctrl-C and the divergence guard."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from sklearn_hsae import DivergenceError, HierarchicalSparseAutoencoder, SparseAutoencoder
from sklearn_hsae._training import Trainer
from sklearn_hsae._training.checkpoint import read_checkpoint
from sklearn_hsae.datasets import make_hierarchical_activations

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def X():
    return make_hierarchical_activations(n_samples=1200, n_features=16, n_parents=6, n_children=3,
                                         subspace_dim=2, n_active=2, random_state=0)[0]


ESTIMATORS = {
    "routed": lambda **kw: HierarchicalSparseAutoencoder(
        n_parents=6, n_children=3, subspace_dim=2, k=2, batch_size=100, random_state=0, **kw),
    "tree": lambda **kw: HierarchicalSparseAutoencoder(
        architecture="tree", n_parents=3, n_children=2, k=2, batch_size=100, reparent_every=7,
        random_state=0, **kw),
    # 36 steps: reallocations at steps 1, 3, 7, 11, 15 and the root reset at 18. Measured:
    # 3 dead children move at step 15 and one joins the root at 18, on either side of the
    # interruption at step 17.
    "nested": lambda **kw: HierarchicalSparseAutoencoder(
        architecture="nested", n_parents=2, n_children=16, k=1, batch_size=100, random_state=0,
        **kw),
    "batchtopk": lambda **kw: SparseAutoencoder(
        n_components=12, k=2, activation="batchtopk", batch_size=100, random_state=0, **kw),
}


def assert_same_weights(a, b):
    assert a._model_state.keys() == b._model_state.keys()
    for name, value in a._model_state.items():
        np.testing.assert_array_equal(value, b._model_state[name], err_msg=name)
    assert a.loss_curve_ == b.loss_curve_ and a.n_steps_ == b.n_steps_


def interrupt_at(monkeypatch, step):
    """Deliver a real SIGINT to this process during the given training step."""
    original = Trainer.step

    def step_then_signal(self, x):
        if self.step_count + 1 == step:
            signal.raise_signal(signal.SIGINT)  # arrives mid-step; fit defers it
        return original(self, x)

    monkeypatch.setattr(Trainer, "step", step_then_signal)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_interrupted_fit_resumes_bitwise(name, X, tmp_path, monkeypatch):
    make = ESTIMATORS[name]
    uninterrupted = make(max_iter=3).fit(X)
    with monkeypatch.context() as patch:
        interrupt_at(patch, 17)  # mid second epoch (12 steps per epoch)
        first = make(max_iter=3, checkpoint_dir=str(tmp_path), checkpoint_every=5)
        with pytest.raises(KeyboardInterrupt, match="after step 17"):
            first.fit(X)
    assert first.n_steps_ == 17  # the estimator keeps the finished step
    _, meta = read_checkpoint(tmp_path)
    assert (meta["epoch"], meta["batches_done"]) == (1, 5)
    resumed = make(max_iter=3, checkpoint_dir=str(tmp_path), verbose=0).fit(X)
    assert_same_weights(resumed, uninterrupted)
    again = make(max_iter=3, checkpoint_dir=str(tmp_path)).fit(X)  # finished: nothing to do
    assert_same_weights(again, uninterrupted)


def test_a_checkpoint_of_another_fit_is_refused(X, tmp_path):
    make = ESTIMATORS["routed"]
    make(max_iter=1, checkpoint_dir=str(tmp_path)).fit(X)
    with pytest.raises(ValueError, match="another fit .its params differ"):
        make(max_iter=2, checkpoint_dir=str(tmp_path)).fit(X)
    with pytest.raises(ValueError, match="another fit .its data differ"):
        make(max_iter=1, checkpoint_dir=str(tmp_path)).fit(X[::-1])


def test_checkpoints_are_atomic(X, tmp_path):
    ESTIMATORS["routed"](max_iter=1, checkpoint_dir=str(tmp_path)).fit(X)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["latest.json", "state-000000000012.json", "state-000000000012.safetensors"]
    # A crash while writing the next one leaves temporary files and the old pointer.
    (tmp_path / "state-000000000099.safetensors.tmp").write_bytes(b"partial")
    state, meta = read_checkpoint(tmp_path)
    assert state["step_count"] == 12 and meta["epoch"] == 1
    assert json.loads((tmp_path / "latest.json").read_text()) == {"stem": "state-000000000012"}
    (tmp_path / "state-000000000012.json").write_text("{broken")
    with pytest.raises(ValueError, match="unreadable"):
        read_checkpoint(tmp_path)


SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {root!r})
    from sklearn_hsae import HierarchicalSparseAutoencoder
    X = np.load({data!r})
    HierarchicalSparseAutoencoder(n_parents=6, n_children=3, subspace_dim=2, k=2, batch_size=100,
                                  random_state=0, max_iter={epochs}, checkpoint_dir={ckpt!r},
                                  checkpoint_every=4).fit(X)
""")


def test_sigint_to_a_fit_subprocess_then_resume(X, tmp_path):
    epochs = 60
    np.save(tmp_path / "X.npy", X)
    ckpt = tmp_path / "ckpt"
    script = SCRIPT.format(root=ROOT, data=str(tmp_path / "X.npy"), epochs=epochs, ckpt=str(ckpt))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (ckpt / "latest.json").exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode != 0 and "KeyboardInterrupt: fit interrupted after step" in err, err
    state, meta = read_checkpoint(ckpt)
    assert 0 < state["step_count"] < epochs * 12  # stopped mid-run
    make = ESTIMATORS["routed"]
    resumed = make(max_iter=epochs, checkpoint_dir=str(ckpt)).fit(X)
    assert_same_weights(resumed, make(max_iter=epochs).fit(X))


def test_divergence_stops_fit_and_keeps_the_last_finite_state(X):
    est = HierarchicalSparseAutoencoder(n_parents=6, n_children=3, subspace_dim=2, k=2,
                                        batch_size=100, max_iter=3, learning_rate=1e30,
                                        normalize=None, random_state=0)
    with pytest.raises(DivergenceError, match=r"diverged at step (\d+) .epoch 1.*learning_rate=1e\+30") as info:
        est.fit(X * 1e10)
    failed_at = int(re.search(r"step (\d+)", str(info.value)).group(1))
    assert est.n_steps_ == failed_at - 1
    assert all(np.isfinite(v).all() for v in est._model_state.values() if v.dtype.kind == "f")
    assert np.isfinite(est.parent_components_).all()
