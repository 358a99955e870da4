"""SQuAD v1.1 / v2.0 span extraction: windows, targets, post-processing, official scores, bad input."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from helpers import minilm_tokenizer, need, shared_data
from torch import nn

from lorakit.train.tasks import DataError, get_task
from lorakit.train.tasks.squad import SpanPrediction, _windows

SQUAD_DEV = Path(os.environ.get("LORAKIT_SQUAD_DATA", shared_data() / "squad")) / "dev-v1.1.json"
WINDOW = {"max_length": 64, "doc_stride": 16, "max_query_length": 24, "max_answer_length": 30}


@pytest.fixture(scope="module")
def tokenizer():
    return minilm_tokenizer()


@pytest.fixture(scope="module")
def squad_slice(tmp_path_factory) -> Path:
    """The first 3 paragraphs of the first 2 articles of the real dev set, as train and dev."""
    full = json.loads(need(SQUAD_DEV).read_text(encoding="utf-8"))
    part = {"version": full["version"],
            "data": [{"title": a["title"], "paragraphs": a["paragraphs"][:3]} for a in full["data"][:2]]}
    folder = tmp_path_factory.mktemp("squad")
    for split in ("train", "dev"):
        (folder / f"{split}-v1.1.json").write_text(json.dumps(part), encoding="utf-8")
    return folder


def _v2_file(folder: Path, split: str = "dev") -> Path:
    """A synthetic SQuAD v2.0 file: one answerable and one unanswerable question about one context."""
    context = "The Eiffel Tower was completed in 1889. It stands in Paris."
    data = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "a", "question": "When was the tower completed?", "is_impossible": False,
         "answers": [{"text": "1889", "answer_start": context.index("1889")}]},
        {"id": "b", "question": "Who painted the tower?", "is_impossible": True, "answers": [],
         "plausible_answers": [{"text": "Paris", "answer_start": context.index("Paris")}]},
    ]}]}]}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}-v2.0.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _oracle_predictions(items: list[dict]) -> list[SpanPrediction]:
    """What a perfect model predicts: each window's target span (windows without it: a low score)."""
    return [SpanPrediction(10.0 if it["start"] else -5.0, it["offsets"][it["start"]][0],
                           it["offsets"][it["end"]][1], 0.0) for it in items]


# -- loading and windows ---------------------------------------------------------------------------

def test_real_dev_slice_loads_and_every_question_has_a_window_holding_its_answer(squad_slice, tokenizer):
    task = get_task("squad")
    examples = task.load("dev", squad_slice)
    assert len(examples) == len({e.qid for e in examples}) > 50
    items = task.encode(examples, tokenizer, WINDOW)
    assert len(items) > len(examples)  # long contexts are cut into several windows
    assert all(len(it["input_ids"]) <= WINDOW["max_length"] for it in items)
    by_question: dict[str, list[dict]] = {}
    for it in items:
        by_question.setdefault(it["label"], []).append(it)
    for e in examples:
        targeted = [it for it in by_question[e.qid] if it["start"] > 0]
        assert targeted, f"no window of {e.qid} holds its answer"
        for it in targeted:  # the target tokens cover the answer's characters
            start, end = it["offsets"][it["start"]][0], it["offsets"][it["end"]][1]
            assert start <= e.answer_starts[0] and end >= e.answer_starts[0] + len(e.answers[0])
            assert end - start < len(e.answers[0]) + 12  # ... and not much more (a sub-word at most)


def test_consecutive_windows_share_doc_stride_context_tokens(squad_slice, tokenizer):
    task = get_task("squad")
    examples = task.load("dev", squad_slice)[:1]
    items = task.encode(examples, tokenizer, WINDOW)
    assert len(items) >= 2
    first = [o for o in items[0]["offsets"] if o[0] >= 0]
    second = [o for o in items[1]["offsets"] if o[0] >= 0]
    assert first[-WINDOW["doc_stride"]:] == second[:WINDOW["doc_stride"]]


def test_oracle_spans_score_like_the_official_script(squad_slice, tokenizer):
    task = get_task("squad")
    examples = task.load("dev", squad_slice)
    items = task.encode(examples, tokenizer, WINDOW)
    scores = task.metrics(_oracle_predictions(items), [it["label"] for it in items])
    assert scores["total"] == len(examples) and scores["missing"] == 0
    assert scores["exact_match"] > 90.0  # misses: answers that end inside a word piece ("gold" in "golden")
    answers = task.answers(_oracle_predictions(items), [it["label"] for it in items])
    for e in examples:
        assert any(gold in answers[e.qid] for gold in e.answers)


