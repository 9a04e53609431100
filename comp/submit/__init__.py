"""Submissions: built in the shape of ``sample_submission.csv``, validated, written, scored, and logged.

Modules: :mod:`~comp.submit.format` (the sample's shape, building a submission),
:mod:`~comp.submit.validate` (the checks, also ``comp submit --check``), :mod:`~comp.submit.make`
(``comp submit``: predict, blend, write), :mod:`~comp.submit.score` (``comp score`` and the ledger).
"""

from comp.submit.format import SampleFormat, build_submission, probs_frame, sample_format
from comp.submit.score import append_ledger, infer_experiment, ledger_rows, score_file
from comp.submit.validate import check_file, validate_frame, validate_text

__all__ = [
    "SampleFormat",
    "append_ledger",
    "build_submission",
    "check_file",
    "infer_experiment",
    "ledger_rows",
    "probs_frame",
    "sample_format",
    "score_file",
    "validate_frame",
    "validate_text",
]
