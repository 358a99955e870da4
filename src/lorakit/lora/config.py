"""What to adapt: :class:`LoraConfig`, and which modules of a model it selects (:func:`find_targets`).

Also the one rule for "does this module or parameter belong to module X" (:func:`in_modules`), used by
``modules_to_save``, the baselines' task head (``lorakit.methods``) and the experiment system.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from typing import Any

from torch import nn

from ..layers import BIAS_MODES, validate_lora_args
from .variants import VARIANTS, Variant
from .wrappers import LINEAR_TYPES, AdapterError, LoraModule

DEFAULT_ADAPTER = "default"


@dataclasses.dataclass
class LoraConfig:
    """What to adapt and how. Field names and meanings follow PEFT's ``LoraConfig``.

    target_modules: a list of names, each matching a module's full dotted name or its suffix after
        a dot (``"query"`` matches ``encoder.layer.0.attention.self.query``); or a string, a regex
        that must match the full name; or ``"all-linear"``: every ``nn.Linear`` and ``Conv1D``
        except the model's output head.
    exclude_modules: the same forms; matched modules are skipped.
    layers_to_transform / layers_pattern: only adapt modules inside these layer indices
        (``layers_pattern`` names the module list, e.g. ``"h"`` or ``"layer"``).
    rank_pattern / alpha_pattern: ``{regex: value}`` overriding ``r`` / ``lora_alpha`` for modules
        whose name ends with a match.
    use_rslora: scaling lora_alpha / sqrt(r) instead of lora_alpha / r (Kalajdzievski 2023).
    use_dora: weight-decomposed LoRA (Liu et al. 2024) with a trainable magnitude per output row.
    init_lora_weights: True (A Kaiming-uniform, B zero), "gaussian", "pissa" (principal singular
        vectors; the base weight becomes the residual), or False (random B, for tests).
    enable_lora: ``{regex: [bool, ...]}`` adapts only the chosen equal slices of a fused projection's
        output, e.g. ``{"c_attn": [True, False, True]}`` for GPT-2's q and v (the paper's setup).
        A lorakit extension; saved to PEFT files as an equivalent dense LoRA of rank
        ``r * n_enabled``.
    modules_to_save: modules trained fully and saved with the adapter (e.g. a classifier head).
    """

    r: int = 8
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    rank_pattern: dict[str, int] = dataclasses.field(default_factory=dict)
    alpha_pattern: dict[str, float] = dataclasses.field(default_factory=dict)
    enable_lora: dict[str, list[bool]] = dataclasses.field(default_factory=dict)
    bias: str = "none"
    modules_to_save: list[str] | None = None
    fan_in_fan_out: bool = False
    use_rslora: bool = False
    use_dora: bool = False
    init_lora_weights: bool | str = True
    base_model_name_or_path: str | None = None
    task_type: str | None = None

    def __post_init__(self) -> None:
        validate_lora_args(self.r, self.lora_alpha, self.lora_dropout, AdapterError)
        if self.r == 0:
            raise AdapterError("LoraConfig.r must be >= 1 (r=0 would add nothing)")
        self.variant()  # at most one variant flag is set
        if self.bias not in BIAS_MODES:
            raise AdapterError(f"LoraConfig.bias must be one of {BIAS_MODES}, got {self.bias!r}")
        if self.init_lora_weights not in (True, False, "gaussian", "pissa"):
            raise AdapterError(
                "LoraConfig.init_lora_weights must be True, False, 'gaussian' or 'pissa', "
                f"got {self.init_lora_weights!r}"
            )
        if not self.target_modules:
            raise AdapterError("LoraConfig.target_modules is empty: name the modules to adapt, e.g. ['q', 'v']")
        for pattern, rank in self.rank_pattern.items():
            if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
                raise AdapterError(f"LoraConfig.rank_pattern[{pattern!r}] must be an integer >= 1, got {rank!r}")
        for pattern, flags in self.enable_lora.items():
            if not flags or not all(isinstance(f, bool) for f in flags) or not any(flags):
                raise AdapterError(
                    f"LoraConfig.enable_lora[{pattern!r}] must be a list of bools with at least one True, "
                    f"got {flags!r}"
                )

    def variant(self) -> Variant | None:
        """The :class:`~lorakit.lora.variants.Variant` this config's flags select (``use_dora``), or None."""
        chosen = [variant for flag, variant in VARIANTS.items() if getattr(self, flag)]
        if len(chosen) > 1:
            raise AdapterError(f"LoraConfig selects {len(chosen)} variants ({', '.join(v.flag for v in chosen)}); "
                               "choose one")
        return chosen[0] if chosen else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoraConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AdapterError(f"unknown LoraConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LoraConfig:
        return cls.from_dict(json.loads(text))

    # -- per-module settings ------------------------------------------------------------------
    def rank_for(self, name: str) -> int:
        return _pattern_value(self.rank_pattern, name, self.r)

    def alpha_for(self, name: str) -> float:
        return _pattern_value(self.alpha_pattern, name, self.lora_alpha)

    def slices_for(self, name: str) -> list[bool] | None:
        return _pattern_value(self.enable_lora, name, None)


def _pattern_value(patterns: dict[str, Any], name: str, default: Any) -> Any:
    """The value of the first pattern matching the end of ``name`` (PEFT's rank_pattern rule)."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?(?:{pattern})$", name):
            return value
    return default


# ============================================================================ matching
def in_modules(name: str, module_names: list[str] | tuple[str, ...] | None) -> bool:
    """True if the module or parameter ``name`` is one of ``module_names`` or lies inside one.

    A module name matches as a whole run of dotted parts anywhere in ``name`` (full names or suffixes):
    ``"classifier"`` matches ``classifier``, ``classifier.weight`` and ``encoder.classifier.dense.bias``,
    not ``my_classifier.weight``; ``"encoder.pooler"`` matches ``model.encoder.pooler.dense.weight``.
    """
    wrapped = f".{name}."
    return any(f".{m}." in wrapped for m in module_names or ())


def _name_matches(name: str, targets: list[str] | str) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def _in_layers(name: str, config: LoraConfig) -> bool:
    if config.layers_to_transform is None:
        return True
    wanted = config.layers_to_transform
    wanted = [wanted] if isinstance(wanted, int) else list(wanted)
    patterns = config.layers_pattern
    patterns = [patterns] if isinstance(patterns, str) else (patterns or [r"[^.]*"])
    for pattern in patterns:
        m = re.match(rf"(?:.*\.)?{pattern}\.(\d+)\.", name)
        if m:
            return int(m.group(1)) in wanted
    return False


def _output_head_names(model: nn.Module) -> set[str]:
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    return {n for n, m in model.named_modules() if head is not None and m is head}


def find_targets(model: nn.Module, config: LoraConfig) -> list[str]:
    """The names of the modules ``config`` selects, in model order. Raises if none match.

    The error lists the model's module names closest to each target, so typos are easy to fix.
    """
    skip = config.modules_to_save
    all_linear = config.target_modules == "all-linear"
    heads = _output_head_names(model) if all_linear else set()
    names = []
    for name, module in model.named_modules():
        if not name or _inside_lora_module(model, name):
            continue
        kind = module.base_layer if isinstance(module, LoraModule) else module
        if in_modules(name, skip):  # trained whole, not adapted
            continue
        if all_linear:
            if not isinstance(kind, LINEAR_TYPES) or name in heads:
                continue
        elif not _name_matches(name, config.target_modules):
            continue
        if config.exclude_modules and _name_matches(name, config.exclude_modules):
            continue
        if not _in_layers(name, config):
            continue
        names.append(name)
    if not names:
        raise AdapterError(_no_match_message(model, config))
    return names


def _inside_lora_module(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    return any(isinstance(model.get_submodule(".".join(parts[:i])), LoraModule) for i in range(1, len(parts)))


def _no_match_message(model: nn.Module, config: LoraConfig) -> str:
    names = [n for n, _ in model.named_modules() if n]
    targets = config.target_modules
    lines = [f"target_modules={targets!r} matched no module of {type(model).__name__}"]
    if config.layers_to_transform is not None:
        lines[0] += f" within layers_to_transform={config.layers_to_transform!r}"
    for target in [targets] if isinstance(targets, str) else targets:
        leaves = sorted({n.split(".")[-1] for n in names})
        close = difflib.get_close_matches(str(target).split(".")[-1], leaves, n=5, cutoff=0.4)
        close += [n for n in difflib.get_close_matches(str(target), names, n=3, cutoff=0.4) if n not in close]
        lines.append(f"  closest module names to {target!r}: {close or 'none'}")
    lines.append(f"  the model's module names include: {names[:12]}{' ...' if len(names) > 12 else ''}")
    return "\n".join(lines)

