"""Building a run's model: the pretrained (or randomly initialised) model of the task's kind, the
fine-tuning method that decides what trains, the optional start from another run (``model.init_from``), and
the optimizer and learning-rate schedule over what trains.

Every function reads the resolved config; none trains. ``lorakit.train.loop`` calls them in its recipe, and
``lorakit eval / generate / export / inspect`` rebuild a run's model through :func:`build_configured_model`.
"""

from __future__ import annotations

import json
import math
import os
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lorakit.pretrained import from_pretrained, note_new_mlm_head

from ..lora.config import in_modules
from . import checkpoint as ckpt
from . import distributed as D
from .config import Section
from .errors import ModelLoadError, TrainingError
from .offload import use_offloaded_checkpoints
from .tasks import task_from_config


def load_tokenizer(model_cfg: Section):
    """The tokenizer of ``model.tokenizer`` (default: ``model.name_or_path``)."""
    from transformers import AutoTokenizer

    return from_pretrained(AutoTokenizer.from_pretrained, model_cfg.tokenizer or model_cfg.name_or_path,
                            "tokenizer")


class SequenceClassifier(nn.Module):
    """An encoder with a pooling step and a linear head: ``(batch, seq)`` ids -> ``(batch, num_labels)``.

    ``pooling='mean'`` averages the last hidden states over real tokens (what sentence-transformers
    models such as all-MiniLM-L6-v2 were trained for), ``'cls'`` takes the first token, ``'pooler'`` the
    encoder's pooler output (its weights then train with the head).
    """

    def __init__(self, encoder: nn.Module, hidden_size: int, num_labels: int, pooling: str, dropout: float):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, token_level: bool = False) -> Tensor:
        """``token_level=True`` skips pooling: the head scores every token, ``(batch, seq, num_labels)``
        (span extraction: start and end scores)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        if token_level:
            return self.classifier(self.dropout(out.last_hidden_state))  # (batch, seq, num_labels)
        if self.pooling == "pooler":
            pooled = out.pooler_output
        elif self.pooling == "cls":
            pooled = out.last_hidden_state[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)  # (batch, seq, 1)
            pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.classifier(self.dropout(pooled))  # (batch, num_labels)


def build_model(model_cfg: Section, num_labels: int, kind: str = "classifier") -> nn.Module:
    """The pretrained (``name_or_path``) or randomly initialised (``architecture``) model of a task kind:
    ``"classifier"``: the encoder plus a pooling step and a linear head (:class:`SequenceClassifier`);
    ``"causal_lm"``: a causal language model with its own LM head (``AutoModelForCausalLM``, e.g. GPT-2);
    ``"masked_lm"``: a masked LM (``AutoModelForMaskedLM``: :func:`lorakit.pretrained.load_masked_lm`)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    if kind not in MODEL_KINDS:
        raise TrainingError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    if kind == "causal_lm":
        return _load_transformer(model_cfg, AutoModelForCausalLM, {})
    if kind == "masked_lm":
        return _load_transformer(model_cfg, AutoModelForMaskedLM, {"output_loading_info": True})
    with_pooler = model_cfg.pooling == "pooler"
    encoder = _load_transformer(model_cfg, AutoModel, {"add_pooling_layer": with_pooler})
    hidden = getattr(encoder.config, "hidden_size", None) or encoder.config.d_model
    return SequenceClassifier(encoder, hidden, num_labels, model_cfg.pooling, model_cfg.classifier_dropout)


MODEL_KINDS = ("classifier", "causal_lm", "masked_lm")

# The PEFT task_type written to adapter_config.json for each model kind: PeftModel.from_pretrained picks its
# PeftModel subclass by it. PEFT has no masked-LM type. CAUSAL_LM would break loading (PeftModelForCausalLM
# reads the base's prepare_inputs_for_generation, which BertForMaskedLM lacks: AttributeError).
# FEATURE_EXTRACTION would load, but it names an embedding model (hidden states out), not MLM logits. None,
# PEFT's default, gives the plain PeftModel, which passes every argument to the base model unchanged: an
# AutoModelForMaskedLM wrapped by it computes what the run trained.
PEFT_TASK_TYPES: dict[str, str | None] = {"classifier": "SEQ_CLS", "causal_lm": "CAUSAL_LM", "masked_lm": None}


