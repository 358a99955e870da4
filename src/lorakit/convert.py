"""``lorakit convert``: turn a loralib / LoRA-paper checkpoint into a PEFT-format adapter directory.

    lorakit convert gpt2_md_lora_e2e.pt --model gpt2-medium --lora-alpha 32 --output adapters/e2e
    lorakit convert roberta_base_lora_mnli.bin --model roberta-base --task seq-cls --num-labels 3 \
        --lora-alpha 16 --output adapters/mnli

``--model`` is a Hugging Face model name or a local folder holding its ``config.json``. Only the
architecture is built (from the config, no weights are downloaded or needed), unless the folder also
holds the model's weights: then the base weights of a full checkpoint (the paper's end-of-training
``model.N.pt``) are compared with them, and a difference is reported.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

_AUTO_CLASSES = {
    "causal-lm": "AutoModelForCausalLM",
    "seq-cls": "AutoModelForSequenceClassification",
    "base": "AutoModel",
}
_WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")


def _has_weights(name_or_path: str) -> bool:
    folder = Path(name_or_path)
    return folder.is_dir() and any(next(folder.glob(pattern), None) for pattern in _WEIGHT_FILES)


def build_model(name_or_path: str, task: str = "causal-lm", num_labels: int | None = None):
    """(model, whether it holds real weights): the pretrained model when ``name_or_path`` is a local folder
    with weight files, else its architecture with random weights (only the module layout is used then)."""
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(name_or_path)
    except OSError as err:
        raise SystemExit(
            f"lorakit convert: cannot read the config of {name_or_path!r} ({err}). Offline, pass a local folder "
            "that holds the model's config.json"
        ) from err
    if num_labels is not None:
        config.num_labels = num_labels
    auto_class = getattr(transformers, _AUTO_CLASSES[task])
    if _has_weights(name_or_path):
        return auto_class.from_pretrained(name_or_path, config=config), True
    return auto_class.from_config(config), False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lorakit convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a .bin/.pt/.safetensors loralib-style state dict")
    parser.add_argument("--model", required=True, help="Hugging Face model name or local folder with config.json")
    parser.add_argument("--lora-alpha", type=float, required=True, help="the alpha the checkpoint was trained with")
    parser.add_argument("--output", required=True, help="directory for adapter_config.json + adapter_model.safetensors")
    parser.add_argument("--task", choices=sorted(_AUTO_CLASSES), default="causal-lm")
    parser.add_argument("--num-labels", type=int, default=None, help="classifier size for --task seq-cls")
    parser.add_argument("--enable-lora", default=None,
                        help="slices a fused projection adapts, e.g. 1,0,1 (default for GPT-2 c_attn: q and v)")
    args = parser.parse_args(argv)

    from .errors import LorakitError
    from .io import CLI_HINTS, convert_loralib_checkpoint

    enable = None
    if args.enable_lora:
        enable = [flag.strip() in ("1", "true", "True") for flag in args.enable_lora.split(",")]
    model, has_weights = build_model(args.model, args.task, args.num_labels)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = convert_loralib_checkpoint(
                args.checkpoint, model, args.lora_alpha, args.output, enable_lora=enable,
                base_model_name_or_path=args.model, compare_base_weights=has_weights, hints=CLI_HINTS)
    except (LorakitError, ValueError, FileNotFoundError) as err:
        print(f"lorakit convert: {err}", file=sys.stderr)
        return 2
    for warning in caught:
        print(f"lorakit convert: warning: {warning.message}", file=sys.stderr)
    ranks = sorted(set(summary["ranks"].values()))
    print(f"wrote {args.output}: {len(summary['modules'])} LoRA modules, ranks {ranks}, "
          f"modules_to_save {summary['modules_to_save'] or 'none'}")
    base = summary["base_weights"]
    if base["base_keys"]:
        checked = (f"equal to the model's (largest difference {base['max_abs_diff']:.3g})" if base["compared"]
                   else "shapes checked; values not compared (--model has no weight files)")
        print(f"the checkpoint holds {base['base_keys']} base-model tensors, left out of the adapter: {checked}")
    if summary["ignored_keys"]:
        print(f"ignored {len(summary['ignored_keys'])} keys the model does not have "
              f"(e.g. {summary['ignored_keys'][:3]})")
    return 0
