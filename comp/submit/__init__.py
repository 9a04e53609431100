"""Submissions: built in the shape of ``sample_submission.csv``, validated, written, scored, and logged.

The face is the verbs: :func:`make_submission` (``comp submit``), :func:`check_file` (``--check``),
:func:`score_file` and :func:`append_ledger` (``comp score``), with the types they take and return.
Modules: :mod:`~comp.submit.format` (the sample's shape, building a submission),
:mod:`~comp.submit.validate` (the checks), :mod:`~comp.submit.make` (predict under the plan, write),
:mod:`~comp.submit.score` (``comp score`` and the ledger). Names are imported on first use, so
``comp score`` does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from comp.lazy import lazy_getattr

_EXPORTS = {
    "SubmitRequest": "make",
    "SubmitResult": "make",
    "make_submission": "make",
    "check_file": "validate",
    "score_file": "score",
    "append_ledger": "score",
    "ledger_rows": "score",
}

__all__ = [
    "SubmitRequest",
    "SubmitResult",
    "append_ledger",
    "check_file",
    "ledger_rows",
    "make_submission",
    "score_file",
]

if TYPE_CHECKING:
    from comp.submit.make import SubmitRequest, SubmitResult, make_submission
    from comp.submit.score import append_ledger, ledger_rows, score_file
    from comp.submit.validate import check_file


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
