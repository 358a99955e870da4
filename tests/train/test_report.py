"""``lorakit report``: runs grouped by method and task, seeds summarised, parameters read from checkpoints."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

from lorakit.cli import main as cli_main
from lorakit.train import checkpoint as ckpt
from lorakit.train.report import ReportError, collect_runs, markdown_report, plot_report, summarise

HIDDEN = 8


def _fake_run(root: Path, name: str, task: str, method: str, seed: int, value: float, *,
              metric: str = "acc", pooling: str = "mean", finished: bool = True, lr: float = 1e-3) -> Path:
    """A workdir as ``train`` leaves it: config.json, results.json and one checkpoint of trainable tensors."""
    wd = root / name
    wd.mkdir(parents=True)
    cfg = {"model": {"pooling": pooling}, "method": {"name": method, "r": 4, "target_modules": ["query", "value"]},
           "task": {"name": task}, "data": {"dir": "/data/glue", "max_length": 64},
           "training": {"seed": seed, "batch_size": 16}, "optimizer": {"lr": lr}}
    (wd / "config.json").write_text(json.dumps(cfg))
    head = {"classifier.weight": torch.zeros(2, HIDDEN), "classifier.bias": torch.zeros(2)}
    encoder_total = 1000
    if method == "lora":
        tensors = {**head, "encoder.layer.0.query.lora_A": torch.zeros(4, HIDDEN),
                   "encoder.layer.0.query.lora_B": torch.zeros(HIDDEN, 4)}
        if pooling == "pooler":
            tensors["encoder.pooler.dense.weight"] = torch.zeros(HIDDEN, HIDDEN)
    else:
        tensors = {**head, "encoder.embeddings.weight": torch.zeros(encoder_total)}
    trainable = sum(t.numel() for t in tensors.values())
    total = encoder_total + sum(t.numel() for k, t in tensors.items() if k.startswith("classifier") or "lora_" in k)
    ckpt.save_checkpoint(wd / "checkpoints", 10, tensors, {}, {"loop": {}})
    if finished:
        results = {"task": task, "method": method, "main_metric": metric, "steps": 10,
                   "final": {metric: value}, "averaged": {"checkpoints": [10], "metrics": {metric: value}},
                   "parameters": {"total": total, "trainable": trainable}, "wall_time_s": 90.0}
        (wd / "results.json").write_text(json.dumps(results))
    return wd


@pytest.fixture()
def runs_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for seed, (lora, full) in enumerate([(0.70, 0.72), (0.74, 0.71), (0.72, 0.75)]):
        _fake_run(root, f"rte_lora_s{seed}", "rte", "lora", seed, lora)
        _fake_run(root, f"rte_full_s{seed}", "rte", "full", seed, full)
    _fake_run(root, "stsb_lora_s0", "stsb", "lora", 0, 0.80, metric="pearson")
    return root


def test_seeds_are_summarised_as_median_and_mean_std_per_method_and_task(runs_root: Path) -> None:
    summary = summarise(collect_runs([runs_root], warn=lambda _m: None))
    assert summary.tasks == ["rte", "stsb"]  # the paper's column order
    assert summary.methods == ["full FT", "LoRA (r=4)"]
    cell = summary.cells[("LoRA (r=4)", "rte")]
    assert sorted(cell.values) == pytest.approx([70.0, 72.0, 74.0])
    assert cell.median == pytest.approx(72.0)
    assert cell.mean == pytest.approx(72.0)
    assert cell.std == pytest.approx(statistics.stdev([70.0, 72.0, 74.0]))
    text = markdown_report(summary)
    assert "**72.0** (72.0 ± 2.0, n=3)" in text
    lines = text.splitlines()
    full_row = next(line for line in lines if line.startswith("| full FT |"))
    assert full_row.rstrip().endswith("| – |")  # full FT lacks stsb: no average
    lora_row = next(line for line in lines if line.startswith("| LoRA (r=4) |"))
    assert lora_row.rstrip().endswith(f"| {(72.0 + 80.0) / 2:.1f} |")


def test_a_learning_rate_sweep_gives_one_row_per_rate_of_the_swept_method(tmp_path: Path) -> None:
    for seed in (0, 1):
        for lr, value in ((5e-4, 0.70), (2e-3, 0.60)):
            _fake_run(tmp_path, f"lora_lr{lr:g}_s{seed}", "rte", "lora", seed, value + seed / 100, lr=lr)
        _fake_run(tmp_path, f"full_s{seed}", "rte", "full", seed, 0.75, lr=1e-4)  # one rate: plain label
    summary = summarise(collect_runs([tmp_path], warn=lambda _m: None))
    assert sorted(summary.methods) == ["LoRA (r=4), lr 0.0005", "LoRA (r=4), lr 0.002", "full FT"]
    assert summary.cells[("LoRA (r=4), lr 0.0005", "rte")].median == pytest.approx(70.5)
    assert summary.cells[("LoRA (r=4), lr 0.002", "rte")].median == pytest.approx(60.5)


def test_rates_tuned_per_task_keep_one_row_and_a_missing_rate_is_named(tmp_path: Path) -> None:
    _fake_run(tmp_path, "rte", "rte", "lora", 0, 0.70, lr=5e-4)
    _fake_run(tmp_path, "mrpc", "mrpc", "lora", 0, 0.80, lr=1e-3)  # one rate per task: not a sweep
    assert summarise(collect_runs([tmp_path], warn=lambda _m: None)).methods == ["LoRA (r=4)"]
    unknown = _fake_run(tmp_path, "mrpc_b", "mrpc", "lora", 1, 0.81)
    cfg = json.loads((unknown / "config.json").read_text())
    del cfg["optimizer"]
    (unknown / "config.json").write_text(json.dumps(cfg))
    methods = summarise(collect_runs([tmp_path], warn=lambda _m: None)).methods
    assert sorted(methods) == ["LoRA (r=4), lr 0.0005", "LoRA (r=4), lr 0.001", "LoRA (r=4), lr ?"]


def test_head_and_adapter_parameters_are_told_apart_from_checkpoint_names(runs_root: Path) -> None:
    runs = {r.workdir.name: r for r in collect_runs([runs_root], warn=lambda _m: None)}
    lora, full = runs["rte_lora_s0"], runs["rte_full_s0"]
    assert lora.head == 2 * HIDDEN + 2
    assert lora.adapter == 2 * 4 * HIDDEN
    assert lora.trainable_without_head == 2 * 4 * HIDDEN
    assert lora.encoder == 1000
    assert full.adapter == 0 and full.trainable_without_head == 1000
    row = next(line for line in markdown_report(summarise(list(runs.values()))).splitlines()
               if line.startswith("| LoRA"))
    assert "| 64 | 82 | 6.4% |" in row  # without head, with head, share of the encoder


def test_pooler_counts_as_head_when_the_model_pools_with_it(tmp_path: Path) -> None:
    _fake_run(tmp_path, "run", "rte", "lora", 0, 0.6, pooling="pooler")
    (run,) = collect_runs([tmp_path], warn=lambda _m: None)
    assert run.head == 2 * HIDDEN + 2 + HIDDEN * HIDDEN


def test_unfinished_runs_are_named_and_skipped(tmp_path: Path) -> None:
    _fake_run(tmp_path, "done", "rte", "lora", 0, 0.6)
    _fake_run(tmp_path, "running", "rte", "lora", 1, 0.6, finished=False)
    notes: list[str] = []
    runs = collect_runs([tmp_path], warn=notes.append)
    assert [r.workdir.name for r in runs] == ["done"]
    assert len(notes) == 1 and "running" in notes[0] and "no results.json" in notes[0]


def test_no_finished_run_and_mixed_metrics_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no finished run"):
        collect_runs([tmp_path], warn=lambda _m: None)
    _fake_run(tmp_path, "a", "rte", "lora", 0, 0.6)
    _fake_run(tmp_path, "b", "rte", "lora", 1, 0.6, metric="f1")
    with pytest.raises(ReportError, match="different main metrics"):
        summarise(collect_runs([tmp_path], warn=lambda _m: None))
    (tmp_path / "a" / "results.json").write_text("{not json")
    with pytest.raises(ReportError, match="not valid JSON"):
        collect_runs([tmp_path / "a"], warn=lambda _m: None)


def test_cli_writes_markdown_and_png(runs_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report"
    assert cli_main(["report", str(runs_root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (out / "report.md").read_text() == printed
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "python main.py --config" in printed and "--data /data/glue" in printed
    assert cli_main(["report", str(tmp_path / "missing")]) == 1


def test_plot_handles_a_single_method(tmp_path: Path) -> None:
    _fake_run(tmp_path, "a", "rte", "lora", 0, 0.6)
    summary = summarise(collect_runs([tmp_path], warn=lambda _m: None))
    assert plot_report(summary, tmp_path / "fig.png") == tmp_path / "fig.png"


def test_method_labels_keep_lora_with_bitfit_apart_and_name_the_baselines():
    from lorakit.train.report import method_label

    labels = [method_label({"method": m}) for m in (
        {"name": "lora", "r": 8}, {"name": "lora", "r": 8, "bias": "all"},
        {"name": "adapter_houlsby", "adapter_size": 16}, {"name": "adapter_pfeiffer", "adapter_size": 16},
        {"name": "prefix_layer", "prefix_length": 10},
        {"name": "bitfit"}, {"name": "ft_top2"})]
    assert labels == ["LoRA (r=8)", "LoRA+BitFit (r=8)", "Adapter-H (m=16)", "Adapter-P (m=16)",
                      "PreLayer (l_p=10)", "BitFit", "FT-Top2"]
