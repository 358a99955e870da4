"""``lorakit data prepare TASK --to DIR [--from PATH]``: put a task's data where its plugin reads it.

With internet, the files come from the canonical source (GLUE's and SuperGLUE's release zips, the
SentEval copy of MRPC and GLUE's MRPC dev ids, the SQuAD explorer site). ``--from PATH`` uses an
already-downloaded folder or zip instead, with no network. Either way every file with a pinned SHA-256
(below) is checked and a mismatch stops with the file, the expected and the actual digest; files without a
pinned digest are copied with a note printing their SHA-256 (so it can be pinned). Offline without
``--from``, the command fails within seconds and says what to download.

Layout written: GLUE ``DIR/RTE/train.tsv`` ... (MRPC's train/dev split is rebuilt from
``msr_paraphrase_train.txt`` and ``dev_ids.tsv`` with the rule of GLUE's ``download_glue_data.py``); SQuAD
``DIR/train-v1.1.json``, ``DIR/dev-v1.1.json`` (v2.0 likewise); SuperGLUE ``DIR/BoolQ/train.jsonl`` ...
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import socket
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["PrepareError", "SOURCES", "prepare", "main"]


class PrepareError(RuntimeError):
    """The data cannot be prepared; the message says why and what to do."""


@dataclass(frozen=True)
class Source:
    """Where a task's files come from: ``urls`` (file name or zip -> URL), the files the task needs (path
    relative to the output folder -> pinned SHA-256 or None), and the subfolder they go in."""

    folder: str
    urls: dict[str, str]
    files: dict[str, str | None]
    note: str = ""
    build: str = ""  # "mrpc": rebuild train/dev from the MSR file and the dev ids
    extra: dict[str, str | None] = field(default_factory=dict)  # inputs of `build`, with their digests


_GLUE = "https://dl.fbaipublicfiles.com/glue/data/"
_SUPERGLUE = "https://dl.fbaipublicfiles.com/glue/superglue/data/v2/"
_SQUAD = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"

# SHA-256 of the official files, as verified against the GLUE/PaddleNLP MD5 checksums (see the data
# MANIFEST of this project); None: not pinned yet.
SOURCES: dict[str, Source] = {
    "rte": Source("RTE", {"RTE.zip": _GLUE + "RTE.zip"}, {
        "train.tsv": "41e3a9b063433392343fad9e962cf2f58b681c78d8f71592f4186f0837246c5c",
        "dev.tsv": "80230dfa1347282e7b532b06a1004a76a710087541189bf874223ddf0e3819fb"}),
    "cola": Source("CoLA", {"CoLA.zip": _GLUE + "CoLA.zip"}, {
        "train.tsv": "cb368ebeb9f27d7ad03720d27ddc95687a311bdb100781a2fe59a5f5b1bc0624",
        "dev.tsv": "8c013e21dc39957cac37378d87bebe225b694a0d5fe13eded66c2856628833fd"}),
    "sst2": Source("SST-2", {"SST-2.zip": _GLUE + "SST-2.zip"}, {
        "train.tsv": "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
        "dev.tsv": "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"}),
    "stsb": Source("STS-B", {"STS-B.zip": _GLUE + "STS-B.zip"}, {
        "train.tsv": "41c4d978b6162abdcada7e49a982211954cca5459c228db478af333124b257a2",
        "dev.tsv": "fe7dc0632a5033562f3cadff991f6e8d9b9b6311861660e78c3c82eb7db67f59"}),
    "mrpc": Source(
        "MRPC",
        {"msr_paraphrase_train.txt": "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt",
         "dev_ids.tsv": _GLUE + "mrpc_dev_ids.tsv"},
        {"train.tsv": "69abcedee3cf738c6ce58d772e43e1b7cdf5b4edee4aceda459c0d9f4e5599f3",
         "dev.tsv": "9e8f284788040f7c9ecde2e1b3c07237c756f926bd9ef8548ef5d34b56f69f17"},
        build="mrpc",
        extra={"msr_paraphrase_train.txt": "60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89",
               "dev_ids.tsv": "971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7"}),
    "squad": Source("", {"train-v1.1.json": _SQUAD + "train-v1.1.json", "dev-v1.1.json": _SQUAD + "dev-v1.1.json"},
                    {"train-v1.1.json": None,
                     "dev-v1.1.json": "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"}),
    "squad_v2": Source("", {"train-v2.0.json": _SQUAD + "train-v2.0.json", "dev-v2.0.json": _SQUAD + "dev-v2.0.json"},
                       {"train-v2.0.json": None, "dev-v2.0.json": None}),
    **{name: Source(folder, {f"{folder}.zip": f"{_SUPERGLUE}{folder}.zip"},
                    {"train.jsonl": None, "val.jsonl": None, "test.jsonl": None})
       for name, folder in (("boolq", "BoolQ"), ("cb", "CB"), ("copa", "COPA"), ("superglue_rte", "RTE"),
                            ("wic", "WiC"), ("wsc", "WSC"), ("multirc", "MultiRC"), ("record", "ReCoRD"))},
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check(path: Path, expected: str | None, say) -> None:
    actual = _sha256(path)
    if expected is None:
        say(f"note: {path.name}: no pinned checksum; sha256 {actual}")
    elif actual != expected:
        raise PrepareError(f"{path}: checksum mismatch (sha256 {actual}, expected {expected}); the file is not the "
                           "official release (damaged download or another version); delete it and try again")


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "", parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _download(urls: dict[str, str], into: Path, say) -> None:
    first = next(iter(urls.values()))
    if not _reachable(first):
        host = urlparse(first).hostname
        raise PrepareError(f"cannot reach {host} (offline?). On a machine with internet download "
                           f"{', '.join(urls.values())} and pass the folder or zip with --from PATH")
    for name, url in urls.items():
        say(f"downloading {url}")
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(into / name, "wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as err:
            raise PrepareError(f"download of {url} failed: {err}; retry, or download it yourself and pass "
                               "--from") from err


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
    with open(train_txt, encoding="utf-8") as data, open(out / "train.tsv", "w", encoding="utf-8") as train, \
            open(out / "dev.tsv", "w", encoding="utf-8") as dev:
        header = data.readline()
        train.write(header)
        dev.write(header)
        for row in data:
            label, id1, id2, s1, s2 = row.strip().split("\t")
            (dev if (id1, id2) in ids else train).write(f"{label}\t{id1}\t{id2}\t{s1}\t{s2}\n")


def prepare(task: str, to: str | Path, source: str | Path | None = None, say=print) -> Path:
    """Prepare ``task``'s files under ``to`` (from ``source`` when given, else downloaded); return the
    folder the task reads (``--data`` for it)."""
    key = task.lower().replace("-", "")
    if key not in SOURCES:
        raise PrepareError(f"unknown task {task!r}; known: {', '.join(SOURCES)}")
    spec = SOURCES[key]
    out = Path(to).expanduser() / spec.folder if spec.folder else Path(to).expanduser()
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
            if spec.folder and (root / spec.folder).is_dir():
                root = root / spec.folder
        out.mkdir(parents=True, exist_ok=True)
        built = set()
        if spec.build == "mrpc" and not all(_find(root, n) for n in spec.files):
            inputs = {}
            for name, digest in spec.extra.items():
                found = _find(root, name)
                if found is None:
                    raise PrepareError(f"MRPC: {name} not found under {root}; expected the MSR paraphrase train file "
                                       "and GLUE's dev ids (or train.tsv and dev.tsv)")
                _check(found, digest, say)
                inputs[name] = found
            _build_mrpc(inputs["msr_paraphrase_train.txt"], inputs["dev_ids.tsv"], out)
            built = set(spec.files)
        for name, digest in spec.files.items():
            if name in built:
                _check(out / name, digest, say)
                continue
            found = _find(root, name)
            if found is None:
                optional = name.startswith("test") or (source is not None and key.startswith("squad"))
                if optional:  # SuperGLUE test files; a SQuAD folder may hold one split only
                    say(f"note: {name} not found under {root}; skipped")
                    continue
                raise PrepareError(f"{name} not found under {root}; task {task!r} expects "
                                   f"{', '.join(spec.files)}{f' in {spec.folder}/' if spec.folder else ''}")
            _check(found, digest, say)
            if found.resolve() != (out / name).resolve():
                shutil.copyfile(found, out / name)
    say(f"{task}: ready in {out} (pass --data {out})")
    return out


def main(argv: list[str] | None = None) -> int:
    """``lorakit data prepare TASK --to DIR [--from PATH]``"""
    parser = argparse.ArgumentParser(prog="lorakit data", description="Prepare task data in the layout lorakit reads.")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("prepare", help="download (or take from --from) and check a task's files")
    p.add_argument("task", help=f"one of {', '.join(SOURCES)}")
    p.add_argument("--to", required=True, help="output folder (the task's subfolder is created in it)")
    p.add_argument("--from", dest="source", help="an already-downloaded folder or zip (no network needed)")
    args = parser.parse_args(argv)
    try:
        prepare(args.task, args.to, args.source)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
