"""Evaluation-only controls of Meta-BN's corrections, to attribute its gain.

Each control replaces one input of the auxiliary nets and keeps everything else as evaluated
(weights, normalisation, protocol), so the difference from the uncontrolled row measures what
that input contributes:

- `zero-z`: z = 0, the statistics of a sample that matches the source exactly; what is left is
  the correction the nets make for an unshifted input (static by construction).
- `shuffle-z`: z permuted within the batch (each layer draws its own permutation from a seeded
  generator, restarted before every cell): every sample gets corrections computed from another
  sample's shift, so the per-sample pairing is broken while the batch's spread of z stays.
- `static`: the corrections replaced by their mean over clean training images (per layer and
  channel, computed by evaluation/metabn_static.py): a sample-independent change of gamma and
  beta, the part that a fine-tuning of the BN affine parameters could also make.
"""

from __future__ import annotations

import torch
from torch import Tensor

CONTROLS = ("zero-z", "shuffle-z", "static")


class CorrectionControl:
    """One layer's control; `static` holds its (dg, db) means (C,) for the `static` control."""

    def __init__(self, kind: str, generator: torch.Generator | None = None,
                 static: tuple[Tensor, Tensor] | None = None) -> None:
        if kind not in CONTROLS:
            raise ValueError(f"control must be one of {CONTROLS}, got {kind!r}")
        if (kind == "static") != (static is not None):
            raise ValueError("the static control, and only it, needs the mean corrections")
        if kind == "shuffle-z" and generator is None:
            raise ValueError("the shuffle-z control needs a generator")
        self.kind = kind
        self.generator = generator
        self.static = static

    def transform_z(self, z: Tensor) -> Tensor:
        """z as the auxiliary net sees it under this control."""
        if self.kind == "zero-z":
            return torch.zeros_like(z)
        if self.kind == "shuffle-z":
            assert self.generator is not None
            perm = torch.randperm(z.shape[0], generator=self.generator).to(z.device)
            return z[perm]
        return z

    def static_corrections(self, n: int) -> tuple[Tensor, Tensor]:
        """The static (dg, db), each expanded to (n, C)."""
        assert self.static is not None
        dg, db = self.static
        return dg.expand(n, -1), db.expand(n, -1)
