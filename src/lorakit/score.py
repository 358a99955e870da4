"""``lorakit score``: score any system's outputs with the official NLG/NLU metrics.

    lorakit score TASK --references REF --predictions PRED [--json OUT]

TASK is one of e2e, webnlg, dart (NLG), cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte (GLUE dev sets),
squad, squad_v2. The file layouts are described in ``docs/score.md`` and in ``--help``. The command
prints a small table of metrics; ``--json OUT`` also writes ``{metric: value}`` (plus ``n_instances`` and
``n_empty_predictions``). Bad input is reported with a message naming the file, exit status 2, and
nothing written.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorakit.errors import LorakitError

from .fileio import atomic_write

NLG_TASKS = ("e2e", "webnlg", "dart")
GLUE_TASK_NAMES = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")
QA_TASKS = ("squad", "squad_v2")
TASKS = NLG_TASKS + GLUE_TASK_NAMES + QA_TASKS

# GLUE dev TSVs: header name of the label column (None: CoLA has no header, label in column 1), and
# the task's label set (None: STS-B, a real-valued score).
_GLUE_LABEL_COLUMN: dict[str, str | None] = {
    "cola": None,
    "sst2": "label",
    "mrpc": "Quality",
    "stsb": "score",
    "qqp": "is_duplicate",
    "mnli": "gold_label",
    "qnli": "label",
    "rte": "label",
}
_GLUE_LABELS: dict[str, frozenset[str] | None] = {
    "cola": frozenset({"0", "1"}),
    "sst2": frozenset({"0", "1"}),
    "mrpc": frozenset({"0", "1"}),
    "stsb": None,
    "qqp": frozenset({"0", "1"}),
    "mnli": frozenset({"entailment", "neutral", "contradiction"}),
    "qnli": frozenset({"entailment", "not_entailment"}),
    "rte": frozenset({"entailment", "not_entailment"}),
}

# Column headers recognised in (mr, ref) and (mr, output) CSV/TSV files, compared case-insensitively
# after removing spaces, dashes and underscores.
_SOURCE_HEADERS = {"mr", "mrs", "src", "source", "sources", "meaningrepresentation", "input", "da"}
_REFERENCE_HEADERS = {"ref", "refs", "reference", "references", "target", "tgt", "trg", "humanreference"}
_OUTPUT_HEADERS = {
    "output",
    "outputs",
    "out",
    "prediction",
    "predictions",
    "pred",
    "hyp",
    "hypothesis",
    "sys",
    "system",
    "systemoutput",
    "generated",
    "generation",
}
# Character fixes the official E2E scorer applies to its CSV/TSV input (mis-encoded pound and e-acute).
_E2E_CSV_FIXES = (("Ł", "£"), ("Â£", "£"), ("Ã©", "é"), ("ã©", "é"))


class ScoreInputError(LorakitError):
    """Unusable input for ``lorakit score``; the message says which file and what to change."""


@dataclass
class ScoreResult:
    """What ``lorakit score`` reports: the metrics and the instance/empty-prediction counts."""

    task: str
    metrics: dict[str, float]
    n_instances: int
    empty: list[int] = field(default_factory=list)  # 1-based instance numbers of empty predictions
    empty_unit: str = "line"
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.metrics.items()
        }
        out["n_instances"] = self.n_instances
        out["n_empty_predictions"] = len(self.empty)
        return out


# ---------------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------------


def _read_text(path: Path, role: str) -> str:
    """The file decoded as UTF-8 (a BOM is dropped); ScoreInputError naming the file otherwise."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ScoreInputError(f"{role} file not found: {path}") from None
    except IsADirectoryError:
        raise ScoreInputError(f"{role} path is a directory, not a file: {path}") from None
    except OSError as exc:
        raise ScoreInputError(f"cannot read the {role} file {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise ScoreInputError(
            f"cannot read the {role} file {path}: it is not valid UTF-8 (byte 0x{bad} at offset {exc.start}). "
            "Convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8`."
        ) from None


