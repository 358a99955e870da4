"""OpenWebText, the open re-creation of OpenAI's WebText, written as the ``text`` corpus layout
(``{train,valid,test}.txt``, read by tasks ``text`` and ``mlm_text``).

Canonical source: its authors' release archive ``openwebtext.tar.xz`` (Zenodo record 3834942, 12,880,027,468 bytes,
SHA-256 pinned by :mod:`lorakit.data.prepare`), an xz-compressed tar of xz-compressed tar archives
(``openwebtext/urlsf_subsetNN-M_data.xz``) of one ``.txt`` file per document. Also read: the same archives
regrouped into the 21 tar shards of the Hugging Face dataset ``Skylion007/openwebtext``
(``subsets/urlsf_subset00.tar`` ... ``urlsf_subset20.tar``), those inner ``.xz`` archives on their own (a folder
where they were already unpacked), and parquet files with a ``text`` column (the dataset's parquet conversion;
reading them needs ``pyarrow``, in the ``webtext`` extra). Each document's text gets the rule of the dataset's
loading script: runs of three or more newlines become two, then surrounding whitespace is stripped; empty documents
are dropped.

Splits: OpenWebText has a training set only. A document goes to ``test`` when ``u < holdout`` and to
``valid`` when ``holdout <= u < 2 * holdout``, else to ``train``, where ``u`` is the first 8 bytes of
BLAKE2b(its UTF-8 text) read as a fraction of 2^64: a rule of the text alone, the same whatever format or order
the documents come in, and exact duplicates always share a split. The default holdout, 0.0005 of the documents
each (about 4,000 of 8,013,769), is nanoGPT's validation fraction. Documents are written one after another,
each followed by a blank line.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lorakit.fileio import atomic_write

from .errors import DataError

__all__ = ["DEFAULT_HOLDOUT", "FORMATS", "OpenWebTextError", "find_inputs", "documents", "split_of", "write_splits"]

DEFAULT_HOLDOUT = 0.0005
FORMATS = {".tar.xz": "the release archive openwebtext.tar.xz", ".tar": "tar shards (subsets/urlsf_subsetNN.tar)",
           ".xz": "unpacked .xz archives", ".parquet": "parquet files with a text column"}
_BLANK_RUNS = re.compile("\n\n\n+")


class OpenWebTextError(DataError):
    """OpenWebText input that cannot be read or split; the message names the file and the fix."""


def find_inputs(root: Path) -> list[Path]:
    """The input files under ``root`` (a folder, searched recursively, or one file), sorted by path: all of one
    format of :data:`FORMATS`. Raises :class:`OpenWebTextError` when there are none or several formats."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    by_format = {ext: [p for p in files if _format(p) == ext] for ext in FORMATS}
    found = {ext: paths for ext, paths in by_format.items() if paths}
    if not found:
        raise OpenWebTextError(f"{root}: no OpenWebText files; expected one of: "
                               f"{'; '.join(f'{desc} (*{ext})' for ext, desc in FORMATS.items())}")
    if len(found) > 1:
        raise OpenWebTextError(f"{root} holds {' and '.join(f'*{ext}' for ext in found)} files; give a folder with "
                               "one format only (the tar shards, or what was unpacked from them, not both)")
    return next(iter(found.values()))


def _format(path: Path) -> str:
    """The key of :data:`FORMATS` a file belongs to (``.tar.xz`` before ``.xz``), or its plain suffix."""
    return ".tar.xz" if path.name.endswith(".tar.xz") else path.suffix


def _normalize(text: str) -> str:
    return _BLANK_RUNS.sub("\n\n", text).strip()


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise OpenWebTextError(f"{where}: not UTF-8 ({err.reason} at byte {err.start}); the file is damaged or "
                               "not from OpenWebText") from None


def _xz_documents(data: bytes, where: str) -> Iterator[str]:
    """The ``.txt`` documents of one xz-compressed tar archive (a few MB), in archive order. Decompressed whole
    first: a truncated archive then fails (xz's end-of-stream marker is missing) instead of ending early."""
    try:
        with tarfile.open(fileobj=io.BytesIO(lzma.decompress(data)), mode="r:") as inner:
            for member in inner:
                if member.isfile() and member.name.endswith(".txt"):
                    yield _decode(inner.extractfile(member).read(), f"{where}/{member.name}")
    except (tarfile.TarError, lzma.LZMAError, EOFError) as err:
        raise OpenWebTextError(f"{where}: not a readable xz tar archive ({err}); download it again") from None


def _xz_file_documents(path: Path) -> Iterator[str]:
    yield from _xz_documents(path.read_bytes(), str(path))


def _parquet_documents(path: Path) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise OpenWebTextError(f"{path}: reading parquet files needs pyarrow (pip install pyarrow); or give the "
                               "tar shards subsets/urlsf_subsetNN.tar") from None
    table = pq.ParquetFile(path)
    if "text" not in table.schema_arrow.names:
        raise OpenWebTextError(f"{path}: no 'text' column (columns: {', '.join(table.schema_arrow.names)})")
    for batch in table.iter_batches(columns=["text"], batch_size=1024):
        yield from (t for t in batch.column(0).to_pylist() if t is not None)