def build_configured_model(cfg: Section, task: Any = None, with_method: bool = True) -> nn.Module:
    """The model of an experiment config (its task's kind), with the fine-tuning method applied unless
    ``with_method`` is false (the base model, e.g. for latency comparisons). Seed first for
    reproducible random parts."""
    task = task if task is not None else task_from_config(cfg)
    model = build_model(cfg.model, task.num_labels, task.model_kind)
    if cfg.model.quantization:
        quantize_base(model, cfg)
    if with_method:
        apply_configured_method(model, cfg)
    if cfg.training.gradient_checkpointing:
        enable_gradient_checkpointing(model, offload=cfg.training.gradient_checkpointing == "offload")
    return model


def quantize_base(model: nn.Module, cfg: Section) -> None:
    """``model.quantization``: the frozen linear layers to 4-bit (``lorakit.quant.quantize``), except the task head
    and ``method.modules_to_save``, which train."""
    from lorakit import quant

    try:
        quant.quantize(model, cfg.model.quantization, skip=list(cfg.method.modules_to_save) + head_names(model, cfg))
    except (quant.QuantizationError, quant.MissingBackendError) as err:
        raise TrainingError(f"model.quantization: {err}") from None


def enable_gradient_checkpointing(model: nn.Module, offload: bool = False) -> list[str]:
    """Turn on activation recomputation in every Hugging Face transformer inside ``model``.

    Uses the model's own ``gradient_checkpointing_enable`` with non-reentrant checkpoints, which
    restore the RNG state before recomputing: dropout masks (the model's and LoRA's, whose seed is
    drawn from torch's generator) come out the same in the recomputation, so the gradients equal
    those of a run without checkpointing. Only training-mode forwards are checkpointed. ``offload``: the
    saved block inputs of a model on a GPU wait in pinned CPU memory (:mod:`lorakit.train.offload`; on the
    CPU the same as without). Returns the names of the modules switched on (``""`` for the model itself).
    """
    switched: list[str] = []
    for name, module in model.named_modules():
        if any(outer == "" or name.startswith(outer + ".") for outer in switched):
            continue  # inside a model already switched on
        if not getattr(module, "supports_gradient_checkpointing", False):
            continue
        kwargs = {"use_reentrant": False}
        if hasattr(module, "activation_checkpointing_enable"):  # transformers >= 5.x names it so
            module.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        elif hasattr(module, "gradient_checkpointing_enable"):
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            continue
        if offload:
            use_offloaded_checkpoints(module, **kwargs)
        switched.append(name)
    if not switched:
        raise TrainingError(
            "training.gradient_checkpointing: this model has no Hugging Face transformer that supports it "
            f"({type(model).__name__}); set it to false")
    return switched


def _load_transformer(model_cfg: Section, auto_class: Any, optional: dict[str, Any]) -> nn.Module:
    """``auto_class`` from ``model.architecture`` (random) or ``model.name_or_path``; ``optional`` keyword
    arguments are dropped for model classes that do not take them (e.g. ``add_pooling_layer``)."""

    def make(build: Callable[..., nn.Module]) -> nn.Module:
        try:
            return build(**optional)
        except TypeError:
            if not optional:
                raise
            return build()

    if model_cfg.architecture is not None:
        arch = dict(model_cfg.architecture)
        try:
            from transformers import AutoConfig

            config = AutoConfig.for_model(arch.pop("model_type"), **arch)
            return make(lambda **kw: auto_class.from_config(config, **kw))
        except (ValueError, TypeError, KeyError) as err:
            raise ModelLoadError(f"model.architecture: cannot build a model from it: {err}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = from_pretrained(lambda path, **kw: make(lambda **k2: auto_class.from_pretrained(path, **kw, **k2)),
                                 model_cfg.name_or_path, "model")
    if isinstance(loaded, tuple):  # (model, loading info): output_loading_info=True
        model, info = loaded
        note_new_mlm_head(model, info.get("missing_keys", ()))
        return model
    return loaded


