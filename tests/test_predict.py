"""Merge modes on hand-computed numbers, blend weights, one-pass inference, ``--tta auto`` and QWK cut-points."""

import math

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from comp.data import ImageCache, ImageDataset, create_loader
from comp.errors import SubmitError
from comp.predict.ensemble import merge_logits, merge_probs, parse_weights
from comp.predict.inference import InferenceSettings, forward_views, predict_merged, predict_view_logits
from comp.predict.ordinal import apply_cutpoints, expected_grade, optimize_cutpoints, qwk
from comp.predict.select import score_policies, union_views
from comp.predict.tta import AUTO_POLICIES, parse_tta

CPU = InferenceSettings(torch.device("cpu"), batch_size=4)

# Two predictors, one row, two classes: softmax(0, ln 3) = (1/4, 3/4), softmax(0, 0) = (1/2, 1/2).
LOGITS = torch.tensor([[[0.0, math.log(3.0)]], [[0.0, 0.0]]])


def test_merge_mean_of_probabilities():
    assert torch.allclose(merge_logits(LOGITS, "mean"), torch.tensor([[0.375, 0.625]]))


def test_merge_geometric_renormalised():
    # sqrt(1/4 * 1/2) : sqrt(3/4 * 1/2) = 1 : sqrt(3)  ->  (1, sqrt 3) / (1 + sqrt 3)
    expected = torch.tensor([[1.0, math.sqrt(3.0)]]) / (1.0 + math.sqrt(3.0))
    assert torch.allclose(merge_logits(LOGITS, "geometric"), expected)


def test_merge_mean_of_logits():
    # mean logits (0, ln3 / 2) -> softmax (1, sqrt 3) / (1 + sqrt 3): the normalised geometric mean, exactly
    expected = torch.tensor([[1.0, math.sqrt(3.0)]]) / (1.0 + math.sqrt(3.0))
    assert torch.allclose(merge_logits(LOGITS, "logits"), expected)


def test_merge_weighted():
    assert torch.allclose(merge_logits(LOGITS, "mean", [3, 1]), torch.tensor([[0.3125, 0.6875]]))


def test_merge_probs_hand_computed():
    probs = np.array([[[0.1, 0.9]], [[0.5, 0.5]]])
    assert torch.allclose(merge_probs(probs, "mean"), torch.tensor([[0.3, 0.7]]))
    # sqrt(0.05) : sqrt(0.45) = 1 : 3
    assert torch.allclose(merge_probs(probs, "geometric"), torch.tensor([[0.25, 0.75]]))
    assert torch.allclose(merge_probs(probs, "logits"), torch.tensor([[0.25, 0.75]]))


def test_geometric_is_not_a_geometric_mean_of_raw_logits():
    logits = torch.tensor([[[-2.0, 1.0, 0.5]], [[1.0, -1.0, 3.0]]])
    merged = merge_logits(logits, "geometric")
    assert torch.allclose(merged.sum(-1), torch.ones(1))
    log_p = torch.log_softmax(logits, -1)
    expected = torch.exp(log_p.mean(0))
    assert torch.allclose(merged, expected / expected.sum(-1, keepdim=True))


@pytest.mark.parametrize("mode", ["mean", "geometric", "logits"])
def test_merging_views_then_folds_equals_merging_all(mode):
    logits = torch.randn(3, 4, 10, 5)  # (folds, views, N, C)
    flat = merge_logits(logits.flatten(0, 1), mode)
    per_fold = torch.stack([merge_logits(logits[f], mode) for f in range(3)])
    assert torch.allclose(flat, merge_probs(per_fold, mode), atol=1e-6)


def test_unknown_mode_refused():
    with pytest.raises(SubmitError, match="merge mode"):
        merge_logits(LOGITS, "median")


def test_weights_parsed_and_normalised():
    assert parse_weights("0.6,0.4", 2) == pytest.approx([0.6, 0.4])
    assert parse_weights("3,1", 2) == pytest.approx([0.75, 0.25])
    for text, match in [("0.6", "1 weights for 2"), ("a,b", "numbers"), ("-1,2", ">= 0"), ("0,0", "sum to 0")]:
        with pytest.raises(SubmitError, match=match):
            parse_weights(text, 2)


class Doubler(nn.Module):
    """A fixed 'model': class scores from the mean of each image quarter (orientation dependent)."""

    def forward(self, x):
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        return torch.stack([x[..., :h, :w].mean((1, 2, 3)), x[..., :h, w:].mean((1, 2, 3)),
                            x[..., h:, :].mean((1, 2, 3))], dim=1) * 4


class CountingDataset(ImageDataset):
    calls = 0

    def __getitem__(self, key):
        CountingDataset.calls += 1
        return super().__getitem__(key)


