"""``lorakit data prepare openwebtext`` and ``data/prepare_webtext.sh``: OpenWebText's layouts (the release's xz
tar and the Hugging Face tar shards of xz tars of one .txt per document, parquet) built here from real WikiText-2
text, the split rule against a hand computation, the release archive checked against its pinned digest and the
shards' digests printed and recorded, the same output from every input format, clear failures."""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import REPO, LocalHTTPServer, need, shared_data

from lorakit.cli import main as cli_main
from lorakit.data import prepare as dp


def _documents() -> list[str]:
    """Real text: the WikiText-2 valid articles (split at their ' = Title = ' lines) as raw documents, some with
    runs of blank lines the loader's rule collapses, and one empty document it drops."""
    text = need(shared_data() / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")
    articles = re.split(r"\n(?= = [^=])", text)
    docs = [a.replace(" \n \n", "\n\n\n\n") for a in articles if a.strip()][:60]
    return docs + ["  \n\n \n"]


def _normalized(doc: str) -> str:
    return re.sub("\n\n\n+", "\n\n", doc).strip()


def _xz_tar(docs: dict[str, str]) -> bytes:
    """An xz-compressed tar of one .txt per document, as in OpenWebText's urlsf_subsetNN-M_data.xz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, doc in docs.items():
            data = doc.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return lzma.compress(buf.getvalue(), format=lzma.FORMAT_XZ)


def _shards(tmp: Path, docs: list[str]) -> tuple[Path, Path]:
    """The canonical layout (``subsets/urlsf_subset00.tar`` holding ``openwebtext/urlsf_subset00-{1,2}_data.xz``)
    and the same .xz archives unpacked into another folder. Returns (shards folder, xz folder)."""
    shards, xz_dir = tmp / "owt" / "subsets", tmp / "unpacked"
    shards.mkdir(parents=True)
    xz_dir.mkdir()
    half = len(docs) // 2
    parts = {f"urlsf_subset00-{k + 1}_data.xz": _xz_tar({f"{k:04d}-{i:06d}.txt": d for i, d in enumerate(chunk)})
             for k, chunk in enumerate((docs[:half], docs[half:]))}
    with tarfile.open(shards / "urlsf_subset00.tar", "w") as tar:
        for name, data in parts.items():
            info = tarfile.TarInfo(f"openwebtext/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            (xz_dir / name).write_bytes(data)
    return shards.parent, xz_dir


def _by_hand(doc: str, holdout: float) -> str:
    u = int.from_bytes(hashlib.blake2b(doc.encode("utf-8"), digest_size=8).digest(), "big") / 2 ** 64
    return "test" if u < holdout else "valid" if u < 2 * holdout else "train"


def test_shards_become_text_splits_by_the_documents_hash_with_unpinned_digests_recorded(tmp_path):
    docs = _documents()
    owt, _ = _shards(tmp_path, docs)
    notes: list[str] = []
    out = dp.prepare("openwebtext", tmp_path / "data", owt, say=notes.append, holdout=0.1)
    assert out == tmp_path / "data" / "webtext"
    expected = {"train": [], "valid": [], "test": []}
    for doc in docs:
        if _normalized(doc):
            expected[_by_hand(_normalized(doc), 0.1)].append(_normalized(doc))
    assert all(expected.values())  # 60 documents at holdout 0.1: every split has some
    for split, kept in expected.items():
        assert (out / f"{split}.txt").read_text(encoding="utf-8") == "".join(d + "\n\n" for d in kept)
    assert "\n\n\n" not in (out / "train.txt").read_text(encoding="utf-8")
    # no pinned digest: said, printed and recorded
    shard = owt / "subsets" / "urlsf_subset00.tar"
    digest = hashlib.sha256(shard.read_bytes()).hexdigest()
    assert any(f"urlsf_subset00.tar: no pinned checksum; sha256 {digest}" in n for n in notes)
    manifest = json.loads((out / dp.MANIFEST).read_text())["files"]
    assert manifest["subsets/urlsf_subset00.tar"]["sha256"] == digest
    assert manifest["subsets/urlsf_subset00.tar"]["pinned"] is False
    for split, kept in expected.items():
        entry = manifest[f"{split}.txt"]
        assert entry["documents"] == len(kept) and entry["task"] == "openwebtext" and entry["source"] == str(owt)
        assert entry["sha256"] == hashlib.sha256((out / f"{split}.txt").read_bytes()).hexdigest()
    from lorakit.train.tasks import get_task

    assert get_task("mlm_text").load("valid", out)  # the masked-LM task reads the prepared folder


def test_unpacked_xz_files_one_shard_and_the_cli_give_the_same_files(tmp_path):
    owt, xz_dir = _shards(tmp_path, _documents())
    first = dp.prepare("openwebtext", tmp_path / "a", owt, say=lambda _m: None, holdout=0.1)
    second = dp.prepare("openwebtext", tmp_path / "b", xz_dir, say=lambda _m: None, holdout=0.1)
    assert cli_main(["data", "prepare", "openwebtext", "--to", str(tmp_path / "c"), "--from",
                     str(owt / "subsets" / "urlsf_subset00.tar"), "--holdout", "0.1"]) == 0
    for split in ("train", "valid", "test"):
        data = (first / f"{split}.txt").read_bytes()
        assert data and data == (second / f"{split}.txt").read_bytes()
        assert data == (tmp_path / "c" / "webtext" / f"{split}.txt").read_bytes()


def _release_archive(path: Path, xz_dir: Path) -> Path:
    """The release layout: an xz-compressed tar of ``openwebtext/urlsf_subsetNN-M_data.xz``."""
    with tarfile.open(path, "w:xz") as tar:
        for part in sorted(xz_dir.iterdir()):
            tar.add(part, arcname=f"openwebtext/{part.name}")
    return path


def test_the_release_archive_reads_like_the_shards_and_a_copy_that_differs_from_the_pinned_one_is_refused(tmp_path):
    owt, xz_dir = _shards(tmp_path, _documents())
    from_shards = dp.prepare("openwebtext", tmp_path / "a", owt, say=lambda _m: None, holdout=0.1)
    sample = _release_archive(tmp_path / "sample.tar.xz", xz_dir)  # another name: not checked against the pin
    notes: list[str] = []
    from_release = dp.prepare("openwebtext", tmp_path / "b", sample, say=notes.append, holdout=0.1)
    for split in ("train", "valid", "test"):
        assert (from_release / f"{split}.txt").read_bytes() == (from_shards / f"{split}.txt").read_bytes()
    assert any("sample.tar.xz: no pinned checksum" in n for n in notes)
    # under the release's name the archive must be the release: this one is not, and nothing is written
    (tmp_path / "release").mkdir()
    sample.rename(tmp_path / "release" / "openwebtext.tar.xz")
    pinned = dp.SOURCES["openwebtext"].extra["openwebtext.tar.xz"]
    with pytest.raises(dp.PrepareError, match=rf"openwebtext.tar.xz: checksum mismatch \(sha256 [0-9a-f]{{64}}; "
                                              rf"expected {pinned}\)"):
        dp.prepare("openwebtext", tmp_path / "c", tmp_path / "release", say=lambda _m: None, holdout=0.1)
    assert not (tmp_path / "c").exists()


def test_the_release_is_downloaded_once_checked_against_its_pin_and_kept(tmp_path, monkeypatch):
    """The path a user with internet takes, served from localhost: the pin is this sample archive's digest."""
    owt, xz_dir = _shards(tmp_path, _documents())
    from_shards = dp.prepare("openwebtext", tmp_path / "a", owt, say=lambda _m: None, holdout=0.1)
    (tmp_path / "site").mkdir()
    archive = _release_archive(tmp_path / "site" / "openwebtext.tar.xz", xz_dir)
    with LocalHTTPServer(tmp_path / "site") as server:
        release = dp.Source("webtext", {"openwebtext.tar.xz": server.url("openwebtext.tar.xz")}, {},
                            build="openwebtext",
                            extra={"openwebtext.tar.xz": hashlib.sha256(archive.read_bytes()).hexdigest()})
        monkeypatch.setitem(dp.SOURCES, "openwebtext", release)
        out = dp.prepare("openwebtext", tmp_path / "data", say=lambda _m: None, holdout=0.1)
        kept = tmp_path / "data" / "openwebtext-release" / "openwebtext.tar.xz"
        assert kept.read_bytes() == archive.read_bytes() and len(server.agents) == 1
        for split in ("train", "valid", "test"):
            assert (out / f"{split}.txt").read_bytes() == (from_shards / f"{split}.txt").read_bytes()
        assert json.loads((out / dp.MANIFEST).read_text())["files"]["openwebtext.tar.xz"]["pinned"] is True
        dp.prepare("openwebtext", tmp_path / "data", say=lambda _m: None, holdout=0.1)  # a rerun reuses it
        assert len(server.agents) == 1


@pytest.mark.parametrize("kind", ["shard", "release"])
def test_a_release_archive_or_shard_cut_short_fails_instead_of_losing_documents(tmp_path, kind):
    """tar stops quietly at a cut between members (and xz, read by tar, at a cut that ends its output there):
    cuts around each member boundary and the end-of-archive marker must either fail or lose nothing (a cut in
    the padding after the marker)."""
    from lorakit.data import openwebtext as owt

    owt_dir, xz_dir = _shards(tmp_path, _documents())
    shard = owt_dir / "subsets" / "urlsf_subset00.tar"
    with tarfile.open(shard) as tar:  # the release holds the same members: about the same offsets
        members = tar.getmembers()
    boundaries = [m.offset for m in members[1:]] + [members[-1].offset_data + members[-1].size]
    archive = shard if kind == "shard" else _release_archive(tmp_path / "sample.tar.xz", xz_dir)
    data, full = archive.read_bytes(), list(owt.documents(archive))
    cut = tmp_path / f"cut{''.join(archive.suffixes)}"
    failed = 0
    # around each boundary (a shard: exactly at it), and for the release byte by byte where xz's framing puts the
    # cuts that a reader without the end checks took silently (6 bytes, 554 after the second member's offset)
    dense = range(530, 580) if kind == "release" else ()
    points = {n for b in boundaries for n in (*range(b - 64, b + 1100, 32), *(b + d for d in dense))}
    for n in sorted(p for p in points if 0 < p < len(data)):
        cut.write_bytes(data[:n])
        try:
            got = list(owt.documents(cut))
        except owt.OpenWebTextError as err:
            assert "download it again" in str(err)
            failed += 1
            continue
        assert got == full, f"{archive.name} cut at {n} of {len(data)} bytes lost documents silently"
    assert failed > 30, failed


def test_max_train_docs_stops_early_and_a_too_small_holdout_writes_nothing(tmp_path):
    docs = _documents()
    owt, _ = _shards(tmp_path, docs)
    ordered = [_normalized(d) for d in docs if _normalized(d)]  # the archive order
    count = {"train": 0, "valid": 0, "test": 0}
    for doc in ordered:  # a limit reached after the first valid and the first test document
        count[_by_hand(doc, 0.1)] += 1
        if count["valid"] and count["test"]:
            break
    limit = count["train"] + 2
    train = [d for d in ordered if _by_hand(d, 0.1) == "train"]
    assert limit < len(train)
    out = dp.prepare("openwebtext", tmp_path / "data", owt, say=lambda _m: None, holdout=0.1, max_train_docs=limit)
    assert (out / "train.txt").read_text(encoding="utf-8") == "".join(d + "\n\n" for d in train[:limit])
    files = json.loads((out / dp.MANIFEST).read_text())["files"]
    assert files["train.txt"]["documents"] == limit
    assert sum(files[f"{s}.txt"]["documents"] for s in count) < len(ordered)  # it stopped reading
    with pytest.raises(dp.PrepareError, match=r"no document fell into valid and test .*raise --holdout"):
        dp.prepare("openwebtext", tmp_path / "tiny", owt, say=lambda _m: None, holdout=1e-9)
    assert not (tmp_path / "tiny" / "webtext").exists()  # no split file, no temporary file, no empty folder left
    with pytest.raises(dp.PrepareError, match=r"holdout must be in \(0, 0.5\)"):
        dp.prepare("openwebtext", tmp_path / "x", owt, say=lambda _m: None, holdout=0.5)
    with pytest.raises(dp.PrepareError, match="apply to openwebtext only"):
        dp.prepare("rte", tmp_path / "x", owt, say=lambda _m: None, holdout=0.1)


def test_bad_inputs_name_the_file_and_the_fix(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(dp.PrepareError, match=r"no OpenWebText files; expected one of: the release archive "
                                              r"openwebtext.tar.xz \(\*.tar.xz\); tar shards"):
        dp.prepare("openwebtext", tmp_path / "o", tmp_path / "empty", say=lambda _m: None)
    owt, xz_dir = _shards(tmp_path, _documents())
    (owt / "urlsf_subset00-1_data.xz").write_bytes((xz_dir / "urlsf_subset00-1_data.xz").read_bytes())
    with pytest.raises(dp.PrepareError, match=r"holds \*\.tar and \*\.xz files; give a folder with one format"):
        dp.prepare("openwebtext", tmp_path / "o", owt, say=lambda _m: None)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    data = (xz_dir / "urlsf_subset00-1_data.xz").read_bytes()
    (damaged / "urlsf_subset00-1_data.xz").write_bytes(data[: len(data) // 2])
    with pytest.raises(dp.PrepareError, match=r"urlsf_subset00-1_data.xz: not a readable xz tar archive"):
        dp.prepare("openwebtext", tmp_path / "o", damaged, say=lambda _m: None, holdout=0.1)
    monkeypatch.setattr(dp, "_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(dp.PrepareError, match=r"cannot reach zenodo.org \(offline\?\).*download "
                       r"https://zenodo.org/records/3834942/files/openwebtext.tar.xz and pass .* --from"):
        dp.prepare("openwebtext", tmp_path / "off", say=lambda _m: None)
    assert not (tmp_path / "off").exists()  # nothing written


def test_parquet_files_read_like_the_shards_and_bad_ones_are_named(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = _documents()
    owt, _ = _shards(tmp_path, docs)
    from_tar = dp.prepare("openwebtext", tmp_path / "a", owt, say=lambda _m: None, holdout=0.1)
    # the dataset's parquet conversion: raw documents in a text column, over two files (a null row is skipped)
    folder = tmp_path / "parquet" / "plain_text"
    folder.mkdir(parents=True)
    half = len(docs) // 2
    pq.write_table(pa.table({"text": docs[:half] + [None]}), folder / "train-00000-of-00002.parquet", row_group_size=7)
    pq.write_table(pa.table({"text": docs[half:]}), folder / "train-00001-of-00002.parquet")
    from_parquet = dp.prepare("openwebtext", tmp_path / "b", folder.parent, say=lambda _m: None, holdout=0.1)
    for split in ("train", "valid", "test"):
        assert (from_parquet / f"{split}.txt").read_bytes() == (from_tar / f"{split}.txt").read_bytes()

    other = tmp_path / "other"
    other.mkdir()
    pq.write_table(pa.table({"content": docs[:3]}), other / "train.parquet")
    with pytest.raises(dp.PrepareError, match=r"train.parquet: no 'text' column \(columns: content\)"):
        dp.prepare("openwebtext", tmp_path / "c", other, say=lambda _m: None, holdout=0.1)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # a machine without pyarrow
    with pytest.raises(dp.PrepareError, match=r"reading parquet files needs pyarrow \(pip install pyarrow"):
        dp.prepare("openwebtext", tmp_path / "d", folder.parent, say=lambda _m: None, holdout=0.1)
    assert not (tmp_path / "c" / "webtext" / "train.txt").exists() and not (tmp_path / "d" / "webtext").exists()


def test_prepare_webtext_sh_writes_the_folder_roberta_baseline_reads(tmp_path):
    from lorakit.train.config import load_config

    owt, _ = _shards(tmp_path, _documents())
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(REPO / "data" / "prepare_webtext.sh"), "--from", str(owt), "--holdout", "0.1",
                           "--to", str(tmp_path / "data")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "data" / "webtext" / "valid.txt").stat().st_size > 0
    # without --to the script writes beside itself, data/webtext: the folder the shipped config reads
    cfg = load_config(REPO / "configs" / "roberta_baseline.json")
    assert cfg.task.name == "mlm_text"
    assert (REPO / cfg.data.dir).resolve() == (REPO / "data" / dp.SOURCES["openwebtext"].folder).resolve()
    assert 'prepare openwebtext --to "$here" "$@"' in (REPO / "data" / "prepare_webtext.sh").read_text()
