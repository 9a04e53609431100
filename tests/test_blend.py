"""--weights auto: non-negative blend weights fitted on the OOF, cross-fitted over the folds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from comp.errors import SubmitError
from comp.predict.blend import crossfit_blend, fit_weights
from tests.test_submit import fabricate_run, invoke, project  # noqa: F401  (project is a fixture)

N, C = 300, 3


def members(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A good member (right class likely), a weaker one, and pure noise; y and 5 folds."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, N)
    good = rng.dirichlet(np.ones(C), N) * 0.4 + np.eye(C)[y] * 0.6
    weak = rng.dirichlet(np.ones(C), N) * 0.8 + np.eye(C)[y] * 0.2
    noise = rng.dirichlet(np.ones(C), N)
    return np.stack([good, weak, noise]), y, np.arange(N) % 5


def accuracy(y):
    return lambda probs: ("accuracy", float((probs.argmax(1) == y).mean()))


@pytest.mark.parametrize("mode", ["mean", "geometric", "logits"])
def test_weights_favour_the_informative_member_and_drop_noise(mode):
    probs, y, _ = members()
    w = fit_weights(probs, y, mode)
    assert len(w) == 3 and all(v >= 0 for v in w) and sum(w) == pytest.approx(1.0)
    assert w[0] > w[1] and w[0] > 0.5 and w[2] < 0.05


def test_crossfit_blend_is_honest_and_no_worse_than_equal():
    probs, y, folds = members()
    fit = crossfit_blend(probs, y, folds, "mean", ["good", "weak", "noise"], accuracy(y))
    assert set(fit.fold_weights) == {0, 1, 2, 3, 4} and fit.metric == "accuracy"
    assert fit.member_scores["good"] > fit.member_scores["noise"]
    assert fit.blend_score >= fit.equal_score
    for fold, w in fit.fold_weights.items():  # each fold's rows are blended by weights fitted without them
        held = folds == fold
        assert w == fit_weights(probs[:, ~held], y[~held], "mean")
    record = fit.to_json()
    assert record["weights"]["good"] == fit.weights[0] and set(record["fold_weights"]) == {"0", "1", "2", "3", "4"}


def test_fitted_weights_that_lose_to_equal_weights_out_of_fold_are_not_used():
    probs, y, folds = members()
    equal = probs.mean(0)
    closeness = lambda p: ("f1", -float(np.abs(p - equal).sum()))  # noqa: E731  (a metric that equal weights win)
    fit = crossfit_blend(probs, y, folds, "mean", ["good", "weak", "noise"], closeness)
    assert not fit.kept and fit.blend_score < fit.equal_score
    assert fit.weights == pytest.approx([1 / 3] * 3) and np.allclose(fit.oof, equal, atol=1e-6)
    assert fit.fitted[0] > 0.5  # what the log loss fit wanted, recorded but not used
    record = fit.to_json()
    assert record["kept"] is False and record["fitted"]["good"] == fit.fitted[0]
    assert crossfit_blend(probs, y, folds, "mean", ["good", "weak", "noise"], accuracy(y)).kept


def test_one_member_or_one_fold_refused():
    probs, y, folds = members()
    with pytest.raises(SubmitError, match="one experiment has nothing to blend"):
        crossfit_blend(probs[:1], y, folds, "mean", ["a"], accuracy(y))
    with pytest.raises(SubmitError, match="one fold"):
        crossfit_blend(probs, y, np.zeros(N), "mean", ["a", "b", "c"], accuracy(y))


def _informative_oof(run, comp, strength: float, seed: int):
    """Rewrite a fabricated run's oof.csv so it knows the labels to a degree."""
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str, "label": str})
    rng = np.random.default_rng(seed)
    truth = np.eye(comp.num_classes)[comp.train["target"].to_numpy()]
    probs = (1 - strength) * rng.dirichlet(np.ones(comp.num_classes), len(oof)) + strength * truth
    for k, c in enumerate(comp.classes_):
        oof[f"prob_{c}"] = probs[:, k]
    oof.to_csv(run / "oof.csv", index=False)


def test_submit_weights_auto_prints_and_records(project):  # noqa: F811
    cfg2 = project["cfg"].model_copy(update={"name": "exp2"})
    _informative_oof(fabricate_run(cfg2, project["comp"], seed=1), project["comp"], 0.7, 1)
    _informative_oof(project["dir"] / "runs/exp", project["comp"], 0.0, 2)
    result = invoke("submit", "exp", "exp2", "--weights", "auto", "--config", project["config"])
    assert result.exit_code == 0, result.output
    assert "blend, fitted (cross-fitted)" in result.output and "--weights auto: exp " in result.output
    meta = json.loads((project["dir"] / "submissions/exp+exp2.json").read_text())
    auto = meta["weights_auto"]
    assert meta["weights"] == pytest.approx([auto["weights"]["exp"], auto["weights"]["exp2"]])
    assert auto["weights"]["exp2"] > auto["weights"]["exp"]
    assert set(auto["member_oof"]) == {"exp", "exp2"} and len(auto["fold_weights"]) == 3
    assert meta["oof"]["accuracy"] == pytest.approx(auto["blend_oof_crossfit"])


def test_submit_weights_auto_needs_two_experiments(project):  # noqa: F811
    result = invoke("submit", "exp", "--weights", "auto", "--config", project["config"])
    assert result.exit_code == 2 and "exp alone has nothing to blend" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_tta_auto_with_weights_auto_predicts_the_oof_once(project, monkeypatch):  # noqa: F811
    import comp.predict.plan as make

    cfg2 = project["cfg"].model_copy(update={"name": "exp2"})
    fabricate_run(cfg2, project["comp"], seed=1)
    passes = []
    real = make._oof_view_logits
    monkeypatch.setattr(make, "_oof_view_logits", lambda ctx, views: passes.append(len(views)) or real(ctx, views))
    result = invoke("submit", "exp", "exp2", "--weights", "auto", "--tta", "auto", "--config", project["config"])
    assert result.exit_code == 0, result.output
    assert len(passes) == 1  # the --tta auto pass under every candidate view; the blend fit reuses its logits
    meta = json.loads(next((project["dir"] / "submissions").glob("exp+exp2*.json")).read_text())
    auto = meta["weights_auto"]
    assert meta["oof"]["accuracy"] == pytest.approx(auto["blend_oof_crossfit" if auto["kept"] else "equal_weights_oof"])
