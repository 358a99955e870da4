"""The NLG experiment path: E2E/WebNLG/DART task plugin, GPT-2 with LoRA on c_attn's q and v slices,
training on completion tokens, beam-search generation, the official metrics and ``lorakit generate``.

Real parts only: the real GPT-2 tokenizer (``gpt2-vocab`` of the shared data), tiny randomly initialised
GPT-2 models built from a ``GPT2Config``, and slices of the real E2E / WebNLG files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_GPT2, gpt2_tokenizer, need, shared_data

from lorakit.train.config import validate
from lorakit.train.tasks import DataError, get_task

DATA = shared_data()
GPT2_VOCAB = DATA / "gpt2-vocab"
E2E = DATA / "e2e"
WEBNLG = DATA / "webnlg_challenge_2017"


@pytest.fixture(scope="module")
def tok():
    return gpt2_tokenizer()


def _raw(tmp_path: Path, **sections) -> dict:
    raw = {
        "model": {"architecture": dict(TINY_GPT2), "tokenizer": str(need(GPT2_VOCAB))},
        "method": {"name": "lora", "r": 4, "lora_alpha": 32, "lora_dropout": 0.1, "target_modules": ["c_attn"],
                   "enable_lora": {"c_attn": [True, False, True]}},
        "task": {"name": "e2e"},
        "data": {"dir": str(need(E2E)), "max_length": 96, "max_prompt_length": 48, "max_train_examples": 6,
                 "max_eval_examples": 5},
        "generation": {"num_beams": 3, "max_new_tokens": 8, "metrics": "fast"},
        "optimizer": {"lr": 2e-3, "weight_decay": 0.01},
        "schedule": {"warmup_steps": 1},
        "training": {"batch_size": 4, "max_steps": 4, "checkpoint_every": 2, "keep_last": 2, "seed": 3,
                     "label_smoothing": 0.1},
        "evaluation": {"every": 100, "average_last": 1, "batch_size": 4, "baseline": False},
        "logging": {"every": 2, "progress_bar": False, "tensorboard": False, "plots": False},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return raw


def _encode(task, tok, split: str, n: int, training: bool, **data):
    cfg = validate({"model": {"name_or_path": "x"}, "data": data}).data
    return task.encode(task.load(split, need(E2E))[:n], tok, cfg, training=training)


def test_training_items_hold_one_reference_each_and_mask_the_prompt(tok):
    task = get_task("e2e")
    examples = task.load("train", need(E2E))[:3]
    items = _encode(task, tok, "train", 3, training=True)
    assert len(items) == sum(len(e.references) for e in examples)  # one item per (MR, reference)
    first = items[0]
    prompt = tok(examples[0].context + "\n", add_special_tokens=False)["input_ids"]
    assert first["input_ids"][:len(prompt)] == prompt
    assert first["labels"][:len(prompt)] == [-100] * len(prompt)
    completion = first["input_ids"][len(prompt):]
    assert first["labels"][len(prompt):] == completion and completion[-1] == tok.eos_token_id
    assert tok.decode(completion[:-1]).strip() == examples[0].references[0]


def test_evaluation_items_hold_the_prompt_and_every_reference(tok):
    task = get_task("e2e")
    examples = task.load("dev", need(E2E))[:4]
    items = _encode(task, tok, "dev", 4, training=False)
    assert len(items) == 4
    for item, e in zip(items, examples, strict=True):
        assert tok.decode(item["prompt_ids"]) == e.context + "\n"
        assert item["label"]["references"] == list(e.references) and len(e.references) > 1
    batch = task.collate(items)  # left padding: every prompt ends at the last column
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert bool((batch["attention_mask"][:, -1] == 1).all())
    assert int(batch["attention_mask"][0].sum()) == len(items[0]["prompt_ids"])


def test_loss_is_cross_entropy_on_completion_tokens_only(tok):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    arch = dict(TINY_GPT2)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(arch.pop("model_type"), **arch)).eval()
    task = get_task("e2e")
    batch = task.collate(_encode(task, tok, "train", 1, training=True)[:3])
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    by_hand = []
    for row in range(3):
        for t in range(1, batch["input_ids"].shape[1]):
            if batch["labels"][row, t] != -100:
                by_hand.append(F.cross_entropy(logits[row, t - 1], batch["labels"][row, t]))
    assert torch.allclose(task.loss(model, batch), torch.stack(by_hand).mean(), atol=1e-5)
    smooth = get_task("e2e", label_smoothing=0.1)  # (1 - eps) * NLL + eps * mean over the vocabulary of -log p
    keep = batch["labels"][:, 1:] != -100
    uniform = -torch.log_softmax(logits[:, :-1], -1).mean(-1)[keep].mean()
    expected = 0.9 * torch.stack(by_hand).mean() + 0.1 * uniform
    assert torch.allclose(smooth.loss(model, batch), expected, atol=1e-5)


def test_identical_outputs_score_perfectly_and_webnlg_reports_seen_and_unseen(tok):
    task = get_task("webnlg", generation={"metrics": "fast"})
    dev = task.load("test", need(WEBNLG))
    seen = [e for e in dev if e.seen][:20]
    unseen = [e for e in dev if not e.seen][:20]
    refs = [{"references": list(e.references), "seen": e.seen} for e in seen + unseen]
    perfect = task.metrics([e.references[0] for e in seen + unseen], [{**r, "references": r["references"][:1]}
                                                                     for r in refs])
    assert perfect["BLEU"] == pytest.approx(100.0) and perfect["TER"] == pytest.approx(0.0)
    assert perfect["BLEU_seen"] == pytest.approx(100.0) and perfect["BLEU_unseen"] == pytest.approx(100.0)
    mixed = task.metrics([e.references[0] for e in seen] + ["nothing like it"] * len(unseen), refs)
    assert mixed["BLEU_seen"] > 90.0 > 10.0 > mixed["BLEU_unseen"]
    e2e = get_task("e2e", generation={"metrics": "fast"})
    groups = [["the cat sat on the mat .", "a cat sat on a mat ."], ["there is a dog in the garden ."]]
    score = e2e.metrics([g[0] for g in groups], [{"references": g} for g in groups])
    assert score["BLEU"] == pytest.approx(1.0) and set(score) == set(e2e.metric_names)


def test_e2e_lora_run_trains_generates_and_scores(tmp_path, tok, capsys):
    """A tiny random GPT-2 with LoRA on the q and v slices of c_attn: train a few steps on real E2E rows,
    generate with beam search, score with the official E2E metrics (Java), then ``lorakit generate``."""
    from lorakit.train.commands import generate_main, train_main

    raw = _raw(tmp_path, generation={"metrics": "all"})
    (tmp_path / "e2e.json").write_text(json.dumps(raw))
    assert train_main(["--config", str(tmp_path / "e2e.json"), "--workdir", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["task"] == "e2e" and results["main_metric"] == "BLEU"
    assert set(results["final"]) == {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"}
    # LoRA on W_q and W_v of each layer: 2 layers x (A: 2r x 32 + B: 64 x r), the paper's q,v arithmetic
    assert results["parameters"]["trainable"] == 2 * (2 * 4 * 32 + 64 * 4)
    adapter = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "CAUSAL_LM"

    assert generate_main(["--workdir", str(tmp_path / "run"), "--split", "test",
                          "--set", "generation.metrics=fast"]) == 0
    out = tmp_path / "run" / "generate"
    predictions = (out / "predictions.test.txt").read_text().splitlines()
    references = (out / "references.test.txt").read_text().split("\n\n")
    assert len(predictions) == 5 == len([g for g in references if g.strip()])
    metrics = json.loads((out / "metrics.test.json").read_text())
    assert metrics["split"] == "test" and set(metrics["metrics"]) == {"BLEU", "NIST"}
    from lorakit.metrics.nlg import mteval_bleu_nist

    groups = [g.strip().split("\n") for g in references if g.strip()]
    assert metrics["metrics"]["BLEU"] == pytest.approx(mteval_bleu_nist(predictions, groups)["BLEU"])


def test_full_fine_tuning_trains_every_weight(tmp_path):
    from lorakit.train.loop import train

    cfg = validate(_raw(tmp_path, method={"name": "full"}, training={"max_steps": 2, "checkpoint_every": 2}))
    results = train(cfg, tmp_path / "run", echo=lambda _m: None)
    assert results["parameters"]["trainable"] == results["parameters"]["total"]
    assert math.isfinite(results["final"]["BLEU"])


@pytest.mark.parametrize("sections, message", [
    ({"generation": {"eos_token": "<nope>"}}, "generation.eos_token"),
    ({"data": {"max_length": 19, "max_prompt_length": 18}}, "no room for the completion"),
    ({"generation": {"max_new_tokens": 100}}, "generation.max_new_tokens"),
    ({"data": {"max_length": 200}}, "lower data.max_length"),
])
def test_bad_nlg_settings_fail_before_the_workdir_is_touched(tmp_path, sections, message):
    from lorakit.train.loop import train

    raw = _raw(tmp_path, **sections)
    if message == "lower data.max_length":
        raw["model"]["architecture"]["n_positions"] = 64
        raw["data"]["max_prompt_length"] = 40
        raw["generation"]["max_new_tokens"] = 8
    with pytest.raises(DataError, match=message.replace(".", r"\.")):
        train(validate(raw), tmp_path / "run", echo=lambda _m: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("method", ["bitfit", "adapter_pfeiffer", "prefix_embed", "prefix_layer"])
def test_the_papers_baselines_run_the_nlg_task(tmp_path, method):
    """The GPT-2 rows of the paper's NLG table: each method trains and decodes (beam search, KV cache)."""
    from lorakit.train.loop import train

    raw = _raw(tmp_path, training={"max_steps": 2, "checkpoint_every": 2})
    raw["method"] = {"name": method, "adapter_size": 8, "prefix_length": 4, "prefix_hidden": 16}
    results = train(validate(raw), tmp_path / "run", echo=lambda _m: None)
    assert 0 < results["parameters"]["trainable"] < results["parameters"]["total"] / 10
    assert results["parameters"]["head"] == 0  # a language model has no task head
    assert math.isfinite(results["final"]["BLEU"])


