"""Mixed-adapter batches: :func:`adapter_batch` runs batch row i with adapter ``names_per_row[i]``.

Each linear LoRA module stacks its plain adapters into an :class:`AdapterBank` (kept between entries)
and serves the batch through a :class:`RowPlan` (which bank slot each row uses) with one gathered
batched matmul (``LoraLinear._forward_mixed``), so the cost does not grow with the number of distinct
adapters.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .manage import check_adapters_known, lora_modules
from .wrappers import AdapterError, LoraLinear


@contextmanager
def adapter_batch(model: nn.Module, names_per_row: list[str]):
    """Within the block, batch row i runs with adapter ``names_per_row[i]`` (``"__base__"``: none).

    Inference only. Each linear LoRA module serves the batch with one gathered batched matmul, so the
    cost does not grow with the number of distinct adapters. The module's adapters are stacked (ranks
    padded with zeros) into an :class:`AdapterBank` that is kept between entries and rebuilt only when
    an adapter is added, deleted or changed (see :class:`AdapterBank` for what counts as a change);
    entering the block then only checks each module's bank and takes its :class:`RowPlan` for these rows
    (kept in the bank too, see :func:`_row_plan`). Works around ``model(...)`` and ``model.generate(...)``:
    a batch of ``k * len(names_per_row)`` rows (beams laid out with ``repeat_interleave``, prompt i owning
    rows ``i * k .. (i + 1) * k - 1``) gives prompt i's adapter to all of its rows.
    """
    names_per_row = tuple(names_per_row)
    if model.training:
        raise AdapterError("adapter_batch is for inference: call model.eval() first (mixed batches do not train)")
    if not names_per_row:
        raise AdapterError("names_per_row is empty: give one adapter name (or '__base__') per batch row")
    slots = tuple(dict.fromkeys(names_per_row))
    modules = []  # (path, module, the rows' adapters it holds): one walk serves the name check and the setup
    held: set[str] = set()
    for path, module in lora_modules(model):
        lora_a = module.lora_A
        used = [n for n in slots if n in lora_a]
        held.update(used)
        modules.append((path, module, used))
    if any(n not in held and n != "__base__" for n in slots):
        check_adapters_known(model, names_per_row, allow_base=True)  # raises, naming the unknown adapters
    saved = []
    index_cache: dict = {}  # modules holding the same adapters share one row index
    try:
        for path, module, used in modules:
            if used and not isinstance(module, LoraLinear):
                raise AdapterError(f"{path}: mixed-adapter batches support linear layers; this adapts a "
                                 f"{type(module.base_layer).__name__}")
            variants = module.variants
            with_variant = [variants[n] for n in used if n in variants] if variants else []
            if with_variant:
                raise AdapterError(f"{path}: mixed-adapter batches do not support {with_variant[0].name} adapters")
            saved.append((module, module.merged, module.active_adapters))
            if module.merged:
                module.unmerge()
            if used:
                module.row_plan = _row_plan(module, names_per_row, index_cache)
            else:  # none of the rows' adapters is here: every row runs the base layer, whatever is active
                module.active_adapters = []
        yield model
    finally:
        for module, merged, active in saved:  # assigned only where changed: nn.Module.__setattr__ is slow
            if module.row_plan is not None:
                module.row_plan = None
            if module.active_adapters is not active:
                module.active_adapters = active
            if merged:
                module.merge()


@dataclasses.dataclass(frozen=True)
class AdapterBank:
    """Every plain (non-DoRA) adapter of one linear LoRA module, stacked for mixed-adapter batches.

    ``names[i]`` occupies slot i of ``a``: (slots + 1, R, in), its A (rows past its rank zero), and of
    ``bt``: (slots + 1, R, out), its scaling * B^T (dense B for sliced adapters; rows past its rank zero);
    the last slot is all zeros (``"__base__"`` and adapters this module does not hold). R is the largest
    rank; ``ranks[i]`` is the rank of ``names[i]``.

    ``key`` records what the stacks were built from: per adapter its name, scaling and the ``data_ptr`` and
    version counter (``Tensor._version``) of A and B, plus dtype and device. Any in-place change of a LoRA
    weight (``copy_`` under ``torch.no_grad()``, an optimizer step, ``load_state_dict``, ``hotswap_adapter``),
    a new tensor (``.to()``, ``p.data = t``, a new parameter in ``lora_A`` / ``lora_B``), a changed scaling,
    or adding / deleting an adapter (which drops the bank) makes the next :func:`adapter_batch` rebuild it.
    Writes through ``p.data`` (e.g. ``p.data.copy_(t)``) do not advance the version counter and are not
    seen: call :func:`clear_adapter_banks` after them.

    ``plans`` keeps the :class:`RowPlan` of each recent ``names_per_row`` (at most :data:`PLAN_CACHE_SIZE`)
    whose stacks are views of this bank or gathered on every call, so that entering :func:`adapter_batch`
    again with the same rows reuses it; a rebuilt bank starts with none.
    """

    key: tuple
    names: tuple[str, ...]
    ranks: tuple[int, ...]
    a: Tensor
    bt: Tensor
    plans: dict[tuple[str, ...], RowPlan] = dataclasses.field(default_factory=dict, compare=False, repr=False)


@dataclasses.dataclass
class RowPlan:
    """Which bank slot each of the ``rows`` named batch rows uses, and the gathered stacks for them.

    ``index``: (rows,) slot per row; ``rank``: the largest rank among the rows' adapters (the stacks are
    cut to it). :meth:`stacks` returns (A: (rows, rank, in), scaling * B^T: (rows, rank, out)): views of the
    bank when the rows use consecutive slots, else gathered once when small (at most
    :data:`PLAN_GATHER_BYTES`), otherwise on every call.
    """

    bank: AdapterBank
    index: Tensor
    rank: int
    gathered: tuple[Tensor, Tensor] | None = None

    @property
    def rows(self) -> int:
        return self.index.numel()

    def gather(self) -> tuple[Tensor, Tensor]:
        with torch.inference_mode(False), torch.no_grad():
            return (self.bank.a[:, : self.rank].index_select(0, self.index),
                    self.bank.bt[:, : self.rank].index_select(0, self.index))

    def stacks(self) -> tuple[Tensor, Tensor]:
        return self.gathered if self.gathered is not None else self.gather()


PLAN_GATHER_BYTES = 1 << 20  # a module's row plan keeps its gathered stacks when they take at most this
PLAN_CACHE_SIZE = 16  # row plans an adapter bank keeps for later entries (the oldest is dropped first)


def _bank_key(module: LoraLinear, names: tuple[str, ...]) -> tuple:
    """What an :class:`AdapterBank` of ``names`` depends on (see its docstring).

    Reads the ``ParameterDict``s' own ``_parameters`` (where they keep their entries): run for every module
    at every :func:`adapter_batch` entry, ``lora_A[name]`` (a ``Module.__getattr__`` each) would dominate.
    """
    lora_a, lora_b, scaling = module.lora_A._parameters, module.lora_B._parameters, module.scaling
    parts = []
    for name in names:
        a, b = lora_a[name], lora_b[name]
        parts.append((name, scaling[name], a.data_ptr(), a._version, b.data_ptr(), b._version))
    weight = lora_a[names[0]]
    return tuple(parts), weight.dtype, weight.device


def _adapter_bank(module: LoraLinear) -> AdapterBank:
    """The module's :class:`AdapterBank`, restacked only when its key changed.

    When only weights or scalings changed (same adapters, ranks, dtype and device: e.g. after a hot-swap),
    the changed adapters' slots are rewritten in the old bank's tensors instead of stacking anew.
    """
    variants = module.variants  # adapters with a variant (DoRA) are not stacked
    names = tuple(n for n in module.lora_A if n not in variants) if variants else tuple(module.lora_A)
    key = _bank_key(module, names)
    old = module._adapter_bank
    if old is not None and old.key == key:
        return old
    ranks = tuple(module.lora_A[n].shape[0] for n in names)
    rank = max(ranks)
    weight = module.lora_A[names[0]]
    with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, usable outside inference mode
        if old is not None and (old.names, old.ranks, old.a.dtype, old.a.device) == (names, ranks, weight.dtype,
                                                                                     weight.device):
            a, bt = old.a, old.bt
            stale = [part != old_part for part, old_part in zip(key[0], old.key[0], strict=True)]
        else:
            a = weight.new_empty(len(names) + 1, rank, module.fan_in)
            bt = weight.new_empty(len(names) + 1, rank, module.fan_out)
            a[-1].zero_()
            bt[-1].zero_()
            stale = [True] * len(names)
        for i, (name, r) in enumerate(zip(names, ranks, strict=True)):
            if not stale[i]:
                continue
            a[i, :r].copy_(module.lora_A[name])
            torch.mul(module.dense_b(name).t(), module.scaling[name], out=bt[i, :r])
            if r < rank:
                a[i, r:].zero_()
                bt[i, r:].zero_()
    bank = AdapterBank(key, names, ranks, a, bt)
    module._adapter_bank = bank
    return bank


def clear_adapter_banks(model: nn.Module) -> None:
    """Drop every module's cached mixed-batch stacks (needed only after writes through ``param.data``)."""
    for _, module in lora_modules(model):
        module._adapter_bank = None


