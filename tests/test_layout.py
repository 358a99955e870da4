"""The floors of the layout stay honest: imports run downwards only (see README's layout section).

Imports are read with ``ast`` from every module under ``src/lorakit``, those inside functions included;
those under ``if TYPE_CHECKING:`` are annotations only and do not count.
"""

import ast
from pathlib import Path

import pytest

import lorakit

SRC = Path(lorakit.__file__).resolve().parent  # .../src/lorakit

# Modules outside lorakit/train that still import it. They move with the layout restructure (issue #16,
# branch layout-train): the lead empties this list when merging, and it must stay empty after that.
STILL_IMPORTING_TRAIN = {
    "lorakit.score",
    "lorakit.lm_eval",
    "lorakit.data_prepare",
}


def module_name(path: Path) -> str:
    parts = ("lorakit",) + path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lorakit_imports(path: Path) -> set[str]:
    """The lorakit modules ``path`` imports, as absolute dotted names (``from . import x`` gives ``pkg.x``)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(path.read_text(), str(path))
    type_only = {id(inner) for node in ast.walk(tree)
                 if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
                 for stmt in node.body for inner in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + (node.module.split(".") if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # the name may be a submodule
    return {m for m in found if m == "lorakit" or m.startswith("lorakit.")}


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def test_the_import_reader_resolves_relative_imports():
    assert "lorakit.functional" in lorakit_imports(SRC / "layers.py")  # from . import functional as LF
    assert "lorakit.layers" in lorakit_imports(SRC / "lora" / "wrappers.py")  # from ..layers import ...
    assert "lorakit.lora.variants" in lorakit_imports(SRC / "lora" / "wrappers.py")  # from .variants import ...


def test_nothing_outside_train_imports_train():
    offenders = {name for name, path in MODULES.items()
                 if not (name == "lorakit.train" or name.startswith("lorakit.train."))
                 and any(m == "lorakit.train" or m.startswith("lorakit.train.") for m in lorakit_imports(path))}
    assert offenders - STILL_IMPORTING_TRAIN == set(), "only lorakit/train may import lorakit.train"
    assert STILL_IMPORTING_TRAIN <= offenders, (
        f"{sorted(STILL_IMPORTING_TRAIN - offenders)} no longer import lorakit.train: drop them from "
        "STILL_IMPORTING_TRAIN")


def test_functional_imports_no_other_lorakit_module():
    assert lorakit_imports(MODULES["lorakit.functional"]) == set()


def test_layers_imports_only_functional():
    # ``from . import functional`` also reads as the package "lorakit" itself
    assert lorakit_imports(MODULES["lorakit.layers"]) <= {"lorakit", "lorakit.functional"}


@pytest.mark.parametrize("name", ["lorakit.lora.variants", "lorakit.lora.wrappers", "lorakit.lora.config"])
def test_model_surgery_below_management_never_imports_it(name):
    """variants <- wrappers <- config <- manage <- mixed_batch: the lower pieces never import the upper."""
    order = ["lorakit.lora.variants", "lorakit.lora.wrappers", "lorakit.lora.config", "lorakit.lora.manage",
             "lorakit.lora.mixed_batch"]
    above = set(order[order.index(name) + 1:])
    assert lorakit_imports(MODULES[name]) & above == set()
