"""E2E BLEU/NIST on weak, template-like systems, against both modes of the official E2E scorer.

The official scorer (github.com/tuetschek/e2e-metrics, ``measure_scores.py``) has two BLEU/NIST modes:
by default it runs NIST's ``mteval-v13a-sig.pl`` in Perl; with ``-p`` it runs its own Python port
(``metrics/pymteval.py``). The LoRA paper's README scores E2E with ``measure_scores.py ... -p``. The two
agree on human-like outputs, but not on short template-like ones: the Python port counts k - n n-grams
of order n for a k-word output even when that is negative, and its NIST length penalty averages the
reference length per instance. lorakit has both: :func:`mteval_bleu_nist` (Perl) and
:func:`pymteval_bleu_nist` (``-p``).

How the expected numbers were obtained (once, outside this repository):

* Scorer: e2e-metrics at commit 1b9c4d87fd0bbb171ea966741cdc012588581ed4 extracted to /tmp, Perl 5.36
  with XML::Twig (Debian libxml-twig-perl), Python 3.11 with ``future``.
* Systems: built by ``_SYSTEMS`` below from the first 50 distinct MRs of the official devset.csv
  (references grouped per MR, 434 in all; "few_refs" keeps only the first 1 + k % 4 references of MR k).
* Perl numbers: the scorer's own ``run_mteval(refs, outputs, [''] * 50)`` (it writes the .sgm files
  and calls the Perl script), with the script's final ``printf`` changed from ``%.4f`` to ``%.10f`` in a
  copy; rounded to 4 decimals they are what ``measure_scores.py`` prints.
* ``-p`` numbers: the scorer's own ``run_pymteval(refs, outputs)``, printed with repr().
"""

from __future__ import annotations

import csv
import math
import re

import pytest
from helpers import need, shared_data

from lorakit.errors import LorakitError
from lorakit.metrics.nlg import (
    MetricInputError,
    e2e_metrics,
    group_references,
    mteval_bleu_nist,
    pymteval_bleu_nist,
)

E2E_DEV = shared_data() / "e2e" / "devset.csv"


def _slots(mr: str) -> list[tuple[str, str]]:
    """The (slot, value) pairs of an E2E MR such as ``name[The Eagle], priceRange[£20-25]``."""
    return re.findall(r"(\w+)\[([^\]]*)\]", mr)


def _slot_sentences(k: int, mr: str) -> str:
    # "name is The Eagle. eatType is coffee shop. priceRange is £20-25." (camelCase slot names, £)
    return " ".join(f"{slot} is {value}." for slot, value in _slots(mr))


def _short_lines(k: int, mr: str) -> str:
    # one to four words, a third of them the same line: outputs shorter than the 4-/5-gram orders
    slots = dict(_slots(mr))
    return [slots["name"], "It is a restaurant.", f"{slots['name']} is in the {slots.get('area', 'city')}."][k % 3]


def _name_and_type(k: int, mr: str) -> str:
    slots = dict(_slots(mr))
    return f"{slots['name']} is a {slots.get('eatType', 'restaurant')}."


def _one_line(k: int, mr: str) -> str:
    return "A place with a priceRange of £20-25 near the riverside."


_SYSTEMS = {
    "slot_sentences": (_slot_sentences, None),
    "short_lines": (_short_lines, None),
    "one_line": (_one_line, None),
    "few_refs": (_name_and_type, lambda k, refs: refs[: 1 + k % 4]),
}

# system: (Perl mteval BLEU, NIST), (-p BLEU, NIST)
OFFICIAL = {
    "slot_sentences": ((0.1866087484, 3.8805943611), (0.18660874842314226, 3.8805943610721885)),
    "short_lines": ((0.0211719709, 0.0001437434), (0.02391067761055104, 6.268944920142817e-05)),
    "one_line": ((0.0508980292, 1.0093039225), (0.0508980291622307, 0.7529303713228481)),
    "few_refs": ((0.0522856844, 0.0041092288), (0.05228568435345099, 0.0038655191363460356)),
}


def build_system(name: str, mrs: list[str], groups: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """(outputs, reference groups) of the constructed system ``name``."""
    make_output, pick_refs = _SYSTEMS[name]
    outputs = [make_output(k, mr) for k, mr in enumerate(mrs)]
    refs = [pick_refs(k, g) if pick_refs else list(g) for k, g in enumerate(groups)]
    return outputs, refs


def e2e_dev_slice() -> tuple[list[str], list[list[str]]]:
    with need(E2E_DEV).open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]
    mrs, groups = group_references([mr for mr, _ in rows], [ref.strip() for _, ref in rows])
    return mrs[:50], groups[:50]


@pytest.fixture(scope="module")
def dev_slice() -> tuple[list[str], list[list[str]]]:
    return e2e_dev_slice()


