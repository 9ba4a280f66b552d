"""Wide ResNet (Zagoruyko & Komodakis 2016), pre-activation, as used by AugMix on CIFAR.

WRN-d-k: (d - 4) / 6 blocks per stage, widths 16k, 32k, 64k; no dropout. Takes any norm layer.
"""

from __future__ import annotations

from torch import Tensor, nn

from metabn_bench.models.common import Classifier, make_unit, norm_relu
from metabn_bench.models.norms import NormFactory, UnitFactory


class WideBlock(nn.Module):
    """norm-relu-conv3x3-norm-relu-conv3x3 with a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, norm: NormFactory,
                 unit: UnitFactory | None, unit_position: str) -> None:
        super().__init__()
        self.bn1 = norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
        self.unit_pre = make_unit(unit, cin, unit_position == "pre")
        self.unit_post = make_unit(unit, cout, unit_position == "post")

    def forward(self, x: Tensor) -> Tensor:
        x = self.unit_pre(x)
        o = norm_relu(self.bn1, x)
        # The projection shortcut reads the pre-activated input, as in the reference WRN code.
        residual = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = self.conv2(norm_relu(self.bn2, o))
        return self.unit_post(o + residual)


class WideResNet(Classifier):
    """Pre-activation WRN-depth-widen for small images (32x32 or 64x64)."""

    def __init__(self, depth: int, widen: int, num_classes: int, norm: NormFactory,
                 unit: UnitFactory | None = None, unit_position: str = "post") -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError("WRN depth must be 6n + 4")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        blocks = []
        for stage in range(3):
            for i in range(n):
                cin = widths[stage] if i == 0 else widths[stage + 1]
                stride = 1 if stage == 0 or i > 0 else 2
                blocks.append(WideBlock(cin, widths[stage + 1], stride, norm, unit, unit_position))
        self.blocks = nn.Sequential(*blocks)
        self.bn = norm(widths[3])
        self.classifier = nn.Linear(widths[3], num_classes)
        self.init_weights()

    def forward_features(self, x: Tensor) -> Tensor:
        return norm_relu(self.bn, self.blocks(self.conv1(x)))
