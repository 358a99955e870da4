"""SuperGLUE plugins on synthetic files in the official JSONL layout (the real data is not available offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import minilm_tokenizer
from torch import nn

from lorakit.train.tasks import DataError, get_task
from lorakit.train.tasks.superglue import CandidateScore

PASSAGE = "Alice met Bob in Paris. @highlight\nThey visited the Louvre together."


def _rows(task: str) -> list[dict]:
    """Two rows of ``task`` in the official layout (labels of both classes where the task has classes)."""
    if task == "boolq":
        return [{"question": "is paris in france", "passage": "Paris is the capital of France.", "idx": 0,
                 "label": True},
                {"question": "is paris in spain", "passage": "Paris is the capital of France.", "idx": 1,
                 "label": False}]
    if task == "cb":
        return [{"premise": "It rained.", "hypothesis": "The street is wet.", "label": "entailment", "idx": 0},
                {"premise": "It rained.", "hypothesis": "It was dry.", "label": "contradiction", "idx": 1},
                {"premise": "It rained.", "hypothesis": "Bob was sad.", "label": "neutral", "idx": 2}]
    if task == "copa":
        return [{"premise": "The man broke his toe.", "choice1": "He dropped a hammer on his foot.",
                 "choice2": "He got a hole in his sock.", "question": "cause", "idx": 0, "label": 0},
                {"premise": "I tipped the bottle.", "choice1": "The liquid in the bottle froze.",
                 "choice2": "The liquid in the bottle poured out.", "question": "effect", "idx": 1, "label": 1}]
    if task == "superglue_rte":
        return [{"premise": "Dana Reeve died.", "hypothesis": "Dana Reeve is dead.", "label": "entailment",
                 "idx": 0},
                {"premise": "Dana Reeve died.", "hypothesis": "Dana Reeve is alive.", "label": "not_entailment",
                 "idx": 1}]
    if task == "wic":
        return [{"word": "place", "sentence1": "Do you want to come over to my place later?",
                 "sentence2": "A political system with no place for the less prominent groups.", "idx": 0,
                 "label": False, "start1": 31, "start2": 27, "end1": 36, "end2": 32},
                {"word": "bank", "sentence1": "He sat on the river bank.", "sentence2": "The bank of the river.",
                 "idx": 1, "label": True, "start1": 20, "start2": 4, "end1": 24, "end2": 8}]
    if task == "wsc":
        return [{"text": "Mark told Pete many lies about himself, which Pete included in his book.",
                 "target": {"span2_index": 13, "span1_index": 0, "span1_text": "Mark", "span2_text": "He"},
                 "idx": 0, "label": False},
                {"text": "The trophy does not fit in the suitcase because it is too big.",
                 "target": {"span2_index": 9, "span1_index": 1, "span1_text": "trophy", "span2_text": "it"},
                 "idx": 1, "label": True}]
    if task == "multirc":
        return [{"idx": 0, "version": 1.1, "passage": {"text": "Sam has two cats and a dog. They live in Rome.",
                 "questions": [
                     {"question": "How many cats?", "idx": 0, "answers": [
                         {"text": "two", "idx": 0, "label": 1}, {"text": "three", "idx": 1, "label": 0}]},
                     {"question": "Where do they live?", "idx": 1, "answers": [
                         {"text": "Rome", "idx": 2, "label": 1}, {"text": "in Rome", "idx": 3, "label": 1},
                         {"text": "Oslo", "idx": 4, "label": 0}]}]}}]
    if task == "record":
        ents = [{"start": PASSAGE.index(name), "end": PASSAGE.index(name) + len(name) - 1}
                for name in ("Alice", "Bob", "Paris", "Louvre")]
        return [{"idx": 0, "source": "synthetic", "passage": {"text": PASSAGE, "entities": ents},
                 "qas": [{"query": "@placeholder met Bob.", "idx": 7, "answers": [
                     {"start": 0, "end": 4, "text": "Alice"}]},
                         {"query": "They visited @placeholder.", "idx": 8, "answers": [
                     {"start": PASSAGE.index("Louvre"), "end": PASSAGE.index("Louvre") + 5, "text": "Louvre"}]}]}]
    raise KeyError(task)


FOLDERS = {"boolq": "BoolQ", "cb": "CB", "copa": "COPA", "superglue_rte": "RTE", "wic": "WiC", "wsc": "WSC",
           "multirc": "MultiRC", "record": "ReCoRD"}


@pytest.fixture(scope="module")
def superglue_root(tmp_path_factory) -> Path:
    """A SuperGLUE root: TASK/train.jsonl (the rows four times) and TASK/val.jsonl (the rows once)."""
    root = tmp_path_factory.mktemp("superglue")
    for task, folder in FOLDERS.items():
        (root / folder).mkdir()
        rows = _rows(task)
        (root / folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
        (root / folder / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def tokenizer():
    return minilm_tokenizer()


class Constant(nn.Module):
    """A model whose logits are fixed per row (for predict/metrics tests)."""

    def __init__(self, rows: torch.Tensor):
        super().__init__()
        self.rows = rows

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.rows[: input_ids.shape[0]]


@pytest.mark.parametrize("name", list(FOLDERS))
def test_each_task_reads_the_official_layout_and_runs_the_contract(name, superglue_root, tokenizer):
    task = get_task(name)
    examples = task.load("dev", superglue_root)  # dev reads val.jsonl
    expected = {"multirc": 5, "record": 8}.get(name, len(_rows(name)))  # MultiRC: options, ReCoRD: candidates
    assert len(examples) == expected
    items = task.encode(examples, tokenizer, {"max_length": 64})
    batch = task.collate(items)
    choices = 2 if name == "copa" else 1
    assert batch["input_ids"].shape[0] == len(items) * choices and batch["labels"].shape == (len(items),)
    model = Constant(torch.randn(len(items) * choices, task.num_labels, requires_grad=True))
    loss = task.loss(model, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    preds = task.predict(model, batch)
    preds = preds.float().tolist() if isinstance(preds, torch.Tensor) else preds
    scores = task.metrics(preds, [it["label"] for it in items])
    assert task.main_metric in scores and all(0.0 <= v <= 1.0 for v in scores.values())
    assert set(task.metrics([0, 1], [0, 1])) >= {task.main_metric}  # the loop's probe of metric names


def test_copa_softmax_runs_over_the_choices(superglue_root, tokenizer):
    task = get_task("copa")
    items = task.encode(task.load("dev", superglue_root), tokenizer, {"max_length": 64})
    batch = task.collate(items)
    scores = torch.tensor([[3.0], [1.0], [0.0], [2.0]])  # example 0 picks choice 0, example 1 choice 1
    assert task.predict(Constant(scores), batch).tolist() == [0, 1]
    assert task.metrics([0.0, 1.0], [0, 1]) == {"acc": 1.0}


def test_multirc_scores_per_question(superglue_root, tokenizer):
    task = get_task("multirc")
    examples = task.load("dev", superglue_root)
    refs = [e.reference for e in examples]
    assert [r[1] for r in refs] == [1, 0, 1, 1, 0] and refs[0][0] == refs[1][0] != refs[2][0]
    scores = task.metrics([1, 0, 1, 0, 0], refs)  # question 1 right, question 2 misses "in Rome"
    assert scores["em"] == 0.5
    assert scores["f1a"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))


def test_record_picks_the_best_candidate_per_query(superglue_root):
    task = get_task("record")
    examples = task.load("dev", superglue_root)
    refs = [e.reference for e in examples]
    assert [r[1] for r in refs[:4]] == ["Alice", "Bob", "Paris", "Louvre"]
    assert all("@placeholder" not in e.pairs[0][0] and "@highlight" not in e.pairs[0][1] for e in examples)
    best_right = [CandidateScore(s) for s in (5, 1, 0, 0, 0, 0, 0, 9)]
    assert task.metrics(best_right, refs) == {"em": 1.0, "f1": 1.0}
    half = [CandidateScore(s) for s in (5, 1, 0, 0, 0, 0, 9, 0)]  # query 2 answers "Paris"
    assert task.metrics(half, refs)["em"] == 0.5


def test_bad_files_name_the_expected_layout(tmp_path, superglue_root):
    task = get_task("boolq")
    with pytest.raises(DataError, match=r"no val.jsonl for task 'boolq'.*official SuperGLUE JSONL layout"):
        task.load("dev", tmp_path)
    (tmp_path / "val.jsonl").write_text("question\tpassage\tlabel\nis it\tyes it is\tTrue\n")
    with pytest.raises(DataError, match=r"val.jsonl:1: not a JSON object; task 'boolq' expects the official"):
        task.load("dev", tmp_path)
    (tmp_path / "val.jsonl").write_text(json.dumps(_rows("cb")[0]) + "\n")
    with pytest.raises(DataError, match=r"val.jsonl:1: lacks \['question', 'passage'\].*BoolQ file"):
        task.load("dev", tmp_path)
    test_row = {k: v for k, v in _rows("boolq")[0].items() if k != "label"}
    (tmp_path / "test.jsonl").write_text(json.dumps(test_row) + "\n")
    with pytest.raises(DataError, match="no \"label\" \\(test files carry none"):
        task.load("test", tmp_path)
    bad = _rows("record")[0]
    bad["passage"]["entities"].append({"start": 5, "end": 500})
    (tmp_path / "val.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"entities\[4\] \[5, 500\] lies outside the passage"):
        get_task("record").load("dev", tmp_path)


@pytest.mark.parametrize("name", ["copa", "record"])
def test_training_runs_end_to_end(name, tmp_path, superglue_root, kit):
    cfg = kit.tiny_config(superglue_root, task={"name": name},
                          data={"max_length": 64, "max_train_examples": None, "max_eval_examples": None},
                          training={"batch_size": 4, "max_steps": 2, "checkpoint_every": 2, "keep_last": 1},
                          evaluation={"every": 2, "average_last": 1, "batch_size": 8})
    results = kit.run(cfg, tmp_path / "run")
    metrics = results["final"]
    assert results["main_metric"] in metrics and 0.0 <= metrics[results["main_metric"]] <= 1.0