@pytest.mark.parametrize("name", list(_SYSTEMS))
def test_perl_mode_equals_official_scorer(dev_slice, name):
    outputs, refs = build_system(name, *dev_slice)
    (bleu, nist), _ = OFFICIAL[name]
    out = mteval_bleu_nist(outputs, refs)
    assert out["BLEU"] == pytest.approx(bleu, rel=1e-8, abs=1e-10)
    assert out["NIST"] == pytest.approx(nist, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("name", list(_SYSTEMS))
def test_python_mode_equals_official_scorer_dash_p(dev_slice, name):
    outputs, refs = build_system(name, *dev_slice)
    _, (bleu, nist) = OFFICIAL[name]
    out = pymteval_bleu_nist(outputs, refs)
    assert out["BLEU"] == pytest.approx(bleu, rel=1e-12)
    assert out["NIST"] == pytest.approx(nist, rel=1e-12)


def test_the_modes_part_on_short_outputs_and_agree_on_long_ones(dev_slice):
    # the constructed systems above: long template sentences score alike, short or repeated lines do not
    for name, same in (("slot_sentences", True), ("one_line", False), ("short_lines", False)):
        outputs, refs = build_system(name, *dev_slice)
        perl, python = mteval_bleu_nist(outputs, refs), pymteval_bleu_nist(outputs, refs)
        assert (perl["NIST"] == pytest.approx(python["NIST"], rel=1e-12)) is same, name


def test_python_mode_hand_worked():
    # "a" against "a b": 1 - 1 + 1 = 1 unigram, 0 n-grams of orders 2..5 would divide by zero, so add a
    # second instance "a b c d e" (exact match): n-gram counts 1+5=6, 0+4=4, -1+3=2, -2+2=0 -> refused.
    with pytest.raises(MetricInputError, match="0 4-grams"):
        pymteval_bleu_nist(["a", "a b c d e"], [["a b"], ["a b c d e"]])
    # "a b c d e" and "a b c d e f" against themselves: counts 11, 9, 7, 5, 3 and every n-gram matches.
    # Information over both references (11 words): a..e log2(11/2), f log2(11); of the longer n-grams
    # only those ending in f carry information, 1 bit each ("e f" 1 time after "e" 2 times, and so on).
    out = pymteval_bleu_nist(["a b c d e", "a b c d e f"], [["a b c d e"], ["a b c d e f"]])
    unigram_info = (10 * math.log2(11 / 2) + math.log2(11)) / 11
    assert out["NIST"] == pytest.approx(unigram_info + 1 / 9 + 1 / 7 + 1 / 5 + 1 / 3)
    assert out["BLEU"] == pytest.approx(1.0)
    # No "0" special case: in "p q r 0 x 0 y" the bigram "0 x" follows "0" once in two, 1 bit (the Perl
    # mode divides by the 7 words instead, log2(7) bits). Unigrams p, q, r, x: log2(7), 0: log2(7/2);
    # length ratio 5/7.
    beta = -math.log(0.5) / math.log(1.5) ** 2
    penalty = math.exp(-beta * math.log(5 / 7) ** 2)
    unigrams = (4 * math.log2(7) + math.log2(7 / 2)) / 5
    outputs, refs = ["p q r 0 x"], [["p q r 0 x 0 y"]]
    assert pymteval_bleu_nist(outputs, refs)["NIST"] == pytest.approx((unigrams + 1 / 4) * penalty)
    assert mteval_bleu_nist(outputs, refs)["NIST"] == pytest.approx((unigrams + math.log2(7) / 4) * penalty)


def test_e2e_metrics_chooses_the_mode():
    outputs, refs = ["The Eagle is a pub."], [["The Eagle is a pub near the river.", "A pub, The Eagle."]]
    perl = e2e_metrics(outputs, refs, mteval="perl")
    python = e2e_metrics(outputs, refs, mteval="python")
    assert perl["NIST"] == pytest.approx(mteval_bleu_nist(outputs, refs)["NIST"])
    assert python["NIST"] == pytest.approx(pymteval_bleu_nist(outputs, refs)["NIST"])
    assert perl["METEOR"] == python["METEOR"]
    with pytest.raises(MetricInputError, match="mteval must be 'perl' or 'python'"):
        e2e_metrics(outputs, refs, mteval="java")
    assert issubclass(MetricInputError, LorakitError) and issubclass(MetricInputError, ValueError)


def test_score_command_reports_either_mode(dev_slice, tmp_path):
    import json

    from lorakit.score import main as score_main

    mrs, groups = dev_slice
    outputs, refs = build_system("one_line", mrs, groups)
    with (tmp_path / "refs.csv").open("w", encoding="utf-8", newline="") as f:
        rows = [(mr, ref) for mr, group in zip(mrs, refs, strict=True) for ref in group]
        csv.writer(f).writerows([("mr", "ref"), *rows])
    (tmp_path / "out.txt").write_text("\n".join(outputs) + "\n", encoding="utf-8")
    (_, perl_nist), (_, python_nist) = OFFICIAL["one_line"]
    for mode, nist in (("perl", perl_nist), ("python", python_nist)):
        args = ["e2e", "-r", str(tmp_path / "refs.csv"), "-p", str(tmp_path / "out.txt"), "--e2e-mteval", mode,
                "--json", str(tmp_path / f"{mode}.json")]
        assert score_main(args) == 0
        scores = json.loads((tmp_path / f"{mode}.json").read_text())
        assert scores["NIST"] == pytest.approx(nist, rel=1e-8), mode
