"""Readers for the NLG datasets of the LoRA paper: E2E, WebNLG 2017 and DART, from their official files.

Every reader returns a list of :class:`NLGExample` -- one per *input* (an E2E meaning representation, a
WebNLG/DART triple set) with all its references -- and raises :class:`DataError` naming the file and line
(or the entry id) and what is wrong when the input is malformed.

Formats read
------------
E2E (:func:`read_e2e`)
    * the official CSV files ``trainset.csv``, ``devset.csv``, ``testset_w_refs.csv`` (header ``mr,ref``)
      and ``testset.csv`` (header ``MR``, no references);
    * the LoRA repository's text files (``train.txt``, ``valid.txt``, ``test.txt``): one ``MR||text`` line
      per reference, the MR written ``key : value | key : value`` and the text tokenised.

    Rows are grouped by MR in order of first appearance (as the official E2E evaluation groups the
    references); the MR is kept as written in the file. A reference has its surrounding white space
    removed, and a line break inside it (two training references of ``trainset.csv`` contain ``\\r\\n``)
    becomes one space.
WebNLG 2017 (:func:`read_webnlg`)
    * the challenge's XML files (``train/{n}triples/*.xml``, ``dev/...``, ``test/testdata_with_lex.xml``,
      ``testdata_unseen_with_lex.xml``, ``testdata_no_lex.xml``), one file or a folder of them (read
      recursively, in sorted path order);
    * the LoRA repository's JSON (``{"entries": [{"1": {...}}, ...]}``). It holds the same entries as the
      XML and keeps *every* lexicalisation with its ``comment`` (``"good"`` or ``"toFix"``); the reader
      applies the same filter to both formats.

    The input is the entry's ``modifiedtripleset`` (the one the challenge and LoRA use). Only
    lexicalisations with ``comment="good"`` are references (one without a ``comment`` counts as good);
    an entry whose lexicalisations are all ``toFix`` is left out (5 entries of the official train split, 1
    of dev). ``seen`` says whether the category is one of the 10 training categories
    (:data:`WEBNLG_SEEN_CATEGORIES`); the test set adds the 5 of :data:`WEBNLG_UNSEEN_CATEGORIES`.
DART (:func:`read_dart`)
    * the JSON release (a list of ``{"tripleset": [[s, p, o], ...], "annotations": [{"source", "text"}]}``)
      and the XML release (the WebNLG layout; every ``<lex>`` is a reference, its ``comment`` is the source).

    An empty ``<lex/>`` is ignored when the entry has other references (the official 2021 test XML has one,
    entry ``Id116``).

For the triple sets of a file that has references, an entry without any reference is an error; a file in
which no entry has one (``testdata_no_lex.xml``) gives examples with ``references == ()``.

Linearisation (:func:`linearize_triples`)
-----------------------------------------
``subject : property : object`` per triple, triples joined by `` | `` in the file's order, as in the LoRA
repository. In each field underscores become spaces (``Aarhus_Airport`` -> ``Aarhus Airport``,
``ISBN_number`` -> ``ISBN number``, DART's ``LEADER_NAME`` -> ``LEADER NAME``), runs of white space become
one space, and the double quotes of a field that is one quoted string are removed (``"18L/36R"`` ->
``18L/36R``; other quotes stay: ``"Squeezed" or "smashed"`` is kept as is).
"""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataError

__all__ = [
    "NLGExample", "DataError", "WEBNLG_SEEN_CATEGORIES", "WEBNLG_UNSEEN_CATEGORIES", "DATASETS",
    "READERS", "read_e2e", "read_webnlg", "read_dart", "linearize_triples", "find_split_file", "read_split",
]

WEBNLG_SEEN_CATEGORIES = frozenset({
    "Airport", "Astronaut", "Building", "City", "ComicsCharacter", "Food", "Monument", "SportsTeam",
    "University", "WrittenWork"})
"""The 10 categories of the WebNLG 2017 training and dev sets ("seen" in the test set)."""

WEBNLG_UNSEEN_CATEGORIES = frozenset({"Artist", "Athlete", "CelestialBody", "MeanOfTransportation", "Politician"})
"""The 5 categories found only in the WebNLG 2017 test set."""

