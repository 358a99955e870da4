"""Generic supervised fine-tuning of a causal LM (``task: sft``) on JSONL files of prompts and completions or chats.

The data folder holds one file per split, ``{split}.jsonl`` (``train.jsonl``, ``dev.jsonl`` by default). Each
non-blank line is one JSON object, either

* ``{"prompt": "...", "completion": "..."}``, or
* ``{"messages": [{"role": "system" | "user" | "assistant" | ..., "content": "..."}, ...]}`` with at least one
  ``assistant`` message.

Rendering: with a tokenizer that has a chat template, both kinds are rendered through it (a pair as one user
and one assistant message); the loss is on the assistant messages' tokens only, each as the template writes it
after the generation prompt (its end-of-turn token included). The spans are found by rendering the conversation
up to each assistant message with ``add_generation_prompt=True`` and up to its end; each must be a token prefix
of the whole conversation, else the template cannot be split per message and the file is refused. Without a chat
template a pair is ``prompt + completion + EOS`` (the loss on ``completion + EOS``), and chats are refused.

An example longer than ``data.max_length`` tokens stops encoding with an error naming its file and line, unless
``data.truncate`` is true: then it is cut to its first ``max_length`` tokens (an example left without any
completion token is still an error). Evaluation scores the dev completions: ``loss`` (mean NLL per completion
token, nats) and ``ppl``; both fall as the model improves. Training works padded or packed (``data.packing``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..batches import TokenLoss
from .base import DataError, pad, register_task

__all__ = ["SFTExample", "SFTTask", "read_jsonl"]

IGNORE = -100


@dataclass(frozen=True)
class SFTExample:
    """One conversation: ``messages`` as ``(role, content)`` pairs; ``source`` is ``file:line``."""

    messages: tuple[tuple[str, str], ...]
    source: str


def read_jsonl(path: Path) -> list[SFTExample]:
    """The examples of one JSONL file; a malformed line raises ``DataError`` naming the file and line."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (task sft reads {{split}}.jsonl from the data folder)")
    examples = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                examples.append(_example(line, f"{path}:{number}"))
    if not examples:
        raise DataError(f"{path}: no examples (one JSON object per line)")
    return examples


def _example(line: str, source: str) -> SFTExample:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{source}: not valid JSON ({err.msg}, column {err.colno})") from None
    if not isinstance(row, dict):
        raise DataError(f"{source}: expected a JSON object with prompt/completion or messages")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise DataError(f"{source}: 'messages' must be a non-empty list of {{\"role\": str, \"content\": str}}")
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError(f"{source}: no assistant message: nothing to train on")
        if messages[0]["role"] == "assistant":
            raise DataError(f"{source}: the conversation starts with an assistant message; put the user (or "
                            "system) message that it answers before it")
        return SFTExample(tuple((m["role"], m["content"]) for m in messages), source)
    prompt, completion = row.get("prompt"), row.get("completion")
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise DataError(f"{source}: expected string fields 'prompt' and 'completion' (or a 'messages' list), "
                        f"got keys {sorted(row)}")
    if not completion.strip():
        raise DataError(f"{source}: the completion is empty: nothing to train on")
    return SFTExample((("user", prompt), ("assistant", completion)), source)


