"""Pretrained weights: local files in timm / torchvision naming and timm's local cache, never the network."""

from __future__ import annotations

import re
import socket

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from comp.config import ModelConfig
from comp.errors import ModelError
from comp.models import create_model, load_pretrained
from comp.models.check import randomize_norms
from comp.models.pretrained import timm_vgg_to_torchvision


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sources() -> dict[str, nn.Module]:
    """Reference ResNet-18s in both namings, with random BN statistics so every weight shows in the logits."""
    models = {
        "timm": timm.create_model("resnet18", pretrained=False),
        "torchvision": torchvision.models.resnet18(weights=None),
    }
    for seed, model in enumerate(models.values()):
        randomize_norms(model, seed)
        model.eval()
    return models


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def save(state: dict[str, torch.Tensor], path, wrap: str = "bare"):
    """Write ``state`` as a bare dict, nested under a key, or with a DDP ``module.`` prefix."""
    if "module" in wrap:
        state = {f"module.{k}": v for k, v in state.items()}
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return path
    if "state_dict" in wrap:
        state = {"state_dict": state, "epoch": 3}
    elif "model" in wrap.split("+")[-1] and wrap != "module":
        state = {"model": state, "optimizer": {"lr": torch.tensor(0.1)}}
    torch.save(state, path)
    return path


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("naming", "filename", "wrap"),
    [
        ("timm", "w.pth", "bare"),
        ("timm", "w.safetensors", "bare"),
        ("timm", "w.pt", "model"),
        ("torchvision", "w.pth", "state_dict"),
        ("torchvision", "w.safetensors", "module"),
        ("torchvision", "w.pth", "module+state_dict"),
    ],
)
def test_loads_local_file(tmp_path, sources, naming, filename, wrap):
    path = save(sources[naming].state_dict(), tmp_path / filename, wrap)
    model = create_model(ModelConfig(name="resnet18"), num_classes=1000, in_chans=3)
    report = load_pretrained(model, str(path), "resnet18")
    assert report.path == path and not report.classifier_reset and not report.stem_adapted
    assert (logits(model, X) - logits(sources[naming], X)).abs().max() < 1e-5


def test_class_count_change_keeps_fresh_classifier(tmp_path, sources):
    path = save(sources["timm"].state_dict(), tmp_path / "w.pth")
    model = create_model(ModelConfig(name="resnet18"), num_classes=7, in_chans=3)
    fresh_fc = model.fc.weight.detach().clone()
    report = load_pretrained(model, str(path), "resnet18")
    assert report.classifier_reset
    assert torch.equal(model.fc.weight, fresh_fc)
    assert torch.equal(model.layer4[1].conv2.weight, sources["timm"].layer4[1].conv2.weight)
    feats = model.eval().forward_head(model.forward_features(X), pre_logits=True)
    assert torch.allclose(feats, sources["timm"].forward_head(sources["timm"].forward_features(X), pre_logits=True),
                          atol=1e-5)


def test_one_channel_stem_is_summed(tmp_path, sources):
    ref = sources["timm"]
    path = save(ref.state_dict(), tmp_path / "w.safetensors")
    model = create_model(ModelConfig(name="resnet18", pretrained=str(path)), num_classes=1000, in_chans=1)
    assert torch.equal(model.conv1.weight, ref.conv1.weight.sum(dim=1, keepdim=True))
    grey = X[:, :1]
    # A grey image through the summed stem equals the same image repeated on 3 channels through the original.
    assert (logits(model, grey) - logits(ref, grey.expand(-1, 3, -1, -1))).abs().max() < 1e-5


def test_old_checkpoint_without_bn_counters(tmp_path, sources):
    state = {k: v for k, v in sources["torchvision"].state_dict().items() if "num_batches_tracked" not in k}
    path = save(state, tmp_path / "old.pth")
    model = create_model(ModelConfig(name="resnet18", pretrained=str(path)), num_classes=1000, in_chans=3)
    assert (logits(model, X) - logits(sources["torchvision"], X)).abs().max() < 1e-5


