"""Experiment configuration: a JSON file, validated completely before any work starts.

A config is plain data: nested JSON objects, one per section (``model``, ``method``, ``task``,
``data``, ``generation``, ``optimizer``, ``schedule``, ``training``, ``evaluation``, ``logging``). Every key not given
takes its default from ``SCHEMA`` (schema.py), which is also the reference of what each key means.

``validate(raw)`` checks everything at once: unknown keys (with a "did you mean" hint), wrong types,
out-of-range values and cross-field rules. It raises one ``ConfigError`` listing every problem with
its JSON path, e.g. ``$.training.batch_size: must be an integer >= 1, got 0``. On success it returns
the resolved config (defaults filled in) as nested ``Section`` dicts, readable as
``cfg.training.batch_size`` and JSON-serialisable as is.

``apply_overrides(raw, ["training.max_steps=100", "method.r=4"])`` implements ``--set``: the value is
parsed as JSON when it parses (numbers, booleans, null, lists, objects) and taken as a string otherwise.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lorakit.errors import LorakitError

from .schema import SCHEMA, Field
from .tasks import TASK_REGISTRY, task_names

__all__ = [
    "ConfigError", "Section", "SCHEMA", "load_config", "validate", "apply_overrides", "defaults",
    "config_diff",
]


class ConfigError(LorakitError, ValueError):
    """One or more problems in a config; ``problems`` holds ``(json_path, message)`` pairs."""

    exit_code = 2  # a usage/config error

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        n = len(self.problems)
        lines = [f"{n} problem{'s' if n != 1 else ''} in the config{where}:"]
        lines += [f"  {path}: {msg}" for path, msg in self.problems]
        super().__init__("\n".join(lines))


class Section(dict):
    """A dict whose keys also read as attributes (``cfg.training.lr``); still a plain dict for JSON."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# The schema (Field, SCHEMA) lives in schema.py; this module validates configs against it.


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------

def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _range_text(f: Field) -> str:
    parts = []
    if f.min is not None:
        parts.append(f"{'>' if f.min_exclusive else '>='} {f.min:g}")
    if f.max is not None:
        parts.append(f"{'<' if f.max_exclusive else '<='} {f.max:g}")
    return " and ".join(parts)


def _check_range(f: Field, v: float) -> bool:
    if f.min is not None and (v < f.min or (f.min_exclusive and v == f.min)):
        return False
    if f.max is not None and (v > f.max or (f.max_exclusive and v == f.max)):
        return False
    return True


