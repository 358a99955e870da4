"""Method ``distill``: the loss against a hand computation (classes and, for language-model tasks, tokens over
the vocabulary), the student's size, runs from a teacher workdir and from a model path (a tiny GPT-2 on
WikiText-2, a tiny BERT classifier with its labels in another order), and teachers that do not fit (label space,
model kind, label names, vocabulary, a missing head) refused before anything is written."""

from __future__ import annotations

import math

import pytest
import torch

from lorakit.distill import DistillError, distillation_loss, keep_first_layers
from lorakit.errors import LorakitError
from lorakit.train.build import build_model
from lorakit.train.config import ConfigError
from lorakit.train.errors import TrainingError


def test_distillation_loss_equals_a_hand_computation():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    task_loss = torch.tensor(0.7)
    temperature, alpha = 2.0, 0.25
    kl = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        zs = sum(math.exp(v / temperature) for v in s_row)
        zt = sum(math.exp(v / temperature) for v in t_row)
        for s, t in zip(s_row, t_row, strict=True):
            p_t, p_s = math.exp(t / temperature) / zt, math.exp(s / temperature) / zs
            kl += p_t * math.log(p_t / p_s)
    expected = (1 - alpha) * 0.7 + alpha * temperature ** 2 * kl / 2  # batchmean over 2 rows, T^2 scaling
    assert distillation_loss(student, teacher, task_loss, temperature, alpha).item() == pytest.approx(expected,
                                                                                                   rel=1e-6)
    # regression: mean squared distance to the teacher's scores
    got = distillation_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [1.0]]), task_loss, 5.0, 0.5)
    assert got.item() == pytest.approx(0.5 * 0.7 + 0.5 * (1 + 4) / 2)


def test_student_keeps_the_first_layers(kit):
    cfg = kit.tiny_config(model={"architecture": {**kit.TINY_BERT, "num_hidden_layers": 3}})
    torch.manual_seed(0)
    model = build_model(cfg.model, 2)
    first = model.encoder.encoder.layer[0].attention.self.query.weight.detach().clone()
    full = sum(p.numel() for p in model.parameters())
    per_block = sum(p.numel() for p in model.encoder.encoder.layer[2].parameters())
    keep_first_layers(model, 1)
    assert len(model.encoder.encoder.layer) == 1 and model.encoder.config.num_hidden_layers == 1
    assert torch.equal(model.encoder.encoder.layer[0].attention.self.query.weight, first)
    assert sum(p.numel() for p in model.parameters()) == full - 2 * per_block
    with pytest.raises(DistillError, match=r"student_layers must be an integer in \[1, 1\]"):
        keep_first_layers(model, 2)


