"""SQuAD v1.1/v2.0 exact match and F1: hand-worked examples, and agreement with the official scripts.

Official numbers (obtained once, outside this repository, on the real dev set with the deterministic
predictions of ``_predictions`` below and the derived v2.0 set of ``_derived_v2``):

* v1.1: ``evaluate-v1.1.py`` (the official v1.1 script; the copy in github.com/seominjoon/denspi at
  commit fdb601788982115dc040a7a7943f5f26d6542372, blob 63036e3b81ac) run as
  ``python evaluate-v1.1.py dev-v1.1.json preds.json`` printed
  ``{"exact_match": 23.169347209082307, "f1": 45.36085060014525}``.
* v2.0: ``evaluate-v2.0.py`` from github.com/rajpurkar/SQuAD-explorer at commit
  eee5fdbf62f8613a7812b03419e6b29617b74fd1, run as ``python evaluate-v2.0.py DATA preds.json``, printed
  for DATA = dev-v1.1.json: exact 23.15988647114475, f1 45.36085060014525 (all HasAns); and for the
  derived set: the dict in ``test_squad_v2_agrees_with_official_script_on_derived_unanswerable_set``.
"""

from __future__ import annotations

import copy
import json

import pytest
from helpers import need, shared_data

from lorakit.metrics.qa import (
    exact_match_score,
    f1_score,
    normalize_answer,
    squad_questions,
    squad_v1_scores,
    squad_v2_scores,
)

SQUAD_DEV = shared_data() / "squad" / "dev-v1.1.json"


def _dev() -> dict:
    return json.loads(need(SQUAD_DEV).read_text(encoding="utf-8"))


def _predictions(dataset: dict) -> dict[str, str]:
    """Question k (dataset order): gold / gold minus first word / gold + words / 3 context words / ""."""
    preds = {}
    k = 0
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            context_words = paragraph["context"].split()
            for qa in paragraph["qas"]:
                gold = qa["answers"][0]["text"]
                preds[qa["id"]] = [
                    gold,
                    " ".join(gold.split()[1:]),
                    gold + " and more",
                    " ".join(context_words[:3]),
                    "",
                ][k % 5]
                k += 1
    return preds


def _derived_v2(dataset: dict) -> dict:
    """Every 7th question (dataset order) made unanswerable: answers [] and is_impossible true."""
    derived = copy.deepcopy(dataset)
    k = 0
    for article in derived["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if k % 7 == 0:
                    qa["answers"] = []
                qa["is_impossible"] = k % 7 == 0
                k += 1
    return derived


def test_normalisation():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("Theatre (1920s)") == "theatre 1920s"  # articles only as whole words
    assert normalize_answer("U.S.-based") == "usbased"


def test_em_and_f1_hand_worked():
    assert exact_match_score("the Denver Broncos", "Denver Broncos!") == 1.0
    assert exact_match_score("Denver", "Denver Broncos") == 0.0
    # pred {cat, sat}, gold {cat, sat, down}: P = 1, R = 2/3, F1 = 0.8
    assert f1_score("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # repeated tokens count as a multiset: pred (a b b), gold (b b b): 2 shared, P=2/3, R=2/3
    assert f1_score("x b b", "b b b") == pytest.approx(2 / 3)
    assert f1_score("nothing shared", "at all") == 0.0


def test_empty_answers_v1_vs_v2():
    assert f1_score("", "", "1.1") == 0.0  # v1.1: no shared token -> 0
    assert f1_score("", "", "2.0") == 1.0  # v2.0: both empty -> 1
    assert f1_score("", "Denver", "2.0") == 0.0
    assert f1_score("the", "", "2.0") == 1.0  # "the" normalises to nothing
    with pytest.raises(ValueError, match="unknown SQuAD version"):
        f1_score("a", "b", "3")


def _tiny_dataset() -> dict:
    return {
        "version": "v2.0",
        "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [
            {"id": "q1", "question": "?", "answers": [{"text": "Denver Broncos", "answer_start": 0},
                                                      {"text": "Broncos", "answer_start": 7}]},
            {"id": "q2", "question": "?", "answers": [{"text": "Santa Clara", "answer_start": 0}]},
            {"id": "q3", "question": "?", "answers": [], "is_impossible": True},
        ]}]}],
    }


def test_squad_v2_hand_worked_with_no_answer_breakdown():
    preds = {"q1": "Broncos", "q2": "Clara, California", "q3": ""}
    out = squad_v2_scores(_tiny_dataset(), preds)
    # q1 exact (max over golds); q2 F1: 1 shared of 2 pred / 2 gold -> 0.5; q3 empty on no-answer -> 1
    assert out["exact"] == pytest.approx(100 * 2 / 3)
    assert out["f1"] == pytest.approx(100 * (1 + 0.5 + 1) / 3)
    assert (out["HasAns_total"], out["NoAns_total"], out["total"]) == (2, 1, 3)
    assert out["HasAns_f1"] == pytest.approx(75.0)
    assert out["NoAns_exact"] == out["NoAns_f1"] == 100.0
    assert out["missing"] == 0
    # answering an unanswerable question scores 0 on it
    wrong = squad_v2_scores(_tiny_dataset(), {**preds, "q3": "Denver"})
    assert wrong["NoAns_exact"] == wrong["NoAns_f1"] == 0.0


def test_squad_missing_prediction_scores_zero_and_is_counted():
    dataset = _tiny_dataset()
    dataset["data"][0]["paragraphs"][0]["qas"].pop()  # v1-style: all answerable
    out = squad_v1_scores(dataset, {"q1": "Denver Broncos"})
    assert out == pytest.approx({"exact_match": 50.0, "f1": 50.0, "total": 2, "missing": 1})


def test_squad_bad_dataset_messages():
    with pytest.raises(ValueError, match="not a SQuAD dataset"):
        squad_v1_scores({"version": "1.1"}, {})
    dup = _tiny_dataset()
    dup["data"][0]["paragraphs"][0]["qas"][1]["id"] = "q1"
    with pytest.raises(ValueError, match="question id 'q1' twice"):
        squad_questions(dup)
    with pytest.raises(ValueError, match="use the v2.0 rules"):
        squad_v1_scores(_tiny_dataset(), {"q1": "x", "q2": "y", "q3": ""})


def test_squad_v1_agrees_with_official_script_on_dev():
    dev = _dev()
    out = squad_v1_scores(dev, _predictions(dev))
    assert out["total"] == 10570 and out["missing"] == 0
    assert out["exact_match"] == pytest.approx(23.169347209082307, abs=1e-9)
    assert out["f1"] == pytest.approx(45.36085060014525, abs=1e-9)


def test_squad_v2_agrees_with_official_script_on_dev():
    dev = _dev()
    out = squad_v2_scores(dev, _predictions(dev))
    assert out["exact"] == pytest.approx(23.15988647114475, abs=1e-9)
    assert out["f1"] == pytest.approx(45.36085060014525, abs=1e-9)
    assert out["HasAns_total"] == 10570 and "NoAns_total" not in out


def test_squad_v2_agrees_with_official_script_on_derived_unanswerable_set():
    dev = _dev()
    out = squad_v2_scores(_derived_v2(dev), _predictions(dev))
    official = {
        "exact": 23.59508041627247, "f1": 42.785748882827974, "total": 10570,
        "HasAns_exact": 23.002207505518765, "HasAns_f1": 45.391320716499756, "HasAns_total": 9060,
        "NoAns_exact": 27.1523178807947, "NoAns_f1": 27.1523178807947, "NoAns_total": 1510,
    }
    assert {k: out[k] for k in official} == pytest.approx(official, abs=1e-9)
