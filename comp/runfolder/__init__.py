"""The run folder as code: every path under ``runs/<exp>/`` and the typed records it holds.

:mod:`~comp.runfolder.layout` (:class:`RunFolder`, :class:`MemberDir`, the ``prob_<class>`` columns),
:mod:`~comp.runfolder.records` (:class:`FoldMetrics`, :class:`CVSummary`, the history and OOF tables) and
:mod:`~comp.runfolder.checkpoint` (the checkpoint's keys, atomic save, safe load). Train writes through them;
tune, predict, report, submit and export read through them; ``docs/artifacts.md`` is held to them by
``tests/test_runfolder.py``. The face is the layout alone, so that ``comp.config`` (and ``comp --help``)
loads neither pandas nor torch; import the records and checkpoints from their modules.
"""

from comp.runfolder.layout import RUNS_DIR, MemberDir, RunFolder, prob_columns

__all__ = ["RUNS_DIR", "MemberDir", "RunFolder", "prob_columns"]