def _lines(text: str) -> list[str]:
    """Lines split on "\\n" only (a final newline ends the last line), each stripped of whitespace."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines]


def _is_table(path: Path) -> bool:
    return path.suffix.lower() in (".csv", ".tsv")


def _header_key(name: str) -> str:
    return re.sub(r"[\s_.\-]+", "", name.strip().lower())


def _read_two_column_table(
    path: Path, role: str, value_headers: set[str], value_name: str, task: str
) -> tuple[list[str], list[str], int]:
    """(sources, values, number of the first data row) from a CSV/TSV with an MR column and a text column.

    A header row naming both columns (e.g. ``mr,ref``) may put them anywhere; without a header the file
    must have exactly two columns, source first. The delimiter is a tab if the first line has one, else
    a comma (as the official E2E scorer decides).
    """
    text = _read_text(path, role)
    if task == "e2e":
        for bad, good in _E2E_CSV_FIXES:
            text = text.replace(bad, good)
    first_line = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first_line else ","
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if row]
    except csv.Error as exc:
        raise ScoreInputError(f"cannot parse the {role} file {path} as CSV/TSV: {exc}") from None
    if not rows:
        raise ScoreInputError(f"the {role} file {path} is empty")
    header = [_header_key(h) for h in rows[0]]
    src_cols = [i for i, h in enumerate(header) if h in _SOURCE_HEADERS]
    val_cols = [i for i, h in enumerate(header) if h in value_headers]
    if len(src_cols) == 1 and len(val_cols) == 1:
        src_col, val_col, body, first_row = src_cols[0], val_cols[0], rows[1:], 2
    elif not src_cols and not val_cols and len(rows[0]) == 2:
        src_col, val_col, body, first_row = 0, 1, rows, 1
    else:
        raise ScoreInputError(
            f"cannot find the columns of the {role} file {path}: expected a header with one MR column "
            f"(e.g. 'mr') and one {value_name} column (e.g. '{sorted(value_headers)[0]}'), or exactly two "
            f"columns without a header; the first row is {rows[0]!r}"
        )
    width = len(rows[0])
    sources, values = [], []
    for number, row in enumerate(body, start=first_row):
        if len(row) != width:
            raise ScoreInputError(
                f"{role} file {path}: row {number} has {len(row)} columns, the header/first row has {width}"
            )
        sources.append(row[src_col].strip())
        values.append(row[val_col].strip())
    if not values:
        raise ScoreInputError(f"the {role} file {path} has a header but no rows")
    return sources, values, first_row


def _read_multi_reference_text(path: Path) -> list[list[str]]:
    """Groups of reference lines separated by blank lines; a file without blank lines has one reference
    per line (the official E2E scorer's rule). Several blank lines in a row count as one separator."""
    groups: list[list[str]] = [[]]
    for line in _lines(_read_text(path, "references")):
        if line:
            groups[-1].append(line)
        elif groups[-1]:
            groups.append([])
    if not groups[-1]:
        groups.pop()
    if not groups:
        raise ScoreInputError(f"the references file {path} has no references")
    if len(groups) == 1:
        groups = [[line] for line in groups[0]]
    return groups


def _load_nlg(task: str, ref_path: Path, pred_path: Path) -> tuple[list[str], list[list[str]], str]:
    """(hypotheses, reference groups, unit of the prediction numbering)."""
    ref_sources: list[str] | None = None
    if _is_table(ref_path):
        sources, refs, first = _read_two_column_table(
            ref_path, "references", _REFERENCE_HEADERS, "reference", task
        )
        for number, (src, ref) in enumerate(zip(sources, refs, strict=True), start=first):
            if not ref:
                raise ScoreInputError(
                    f"references file {ref_path}: row {number} (MR {src!r}) has an empty reference"
                )
        from lorakit.metrics.nlg import group_references

        ref_sources, groups = group_references(sources, refs)
    else:
        groups = _read_multi_reference_text(ref_path)

    if _is_table(pred_path):
        pred_sources, hyps, first = _read_two_column_table(
            pred_path, "predictions", _OUTPUT_HEADERS, "output", task
        )
        if ref_sources is not None:
            groups = _align_by_source(pred_sources, ref_sources, groups, pred_path, ref_path, first)
        unit = "instance"
    else:
        hyps = _lines(_read_text(pred_path, "predictions"))
        unit = "line"
    if len(hyps) != len(groups):
        what = "distinct MRs" if ref_sources is not None else "reference groups"
        trailing = len(hyps) - len(_strip_trailing_empty(hyps))
        hint = f" (its last {trailing} lines are empty)" if trailing and len(hyps) > len(groups) else ""
        raise ScoreInputError(
            f"the predictions file {pred_path} has {len(hyps)} predictions{hint} but the references file "
            f"{ref_path} has {len(groups)} instances ({what}); give exactly one prediction per instance, "
            "in the references' order"
        )
    return hyps, groups, unit


def _strip_trailing_empty(lines: list[str]) -> list[str]:
    end = len(lines)
    while end and not lines[end - 1]:
        end -= 1
    return lines[:end]


def _align_by_source(
    pred_sources: list[str],
    ref_sources: list[str],
    groups: list[list[str]],
    pred_path: Path,
    ref_path: Path,
    first_row: int,
) -> list[list[str]]:
    by_source = dict(zip(ref_sources, groups, strict=True))
    seen: set[str] = set()
    for number, src in enumerate(pred_sources, start=first_row):
        if src not in by_source:
            raise ScoreInputError(
                f"predictions file {pred_path}: row {number} has an MR that the references "
                f"file {ref_path} does not have: {src!r}"
            )
        if src in seen:
            raise ScoreInputError(
                f"predictions file {pred_path}: the MR of row {number} was already predicted: {src!r}"
            )
        seen.add(src)
    if len(pred_sources) != len(ref_sources):
        raise ScoreInputError(
            f"the predictions file {pred_path} has {len(pred_sources)} predictions but the references file "
            f"{ref_path} has {len(ref_sources)} instances (distinct MRs); predict every MR once"
        )
    return [by_source[src] for src in pred_sources]


def _load_json(path: Path, role: str) -> Any:
    text = _read_text(path, role)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScoreInputError(f"cannot parse the {role} file {path} as JSON: {exc}") from None


def _read_tsv_rows(path: Path, role: str) -> list[list[str]]:
    return [line.rstrip("\r").split("\t") for line in _read_text(path, role).split("\n") if line.strip()]


def _load_glue(task: str, ref_path: Path, pred_path: Path) -> tuple[list[str], list[str]]:
    """(predictions, references) as strings, in dev-set row order."""
    rows = _read_tsv_rows(ref_path, "references")
    column_name = _GLUE_LABEL_COLUMN[task]
    if column_name is None:
        if not rows or len(rows[0]) != 4:
            raise ScoreInputError(
                f"references file {ref_path}: expected the CoLA dev.tsv (4 tab-separated "
                f"columns, no header, label in column 2); first row: {rows[:1]!r}"
            )
        column, body, first = 1, rows, 1
    else:
        header = rows[0] if rows else []
        if column_name not in header:
            raise ScoreInputError(
                f"references file {ref_path}: no '{column_name}' column in its header {header!r}; expected "
                f"the GLUE {task} dev.tsv (GLUE test sets have no labels; score on dev)"
            )
        column, body, first = header.index(column_name), rows[1:], 2
    refs = []
    for number, row in enumerate(body, start=first):
        if len(row) <= column:
            raise ScoreInputError(
                f"references file {ref_path}: line {number} has {len(row)} columns, too "
                f"few to hold the label (column {column + 1})"
            )
        refs.append(row[column].strip())
    if not refs:
        raise ScoreInputError(f"references file {ref_path} has no examples")
    preds = _read_glue_predictions(pred_path)
    if len(preds) != len(refs):
        raise ScoreInputError(
            f"the predictions file {pred_path} has {len(preds)} predictions but the references file "
            f"{ref_path} has {len(refs)} examples; give one prediction per dev example"
        )
    labels = _GLUE_LABELS[task]
    if labels is None:
        for i, p in enumerate(preds):
            if p == "":
                raise ScoreInputError(
                    f"predictions file {pred_path}: prediction {i} is empty; STS-B needs a "
                    "number for every example"
                )
            try:
                float(p)
            except ValueError:
                raise ScoreInputError(
                    f"predictions file {pred_path}: prediction {i} is not a number: {p!r}"
                ) from None
        for i, r in enumerate(refs):
            try:
                float(r)
            except ValueError:
                raise ScoreInputError(
                    f"references file {ref_path}: the score of example {i} is not a number: {r!r}"
                ) from None
    else:
        for role, path, values in (("references", ref_path, refs), ("predictions", pred_path, preds)):
            bad = sorted({v for v in values if v and v not in labels})
            if bad:
                raise ScoreInputError(
                    f"{role} file {path} uses labels that are not {task} labels: {bad[:5]}; the {task} labels "
                    f"are {sorted(labels)}"
                )
    return preds, refs


def _read_glue_predictions(path: Path) -> list[str]:
    """Predictions by dev row: ``index<TAB>prediction`` lines (GLUE submission layout, optional header),
    or one prediction per line."""
    lines = _lines_keep_inner(_read_text(path, "predictions"))
    if not lines:
        raise ScoreInputError(f"the predictions file {path} is empty")
    if not any("\t" in line for line in lines):
        return [line.strip() for line in lines]
    first = lines[0].split("\t")[0].strip()
    if not re.fullmatch(r"-?\d+", first):
        lines = lines[1:]  # header, e.g. "index<TAB>prediction"
    by_index: dict[int, str] = {}
    for number, line in enumerate(lines, start=1):
        parts = line.split("\t")
        if len(parts) != 2 or not re.fullmatch(r"\d+", parts[0].strip()):
            raise ScoreInputError(
                f"predictions file {path}: line {number} is not 'index<TAB>prediction': {line!r}"
            )
        index = int(parts[0])
        if index in by_index:
            raise ScoreInputError(f"predictions file {path}: index {index} appears twice")
        by_index[index] = parts[1].strip()
    expected = set(range(len(by_index)))
    if set(by_index) != expected:
        missing = sorted(expected - set(by_index))[:5]
        raise ScoreInputError(
            f"predictions file {path}: the indices must be 0..{len(by_index) - 1} (one per "
            f"dev example); missing e.g. {missing}"
        )
    return [by_index[i] for i in range(len(by_index))]


def _lines_keep_inner(text: str) -> list[str]:
    lines = [line.rstrip("\r") for line in text.split("\n")]
    return _strip_trailing_empty(lines)


def _load_squad(task: str, ref_path: Path, pred_path: Path) -> tuple[Any, dict[str, str]]:
    from lorakit.metrics.qa import squad_questions

    dataset = _load_json(ref_path, "references")
    try:
        questions = squad_questions(dataset)
    except ValueError as exc:
        raise ScoreInputError(f"references file {ref_path}: {exc}") from None
    if not questions:
        raise ScoreInputError(f"references file {ref_path} has no questions")
    if task == "squad":
        unanswerable = [q.qid for q in questions if q.is_impossible or not q.answers]
        if unanswerable:
            raise ScoreInputError(
                f"references file {ref_path} has {len(unanswerable)} unanswerable questions (SQuAD 2.0); "
                "score it with the task squad_v2"
            )
    predictions = _load_json(pred_path, "predictions")
    if not isinstance(predictions, dict):
        raise ScoreInputError(
            f"predictions file {pred_path}: expected a JSON object {{question id: answer}}, "
            f"got a {type(predictions).__name__}"
        )
    for qid, answer in predictions.items():
        if not isinstance(answer, str):
            raise ScoreInputError(
                f"predictions file {pred_path}: the answer for {qid!r} is not a string: {answer!r}"
            )
    ids = [q.qid for q in questions]
    missing = [qid for qid in ids if qid not in predictions]
    known = set(ids)
    unknown = [qid for qid in predictions if qid not in known]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"{len(missing)} questions have no prediction (e.g. {missing[:3]})")
        if unknown:
            parts.append(f"{len(unknown)} predictions are for ids not in the dataset (e.g. {unknown[:3]})")
        raise ScoreInputError(
            f"the predictions file {pred_path} has {len(predictions)} answers but the references file "
            f"{ref_path} has {len(ids)} questions: {'; '.join(parts)}"
        )
    return dataset, predictions