def test_distill_run_from_a_teacher_workdir_and_label_space_mismatch(tmp_path, kit, glue_data):
    arch3 = {**kit.TINY_BERT, "num_hidden_layers": 3}
    teacher_dir = tmp_path / "teacher"
    teacher_cfg = kit.tiny_config(model={"architecture": arch3}, method={"name": "full"}, training={"max_steps": 4},
                                  evaluation={"every": 4, "average_last": 1, "baseline": False})
    teacher_results = kit.run(teacher_cfg, teacher_dir)
    method = {"name": "distill", "teacher": str(teacher_dir), "student_layers": 1, "temperature": 2.0,
              "distill_alpha": 0.5}
    results = kit.run(kit.tiny_config(model={"architecture": arch3}, method=method, training={"max_steps": 4},
                                      evaluation={"every": 4, "average_last": 1, "baseline": False}),
                      tmp_path / "student")
    teacher = build_model(kit.tiny_config(model={"architecture": arch3}).model, 2)
    per_block = sum(p.numel() for p in teacher.encoder.encoder.layer[0].parameters())
    assert results["parameters"]["total"] == teacher_results["parameters"]["total"] - 2 * per_block
    assert results["method"] == "distill" and math.isfinite(results["final"]["acc"])
    # the report's "% of encoder": the student's trainable parameters (no head) over the teacher's encoder
    from lorakit.train.report import collect_runs, markdown_report, summarise

    head = results["parameters"]["head"]
    teacher_encoder = teacher_results["parameters"]["total"] - teacher_results["parameters"]["head"]
    assert results["parameters"]["teacher_encoder"] == teacher_encoder  # full FT teacher: all of it trains
    student_row = next(line for line in markdown_report(summarise(collect_runs([tmp_path / "student"]))).splitlines()
                       if line.startswith("| Distillation"))
    pct = 100.0 * (results["parameters"]["total"] - head) / teacher_encoder
    assert f"| {round(pct, 3):g}% |" in student_row and 50 < pct < 100

    # the teacher learned the quickstart task (classes); STS-B has 1 output
    stsb = kit.tiny_config(glue_data, task={"name": "stsb"}, model={"architecture": arch3}, method=method)
    workdir = tmp_path / "refused"
    with pytest.raises(TrainingError, match=r"predicts \d+ classes but task 'stsb' has 1 output \(regression\)") as err:
        kit.run(stsb, workdir)
    assert isinstance(err.value, LorakitError)
    assert not workdir.exists()
    # a classifier run cannot teach a causal LM
    from helpers import need, shared_data

    lm = kit.tiny_config(need(shared_data() / "wikitext-2"), task={"name": "wikitext"}, method=method,
                         model={"architecture": {"model_type": "gpt2", "vocab_size": 50257, "n_embd": 32,
                                                 "n_layer": 2, "n_head": 2, "n_positions": 64},
                                "tokenizer": str(need(shared_data() / "gpt2-vocab"))},
                         data={"train_split": "valid", "eval_split": "test"})
    with pytest.raises(TrainingError, match=r"trained a classifier \(quickstart\) but task 'wikitext' needs a "
                                            r"causal_lm"):
        kit.run(lm, workdir)
    assert not workdir.exists()


def test_distill_without_a_teacher_is_a_config_error(kit):
    with pytest.raises(ConfigError, match="distill needs a teacher"):
        kit.tiny_config(method={"name": "distill"})


# -- language-model tasks: token logits, KL over the vocabulary -----------------------------------------