def head_names(model: nn.Module, cfg: Section) -> list[str]:
    """The task head that trains with every method: the classifier (and the pooler when pooling reads it);
    for a language model only a head built new at load (:func:`lorakit.pretrained.note_new_mlm_head`: a
    masked-LM transform); its pretrained LM head is the (usually tied) embedding."""
    if not isinstance(model, SequenceClassifier):
        return list(getattr(model, "lorakit_new_head", ()))
    return ["classifier"] + (["pooler"] if cfg.model.pooling == "pooler" else [])


def apply_configured_method(model: nn.Module, cfg: Section) -> None:
    """Decide what trains: LoRA adapters (+ modules_to_save, chosen biases), everything, or the head."""
    m = cfg.method
    head = head_names(model, cfg)
    if m.name == "full":
        for p in model.parameters():
            p.requires_grad = True
        return
    if m.name == "head_only":
        if not head:
            raise TrainingError("method head_only trains the task head, and a language model has none (its LM "
                                "head is the pretrained, tied embedding); choose lora, full or a baseline")
        for name, p in model.named_parameters():
            p.requires_grad = in_modules(name, head)
        return
    if m.name == "distill":  # the student: the first student_layers blocks; every weight trains
        if m.student_layers is not None:
            from lorakit.distill import DistillError, keep_first_layers

            try:
                keep_first_layers(model, m.student_layers)
            except DistillError as err:
                raise TrainingError(f"method: {err}") from None
        for p in model.parameters():
            p.requires_grad = True
        return
    if m.name == "prune":
        _apply_pruning(model, cfg, tuple(head))
        return
    if m.name != "lora":
        _apply_baseline(model, cfg, tuple(head))
        return
    from lorakit import LoraConfig, inject

    saved = list(dict.fromkeys(list(m.modules_to_save) + head))
    try:
        lcfg = LoraConfig(
            r=m.r, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout, target_modules=m.target_modules,
            exclude_modules=m.exclude_modules or None, bias=m.bias, modules_to_save=saved or None,
            fan_in_fan_out=m.fan_in_fan_out, enable_lora=dict(m.enable_lora),
            task_type=PEFT_TASK_TYPES[task_from_config(cfg).model_kind],
            base_model_name_or_path=cfg.model.name_or_path,
        )
        inject(model, lcfg)
    except (ValueError, TypeError) as err:
        raise TrainingError(f"method: cannot apply LoRA to this model: {err}") from None


def _apply_pruning(model: nn.Module, cfg: Section, head: tuple[str, ...]) -> None:
    """``prune``: every weight trains, and a :class:`lorakit.pruning.MagnitudePruner` (kept as
    ``model.lorakit_pruner``; ``setup_run`` attaches it to the optimizer) zeroes the smallest encoder weights."""
    from lorakit.pruning import MagnitudePruner, PruningError

    m = cfg.method
    for p in model.parameters():
        p.requires_grad = True
    try:
        model.lorakit_pruner = MagnitudePruner(model, m.sparsity, m.prune_schedule, head=head or ("lm_head",))
    except PruningError as err:
        raise TrainingError(f"method: {err}") from None


