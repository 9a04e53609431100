"""Reports: learning curves, OOF confusion matrix, per-class scores, CV summary and experiment comparisons.

``write_report(["exp"])`` writes ``runs/exp/report/index.html`` (and PNG/CSV files beside it);
several names write ``runs/compare-<a>-<b>/index.html``. Importing this package loads matplotlib
(Agg backend): command-line code imports it inside the command body.
"""

from comp.report.build import write_comparison_report, write_experiment_report, write_report, write_runs_report
from comp.report.plots import annotate_cells
from comp.report.runs import RunData, load_run

__all__ = [
    "RunData", "annotate_cells", "load_run", "write_comparison_report", "write_experiment_report",
    "write_report", "write_runs_report",
]
