"""``lorakit convert``: turn a loralib / LoRA-paper checkpoint into a PEFT-format adapter directory.

    lorakit convert gpt2_md_lora_e2e.pt --model gpt2-medium --lora-alpha 32 --output adapters/e2e
    lorakit convert roberta_base_lora_mnli.bin --model roberta-base --task seq-cls --num-labels 3 \
        --lora-alpha 16 --output adapters/mnli

``--model`` is a Hugging Face model name or a local folder holding its ``config.json``; only the
architecture is built (from the config, no weights are downloaded or needed).
"""

from __future__ import annotations

import argparse
import sys

_AUTO_CLASSES = {
    "causal-lm": "AutoModelForCausalLM",
    "seq-cls": "AutoModelForSequenceClassification",
    "base": "AutoModel",
}


def build_model_from_config(name_or_path: str, task: str = "causal-lm", num_labels: int | None = None):
    """The architecture of ``name_or_path`` with random weights (only its module layout is used)."""
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
    return getattr(transformers, _AUTO_CLASSES[task]).from_config(config)


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

    from .io import convert_loralib_checkpoint

    enable = None
    if args.enable_lora:
        enable = [flag.strip() in ("1", "true", "True") for flag in args.enable_lora.split(",")]
    model = build_model_from_config(args.model, args.task, args.num_labels)
    try:
        summary = convert_loralib_checkpoint(args.checkpoint, model, args.lora_alpha, args.output, enable_lora=enable,
                                             base_model_name_or_path=args.model)
    except (ValueError, FileNotFoundError) as err:
        print(f"lorakit convert: {err}", file=sys.stderr)
        return 2
    ranks = sorted(set(summary["ranks"].values()))
    print(f"wrote {args.output}: {len(summary['modules'])} LoRA modules, ranks {ranks}, "
          f"modules_to_save {summary['modules_to_save'] or 'none'}")
    if summary["ignored_keys"]:
        print(f"ignored {len(summary['ignored_keys'])} non-LoRA keys inside adapted modules "
              f"(e.g. {summary['ignored_keys'][:3]})")
    return 0
