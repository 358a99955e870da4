"""``lorakit data prepare``: checked copies from a folder or zip, MRPC's GLUE split rule, clear failures."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from helpers import LocalHTTPServer, shared_data

from lorakit.cli import main as cli_main
from lorakit.data import prepare as dp

SHARED = shared_data()
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
    with pytest.raises(dp.PrepareError, match=r"dev.tsv: checksum mismatch \(sha256 [0-9a-f]{64}; expected 8c01"):
        dp.prepare("cola", tmp_path / "data", source=archive, say=lambda _m: None)
    assert not (tmp_path / "data").exists()  # train.tsv passed its check, but nothing is written unless all pass


def test_a_sha1_pin_is_checked_and_the_manifest_still_records_the_sha256():
    """Publishers of the LM corpora give SHA-1s (enwik8/enwik9: Mahoney's page; WikiText, text8: GluonNLP's
    checks). GluonNLP's SHA-1 of WikiText-2's wiki.valid.tokens against this project's own copy of it."""
    valid = SHARED / "wikitext-2" / "valid.txt"
    assert valid.is_file(), f"{valid} not found: these tests read the project's shared data; set LORAKIT_DATA"
    sha256 = dp._check(valid, "sha1:0418625c8b4da6e4b5c7a0b9e78d4ae8f7ee5422", say=print)
    assert sha256 == "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"  # the data MANIFEST's
    assert dp._check(valid, ("sha1:" + "0" * 40, sha256), say=print) == sha256  # a tuple: any of them
    with pytest.raises(dp.PrepareError, match=r"checksum mismatch \(sha1 0418625c[0-9a-f]{32}, sha256 f0737ed3"
                                              r"[0-9a-f]{56}; expected sha1:c326ac59"):
        dp._check(valid, dp.SOURCES["wikitext103"].files["wiki.valid.tokens"], say=print)


def test_every_lm_corpus_file_is_pinned_with_a_digest_of_its_algorithms_length():
    lengths = {"sha256": 64, "sha1": 40}
    for task in ("enwik8", "text8", "hutter", "wikitext", "wikitext103", "shakespeare"):
        for name, pinned in dp.SOURCES[task].files.items():
            assert pinned is not None, f"{task}: {name} is not pinned"
            algorithm, hexdigest = dp._split_digest(pinned)
            assert len(hexdigest) == lengths[algorithm] and pinned.endswith(hexdigest), (task, name, pinned)


def test_a_pin_that_is_not_a_digest_is_refused_by_name():
    assert dp._split_digest("SHA1:0418625C8B4DA6E4B5C7A0B9E78D4AE8F7EE5422") == (
        "sha1", "0418625c8b4da6e4b5c7a0b9e78d4ae8f7ee5422")  # compared in lower case
    with pytest.raises(dp.PrepareError, match=r"'sha999:ab': hashlib has no algorithm 'sha999'"):
        dp._split_digest("sha999:ab")
    with pytest.raises(dp.PrepareError, match=r"'sha1:abc': not a sha1 digest in hex"):
        dp._split_digest("sha1:abc")
    with pytest.raises(dp.PrepareError, match=r"not a sha256 digest in hex"):
        dp._split_digest("z" * 64)


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
    # SQuAD shares its folder with other tasks: a later prepare keeps the earlier files' manifest entries
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "dev-v2.0.json").write_text('{"version": "v2.0", "data": []}', encoding="utf-8")
    dp.prepare("squad_v2", tmp_path, source=v2, say=notes.append)
    files = json.loads((tmp_path / dp.MANIFEST).read_text())["files"]
    assert files["dev-v1.1.json"]["pinned"] is True and files["dev-v1.1.json"]["task"] == "squad"
    assert files["dev-v2.0.json"]["pinned"] is False and files["dev-v2.0.json"]["task"] == "squad_v2"
    assert any(f"dev-v2.0.json: no pinned checksum; sha256 {files['dev-v2.0.json']['sha256']}" in n for n in notes)


# -- NLG datasets (E2E, WebNLG 2017, DART) --------------------------------------------------------------

def _shared_nlg(name: str) -> Path:
    folder = SHARED / name
    assert folder.is_dir(), f"{folder} not found: these tests read the project's shared data; set LORAKIT_DATA"
    return folder