def documents(path: Path) -> Iterator[str]:
    """The normalised, non-empty documents of one input file (the release archive, a tar shard, an ``.xz``
    archive or a parquet file), in file order."""
    readers = {".parquet": _parquet_documents, ".xz": _xz_file_documents, ".tar": _tar_documents,
               ".tar.xz": _tar_documents}
    for text in readers[_format(path)](path):
        text = _normalize(text)
        if text:
            yield text


def _tar_documents(path: Path) -> Iterator[str]:
    """The documents of a tar of ``.xz`` archives: a shard (plain tar) or the release archive (the same,
    xz-compressed), streamed member by member. A file cut short fails (tar stops quietly at a cut between
    members, so the end-of-archive marker, two zero blocks, is checked, and the xz stream must be complete)."""
    try:
        with (lzma.open(path) if _format(path) == ".tar.xz" else open(path, "rb")) as raw:
            with tarfile.open(fileobj=raw, mode="r|") as outer:
                for member in outer:
                    if member.isfile() and member.name.endswith(".xz"):
                        yield from _xz_documents(outer.extractfile(member).read(), f"{path}:{member.name}")
                end_of_members = outer.offset  # where the end-of-archive marker should start
            size = raw.seek(0, io.SEEK_END)  # for xz: decompresses the rest; a stream cut short raises
    except (tarfile.TarError, lzma.LZMAError, EOFError) as err:
        raise OpenWebTextError(f"{path}: not a readable tar file ({err}); download it again") from None
    if size < end_of_members + 2 * tarfile.BLOCKSIZE:
        raise OpenWebTextError(f"{path}: ends after {size:,} bytes, before the tar end-of-archive marker (the file "
                               "is cut short); download it again")


def split_of(text: str, holdout: float) -> str:
    """``"test"``, ``"valid"`` or ``"train"`` for a normalised document (the module docstring's rule)."""
    u = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") / 2.0 ** 64
    return "test" if u < holdout else "valid" if u < 2 * holdout else "train"


def write_splits(inputs: list[Path], out: Path, holdout: float = DEFAULT_HOLDOUT, max_train_docs: int | None = None,
                 on_input: Callable[[Path], Any] = lambda _p: None) -> dict[str, dict[str, Any]]:
    """Read ``inputs`` in order and write ``out/{train,valid,test}.txt`` (all three or none: they appear
    together at the end). ``on_input(path)`` is called before each input is read (the caller checks and
    records its digest). ``max_train_docs``: stop once the training split has that many documents.
    Returns ``{split: {"documents": n, "sha256": hex of the written file}}``. Raises :class:`OpenWebTextError`
    when a split ends empty."""
    if not 0.0 < holdout < 0.5:
        raise OpenWebTextError(f"holdout must be in (0, 0.5) (a fraction of the documents for valid and for test "
                               f"each), got {holdout}")
    if max_train_docs is not None and max_train_docs < 1:
        raise OpenWebTextError(f"max_train_docs must be at least 1, got {max_train_docs}")
    stats = {split: {"documents": 0, "sha256": hashlib.sha256()} for split in ("train", "valid", "test")}

    def fill(paths: dict[str, str]) -> None:
        from tqdm import tqdm

        handles = {split: open(p, "wb") for split, p in paths.items()}  # noqa: SIM115 (closed below)
        # the full corpus is about 8M documents read over an hour or more: a counter on a terminal
        bar = tqdm(desc="openwebtext", unit=" documents", total=max_train_docs, disable=None)
        try:
            for path in inputs:
                if max_train_docs is not None and stats["train"]["documents"] >= max_train_docs:
                    break
                on_input(path)
                for text in documents(path):
                    split = split_of(text, holdout)
                    data = (text + "\n\n").encode("utf-8")
                    handles[split].write(data)
                    stats[split]["sha256"].update(data)
                    stats[split]["documents"] += 1
                    bar.update(1 if max_train_docs is None or split == "train" else 0)  # the limit counts train
                    if split == "train" and stats["train"]["documents"] == max_train_docs:
                        break
        finally:
            bar.close()
            for fh in handles.values():
                fh.close()
        empty = [s for s, v in stats.items() if not v["documents"]]
        if empty:
            total = sum(v["documents"] for v in stats.values())
            raise OpenWebTextError(f"no document fell into {' and '.join(empty)} ({total} documents read, holdout "
                                   f"{holdout}); give more input files or raise --holdout")

    # three files that must appear together: each atomic_write's function runs the next one, and the innermost
    # writes all three; an error there removes every temporary file, and nothing is renamed
    paths: dict[str, str] = {}

    def nest(splits: list[str]) -> Callable[[str], None]:
        def write(tmp: str) -> None:
            paths[splits[0]] = tmp
            if len(splits) > 1:
                atomic_write(out / f"{splits[1]}.txt", nest(splits[1:]))
            else:
                fill(paths)
        return write

    atomic_write(out / "test.txt", nest(["test", "valid", "train"]))
    return {split: {"documents": v["documents"], "sha256": v["sha256"].hexdigest()} for split, v in stats.items()}