def test_token_distillation_sum_equals_a_hand_computation():
    from lorakit.distill import token_distillation_sum

    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    targets = torch.tensor([[1, -100, 4], [0, 2, -100]])
    temperature, alpha = 2.0, 0.3
    expected = 0.0
    for b in range(2):
        for t in range(3):
            if targets[b, t] == -100:
                continue
            s_row, t_row = student[b, t].tolist(), teacher[b, t].tolist()
            ce = -s_row[targets[b, t]] + math.log(sum(math.exp(v) for v in s_row))
            zs = sum(math.exp(v / temperature) for v in s_row)
            zt = sum(math.exp(v / temperature) for v in t_row)
            kl = sum(math.exp(tv / temperature) / zt * ((tv / temperature - math.log(zt))
                                                         - (sv / temperature - math.log(zs)))
                     for sv, tv in zip(s_row, t_row, strict=True))
            expected += (1 - alpha) * ce + alpha * temperature ** 2 * kl
    got = token_distillation_sum(student, teacher, targets, temperature, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(DistillError, match="must have the student's vocabulary"):
        token_distillation_sum(student, teacher[..., :4], targets, temperature, alpha)


def _tiny_gpt2(n_layer: int, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=64, n_embd=32, n_layer=n_layer, n_head=2,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()


@pytest.mark.parametrize("kind", ["causal_lm", "masked_lm"])
def test_token_distilling_task_scores_the_tasks_targets_against_the_teacher(kind, kit):
    """The loop's loss_sum / loss_count of a language-model task under distill: causal (position t against
    token t + 1, tiny GPT-2) and masked (the masked positions, tiny BERT), by hand from the two models' logits."""
    from helpers import gpt2_tokenizer, minilm_tokenizer, need, shared_data
    from transformers import BertConfig, BertForMaskedLM

    from lorakit.train import batches as B
    from lorakit.train.build import _distilling
    from lorakit.train.tasks import get_task
    from lorakit.train.tasks.lm import Segment

    text = need(shared_data() / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")[:3000]
    cfg = kit.tiny_config(method={"name": "distill", "teacher": "x", "temperature": 1.5, "distill_alpha": 0.4})
    if kind == "causal_lm":
        task, tok = get_task("wikitext"), gpt2_tokenizer()
        student, teacher = _tiny_gpt2(1, 0), _tiny_gpt2(2, 1)
    else:
        task, tok = get_task("mlm_wikitext", seed=0), minilm_tokenizer()
        arch = {k: v for k, v in kit.TINY_BERT.items() if k != "model_type"}
        torch.manual_seed(0)
        student = BertForMaskedLM(BertConfig(**arch)).eval()
        teacher = BertForMaskedLM(BertConfig(**{**arch, "num_hidden_layers": 3})).eval()
    items = task.encode([Segment(text)], tok, cfg.data, training=True)[:3]
    batch = task.collate(items)
    distilling = _distilling(task, teacher, cfg)
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
        got = B.loss_sum(distilling, student, batch)
    shift = 1 if kind == "causal_lm" else 0
    expected, count = 0.0, 0
    for b in range(s.shape[0]):
        for pos in range(s.shape[1] - shift):
            target = int(batch["labels"][b, pos + shift])
            if target == -100:
                continue
            ls = torch.log_softmax(s[b, pos], -1)
            soft_s, soft_t = torch.log_softmax(s[b, pos] / 1.5, -1), torch.log_softmax(t[b, pos] / 1.5, -1)
            kl = float((soft_t.exp() * (soft_t - soft_s)).sum())
            expected += 0.6 * float(-ls[target]) + 0.4 * 1.5 ** 2 * kl
            count += 1
    assert count > 10 and B.loss_count(distilling, batch) == count == B.loss_count(task, batch)
    assert float(got) == pytest.approx(expected, rel=1e-4)


def test_causal_lm_distill_run_with_a_model_path_teacher(tmp_path, kit):
    """A tiny GPT-2 saved with its tokenizer is the teacher (a model path, not a run) of a one-block student
    on WikiText-2; the run reports the student's size."""
    from helpers import gpt2_tokenizer, need, shared_data

    teacher_dir = tmp_path / "gpt2-teacher"
    _tiny_gpt2(2, 1).save_pretrained(teacher_dir)
    gpt2_tokenizer().save_pretrained(teacher_dir)
    arch = {"model_type": "gpt2", "vocab_size": 50257, "n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 2,
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    cfg = kit.tiny_config(
        need(shared_data() / "wikitext-2"), task={"name": "wikitext"},
        model={"architecture": arch, "tokenizer": str(need(shared_data() / "gpt2-vocab"))},
        method={"name": "distill", "teacher": str(teacher_dir), "student_layers": 1},
        data={"max_length": 32, "max_train_examples": 40, "max_eval_examples": 8, "train_split": "valid",
              "eval_split": "test"},
        training={"max_steps": 2, "checkpoint_every": 2, "batch_size": 4},
        evaluation={"every": 2, "average_last": 1, "batch_size": 4, "metric": "ppl", "baseline": False})
    results = kit.run(cfg, tmp_path / "student")
    teacher_params = sum(p.numel() for p in _tiny_gpt2(2, 1).parameters())
    block = sum(p.numel() for p in _tiny_gpt2(2, 1).transformer.h[1].parameters())
    assert results["parameters"]["total"] == teacher_params - block
    assert math.isfinite(results["final"]["ppl"]) and results["method"] == "distill"


# -- a pretrained model path as the teacher of a classifier task ----------------------------------------

QUICKSTART_LABELS = ("weather", "food", "sport", "technology")


def _saved_classifier(folder, kit, id2label: dict[int, str], arch_layers: int = 3):
    """A tiny BertForSequenceClassification saved with the MiniLM tokenizer: a model path teacher."""
    from helpers import minilm_tokenizer
    from transformers import BertConfig, BertForSequenceClassification

    arch = {k: v for k, v in kit.TINY_BERT.items() if k != "model_type"}
    torch.manual_seed(3)
    model = BertForSequenceClassification(BertConfig(**{**arch, "num_hidden_layers": arch_layers},
                                                     num_labels=len(id2label), id2label=id2label,
                                                     label2id={v: k for k, v in id2label.items()})).eval()
    model.save_pretrained(folder)
    minilm_tokenizer().save_pretrained(folder)
    return model


def test_a_classifier_model_path_teaches_in_the_tasks_label_order_and_runs(tmp_path, kit):
    from lorakit.distill import ClassifierTeacher, load_model_teacher

    shuffled = {0: "Sport", 1: "weather", 2: "TECHNOLOGY", 3: "food"}  # named, in another order
    hf = _saved_classifier(tmp_path / "teacher", kit, shuffled)
    teacher = load_model_teacher(str(tmp_path / "teacher"), "classifier", "quickstart", 4, QUICKSTART_LABELS,
                                 say=lambda _m: None)
    assert isinstance(teacher, ClassifierTeacher) and teacher.order == [1, 3, 0, 2]
    ids = torch.tensor([[101, 2023, 2003, 102], [101, 7592, 102, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        raw = hf(input_ids=ids, attention_mask=mask).logits
        ours = teacher(ids, mask, torch.zeros_like(ids))
    torch.testing.assert_close(ours, raw[:, [1, 3, 0, 2]])
    method = {"name": "distill", "teacher": str(tmp_path / "teacher"), "student_layers": 1}
    results = kit.run(kit.tiny_config(model={"architecture": {**kit.TINY_BERT, "num_hidden_layers": 3}},
                                      method=method, training={"max_steps": 2, "checkpoint_every": 2},
                                      evaluation={"every": 2, "average_last": 1, "baseline": False}),
                      tmp_path / "student")
    assert math.isfinite(results["final"]["acc"])


def test_model_path_teachers_that_do_not_fit_are_refused_before_anything_is_written(tmp_path, kit):
    from helpers import gpt2_tokenizer
    from safetensors.torch import load_file, save_file

    def refused(teacher: str, pattern: str, task: str = "quickstart") -> None:
        cfg = kit.tiny_config(task={"name": task}, method={"name": "distill", "teacher": teacher})
        workdir = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
        with pytest.raises(TrainingError, match=pattern):
            kit.run(cfg, workdir)
        assert not workdir.exists()

    # the real all-MiniLM-L6-v2 is a bare encoder: no classification head to teach with
    refused(str(kit.MINILM), r"is a BertModel, without the sequence-classification head "
                             r"\(\*ForSequenceClassification\) task 'quickstart' needs; fine-tune it")
    _saved_classifier(tmp_path / "three", kit, {0: "weather", 1: "food", 2: "sport"})
    refused(str(tmp_path / "three"), r"predicts 3 classes but task 'quickstart' has 4 classes")
    _saved_classifier(tmp_path / "names", kit, {0: "weather", 1: "food", 2: "sport", 3: "politics"})
    refused(str(tmp_path / "names"), r"names its labels \['weather', 'food', 'sport', 'politics'\] but the task's")
    other_vocab = tmp_path / "gpt2-tokens"
    _saved_classifier(other_vocab, kit, dict(enumerate(QUICKSTART_LABELS)))
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (other_vocab / name).unlink(missing_ok=True)
    gpt2_tokenizer().save_pretrained(other_vocab)
    refused(str(other_vocab), r"tokenizer \(50257 ids\) differs from the student's \(30522 ids\)")
    headless = tmp_path / "headless"
    _saved_classifier(headless, kit, dict(enumerate(QUICKSTART_LABELS)))
    weights = load_file(headless / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("classifier.")}, headless / "model.safetensors",
              metadata={"format": "pt"})
    refused(str(headless), r"has no trained sequence-classification head .*\(classifier.bias, classifier.weight "
                           r"missing")
    refused(str(tmp_path / "nowhere"), r"neither a finished lorakit run \(no checkpoints/ folder\) nor a loadable")
