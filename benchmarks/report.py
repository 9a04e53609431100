"""The benchmark's table: each figure with its spread, its target (pass/miss) and its change against an old JSON.

A figure is addressed by its dotted key in the results JSON (``workloads.large.ratios.train_vs_plain``);
that key is what ``--compare`` matches between two runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOWER_IS_BETTER = ("tta_ratio", "peak_mb")  # every other figure (img/s, ratios, MFU): higher is better
NOT_MEASURED = "not measured (pass --timm-train)"


@dataclass(frozen=True)
class Target:
    """A goal for one figure: ``value op bound``."""

    op: str  # ">=" or "<="
    bound: float

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the goal (never for NaN or infinity)."""
        if not math.isfinite(value):
            return False
        return value >= self.bound if self.op == ">=" else value <= self.bound


@dataclass(frozen=True)
class Row:
    """One line of the table.

    Attributes:
        label: What the figure is.
        key: Dotted key of the figure in the results (its median when it is a stat).
        fmt: ``"rate"`` (img/s, GFLOP/s), ``"ratio"``, ``"pct"`` or ``"mb"``.
        target: The goal, if any.
        note: Shown instead of a value (a figure that was not measured, and why).
    """

    label: str
    key: str
    fmt: str = "rate"
    target: Target | None = None
    note: str | None = None


def lookup(results: dict, key: str) -> Any:
    """The value at a dotted key (None when absent)."""
    node = results
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def value_and_spread(results: dict, key: str) -> tuple[float, tuple[float, float] | None]:
    """The figure at ``key`` (a stat's median) and its (min, max) when it is a stat."""
    node = lookup(results, key)
    if isinstance(node, dict) and "median" in node:
        return float(node["median"]), (float(node["min"]), float(node["max"]))
    return (float(node) if isinstance(node, (int, float)) else math.nan), None


def build_rows(results: dict) -> list[Row]:
    """The rows of the table for the figures present in ``results``."""
    sizes = ", ".join(results["peak"].get("by_size", {})) or results["peak"].get("n", "?")
    rows = [Row(f"peak matmul {results['peak']['dtype']} GFLOP/s (best of n = {sizes})", "peak")]
    on_cpu = results["meta"]["device"] == "cpu"
    if results.get("peak_theoretical"):
        rows.append(Row("theoretical fp32 peak GFLOP/s (cores x GHz x lanes x 2 FMA x 2 units)",
                        "peak_theoretical.gflops"))
    for name in results["model_step"]:
        base = f"model_step.{name}"
        rows += [
            Row(f"{name} step img/s, ours", f"{base}.ours"),
            Row(f"{name} step img/s, timm", f"{base}.timm"),
            Row(f"{name} ours/timm", f"{base}.ratio", "ratio", Target(">=", 0.97)),
            Row(f"{name} MFU (ours, of measured peak)", f"{base}.mfu.ours", "pct",
                Target(">=", 0.40) if on_cpu and name == "resnet18" else None),
        ]
        if lookup(results, f"{base}.mfu_theoretical"):
            rows.append(Row(f"{name} MFU (ours, of theoretical peak)", f"{base}.mfu_theoretical.ours", "pct"))
    for workload in results["workloads"]:
        base = f"workloads.{workload}"
        if lookup(results, f"{base}.cache_build"):
            threads = lookup(results, f"{base}.cache_build.threads")
            rows += [
                Row(f"{workload}: cache build img/s, comp, {threads} threads", f"{base}.cache_build.comp_all"),
                Row(f"{workload}: cache build img/s, comp, 1 thread", f"{base}.cache_build.comp_one"),
                Row(f"{workload}: cache build img/s per thread, comp", f"{base}.cache_build.comp_all_per_thread"),
                Row(f"{workload}: decode img/s, plain OpenCV, {threads} threads", f"{base}.cache_build.opencv_threads"),
                Row(f"{workload}: decode img/s, PIL, 1 thread", f"{base}.cache_build.pil"),
                Row(f"{workload}: cache build / plain OpenCV threads", f"{base}.ratios.cache_vs_opencv", "ratio",
                    Target(">=", 0.8)),
            ]
        rows += [
            Row(f"{workload}: comp train epoch 1 img/s (from an empty cache)", f"{base}.train.first_epoch"),
            Row(f"{workload}: comp train later epochs img/s", f"{base}.train.later_epochs"),
            Row(f"{workload}: later epochs / model step", f"{base}.ratios.train_vs_step", "ratio", Target(">=", 0.85)),
        ]
        if lookup(results, f"{base}.train_compiled"):
            rows += [Row(f"{workload}: comp train later epochs img/s, train.compile",
                         f"{base}.train_compiled.later_epochs"),
                     Row(f"{workload}: compiled later epochs / model step", f"{base}.ratios.compiled_vs_step", "ratio")]
        rows += _on_device_rows(results, workload) + _timm_rows(results, workload)
        for setting in lookup(results, f"{base}.plain") or {}:
            if setting.startswith("workers"):
                rows.append(Row(f"{workload}: plain loop img/s, num_workers={setting[7:]}", f"{base}.plain.{setting}"))
        rows += [
            Row(f"{workload}: comp train / plain loop (best)", f"{base}.ratios.train_vs_plain", "ratio",
                Target(">=", 2.0 if workload == "large" else 1.0)),
            Row(f"{workload}: epoch 1 / plain loop (best)", f"{base}.ratios.first_epoch_vs_plain", "ratio"),
            Row(f"{workload}: inference img/s, no TTA", f"{base}.inference.none"),
            Row(f"{workload}: inference img/s, d4 TTA", f"{base}.inference.d4"),
            Row(f"{workload}: d4 TTA time / no TTA", f"{base}.inference.tta_ratio", "ratio", Target("<=", 8.5)),
            Row(f"{workload}: comp train peak memory MB ({_memory_note(results, base)})",
                f"{base}.train.memory.peak_mb", "mb"),
        ]
    return rows


