"""The CI regression gate: an exact tier, a statistical tier, bands from measured noise.

- compare.py: one summary against another, each number within its band (`check`);
- exact.py: what the code computes without training from scratch (corrupted-set hashes,
  committed reference checkpoints evaluated, a few training and Tent steps);
- noise.py / measure.py: the bands, from the tiers re-run under simulated CPUs and seeds;
- check.py: which tier a directory holds, and its comparison with the baseline;
- baseline.py: the explicit baseline update (`metabn-bench baseline`);
- regressions.py: deliberate bugs the gate must catch.
"""
