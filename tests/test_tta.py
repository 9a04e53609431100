"""TTA views: exact round trips, the 8 distinct dihedral views, policy parsing, scales."""

import itertools

import pytest
import torch

from comp.errors import ConfigError
from comp.predict.tta import AUTO_POLICIES, IDENTITY, View, _compose, parse_tta

DIHEDRAL = parse_tta("d4")


@pytest.fixture
def x():
    return torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)  # asymmetric under D4


@pytest.mark.parametrize("view", DIHEDRAL, ids=lambda v: v.name)
def test_round_trip_each_dihedral_view(view, x):
    assert torch.equal(view.deaugment(view.augment(x)), x)


@pytest.mark.parametrize("view", DIHEDRAL, ids=lambda v: v.name)
def test_round_trip_non_square(view):
    x = torch.randn(1, 2, 4, 7)
    assert torch.equal(view.deaugment(view.augment(x)), x)


def test_d4_gives_eight_distinct_views(x):
    assert len(DIHEDRAL) == 8 and DIHEDRAL[0] == IDENTITY
    outputs = [v.augment(x) for v in DIHEDRAL]
    for a, b in itertools.combinations(range(8), 2):
        assert not torch.equal(outputs[a], outputs[b]), (DIHEDRAL[a].name, DIHEDRAL[b].name)


def test_named_flips_match_torch(x):
    hflip, vflip, both = View(0, True), View(2, True), View(2, False)
    assert torch.equal(hflip.augment(x), x.flip(-1))
    assert torch.equal(vflip.augment(x), x.flip(-2))
    assert torch.equal(both.augment(x), x.flip(-1).flip(-2))
    assert (hflip.name, vflip.name, both.name) == ("hflip", "vflip", "rot180")
    assert IDENTITY.augment(x) is x


@pytest.mark.parametrize(("policy", "count"), [
    ("none", 1), ("hflip", 2), ("vflip", 2), ("hvflip", 4), ("d4", 8), ("scale:0.9,1.0,1.1", 3),
    ("hflip+scale:0.9,1.1", 4), ("d4+hflip", 8), ("hflip+vflip", 4), (" HFLIP ", 2),
])
def test_policy_view_counts(policy, count):
    views = parse_tta(policy)
    assert len(views) == count
    assert len(set(views)) == count
    if any(v == IDENTITY for v in views):
        assert views[0] == IDENTITY


def test_hvflip_is_the_flip_group(x):
    outputs = {tuple(v.augment(x).flatten().tolist()) for v in parse_tta("hvflip")}
    expected = {tuple(t.flatten().tolist()) for t in (x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2))}
    assert outputs == expected


@pytest.mark.parametrize(("a", "b"), list(itertools.product(DIHEDRAL, DIHEDRAL)))
def test_composition_of_views(a, b, x):
    assert torch.equal(_compose(a, b).augment(x), b.augment(a.augment(x)))


def test_scale_views_resize_and_undo():
    ramp = torch.linspace(0, 1, 20)
    x = (ramp[:, None] + ramp[None, :]).expand(2, 3, 20, 20).contiguous()  # smooth: resizing barely changes it
    small, big = View(scale=0.9), View(scale=1.1)
    assert small.augment(x).shape[-2:] == (18, 18)
    assert big.augment(x).shape[-2:] == (22, 22)
    back = big.deaugment(big.augment(x), size=(20, 20))
    assert back.shape == x.shape
    assert (back - x).abs().max() < 0.05  # bilinear: close, not exact
    with pytest.raises(ValueError, match="original size"):
        small.deaugment(x)


def test_views_keep_channels_last_inputs_equal():
    x = torch.rand(2, 3, 8, 8)
    xl = x.contiguous(memory_format=torch.channels_last)
    for view in [*DIHEDRAL, View(scale=0.75)]:
        assert torch.allclose(view.augment(xl), view.augment(x))


@pytest.mark.parametrize("policy", ["bogus", "scale:", "scale:a,b", "scale:0.1", "hflip+rotate"])
def test_bad_policies_refused(policy):
    with pytest.raises(ConfigError, match="--tta"):
        parse_tta(policy)


def test_auto_candidates_parse():
    for policy in AUTO_POLICIES:
        assert parse_tta(policy)