def distilling_task(task: Any, cfg: Section, say: Callable[[str], None] = print) -> Any:
    """``distill``: ``task`` with its training loss against the teacher ``method.teacher``: a finished run's
    workdir (a folder with ``checkpoints/``), else a pretrained model path or name whose head fits the task.
    Label space, model kind and vocabulary are checked before the teacher's weights load."""
    from lorakit import quant
    from lorakit.distill import DistillError

    teacher_dir = Path(cfg.method.teacher).expanduser()
    try:
        if (teacher_dir / "checkpoints").is_dir():
            teacher = _teacher_run(task, teacher_dir)
        else:
            teacher = _teacher_model(task, cfg, say)
        say(f"distill: teacher {cfg.method.teacher} ({sum(quant.logical_numels(teacher).values()):,} parameters), "
            f"T={cfg.method.temperature:g}, alpha={cfg.method.distill_alpha:g}")
        return _distilling(task, teacher, cfg)
    except DistillError as err:
        raise TrainingError(str(err)) from None


def _teacher_run(task: Any, teacher_dir: Path) -> nn.Module:
    """The model of the finished run in ``teacher_dir``, after checks that it learned a task of this kind and
    label space."""
    from lorakit.distill import DistillError, check_label_space
    from lorakit.train.config import ConfigError, load_config
    from lorakit.train.finished_run import load_run

    try:
        tcfg = load_config(teacher_dir / "config.json")
    except (OSError, ConfigError) as err:
        raise TrainingError(f"method.teacher: {teacher_dir} is not a finished lorakit run ({err})") from None
    teacher_task = task_from_config(tcfg)
    if teacher_task.model_kind != task.model_kind:
        raise DistillError(f"distill: the teacher run {teacher_dir} trained a {teacher_task.model_kind} "
                           f"({teacher_task.name}) but task {task.name!r} needs a {task.model_kind}; use a run "
                           "of this task")
    check_label_space(teacher_task.num_labels, task.num_labels, str(teacher_dir), task.name)
    return load_run(tcfg, teacher_dir, None, None, None, with_data=False).model


def _teacher_model(task: Any, cfg: Section, say: Callable[[str], None]) -> nn.Module:
    """A pretrained model as the teacher (:func:`lorakit.distill.load_model_teacher`); its tokenizer, when it
    has one, must be the student's."""
    from transformers import AutoTokenizer

    from lorakit.distill import check_vocabulary, load_model_teacher
    from lorakit.pretrained import ModelLoadError

    source = cfg.method.teacher
    labels = getattr(getattr(task, "spec", None), "labels", None)
    try:
        teacher_tokenizer = from_pretrained(AutoTokenizer.from_pretrained, source, "teacher tokenizer")
    except ModelLoadError:
        teacher_tokenizer = None
    try:
        teacher = load_model_teacher(source, task.model_kind, task.name, task.num_labels, labels, say)
    except ModelLoadError as err:
        raise TrainingError(f"method.teacher: {source} is neither a finished lorakit run (no checkpoints/ folder) "
                            f"nor a loadable model: {err}") from None
    if teacher_tokenizer is not None:
        check_vocabulary(teacher_tokenizer, load_tokenizer(cfg.model), source)
    else:
        say(f"note: distill: the teacher {source} has no tokenizer; assumed to share the student's vocabulary")
    return teacher


