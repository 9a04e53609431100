"""Training: the fold engine, losses, metrics, checkpoints and distributed set-up."""
