"""Digital corruptions (Hendrycks & Dietterich 2019), batched."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.io import decode_jpeg, encode_jpeg

from metabn_bench.corruptions.registry import clip255, corruption
from metabn_bench.corruptions.rng import ImageRandom


@corruption("contrast", random=False)
def contrast(x: Tensor, c: float, rng: ImageRandom) -> Tensor:
    """(x - m) * c + m with m the image's per-channel mean, clipped."""
    means = x.mean(dim=(2, 3), keepdim=True)
    return clip255((x - means) * c + means)


@corruption("jpeg_compression", random=False)
def jpeg_compression(x: Tensor, quality: int, rng: ImageRandom) -> Tensor:
    """Encode as JPEG at `quality` (4:2:0 chroma, as PIL's default) and decode.

    The input is the uint8 image (the reference works on PIL images); libjpeg-turbo on the
    CPU through torchvision.io, which matches PIL's encoder and decoder.
    """
    images = (x * 255).round().clamp(0, 255).to(torch.uint8).cpu()
    encoded = encode_jpeg(list(images), quality=int(quality))
    decoded = decode_jpeg(encoded)
    return torch.stack(decoded).to(x.device, torch.float32)