def test_timm_model_from_local_file(tmp_path):
    ref = timm.create_model("resnet10t", pretrained=False)
    path = save(ref.state_dict(), tmp_path / "r10t.pth")
    model = create_model(ModelConfig(name="timm:resnet10t", pretrained=str(path)), num_classes=5, in_chans=3)
    assert torch.equal(model.conv1[0].weight, ref.conv1[0].weight)
    assert model.fc.out_features == 5


def test_vgg_timm_naming_converts_to_torchvision():
    ref = timm.create_model("vgg11_bn", pretrained=False, num_classes=7)
    randomize_norms(ref)
    model = create_model(ModelConfig(name="vgg11_bn"), num_classes=7, in_chans=3)
    model.load_state_dict(timm_vgg_to_torchvision(ref.state_dict()), strict=True)
    assert (logits(model, X) - logits(ref, X)).abs().max() < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize(("naming", "filename"), [("torchvision", "v.pth"), ("timm", "v.safetensors")])
def test_vgg_from_file(tmp_path, naming, filename):
    if naming == "timm":
        ref = timm.create_model("vgg11_bn", pretrained=False, num_classes=7)
    else:
        ref = torchvision.models.vgg11_bn(weights=None, num_classes=7)
    randomize_norms(ref)
    path = save(ref.state_dict(), tmp_path / filename)
    model = create_model(ModelConfig(name="vgg11_bn", pretrained=str(path)), num_classes=7, in_chans=3)
    assert (logits(model, X) - logits(ref, X)).abs().max() < 1e-5


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="file not found"):
        create_model(ModelConfig(name="resnet18", pretrained=str(tmp_path / "nope.pth")), 7, 3)


