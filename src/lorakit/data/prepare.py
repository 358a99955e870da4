"""``lorakit data prepare TASK --to DIR [--from PATH]``: put a task's data where its plugin reads it.

With internet, the files come from the canonical source (GLUE's and SuperGLUE's release zips, the
SentEval copy of MRPC and GLUE's MRPC dev ids, the SQuAD explorer site, the Natural Questions bucket
``storage.googleapis.com/natural_questions``: the simplified train file and the original-format dev file
``nq-dev-all.jsonl.gz``; for the NLG datasets the official
repositories: E2E ``tuetschek/e2e-dataset`` and DART ``Yale-LILY/dart`` on GitHub, WebNLG 2017 the WebNLG
dataset repository ``shimorina/webnlg-dataset`` on GitLab, folder ``webnlg_challenge_2017``).
``--from PATH`` uses an already-downloaded folder or zip instead, with no network. Either way every file
with a pinned digest (:mod:`lorakit.data.sources`: a SHA-256, or the SHA-1 its publisher gives) is checked
and a mismatch stops with the file, the expected and the actual digest; files without a pinned digest are
copied with a note printing their SHA-256 (so it can be pinned).
Offline without ``--from``, the command fails within seconds and says what to download.

Layout written: GLUE ``DIR/RTE/train.tsv`` ... (MNLI: ``DIR/MNLI/{train,dev_matched,dev_mismatched}.tsv``;
QQP from GLUE's ``QQP-clean.zip``, QNLI from ``QNLIv2.zip``; MRPC's train/dev split is rebuilt from
``msr_paraphrase_train.txt`` and ``dev_ids.tsv`` with the rule of GLUE's ``download_glue_data.py``); SQuAD
``DIR/train-v1.1.json``, ``DIR/dev-v1.1.json`` (v2.0 likewise); Natural Questions
``DIR/nq/simplified-nq-train.jsonl.gz``, ``DIR/nq/nq-dev-all.jsonl.gz``; SuperGLUE ``DIR/BoolQ/train.jsonl`` ...;
E2E ``DIR/e2e/trainset.csv``, ``devset.csv``, ``testset_w_refs.csv``, ``testset.csv``; WebNLG
``DIR/webnlg_challenge_2017/{train,dev}/{n}triples/*.xml`` and ``test/testdata_*.xml``; DART
``DIR/dart/dart-v1.1.1-full-{train,dev,test}.json`` (or ``.xml``); LM corpora (from mattmahoney.net/dc
and the WikiText release zip on wikitext.smerity.com, all pinned) ``DIR/enwik8/enwik8``, ``DIR/text8/text8``,
``DIR/hutter/enwik9``, ``DIR/wikitext-2/`` and ``DIR/wikitext-103/wiki.{train,valid,test}.tokens``, Tiny
Shakespeare ``DIR/tinyshakespeare/input.txt`` (karpathy/char-rnn); OpenWebText (the open re-creation of
WebText: its authors' release archive ``openwebtext.tar.xz`` on Zenodo, pinned; or with ``--from`` that file, the
21 tar shards of the Hugging Face dataset ``Skylion007/openwebtext``, the ``.xz`` archives inside them or its
parquet files, whose digests are recorded, not pinned) ``DIR/webtext/{train,valid,test}.txt``,
split by :mod:`lorakit.data.openwebtext` (``--holdout``, ``--max-train-docs``). The NLG folders are then read
with :mod:`lorakit.data.nlg` (a file that does not parse stops the command); a DART folder given with
``--from`` may hold only some splits.

Every prepared folder gets ``lorakit-prepare.json``: each file's SHA-256, whether it was checked against a pinned
digest, the task and the source. For files without a pinned digest (OpenWebText's Hugging Face shards or
parquet files, a few GLUE/SuperGLUE files) this is the record of which copy a result was computed on.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

from lorakit import __version__ as _VERSION
from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write

from .sources import OPENWEBTEXT_BASE, SOURCES, Source

__all__ = ["MANIFEST", "PrepareError", "SOURCES", "Source", "prepare", "main"]

MANIFEST = "lorakit-prepare.json"  # in each prepared folder: the SHA-256 of every file, pinned or not


class PrepareError(LorakitError, RuntimeError):
    """The data cannot be prepared; the message says why and what to do."""


def _digests(path: Path, algorithms: set[str]) -> dict[str, str]:
    """The hex digests of ``path`` for each hashlib algorithm named, in one read."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            for h in hashers.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashers.items()}