DATASETS = ("e2e", "webnlg", "dart")


@dataclass(frozen=True)
class NLGExample:
    """One input of a data-to-text dataset with all its references."""

    context: str  # the linearised input: the E2E MR as in the file, or linearize_triples(...) for WebNLG/DART
    references: tuple[str, ...]  # empty only for reference-less test files
    source: str  # "file:line" (E2E) or "file#entry-id" (XML: the eid; JSON: the entry key or list index)
    category: str | None = None  # WebNLG category; None elsewhere
    seen: bool | None = None  # WebNLG: category among the 10 training categories; None elsewhere


# -- shared helpers -------------------------------------------------------------------------------------

_LINE_BREAK = re.compile(r"\s*[\r\n]+\s*")


def _clean_text(text: str | None) -> str:
    """A reference: stripped, a line break (with the white space around it) replaced by one space."""
    return _LINE_BREAK.sub(" ", text or "").strip()


def _check_path(path: str | Path, want_dir: bool | None = False) -> Path:
    """``path`` as a Path, or DataError when it is missing or of the wrong kind (``None``: either kind)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if want_dir is False and not p.is_file():
        raise DataError(f"{p}: not a file")
    return p


def _read_text(path: Path) -> str:
    """The file's text (UTF-8, an optional BOM dropped, newlines kept as in the file)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err.strerror or err})") from err
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _references(texts: list[str], where: str) -> tuple[str, ...]:
    """The non-empty cleaned ``texts``; DataError when there were some and all are empty."""
    cleaned = [_clean_text(t) for t in texts]
    kept = tuple(t for t in cleaned if t)
    if texts and not kept:
        raise DataError(f"{where}: empty reference text")
    return kept


# -- linearisation --------------------------------------------------------------------------------------

def _clean_field(field: str) -> str:
    text = " ".join(field.replace("_", " ").split())
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"' and '"' not in text[1:-1]:
        text = text[1:-1].strip()
    return text


def linearize_triples(triples: Sequence[tuple[str, str, str]]) -> str:
    """``"s : p : o | s : p : o"``: each field cleaned (``_`` -> space, white space collapsed, the quotes of a
    field that is one quoted string removed), the triples in their given order. Used for WebNLG and DART."""
    parts = []
    for triple in triples:
        if len(triple) != 3:
            raise ValueError(f"a triple has 3 fields (subject, property, object), got {triple!r}")
        parts.append(" : ".join(_clean_field(str(f)) for f in triple))
    return " | ".join(parts)


# -- E2E ------------------------------------------------------------------------------------------------

_MR_ITEM = r"[^\[\],|]+\[[^\[\]]+\]"
_MR_OFFICIAL = re.compile(rf"\s*{_MR_ITEM}(?:\s*,\s*{_MR_ITEM})*\s*")


def _mr_is_valid(mr: str) -> bool:
    """``key[value], key[value], ...`` (official CSV) or ``key : value | key : value`` (LoRA text)."""
    if _MR_OFFICIAL.fullmatch(mr):
        return True
    items = mr.split(" | ")
    for item in items:
        key, sep, value = item.partition(" : ")
        if not (sep and key.strip() and value.strip()):
            return False
    return True


def _check_mr(mr: str, where: str) -> str:
    mr = mr.strip()
    if not mr:
        raise DataError(f"{where}: empty MR")
    if not _mr_is_valid(mr):
        raise DataError(f"{where}: MR {mr[:80]!r} is not of the form 'key[value], key[value], ...' "
                        "(or the LoRA format 'key : value | key : value')")
    return mr


def _group_e2e(rows: Iterable[tuple[str, str | None, str]]) -> list[NLGExample]:
    """(mr, reference or None, source) rows -> one example per MR, first-appearance order."""
    refs: dict[str, list[str]] = {}
    first: dict[str, str] = {}
    for mr, ref, where in rows:
        if mr not in refs:
            refs[mr] = []
            first[mr] = where
        if ref is not None:
            refs[mr].append(ref)
    return [NLGExample(mr, tuple(r), first[mr]) for mr, r in refs.items()]