def test_wrong_architecture(tmp_path):
    path = save(timm.create_model("resnet50", pretrained=False).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(ModelError) as exc:
        create_model(ModelConfig(name="resnet18", pretrained=str(path)), 1000, 3)
    message = str(exc.value)
    assert "looks like resnet50" in message and str(path) in message
    # resnet50 has every resnet18 key (at other shapes) and more: counted, the first few named
    assert "missing" not in message
    assert re.search(r"\d+ unexpected: layer1\.0\.conv3\.weight", message)
    assert re.search(r"\d+ other shape: layer1\.0\.conv1\.weight \(64, 64, 1, 1\) in file vs \(64, 64, 3, 3\)", message)
    assert "more)" in message


def test_mismatched_keys(tmp_path, sources):
    state = dict(sources["timm"].state_dict())
    state["layer1.0.conv_one.weight"] = state.pop("layer1.0.conv1.weight")
    state["layer2.0.bn1.bias"] = state["layer2.0.bn1.bias"][:3]
    path = save(state, tmp_path / "w.pth")
    with pytest.raises(ModelError) as exc:
        create_model(ModelConfig(name="resnet18", pretrained=str(path)), 1000, 3)
    message = str(exc.value)
    assert "1 missing: layer1.0.conv1.weight" in message
    assert "1 unexpected: layer1.0.conv_one.weight" in message
    assert "1 other shape: layer2.0.bn1.bias (3,) in file vs (128,) in model" in message


@pytest.mark.parametrize(
    ("filename", "content", "match"),
    [
        ("w.npz", None, "unknown weights format"),
        ("w.pth", {"epoch": 3}, "holds no state dict"),
        ("w.pth", "module", "cannot read weights"),
        ("w.safetensors", b"not safetensors", "cannot read weights"),
    ],
)
def test_unreadable_files(tmp_path, filename, content, match):
    path = tmp_path / filename
    if content is None or isinstance(content, bytes):
        path.write_bytes(content or b"")
    elif content == "module":
        torch.save(nn.Linear(2, 2), path)  # a pickled module, refused by weights_only=True
    else:
        torch.save(content, path)
    with pytest.raises(ModelError, match=match):
        create_model(ModelConfig(name="resnet18", pretrained=str(path)), 7, 3)


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty Hugging Face and torch hub caches under tmp_path."""
    import huggingface_hub.constants

    hf, torch_home = tmp_path / "hf", tmp_path / "torch"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return hf, torch_home / "hub" / "checkpoints"


def test_timm_cache_absent(caches, no_network):
    with pytest.raises(ModelError) as exc:
        create_model(ModelConfig(name="resnet18", pretrained="timm-cache"), 7, 3)
    message = str(exc.value)
    assert "no cached weights for resnet18" in message and "nothing is downloaded" in message
    assert "huggingface.co/timm/resnet18.a1_in1k" in message and "model.pretrained=<path" in message
    assert str(caches[1]) in message


def test_timm_cache_hf_layout(caches, no_network, sources):
    repo = caches[0] / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save(sources["timm"].state_dict(), repo / "snapshots" / "abc123" / "model.safetensors")
    model = create_model(ModelConfig(name="resnet18", pretrained="timm-cache"), 1000, 3)
    assert (logits(model, X) - logits(sources["timm"], X)).abs().max() < 1e-5


def test_timm_cache_torch_hub_layout(caches, no_network, sources):
    caches[1].mkdir(parents=True)
    save(sources["torchvision"].state_dict(), caches[1] / "resnet18-f37072fd.pth")  # torchvision's file name
    model = create_model(ModelConfig(name="resnet18", pretrained="timm-cache"), 1000, 3)
    assert (logits(model, X) - logits(sources["torchvision"], X)).abs().max() < 1e-5


def fake_hub(cache, name: str, state: dict[str, torch.Tensor], filename: str = "model.safetensors"):
    """Lay ``state`` out as huggingface_hub caches ``timm/<name>``: refs/main -> snapshots/<rev>/<file>."""
    repo = cache / f"models--timm--{name}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    save(state, repo / "snapshots" / "0123abcd" / filename)
    return repo / "snapshots" / "0123abcd" / filename


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache named the way a user names it (HF_HOME), read at call time."""
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
    return tmp_path / "hfhome" / "hub"


@pytest.mark.parametrize("source", ["imagenet", "resnet18.a1_in1k"])
def test_hub_weights_from_the_cache_offline(hub_cache, no_network, sources, source):
    fake_hub(hub_cache, "resnet18.a1_in1k", sources["timm"].state_dict())
    model = create_model(ModelConfig(name="resnet18", pretrained=source), 1000, 3)
    assert (logits(model, X) - logits(sources["timm"], X)).abs().max() < 1e-5


def test_hub_weights_other_tag_and_new_head(hub_cache, no_network, sources):
    fake_hub(hub_cache, "resnet18.tv_in1k", sources["torchvision"].state_dict())
    model = create_model(ModelConfig(name="resnet18", pretrained="resnet18.tv_in1k"), 5, 3)
    ref = sources["torchvision"].state_dict()
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], ref["layer4.1.conv2.weight"])
    assert model.fc.weight.shape == (5, 512)


def test_hub_vgg_bn_from_timm_layout(hub_cache, no_network):
    ref = timm.create_model("vgg11_bn", pretrained=False, num_classes=10)
    fake_hub(hub_cache, "vgg11_bn.tv_in1k", ref.state_dict())
    model = create_model(ModelConfig(name="vgg11_bn", pretrained="imagenet"), 10, 3).eval()
    assert torch.equal(model.state_dict()["classifier.0.weight"], ref.state_dict()["pre_logits.fc1.weight"].flatten(1))
    assert torch.equal(model.state_dict()["features.0.weight"], ref.state_dict()["features.0.weight"])


def test_hub_timm_model_offline(hub_cache, no_network):
    ref = timm.create_model("resnet10t", pretrained=False)
    fake_hub(hub_cache, "resnet10t.c3_in1k", ref.state_dict())
    model = create_model(ModelConfig(name="timm:resnet10t", pretrained="imagenet"), 3, 3)
    assert torch.equal(model.state_dict()["conv1.0.weight"], ref.state_dict()["conv1.0.weight"])


