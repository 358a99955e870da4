"""NLG metrics: mteval BLEU/NIST on hand-worked examples, and agreement with the official E2E scorer.

Official E2E numbers (obtained once, outside this repository):

* Scorer: github.com/tuetschek/e2e-metrics at commit 1b9c4d87fd0bbb171ea966741cdc012588581ed4, extracted
  to /tmp. Its three jars are absent from the stored snapshot, so the byte-identical ones shipped in
  pycocoevalcap 1.2 were copied in (same git blob ids as in the e2e-metrics tree: meteor-1.5.jar
  a833bc01, paraphrase-en.gz 88033c84, stanford-corenlp-3.4.1.jar 3cfa0a0b). Perl 5.36 with XML::Twig
  (Debian libxml-twig-perl), Java 17, Python 3.11 with future, numpy, matplotlib, scikit-image.
* Data: the first 50 distinct MRs of the official devset.csv (434 references), written to refs.csv
  (columns mr,ref); system outputs from ``_system`` below, one line per MR: sys_a.txt, and sys_b.txt
  = sys_a with every 10th output (k % 10 == 7) empty.
* Command: ``./measure_scores.py refs.csv sys_a.txt`` (and sys_b.txt) printed
  sys_a: BLEU 0.8908, NIST 10.9425, METEOR 0.5983, ROUGE_L 0.8869, CIDEr 2.2711;
  sys_b: BLEU 0.8301, NIST 9.8458, METEOR 0.5496, ROUGE_L 0.8025, CIDEr 2.1199.
* More digits: METEOR/ROUGE_L/CIDEr printed with repr() from the scorer's own ``run_coco_eval``
  (imported from measure_scores.py, unmodified); BLEU/NIST from a copy of mteval-v13a-sig.pl whose
  final ``printf`` only was changed from ``%.4f`` to ``%.10f``, run on the .sgm files written by the
  scorer's own ``create_mteval_file``. Those are the values in ``OFFICIAL`` below.
"""

from __future__ import annotations

import csv
import math

import pytest
from helpers import need, shared_data

from lorakit.metrics.nlg import (
    JavaNotFoundError,
    MeteorSession,
    e2e_metrics,
    group_references,
    meteor_score,
    mteval_bleu_nist,
    mteval_tokenize,
    sacrebleu_scores,
    webnlg_metrics,
)

E2E_DEV = shared_data() / "e2e" / "devset.csv"

OFFICIAL = {
    "sys_a": {"BLEU": 0.8907769289, "NIST": 10.9425215356, "METEOR": 0.5983418840243542,
              "ROUGE_L": 0.8868889625865628, "CIDEr": 2.2711249392640758},
    "sys_b": {"BLEU": 0.8300828219, "NIST": 9.8458059674, "METEOR": 0.549637348218992,
              "ROUGE_L": 0.8024669828047593, "CIDEr": 2.119929256170642},
}
OFFICIAL_PRINTED = {
    "sys_a": {"BLEU": 0.8908, "NIST": 10.9425, "METEOR": 0.5983, "ROUGE_L": 0.8869, "CIDEr": 2.2711},
    "sys_b": {"BLEU": 0.8301, "NIST": 9.8458, "METEOR": 0.5496, "ROUGE_L": 0.8025, "CIDEr": 2.1199},
}


