"""Natural Questions short answers: the official metric on hand-worked cases, conversion of the simplified JSONL
(HTML tokens, character offsets), file discovery, bad input, and the SQuAD machinery end to end."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from helpers import minilm_tokenizer

from lorakit.metrics.qa import NQAnnotation, nq_gold_has_short_answer, nq_short_answer_scores
from lorakit.train.tasks import DataError, get_task
from lorakit.train.tasks.squad import SpanPrediction

WINDOW = {"max_length": 48, "doc_stride": 8, "max_query_length": 16, "max_answer_length": 10}

DOC = ("Eiffel Tower - Wikipedia <H1> Eiffel Tower </H1> <P> The Eiffel Tower was completed in 1889 by Gustave "
       "Eiffel 's company . </P> <Table> <Tr> <Th> Height </Th> <Td> 300 m </Td> </Tr> </Table> <P> It is in "
       "Paris , France . </P>")


def _span(words: str, doc: str = DOC) -> dict:
    """The token span [start, end) of ``words`` (space-separated tokens) in ``doc``."""
    tokens, target = doc.split(" "), words.split(" ")
    start = next(i for i in range(len(tokens)) if tokens[i:i + len(target)] == target)
    return {"start_token": start, "end_token": start + len(target), "start_byte": -1, "end_byte": -1}


def _annotation(*spans: str, yes_no: str = "NONE", doc: str = DOC) -> dict:
    return {"annotation_id": 1, "yes_no_answer": yes_no,
            "long_answer": {"start_token": -1, "end_token": -1, "candidate_index": -1},
            "short_answers": [_span(s, doc) for s in spans]}


def _example(example_id: int, question: str, annotations: list[dict], doc: str = DOC) -> dict:
    """One line of the simplified release, with every key it has."""
    return {"example_id": example_id, "question_text": question, "document_text": doc,
            "document_url": "https://en.wikipedia.org//w/index.php?title=Eiffel_Tower&oldid=1",
            "long_answer_candidates": [{"start_token": 7, "end_token": 26, "top_level": True}],
            "annotations": annotations}


def _write(path: Path, records: list, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _dev_records() -> list[dict]:
    """5-way annotated examples: answered by 3 annotators; by 1 only (gold null); by nobody."""
    return [
        _example(101, "when was the eiffel tower completed",
                 [_annotation("1889"), _annotation("1889"), _annotation("in 1889"), _annotation(), _annotation()]),
        _example(102, "how tall is the eiffel tower",
                 [_annotation("300 m"), _annotation(), _annotation(), _annotation(), _annotation()]),
        _example(103, "who painted the eiffel tower", [_annotation() for _ in range(5)]),
    ]


@pytest.fixture(scope="module")
def tokenizer():
    return minilm_tokenizer()


# -- the metric, by hand -------------------------------------------------------------------------------

def test_gold_rule_two_of_five_annotators_or_the_single_annotation():
    span, none = NQAnnotation(((3, 5),)), NQAnnotation()
    assert nq_gold_has_short_answer([span, span, none, none, none])
    assert not nq_gold_has_short_answer([span, none, none, none, none])
    assert nq_gold_has_short_answer([NQAnnotation(yes_no_answer="YES"), span, none, none, none])  # yes/no counts
    assert nq_gold_has_short_answer([span]) and not nq_gold_has_short_answer([none])  # train files: 1 annotation
    assert not nq_gold_has_short_answer([])


def test_short_answer_precision_recall_f1_hand_worked():
    none = NQAnnotation()
    gold = {
        "a": [NQAnnotation(((10, 12),))] * 3 + [NQAnnotation(((10, 13),)), none],  # gold; pred matches one annotator
        "b": [NQAnnotation(((5, 6),)), none, none, none, none],  # one annotator only: gold null
        "c": [NQAnnotation(yes_no_answer="YES")] * 2 + [none] * 3,  # a yes/no question
        "d": [NQAnnotation(((1, 2), (3, 4)))] * 2 + [none] * 3,  # a two-span answer (a list)
        "e": [NQAnnotation(((7, 9),))],  # train format
        "f": [none] * 5,
    }
    predictions = {"a": (10, 13), "b": (5, 6), "c": "YES", "d": (1, 2), "e": [(7, 9)], "f": None}
    # correct: a, c, e (d's span set differs from {(1,2),(3,4)}; b has no gold answer); non-null predictions: a-e;
    # gold non-null: a, c, d, e.
    scores = nq_short_answer_scores(gold, predictions)
    assert (scores["correct"], scores["pred_non_null"], scores["gold_non_null"]) == (3, 5, 4)
    assert scores["precision"] == pytest.approx(3 / 5) and scores["recall"] == pytest.approx(3 / 4)
    assert scores["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    # the whole span set, in any order, matches; a "NO" does not match "YES"; the null span (-1, -1) is no answer
    better = nq_short_answer_scores(gold, {**predictions, "d": [(3, 4), (1, 2)], "c": "NO", "b": (-1, -1)})
    assert (better["correct"], better["pred_non_null"]) == (3, 4)
    assert better["precision"] == pytest.approx(3 / 4) and better["recall"] == pytest.approx(3 / 4)


def test_metric_edge_cases():
    gold = {"a": [NQAnnotation()] * 5}
    assert nq_short_answer_scores(gold, {"a": None}) == {"f1": 0.0, "precision": 0.0, "recall": 0.0, "examples": 1,
                                                         "gold_non_null": 0, "pred_non_null": 0, "correct": 0}
    with pytest.raises(ValueError, match=r"different examples: 1 without a prediction \(e\.g\. \['a'\]\)"):
        nq_short_answer_scores(gold, {"b": None})
    with pytest.raises(ValueError, match="no examples"):
        nq_short_answer_scores({}, {})
    with pytest.raises(ValueError, match="YES, NO or NONE"):
        nq_short_answer_scores(gold, {"a": "Paris"})


# -- conversion and files ------------------------------------------------------------------------------

def test_html_tokens_are_dropped_and_offsets_point_at_the_answer(tmp_path):
    _write(tmp_path / "train.jsonl", [_example(1, "how tall is it", [_annotation("300 m")]),
                                      _example(2, "is it in paris", [_annotation(yes_no="YES")])])
    plain, yes_no = get_task("nq").load("train", tmp_path)
    assert "<" not in plain.context and plain.context.startswith("Eiffel Tower - Wikipedia Eiffel Tower The Eiffel")
    assert plain.answers == ("300 m",) and plain.context[plain.answer_starts[0]:].startswith("300 m It is in Paris")
    assert not plain.is_impossible and plain.qid == "1"
    assert yes_no.is_impossible and yes_no.answers == ()  # a span head cannot say yes: trained as no answer
    assert yes_no.annotations[0].yes_no_answer == "YES"
    kept = get_task("nq", keep_html=True).load("train", tmp_path)[0]
    assert "<H1> Eiffel Tower </H1> <P> The" in kept.context and kept.answers == ("300 m",)
    assert kept.context[kept.answer_starts[0]:kept.answer_starts[0] + 11] == "300 m </Td>"
    assert len(kept.kept) == len(DOC.split(" ")) > len(plain.kept)


def test_split_files_gz_shards_subfolder_and_original_format(tmp_path):
    train = _write(tmp_path / "a" / "simplified-nq-train.jsonl.gz", [_example(1, "q", [_annotation("1889")])], gz=True)
    assert get_task("nq").split_paths("train", tmp_path / "a") == [train]
    records = _dev_records()
    shards = [_write(tmp_path / "b" / "nq" / f"nq-dev-0{i}.jsonl.gz", [r], gz=True) for i, r in enumerate(records)]
    assert get_task("nq").split_paths("dev", tmp_path / "b") == shards  # shards in order, inside nq/
    assert [e.qid for e in get_task("nq").load("dev", tmp_path / "b")] == ["101", "102", "103"]
    # the original layout (document_tokens with html flags, as in nq-dev-00.jsonl.gz) is simplified on the way
    original = dict(records[0])
    original.pop("document_text")
    original["document_tokens"] = [{"token": t, "html_token": t.startswith("<"), "start_byte": 0, "end_byte": 1}
                                   for t in DOC.split(" ")]
    original["document_tokens"][DOC.split(" ").index("France")]["token"] = "France today"  # becomes France_today
    _write(tmp_path / "c" / "nq-dev-all.jsonl", [original])
    e = get_task("nq").load("dev", tmp_path / "c")[0]
    assert e.context.endswith("Paris , France_today .") and e.answers[0] == "1889" and "<P>" not in e.context
    with pytest.raises(DataError, match=r"no dev\.jsonl \(nor simplified-nq-dev\.jsonl.*task 'nq'"):
        get_task("nq").load("dev", tmp_path / "a")


def test_bad_input_names_file_line_and_example(tmp_path):
    good = json.dumps(_example(1, "q", [_annotation("1889")]))
    path = _write(tmp_path / "x" / "train.jsonl", [good, '{"example_id": 2, "question_text": "q", "document_te'])
    with pytest.raises(DataError, match=r"train\.jsonl:2: not JSON .*Natural Questions JSONL layout"):
        get_task("nq").load("train", path.parent)
    bad = _example(7, "q", [_annotation("1889")])
    bad["annotations"][0]["short_answers"][0]["end_token"] = 400
    _write(tmp_path / "y" / "train.jsonl", [good, bad])
    with pytest.raises(DataError, match=r"train\.jsonl:2: example 7: annotations\[0\]\.short_answers\[0\] covers "
                                        r"tokens \[\d+, 400\), outside the document's \d+ tokens"):
        get_task("nq").load("train", tmp_path / "y")
    test_line = _example(8, "q", [])
    test_line.pop("annotations")
    _write(tmp_path / "z" / "test.jsonl", [test_line])
    with pytest.raises(DataError, match=r"test\.jsonl:1: example 8 has no \"annotations\"; only the train and dev"):
        get_task("nq").load("test", tmp_path / "z")
    _write(tmp_path / "w" / "train.jsonl", [good, good])
    with pytest.raises(DataError, match=r"train\.jsonl:2: example id 1 appears twice"):
        get_task("nq").load("train", tmp_path / "w")


# -- windows, predictions, metric ----------------------------------------------------------------------

def _oracle(items: list[dict]) -> list[SpanPrediction]:
    """A perfect model: each window's target span scores high; windows without one point at [CLS]."""
    return [SpanPrediction(10.0 if it["start"] else -5.0, it["offsets"][it["start"]][0],
                           it["offsets"][it["end"]][1], 0.0) for it in items]


