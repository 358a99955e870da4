"""SQuAD v1.1 and v2.0 exact match and F1, written from the published definitions.

Answer normalisation (Rajpurkar et al., 2016; the official evaluation scripts): lowercase, delete ASCII
punctuation (``string.punctuation``), delete the articles "a", "an", "the" as whole words, collapse
whitespace. Exact match compares normalised strings; F1 is the harmonic mean of precision and recall of
the multiset of whitespace tokens of the normalised strings. Each question takes the maximum over its
gold answers; corpus scores are the mean over questions, **in percent (0-100)** as the official scripts
print them.

Version differences (v2.0, Rajpurkar et al., 2018):

* Gold answers whose normalised text is empty are dropped; a question left with none (an unanswerable
  question) has the single gold answer ``""``. The empty prediction therefore scores 1 on it, and any
  other prediction 0.
* F1 when either side has no tokens is 1 if both have none, else 0. (v1.1 gives 0 whenever no token is
  shared, including two empty strings.)
* Results are also broken down into answerable (``HasAns_*``) and unanswerable (``NoAns_*``) questions.

A question without a prediction scores 0 and stays in the denominator (the v1.1 script's rule); the
number of such questions is returned as ``missing``.

Natural Questions short answers (Kwiatkowski et al., 2019; the definition of the official ``nq_eval.py``):
answers are compared as token spans of the document, not as text. An example has a gold short answer when
at least 2 of its annotators gave one (a span or a yes/no answer; the 5-way annotated dev set) or, for an
example with a single annotation (the train files), when that annotation has one. A non-null prediction
is correct when the example has a gold short answer and the predicted span *set* equals the span set of
one annotator (a yes/no prediction: one annotator's yes/no answer). Precision = correct / non-null
predictions, recall = correct / examples with a gold short answer, F1 their harmonic mean; fractions in
[0, 1] as ``nq_eval.py`` prints them, 0 when a denominator is 0. (``nq_eval.py``'s score-threshold sweeps,
e.g. recall at precision 0.5, are not reproduced: every non-null prediction counts.)
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "NQAnnotation",
    "SquadQuestion",
    "exact_match_score",
    "f1_score",
    "normalize_answer",
    "nq_gold_has_short_answer",
    "nq_short_answer_scores",
    "squad_questions",
    "squad_v1_scores",
    "squad_v2_scores",
]

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", flags=re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lowercase, remove punctuation, remove the articles a/an/the, and collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, gold: str) -> float:
    """1.0 if the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str, version: str = "1.1") -> float:
    """Token-overlap F1 of two answers after normalisation, in [0, 1].

    ``version`` "1.1" (also ReCoRD's rule) or "2.0"; they differ only when a side has no tokens (see the
    module docstring).
    """
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if _version(version) == "2.0" and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)
    shared = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if shared == 0:
        return 0.0
    precision = shared / len(pred_tokens)
    recall = shared / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class SquadQuestion:
    """One question of a SQuAD dataset: its id, gold answer texts, and whether it is unanswerable."""

    qid: str
    answers: tuple[str, ...]
    is_impossible: bool


def squad_questions(dataset: Mapping[str, Any] | Sequence[Any]) -> list[SquadQuestion]:
    """The questions of an official SQuAD JSON (the whole parsed file, or its ``"data"`` list), in order.

    Raises ValueError naming the first malformed entry, or a duplicated question id.
    """
    articles = dataset.get("data") if isinstance(dataset, Mapping) else dataset
    if not isinstance(articles, Sequence) or isinstance(articles, (str, bytes)):
        raise ValueError('not a SQuAD dataset: expected {"data": [articles...]} or the list of articles')
    out: list[SquadQuestion] = []
    seen: set[str] = set()
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(_get_list(article, "paragraphs", f"data[{a}]")):
            for q, qa in enumerate(_get_list(paragraph, "qas", f"data[{a}].paragraphs[{p}]")):
                where = f"data[{a}].paragraphs[{p}].qas[{q}]"
                if not isinstance(qa, Mapping) or not isinstance(qa.get("id"), str):
                    raise ValueError(f"not a SQuAD dataset: {where} has no string 'id'")
                qid = qa["id"]
                if qid in seen:
                    raise ValueError(f"SQuAD dataset has the question id {qid!r} twice (second at {where})")
                seen.add(qid)
                texts = []
                for k, answer in enumerate(_get_list(qa, "answers", where)):
                    if not isinstance(answer, Mapping) or not isinstance(answer.get("text"), str):
                        raise ValueError(f"not a SQuAD dataset: {where}.answers[{k}] has no string 'text'")
                    texts.append(answer["text"])
                out.append(SquadQuestion(qid, tuple(texts), bool(qa.get("is_impossible", False))))
    return out