def test_hub_absent_offline_says_where_and_how(hub_cache, no_network):
    with pytest.raises(ModelError) as exc:
        create_model(ModelConfig(name="resnet50", pretrained="imagenet"), 7, 3)
    message = str(exc.value)
    assert "\n" not in message
    assert "models--timm--resnet50.a1_in1k/snapshots/*/model.safetensors" in message
    assert str(hub_cache) in message and "HF_HUB_OFFLINE" in message
    assert "run once on a machine with a network" in message and "model.pretrained=<path" in message


def test_hub_tag_for_another_architecture(hub_cache, no_network):
    with pytest.raises(ModelError, match="holds resnet50 weights but model.name=resnet18"):
        create_model(ModelConfig(name="resnet18", pretrained="resnet50.a1_in1k"), 7, 3)
    with pytest.raises(ModelError, match="timm has no hub weights 'resnet18.nope'"):
        create_model(ModelConfig(name="resnet18", pretrained="resnet18.nope"), 7, 3)


def test_hub_normalisation_from_the_tag():
    from comp.models.factory import resolve_normalization

    mean, std = resolve_normalization(ModelConfig(name="timm:vit_tiny_patch16_224", pretrained="imagenet"), None, None)
    assert mean == (0.5, 0.5, 0.5) and std == (0.5, 0.5, 0.5)
    mean, _ = resolve_normalization(ModelConfig(name="resnet18", pretrained="resnet18.a1_in1k"), None, None)
    assert mean == (0.485, 0.456, 0.406)
    mine = ModelConfig(name="resnet18", pretrained="imagenet")
    assert resolve_normalization(mine, (0.1,) * 3, (0.2,) * 3) == ((0.1,) * 3, (0.2,) * 3)


def test_hub_online_download_goes_through_timm(hub_cache, monkeypatch, sources, tmp_path):
    """Online, the file comes from timm's own hf_hub_download into the HF cache (faked: no real network)."""
    import timm.models._hub as timm_hub

    calls = []

    def download(repo_id, filename, revision=None, cache_dir=None, local_files_only=False):
        calls.append((repo_id, filename, str(cache_dir), local_files_only))
        return str(fake_hub(hub_cache, "resnet18.a1_in1k", sources["timm"].state_dict()))

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(timm_hub, "hf_hub_download", download)
    create_model(ModelConfig(name="resnet18", pretrained="imagenet"), 1000, 3)
    assert calls == [("timm/resnet18.a1_in1k", "model.safetensors", str(hub_cache), False)]


def test_train_offline_without_cache_is_one_line_exit_2(tiny_project, hub_cache, no_network):
    from click.testing import CliRunner

    from comp.cli import main

    project = tiny_project()
    path = project["config"](model={"name": "resnet18", "pretrained": "imagenet"})
    result = CliRunner().invoke(main, ["train", "--config", str(path), "--fold", "0", "--no-report"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output  # refused before the image cache is built
    assert "models--timm--resnet18.a1_in1k" in lines[0] and str(hub_cache) in lines[0]
    assert not list((project["dir"] / "runs").glob("exp/fold0/*.pt"))


def test_hub_without_the_file_online_says_so_not_unreachable(hub_cache, monkeypatch):
    """Online, a repo that has none of timm's file names is not 'the hub cannot be reached'."""
    import timm.models._hub as timm_hub
    from huggingface_hub.errors import EntryNotFoundError

    def download(repo_id, filename, revision=None, cache_dir=None, local_files_only=False):
        raise EntryNotFoundError(f"{repo_id}/{filename} not found")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(timm_hub, "hf_hub_download", download)
    with pytest.raises(ModelError) as exc:
        create_model(ModelConfig(name="resnet18", pretrained="imagenet"), 1000, 3)
    message = str(exc.value)
    assert "cannot be reached" not in message and "timm/resnet18.a1_in1k on the Hugging Face hub has no" in message
    assert "model.pretrained=<path" in message and "\n" not in message
