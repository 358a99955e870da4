"""The config schema: every key of an experiment config, its type, default, range and meaning.

``SCHEMA`` is the reference ``lorakit.train.config`` validates against and ``markdown_reference`` prints
into docs/experiments.md. Task and method names come from their registries, read when a config is
validated, so a task registered later is accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lorakit.methods import METHODS

from ..layers import BIAS_MODES
from .tasks import task_names

__all__ = ["Field", "SCHEMA"]


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
        "'distill' (a student with fewer blocks learns from the labels and from a teacher: a run or a model)",
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
                      help="distill: the teacher: a finished run's workdir (its latest checkpoint) of the same "
                           "task, or a pretrained model path or name whose head fits the task (a *ForSequence"
                           "Classification with the task's labels, a *ForCausalLM / *ForMaskedLM for LM tasks)"),
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
        fused_loss=Field(
            "bool_or_choice", "auto", choices=("auto",),
            help="causal-LM tasks (e2e, webnlg, dart, language modelling, sft): the training loss through "
                 "lorakit.causal_lm_loss, which never materialises the (batch, seq, vocab) logits and equals the "
                 "model's own loss. 'auto': fused where the model allows it (a supported Hugging Face causal LM, "
                 "plain or under DDP; not under FSDP, whose root forward gathers the head), else the model's "
                 "logits; true: fused or an error before training that names the model class and why; false: "
                 "always the model's logits",
        ),
        loss_chunk_size=Field(
            "int", None, nullable=True, min=1,
            help="causal-LM tasks, fused loss: label tokens per chunk of the head (the memory of one chunk's logits "
                 "is chunk x vocab); null: lorakit.linear_cross_entropy's default",
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
