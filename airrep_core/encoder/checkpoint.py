"""Resumable training checkpoints in a local directory: safetensors + JSON, never pickle.

Layout of a checkpoint root::

    LATEST               text: the name of the last complete step checkpoint
    BEST                 text: the name of the best checkpoint (by validation LDS)
    step-000120/         encoder/ (AirRepEncoder.save), optimizer.safetensors, optimizer.json,
                         rng.safetensors, trainer_state.json
    best-000100/         encoder/, metrics.json

Each checkpoint is written to a temporary directory, renamed into place, and only then named by
its pointer file (replaced atomically), so a run killed at any moment leaves the previous
checkpoint intact. Older checkpoints of the same kind are deleted after the pointer moves.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

LATEST = "LATEST"
BEST = "BEST"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
RNG_TENSORS = "rng.safetensors"
TRAINER_STATE = "trainer_state.json"
ENCODER_DIR = "encoder"


class CheckpointRoot:
    """A directory of step and best checkpoints with atomic pointer files."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def latest(self) -> Path | None:
        """The last complete step checkpoint, or None."""
        return self._pointed(LATEST)

    def best(self) -> Path | None:
        """The best checkpoint, or None."""
        return self._pointed(BEST)

    def write(self, kind: str, step: int, fill: Callable[[Path], None]) -> Path:
        """Write checkpoint ``{kind}-{step:06d}`` (``kind``: ``step`` or ``best``).

        ``fill(directory)`` writes the files into a fresh temporary directory; then it is renamed
        into place, the pointer is moved to it and older checkpoints of ``kind`` are deleted.
        """
        pointers = {"step": LATEST, "best": BEST}
        if kind not in pointers:
            raise ValueError(f"kind={kind!r} is invalid; allowed: {sorted(pointers)}")
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{kind}-{step:06d}"
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=self.root))
        try:
            fill(tmp)
            target = self.root / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _write_text_atomic(self.root / pointers[kind], name)
        for old in self.root.glob(f"{kind}-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return target

    def _pointed(self, pointer: str) -> Path | None:
        path = self.root / pointer
        if not path.exists():
            return None
        target = self.root / path.read_text().strip()
        if not target.is_dir():
            raise ValueError(
                f"{path} names {target.name!r}, which is not a directory in {self.root}"
            )
        return target


def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Optimizer state: tensors to ``optimizer.safetensors``, everything else to JSON."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    save_file(tensors, str(directory / OPTIMIZER_TENSORS))
    meta = {"param_groups": state["param_groups"], "scalars": scalars}
    (directory / OPTIMIZER_JSON).write_text(json.dumps(meta))


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Restore ``save_optimizer``'s files into ``optimizer`` (built over the same parameters)."""
    try:
        meta = json.loads((directory / OPTIMIZER_JSON).read_text())
        tensors = load_file(str(directory / OPTIMIZER_TENSORS))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{directory}: unreadable optimizer state ({e})") from e
    per_param: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        param_id, key = name.split(".", 1)
        per_param.setdefault(int(param_id), {})[key] = tensor
    for param_id, values in meta["scalars"].items():
        per_param.setdefault(int(param_id), {}).update(values)
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in meta["param_groups"]
    ]
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


def capture_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The torch generator states that dropout on ``device`` draws from (CPU, and CUDA if used)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Undo to ``capture_rng_state(device)``'s state."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_rng(device: torch.device, directory: Path) -> None:
    save_file(capture_rng_state(device), str(directory / RNG_TENSORS))


def load_rng(device: torch.device, directory: Path) -> None:
    state = load_file(str(directory / RNG_TENSORS))
    if device.type == "cuda" and "cuda" not in state:
        raise ValueError(f"{directory / RNG_TENSORS}: no CUDA generator state (saved on CPU)")
    if device.type != "cuda":
        state.pop("cuda", None)
    restore_rng_state(state, device)


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable checkpoint file ({e})") from e


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
