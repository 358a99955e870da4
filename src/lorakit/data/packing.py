"""Padding-free packing for causal-LM training: several examples share one row, attention stays inside each.

A padded batch spends compute on padding: a micro-batch of short and long examples is padded to its longest
one. Packing concatenates the examples into rows of at most ``row_length`` tokens instead:

* ``position_ids`` restart at 0 for every example, so each example sees the positions it would see alone;
* attention never crosses from one example into another. The packed batch carries no ``attention_mask``:
  Hugging Face transformers (5.x) derives the segments from the restarting ``position_ids`` itself when no
  2-D mask is given (``masking_utils.find_packed_sequence_indices``) and builds a block-diagonal causal mask
  for the ``sdpa`` and ``eager`` attention implementations, or runs variable-length kernels with
  ``flash_attention_2`` / ``flash_attention_3``. One batch format serves every attention implementation.
  The model must run without a KV cache (:func:`forward_inputs` passes ``use_cache=False``): with a cache,
  transformers ignores the packed segments;
* the first label of every example is ignored (-100): in a packed row the last token of the previous example
  would otherwise be trained to predict it. Unpacked, that label is never a target either (position ``t``
  predicts label ``t + 1``), so the per-example losses of a packed batch equal the unpacked ones.

The unused tail of a row (rows are padded to the longest row only) is one more segment with labels -100, so it
is attended by nothing real. :func:`pack_rows` decides which examples share a row (first-fit decreasing, which
keeps the number of rows small, then evenly filled rows, which keeps their common width small);
:func:`pack_batch` turns a right-padded batch into a packed one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .errors import DataError

__all__ = ["PackingError", "pack_rows", "pack_batch", "forward_inputs", "IGNORE_INDEX"]

IGNORE_INDEX = -100


class PackingError(DataError):
    """An example does not fit into a packed row; the message names it and the setting to change."""


def pack_rows(lengths: Sequence[int], row_length: int) -> list[list[int]]:
    """Group examples of ``lengths`` tokens into as few rows of at most ``row_length`` tokens as first-fit
    decreasing finds, as evenly filled as it can.

    First-fit decreasing: the examples, longest first (ties in input order), each go into the first row with
    room. That gives the number of rows ``k``; the rows are then refilled the same way with the smallest
    capacity (found by bisection, from ``max(longest, ceil(total / k))`` up to ``row_length``) that still
    needs no more than ``k`` rows, so the longest row, which all rows are padded to, is as short as possible.
    Returns the rows as lists of example indices (each row's indices ascending); deterministic.
    Raises :class:`PackingError` if an example is longer than ``row_length`` or ``row_length < 1``.
    """
    if row_length < 1:
        raise PackingError(f"packing needs rows of at least 1 token, got row_length={row_length}")
    for index, n in enumerate(lengths):
        if n > row_length:
            raise PackingError(f"example {index} has {n} tokens, more than a packed row of data.max_length="
                               f"{row_length}; raise data.max_length or set data.truncate: true to cut it")
    rows = _first_fit_decreasing(lengths, row_length)
    low = max(max(lengths, default=0), -(-sum(lengths) // max(len(rows), 1)))
    high = row_length  # fits in len(rows) rows
    while low < high:  # the smallest capacity that keeps the number of rows (FFD is near-monotone in it)
        mid = (low + high) // 2
        if len(_first_fit_decreasing(lengths, mid)) <= len(rows):
            high = mid
        else:
            low = mid + 1
    return [sorted(row) for row in _first_fit_decreasing(lengths, high)]


def _first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def pack_batch(batch: dict[str, Tensor], row_length: int, *, truncate: bool = False) -> dict[str, Tensor]:
    """A right-padded causal-LM batch -> the same examples packed into rows.

    ``batch``: ``input_ids``, ``attention_mask``, ``labels`` ``(batch, seq)`` int64, each example left-aligned
    (``attention_mask`` 1 on its tokens, 0 on the padding after them). Returns ``input_ids``, ``labels``,
    ``position_ids`` ``(rows, width)`` int64, ``width`` = the longest packed row (<= ``row_length``), and no
    ``attention_mask`` (see the module docstring). An example longer than ``row_length`` is an error naming
    it, or, with ``truncate``, is cut to its first ``row_length`` tokens.
    """
    missing = {"input_ids", "attention_mask", "labels"} - set(batch)
    if missing:
        raise PackingError(f"packing needs a causal-LM batch with input_ids, attention_mask and labels; this "
                           f"batch lacks {sorted(missing)}")
    mask = batch["attention_mask"].bool()
    lengths = mask.sum(1).tolist()
    if not torch.equal(mask, torch.arange(mask.shape[1]) < mask.sum(1, keepdim=True)):
        raise PackingError("packing needs right-padded examples (attention_mask 1...1 0...0 in every row)")
    if truncate:
        lengths = [min(n, row_length) for n in lengths]
    rows = pack_rows(lengths, row_length)
    width = max(sum(lengths[i] for i in row) for row in rows)
    input_ids = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            n = lengths[i]
            input_ids[r, start:start + n] = batch["input_ids"][i, :n]
            labels[r, start + 1:start + n] = batch["labels"][i, 1:n]  # the example's first label is never a target
            position_ids[r, start:start + n] = torch.arange(n)
            start += n
        position_ids[r, start:] = torch.arange(width - start)  # the padding tail: a segment of its own
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


def forward_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor | bool]:
    """The keyword arguments of a causal LM's forward for a padded or a packed batch: ``input_ids``, then
    ``attention_mask`` and ``position_ids`` where the batch has them, and ``use_cache=False`` (training and
    scoring need no KV cache, and a packed batch must not have one)."""
    out: dict[str, Tensor | bool] = {"input_ids": batch["input_ids"], "use_cache": False}
    for key in ("attention_mask", "position_ids"):
        if key in batch:
            out[key] = batch[key]
    return out
