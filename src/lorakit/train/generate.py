"""Decoding for causal language models: batched beam search, greedy decoding and sampling, with a KV cache.

Works with Hugging Face GPT-2 and any causal LM whose ``forward`` takes ``input_ids``, ``attention_mask``,
its KV cache (``cache``, or ``past_key_values`` before transformers 5.25: see ``lorakit.hf_compat``) and
``use_cache`` (``position_ids`` and ``logits_to_keep`` are passed when the signature names them) and returns
``.logits`` (batch, seq, vocab) and the cache.

Conventions (the same as Hugging Face ``generate(..., early_stopping="never")``, so results can be checked
against it):

* Prompts are LEFT-padded; ``position_ids`` are ``cumsum(attention_mask) - 1`` (clamped at 0), so a padded
  row computes what the same prompt computes alone. Padding is ignored by the no-repeat-n-gram and
  repetition-penalty rules.
* Beam score of a hypothesis = (sum of the log-probabilities of its generated tokens) / ``length **
  length_penalty``, where ``length`` counts every generated token it was scored on, including the EOS token
  or the stop sequence that ended it (so ``length >= 1``); a hypothesis still running after
  ``max_new_tokens`` has ``length = max_new_tokens``. Log-probabilities are those after the bans
  (no-repeat n-gram, ``min_new_tokens``) and the repetition penalty.
* A beam step ranks the ``num_beams * vocab`` continuations of a prompt. A continuation that ends a
  hypothesis (EOS, or a completed stop sequence) is kept as finished only if it ranks among the top
  ``num_beams`` continuations; the ``num_beams`` best continuations that do not end become the running
  beams. Each prompt keeps its ``num_beams`` best finished hypotheses.
* Early stopping: a prompt stops once it has ``num_beams`` finished hypotheses and no running beam can
  beat the worst of them. The bound is exact, not a heuristic: log-probabilities are <= 0, so a running
  beam with sum ``s`` can at best finish with score ``s / L ** length_penalty`` at the most favourable
  length ``L`` still reachable (``max_new_tokens`` when ``length_penalty > 0``, the next length when it is
  < 0). Stopping early therefore never changes the result.
* ``num_beams == 1`` is greedy decoding (the length penalty has no effect there).
* ``min_new_tokens = m``: EOS is banned for the first ``m`` steps and a stop sequence ends a hypothesis only
  if at least ``m`` tokens precede it, so every returned sequence has at least ``m`` tokens.
* The repetition penalty (CTRL) divides positive / multiplies negative logits of every token already in the
  prompt or the output, before normalisation, for all strategies.

Batch rows are never dropped while decoding (finished rows keep running until all are done), and beams are
laid out with ``repeat_interleave``: prompt ``i`` owns rows ``i * num_beams .. (i + 1) * num_beams - 1``.
This keeps ``lorakit.adapter_batch`` (one adapter per prompt) valid throughout.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..hf_compat import cache_argument, output_cache

__all__ = ["GenerationConfig", "generate", "STRATEGIES"]

STRATEGIES = ("beam", "greedy", "sample")
_NEG_INF = float("-inf")


@dataclass
class GenerationConfig:
    """Decoding settings; defaults are the LoRA paper's NLG setup (beam 10, length penalty 0.8, no-repeat 4).

    Validated on construction and again by :func:`generate`; errors name the setting as
    ``generation.<field>``.
    """

    strategy: str = "beam"  # "beam" | "greedy" | "sample"
    num_beams: int = 10
    length_penalty: float = 0.8  # score = sum logprob / (generated length incl. EOS) ** length_penalty
    no_repeat_ngram_size: int = 4  # 0 = off; over prompt + generated tokens
    max_new_tokens: int = 64
    min_new_tokens: int = 0
    temperature: float = 1.0  # sample only
    top_k: int = 0  # sample only, 0 = off
    top_p: float = 1.0  # sample only, 1.0 = off
    repetition_penalty: float = 1.0  # 1.0 = off
    use_cache: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting and how to fix it."""
        if self.strategy not in STRATEGIES:
            raise ValueError(f"generation.strategy must be one of {', '.join(map(repr, STRATEGIES))}, "
                             f"got {self.strategy!r}")
        _check_int("num_beams", self.num_beams, 1, "use 1 for greedy decoding or e.g. 10 for beam search")
        _check_int("max_new_tokens", self.max_new_tokens, 1, "generate at least one token, e.g. 64")
        _check_int("min_new_tokens", self.min_new_tokens, 0, "use 0 to turn it off")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"generation.min_new_tokens ({self.min_new_tokens}) exceeds generation.max_new_tokens "
                             f"({self.max_new_tokens}); lower min_new_tokens or raise max_new_tokens")
        _check_int("no_repeat_ngram_size", self.no_repeat_ngram_size, 0, "use 0 to turn it off")
        _check_int("top_k", self.top_k, 0, "use 0 to turn it off")
        if not _is_real(self.length_penalty) or not math.isfinite(self.length_penalty):
            raise ValueError(f"generation.length_penalty must be a finite number (e.g. 0.8), "
                             f"got {self.length_penalty!r}")
        if not _is_real(self.temperature) or not self.temperature > 0 or not math.isfinite(self.temperature):
            raise ValueError(f"generation.temperature must be a positive number (1.0 = off), got {self.temperature!r}")
        if not _is_real(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"generation.top_p must be in (0, 1] (1.0 = off), got {self.top_p!r}")
        if not _is_real(self.repetition_penalty) or not self.repetition_penalty > 0 \
                or not math.isfinite(self.repetition_penalty):
            raise ValueError(f"generation.repetition_penalty must be a positive number (1.0 = off), "
                             f"got {self.repetition_penalty!r}")
        if not isinstance(self.use_cache, bool):
            raise ValueError(f"generation.use_cache must be true or false, got {self.use_cache!r}")


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(name: str, value: Any, minimum: int, hint: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"generation.{name} must be an integer >= {minimum}, got {value!r}; {hint}")