def test_predict_keeps_spans_inside_the_context_and_max_answer_length(squad_slice, tokenizer):
    task = get_task("squad")
    examples = task.load("dev", squad_slice)[:4]
    items = task.encode(examples, tokenizer, {**WINDOW, "max_answer_length": 3})
    batch = task.collate(items)

    class Peaks(nn.Module):
        """Start logits peak on the first question token, end logits 10 tokens into the context."""

        def forward(self, input_ids, attention_mask, token_type_ids, token_level=False):
            logits = torch.zeros(*input_ids.shape, 2)
            logits[:, 1, 0] = 100.0  # a question token: never a valid start
            first_ctx = (batch["offsets"][..., 0] >= 0).float().argmax(1)
            logits[torch.arange(len(first_ctx)), first_ctx, 0] = 50.0
            logits[torch.arange(len(first_ctx)), first_ctx + 10, 1] = 50.0  # too far from the start
            return logits

    for p, it in zip(task.predict(Peaks(), batch), items, strict=True):
        context = [o for o in it["offsets"] if o[0] >= 0]
        assert p.start_char == context[0][0]
        assert p.end_char <= context[2][1]  # at most 3 tokens long


def test_random_length_cut_points_lost_targets_at_cls(squad_slice, tokenizer):
    task = get_task("squad")
    items = task.encode(task.load("dev", squad_slice)[:6], tokenizer, WINDOW)
    late = [it for it in items if it["end"] >= 20]
    assert late
    batch = task.collate(late, max_length=20)
    assert batch["input_ids"].shape[1] == 20
    assert batch["start_positions"].eq(0).all() and batch["end_positions"].eq(0).all()
    assert batch["offsets"][:, -1].eq(-1).all()


# -- v2.0 --------------------------------------------------------------------------------------------

def test_v2_unanswerable_questions_target_cls_and_score_with_the_null_answer(tmp_path, tokenizer):
    _v2_file(tmp_path)
    task = get_task("squad_v2")
    examples = task.load("dev", tmp_path)
    assert [e.is_impossible for e in examples] == [False, True]
    items = task.encode(examples, tokenizer, WINDOW)
    assert [(it["label"], it["start"] > 0) for it in items] == [("a", True), ("b", False)]
    ids = [it["label"] for it in items]
    a_span = items[0]["offsets"][items[0]["start"]][0], items[0]["offsets"][items[0]["end"]][1]
    right = [SpanPrediction(5.0, *a_span, null_score=1.0), SpanPrediction(2.0, 0, 5, null_score=3.0)]
    scores = task.metrics(right, ids)
    assert scores["exact"] == scores["f1"] == 100.0
    assert scores["HasAns_total"] == 1 and scores["NoAns_total"] == 1
    wrong = [SpanPrediction(5.0, *a_span, null_score=9.0), SpanPrediction(4.0, 0, 5, null_score=3.0)]
    assert task.answers(wrong, ids) == {"a": "", "b": "The E"}
    scores = task.metrics(wrong, ids)
    assert scores["HasAns_exact"] == 0.0 and scores["NoAns_exact"] == 0.0


def test_v1_never_answers_with_the_null_answer(squad_slice, tokenizer):
    task = get_task("squad")
    examples = task.load("dev", squad_slice)[:1]
    items = task.encode(examples, tokenizer, WINDOW)
    preds = [SpanPrediction(1.0, 0, 3, null_score=50.0) for _ in items]
    assert task.answers(preds, [it["label"] for it in items])[examples[0].qid] == examples[0].context[:3]


# -- bad input ---------------------------------------------------------------------------------------

def test_answer_offsets_that_do_not_match_the_context_are_refused(tmp_path):
    path = _v2_file(tmp_path)
    raw = json.loads(path.read_text())
    raw["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 3
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError) as err:
        get_task("squad_v2").load("dev", tmp_path)
    message = str(err.value)
    assert "answer_start 37 does not match the context" in message and "'1889'" in message
    assert "occurs at offset 34" in message and "qas[0]" in message and str(path) in message


def test_questions_longer_than_the_window(tmp_path, tokenizer):
    path = _v2_file(tmp_path)
    raw = json.loads(path.read_text())
    raw["data"][0]["paragraphs"][0]["qas"][0]["question"] = "when " * 80 + "was it completed?"
    path.write_text(json.dumps(raw))
    task = get_task("squad_v2")
    examples = task.load("dev", tmp_path)
    with pytest.raises(DataError, match=r"question \(84 tokens\) leaves 0 context tokens .*data.max_length=64"):
        task.encode(examples, tokenizer, {**WINDOW, "max_query_length": None})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = task.encode(examples, tokenizer, WINDOW)  # cut to max_query_length=24
    assert any("1 question(s) longer than data.max_query_length=24" in str(w.message) for w in caught)
    assert all(len(it["input_ids"]) <= 64 for it in items)


