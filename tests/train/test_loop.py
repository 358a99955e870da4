"""The training loop on tiny models: outputs, methods, workdir rules, task plugins and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lorakit.train import checkpoint as ckpt
from lorakit.train.build import apply_configured_method, build_model, load_tokenizer
from lorakit.train.commands import eval_main, inspect_main, train_main
from lorakit.train.errors import ModelLoadError, NonFiniteLossError, WorkdirError
from lorakit.train.loop import _early_stopping
from lorakit.train.run_dir import LoopState
from lorakit.train.tasks import TASKS, DataError, get_task, task_from_config

# ------------------------------------------------------------------------------------------------------
# A short run and what it leaves behind
# ------------------------------------------------------------------------------------------------------


def test_short_run_logs_checkpoints_and_reports(tmp_path, kit):
    cfg = kit.tiny_config(logging={"tensorboard": True, "plots": True, "every": 2})
    workdir = tmp_path / "run"
    results = kit.run(cfg, workdir)

    assert json.loads((workdir / "config.json").read_text()) == cfg
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [2, 4, 6, 8]
    assert all(r["loss"] > 0 and r["lr"] >= 0 and r["tokens_per_s"] > 0 for r in train_rows)
    assert [r["step"] for r in rows if r["split"] == "dev"] == [0, 4, 8]
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert {p.name for p in (workdir / "plots").iterdir()} == {"loss.png", "metrics.png"}

    saved = json.loads((workdir / "results.json").read_text())
    assert saved["steps"] == 8 and saved["main_metric"] == "acc"
    assert set(saved["baseline"]) == set(saved["final"]) == {"acc"}
    assert saved["averaged"]["checkpoints"] == [4, 8]
    assert saved["parameters"]["trainable"] < saved["parameters"]["total"]
    assert saved["wall_time_s"] > 0 and "torch" in saved["versions"]
    assert results["final"] == saved["final"]

    # LoRA checkpoints hold the adapter and the head only, as safetensors
    names = set(kit.tensors(workdir))
    assert names and all(".lora_" in n or n.startswith("classifier.") for n in names)
    assert any(n.startswith("classifier.") for n in names)
    assert (workdir / "adapter" / "adapter_config.json").is_file()


def test_lora_freezes_pretrained_weights_and_optimizes_only_trainable(kit):
    cfg = kit.tiny_config()
    model = build_model(cfg.model, 4)
    apply_configured_method(model, cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or n.startswith("classifier.") for n in trainable)
    assert not model.encoder.embeddings.word_embeddings.weight.requires_grad

    from lorakit.train.build import build_optimizer

    opt = build_optimizer(model, cfg.optimizer)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in model.parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["full", "head_only"])
def test_full_and_head_only_methods(tmp_path, kit, method):
    cfg = kit.tiny_config(method={"name": method}, training={"max_steps": 2, "checkpoint_every": 2},
                          evaluation={"every": 2, "average_last": 1})
    before = build_model(cfg.model, 4)  # same seed: the starting weights
    kit.run(cfg, tmp_path / method)
    saved = kit.tensors(tmp_path / method)
    if method == "head_only":
        assert set(saved) == {"classifier.weight", "classifier.bias"}
    else:
        assert set(saved) == {n for n, _ in before.named_parameters()}
        moved = saved["encoder.encoder.layer.0.attention.self.query.weight"]
        assert not torch.equal(moved, before.encoder.encoder.layer[0].attention.self.query.weight)


def test_gradient_accumulation_matches_one_big_batch(tmp_path, kit):
    # on the CPU: a GPU's GEMMs reduce in a batch-size dependent order (differences ~1e-5, not the loop's math)
    common = dict(training={"max_steps": 3, "checkpoint_every": 3, "batch_size": 8, "device": "cpu"},
                  evaluation={"every": 3, "average_last": 1, "baseline": False})
    kit.run(kit.tiny_config(**common), tmp_path / "one")
    acc = dict(common, training=dict(common["training"], grad_accumulation=4))
    kit.run(kit.tiny_config(**acc), tmp_path / "four")
    a, b = kit.tensors(tmp_path / "one"), kit.tensors(tmp_path / "four")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_random_sequence_length_cuts_each_batch(kit):
    from lorakit.train.loop import _random_length

    cfg = kit.tiny_config(data={"random_length": [4, 12]})
    lengths = {_random_length(cfg, step) for step in range(50)}
    assert min(lengths) >= 4 and max(lengths) <= 12 and len(lengths) > 3
    assert _random_length(cfg, 7) == _random_length(cfg, 7)  # a function of (seed, step): resumable
    task = get_task("quickstart")
    items = [{"input_ids": [101, 5, 6, 7, 8, 9, 102], "token_type_ids": [0] * 7, "label": 1}]
    batch = task.collate(items, max_length=4)
    assert batch["input_ids"].tolist() == [[101, 5, 6, 102]]  # the final [SEP] is kept


def test_early_stopping_stops_when_the_metric_stalls(tmp_path, kit):
    cfg = kit.tiny_config(optimizer={"lr": 1e-12}, training={"max_steps": 40, "checkpoint_every": 40,
                                                             "early_stopping": {"patience": 2}},
                          evaluation={"every": 2, "average_last": 1})
    results = kit.run(cfg, tmp_path / "run")
    assert results["stopped_early"] and results["steps"] < 40
    assert ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints").step == results["steps"]


@pytest.mark.parametrize(("task_name", "metric", "lower"), [
    ("quickstart", "acc", False), ("cola", "mcc", False), ("stsb", "pearson", False), ("mrpc", "f1", False),
    ("multirc", "f1a", False), ("record", "em", False), ("squad", "f1", False), ("nq", "f1", False),
    ("e2e", "BLEU", False), ("e2e", "CIDEr", False), ("dart", "TER", True), ("webnlg", "TER_unseen", True),
    ("wikitext", "ppl", True), ("wikitext", "word_ppl", True), ("enwik8", "bpb", True), ("text8", "bpc", True),
    ("text", "nll_per_token", True),
])
def test_best_dev_value_is_the_minimum_exactly_for_lower_is_better_metrics(kit, task_name, metric, lower):
    cfg = kit.tiny_config(task={"name": task_name}, evaluation={"metric": metric},
                          training={"early_stopping": {"patience": 2}})
    task, state = task_from_config(cfg), LoopState()
    for step, value in enumerate([2.0, 1.0, 3.0, 2.5], start=1):
        state.step, state.last_eval = step, {metric: value}
        _early_stopping(cfg, task, state)
    assert (state.best_metric, state.best_step) == ((1.0, 2) if lower else (3.0, 3))
    assert state.stopped_early == lower  # 3.0 and 2.5 are two evaluations without improvement on 1.0


def test_only_ter_language_model_metrics_and_losses_are_lower_is_better():
    minimised = {name: {m for m in get_task(name).reported_metrics() if get_task(name).is_lower_better(m)}
                 for name in TASKS}
    lm = {"nll_per_token", "ppl", "bpc", "bpb"}
    assert {name: names for name, names in minimised.items() if names} == {
        "webnlg": {"TER", "TER_seen", "TER_unseen"}, "dart": {"TER"},
        **{f"{prefix}{corpus}": lm | ({"word_ppl"} if corpus.startswith("wikitext") else set())
           for prefix in ("", "mlm_") for corpus in ("wikitext", "wikitext103", "enwik8", "hutter", "text8", "text")},
        "sft": {"loss", "ppl"},
    }
    assert get_task("quickstart").is_lower_better("loss") and get_task("cola").is_lower_better("nll")
    assert get_task("webnlg").is_lower_better("TER_seen") and not get_task("webnlg").is_lower_better("BLEU_seen")


def test_half_precision_on_cpu_falls_back_to_fp32_with_a_note(tmp_path, kit):
    notes = []
    from lorakit.train.loop import train

    cfg = kit.tiny_config(training={"precision": "bf16", "max_steps": 1, "checkpoint_every": 1, "device": "cpu"},
                          evaluation={"every": 1, "average_last": 1, "baseline": False})
    train(cfg, tmp_path / "run", echo=notes.append)
    assert any("needs a GPU; training in fp32" in n for n in notes)


# ------------------------------------------------------------------------------------------------------
# Workdir rules
# ------------------------------------------------------------------------------------------------------


def test_workdir_with_a_different_config_is_refused_unless_resume_or_force(tmp_path, kit):
    workdir = tmp_path / "run"
    kit.run(kit.tiny_config(training={"max_steps": 4}), workdir)
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}

    with pytest.raises(WorkdirError) as info:
        kit.run(kit.tiny_config(training={"max_steps": 6}, optimizer={"lr": 1e-3}), workdir)
    assert "$.optimizer.lr: 0.005 -> 0.001" in str(info.value) and "--force" in str(info.value)
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == before  # untouched

    resumed = kit.run(kit.tiny_config(training={"max_steps": 6}), workdir, resume=True)
    assert resumed["steps"] == 6
    fresh = kit.run(kit.tiny_config(training={"max_steps": 2, "checkpoint_every": 2}), workdir, force=True)
    assert fresh["steps"] == 2
    assert [c.step for c in ckpt.list_checkpoints(workdir / "checkpoints")] == [2]


def test_resume_flag_without_a_run_is_an_error(tmp_path, kit):
    with pytest.raises(WorkdirError, match="holds no run"):
        kit.run(kit.tiny_config(), tmp_path / "empty", resume=True)


# ------------------------------------------------------------------------------------------------------
# Bad input: a clear message, and nothing written to the workdir
# ------------------------------------------------------------------------------------------------------


def _data(tmp_path: Path, train: str, dev: str | None = None) -> Path:
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    (folder / "train.tsv").write_text(train)
    if dev is not None:
        (folder / "dev.tsv").write_text(dev)
    return folder


GOOD_DEV = "sentence\tlabel\nit rains\tweather\nnice cake\tfood\n"


@pytest.mark.parametrize(
    "train_text, dev_text, message",
    [
        ("sentence\tlabel\nok\tfood\nno tab on this line\n", GOOD_DEV, r"train.tsv:3: expected at least 2"),
        ("sentence\tlabel\n", GOOD_DEV, r"train.tsv: no examples"),
        ("", GOOD_DEV, r"train.tsv: empty file"),
        ("sentence\tlabel\nhello\tcooking\n", GOOD_DEV, r"train.tsv:2: label 'cooking' is not one of"),
        ("text\tlabel\nhello\tfood\n", GOOD_DEV, r"train.tsv:1: header .* lacks the column"),
        ("sentence\tlabel\nhello\tfood\n", None, r"no dev.tsv for task 'quickstart'"),
    ],
    ids=["malformed-line", "header-only", "empty-file", "unknown-label", "wrong-header", "missing-file"],
)
def test_bad_data_is_reported_with_file_and_line(tmp_path, kit, train_text, dev_text, message):
    folder = _data(tmp_path, train_text, dev_text)
    with pytest.raises(DataError, match=message):
        kit.run(kit.tiny_config(data_dir=folder, data={"max_train_examples": None}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_missing_data_folder_and_too_small_dataset(tmp_path, kit):
    with pytest.raises(DataError, match="data folder not found"):
        kit.run(kit.tiny_config(data={"dir": str(tmp_path / "nope")}), tmp_path / "run")
    folder = _data(tmp_path, "sentence\tlabel\nhello\tfood\n", GOOD_DEV)
    with pytest.raises(DataError, match="fewer than training.batch_size=8"):
        kit.run(kit.tiny_config(data={"dir": str(folder)}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_unreachable_model_name_says_how_to_pass_a_folder(tmp_path, kit, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = kit.tiny_raw_config()
    raw["model"] = {"name_or_path": "no-such-org/no-such-model-xyz"}
    from lorakit.train.config import validate

    with pytest.raises(ModelLoadError) as info:
        kit.run(validate(raw), tmp_path / "run")
    msg = str(info.value)
    assert "no-such-org/no-such-model-xyz" in msg and "model.name_or_path=/path/to/model" in msg
    assert not (tmp_path / "run").exists()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    from lorakit import pretrained

    monkeypatch.setattr(pretrained, "_hub_reachable", lambda timeout=3.0: False)  # no minute of Hub retries
    with pytest.raises(ModelLoadError, match="no network connection to the Hub"):
        kit.run(validate(raw), tmp_path / "run")
    raw["model"] = {"name_or_path": str(tmp_path / "missing-folder")}
    with pytest.raises(ModelLoadError, match="model folder not found"):
        kit.run(validate(raw), tmp_path / "run")


def test_nan_loss_stops_clearly_and_keeps_the_last_good_checkpoint(tmp_path, kit, monkeypatch):
    from lorakit.train.tasks.glue import GlueTask

    real_loss = GlueTask.loss
    calls = {"n": 0}

    def loss_turning_nan(self, model, batch):
        calls["n"] += 1
        value = real_loss(self, model, batch)
        return value * float("nan") if calls["n"] >= 6 else value

    monkeypatch.setattr(GlueTask, "loss", loss_turning_nan)
    workdir = tmp_path / "run"
    cfg = kit.tiny_config(training={"checkpoint_every": 4, "max_steps": 8})
    with pytest.raises(NonFiniteLossError) as info:
        kit.run(cfg, workdir)
    msg = str(info.value)
    assert "the loss is nan at step 6" in msg and "step-0000004" in msg and "--resume" in msg
    assert [c.step for c in ckpt.list_checkpoints(workdir / "checkpoints")] == [4]
    assert not (workdir / "results.json").exists()
    saved = kit.tensors(workdir)
    assert all(torch.isfinite(t).all() for t in saved.values())


def test_unknown_evaluation_metric_fails_before_the_workdir_is_touched(tmp_path, kit):
    from lorakit.train.errors import TrainingError

    with pytest.raises(TrainingError, match=r"evaluation.metric 'f1' is not reported .* \['acc'\]"):
        kit.run(kit.tiny_config(evaluation={"metric": "f1"}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_commands_exit_codes_and_nothing_written_on_bad_data(tmp_path, kit, capsys):
    config = kit.write_config(tmp_path / "c.json", kit.tiny_raw_config())
    code = train_main(["--config", str(config), "--data", str(tmp_path / "nowhere"),
                       "--workdir", str(tmp_path / "run")])
    assert code == 1 and "data folder not found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_inspect_and_eval_commands(tmp_path, kit, capsys):
    config = kit.write_config(tmp_path / "c.json", kit.tiny_raw_config())
    assert inspect_main([str(config), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["method"] == "lora" and info["trainable"] < info["total"]
    assert set(info["lora_ranks"].values()) == {4} and len(info["lora_ranks"]) == 4  # 2 layers x q, v
    assert info["adapter_bytes"] > 0 and not (tmp_path / "run").exists()

    assert train_main(["--config", str(config), "--workdir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert inspect_main([str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "trainable" in out and "step-0000008" in out and "r=4" in out
    assert eval_main([str(tmp_path / "run"), "--average", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert result["checkpoints"] == [4, 8] and result["metrics"] == saved["averaged"]["metrics"]
    assert eval_main([str(tmp_path / "run"), "--checkpoint", "3"]) == 1
    assert "available steps: [4, 8]" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------
# GLUE task plugin on slices of the real data
# ------------------------------------------------------------------------------------------------------

GLUE_EXPECTED = {"cola": (1043, "mcc"), "sst2": (872, "acc"), "mrpc": (408, "acc"), "stsb": (1500, "pearson"),
                 "rte": (277, "acc")}


@pytest.mark.parametrize("name", sorted(GLUE_EXPECTED))
def test_glue_tasks_read_the_official_layout(glue_data, kit, name):
    task = get_task(name)
    dev = task.load("dev", glue_data)  # the GLUE root: the task's folder is found
    assert len(dev) == GLUE_EXPECTED[name][0]
    assert task.main_metric == GLUE_EXPECTED[name][1]
    from lorakit.train.config import validate

    tokenizer = load_tokenizer(validate(kit.tiny_raw_config()).model)
    items = task.encode(dev[:5], tokenizer, validate(kit.tiny_raw_config()).data)
    batch = task.collate(items)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
    assert batch["labels"].dtype == (torch.float32 if name == "stsb" else torch.long)
    if dev[0].text_b is not None:  # sentence pairs use both segments
        assert batch["token_type_ids"].max() == 1
    refs = [e.label for e in dev[:20]]
    perfect = task.metrics(refs, refs)
    assert perfect[task.main_metric] == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["rte", "stsb"])
def test_glue_pair_and_regression_tasks_train(tmp_path, glue_data, kit, name):
    cfg = kit.tiny_config(data_dir=glue_data, task={"name": name},
                          data={"max_train_examples": 32, "max_eval_examples": 16, "max_length": 48},
                          training={"max_steps": 2, "checkpoint_every": 2},
                          evaluation={"every": 2, "average_last": 1})
    results = kit.run(cfg, tmp_path / name)
    assert results["task"] == name and set(results["final"]) >= {GLUE_EXPECTED[name][1]}


def test_quickstart_data_is_balanced_and_disjoint(kit):
    task = get_task("quickstart")
    train, dev = task.load("train", kit.QUICKSTART_DATA), task.load("dev", kit.QUICKSTART_DATA)
    assert len(train) == 400 and len(dev) == 120
    assert sorted({e.label for e in train}) == [0, 1, 2, 3]
    assert all(sum(e.label == c for e in dev) == 30 for c in range(4))
    assert not {e.text_a for e in train} & {e.text_a for e in dev}


def test_label_smoothing_reaches_the_loss():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0]])

    class Fixed(torch.nn.Module):
        def forward(self, input_ids, attention_mask, token_type_ids):
            return logits

    batch = {"input_ids": torch.zeros(1, 3, dtype=torch.long), "attention_mask": torch.ones(1, 3),
             "token_type_ids": torch.zeros(1, 3, dtype=torch.long), "labels": torch.tensor([0])}
    plain, smooth = get_task("quickstart"), get_task("quickstart", label_smoothing=0.2)
    assert plain.loss(Fixed(), batch) == pytest.approx(torch.nn.functional.cross_entropy(logits, batch["labels"]))
    assert smooth.loss(Fixed(), batch) == pytest.approx(
        torch.nn.functional.cross_entropy(logits, batch["labels"], label_smoothing=0.2))
    assert smooth.loss(Fixed(), batch) > plain.loss(Fixed(), batch)
