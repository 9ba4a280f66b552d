"""The test batch-size sweep: one evaluation per batch size, rows that never mix sizes.

Batch-adaptive protocols estimate normalisation statistics from the test batch, so their error
depends on the batch size (Schneider et al., NeurIPS 2020, Fig. 2: BN adaptation degrades below
batches of about 16; Tent, Wang et al., ICLR 2021, inherits it). A sweep evaluates every protocol
and stream once per size. Each size's rows carry the protocol label with `batch=B` appended:
the reports group rows by (method, protocol), and a label shared by two sizes would average them
into one number that no batch size produced. `sweep_protocol` keeps the label without it, the
one the batch-size table (reporting/batch_sizes.py) groups by.
"""

from __future__ import annotations

from metabn_bench.errors import UserError

MAX_BATCH = 100_000  # far above any test set's cell; a typo (1,2,4,1600000) is caught


def check_batch_sizes(batch_size: int, batch_sizes: tuple[int, ...]) -> list[int]:
    """The sizes to evaluate: `batch_sizes` when given, else [batch_size] (0 = the protocol's
    default); one-line errors for a size < 1, a repeated size, or both options at once."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise UserError(f"--batch-size is {batch_size!r}; valid: an integer >= 0 "
                        "(0 = the protocol's default)")
    if not batch_sizes:
        return [batch_size]
    if batch_size:
        raise UserError("--batch-size and --batch-sizes were both given; valid: one of them "
                        "(--batch-sizes 1,2,4,16,64,200 sweeps, --batch-size N evaluates one size)")
    bad = [b for b in batch_sizes if isinstance(b, bool) or not isinstance(b, int)
           or not 1 <= b <= MAX_BATCH]
    if bad:
        raise UserError(f"--batch-sizes has {bad[0]!r}; valid: integers from 1 to {MAX_BATCH}, "
                        "e.g. 1,2,4,16,64,200")
    if len(set(batch_sizes)) != len(batch_sizes):
        raise UserError(f"--batch-sizes repeats a size ({','.join(map(str, batch_sizes))}); "
                        "valid: each size once")
    return list(batch_sizes)


def sweep_label(label: str, batch_size: int) -> str:
    """The protocol label of one size's rows: 'bn' -> 'bn@batch=16',
    'tent@continual,reset=never,seed=0' -> 'tent@continual,reset=never,seed=0,batch=16'."""
    return f"{label}{',' if '@' in label else '@'}batch={batch_size}"
