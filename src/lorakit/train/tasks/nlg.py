"""NLG tasks of the LoRA paper's GPT-2 table: E2E NLG, WebNLG 2017 and DART, as conditional generation.

Every example is a ``context`` (an E2E meaning representation, or linearised triples) with its human
references (:mod:`lorakit.data.nlg` reads the official files). The model is a causal LM
(GPT-2): it reads the prompt ``data.prompt_template.format(context=...)`` and continues with the text.

* Training items: one per (context, reference) pair, ``prompt + reference + EOS``; the loss is the
  cross-entropy (with ``training.label_smoothing``) on the completion tokens only: prompt tokens and
  padding are ignored.
* Evaluation items: one per context, the prompt alone; :func:`lorakit.train.generate.generate` decodes
  (``generation`` section: the paper's beam 10, length penalty 0.8, no-repeat-ngram 4, 64 new tokens) and
  the metrics compare the text with all references of that context: E2E's BLEU, NIST, METEOR, ROUGE-L
  and CIDEr as the official E2E scorer computes them (grouped by MR); WebNLG and DART's BLEU, METEOR
  and TER (WebNLG also per ``seen`` / ``unseen`` category).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..batches import TokenLoss
from ..distributed import unwrap
from .base import DataError, pad, register_task

__all__ = ["NLG_TASKS", "NLGTask"]

NLG_TASKS = ("e2e", "webnlg", "dart")

_METRIC_NAMES = {  # (all, fast): what metrics() reports in each mode
    "e2e": (("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"), ("BLEU", "NIST")),
    "webnlg": (tuple(f"{m}{s}" for s in ("", "_seen", "_unseen") for m in ("BLEU", "METEOR", "TER")),
               tuple(f"{m}{s}" for s in ("", "_seen", "_unseen") for m in ("BLEU", "TER"))),
    "dart": (("BLEU", "METEOR", "TER"), ("BLEU", "TER")),
}


class NLGTask(TokenLoss):
    """Conditional generation with a causal LM: ``model_kind = "causal_lm"``.

    ``generation``: the config's ``generation`` section (or ``None`` for its defaults); it also says
    whether ``metrics`` computes the full official set (``"all"``, needs Java for METEOR/ROUGE-L/CIDEr)
    or the Java-free ``"fast"`` subset.
    """

    model_kind = "causal_lm"
    num_labels = 0
    main_metric = "BLEU"
    lower_is_better = ("TER", "TER_seen", "TER_unseen")  # an edit rate; BLEU, NIST, METEOR, ROUGE_L, CIDEr rise

    def __init__(self, name: str, label_smoothing: float = 0.0, generation: Any = None):
        if name not in NLG_TASKS:
            raise ValueError(f"unknown NLG task {name!r}; known: {', '.join(NLG_TASKS)}")
        self.name = name
        self.label_smoothing = float(label_smoothing)
        self.generation = _generation_section(generation)
        self.metric_names = _METRIC_NAMES[name][0 if self.generation["metrics"] == "all" else 1]
        self.tokenizer: Any = None
        self.eos_id: int | None = None
        self.pad_id = 0
        self.stop_sequences: list[list[int]] = []
        self.longest = {"prompt": 0, "item": 0}  # tokens, over everything encoded so far

    # -- load / encode -------------------------------------------------------------------------------
    def load(self, split: str, data_dir: str | Path) -> list:
        """The split's examples, one per context, with all its references (``NLGExample``)."""
        from lorakit.data.nlg import read_split

        return read_split(self.name, split, data_dir)

    def encode(self, examples: Sequence[Any], tokenizer: Any, cfg: Any, training: bool = False) -> list[dict]:
        """Training: one item per reference (``input_ids``, ``labels`` with -100 on the prompt).
        Evaluation: one item per context (``prompt_ids``; ``label`` holds the references)."""
        if not examples:
            raise DataError(f"task {self.name}: nothing to encode (empty dataset)")
        self._bind_tokenizer(tokenizer)
        pre, post = _template_parts(cfg.prompt_template)
        pre_ids, post_ids = _ids(tokenizer, pre), _ids(tokenizer, post)
        budget = int(cfg.max_prompt_length) - len(pre_ids) - len(post_ids)
        if budget < 1:
            raise DataError(f"data.max_prompt_length={cfg.max_prompt_length} leaves no room for the context after "
                            f"the prompt template's {len(pre_ids) + len(post_ids)} tokens; raise it")
        max_length = int(cfg.max_length)
        items: list[dict] = []
        for e in examples:
            prompt = pre_ids + _ids(tokenizer, e.context)[:budget] + post_ids
            self.longest["prompt"] = max(self.longest["prompt"], len(prompt))
            if not training:
                items.append({"prompt_ids": prompt, "label": {"references": list(e.references),
                                                              "seen": e.seen, "source": e.source}})
                continue
            if not e.references:
                raise DataError(f"{e.source}: no reference text to train on (a reference-less test file was "
                                "given as data.train_split?)")
            room = max_length - len(prompt) - 1
            if room < 1:
                raise DataError(f"{e.source}: the prompt has {len(prompt)} tokens, data.max_length={max_length} "
                                "leaves no room for the completion; raise max_length or lower max_prompt_length")
            for ref in e.references:
                completion = _ids(tokenizer, _completion_text(ref))[:room] + [self.eos_id]
                items.append({"input_ids": prompt + completion, "labels": [-100] * len(prompt) + completion})
                self.longest["item"] = max(self.longest["item"], len(prompt) + len(completion))
        return items

    def check_model(self, model: nn.Module) -> None:
        """Refuse, before training, sequences the model cannot hold: the longest training item, and the
        longest prompt plus ``generation.max_new_tokens``, against the model's positions."""
        config = getattr(model, "config", None)
        limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        if limit is None:
            return
        if self.longest["item"] > limit:
            raise DataError(f"a training sequence has {self.longest['item']} tokens but the model holds {limit} "
                            f"positions; lower data.max_length (now cutting at the longest item) to <= {limit}")
        need = self.longest["prompt"] + int(self.generation["max_new_tokens"])
        if need > limit:
            raise DataError(f"the longest prompt ({self.longest['prompt']} tokens) plus generation.max_new_tokens "
                            f"({self.generation['max_new_tokens']}) is {need} tokens, more than the model's {limit} "
                            "positions; lower data.max_prompt_length or generation.max_new_tokens")

    def _bind_tokenizer(self, tokenizer: Any) -> None:
        """Remember the tokenizer for decoding and resolve EOS, padding and the stop strings' ids."""
        eos = self.generation["eos_token"]
        if eos is None:
            if tokenizer.eos_token_id is None:
                raise DataError("the tokenizer has no EOS token; name one with generation.eos_token")
            eos_id = int(tokenizer.eos_token_id)
        else:
            eos_id = tokenizer.convert_tokens_to_ids(eos)
            unk = getattr(tokenizer, "unk_token_id", None)
            if eos_id is None or (unk is not None and eos_id == unk and eos != tokenizer.unk_token):
                raise DataError(f"generation.eos_token {eos!r} is not a token of this tokenizer "
                                f"(its EOS token is {tokenizer.eos_token!r})")
        self.tokenizer, self.eos_id = tokenizer, int(eos_id)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.stop_sequences = _stop_sequences(tokenizer, self.generation["stop"])

    # -- collate ---------------------------------------------------------------------------------------
    def collate(self, items: Sequence[dict], max_length: int | None = None) -> dict[str, Tensor]:
        """Training items -> right-padded ``input_ids``, ``attention_mask``, ``labels`` ``(batch, seq)``;
        evaluation items -> left-padded prompts ``input_ids``, ``attention_mask`` ``(batch, prompt_len)``
        (generation appends at the right end)."""
        if "labels" in items[0]:
            ids = [it["input_ids"][:max_length] for it in items]
            labels = [it["labels"][:max_length] for it in items]
            mask = pad([[1] * len(s) for s in ids], 0)
            return {"input_ids": pad(ids, self.pad_id), "attention_mask": mask, "labels": pad(labels, -100)}
        prompts = [it["prompt_ids"] for it in items]
        mask = pad([[1] * len(p) for p in prompts], 0, left=True)
        return {"input_ids": pad(prompts, self.pad_id, left=True), "attention_mask": mask}

    # -- loss / predict ----------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, model: nn.Module, batch: dict[str, Tensor]) -> list[str]:
        """Decode each prompt of the batch with the ``generation`` settings; one string per row."""
        from lorakit.train.generate import GenerationConfig, generate

        if self.tokenizer is None:
            raise RuntimeError("NLGTask.predict before encode: the task needs the tokenizer from encode()")
        g = self.generation
        config = GenerationConfig(
            strategy=g["strategy"], num_beams=g["num_beams"], length_penalty=g["length_penalty"],
            no_repeat_ngram_size=g["no_repeat_ngram_size"], max_new_tokens=g["max_new_tokens"],
            min_new_tokens=g["min_new_tokens"], temperature=g["temperature"], top_k=g["top_k"], top_p=g["top_p"],
            repetition_penalty=g["repetition_penalty"],
        )
        generator = None
        if g["strategy"] == "sample":
            generator = torch.Generator(device=batch["input_ids"].device).manual_seed(0)
        out = generate(unwrap(model), batch["input_ids"], batch["attention_mask"], config, eos_token_id=self.eos_id,
                       pad_token_id=self.pad_id, stop_sequences=self.stop_sequences, generator=generator)
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in out]

    # -- metrics -----------------------------------------------------------------------------------------
    def metrics(self, predictions: Sequence[str], references: Sequence[dict]) -> dict[str, float]:
        """The task's corpus metrics (names in ``self.metric_names``; E2E's BLEU is a fraction, the
        WebNLG/DART BLEU is sacrebleu's 0-100, METEOR and TER are fractions, as in the paper's tables)."""
        from lorakit.metrics import nlg

        hyps = [str(p) for p in predictions]
        refs = [list(r["references"]) for r in references]
        if any(not r for r in refs):
            raise DataError(f"task {self.name}: an evaluation example has no reference; evaluate on a split "
                            "with references (e.g. E2E testset_w_refs.csv, WebNLG testdata_with_lex.xml)")
        fast = self.generation["metrics"] == "fast"
        if self.name == "e2e":
            return nlg.mteval_bleu_nist(hyps, refs) if fast else nlg.e2e_metrics(hyps, refs)
        score = _fast_webnlg if fast else nlg.webnlg_metrics
        out = score(hyps, refs)
        if self.name == "webnlg":  # the paper's S(een) / U(nseen) / A(ll) columns; nan when a part is empty
            names = list(out)
            for label, want in (("seen", True), ("unseen", False)):
                keep = [i for i, r in enumerate(references) if r.get("seen") is want]
                part = score([hyps[i] for i in keep], [refs[i] for i in keep]) if keep else {}
                out.update({f"{k}_{label}": part.get(k, float("nan")) for k in names})
        return out


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------