# ---------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------


def score_files(
    task: str, references: str | os.PathLike[str], predictions: str | os.PathLike[str], e2e_mteval: str = "perl"
) -> ScoreResult:
    """Read and check both files, then compute ``task``'s metrics. Raises ScoreInputError on bad input.

    ``e2e_mteval``: E2E BLEU/NIST as the official scorer's default ("perl") or its ``-p`` mode ("python").
    """
    key = task.strip().lower().replace("-", "")
    key = {"squadv2": "squad_v2", "squad2": "squad_v2"}.get(key, key)
    if key not in TASKS:
        raise ScoreInputError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    ref_path, pred_path = Path(references), Path(predictions)

    if key in NLG_TASKS:
        hyps, groups, unit = _load_nlg(key, ref_path, pred_path)
        empty = [i for i, h in enumerate(hyps, start=1) if not h]
        from lorakit.metrics import nlg

        if key == "e2e":
            metrics = nlg.e2e_metrics(hyps, groups, mteval=e2e_mteval)
        else:
            metrics = nlg.webnlg_metrics(hyps, groups)
        return ScoreResult(key, metrics, len(hyps), empty, unit)

    if key in GLUE_TASK_NAMES:
        preds, refs = _load_glue(key, ref_path, pred_path)
        from lorakit.metrics.classification import glue_metrics

        empty = [i for i, p in enumerate(preds, start=1) if not p]
        result = ScoreResult(key, glue_metrics(key, preds, refs), len(refs), empty, "example")
        if empty:
            result.notes.append("empty predictions count as wrong")
        if any(isinstance(v, float) and math.isnan(v) for v in result.metrics.values()):
            result.notes.append(
                "nan: a correlation is undefined because the predictions or references are constant"
            )
        return result

    from lorakit.metrics.qa import squad_questions, squad_v1_scores, squad_v2_scores

    dataset, answers = _load_squad(key, ref_path, pred_path)
    scores = squad_v1_scores(dataset, answers) if key == "squad" else squad_v2_scores(dataset, answers)
    n = int(scores.pop("total"))
    scores.pop("missing")
    qids = [q.qid for q in squad_questions(dataset)]
    empty = [i for i, qid in enumerate(qids, start=1) if not answers[qid].strip()]
    result = ScoreResult(key, scores, n, empty, "question")
    if empty:
        meaning = "the no-answer prediction of SQuAD 2.0" if key == "squad_v2" else "scored as given"
        result.notes.append(f"an empty answer is {meaning}; e.g. question id {qids[empty[0] - 1]!r}")
    return result


