"""CIFAR ResNet-18 (He et al. 2016) and PreAct ResNet-18 (He et al. 2016b) for small images.

Both use a 3x3 stride-1 stem without max-pooling (the usual CIFAR / Tiny-ImageNet variant)
and take any norm layer.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from metabn_bench.models.common import Classifier, make_unit, norm_relu
from metabn_bench.models.norms import NormFactory, UnitFactory


class BasicBlock(nn.Module):
    """conv-norm-relu-conv-norm plus shortcut, then relu (post-activation)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: NormFactory,
                 unit: UnitFactory | None, unit_position: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout))
        self.unit_pre = make_unit(unit, cin, unit_position == "pre")
        self.unit_post = make_unit(unit, cout, unit_position == "post")

    def forward(self, x: Tensor) -> Tensor:
        x = self.unit_pre(x)
        o = norm_relu(self.bn1, self.conv1(x))
        o = self.bn2(self.conv2(o))
        return self.unit_post(F.relu(o + self.shortcut(x)))


class PreActBlock(nn.Module):
    """norm-relu-conv-norm-relu-conv plus shortcut (pre-activation)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: NormFactory,
                 unit: UnitFactory | None, unit_position: str) -> None:
        super().__init__()
        self.bn1 = norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.unit_pre = make_unit(unit, cin, unit_position == "pre")
        self.unit_post = make_unit(unit, cout, unit_position == "post")

    def forward(self, x: Tensor) -> Tensor:
        x = self.unit_pre(x)
        o = norm_relu(self.bn1, x)
        residual = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = self.conv2(norm_relu(self.bn2, o))
        return self.unit_post(o + residual)


class ResNet(Classifier):
    """ResNet with 4 stages of `layers` blocks, widths 64..512."""

    def __init__(self, block: type[nn.Module], layers: tuple[int, ...], num_classes: int,
                 norm: NormFactory, unit: UnitFactory | None = None,
                 unit_position: str = "post", width: int = 64) -> None:
        super().__init__()
        self.preact = block is PreActBlock
        widths = [width, width * 2, width * 4, width * 8]
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.Identity() if self.preact else norm(width)
        blocks = []
        cin = width
        for stage, (count, cout) in enumerate(zip(layers, widths)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(block(cin, cout, stride, norm, unit, unit_position))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn_final = norm(cin) if self.preact else nn.Identity()
        self.classifier = nn.Linear(cin, num_classes)
        self.init_weights()

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        if not self.preact:
            x = norm_relu(self.bn1, x)
        x = self.blocks(x)
        return norm_relu(self.bn_final, x) if self.preact else x
