"""Every error class lorakit defines is a LorakitError and keeps a built-in base, so both
``except lorakit.LorakitError`` and an older ``except ValueError`` catch it."""

from __future__ import annotations

import builtins
import importlib
import inspect
from pathlib import Path

from lorakit.errors import LorakitError

SRC = Path(__file__).resolve().parents[1] / "src"
# __main__ runs the CLI when imported: it defines no error.
NOT_YET = ("lorakit.__main__",)


def _error_classes() -> dict[str, type]:
    found = {}
    for path in sorted((SRC / "lorakit").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name.startswith(NOT_YET) or name == "lorakit.train.metrics":  # that one: a deprecated alias
            continue
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name:
                found[f"{name}.{attr}"] = obj
    return found


def test_every_error_is_a_lorakit_error_with_a_builtin_base():
    classes = _error_classes()
    assert {"lorakit.train.config.ConfigError", "lorakit.data.errors.DataError", "lorakit.score.ScoreInputError",
            "lorakit.pretrained.ModelLoadError", "lorakit.lora.wrappers.AdapterError", "lorakit.io.AdapterFileError",
            "lorakit.methods.MethodError"} <= set(classes)
    builtin_errors = {obj for obj in vars(builtins).values() if inspect.isclass(obj) and issubclass(obj, Exception)}
    for name, cls in classes.items():
        assert issubclass(cls, LorakitError), name
        assert any(base in builtin_errors for base in cls.__mro__[1:]), name