def _e2e_csv_rows(path: Path, text: str) -> Iterator[tuple[str, str | None, str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    ncols = 0
    start = 1
    try:
        for row in reader:
            where = f"{path}:{start}"
            start = reader.line_num + 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if not ncols:
                header = [c.strip().lower() for c in row]
                if header == ["mr", "ref"]:
                    ncols = 2
                elif header == ["mr"]:
                    ncols = 1
                else:
                    raise DataError(f"{where}: header {row!r} is not 'mr,ref' (or 'MR' for the test MRs); "
                                    "expected an official E2E CSV file")
                continue
            if len(row) != ncols:
                raise DataError(f"{where}: expected {ncols} column{'s' * (ncols > 1)} "
                                f"({'mr,ref' if ncols == 2 else 'MR'}), found {len(row)}")
            mr = _check_mr(row[0], where)
            if ncols == 1:
                yield mr, None, where
                continue
            ref = _clean_text(row[1])
            if not ref:
                raise DataError(f"{where}: empty reference text")
            yield mr, ref, where
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None
    if not ncols:
        raise DataError(f"{path}: empty file (expected the header 'mr,ref' and rows)")


def _e2e_txt_rows(path: Path, text: str) -> Iterator[tuple[str, str | None, str]]:
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        where = f"{path}:{number}"
        if line.count("||") != 1:
            found = "none" if "||" not in line else f"{line.count('||')}"
            raise DataError(f"{where}: expected one 'MR||text' separator '||', found {found}")
        mr, ref = line.split("||")
        mr = _check_mr(mr, where)
        ref = ref.strip()
        if not ref:
            raise DataError(f"{where}: empty reference text")
        yield mr, ref, where


def read_e2e(path: str | Path) -> list[NLGExample]:
    """E2E from an official CSV file (``.csv``) or a LoRA-format ``MR||text`` file (any other suffix),
    grouped by MR in first-appearance order."""
    p = _check_path(path)
    text = _read_text(p)
    rows = _e2e_csv_rows(p, text) if p.suffix.lower() == ".csv" else _e2e_txt_rows(p, text)
    examples = _group_e2e(rows)
    if not examples:
        raise DataError(f"{p}: no examples")
    return examples


# -- WebNLG / DART: XML ---------------------------------------------------------------------------------

def _parse_xml(path: Path) -> ET.Element:
    text = _read_text(path)
    try:
        return ET.fromstring(text.encode("utf-8"))
    except ET.ParseError as err:
        line, column = err.position
        reason = re.sub(r": line \d+, column \d+$", "", str(err))
        raise DataError(f"{path}:{line}: malformed XML ({reason}, column {column})") from None


def _xml_triples(entry: ET.Element, where: str) -> list[tuple[str, str, str]]:
    triples = []
    for element in entry.findall("modifiedtripleset/mtriple"):
        fields = [f.strip() for f in (element.text or "").split(" | ")]
        if len(fields) != 3 or not all(fields):
            raise DataError(f"{where}: malformed triple {element.text!r} (expected 'subject | property | object')")
        triples.append((fields[0], fields[1], fields[2]))
    if not triples:
        raise DataError(f"{where}: entry without triples (no <modifiedtripleset><mtriple>)")
    return triples


def _read_triple_xml(path: Path, webnlg: bool) -> list[NLGExample]:
    root = _parse_xml(path)
    entries = list(root.iter("entry"))
    if not entries:
        raise DataError(f"{path}: no <entry> elements (not a WebNLG/DART XML file?)")
    has_references = any(entry.find("lex") is not None for entry in entries)
    examples = []
    for number, entry in enumerate(entries, start=1):
        where = f"{path}#{entry.get('eid') or f'entry-{number}'}"
        context = linearize_triples(_xml_triples(entry, where))
        category = entry.get("category") if webnlg else None
        if webnlg and not category:
            raise DataError(f"{where}: entry without a category attribute")
        lexes = entry.findall("lex")
        if has_references and not lexes:
            raise DataError(f"{where}: entry without references (<lex>) in a file whose other entries have them")
        if webnlg:
            lexes = [lex for lex in lexes if lex.get("comment", "good") == "good"]
            if has_references and not lexes:
                continue  # every lexicalisation marked "toFix"
        references = _references([lex.text or "" for lex in lexes], where)
        examples.append(NLGExample(context, references, where, category,
                                   category in WEBNLG_SEEN_CATEGORIES if webnlg else None))
    return examples


# -- WebNLG / DART: JSON --------------------------------------------------------------------------------

def _load_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg}, column {err.colno})") from None


