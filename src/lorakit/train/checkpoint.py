"""Checkpoints that survive SIGKILL: atomic directory writes, keep-last-K, resume and averaging.

Layout of one checkpoint, ``WORKDIR/checkpoints/step-000100/``:

``model.safetensors``
    the trainable tensors only (LoRA adapters + trained head under ``lora``/``head_only``; every
    parameter under ``full``), keyed by the model's parameter names.
``training_state.pt``
    optimizer, scheduler, grad-scaler and per-process torch RNG states; read with
    ``torch.load(weights_only=True)``.
``meta.json``
    step, loop state (best metric, early-stopping counter, Python RNG) and the byte size of each file.
    Written last: a checkpoint is complete when its meta.json parses and every size matches.

A checkpoint is first written into a hidden ``.tmp-step-...`` directory, every file fsynced, then the
directory is renamed into place (atomic on POSIX) and the parent fsynced. A crash at any moment
leaves either the previous checkpoints only, or those plus a complete new one; a leftover temp
directory is ignored and removed by the next run. A failed write (full disk) removes its temp
directory and raises ``CheckpointError``; the previous checkpoints are untouched.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write, fsync_dir, write_file

__all__ = [
    "CheckpointError", "CheckpointInfo", "save_checkpoint", "list_checkpoints", "latest_checkpoint",
    "load_model_state", "load_training_state", "average_checkpoints", "remove_stale", "read_meta",
    "tensor_bytes", "atomic_write",
]

MODEL_FILE, STATE_FILE, META_FILE = "model.safetensors", "training_state.pt", "meta.json"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(LorakitError, RuntimeError):
    """A checkpoint could not be written or read; the message says which and what is intact."""


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    path: Path
    meta: dict


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


# ------------------------------------------------------------------------------------------------------
# Low-level durable writes
# ------------------------------------------------------------------------------------------------------

# ``_write_file`` is looked up in this module when a checkpoint is written, so tests can make the disk fill up.
_write_file = write_file
_fsync_dir = fsync_dir


def tensor_bytes(state: dict[str, Tensor]) -> bytes:
    """``state`` as the bytes of a safetensors file (written through ``atomic_write``)."""
    # safetensors wants contiguous, unshared CPU tensors
    return st_save({k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()})


def torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------
# Save / list / load
# ------------------------------------------------------------------------------------------------------

def save_checkpoint(
    root: str | Path,
    step: int,
    model_state: dict[str, Tensor],
    training_state: dict[str, Any],
    meta: dict[str, Any],
    keep_last: int | None = None,
) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically; then drop all but the newest ``keep_last``.

    ``model_state``: name -> tensor (saved as safetensors); ``training_state``: tensors/numbers/lists
    (optimizer, scheduler, RNG; saved with torch.save); ``meta``: JSON-serialisable loop state.
    Returns the checkpoint's directory. Raises ``CheckpointError`` if anything cannot be written.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    previous = latest_checkpoint(root)
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        files = {MODEL_FILE: tensor_bytes(model_state), STATE_FILE: torch_bytes(training_state)}
        for name, data in files.items():
            _write_file(tmp / name, data)
        full_meta = dict(meta, step=int(step), format=FORMAT_VERSION,
                         files={name: len(data) for name, data in files.items()})
        _write_file(tmp / META_FILE, json.dumps(full_meta, indent=1).encode("utf-8"))
        _fsync_dir(tmp)
        if final.exists():  # same step written again (e.g. the end of a resumed run)
            trash = root / f".trash-{final.name}-{os.getpid()}"
            os.rename(final, trash)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(root)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = f"the previous checkpoint {previous.path} is intact" if previous else "no earlier checkpoint"
        raise CheckpointError(
            f"could not write checkpoint {final.name} in {root}: {err}; {kept}. Free disk space "
            "(or point --workdir elsewhere) and rerun with --resume."
        ) from err
    if keep_last is not None:
        for old in list_checkpoints(root)[:-keep_last]:
            _remove_dir(old.path)
    return final


def _remove_dir(path: Path) -> None:
    """Delete a checkpoint: first rename it out of the ``step-*`` namespace (atomic), then delete."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    try:
        os.rename(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def read_meta(path: Path) -> dict | None:
    """The meta of a complete checkpoint directory, or None when it is incomplete or damaged."""
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        for name, size in meta["files"].items():
            if (path / name).stat().st_size != size:
                return None
        return meta
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def list_checkpoints(root: str | Path) -> list[CheckpointInfo]:
    """Complete checkpoints under ``root``, oldest first; incomplete or foreign folders are skipped."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for child in root.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and child.is_dir():
            meta = read_meta(child)
            if meta is not None and meta.get("step") == int(m.group(1)):
                out.append(CheckpointInfo(int(m.group(1)), child, meta))
    return sorted(out, key=lambda c: c.step)


def latest_checkpoint(root: str | Path) -> CheckpointInfo | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def remove_stale(root: str | Path) -> None:
    """Delete temp/trash directories left by a killed run (never a complete checkpoint)."""
    root = Path(root)
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith((".tmp-", ".trash-")):
                shutil.rmtree(child, ignore_errors=True)


def load_model_state(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint directory's ``model.safetensors`` (or of a .safetensors file)."""
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    try:
        tensors = st_load(file.read_bytes())
        return {k: tensors[k] for k in sorted(tensors)}  # a fixed order: FSDP loads key by key, collectively
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot read model tensors from {file}: {err}") from err


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Optimizer/scheduler/RNG state of a checkpoint directory (``torch.load(weights_only=True)``)."""
    file = Path(path) / STATE_FILE
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as err:
        raise CheckpointError(f"cannot read training state from {file}: {err}") from err


def average_checkpoints(paths: list[str | Path]) -> dict[str, Tensor]:
    """Element-wise mean of the model tensors of several checkpoints (in float32, cast back).

    For LoRA this averages A and B separately (as for any weights); since the checkpoints come from
    the end of one run, mean(B) mean(A) stays close to the mean of the updates B A.
    """
    if not paths:
        raise CheckpointError("no checkpoints to average")
    states = [load_model_state(p) for p in paths]
    keys = set(states[0])
    for p, s in zip(paths[1:], states[1:], strict=False):
        if set(s) != keys:
            raise CheckpointError(f"checkpoint {p} holds other tensors than {paths[0]}; cannot average")
    out = {}
    for k in states[0]:
        ref = states[0][k]
        for p, s in zip(paths[1:], states[1:], strict=False):
            if s[k].shape != ref.shape:
                raise CheckpointError(f"tensor {k!r} has shape {tuple(s[k].shape)} in {p} but "
                                      f"{tuple(ref.shape)} in {paths[0]}; cannot average")
        if ref.is_floating_point():
            acc = torch.zeros(ref.shape, dtype=torch.float32)
            for s in states:
                acc += s[k].float()
            out[k] = (acc / len(states)).to(ref.dtype)
        else:
            out[k] = states[-1][k].clone()
    return out
