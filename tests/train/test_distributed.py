"""Two processes on CPU (torchrun, gloo) give the same training as one process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lorakit.train.distributed import DistInfo, all_gather_objects, all_reduce_sum, broadcast_object, unwrap


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    if exe.exists():
        return [str(exe)]
    if shutil.which("torchrun"):
        return ["torchrun"]
    return [sys.executable, "-m", "torch.distributed.run"]


def _run(cmd: list[str], env: dict) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_single_process_helpers_are_no_ops():
    one = DistInfo(0, 1, 0, torch.device("cpu"))
    assert one.is_main and not one.enabled
    assert all_reduce_sum([1.5, 2.0], one) == [1.5, 2.0]
    assert all_gather_objects({"a": 1}, one) == [{"a": 1}]
    assert broadcast_object("x", one) == "x"


def test_more_processes_than_gpus_is_a_clear_error_and_cpu_always_works(monkeypatch):
    from lorakit.train import distributed as D

    # a machine with one GPU, seen from the second torchrun process (CI has none: the count is patched)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for preference in ("auto", "cuda"):
        with pytest.raises(RuntimeError, match=r"LOCAL_RANK 1, but only 1 CUDA device.*nproc_per_node 1.*'cpu'"):
            D.pick_device(preference, local_rank=1)
    assert D.pick_device("cpu", local_rank=1) == torch.device("cpu")


def test_unwrap_returns_the_model_under_a_module_wrapper_and_a_plain_model_as_it_is():
    model = torch.nn.Linear(3, 2)
    assert unwrap(model) is model
    assert unwrap(torch.nn.DataParallel(model)) is model  # on CPU it only holds the model, as DDP does
    holder = torch.nn.Module()
    holder.module = model  # a plain model with a child named "module" is not a wrapper
    assert unwrap(holder) is holder


def test_fsdp_shards_the_4bit_codes_and_matches_one_process():
    """QLoRA under FSDP2: each of 2 processes holds half of each layer's 4-bit codes; loss and LoRA gradients
    equal one process's (the script asserts both)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    _run(_torchrun() + ["--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                        str(Path(__file__).with_name("fsdp_nf4_probe.py"))], env)


