"""Corpus-level NLG metrics: the E2E NLG Challenge protocol, and BLEU/TER/METEOR for WebNLG and DART.

E2E (what the official scorer, github.com/tuetschek/e2e-metrics ``measure_scores.py``, computes):

* **BLEU** and **NIST** with the semantics of NIST's ``mteval-v13a`` Perl script as that scorer runs it:
  its default tokenisation (ASCII lowercasing, punctuation split off, periods and commas kept inside
  numbers), one document holding all instances, corpus-level statistics, multiple references of
  variable number per instance (missing ones are empty and ignored), BLEU-4 with the "closest
  reference length" brevity penalty (ties go to the shorter reference) and mteval's smoothing (a zero
  n-gram match count counts as 1/2^k, k = 1, 2, ... for successive such orders), NIST-5 with n-gram
  information weights estimated from all the references. Implemented here in Python; no Perl needed.
  BLEU is a fraction in [0, 1]; NIST is in bits (about 0-15).
  The scorer's ``-p`` mode (its Python port, which the LoRA paper's README runs) counts short outputs
  and the NIST length penalty differently: :func:`pymteval_bleu_nist`, ``e2e_metrics(mteval="python")``.
* **METEOR** 1.5, **ROUGE-L** and **CIDEr** from the MS-COCO caption evaluation code (pycocoevalcap):
  references and outputs are first tokenised by the Stanford PTB tokenizer (``-lowerCase
  -preserveLines``) and PTB punctuation tokens are dropped, exactly as the official scorer's
  ``COCOEvalCap`` does; METEOR is then the corpus-level score of ``meteor-1.5.jar -l en -norm``,
  ROUGE-L is the mean over instances of the LCS F-measure (beta 1.2) against the best reference, and
  CIDEr is pycocoevalcap's ``Cider`` (TF-IDF weights from the scored references; not CIDEr-D). All
  three are in [0, 1] except CIDEr (about 0-10). The tokenizer and METEOR run on Java.

The LoRA/GPT-2 papers print E2E BLEU, METEOR and ROUGE-L multiplied by 100.

WebNLG and DART (:func:`webnlg_metrics`): BLEU from sacrebleu (13a tokenisation, multi-reference,
0-100), METEOR 1.5 on the raw texts (``-l en -norm``, 0-1), and TER from sacrebleu divided by 100
(0-1, lower is better), the units of the LoRA paper's tables.

References are given per instance as a non-empty list of strings (instance i's references); outputs
as one string per instance. For the E2E data an instance is one meaning representation (MR): use
:func:`group_references` to turn ``(mr, ref)`` rows into instances.
"""

from __future__ import annotations

import math
import re
import shutil
from collections import Counter
from collections.abc import Sequence

from lorakit.errors import LorakitError

__all__ = [
    "JavaNotFoundError",
    "MeteorSession",
    "MetricInputError",
    "coco_scores",
    "e2e_metrics",
    "group_references",
    "meteor_score",
    "mteval_bleu_nist",
    "mteval_tokenize",
    "pymteval_bleu_nist",
    "ptb_tokenize",
    "require_java",
    "sacrebleu_scores",
    "webnlg_metrics",
]

# ---------------------------------------------------------------------------------------------------
# mteval-v13a BLEU and NIST
# ---------------------------------------------------------------------------------------------------

# Perl's \s on character strings: ASCII whitespace (with \v) plus the Unicode White_Space characters.
_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_WS_RUN = re.compile(f"[{_WS}]+")
# mteval's "tokenize punctuation" class: { | } ~  [ \ ] ^ _ `  space ! " # $ % &  ( ) * +  : ; < = > ? @  /
_MTEVAL_PUNCT = re.compile(r"([{-~\[-`\x20-&(-+:-@/])")
_PERIOD_COMMA_AFTER_NONDIGIT = re.compile(r"([^0-9])([.,])")
_PERIOD_COMMA_BEFORE_NONDIGIT = re.compile(r"([.,])([^0-9])")
_DASH_AFTER_DIGIT = re.compile(r"([0-9])(-)")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

_BLEU_ORDER = 4
_NIST_ORDER = 5


class MetricInputError(LorakitError, ValueError):
    """Texts a metric cannot score, or an unknown metric option; the message says which and why."""