def test_files_in_the_wrong_layout_name_the_expected_layout_and_task(tmp_path):
    task = get_task("squad")
    with pytest.raises(DataError, match=r"no dev-v1.1.json .* for task 'squad' .*DIR/dev-v1.1.json"):
        task.load("dev", tmp_path)
    _v2_file(tmp_path / "v2")
    with pytest.raises(DataError, match="found dev-v2.0.json: that is the other SQuAD version; use task squad_v2"):
        task.load("dev", tmp_path / "v2")
    (tmp_path / "dev-v1.1.json").write_text("sentence1\tsentence2\tlabel\na\tb\tentailment\n")
    with pytest.raises(DataError, match=r"not JSON .*task 'squad' expects the official SQuAD 1.1 JSON layout"):
        task.load("dev", tmp_path)
    (tmp_path / "dev-v1.1.json").write_text(json.dumps([{"question": "q", "answer": "a"}]))
    with pytest.raises(DataError, match=r"no top-level \"data\" list; task 'squad' expects"):
        task.load("dev", tmp_path)
    (tmp_path / "dev-v1.1.json").write_text(json.dumps({"data": [{"title": "x", "qas": []}]}))
    with pytest.raises(DataError, match=r"data\[0\] has no \"paragraphs\" list"):
        task.load("dev", tmp_path)
    v2 = json.loads((tmp_path / "v2" / "dev-v2.0.json").read_text())
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(v2))
    with pytest.raises(DataError, match="marked is_impossible.*use task squad_v2"):
        task.load("dev", tmp_path)


# -- end to end --------------------------------------------------------------------------------------

def test_training_run_reports_official_scores(tmp_path, squad_slice, kit):
    cfg = kit.tiny_config(squad_slice, task={"name": "squad"},
                          data={"max_length": 64, "doc_stride": 16, "max_query_length": 24,
                                "max_train_examples": 16, "max_eval_examples": 12},
                          training={"batch_size": 8, "max_steps": 4, "checkpoint_every": 2, "keep_last": 2})
    results = kit.run(cfg, tmp_path / "run")
    assert results["task"] == "squad" and results["main_metric"] == "f1"
    final = results["averaged"]["metrics"]
    assert final["total"] == 12 and final["missing"] == 0
    assert 0.0 <= final["exact_match"] <= final["f1"] <= 100.0
    assert results["parameters"]["trainable"] > 0
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("n_context", [1, 7, 8, 9, 30])
def test_windows_keep_question_and_specials_and_share_stride_context_tokens(n_context):
    """``[CLS] q q q [SEP] c... [SEP]`` cut with max_length 14 (8 context tokens per window), stride 3."""
    ids = [101, 1, 2, 3, 102] + list(range(1000, 1000 + n_context)) + [102]
    types = [0] * 5 + [1] * (n_context + 1)
    offsets = [(0, 0)] * 5 + [(10 * i, 10 * i + 5) for i in range(n_context)] + [(0, 0)]
    sequence_ids = [None, 0, 0, 0, None] + [1] * n_context + [None]
    windows = _windows(ids, types, offsets, sequence_ids, max_length=14, stride=3)
    pieces = []
    for w_ids, w_types, w_offsets in windows:
        assert len(w_ids) <= 14 and len(w_ids) == len(w_types) == len(w_offsets)
        assert w_ids[:5] == [101, 1, 2, 3, 102] and w_ids[-1] == 102 and w_types[:5] == [0] * 5
        piece = w_ids[5:-1]
        assert all(o == (10 * (t - 1000), 10 * (t - 1000) + 5) for t, o in zip(piece, w_offsets[5:-1], strict=True))
        assert w_offsets[:5] == [(-1, -1)] * 5 and w_offsets[-1] == (-1, -1)
        pieces.append(piece)
    assert pieces[0][0] == 1000 and pieces[-1][-1] == 1000 + n_context - 1
    for a, b in zip(pieces, pieces[1:], strict=False):
        assert len(a) == 8 and a[-3:] == b[:3]  # full windows before the last; 3 shared tokens
    assert len(windows) == max(1, -(-(n_context - 3) // 5))  # ceil((n - stride) / (room - stride))
    with pytest.raises(ValueError, match="8 context tokens per window, not more than stride=8"):
        _windows(ids, types, offsets, sequence_ids, max_length=14, stride=8)
