"""_training: the trainer and the epoch loop, driven without any estimator."""

import numpy as np
import pytest
import torch

from sklearn_hsae._config import FlatConfig, TrainConfig
from sklearn_hsae._models import FlatSAE
from sklearn_hsae._training import DivergenceError, Trainer, learning_rate_at
from sklearn_hsae._training.checkpoint import atomic_write, read_checkpoint
from sklearn_hsae._training.loop import FitLoop, LoopConfig

X = np.random.RandomState(0).randn(300, 8)


def make_trainer(seed=0, lr=1e-2):
    model = FlatSAE(FlatConfig(n_features=8, n_latents=16, k=3), dtype=torch.float64)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    model.init_from_data(torch.from_numpy(X[:100]))
    return Trainer(model, TrainConfig(lr, 30, 3))


def prepare(rows):
    return torch.from_numpy(np.ascontiguousarray(rows))


def test_run_takes_every_step_and_returns_the_curve():
    loop = FitLoop(LoopConfig(max_iter=3, batch_size=32), X, np.random.RandomState(0), prepare)
    trainer = make_trainer()
    curve = loop.run(trainer, extra={})
    assert len(curve) == 3 and trainer.step_count == 3 * 10  # ceil(300 / 32) = 10
    assert curve[-1] < curve[0]
    assert len(loop.l0) == 1 and loop.l0[0] == pytest.approx(3.0)  # TopK: exactly k per row


def test_resume_from_a_checkpoint_is_bitwise(tmp_path):
    config = LoopConfig(max_iter=3, batch_size=32, checkpoint_dir=tmp_path, identity={"params": {"a": 1}})
    full = FitLoop(LoopConfig(max_iter=3, batch_size=32), X, np.random.RandomState(0), prepare)
    reference = make_trainer()
    full.run(reference, extra={})

    first = FitLoop(LoopConfig(**{**config.__dict__, "max_iter": 1}), X, np.random.RandomState(0), prepare)
    first.run(make_trainer(), extra={"scale": 2.5})
    resumed = FitLoop(config, X, np.random.RandomState(0), prepare)
    extra = resumed.resume(lambda: make_trainer(seed=99))  # weights come from the file
    assert extra == {"scale": 2.5} and resumed.epoch == 1
    resumed.run(resumed.trainer, extra)
    assert resumed.loss_curve == full.loss_curve
    for name, value in reference.model.state_dict().items():
        assert torch.equal(value, resumed.trainer.model.state_dict()[name]), name


def test_a_checkpoint_of_another_fit_is_refused(tmp_path):
    FitLoop(LoopConfig(1, 64, tmp_path, identity={"params": {"k": 3}}), X, np.random.RandomState(0),
            prepare).run(make_trainer(), {})
    other = FitLoop(LoopConfig(1, 64, tmp_path, identity={"params": {"k": 4}}), X,
                    np.random.RandomState(0), prepare)
    with pytest.raises(ValueError, match=r"holds a checkpoint of another fit \(its params differ"):
        other.resume(make_trainer)


def test_divergence_names_the_step_and_the_hint():
    loop = FitLoop(LoopConfig(1, 32, divergence_hint="try plan B"), X, np.random.RandomState(0),
                   lambda rows: prepare(rows) * float("nan"))
    with pytest.raises(DivergenceError, match=r"diverged at step 1 \(epoch 1\).*learning_rate=0.01.*try plan B"):
        loop.run(make_trainer(), {})


