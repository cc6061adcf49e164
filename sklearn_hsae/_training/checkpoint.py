"""Checkpoint files (safetensors for tensors, JSON for the rest; never pickle) and the
package's one atomic file writer.

A run is fully described by the model, the optimizer, the step count, the state of the
one numpy RandomState that orders the data (taken at the start of the current epoch)
and how many batches of that epoch are done; the models' own random draws are
counter-based, so nothing else is random.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

_LATEST = "latest.json"


def atomic_write(path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` to a temporary name beside ``path``, fsync, then rename into place:
    a crash at any moment leaves either the old file or the new one, never half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fingerprint(X) -> dict:
    """Shape, dtype and a hash of 64 evenly spaced rows: enough to tell data sets apart."""
    n = X.shape[0]
    digest = hashlib.sha256()
    for row in np.unique(np.linspace(0, n - 1, 64).astype(int)):
        digest.update(np.ascontiguousarray(X[row : row + 1]).tobytes())
    return {"shape": list(X.shape), "dtype": str(np.dtype(X.dtype)), "rows_sha256": digest.hexdigest()}


def rng_state(rng: np.random.RandomState) -> list:
    """A RandomState's state as JSON-able values."""
    name, keys, pos, has_gauss, cached = rng.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def set_rng_state(rng: np.random.RandomState, state: list) -> None:
    name, keys, pos, has_gauss, cached = state
    rng.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(directory, trainer, meta: dict) -> Path:
    """Write the trainer's model, optimizer and step plus ``meta`` (JSON-able) atomically.

    The files of a checkpoint are written under temporary names and renamed into place,
    then ``latest.json`` is replaced (an atomic rename) to point at them, so a crash at
    any moment leaves the previous checkpoint intact. Older checkpoints are removed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"state-{trainer.step_count:012d}"
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in trainer.model.state_dict().items()}
    optim = trainer.optimizer.state_dict()
    slots = {}
    for index, values in optim["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
            slots.setdefault(str(index), []).append(key)
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in optim["param_groups"]]
    document = {"step_count": trainer.step_count, "optimizer_slots": slots,
                "param_groups": groups, "meta": meta}
    atomic_write(directory / f"{stem}.safetensors", lambda p: save_file(tensors, p))
    atomic_write(directory / f"{stem}.json", lambda p: Path(p).write_text(json.dumps(document)))
    atomic_write(directory / _LATEST, lambda p: Path(p).write_text(json.dumps({"stem": stem})))
    for old in directory.glob("state-*"):
        if not old.name.startswith(stem):
            old.unlink(missing_ok=True)
    return directory / stem


def read_checkpoint(directory) -> tuple[dict, dict] | None:
    """The newest complete checkpoint as (trainer state for ``Trainer.load_state_dict``,
    meta), or None when the directory holds none."""
    directory = Path(directory)
    pointer = directory / _LATEST
    if not pointer.exists():
        return None
    try:
        stem = json.loads(pointer.read_text())["stem"]
        document = json.loads((directory / f"{stem}.json").read_text())
        tensors = load_file(str(directory / f"{stem}.safetensors"))
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"The checkpoint in {directory} is unreadable ({exc}); remove it to start over.") from exc
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    state = {
        int(index): {key: tensors[f"optimizer.{index}.{key}"] for key in keys}
        for index, keys in document["optimizer_slots"].items()
    }
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in document["param_groups"]]
    trainer_state = {
        "model": model,
        "optimizer": {"state": state, "param_groups": groups},
        "step_count": document["step_count"],
    }
    return trainer_state, document["meta"]