class SFTTask(TokenLoss):
    """Supervised fine-tuning on prompt/completion pairs or chats: ``model_kind = "causal_lm"``."""

    model_kind = "causal_lm"
    num_labels = 0
    name = "sft"
    main_metric = "loss"
    metric_names = ("loss", "ppl")
    lower_is_better = ("loss", "ppl")

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = float(label_smoothing)
        self.pad_id = 0
        self.longest = 0  # tokens of the longest item encoded so far

    # -- load / encode -------------------------------------------------------------------------------
    def load(self, split: str, data_dir: str | Path) -> list[SFTExample]:
        return read_jsonl(Path(data_dir) / f"{split}.jsonl")

    def encode(self, examples: Sequence[SFTExample], tokenizer: Any, cfg: Any, training: bool = False) -> list[dict]:
        """One item per example, the same for training and evaluation: ``input_ids`` and ``labels`` (token-id
        lists, labels -100 outside the completion / assistant tokens), ``label`` = the number of targets."""
        if not examples:
            raise DataError("task sft: nothing to encode (empty dataset)")
        eos = tokenizer.eos_token_id
        self.pad_id = next((t for t in (tokenizer.pad_token_id, eos) if t is not None), 0)
        chat = bool(getattr(tokenizer, "chat_template", None))
        max_length, truncate = int(cfg.max_length), bool(getattr(cfg, "truncate", False))
        items = []
        for e in examples:
            ids, labels = _render_chat(tokenizer, e) if chat else _render_plain(tokenizer, e, eos)
            if len(ids) > max_length:
                if not truncate:
                    raise DataError(f"{e.source}: {len(ids)} tokens, more than data.max_length={max_length}; raise "
                                    "data.max_length or set data.truncate: true to cut such examples")
                ids, labels = ids[:max_length], labels[:max_length]
            targets = sum(1 for t in labels[1:] if t != IGNORE)
            if targets == 0:
                raise DataError(f"{e.source}: no completion token within data.max_length={max_length}; raise it")
            items.append({"input_ids": ids, "labels": labels, "label": targets})
            self.longest = max(self.longest, len(ids))
        return items

    def check_model(self, model: nn.Module) -> None:
        """Refuse, before training, an item longer than the model's positions."""
        config = getattr(model, "config", None)
        limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        if limit is not None and self.longest > limit:
            raise DataError(f"an sft example has {self.longest} tokens but the model holds {limit} positions; "
                            f"lower data.max_length to <= {limit} (with data.truncate: true to cut longer examples)")

    # -- collate / loss ------------------------------------------------------------------------------
    def collate(self, items: Sequence[dict], max_length: int | None = None) -> dict[str, Tensor]:
        """Right-padded ``input_ids``, ``attention_mask``, ``labels`` ``(batch, longest)``; ``max_length``
        cuts every sequence (random sequence length)."""
        ids = [it["input_ids"][:max_length] for it in items]
        labels = [it["labels"][:max_length] for it in items]
        mask = pad([[1] * len(s) for s in ids], 0)
        return {"input_ids": pad(ids, self.pad_id), "attention_mask": mask, "labels": pad(labels, IGNORE)}

    # -- predict / metrics ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, model: nn.Module, batch: dict[str, Tensor]) -> list[float]:
        """Per row: the summed NLL (nats, no label smoothing) of its completion tokens."""
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), batch["labels"][:, 1:], ignore_index=IGNORE,
                              reduction="none")  # (batch, seq - 1)
        return nll.sum(1).double().tolist()

    def metrics(self, predictions: Sequence[float], references: Sequence[int]) -> dict[str, float]:
        """``loss``: NLL per completion token over the split (references: each item's target count); ``ppl``."""
        total, count = float(sum(predictions)), int(sum(references))
        loss = total / count if count else float("nan")
        return {"loss": loss, "ppl": math.exp(loss) if count and loss < 700 else float("nan")}


# ----------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------

def _ids(tokenizer: Any, text: str, special: bool = False) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"]) if text else []


def _render_plain(tokenizer: Any, example: SFTExample, eos: int | None) -> tuple[list[int], list[int]]:
    """``prompt + completion + EOS`` of a prompt/completion pair (no chat template)."""
    if [role for role, _ in example.messages] != ["user", "assistant"]:
        raise DataError(f"{example.source}: a chat ('messages') needs a tokenizer with a chat template; this one "
                        "has none: use prompt/completion pairs or set model.tokenizer to a chat tokenizer")
    if eos is None:
        raise DataError("task sft: the tokenizer has no EOS token to end each completion with")
    prompt = _ids(tokenizer, example.messages[0][1], special=True)
    completion = _ids(tokenizer, example.messages[1][1]) + [int(eos)]
    return prompt + completion, [IGNORE] * len(prompt) + completion


def _render_chat(tokenizer: Any, example: SFTExample) -> tuple[list[int], list[int]]:
    """The conversation through the chat template; labels on each assistant message's tokens."""
    messages = [{"role": r, "content": c} for r, c in example.messages]

    def render(upto: int, generation_prompt: bool = False) -> list[int]:
        text = tokenizer.apply_chat_template(messages[:upto], tokenize=False, add_generation_prompt=generation_prompt)
        return _ids(tokenizer, text)

    ids = render(len(messages))
    labels = [IGNORE] * len(ids)
    for i, (role, _) in enumerate(example.messages):
        if role != "assistant":
            continue
        before, through = render(i, generation_prompt=True), render(i + 1)
        if ids[:len(before)] != before or ids[:len(through)] != through:
            raise DataError(f"{example.source}: the tokenizer's chat template does not render this conversation "
                            "message by message (a prefix renders differently), so the assistant tokens cannot be "
                            "found; use prompt/completion pairs with a plain tokenizer")
        labels[len(before):len(through)] = ids[len(before):len(through)]
    return ids, labels


register_task("sft", SFTTask)