def _get_list(obj: Any, key: str, where: str) -> list[Any]:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    if not isinstance(value, list):
        raise ValueError(f"not a SQuAD dataset: {where} has no list '{key}'")
    return value


def _version(version: str) -> str:
    v = str(version).lower().lstrip("v")
    if v in ("1", "1.1"):
        return "1.1"
    if v in ("2", "2.0"):
        return "2.0"
    raise ValueError(f"unknown SQuAD version {version!r}; use '1.1' or '2.0'")


def _per_question(
    questions: Sequence[SquadQuestion], predictions: Mapping[str, str], version: str
) -> Iterator[tuple[SquadQuestion, float, float, bool]]:
    """Yield (question, exact, f1, has_prediction); exact and f1 in [0, 1]."""
    for question in questions:
        if question.qid not in predictions:
            yield question, 0.0, 0.0, False
            continue
        prediction = predictions[question.qid]
        if not isinstance(prediction, str):
            raise ValueError(f"the prediction for question {question.qid!r} is not a string: {prediction!r}")
        if version == "2.0":
            golds = [g for g in question.answers if normalize_answer(g)] or [""]
        else:
            golds = list(question.answers)
            if not golds:
                raise ValueError(
                    f"question {question.qid!r} has no gold answer; SQuAD v1.1 scoring needs at least one "
                    "(for unanswerable questions use the v2.0 rules)"
                )
        exact = max(exact_match_score(prediction, g) for g in golds)
        f1 = max(f1_score(prediction, g, version) for g in golds)
        yield question, exact, f1, True


def squad_v1_scores(
    dataset: Mapping[str, Any] | Sequence[Any], predictions: Mapping[str, str]
) -> dict[str, float]:
    """SQuAD v1.1 scores: ``{"exact_match", "f1"}`` in percent, plus counts ``total`` and ``missing``.

    ``dataset`` is the parsed official JSON; ``predictions`` maps question id -> answer text. Ids in
    ``predictions`` that are not in the dataset are ignored (the caller may want to reject them).
    """
    questions = squad_questions(dataset)
    if not questions:
        raise ValueError("the SQuAD dataset has no questions")
    exact = f1 = 0.0
    missing = 0
    for _, e, f, has_prediction in _per_question(questions, predictions, "1.1"):
        exact += e
        f1 += f
        missing += not has_prediction
    n = len(questions)
    return {"exact_match": 100.0 * exact / n, "f1": 100.0 * f1 / n, "total": n, "missing": missing}


def squad_v2_scores(
    dataset: Mapping[str, Any] | Sequence[Any], predictions: Mapping[str, str]
) -> dict[str, float]:
    """SQuAD v2.0 scores in percent, with the official key names.

    Returns ``exact``, ``f1``, ``total`` and, for the subsets that are non-empty, ``HasAns_exact``,
    ``HasAns_f1``, ``HasAns_total``, ``NoAns_exact``, ``NoAns_f1``, ``NoAns_total``; plus ``missing`` (questions
    without a prediction, scored 0). An unanswerable question is answered correctly by the empty string.
    """
    questions = squad_questions(dataset)
    if not questions:
        raise ValueError("the SQuAD dataset has no questions")
    sums = {"all": [0.0, 0.0, 0], "HasAns": [0.0, 0.0, 0], "NoAns": [0.0, 0.0, 0]}
    missing = 0
    for question, e, f, has_prediction in _per_question(questions, predictions, "2.0"):
        has_answer = bool(question.answers)  # the official rule: a non-empty answer list
        for key in ("all", "HasAns" if has_answer else "NoAns"):
            sums[key][0] += e
            sums[key][1] += f
            sums[key][2] += 1
        missing += not has_prediction
    n = sums["all"][2]
    out: dict[str, float] = {
        "exact": 100.0 * sums["all"][0] / n,
        "f1": 100.0 * sums["all"][1] / n,
        "total": n,
    }
    for key in ("HasAns", "NoAns"):
        exact, f1, count = sums[key]
        if count:
            out[f"{key}_exact"] = 100.0 * exact / count
            out[f"{key}_f1"] = 100.0 * f1 / count
            out[f"{key}_total"] = count
    out["missing"] = missing
    return out