def _on_device_rows(results: dict, workload: str) -> list[Row]:
    base = f"workloads.{workload}"
    if not lookup(results, f"{base}.train_on_device"):
        return []
    return [Row(f"{workload}: comp train later epochs img/s, augment.on_device",
                f"{base}.train_on_device.later_epochs"),
            Row(f"{workload}: on-device later epochs / model step", f"{base}.ratios.on_device_vs_step", "ratio")]


def _timm_rows(results: dict, workload: str) -> list[Row]:
    """The rows of timm's train.py on the same images, or one row saying why it was not measured."""
    base = f"workloads.{workload}"
    label = f"{workload}: comp train / timm train.py (later epochs)"
    timm = lookup(results, f"{base}.timm_train")
    if not isinstance(timm, dict) or "later_epochs" not in timm:
        note = NOT_MEASURED if timm is None else f"failed: see {timm.get('log')}"
        return [Row(label, f"{base}.ratios.train_vs_timm", "ratio", note=note)]
    return [Row(f"{workload}: timm train.py epoch 1 img/s (decodes every epoch)", f"{base}.timm_train.first_epoch"),
            Row(f"{workload}: timm train.py later epochs img/s", f"{base}.timm_train.later_epochs"),
            Row(label, f"{base}.ratios.train_vs_timm", "ratio", Target(">=", 1.0))]


def _memory_note(results: dict, base: str) -> str:
    memory = lookup(results, f"{base}.train.memory") or {}
    return f"{memory.get('kind', '?')}, {memory.get('baseline_mb') or 0:.0f} before"


def _fmt(value: float, fmt: str) -> str:
    if not math.isfinite(value):
        return "-"
    if fmt == "pct":
        return f"{100 * value:.1f}%"
    if fmt == "ratio":
        return f"{value:.2f}"
    if fmt == "mb":
        return f"{value:.0f}"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def change_pct(new: float, old: float) -> float:
    """Relative change in percent (nan when either is missing or the old one is 0)."""
    if not (math.isfinite(new) and math.isfinite(old)) or old == 0:
        return math.nan
    return 100.0 * (new - old) / abs(old)


def evaluate_targets(results: dict) -> list[dict]:
    """Every target with its figure's value and whether it is met (stored in the JSON)."""
    out = []
    for row in build_rows(results):
        if row.target is None:
            continue
        value, _ = value_and_spread(results, row.key)
        out.append({"figure": row.label, "key": row.key, "value": value, "op": row.target.op,
                    "target": row.target.bound, "pass": row.target.met(value)})
    return out


def render_table(results: dict, old: dict | None = None) -> str:
    """The table: figure, median, spread (min-max), target, pass/miss and, given ``old``, the change."""
    header = ["figure", "median", "min-max", "target", "result"] + (["vs old"] if old is not None else [])
    lines = []
    for row in build_rows(results):
        if row.note is not None:
            lines.append([row.label, row.note, "", "", ""] + ([""] if old is not None else []))
            continue
        value, spread = value_and_spread(results, row.key)
        cells = [row.label, _fmt(value, row.fmt),
                 f"{_fmt(spread[0], row.fmt)}-{_fmt(spread[1], row.fmt)}" if spread else "",
                 f"{row.target.op} {_fmt(row.target.bound, row.fmt)}" if row.target else "",
                 ("pass" if row.target.met(value) else "MISS") if row.target else ""]
        if old is not None:
            delta = change_pct(value, value_and_spread(old, row.key)[0])
            worse = math.isfinite(delta) and (delta > 0) == row.key.endswith(LOWER_IS_BETTER) and abs(delta) >= 5
            cells.append("" if not math.isfinite(delta) else f"{delta:+.1f}%" + (" !" if worse else ""))
        lines.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
    fmt_line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt_line(header), rule, *(fmt_line(c) for c in lines)])


def flatten_figures(results: dict, prefix: str = "") -> dict[str, float]:
    """Every numeric figure of ``results`` by dotted key (a stat counts as its median); ``meta`` is left out."""
    flat: dict[str, float] = {}
    for key, value in results.items():
        dotted = f"{prefix}{key}"
        if dotted in ("meta", "targets", "compare"):
            continue
        if isinstance(value, dict) and "median" in value:
            flat[dotted] = float(value["median"]) if value["median"] is not None else math.nan
        elif isinstance(value, dict):
            flat.update(flatten_figures(value, dotted + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[dotted] = float(value)
    return flat


def compare(results: dict, old: dict) -> dict[str, dict]:
    """``{key: {"old", "new", "change_pct"}}`` for every figure in both runs."""
    new_flat, old_flat = flatten_figures(results), flatten_figures(old)
    return {key: {"old": old_flat[key], "new": value, "change_pct": change_pct(value, old_flat[key])}
            for key, value in new_flat.items() if key in old_flat}


def read_results(path: Path) -> dict:
    """A results JSON written by an earlier run.

    Raises:
        SystemExit: the file is missing or not a benchmark JSON (a one-line message).
    """
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"--compare {path}: cannot read it ({exc})") from None
    if not isinstance(results, dict) or "workloads" not in results:
        raise SystemExit(f"--compare {path}: not a benchmark JSON (no 'workloads' key)")
    return results


def write_results(results: dict, path: Path) -> Path:
    """Write the results JSON (NaN as null), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_nan_to_none(results), indent=2) + "\n")
    return path


def _nan_to_none(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _nan_to_none(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_nan_to_none(v) for v in node]
    if isinstance(node, float) and not math.isfinite(node):
        return None
    return node
