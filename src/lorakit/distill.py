"""Knowledge distillation as a fine-tuning baseline: a smaller student learns the task from its labels and
from a finished run (the teacher).

* :func:`distillation_loss`: ``(1 - alpha) * task_loss + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))``
  for classes (Hinton et al. 2015; ``T^2`` keeps the soft term's gradients at the scale of the hard one), and
  ``(1 - alpha) * task_loss + alpha * MSE(s, t)`` for a regression head (one output: no temperature).
* :func:`keep_first_layers`: the student as the first ``k`` transformer blocks of a model.
* :class:`DistillingTask`: a task whose training loss is the distillation loss; evaluation is the task's.
* :class:`TokenDistillingTask`: the same for language-model tasks (causal or masked): per scored token,
  ``(1 - alpha) * CE + alpha * T^2 * KL`` over the vocabulary, summed, and normalised by the task's own count
  of scored tokens (the loop's ``loss_sum`` / ``loss_count``).
* :func:`load_model_teacher`: a pretrained model path or name as the teacher, when its head fits the task
  (a sequence-classification head with the task's labels, or an LM head), else a :class:`DistillError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import LorakitError

__all__ = ["DistillError", "distillation_loss", "token_distillation_sum", "keep_first_layers", "check_label_space",
           "label_order", "ClassifierTeacher", "load_model_teacher", "check_vocabulary", "DistillingTask",
           "TokenDistillingTask"]


class DistillError(LorakitError, ValueError):
    """A teacher that does not fit the task, or distillation options out of range."""


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, task_loss: Tensor, temperature: float,
                      alpha: float) -> Tensor:
    """student_logits, teacher_logits: (batch, classes), or (batch, 1) for regression; task_loss: scalar.
    The KL term is averaged over the batch (``batchmean``). Returns a scalar."""
    s, t = student_logits.float(), teacher_logits.float().detach()
    if s.shape != t.shape:
        raise DistillError(f"student logits {tuple(s.shape)} and teacher logits {tuple(t.shape)} differ")
    if s.shape[-1] == 1:
        soft = F.mse_loss(s, t)
    else:
        soft = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                        reduction="batchmean") * temperature ** 2
    return (1.0 - alpha) * task_loss + alpha * soft


def token_distillation_sum(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, temperature: float,
                           alpha: float, label_smoothing: float = 0.0, ignore_index: int = -100) -> Tensor:
    """student_logits, teacher_logits: (batch, seq, vocab) at the positions that predict ``targets``
    (batch, seq) (already shifted for a causal LM); positions with ``ignore_index`` do not count. Returns the
    scalar sum over the scored positions of ``(1 - alpha) * CE(s, target) + alpha * T^2 * KL(p_t || p_s)``,
    ``p = softmax(logits / T)``: divided by the number of scored positions it is :func:`distillation_loss` per
    token."""
    if student_logits.shape != teacher_logits.shape:
        raise DistillError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                           f"{tuple(teacher_logits.shape)} differ: the teacher must have the student's vocabulary")
    scored = targets != ignore_index  # (batch, seq)
    s, t = student_logits[scored].float(), teacher_logits[scored].float().detach()  # (n, vocab)
    hard = F.cross_entropy(s, targets[scored], label_smoothing=label_smoothing, reduction="sum")
    soft = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                    reduction="sum") * temperature ** 2
    return (1.0 - alpha) * hard + alpha * soft


def check_label_space(teacher_labels: int, task_labels: int, teacher: str, task: str) -> None:
    """Refuse a teacher whose head has another number of outputs than the task's (1 = regression)."""
    if teacher_labels != task_labels:
        kind = {1: "1 output (regression)"}
        raise DistillError(
            f"distill: the teacher {teacher} predicts {kind.get(teacher_labels, f'{teacher_labels} classes')} but "
            f"task {task!r} has {kind.get(task_labels, f'{task_labels} classes')}; use a teacher trained on "
            f"{task!r} (method.teacher: its workdir)")


