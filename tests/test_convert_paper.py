"""``lorakit convert`` on every layout the LoRA paper's code writes, and refusals that name the real cause.

The paper's NLG script (microsoft/LoRA, examples/NLG/src/gpt2_ft.py) saves
``{'model_state_dict': lora.lora_state_dict(model)}`` every ``save_interval`` steps and, at the end of
training, ``{'model_state_dict': model.state_dict()}`` of its ``GPT2LMModel`` (src/model.py): Hugging
Face GPT-2's key names under ``transformer.`` plus ``transformer.h.N.attn.bias`` (a causal-mask buffer,
1 x 1 x n_ctx x n_ctx), ``c_attn`` as a loralib ``MergedLinear`` over q, k, v with ``enable_lora``
[True, False, True] (``lora_A`` 2r x hidden, ``lora_B`` 2 hidden x r) and ``lm_head.decoder.weight``
tied to ``transformer.wte.weight``. Trained with DDP, every key starts with ``module.``.
``paper_state_dict`` below re-creates that layout (key names and dict structure) from a tiny GPT-2.
"""

from __future__ import annotations

import copy
import warnings

import peft
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    RobertaConfig,
    RobertaForCausalLM,
    RobertaForSequenceClassification,
)

import lorakit
from lorakit.convert import main as convert_main
from lorakit.errors import LorakitError
from lorakit.io import CheckpointConversionError

IDS = torch.tensor([[1, 5, 7, 9, 2, 3], [4, 4, 8, 1, 0, 6]])
RANK = 4


