"""Experiment configuration: a JSON file, validated completely before any work starts.

A config is plain data: nested JSON objects, one per section (``model``, ``method``, ``task``,
``data``, ``generation``, ``optimizer``, ``schedule``, ``training``, ``evaluation``, ``logging``). Every key not given
takes its default from ``SCHEMA`` below, which is also the reference of what each key means.

``validate(raw)`` checks everything at once: unknown keys (with a "did you mean" hint), wrong types,
out-of-range values and cross-field rules. It raises one ``ConfigError`` listing every problem with
its JSON path, e.g. ``$.training.batch_size: must be an integer >= 1, got 0``. On success it returns
the resolved config (defaults filled in) as nested ``Section`` dicts, readable as
``cfg.training.batch_size`` and JSON-serialisable as is.

``apply_overrides(raw, ["training.max_steps=100", "method.r=4"])`` implements ``--set``: the value is
parsed as JSON when it parses (numbers, booleans, null, lists, objects) and taken as a string otherwise.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.errors import LorakitError
from lorakit.methods import METHODS

from ..layers import BIAS_MODES
from .tasks import TASK_REGISTRY, task_names

__all__ = [
    "ConfigError", "Section", "SCHEMA", "load_config", "validate", "apply_overrides", "defaults",
    "config_diff",
]


class ConfigError(LorakitError, ValueError):
    """One or more problems in a config; ``problems`` holds ``(json_path, message)`` pairs."""

    exit_code = 2  # a usage/config error

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        n = len(self.problems)
        lines = [f"{n} problem{'s' if n != 1 else ''} in the config{where}:"]
        lines += [f"  {path}: {msg}" for path, msg in self.problems]
        super().__init__("\n".join(lines))


class Section(dict):
    """A dict whose keys also read as attributes (``cfg.training.lr``); still a plain dict for JSON."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# --------------------------------------------------------------------------------------------------
# The schema. A Field says what a key may hold; a dict of Fields is a section.
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """One config key. ``kind``: 'int', 'float', 'bool', 'bool_or_choice' (true, false or one of ``choices``),
    'str', 'str_list', 'str_or_str_list', 'dict' (free-form object), 'int_pair' or 'section' (then ``schema``
    holds the sub-fields). ``choices``: the allowed values, or a function returning them (a registry's names,
    read when a config is validated)."""

    kind: str
    default: Any = None
    nullable: bool = False
    choices: tuple | Callable[[], tuple] | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    schema: dict[str, Field] | None = None
    help: str = ""

    def allowed(self) -> tuple | None:
        """The allowed values (``choices``, called when it is a function), or None: any value of the kind."""
        return self.choices() if callable(self.choices) else self.choices


def _section(help_text: str = "", nullable: bool = False, **fields: Field) -> Field:
    return Field("section", schema=fields, nullable=nullable, help=help_text)


