"""comp: from a Kaggle-style image classification folder to a leaderboard submission."""

import os

# albumentations checks PyPI for a newer release on import: never do that from a training run.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