def test_e2e_and_webnlg_from_the_shared_folders_are_checked_copied_and_read(tmp_path):
    notes: list[str] = []
    out = dp.prepare("e2e", tmp_path, source=_shared_nlg("e2e"), say=notes.append)
    assert out == tmp_path / "e2e"
    assert (out / "trainset.csv").read_bytes() == (SHARED / "e2e" / "trainset.csv").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["devset.csv", dp.MANIFEST, "testset.csv", "testset_w_refs.csv",
                                                      "trainset.csv"]
    # the manifest: each file's digest, checked against the pinned one
    recorded = json.loads((out / dp.MANIFEST).read_text())["files"]["trainset.csv"]
    assert recorded["sha256"] == dp.SOURCES["e2e"].files["trainset.csv"] and recorded["pinned"] is True
    assert recorded["task"] == "e2e" and recorded["source"] == str(_shared_nlg("e2e"))
    assert "e2e train: 4862 inputs, 42061 references" in notes and "e2e test: 630 inputs, 4693 references" in notes
    notes.clear()
    out = dp.prepare("webnlg", tmp_path, source=_shared_nlg("webnlg_challenge_2017").parent, say=notes.append)
    assert out == tmp_path / "webnlg_challenge_2017"
    assert len(list(out.rglob("*.xml"))) == 107 and not any("no pinned checksum" in n for n in notes)
    assert (out / "dev" / "1triples" / "1triple_allSolutions_Airport_dev_challenge.xml").is_file()
    assert "webnlg dev: 871 inputs, 2258 references" in notes


def test_dart_from_a_partial_folder_and_a_file_that_does_not_read(tmp_path):
    notes: list[str] = []
    out = dp.prepare("dart", tmp_path / "a", source=_shared_nlg("dart"), say=notes.append)
    assert sorted(p.name for p in out.iterdir()) == ["dart-v1.1.1-full-dev.json", "dart-v1.1.1-full-test.xml",
                                                      dp.MANIFEST]
    assert "note: dart-v1.1.1-full-train.json not found under" in " ".join(notes)
    assert "dart dev: 2768 inputs, 6980 references" in notes and "dart test: 5097 inputs, 12551 references" in notes
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dart-v1.1.1-full-train.json").write_text('[{"tripleset": [["a", "b", "c"]]}]', encoding="utf-8")
    with pytest.raises(dp.PrepareError, match=r"dart train: the files do not read: .*train.json#0: missing field "
                                              r"'annotations'") as err:
        dp.prepare("dart", tmp_path / "b", source=raw, say=lambda _m: None)
    assert str(raw / "dart-v1.1.1-full-train.json") in str(err.value)  # the file given, not a copy of it
    assert not (tmp_path / "b").exists()  # read before anything is copied
    (tmp_path / "empty").mkdir()
    with pytest.raises(dp.PrepareError, match=r"none of dart-v1.1.1-full-train.json, .* found under"):
        dp.prepare("dart", tmp_path / "c", source=tmp_path / "empty", say=lambda _m: None)


