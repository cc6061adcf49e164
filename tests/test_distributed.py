"""Data-parallel fit under torchrun (gloo on CPU): identical ranks, same quality."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sklearn_hsae import HierarchicalSparseAutoencoder
from sklearn_hsae.datasets import make_hierarchical_activations

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PARAMS = {
    "routed": dict(n_parents=24, n_children=4, subspace_dim=3, k=3, beta=2.0),
    "tree": dict(architecture="tree", n_parents=24, n_children=4, k=3, reparent_every=50),
    "nested": dict(architecture="nested", n_parents=24, n_children=4, k=3),
}

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import torch.distributed as dist
    sys.path.insert(0, {root!r})
    from sklearn_hsae import HierarchicalSparseAutoencoder

    dist.init_process_group("gloo")
    X = np.load({data!r})
    est = HierarchicalSparseAutoencoder(**{params!r}, max_iter=8, batch_size=512, random_state=0)
    est.fit(X)
    rank = dist.get_rank()
    np.savez({out!r} + f"/rank{{rank}}.npz", **est._model_state)
    json.dump({{"score": est.score(X), "steps": est.n_steps_}}, open({out!r} + f"/rank{{rank}}.json", "w"))
    dist.destroy_process_group()
""")


@pytest.mark.slow
@pytest.mark.parametrize("architecture", sorted(PARAMS))
def test_two_gloo_ranks_match_each_other_and_a_single_process_fit(architecture, tmp_path):
    X = make_hierarchical_activations(n_samples=8000, random_state=0)[0]
    np.save(tmp_path / "X.npy", X)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(root=ROOT, data=str(tmp_path / "X.npy"),
                                    params=PARAMS[architecture], out=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in (0, 1)]
    for name in ranks[0].files:  # every rank ends with the same weights and buffers
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    single = HierarchicalSparseAutoencoder(**PARAMS[architecture], max_iter=8, batch_size=512,
                                           random_state=0).fit(X)
    # 4000 rows a rank at 256 a step, as 8000 rows at 512 a step: 16 steps an epoch.
    assert reports[0]["steps"] == single.n_steps_ == 8 * 16
    gap = abs((1 - reports[0]["score"]) - (1 - single.score(X)))
    print(f"{architecture}: FVU 2 ranks {1 - reports[0]['score']:.4f}, 1 process {1 - single.score(X):.4f}")
    assert gap < 0.01