def tiny_gpt2(n_embd: int = 32, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=n_embd, n_head=2, vocab_size=100, n_positions=64, bos_token_id=0,
                     eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


def paper_lora(model: GPT2LMHeadModel, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random loralib c_attn factors for every block: A (2r, hidden), B (2 hidden, r)."""
    g = torch.Generator().manual_seed(seed)
    hidden = model.config.n_embd
    state = {}
    for i in range(model.config.n_layer):
        state[f"transformer.h.{i}.attn.c_attn.lora_A"] = torch.randn(2 * RANK, hidden, generator=g)
        state[f"transformer.h.{i}.attn.c_attn.lora_B"] = torch.randn(2 * hidden, RANK, generator=g)
    return state


def paper_state_dict(model: GPT2LMHeadModel, lora: dict[str, torch.Tensor], ddp: bool = False) -> dict:
    """What gpt2_ft.py saves at the end of training for a GPT2LMModel holding ``model``'s weights."""
    state = {}
    n_ctx = model.config.n_positions
    for key, value in model.state_dict().items():
        if key == "lm_head.weight":
            continue
        state[key] = value
        if key.endswith("attn.c_attn.weight"):
            block = key.removesuffix(".c_attn.weight")
            state[f"{block}.bias"] = torch.tril(torch.ones(n_ctx, n_ctx)).view(1, 1, n_ctx, n_ctx)
    state.update(lora)
    state["lm_head.decoder.weight"] = state["transformer.wte.weight"]  # tied: the same tensor
    if ddp:
        state = {f"module.{k}": v for k, v in state.items()}
    return {"model_state_dict": state}


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def reference_logits(model: GPT2LMHeadModel, lora: dict[str, torch.Tensor], alpha: float) -> torch.Tensor:
    """The paper model's outputs, by loralib's MergedLinear arithmetic merged into GPT-2's weights.

    Its grouped product gives q's update B[:hidden] @ A[:r] and v's B[hidden:] @ A[r:], times alpha / r;
    GPT-2's c_attn is a Conv1D, its weight (hidden, 3 hidden) holds q, k, v as column blocks.
    """
    merged = copy.deepcopy(model)
    hidden = model.config.n_embd
    with torch.no_grad():
        for i, block in enumerate(merged.transformer.h):
            a = lora[f"transformer.h.{i}.attn.c_attn.lora_A"]
            b = lora[f"transformer.h.{i}.attn.c_attn.lora_B"]
            block.attn.c_attn.weight[:, :hidden] += (alpha / RANK) * (b[:hidden] @ a[:RANK]).T
            block.attn.c_attn.weight[:, 2 * hidden:] += (alpha / RANK) * (b[hidden:] @ a[RANK:]).T
    return logits(merged)


@pytest.mark.parametrize("ddp", [False, True])
def test_full_end_of_training_checkpoint_converts_to_the_paper_models_outputs(tmp_path, ddp):
    model = tiny_gpt2()
    lora = paper_lora(model)
    torch.save(paper_state_dict(model, lora, ddp=ddp), tmp_path / "model.26289.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # equal base weights: no warning
        summary = lorakit.convert_loralib_checkpoint(tmp_path / "model.26289.pt", model, lora_alpha=32,
                                                     output_dir=tmp_path / "adapter")
    assert summary["modules_to_save"] == []  # the tied lm_head.decoder is a base weight, not a trained head
    assert summary["ignored_keys"] == ["transformer.h.0.attn.bias", "transformer.h.1.attn.bias"]
    assert summary["base_weights"]["compared"] and summary["base_weights"]["max_abs_diff"] == 0.0
    assert summary["base_weights"]["base_keys"] == len(model.state_dict())  # lm_head.weight as lm_head.decoder
    files = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert sorted(files) == sorted(f"base_model.model.transformer.h.{i}.attn.c_attn.lora_{p}.weight"
                                   for i in range(2) for p in "AB")
    expected = reference_logits(model, lora, alpha=32)
    assert not torch.allclose(expected, logits(model))  # the LoRA weights change the outputs
    peft_model = peft.PeftModel.from_pretrained(copy.deepcopy(model), str(tmp_path / "adapter")).eval()
    torch.testing.assert_close(logits(peft_model), expected)
    torch.testing.assert_close(logits(lorakit.load_adapter(copy.deepcopy(model), tmp_path / "adapter")), expected)


def test_lora_only_periodic_checkpoint_gives_the_same_adapter(tmp_path):
    model = tiny_gpt2()
    lora = paper_lora(model)
    torch.save({"model_state_dict": lora}, tmp_path / "model.500.pt")
    torch.save(paper_state_dict(model, lora), tmp_path / "model.26289.pt")
    lorakit.convert_loralib_checkpoint(tmp_path / "model.500.pt", model, 32, tmp_path / "periodic")
    lorakit.convert_loralib_checkpoint(tmp_path / "model.26289.pt", model, 32, tmp_path / "final")
    periodic = load_file(str(tmp_path / "periodic" / "adapter_model.safetensors"))
    final = load_file(str(tmp_path / "final" / "adapter_model.safetensors"))
    assert periodic.keys() == final.keys()
    for key in periodic:
        torch.testing.assert_close(periodic[key], final[key], rtol=0, atol=0)


def test_base_weights_that_differ_warn_naming_the_largest_difference(tmp_path):
    model = tiny_gpt2()
    saved = paper_state_dict(model, paper_lora(model))
    state = saved["model_state_dict"]
    state["transformer.h.1.mlp.c_fc.weight"] = state["transformer.h.1.mlp.c_fc.weight"] + 0.25
    state["transformer.ln_f.bias"] = state["transformer.ln_f.bias"] + 0.01
    torch.save(saved, tmp_path / "ck.pt")
    with pytest.warns(UserWarning, match=r"largest difference 0\.25 in transformer\.h\.1\.mlp\.c_fc\.weight"):
        summary = lorakit.convert_loralib_checkpoint(tmp_path / "ck.pt", model, 32, tmp_path / "out")
    assert summary["base_weights"]["max_diff_key"] == "transformer.h.1.mlp.c_fc.weight"


def test_cli_compares_base_weights_when_the_model_folder_has_them(tmp_path, capsys):
    model = tiny_gpt2()
    model.save_pretrained(tmp_path / "with_weights")
    model.config.save_pretrained(tmp_path / "config_only")
    saved = paper_state_dict(model, paper_lora(model), ddp=True)
    saved["model_state_dict"]["module.transformer.wpe.weight"] = saved["model_state_dict"][
        "module.transformer.wpe.weight"] * 2
    torch.save(saved, tmp_path / "ck.pt")
    args = [str(tmp_path / "ck.pt"), "--lora-alpha", "32", "--output"]
    assert convert_main(args + [str(tmp_path / "a"), "--model", str(tmp_path / "with_weights")]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "in transformer.wpe.weight" in err
    assert convert_main(args + [str(tmp_path / "b"), "--model", str(tmp_path / "config_only")]) == 0
    out = capsys.readouterr().out
    assert "values not compared (--model has no weight files)" in out


# ----------------------------------------------------------------------------- refusals naming the cause
def test_another_hidden_size_says_so_with_shapes(tmp_path, capsys):
    medium = tiny_gpt2(n_embd=48)
    torch.save({"model_state_dict": paper_lora(medium)}, tmp_path / "ck.pt")
    small = tiny_gpt2(n_embd=32)
    with pytest.raises(CheckpointConversionError, match=r"hidden sizes differ.*\(8, 48\).*\(32, 96\)") as err:
        lorakit.convert_loralib_checkpoint(tmp_path / "ck.pt", small, 32, tmp_path / "out")
    assert "slices" not in str(err.value)
    assert not (tmp_path / "out").exists()
    # the full checkpoint is refused on its base weights' shapes when its LoRA keys happen to fit
    full = paper_state_dict(medium, paper_lora(small))
    torch.save(full, tmp_path / "full.pt")
    with pytest.raises(CheckpointConversionError, match=r"transformer\.wte\.weight has shape \(100, 48\).*\(100, 32\)"):
        lorakit.convert_loralib_checkpoint(tmp_path / "full.pt", small, 32, tmp_path / "out")
    small.config.save_pretrained(tmp_path / "small")
    assert convert_main([str(tmp_path / "ck.pt"), "--model", str(tmp_path / "small"), "--lora-alpha", "32",
                         "--output", str(tmp_path / "out")]) == 2
    assert "hidden sizes differ" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_fused_slices_name_the_option_for_the_context(tmp_path, capsys):
    model = tiny_gpt2()
    g = torch.Generator().manual_seed(0)
    # one adapted slice of c_attn's three (loralib enable_lora=[True, False, False]): not guessed
    state = {"transformer.h.0.attn.c_attn.lora_A": torch.randn(RANK, 32, generator=g),
             "transformer.h.0.attn.c_attn.lora_B": torch.randn(32, RANK, generator=g)}
    with pytest.raises(CheckpointConversionError, match=r"adapts 1 of the 3 slices.*enable_lora=\[True, False, Fa"):
        lorakit.convert_loralib_checkpoint(state, model, 32, tmp_path / "out")
    with pytest.raises(CheckpointConversionError, match="adapts 1 of the 3 slices"):
        lorakit.convert_loralib_checkpoint(state, model, 32, tmp_path / "out", enable_lora=[True, True, False])
    summary = lorakit.convert_loralib_checkpoint(state, model, 32, tmp_path / "out", enable_lora=[False, True, False])
    assert list(summary["enable_lora"].values()) == [[False, True, False]]
    model.config.save_pretrained(tmp_path / "cfg")
    torch.save(state, tmp_path / "ck.pt")
    code = convert_main([str(tmp_path / "ck.pt"), "--model", str(tmp_path / "cfg"), "--lora-alpha", "32",
                         "--output", str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert code == 2 and "--enable-lora 1,0,0" in err and "enable_lora" not in err


def _roberta(num_labels: int, cls=RobertaForSequenceClassification):
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=70, num_labels=num_labels)
    return cls(cfg).eval()


def _roberta_lora_with_classifier(num_labels: int) -> dict[str, torch.Tensor]:
    trained = _roberta(num_labels)
    g = torch.Generator().manual_seed(2)
    state = {k: v for k, v in trained.state_dict().items() if k.startswith("classifier.")}
    for i in range(2):
        for name in ("query", "value"):
            path = f"roberta.encoder.layer.{i}.attention.self.{name}"
            state[f"{path}.lora_A"] = torch.randn(RANK, 32, generator=g)
            state[f"{path}.lora_B"] = torch.randn(32, RANK, generator=g)
    return state


def test_classifier_of_another_label_count_says_shapes_and_num_labels(tmp_path, capsys):
    torch.save(_roberta_lora_with_classifier(3), tmp_path / "mnli.bin")
    with pytest.raises(CheckpointConversionError,
                       match=r"classifier\.out_proj\.weight' has shape \(3, 32\).*\(2, 32\).*num_labels=3"):
        lorakit.convert_loralib_checkpoint(tmp_path / "mnli.bin", _roberta(2), 16, tmp_path / "out")
    _roberta(2).config.save_pretrained(tmp_path / "cfg")
    code = convert_main([str(tmp_path / "mnli.bin"), "--model", str(tmp_path / "cfg"), "--task", "seq-cls",
                         "--num-labels", "2", "--lora-alpha", "16", "--output", str(tmp_path / "out")])
    assert code == 2 and "--num-labels 3" in capsys.readouterr().err
    code = convert_main([str(tmp_path / "mnli.bin"), "--model", str(tmp_path / "cfg"), "--task", "seq-cls",
                         "--num-labels", "3", "--lora-alpha", "16", "--output", str(tmp_path / "out")])
    assert code == 0 and (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_sequence_classification_file_without_task_seq_cls_is_hinted(tmp_path, capsys):
    torch.save(_roberta_lora_with_classifier(3), tmp_path / "mnli.bin")
    with pytest.raises(CheckpointConversionError, match=r"'classifier' head.*RobertaForCausalLM"):
        lorakit.convert_loralib_checkpoint(tmp_path / "mnli.bin", _roberta(3, RobertaForCausalLM), 16,
                                           tmp_path / "out")
    _roberta(3).config.save_pretrained(tmp_path / "cfg")
    code = convert_main([str(tmp_path / "mnli.bin"), "--model", str(tmp_path / "cfg"), "--lora-alpha", "16",
                         "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "--task seq-cls and --num-labels 3" in err
    assert issubclass(CheckpointConversionError, LorakitError) and issubclass(CheckpointConversionError, ValueError)