def test_e2e_damaged_file_fails_and_offline_nlg_downloads_say_what_to_fetch(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    shutil.copytree(_shared_nlg("e2e"), raw)
    (raw / "devset.csv").write_bytes((raw / "devset.csv").read_bytes()[:-20])
    with pytest.raises(dp.PrepareError, match=r"devset.csv: checksum mismatch \(sha256 [0-9a-f]{64}; expected fc26b7"):
        dp.prepare("e2e", tmp_path / "out", source=raw, say=lambda _m: None)
    monkeypatch.setattr(dp, "_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(dp.PrepareError, match=r"cannot reach raw.githubusercontent.com \(offline\?\).*tuetschek/"
                                              r"e2e-dataset/.*/trainset.csv.*--from"):
        dp.prepare("e2e", tmp_path / "out", say=lambda _m: None)
    with pytest.raises(dp.PrepareError, match=r"cannot reach gitlab.com .* the 107 files under https://gitlab.com/"
                                              r"shimorina/webnlg-dataset/-/raw/master/webnlg_challenge_2017/ and"):
        dp.prepare("webnlg", tmp_path / "out", say=lambda _m: None)
    assert cli_main(["data", "prepare", "dart", "--to", str(tmp_path)]) == 1


def test_downloads_name_lorakit_as_the_agent_and_a_failed_one_leaves_no_file(tmp_path):
    """A real HTTP server on localhost that, like wikitext.smerity.com, refuses Python's default agent."""
    (tmp_path / "site").mkdir()
    payload = bytes(range(256)) * 5000
    (tmp_path / "site" / "corpus.zip").write_bytes(payload)
    with LocalHTTPServer(tmp_path / "site", refuse_agent="Python-urllib") as server:
        notes: list[str] = []
        dp._download({"corpus.zip": server.url("corpus.zip")}, tmp_path / "got", notes.append)
        assert (tmp_path / "got" / "corpus.zip").read_bytes() == payload
        assert server.agents == [f"lorakit/{dp._VERSION} (lorakit data prepare)"]
        assert notes == [f"downloading {server.url('corpus.zip')}"]
        with pytest.raises(dp.PrepareError, match=r"download of .*/missing.zip failed: HTTP Error 404.*--from"):
            dp._download({"missing.zip": server.url("missing.zip")}, tmp_path / "got", notes.append)
        with pytest.raises(dp.PrepareError, match="HTTP Error 404"):
            dp._download({"missing.zip": server.url("missing.zip")}, tmp_path / "new" / "deeper", notes.append)
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == ["corpus.zip"]  # no partial file
    assert not (tmp_path / "new").exists()  # nor the folders made for it


def test_a_download_is_unpacked_checked_against_its_pin_and_recorded(tmp_path, monkeypatch):
    """The path a user with internet takes (download, unzip, check, copy, manifest), served from localhost: a
    task source like the LM corpora's, a zip holding one pinned file."""
    text = (SHARED / "wikitext-2" / "valid.txt").read_bytes()
    (tmp_path / "site").mkdir()
    with zipfile.ZipFile(tmp_path / "site" / "corpus.zip", "w") as zf:
        zf.writestr("corpus/wiki.valid.tokens", text)
    with LocalHTTPServer(tmp_path / "site") as server:
        source = dp.Source("corpus", {"corpus.zip": server.url("corpus.zip")},
                           {"wiki.valid.tokens": "sha1:0418625c8b4da6e4b5c7a0b9e78d4ae8f7ee5422"})  # GluonNLP's
        monkeypatch.setitem(dp.SOURCES, "corpus", source)
        out = dp.prepare("corpus", tmp_path / "data", say=lambda _m: None)
        assert (out / "wiki.valid.tokens").read_bytes() == text
        entry = json.loads((out / dp.MANIFEST).read_text())["files"]["wiki.valid.tokens"]
        assert entry["pinned"] is True and entry["source"] == "download"
        wrong_pin = dp.Source("corpus", source.urls, {"wiki.valid.tokens": "sha1:" + "0" * 40})
        monkeypatch.setitem(dp.SOURCES, "corpus", wrong_pin)
        with pytest.raises(dp.PrepareError, match="wiki.valid.tokens: checksum mismatch"):
            dp.prepare("corpus", tmp_path / "again", say=lambda _m: None)
    assert not (tmp_path / "again").exists()


def test_wikitext2_and_tiny_shakespeare_are_checked_against_their_pins_and_read_by_their_tasks(tmp_path):
    """The real files (this project's copies of WikiText-2 valid/test and char-rnn's input.txt) pass the pins;
    the tasks read the prepared folders. WikiText-2 from --from may hold some splits only."""
    from lorakit.train.tasks import get_task

    wikitext = SHARED / "wikitext-2"
    archive = tmp_path / "wikitext-2-v1.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # the release zip's layout, without the train file
        zf.write(wikitext / "valid.txt", "wikitext-2/wiki.valid.tokens")
        zf.write(wikitext / "test.txt", "wikitext-2/wiki.test.tokens")
    notes: list[str] = []
    out = dp.prepare("wikitext", tmp_path / "data", archive, say=notes.append)
    assert out == tmp_path / "data" / "wikitext-2"
    assert (out / "wiki.test.tokens").read_bytes() == (wikitext / "test.txt").read_bytes()
    files = json.loads((out / dp.MANIFEST).read_text())["files"]
    assert files["wiki.valid.tokens"]["pinned"] is True and files["wiki.test.tokens"]["pinned"] is True
    assert any("wiki.train.tokens not found" in n and "skipped" in n for n in notes)
    assert len(get_task("wikitext").load("valid", out)) > 0

    shakespeare = dp.prepare("shakespeare", tmp_path / "data", SHARED / "tinyshakespeare", say=lambda _m: None)
    assert (shakespeare / "input.txt").read_bytes() == (SHARED / "tinyshakespeare" / "input.txt").read_bytes()
    assert json.loads((shakespeare / dp.MANIFEST).read_text())["files"]["input.txt"]["pinned"] is True
    assert len(get_task("text").load("train", shakespeare)) > 0