def _distilling(task: Any, teacher: nn.Module, cfg: Section) -> Any:
    """The task wrapper of its kind: classifier logits, or token logits of a causal / masked LM."""
    from lorakit.data.packing import forward_inputs
    from lorakit.distill import DistillingTask, TokenDistillingTask

    m = cfg.method
    if task.model_kind == "causal_lm":
        def causal_logits(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
            out = model(**forward_inputs(batch))  # padded or packed rows
            return out.logits if hasattr(out, "logits") else out  # (batch, seq, vocab)
        return TokenDistillingTask(task, teacher, m.temperature, m.distill_alpha, causal_logits, shift=1)
    if task.model_kind == "masked_lm":
        return TokenDistillingTask(task, teacher, m.temperature, m.distill_alpha, task._logits, shift=0)
    return DistillingTask(task, teacher, m.temperature, m.distill_alpha)


def _apply_baseline(model: nn.Module, cfg: Section, head: tuple[str, ...]) -> None:
    """One of the LoRA paper's baselines (``lorakit.methods``): ft_top2, bitfit, adapters, prefixes."""
    from lorakit.methods import MethodConfig, MethodError
    from lorakit.methods import apply_method as apply_baseline

    m = cfg.method
    try:
        mcfg = MethodConfig(m.name, adapter_size=m.adapter_size, prefix_length=m.prefix_length,
                            infix_length=m.infix_length, prefix_hidden=m.prefix_hidden, head=head)
        if m.name == "prefix_embed":
            if m.infix_length and not isinstance(model, SequenceClassifier):
                raise MethodError("prefix_embed: infix_length > 0 applies to NLU classifiers; a language model "
                                  "generating after its prompt would see the infix at a different place in "
                                  "training and decoding. Use prefix_length only (infix_length 0)")
            ecfg = getattr(model, "encoder", model).config
            limit = getattr(ecfg, "max_position_embeddings", None) or getattr(ecfg, "n_positions", None)
            if limit is not None and getattr(ecfg, "model_type", "") in ("roberta", "xlm-roberta"):
                limit -= (ecfg.pad_token_id or 0) + 1  # RoBERTa's positions start after the padding index
            needed = m.prefix_length + m.infix_length + cfg.data.max_length
            if limit is not None and needed > limit:
                raise MethodError(f"prefix_embed: prefix_length + infix_length + data.max_length = {needed} "
                                  f"exceeds the model's {limit} positions; shorten the prefix or max_length")
        apply_baseline(model, mcfg)
    except MethodError as err:
        raise TrainingError(f"method: {err}") from None


def init_from_run(model: nn.Module, cfg: Section, say: Callable[[str], None] = print) -> dict[str, Any]:
    """``model.init_from``: initialise the freshly built ``model`` with another run's trained tensors.

    The source is a workdir (its final model: the checkpoints its ``results.json`` averaged when they are all
    still there, else its latest checkpoint) or one checkpoint folder (``step-NNNNNNN/``). Every source tensor
    that trains in this run under the same name and shape is copied in (LoRA's A and B, the head, modules to
    save). A head tensor of another shape (another number of labels: MNLI's 3 -> MRPC's 2) is skipped with a
    note and starts fresh. Refused with ``TrainingError``: a folder without a complete checkpoint, other shapes
    outside the head (another rank), source tensors this model lacks outside the head (other target modules),
    and tensors that are frozen here (this run's checkpoints would not keep them). Returns what was loaded.
    """
    source = Path(cfg.model.init_from).expanduser()
    paths = _init_checkpoints(source)
    state = ckpt.average_checkpoints(paths) if len(paths) > 1 else ckpt.load_model_state(paths[0])
    params = dict(D.unwrap(model).named_parameters())
    head = head_names(model, cfg)
    in_head = lambda name: in_modules(name, head)  # noqa: E731
    where = paths[0] if len(paths) == 1 else f"the average of {', '.join(p.name for p in paths)} in {paths[0].parent}"
    loaded, skipped, unknown, frozen = {}, [], [], []
    for name, tensor in state.items():
        param = params.get(name)
        if param is None:
            (skipped if in_head(name) else unknown).append(name)
        elif tuple(param.shape) != tuple(tensor.shape):
            if not in_head(name):
                raise TrainingError(
                    f"model.init_from: tensor {name!r} has shape {tuple(tensor.shape)} in {where} but "
                    f"{tuple(param.shape)} in this model; the runs differ in rank or model. Use a source run with "
                    "the same model and method settings")
            skipped.append(name)
            say(f"note: model.init_from: {name} skipped (shape {tuple(tensor.shape)} there, {tuple(param.shape)} "
                "here: another number of labels); it starts fresh")
        elif not param.requires_grad:
            frozen.append(name)
        else:
            loaded[name] = tensor
    if frozen:
        raise TrainingError(
            f"model.init_from: {len(frozen)} tensors of {where} are frozen in this run (e.g. {frozen[0]!r}) and "
            f"its checkpoints would not keep them; method {cfg.method.name!r} trains other tensors than the source run")
    if unknown:
        raise TrainingError(f"model.init_from: {len(unknown)} tensors of {where} do not exist in this model (e.g. "
                            f"{unknown[0]!r}); the source run adapted other modules (method.target_modules) or used "
                            "another method")
    if not loaded:
        raise TrainingError(f"model.init_from: no tensor of {where} fits this model (all {len(state)} skipped)")
    with torch.no_grad():
        for name, tensor in loaded.items():
            params[name].copy_(tensor.to(params[name].dtype))
    fresh = sum(1 for n, p in params.items() if p.requires_grad and n not in loaded)
    say(f"model.init_from: {len(loaded)} tensors from {where}"
        + (f"; {fresh} trainable tensors start fresh" if fresh else ""))
    return {"source": str(source), "checkpoints": [str(p) for p in paths], "loaded": sorted(loaded),
            "skipped": sorted(skipped)}


def _init_checkpoints(source: Path) -> list[Path]:
    """The checkpoint folder(s) ``model.init_from`` names: itself, or a workdir's final model."""
    if not source.exists():
        raise TrainingError(f"model.init_from: {source} does not exist (give another run's workdir or one of its "
                            "checkpoint folders, e.g. WORKDIR/checkpoints/step-0001000)")
    if ckpt.read_meta(source) is not None:
        return [source]
    root = source / "checkpoints" if (source / "checkpoints").is_dir() else source
    found = ckpt.list_checkpoints(root)
    if not found:
        raise TrainingError(
            f"model.init_from: {source} holds no complete checkpoint; expected a run's workdir (with "
            "checkpoints/step-NNNNNNN/) or one checkpoint folder (model.safetensors and meta.json). Has the source "
            "run saved a checkpoint yet?")
    try:
        averaged = json.loads((source / "results.json").read_text(encoding="utf-8"))["averaged"]["checkpoints"]
    except (OSError, ValueError, KeyError, TypeError):
        averaged = []
    by_step = {c.step: c.path for c in found}
    if averaged and all(step in by_step for step in averaged):
        return [by_step[step] for step in averaged]
    return [found[-1].path]


# ------------------------------------------------------------------------------------------------------
# Seeding, optimizer and schedule
# ------------------------------------------------------------------------------------------------------

def build_optimizer(model: nn.Module, ocfg: Section) -> torch.optim.Optimizer:
    """AdamW over trainable parameters only; biases and norms (``no_decay``) without weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if any(name.endswith(s) for s in ocfg.no_decay) else decay).append(p)
    if not decay and not no_decay:
        raise TrainingError("no parameter is trainable: check method.target_modules / modules_to_save")
    groups = [{"params": decay, "weight_decay": ocfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=ocfg.lr, betas=tuple(ocfg.betas), eps=ocfg.eps)


def build_scheduler(optimizer: torch.optim.Optimizer, scfg: Section, total_steps: int,
                    say: Callable[[str], None]) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from lr/warmup to lr, then linear (or cosine) decay to 0 at ``total_steps``."""
    warmup = scfg.warmup_steps if scfg.warmup_ratio is None else int(round(scfg.warmup_ratio * total_steps))
    if warmup >= total_steps and scfg.name != "constant":
        say(f"note: warmup ({warmup} steps) is not shorter than the run ({total_steps} steps): the learning "
            "rate never reaches optimizer.lr; set schedule.warmup_steps or schedule.warmup_ratio")
    name = scfg.name

    def factor(step: int) -> float:  # step = optimizer steps taken so far
        if step < warmup:
            return (step + 1) / warmup
        if name == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return max(0.0, 1.0 - progress)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def parameter_counts(model: nn.Module) -> dict[str, Any]:
    """total, trainable, percent; head (trainable head parameters), trainable_excluding_head (the LoRA
    paper's count) and after_training (that, once PreLayer's reparameterisation MLP is dropped)."""
    from lorakit.methods import HEAD_MODULES, count_parameters

    return count_parameters(model, head=HEAD_MODULES)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