# ---------------------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def generate(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, config: GenerationConfig, *,
             eos_token_id: int | Sequence[int], pad_token_id: int | None = None,
             stop_sequences: Sequence[Sequence[int]] = (),
             generator: torch.Generator | None = None) -> list[list[int]]:
    """Continue each prompt of a batch; return the generated token ids of each row's best hypothesis.

    Args:
        model: a causal LM (see the module docstring); put it in ``eval()`` mode first.
        input_ids: (batch, prompt_len) int64, LEFT-padded prompts (moved to the model's device).
        attention_mask: (batch, prompt_len), 1 for tokens and 0 for (left) padding; ``None`` = no padding.
        config: decoding settings.
        eos_token_id: id or ids that end a hypothesis.
        pad_token_id: id fed for rows that already finished (greedy/sample); defaults to the first EOS id.
            It never appears in the output.
        stop_sequences: token-id sequences that end a hypothesis when the generated tokens end with one
            (e.g. the ids of a blank line). Only generated tokens are matched, never the prompt.
        generator: random source for ``strategy="sample"`` (on the model's device), for reproducible output.

    Returns:
        ``batch`` lists of token ids: without the prompt, without the EOS token and without the matched
        stop sequence; at most ``max_new_tokens`` long.
    """
    config.validate()
    ids, mask = _check_prompts(input_ids, attention_mask)
    param = next(model.parameters(), None)
    if param is not None and param.device != ids.device:  # prompts follow the model
        ids, mask = ids.to(param.device), mask.to(param.device)
    eos = _id_list(eos_token_id)
    stops = [[int(tok) for tok in seq] for seq in stop_sequences]
    for i, seq in enumerate(stops):
        if not seq:
            raise ValueError(f"stop_sequences[{i}] is empty; every stop sequence needs at least one token id")
    pad = eos[0] if pad_token_id is None else int(pad_token_id)
    _check_ids(_declared_vocab_size(model), eos, stops, pad, ids)
    _check_context(model, mask, config)

    runner = _Runner(model, config.use_cache)
    logits = runner.forward(ids, mask)  # (batch, vocab)
    _check_ids(logits.shape[-1], eos, stops, pad, ids)
    rules = _Rules(config, eos, stops, logits.shape[-1], ids.device)
    if config.strategy == "beam" and config.num_beams > 1:
        return _beam_search(runner, logits, ids, mask, config, rules)
    return _greedy_or_sample(runner, logits, ids, mask, config, rules, pad,
                             sample=config.strategy == "sample", generator=generator)


