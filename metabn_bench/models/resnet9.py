"""ResNet-9, the fast-CIFAR network (Page 2018, "How to train your ResNet"; the DAWNBench
CIFAR-10 entry of Myrtle.ai), at a chosen base width.

Layout, for base width c: prep conv(c) -> stage 1 conv(2c), max-pool, residual unit(2c) ->
stage 2 conv(4c), max-pool -> stage 3 conv(8c), max-pool, residual unit(8c) -> global pool ->
linear. Every conv is conv3x3-norm-relu; a residual unit is two of them plus the identity.
Page's network has c = 64 (6.5M parameters); the CPU recipe uses c = 16, a sixteenth of the
arithmetic. Page's logit scale of 0.125 is kept: it matters at short schedules, because it
lets the network train at the large learning rates that make few epochs enough. Page's head
reads a global *max* of the last map; here it reads the global average, because class
activation maps and every other architecture of this package assume `forward_features`
followed by average pooling (our choice).

Any norm layer of the factory fits; the method's per-block unit (CNSN, SelfNorm) sits before
(`pre`) or after (`post`) each residual unit.
"""

from __future__ import annotations

from torch import Tensor, nn

from metabn_bench.models.common import Classifier, make_unit, norm_relu
from metabn_bench.models.norms import NormFactory, UnitFactory

LOGIT_SCALE = 0.125  # Page 2018: scaling the logits down lets the network train at lr 0.4 x batch/512


class ConvNormReLU(nn.Module):
    """conv3x3 (no bias) -> norm -> relu, optionally followed by a 2x2 max-pool before the norm."""

    def __init__(self, cin: int, cout: int, norm: NormFactory, pool: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.bn = norm(cout)

    def forward(self, x: Tensor) -> Tensor:
        # Pooling before the norm (as Page) makes the norm's statistics those of the smaller map.
        return norm_relu(self.bn, self.pool(self.conv(x)))


class Residual(nn.Module):
    """x + (conv-norm-relu)^2 (x), with the method's unit before or after."""

    def __init__(self, channels: int, norm: NormFactory, unit: UnitFactory | None,
                 unit_position: str) -> None:
        super().__init__()
        self.a = ConvNormReLU(channels, channels, norm)
        self.b = ConvNormReLU(channels, channels, norm)
        self.unit_pre = make_unit(unit, channels, unit_position == "pre")
        self.unit_post = make_unit(unit, channels, unit_position == "post")

    def forward(self, x: Tensor) -> Tensor:
        x = self.unit_pre(x)
        return self.unit_post(x + self.b(self.a(x)))


class ResNet9(Classifier):
    """Page's ResNet-9 with base width `width` (64 in the original) and any norm layer."""

    def __init__(self, num_classes: int, norm: NormFactory, unit: UnitFactory | None = None,
                 unit_position: str = "post", width: int = 64) -> None:
        super().__init__()
        c = width
        self.prep = ConvNormReLU(3, c, norm)
        self.stage1 = nn.Sequential(ConvNormReLU(c, 2 * c, norm, pool=True),
                                    Residual(2 * c, norm, unit, unit_position))
        self.stage2 = ConvNormReLU(2 * c, 4 * c, norm, pool=True)
        self.stage3 = nn.Sequential(ConvNormReLU(4 * c, 8 * c, norm, pool=True),
                                    Residual(8 * c, norm, unit, unit_position))
        self.classifier = nn.Linear(8 * c, num_classes)
        self.init_weights()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stage3(self.stage2(self.stage1(self.prep(x))))

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) * LOGIT_SCALE