def format_table(result: ScoreResult, references: str, predictions: str) -> str:
    """The human-readable report: task, counts, empty predictions, one metric per line."""
    lines = [
        f"task: {result.task}   instances: {result.n_instances}",
        f"references: {references}",
        f"predictions: {predictions}",
    ]
    if result.empty:
        shown = ", ".join(str(i) for i in result.empty[:10]) + (", ..." if len(result.empty) > 10 else "")
        where = f" ({result.empty_unit}s {shown})"
        lines.append(
            f"empty predictions: {len(result.empty)} of {result.n_instances}{where}, scored as given"
        )
    else:
        lines.append("empty predictions: 0")
    lines += [f"note: {note}" for note in result.notes]
    width = max(len("metric"), *(len(k) for k in result.metrics))
    lines.append("")
    lines.append(f"{'metric'.ljust(width)}  value")
    for name, value in result.metrics.items():
        shown = str(value) if isinstance(value, int) else f"{value:.4f}"
        lines.append(f"{name.ljust(width)}  {shown}")
    return "\n".join(lines)


_EPILOG = """\
file layouts:
  e2e, webnlg, dart  references: a text file with one group of reference lines per instance, groups
                     separated by a blank line (a file without blank lines: one reference per line), or
                     a .csv/.tsv with 'mr' and 'ref' columns (the official E2E CSVs): instances are the
                     distinct MRs in order of first appearance.
                     predictions: one line per instance; or a .csv/.tsv with 'mr' and 'output' columns,
                     matched to the references by MR.
  GLUE tasks         references: the official dev.tsv (MNLI: dev_matched.tsv or dev_mismatched.tsv).
                     predictions: 'index<TAB>prediction' rows (the GLUE submission layout, header
                     optional) or one label per line, in dev-set order.
  squad, squad_v2    references: the official dataset JSON; predictions: a JSON {question id: answer}.

units: E2E as the official scorer (BLEU, METEOR, ROUGE_L in 0-1, NIST, CIDEr); WebNLG/DART BLEU 0-100,
METEOR and TER 0-1; GLUE 0-1; SQuAD in percent. METEOR, ROUGE_L and CIDEr need Java.
exit status: 0 ok, 2 bad input (nothing written)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lorakit score``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="lorakit score",
        description="Score a system's outputs with the official metrics of an NLG/NLU task.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("task", metavar="TASK", help=f"one of: {', '.join(TASKS)}")
    parser.add_argument("--references", "-r", required=True, metavar="REF", help="gold file")
    parser.add_argument("--predictions", "-p", required=True, metavar="PRED", help="system output file")
    parser.add_argument("--json", dest="json_out", metavar="OUT", help="also write {metric: value} here")
    parser.add_argument("--e2e-mteval", choices=("perl", "python"), default="perl",
                        help="E2E BLEU/NIST as the official scorer's default (perl) or its -p mode (python), "
                        "which the LoRA paper's README runs; they differ on short or repeated outputs")
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)

    try:
        json_out = Path(args.json_out) if args.json_out else None
        if json_out is not None and not json_out.parent.resolve().is_dir():
            raise ScoreInputError(
                f"cannot write --json {json_out}: the directory {json_out.parent} does not exist"
            )
        result = score_files(args.task, args.references, args.predictions, e2e_mteval=args.e2e_mteval)
    except ScoreInputError as exc:
        print(f"lorakit score: error: {exc}", file=sys.stderr)
        return 2
    except (ImportError, RuntimeError) as exc:  # missing Java / pycocoevalcap / sacrebleu, a crashed jar
        print(f"lorakit score: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # input the metric itself rejects
        print(f"lorakit score: error: {exc}", file=sys.stderr)
        return 2

    print(format_table(result, args.references, args.predictions))
    if json_out is not None:
        try:
            atomic_write(json_out, json.dumps(result.as_json(), indent=2, allow_nan=False) + "\n")
        except OSError as exc:
            print(f"lorakit score: error: cannot write --json {json_out}: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