@pytest.mark.parametrize("method, message", [
    ({"name": "head_only"}, "a language model has none"),
    ({"name": "prefix_embed", "prefix_length": 2, "infix_length": 2}, "infix_length"),
])
def test_methods_that_do_not_fit_a_language_model_are_refused(tmp_path, method, message):
    from lorakit.train.errors import TrainingError
    from lorakit.train.loop import train

    raw = _raw(tmp_path)
    raw["method"] = method
    with pytest.raises(TrainingError, match=message):
        train(validate(raw), tmp_path / "run", echo=lambda _m: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("quantization", [None, "nf4"])
def test_export_writes_a_merged_model_that_from_pretrained_reads(tmp_path, tok, quantization):
    """``lorakit export``: a LoRA run folded into a plain GPT-2 folder gives the same logits as the run's
    model, and the folder can start a new run (``model.name_or_path``). A QLoRA run's 4-bit base is
    dequantized for that (the exact merge)."""
    from transformers import AutoModelForCausalLM

    from lorakit.train.commands import export_main
    from lorakit.train.finished_run import load_run
    from lorakit.train.loop import train

    cfg = validate(_raw(tmp_path, model={"quantization": quantization},
                        training={"max_steps": 2, "checkpoint_every": 2}))
    train(cfg, tmp_path / "run", echo=lambda _m: None)
    assert export_main(["--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "model")]) == 0
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    assert not any("lora" in n for n, _ in plain.named_parameters())
    adapted = load_run(cfg, tmp_path / "run", None, None, None, with_data=False).model.eval()
    assert any(type(m).__name__ == "Linear4bit" for m in adapted.modules()) == (quantization == "nf4")
    ids = torch.tensor([tok("name[The Vaults], eatType[pub]\n")["input_ids"]])
    on_device = adapted(ids.to(next(adapted.parameters()).device)).logits.cpu()  # the run's device: GPU if any
    torch.testing.assert_close(plain(ids).logits, on_device, rtol=1e-4, atol=1e-4)
    assert export_main(["--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "model")]) == 1  # not empty
    again = _raw(tmp_path, training={"max_steps": 1, "checkpoint_every": 1})
    again["model"] = {"name_or_path": str(tmp_path / "model")}
    results = train(validate(again), tmp_path / "run2", echo=lambda _m: None)
    assert results["parameters"]["total"] == sum(p.numel() for p in plain.parameters()) + \
        results["parameters"]["trainable"]
