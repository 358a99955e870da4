"""The one durable writer: a failed write leaves the old file and no temporary file behind."""

from __future__ import annotations

import errno
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from lorakit import fileio
from lorakit.fileio import atomic_write, json_safe


def test_atomic_write_keeps_old_content_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write(target, "old")

    def failing(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio, "write_file", failing)
    with pytest.raises(OSError):
        atomic_write(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_atomic_write_with_a_writer_function_and_its_temporary_name(tmp_path):
    target = tmp_path / "adapter_model.safetensors"
    seen = []

    def write(path):
        seen.append(path)
        save_file({"w": torch.ones(2)}, path)

    atomic_write(target, write)
    assert torch.equal(load_file(target)["w"], torch.ones(2))
    tmp_name = seen[0].rsplit("/", 1)[-1]
    assert tmp_name.startswith(".adapter_model.safetensors.") and tmp_name.endswith(fileio.TMP_SUFFIX)

    def broken(path):
        raise ValueError("cannot serialise")

    with pytest.raises(ValueError):
        atomic_write(target, broken)
    assert [p.name for p in tmp_path.iterdir()] == ["adapter_model.safetensors"]


def test_json_safe_makes_nested_non_finite_numbers_null():
    record = {"loss": math.nan, "steps": [1.0, math.inf, (2, -math.inf)], "name": "x"}
    assert json.dumps(json_safe(record), allow_nan=False) == \
        '{"loss": null, "steps": [1.0, null, [2, null]], "name": "x"}'
