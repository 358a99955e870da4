"""Durable file writes: the one ``atomic_write`` every file lorakit writes goes through, and ``json_safe``.

A write goes to a temporary file ``.NAME.XXXXXXXX.tmp`` beside its target, is flushed to disk (fsync), renamed
over the target (atomic on POSIX) and the folder fsynced: a reader, or a run killed at any moment, sees the
old file or the new one, never a torn one; a failed write removes its temporary file and leaves the old file.
This module imports no other lorakit module.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["TMP_SUFFIX", "atomic_write", "fsync_dir", "json_safe", "write_file"]

TMP_SUFFIX = ".tmp"  # temporary files are named f".{target name}.{random}{TMP_SUFFIX}"


def write_file(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it: the one place lorakit's bytes reach the disk."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a filesystem that refuses is left alone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes | str | Callable[[str], Any]) -> None:
    """Replace ``path`` with ``data`` atomically (temporary file in the same folder, fsync, rename).

    ``data``: the bytes, a text (written as UTF-8), or a function that writes the file whose path it is given
    (e.g. ``lambda p: safetensors.torch.save_file(tensors, p)``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        if callable(data):
            data(tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        else:
            write_file(tmp, data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN/inf float (in nested dicts, lists and tuples) as ``None``: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
