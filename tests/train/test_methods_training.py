"""The LoRA paper's baselines in the experiment system: each method trains on a tiny random BERT and GPT-2
and only its parameters move; checkpoints round-trip; inspect reports the counts; bad configs fail."""

from __future__ import annotations

import json

import pytest
import torch

from lorakit.train.build import apply_configured_method, build_model, build_optimizer
from lorakit.train.config import ConfigError
from lorakit.train.errors import TrainingError

BASELINES = ["ft_top2", "bitfit", "adapter_houlsby", "adapter_pfeiffer", "prefix_embed", "prefix_layer"]
TINY_GPT2 = {"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": 30522, "n_positions": 64,
             "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
OPTIONS = {"adapter_size": 4, "prefix_length": 3, "infix_length": 2, "prefix_hidden": 16}


def _cfg(kit, method: str, arch: str, **sections):
    bert = {**kit.TINY_BERT, "num_hidden_layers": 3} if method == "ft_top2" else kit.TINY_BERT
    gpt2 = {**TINY_GPT2, "n_layer": 3} if method == "ft_top2" else TINY_GPT2
    model = {"model": {"architecture": dict(bert if arch == "bert" else gpt2)}}
    return kit.tiny_config(method={"name": method, **OPTIONS}, **model, **sections)


def _intended(name: str, method: str) -> bool:
    if name.startswith("classifier."):
        return True
    return {
        "ft_top2": lambda n: n.startswith(tuple(f"{p}.{i}." for p in ("encoder.encoder.layer", "encoder.h")
                                                           for i in (1, 2))),
        "bitfit": lambda n: n.endswith(".bias"),
        "adapter_houlsby": lambda n: ".adapter_" in n,
        "adapter_pfeiffer": lambda n: ".adapter_" in n and ("output.dense" in n or "mlp.c_proj" in n),
        "prefix_embed": lambda n: n in ("encoder.prefix_tokens", "encoder.infix_tokens"),
        "prefix_layer": lambda n: ".prefix_" in n,
    }[method](name)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
@pytest.mark.parametrize("method", BASELINES)
def test_each_method_trains_only_its_parameters(kit, method, arch):
    cfg = _cfg(kit, method, arch, optimizer={"lr": 1e-2, "weight_decay": 0.0})
    torch.manual_seed(0)
    model = build_model(cfg.model, 4)
    apply_configured_method(model, cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(_intended(n, method) for n in trainable), sorted(trainable)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(model, cfg.optimizer)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(ids, mask), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, start[n])}
    if method == "prefix_embed" and arch == "gpt2":  # causal: no input position sees the infix after it
        trainable.discard("encoder.infix_tokens")
    assert moved == trainable, (sorted(trainable - moved), sorted(moved - trainable))


@pytest.mark.parametrize("method,arch", [("adapter_houlsby", "bert"), ("prefix_layer", "bert"),
                                         ("prefix_embed", "gpt2"), ("bitfit", "gpt2")])
def test_checkpoint_round_trip_and_reported_counts(tmp_path, kit, method, arch):
    from lorakit.train.finished_run import evaluate_workdir

    cfg = _cfg(kit, method, arch, training={"max_steps": 4, "checkpoint_every": 4},
               evaluation={"every": 4, "average_last": 1, "baseline": False})
    results = kit.run(cfg, tmp_path)
    saved = kit.tensors(tmp_path)
    model = build_model(cfg.model, 4)
    apply_configured_method(model, cfg)
    assert set(saved) == {n for n, p in model.named_parameters() if p.requires_grad}
    again = evaluate_workdir(cfg, tmp_path)
    assert again["metrics"] == results["final"]
    params = results["parameters"]
    saved_size = sum(t.numel() for t in saved.values())
    assert params["trainable"] == params["trainable_excluding_head"] + params["head"] == saved_size
    assert params["head"] == 32 * 4 + 4
    exported = json.loads((tmp_path / "adapter" / "method.json").read_text())
    assert exported["name"] == method
    if method == "prefix_layer":
        from safetensors.torch import load_file

        final = load_file(tmp_path / "adapter" / "model.safetensors")
        prefixes = [k for k in final if "prefix" in k]
        assert prefixes and all(k.endswith(".prefix") for k in prefixes)
        assert sum(final[k].numel() for k in prefixes) == params["after_training"] == 2 * 2 * 3 * 32


def test_inspect_reports_counts_with_and_without_head(tmp_path, kit, capsys):
    from lorakit.train.commands import inspect_main

    path = kit.write_config(tmp_path / "c.json", kit.tiny_raw_config(method={"name": "adapter_houlsby",
                                                                              "adapter_size": 4}))
    assert inspect_main([str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["trainable_excluding_head"] == 2 * 2 * (2 * 32 * 4 + 32 + 4)
    assert info["trainable"] == info["trainable_excluding_head"] + info["head"]
    assert inspect_main([str(path)]) == 0
    assert "excluding the head" in capsys.readouterr().out
    assert inspect_main([str(path), "--json", "--latency", "--set", "data.max_length=8"]) == 0
    latency = json.loads(capsys.readouterr().out)["latency"]
    assert set(latency) >= {"batch_1", "batch_8"} and latency["batch_8"]["method_ms"] > 0


def test_bad_method_configs(tmp_path, kit):
    from lorakit.train.config import validate

    with pytest.raises(ConfigError, match=r"\$\.method\.bias.*LoRA.*'bitfit'"):
        validate(kit.tiny_raw_config(method={"name": "adapter_houlsby", "bias": "all"}))
    with pytest.raises(ConfigError, match=r"\$\.method\.prefix_length: prefix_layer needs"):
        validate(kit.tiny_raw_config(method={"name": "prefix_layer", "prefix_length": 0}))
    with pytest.raises(ConfigError, match=r"\$\.method\.adapter_size: must be an integer >= 1"):
        validate(kit.tiny_raw_config(method={"name": "adapter_pfeiffer", "adapter_size": 0}))
    with pytest.raises(ConfigError, match=r"did you mean 'prefix_layer'"):
        validate(kit.tiny_raw_config(method={"name": "prefix_layers"}))
    too_long = kit.tiny_config(method={"name": "prefix_embed", "prefix_length": 40})  # + 32 tokens > 64
    with pytest.raises(TrainingError, match="72 exceeds the model's 64 positions"):
        kit.run(too_long, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    big = kit.tiny_config(method={"name": "adapter_houlsby", "adapter_size": 64})
    with pytest.raises(TrainingError, match="adapter_size=64 is out of range"):
        apply_configured_method(build_model(big.model, 4), big)
    deberta = kit.tiny_config(model={"architecture": {**kit.TINY_BERT, "model_type": "deberta-v2"}},
                              method={"name": "prefix_layer"})
    with pytest.raises(TrainingError, match="DisentangledSelfAttention"):
        apply_configured_method(build_model(deberta.model, 4), deberta)