def test_learning_rate_schedule():
    config = TrainConfig(1.0, 110, 10)
    assert learning_rate_at(0, config) == pytest.approx(0.1)
    assert learning_rate_at(9, config) == pytest.approx(1.0)
    assert learning_rate_at(60, config) == pytest.approx(0.1 + 0.9 * 0.5)  # half way down the cosine
    assert learning_rate_at(110, config) == pytest.approx(0.1)
    assert learning_rate_at(10**6, TrainConfig(1.0, None, 10)) == 1.0  # streaming: constant


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def broken(path):
        open(path, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    atomic_write(target, lambda p: open(p, "w").write("new"))
    assert target.read_text() == "new"
    assert read_checkpoint(tmp_path) is None  # no latest.json: nothing to resume


@pytest.mark.parametrize("fused", [True, False])
def test_adam_matches_torch_bit_for_bit(fused, monkeypatch):
    """CPU tensors take torch's fused kernel (``fused=True``); without it (an old torch,
    another device) the single-tensor path, torch's default."""
    from sklearn_hsae._training import adam
    from sklearn_hsae._training.adam import Adam

    if not fused:
        monkeypatch.setattr(adam, "_fusable", lambda param: False)
    g = torch.Generator().manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(5, 3, generator=g)), torch.nn.Parameter(torch.randn(4, generator=g)),
            torch.nn.Parameter(torch.randn(3, generator=g, dtype=torch.float64))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    mine = Adam(ours, 3e-3, (0.9, 0.99), 1e-8)
    ref = torch.optim.Adam(theirs, lr=3e-3, betas=(0.9, 0.99), eps=1e-8, fused=fused)
    for step in range(25):
        grads = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in ours]
        for p, q, gr in zip(ours, theirs, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        if step == 7:
            ours[1].grad = theirs[1].grad = None  # a parameter without gradient is left alone
        mine.param_groups[0]["lr"] = ref.param_groups[0]["lr"] = 3e-3 / (1 + step)
        mine.step()
        ref.step()
        for p, q in zip(ours, theirs):
            assert torch.equal(p, q), step
    assert mine.state[1]["step"].item() == 24 and mine.state[1]["step"].device.type == "cpu"
    restored = Adam(ours, 1.0)
    restored.load_state_dict(ref.state_dict())  # torch's own state dict loads too
    assert restored.state[0]["step"].item() == 25 and restored.state[1]["step"].item() == 24
    assert torch.equal(restored.state[0]["exp_avg_sq"], ref.state[theirs[0]]["exp_avg_sq"])
    with pytest.raises(ValueError, match=r"parameter 1 has shape \(4,\), the parameter \(3,\)"):
        Adam([ours[0], torch.nn.Parameter(torch.zeros(3)), ours[2]], 1.0).load_state_dict(ref.state_dict())


def test_adam_groups_match_torch_param_groups_bit_for_bit():
    """A rate per group (a tree's levels), as torch.optim.Adam's param groups."""
    from sklearn_hsae._training.adam import Adam

    g = torch.Generator().manual_seed(1)
    ours = [torch.nn.Parameter(torch.randn(6, 2, generator=g)) for _ in range(3)]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    mine = Adam([[ours[0]], ours[1:]], [1e-2, 1e-3])
    ref = torch.optim.Adam([{"params": [theirs[0]], "lr": 1e-2}, {"params": theirs[1:], "lr": 1e-3}],
                           fused=True)
    assert [group["params"] for group in mine.param_groups] == [[0], [1, 2]]
    for _ in range(10):
        for p, q in zip(ours, theirs):
            p.grad = q.grad = torch.randn(p.shape, generator=g)
        mine.step()
        ref.step()
    assert all(torch.equal(p, q) for p, q in zip(ours, theirs))
    # Moments are per parameter: a state saved under one group restores into two.
    one = Adam(ours, 1e-3)
    one.load_state_dict(mine.state_dict())
    two = Adam([[ours[0]], ours[1:]], [1e-2, 1e-3])
    two.load_state_dict(one.state_dict())
    assert torch.equal(two.state[2]["exp_avg"], mine.state[2]["exp_avg"])
    assert [group["lr"] for group in two.param_groups] == [1e-2, 1e-3]  # its own rates
    with pytest.raises(ValueError, match="2 learning rates for 1 parameter groups"):
        Adam(ours, [1e-2, 1e-3])


def test_threads_for_is_scoped():
    from sklearn_hsae._training import threads_for

    before = torch.get_num_threads()
    with threads_for(10.0):
        assert torch.get_num_threads() == 1  # a tiny step runs on one thread
    assert torch.get_num_threads() == before
    with threads_for(1e12):
        assert torch.get_num_threads() == before  # large steps keep torch's setting


@pytest.mark.parametrize("clip", [1e-3, 1e6, "exact"])
def test_clipping_matches_clip_grad_norm_bit_for_bit(clip):
    """The trainer scales gradients only where torch's clip_grad_norm_ would not multiply
    by 1: the same norm and the same gradients, bit for bit, clipped or not."""
    trainer = make_trainer()
    group = trainer.clip_groups[0]
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in group]
    reference = [torch.nn.Parameter(p.detach().clone()) for p in group]
    for p, q, gr in zip(group, reference, grads):
        p.grad, q.grad = gr.clone(), gr.clone()
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(gr) for gr in grads]))
    max_norm = float(total) if clip == "exact" else clip  # at the norm itself: a factor just below 1
    trainer.config = TrainConfig(1e-2, 30, 3, grad_clip=max_norm)
    ours = trainer._clip(group)
    theirs = torch.nn.utils.clip_grad_norm_(reference, max_norm)
    assert torch.equal(ours, theirs)
    for p, q in zip(group, reference):
        assert torch.equal(p.grad, q.grad)
    after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in group]))
    if clip == 1e-3:
        assert float(after) == pytest.approx(1e-3, rel=1e-6)
    elif clip == 1e6:
        assert all(torch.equal(p.grad, gr) for p, gr in zip(group, grads))  # untouched
