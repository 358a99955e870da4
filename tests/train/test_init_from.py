"""``model.init_from``: a run starts from another run's LoRA weights (and its head when the shapes match), as the
LoRA paper started MRPC, RTE and STS-B from the MNLI adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lorakit.train import checkpoint as ckpt
from lorakit.train.build import build_configured_model, init_from_run, seed_everything
from lorakit.train.errors import TrainingError

NLI = ("contradiction", "entailment", "neutral")
MNLI_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
               "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")


def _glue(root: Path) -> Path:
    """Tiny MNLI (3 labels) and QNLI (2 labels) folders in the GLUE layout."""
    (root / "MNLI").mkdir(parents=True)
    (root / "QNLI").mkdir(parents=True)
    for split in ("train", "dev_matched"):
        rows = [f"{i}\t{i}\t{i}e\tfiction\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tthe cat sat {i}\tit {NLI[i % 3]} sat\t"
                f"{NLI[i % 3]}\t{NLI[i % 3]}" for i in range(16)]
        (root / "MNLI" / f"{split}.tsv").write_text("\n".join([MNLI_HEADER, *rows]) + "\n", encoding="utf-8")
    for split in ("train", "dev"):
        rows = [f"{i}\tis it {i}?\t{'yes' if i % 2 else 'no'} it is {i}.\t{'entailment' if i % 2 else 'not_entailment'}"
                for i in range(16)]
        (root / "QNLI" / f"{split}.tsv").write_text("\n".join(["index\tquestion\tsentence\tlabel", *rows]) + "\n",
                                                    encoding="utf-8")
    return root


def _cfg(kit, data: Path, task: str, **sections):
    base = {"task": {"name": task}, "training": {"batch_size": 8, "max_steps": 4, "checkpoint_every": 2,
                                                 "keep_last": 3, "seed": 1},
            "evaluation": {"every": 4, "average_last": 2, "batch_size": 32, "baseline": False}}
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return kit.tiny_config(data, **base)


@pytest.fixture(scope="module")
def mnli_run(tmp_path_factory):
    """A finished LoRA run on (tiny) MNLI: checkpoints at steps 2 and 4, results averaged over both."""
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("_init_from_helpers", Path(__file__).parent / "conftest.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)  # this folder's conftest helpers (the `kit` fixture is per test)
    root = tmp_path_factory.mktemp("init_from")
    data = _glue(root / "glue")
    results = helpers.run_quiet(_cfg(SimpleNamespace(tiny_config=helpers.tiny_config), data, "mnli"), root / "mnli")
    assert results["averaged"]["checkpoints"] == [2, 4]
    return SimpleNamespace(data=data, workdir=root / "mnli")


def _fresh(cfg):
    seed_everything(cfg.training.seed, False)
    return build_configured_model(cfg)


def test_lora_weights_come_from_the_source_and_a_head_of_another_size_starts_fresh(mnli_run, kit):
    cfg = _cfg(kit, mnli_run.data, "qnli", model={"init_from": str(mnli_run.workdir)})
    notes: list[str] = []
    model, untouched = _fresh(cfg), _fresh(cfg)
    info = init_from_run(model, cfg, say=notes.append)
    # the source's final model: the average of the checkpoints its results.json reports
    source = ckpt.average_checkpoints([mnli_run.workdir / "checkpoints" / f"step-000000{s}" for s in (2, 4)])
    params = dict(model.named_parameters())
    lora = [n for n in params if "lora_" in n]
    assert lora and sorted(lora) == info["loaded"]
    for name in lora:
        assert torch.equal(params[name], source[name]), name
    assert any(not torch.equal(source[n], dict(untouched.named_parameters())[n]) for n in lora)  # it did change
    assert info["skipped"] == ["classifier.bias", "classifier.weight"]  # MNLI's 3 labels, QNLI's 2
    assert torch.equal(params["classifier.weight"], dict(untouched.named_parameters())["classifier.weight"])
    assert any("classifier.weight skipped (shape (3, 32) there, (2, 32) here" in n for n in notes)
    assert info["checkpoints"] == [str(mnli_run.workdir / "checkpoints" / f"step-000000{s}") for s in (2, 4)]


def test_a_head_of_the_same_size_is_loaded_too_and_one_checkpoint_folder_works(mnli_run, kit):
    step2 = mnli_run.workdir / "checkpoints" / "step-0000002"
    cfg = _cfg(kit, mnli_run.data, "mnli_mm", model={"init_from": str(step2)})
    model = _fresh(cfg)
    info = init_from_run(model, cfg, say=lambda _m: None)
    source = ckpt.load_model_state(step2)
    assert "classifier.weight" in info["loaded"] and info["skipped"] == []
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], source[n]) for n in source)


def test_training_from_mnli_records_the_source_and_starts_from_it(mnli_run, kit, tmp_path):
    cfg = _cfg(kit, mnli_run.data, "qnli", model={"init_from": str(mnli_run.workdir)},
               evaluation={"baseline": True}, training={"max_steps": 2, "checkpoint_every": 2})
    results = kit.run(cfg, tmp_path / "qnli")
    assert results["init_from"]["source"] == str(mnli_run.workdir)
    assert results["init_from"]["skipped"] == ["classifier.bias", "classifier.weight"]
    trained = kit.tensors(tmp_path / "qnli")
    scratch = _cfg(kit, mnli_run.data, "qnli", training={"max_steps": 2, "checkpoint_every": 2})
    kit.run(scratch, tmp_path / "scratch")
    plain = kit.tensors(tmp_path / "scratch")
    name = next(n for n in trained if "lora_B" in n)
    assert not torch.equal(trained[name], plain[name])  # same seed and data: only the start differs


def test_bad_sources_are_refused_before_the_workdir_is_touched(mnli_run, kit, tmp_path):
    empty = tmp_path / "empty_run"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "config.json").write_text("{}")
    for source, message in [(empty, r"empty_run holds no complete checkpoint; expected a run's workdir"),
                            (tmp_path / "nowhere", r"nowhere does not exist")]:
        cfg = _cfg(kit, mnli_run.data, "qnli", model={"init_from": str(source)})
        with pytest.raises(TrainingError, match=f"model.init_from: .*{message}"):
            kit.run(cfg, tmp_path / "target")
        assert not (tmp_path / "target").exists()
    other_rank = _cfg(kit, mnli_run.data, "qnli", model={"init_from": str(mnli_run.workdir)}, method={"r": 2})
    with pytest.raises(TrainingError, match=r"has shape \(4, 32\) in .* but \(2, 32\) in this model"):
        init_from_run(_fresh(other_rank), other_rank, say=lambda _m: None)
    more_modules = _cfg(kit, mnli_run.data, "qnli", model={"init_from": str(mnli_run.workdir)},
                        method={"target_modules": ["query"]})
    with pytest.raises(TrainingError, match=r"tensors of .* do not exist in this model .*target_modules"):
        init_from_run(_fresh(more_modules), more_modules, say=lambda _m: None)
    full = _cfg(kit, mnli_run.data, "mnli", method={"name": "full"}, training={"max_steps": 2})
    kit.run(full, tmp_path / "full")
    into_lora = _cfg(kit, mnli_run.data, "qnli", model={"init_from": str(tmp_path / "full")})
    with pytest.raises(TrainingError, match=r"are frozen in this run .* method 'lora' trains other tensors"):
        init_from_run(_fresh(into_lora), into_lora, say=lambda _m: None)
