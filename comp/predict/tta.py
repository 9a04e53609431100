"""Test-time augmentation views: tensor ops on a batch already on the device.

A policy names a list of views; each view is one element of the dihedral group D4 (a horizontal flip
followed by quarter turns) at one scale. The model sees each view of the same batch once, and the
class outputs of all views are merged (:mod:`comp.predict.ensemble`). Classification outputs do not
move with the image, so nothing needs undoing at the output; :meth:`View.deaugment` exists for
round-trip tests and for callers with spatial outputs.

Policies (``submit.tta`` / ``--tta``); the flip policies include the identity view:

- ``none``: the image as it is.
- ``hflip``, ``vflip``: plus the mirrored image.
- ``hvflip``: the 4 flip combinations (identity, hflip, vflip, both = a half turn).
- ``d4``: the 8 flips and quarter turns.
- ``scale:0.9,1.0,1.1``: the image at each factor listed: the centre square of ``factor x image_size`` from the
  cache's margin (more or less context, no interpolation), or without a margin the image resized by it.
- ``+`` combines policies as a product: ``hflip+scale:0.9,1.1`` is 4 views.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import torch
import torch.nn.functional as F

from comp.errors import ConfigError

MIN_SCALE, MAX_SCALE = 0.25, 4.0
# Candidates of ``--tta auto``, scored on the OOF predictions (the identity view is shared).
AUTO_POLICIES = ("none", "hflip", "vflip", "hvflip", "d4", "scale:0.9,1.0,1.1")

_DIHEDRAL_NAMES = {
    (0, False): "identity", (1, False): "rot90", (2, False): "rot180", (3, False): "rot270",
    (0, True): "hflip", (1, True): "hflip_rot90", (2, True): "vflip", (3, True): "hflip_rot270",
}


@dataclass(frozen=True)
class View:
    """One TTA view: flip horizontally (if ``flip``), turn ``rot`` quarter turns, resize by ``scale``.

    Attributes:
        rot: Counter-clockwise quarter turns, 0-3.
        flip: Mirror left-right before turning. ``flip`` with ``rot=2`` is a vertical flip.
        scale: Resize factor of height and width (1.0: none).
    """

    rot: int = 0
    flip: bool = False
    scale: float = 1.0

    @property
    def name(self) -> str:
        """The view's name: its dihedral name, with ``@scale`` when it is not 1."""
        base = _DIHEDRAL_NAMES[(self.rot, self.flip)]
        return base if self.scale == 1.0 else f"{base}@{self.scale:g}"

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """The view of a batch ``x`` (B, C, H, W); a new tensor unless this is the identity."""
        if self.flip:
            x = x.flip(-1)
        if self.rot:
            x = torch.rot90(x, self.rot, dims=(-2, -1))
        if self.scale != 1.0:
            h, w = x.shape[-2:]
            size = (max(1, round(h * self.scale)), max(1, round(w * self.scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=self.scale < 1.0)
        return x

    def take(self, x: torch.Tensor, size: int) -> torch.Tensor:
        """This view of a cached batch ``x`` (B, C, H, W), H and W >= ``size``.

        The centre square at the view's scale (:func:`comp.data.views.scaled_view`, from the cache's margin),
        then the flip and turns.
        """
        from comp.data.views import scaled_view

        x = scaled_view(x, size, self.scale)
        if self.flip:
            x = x.flip(-1)
        if self.rot:
            x = torch.rot90(x, self.rot, dims=(-2, -1))
        return x

    def deaugment(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Undo :meth:`augment` on a spatial tensor ``x`` (B, C, H, W).

        Args:
            x: An augmented batch (or a spatial output aligned with it).
            size: The original (H, W); needed to undo a scale (the resize back is not exact).

        Returns:
            ``x`` in the original orientation (exactly, for the flips and turns).
        """
        if self.scale != 1.0:
            if size is None:
                raise ValueError(f"view {self.name}: deaugment needs the original size to undo the scale")
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=self.scale > 1.0)
        if self.rot:
            x = torch.rot90(x, -self.rot, dims=(-2, -1))
        if self.flip:
            x = x.flip(-1)
        return x


IDENTITY = View()
_FLIPS = {
    "none": [IDENTITY],
    "hflip": [IDENTITY, View(0, True)],
    "vflip": [IDENTITY, View(2, True)],
    "hvflip": [IDENTITY, View(0, True), View(2, True), View(2, False)],
    "d4": [View(rot, flip) for flip in (False, True) for rot in range(4)],
}


def _parse_scales(part: str, where: str) -> list[float]:
    values = part.partition(":")[2]
    try:
        scales = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{where}: {part!r}: scales must be numbers, e.g. scale:0.9,1.0,1.1") from None
    if not scales:
        raise ConfigError(f"{where}: {part!r}: give at least one scale, e.g. scale:0.9,1.0,1.1")
    for s in scales:
        if not MIN_SCALE <= s <= MAX_SCALE:
            raise ConfigError(f"{where}: {part!r}: scale {s:g} outside [{MIN_SCALE:g}, {MAX_SCALE:g}]")
    return scales


def parse_tta(policy: str, where: str = "--tta") -> list[View]:
    """The views of a TTA policy (see the module docstring), identity first, without duplicates.

    Args:
        policy: E.g. ``"none"``, ``"d4"``, ``"hflip+scale:0.9,1.1"``.
        where: What to name in the error (the option or config key).

    Returns:
        The distinct views, in a stable order.

    Raises:
        ConfigError: An unknown policy name or an invalid scale.
    """
    flips, scales = [IDENTITY], [1.0]
    for part in (p.strip().lower() for p in policy.split("+")):
        if part.startswith("scale:"):
            scales = [a * b for a, b in product(scales, _parse_scales(part, where))]
        elif part in _FLIPS:
            flips = [_compose(a, b) for a, b in product(flips, _FLIPS[part])]
        else:
            valid = ", ".join([*_FLIPS, "scale:0.9,1.0,1.1"])
            raise ConfigError(f"{where}: unknown TTA policy {part!r} in {policy!r}; use {valid} (combine with +)")
    views = [View(v.rot, v.flip, round(s, 6)) for v, s in product(flips, scales)]
    unique = list(dict.fromkeys(views))
    return sorted(unique, key=lambda v: (v != IDENTITY, abs(v.scale - 1.0) > 0, unique.index(v)))


def _compose(first: View, then: View) -> View:
    """The dihedral view ``then(first(x))``.

    Moving a flip in front of a turn mirrors the turn's direction: rot(r) after flip(x) equals
    flip after rot(-r).
    """
    if then.flip:
        return View((then.rot - first.rot) % 4, not first.flip)
    return View((first.rot + then.rot) % 4, first.flip)