def mteval_tokenize(text: str, preserve_case: bool = False) -> list[str]:
    """Tokens of ``text`` under mteval-v13a's default (non-international) tokenisation.

    As the script sees a segment of an SGML file: whitespace runs are one space; ``<skipped>`` is
    removed; the entities ``&quot; &amp; &lt; &gt;`` are decoded (in that order); A-Z are lowercased
    (only ASCII, unless ``preserve_case``); ASCII punctuation other than ``' - . ,`` is split off; a
    period or comma is split off unless it sits between two digits; a dash after a digit is split off.
    """
    t = _WS_RUN.sub(" ", text)
    t = t.replace("<skipped>", "")
    t = t.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    t = f" {t} "
    if not preserve_case:
        t = t.translate(_ASCII_LOWER)
    t = _MTEVAL_PUNCT.sub(r" \1 ", t)
    t = _PERIOD_COMMA_AFTER_NONDIGIT.sub(r"\1 \2 ", t)
    t = _PERIOD_COMMA_BEFORE_NONDIGIT.sub(r" \1 \2", t)
    t = _DASH_AFTER_DIGIT.sub(r"\1 \2 ", t)
    t = _WS_RUN.sub(" ", t).strip(" ")
    return t.split(" ") if t else []


def _ngrams(words: Sequence[str], max_n: int) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for start in range(len(words)):
        for n in range(1, min(max_n, len(words) - start) + 1):
            counts[tuple(words[start : start + n])] += 1
    return counts


def _check_corpus(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("hypotheses must be a list of strings and references a list of lists of strings")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} reference groups; give one group of "
            "references per hypothesis"
        )
    if not hypotheses:
        raise ValueError("nothing to score: no hypotheses")
    for i, (hyp, refs) in enumerate(zip(hypotheses, references, strict=True)):
        if not isinstance(hyp, str):
            raise TypeError(f"hypothesis {i} is not a string: {hyp!r}")
        if isinstance(refs, str) or not refs:
            raise ValueError(f"instance {i}: references must be a non-empty list of strings, got {refs!r}")
        for ref in refs:
            if not isinstance(ref, str):
                raise TypeError(f"instance {i}: a reference is not a string: {ref!r}")


def _information_weights(tokenized_refs: Sequence[Sequence[list[str]]]) -> dict[tuple[str, ...], float]:
    """NIST information of every reference n-gram: -log2(count(w1..wn) / count(w1..wn-1)), in bits.

    Counts run over all references of all instances; unigrams divide by the total number of reference
    words. Like mteval, a bigram whose first word is "0" also divides by the total word count (Perl
    reads the one-word prefix "0" as false).
    """
    counts: Counter[tuple[str, ...]] = Counter()
    total_words = 0
    for refs in tokenized_refs:
        for words in refs:
            total_words += len(words)
            counts.update(_ngrams(words, _NIST_ORDER))
    info: dict[tuple[str, ...], float] = {}
    for ngram, count in counts.items():
        prefix = ngram[:-1]
        if prefix and prefix != ("0",):
            ratio = count / counts[prefix]
        else:
            ratio = count / total_words
        info[ngram] = -math.log(ratio) / math.log(2)
    return info


def _closest_ref_length(hyp_len: int, ref_lengths: Sequence[int]) -> int:
    # mteval starts from the first reference's length, then ignores empty references; the closest
    # length wins and a tie goes to the shorter one.
    candidates = [ref_lengths[0]] + [n for n in ref_lengths[1:] if n > 0]
    return min(candidates, key=lambda n: (abs(hyp_len - n), n))


def _nist_length_penalty(ratio: float) -> float:
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    beta = -math.log(0.5) / math.log(1.5) / math.log(1.5)
    return math.exp(-beta * math.log(ratio) * math.log(ratio))


