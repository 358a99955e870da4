"""NLG data readers (E2E, WebNLG 2017, DART) on the project's real shared files, and their error messages.

The data root follows ``tests/helpers.py``'s ``shared_data()`` rule ($LORAKIT_DATA, else ``shared/data``
beside the checkout); tests that read it fail (never skip) when it is missing. Bad-input tests write a small
slice of a real file to ``tmp_path`` and break it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import need, shared_data

from lorakit.data import DataError
from lorakit.data.nlg import (
    WEBNLG_SEEN_CATEGORIES,
    WEBNLG_UNSEEN_CATEGORIES,
    NLGExample,
    find_split_file,
    linearize_triples,
    read_dart,
    read_e2e,
    read_split,
    read_webnlg,
)

DATA = shared_data()
E2E = DATA / "e2e"
WEBNLG = DATA / "webnlg_challenge_2017"
DART = DATA / "dart"


def _refs(examples: list[NLGExample]) -> int:
    return sum(len(e.references) for e in examples)


def _xml_slice(path: Path, entries: int) -> str:
    """The first ``entries`` <entry> elements of a real WebNLG/DART XML file, as a complete document."""
    text = need(path).read_text(encoding="utf-8")
    end = 0
    for _ in range(entries):
        end = text.index("</entry>", end) + len("</entry>")
    return text[:end] + "\n  </entries>\n</benchmark>\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- E2E ------------------------------------------------------------------------------------------------

def test_e2e_official_csv_groups_references_by_mr():
    train = read_e2e(need(E2E / "trainset.csv"))
    assert (len(train), _refs(train)) == (4862, 42061)
    first = train[0]
    assert first.context == ("name[The Vaults], eatType[pub], priceRange[more than £30], customer rating[5 out of 5], "
                             "near[Café Adriatic]")
    assert first.references[0] == "The Vaults pub near Café Adriatic has a 5 star rating.  Prices start at £30."
    assert first.source == f"{E2E / 'trainset.csv'}:2" and first.category is None and first.seen is None
    # two training references hold "\r\n": it becomes one space, so every reference is one line
    assert not any("\n" in r or "\r" in r for e in train for r in e.references)
    assert any("near The Bakers. This coffee shop is a high customer rating" in r for e in train for r in e.references)
    dev, test = read_e2e(E2E / "devset.csv"), read_e2e(E2E / "testset_w_refs.csv")
    assert (len(dev), _refs(dev), len(test), _refs(test)) == (547, 4672, 630, 4693)
    mr_only = read_e2e(E2E / "testset.csv")
    assert len(mr_only) == 630 and all(e.references == () for e in mr_only)
    assert [e.context for e in mr_only] == [e.context for e in test]


def test_e2e_lora_text_format_groups_the_same_way_and_keeps_its_mr():
    valid = read_e2e(need(E2E / "lora_format" / "valid.txt"))
    assert (len(valid), _refs(valid)) == (547, 4672)
    assert valid[0].context == "name : Alimentum | area : city centre | family friendly : no"
    assert valid[0].references[0] == ("There is a place in the city centre , Alimentum , that is not family - "
                                      "friendly .")
    assert valid[1].source == f"{E2E / 'lora_format' / 'valid.txt'}:{1 + len(valid[0].references)}"
    dev = read_e2e(E2E / "devset.csv")  # same MRs, same order, same number of references each
    assert [len(e.references) for e in valid] == [len(e.references) for e in dev]
    test = read_e2e(E2E / "lora_format" / "test.txt")
    assert (len(test), _refs(test)) == (630, 4693)


# -- WebNLG ---------------------------------------------------------------------------------------------

def test_webnlg_train_and_dev_folders_keep_good_lexicalisations_only():
    train = read_webnlg(need(WEBNLG / "train"))
    # 6940 entries / 18102 lexicalisations, of which 77 "toFix"; 5 entries have toFix ones only
    assert (len(train), _refs(train)) == (6935, 18025)
    assert {e.category for e in train} == WEBNLG_SEEN_CATEGORIES and all(e.seen for e in train)
    assert train[0].context == "Aarhus Airport : cityServed : Aarhus, Denmark"
    assert train[0].source.endswith("train/1triples/1triple_allSolutions_Airport_train_challenge.xml#Id1")
    dev = read_webnlg(WEBNLG / "dev")
    assert (len(dev), _refs(dev)) == (871, 2258)
    assert not any(e.source.endswith("1triple_allSolutions_Building_dev_challenge.xml#Id23") for e in dev)


def test_webnlg_lora_json_reads_exactly_like_the_dev_xml():
    xml = read_webnlg(WEBNLG / "dev")
    lora = read_webnlg(need(WEBNLG / "lora_format" / "dev.json"))
    assert [(e.context, e.references, e.category, e.seen) for e in lora] == \
        [(e.context, e.references, e.category, e.seen) for e in xml]
    assert lora[0].source == f"{WEBNLG / 'lora_format' / 'dev.json'}#1"


def test_webnlg_test_files_seen_unseen_and_no_lex():
    test = read_webnlg(need(WEBNLG / "test" / "testdata_with_lex.xml"))
    assert (len(test), _refs(test)) == (1862, 4928)
    unseen = [e for e in test if not e.seen]
    assert {e.category for e in unseen} == WEBNLG_UNSEEN_CATEGORIES
    assert {e.category for e in test if e.seen} == WEBNLG_SEEN_CATEGORIES
    unseen_file = read_webnlg(WEBNLG / "test" / "testdata_unseen_with_lex.xml")
    assert (len(unseen), _refs(unseen)) == (len(unseen_file), _refs(unseen_file)) == (891, 2433)
    assert sorted(e.context for e in unseen) == sorted(e.context for e in unseen_file)
    no_lex = read_webnlg(WEBNLG / "test" / "testdata_no_lex.xml")
    assert len(no_lex) == 1862 and all(e.references == () for e in no_lex)
    assert [e.context for e in no_lex] == [e.context for e in test]
    assert test[1].context == ("Adolfo Suárez Madrid–Barajas Airport : location : Madrid, Paracuellos de Jarama, "
                               "San Sebastián de los Reyes and Alcobendas")  # enclosing quotes removed


def test_linearize_triples():
    triples = [("Aarhus_Airport", "runwayName", '"10L/28R"'), ("Ab_Klink", "quote", '"Squeezed" or "smashed"'),
               ("[TABLECONTEXT]", "LEADER_NAME", "  A   b ")]
    assert linearize_triples(triples) == ('Aarhus Airport : runwayName : 10L/28R | Ab Klink : quote : "Squeezed" or '
                                          '"smashed" | [TABLECONTEXT] : LEADER NAME : A b')
    assert linearize_triples([]) == ""
    with pytest.raises(ValueError, match="3 fields"):
        linearize_triples([("a", "b")])  # type: ignore[list-item]


# -- DART -----------------------------------------------------------------------------------------------

def test_dart_json_and_xml():
    dev = read_dart(need(DART / "lora_format" / "dart-v1.1.1-full-dev.json"))
    assert (len(dev), _refs(dev)) == (2768, 6980)
    assert dev[0].context == ("Mars Hill College : JOINED : 1973 | Mars Hill College : LOCATION : Mars Hill, "
                              "North Carolina")
    assert dev[0].references == ("A school from Mars Hill, North Carolina, joined in 1973.",)
    assert dev[0].source.endswith("dart-v1.1.1-full-dev.json#0") and dev[0].category is None and dev[0].seen is None
    head = read_dart(DART / "yale-lily_head" / "dart-v1.1.1-full-dev.json")  # CRLF copy of the same JSON
    assert [(e.context, e.references) for e in head] == [(e.context, e.references) for e in dev]
    test = read_dart(need(DART / "yale-lily_head" / "dart-v1.1.1-full-test.xml"))
    assert (len(test), _refs(test)) == (5097, 12551)  # 12552 <lex>, one of them empty (Id116, dropped)
    (id116,) = [e for e in test if e.source.endswith("#Id116")]
    assert id116.references == ("reserved (previously G721) has 1 channel and 8000 Hz clock rate",)
    assert id116.context == "reserved (previously G721) : NO. OF CHANNELS : 1 | reserved (previously G721) : " \
                            "CLOCK RATE (HZ) : 8000"


# -- locating splits ------------------------------------------------------------------------------------

def test_find_split_file_accepts_the_dataset_folder_or_its_parent():
    need(DATA)
    assert find_split_file("e2e", "train", DATA) == E2E / "trainset.csv"
    assert find_split_file("e2e", "valid", E2E) == E2E / "devset.csv"
    assert find_split_file("E2E", "test", E2E) == E2E / "testset_w_refs.csv"
    assert find_split_file("e2e", "dev", E2E / "lora_format") == E2E / "lora_format" / "valid.txt"
    assert find_split_file("webnlg", "train", DATA) == WEBNLG / "train"
    assert find_split_file("webnlg", "test", WEBNLG) == WEBNLG / "test" / "testdata_with_lex.xml"
    assert find_split_file("dart", "dev", DART) == DART / "lora_format" / "dart-v1.1.1-full-dev.json"
    assert find_split_file("dart", "test", DATA) == DART / "yale-lily_head" / "dart-v1.1.1-full-test.xml"
    with pytest.raises(DataError, match=r"dart train split not found under .*looked for: .*dart-v1.1.1-full-train"
                                        r"\.json.*dart-v1.1.1-full-train\.xml"):
        find_split_file("dart", "train", DATA)
    with pytest.raises(DataError, match=r"e2e train split not found .*lora_format/train.txt"):
        find_split_file("e2e", "train", E2E / "lora_format")
    with pytest.raises(DataError, match="unknown NLG dataset 'totto'"):
        find_split_file("totto", "train", DATA)
    with pytest.raises(DataError, match="unknown split 'eval'"):
        find_split_file("e2e", "eval", DATA)
    with pytest.raises(DataError, match="data folder not found"):
        find_split_file("e2e", "dev", DATA / "no-such-folder")


def test_read_split_uses_the_right_reader_and_requires_references(tmp_path):
    dev = read_split("webnlg", "dev", need(DATA))
    assert len(dev) == 871 and dev[0].category == "Airport"
    no_lex = _xml_slice(WEBNLG / "test" / "testdata_no_lex.xml", 3)
    _write(tmp_path / "webnlg", "test/testdata_with_lex.xml", no_lex)
    with pytest.raises(DataError, match=r"testdata_with_lex.xml#Id1: no references, but the test split needs them"):
        read_split("webnlg", "test", tmp_path)


# -- bad input ------------------------------------------------------------------------------------------

def _e2e_lines(name: str, count: int) -> list[str]:
    return need(E2E / name).read_text(encoding="utf-8").splitlines()[:count]


@pytest.mark.parametrize(("name", "line", "message"), [
    ("lora_format/valid.txt", "name : Alimentum | area : city centre There is a place .",
     r"valid.txt:3: expected one 'MR\|\|text' separator '\|\|', found none"),
    ("lora_format/valid.txt", "||There is a place .", r"valid.txt:3: empty MR"),
    ("lora_format/valid.txt", "name : Alimentum | area city centre||There is a place .",
     r"valid.txt:3: MR 'name : Alimentum \| area city centre' is not of the form 'key\[value\]"),
    ("lora_format/valid.txt", "name : Alimentum||   ", r"valid.txt:3: empty reference text"),
    ("devset.csv", '"name[Alimentum], area[city centre]",A text.,extra',
     r"devset.csv:3: expected 2 columns \(mr,ref\), found 3"),
    ("devset.csv", "A lonely field", r"devset.csv:3: expected 2 columns \(mr,ref\), found 1"),
    ("devset.csv", '"",Some text.', r"devset.csv:3: empty MR"),
    ("devset.csv", '"name: Alimentum, area: city centre",Some text.',
     r"devset.csv:3: MR 'name: Alimentum, area: city centre' is not of the form 'key\[value\], key\[value\], \.\.\.'"),
    ("devset.csv", '"name[Alimentum], area[city centre]", ', r"devset.csv:3: empty reference text"),
])
def test_e2e_bad_line_is_reported_with_file_and_line(tmp_path, name, line, message):
    """Both E2E formats: the LoRA repository's ``MR||text`` lines and the official ``mr,ref`` CSV."""
    lines = _e2e_lines(name, 4)
    lines[2] = line
    path = _write(tmp_path, Path(name).name, "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        read_e2e(path)


def test_e2e_bad_header_missing_path_and_non_utf8(tmp_path):
    lines = _e2e_lines("devset.csv", 3)
    with pytest.raises(DataError, match=r"devset.csv:1: header \['meaning', 'text'\] is not 'mr,ref'"):
        read_e2e(_write(tmp_path, "devset.csv", "\n".join(["meaning,text", *lines[1:]]) + "\n"))
    with pytest.raises(DataError, match=r"nothing.csv: no such file or folder"):
        read_e2e(tmp_path / "nothing.csv")
    with pytest.raises(DataError, match=r": not a file"):
        read_e2e(tmp_path)
    (tmp_path / "latin1.csv").write_bytes("\n".join(lines).encode("utf-8") + b'\n"name[Caf\xe9]",x\n')
    with pytest.raises(DataError, match=r"latin1.csv:4: not UTF-8 text"):
        read_e2e(tmp_path / "latin1.csv")
    with pytest.raises(DataError, match=r"only_header.csv: no examples"):
        read_e2e(_write(tmp_path, "only_header.csv", "mr,ref\n"))


def test_xml_parse_error_names_file_and_line(tmp_path):
    text = _xml_slice(WEBNLG / "dev" / "2triples" / "2triples_Airport_dev_challenge.xml", 2)
    at = text.index("</modifiedtripleset>", text.index('eid="Id2"'))  # the 2nd entry's closing tag
    broken = text[:at] + "</modifiedtriples>" + text[at + len("</modifiedtripleset>"):]
    path = _write(tmp_path, "dev.xml", broken)
    line = text[:at].count("\n") + 1
    with pytest.raises(DataError, match=rf"dev.xml:{line}: malformed XML \(mismatched tag, column \d+\)"):
        read_webnlg(path)
    with pytest.raises(DataError, match=r"test.xml:\d+: malformed XML"):
        read_dart(_write(tmp_path, "test.xml", _xml_slice(DART / "yale-lily_head" / "dart-v1.1.1-full-test.xml",
                                                          1)[:-30]))


def test_xml_entries_without_triples_or_references(tmp_path):
    text = _xml_slice(WEBNLG / "dev" / "2triples" / "2triples_Airport_dev_challenge.xml", 3)
    start = text.index('eid="Id2"')
    no_triples = text[:start] + text[start:].replace("<modifiedtripleset>", "<unusedtripleset>", 1).replace(
        "</modifiedtripleset>", "</unusedtripleset>", 1)
    with pytest.raises(DataError, match=r"a.xml#Id2: entry without triples"):
        read_webnlg(_write(tmp_path, "a.xml", no_triples))
    bad_triple = text.replace("<mtriple>Abilene_Regional_Airport | cityServed | Abilene,_Texas</mtriple>",
                              "<mtriple>Abilene_Regional_Airport cityServed Abilene,_Texas</mtriple>", 1)
    with pytest.raises(DataError, match=r"b.xml#Id1: malformed triple 'Abilene_Regional_Airport cityServed"):
        read_webnlg(_write(tmp_path, "b.xml", bad_triple))
    end = text.index("</entry>", start)
    lexless = text[:start] + text[start:end].split("<lex")[0] + text[end:]
    with pytest.raises(DataError, match=r"c.xml#Id2: entry without references \(<lex>\)"):
        read_webnlg(_write(tmp_path, "c.xml", lexless))
    dart = _xml_slice(DART / "yale-lily_head" / "dart-v1.1.1-full-test.xml", 2)
    empty = dart.replace(">Jeff Daniels played in the Hawaii Five-O episode The Flight of the Jewels<", ">  <")
    with pytest.raises(DataError, match=r"d.xml#Id1: empty reference text"):
        read_dart(_write(tmp_path, "d.xml", empty))


def test_json_entries_missing_fields(tmp_path):
    webnlg = json.loads(need(WEBNLG / "lora_format" / "dev.json").read_text(encoding="utf-8"))
    webnlg["entries"] = webnlg["entries"][:3]
    del webnlg["entries"][1]["2"]["modifiedtripleset"]
    with pytest.raises(DataError, match=r"dev.json#2: missing field 'modifiedtripleset'"):
        read_webnlg(_write(tmp_path, "dev.json", json.dumps(webnlg)))
    webnlg["entries"] = webnlg["entries"][2:]
    webnlg["entries"][0]["3"]["lexicalisations"][0]["lex"] = " "
    webnlg["entries"][0]["3"]["lexicalisations"] = webnlg["entries"][0]["3"]["lexicalisations"][:1]
    with pytest.raises(DataError, match=r"dev2.json#3: empty reference text"):
        read_webnlg(_write(tmp_path, "dev2.json", json.dumps(webnlg)))

    dart = json.loads(need(DART / "lora_format" / "dart-v1.1.1-full-dev.json").read_text(encoding="utf-8"))[:4]
    del dart[2]["annotations"][0]["text"]
    with pytest.raises(DataError, match=r"dart.json#2: missing field 'text'"):
        read_dart(_write(tmp_path, "dart.json", json.dumps(dart)))
    dart[2] = {"annotations": dart[1]["annotations"]}
    with pytest.raises(DataError, match=r"dart.json#2: missing field 'tripleset'"):
        read_dart(_write(tmp_path, "dart.json", json.dumps(dart)))
    dart[2] = {"tripleset": [["a", "b"]], "annotations": dart[1]["annotations"]}
    with pytest.raises(DataError, match=r"dart.json#2: malformed triple \['a', 'b'\]"):
        read_dart(_write(tmp_path, "dart.json", json.dumps(dart)))
    with pytest.raises(DataError, match=r"broken.json:\d+: malformed JSON"):
        read_dart(_write(tmp_path, "broken.json", json.dumps(dart)[:-5]))
    with pytest.raises(DataError, match=r"expected a JSON list"):
        read_dart(_write(tmp_path, "obj.json", json.dumps({"entries": dart})))
    with pytest.raises(DataError, match=r"missing field 'entries'"):
        read_webnlg(_write(tmp_path, "list.json", json.dumps(dart)))