def _row_plan(module: LoraLinear, names_per_row: tuple[str, ...],
              index_cache: dict[tuple[tuple[str, ...], torch.device], tuple[Tensor, list[int], int | None]]
              ) -> RowPlan:
    """The module's :class:`RowPlan` for ``names_per_row`` (its bank built or reused).

    A plan the bank kept from an earlier entry with the same rows is returned as is. Otherwise
    ``index_cache`` maps a bank's adapter names and device to the row index, the slots in use and the first slot when
    the rows use consecutive slots, so that modules holding the same adapters share them within one
    :func:`adapter_batch` entry; the new plan is kept in the bank unless it holds its own gathered copy
    of the stacks (which would stay allocated).
    """
    bank = _adapter_bank(module)
    plan = bank.plans.get(names_per_row)
    if plan is not None:
        return plan
    with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, reusable outside inference mode
        key = (bank.names, bank.a.device)  # a model split across GPUs needs the index on each module's device
        cached = index_cache.get(key)
        if cached is None:
            slot = {name: i for i, name in enumerate(bank.names)}
            per_row = [slot.get(n, len(bank.names)) for n in names_per_row]
            consecutive = per_row == list(range(per_row[0], per_row[0] + len(per_row)))
            cached = (torch.tensor(per_row, device=bank.a.device), sorted(set(per_row) - {len(bank.names)}),
                      per_row[0] if consecutive else None)
            index_cache[key] = cached
        index, used, first = cached
        plan = RowPlan(bank, index, max(bank.ranks[i] for i in used))
        if first is not None:  # rows use consecutive slots (e.g. every adapter once, in bank order): views
            rows = slice(first, first + plan.rows)
            plan.gathered = (bank.a[rows, : plan.rank], bank.bt[rows, : plan.rank])
        elif plan.rows * plan.rank * (module.fan_in + module.fan_out) * bank.a.element_size() <= PLAN_GATHER_BYTES:
            plan.gathered = plan.gather()
    if first is not None or plan.gathered is None:  # holds no copy of its own: keep it for later entries
        if len(bank.plans) >= PLAN_CACHE_SIZE:
            del bank.plans[next(iter(bank.plans))]
        bank.plans[names_per_row] = plan
    return plan

