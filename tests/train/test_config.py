"""Config validation: every problem at once with its JSON path, overrides, defaults, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorakit.train.commands import train_main
from lorakit.train.config import ConfigError, apply_overrides, defaults, load_config, validate

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_documented_ones():
    d = defaults()
    assert d.optimizer.name == "adamw" and d.optimizer.lr == 1e-4 and d.optimizer.weight_decay == 1e-3
    assert d.schedule.name == "linear" and d.schedule.warmup_steps == 4000
    assert d.training.batch_size == 32 and d.training.checkpoint_every == 1000
    assert d.evaluation.every == 50 and d.evaluation.average_last == 5
    assert d.data.random_length is None and d.method.name == "lora"


def test_every_problem_is_listed_once_with_its_json_path(kit):
    raw = kit.tiny_raw_config(
        training={"batch_size": 0, "seed": "one", "bogus": 1},
        optimizer={"lrr": 1e-3},
        method={"name": "lora2", "r": 0, "lora_dropout": 1.5},
        data={"random_length": [8, 300]},
    )
    raw["extra_section"] = {}
    with pytest.raises(ConfigError) as info:
        validate(raw, "my.json")
    paths = [p for p, _ in info.value.problems]
    assert sorted(paths) == sorted([
        "$.training.batch_size", "$.training.seed", "$.training.bogus", "$.optimizer.lrr", "$.method.name",
        "$.method.r", "$.method.lora_dropout", "$.data.random_length", "$.extra_section",
    ])
    text = str(info.value)
    assert text.startswith("9 problems in the config in my.json:")
    assert "$.optimizer.lrr: unknown key (did you mean 'lr'?)" in text
    assert "$.method.name: must be one of ['lora', 'full', 'head_only', 'ft_top2', 'bitfit'," in text
    assert "'prefix_layer', 'prune', 'distill'], got 'lora2' (did you mean 'lora'?)" in text
    assert "$.training.batch_size: must be an integer >= 1, got 0" in text
    assert "exceeds data.max_length=32" in text


def test_wrong_types_are_named(kit):
    raw = kit.tiny_raw_config(logging={"tensorboard": "yes"}, method={"target_modules": [1, 2]})
    raw["evaluation"] = 5
    with pytest.raises(ConfigError) as info:
        validate(raw)
    problems = dict(info.value.problems)
    assert problems["$.logging.tensorboard"] == "must be true or false, got 'yes'"
    assert "list of strings or one regex string" in problems["$.method.target_modules"]
    assert problems["$.evaluation"] == "must be an object, got an integer"


def test_cross_field_rules(kit):
    raw = kit.tiny_raw_config(evaluation={"average_last": 5}, training={"keep_last": 2, "grad_accumulation": 3})
    raw["model"]["name_or_path"] = "some/model"
    with pytest.raises(ConfigError) as info:
        validate(raw)
    problems = dict(info.value.problems)
    assert "raise keep_last to at least 5" in problems["$.evaluation.average_last"]
    assert "must divide training.batch_size=8" in problems["$.training.grad_accumulation"]
    assert "exactly one of name_or_path" in problems["$.model"]


def test_model_quantization_is_nf4_or_null_and_needs_method_lora(kit):
    assert kit.tiny_config().model.quantization is None
    assert kit.tiny_config(model={"quantization": "nf4"}).model.quantization == "nf4"
    with pytest.raises(ConfigError) as info:
        validate(kit.tiny_raw_config(model={"quantization": "int3"}))
    assert "'nf4'" in dict(info.value.problems)["$.model.quantization"]
    with pytest.raises(ConfigError) as info:
        validate(kit.tiny_raw_config(model={"quantization": "nf4"}, method={"name": "full"}))
    assert "method 'lora' only, not 'full'" in dict(info.value.problems)["$.model.quantization"]


def test_set_overrides_any_field_and_parses_json(kit):
    raw = kit.tiny_raw_config()
    out = apply_overrides(raw, ["training.max_steps=3", "method.target_modules=[\"query\"]",
                                "name=hello world", "training.early_stopping.patience=2"])
    cfg = validate(out)
    assert cfg.training.max_steps == 3 and cfg.method.target_modules == ["query"]
    assert cfg.name == "hello world" and cfg.training.early_stopping.patience == 2
    assert raw["training"]["max_steps"] == 8  # the input is not modified


def test_bad_set_and_bad_json_are_config_errors(tmp_path, kit):
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        apply_overrides({}, ["training.max_steps"])
    with pytest.raises(ConfigError, match="is an integer, not an object"):
        apply_overrides({"training": {"seed": 1}}, ["training.seed.x=1"])
    bad = tmp_path / "bad.json"
    bad.write_text('{"training": {"seed": 1,}}')
    with pytest.raises(ConfigError, match="not valid JSON: .* at line 1, column"):
        load_config(bad)


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.json")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.model.name_or_path or cfg.model.architecture


def test_config_error_exits_2_and_writes_nothing(tmp_path, kit, capsys):
    config = kit.write_config(tmp_path / "c.json", kit.tiny_raw_config(training={"batch_size": -1}))
    workdir = tmp_path / "run"
    code = train_main(["--config", str(config), "--workdir", str(workdir), "--set", "optimizer.lr=-1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "$.training.batch_size" in err and "$.optimizer.lr" in err
    assert not workdir.exists()


def test_resolved_config_round_trips_through_json(kit):
    cfg = kit.tiny_config()
    assert validate(json.loads(json.dumps(cfg))) == cfg


def test_docs_reference_lists_every_config_key():
    from lorakit.train.config import SCHEMA

    def keys(schema, prefix=""):
        for k, f in schema.items():
            if f.kind == "section":
                yield from keys(f.schema, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    text = (REPO / "docs" / "experiments.md").read_text()
    missing = [k for k in keys(SCHEMA) if f"`{k}`" not in text]
    assert not missing, f"docs/experiments.md lacks {missing}; regenerate its reference table"
