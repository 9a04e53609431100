"""Training: the fold loop, the engine, losses, optimisers and fine-tuning controls.

The face is the verb, :func:`run_training`, and what it returns. Shared leaves that every stage uses
live below this package: :mod:`comp.metrics`, :mod:`comp.device`, :mod:`comp.runfolder`.
"""

from comp.train.runner import TrainSummary, run_training

__all__ = ["TrainSummary", "run_training"]