# ---------------------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------------------
def _check_prompts(input_ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(batch, prompt_len) ids and a 0/1 int64 mask of the same shape, after checking left padding."""
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.dtype.is_floating_point \
            or input_ids.dtype == torch.bool:
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a (batch, prompt_len) integer tensor, got {shape}")
    if input_ids.shape[0] == 0:
        raise ValueError("empty batch: input_ids has 0 rows; pass at least one prompt")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids has 0 columns: every prompt needs at least one token")
    ids = input_ids.long()
    if attention_mask is None:
        return ids, torch.ones_like(ids)
    if tuple(attention_mask.shape) != tuple(ids.shape):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                         f"{tuple(ids.shape)}; they must match")
    mask = (attention_mask.to(ids.device) != 0).long()
    empty = (mask.sum(1) == 0).nonzero()
    if empty.numel():
        row = int(empty[0, 0])
        raise ValueError(f"attention_mask row {row} is all padding (an empty prompt); every prompt needs at "
                         "least one token: drop the empty example or give it a token such as BOS")
    bad = (mask.diff(dim=1) < 0).any(1).nonzero()
    if bad.numel():
        row = int(bad[0, 0])
        raise ValueError(f"attention_mask is not left-padded: row {row} has padding after a real token; "
                         "tokenize prompts with padding_side='left'")
    return ids, mask


def _id_list(eos_token_id: int | Sequence[int]) -> list[int]:
    if isinstance(eos_token_id, Tensor):
        eos_token_id = eos_token_id.flatten().tolist()
    if isinstance(eos_token_id, numbers.Integral) and not isinstance(eos_token_id, bool):
        return [int(eos_token_id)]
    if not isinstance(eos_token_id, Sequence) or isinstance(eos_token_id, str) \
            or not all(isinstance(v, numbers.Integral) for v in eos_token_id):
        raise ValueError(f"eos_token_id must be an int or a list of ints, got {eos_token_id!r}")
    eos = [int(v) for v in eos_token_id]
    if not eos:
        raise ValueError("eos_token_id is an empty list; give at least one id (the tokenizer's eos_token_id)")
    return list(dict.fromkeys(eos))


def _declared_vocab_size(model: nn.Module) -> int | None:
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(size, int) and size > 0:
        return size
    get_out = getattr(model, "get_output_embeddings", None)
    head = get_out() if callable(get_out) else None
    weight = getattr(head, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, Tensor) else None


def _check_ids(vocab: int | None, eos: list[int], stops: list[list[int]], pad: int, ids: Tensor) -> None:
    if vocab is None:
        return
    where = f"the model's vocabulary of {vocab} tokens (ids 0..{vocab - 1})"
    for tok in eos:
        if not 0 <= tok < vocab:
            raise ValueError(f"eos_token_id {tok} is outside {where}; pass the tokenizer's eos_token_id for "
                             "this model")
    for i, seq in enumerate(stops):
        if any(not 0 <= tok < vocab for tok in seq):
            raise ValueError(f"stop_sequences[{i}] = {seq} has an id outside {where}; encode the stop text "
                             "with this model's tokenizer")
    if not 0 <= pad < vocab:
        raise ValueError(f"pad_token_id {pad} is outside {where}; pass the tokenizer's pad (or eos) token id")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab:
        raise ValueError(f"input_ids contain id {low if low < 0 else high}, outside {where}; the prompts were "
                         "encoded with a different tokenizer")


def _context_size(model: nn.Module) -> tuple[str, int] | None:
    config = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return name, value
    return None


def _check_context(model: nn.Module, mask: Tensor, config: GenerationConfig) -> None:
    context = _context_size(model)
    if context is None:
        return
    name, size = context
    longest = int(mask.sum(1).max())
    if longest + config.max_new_tokens > size:
        raise ValueError(
            f"prompt length {longest} (longest prompt in the batch, without padding) + generation.max_new_tokens "
            f"{config.max_new_tokens} = {longest + config.max_new_tokens} exceeds the model's context of {size} "
            f"positions (config.{name}); shorten data.max_length (the prompt) or generation.max_new_tokens so "
            f"that their sum is at most {size}")


# ---------------------------------------------------------------------------------------------------------
# model calls and the KV cache
# ---------------------------------------------------------------------------------------------------------
class _Runner:
    """Calls the model and owns its KV cache (a transformers ``Cache`` or the legacy tuple format).

    Without a cache (``use_cache=False``, a model that returns none, or a cache that cannot be reordered)
    each call recomputes the whole sequence; a call that finds no cache rebuilds one when caching is on.
    """

    def __init__(self, model: nn.Module, use_cache: bool) -> None:
        self.model = model
        self.use_cache = use_cache
        self.past: Any = None
        params = inspect.signature(model.forward).parameters
        self.pass_positions = "position_ids" in params
        self.pass_keep = "logits_to_keep" in params
        self.cache_argument = cache_argument(model)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """tokens, mask: (rows, seq) -> next-token logits (rows, vocab) of the last position.

        With a cache only the last token is fed (the cache holds the rest)."""
        if self.past is None:
            inputs, positions = tokens, (mask.cumsum(1) - 1).clamp(min=0)
        else:
            inputs, positions = tokens[:, -1:], mask.sum(1, keepdim=True) - 1
        kwargs: dict[str, Any] = {"input_ids": inputs, "attention_mask": mask, "use_cache": self.use_cache}
        if self.use_cache:
            kwargs[self.cache_argument] = self.past
        if self.pass_positions:
            kwargs["position_ids"] = positions
        if self.pass_keep:
            kwargs["logits_to_keep"] = 1
        out = self.model(**kwargs)
        self.past = output_cache(out) if self.use_cache else None
        logits = out.logits[:, -1, :]
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        return logits

    def repeat_interleave(self, repeats: int) -> None:
        """Each cached row becomes ``repeats`` consecutive rows (prompt -> its beams)."""
        if self.past is None:
            return
        if hasattr(self.past, "batch_repeat_interleave"):
            self.past.batch_repeat_interleave(repeats)
        elif isinstance(self.past, (tuple, list)):
            self.past = _map_tensors(self.past, lambda t: t.repeat_interleave(repeats, dim=0))
        else:
            self.past = None  # unknown cache type: the next call recomputes (and re-caches) the full rows

    def reorder(self, rows: Tensor) -> None:
        """rows: (new_rows,) int64; new row j continues old row ``rows[j]`` (beam search)."""
        if self.past is None:
            return
        if hasattr(self.past, "reorder_cache"):
            self.past.reorder_cache(rows)
        elif isinstance(self.past, (tuple, list)):
            self.past = _map_tensors(self.past, lambda t: t.index_select(0, rows.to(t.device)))
        else:
            self.past = None


def _map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map_tensors(item, fn) for item in obj)
    return obj


# ---------------------------------------------------------------------------------------------------------
# logits processing shared by all strategies
# ---------------------------------------------------------------------------------------------------------
class _Rules:
    """Bans, penalties and the "does this token end the hypothesis" table.

    Ending tokens: the EOS ids and the last token of each stop sequence, ``cols`` (f,) in the vocabulary;
    ``col_of`` (vocab,) maps a token id to its column there, or -1.
    """

    def __init__(self, config: GenerationConfig, eos: list[int], stops: list[list[int]], vocab: int,
                 device: torch.device) -> None:
        self.config = config
        self.vocab = vocab
        self.eos = torch.tensor(eos, device=device)
        enders = list(dict.fromkeys(eos + [seq[-1] for seq in stops]))
        self.cols = torch.tensor(enders, device=device)
        self.col_of = torch.full((vocab,), -1, dtype=torch.long, device=device)
        self.col_of[self.cols] = torch.arange(len(enders), device=device)
        self.eos_cols = torch.tensor([enders.index(tok) for tok in eos], device=device)
        self.stops = [(len(seq), torch.tensor(seq[:-1], device=device), enders.index(seq[-1])) for seq in stops]

    def process(self, logits: Tensor, tokens: Tensor, pad_len: Tensor, step: int, log_probs: bool) -> Tensor:
        """logits (rows, vocab), tokens (rows, seq) = left-padded prompt + generated, pad_len (rows,).

        Returns a new (rows, vocab) tensor of scores with banned tokens at -inf: log-probabilities if
        ``log_probs``, else (penalised) logits. Bans are written sparsely (no (rows, vocab) masks)."""
        cfg = self.config
        valid = torch.arange(tokens.shape[1], device=tokens.device)[None, :] >= pad_len[:, None]  # (rows, seq)
        penalty = cfg.repetition_penalty
        if penalty != 1.0:
            seen = torch.where(valid, tokens, tokens[:, -1:])  # padding -> the (valid) last token
            values = logits.gather(1, seen)
            logits = logits.scatter(1, seen, torch.where(values > 0, values / penalty, values * penalty))
        if log_probs:
            scores = torch.log_softmax(logits, dim=-1)
        else:
            scores = logits if penalty != 1.0 else logits.clone()
        if step < cfg.min_new_tokens:
            scores[:, self.eos] = _NEG_INF
        n = cfg.no_repeat_ngram_size
        if n and tokens.shape[1] >= n:
            scores[self._ngram_bans(tokens, valid, n)] = _NEG_INF
        return scores

    @staticmethod
    def _ngram_bans(tokens: Tensor, valid: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """(row, token) index pairs, each (bans,): tokens that would complete an n-gram already in the row's
        valid (non-padding) tokens."""
        seq = tokens.shape[1]
        windows = tokens.unfold(1, n, 1)  # (rows, seq - n + 1, n): every complete n-gram
        suffix = tokens[:, seq - n + 1:]  # (rows, n - 1): what the next token would extend
        hit = (windows[:, :, :-1] == suffix[:, None, :]).all(-1)  # (rows, seq - n + 1)
        # a window counts if it starts after the padding, and so must the suffix (all later tokens are valid)
        hit &= valid[:, : seq - n + 1] & valid[:, seq - n + 1: seq - n + 2] if n > 1 else valid
        rows, starts = hit.nonzero(as_tuple=True)
        return rows, windows[rows, starts, n - 1]

    def endings(self, generated: Tensor) -> Tensor:
        """generated (rows, step) -> (rows, f) int64: how many trailing tokens to strip if the next token is
        ending column c (its EOS or the longest stop sequence it completes); 0 = the token does not end."""
        rows, step = generated.shape
        strip = torch.zeros(rows, self.cols.numel(), dtype=torch.long, device=generated.device)
        min_new = self.config.min_new_tokens
        if step >= min_new:
            strip[:, self.eos_cols] = 1
        for length, prefix, col in self.stops:
            if step + 1 - length < min_new:  # the kept text would be shorter than min_new_tokens
                continue
            if length == 1:
                strip[:, col] = torch.clamp(strip[:, col], min=1)
                continue
            match = (generated[:, step - length + 1:] == prefix).all(1)
            strip[:, col] = torch.maximum(strip[:, col], match.long() * length)
        return strip

    def strip_of(self, strip: Tensor, rows: Tensor, tokens: Tensor) -> Tensor:
        """strip (R, f) from :meth:`endings`; rows, tokens (...) int64 -> (...) strip length of each pair."""
        col = self.col_of[tokens]
        return torch.where(col >= 0, strip[rows, col.clamp(min=0)], 0)


# ---------------------------------------------------------------------------------------------------------
# greedy and sampling
# ---------------------------------------------------------------------------------------------------------
def _greedy_or_sample(runner: _Runner, logits: Tensor, ids: Tensor, mask: Tensor, config: GenerationConfig,
                      rules: _Rules, pad: int, *, sample: bool, generator: torch.Generator | None) -> list[list[int]]:
    """logits (batch, vocab) of the prompts' last positions; ids, mask (batch, prompt_len)."""
    batch, prompt_len = ids.shape
    device = ids.device
    pad_len = prompt_len - mask.sum(1)
    rows = torch.arange(batch, device=device)
    tokens = ids
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    end = torch.full((batch,), config.max_new_tokens, dtype=torch.long, device=device)  # kept + stripped
    strip_len = torch.zeros(batch, dtype=torch.long, device=device)
    for step in range(config.max_new_tokens):
        if step:
            logits = runner.forward(tokens, mask)
        scores = rules.process(logits, tokens, pad_len, step, log_probs=False)
        dead = torch.isneginf(scores).all(1)  # every token banned: the row ends here
        if sample:
            nxt = _sample(scores.masked_fill(dead[:, None], 0.0), config, generator)
        else:
            nxt = scores.argmax(1)
        ends = rules.strip_of(rules.endings(tokens[:, prompt_len:]), rows, nxt)
        stop_dead = dead & ~finished
        stop_end = (ends > 0) & ~finished & ~dead
        end = torch.where(stop_dead, step, torch.where(stop_end, step + 1, end))
        strip_len = torch.where(stop_end, ends, strip_len)
        nxt = torch.where(finished | dead, pad, nxt)
        finished |= stop_dead | stop_end
        tokens = torch.cat([tokens, nxt[:, None]], 1)
        if bool(finished.all()):
            break
        mask = torch.cat([mask, mask.new_ones(batch, 1)], 1)
    keep = (end - strip_len).tolist()
    generated = tokens[:, prompt_len:].tolist()
    return [row[:k] for row, k in zip(generated, keep, strict=True)]


def _sample(scores: Tensor, config: GenerationConfig, generator: torch.Generator | None) -> Tensor:
    """scores (rows, vocab) logits with -inf bans -> (rows,) sampled ids (temperature, top-k, top-p)."""
    if config.temperature != 1.0:
        scores = scores / config.temperature
    if 0 < config.top_k < scores.shape[-1]:
        kth = scores.topk(config.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, _NEG_INF)
    if config.top_p < 1.0:
        ordered, order = scores.sort(dim=-1, descending=True)
        probs = ordered.softmax(-1)
        before = probs.cumsum(-1) - probs  # probability mass of the better tokens
        drop = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order, before >= config.top_p)
        scores = scores.masked_fill(drop, _NEG_INF)
    return torch.multinomial(scores.softmax(-1), 1, generator=generator)[:, 0]