def _split_digest(pinned: str) -> tuple[str, str]:
    """``"sha1:HEX"`` -> ``("sha1", hex)``; a bare hex string is a SHA-256. The hex is compared in lower case;
    an algorithm hashlib does not have, or a digest of the wrong length, is a PrepareError."""
    algorithm, _, hexdigest = pinned.rpartition(":")
    algorithm, hexdigest = algorithm.lower() or "sha256", hexdigest.lower()
    if algorithm not in hashlib.algorithms_available:
        raise PrepareError(f"pinned digest {pinned!r}: hashlib has no algorithm {algorithm!r}")
    if len(hexdigest) != 2 * hashlib.new(algorithm).digest_size or not set(hexdigest) <= set("0123456789abcdef"):
        raise PrepareError(f"pinned digest {pinned!r}: not a {algorithm} digest in hex")
    return algorithm, hexdigest


def _check(path: Path, expected: str | tuple[str, ...] | None, say) -> str:
    """Check ``path`` against its pinned digest (``expected``: a SHA-256 in hex, or ``"ALGORITHM:HEX"`` for
    another hashlib algorithm a publisher gives, e.g. ``"sha1:..."``; a tuple: any of them) and return its
    SHA-256, which the manifest records whatever was pinned. Without a pinned digest the file is not checked:
    a note says so."""
    accepted = (expected,) if isinstance(expected, str) else expected
    pins = [_split_digest(d) for d in accepted or ()]
    seen = _digests(path, {"sha256", *(algorithm for algorithm, _ in pins)})
    if accepted is None:
        say(f"note: {path.name}: no pinned checksum; sha256 {seen['sha256']} (not verified against a known digest; "
            f"recorded in {MANIFEST})")
    elif not any(seen[algorithm] == hexdigest for algorithm, hexdigest in pins):
        actual = ", ".join(f"{algorithm} {seen[algorithm]}" for algorithm in sorted(seen))
        raise PrepareError(f"{path}: checksum mismatch ({actual}; expected {' or '.join(accepted)}); the file is not "
                           "the official release (damaged download or another version); delete it and try again")
    return seen["sha256"]


def _write_manifest(out: Path, task: str, source: str, files: dict[str, dict]) -> None:
    """Record in ``out/lorakit-prepare.json`` each prepared (or read) file's SHA-256 and whether it was
    checked against a pinned digest; entries of earlier runs for other files (another task sharing the
    folder, e.g. SQuAD v1.1 and v2.0) stay."""
    path = out / MANIFEST
    try:
        old = json.loads(path.read_text(encoding="utf-8")).get("files", {}) if path.is_file() else {}
    except (OSError, ValueError, AttributeError):
        old = {}  # an unreadable manifest is rewritten
    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    entries = {**old, **{name: {**info, "task": task, "source": source, "prepared": when}
                         for name, info in files.items()}}
    atomic_write(path, json.dumps({"written_by": "lorakit data prepare", "files": dict(sorted(entries.items()))},
                                  indent=1) + "\n")


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(url)
    try:
        port = parsed.port or (80 if parsed.scheme == "http" else 443)
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _download(urls: dict[str, str], into: Path, say) -> None:
    first = next(iter(urls.values()))
    if not _reachable(first):
        host = urlparse(first).hostname
        listed = ", ".join(urls.values()) if len(urls) <= 4 else \
            f"the {len(urls)} files under {os.path.commonprefix(list(urls.values())).rsplit('/', 1)[0]}/"
        raise PrepareError(f"cannot reach {host} (offline?). On a machine with internet download "
                           f"{listed} and pass the folder or zip with --from PATH")
    for name, url in urls.items():
        say(f"downloading {url}")
        try:
            with _no_new_folders_on_failure((into / name).parent):
                (into / name).parent.mkdir(parents=True, exist_ok=True)
                with urllib.request.urlopen(urllib.request.Request(url, headers=_HEADERS), timeout=60) as resp:
                    atomic_write(into / name, lambda path, resp=resp, name=name: _save_stream(resp, path, name))
        except OSError as err:
            raise PrepareError(f"download of {url} failed: {err}; retry, or download it yourself and pass "
                               "--from") from err


