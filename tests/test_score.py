"""``lorakit score`` end to end: real dev files, the official E2E numbers, and the bad-input messages."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from helpers import need, shared_data

from lorakit.cli import main as lorakit_main
from lorakit.metrics.classification import glue_metrics
from lorakit.metrics.nlg import group_references, mteval_bleu_nist


def _data(relative: str) -> Path:
    return need(shared_data() / relative)


def score(capsys, *args: str) -> tuple[int, str, str]:
    rc = lorakit_main(["score", *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _glue_labels(task_dir: str, column: int, header: bool = True) -> list[str]:
    lines = _data(f"glue/{task_dir}/dev.tsv").read_text(encoding="utf-8-sig").splitlines()
    return [line.split("\t")[column] for line in lines[1 if header else 0 :] if line]


# --- E2E through the CLI, against the official scorer ------------------------------------------------


def test_e2e_cli_reproduces_official_scorer_and_reports_empty_lines(capsys, tmp_path):
    # Same slice and system as tests/train/test_metrics_nlg.py (sys_b: 5 empty outputs); the official
    # measure_scores.py printed BLEU 0.8301, NIST 9.8458, METEOR 0.5496, ROUGE_L 0.8025, CIDEr 2.1199.
    with _data("e2e/devset.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]
    mrs, groups = group_references([mr for mr, _ in rows], [ref for _, ref in rows])
    refs_csv = tmp_path / "refs.csv"
    with refs_csv.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["mr", "ref"])
        for mr, refs in zip(mrs[:50], groups[:50], strict=True):
            writer.writerows([mr, ref] for ref in refs)
    outputs = []
    for k, refs in enumerate(groups[:50]):
        words = refs[0].split()
        edit = [refs[0], " ".join(words[: max(1, len(words) // 2)]), " ".join(words[1:] + words[:1]),
                refs[-1].lower()][k % 4]
        outputs.append("" if k % 10 == 7 else edit)
    preds = tmp_path / "sys_b.txt"
    preds.write_text("\n".join(outputs) + "\n", encoding="utf-8")
    out_json = tmp_path / "scores.json"

    rc, out, err = score(capsys, "e2e", "--references", str(refs_csv), "--predictions", str(preds),
                         "--json", str(out_json))
    assert rc == 0, err
    assert "instances: 50" in out
    assert "empty predictions: 5 of 50 (lines 8, 18, 28, 38, 48)" in out
    assert "BLEU     0.8301" in out and "CIDEr    2.1199" in out
    result = json.loads(out_json.read_text())
    printed = {"BLEU": 0.8301, "NIST": 9.8458, "METEOR": 0.5496, "ROUGE_L": 0.8025, "CIDEr": 2.1199}
    assert {k: round(result[k], 4) for k in printed} == printed
    assert result["n_instances"] == 50 and result["n_empty_predictions"] == 5


# --- NLG bad input -----------------------------------------------------------------------------------


def test_count_mismatch_names_both_counts_and_writes_nothing(capsys, tmp_path):
    refs = tmp_path / "refs.txt"
    refs.write_text("r1a\nr1b\n\nr2a\n", encoding="utf-8")
    preds = tmp_path / "preds.txt"
    preds.write_text("one\ntwo\nthree\n", encoding="utf-8")
    out_json = tmp_path / "s.json"
    rc, out, err = score(capsys, "e2e", "-r", str(refs), "-p", str(preds), "--json", str(out_json))
    assert rc == 2 and out == ""
    assert f"{preds} has 3 predictions" in err and f"{refs} has 2 instances" in err
    assert not out_json.exists()


def test_count_mismatch_mentions_trailing_empty_lines(capsys, tmp_path):
    refs = tmp_path / "refs.txt"
    refs.write_text("a\nb\n", encoding="utf-8")  # no blank line: one reference per line, 2 instances
    preds = tmp_path / "preds.txt"
    preds.write_text("a\nb\n\n\n", encoding="utf-8")
    rc, _, err = score(capsys, "dart", "-r", str(refs), "-p", str(preds))
    assert rc == 2 and "has 4 predictions (its last 2 lines are empty)" in err and "2 instances" in err


def test_csv_references_are_grouped_by_distinct_mr(capsys, tmp_path):
    refs = tmp_path / "refs.csv"
    refs.write_text('mr,ref\n"name[A], food[Thai]",A serves Thai.\nname[B],B.\n"name[A], food[Thai]",'
                    "Thai food at A.\n", encoding="utf-8")
    preds = tmp_path / "preds.txt"
    preds.write_text("x\ny\nz\n", encoding="utf-8")
    rc, _, err = score(capsys, "e2e", "-r", str(refs), "-p", str(preds))
    assert rc == 2 and "has 3 predictions" in err and "has 2 instances (distinct MRs)" in err


def test_unknown_task_lists_known_tasks(capsys, tmp_path):
    rc, out, err = score(capsys, "bleurt", "-r", str(tmp_path / "r"), "-p", str(tmp_path / "p"))
    assert rc == 2 and out == ""
    assert "unknown task 'bleurt'" in err
    assert "e2e, webnlg, dart, cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, squad, squad_v2" in err


def test_undecodable_file_is_named(capsys, tmp_path):
    refs = tmp_path / "refs.txt"
    refs.write_text("Café au lait.\n", encoding="utf-8")
    preds = tmp_path / "preds_latin1.txt"
    preds.write_bytes("Caf\u00e9 au lait.\n".encode("latin-1"))
    out_json = tmp_path / "s.json"
    rc, _, err = score(capsys, "e2e", "-r", str(refs), "-p", str(preds), "--json", str(out_json))
    assert rc == 2
    assert f"predictions file {preds}: it is not valid UTF-8 (byte 0xe9 at offset 3)" in err
    assert not out_json.exists()


def test_missing_file_and_missing_json_directory(capsys, tmp_path):
    rc, _, err = score(capsys, "e2e", "-r", str(tmp_path / "nope.txt"), "-p", str(tmp_path / "p.txt"))
    assert rc == 2 and f"references file not found: {tmp_path / 'nope.txt'}" in err
    rc, _, err = score(capsys, "rte", "-r", "x", "-p", "y", "--json", str(tmp_path / "no" / "dir" / "s.json"))
    assert rc == 2 and "does not exist" in err


def test_usage_lists_the_subcommand(capsys):
    assert lorakit_main([]) == 0
    assert "score" in capsys.readouterr().out
    assert lorakit_main(["score", "--help"]) == 0
    assert "file layouts" in capsys.readouterr().out


# --- GLUE --------------------------------------------------------------------------------------------


def test_rte_submission_layout_against_real_dev(capsys, tmp_path):
    gold = _glue_labels("RTE", 3)
    assert len(gold) == 277
    flip = {"entailment": "not_entailment", "not_entailment": "entailment"}
    preds = [flip[g] if i % 4 == 0 else g for i, g in enumerate(gold)]
    path = tmp_path / "RTE.tsv"
    path.write_text("index\tprediction\n" + "".join(f"{i}\t{p}\n" for i, p in enumerate(preds)))
    out_json = tmp_path / "s.json"
    rc, out, err = score(capsys, "rte", "-r", str(_data("glue/RTE/dev.tsv")), "-p", str(path),
                         "--json", str(out_json))
    assert rc == 0, err
    assert json.loads(out_json.read_text()) == {
        "acc": pytest.approx(1 - 70 / 277), "n_instances": 277, "n_empty_predictions": 0,
    }
    assert "acc     0.7473" in out


def test_rows_may_come_in_any_index_order_and_empty_predictions_are_counted(capsys, tmp_path):
    gold = _glue_labels("MRPC", 0)
    assert len(gold) == 408
    preds = ["1"] * len(gold)
    preds[4] = ""
    path = tmp_path / "MRPC.tsv"
    path.write_text("".join(f"{i}\t{preds[i]}\n" for i in reversed(range(len(preds)))))  # no header
    out_json = tmp_path / "s.json"
    rc, out, err = score(capsys, "mrpc", "-r", str(_data("glue/MRPC/dev.tsv")), "-p", str(path),
                         "--json", str(out_json))
    assert rc == 0, err
    assert "empty predictions: 1 of 408 (examples 5)" in out and "count as wrong" in out
    result = json.loads(out_json.read_text())
    assert {"acc": result["acc"], "f1": result["f1"]} == pytest.approx(glue_metrics("mrpc", preds, gold))
    assert result["n_empty_predictions"] == 1


def test_stsb_perfect_and_constant_predictions(capsys, tmp_path):
    gold = _glue_labels("STS-B", 9)
    assert len(gold) == 1500
    path = tmp_path / "stsb.txt"
    path.write_text("\n".join(gold) + "\n")  # one prediction per line
    rc, _, err = score(capsys, "stsb", "-r", str(_data("glue/STS-B/dev.tsv")), "-p", str(path),
                       "--json", str(tmp_path / "a.json"))
    assert rc == 0, err
    assert json.loads((tmp_path / "a.json").read_text())["spearmanr"] == pytest.approx(1.0)
    path.write_text("2.5\n" * len(gold))
    rc, out, err = score(capsys, "stsb", "-r", str(_data("glue/STS-B/dev.tsv")), "-p", str(path),
                         "--json", str(tmp_path / "b.json"))
    assert rc == 0, err
    assert "correlation is undefined" in out
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["pearson"] is None and result["spearmanr"] is None  # nan is written as null


def test_cola_constant_predictions_give_mcc_zero(capsys, tmp_path):
    path = tmp_path / "CoLA.tsv"
    path.write_text("index\tprediction\n" + "".join(f"{i}\t1\n" for i in range(1043)))
    rc, out, err = score(capsys, "cola", "-r", str(_data("glue/CoLA/dev.tsv")), "-p", str(path))
    assert rc == 0, err
    assert "mcc     0.0000" in out


def test_glue_label_and_index_errors(capsys, tmp_path):
    path = tmp_path / "RTE.tsv"
    path.write_text("".join(f"{i}\t{i % 2}\n" for i in range(277)))
    rc, _, err = score(capsys, "rte", "-r", str(_data("glue/RTE/dev.tsv")), "-p", str(path))
    assert rc == 2 and "not rte labels: ['0', '1']" in err and "'entailment', 'not_entailment'" in err
    path.write_text("".join(f"{i}\tentailment\n" for i in range(1, 278)))
    rc, _, err = score(capsys, "rte", "-r", str(_data("glue/RTE/dev.tsv")), "-p", str(path))
    assert rc == 2 and "indices must be 0..276" in err
    path.write_text("".join(f"{i}\tentailment\n" for i in range(270)))
    rc, _, err = score(capsys, "rte", "-r", str(_data("glue/RTE/dev.tsv")), "-p", str(path))
    assert rc == 2 and "has 270 predictions" in err and "has 277 examples" in err


# --- SQuAD -------------------------------------------------------------------------------------------


def _squad_gold_answers() -> tuple[Path, dict[str, str]]:
    path = _data("squad/dev-v1.1.json")
    dataset = json.loads(path.read_text(encoding="utf-8"))
    answers = {qa["id"]: qa["answers"][0]["text"] for art in dataset["data"] for para in art["paragraphs"]
               for qa in para["qas"]}
    return path, answers


def test_squad_cli_and_prediction_id_mismatch(capsys, tmp_path):
    dev, answers = _squad_gold_answers()
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps(answers))
    out_json = tmp_path / "s.json"
    rc, out, err = score(capsys, "squad", "-r", str(dev), "-p", str(preds), "--json", str(out_json))
    assert rc == 0, err
    assert json.loads(out_json.read_text()) == {
        "exact_match": 100.0, "f1": 100.0, "n_instances": 10570, "n_empty_predictions": 0,
    }
    first = next(iter(answers))
    del answers[first]
    answers["not-a-question"] = "x"
    preds.write_text(json.dumps(answers))
    out_json.unlink()
    rc, _, err = score(capsys, "squad", "-r", str(dev), "-p", str(preds), "--json", str(out_json))
    assert rc == 2 and not out_json.exists()
    assert "has 10570 answers but the references file" in err and "has 10570 questions" in err
    assert f"1 questions have no prediction (e.g. ['{first}'])" in err
    assert "1 predictions are for ids not in the dataset" in err


def test_squad_v2_task_and_unanswerable_questions(capsys, tmp_path):
    dataset = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [
        {"id": "q1", "question": "?", "answers": [{"text": "Denver Broncos", "answer_start": 0}]},
        {"id": "q2", "question": "?", "answers": [], "is_impossible": True},
    ]}]}]}
    ref = tmp_path / "dev-v2.0.json"
    ref.write_text(json.dumps(dataset))
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"q1": "Broncos", "q2": ""}))
    rc, _, err = score(capsys, "squad", "-r", str(ref), "-p", str(preds))
    assert rc == 2 and "1 unanswerable questions" in err and "squad_v2" in err
    out_json = tmp_path / "s.json"
    rc, out, err = score(capsys, "squad_v2", "-r", str(ref), "-p", str(preds), "--json", str(out_json))
    assert rc == 0, err
    result = json.loads(out_json.read_text())
    # q1: F1 2*(1*0.5)/1.5 = 2/3, EM 0; q2: the empty answer is right
    assert result["exact"] == pytest.approx(50.0) and result["f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert result["NoAns_total"] == 1 and result["HasAns_total"] == 1 and result["n_empty_predictions"] == 1
    assert "no-answer prediction" in out


def test_squad_bad_json_is_named(capsys, tmp_path):
    dev, _ = _squad_gold_answers()
    preds = tmp_path / "preds.json"
    preds.write_text("{not json")
    rc, _, err = score(capsys, "squad", "-r", str(dev), "-p", str(preds))
    assert rc == 2 and f"cannot parse the predictions file {preds} as JSON" in err


def test_multi_reference_text_reader_and_bleu_by_hand(tmp_path):
    # the multi-reference reader (CRLF, empty prediction line) and BLEU on a hand-made corpus (no Java)
    from lorakit.score import _load_nlg

    refs = tmp_path / "refs.txt"
    # a double blank line is one separator
    refs.write_text("the cat sat on a mat\nthere is a cat on the mat\n\n\na dog barked\n", encoding="utf-8")
    preds = tmp_path / "preds.txt"
    preds.write_text("the cat sat on the mat\r\n\n", encoding="utf-8")
    hyps, groups, unit = _load_nlg("webnlg", refs, preds)
    assert hyps == ["the cat sat on the mat", ""] and unit == "line"
    assert groups == [["the cat sat on a mat", "there is a cat on the mat"], ["a dog barked"]]
    # clipped precisions 5/6, 5/5, 3/4, 1/3; closest reference lengths 6 + 3 against 6 hypothesis words
    expected = (5 / 6 * 5 / 5 * 3 / 4 * 1 / 3) ** 0.25 * math.exp(1 - 9 / 6)
    assert mteval_bleu_nist(hyps, groups)["BLEU"] == pytest.approx(expected)


def test_csv_predictions_are_matched_to_references_by_mr(capsys, tmp_path):
    from lorakit.score import _load_nlg

    refs = tmp_path / "refs.csv"
    refs.write_text("mr,ref\nm1,A one.\nm2,B two.\nm1,A uno.\n", encoding="utf-8")
    preds = tmp_path / "out.tsv"
    preds.write_text("MR\toutput\nm2\tB 2.\nm1\tA 1.\n", encoding="utf-8")
    hyps, groups, unit = _load_nlg("e2e", refs, preds)
    assert hyps == ["B 2.", "A 1."] and groups == [["B two."], ["A one.", "A uno."]] and unit == "instance"
    preds.write_text("MR\toutput\nm2\tB 2.\nm3\tC 3.\n", encoding="utf-8")
    rc, _, err = score(capsys, "e2e", "-r", str(refs), "-p", str(preds))
    assert rc == 2 and "row 3 has an MR that the references file" in err and "'m3'" in err
    preds.write_text("MR\toutput\nm2\tB 2.\n", encoding="utf-8")
    rc, _, err = score(capsys, "e2e", "-r", str(refs), "-p", str(preds))
    assert rc == 2 and "has 1 predictions" in err and "has 2 instances (distinct MRs)" in err
