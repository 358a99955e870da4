"""``lorakit data prepare``: checked copies from a folder or zip, MRPC's GLUE split rule, clear failures."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

from lorakit import data_prepare as dp
from lorakit.cli import main as cli_main

SHARED = Path(os.environ.get("LORAKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
GLUE = SHARED / "glue"
SQUAD = SHARED / "squad"


@pytest.fixture
def shared_glue() -> Path:
    """The shared GLUE files; a missing folder fails the test (never skips) and says where it looked."""
    needed = GLUE / "MRPC" / "msr_paraphrase_train.txt"
    assert needed.is_file(), f"{needed} not found: these tests read the project's shared data; set LORAKIT_DATA"
    return GLUE


@pytest.fixture
def shared_squad() -> Path:
    needed = SQUAD / "dev-v1.1.json"
    assert needed.is_file(), f"{needed} not found: these tests read the project's shared data; set LORAKIT_DATA"
    return SQUAD


needs_data = pytest.mark.usefixtures("shared_glue")


@needs_data
def test_from_a_glue_root_copies_and_checks_the_task_files(tmp_path):
    out = dp.prepare("rte", tmp_path / "data", source=GLUE, say=lambda _m: None)
    assert out == tmp_path / "data" / "RTE"
    assert (out / "train.tsv").read_bytes() == (GLUE / "RTE" / "train.tsv").read_bytes()


@needs_data
def test_mrpc_split_is_rebuilt_with_glues_rule_and_matches_the_official_checksums(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("msr_paraphrase_train.txt", "dev_ids.tsv"):
        shutil.copyfile(GLUE / "MRPC" / name, raw / name)
    out = dp.prepare("mrpc", tmp_path / "data", source=raw, say=lambda _m: None)  # checksums verified inside
    assert (out / "dev.tsv").read_bytes() == (GLUE / "MRPC" / "dev.tsv").read_bytes()


@needs_data
def test_a_zip_works_and_a_damaged_file_fails_its_checksum(tmp_path):
    archive = tmp_path / "CoLA.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(GLUE / "CoLA" / "train.tsv", "CoLA/train.tsv")
        zf.writestr("CoLA/dev.tsv", (GLUE / "CoLA" / "dev.tsv").read_bytes()[:-10])
    with pytest.raises(dp.PrepareError, match=r"dev.tsv: checksum mismatch \(sha256 [0-9a-f]{64}, expected 8c01"):
        dp.prepare("cola", tmp_path / "data", source=archive, say=lambda _m: None)


def test_offline_download_fails_fast_and_says_what_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setattr(dp, "_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(dp.PrepareError, match=r"cannot reach rajpurkar.github.io \(offline\?\).*dev-v1.1.json.*--from"):
        dp.prepare("squad", tmp_path, say=lambda _m: None)
    assert cli_main(["data", "prepare", "boolq", "--to", str(tmp_path)]) == 1
    assert cli_main(["data", "prepare", "nosuchtask", "--to", str(tmp_path)]) == 1


def test_missing_files_name_what_the_task_expects(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(dp.PrepareError, match=r"train.tsv not found .* 'sst2' expects train.tsv, dev.tsv in SST-2/"):
        dp.prepare("sst2", tmp_path / "out", source=tmp_path / "empty", say=lambda _m: None)


@pytest.mark.usefixtures("shared_squad")
def test_squad_folder_with_dev_only(tmp_path):
    notes: list[str] = []
    out = dp.prepare("squad", tmp_path, source=SQUAD, say=notes.append)
    assert (out / "dev-v1.1.json").is_file() and any("train-v1.1.json not found" in n for n in notes)
