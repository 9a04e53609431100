"""Pieces shared by every command: the error-to-exit-code group and the config options."""

from __future__ import annotations

import errno
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import click

from comp.config import Config, env_flag, load_config, with_values
from comp.errors import CompError, ConfigError

# Operating-system failures a user can fix: one line naming the path, the reason and the fix.
OS_FIXES = {
    errno.EACCES: "make it (or its folder) writable, or work in another folder",
    errno.EPERM: "make it (or its folder) writable, or work in another folder",
    errno.EROFS: "the file system is read-only: work in a writable folder",
    errno.ENOSPC: "the disk is full: free some space (old runs/, .cache/) and run the command again",
    errno.EDQUOT: "the disk quota is used up: free some space and run the command again",
}


class CompGroup(click.Group):
    """A click group that turns a :class:`CompError` into one line on stderr and exit code 2.

    ``COMP_DEBUG=1`` lets the traceback through instead.
    """

    def invoke(self, ctx: click.Context) -> Any:
        """Invoke the command, turning a :class:`CompError` into one line on stderr and exit code 2."""
        try:
            return super().invoke(ctx)
        except CompError as exc:
            if env_flag("COMP_DEBUG"):
                raise
            click.echo(f"error: {one_line(exc)}", err=True)
            sys.stderr.flush()
            ctx.exit(2)
        except OSError as exc:
            if env_flag("COMP_DEBUG") or exc.errno not in OS_FIXES:
                raise
            click.echo(f"error: {exc.filename or ''}: {exc.strerror}; {OS_FIXES[exc.errno]}", err=True)
            sys.stderr.flush()
            ctx.exit(2)


def one_line(exc: Exception) -> str:
    """The error's own message: a DataLoader worker re-raises ours wrapped in its traceback text."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    name, sep, message = last.partition(": ")
    return message if sep and name.rpartition(".")[2] == type(exc).__name__ else last


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--config`` and ``--set`` to a command and pass it a loaded ``cfg``."""

    @click.option(
        "--config", "config_path", type=click.Path(path_type=Path), default=None,
        help="Experiment config (default: configs/demo.yaml).",
    )
    @click.option(
        "--set", "overrides", multiple=True, metavar="KEY=VALUE",
        help="Override a config key, e.g. --set train.lr=1e-3 (repeatable).",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, config_path: Path | None, overrides: tuple[str, ...], **kwargs: Any) -> Any:
        cfg: Config = load_config(config_path, overrides)
        return func(*args, cfg=cfg, **kwargs)

    return wrapper


def parse_folds(value: str, option: str = "--fold") -> list[int] | None:
    """``all`` -> None (every fold); ``none`` -> []; ``2`` or ``0,3`` -> those folds.

    Raises:
        ConfigError: anything else (one line, exit code 2).
    """
    if value == "all":
        return None
    if value == "none":
        return []
    try:
        return sorted({int(part) for part in value.split(",")})
    except ValueError:
        raise ConfigError(f"{option} {value!r}: use all, a fold number or a comma list such as 0,2") from None


def with_shortcuts(cfg: Config, values: dict[str, tuple[str, object]]) -> Config:
    """``cfg`` with the shortcut options that were given (``{"--epochs": ("train.epochs", 3)}``) set."""
    given = {option: pair for option, pair in values.items() if pair[1] is not None}
    for option, (key, value) in given.items():
        cfg = with_values(cfg, {key: value}, option)
    return cfg


def echo_table(rows: list[list[object]], headers: list[str]) -> None:
    """Print a plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c.rjust(w) if n and _numeric(c) else c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def progress_bar(label: str, stream: TextIO | None = None,
                 min_interval: float = 0.1) -> Callable[[int, int], None] | None:
    """A ``(done, total)`` callback drawing one self-updating line with rate and ETA.

    Returned when ``stream`` (stderr) is a terminal; None otherwise, where logs get the one summary line
    instead.
    """
    stream = stream if stream is not None else sys.stderr
    if not stream.isatty():
        return None
    start, shown = time.perf_counter(), [0.0]

    def show(done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - shown[0] < min_interval:
            return
        shown[0] = now
        rate = done / max(now - start, 1e-9)
        eta = (total - done) / rate if rate > 0 else 0.0
        filled = int(30 * done / max(total, 1))
        stream.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}  {rate:.1f} img/s  "
                     f"ETA {int(eta) // 60}:{int(eta) % 60:02d} ")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show