# Some hosts (wikitext.smerity.com) answer Python's default "Python-urllib/3.x" agent with 403 Forbidden.
_HEADERS = {"User-Agent": f"lorakit/{_VERSION} (lorakit data prepare)"}


def _save_stream(stream, path: str, name: str) -> None:
    """Write a download to ``path`` with a progress bar (on a terminal) sized by its Content-Length."""
    from tqdm import tqdm

    total = int(stream.headers.get("Content-Length") or 0) or None
    with open(path, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=None) as bar:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            out.write(chunk)
            bar.update(len(chunk))


def _find(root: Path, name: str) -> Path | None:
    """``name`` (a relative path) under ``root``, directly or one folder down (a zip's top folder)."""
    for candidate in (root / name, *(p / name for p in sorted(root.iterdir()) if p.is_dir())):
        if candidate.is_file():
            return candidate
    return None


def _unpack(source: Path, into: Path) -> Path:
    """A folder as is; a zip extracted into ``into``."""
    if source.is_dir():
        return source
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            zf.extractall(into)
        return into
    raise PrepareError(f"--from {source}: neither a folder nor a zip file")


def _build_mrpc(train_txt: Path, dev_ids: Path, out: Path) -> None:
    """GLUE's rule (download_glue_data.py): rows of the MSR train file whose id pair is in the dev ids go
    to dev.tsv, the others to train.tsv; both keep the header line."""
    with open(dev_ids, encoding="utf-8") as fh:
        ids = {tuple(row.strip().split("\t")) for row in fh}
    with open(train_txt, encoding="utf-8") as data:
        header = data.readline()
        train, dev = [header], [header]
        for row in data:
            label, id1, id2, s1, s2 = row.strip().split("\t")
            (dev if (id1, id2) in ids else train).append(f"{label}\t{id1}\t{id2}\t{s1}\t{s2}\n")
    atomic_write(out / "train.tsv", "".join(train))
    atomic_write(out / "dev.tsv", "".join(dev))


def _check_readable(dataset: str, folder: Path, say, sources: dict[str, str]) -> None:
    """Read every split of an NLG dataset found in ``folder`` with the project's reader; PrepareError if one
    does not parse, naming the file it was copied from (``sources``: copied path -> original path)."""
    from lorakit.data.nlg import DataError, find_split_file, read_split

    for split in ("train", "dev", "test"):
        try:
            find_split_file(dataset, split, folder)
        except DataError:
            continue  # a split that is not there (DART from a partial folder)
        try:
            examples = read_split(dataset, split, folder)
        except DataError as err:
            message = str(err)
            for copied, original in sources.items():
                message = message.replace(copied, original)
            raise PrepareError(f"{dataset} {split}: the files do not read: {message}") from err
        say(f"{dataset} {split}: {len(examples)} inputs, {sum(len(e.references) for e in examples)} references")