# ---------------------------------------------------------------------------------------------------------
# beam search
# ---------------------------------------------------------------------------------------------------------
class _Hypotheses:
    """The ``size`` best finished hypotheses of one prompt (score, kept token ids)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: list[tuple[float, list[int]]] = []
        self.worst = _NEG_INF

    def full(self) -> bool:
        return len(self.items) >= self.size

    def wants(self, score: float) -> bool:
        return score > _NEG_INF and (not self.full() or score > self.worst)

    def add(self, score: float, tokens: list[int]) -> None:
        if not self.wants(score):
            return
        if self.full():
            self.items.remove(min(self.items, key=lambda item: item[0]))
        self.items.append((score, tokens))
        self.worst = min(item[0] for item in self.items) if self.full() else _NEG_INF

    def best(self) -> list[int] | None:
        return max(self.items, key=lambda item: item[0])[1] if self.items else None


def _beam_search(runner: _Runner, logits: Tensor, ids: Tensor, mask: Tensor, config: GenerationConfig,
                 rules: _Rules) -> list[list[int]]:
    """logits (batch, vocab) of the prompts' last positions; ids, mask (batch, prompt_len).

    State: ``rows = batch * beams`` running beams, ``tokens`` (rows, prompt_len + step), ``running``
    (batch, beams) summed log-probabilities (beam 0 best; -inf for empty slots)."""
    batch, prompt_len = ids.shape
    beams, vocab, device = config.num_beams, logits.shape[-1], ids.device
    max_new, penalty = config.max_new_tokens, config.length_penalty
    runner.repeat_interleave(beams)
    tokens = ids.repeat_interleave(beams, 0)
    mask = mask.repeat_interleave(beams, 0)
    logits = logits.repeat_interleave(beams, 0)
    pad_len = prompt_len - mask.sum(1)
    offsets = torch.arange(batch, device=device)[:, None] * beams  # (batch, 1) first row of each prompt
    running = torch.full((batch, beams), _NEG_INF, device=device, dtype=logits.dtype)
    running[:, 0] = 0.0
    found = [_Hypotheses(beams) for _ in range(batch)]
    done = [False] * batch
    for step in range(max_new):
        if step:
            logits = runner.forward(tokens, mask)
        logp = rules.process(logits, tokens, pad_len, step, log_probs=True)  # (rows, vocab)
        strip = rules.endings(tokens[:, prompt_len:])  # (rows, f)
        candidates = logp.add_(running.view(-1, 1)).view(batch, beams * vocab)  # (batch, beams * vocab)
        last = step + 1 == max_new
        # At most beams * f candidates end, so the top beams * (1 + f) hold `beams` that continue.
        width = min(beams if last else beams * (1 + rules.cols.numel()), beams * vocab)
        top, index = candidates.topk(width, dim=1)  # (batch, width), best first
        src = index // vocab + offsets  # row each candidate extends
        tok = index % vocab
        ends = rules.strip_of(strip, src, tok)  # (batch, width)

        # finished hypotheses: the top `beams` candidates that end (all of them at the last step)
        admit = top[:, :beams] > _NEG_INF
        if not last:
            admit &= ends[:, :beams] > 0
        _collect(found, done, admit, top[:, :beams] / float(step + 1) ** penalty, src[:, :beams],
                 tok[:, :beams], ends[:, :beams], tokens[:, prompt_len:])
        if last:
            break

        # running beams: the best `beams` candidates that do not end
        cont, pick = top.masked_fill(ends > 0, _NEG_INF).topk(beams, dim=1)  # (batch, beams)
        running = cont
        best = running[:, 0].tolist()
        for b in range(batch):
            if not done[b] and found[b].full() and _bound(best[b], step + 1, max_new, penalty) <= found[b].worst:
                done[b] = True
        if all(done):
            break
        order = src.gather(1, pick).view(-1)  # (rows,)
        tokens = torch.cat([tokens[order], tok.gather(1, pick).view(-1, 1)], 1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)  # beams of a prompt share its mask
        runner.reorder(order)

    out = []
    for b in range(batch):
        best_tokens = found[b].best()
        out.append(best_tokens if best_tokens is not None else tokens[b * beams, prompt_len:].tolist())
    return out


def _collect(found: list[_Hypotheses], done: list[bool], admit: Tensor, scores: Tensor, src: Tensor, tok: Tensor,
             ends: Tensor, generated: Tensor) -> None:
    """Add admitted candidates (batch, beams) to the prompts' finished lists (Python bookkeeping only).

    scores: length-normalised; src: row extended; tok: the new token; ends: tokens to strip (0 = none)."""
    picked = admit.nonzero().tolist()
    if not picked:
        return
    where = tuple(torch.tensor(picked, device=admit.device).t())
    score_l, src_l, tok_l, end_l = (t[where].tolist() for t in (scores, src, tok, ends))
    for (b, _), score, row, token, cut in zip(picked, score_l, src_l, tok_l, end_l, strict=True):
        if done[b] or not found[b].wants(score):
            continue
        seq = generated[row].tolist() + [token]
        found[b].add(score, seq[: len(seq) - cut])


def _bound(best_sum: float, length: int, max_new: int, penalty: float) -> float:
    """Best final score reachable by a running beam with ``length`` tokens and log-prob sum ``best_sum``.

    Sums only decrease, so the bound divides ``best_sum`` by the most favourable reachable length."""
    if best_sum == _NEG_INF:
        return _NEG_INF
    if penalty > 0:
        return best_sum / float(max_new) ** penalty
    if penalty < 0:
        return best_sum / float(min(length + 1, max_new)) ** penalty
    return best_sum
