"""GLUE/SuperGLUE metrics on hand-worked examples and the degenerate cases (constant inputs, ties)."""

from __future__ import annotations

import math

import pytest

from lorakit.metrics.classification import (
    GLUE_TASKS,
    accuracy,
    canonical_label,
    f1_binary,
    glue_metrics,
    macro_f1,
    matthews_corrcoef,
    multirc_metrics,
    pearson,
    record_metrics,
    spearman,
    superglue_metrics,
)


def test_accuracy_and_label_canonicalisation():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    # 1, 1.0, True and " 1 " are one label; "entailment" strings compare as strings.
    assert accuracy([True, 1.0, " 1 ", "entailment"], [1, "1", 1, "entailment"]) == 1.0
    assert canonical_label(2.5) == "2.5" and canonical_label(False) == "0"


def test_binary_f1_hand_worked():
    # tp=2 (positions 0, 4), fp=1 (1), fn=1 (3): F1 = 2*2 / (2*2 + 1 + 1) = 2/3
    assert f1_binary([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(2 / 3)
    assert f1_binary([0, 0], [0, 0]) == 0.0  # no positive anywhere: undefined -> 0
    assert f1_binary(["0", "0"], ["1", "1"]) == 0.0


def test_macro_f1_cb_hand_worked():
    # class 0: tp1 fn1 -> 2/3; class 1: tp1 fp1 -> 2/3; class 2: 1.0
    assert macro_f1([0, 1, 1, 2], [0, 0, 1, 2]) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    # an explicitly listed class absent from both sides contributes F1 0
    assert macro_f1([0, 1], [0, 1], labels=[0, 1, 2]) == pytest.approx(2 / 3)


def test_mcc_binary_hand_worked():
    # tp=2, tn=1, fp=1, fn=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    preds = [1, 1, 1, 0, 0]
    refs = [1, 1, 0, 1, 0]
    assert matthews_corrcoef(preds, refs) == pytest.approx(1 / 6)
    assert matthews_corrcoef([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)


def test_mcc_constant_predictions_or_references_give_zero():
    assert matthews_corrcoef([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0
    assert matthews_corrcoef([1, 0, 1, 0], [0, 0, 0, 0]) == 0.0
    assert matthews_corrcoef([1, 1], [1, 1]) == 0.0


def test_mcc_multiclass_hand_worked():
    # confusion (rows true, cols pred): [[2,0,0],[1,0,1],[0,1,1]]; c=3, s=6, t=(2,2,2), p=(3,1,2)
    # (3*6 - (3*2 + 1*2 + 2*2)) / sqrt((36 - 14) * (36 - 12))
    value = matthews_corrcoef([0, 2, 1, 0, 0, 2], [0, 1, 2, 0, 1, 2])
    assert value == pytest.approx(6 / math.sqrt(22 * 24))


def test_pearson_hand_worked_and_constant_is_nan():
    # x=(1,2,3), y=(2,4,7): sum dx*dy = 5, sum dx^2 = 2, sum dy^2 = 114/9
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(pearson([2, 2, 2], [1, 2, 3]))
    assert math.isnan(pearson([1, 2, 3], [0.5, 0.5, 0.5]))


def test_spearman_average_ranks_for_ties():
    # ranks x = (1, 2.5, 2.5, 4), y = (1, 3, 2, 4): 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    # monotone but non-linear: rank correlation is exactly 1 while Pearson is not
    assert spearman([1, 2, 3, 4], [1, 8, 27, 1000]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [1, 8, 27, 1000]) < 0.9
    assert math.isnan(spearman([5, 5, 5], [1, 2, 3]))


def test_glue_metrics_report_exactly_the_benchmark_set():
    expected = {
        "cola": {"mcc"}, "sst2": {"acc"}, "mrpc": {"acc", "f1"}, "stsb": {"pearson", "spearmanr"},
        "qqp": {"acc", "f1"}, "mnli": {"acc"}, "qnli": {"acc"}, "rte": {"acc"},
    }
    for task, names in expected.items():
        assert set(GLUE_TASKS[task]) == names
        if task == "stsb":
            out = glue_metrics(task, [0.5, 2.0, 4.5], [1.0, 2.5, 4.0])
        else:
            out = glue_metrics(task, ["1", "0", "1"], ["1", "1", "1"])
        assert set(out) == names, task
    mrpc = glue_metrics("MRPC", [1, 0, 1, 1], ["1", "1", "0", "1"])
    assert mrpc == pytest.approx({"acc": 0.5, "f1": 2 * 2 / (2 * 2 + 1 + 1)})
    assert glue_metrics("sts-b", [1, 2, 3], [2, 4, 7])["pearson"] == pytest.approx(0.99339927)
    assert glue_metrics("mnli-mm", ["neutral"], ["neutral"]) == {"acc": 1.0}


def test_glue_metrics_bad_input_messages():
    with pytest.raises(ValueError, match="unknown GLUE task 'sts'.*cola, sst2"):
        glue_metrics("sts", [1], [1])
    with pytest.raises(ValueError, match="3 predictions but 2 references"):
        glue_metrics("rte", [1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        pearson([1.0], [2.0])
    with pytest.raises(ValueError, match="must be numbers"):
        spearman(["a", "b"], [1, 2])


def test_superglue_cb_multirc_record():
    assert superglue_metrics("cb", [0, 1, 1, 2], [0, 0, 1, 2]) == pytest.approx(
        {"acc": 0.75, "f1": (2 / 3 + 2 / 3 + 1) / 3}
    )
    assert superglue_metrics("boolq", [True, False], [1, 1]) == {"acc": 0.5}
    # f1a over options: tp=2, fp=1, fn=0 -> 0.8; em: q1 and q3 all right, q2 not -> 2/3
    out = multirc_metrics(["q1", "q1", "q2", "q2", "q3"], [1, 0, 1, 1, 0], [1, 0, 1, 0, 0])
    assert out == pytest.approx({"f1a": 0.8, "em": 2 / 3})
    # query 1: exact after dropping "the"; query 2: 1 shared token of 2 predicted -> F1 2/3
    rec = record_metrics(["the Eiffel Tower", "Paris France"], [["Eiffel Tower", "Tower"], ["Paris"]])
    assert rec == pytest.approx({"em": 0.5, "f1": (1 + 2 / 3) / 2})
    with pytest.raises(ValueError, match="non-empty list of gold answers"):
        record_metrics(["x"], [[]])


def test_the_metrics_package_reexports_each_module_public_names():
    import lorakit.metrics as package
    from lorakit.metrics import classification, nlg, qa

    for module in (classification, nlg, qa):
        for name in module.__all__:
            assert getattr(package, name) is getattr(module, name), f"lorakit.metrics.{name}"
    assert "accuracy" in package.__all__ and "squad_v2_scores" in package.__all__ and "e2e_metrics" in package.__all__