def prepare(task: str, to: str | Path, source: str | Path | None = None, say=print, *,
            holdout: float | None = None, max_train_docs: int | None = None) -> Path:
    """Prepare ``task``'s files under ``to`` (from ``source`` when given, else downloaded); return the
    folder the task reads (``--data`` for it). ``holdout``, ``max_train_docs``: openwebtext only (see
    :func:`lorakit.data.openwebtext.write_splits`)."""
    key = task.lower().replace("-", "")
    if key not in SOURCES:
        raise PrepareError(f"unknown task {task!r}; known: {', '.join(SOURCES)}")
    spec = SOURCES[key]
    out = Path(to).expanduser() / spec.folder if spec.folder else Path(to).expanduser()
    if spec.build == "openwebtext":
        return _prepare_openwebtext(spec, Path(to).expanduser(), out, source, say, holdout, max_train_docs)
    if holdout is not None or max_train_docs is not None:
        raise PrepareError(f"--holdout and --max-train-docs apply to openwebtext only, not {task!r}")
    seen: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if source is None:
            _download(spec.urls, tmp, say)
            root = tmp
            for name in spec.urls:
                if name.endswith(".zip"):
                    with zipfile.ZipFile(tmp / name) as zf:
                        zf.extractall(tmp)
        else:
            src = Path(source).expanduser()
            if not src.exists():
                raise PrepareError(f"--from {src}: no such file or folder")
            root = _unpack(src, tmp)
            if spec.folder:  # a parent of the task folder, possibly inside an archive's top folder
                nested = [root / spec.folder, *(p / spec.folder for p in sorted(root.iterdir()) if p.is_dir())]
                root = next((p for p in nested if p.is_dir()), root)
        checked = _check_files(task, key, spec, root, source is not None, seen, say, tmp)
        if spec.reader:  # NLG datasets must also parse: read a staged copy before anything reaches `out`
            staged = tmp / "staged"
            _copy_into(checked, staged)
            _check_readable(spec.reader, staged, say, {str(staged / n): str(p) for n, p in checked.items()})
        with _no_new_folders_on_failure(out):
            _copy_into(checked, out)
    _write_manifest(out, key, str(source) if source is not None else "download", seen)
    say(f"{task}: ready in {out} (pass --data {out})")
    return out


def _check_files(task: str, key: str, spec: Source, root: Path, local: bool, seen: dict[str, dict], say,
                 scratch: Path) -> dict[str, Path]:
    """Find and check every file of the task under ``root`` (for MRPC, built in ``scratch`` first); record each
    digest seen in ``seen`` (name -> {"sha256", "pinned"}). Returns {name in the task folder: checked file}."""
    if spec.build == "mrpc" and not all(_find(root, n) for n in spec.files):
        inputs = {}
        for name, digest in spec.extra.items():
            found = _find(root, name)
            if found is None:
                raise PrepareError(f"MRPC: {name} not found under {root}; expected the MSR paraphrase train file "
                                   "and GLUE's dev ids (or train.tsv and dev.tsv)")
            _check(found, digest, say)
            inputs[name] = found
        root = scratch / "mrpc-built"
        root.mkdir()
        _build_mrpc(inputs["msr_paraphrase_train.txt"], inputs["dev_ids.tsv"], root)
    checked: dict[str, Path] = {}
    for name, digest in spec.files.items():
        found = _find(root, name)
        if found is None:
            optional = ((name.startswith("test") and not spec.reader) or name in spec.optional
                        or (local and (key.startswith("squad") or spec.partial)))
            if optional:  # SuperGLUE test files; a SQuAD or DART folder may hold some splits only
                say(f"note: {name} not found under {root}; skipped")
                continue
            expected = ", ".join(spec.files) if len(spec.files) <= 8 else f"{len(spec.files)} files"
            raise PrepareError(f"{name} not found under {root}; task {task!r} expects "
                               f"{expected}{f' in {spec.folder}/' if spec.folder else ''}")
        seen[name] = {"sha256": _check(found, digest, say), "pinned": digest is not None}
        checked[name] = found
    if spec.partial and not checked:
        raise PrepareError(f"none of {', '.join(spec.files)} found under {root}")
    return checked


