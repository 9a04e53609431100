"""``make bench``: comp's speed against timm's models and the plain PyTorch loop, in one run.

Modules: :mod:`~benchmarks.workloads` (the synthetic competitions, built once and cached),
:mod:`~benchmarks.measure` (timing, the device's peak, the model step, memory),
:mod:`~benchmarks.pipelines` (``comp train`` end to end, the plain loop, inference with TTA),
:mod:`~benchmarks.report` (targets, the table, the comparison with an earlier JSON),
:mod:`~benchmarks.__main__` (the command line). How to read the output: ``docs/bench.md``.
"""