SCHEMA: dict[str, Field] = {
    "name": Field("str", None, nullable=True, help="a label for the run, shown in results.json"),
    "model": _section(
        "the pretrained model: an encoder with a classification head (NLU tasks), or a causal language model "
        "(NLG and language-modelling tasks, chosen by the task)",
        name_or_path=Field(
            "str", None, nullable=True,
            help="a local folder, a Hugging Face name (needs the cache or internet) or "
                 "'package:PKG/SUBDIR' for a model shipped inside an installed Python package",
        ),
        architecture=Field(
            "dict", None, nullable=True,
            help="instead of name_or_path: a transformers config as a dict (e.g. a tiny BertConfig "
                 "with model_type 'bert'), randomly initialised from training.seed; for tests",
        ),
        tokenizer=Field("str", None, nullable=True, help="tokenizer folder/name; default: name_or_path"),
        pooling=Field(
            "str", "mean", choices=("mean", "cls", "pooler"),
            help="how the head reads the encoder: mean of the token states, the [CLS] state, or the "
                 "model's pooler output (untrained in sentence-transformers models: prefer 'mean')",
        ),
        classifier_dropout=Field("float", 0.1, min=0.0, max=1.0, max_exclusive=True),
        init_from=Field(
            "str", None, nullable=True,
            help="a workdir (its final model: the checkpoints its results.json averaged, else the latest) or one "
                 "checkpoint folder of another run whose LoRA weights, and the head when its shape matches, "
                 "initialise this run before training (the paper's MNLI -> MRPC/RTE/STS-B)",
        ),
        quantization=Field(
            "str", None, nullable=True, choices=("nf4",),  # lorakit.quant.QUANTIZATIONS
            help="'nf4': store the frozen linear weights in 4-bit NF4 (QLoRA; method 'lora' only; the head and "
                 "method.modules_to_save stay dense); null: keep them as loaded",
        ),
    ),
    "method": _section(
        "how the model is fine-tuned: 'lora' (adapters; pretrained weights frozen), 'full' (every "
        "weight trains), 'head_only' (only the classification head trains) or one of the LoRA paper's "
        "baselines: 'ft_top2' (last two blocks + head), 'bitfit' (biases + head), 'adapter_houlsby', "
        "'adapter_pfeiffer', 'prefix_embed', 'prefix_layer' (see lorakit.methods; LoRA + BitFit is 'lora' "
        "with bias 'all'), 'prune' (magnitude pruning of the encoder's linear weights, then fine-tuning), "
        "'distill' (a student with fewer blocks learns from the labels and from a teacher run)",
        name=Field("str", "lora", choices=("lora", *(m for m in METHODS if m != "lora")),
                   help="the fine-tuning method; the baselines are described in docs/experiments.md, "
                        "section 'Baselines of the LoRA paper'"),
        r=Field("int", 8, min=1, help="LoRA rank"),
        lora_alpha=Field("float", 16.0, min=0.0, min_exclusive=True, help="LoRA scaling is alpha / r"),
        lora_dropout=Field("float", 0.0, min=0.0, max=1.0, max_exclusive=True),
        target_modules=Field(
            "str_or_str_list", ["query", "value"],
            help="module names (full dotted name or suffix after a dot) or one regex string",
        ),
        exclude_modules=Field("str_or_str_list", [], help="names never adapted"),
        bias=Field("str", "none", choices=BIAS_MODES),
        modules_to_save=Field(
            "str_list", [],
            help="modules trained fully and saved with the adapter, besides the task head (the classifier "
                 "of NLU tasks always trains)",
        ),
        fan_in_fan_out=Field("bool", False),
        enable_lora=Field(
            "dict", {},
            help="{regex: [bool, ...]}: adapt only the chosen equal slices of fused projections, e.g. "
                 "{\"c_attn\": [true, false, true]} adapts GPT-2's query and value and not its key",
        ),
        adapter_size=Field("int", 64, min=1, help="adapter_houlsby/adapter_pfeiffer: the bottleneck m"),
        prefix_length=Field("int", 10, min=0, help="prefix_embed/prefix_layer: l_p, prefix positions"),
        infix_length=Field("int", 0, min=0, help="prefix_embed: l_i, tokens after the input's last token"),
        prefix_hidden=Field(
            "int", 512, nullable=True, min=1,
            help="prefix_layer: hidden size of the reparameterisation MLP used in training and dropped "
                 "after; null trains the prefix activations directly",
        ),
        sparsity=Field("float", 0.5, min=0.0, max=1.0, max_exclusive=True,
                       help="prune: the fraction of each encoder weight matrix set to zero (by magnitude)"),
        prune_schedule=Field("str", "one_shot", choices=("one_shot", "gradual"),
                             help="prune: all at once before training, or gradually (cubic schedule of Zhu & "
                                  "Gupta) up to prune_end; the remaining weights fine-tune throughout"),
        prune_end=Field("float", 0.5, min=0.0, max=1.0, min_exclusive=True,
                        help="prune, gradual: the fraction of the training steps after which the target "
                             "sparsity is reached"),
        teacher=Field("str", None, nullable=True,
                      help="distill: the teacher, a finished run's workdir (its latest checkpoint) of the same task"),
        student_layers=Field("int", None, nullable=True, min=1,
                             help="distill: the student keeps the first N transformer blocks of model.name_or_path "
                                  "(null: all of them)"),
        temperature=Field("float", 2.0, min=0.0, min_exclusive=True,
                          help="distill: softmax temperature T of the soft targets (the KL term is scaled by T^2)"),
        distill_alpha=Field("float", 0.5, min=0.0, max=1.0,
                            help="distill: weight of the teacher term; 1 - distill_alpha weighs the task loss"),
    ),
    "task": _section(
        "what is learned",
        name=Field(
            "str", "quickstart",
            choices=task_names,
            help="a task plugin from lorakit.train.tasks",
        ),
    ),
    "data": _section(
        "where the examples come from and how they are cut",
        dir=Field("str", None, nullable=True, help="data folder; --data overrides it"),
        max_length=Field("int", 128, min=2, help="tokens per example after truncation"),
        random_length=Field(
            "int_pair", None, nullable=True,
            help="[min, max]: each training batch is cut to a length drawn uniformly from this range",
        ),
        max_train_examples=Field("int", None, nullable=True, min=1, help="use only the first N"),
        max_eval_examples=Field("int", None, nullable=True, min=1),
        train_split=Field("str", "train"),
        eval_split=Field("str", "dev"),
        doc_stride=Field("int", 128, min=0, help="squad, nq: context tokens shared by consecutive windows"),
        max_query_length=Field("int", 64, nullable=True, min=1,
                               help="squad, nq: questions are cut to this many tokens (null: never cut)"),
        max_answer_length=Field("int", 30, min=1, help="squad, nq: the longest predicted answer, in tokens"),
        keep_html=Field("bool", False, help="nq: keep the HTML markup tokens (`<P>`, `</Table>` ...) in the context"),
        prompt_template=Field(
            "str", "{context}\n",
            help="e2e/webnlg/dart: the text the model continues; {context} is the linearised input (the "
                 "completion is the reference followed by the EOS token)",
        ),
        max_prompt_length=Field("int", 256, min=1, help="e2e/webnlg/dart: prompts are cut to this many tokens"),
        packing=Field(
            "bool", False,
            help="causal-LM tasks (e2e, webnlg, dart, language modelling, sft): each training micro-batch's examples "
                 "are packed into rows of at most max_length tokens, without padding; positions restart and "
                 "attention stays inside each example, so the per-example losses are those of the padded batch. "
                 "Evaluation and generation stay unpacked",
        ),
        truncate=Field(
            "bool", False,
            help="sft, packing: cut an example longer than max_length to its first max_length tokens instead of "
                 "stopping with an error that names it",
        ),
        stride=Field(
            "int", None, nullable=True, min=1,
            help="language modelling: evaluation windows of max_length tokens advance by this many (scored) "
                 "tokens; default max_length // 2",
        ),
    ),
    "generation": _section(
        "decoding for the NLG tasks (e2e, webnlg, dart): the LoRA paper's beam search by default",
        strategy=Field("str", "beam", choices=("beam", "greedy", "sample")),
        num_beams=Field("int", 10, min=1),
        length_penalty=Field("float", 0.8, help="beam score = log-probability / length ** length_penalty"),
        no_repeat_ngram_size=Field("int", 4, min=0, help="0: off"),
        max_new_tokens=Field("int", 64, min=1),
        min_new_tokens=Field("int", 0, min=0),
        temperature=Field("float", 1.0, min=0.0, min_exclusive=True, help="sample only"),
        top_k=Field("int", 0, min=0, help="sample only; 0: off"),
        top_p=Field("float", 1.0, min=0.0, max=1.0, min_exclusive=True, help="sample only"),
        repetition_penalty=Field("float", 1.0, min=0.0, min_exclusive=True, help="1.0: off"),
        stop=Field("str_list", ["\n\n"], help="generation also ends at any of these strings (not kept)"),
        eos_token=Field("str", None, nullable=True, help="the end-of-text token; default: the tokenizer's"),
        metrics=Field(
            "str", "all", choices=("all", "fast"),
            help="'all': the task's official metric set (E2E: BLEU, NIST, METEOR, ROUGE-L, CIDEr; needs Java); "
                 "'fast': BLEU and NIST only (no Java), e.g. for frequent dev evaluations",
        ),
    ),
    "optimizer": _section(
        "AdamW over the trainable parameters only",
        name=Field("str", "adamw", choices=("adamw",)),
        lr=Field("float", 1e-4, min=0.0, min_exclusive=True),
        weight_decay=Field("float", 1e-3, min=0.0),
        betas=Field("float_pair", [0.9, 0.999]),
        eps=Field("float", 1e-8, min=0.0, min_exclusive=True),
        no_decay=Field(
            "str_list", ["bias", "LayerNorm.weight", "layer_norm.weight"],
            help="parameter-name suffixes excluded from weight decay",
        ),
    ),
    "schedule": _section(
        "learning-rate schedule: warmup from 0, then decay to 0 at the last step",
        name=Field("str", "linear", choices=("linear", "cosine", "constant")),
        warmup_steps=Field("int", 4000, min=0),
        warmup_ratio=Field(
            "float", None, nullable=True, min=0.0, max=1.0,
            help="if set, warmup = ratio * total steps (replaces warmup_steps)",
        ),
    ),
    "training": _section(
        "the loop",
        batch_size=Field(
            "int", 32, min=1,
            help="global batch per optimizer step (all processes and accumulation steps together)",
        ),
        grad_accumulation=Field("int", 1, min=1, help="micro-batches per optimizer step"),
        epochs=Field("float", 3.0, min=0.0, min_exclusive=True),
        max_steps=Field("int", None, nullable=True, min=1, help="if set, replaces epochs"),
        max_grad_norm=Field("float", 1.0, nullable=True, min=0.0, min_exclusive=True),
        label_smoothing=Field("float", 0.0, min=0.0, max=1.0, max_exclusive=True),
        seed=Field("int", 42, min=0),
        deterministic=Field("bool", False, help="torch deterministic algorithms (slower on GPU)"),
        gradient_checkpointing=Field(
            "bool_or_choice", False, choices=("offload",),
            help="recompute each transformer block's activations in backward instead of keeping them: "
                 "less memory for about one more forward pass per step (Hugging Face models); 'offload' also "
                 "moves the saved block inputs to pinned CPU memory (non-blocking copies) while the model runs on "
                 "a GPU, and is plain checkpointing on the CPU",
        ),
        precision=Field(
            "str", "auto", choices=("auto", "fp32", "bf16", "fp16"),
            help="autocast on GPU; on CPU training runs in fp32 (with a note if bf16/fp16 was asked)",
        ),
        device=Field("str", "auto", choices=("auto", "cpu", "cuda")),
        checkpoint_every=Field("int", 1000, min=1, help="optimizer steps between checkpoints"),
        keep_last=Field("int", 5, min=1, help="checkpoints kept on disk"),
        strategy=Field(
            "str", "ddp", choices=("ddp", "fsdp"),
            help="how several processes (torchrun) share the work; ignored for one process",
        ),
        early_stopping=_section(
            "stop when the dev metric has not improved for `patience` evaluations",
            nullable=True,
            patience=Field("int", 5, min=1),
            min_delta=Field("float", 0.0, min=0.0),
        ),
    ),
    "evaluation": _section(
        "dev evaluation",
        every=Field("int", 50, min=1, help="optimizer steps between dev evaluations"),
        batch_size=Field("int", 64, min=1),
        metric=Field("str", None, nullable=True, help="metric for early stopping/best; default: task's"),
        average_last=Field(
            "int", 5, min=1, help="final evaluation on the average of the last K checkpoints (1 = last)",
        ),
        baseline=Field("bool", True, help="evaluate the untrained model before step 1"),
    ),
    "logging": _section(
        "what is reported",
        every=Field("int", 10, min=1, help="optimizer steps between metrics.jsonl lines"),
        progress_bar=Field("bool", True),
        tensorboard=Field("bool", True),
        plots=Field("bool", True),
    ),
}


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------

