"""``python -m benchmarks``: every figure of ``make bench`` in one run, one table and one JSON.

Usage::

    python -m benchmarks                                  # both workloads, all figures
    python -m benchmarks --quick                          # tiny settings: a smoke test
    python -m benchmarks --compare bench-out/old.json     # and each figure's change
    python -m benchmarks --workloads large --threads 2 --out bench-out/large.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from comp.data.prebuild import usable_cores

DEFAULT_OUT = Path("bench-out/bench.json")
DEFAULT_CACHE = Path(".cache/bench")


@dataclass(frozen=True)
class Plan:
    """How much to repeat each measurement (``--quick`` shrinks all of it)."""

    step_reps: int = 5  # timed repetitions per model of the model step (alternated ours/timm)
    step_warmup: int = 2
    min_rep_s: float = 0.5  # fast (GPU) steps are timed in groups lasting at least this long
    peak_reps: int = 10
    peak_n: int = 2048  # matmul side on the CPU; 4x on CUDA
    epochs: int = 4  # comp train: epoch 1 builds the cache, the rest are "later epochs" (3 samples)
    plain_epochs: int = 2  # per worker setting: a spread for the plain loop too
    plain_workers: tuple[int, ...] = (0, 2)
    infer_reps: int = 3  # alternated none/d4 passes over the test images

    @classmethod
    def quick(cls) -> Plan:
        return cls(step_reps=2, step_warmup=1, min_rep_s=0.05, peak_reps=3, peak_n=1024, epochs=2, plain_epochs=1,
                   infer_reps=1)


class OneLineParser(argparse.ArgumentParser):
    """Errors as one line naming the option and the fix (exit code 2), without the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m benchmarks", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="small,large", help="comma list of small, large (default: both)")
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
    parser.add_argument("--quick", action="store_true", help="few images and repetitions: a smoke test")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.batch_size < 1 or args.image_size < 8 or (args.epochs or 2) < 2:
        parser.error("--threads and --batch-size must be >= 1, --image-size >= 8, --epochs >= 2")
    from benchmarks import report, workloads

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
    return args


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def device_meta(device, threads: int) -> dict:
    """What the figures were measured on."""
    import timm
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"device": device.type, "device_name": name, "threads": threads, "cores": usable_cores(),
            "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def bench_workload(name: str, args, plan: Plan, runtime, step: dict, log) -> dict:
    """Every per-workload figure: comp train, the plain loop, inference, and the ratios between them."""
    from benchmarks import pipelines, workloads
    from comp.data import resolve_num_workers

    spec = workloads.get_spec(name, args.quick)
    log(f"[{name}] workload: {spec.n_train} train + {spec.n_test} test {spec.ext} images "
        f"({spec.min_side}-{spec.max_side} px), built once under {args.cache_dir}")
    root = workloads.ensure_workload(spec, args.cache_dir)
    work = (args.cache_dir / "work" / name).resolve()
    cfg = pipelines.bench_config(name, root, work, args.models[0], args.image_size, args.batch_size,
                                 args.epochs or plan.epochs, args.threads, args.device)
    out: dict = {"data": workloads.describe(root, spec)}
    log(f"[{name}] comp train, {cfg.train.epochs} epochs from an empty cache")
    out["train"] = pipelines.run_comp_train_isolated(cfg, work)
    out["plain"] = {}
    for workers in sorted({*plan.plain_workers, resolve_num_workers("auto")}):  # and comp's own count
        log(f"[{name}] plain loop, num_workers={workers}")
        out["plain"][f"workers{workers}"] = pipelines.run_plain_loop(cfg, work, runtime, workers, plan.plain_epochs)
    best = max(out["plain"], key=lambda k: out["plain"][k]["median"])
    out["plain"].update(best=out["plain"][best]["median"], best_setting=best)
    log(f"[{name}] inference, TTA none and d4")
    out["inference"] = pipelines.run_inference(cfg, work, runtime, plan.infer_reps)
    later = out["train"]["later_epochs"]["median"]
    out["ratios"] = {
        "train_vs_step": later / step["ours"]["median"],
        "train_vs_plain": later / out["plain"]["best"],
        "first_epoch_vs_plain": out["train"]["first_epoch"] / out["plain"]["best"],
    }
    return out


def run(args: argparse.Namespace, log=print) -> dict:
    """Measure everything ``args`` asks for; returns the results (also written to ``args.out``)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import torch

    from benchmarks import measure, report, workloads
    from comp.config import TrainConfig
    from comp.train.device import setup_runtime

    plan = Plan.quick() if args.quick else Plan()
    names, old = args.workloads, args.old
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    runtime = setup_runtime(TrainConfig(device=args.device, threads=args.threads))
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results: dict = {"meta": {**device_meta(runtime.device, args.threads), "batch_size": args.batch_size,
                              "image_size": args.image_size, "quick": args.quick, "plan": asdict(plan),
                              "amp": str(runtime.amp_dtype).replace("torch.", "") if runtime.amp_dtype else "fp32",
                              "channels_last": True, "command": " ".join(sys.argv)}}
    n = plan.peak_n * (4 if runtime.device.type == "cuda" else 1)
    log(f"device {results['meta']['device_name']} ({runtime.device}), {args.threads} threads; peak matmul {n}x{n}")
    results["peak"] = measure.measure_peak(runtime.device, n, plan.peak_reps)
    results["model_step"] = {}
    for model in args.models:
        log(f"model step: {model} ours vs timm, batch {args.batch_size} at {args.image_size}px")
        results["model_step"][model] = measure.measure_model_step(
            model, args.batch_size, args.image_size, len(workloads.CLASS_FRACTIONS), runtime, plan.step_reps,
            plan.step_warmup, plan.min_rep_s, results["peak"]["median"])
    step = results["model_step"][args.models[0]]
    results["workloads"] = {name: bench_workload(name, args, plan, runtime, step, log) for name in names}
    results["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    results["targets"] = report.evaluate_targets(results)
    if old is not None:
        results["compare"] = {"file": str(args.compare), "figures": report.compare(results, old)}
    report.write_results(results, args.out)
    log("")
    log(report.render_table(results, old))
    missed = [t["figure"] for t in results["targets"] if not t["pass"]]
    log(f"\n{len(results['targets']) - len(missed)}/{len(results['targets'])} targets met; "
        f"{results['meta']['seconds']:.0f} s; wrote {args.out}")
    return results


def main(argv: list[str] | None = None) -> int:
    from comp.errors import CompError

    try:
        run(parse_args(argv))
    except CompError as exc:  # e.g. --device cuda on a machine without one
        print(f"python -m benchmarks: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
