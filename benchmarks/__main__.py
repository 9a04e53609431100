"""``python -m benchmarks``: every figure of ``make bench`` in one run, one table and one JSON.

Usage::

    python -m benchmarks                                  # the three workloads, all figures
    python -m benchmarks --quick                          # tiny settings: a smoke test
    python -m benchmarks --compare bench-out/old.json     # and each figure's change
    python -m benchmarks --workloads large --threads 2 --out bench-out/large.json
    python -m benchmarks --real                           # GPU sizes: resnet50, 224 px, batch 128, fundus, compile
    python -m benchmarks --real --timm-train pytorch-image-models/train.py   # ... and timm's train.py beside comp
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from comp.data.prebuild import usable_cores

if TYPE_CHECKING:
    import torch

    from comp.config import Config
    from comp.device import Runtime

DEFAULT_OUT = Path("bench-out/bench.json")
# --real: the sizes people train at on a GPU (bf16 autocast and channels_last are the defaults there)
REAL = {"models": "resnet50", "image_size": 224, "batch_size": 128, "workloads": "fundus", "compile": "both",
        "on_device": "both"}
DEFAULT_CACHE = Path(".cache/bench")


@dataclass(frozen=True)
class Plan:
    """How much to repeat each measurement (``--quick`` shrinks all of it)."""

    step_reps: int = 5  # timed repetitions per model of the model step (alternated ours/timm)
    step_warmup: int = 2
    min_rep_s: float = 0.5  # fast (GPU) steps are timed in groups lasting at least this long
    peak_reps: int = 10
    peak_sizes: tuple[int, ...] = (1024, 2048, 3072)  # matmul sides on the CPU (the best is the peak); 4x on CUDA
    epochs: int = 4  # comp train: epoch 1 builds the cache, the rest are "later epochs" (3 samples)
    plain_epochs: int = 2  # per worker setting: a spread for the plain loop too
    plain_workers: tuple[int, ...] = (0, 2)
    infer_reps: int = 3  # alternated none/d4 passes over the test images

    @classmethod
    def quick(cls) -> Plan:
        """A plan small enough to finish in about a minute (``--quick``)."""
        return cls(step_reps=2, step_warmup=1, min_rep_s=0.05, peak_reps=3, peak_sizes=(512, 1024), epochs=2,
                   plain_epochs=1,
                   infer_reps=1)


class OneLineParser(argparse.ArgumentParser):
    """Errors as one line naming the option and the fix (exit code 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        """Exit with code 2 and one line naming the problem."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``argv``; None: ``sys.argv``) into the run's options."""
    parser = _parser()
    args = parser.parse_args(argv)
    _resolve_args(parser, args)
    return args


def _parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m benchmarks", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="small,large,fundus",
                        help="comma list of small, large, fundus (default: all three)")
    parser.add_argument("--models", default="resnet18,resnet50",
                        help="model-step comparisons with timm; the first one is trained end to end")
    parser.add_argument("--threads", type=int, default=usable_cores(), help="torch threads (default: usable cores)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=None, help="comp train epochs (default 4, --quick 2)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (as train.device)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results JSON (default {DEFAULT_OUT})")
    parser.add_argument("--compare", type=Path, default=None, help="an earlier results JSON: print each change")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help=f"workloads and scratch runs (default {DEFAULT_CACHE})")
    parser.add_argument("--compile", choices=("off", "on", "both"), default="off",
                        help="comp train with train.compile off, on, or both (default off)")
    parser.add_argument("--on-device", choices=("off", "on", "both"), default="off",
                        help="comp train with augment.on_device off, on, or both (default off)")
    parser.add_argument("--augment", choices=("none", "light", "medium", "fundus", "cells"), default="light",
                        help="comp train's augment.preset (default light: a flip, as the plain loop)")
    parser.add_argument("--timm-train", type=Path, default=None,
                        help="a pytorch-image-models checkout's train.py: run it on the same images "
                             "(default: $COMP_TIMM_TRAIN; none: not measured)")
    parser.add_argument("--real", action="store_true",
                        help="GPU sizes: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in REAL.items())
                        + " (options given explicitly win)")
    parser.add_argument("--quick", action="store_true", help="few images and repetitions: a smoke test")
    return parser


