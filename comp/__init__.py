"""comp: from a Kaggle-style image classification folder to a leaderboard submission."""

__version__ = "0.1.0"