@pytest.mark.parametrize("strategy, quantization", [("ddp", None), ("fsdp", None), ("fsdp", "nf4")])
def test_two_processes_match_one_process(tmp_path, kit, strategy, quantization):
    # on the CPU (gloo), also on a GPU machine: two processes need not have two GPUs. With nf4 (QLoRA), FSDP
    # shards the 4-bit codes (frozen uint8 parameters) too, and gathers them for each block's forward and backward
    sections = dict(model={"quantization": quantization},
                    training={"max_steps": 4, "checkpoint_every": 2, "batch_size": 8, "strategy": strategy,
                              "device": "cpu"},
                    evaluation={"every": 4, "average_last": 2},
                    data={"max_eval_examples": 31})  # odd: the last process gets a padded shard
    config = kit.write_config(tmp_path / "c.json", kit.tiny_raw_config(**sections))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = _torchrun() + ["--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                         str(_free_port()), str(kit.REPO / "main.py"), "--config", str(config),
                         "--workdir", str(tmp_path / "two")]
    _run(cmd, env)

    from lorakit.train.config import load_config

    one = kit.run(load_config(config), tmp_path / "one")
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    a, b = kit.tensors(tmp_path / "one"), kit.tensors(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    assert two["final"] == one["final"] and two["baseline"] == one["baseline"]
    # only rank 0 wrote: one line per logged step, no duplicates
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["step"], r["split"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert (tmp_path / "two" / "adapter" / "adapter_model.safetensors").is_file()

    if strategy == "ddp":  # DDP uses the same state-dict path as FSDP; resume once, on the harder one
        return
    # resuming both runs for two more steps (optimizer and scheduler state restored from full tensors)
    cmd[cmd.index("--master_port") + 1] = str(_free_port())
    _run(cmd + ["--resume", "--set", "training.max_steps=6"], env)
    kit.run(load_config(config, ["training.max_steps=6"]), tmp_path / "one", resume=True)
    a, b = kit.tensors(tmp_path / "one"), kit.tensors(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_two_processes_match_one_on_a_causal_lm_with_variable_lengths_packed_or_not(tmp_path, kit):
    """Token-level loss: the label tokens of the whole global batch, counted over both processes, normalise
    it. Two packed processes end with the weights of one unpacked process."""
    from helpers import need, shared_data

    from lorakit.train.config import validate

    data = shared_data()
    raw = {
        "model": {"architecture": {"model_type": "gpt2", "vocab_size": 50257, "n_positions": 128, "n_embd": 32,
                                   "n_layer": 2, "n_head": 2, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
                                   "attn_pdrop": 0.0},
                  "tokenizer": str(need(data / "gpt2-vocab"))},
        "method": {"name": "lora", "r": 4, "lora_alpha": 8, "target_modules": ["c_attn"]},
        "task": {"name": "e2e"},
        "data": {"dir": str(need(data / "e2e")), "max_length": 96, "max_prompt_length": 48, "max_train_examples": 8,
                 "max_eval_examples": 2, "packing": True},
        "generation": {"strategy": "greedy", "max_new_tokens": 2, "metrics": "fast"},
        "optimizer": {"lr": 1e-2},
        "schedule": {"warmup_steps": 1},
        "training": {"batch_size": 8, "max_steps": 2, "checkpoint_every": 2, "keep_last": 1, "seed": 3,
                     "label_smoothing": 0.1, "device": "cpu"},
        "evaluation": {"every": 100, "average_last": 1, "batch_size": 2, "baseline": False},
        "logging": {"every": 1, "progress_bar": False, "tensorboard": False, "plots": False},
    }
    config = kit.write_config(tmp_path / "c.json", raw)
    cmd = _torchrun() + ["--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                         str(kit.REPO / "main.py"), "--config", str(config), "--workdir", str(tmp_path / "two")]
    _run(cmd, dict(os.environ, OMP_NUM_THREADS="1"))
    raw["data"]["packing"] = False
    kit.run(validate(raw), tmp_path / "one")
    a, b = kit.tensors(tmp_path / "one"), kit.tensors(tmp_path / "two")
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)
    logged = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    single = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in logged if r["split"] == "train"] == pytest.approx(
        [r["loss"] for r in single if r["split"] == "train"], rel=1e-5)


def test_two_processes_match_one_on_a_masked_lm(tmp_path, kit):
    """Masked LM: each process draws the masks of its own rows of the global batch (keyed on the global row, not
    the process's row), so two processes train exactly as one. Before that key, rank 1 drew rank 0's masks."""
    from helpers import need, shared_data

    from lorakit.train.config import validate

    raw = kit.tiny_raw_config(need(shared_data() / "wikitext-2"), task={"name": "mlm_wikitext"},
                              data={"max_length": 32, "max_train_examples": 16, "max_eval_examples": 4,
                                    "train_split": "valid", "eval_split": "test"},
                              training={"max_steps": 2, "checkpoint_every": 2, "keep_last": 1, "batch_size": 8,
                                        "device": "cpu"},
                              evaluation={"every": 100, "average_last": 1, "batch_size": 4, "metric": "bpc",
                                          "baseline": False})
    config = kit.write_config(tmp_path / "c.json", raw)
    cmd = _torchrun() + ["--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                         str(kit.REPO / "main.py"), "--config", str(config), "--workdir", str(tmp_path / "two")]
    _run(cmd, dict(os.environ, OMP_NUM_THREADS="1"))
    one = kit.run(validate(raw), tmp_path / "one")
    a, b = kit.tensors(tmp_path / "one"), kit.tensors(tmp_path / "two")
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["final"]["bpc"] == pytest.approx(one["final"]["bpc"], rel=1e-4)