def _field(obj: Any, name: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise DataError(f"{where}: missing field {name!r}")
    value = obj[name]
    if not isinstance(value, kind):
        raise DataError(f"{where}: field {name!r} should be a {kind.__name__}, found {type(value).__name__}")
    return value


def _json_triple(triple: Any, where: str) -> tuple[str, str, str]:
    if isinstance(triple, dict):  # WebNLG (LoRA): {"subject", "property", "object"}
        fields = [_field(triple, key, str, where) for key in ("subject", "property", "object")]
    elif isinstance(triple, list) and len(triple) == 3 and all(isinstance(f, str) for f in triple):
        fields = list(triple)  # DART: [subject, property, object]
    else:
        raise DataError(f"{where}: malformed triple {triple!r} (expected [subject, property, object])")
    if not all(f.strip() for f in fields):
        raise DataError(f"{where}: malformed triple {triple!r} (empty field)")
    return fields[0].strip(), fields[1].strip(), fields[2].strip()


def _read_webnlg_json(path: Path) -> list[NLGExample]:
    data = _load_json(path)
    entries = _field(data, "entries", list, f"{path} (the LoRA repository's WebNLG JSON)")
    records: list[tuple[str, dict]] = []
    for number, item in enumerate(entries, start=1):
        if not (isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())), dict)):
            raise DataError(f"{path}#entry-{number}: expected {{\"<id>\": {{...}}}}")
        key, record = next(iter(item.items()))
        records.append((f"{path}#{key}", record))
    has_references = any(rec.get("lexicalisations") for _, rec in records)
    examples = []
    for where, record in records:
        triples = [_json_triple(t, where) for t in _field(record, "modifiedtripleset", list, where)]
        if not triples:
            raise DataError(f"{where}: entry without triples (empty 'modifiedtripleset')")
        category = _field(record, "category", str, where)
        lexes = _field(record, "lexicalisations", list, where)
        if has_references and not lexes:
            raise DataError(f"{where}: entry without references in a file whose other entries have them")
        good = []
        for lex in lexes:
            text = _field(lex, "lex", str, where)
            if (lex.get("comment") or "good") == "good":
                good.append(text)
        if has_references and not good:
            continue  # every lexicalisation marked "toFix"
        examples.append(NLGExample(linearize_triples(triples), _references(good, where), where, category,
                                   category in WEBNLG_SEEN_CATEGORIES))
    return examples


def _read_dart_json(path: Path) -> list[NLGExample]:
    data = _load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of entries with 'tripleset' and 'annotations' (DART)")
    has_references = any(isinstance(e, dict) and e.get("annotations") for e in data)
    examples = []
    for index, entry in enumerate(data):
        where = f"{path}#{index}"
        triples = [_json_triple(t, where) for t in _field(entry, "tripleset", list, where)]
        if not triples:
            raise DataError(f"{where}: entry without triples (empty 'tripleset')")
        annotations = _field(entry, "annotations", list, where)
        if has_references and not annotations:
            raise DataError(f"{where}: entry without references in a file whose other entries have them")
        texts = [_field(a, "text", str, where) for a in annotations]
        examples.append(NLGExample(linearize_triples(triples), _references(texts, where), where))
    return examples


# -- public readers -------------------------------------------------------------------------------------

def _xml_files(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.rglob("*.xml") if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())
    if not files:
        raise DataError(f"{folder}: no .xml files in this folder (expected the WebNLG XML files)")
    return files


def _nonempty(examples: list[NLGExample], path: Path) -> list[NLGExample]:
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def read_webnlg(path: str | Path) -> list[NLGExample]:
    """WebNLG 2017 from an XML file, a folder of XML files (recursive, sorted by path) or the LoRA JSON;
    only ``comment="good"`` lexicalisations are references; ``seen`` from the category."""
    p = _check_path(path, want_dir=None)
    if p.is_dir():
        return _nonempty([ex for f in _xml_files(p) for ex in _read_triple_xml(f, webnlg=True)], p)
    if p.suffix.lower() == ".json":
        return _nonempty(_read_webnlg_json(p), p)
    if p.suffix.lower() == ".xml":
        return _nonempty(_read_triple_xml(p, webnlg=True), p)
    raise DataError(f"{p}: expected a WebNLG .xml file, a folder of them or the LoRA .json file")


