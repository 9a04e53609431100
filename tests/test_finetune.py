"""Fine-tuning controls: stochastic depth, layer-wise lr decay, a frozen backbone, NAdam."""

from __future__ import annotations

import pytest
import timm
import torch

from comp.config import ModelConfig, TrainConfig
from comp.errors import ModelError
from comp.models import create_model
from comp.models.layers import DropPath
from comp.train.finetune import layer_decay_groups, set_backbone_frozen
from comp.train.optim import create_optimizer

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_drop_path_keeps_timm_names_and_rates():
    ours = create_model(ModelConfig(name="resnet50", drop_path=0.2), 10, 3)
    ref = timm.create_model("resnet50", pretrained=False, num_classes=10, drop_path_rate=0.2)
    assert list(ours.state_dict()) == [k for k in ref.state_dict()]  # DropPath adds no parameters
    ours_rates = [m.p for m in ours.modules() if isinstance(m, DropPath)]
    ref_rates = [m.drop_prob for m in ref.modules() if type(m).__name__ == "DropPath"]
    assert ours_rates == pytest.approx(ref_rates) and ours_rates[-1] == pytest.approx(0.2)


def test_drop_path_is_random_in_training_and_identity_in_eval():
    model = create_model(ModelConfig(name="resnet18", drop_path=0.5, zero_init_last=False), 4, 3)
    x = torch.randn(8, 3, 32, 32)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    plain = create_model(ModelConfig(name="resnet18", zero_init_last=False), 4, 3).eval()
    plain.load_state_dict(model.state_dict())
    assert torch.allclose(model(x), plain(x))


def test_drop_path_refused_for_vgg():
    with pytest.raises(ModelError, match="model.drop_path=0.1: vgg11_bn has no residual branches"):
        create_model(ModelConfig(name="vgg11_bn", drop_path=0.1), 4, 3)


def test_layer_decay_gives_the_head_full_lr_and_the_stem_the_least():
    model = create_model(ModelConfig(name="resnet18"), 4, 3)
    groups = layer_decay_groups(model, lr=1e-2, weight_decay=1e-4, layer_decay=0.5)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(model.fc.weight)]["lr"] == pytest.approx(1e-2)
    assert by_param[id(model.conv1.weight)]["lr"] == pytest.approx(1e-2 * 0.5 ** 9)  # stem + 8 blocks below
    assert by_param[id(model.layer4[1].conv2.weight)]["lr"] == pytest.approx(1e-2 * 0.5)
    assert by_param[id(model.bn1.weight)]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


@pytest.mark.parametrize("name", ["vgg11_bn", "timm:resnet10t"])
def test_layer_decay_other_models(name):
    model = create_model(ModelConfig(name=name), 4, 3)
    optimizer = create_optimizer(model, TrainConfig(lr=1e-3, layer_decay=0.7), CPU)
    lrs = sorted({g["lr"] for g in optimizer.param_groups})
    assert lrs[-1] == pytest.approx(1e-3) and lrs[0] < 1e-3 * 0.7 ** 3


def test_nadam_and_plain_groups():
    model = create_model(ModelConfig(name="resnet18"), 4, 3)
    optimizer = create_optimizer(model, TrainConfig(optimizer="nadam", lr=1e-3, weight_decay=1e-4), CPU)
    assert isinstance(optimizer, torch.optim.NAdam)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4, 0.0]


def _step(model, optimizer):
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


@pytest.mark.parametrize("name,head", [("resnet18", "fc"), ("vgg11_bn", "classifier.6")])
def test_frozen_backbone_trains_only_the_head(name, head):
    model = create_model(ModelConfig(name=name, dropout=0.0), 4, 3)
    optimizer = create_optimizer(model, TrainConfig(lr=1e-2), CPU)
    before = {k: v.clone() for k, v in model.named_parameters()}
    frozen = set_backbone_frozen(model, True)
    _step(model, optimizer)
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert changed == {f"{head}.weight", f"{head}.bias"}
    assert frozen == len(before) - 2
    set_backbone_frozen(model, False)
    _step(model, optimizer)
    assert not torch.equal(dict(model.named_parameters())["features.0.weight" if "vgg" in name else "conv1.weight"],
                           before["features.0.weight" if "vgg" in name else "conv1.weight"])


def test_freeze_settings_that_defeat_themselves_are_warned():
    from comp.config import Config
    from comp.train.checks import setting_warnings

    probe = Config(model={"pretrained": "imagenet"}, train={"epochs": 2, "freeze_epochs": 2})
    assert any("only the classifier ever trains" in line for line in setting_warnings(probe, 100))
    random_backbone = Config(train={"epochs": 5, "freeze_epochs": 1})
    assert any("freezes a random backbone" in line for line in setting_warnings(random_backbone, 100))
    assert not setting_warnings(Config(model={"pretrained": "imagenet"}, train={"epochs": 5, "freeze_epochs": 1}), 100)


def test_a_regression_head_gets_layer_decay_and_a_frozen_backbone_like_its_network():
    model = create_model(ModelConfig(name="resnet18", head="regress"), 4, 3)
    groups = layer_decay_groups(model, lr=1e-2, weight_decay=1e-4, layer_decay=0.5)
    by_param = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert by_param[id(model.net.fc.weight)] == pytest.approx(1e-2)
    assert by_param[id(model.net.conv1.weight)] == pytest.approx(1e-2 * 0.5 ** 9)
    frozen = set_backbone_frozen(model, True)
    trainable = {k for k, v in model.named_parameters() if v.requires_grad}
    assert trainable == {"net.fc.weight", "net.fc.bias"} and frozen == len(list(model.parameters())) - 2
