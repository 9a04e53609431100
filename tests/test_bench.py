"""The benchmark harness (``python -m benchmarks``) on tiny workloads: it runs, and its JSON and table hold
every figure. Timings are never asserted: they depend on the machine.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# benchmarks/ sits beside comp/ but is not installed: import it from the checkout whatever the working directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import __main__ as bench  # noqa: E402
from benchmarks import report, workloads  # noqa: E402
from benchmarks.measure import summarize  # noqa: E402

TINY = {
    "small": workloads.WorkloadSpec("small", n_train=25, n_test=4, ext="png", min_side=40, max_side=40),
    "large": workloads.WorkloadSpec("large", n_train=25, n_test=4, ext="jpg", min_side=200, max_side=300),
    "fundus": workloads.WorkloadSpec("fundus", n_train=25, n_test=4, ext="mixed", min_side=200, max_side=300),
}


@pytest.fixture
def tiny_workloads(monkeypatch):
    for name, spec in TINY.items():
        monkeypatch.setitem(workloads.SPECS, name, spec)
        monkeypatch.setitem(workloads.QUICK_COUNTS, name, (spec.n_train, spec.n_test))


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_class_counts_are_imbalanced_with_at_least_five_each():
    counts = workloads.class_counts(300)
    assert sum(counts) == 300 and counts[0] == max(counts) and min(counts) >= workloads.MIN_PER_CLASS
    with pytest.raises(ValueError, match="too few"):
        workloads.class_counts(20)


def test_workload_is_deterministic_and_cached(tmp_path):
    spec = workloads.WorkloadSpec("small", n_train=25, n_test=2, ext="jpg", min_side=30, max_side=60)
    first = workloads.ensure_workload(spec, tmp_path / "a")
    second = workloads.ensure_workload(spec, tmp_path / "b")
    names = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
    stamp = (first / "spec.json").stat().st_mtime_ns
    assert workloads.ensure_workload(spec, tmp_path / "a") == first  # reused, not rebuilt
    assert (first / "spec.json").stat().st_mtime_ns == stamp
    assert workloads.describe(first, spec)["class_counts"] == [5, 5, 5, 5, 5]


def test_synthetic_label_changes_the_image():
    plain = workloads.synth_image(0, 64, 80, np.random.default_rng(0))
    spotted = workloads.synth_image(4, 64, 80, np.random.default_rng(0))
    assert plain.shape == (64, 80, 3) and plain.dtype == np.uint8
    assert (spotted >= plain).all() and (spotted > plain).any()  # same seed: the same image plus spots


def test_unknown_workload_is_refused():
    with pytest.raises(ValueError, match="unknown workload 'huge'"):
        workloads.get_spec("huge")


def _check_quick_workload(figures: dict) -> None:
    """The figures of one workload of the quick run in test_quick_run_writes_every_figure_and_compares."""
    assert len(figures["train"]["epochs"]) == 2 and figures["train"]["train_images"] == 20
    assert {"workers0", "workers2", "best"} <= set(figures["plain"])
    assert figures["inference"]["images"] == 4 and figures["inference"]["tta_ratio"] > 0
    assert figures["train"]["memory"]["peak_mb"] > 0
    assert set(figures["ratios"]) == {"train_vs_step", "train_vs_plain", "first_epoch_vs_plain", "cache_vs_opencv"}
    build = figures["cache_build"]
    assert build["images"] == 25 and build["threads"] == 2
    assert all(build[k] > 0 for k in ("comp_all", "comp_one", "opencv_threads", "pil"))
    assert figures["train"]["cache_seconds"] > 0  # comp train built the cache before epoch 1 ...
    assert figures["train"]["first_epoch"] < figures["train"]["epochs"][0]  # ... and epoch 1 pays its share


@pytest.mark.slow
def test_quick_run_writes_every_figure_and_compares(tmp_path, tiny_workloads, keep_threads):
    out = tmp_path / "bench.json"
    args = bench.parse_args(["--quick", "--models", "resnet18", "--batch-size", "4", "--image-size", "32",
                             "--workloads", "small,large,fundus",
                             "--threads", "2", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"),
                             "--out", str(out)])
    lines: list[str] = []
    results = bench.run(args, log=lines.append)
    saved = json.loads(out.read_text())
    assert saved["meta"]["device"] == "cpu" and saved["peak"]["median"] > 0
    assert set(saved["peak"]["by_size"]) == {"512", "1024"} and saved["peak"]["median"] == max(
        saved["peak"]["by_size"].values())
    step = saved["model_step"]["resnet18"]
    assert step["ours"]["median"] > 0 and step["timm"]["median"] > 0 and step["mfu"]["ours"] > 0
    if saved["peak_theoretical"]:  # where /proc/cpuinfo says the vector width and clock
        assert step["mfu_theoretical"]["ours"] == pytest.approx(
            step["mfu"]["ours"] * saved["peak"]["median"] / saved["peak_theoretical"]["gflops"])
    for name in ("small", "large", "fundus"):
        _check_quick_workload(saved["workloads"][name])
    assert sorted(p.suffix for p in (Path(saved["workloads"]["fundus"]["data"]["folder"]) / "train").iterdir())[0] in (
        ".jpg", ".png") and saved["workloads"]["fundus"]["data"]["format"] == "mixed"
    assert len(saved["targets"]) == 14 and all(isinstance(t["pass"], bool) for t in saved["targets"])
    table = "\n".join(lines)
    assert "resnet18 ours/timm" in table and "large: comp train / plain loop (best)" in table

    old = copy.deepcopy(results)
    old["workloads"]["small"]["inference"]["tta_ratio"] = results["workloads"]["small"]["inference"]["tta_ratio"] / 2
    assert "+100.0% !" in report.render_table(results, old)  # the TTA cost doubled: a regression
    changes = report.compare(results, old)
    assert changes["workloads.small.inference.tta_ratio"]["change_pct"] == pytest.approx(100.0)
    assert changes["model_step.resnet18.ours"]["change_pct"] == 0.0


def _fake_results() -> dict:
    stat = summarize([10.0, 12.0, 11.0])
    workload = {"train": {"first_epoch": 5.0, "later_epochs": stat, "memory": {"peak_mb": 900.0, "kind": "x"}},
                "plain": {"workers0": stat, "best": 11.0},
                "ratios": {"train_vs_step": 0.9, "train_vs_plain": 1.0, "first_epoch_vs_plain": 0.5},
                "inference": {"none": stat, "d4": stat, "tta_ratio": 9.0}}
    return {"meta": {"device": "cpu"}, "peak": {**stat, "dtype": "float32"},
            "model_step": {"resnet18": {"ours": stat, "timm": stat, "ratio": summarize([0.96, 0.98]),
                                        "mfu": {"ours": 0.3, "timm": 0.3}}},
            "workloads": {"large": workload}}


def test_targets_pass_and_miss():
    verdicts = {t["key"]: t["pass"] for t in report.evaluate_targets(_fake_results())}
    assert verdicts == {
        "model_step.resnet18.ratio": True,  # median of 0.96 and 0.98
        "model_step.resnet18.mfu.ours": False,
        "workloads.large.ratios.train_vs_step": True,
        "workloads.large.ratios.train_vs_plain": False,  # large needs 2x
        "workloads.large.inference.tta_ratio": False,
    }


def test_table_and_json_round_trip(tmp_path):
    results = _fake_results()
    results["workloads"]["large"]["ratios"]["train_vs_step"] = float("nan")
    path = report.write_results(results, tmp_path / "out" / "r.json")
    assert json.loads(path.read_text())["workloads"]["large"]["ratios"]["train_vs_step"] is None
    table = report.render_table(results, report.read_results(path))
    assert "MISS" in table and "vs old" in table and "+0.0%" in table
    with pytest.raises(SystemExit, match="not a benchmark JSON"):
        (tmp_path / "bad.json").write_text("[]")
        report.read_results(tmp_path / "bad.json")


def test_compare_reports_each_figure_change():
    old, new = _fake_results(), _fake_results()
    new["model_step"]["resnet18"]["ours"] = summarize([13.2, 13.2])  # median 11 -> 13.2
    new["workloads"]["large"]["train"]["memory"]["peak_mb"] = 450.0
    changes = report.compare(new, old)
    assert changes["model_step.resnet18.ours"]["change_pct"] == pytest.approx(20.0)
    assert changes["workloads.large.train.memory.peak_mb"]["change_pct"] == pytest.approx(-50.0)
    assert changes["workloads.large.inference.tta_ratio"]["change_pct"] == 0.0
    table = report.render_table(new, old)
    assert "+20.0%" in table and "-50.0%" in table and "!" not in table  # both got better


@pytest.mark.parametrize("argv, message", [
    (["--workloads", "large,smal"], "--workloads: unknown smal; use one or more of small, large"),
    (["--compare", "nope.json"], "--compare nope.json: cannot read it"),
])
def test_bad_arguments_are_one_line_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_mixed_workload_writes_jpeg_and_png(tmp_path):
    spec = workloads.WorkloadSpec("fundus", n_train=25, n_test=2, ext="mixed", min_side=40, max_side=60)
    root = workloads.ensure_workload(spec, tmp_path)
    suffixes = sorted(p.suffix for p in (root / "train").iterdir())
    assert suffixes.count(".jpg") == 13 and suffixes.count(".png") == 12
    assert (root / "train" / "tr00000.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    assert (root / "train" / "tr00001.png").read_bytes()[:4] == b"\x89PNG"


def test_theoretical_peak_from_vector_width_and_clock():
    from benchmarks.measure import theoretical_peak

    avx512 = "model name : X\nflags : fpu sse2 avx avx2 avx512f\ncpu MHz : 2000.000\n"
    assert theoretical_peak(2, avx512, max_khz=3_000_000)["gflops"] == pytest.approx(2 * 3.0 * 16 * 2 * 2)
    assert theoretical_peak(4, "flags : sse2 avx avx2\ncpu MHz : 2500.0\n", max_khz=None)["gflops"] == (
        pytest.approx(4 * 2.5 * 8 * 2 * 2))
    assert theoretical_peak(2, "flags : fpu\n", max_khz=3_000_000) is None


def test_step_flops_are_counted_without_the_input_gradient():
    from benchmarks.measure import train_step_gflop
    from comp.models.check import model_complexity

    forward = model_complexity("resnet18", 64, in_chans=3, num_classes=5).gflops
    step = train_step_gflop("resnet18", 64, 5)
    first_conv_input_grad = 2 * 64 * 3 * 7 * 7 * 32 * 32 / 1e9  # the conv1 input gradient is not computed
    assert step == pytest.approx(3 * forward - first_conv_input_grad, rel=1e-6)


def test_real_mode_sets_gpu_sizes_but_explicit_options_win():
    args = bench.parse_args(["--real", "--batch-size", "64"])
    assert (args.models, args.image_size, args.batch_size, args.workloads, args.compile) == (
        "resnet50", 224, 64, ["fundus"], "both")


@pytest.mark.slow
def test_real_mode_runs_on_the_cpu_with_tiny_settings(tmp_path, tiny_workloads, keep_threads):
    out = tmp_path / "real.json"
    fake = tmp_path / "pytorch-image-models" / "train.py"
    fake.parent.mkdir()
    fake.write_text(FAKE_TIMM_TRAIN)
    args = bench.parse_args(["--real", "--quick", "--models", "resnet18", "--batch-size", "4", "--image-size", "32",
                             "--compile", "off", "--augment", "cells", "--timm-train", str(fake),
                             "--threads", "2", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"),
                             "--out", str(out)])
    lines: list[str] = []
    bench.run(args, log=lines.append)
    saved = json.loads(out.read_text())
    assert list(saved["model_step"]) == ["resnet18"] and list(saved["workloads"]) == ["fundus"]  # explicit wins
    assert saved["meta"]["real"] and saved["workloads"]["fundus"]["image_size"] == 32
    fundus = saved["workloads"]["fundus"]
    assert fundus["train"]["later_epochs"]["median"] > 0
    assert fundus["train_on_device"]["later_epochs"]["median"] > 0 and fundus["ratios"]["on_device_vs_step"] > 0
    timm = fundus["timm_train"]
    assert timm["images"] == {"train": 20, "validation": 5} and len(timm["epochs"]) == 2
    assert timm["epochs"][1] == pytest.approx(2 * timm["epochs"][0])  # the fake's later epochs log twice the rate
    assert fundus["ratios"]["train_vs_timm"] == pytest.approx(fundus["train"]["later_epochs"]["median"] / 400.0)
    table = "\n".join(lines)
    assert "fundus: comp train later epochs img/s, augment.on_device" in table
    assert "fundus: comp train / timm train.py (later epochs)" in table and "not measured" not in table
    assert any(t["key"] == "workloads.fundus.ratios.train_vs_timm" for t in saved["targets"])


# A stand-in for pytorch-image-models' train.py (the pip package does not ship it): the same argument
# names as the real one, an ImageFolder check, and its log lines and summary.csv.
FAKE_TIMM_TRAIN = '''
import argparse, csv, logging, os, time
parser = argparse.ArgumentParser()
for name in ("--data-dir", "--train-split", "--val-split", "--model", "--img-size", "--epochs", "--opt", "--lr",
             "--weight-decay", "--sched", "--warmup-epochs", "--smoothing", "--hflip", "--color-jitter", "--workers",
             "--seed", "--device", "--output", "--experiment", "--checkpoint-hist", "--amp-dtype", "--num-classes"):
    parser.add_argument(name)
parser.add_argument("-b", "--batch-size", type=int)
for flag in ("--channels-last", "--amp", "--pin-mem"):
    parser.add_argument(flag, action="store_true")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(message)s")
classes = sorted(os.listdir(os.path.join(args.data_dir, args.train_split)))
images = sum(len(os.listdir(os.path.join(args.data_dir, args.train_split, c))) for c in classes)
assert len(classes) == int(args.num_classes) and images and os.path.isdir(os.path.join(args.data_dir, args.val_split))
updates = images // args.batch_size
out = os.path.join(args.output, args.experiment)
os.makedirs(out, exist_ok=True)
for epoch in range(int(args.epochs)):
    for i in range(updates):
        time.sleep(0.01)
        rate = args.batch_size / (0.02 if epoch == 0 else 0.01)
        logging.info(f"Train: {epoch} [{i:>4d}/{updates} ({100. * (i + 1) / updates:>3.0f}%)]  Loss: 1.61 (1.61)  "
                     f"Time: 0.010s, {rate:>7.2f}/s  (0.010s, {rate:>7.2f}/s)  LR: 1.000e-03  Data: 0.001 (0.001)")
    with open(os.path.join(out, "summary.csv"), "a") as fh:
        csv.writer(fh).writerow([epoch, 1.61, 1.6, 20.0, 100.0, 1e-3])
'''


def test_timm_train_log_gives_each_complete_epochs_rate():
    from benchmarks.timm_train import parse_epoch_rates

    line = ("Train: {e} [{i:>4d}/3 ({p:>3.0f}%)]  Loss: 1.6 (1.6)  Time: 0.101s, 1267.33/s  (0.105s, {r:>7.2f}/s)  "
            "LR: 1.000e-03  Data: 0.010 (0.012)")
    log = "\n".join(["Model resnet50 created", line.format(e=0, i=0, p=33, r=900.0),
                     line.format(e=0, i=2, p=100, r=1000.5), "Test: [   0/1]  Time: 0.5",
                     line.format(e=1, i=0, p=33, r=1200.0),
                     line.format(e=1, i=2, p=100, r=1250.25), line.format(e=2, i=1, p=67, r=1300.0)])
    assert parse_epoch_rates(log) == [1000.5, 1250.25]  # epoch 2 never finished


def test_timm_command_uses_comps_settings_and_timms_argument_names(tmp_path):
    from benchmarks import pipelines
    from benchmarks.timm_train import timm_command

    cfg = pipelines.bench_config("fundus", tmp_path, tmp_path, "resnet50", 224, 128, 4, 16, "cuda")
    cmd = timm_command(tmp_path / "train.py", tmp_path / "data", tmp_path / "out", cfg, torch.device("cuda"),
                       torch.bfloat16, 5, 8)
    pairs = dict(zip(cmd[2::2], cmd[3::2]))
    assert cmd[:2] == [sys.executable, str(tmp_path / "train.py")]
    assert {k: pairs[k] for k in ("--model", "--img-size", "-b", "--epochs", "--opt", "--lr", "--num-classes",
                                  "--workers", "--warmup-epochs", "--smoothing")} == {
        "--model": "resnet50", "--img-size": "224", "-b": "128", "--epochs": "4", "--opt": "adamw", "--lr": "0.001",
        "--num-classes": "5", "--workers": "8", "--warmup-epochs": "0", "--smoothing": "0"}
    assert cmd[-5:] == ["--channels-last", "--amp", "--amp-dtype", "bfloat16", "--pin-mem"]
    on_cpu = timm_command(tmp_path / "train.py", tmp_path, tmp_path, cfg, torch.device("cpu"), None, 5, 0)
    assert "--amp" not in on_cpu and "--pin-mem" not in on_cpu and "--pretrained" not in on_cpu


def test_timm_train_path_must_exist(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COMP_TIMM_TRAIN", str(tmp_path / "missing.py"))
    with pytest.raises(SystemExit):
        bench.parse_args([])
    err = capsys.readouterr().err
    assert "--timm-train" in err and "missing.py: no such file" in err and len(err.strip().splitlines()) == 1
    monkeypatch.delenv("COMP_TIMM_TRAIN")
    assert bench.parse_args([]).timm_train is None


def test_table_says_timm_train_was_not_measured():
    results = _fake_results()
    row = next(line for line in report.render_table(results).splitlines() if "timm train.py" in line)
    assert row.startswith("large: comp train / timm train.py (later epochs)") and row.endswith(
        "not measured (pass --timm-train)")
    assert all("timm" not in t["key"] for t in report.evaluate_targets(results))
