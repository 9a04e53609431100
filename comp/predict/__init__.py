"""Prediction: every choice made on the OOF (TTA policy, merge, blend weights, cut-points) and the passes.

The face is the verbs other stages call: :func:`load_plan` and :func:`choose` (the choices, in
:mod:`~comp.predict.plan`), :func:`predict_blend` (the test pass) and :func:`load_experiment`, with the
types they take and return. Modules: :mod:`~comp.predict.tta` (views and policies),
:mod:`~comp.predict.ensemble` (merge modes, weights), :mod:`~comp.predict.runs` (loading and checking an
experiment's checkpoints), :mod:`~comp.predict.inference` (one loader pass, every view and model per
batch), :mod:`~comp.predict.experiment` (test and OOF predictions of an experiment),
:mod:`~comp.predict.select` (``--tta auto``), :mod:`~comp.predict.blend` (``--weights auto``),
:mod:`~comp.predict.ordinal` (QWK cut-points). The CLI imports this package inside its command bodies
only (it pulls in torch).
"""

from comp.predict.experiment import predict_blend
from comp.predict.plan import PredictionPlan, PredictRequest, choose, load_plan
from comp.predict.runs import Experiment, load_experiment

__all__ = ["Experiment", "PredictRequest", "PredictionPlan", "choose", "load_experiment", "load_plan",
           "predict_blend"]
