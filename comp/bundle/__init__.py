"""Offline bundles for Kaggle code competitions.

``comp export`` (:func:`export_bundle`) freezes what ``comp submit`` would choose and the members' weights
into a folder; ``comp predict`` (:func:`predict_bundle`) runs it on the hidden test set with no training
data, no run folder and no network.
"""

from comp.bundle.export import export_bundle
from comp.bundle.predict import predict_bundle

__all__ = ["export_bundle", "predict_bundle"]