def _block_list(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(parent, attribute, blocks): the longest ModuleList of the model (BERT ``encoder.layer``, GPT-2 ``h``)."""
    found = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, nn.ModuleList)]
    if not found:
        raise DistillError(f"distill: {type(model).__name__} has no list of transformer blocks to shorten")
    return max(found, key=lambda item: len(item[2]))


def keep_first_layers(model: nn.Module, layers: int) -> nn.Module:
    """Keep the first ``layers`` transformer blocks (in place; the config's layer count follows)."""
    parent, name, blocks = _block_list(model)
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= len(blocks):
        raise DistillError(f"distill: student_layers must be an integer in [1, {len(blocks)}] (the teacher "
                           f"architecture's blocks), got {layers!r}")
    setattr(parent, name, nn.ModuleList(list(blocks)[:layers]))
    for module in model.modules():
        config = getattr(module, "config", None)
        for key in ("num_hidden_layers", "n_layer"):
            if config is not None and isinstance(getattr(config, key, None), int):
                setattr(config, key, layers)
    return model


def encoder_parameters(model: nn.Module) -> int:
    """The parameters of ``model`` outside its head (:data:`lorakit.methods.HEAD_MODULES`) and outside anything
    a method inserted (LoRA factors, adapters): the pretrained encoder a student replaces. The head counts
    whether it trains or not (a teacher is frozen)."""
    from lorakit.lora.config import in_modules
    from lorakit.methods import HEAD_MODULES, count_parameters

    counts = count_parameters(model, head=())
    head_n = sum(p.numel() for n, p in model.named_parameters() if in_modules(n, HEAD_MODULES))
    return counts["total"] - head_n - counts["inserted"]


class DistillingTask:
    """``task`` with the training loss replaced by :func:`distillation_loss` against ``teacher`` (frozen, in
    eval mode). Everything else (collate, predict, metrics ...) is the task's. The task must expose
    ``_logits(model, batch)`` -> (batch, num_labels) and ``loss_from_logits``, as the GLUE tasks do."""

    def __init__(self, task: Any, teacher: nn.Module, temperature: float, alpha: float):
        if not all(callable(getattr(task, f, None)) for f in ("_logits", "loss_from_logits")):
            raise DistillError(f"distill: task {task.name!r} has no classifier logits to distill; use a GLUE task or "
                               "a language-model task (causal or masked)")
        if not temperature > 0 or not 0.0 <= alpha <= 1.0:
            raise DistillError(f"distill: temperature must be > 0 and alpha in [0, 1], got {temperature}, {alpha}")
        self._task, self.teacher = task, teacher.eval().requires_grad_(False)
        self.temperature, self.alpha = temperature, alpha

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def _teacher_on(self, device: torch.device) -> nn.Module:
        """The teacher on the batch's device (moved once, on the first batch: a model path loads on the CPU)."""
        first = next(self.teacher.parameters(), None)
        if first is not None and first.device != device:
            self.teacher.to(device)
        return self.teacher

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        with torch.no_grad():
            teacher_logits = self._task._logits(self._teacher_on(batch["input_ids"].device), batch)
        student_logits = self._task._logits(model, batch)
        hard = self._task.loss_from_logits(student_logits, batch)
        return distillation_loss(student_logits, teacher_logits, hard, self.temperature, self.alpha)


class TokenDistillingTask(DistillingTask):
    """A language-model ``task`` (causal: ``shift=1``, position t predicts token t + 1; masked: ``shift=0``)
    with the training loss of :func:`token_distillation_sum` against ``teacher``. ``logits(model, batch)`` ->
    ``(batch, seq, vocab)``: the forward the task's batches need (packed rows carry ``position_ids``). The loop
    normalises ``loss_sum`` by the task's ``loss_count`` (its scored tokens) over the global batch."""

    def __init__(self, task: Any, teacher: nn.Module, temperature: float, alpha: float,
                 logits: Callable[[nn.Module, dict[str, Tensor]], Tensor], shift: int):
        if not temperature > 0 or not 0.0 <= alpha <= 1.0:
            raise DistillError(f"distill: temperature must be > 0 and alpha in [0, 1], got {temperature}, {alpha}")
        self._task, self.teacher = task, teacher.eval().requires_grad_(False)
        self.temperature, self.alpha, self._forward, self.shift = temperature, alpha, logits, shift

    def loss_sum(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        end = -self.shift or None  # causal: the last position predicts nothing
        with torch.no_grad():
            teacher_logits = self._forward(self._teacher_on(batch["input_ids"].device), batch)[:, :end]
        student_logits = self._forward(model, batch)[:, :end]
        return token_distillation_sum(student_logits, teacher_logits, batch["labels"][:, self.shift:],
                                      self.temperature, self.alpha, getattr(self._task, "label_smoothing", 0.0))

    def loss_count(self, batch: dict[str, Tensor]) -> int:
        return int(self._task.loss_count(batch))

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return self.loss_sum(model, batch) / max(1, self.loss_count(batch))


# -- a pretrained model as the teacher -------------------------------------------------------------------
_HEADS = {"classifier": "sequence-classification head (*ForSequenceClassification)",
          "causal_lm": "causal-LM head (*ForCausalLM, GPT2LMHeadModel ...)",
          "masked_lm": "masked-LM head (*ForMaskedLM)"}
_HEAD_MAPPINGS = {"classifier": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
                  "causal_lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "masked_lm": "MODEL_FOR_MASKED_LM_MAPPING_NAMES"}


def _head_classes(kind: str) -> set[str]:
    """The transformers class names with the head of model kind ``kind`` (the Auto classes' tables); empty when
    this transformers version has no such table (then only the loaded weights are checked)."""
    try:
        from transformers.models.auto import modeling_auto
        table = getattr(modeling_auto, _HEAD_MAPPINGS[kind])
    except (ImportError, AttributeError):
        return set()
    return {name for value in table.values() for name in ((value,) if isinstance(value, str) else value)}


def label_order(id2label: dict[int, str], task_labels: Sequence[str] | None, teacher: str) -> list[int] | None:
    """For each task label (in the task's order) the teacher's output index, when both name their labels
    (MNLI: a teacher's ``CONTRADICTION, NEUTRAL, ENTAILMENT`` against the task's ``contradiction, entailment,
    neutral``); None when the order cannot be read from names (regression, the teacher's default ``LABEL_k``
    names, or task labels that are only digits such as SST-2's ``0``/``1``): then the orders are assumed equal."""
    names = [str(id2label[i]) for i in sorted(id2label)]
    if task_labels is None or all(re.fullmatch(r"LABEL_\d+", n) for n in names) or \
            all(label.isdigit() for label in task_labels):
        return None

    def key(name: str) -> str:
        return re.sub(r"[\s-]+", "_", name.strip().lower())

    index = {key(n): i for i, n in enumerate(names)}
    if set(index) != {key(label) for label in task_labels}:
        raise DistillError(f"distill: the teacher {teacher} names its labels {names} but the task's are "
                           f"{list(task_labels)}; use a teacher trained on this task")
    return [index[key(label)] for label in task_labels]


class ClassifierTeacher(nn.Module):
    """A Hugging Face ``*ForSequenceClassification`` model called like lorakit's classifier:
    ``(input_ids, attention_mask, token_type_ids)`` ``(batch, seq)`` -> logits ``(batch, num_labels)`` in the
    task's label order (``order``: the teacher's index of each task label; None: the same order)."""

    def __init__(self, model: nn.Module, order: list[int] | None):
        super().__init__()
        self.model = model
        self.order = order

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and getattr(self.model.config, "type_vocab_size", 0) > 1:
            inputs["token_type_ids"] = token_type_ids  # RoBERTa-style models have a single token type
        logits = self.model(**inputs).logits  # (batch, num_labels)
        if self.order is None:
            return logits
        return logits.index_select(-1, torch.tensor(self.order, device=logits.device))


def load_model_teacher(source: str, kind: str, task_name: str, num_labels: int, task_labels: Sequence[str] | None,
                       say: Callable[[str], None] = print) -> nn.Module:
    """The pretrained model ``source`` (a folder with config.json, ``package:...`` or a Hub name) as the teacher of
    a task of model kind ``kind``. Its saved architecture must carry the head the task reads
    (``*ForSequenceClassification`` with the task's label count and names, ``*ForCausalLM``, ``*ForMaskedLM``);
    the config is checked before the weights load, and a head missing from the weights is refused too."""
    import transformers as T

    from lorakit.pretrained import from_pretrained

    head = _HEADS.get(kind)
    if head is None:
        raise DistillError(f"distill: task {task_name!r} (model kind {kind!r}) cannot take a model path as teacher; "
                           "pass a finished run's workdir")
    config = from_pretrained(T.AutoConfig.from_pretrained, source, "teacher config")
    saved = list(getattr(config, "architectures", None) or [])
    fix = f"fine-tune it on {task_name!r} first and pass that run's workdir, or a model saved with that head"
    known = _head_classes(kind)
    if saved and known and not set(saved) & known:
        raise DistillError(f"distill: the teacher {source} is a {', '.join(saved)}, without the {head} task "
                           f"{task_name!r} needs; {fix}")
    order = None
    if kind == "classifier":
        check_label_space(int(config.num_labels), num_labels, source, task_name)
        order = label_order(dict(config.id2label), task_labels, source)
    auto = {"classifier": T.AutoModelForSequenceClassification, "causal_lm": T.AutoModelForCausalLM,
            "masked_lm": T.AutoModelForMaskedLM}[kind]
    model, info = from_pretrained(auto.from_pretrained, source, "teacher", output_loading_info=True)
    new = [k for k in info.get("missing_keys", ()) if not k.startswith(model.base_model_prefix + ".")]
    if new:  # the head's weights were not in the checkpoint: a randomly initialised head teaches nothing
        raise DistillError(f"distill: the teacher {source} has no trained {head} ({', '.join(sorted(new)[:3])} "
                           f"missing from its weights); {fix}")
    if kind == "classifier":
        say(f"distill: teacher labels {[config.id2label[i] for i in sorted(config.id2label)]}"
            + (" (reordered to the task's by name)" if order else " (taken in the task's order)"))
        return ClassifierTeacher(model, order)
    return model


def check_vocabulary(teacher_tokenizer: Any, student_tokenizer: Any, teacher: str) -> None:
    """Teacher and student read the same token ids: their tokenizers must have one vocabulary."""
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise DistillError(f"distill: the teacher {teacher}'s tokenizer ({len(teacher_tokenizer)} ids) differs from "
                           f"the student's ({len(student_tokenizer)} ids): the teacher would read the student's ids "
                           "as other tokens; use a teacher with the student's tokenizer (model.tokenizer)")