def test_oracle_spans_map_back_to_document_tokens_and_score_one(tmp_path, tokenizer):
    _write(tmp_path / "dev.jsonl", _dev_records())
    task = get_task("nq")
    examples = task.load("dev", tmp_path)
    items = task.encode(examples, tokenizer, WINDOW)
    assert len(items) > len(examples)  # the document is cut into several windows
    refs = [it["label"] for it in items]
    spans = task.best_spans(_oracle(items), refs)
    assert spans["102"] is not None and spans["103"] is None  # 102 trains on its one answer; 103 has none
    assert task.token_span("101", spans["101"]) == (_span("1889")["start_token"], _span("1889")["end_token"])
    scores = task.metrics(_oracle(items), refs)
    # 101: gold (3 annotators), predicted right; 102: predicted, but gold null (1 annotator); 103: nothing
    assert (scores["correct"], scores["pred_non_null"], scores["gold_non_null"]) == (1, 2, 1)
    assert scores["recall"] == 1.0 and scores["precision"] == 0.5 and scores["f1"] == pytest.approx(2 / 3)
    assert task.metrics([0.0], ["101"]) == {"f1": pytest.approx(float("nan"), nan_ok=True),
                                            "precision": pytest.approx(float("nan"), nan_ok=True),
                                            "recall": pytest.approx(float("nan"), nan_ok=True)}


def test_training_run_reports_nq_scores(tmp_path, kit):
    records = [_example(i, q, [_annotation(a)]) for i, (q, a) in enumerate(
        [("when was it completed", "1889"), ("how tall is it", "300 m"), ("where is it", "Paris , France"),
         ("who built it", "Gustave Eiffel 's company")] * 2)]
    _write(tmp_path / "data" / "train.jsonl", records)
    _write(tmp_path / "data" / "dev.jsonl", _dev_records())
    cfg = kit.tiny_config(tmp_path / "data", task={"name": "nq"}, data={**WINDOW, "max_train_examples": None},
                          training={"batch_size": 8, "max_steps": 4, "checkpoint_every": 4, "seed": 1},
                          evaluation={"every": 4, "average_last": 1, "batch_size": 32})
    results = kit.run(cfg, tmp_path / "run")
    assert results["task"] == "nq" and results["main_metric"] == "f1"
    final = results["final"]
    assert final["examples"] == 3 and final["gold_non_null"] == 1 and 0.0 <= final["f1"] <= 1.0
    assert tuple(kit.tensors(tmp_path / "run")["classifier.weight"].shape) == (2, 32)