def _copy_into(files: dict[str, Path], folder: Path) -> None:
    """Copy each checked file to ``folder / name`` (streamed, each written atomically)."""
    for name, found in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        if found.resolve() != (folder / name).resolve():
            atomic_write(folder / name, lambda tmp, found=found: shutil.copyfile(found, tmp))


@contextlib.contextmanager
def _no_new_folders_on_failure(path: Path) -> Iterator[None]:
    """When the block fails, the folders from ``path`` up that it created are removed again (if still empty)."""
    created = [p for p in (path, *path.parents) if not p.exists()]  # innermost first
    try:
        yield
    except BaseException:
        for folder in created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _prepare_openwebtext(spec: Source, to: Path, out: Path, source: str | Path | None, say,
                         holdout: float | None, max_train_docs: int | None) -> Path:
    """OpenWebText: the release archive (downloaded into ``to/openwebtext-release``, kept) or ``source`` (a
    folder or one file) read by :mod:`lorakit.data.openwebtext` into ``out/{train,valid,test}.txt``. The
    release archive is checked against its pinned digest; other inputs (the Hugging Face shards, unpacked .xz
    archives, parquet files) have none: their digests are printed. All are recorded in the manifest, with the
    written files'."""
    from lorakit.data import openwebtext as owt

    if source is None:
        release = to / "openwebtext-release"
        missing = {name: url for name, url in spec.urls.items() if not (release / name).is_file()}
        if missing:
            _download(missing, release, say)  # checks the host first: offline, nothing is created
        say(f"openwebtext: the release archive is kept in {release} (--from {release} reuses it)")
        root = release
    else:
        root = Path(source).expanduser()
        if not root.exists():
            raise PrepareError(f"--from {root}: no such file or folder")
    seen: dict[str, dict] = {}

    def check(path: Path) -> None:
        say(f"openwebtext: reading {path}")
        name = path.name if path == root else str(path.relative_to(root))
        digest = spec.extra.get(path.name)  # the release archive's; None for the other formats
        seen[name] = {"sha256": _check(path, digest, say), "pinned": digest is not None}

    try:
        with _no_new_folders_on_failure(out):  # the split files appear together or not at all
            inputs = owt.find_inputs(root)
            out.mkdir(parents=True, exist_ok=True)
            written = owt.write_splits(inputs, out, owt.DEFAULT_HOLDOUT if holdout is None else holdout,
                                       max_train_docs, on_input=check)
    except owt.OpenWebTextError as err:
        raise PrepareError(str(err)) from None
    for split, info in written.items():
        seen[f"{split}.txt"] = {"sha256": info["sha256"], "pinned": False, "documents": info["documents"]}
        say(f"openwebtext {split}: {info['documents']:,} documents")
    _write_manifest(out, "openwebtext", str(source) if source is not None else OPENWEBTEXT_BASE, seen)
    say(f"openwebtext: ready in {out} (pass --data {out}; task text or mlm_text)")
    return out


def main(argv: list[str] | None = None) -> int:
    """``lorakit data prepare TASK --to DIR [--from PATH]``"""
    parser = argparse.ArgumentParser(prog="lorakit data", description="Prepare task data in the layout lorakit reads.")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("prepare", help="download (or take from --from) and check a task's files")
    p.add_argument("task", help=f"one of {', '.join(SOURCES)}")
    p.add_argument("--to", required=True, help="output folder (the task's subfolder is created in it)")
    p.add_argument("--from", dest="source", help="an already-downloaded folder or zip (no network needed); "
                   "openwebtext: openwebtext.tar.xz, or a folder of it, of the Hugging Face tar shards, of .xz "
                   "archives or of parquet files")
    p.add_argument("--holdout", type=float, default=None,
                   help="openwebtext: the fraction of documents for valid and for test each (default 0.0005)")
    p.add_argument("--max-train-docs", type=int, default=None,
                   help="openwebtext: stop reading once train.txt has this many documents (default: all)")
    args = parser.parse_args(argv)
    try:
        prepare(args.task, args.to, args.source, holdout=args.holdout, max_train_docs=args.max_train_docs)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