def _system(k: int, refs: list[str]) -> str:
    """A deterministic, lightly perturbed 'system': cycles through four edits of the references."""
    words = refs[0].split()
    return [
        refs[0],
        " ".join(words[: max(1, len(words) // 2)]),
        " ".join(words[1:] + words[:1]),
        refs[-1].lower(),
    ][k % 4]


@pytest.fixture(scope="module")
def e2e_slice() -> tuple[list[list[str]], dict[str, list[str]]]:
    with need(E2E_DEV).open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]
    _, groups = group_references([mr for mr, _ in rows], [ref.strip() for _, ref in rows])
    groups = groups[:50]
    sys_a = [_system(k, refs) for k, refs in enumerate(groups)]
    sys_b = ["" if k % 10 == 7 else s for k, s in enumerate(sys_a)]
    return groups, {"sys_a": sys_a, "sys_b": sys_b}


@pytest.fixture(scope="module")
def meteor():
    with MeteorSession() as session:
        yield session


# --- mteval-v13a BLEU / NIST ------------------------------------------------------------------------


def test_mteval_tokenisation():
    text = "Hello, World. It costs £20-25 and 3.5 stars!  It's <skipped>A&amp;B"
    assert mteval_tokenize(text) == [
        "hello", ",", "world", ".", "it", "costs", "£20", "-", "25", "and", "3.5", "stars", "!",
        "it's", "a", "&", "b",
    ]
    # only A-Z are lowercased; a comma or period between digits stays inside the number
    assert mteval_tokenize("ÉCOLE 1,000 x.y") == ["École", "1,000", "x", ".", "y"]
    assert mteval_tokenize("   ") == []


def test_identical_hypotheses_give_perfect_bleu():
    refs = [["The Eagle is a cheap coffee shop near Burger King."], ["Fitzbillies serves Indian food.", "x"]]
    hyps = ["The Eagle is a cheap coffee shop near Burger King.", "Fitzbillies serves Indian food."]
    assert mteval_bleu_nist(hyps, refs)["BLEU"] == pytest.approx(1.0, abs=1e-12)
    assert sacrebleu_scores(hyps, refs) == pytest.approx({"BLEU": 100.0, "TER": 0.0})


def test_bleu_hand_worked():
    # precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty: (1/12) ** (1/4)
    out = mteval_bleu_nist(["the cat sat on the mat"], [["the cat sat on a mat"]])
    assert out["BLEU"] == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)


def test_bleu_mteval_smoothing_and_missing_orders():
    # unigram 1/2; bigram has no match -> 1/(2*1); no 3-/4-grams in the hypothesis -> log precision 0
    out = mteval_bleu_nist(["the cat"], [["the dog"]])
    assert out["BLEU"] == pytest.approx(math.exp((math.log(0.5) + math.log(0.5)) / 4))


def test_bleu_closest_reference_length_tie_goes_to_shorter():
    # hypothesis of 3 words, references of 2 and 4: the tie picks 2, so there is no brevity penalty
    assert mteval_bleu_nist(["a b c"], [["a b", "a b c d"]])["BLEU"] == pytest.approx(1.0)
    # the closest reference (4 words vs 7) sets the penalty exp(1 - 4/3)
    out = mteval_bleu_nist(["a b c"], [["a b c d", "a b c d e f g"]])
    assert out["BLEU"] == pytest.approx(math.exp(1 - 4 / 3))


def test_nist_hand_worked():
    # info(a) = info(b) = -log2(1/2) = 1, info(a b) = -log2(1/1) = 0: (1 + 1)/2 + 0 = 1
    assert mteval_bleu_nist(["a b"], [["a b"]])["NIST"] == pytest.approx(1.0)
    # half the reference length: penalty exp(-beta * ln(1/2)^2), beta = -ln(0.5) / ln(1.5)^2
    beta = -math.log(0.5) / math.log(1.5) ** 2
    out = mteval_bleu_nist(["a"], [["a b"]])
    assert out["NIST"] == pytest.approx(1.0 * math.exp(-beta * math.log(0.5) ** 2))


def test_nist_replicates_mteval_zero_prefix_quirk():
    # Reference "0 x 0 y": counts 0:2, x:1, y:1 (4 words), "0 x":1. mteval divides the bigram "0 x" by the
    # total word count (its prefix "0" is false in Perl): info = -log2(1/4) = 2, not -log2(1/2) = 1.
    # unigrams: (info(0)=1 + info(x)=2) / 2 = 1.5; bigram 2/1; length ratio 2/4.
    beta = -math.log(0.5) / math.log(1.5) ** 2
    out = mteval_bleu_nist(["0 x"], [["0 x 0 y"]])
    assert out["NIST"] == pytest.approx(3.5 * math.exp(-beta * math.log(0.5) ** 2))


def test_empty_hypotheses_and_bad_input():
    out = mteval_bleu_nist(["", "a b c d"], [["a b c d"], ["a b c d"]])
    assert 0.0 < out["BLEU"] < 1.0 and out["NIST"] > 0
    assert mteval_bleu_nist([""], [["a b"]]) == {"BLEU": 0.0, "NIST": 0.0}
    with pytest.raises(ValueError, match="2 hypotheses but 1 reference groups"):
        mteval_bleu_nist(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="non-empty list"):
        mteval_bleu_nist(["a"], [[]])
    with pytest.raises(TypeError, match="hypothesis 0 is not a string"):
        mteval_bleu_nist([None], [["a"]])  # type: ignore[list-item]


def test_group_references_by_distinct_mr_in_first_appearance_order():
    mrs, groups = group_references(["m2", "m1", "m2", "m1", "m3"], ["a", "b", "c", "d", "e"])
    assert mrs == ["m2", "m1", "m3"]
    assert groups == [["a", "c"], ["b", "d"], ["e"]]


# --- agreement with the official E2E scorer ----------------------------------------------------------


@pytest.mark.parametrize("system", ["sys_a", "sys_b"])
def test_e2e_metrics_agree_with_official_scorer(e2e_slice, meteor, system):
    groups, systems = e2e_slice
    assert len(groups) == 50 and sum(len(g) for g in groups) == 434
    out = e2e_metrics(systems[system], groups, meteor=meteor)
    assert list(out) == ["BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"]
    for name, official in OFFICIAL[system].items():
        assert out[name] == pytest.approx(official, abs=1e-9), name
        assert round(out[name], 4) == OFFICIAL_PRINTED[system][name], name


# --- METEOR for WebNLG / DART, and Java errors -------------------------------------------------------


def test_webnlg_metrics_units_and_ordering(meteor):
    refs = [["Alan Bean was born in Wheeler, Texas.", "Alan Bean's birthplace is Wheeler, Texas."],
            ["The Acharya Institute of Technology is in Bangalore."]]
    good = ["Alan Bean was born in Wheeler, Texas.", "The Acharya Institute of Technology is in Bangalore."]
    bad = ["Texas was born.", "Bangalore."]
    best = webnlg_metrics(good, refs, meteor=meteor)
    worse = webnlg_metrics(bad, refs, meteor=meteor)
    assert best["BLEU"] == pytest.approx(100.0) and best["TER"] == pytest.approx(0.0)
    assert 0.9 < best["METEOR"] <= 1.0  # METEOR keeps a small fragmentation penalty even when identical
    assert worse["METEOR"] < 0.5 and worse["BLEU"] < 20 and 0.5 < worse["TER"] <= 1.0
    # texts with the "|||" separator or line breaks cannot break METEOR's line protocol
    tricky = meteor_score(["Alan ||| Bean\nwas born"], [["Alan Bean was born"]], meteor=meteor)
    assert 0.5 < tricky <= 1.0


def test_meteor_without_java_names_java(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no `java` to be found
    with pytest.raises(JavaNotFoundError, match="Java.*`java` command"):
        meteor_score(["a"], [["a"]])
    with pytest.raises(JavaNotFoundError, match="PTB tokenizer"):
        e2e_metrics(["a"], [["a"]])