# --------------------------------------------------------------------------------------------------
# Natural Questions short answers
# --------------------------------------------------------------------------------------------------

_YES_NO = ("NONE", "YES", "NO")


@dataclass(frozen=True)
class NQAnnotation:
    """One annotator's short answer to a Natural Questions example: its spans (document token ``[start, end)``
    pairs; several for answers such as lists) and its yes/no answer (``"NONE"``, ``"YES"`` or ``"NO"``)."""

    short_answers: tuple[tuple[int, int], ...] = ()
    yes_no_answer: str = "NONE"

    @property
    def non_null(self) -> bool:
        """Whether this annotator gave a short answer: a span or a yes/no answer."""
        return bool(self.short_answers) or self.yes_no_answer.upper() != "NONE"


def nq_gold_has_short_answer(annotations: Sequence[NQAnnotation]) -> bool:
    """NQ's gold rule: at least 2 annotators gave a short answer; with a single annotation, that one."""
    needed = min(2, len(annotations))
    return needed > 0 and sum(a.non_null for a in annotations) >= needed


def _prediction(value: Any, example_id: str) -> tuple[frozenset[tuple[int, int]], str]:
    """(span set, yes/no) of one prediction: None, "" or "NONE" (null), "YES"/"NO", one (start, end) span
    or a sequence of spans; spans with a negative start (NQ's null span) are dropped."""
    if value is None:
        return frozenset(), "NONE"
    if isinstance(value, str):
        answer = value.strip().upper() or "NONE"
        if answer not in _YES_NO:
            raise ValueError(f"example {example_id!r}: a string prediction must be YES, NO or NONE, got {value!r}")
        return frozenset(), answer
    spans = [value] if len(value) == 2 and all(isinstance(x, int) for x in value) else list(value)
    out = set()
    for span in spans:
        if len(span) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in span):
            raise ValueError(f"example {example_id!r}: a span must be a (start_token, end_token) pair, got {span!r}")
        if span[0] >= 0:
            out.add((int(span[0]), int(span[1])))
    return frozenset(out), "NONE"


def nq_short_answer_scores(
    gold: Mapping[str, Sequence[NQAnnotation]], predictions: Mapping[str, Any]
) -> dict[str, float]:
    """Natural Questions short-answer ``precision``, ``recall`` and ``f1`` (fractions, see the module docstring)
    plus the counts ``examples``, ``gold_non_null``, ``pred_non_null`` and ``correct``.

    ``gold``: example id -> its annotations; ``predictions``: example id -> ``None`` (no answer), a
    ``(start_token, end_token)`` span, a sequence of spans, or ``"YES"``/``"NO"``. Both must hold the same
    example ids (``nq_eval.py`` refuses otherwise); raises ValueError naming a few of the differences.
    """
    missing = sorted(set(gold) - set(predictions))
    extra = sorted(set(predictions) - set(gold))
    if missing or extra:
        raise ValueError(f"the predictions and the gold annotations cover different examples: {len(missing)} without "
                         f"a prediction (e.g. {missing[:3]}), {len(extra)} not in the gold data (e.g. {extra[:3]})")
    if not gold:
        raise ValueError("no examples to score")
    has_gold = has_pred = correct = 0
    for example_id, labels in gold.items():
        spans, yes_no = _prediction(predictions[example_id], str(example_id))
        gold_non_null = nq_gold_has_short_answer(labels)
        pred_non_null = bool(spans) or yes_no != "NONE"
        has_gold += gold_non_null
        has_pred += pred_non_null
        if gold_non_null and pred_non_null:
            if yes_no != "NONE":
                correct += any(a.yes_no_answer.upper() == yes_no for a in labels)
            else:
                correct += any(frozenset(a.short_answers) == spans for a in labels)
    precision = correct / has_pred if has_pred else 0.0
    recall = correct / has_gold if has_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "examples": len(gold), "gold_non_null": has_gold,
            "pred_non_null": has_pred, "correct": correct}
