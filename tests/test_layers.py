"""The import graph holds the layers README's Layout section draws: nothing imports upward, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

COMP = Path(__file__).resolve().parents[1] / "comp"

# Lowest first. A module may import from its own unit (module or package) and from lower layers only: not
# from a unit of its own layer (predict must not reach into train for a shared leaf: those live below both).
LAYERS = [
    {"errors"},
    {"io", "classes", "lock", "metrics", "demo", "lazy"},
    {"runfolder", "config_sections"},
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


MAX_FUNCTION_LINES = 50  # STYLE.md: functions under ~50 lines; split by meaning, a helper per step
MAX_MODULE_LINES = 400  # STYLE.md: modules of 100-400 lines


def _function_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first decorator to the end of the body, less the docstring's."""
    start = min([d.lineno for d in node.decorator_list] + [node.lineno])
    length = node.end_lineno - start + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        length -= first.end_lineno - first.lineno + 1
    return length


def test_functions_and_modules_stay_small():
    long_functions, long_modules = [], []
    for path in sorted(COMP.rglob("*.py")):
        source = path.read_text()
        name = path.relative_to(COMP.parent).as_posix()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _function_lines(node) > MAX_FUNCTION_LINES:
                long_functions.append(f"{name}:{node.lineno} {node.name}: {_function_lines(node)} lines")
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines (docstring excluded): {long_functions}"
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