def _write(path, img):
    ok, buf = cv2.imencode(".png", img)
    assert ok
    path.write_bytes(buf.tobytes())


def test_predict_merged_one_loader_pass_matches_manual(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.png")
        _write(paths[-1], rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    ds = CountingDataset(paths, None, ImageCache(tmp_path / "cache", 8, 3), None)
    loader = create_loader(ds, 4, device=torch.device("cpu"))
    models, views = [Doubler(), nn.Sequential(Doubler(), nn.Tanh())], parse_tta("d4")
    CountingDataset.calls = 0
    probs = predict_merged(models, loader, views, "geometric", CPU, (0.5,) * 3, (0.25,) * 3)
    assert CountingDataset.calls == 6  # each image loaded once for 8 views x 2 models
    x = torch.stack([ds[i][0] for i in range(6)]).float().div(255).sub(0.5).div(0.25)
    manual = torch.stack([m(v.augment(x)) for m in models for v in views])
    assert np.allclose(probs, merge_logits(manual, "geometric").numpy(), atol=1e-6)
    assert forward_views(models, x, views, CPU).shape == (2, 8, 6, 3)


LEVELS = (40, 120, 200)


class LeftEdgeModel(nn.Module):
    """Reads the class from the brightness of the image's left quarter; shrugs (uniform) when it is dark.

    The images below are dark on the left and carry the class on the right, so this model only works
    on horizontally flipped inputs.
    """

    def forward(self, x):  # x in [0, 1]
        left = x[..., : x.shape[-1] // 4].mean((1, 2, 3))
        levels = torch.tensor(LEVELS, dtype=x.dtype) / 255
        logits = -(left[:, None] - levels[None]).abs() * 40
        return torch.where(left[:, None] < 10 / 255, torch.zeros_like(logits), logits)


def test_tta_auto_picks_the_flip_a_model_needs(tmp_path):
    paths, labels = [], []
    for i in range(12):
        img = np.zeros((16, 16, 3), dtype=np.uint8)
        img[:, 8:] = LEVELS[i % 3]
        paths.append(tmp_path / f"{i}.png")
        _write(paths[-1], img)
        labels.append(i % 3)
    ds = ImageDataset(paths, labels, ImageCache(tmp_path / "cache", 16, 3), None)
    loader = create_loader(ds, 5, device=torch.device("cpu"))
    views = union_views(AUTO_POLICIES)
    logits = predict_view_logits(LeftEdgeModel(), loader, views, CPU, (0.0,) * 3, (1.0,) * 3)
    assert logits.shape == (12, len(views), 3)
    rows = score_policies([logits], views, np.array(labels), "accuracy", AUTO_POLICIES)
    assert (rows[0].policy, rows[0].score) == ("hflip", 1.0)
    none = [r for r in rows if r.policy == "none"]
    assert all(r.score == pytest.approx(1 / 3) for r in none)
    assert len(rows) == len(AUTO_POLICIES) * 3


def test_score_policies_ranks_by_logloss_when_monitor_is_loss():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200)
    views = union_views(["none", "hflip"])
    logits = np.zeros((200, 2, 4), dtype=np.float32)
    logits[np.arange(200), 0, y] = 2.0  # identity view weakly right
    logits[np.arange(200), 1, y] = 6.0  # flipped view strongly right
    rows = score_policies([logits], views, y, "loss", ["none", "hflip"], ["mean"])
    assert rows[0].policy == "hflip" and rows[0].score == rows[0].logloss


def test_cutpoints_improve_qwk_on_a_shrunk_grade():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 1000)
    centre = 0.55 * y + 0.4 + rng.normal(0, 0.15, 1000)  # the model under-calls severe grades
    grades = np.arange(5)
    probs = np.exp(-((grades[None] - centre[:, None]) ** 2) / 0.5)
    probs /= probs.sum(1, keepdims=True)
    cut = optimize_cutpoints(probs, y)
    assert cut.qwk_tuned > cut.qwk_start + 0.05
    assert cut.qwk_tuned > cut.qwk_argmax
    assert np.all(np.diff(cut.thresholds) > 0)
    assert qwk(y, apply_cutpoints(expected_grade(probs), cut.thresholds), 5) == pytest.approx(cut.qwk_tuned)


def test_apply_cutpoints_and_qwk():
    assert apply_cutpoints(np.array([0.2, 0.5, 1.7, 3.9]), np.array([0.5, 1.5, 2.5, 3.5])).tolist() == [0, 1, 2, 4]
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    assert qwk(a, b, 5) == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"))
    with pytest.raises(SubmitError, match="at least 3"):
        optimize_cutpoints(np.full((4, 2), 0.5), np.zeros(4))