def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _range_text(f: Field) -> str:
    parts = []
    if f.min is not None:
        parts.append(f"{'>' if f.min_exclusive else '>='} {f.min:g}")
    if f.max is not None:
        parts.append(f"{'<' if f.max_exclusive else '<='} {f.max:g}")
    return " and ".join(parts)


def _check_range(f: Field, v: float) -> bool:
    if f.min is not None and (v < f.min or (f.min_exclusive and v == f.min)):
        return False
    if f.max is not None and (v > f.max or (f.max_exclusive and v == f.max)):
        return False
    return True


def _check_field(f: Field, value: Any, path: str, problems: list[tuple[str, str]]) -> Any:
    """Return the resolved value (defaults filled in for sections); append problems on the way."""
    if value is None:
        if f.nullable:
            return None
        problems.append((path, f"must not be null (expected {_expected(f)})"))
        return None
    kind = f.kind
    if kind == "section":
        if not isinstance(value, dict):
            problems.append((path, f"must be an object, got {_type_name(value)}"))
            return None
        return _check_section(f.schema or {}, value, path, problems)
    if kind == "int":
        if not _is_int(value):
            # 3.0 is accepted as 3: JSON writers often produce floats for whole numbers
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                problems.append((path, f"must be an integer{_rng(f)}, got {value!r}"))
                return None
        if not _check_range(f, value):
            problems.append((path, f"must be an integer {_range_text(f)}, got {value!r}"))
        return value
    if kind == "float":
        if not _is_number(value):
            problems.append((path, f"must be a number{_rng(f)}, got {value!r}"))
            return None
        if not _check_range(f, value):
            problems.append((path, f"must be a number {_range_text(f)}, got {value!r}"))
        return float(value)
    if kind == "bool_or_choice":
        if not isinstance(value, bool) and value not in (f.allowed() or ()):
            problems.append((path, f"must be true, false or one of {list(f.allowed() or ())}, got {value!r}"))
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            problems.append((path, f"must be true or false, got {value!r}"))
        return value
    if kind == "str":
        if not isinstance(value, str):
            problems.append((path, f"must be a string, got {_type_name(value)} {value!r}"))
            return None
        allowed = f.allowed()
        if allowed is not None and value not in allowed:
            hint = difflib.get_close_matches(value, allowed, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            problems.append((path, f"must be one of {list(allowed)}, got {value!r}{extra}"))
        return value
    if kind in ("str_list", "str_or_str_list"):
        if kind == "str_or_str_list" and isinstance(value, str):
            return value
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            want = "a list of strings" + (" or one regex string" if kind == "str_or_str_list" else "")
            problems.append((path, f"must be {want}, got {value!r}"))
            return None
        return list(value)
    if kind == "dict":
        if not isinstance(value, dict):
            problems.append((path, f"must be an object, got {_type_name(value)}"))
            return None
        return copy.deepcopy(value)
    if kind in ("int_pair", "float_pair"):
        ok = _is_int if kind == "int_pair" else _is_number
        if not isinstance(value, list) or len(value) != 2 or not all(ok(x) for x in value):
            what = "integers" if kind == "int_pair" else "numbers"
            problems.append((path, f"must be a list of two {what} [low, high], got {value!r}"))
            return None
        return list(value)
    raise TypeError(f"unknown field kind {kind!r}")  # a bug in SCHEMA, not user input


def _rng(f: Field) -> str:
    r = _range_text(f)
    return f" {r}" if r else ""


def _expected(f: Field) -> str:
    return {"section": "an object", "int": "an integer", "float": "a number", "bool": "true or false",
            "bool_or_choice": f"true, false or one of {list(f.allowed() or ())}",
            "str": "a string", "str_list": "a list of strings", "dict": "an object"}.get(f.kind, f.kind)


def _check_section(schema: dict[str, Field], raw: dict, path: str, problems: list) -> Section:
    out = Section()
    for key in raw:
        if key not in schema:
            hint = difflib.get_close_matches(str(key), list(schema), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else f" (known keys: {', '.join(schema)})"
            problems.append((f"{path}.{key}", f"unknown key{extra}"))
    for key, f in schema.items():
        if key in raw:
            out[key] = _check_field(f, raw[key], f"{path}.{key}", problems)
        elif f.kind == "section" and not f.nullable:
            out[key] = _check_section(f.schema or {}, {}, f"{path}.{key}", problems)
        else:
            out[key] = copy.deepcopy(f.default)
    return out


def _cross_checks(cfg: Section, problems: list[tuple[str, str]]) -> None:
    """Rules that involve more than one key. Only runs on values that passed their own checks."""
    m = cfg.get("model")
    if isinstance(m, dict):
        has_name, has_arch = m.get("name_or_path") is not None, m.get("architecture") is not None
        if has_name == has_arch:
            problems.append(("$.model", "set exactly one of name_or_path (a pretrained model) or "
                                        "architecture (a config dict for a randomly initialised model)"))
        if has_arch:
            if m.get("tokenizer") is None:
                problems.append(("$.model.tokenizer", "required with model.architecture (a folder or name "
                                                      "to load the tokenizer from)"))
            if not isinstance(m["architecture"].get("model_type"), str):
                problems.append(("$.model.architecture.model_type",
                                 "required: the transformers model type, e.g. 'bert'"))
    meth = cfg.get("method")
    if isinstance(m, dict) and m.get("quantization") and isinstance(meth, dict) and meth.get("name") != "lora":
        problems.append(("$.model.quantization", f"4-bit weights are frozen: quantization trains with method 'lora' "
                                                 f"only, not {meth.get('name')!r}; set it to null"))
    if isinstance(meth, dict) and isinstance(meth.get("name"), str):
        name = meth["name"]
        if name != "lora" and meth.get("bias") not in (None, "none"):
            problems.append(("$.method.bias", f"bias {meth['bias']!r} combines BitFit with LoRA and applies to "
                                              f"method 'lora' only, not {name!r} (biases alone: 'bitfit')"))
        lp, li = meth.get("prefix_length"), meth.get("infix_length")
        if name == "prefix_layer" and _is_int(lp) and lp < 1:
            problems.append(("$.method.prefix_length", f"prefix_layer needs prefix_length >= 1, got {lp}"))
        if name == "prefix_embed" and _is_int(lp) and _is_int(li) and lp + li < 1:
            problems.append(("$.method.prefix_length", "prefix_embed needs prefix_length + infix_length >= 1"))
        if name == "distill" and not isinstance(meth.get("teacher"), str):
            problems.append(("$.method.teacher", "distill needs a teacher: the workdir of a finished run of this task"))
    d = cfg.get("data")
    if isinstance(d, dict) and isinstance(d.get("random_length"), list):
        lo, hi = d["random_length"]
        if not 1 <= lo <= hi:
            problems.append(("$.data.random_length", f"must satisfy 1 <= low <= high, got {[lo, hi]}"))
        elif isinstance(d.get("max_length"), int) and hi > d["max_length"]:
            problems.append(("$.data.random_length",
                             f"high={hi} exceeds data.max_length={d['max_length']}; raise max_length"))
    _packing_checks(cfg, problems)
    o = cfg.get("optimizer")
    if isinstance(o, dict) and isinstance(o.get("betas"), list):
        if not all(0.0 <= b < 1.0 for b in o["betas"]):
            problems.append(("$.optimizer.betas", f"both must be in [0, 1), got {o['betas']}"))
    t, e = cfg.get("training"), cfg.get("evaluation")
    if isinstance(t, dict) and isinstance(e, dict):
        k, keep = e.get("average_last"), t.get("keep_last")
        if _is_int(k) and _is_int(keep) and k > keep:
            problems.append(("$.evaluation.average_last",
                             f"averages the last {k} checkpoints but training.keep_last={keep} keeps "
                             f"fewer; raise keep_last to at least {k}"))
        b, acc = t.get("batch_size"), t.get("grad_accumulation")
        if _is_int(b) and _is_int(acc) and acc >= 1 and b % acc != 0:
            problems.append(("$.training.grad_accumulation",
                             f"must divide training.batch_size={b} (the global batch), got {acc}"))


def is_causal_lm_task(name: str) -> bool:
    """Whether registered task ``name`` trains a causal language model (``data.packing`` applies to it)."""
    entry = TASK_REGISTRY.get(name)
    return entry is not None and entry.factory().model_kind == "causal_lm"


def _packing_checks(cfg: Section, problems: list[tuple[str, str]]) -> None:
    d, task, meth = cfg.get("data"), cfg.get("task"), cfg.get("method")
    if not isinstance(d, dict) or d.get("packing") is not True:
        return
    name = task.get("name") if isinstance(task, dict) else None
    if isinstance(name, str) and name in TASK_REGISTRY and not is_causal_lm_task(name):
        causal = ", ".join(n for n in task_names() if is_causal_lm_task(n))
        problems.append(("$.data.packing", f"packs causal-LM training examples ({causal}); "
                                           f"task {name!r} is not one: set data.packing to false"))
    if d.get("random_length") is not None:
        problems.append(("$.data.packing", "packing fills rows of up to data.max_length tokens and data.random_length "
                                           "cuts every example: set one of them only"))
    method = meth.get("name") if isinstance(meth, dict) else None
    if isinstance(method, str) and method.startswith("prefix"):
        problems.append(("$.data.packing", f"method {method!r} runs through the model's KV cache, which packed rows "
                                           "cannot use: set data.packing to false"))


def validate(raw: Any, source: str | None = None) -> Section:
    """Check a whole config and return it resolved; raise one ``ConfigError`` listing every problem."""
    problems: list[tuple[str, str]] = []
    if not isinstance(raw, dict):
        raise ConfigError([("$", f"the config must be a JSON object, got {_type_name(raw)}")], source)
    cfg = _check_section(SCHEMA, raw, "$", problems)
    _cross_checks(cfg, problems)  # on the values that passed; reported in the same message
    if problems:
        raise ConfigError(problems, source)
    return cfg


def defaults() -> Section:
    """The resolved config of ``{}`` apart from the model (which has no default)."""
    problems: list[tuple[str, str]] = []
    return _check_section(SCHEMA, {}, "$", problems)


# --------------------------------------------------------------------------------------------------
# Loading and overrides
# --------------------------------------------------------------------------------------------------

def _parse_override_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(raw: dict, overrides: Iterable[str]) -> dict:
    """Return a copy of ``raw`` with each ``dotted.key=value`` applied (creating sections as needed).

    Raises ``ConfigError`` for overrides without ``=`` or that would descend into a non-object value.
    """
    out = copy.deepcopy(raw)
    problems: list[tuple[str, str]] = []
    for item in overrides:
        if "=" not in item:
            problems.append((f"--set {item}", "expected dotted.key=value, e.g. training.max_steps=100"))
            continue
        key, _, text = item.partition("=")
        parts = [p for p in key.strip().split(".")]
        if not all(parts):
            problems.append((f"--set {item}", "empty key segment"))
            continue
        node = out
        for i, p in enumerate(parts[:-1]):
            if p not in node or node[p] is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                problems.append((f"--set {item}",
                                 f"$.{'.'.join(parts[: i + 1])} is {_type_name(node[p])}, not an object"))
                break
            node = node[p]
        else:
            node[parts[-1]] = _parse_override_value(text)
    if problems:
        raise ConfigError(problems, "--set")
    return out


def read_json(path: str | Path) -> dict:
    """Read a config file: UTF-8 JSON holding an object; a syntax error is reported with line and column."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([("$", f"config file not found: {path}")], str(path))
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError([("$", f"not UTF-8 text (byte {err.start}: {err.object[err.start:err.start + 1]!r}); "
                                 "save the file as UTF-8")], str(path)) from None
    except OSError as err:
        raise ConfigError([("$", f"cannot read the file: {err.strerror or err}")], str(path)) from None
    except json.JSONDecodeError as err:
        raise ConfigError(
            [("$", f"not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}")], str(path)
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError([("$", f"the config must be a JSON object {{...}}, got {_type_name(raw)}")], str(path))
    return raw


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Section:
    """Read, override and validate a config file (or a workdir's ``config.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    raw = apply_overrides(read_json(path), overrides)
    return validate(raw, str(path))


def config_diff(a: Any, b: Any, path: str = "$") -> list[str]:
    """Human-readable differences between two resolved configs: ``['$.optimizer.lr: 0.0001 -> 0.001']``."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            out += config_diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}")
        return out
    return [] if a == b else [f"{path}: {json.dumps(a)} -> {json.dumps(b)}"]


def markdown_reference() -> str:
    """The reference table of every config key (docs/experiments.md): key, type, default, meaning."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]

    def walk(schema: dict[str, Field], prefix: str) -> None:
        for key, f in schema.items():
            if f.kind == "section":
                walk(f.schema or {}, f"{prefix}{key}.")
                continue
            notes = [f.help] if f.help else []
            if f.allowed():
                notes.append("one of " + ", ".join(f"`{c}`" for c in f.allowed()))
            if _range_text(f):
                notes.append(_range_text(f))
            if f.nullable:
                notes.append("may be null")
            meaning = "; ".join(notes).replace("|", "\\|").replace("\n", "\\n")
            default = json.dumps(f.default).replace("|", "\\|")
            rows.append(f"| `{prefix}{key}` | {f.kind} | `{default}` | {meaning} |")

    walk(SCHEMA, "")
    return "\n".join(rows) + "\n"