def _check_field(f: Field, value: Any, path: str, problems: list[tuple[str, str]]) -> Any:
    """Return the resolved value (defaults filled in for sections); append problems on the way."""
    if value is None:
        if f.nullable:
            return None
        problems.append((path, f"must not be null (expected {_expected(f)})"))
        return None
    kind = f.kind
    if kind == "section":
        if not isinstance(value, dict):
            problems.append((path, f"must be an object, got {_type_name(value)}"))
            return None
        return _check_section(f.schema or {}, value, path, problems)
    if kind == "int":
        if not _is_int(value):
            # 3.0 is accepted as 3: JSON writers often produce floats for whole numbers
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                problems.append((path, f"must be an integer{_rng(f)}, got {value!r}"))
                return None
        if not _check_range(f, value):
            problems.append((path, f"must be an integer {_range_text(f)}, got {value!r}"))
        return value
    if kind == "float":
        if not _is_number(value):
            problems.append((path, f"must be a number{_rng(f)}, got {value!r}"))
            return None
        if not _check_range(f, value):
            problems.append((path, f"must be a number {_range_text(f)}, got {value!r}"))
        return float(value)
    if kind == "bool_or_choice":
        if not isinstance(value, bool) and value not in (f.allowed() or ()):
            problems.append((path, f"must be true, false or one of {list(f.allowed() or ())}, got {value!r}"))
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            problems.append((path, f"must be true or false, got {value!r}"))
        return value
    if kind == "str":
        if not isinstance(value, str):
            problems.append((path, f"must be a string, got {_type_name(value)} {value!r}"))
            return None
        allowed = f.allowed()
        if allowed is not None and value not in allowed:
            hint = difflib.get_close_matches(value, allowed, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            problems.append((path, f"must be one of {list(allowed)}, got {value!r}{extra}"))
        return value
    if kind in ("str_list", "str_or_str_list"):
        if kind == "str_or_str_list" and isinstance(value, str):
            return value
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            want = "a list of strings" + (" or one regex string" if kind == "str_or_str_list" else "")
            problems.append((path, f"must be {want}, got {value!r}"))
            return None
        return list(value)
    if kind == "dict":
        if not isinstance(value, dict):
            problems.append((path, f"must be an object, got {_type_name(value)}"))
            return None
        return copy.deepcopy(value)
    if kind in ("int_pair", "float_pair"):
        ok = _is_int if kind == "int_pair" else _is_number
        if not isinstance(value, list) or len(value) != 2 or not all(ok(x) for x in value):
            what = "integers" if kind == "int_pair" else "numbers"
            problems.append((path, f"must be a list of two {what} [low, high], got {value!r}"))
            return None
        return list(value)
    raise TypeError(f"unknown field kind {kind!r}")  # a bug in SCHEMA, not user input


def _rng(f: Field) -> str:
    r = _range_text(f)
    return f" {r}" if r else ""


def _expected(f: Field) -> str:
    return {"section": "an object", "int": "an integer", "float": "a number", "bool": "true or false",
            "bool_or_choice": f"true, false or one of {list(f.allowed() or ())}",
            "str": "a string", "str_list": "a list of strings", "dict": "an object"}.get(f.kind, f.kind)


def _check_section(schema: dict[str, Field], raw: dict, path: str, problems: list) -> Section:
    out = Section()
    for key in raw:
        if key not in schema:
            hint = difflib.get_close_matches(str(key), list(schema), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else f" (known keys: {', '.join(schema)})"
            problems.append((f"{path}.{key}", f"unknown key{extra}"))
    for key, f in schema.items():
        if key in raw:
            out[key] = _check_field(f, raw[key], f"{path}.{key}", problems)
        elif f.kind == "section" and not f.nullable:
            out[key] = _check_section(f.schema or {}, {}, f"{path}.{key}", problems)
        else:
            out[key] = copy.deepcopy(f.default)
    return out


def _cross_checks(cfg: Section, problems: list[tuple[str, str]]) -> None:
    """Rules that involve more than one key. Only runs on values that passed their own checks."""
    m = cfg.get("model")
    if isinstance(m, dict):
        has_name, has_arch = m.get("name_or_path") is not None, m.get("architecture") is not None
        if has_name == has_arch:
            problems.append(("$.model", "set exactly one of name_or_path (a pretrained model) or "
                                        "architecture (a config dict for a randomly initialised model)"))
        if has_arch:
            if m.get("tokenizer") is None:
                problems.append(("$.model.tokenizer", "required with model.architecture (a folder or name "
                                                      "to load the tokenizer from)"))
            if not isinstance(m["architecture"].get("model_type"), str):
                problems.append(("$.model.architecture.model_type",
                                 "required: the transformers model type, e.g. 'bert'"))
    meth = cfg.get("method")
    if isinstance(m, dict) and m.get("quantization") and isinstance(meth, dict) and meth.get("name") != "lora":
        problems.append(("$.model.quantization", f"4-bit weights are frozen: quantization trains with method 'lora' "
                                                 f"only, not {meth.get('name')!r}; set it to null"))
    if isinstance(meth, dict) and isinstance(meth.get("name"), str):
        name = meth["name"]
        if name != "lora" and meth.get("bias") not in (None, "none"):
            problems.append(("$.method.bias", f"bias {meth['bias']!r} combines BitFit with LoRA and applies to "
                                              f"method 'lora' only, not {name!r} (biases alone: 'bitfit')"))
        lp, li = meth.get("prefix_length"), meth.get("infix_length")
        if name == "prefix_layer" and _is_int(lp) and lp < 1:
            problems.append(("$.method.prefix_length", f"prefix_layer needs prefix_length >= 1, got {lp}"))
        if name == "prefix_embed" and _is_int(lp) and _is_int(li) and lp + li < 1:
            problems.append(("$.method.prefix_length", "prefix_embed needs prefix_length + infix_length >= 1"))
        if name == "distill" and not isinstance(meth.get("teacher"), str):
            problems.append(("$.method.teacher", "distill needs a teacher: the workdir of a finished run of this task "
                                                 "or a model path with a head for it"))
    d = cfg.get("data")
    if isinstance(d, dict) and isinstance(d.get("random_length"), list):
        lo, hi = d["random_length"]
        if not 1 <= lo <= hi:
            problems.append(("$.data.random_length", f"must satisfy 1 <= low <= high, got {[lo, hi]}"))
        elif isinstance(d.get("max_length"), int) and hi > d["max_length"]:
            problems.append(("$.data.random_length",
                             f"high={hi} exceeds data.max_length={d['max_length']}; raise max_length"))
    _packing_checks(cfg, problems)
    _fused_loss_checks(cfg, problems)
    o = cfg.get("optimizer")
    if isinstance(o, dict) and isinstance(o.get("betas"), list):
        if not all(0.0 <= b < 1.0 for b in o["betas"]):
            problems.append(("$.optimizer.betas", f"both must be in [0, 1), got {o['betas']}"))
    t, e = cfg.get("training"), cfg.get("evaluation")
    if isinstance(t, dict) and isinstance(e, dict):
        k, keep = e.get("average_last"), t.get("keep_last")
        if _is_int(k) and _is_int(keep) and k > keep:
            problems.append(("$.evaluation.average_last",
                             f"averages the last {k} checkpoints but training.keep_last={keep} keeps "
                             f"fewer; raise keep_last to at least {k}"))
        b, acc = t.get("batch_size"), t.get("grad_accumulation")
        if _is_int(b) and _is_int(acc) and acc >= 1 and b % acc != 0:
            problems.append(("$.training.grad_accumulation",
                             f"must divide training.batch_size={b} (the global batch), got {acc}"))


def is_causal_lm_task(name: str) -> bool:
    """Whether registered task ``name`` trains a causal language model (``data.packing`` applies to it)."""
    entry = TASK_REGISTRY.get(name)
    return entry is not None and entry.factory().model_kind == "causal_lm"


def _packing_checks(cfg: Section, problems: list[tuple[str, str]]) -> None:
    d, task, meth = cfg.get("data"), cfg.get("task"), cfg.get("method")
    if not isinstance(d, dict) or d.get("packing") is not True:
        return
    name = task.get("name") if isinstance(task, dict) else None
    if isinstance(name, str) and name in TASK_REGISTRY and not is_causal_lm_task(name):
        causal = ", ".join(n for n in task_names() if is_causal_lm_task(n))
        problems.append(("$.data.packing", f"packs causal-LM training examples ({causal}); "
                                           f"task {name!r} is not one: set data.packing to false"))
    if d.get("random_length") is not None:
        problems.append(("$.data.packing", "packing fills rows of up to data.max_length tokens and data.random_length "
                                           "cuts every example: set one of them only"))
    method = meth.get("name") if isinstance(meth, dict) else None
    if isinstance(method, str) and method.startswith("prefix"):
        problems.append(("$.data.packing", f"method {method!r} runs through the model's KV cache, which packed rows "
                                           "cannot use: set data.packing to false"))


def _fused_loss_checks(cfg: Section, problems: list[tuple[str, str]]) -> None:
    t, task = cfg.get("training"), cfg.get("task")
    if not isinstance(t, dict):
        return
    fused, chunk = t.get("fused_loss"), t.get("loss_chunk_size")
    name = task.get("name") if isinstance(task, dict) else None
    if isinstance(name, str) and name in TASK_REGISTRY and not is_causal_lm_task(name):
        causal = ", ".join(n for n in task_names() if is_causal_lm_task(n))
        if fused is True:
            problems.append(("$.training.fused_loss", f"the fused loss is the causal-LM tasks' loss ({causal}); "
                                                      f"task {name!r} is not one: set it to \"auto\" or false"))
        if chunk is not None:
            problems.append(("$.training.loss_chunk_size", f"chunks the fused loss of the causal-LM tasks ({causal}); "
                                                           f"task {name!r} is not one: set it to null"))
    meth = cfg.get("method")
    if isinstance(meth, dict) and meth.get("name") == "distill" and (fused is True or chunk is not None):
        key = "fused_loss" if fused is True else "loss_chunk_size"
        problems.append((f"$.training.{key}", "method 'distill' computes the student's full logits for the KL term "
                                              "against the teacher, so the fused loss does not apply: remove it"))
    if fused is False and chunk is not None:
        problems.append(("$.training.loss_chunk_size", "chunks the fused loss, which training.fused_loss false "
                                                       "turns off: set one of them only"))


def validate(raw: Any, source: str | None = None) -> Section:
    """Check a whole config and return it resolved; raise one ``ConfigError`` listing every problem."""
    problems: list[tuple[str, str]] = []
    if not isinstance(raw, dict):
        raise ConfigError([("$", f"the config must be a JSON object, got {_type_name(raw)}")], source)
    cfg = _check_section(SCHEMA, raw, "$", problems)
    _cross_checks(cfg, problems)  # on the values that passed; reported in the same message
    if problems:
        raise ConfigError(problems, source)
    return cfg


def defaults() -> Section:
    """The resolved config of ``{}`` apart from the model (which has no default)."""
    problems: list[tuple[str, str]] = []
    return _check_section(SCHEMA, {}, "$", problems)


# --------------------------------------------------------------------------------------------------
# Loading and overrides
# --------------------------------------------------------------------------------------------------

def _parse_override_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(raw: dict, overrides: Iterable[str]) -> dict:
    """Return a copy of ``raw`` with each ``dotted.key=value`` applied (creating sections as needed).

    Raises ``ConfigError`` for overrides without ``=`` or that would descend into a non-object value.
    """
    out = copy.deepcopy(raw)
    problems: list[tuple[str, str]] = []
    for item in overrides:
        if "=" not in item:
            problems.append((f"--set {item}", "expected dotted.key=value, e.g. training.max_steps=100"))
            continue
        key, _, text = item.partition("=")
        parts = [p for p in key.strip().split(".")]
        if not all(parts):
            problems.append((f"--set {item}", "empty key segment"))
            continue
        node = out
        for i, p in enumerate(parts[:-1]):
            if p not in node or node[p] is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                problems.append((f"--set {item}",
                                 f"$.{'.'.join(parts[: i + 1])} is {_type_name(node[p])}, not an object"))
                break
            node = node[p]
        else:
            node[parts[-1]] = _parse_override_value(text)
    if problems:
        raise ConfigError(problems, "--set")
    return out


def read_json(path: str | Path) -> dict:
    """Read a config file: UTF-8 JSON holding an object; a syntax error is reported with line and column."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([("$", f"config file not found: {path}")], str(path))
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError([("$", f"not UTF-8 text (byte {err.start}: {err.object[err.start:err.start + 1]!r}); "
                                 "save the file as UTF-8")], str(path)) from None
    except OSError as err:
        raise ConfigError([("$", f"cannot read the file: {err.strerror or err}")], str(path)) from None
    except json.JSONDecodeError as err:
        raise ConfigError(
            [("$", f"not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}")], str(path)
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError([("$", f"the config must be a JSON object {{...}}, got {_type_name(raw)}")], str(path))
    return raw


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Section:
    """Read, override and validate a config file (or a workdir's ``config.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    raw = apply_overrides(read_json(path), overrides)
    return validate(raw, str(path))


def config_diff(a: Any, b: Any, path: str = "$") -> list[str]:
    """Human-readable differences between two resolved configs: ``['$.optimizer.lr: 0.0001 -> 0.001']``."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            out += config_diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}")
        return out
    return [] if a == b else [f"{path}: {json.dumps(a)} -> {json.dumps(b)}"]


def markdown_reference() -> str:
    """The reference table of every config key (docs/experiments.md): key, type, default, meaning."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]

    def walk(schema: dict[str, Field], prefix: str) -> None:
        for key, f in schema.items():
            if f.kind == "section":
                walk(f.schema or {}, f"{prefix}{key}.")
                continue
            notes = [f.help] if f.help else []
            if f.allowed():
                notes.append("one of " + ", ".join(f"`{c}`" for c in f.allowed()))
            if _range_text(f):
                notes.append(_range_text(f))
            if f.nullable:
                notes.append("may be null")
            meaning = "; ".join(notes).replace("|", "\\|").replace("\n", "\\n")
            default = json.dumps(f.default).replace("|", "\\|")
            rows.append(f"| `{prefix}{key}` | {f.kind} | `{default}` | {meaning} |")

    walk(SCHEMA, "")
    return "\n".join(rows) + "\n"
