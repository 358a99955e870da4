"""The floors of the package stay honest: every import of a lorakit module, also one inside a function,
points down the house (README, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "lorakit"

# The leaves every floor may import: the root of the errors and the durable writes (they import nothing).
LEAVES = {"lorakit.errors", "lorakit.fileio"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _lorakit_imports(path: Path) -> set[str]:
    """The lorakit modules ``path`` imports (relative imports resolved; ``from pkg import mod`` gives both)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # imports under `if TYPE_CHECKING:` are annotations only: they do not count
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
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            if node.module:  # `from . import x` imports x, not the package's other modules
                found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "lorakit" or name.startswith("lorakit.")}


def _modules() -> dict[str, set[str]]:
    return {_module_name(p): _lorakit_imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_import_scanner_sees_relative_and_lazy_imports():
    imports = _modules()
    assert "lorakit.functional" in imports["lorakit.layers"]  # `from . import functional as LF`
    assert "lorakit.train.tasks" in imports["lorakit.train.loop"]  # `from .tasks import ...`
    assert "lorakit.metrics.nlg" in imports["lorakit.train.tasks.nlg"]  # `from lorakit.metrics import nlg`


def test_nothing_outside_train_imports_train():
    """``lorakit.train`` is the top floor; ``cli`` names its subcommands as strings, imported on use."""
    offenders = {m: sorted(i for i in imports if i.startswith("lorakit.train"))
                 for m, imports in _modules().items() if not m.startswith("lorakit.train")}
    assert {m: i for m, i in offenders.items() if i} == {}


@pytest.mark.parametrize("module, allowed", [
    ("lorakit.functional", set()),
    ("lorakit.layers", {"lorakit.functional"}),
    ("lorakit.errors", set()),
    ("lorakit.fileio", set()),
])
def test_the_bottom_floors_import_only_what_is_below_them(module, allowed):
    imports = _modules()[module] - {module}
    assert imports - allowed - (LEAVES - {module}) == set()


@pytest.mark.parametrize("name", ["lorakit.lora.variants", "lorakit.lora.wrappers", "lorakit.lora.config"])
def test_model_surgery_below_management_never_imports_it(name):
    """variants <- wrappers <- config <- manage <- mixed_batch: the lower pieces never import the upper."""
    order = ["lorakit.lora.variants", "lorakit.lora.wrappers", "lorakit.lora.config", "lorakit.lora.manage",
             "lorakit.lora.mixed_batch"]
    above = set(order[order.index(name) + 1:])
    assert _modules()[name] & above == set()