def read_dart(path: str | Path) -> list[NLGExample]:
    """DART from its JSON release (``tripleset``/``annotations``) or its XML release (every ``<lex>``)."""
    p = _check_path(path)
    if p.suffix.lower() == ".json":
        return _nonempty(_read_dart_json(p), p)
    if p.suffix.lower() == ".xml":
        return _nonempty(_read_triple_xml(p, webnlg=False), p)
    raise DataError(f"{p}: expected a DART .json or .xml file")


READERS: dict[str, Callable[[str | Path], list[NLGExample]]] = {
    "e2e": read_e2e, "webnlg": read_webnlg, "dart": read_dart}

# -- locating the split files ---------------------------------------------------------------------------

_SPLITS = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev", "val": "dev", "test": "test"}
_DATASET_FOLDERS = {
    "e2e": ("e2e", "e2e-dataset", "e2e_data"),
    "webnlg": ("webnlg_challenge_2017", "webnlg"),
    "dart": ("dart",),
}
_DART_FOLDERS = ("", "lora_format", "data/v1.1.1", "yale-lily_head")
# Relative paths tried in order (official names first); a name without suffix is a folder (WebNLG XML).
_CANDIDATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("e2e", "train"): ("trainset.csv", "train.txt", "lora_format/train.txt"),
    ("e2e", "dev"): ("devset.csv", "valid.txt", "dev.txt", "lora_format/valid.txt"),
    ("e2e", "test"): ("testset_w_refs.csv", "test.txt", "lora_format/test.txt"),
    ("webnlg", "train"): ("train", "train.json", "lora_format/train.json"),
    ("webnlg", "dev"): ("dev", "dev.json", "lora_format/dev.json"),
    ("webnlg", "test"): ("test/testdata_with_lex.xml", "testdata_with_lex.xml", "test.json", "lora_format/test.json"),
    **{("dart", split): tuple(f"{folder}/dart-v1.1.1-full-{split}.{ext}".lstrip("/")
                              for ext in ("json", "xml") for folder in _DART_FOLDERS)
       for split in ("train", "dev", "test")},
}


def _canonical(dataset: str, split: str) -> tuple[str, str]:
    name = dataset.lower()
    if name not in DATASETS:
        raise DataError(f"unknown NLG dataset {dataset!r}; known: {', '.join(DATASETS)}")
    if split.lower() not in _SPLITS:
        raise DataError(f"unknown split {split!r}; expected train, dev (or valid) or test")
    return name, _SPLITS[split.lower()]


def find_split_file(dataset: str, split: str, data_dir: str | Path) -> Path:
    """The file (or, for WebNLG XML, folder) holding ``split`` of ``dataset`` under ``data_dir``, which may be
    the dataset's folder or its parent. Official names come first, then the LoRA repository's names."""
    name, canonical = _canonical(dataset, split)
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder not found: {root} (pass the {name} folder or its parent)")
    bases = [root / folder for folder in _DATASET_FOLDERS[name]] + [root]
    looked = []
    for base in bases:
        for relative in _CANDIDATES[(name, canonical)]:
            candidate = base / relative
            looked.append(str(candidate))
            if "." in Path(relative).name:
                if candidate.is_file():
                    return candidate
            elif candidate.is_dir() and any(candidate.rglob("*.xml")):
                return candidate
    raise DataError(f"{name} {canonical} split not found under {root}; looked for: " + ", ".join(looked))


def read_split(dataset: str, split: str, data_dir: str | Path) -> list[NLGExample]:
    """:func:`find_split_file` then the dataset's reader; every example must have references."""
    name, canonical = _canonical(dataset, split)
    path = find_split_file(name, canonical, data_dir)
    examples = READERS[name](path)
    for example in examples:
        if not example.references:
            raise DataError(f"{example.source}: no references, but the {canonical} split needs them "
                            f"({path} looks like a reference-less test file)")
    return examples
