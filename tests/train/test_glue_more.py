"""GLUE QQP, MNLI (matched / mismatched) and QNLI from synthetic files in the official TSV layout: reading,
labels, metrics, bad input, a short training run, and ``lorakit data prepare``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from lorakit.data import prepare as dp
from lorakit.train.config import validate
from lorakit.train.tasks import DataError, get_task

# The official headers (GLUE download script; MNLI dev files carry the five annotator labels before gold_label).
QQP_HEADER = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
QNLI_HEADER = ["index", "question", "sentence", "label"]
MNLI_TRAIN_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                     "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
MNLI_DEV_HEADER = [*MNLI_TRAIN_HEADER[:11], "label2", "label3", "label4", "label5", "gold_label"]
NLI = ("contradiction", "entailment", "neutral")


def _tsv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


def _mnli_row(i: int, s1: str, s2: str, gold: str, dev: bool) -> list[str]:
    parse = f"( {s1} )"
    labels = [gold] * (5 if dev else 1)
    return [str(i), f"{i}1", f"{i}1e", "fiction", parse, f"( {s2} )", f"(ROOT {parse})", f"(ROOT ( {s2} ))",
            s1, s2, *labels, gold]


def write_glue(root: Path, n: int = 24) -> Path:
    """A GLUE root with QQP/, MNLI/ and QNLI/ in the official layout; labels follow a simple rule a model can learn
    (MNLI: the hypothesis word; QQP: the same question twice; QNLI: the sentence mentions 'yes')."""
    words = {"contradiction": "never", "entailment": "always", "neutral": "maybe"}
    for split, dev in (("train", False), ("dev_matched", True), ("dev_mismatched", True)):
        rows = [_mnli_row(i, f"the cat sat on mat {i}", f"it {words[NLI[i % 3]]} sat", NLI[i % 3], dev)
                for i in range(n)]
        _tsv(root / "MNLI" / f"{split}.tsv", MNLI_DEV_HEADER if dev else MNLI_TRAIN_HEADER, rows)
    for split in ("train", "dev"):
        rows = [[str(i), str(2 * i), str(2 * i + 1), f"how old is tree {i}?",
                 f"how old is tree {i}?" if i % 2 else f"where is river {i}?", str(i % 2)] for i in range(n)]
        _tsv(root / "QQP" / f"{split}.tsv", QQP_HEADER, rows)
        rows = [[str(i), f"is it {i}?", f"{'yes' if i % 2 == 0 else 'no'} it is {i}.",
                 "entailment" if i % 2 == 0 else "not_entailment"] for i in range(n)]
        _tsv(root / "QNLI" / f"{split}.tsv", QNLI_HEADER, rows)
    return root


@pytest.fixture
def glue_root(tmp_path) -> Path:
    return write_glue(tmp_path / "glue")


def test_qqp_mnli_qnli_read_the_official_columns(glue_root):
    qqp = get_task("qqp").load("train", glue_root)
    assert len(qqp) == 24 and qqp[1].text_a == "how old is tree 1?" and qqp[1].text_b == qqp[1].text_a
    assert [e.label for e in qqp[:4]] == [0, 1, 0, 1]
    qnli = get_task("qnli").load("dev", glue_root / "QNLI")  # the task folder itself works too
    assert (qnli[0].text_a, qnli[0].text_b, qnli[0].label) == ("is it 0?", "yes it is 0.", 0)
    assert qnli[1].label == 1  # not_entailment
    mnli = get_task("mnli").load("train", glue_root)
    assert mnli[0].text_a == "the cat sat on mat 0" and mnli[0].text_b == "it never sat"
    assert [e.label for e in mnli[:3]] == [0, 1, 2]  # contradiction, entailment, neutral
    assert get_task("mnli").num_labels == 3 and get_task("qqp").num_labels == 2


def test_mnli_dev_is_matched_and_mnli_mm_dev_is_mismatched(glue_root):
    (glue_root / "MNLI" / "dev_mismatched.tsv").write_text(
        "\t".join(MNLI_DEV_HEADER) + "\n" + "\t".join(_mnli_row(7, "a dog ran", "it always ran", "entailment", True))
        + "\n", encoding="utf-8")
    matched = get_task("mnli").load("dev", glue_root)
    mismatched = get_task("mnli_mm").load("dev", glue_root)
    assert len(matched) == 24 and matched[0].source.endswith("dev_matched.tsv:2")
    assert len(mismatched) == 1 and mismatched[0].text_a == "a dog ran" and mismatched[0].label == 1
    assert mismatched[0].source.endswith("dev_mismatched.tsv:2")
    assert len(get_task("mnli-mm").load("dev_matched", glue_root)) == 24  # a split named directly; the alias
    with pytest.raises(DataError, match=r"no dev_mismatched\.tsv for task 'mnli_mm'.*DIR/dev_mismatched\.tsv"):
        get_task("mnli_mm").load("dev", glue_root / "QQP")


def test_metrics_are_glues(glue_root):
    qqp, mnli = get_task("qqp"), get_task("mnli_mm")
    scores = qqp.metrics([1, 1, 0, 0], [1, 0, 0, 1])
    assert scores == pytest.approx({"acc": 0.5, "f1": 0.5})
    assert mnli.metrics([0, 1, 2, 2], [0, 1, 2, 1]) == pytest.approx({"acc": 0.75})
    assert get_task("qnli").metrics([0, 1], [1, 1]) == pytest.approx({"acc": 0.5})
    assert qqp.main_metric == mnli.main_metric == "acc"


def test_bad_input_names_file_line_task_and_layout(glue_root):
    path = glue_root / "MNLI" / "train.tsv"
    lines = path.read_text(encoding="utf-8").splitlines()
    fields = lines[3].split("\t")
    fields[-1] = "-"  # MultiNLI's "no consensus" label, which GLUE's files do not have
    path.write_text("\n".join([*lines[:3], "\t".join(fields), *lines[4:]]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.tsv:4: label '-' is not one of \['contradiction', 'entailment'"):
        get_task("mnli").load("train", glue_root)
    # a QNLI file given to QQP: the header lacks QQP's columns
    (glue_root / "QQP" / "train.tsv").write_bytes((glue_root / "QNLI" / "train.tsv").read_bytes())
    with pytest.raises(DataError, match=r"train\.tsv:1: header .* lacks the column\(s\) \['question1', 'question2', "
                                        r"'is_duplicate'\] of task qqp"):
        get_task("qqp").load("train", glue_root)
    # a truncated row
    with open(glue_root / "QNLI" / "dev.tsv", "a", encoding="utf-8") as fh:
        fh.write("99\tonly a question?\n")
    with pytest.raises(DataError, match=r"dev\.tsv:26: expected at least 4 tab-separated columns, found 2 .*qnli"):
        get_task("qnli").load("dev", glue_root)


def test_task_names_validate_and_unknown_ones_do_not():
    for name in ("qqp", "mnli", "mnli_mm", "qnli"):
        assert validate({"model": {"name_or_path": "x"}, "task": {"name": name}}).task.name == name
    with pytest.raises(ValueError, match="mnli_mm"):
        validate({"model": {"name_or_path": "x"}, "task": {"name": "mnli_mmm"}})


def test_mnli_trains_a_three_class_head(glue_root, tmp_path, kit):
    cfg = kit.tiny_config(glue_root, task={"name": "mnli"}, training={"batch_size": 8, "max_steps": 6,
                                                                        "checkpoint_every": 6, "seed": 1},
                          evaluation={"every": 6, "average_last": 1, "batch_size": 32})
    results = kit.run(cfg, tmp_path / "run")
    assert results["task"] == "mnli" and 0.0 <= results["final"]["acc"] <= 1.0
    tensors = kit.tensors(tmp_path / "run")
    assert tuple(tensors["classifier.weight"].shape) == (3, 32)
    assert any("lora_A" in k for k in tensors)


def test_data_prepare_copies_the_new_glue_tasks(glue_root, tmp_path):
    out = dp.prepare("mnli", tmp_path / "data", source=glue_root, say=lambda _m: None)
    assert out == tmp_path / "data" / "MNLI"
    files = sorted(["dev_matched.tsv", "dev_mismatched.tsv", dp.MANIFEST, "train.tsv"])
    assert sorted(p.name for p in out.iterdir()) == files
    assert dp.prepare("mnli_mm", tmp_path / "data2", source=glue_root, say=lambda _m: None).name == "MNLI"
    archive = tmp_path / "QQP-clean.zip"  # GLUE's zip: a top folder QQP/ holding the TSVs
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("train.tsv", "dev.tsv"):
            zf.write(glue_root / "QQP" / name, f"QQP/{name}")
    notes: list[str] = []
    out = dp.prepare("qqp", tmp_path / "data", source=archive, say=notes.append)
    assert (out / "dev.tsv").read_bytes() == (glue_root / "QQP" / "dev.tsv").read_bytes()
    assert any("no pinned checksum" in n for n in notes)
    assert len(get_task("qqp").load("dev", tmp_path / "data")) == 24
    (glue_root / "QNLI" / "dev.tsv").unlink()
    with pytest.raises(dp.PrepareError, match=r"dev\.tsv not found .* task 'qnli' expects train\.tsv, dev\.tsv"):
        dp.prepare("qnli", tmp_path / "data", source=glue_root, say=lambda _m: None)
    assert dp.SOURCES["qnli"].urls == {"QNLIv2.zip": "https://dl.fbaipublicfiles.com/glue/data/QNLIv2.zip"}


# -- the paper's configs ---------------------------------------------------------------------------------

TINY = {  # small models of each family, with the features of the real ones (DeBERTa-v2: relative attention)
    "roberta": {"model_type": "roberta", "vocab_size": 1000, "hidden_size": 32, "num_hidden_layers": 2,
                "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 80, "pad_token_id": 1},
    "deberta": {"model_type": "deberta-v2", "vocab_size": 1000, "hidden_size": 32, "num_hidden_layers": 2,
                "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
                "relative_attention": True, "position_buckets": 16, "pos_att_type": ["p2c", "c2p"],
                "share_att_key": True, "norm_rel_ebd": "layer_norm", "position_biased_input": False},
}
# (file, batch, epochs, lr, lora_alpha, max_length, weight decay, classifier dropout): LoRA paper Tables 9 and 10
PAPER = [
    ("roberta_base_mnli_lora", 16, 30, 5e-4, 8, 512, 0.1, 0.1),
    ("roberta_base_cola_lora", 32, 80, 4e-4, 8, 512, 0.1, 0.1),
    ("roberta_base_qnli_lora", 32, 25, 4e-4, 8, 512, 0.1, 0.1),
    ("roberta_base_qqp_lora", 16, 25, 5e-4, 8, 512, 0.1, 0.1),
    ("roberta_large_sst2_lora", 4, 10, 4e-4, 16, 128, 0.1, 0.1),
    ("roberta_large_stsb_lora_from_mnli", 8, 30, 2e-4, 16, 512, 0.1, 0.1),
    ("roberta_large_qqp_lora", 4, 20, 3e-4, 16, 512, 0.1, 0.1),
    ("deberta_xxl_mnli_lora", 8, 5, 1e-4, 8, 256, 0.0, 0.15),
    ("deberta_xxl_qnli_lora", 6, 8, 1e-4, 8, 512, 0.01, 0.1),
    ("deberta_xxl_rte_lora", 4, 11, 2e-4, 8, 320, 0.01, 0.2),
]


def test_glue_configs_hold_the_papers_hyperparameters():
    from lorakit.train.config import load_config

    folder = Path(__file__).resolve().parents[2] / "configs" / "glue"
    for name, batch, epochs, lr, alpha, length, decay, dropout in PAPER:
        cfg = load_config(folder / f"{name}.json")
        got = (cfg.training.batch_size, cfg.training.epochs, cfg.optimizer.lr, cfg.method.lora_alpha,
               cfg.data.max_length, cfg.optimizer.weight_decay, cfg.model.classifier_dropout, cfg.method.r)
        assert got == (batch, epochs, pytest.approx(lr), alpha, length, decay, dropout, 8), name
    tasks = ("mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb")
    for kind in ("roberta_base_{}_lora", "roberta_large_{}_lora", "deberta_xxl_{}_lora", "roberta_base_{}_full"):
        assert all((folder / f"{kind.format(t)}.json").is_file() for t in tasks), kind
    full = load_config(folder / "roberta_base_rte_full.json")
    got = (full.method.name, full.optimizer.lr, full.training.batch_size, full.training.epochs)
    assert got == ("full", 2e-5, 16, 10)


def test_glue_configs_adapt_query_and_value_of_their_model_family(kit):
    import json

    from lorakit.train.build import build_configured_model

    folder = Path(__file__).resolve().parents[2] / "configs" / "glue"
    paths = sorted(folder.glob("roberta_*.json")) + sorted(folder.glob("deberta_xxl_*.json"))
    assert len(paths) == 41
    for path in paths:
        raw = json.loads(path.read_text())
        family = "deberta" if raw["model"]["name_or_path"].startswith("microsoft/deberta") else "roberta"
        model_section = {k: v for k, v in raw["model"].items() if k not in ("name_or_path", "init_from")}
        raw["model"] = {**model_section, "architecture": TINY[family], "tokenizer": str(kit.MINILM)}
        model = build_configured_model(validate(raw))
        trainable = sorted({n.rsplit(".", 2)[0].rsplit(".", 1)[-1] for n, p in model.named_parameters()
                            if p.requires_grad and "lora_" in n})
        if raw["method"]["name"] == "full":
            assert all(p.requires_grad for p in model.parameters()), path.name
        else:
            expected = ["query_proj", "value_proj"] if family == "deberta" else ["query", "value"]
            assert trainable == expected, path.name
        if path.stem.endswith("_from_mnli"):  # roberta_large_rte_lora_from_mnli starts from roberta_large_mnli_lora
            family_and_size = "_".join(path.stem.split("_")[:2])
            assert json.loads(path.read_text())["model"]["init_from"] == f"runs/{family_and_size}_mnli_lora"
