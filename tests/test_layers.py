"""The import graph holds the layers README's Layout section draws: nothing imports upward, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

COMP = Path(__file__).resolve().parents[1] / "comp"

# Lowest first. A module may import from its own unit (module or package) and from lower layers only: not
# from a unit of its own layer (predict must not reach into train for a shared leaf: those live below both).
LAYERS = [
    {"errors"},
    {"io", "classes", "lock", "metrics", "demo"},
    {"runs", "config_sections"},
    {"config"},
    {"competition", "data", "models"},
    {"folds", "device"},
    {"train", "predict"},
    {"tune", "submit"},
    {"report", "bundle", "init"},
    {"cli"},
    {"__main__"},
]
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    """``comp.train.fold`` -> ``train``; ``comp`` itself -> ``comp`` (the version, importable by all)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "comp"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "comp":
            found.add(node.module)
            if node.module == "comp":
                found |= {f"comp.{a.name}" for a in node.names if (COMP / a.name).is_dir()
                          or (COMP / f"{a.name}.py").is_file()}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "comp"}
    return found


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in COMP.iterdir() if p.suffix == ".py" or
             (p.is_dir() and (p / "__init__.py").is_file())} - {"__init__"}
    assert sorted(units - set(LEVEL)) == []


def test_nothing_imports_upward_or_sideways():
    upward = []
    for path in COMP.rglob("*.py"):
        unit = path.relative_to(COMP).parts[0].removesuffix(".py")
        if unit == "__init__":
            continue
        for module in _imports(path):
            target = _unit(module)
            if target not in ("comp", unit) and LEVEL[target] >= LEVEL[unit]:
                upward.append(f"{path.relative_to(COMP.parent)} imports {module}")
    assert upward == []
