"""Our ResNets and VGG-BNs: equal to timm / torchvision weight for weight, and every option works."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from comp.config import ModelConfig
from comp.errors import ModelError
from comp.models import create_model, list_models
from comp.models.check import check_models, create_reference, model_complexity, randomize_norms
from comp.models.layers import ACTIVATIONS

RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
VGGS = ["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seeded, and single-threaded: tiny batches gain nothing from threads, and lose much on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def build(name: str, num_classes: int = 7, in_chans: int = 3, **cfg) -> nn.Module:
    return create_model(ModelConfig(name=name, **cfg), num_classes=num_classes, in_chans=in_chans)


def batch(in_chans: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(2, in_chans, size, size, generator=torch.Generator().manual_seed(1))


def test_list_models():
    assert list_models() == RESNETS + VGGS


@pytest.mark.parametrize("name", RESNETS + VGGS)
def test_equal_to_reference(name):
    """Same keys, shapes and count; the reference's weights load strictly and give the same logits and grads."""
    ref = create_reference(name, num_classes=7)
    randomize_norms(ref)
    for m in ref.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0  # torchvision's VGG drops 0.5 by default; ours is built with 0.0
    ours = build(name)
    ref_sd, ours_sd = ref.state_dict(), ours.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in ref_sd.items()}
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    ours.load_state_dict(ref_sd, strict=True)

    x = batch()
    with torch.no_grad():
        assert (ours.eval()(x) - ref.eval()(x)).abs().max().item() < 1e-5

    ours.train(), ref.train()
    out = ours(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().sum().backward()
    # a NaN or inf anywhere makes the sum non-finite: one cheap pass over VGG's 120M head weights
    assert all(p.grad is not None and torch.isfinite(p.grad.sum()) for p in ours.parameters())
    if name.startswith("resnet"):  # train mode and gradients too (VGG's 120M-weight head makes this slow)
        ref_out = ref(x)
        assert (out - ref_out).abs().max().item() < 1e-5
        ref_out.square().sum().backward()
        ref_grads = {key: p.grad for key, p in ref.named_parameters()}
        for key, p in ours.named_parameters():
            torch.testing.assert_close(p.grad, ref_grads[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("name", RESNETS)
@pytest.mark.parametrize(("in_chans", "num_classes"), [(1, 7), (3, 2)])
def test_output_shape(name, in_chans, num_classes):
    model = build(name, num_classes=num_classes, in_chans=in_chans)
    out = model(batch(in_chans))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", VGGS)
@pytest.mark.parametrize(("in_chans", "num_classes"), [(1, 7), (3, 2)])
def test_output_shape_vgg(name, in_chans, num_classes):
    out = build(name, num_classes=num_classes, in_chans=in_chans)(batch(in_chans))
    assert out.shape == (2, num_classes) and torch.isfinite(out).all()


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_activation_matches_timm(name, act):
    import timm

    ref = timm.create_model(name, pretrained=False, num_classes=7, act_layer=act)
    randomize_norms(ref)
    ours = build(name, activation=act)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = batch()
    with torch.no_grad():
        assert (ours.eval()(x) - ref.eval()(x)).abs().max().item() < 1e-5
    out = ours.train()(x)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert all(p.grad is not None for p in ours.parameters())


def test_vgg_options():
    """Activation, dropout, 1 channel and class count all reach the VGG; any input size goes through."""
    model = build("vgg11_bn", num_classes=5, in_chans=1, activation="silu", dropout=0.3)
    acts = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.SiLU))]
    assert acts and all(isinstance(m, nn.SiLU) for m in acts)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    assert model.features[0].in_channels == 1
    assert model(batch(1, size=48)).shape == (2, 5)
    assert model.forward_head(model.forward_features(batch(1)), pre_logits=True).shape == (2, 4096)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation_builds_in_vgg_blocks(act):
    from comp.models.vgg import make_features

    features = make_features([8, "M", 16, "M"], in_chans=3, act=act)
    out = features(batch())
    assert out.shape == (2, 16, 8, 8) and torch.isfinite(out).all()


def test_unknown_activation():
    from comp.models.layers import create_act

    with pytest.raises(ModelError, match="relu, leaky_relu, silu, gelu"):
        create_act("tanh")


def test_dropout():
    model = build("resnet18", dropout=0.5)
    x = batch()
    feats = model.forward_features(x).detach()
    model.train()
    assert not torch.equal(model.forward_head(feats), model.forward_head(feats))
    model.eval()
    assert torch.equal(model.forward_head(feats), model.forward_head(feats))
    plain = build("resnet18").train()
    assert torch.equal(plain.forward_head(feats), plain.forward_head(feats))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_zero_init_last(name):
    def last_bns(model):
        return [getattr(b, "bn3", b.bn2) for stage in (model.layer1, model.layer2, model.layer3, model.layer4)
                for b in stage]

    zeroed, kept = build(name, zero_init_last=True), build(name, zero_init_last=False)
    assert all(torch.all(bn.weight == 0) for bn in last_bns(zeroed))
    assert all(torch.all(bn.weight == 1) for bn in last_bns(kept))
    # A zero-initialised block without projection starts as the identity on non-negative inputs.
    x = torch.relu(torch.randn(2, zeroed.layer1[1].conv1.in_channels, 8, 8))
    with torch.no_grad():
        assert torch.equal(zeroed.layer1[1](x), x)
        assert not torch.equal(kept.layer1[1](x), x)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vgg11_bn"])
def test_channels_last(name):
    model = build(name).eval()
    randomize_norms(model)
    x = batch()
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_features_and_head(name):
    model = build(name).eval()
    x = batch()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, model.num_features, 1, 1)
        assert torch.equal(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ModelError) as exc:
        build("resnet19")
    message = str(exc.value)
    assert "resnet19" in message and "did you mean resnet18" in message
    assert all(name in message for name in list_models()) and "timm:<name>" in message


def test_timm_model():
    model = build("timm:resnet10t", num_classes=3, in_chans=1, dropout=0.2)
    assert type(model).__module__.startswith("timm.")
    assert model(batch(1)).shape == (2, 3)


def test_timm_unknown_suggests_close_names():
    with pytest.raises(ModelError, match=r"timm has no model 'resnet18x'.*resnet18"):
        build("timm:resnet18x")


def test_bad_class_count():
    with pytest.raises(ModelError, match="num_classes=0"):
        build("resnet18", num_classes=0)


def test_check_refuses_timm_names():
    with pytest.raises(ModelError, match="our own architectures"):
        check_models(["timm:resnet18"])


def test_model_complexity():
    cost = model_complexity("resnet50", image_size=224)
    assert cost.params == 25_557_032  # torchvision's published count
    assert cost.gmacs == pytest.approx(4.09, abs=0.01)  # the ~4.1 GFLOPs (MACs) of the ResNet paper
    assert cost.gflops == pytest.approx(2 * cost.gmacs)
    small = model_complexity("resnet18", image_size=32, in_chans=1, num_classes=7)
    assert small.params == sum(p.numel() for p in build("resnet18", in_chans=1).parameters())
