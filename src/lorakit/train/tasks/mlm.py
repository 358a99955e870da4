"""Masked-LM fine-tuning on the plain-text corpora of :mod:`.lm`: tasks ``mlm_wikitext``, ``mlm_wikitext103``,
``mlm_enwik8``, ``mlm_hutter``, ``mlm_text8``, ``mlm_text`` (same data folders, splits and options).

Items (``encode``): the tokenized split cut into consecutive blocks of ``cfg.max_length - specials`` tokens,
each wrapped in the tokenizer's own special tokens (BERT ``[CLS] ... [SEP]``, RoBERTa ``<s> ... </s>``).

Masking (BERT / RoBERTa): each non-special token is chosen with probability ``mask_prob`` (0.15); a row with
none chosen gets one. In training a chosen token becomes the mask token (80%), a random vocabulary token
(10%) or stays (10%); in evaluation every chosen token becomes the mask token (a fixed, comparable test).
Only chosen tokens are targets. The random numbers of one row come from a generator seeded by
``(seed, step, row of the step's global batch)`` in training (the loop's :meth:`Task.start_step`; under DDP a
process's rows start at ``rank * rows per process``, so processes draw different masks, the ones a single
process would draw), ``(seed, block index)`` in evaluation: never from the global RNG, so a resumed run draws
the same masks, a run on 2 processes the same as on 1, and every evaluation the same.
``data.random_length`` cuts training blocks as for causal LMs, keeping the closing special token (one: BERT's
``[SEP]``, RoBERTa's ``</s>``).

Metrics (lower is better), from the summed NLL (nats) of the **masked targets** only:

* ``nll_per_token``: NLL / number of masked tokens; ``ppl`` = exp of it (per masked token);
* ``bpc``: NLL / ln 2 / the characters of the text the masked tokens cover (each token's span from
  :func:`~lorakit.metrics.lm.tokenize_text`); ``bpb`` the same over their UTF-8 bytes;
* ``word_ppl`` (WikiText): exp(NLL / the WikiText word units the masked tokens cover).

These are masked-token numbers (each target sees both sides), not comparable to causal-LM bpc / ppl of
the same corpus. Pseudo-perplexity (every token masked in turn) is :func:`lorakit.metrics.lm.pseudo_perplexity`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lorakit.metrics.lm import special_template, tokenize_text

from .base import DataError, cut_keep_last, pad, register_task
from .lm import LM_TASKS, LMTask, LMTaskSpec

__all__ = ["MLMTask", "mask_tokens", "mask_generator"]


def mask_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded by a hash of the integers ``key`` (e.g. seed, step, row): independent streams."""
    digest = hashlib.blake2b(repr(tuple(int(k) for k in key)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def mask_tokens(ids: Tensor, maskable: Tensor, generator: torch.Generator, mask_id: int, vocab_size: int,
                mask_prob: float = 0.15, replace: tuple[float, float] = (0.8, 0.1)) -> tuple[Tensor, Tensor]:
    """BERT masking of one row. ``ids``, ``maskable`` (bool): ``(seq,)``. Each maskable position is chosen
    with probability ``mask_prob`` (at least one when any is maskable); a chosen token becomes ``mask_id``
    with probability ``replace[0]``, a uniform random id in ``[0, vocab_size)`` with ``replace[1]``, else
    stays. Returns ``(inputs, labels)`` ``(seq,)`` int64, ``labels`` = the original id where chosen, else -100."""
    n = ids.shape[0]
    chosen = (torch.rand(n, generator=generator) < mask_prob) & maskable
    if not chosen.any() and maskable.any():
        candidates = maskable.nonzero().flatten()
        chosen[candidates[torch.randint(len(candidates), (1,), generator=generator)]] = True
    action = torch.rand(n, generator=generator)
    random_ids = torch.randint(vocab_size, (n,), generator=generator)
    inputs = ids.clone()
    inputs[chosen & (action < replace[0])] = mask_id
    swap = chosen & (action >= replace[0]) & (action < replace[0] + replace[1])
    inputs[swap] = random_ids[swap]
    return inputs, torch.where(chosen, ids, torch.full_like(ids, -100))


class MLMTask(LMTask):
    """Masked-LM fine-tuning and masked-token evaluation on one corpus layout (``model_kind = "masked_lm"``)."""

    model_kind = "masked_lm"

    def __init__(self, spec: LMTaskSpec, seed: int = 0, mask_prob: float = 0.15,
                 split_sizes: Sequence[int] | None = None, split_fraction: Sequence[float] | None = None,
                 label_smoothing: float = 0.0):
        super().__init__(spec, label_smoothing=label_smoothing, split_sizes=split_sizes,
                         split_fraction=split_fraction)
        self.name = f"mlm_{spec.name}"
        if not 0.0 < float(mask_prob) < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        self.seed, self.mask_prob = int(seed), float(mask_prob)
        self.mask_id, self.vocab_size = 0, 1
        self._step, self._row = 0, 0

    def start_step(self, step: int, first_row: int = 0) -> None:
        """The next training collates belong to optimizer step ``step``; their rows are numbered from
        ``first_row``, this process's first row in the step's global batch (``rank * rows per process``). The
        mask key is the global row, not the process's own row number: under DDP each process draws the masks
        of its own rows (the same ones one process would draw for the whole global batch), and a resumed run
        draws the same again."""
        self._step, self._row = int(step), int(first_row)

    def encode(self, examples: Sequence[Any], tokenizer: Any, cfg: Any, training: bool = False) -> list[dict]:
        """Blocks of the split (see the module docstring). Item: ``{"input_ids": (len,) int64, "n_special":
        (before, after), "counts": (len, 3) int64 chars / bytes / words per token (evaluation only),
        "block": index, "label": None}``. Raises ``DataError`` for a tokenizer without a mask token."""
        if tokenizer.mask_token_id is None:
            raise DataError(f"task {self.name}: the tokenizer {type(tokenizer).__name__} "
                            f"({getattr(tokenizer, 'name_or_path', '?')}) has no mask token, so it cannot "
                            "train a masked LM; use a masked-LM tokenizer (BERT, RoBERTa, DeBERTa, MiniLM) or a "
                            "causal-LM task (task.name without mlm_)")
        text = "".join(seg.text for seg in examples)
        if not text:
            raise DataError(f"task {self.name}: nothing to encode (empty dataset)")
        self.mask_id, self.vocab_size = int(tokenizer.mask_token_id), len(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        before, after = special_template(tokenizer)
        body = int(getattr(cfg, "max_length", 512)) - len(before) - len(after)
        if body < 1:
            raise DataError(f"task {self.name}: data.max_length leaves no room beside {len(before) + len(after)} "
                            "special tokens; raise it")
        tok = tokenize_text(tokenizer, text, add_bos=False, counts=not training, word_units=self.spec.words)
        if len(tok) < 1:
            raise DataError(f"task {self.name}: the text has no tokens")
        zeros = torch.zeros(len(tok), dtype=torch.long)
        counts = None if training else torch.stack(
            [tok.n_chars, tok.n_bytes, tok.n_words if tok.n_words is not None else zeros], dim=1)  # (n, 3)
        items = []
        for k, start in enumerate(range(0, len(tok), body)):
            ids = torch.cat([torch.tensor(before), tok.ids[start:start + body], torch.tensor(after)]).long()
            item = {"input_ids": ids, "n_special": (len(before), len(after)), "block": k, "label": None}
            if counts is not None:
                item["counts"] = torch.cat([torch.zeros(len(before), 3, dtype=torch.long), counts[start:start + body],
                                            torch.zeros(len(after), 3, dtype=torch.long)])
            items.append(item)
        return items

    def collate(self, items: Sequence[dict], max_length: int | None = None) -> dict[str, Tensor]:
        """Mask and right-pad: ``input_ids`` (masked), ``attention_mask``, ``labels`` (original ids at the
        masked positions, else -100) ``(batch, seq)``. Evaluation batches (items with ``counts``) also carry
        ``n_tokens``, ``n_chars``, ``n_bytes``, ``n_words`` ``(batch,)`` of the masked targets.
        ``max_length`` (random sequence length) cuts training blocks, keeping the closing special token."""
        inputs, labels, counted = [], [], []
        for it in items:
            evaluation = "counts" in it
            ids = it["input_ids"] if evaluation else cut_keep_last(it["input_ids"], max_length)  # keeps [SEP]
            ids = torch.as_tensor(ids, dtype=torch.long)
            before, after = it["n_special"]
            maskable = torch.zeros(len(ids), dtype=torch.bool)
            maskable[before:len(ids) - after] = True
            if evaluation:
                gen, replace = mask_generator(self.seed, -1, it["block"]), (1.0, 0.0)
            else:
                gen, replace = mask_generator(self.seed, self._step, self._row), (0.8, 0.1)
                self._row += 1
            x, y = mask_tokens(ids, maskable, gen, self.mask_id, self.vocab_size, self.mask_prob, replace)
            inputs.append(x)
            labels.append(y)
            if evaluation:
                scored = y != -100
                counted.append([int(scored.sum())] + it["counts"][scored].sum(0).tolist())
        batch = {"input_ids": pad(inputs, self.pad_id), "attention_mask": pad([torch.ones_like(x) for x in inputs], 0),
                 "labels": pad(labels, -100)}
        if len(counted) == len(items):
            table = torch.tensor(counted, dtype=torch.long)  # (batch, 4)
            for k, key in enumerate(("n_tokens", "n_chars", "n_bytes", "n_words")):
                batch[key] = table[:, k]
        return batch

    # The loss terms are the masked positions themselves (no next-token shift): these three replace the causal
    # token loss that LMTask inherits, and the loop normalises by loss_count over the whole global batch.
    def loss_sum(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """Summed cross-entropy (nats) over the masked targets, with label smoothing."""
        logits = self._logits(model, batch).float()  # (batch, seq, vocab)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1),
                               ignore_index=-100, label_smoothing=self.label_smoothing, reduction="sum")

    @staticmethod
    def loss_count(batch: dict[str, Tensor]) -> int:
        """The masked targets of the batch: ``labels`` (batch, seq) other than -100."""
        return int((batch["labels"] != -100).sum())

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """Mean cross-entropy (nats) over the masked targets, with label smoothing."""
        return self.loss_sum(model, batch) / max(1, self.loss_count(batch))

    @torch.no_grad()
    def predict(self, model: nn.Module, batch: dict[str, Tensor]) -> list[tuple[float, int, int, int, int]]:
        """Per row ``(nll_sum_nats, n_tokens, n_chars, n_bytes, n_words)`` of its masked targets."""
        logits = self._logits(model, batch)
        out = []
        for i in range(logits.shape[0]):
            nll = F.cross_entropy(logits[i].float(), batch["labels"][i], ignore_index=-100, reduction="sum")
            counts = [int(batch[k][i]) if k in batch else 0 for k in ("n_tokens", "n_chars", "n_bytes", "n_words")]
            out.append((float(nll.double()), *counts))
        return out

    def check_model(self, model: nn.Module) -> None:
        """The model must have an output vocabulary holding the tokenizer's ids."""
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if out is not None and out.weight.shape[0] < self.vocab_size:
            raise DataError(f"task {self.name}: the tokenizer has {self.vocab_size} ids but the model's MLM head "
                            f"only {out.weight.shape[0]}; use the model's own tokenizer (model.tokenizer)")


def get_mlm_task(corpus: str, **options: Any) -> MLMTask:
    """The masked-LM task on corpus ``corpus`` (a key of :data:`.lm.LM_TASKS`)."""
    return MLMTask(LM_TASKS[corpus], **options)


for _corpus in LM_TASKS:
    register_task(f"mlm_{_corpus}", functools.partial(get_mlm_task, _corpus),
                  config_options=lambda cfg: {"seed": cfg.training.seed})
