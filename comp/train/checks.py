"""Settings that would silently hurt or be ignored: one warning line each, logged when a fold starts."""

from __future__ import annotations

from comp.config import Config
from comp.train.optim import ema_horizon_warning


def setting_warnings(cfg: Config, total_steps: int) -> list[str]:
    """Warnings about ``cfg`` for a run of ``total_steps`` optimiser steps (each one line, no fold prefix)."""
    t = cfg.train
    lines = [ema_horizon_warning(t.ema, total_steps)]
    return [line for line in lines if line]