def mteval_bleu_nist(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-4 (fraction in [0, 1]) and NIST-5 (bits) as ``mteval-v13a-sig.pl`` computes them.

    Same numbers as the E2E official scorer's BLEU and NIST (see the module docstring). Empty
    hypotheses are allowed and simply match nothing.
    """
    _check_corpus(hypotheses, references)
    hyps = [mteval_tokenize(h) for h in hypotheses]
    refs = [[mteval_tokenize(r) for r in group] for group in references]
    info = _information_weights(refs)

    matches = [0] * (_NIST_ORDER + 1)
    hyp_ngrams = [0] * (_NIST_ORDER + 1)
    ref_words = 0
    match_info = [0.0] * (_NIST_ORDER + 1)
    ref_length = 0
    nonempty_refs = 0
    for hyp, group in zip(hyps, refs, strict=True):
        hyp_counts = _ngrams(hyp, _NIST_ORDER)
        max_ref_counts: dict[tuple[str, ...], int] = {}
        for words in group:
            for ngram, count in _ngrams(words, _NIST_ORDER).items():
                if count > max_ref_counts.get(ngram, 0):
                    max_ref_counts[ngram] = count
            ref_words += len(words)
            nonempty_refs += bool(words)
        ref_length += _closest_ref_length(len(hyp), [len(words) for words in group])
        for n in range(1, _NIST_ORDER + 1):
            hyp_ngrams[n] += max(len(hyp) - n + 1, 0)
        for ngram, count in hyp_counts.items():
            if ngram in max_ref_counts:
                clipped = min(count, max_ref_counts[ngram])
                matches[len(ngram)] += clipped
                match_info[len(ngram)] += info[ngram] * clipped
    if nonempty_refs == 0:
        raise ValueError("every reference is empty after tokenisation; BLEU/NIST are undefined")

    # BLEU with mteval's default smoothing.
    log_precisions = 0.0
    smooth = 1.0
    for n in range(1, _BLEU_ORDER + 1):
        if hyp_ngrams[n] == 0:
            continue  # log precision 0, as mteval
        if matches[n] == 0:
            smooth *= 2
            log_precisions += math.log(1 / (smooth * hyp_ngrams[n]))
        else:
            log_precisions += math.log(matches[n] / hyp_ngrams[n])
    brevity = math.exp(min(0.0, 1 - ref_length / hyp_ngrams[1])) if hyp_ngrams[1] > 0 else 0.0
    bleu = math.exp(log_precisions / _BLEU_ORDER) * brevity

    # NIST: information per hypothesis n-gram, times a penalty on the length ratio to the mean
    # reference length (average number of non-empty references per instance).
    refs_per_instance = nonempty_refs / len(hyps)
    penalty = _nist_length_penalty(hyp_ngrams[1] / (ref_words / refs_per_instance))
    nist = sum(match_info[n] / max(hyp_ngrams[n], 1) for n in range(1, _NIST_ORDER + 1)) * penalty
    return {"BLEU": bleu, "NIST": nist}


# The scorer's Python mode (``measure_scores.py -p``, its metrics/pymteval.py): the command the LoRA
# paper's README gives for E2E. Same BLEU/NIST on typical outputs; it departs from the Perl script where
# outputs are shorter than the n-gram order, where the number of references varies, and on empty texts.


def _pymteval_tokenize(text: str) -> list[str]:
    """Tokens as the scorer's Python mode makes them: mteval's punctuation rules, Unicode-aware whitespace
    and full Unicode lowercasing; an empty text is one empty token."""
    t = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    t = t.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    t = _MTEVAL_PUNCT.sub(r" \1 ", f" {t} ")
    t = _PERIOD_COMMA_AFTER_NONDIGIT.sub(r"\1 \2 ", t)
    t = _PERIOD_COMMA_BEFORE_NONDIGIT.sub(r" \1 \2", t)
    t = _DASH_AFTER_DIGIT.sub(r"\1 \2 ", t)
    return [word.lower() for word in re.sub(r"\s+", " ", t).strip().split(" ")]


def pymteval_bleu_nist(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-4 (fraction) and NIST-5 (bits) as the E2E scorer's Python mode (``-p``) computes them.

    Differences from :func:`mteval_bleu_nist` (the scorer's default, the Perl script), all kept on purpose:

    * an output of k words adds k - n (negative when k < n) to the n-gram count of order n;
    * the NIST length penalty compares the total output length with the sum over instances of each
      instance's mean reference length (Perl: total reference words over the mean number of references);
    * n-gram information has no special case for the word "0"; a zero count is floored at 1e-15 in
      BLEU (Perl: halving smoothing); the closest reference may be an empty one;
    * lowercasing is full Unicode; an empty text counts as one empty word.
    """
    _check_corpus(hypotheses, references)
    hyps = [_pymteval_tokenize(h) for h in hypotheses]
    refs = [[_pymteval_tokenize(r) for r in group] for group in references]
    ref_counts: Counter[tuple[str, ...]] = Counter()  # all reference n-grams, () = total reference words
    hits = [0] * (_NIST_ORDER + 1)
    hit_ngrams: list[tuple[tuple[str, ...], int]] = []
    output_ngrams = [0] * (_NIST_ORDER + 1)
    closest_ref_words = 0
    mean_ref_words = 0.0
    for hyp, group in zip(hyps, refs, strict=True):
        max_ref_counts: dict[tuple[str, ...], int] = {}
        for words in group:
            for ngram, count in _ngrams(words, _NIST_ORDER).items():
                max_ref_counts[ngram] = max(max_ref_counts.get(ngram, 0), count)
                ref_counts[ngram] += count
            ref_counts[()] += len(words)
        for ngram, count in _ngrams(hyp, _NIST_ORDER).items():
            clipped = min(count, max_ref_counts.get(ngram, 0))
            if clipped:
                hits[len(ngram)] += clipped
                hit_ngrams.append((ngram, clipped))
        for n in range(1, _NIST_ORDER + 1):
            output_ngrams[n] += len(hyp) - n + 1
        closest_ref_words += min((len(w) for w in group), key=lambda k: (abs(k - len(hyp)), k))
        mean_ref_words += sum(len(w) for w in group) / len(group)

    log_precisions = sum(
        math.log(max(hits[n], 1e-15) / max(output_ngrams[n], 1e-9)) for n in range(1, _BLEU_ORDER + 1)
    )
    brevity = 1.0
    if output_ngrams[1] <= closest_ref_words:
        brevity = math.exp(1 - closest_ref_words / (output_ngrams[1] or 1e-5))
    bleu = brevity * math.exp(log_precisions / _BLEU_ORDER)

    hit_info = [0.0] * (_NIST_ORDER + 1)
    for ngram, clipped in hit_ngrams:
        hit_info[len(ngram)] += math.log2(ref_counts[ngram[:-1]] / ref_counts[ngram]) * clipped
    if 0 in output_ngrams[1:]:
        order = output_ngrams.index(0, 1)
        raise MetricInputError(
            f"the outputs hold 0 {order}-grams in total (short outputs count negatively in this mode), and "
            "the scorer's Python mode divides by that count; score with mteval_bleu_nist (the Perl mode)"
        )
    nist = sum(hit_info[n] / output_ngrams[n] for n in range(1, _NIST_ORDER + 1))
    nist *= _nist_length_penalty(output_ngrams[1] / mean_ref_words)
    return {"BLEU": bleu, "NIST": nist}


# ---------------------------------------------------------------------------------------------------
# Java-backed metrics from pycocoevalcap: PTB tokenizer, METEOR 1.5, plus ROUGE-L and CIDEr
# ---------------------------------------------------------------------------------------------------


class JavaNotFoundError(LorakitError, RuntimeError):
    """A metric needs the ``java`` command (METEOR 1.5, the Stanford PTB tokenizer) and there is none."""


def require_java(purpose: str) -> str:
    """Return the path of ``java``, or raise :class:`JavaNotFoundError` saying what needs it and how to
    install it."""
    java = shutil.which("java")
    if java is None:
        raise JavaNotFoundError(
            f"{purpose} runs on Java, but no `java` command was found on PATH. Install a Java runtime "
            "(8 or newer; e.g. `apt-get install default-jre-headless`) or put its bin/ directory on PATH."
        )
    return java


def _import_pycocoevalcap(what: str):  # noqa: ANN202 - returns a module
    try:
        import pycocoevalcap
    except ImportError:
        raise ImportError(
            f"{what} needs the pycocoevalcap package; install it with `pip install 'lorakit[nlg]'`"
        ) from None
    return pycocoevalcap


# Line breaks Java's tokenizer or METEOR's line protocol would split on, inside one text.
_LINE_BREAKS = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _one_line(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text)


def ptb_tokenize(groups: Sequence[Sequence[str]]) -> list[list[str]]:
    """PTB-tokenise texts as the MS-COCO caption evaluation does, keeping the grouping.

    Runs pycocoevalcap's Stanford PTB tokenizer (``-preserveLines -lowerCase``) and drops its
    punctuation tokens (quotes, brackets, ``. ? ! , : ; - -- ...``). Returns, per group, one string of
    space-separated lowercase tokens per input text. Needs Java.
    """
    require_java("The Stanford PTB tokenizer (used for METEOR, ROUGE-L and CIDEr on E2E)")
    _import_pycocoevalcap("PTB tokenisation")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = {i: [{"caption": _one_line(t)} for t in group] for i, group in enumerate(groups) if group}
    if not captions:
        return [[] for _ in groups]
    try:
        tokenized = PTBTokenizer().tokenize(captions)
    except PermissionError as exc:
        raise RuntimeError(
            "pycocoevalcap's PTB tokenizer writes a temporary file next to its jar and could not "
            f"({exc}); make the pycocoevalcap/tokenizer directory writable"
        ) from None
    out = []
    for i, group in enumerate(groups):
        tokens = tokenized.get(i, []) if group else []
        if len(tokens) != len(group):
            raise RuntimeError(
                f"the PTB tokenizer returned {len(tokens)} lines for instance {i}, which has {len(group)} "
                "texts; is Java working (try `java -version`)?"
            )
        out.append(list(tokens))
    return out


def _sanitize_for_meteor(text: str) -> str:
    return " ".join(_one_line(text).replace("|||", " ").split())


class MeteorSession:
    """A running ``meteor-1.5.jar -l en -norm`` process (pycocoevalcap's), reusable across corpora.

    Starting METEOR loads its paraphrase table, which takes several seconds; pass one session to
    :func:`meteor_score`, :func:`coco_scores`, :func:`e2e_metrics` or :func:`webnlg_metrics` to score
    several systems with one start. Use it as a context manager (or call :meth:`close`).
    """

    def __init__(self) -> None:
        require_java("METEOR 1.5 (meteor-1.5.jar)")
        _import_pycocoevalcap("METEOR")
        from pycocoevalcap.meteor.meteor import Meteor

        self._scorer = Meteor()
        self._closed = False

    def score(self, gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
        """Corpus METEOR of ``res[i][0]`` against ``gts[i]`` (texts sent as they are), in [0, 1]."""
        if self._closed:
            raise RuntimeError("this MeteorSession is closed; start a new one")
        scorer = self._scorer
        try:
            score, _ = scorer.compute_score(gts, res)
        except (ValueError, OSError) as exc:
            process = scorer.meteor_p
            process.kill()
            err = process.stderr.read().decode("utf-8", "replace").strip()[-2000:] if process.stderr else ""
            self.close()
            raise RuntimeError(f"METEOR (java -jar meteor-1.5.jar) failed: {exc}\n{err}") from None
        return float(score)

    def close(self) -> None:
        """Stop the Java process (idempotent)."""
        if self._closed:
            return
        self._closed = True
        scorer = self._scorer
        # pycocoevalcap keeps its lock when scoring fails, and its __del__ would then block forever.
        if scorer.lock.locked():
            scorer.lock.release()
        process = scorer.meteor_p
        if process.stdin is not None:
            process.stdin.close()
        process.kill()
        process.wait()

    def __enter__(self) -> MeteorSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _meteor(gts: dict[int, list[str]], res: dict[int, list[str]], session: MeteorSession | None) -> float:
    if session is not None:
        return session.score(gts, res)
    with MeteorSession() as own:
        return own.score(gts, res)


def meteor_score(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], meteor: MeteorSession | None = None
) -> float:
    """Corpus METEOR 1.5 (``meteor-1.5.jar -l en -norm``, statistics summed over the corpus), in [0, 1].

    Texts go to the jar as they are (``-norm`` lowercases and normalises punctuation); ``|||`` and line
    breaks, which its protocol cannot carry, become spaces. Needs Java; starting it takes a few seconds
    (pass a :class:`MeteorSession` to reuse a running one).
    """
    _check_corpus(hypotheses, references)
    gts = {i: [_sanitize_for_meteor(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [_sanitize_for_meteor(h)] for i, h in enumerate(hypotheses)}
    return _meteor(gts, res, meteor)


def coco_scores(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    metrics: Sequence[str] = ("METEOR", "ROUGE_L", "CIDEr"),
    meteor: MeteorSession | None = None,
) -> dict[str, float]:
    """METEOR, ROUGE-L and/or CIDEr as the E2E scorer's MS-COCO evaluator computes them.

    Hypotheses and references are PTB-tokenised first (see :func:`ptb_tokenize`). METEOR and ROUGE-L
    are in [0, 1], CIDEr is unbounded (about 0-10). Needs Java.
    """
    _check_corpus(hypotheses, references)
    unknown = [m for m in metrics if m not in ("METEOR", "ROUGE_L", "CIDEr")]
    if unknown:
        raise ValueError(f"unknown COCO metric(s) {unknown}; choose from METEOR, ROUGE_L, CIDEr")
    tokenized = ptb_tokenize([list(refs) + [hyp] for hyp, refs in zip(hypotheses, references, strict=True)])
    gts = {i: group[:-1] for i, group in enumerate(tokenized)}
    res = {i: [group[-1]] for i, group in enumerate(tokenized)}
    out: dict[str, float] = {}
    for name in metrics:
        if name == "METEOR":
            out[name] = _meteor(gts, res, meteor)
        elif name == "ROUGE_L":
            from pycocoevalcap.rouge.rouge import Rouge

            out[name] = float(Rouge().compute_score(gts, res)[0])
        else:
            from pycocoevalcap.cider.cider import Cider

            out[name] = float(Cider().compute_score(gts, res)[0])
    return out


def e2e_metrics(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    meteor: MeteorSession | None = None,
    mteval: str = "perl",
) -> dict[str, float]:
    """The five E2E NLG Challenge metrics: ``BLEU, NIST, METEOR, ROUGE_L, CIDEr`` (official units).

    ``references[i]`` are all human references of instance (MR) i. Agrees with the official
    ``measure_scores.py`` to at least 4 decimals: with ``mteval="perl"`` its default BLEU/NIST (the Perl
    mteval script), with ``mteval="python"`` its ``-p`` mode, which the LoRA paper's README uses (see
    :func:`pymteval_bleu_nist`). Needs Java for the last three.
    """
    if mteval not in ("perl", "python"):
        raise MetricInputError(f"mteval must be 'perl' or 'python' (the official scorer's -p mode), not {mteval!r}")
    scores = (mteval_bleu_nist if mteval == "perl" else pymteval_bleu_nist)(hypotheses, references)
    scores.update(coco_scores(hypotheses, references, meteor=meteor))
    return {k: scores[k] for k in ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")}


# ---------------------------------------------------------------------------------------------------
# sacrebleu BLEU/TER and the WebNLG/DART metric set
# ---------------------------------------------------------------------------------------------------


def _reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    # sacrebleu wants one stream per reference position; None marks a missing reference (ignored).
    depth = max(len(refs) for refs in references)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(depth)]


def sacrebleu_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """sacrebleu's default corpus BLEU (13a tokenisation, 0-100) and TER (0-100), multi-reference."""
    _check_corpus(hypotheses, references)
    try:
        from sacrebleu.metrics import BLEU, TER
    except ImportError:
        raise ImportError("BLEU/TER need the sacrebleu package; `pip install 'lorakit[nlg]'`") from None
    streams = _reference_streams(references)
    hyps = list(hypotheses)
    return {
        "BLEU": float(BLEU().corpus_score(hyps, streams).score),  # type: ignore[arg-type]
        "TER": float(TER().corpus_score(hyps, streams).score),  # type: ignore[arg-type]
    }


def webnlg_metrics(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], meteor: MeteorSession | None = None
) -> dict[str, float]:
    """WebNLG/DART metrics: ``BLEU`` (sacrebleu, 0-100), ``METEOR`` (0-1), ``TER`` (0-1, lower is better).

    Needs Java for METEOR.
    """
    scores = sacrebleu_scores(hypotheses, references)
    return {
        "BLEU": scores["BLEU"],
        "METEOR": meteor_score(hypotheses, references, meteor=meteor),
        "TER": scores["TER"] / 100.0,
    }


# ---------------------------------------------------------------------------------------------------
# Grouping (mr, ref) rows into instances
# ---------------------------------------------------------------------------------------------------


def group_references(sources: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Group reference rows by their source (the E2E meaning representation).

    Returns ``(distinct_sources, groups)``: the distinct sources in order of first appearance and, for
    each, all its references in file order. The official E2E scorer groups runs of *consecutive* equal
    MRs when outputs come as plain text; on the official dev/test CSVs (each MR's rows are contiguous)
    the two agree, and where an MR recurs later (the training CSV) grouping it in one instance is the
    meaningful choice.
    """
    if len(sources) != len(references):
        raise ValueError(f"{len(sources)} sources but {len(references)} references")
    groups: dict[str, list[str]] = {}
    for src, ref in zip(sources, references, strict=True):
        groups.setdefault(src, []).append(ref)
    return list(groups), list(groups.values())