def _resolve_args(parser: OneLineParser, args: argparse.Namespace) -> None:
    """Apply ``--real``, check the values and resolve the paths and lists (exit 2 with one line when wrong)."""
    if args.real:
        for key, value in REAL.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    if args.threads < 1 or args.batch_size < 1 or args.image_size < 8 or (args.epochs or 2) < 2:
        parser.error("--threads and --batch-size must be >= 1, --image-size >= 8, --epochs >= 2")
    from benchmarks import report, timm_train, workloads

    try:
        args.timm_train = timm_train.resolve_script(args.timm_train)
    except SystemExit as exc:
        parser.error(str(exc))
    args.size_given = args.image_size != parser.get_default("image_size")  # else a workload may set its own
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [name for name in args.workloads if name not in workloads.SPECS]
    if unknown or not args.workloads:
        parser.error(f"--workloads: unknown {', '.join(unknown) or '(none given)'}; use one or more of "
                     f"{', '.join(workloads.SPECS)}")
    args.old = None  # refuse an unreadable --compare file before any work
    if args.compare is not None:
        try:
            args.old = report.read_results(args.compare)
        except SystemExit as exc:
            parser.error(str(exc))


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def device_meta(device: torch.device, threads: int) -> dict:
    """What the figures were measured on."""
    import timm
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"device": device.type, "device_name": name, "threads": threads, "cores": usable_cores(),
            "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def workload_size(name: str, args: argparse.Namespace) -> int:
    """The side workload ``name`` trains at: its own (``fundus``: 224) unless ``--image-size`` was given."""
    from benchmarks import workloads

    spec = workloads.get_spec(name, args.quick)
    return spec.train_size if spec.train_size and not args.size_given else args.image_size


def bench_workload(name: str, args: argparse.Namespace, plan: Plan, runtime: Runtime, step: dict,
                   log: Callable[[str], None]) -> dict:
    """Every per-workload figure: comp train, the plain loop, inference, and the ratios between them."""
    from benchmarks import decode, pipelines, workloads

    spec = workloads.get_spec(name, args.quick)
    log(f"[{name}] workload: {spec.n_train} train + {spec.n_test} test {spec.ext} images "
        f"({spec.min_side}-{spec.max_side} px), built once under {args.cache_dir}")
    root = workloads.ensure_workload(spec, args.cache_dir)
    work = (args.cache_dir / "work" / name).resolve()
    size = workload_size(name, args)
    cfg = pipelines.bench_config(name, root, work, args.models[0], size, args.batch_size,
                                 args.epochs or plan.epochs, args.threads, args.device, args.compile == "on",
                                 args.augment, args.on_device == "on")
    out: dict = {"data": workloads.describe(root, spec)}
    out["image_size"] = size
    log(f"[{name}] first pass: decoding the training images at {size} px, 4 ways")
    out["cache_build"] = decode.measure_cache_build(sorted((root / "train").iterdir()), size, args.threads,
                                                    work / "scratch")
    out.update(_train_runs(name, args, cfg, work, runtime, log))
    out["plain"] = _plain_runs(name, cfg, work, runtime, plan, log)
    log(f"[{name}] inference, TTA none and d4")
    out["inference"] = pipelines.run_inference(cfg, work, runtime, plan.infer_reps)
    out["ratios"] = _ratios(out, step)
    return out


def _train_runs(name: str, args: argparse.Namespace, cfg: Config, work: Path, runtime: Runtime,
                log: Callable[[str], None]) -> dict:
    """Run comp train (and its compiled and on-device variants, and timm's train.py, where asked for)."""
    from benchmarks import pipelines, timm_train
    from comp.data import resolve_num_workers

    out: dict = {}
    log(f"[{name}] comp train, {cfg.train.epochs} epochs from an empty cache")
    out["train"] = pipelines.run_comp_train_isolated(cfg, work)
    if args.compile == "both":
        log(f"[{name}] comp train with train.compile")
        compiled = cfg.model_copy(deep=True)
        compiled.train.compile = True
        out["train_compiled"] = pipelines.run_comp_train_isolated(compiled, work)
    if args.on_device == "both":
        log(f"[{name}] comp train with augment.on_device")
        on_device = cfg.model_copy(deep=True)
        on_device.augment.on_device = True
        out["train_on_device"] = pipelines.run_comp_train_isolated(on_device, work)
    if args.timm_train is not None:
        log(f"[{name}] timm's train.py ({args.timm_train}), {cfg.train.epochs} epochs on the same images")
        out["timm_train"] = timm_train.run_timm_train(args.timm_train, cfg, work, pipelines.FOLD, runtime,
                                                      resolve_num_workers(cfg.data.num_workers), args.threads)
    return out


def _plain_runs(name: str, cfg: Config, work: Path, runtime: Runtime, plan: Plan,
                log: Callable[[str], None]) -> dict:
    """The plain loop per worker setting (the plan's and comp's own count), and the best of them."""
    from benchmarks import pipelines
    from comp.data import resolve_num_workers

    plain: dict = {}
    for workers in sorted({*plan.plain_workers, resolve_num_workers("auto")}):  # and comp's own count
        log(f"[{name}] plain loop, num_workers={workers}")
        plain[f"workers{workers}"] = pipelines.run_plain_loop(cfg, work, runtime, workers, plan.plain_epochs)
    best = max(plain, key=lambda k: plain[k]["median"])
    plain.update(best=plain[best]["median"], best_setting=best)
    return plain


