"""Language-modelling corpora: one split of WikiText, enwik8 / enwik9 (Hutter), text8 or any text file.

Layouts (``data.dir`` / ``--text``):

* ``wikitext``: a folder with ``wiki.{train,valid,test}.tokens`` (or ``.raw``, or ``{split}.txt``), or one file;
* ``enwik8`` / ``hutter``: the one file ``enwik8`` / ``enwik9``, split by bytes 90%/5%/5% (the standard split);
* ``text8``: the one file ``text8``, split by characters 90M/5M/5M;
* ``text``: a folder with ``{train,valid,test}.txt``, or one ``input.txt`` split by character fractions.

Text is read as UTF-8 with ``surrogateescape``, so bits per byte count the file's own bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lorakit.errors import LorakitError

__all__ = ["LAYOUTS", "SPLITS", "Corpus", "CorpusError", "read_corpus", "wikitext_word_count"]

LAYOUTS = ("wikitext", "enwik8", "hutter", "text8", "text")
SPLITS = ("train", "valid", "test")
ENWIK8_SPLIT = (90_000_000, 5_000_000, 5_000_000)  # bytes: train, valid, test
ENWIK9_SPLIT = (900_000_000, 50_000_000, 50_000_000)  # bytes: train, valid, test (hutter)
TEXT8_SPLIT = (90_000_000, 5_000_000, 5_000_000)  # characters
TEXT_SPLIT_FRACTION = (0.9, 0.05, 0.05)  # characters
_SPLIT_ALIASES = {"dev": "valid", "validation": "valid", "val": "valid", "eval": "valid"}


class CorpusError(LorakitError, ValueError):
    """An unusable corpus file or folder; the message names the path and what was expected."""


@dataclass(frozen=True)
class Corpus:
    """One split of a corpus. ``text`` may hold lone surrogates U+DC80..U+DCFF, each standing for one byte
    that was not valid UTF-8 (``surrogateescape``; enwik8 split boundaries only)."""

    text: str
    layout: str
    split: str
    source: str  # the file it came from (plus the offsets, for offset splits)

    @property
    def n_chars(self) -> int:
        return len(self.text)

    @property
    def n_bytes(self) -> int:
        """UTF-8 bytes of the original file content (an escaped byte counts as one)."""
        return len(self.text.encode("utf-8", "surrogateescape"))

    @property
    def n_words(self) -> int | None:
        """WikiText's count (whitespace words + one per line); None for the other layouts."""
        return wikitext_word_count(self.text) if self.layout == "wikitext" else None


def wikitext_word_count(text: str) -> int:
    """Whitespace-separated words plus one ``<eos>`` per line (a last line without newline counts too)."""
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    return len(text.split()) + lines


def _normalise_split(split: str) -> str:
    s = _SPLIT_ALIASES.get(split.lower(), split.lower())
    if s not in (*SPLITS, "all"):
        raise CorpusError(f"unknown split {split!r}; use one of train, valid (dev), test, all")
    return s


def _read_text_file(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc}") from None


def _single_file(path: Path, names: Sequence[str], layout: str) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise CorpusError(f"no {' or '.join(names)} in {path} (layout {layout!r})")
    raise CorpusError(f"corpus not found: {path}")


def _offset_split(data: bytes | str, sizes: Sequence[int], split: str, path: Path, unit: str):
    if len(sizes) != 3 or any(int(s) < 0 for s in sizes):
        raise CorpusError(f"split sizes must be three sizes (train, valid, test), got {list(sizes)}")
    if split == "all":
        return data, ""
    need = sum(int(s) for s in sizes)
    if len(data) < need:
        raise CorpusError(f"{path}: {len(data)} {unit}, fewer than the {need} the split {list(sizes)} needs "
                          "(is this the full file? pass split sizes for a smaller one)")
    start = {"train": 0, "valid": sizes[0], "test": sizes[0] + sizes[1]}[split]
    stop = start + sizes[SPLITS.index(split)]
    return data[start:stop], f" [{unit} {start}:{stop}]"


def read_corpus(path: str | Path, layout: str, split: str = "test", *, split_sizes: Sequence[int] | None = None,
                split_fraction: Sequence[float] | None = None) -> Corpus:
    """Read one split of a corpus in ``layout`` (see the module docstring).

    ``path`` is the corpus folder or its file. ``split``: ``train``, ``valid`` (aliases ``dev``,
    ``validation``), ``test`` or ``all``. ``split_sizes`` (enwik8: bytes, text8: characters; default
    90M/5M/5M) and ``split_fraction`` (text: fractions of the characters, default 0.9/0.05/0.05) replace
    the standard splits, e.g. to test on a small file. Raises ``CorpusError`` naming the path.
    """
    if layout not in LAYOUTS:
        raise CorpusError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    path = Path(path).expanduser()
    split = _normalise_split(split)
    if layout == "wikitext":
        if path.is_file():
            file = path
        elif path.is_dir():
            if split == "all":
                raise CorpusError(f"{path}: split 'all' needs a single file; pass the file itself")
            names = [f"wiki.{split}.tokens", f"wiki.{split}.raw", f"{split}.txt"]
            file = _single_file(path, names, layout)
        else:
            raise CorpusError(f"corpus not found: {path}")
        return Corpus(_read_text_file(file), layout, split, str(file))
    if layout in ("enwik8", "hutter"):
        stem = "enwik8" if layout == "enwik8" else "enwik9"
        file = _single_file(path, (stem, f"{stem}.txt"), layout)
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise CorpusError(f"cannot read {file}: {exc}") from None
        default_sizes = ENWIK8_SPLIT if layout == "enwik8" else ENWIK9_SPLIT
        part, where = _offset_split(raw, split_sizes or default_sizes, split, file, "bytes")
        return Corpus(part.decode("utf-8", "surrogateescape"), layout, split, f"{file}{where}")
    if layout == "text8":
        file = _single_file(path, ("text8", "text8.txt"), layout)
        text = _read_text_file(file)
        part, where = _offset_split(text, split_sizes or TEXT8_SPLIT, split, file, "chars")
        return Corpus(part, layout, split, f"{file}{where}")
    # layout == "text"
    if path.is_dir() and split != "all" and (path / f"{split}.txt").is_file():
        file = path / f"{split}.txt"
        return Corpus(_read_text_file(file), layout, split, str(file))
    file = _single_file(path, ("input.txt",), layout)
    text = _read_text_file(file)
    if split == "all":
        return Corpus(text, layout, split, str(file))
    fr = tuple(float(f) for f in (split_fraction or TEXT_SPLIT_FRACTION))
    if len(fr) not in (2, 3) or any(f < 0 for f in fr) or sum(fr[:2]) > 1.0 + 1e-9:
        raise CorpusError(f"split_fraction must be (train, valid[, test]) fractions summing to <= 1, got {fr}")
    a = int(round(len(text) * fr[0]))
    b = int(round(len(text) * (fr[0] + fr[1])))
    start, stop = {"train": (0, a), "valid": (a, b), "test": (b, len(text))}[split]
    return Corpus(text[start:stop], layout, split, f"{file} [chars {start}:{stop}]")
