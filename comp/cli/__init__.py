"""The ``comp`` command line: a thin layer that loads a config and calls one library function.

Heavy imports (torch, timm, optuna) live inside command bodies so ``comp --help`` is instant.
Each command group has its own module here; they register themselves on :data:`main`.
"""

from __future__ import annotations

import click

from comp import __version__
from comp.cli.common import CompGroup


@click.group(cls=CompGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="comp")
def main() -> None:
    """comp: folds -> tune -> train -> submit for image classification competitions."""


# Imported for their side effect of adding their commands to `main` (they import only click at the top).
from comp.cli import data, export, folds, init, models, report, submit, train, tune  # noqa: E402, F401