def _generation_section(generation: Any) -> dict[str, Any]:
    from lorakit.train.config import SCHEMA

    values = {k: f.default for k, f in (SCHEMA["generation"].schema or {}).items()}
    values.update(dict(generation or {}))
    return values


def _template_parts(template: str) -> tuple[str, str]:
    if template.count("{context}") != 1:
        raise DataError(f"data.prompt_template must contain '{{context}}' exactly once, got {template!r}")
    pre, post = template.split("{context}")
    return pre, post


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _completion_text(reference: str) -> str:
    """GPT-2's BPE marks word starts with a leading space: the completion starts a new word."""
    return " " + reference.strip()


def _stop_sequences(tokenizer: Any, stops: Sequence[str]) -> list[list[int]]:
    """Token-id spellings of each stop string. GPT-2's BPE spells a blank line as one token ("\\n\\n")
    or as two ("\\n", "\\n"); both are stop sequences."""
    out: list[list[int]] = []
    for text in stops:
        variants = {tuple(_ids(tokenizer, text))}
        if set(text) == {"\n"}:
            newline = _ids(tokenizer, "\n")
            variants.add(tuple(newline * len(text)))
        out += [list(v) for v in sorted(variants) if v]
    return out


def _fast_webnlg(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    from lorakit.metrics import nlg

    scores = nlg.sacrebleu_scores(hyps, refs)
    return {"BLEU": scores["BLEU"], "TER": scores["TER"] / 100.0}


for _name in NLG_TASKS:
    register_task(_name, functools.partial(NLGTask, _name), config_options=lambda cfg: {"generation": cfg.generation})
