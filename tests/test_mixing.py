"""Mixup / CutMix: soft targets, the off epoch, determinism, losses consistent with the hard-target ones, resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from comp.config import TrainConfig, load_config
from comp.train.mixing import BatchMixer, GradeLoss, SoftTargetCE, create_mixer
from comp.train.optim import create_criterion


def _batch(n=8, k=3):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 16, 16, generator=gen), torch.arange(n) % k


@pytest.mark.parametrize("alphas", [{"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 0.4, "cutmix": 1.0}])
def test_targets_sum_to_one_and_images_change(alphas):
    mixer = BatchMixer(TrainConfig(**alphas), num_classes=3, seed=1)
    images, labels = _batch(9)  # odd: the last row stays as it is
    original = images.clone()
    mixed, soft = mixer(images.clone(), labels, epoch=0, step=0)
    assert soft.shape == (9, 3) and torch.allclose(soft.sum(1), torch.ones(9))
    assert (soft < 1).any(1)[:8].all()  # every pair is mixed (mix_prob 1)
    assert torch.equal(soft[8], nn.functional.one_hot(labels[8], 3).float()) and torch.equal(mixed[8], original[8])
    assert not torch.equal(mixed[:8], original[:8])


def test_same_seed_epoch_step_same_mix_and_global_numpy_untouched():
    mixer = BatchMixer(TrainConfig(mixup=0.4, cutmix=1.0), 3, seed=5)
    images, labels = _batch()
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = mixer(images.clone(), labels, 2, 7)
    assert np.array_equal(np.random.get_state()[1], before)
    b = mixer(images.clone(), labels, 2, 7)
    c = mixer(images.clone(), labels, 2, 8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_mixing_is_off_from_the_off_epoch():
    mixer = create_mixer(TrainConfig(mixup=0.4, mix_off_epoch=2), 3, seed=0)
    assert [mixer.active(e) for e in range(4)] == [True, True, False, False]
    assert create_mixer(TrainConfig(), 3, 0) is None and create_mixer(TrainConfig(mixup=1, mix_prob=0), 3, 0) is None


@pytest.mark.parametrize("weights", [None, [1.0, 3.0, 0.5]])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_soft_loss_on_one_hot_rows_is_the_hard_loss(weights, smoothing):
    logits = torch.randn(10, 3, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 0, 1, 2, 1])
    w = None if weights is None else torch.tensor(weights)
    hard = create_criterion(w, smoothing, torch.device("cpu"))(logits, labels)
    soft = SoftTargetCE(w, smoothing)(logits, nn.functional.one_hot(labels, 3).float())
    assert soft.item() == pytest.approx(hard.item(), rel=1e-5)


def test_grade_loss_takes_the_expected_grade_of_a_mixed_row():
    loss = GradeLoss(None, 4)
    out = torch.tensor([[1.5]])
    assert loss(out, torch.tensor([[0.0, 0.5, 0.5, 0.0]])).item() == pytest.approx(0.0)
    assert loss(out, torch.tensor([1])).item() == pytest.approx(0.125)  # SmoothL1 of 0.5: 0.5 * 0.5**2


@pytest.fixture
def project(tiny_project):
    return tiny_project(**{"augment": {"preset": "light"}})


def test_resume_with_mixup_matches_an_uninterrupted_run(project):
    from comp.competition import load_competition
    from comp.device import setup_runtime
    from comp.folds import folds_hash, read_folds
    from comp.train.runner import fold_spec, run_fold, training_hash

    cfg = load_config(project["path"], ["train.epochs=3", "train.batch_size=4", "train.mixup=0.4",
                                        "train.cutmix=1.0", "train.mix_off_epoch=2"])
    comp = load_competition(cfg.data)
    folds = read_folds(cfg.folds.name, comp, k=cfg.folds.k)
    runtime = setup_runtime(cfg.train)

    def spec(name):
        return fold_spec(folds, 0, project["dir"] / name, 3, folds_hash(cfg.folds.name), training_hash(cfg))

    whole = run_fold(cfg, comp, spec("whole"), runtime, log=lambda _: None, staged=False)

    class Stop(Exception):
        pass

    def stop_after_first(epoch, _row):
        if epoch == 0:
            raise Stop

    with pytest.raises(Stop):
        run_fold(cfg, comp, spec("cut"), runtime, callback=stop_after_first, log=lambda _: None, staged=False)
    lines = []
    resumed = run_fold(cfg, comp, spec("cut"), runtime, resume=True, log=lines.append, staged=False)
    assert any("resuming after epoch 1" in line for line in lines)
    drop = ["seconds", "images_per_s"]
    pd.testing.assert_frame_equal(pd.DataFrame(whole.history).drop(columns=drop),
                                  pd.DataFrame(resumed.history).drop(columns=drop))
    assert np.array_equal(whole.valid_probs, resumed.valid_probs)
    assert whole.history[0]["train_loss"] != whole.history[2]["train_loss"]