def _ratios(out: dict, step: dict) -> dict:
    """The workload's speed ratios: comp train against the model step, timm's train.py and the plain loop."""
    later = out["train"]["later_epochs"]["median"]
    return {
        "train_vs_step": later / step["ours"]["median"],
        **({"compiled_vs_step": out["train_compiled"]["later_epochs"]["median"] / step["ours"]["median"]}
           if "train_compiled" in out else {}),
        **({"on_device_vs_step": out["train_on_device"]["later_epochs"]["median"] / step["ours"]["median"]}
           if "train_on_device" in out else {}),
        **({"train_vs_timm": later / out["timm_train"]["later_epochs"]["median"]}
           if "later_epochs" in out.get("timm_train", {}) else {}),
        "train_vs_plain": later / out["plain"]["best"],
        "first_epoch_vs_plain": out["train"]["first_epoch"] / out["plain"]["best"],
        "cache_vs_opencv": out["cache_build"]["comp_all"] / out["cache_build"]["opencv_threads"],
    }


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """Measure everything ``args`` asks for; returns the results (also written to ``args.out``)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import torch

    from comp.config import TrainConfig
    from comp.device import setup_runtime

    plan = Plan.quick() if args.quick else Plan()
    names, old = args.workloads, args.old
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    runtime = setup_runtime(TrainConfig(device=args.device, threads=args.threads))
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results: dict = {"meta": _meta(args, runtime, plan)}
    steps = _model_steps(args, names, runtime, plan, results, log)
    results["workloads"] = {name: bench_workload(name, args, plan, runtime, steps[workload_size(name, args)], log)
                            for name in names}
    theory = (results.get("peak_theoretical") or {}).get("gflops")
    for figures in results["model_step"].values():
        figures["mfu_theoretical"] = {k: v * results["peak"]["median"] / theory for k, v in figures["mfu"].items()
                                      } if theory else None
    results["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    _finish(results, args, old, log)
    return results


def _meta(args: argparse.Namespace, runtime: Runtime, plan: Plan) -> dict:
    """The run's settings and machine, for the results' ``meta``."""
    return {**device_meta(runtime.device, args.threads), "batch_size": args.batch_size,
            "image_size": args.image_size, "quick": args.quick, "plan": asdict(plan),
            "amp": str(runtime.amp_dtype).replace("torch.", "") if runtime.amp_dtype else "fp32",
            "channels_last": True, "compile": args.compile, "real": args.real,
            "augment": args.augment, "on_device": args.on_device,
            "timm_train": str(args.timm_train) if args.timm_train else None,
            "command": " ".join(sys.argv)}


def _model_steps(args: argparse.Namespace, names: list[str], runtime: Runtime, plan: Plan, results: dict,
                 log: Callable[[str], None]) -> dict[int, dict]:
    """Measure the peak and every model step into ``results``; returns the first model's step per image size."""
    from benchmarks import measure, workloads

    sizes = tuple(n * (4 if runtime.device.type == "cuda" else 1) for n in plan.peak_sizes)
    log(f"device {results['meta']['device_name']} ({runtime.device}), {args.threads} threads; peak matmul of "
        f"{', '.join(map(str, sizes))}")
    results["peak"] = measure.measure_peak(runtime.device, sizes, plan.peak_reps)
    if runtime.device.type == "cpu":
        results["peak_theoretical"] = measure.theoretical_peak(args.threads)
    results["model_step"] = {}
    for model in args.models:
        log(f"model step: {model} ours vs timm, batch {args.batch_size} at {args.image_size}px")
        results["model_step"][model] = measure.measure_model_step(
            model, args.batch_size, args.image_size, len(workloads.CLASS_FRACTIONS), runtime, plan.step_reps,
            plan.step_warmup, plan.min_rep_s, results["peak"]["median"])
    steps = {args.image_size: results["model_step"][args.models[0]]}
    for size in sorted({workload_size(name, args) for name in names} - set(steps)):  # e.g. fundus at 224 px
        log(f"model step: {args.models[0]} ours vs timm, batch {args.batch_size} at {size}px")
        steps[size] = results["model_step"][f"{args.models[0]}@{size}px"] = measure.measure_model_step(
            args.models[0], args.batch_size, size, len(workloads.CLASS_FRACTIONS), runtime, plan.step_reps,
            plan.step_warmup, plan.min_rep_s, results["peak"]["median"])
    return steps


def _finish(results: dict, args: argparse.Namespace, old: dict | None, log: Callable[[str], None]) -> None:
    """Evaluate the targets and the comparison, write the results and log the table."""
    from benchmarks import report

    results["targets"] = report.evaluate_targets(results)
    if old is not None:
        results["compare"] = {"file": str(args.compare), "figures": report.compare(results, old)}
    report.write_results(results, args.out)
    log("")
    log(report.render_table(results, old))
    missed = [t["figure"] for t in results["targets"] if not t["pass"]]
    log(f"\n{len(results['targets']) - len(missed)}/{len(results['targets'])} targets met; "
        f"{results['meta']['seconds']:.0f} s; wrote {args.out}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; returns the exit code (2 with one line on stderr for a :class:`CompError`)."""
    from comp.errors import CompError

    try:
        run(parse_args(argv))
    except CompError as exc:  # e.g. --device cuda on a machine without one
        print(f"python -m benchmarks: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
