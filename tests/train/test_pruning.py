"""Method ``prune``: magnitude pruning of the encoder's linear weights (one-shot or gradual), then fine-tuning.
Sparsity is exact per matrix, pruned weights stay zero, masks survive an interrupted run, bad input fails."""

from __future__ import annotations

import json

import pytest
import torch

from lorakit.errors import LorakitError
from lorakit.pruning import MagnitudePruner, PruningError, prunable_linears
from lorakit.train import checkpoint as ckpt
from lorakit.train.build import apply_configured_method, build_model
from lorakit.train.config import ConfigError


def _linear_weights(state: dict) -> dict:
    """The encoder's linear weight matrices (2-D, outside the head and the embeddings) of a state dict."""
    return {n: t for n, t in state.items()
            if t.dim() == 2 and "embeddings" not in n and not n.startswith(("classifier", "pooler"))}


def test_one_shot_prunes_the_smallest_weights_of_each_matrix(kit):
    cfg = kit.tiny_config(method={"name": "prune", "sparsity": 0.3})
    torch.manual_seed(0)
    model = build_model(cfg.model, 4)
    before = {n: m.weight.detach().clone() for n, m in prunable_linears(model)}
    apply_configured_method(model, cfg)
    assert all(p.requires_grad for p in model.parameters())
    layers = dict(prunable_linears(model))
    assert layers and "classifier" not in layers
    for name, weight in before.items():
        after = layers[name].weight.detach()
        zeros = after == 0
        assert int(zeros.sum()) == round(0.3 * weight.numel()), name
        # every pruned magnitude is <= every kept one, and kept entries are untouched
        assert weight[zeros].abs().max() <= weight[~zeros].abs().min()
        assert torch.equal(after[~zeros], weight[~zeros])
    assert not torch.any(model.classifier.weight == 0)


def test_gradual_schedule_is_cubic_and_reaches_the_target():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    pruner = MagnitudePruner(model, 0.5, "gradual", end_step=4, head=())
    assert pruner.sparsity_at(0) == 0.0 and not torch.any(model[0].weight == 0)
    assert pruner.sparsity_at(2) == pytest.approx(0.5 * (1 - 0.5 ** 3))
    assert pruner.sparsity_at(4) == pruner.sparsity_at(9) == 0.5
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    pruner.attach(optimizer)
    counts = []
    for _ in range(6):
        model(torch.randn(3, 8)).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        counts.append(int((model[0].weight == 0).sum()))
    # step t keeps round((1 - s(t)) * 64) entries; once pruned, an entry stays zero though Adam has momentum
    assert counts == [64 - round((1 - pruner.sparsity_at(t)) * 64) for t in range(1, 7)]
    assert counts[-1] == 32


def test_pruned_weights_stay_zero_and_get_no_gradient(kit):
    cfg = kit.tiny_config(method={"name": "prune", "sparsity": 0.5}, optimizer={"lr": 1e-2, "weight_decay": 0.1})
    torch.manual_seed(0)
    model = build_model(cfg.model, 4)
    apply_configured_method(model, cfg)
    pruner = model.lorakit_pruner
    zeros = {n: (m.weight == 0).clone() for n, m in pruner.layers}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    pruner.attach(optimizer)
    ids = torch.randint(1000, 2000, (4, 12), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        torch.nn.functional.cross_entropy(model(ids, torch.ones_like(ids)), torch.tensor([0, 1, 2, 3])).backward()
        for name, layer in pruner.layers:
            assert not torch.any(layer.weight.grad[zeros[name]]), name
        optimizer.step()
        optimizer.zero_grad()
    for name, layer in pruner.layers:
        assert torch.equal(layer.weight == 0, zeros[name]), name  # the same entries, and only they, are zero


@pytest.mark.parametrize("schedule", ["one_shot", "gradual"])
def test_run_reports_stored_nonzero_and_masks_survive_resume(tmp_path, kit, monkeypatch, schedule):
    sections = dict(method={"name": "prune", "sparsity": 0.6, "prune_schedule": schedule, "prune_end": 0.8},
                    training={"max_steps": 10, "checkpoint_every": 3, "keep_last": 5},
                    evaluation={"every": 5, "average_last": 1, "baseline": False})
    straight = kit.run(kit.tiny_config(**sections), tmp_path / "straight")

    with kit.crash_after_checkpoints(monkeypatch, 2), pytest.raises(KeyboardInterrupt):
        kit.run(kit.tiny_config(**sections), tmp_path / "resumed")
    at_six = ckpt.load_model_state(ckpt.latest_checkpoint(tmp_path / "resumed" / "checkpoints").path)
    kit.run(kit.tiny_config(**sections), tmp_path / "resumed")
    a, b = kit.tensors(tmp_path / "straight"), kit.tensors(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    weights = _linear_weights(a)
    assert weights
    for name, w in weights.items():
        assert int((w == 0).sum()) == round(0.6 * w.numel()), name  # the target, exactly
        if schedule == "gradual":  # step 6 of 10, T = 8: part of the way there
            assert 0 < int((at_six[name] == 0).sum()) < round(0.6 * w.numel()), name
    stored = straight["parameters"]["stored_nonzero"]
    assert stored == sum(int(torch.count_nonzero(t)) for t in a.values())
    other_zeros = sum(int((t == 0).sum()) for n, t in a.items() if n not in weights)  # e.g. the padding embedding
    assert stored == straight["parameters"]["total"] - sum(round(0.6 * w.numel()) for w in weights.values()) \
        - other_zeros
    saved = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert saved["parameters"]["stored_nonzero"] == stored

    from lorakit.train.report import markdown_report, read_run, summarise

    record = read_run(tmp_path / "straight")
    assert record.stored == stored and record.method.startswith("Pruning (s=0.6")
    assert f"{stored:,}" in markdown_report(summarise([record]))


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5])
def test_sparsity_outside_0_1_is_refused(kit, sparsity):
    with pytest.raises(ConfigError, match="sparsity"):
        kit.tiny_config(method={"name": "prune", "sparsity": sparsity})
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    before = model[0].weight.detach().clone()
    with pytest.raises(PruningError, match=r"sparsity must be a fraction in \[0, 1\)") as err:
        MagnitudePruner(model, sparsity, head=())
    assert isinstance(err.value, LorakitError) and isinstance(err.value, ValueError)
    assert torch.equal(model[0].weight, before)


def test_unknown_schedule_and_nothing_to_prune_are_refused():
    with pytest.raises(PruningError, match="unknown schedule 'cubic'"):
        MagnitudePruner(torch.nn.Linear(4, 4), 0.5, "cubic", head=())
    with pytest.raises(PruningError, match="no nn.Linear"):
        MagnitudePruner(torch.nn.Sequential(torch.nn.Linear(4, 4)), 0.5, head=("0",))
